package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, and that whatever it
// accepts is valid by the rules it enforces. The config comes from a file,
// not the wire, but a parser must not panic on any input.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile(filepath.Join("testdata", "example.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte(minimal))
	f.Add([]byte(base + "  - <<: {interface: d2}\n    link_type: p2p\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if c.StateDir == "" || c.APISocket == "" || len(c.Servers) == 0 || len(c.Downlinks) == 0 {
			t.Fatalf("accepted an incomplete config: %+v", c)
		}
		ids := map[string]bool{}
		for _, d := range c.Downlinks {
			if ids[d.InterfaceID] {
				t.Fatalf("accepted a repeated interface_id %q", d.InterfaceID)
			}
			ids[d.InterfaceID] = true
			if d.MaxDelegations < 0 || d.MaxPerClient < 0 {
				t.Fatalf("accepted a negative limit: %+v", d)
			}
		}
		if rr := c.ReleaseRequest; rr.MessageType <= LastAssignedMessageType || rr.ReplyType <= LastAssignedMessageType {
			t.Fatalf("accepted an assigned release type: %+v", rr)
		}
	})
}
