package lab

import (
	"fmt"
	"os"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// TimedFrame is a captured Ethernet frame and when it was read.
type TimedFrame struct {
	At   time.Time
	Data []byte
}

// WritePcap writes frames, in their order, to a pcap file at path
// (Ethernet link type), for tshark or Wireshark. For a conversation, give
// one capture of both directions (Lab.CaptureBoth): the read times of two
// captures do not order a TCP exchange reliably.
func WritePcap(path string, frames []TimedFrame) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("lab: pcap: %w", err)
	}
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		f.Close()
		return fmt.Errorf("lab: pcap %s: %w", path, err)
	}
	for _, fr := range frames {
		ci := gopacket.CaptureInfo{Timestamp: fr.At, CaptureLength: len(fr.Data), Length: len(fr.Data)}
		if err := w.WritePacket(ci, fr.Data); err != nil {
			f.Close()
			return fmt.Errorf("lab: pcap %s: %w", path, err)
		}
	}
	return f.Close()
}
