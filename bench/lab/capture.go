package lab

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

// Capture records, in the background, every frame one interface of a Lab
// namespace receives (a PacketConn's Collect), like tcpdump without the
// binary. It sees frames as the kernel hands them to packet sockets (a
// checksum a local sender left partial stays partial), so tests decode
// headers, not checksums.
type Capture struct {
	pc     *PacketConn
	mu     sync.Mutex
	frames [][]byte
	times  []time.Time // when each frame was read
	stop   atomic.Bool
	done   chan struct{}
}

// Capture starts capturing on interface ifname in namespace ns. Stop ends
// it and returns the frames.
func (l *Lab) Capture(ns, ifname string) (*Capture, error) { return l.capture(ns, ifname, false) }

// CaptureBoth is Capture of the frames the interface sends as well as
// those it receives, in the order the kernel handled them: one end of a
// link shows a whole conversation, as tcpdump would.
func (l *Lab) CaptureBoth(ns, ifname string) (*Capture, error) { return l.capture(ns, ifname, true) }

func (l *Lab) capture(ns, ifname string, outgoing bool) (*Capture, error) {
	var pc *PacketConn
	if err := l.InNS(ns, func() (err error) { pc, err = ListenPacket(ifname); return err }); err != nil {
		return nil, err
	}
	pc.Outgoing = outgoing
	c := &Capture{pc: pc, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for !c.stop.Load() {
			err := pc.Collect(100*time.Millisecond, func(f []byte) {
				c.mu.Lock()
				c.frames = append(c.frames, append([]byte(nil), f...))
				c.times = append(c.times, time.Now())
				c.mu.Unlock()
			})
			if err != nil {
				return
			}
		}
	}()
	return c, nil
}

// Frames returns a copy of the list of frames captured so far.
func (c *Capture) Frames() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.frames...)
}

// Timed returns the frames captured so far with the time each was read.
func (c *Capture) Timed() []TimedFrame {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]TimedFrame, len(c.frames))
	for i := range c.frames {
		out[i] = TimedFrame{At: c.times[i], Data: c.frames[i]}
	}
	return out
}

// Stop ends the capture (it waits out the current 100 ms collection, so
// frames in flight are kept) and returns every frame captured.
func (c *Capture) Stop() [][]byte {
	c.stop.Store(true)
	<-c.done
	c.pc.Close()
	return c.Frames()
}

// SendFrame writes frame, a whole Ethernet frame, to interface ifname in
// namespace ns through a packet socket: the kernel adds nothing and
// checks nothing, so tests can send what no socket API would (a wrong
// checksum, a forged header).
func (l *Lab) SendFrame(ns, ifname string, frame []byte) error {
	var pc *PacketConn
	if err := l.InNS(ns, func() (err error) { pc, err = ListenPacket(ifname); return err }); err != nil {
		return err
	}
	defer pc.Close()
	return pc.Send(frame)
}

// UDP6 is the part of an Ethernet/IPv6/UDP frame tests look at.
type UDP6 struct {
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
	Payload          []byte
}

// ParseUDP6 decodes an untagged Ethernet frame carrying IPv6 and UDP
// directly after the fixed header; ok is false for anything else.
func ParseUDP6(f []byte) (u UDP6, ok bool) {
	if len(f) < 14+40+8 || binary.BigEndian.Uint16(f[12:]) != 0x86dd || f[14+6] != 17 {
		return u, false
	}
	ip := f[14:]
	ulen := int(binary.BigEndian.Uint16(ip[40+4:]))
	if ulen < 8 || 40+ulen > len(ip) {
		return u, false
	}
	u.Src, u.Dst = [16]byte(ip[8:24]), [16]byte(ip[24:40])
	u.SrcPort, u.DstPort = binary.BigEndian.Uint16(ip[40:]), binary.BigEndian.Uint16(ip[42:])
	u.Payload = ip[48 : 40+ulen]
	return u, true
}
