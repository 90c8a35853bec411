package cpload

import (
	"net"

	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// ioBatch is the most datagrams the generator and the responder read or
// write in one system call (recvmmsg, sendmmsg). One call a datagram
// cost the lab more CPU than the relay it drives, and with the relay on
// a core of its own the lab's core was the bottleneck.
const ioBatch = 64

// batchReader reads a UDP socket up to ioBatch datagrams a call. It is
// not safe for concurrent use.
type batchReader struct {
	pc *ipv6.PacketConn
	in []ipv6.Message // Buffers[0] and OOB are fixed
}

// newBatchReader reads c into buffers of bufSize bytes, with oobSize
// bytes for each datagram's control messages.
func newBatchReader(c *net.UDPConn, bufSize, oobSize int) *batchReader {
	r := &batchReader{pc: ipv6.NewPacketConn(c), in: make([]ipv6.Message, ioBatch)}
	for i := range r.in {
		r.in[i].Buffers = [][]byte{make([]byte, bufSize)}
		r.in[i].OOB = make([]byte, oobSize)
	}
	return r
}

// read waits for a datagram and returns it with those already waiting,
// valid until the next read.
func (r *batchReader) read() ([]ipv6.Message, error) {
	for i := range r.in {
		r.in[i].OOB = r.in[i].OOB[:cap(r.in[i].OOB)]
	}
	n, err := r.pc.ReadBatch(r.in, 0)
	if err != nil {
		return nil, err
	}
	return r.in[:n], nil
}

// truncated reports whether m was cut to its buffer.
func truncated(m *ipv6.Message) bool { return m.Flags&unix.MSG_TRUNC != 0 }

// batchWriter queues datagrams and sends them in sendmmsg calls of up to
// ioBatch. It is not safe for concurrent use; two batchWriters may share
// a socket.
type batchWriter struct {
	pc  *ipv6.PacketConn
	out []ipv6.Message
	buf [][]byte // out's payloads; their storage is reused
}

func newBatchWriter(c *net.UDPConn) *batchWriter {
	return &batchWriter{pc: ipv6.NewPacketConn(c)}
}

// next returns an empty buffer for the next datagram's payload, to be
// appended to and handed to push (or dropped, by not pushing it).
func (w *batchWriter) next() []byte {
	i := len(w.out)
	if i == len(w.buf) {
		w.buf = append(w.buf, make([]byte, 0, 512))
	}
	return w.buf[i][:0]
}

// push queues p, built in the buffer next returned, for addr.
func (w *batchWriter) push(addr net.Addr, p []byte) {
	i := len(w.out)
	w.buf[i] = p
	w.out = append(w.out, ipv6.Message{Buffers: w.buf[i : i+1], Addr: addr})
}

// flush sends the queued datagrams and reports how many the kernel took
// and how many it refused (each refused one is skipped).
func (w *batchWriter) flush() (sent, failed int) {
	for off := 0; off < len(w.out); {
		n, err := w.pc.WriteBatch(w.out[off:min(len(w.out), off+ioBatch)], 0)
		sent += n
		off += n
		if err != nil || n == 0 {
			failed++
			off++
		}
	}
	clear(w.out)
	w.out = w.out[:0]
	return sent, failed
}
