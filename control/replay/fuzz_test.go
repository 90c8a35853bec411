package replay

import (
	"bytes"
	"errors"
	"os"
	"testing"
)

// FuzzReplay feeds hostile capture files to Run: each must end with an
// error wrapping ErrCapture or a summary in which every frame read is
// accounted for once, never a panic. Seeds: the golden capture as pcap
// and as pcapng, and a few broken headers.
func FuzzReplay(f *testing.F) {
	in, err := os.ReadFile("testdata/in.pcap")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(in)
	f.Add(writePcapng(f, goldenFrames(f)))
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x0d, 0x0d, 0x0a})             // pcapng magic alone
	f.Add([]byte{0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0}) // pcap magic, cut short
	f.Add(in[:24+16+10])                              // one record cut short
	opts := goldenOptions(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, in := range []string{"", "eth1"} { // ingress by MAC, and --in
			o := opts
			o.In = in
			var out bytes.Buffer
			sum, err := Run(o, bytes.NewReader(data), &out)
			if err != nil {
				if !errors.Is(err, ErrCapture) {
					t.Fatalf("error not about the capture: %v", err)
				}
				continue
			}
			checkAccounted(t, sum)
		}
	})
}
