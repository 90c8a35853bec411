package lab

import (
	"fmt"
	"os"
	"slices"
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

// WritePcap writes frames, in time order, to a pcap file at path
// (Ethernet link type), for tshark or Wireshark. Captures of both ends of
// a link merged this way hold both directions of its traffic.
func WritePcap(path string, frames ...[]TimedFrame) error {
	var all []TimedFrame
	for _, fs := range frames {
		all = append(all, fs...)
	}
	slices.SortStableFunc(all, func(a, b TimedFrame) int { return a.At.Compare(b.At) })
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("lab: pcap: %w", err)
	}
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		f.Close()
		return fmt.Errorf("lab: pcap %s: %w", path, err)
	}
	for _, fr := range all {
		ci := gopacket.CaptureInfo{Timestamp: fr.At, CaptureLength: len(fr.Data), Length: len(fr.Data)}
		if err := w.WritePacket(ci, fr.Data); err != nil {
			f.Close()
			return fmt.Errorf("lab: pcap %s: %w", path, err)
		}
	}
	return f.Close()
}
