package release

import (
	"testing"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/dhcp6"
)

var fuzzBindings = []binding.Binding{
	bnd("eth1", clientA, 1, "2001:db8:1::/56"),
	bnd("eth1", clientA, 2, "2001:db8:1:100::/60"),
	bnd("eth1", clientB, 1, "2001:db8:2::/56"),
}

// FuzzRequestReply: any datagram is a valid RELEASE-REQUEST-REPLY or a
// counted discard, and a valid one gives every binding an answer.
func FuzzRequestReply(f *testing.F) {
	xid := [3]byte{1, 2, 3}
	f.Add(replyBytes(251, xid, status(0)))
	f.Add(replyBytes(251, xid, status(0), clientData(clientA, status(1), iaprefix("2001:db8:1::/56", status(3)))))
	f.Add(replyBytes(251, xid, status(0), clientData(clientB, iapd(1, status(6), iaprefix("2001:db8:2::/56", status(0))))))
	f.Add(replyBytes(251, xid, status(10)))
	f.Add(replyBytes(251, xid))
	f.Add(replyBytes(7, xid, status(0)))
	f.Add([]byte{251, 1, 2, 3, 0, 13, 0, 9, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRequestReply(b, 251)
		if err != nil {
			if discardReason(err) == "" {
				t.Fatalf("no discard reason for %v", err)
			}
			return
		}
		res := requestResults(fuzzBindings, r)
		if len(res) != len(fuzzBindings) {
			t.Fatalf("%d results for %d bindings", len(res), len(fuzzBindings))
		}
		for i := range res {
			if !res[i].Answered || res[i].Binding.Key != fuzzBindings[i].Key {
				t.Fatalf("result %d: %+v", i, res[i])
			}
		}
		u := &udpTransport{typ: 251, waiting: map[[3]byte]chan requestReply{}, discard: func(string) {}}
		u.deliver(b) // no exchange waits: a discard, never a crash
	})
}

// FuzzClientReply: any Reply to an originated Release is read without a
// crash, an answer for every binding.
func FuzzClientReply(f *testing.F) {
	xid := [3]byte{1, 2, 3}
	f.Add(replyBytes(7, xid))
	f.Add(replyBytes(7, xid, status(3), iapd(1, status(0)), iapd(2, status(3))))
	f.Add(replyBytes(7, xid, iapd(2, status(0), iaprefix("2001:db8:1:100::/60", status(1)))))
	f.Add(replyBytes(7, xid, []byte{0, 25, 0, 4, 0, 0, 0, 1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &Releaser{waiting: map[clientKey]chan dhcp6.Message{}}
		c := make(chan dhcp6.Message, 1)
		r.waiting[clientKey{"eth1", [3]byte{1, 2, 3}, clientA}] = c
		r.HandleReply("eth1", b)
		m, err := dhcp6.ParseMessage(b)
		if err != nil {
			return
		}
		res := clientResults(fuzzBindings, m)
		if len(res) != len(fuzzBindings) {
			t.Fatalf("%d results", len(res))
		}
	})
}
