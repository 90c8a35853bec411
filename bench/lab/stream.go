package lab

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Stream is a steady UDP flow between two namespaces whose datagrams
// carry sequence numbers, so a test can count what a change in between
// (a reload, a restart) lost, and when. Start it with StartStream, end it
// with Stop.
type Stream struct {
	snd, rcv *net.UDPConn
	dst      netip.AddrPort
	stop     chan struct{}
	sent     chan struct{}  // closed when the sender has returned
	wg       sync.WaitGroup // the receiver

	mu     sync.Mutex
	sentAt []time.Time // by sequence number
	seen   map[uint64]bool
}

// StreamResult is what a Stream counted.
type StreamResult struct {
	Sent, Received uint64
	// Missing are the sequence numbers never received (at most the
	// first 20) and MissingAt when each was sent, so a failure shows
	// where the loss was.
	Missing   []uint64
	MissingAt []time.Time
}

func (r StreamResult) String() string {
	return fmt.Sprintf("sent %d, received %d, missing %v", r.Sent, r.Received, r.Missing)
}

// StartStream sends a datagram every interval from srcNS to dst, where
// a socket in dstNS bound to dst counts them (dst must be an address of
// dstNS). The sender is bound to src, which may be the zero Addr (the
// kernel picks the source).
func (l *Lab) StartStream(srcNS string, src netip.Addr, dstNS string, dst netip.AddrPort, interval time.Duration) (*Stream, error) {
	s := &Stream{dst: dst, stop: make(chan struct{}), sent: make(chan struct{}), seen: map[uint64]bool{}}
	var err error
	if s.rcv, err = l.ListenUDP(dstNS, dst); err != nil {
		return nil, fmt.Errorf("lab: stream receiver in %s: %w", dstNS, err)
	}
	s.rcv.SetReadBuffer(4 << 20)
	if !src.IsValid() {
		src = netip.IPv6Unspecified()
	}
	if s.snd, err = l.ListenUDP(srcNS, netip.AddrPortFrom(src, 0)); err != nil {
		s.rcv.Close()
		return nil, fmt.Errorf("lab: stream sender in %s: %w", srcNS, err)
	}
	s.wg.Add(1)
	go s.receive()
	go s.send(interval)
	return s, nil
}

func (s *Stream) send(interval time.Duration) {
	defer close(s.sent)
	t := time.NewTicker(interval)
	defer t.Stop()
	buf := make([]byte, 64)
	for seq := uint64(0); ; seq++ {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		binary.BigEndian.PutUint64(buf, seq)
		s.mu.Lock()
		s.sentAt = append(s.sentAt, time.Now())
		s.mu.Unlock()
		s.snd.WriteToUDPAddrPort(buf, s.dst) // an error (no route yet) is a loss, counted by the receiver
	}
}

func (s *Stream) receive() {
	defer s.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, err := s.rcv.Read(buf)
		if err != nil {
			return // closed by Stop
		}
		if n < 8 {
			continue
		}
		s.mu.Lock()
		s.seen[binary.BigEndian.Uint64(buf)] = true
		s.mu.Unlock()
	}
}

// Counts returns what was sent and received so far.
func (s *Stream) Counts() (sent, received uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return uint64(len(s.sentAt)), uint64(len(s.seen))
}

// Stop stops sending, waits up to a second for the datagrams in flight,
// and returns the counts.
func (s *Stream) Stop() StreamResult {
	close(s.stop)
	<-s.sent // the last datagram is written before the wait starts
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if sent, got := s.Counts(); got >= sent {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.snd.Close()
	s.rcv.Close()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	r := StreamResult{Sent: uint64(len(s.sentAt)), Received: uint64(len(s.seen))}
	for seq := range r.Sent {
		if !s.seen[seq] && len(r.Missing) < 20 {
			r.Missing = append(r.Missing, seq)
			r.MissingAt = append(r.MissingAt, s.sentAt[seq])
		}
	}
	return r
}
