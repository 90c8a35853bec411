package lqserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pdrelay/pdrelay/control/lqserver/keatest"
)

// checkPageDecoders compares the fast decoder with the reference
// (encoding/json) on one answer: when the fast one decodes, the
// reference must decode the same; decodePage must always give what the
// reference gives, errors included. wantFast: the answer must take the
// fast path.
func checkPageDecoders(t testing.TB, b []byte, wantFast bool) {
	t.Helper()
	ref, refErr := decodePageRef(b)
	fast, ok := decodePageFast(b)
	if wantFast && !ok {
		t.Errorf("fast decoder gave up on %s (reference: %v)", truncate(string(b), 300), refErr)
	}
	if ok {
		if refErr != nil {
			t.Fatalf("fast decoder accepted what encoding/json refuses (%v): %s", refErr, truncate(string(b), 300))
		}
		if d := pageDiff(fast, ref); d != "" {
			t.Fatalf("fast decoder differs from encoding/json: %s\ninput %s", d, truncate(string(b), 300))
		}
	}
	got, err := decodePage(b)
	switch {
	case (err == nil) != (refErr == nil):
		t.Fatalf("decodePage error %v, reference %v", err, refErr)
	case err != nil && err.Error() != refErr.Error():
		t.Fatalf("decodePage error %q, reference %q", err, refErr)
	case err == nil:
		if d := pageDiff(got, ref); d != "" {
			t.Fatalf("decodePage differs from encoding/json: %s", d)
		}
	}
}

// pageDiff describes the first difference between two decoded pages
// (reflect.DeepEqual: nil and empty slices differ too).
func pageDiff(a, b keaPage) string {
	if a.answerHead != b.answerHead || a.hasArgs != b.hasArgs || a.from != b.from || len(a.leases) != len(b.leases) {
		return fmt.Sprintf("head %+v %v %q %d leases, want %+v %v %q %d leases",
			a.answerHead, a.hasArgs, a.from, len(a.leases), b.answerHead, b.hasArgs, b.from, len(b.leases))
	}
	for i := range a.leases {
		if !reflect.DeepEqual(a.leases[i], b.leases[i]) {
			return fmt.Sprintf("lease %d: %+v, want %+v", i, a.leases[i], b.leases[i])
		}
	}
	if !reflect.DeepEqual(a, b) {
		return "pages differ (nil against empty lease list)"
	}
	return ""
}

// kea22Page is the lease6-get-page answer of Kea 2.2 (Debian's
// kea-dhcp6-server 2.2.0) captured by TestRealKea: four leases of two
// clients relayed with Interface-ID, Remote-ID, Relay-ID and the client
// link-layer address, and one added with lease6-add, in Kea's own
// layout (spaces, key order).
func kea22Page(t testing.TB) []byte {
	b, err := os.ReadFile("testdata/kea-2.2-page.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodePageKea22(t *testing.T) {
	b := kea22Page(t)
	checkPageDecoders(t, b, true)
	p, _ := decodePageFast(b)
	if len(p.leases) != 5 || p.Result != keaSuccess || p.Text != "5 IPv6 lease(s) found." {
		t.Fatalf("page %+v, %d leases", p.answerHead, len(p.leases))
	}
	for i, l := range p.leases {
		if !l.Prefix.IsValid() || len(l.Relays) != 1 || !l.Link().IsValid() {
			t.Errorf("lease %d: %+v", i, l)
		}
	}
	// The single lease of lease_test.go, in a page as Kea lays it out.
	one := `{ "arguments": { "count": 1, "leases": [ ` + keaLeaseJSON + ` ] }, "result": 0, "text": "1 IPv6 lease(s) found." }`
	checkPageDecoders(t, []byte(one), true)
	// Kea 2.4's "relay-info".
	checkPageDecoders(t, bytes.ReplaceAll(b, []byte(`"relays"`), []byte(`"relay-info"`)), true)
}

// TestDecodePageKeatest: every page the fake Kea builds takes the fast
// path and decodes as encoding/json decodes it.
func TestDecodePageKeatest(t *testing.T) {
	n, gen := genLeases(2500, 1_800_000_000)
	for name, o := range map[string]keatest.Options{
		"generated":   {N: n, Gen: gen},
		"one relay":   {N: 1200, Gen: oneRelayLeases(1200)},
		"query types": typesKea(),
	} {
		t.Run(name, func(t *testing.T) {
			kea, err := keatest.Start(t.TempDir(), o)
			if err != nil {
				t.Fatal(err)
			}
			defer kea.Close()
			k := &Kea{Socket: kea.Socket}
			from, pages, total := "start", 0, 0
			for {
				raw, err := k.getPage(context.Background(), from, 1000, nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				checkPageDecoders(t, raw, true)
				p, _ := decodePage(raw)
				pages++
				total += len(p.leases)
				if len(p.leases) < 1000 {
					break
				}
				from = p.from
			}
			if total != kea.Len() {
				t.Errorf("%d leases in %d pages, the fake holds %d", total, pages, kea.Len())
			}
		})
	}
}

// pageOf wraps lease objects in a lease6-get-page answer.
func pageOf(leases ...string) string {
	return `{"arguments":{"count":` + fmt.Sprint(len(leases)) + `,"leases":[` + strings.Join(leases, ",") + `]},"result":0,"text":"x"}`
}

const (
	okLease = `{"ip-address":"2001:db8::","type":"IA_PD","prefix-len":56,"duid":"00:01","cltt":5,"valid-lft":60,"preferred-lft":30,"iaid":7,"subnet-id":1,"state":0}`
	relayUC = `"user-context":{"ISC":{"relays":[{"hop":1,"link":"fd00::1","peer":"fe80::2","options":"0x00120001AA"}]}}`
)

// lease returns okLease with more members.
func lease(members ...string) string {
	return okLease[:len(okLease)-1] + "," + strings.Join(members, ",") + "}"
}

// addrLeases returns an IA_NA lease per address.
func addrLeases(addrs ...string) []string {
	var out []string
	for _, a := range addrs {
		out = append(out, `{"ip-address":"`+a+`","type":"IA_NA"}`)
	}
	return out
}

// TestDecodePageCases: the shapes the fast decoder reads itself and
// those it leaves to encoding/json; either way the result is the
// reference's.
func TestDecodePageCases(t *testing.T) {
	cases := []struct {
		name string
		json string
		fast bool // the fast decoder reads it (else encoding/json does)
	}{
		// Shapes read fast.
		{"null arguments", `{"arguments":null,"result":3,"text":"0 IPv6 lease(s) found."}`, false},
		{"empty, no arguments", `{"result":3,"text":"0 IPv6 lease(s) found."}`, true},
		{"empty lease list", `{"arguments":{"count":0,"leases":[]},"result":3,"text":"none"}`, true},
		{"whitespace everywhere", " \n{ \"result\" :\t0 , \"arguments\" : { \"leases\" : [ " + okLease + " ] } } ", true},
		{"trailing bytes ignored", pageOf(okLease) + `garbage{`, true},
		{"key order free", `{"text":"x","arguments":{"leases":[` + okLease + `],"count":1},"result":0}`, true},
		{"relays", pageOf(lease(relayUC)), true},
		{"relay-info", pageOf(lease(strings.Replace(relayUC, "relays", "relay-info", 1))), true},
		{"relays win over relay-info", pageOf(lease(`"user-context":{"ISC":{"relay-info":[{"link":"x"}],"relays":[{"link":"fd00::9"}]}}`)), true},
		{"empty relays, relay-info unused", pageOf(lease(`"user-context":{"ISC":{"relays":[],"relay-info":[{"link":"fd00::9"}]}}`)), true},
		{"no ISC", pageOf(lease(`"user-context":{"mine":{"relays":[1]}}`)), true},
		{"unknown keys with escapes and nesting", pageOf(lease(`"hostname":"a\"b\\c\u00e9\n","x":[{"y":[[],{},-1.5e+3,true,false,null],"h\u00e9\ud800":1}]`)), true},
		{"non-ASCII in a skipped value", pageOf(lease("\"hostname\":\"h\u00e9llo \xff\"")), true},
		{"IA_NA is a /128", pageOf(`{"ip-address":"2001:db8::5","type":"IA_NA","prefix-len":64,"duid":"01"}`), true},
		{"unknown type kept", pageOf(`{"ip-address":"2001:db8::5","type":"IA_XX"}`), true},
		{"address with embedded IPv4", pageOf(`{"ip-address":"::ffff:192.0.2.1","type":"IA_NA"}`), true},
		{"uppercase hex, 0X", pageOf(lease(`"user-context":{"ISC":{"relays":[{"options":" 0X0012:0001:AA "}]}}`)), true},
		{"negative zero", pageOf(`{"ip-address":"2001:db8::5","cltt":-0}`), true},
		// Leases that do not decode: skipped, the page still fast.
		{"bad address", pageOf(okLease, `{"ip-address":"2001:db8::zz","type":"IA_PD","prefix-len":56}`, okLease), true},
		{"no address", pageOf(`{"type":"IA_PD","prefix-len":56}`), true},
		{"zone", pageOf(`{"ip-address":"fe80::1%eth0","type":"IA_NA"}`), true},
		{"IPv4", pageOf(`{"ip-address":"192.0.2.1","type":"IA_NA"}`), true},
		{"bad address forms", pageOf(addrLeases("1:2:3:4:5:6:7::8", "1::2::3", ":1::", "1::2:", "1:::2", "12345::", "1:2:3:4:5:6:7:8:9",
			"1:2:3:4:5:6:7", "::ffff:1.2.3", "1.2::3", "fe80::1%", "%eth0", "abcd", ":", "")...), true},
		{"good address forms", pageOf(addrLeases("::", "::1", "1::", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6::8", "ABCD:ef01::0", "0:0:0:0:0:0:0:0",
			"::ffff:10.0.0.1", "1:2:3:4:5:6:1.2.3.4")...), true},
		{"prefix length 0", pageOf(`{"ip-address":"2001:db8::","type":"IA_PD","prefix-len":0}`), true},
		{"prefix length 129", pageOf(`{"ip-address":"2001:db8::","type":"IA_PD","prefix-len":129}`), true},
		{"odd duid", pageOf(`{"ip-address":"2001:db8::","type":"IA_PD","prefix-len":56,"duid":"0:1:2"}`), true},
		{"bad relay link", pageOf(lease(`"user-context":{"ISC":{"relays":[{"link":"x"}]}}`)), true},
		{"IPv4 peer", pageOf(lease(`"user-context":{"ISC":{"relays":[{"peer":"1.2.3.4"}]}}`)), true},
		{"truncated relay options", pageOf(lease(`"user-context":{"ISC":{"relays":[{"options":"0x00120009"}]}}`)), true},
		{"hop 256", pageOf(lease(`"user-context":{"ISC":{"relays":[{"hop":256}]}}`)), true},
		{"hop -1", pageOf(lease(`"user-context":{"ISC":{"relays":[{"hop":-1}]}}`)), true},
		{"too many relays", pageOf(lease(`"user-context":{"ISC":{"relays":[` + strings.Repeat(`{},`, maxRelays) + `{}]}}`)), true},
		{"most relays", pageOf(lease(`"user-context":{"ISC":{"relays":[` + strings.Repeat(`{},`, maxRelays-1) + `{}]}}`)), true},
		// Left to encoding/json.
		{"kea error", `{"result":1,"text":"unable to \"page\""}`, false},
		{"not an object", `[1]`, false},
		{"empty", ``, false},
		{"truncated", pageOf(okLease)[:60], false},
		{"duplicate key", pageOf(lease(`"cltt":6`)), false},
		{"key in other case", pageOf(lease(`"CLTT":6`)), false},
		{"escaped key", pageOf(lease(`"cl\u0074t":6`)), false},
		{"non-ASCII key (long s folds to s)", pageOf(`{"ip-addre` + "\u017f" + `s":"2001:db8::","type":"IA_NA"}`), false},
		{"null field", pageOf(lease(`"hostname":null,"user-context":null`)), false},
		{"string for a number", pageOf(`{"ip-address":"2001:db8::","cltt":"5"}`), false},
		{"float", pageOf(`{"ip-address":"2001:db8::","cltt":5.0}`), false},
		{"exponent", pageOf(`{"ip-address":"2001:db8::","cltt":5e2}`), false},
		{"uint32 overflow", pageOf(`{"ip-address":"2001:db8::","valid-lft":4294967296}`), false},
		{"negative uint32", pageOf(`{"ip-address":"2001:db8::","iaid":-1}`), false},
		{"escaped address", pageOf(`{"ip-address":"2001:db8::\u0031","type":"IA_NA"}`), false},
		{"leading zero", pageOf(`{"ip-address":"2001:db8::","state":01}`), false},
		{"bad escape in a skipped value", pageOf(lease(`"hostname":"\x"`)), false},
		{"control character in a string", pageOf(lease("\"hostname\":\"a\tb\"")), false},
		{"trailing comma", pageOf(okLease + `,`), false},
		{"null lease", pageOf(`null`), false},
		{"count not a number", `{"arguments":{"count":"1","leases":[]},"result":0}`, false},
		{"too deep", pageOf(lease(`"x":` + strings.Repeat("[", maxSkipDepth+2) + strings.Repeat("]", maxSkipDepth+2))), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkPageDecoders(t, []byte(c.json), c.fast)
			if _, ok := decodePageFast([]byte(c.json)); ok != c.fast {
				t.Errorf("fast path taken %v, want %v", ok, c.fast)
			}
		})
	}
}

// TestDecodePageSkipped: a lease that does not decode is a zero Lease at
// its place, counted by Leases as skipped, the others intact; from is
// the last lease's address even when that one does not decode.
func TestDecodePageSkipped(t *testing.T) {
	b := []byte(pageOf(okLease, `{"ip-address":"2001:db8::1","type":"IA_PD","prefix-len":56,"duid":"0g"}`, `{"ip-address":"nope"}`))
	p, ok := decodePageFast(b)
	if !ok || len(p.leases) != 3 {
		t.Fatalf("fast %v, %d leases", ok, len(p.leases))
	}
	if !p.leases[0].Prefix.IsValid() || p.leases[1].Prefix.IsValid() || p.leases[2].Prefix.IsValid() {
		t.Errorf("leases %+v", p.leases)
	}
	if p.from != "nope" {
		t.Errorf("from %q", p.from)
	}
}

// FuzzDecodePage: on any input, the fast decoder either gives up or
// agrees with encoding/json, and decodePage always agrees with it.
func FuzzDecodePage(f *testing.F) {
	f.Add(kea22Page(f))
	f.Add([]byte(pageOf(lease(relayUC), okLease)))
	f.Add([]byte(pageOf(lease(`"user-context":{"ISC":{"relay-info":[{"hop":3,"link":"::","peer":"fe80::1","options":"0x0012000161"}]}}`))))
	f.Add([]byte(pageOf(lease(`"hostname":"a\"b\\c\u00e9\n","x":[{"y":[[],{},-1.5e+3,true,false,null]}]`))))
	f.Add([]byte(pageOf(`{"ip-address":"::ffff:1.2.3.4","type":"IA_NA","duid":" 0x0a:0B "}`)))
	f.Add([]byte(`{"result":3,"text":"0 IPv6 lease(s) found."}`))
	f.Add([]byte(`{"result":1,"text":"bad"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		checkPageDecoders(t, b, false)
	})
}

// TestReadAnswer: the answer is framed by its brackets, across reads of
// any size, with brackets inside strings ignored; what follows it is not
// waited for; an answer cut short is passed on for the decoder to refuse.
func TestReadAnswer(t *testing.T) {
	cases := []struct {
		name, in, want string
		err            error
	}{
		{"object", `{"a":[1,{"b":"}]\"{"}]} tail`, `{"a":[1,{"b":"}]\"{"}]}`, nil},
		{"leading space", " \n{}x", " \n{}", nil},
		{"scalar to EOF", `123`, `123`, nil},
		{"cut short", `{"a":[1`, `{"a":[1`, nil},
		{"nothing", ``, ``, io.EOF},
	}
	for _, c := range cases {
		for _, one := range []bool{false, true} {
			var r io.Reader = strings.NewReader(c.in)
			if one {
				r = iotest.OneByteReader(r)
			}
			got, err := readAnswer(r, nil, nil)
			if string(got) != c.want || !errors.Is(err, c.err) {
				t.Errorf("%s (one byte %v): %q %v, want %q %v", c.name, one, got, err, c.want, c.err)
			}
		}
	}
	// Kea's page in reads of every size, with more behind it.
	page := kea22Page(t)
	for _, r := range []io.Reader{
		iotest.OneByteReader(bytes.NewReader(append(page, " {}"...))),
		iotest.HalfReader(bytes.NewReader(append(page, "x"...))),
		iotest.DataErrReader(bytes.NewReader(page)),
	} {
		if got, err := readAnswer(r, nil, nil); !bytes.Equal(got, bytes.TrimSpace(page)) || err != nil {
			t.Errorf("Kea's page read as %d bytes (%v), want %d", len(got), err, len(bytes.TrimSpace(page)))
		}
	}
	// With the fast decoder tried: a whole answer is decoded once; one
	// cut after a '}' is tried once, then framed by brackets, also when
	// the decoder gives up on a whole answer (here: an escape), and
	// without waiting for EOF.
	two := pageOf(okLease, okLease)
	cut := strings.Index(two, okLease) + len(okLease) // just after the first lease's '}'
	for _, c := range []struct {
		name   string
		chunks []string
		tries  int
	}{
		{"whole", []string{pageOf(okLease)}, 1},
		{"cut after a lease", []string{two[:cut], two[cut:]}, 1},
		{"not the fast shape", []string{`{"result":0,"text":"\u0078"}`}, 1},
		{"cut elsewhere", []string{pageOf(okLease)[:30], pageOf(okLease)[30:]}, 1},
	} {
		pr, pw := io.Pipe()
		go func() {
			for _, ch := range c.chunks {
				pw.Write([]byte(ch))
			}
		}()
		tries, want := 0, strings.Join(c.chunks, "")
		got, err := readAnswer(pr, nil, func(b []byte) bool {
			tries++
			_, ok := decodePageFast(b)
			return ok
		})
		pw.Close()
		if string(got) != want || err != nil || tries != c.tries {
			t.Errorf("%s: %q %v after %d tries, want %q after %d", c.name, got, err, tries, want, c.tries)
		}
	}
	// It stops at the end of the value without waiting for EOF.
	pr, pw := io.Pipe()
	go pw.Write([]byte(`{"result":0}`)) // never closed
	if got, err := readAnswer(pr, make([]byte, 0, 4), nil); string(got) != `{"result":0}` || err != nil {
		t.Errorf("open stream: %q %v", got, err)
	}
	pw.Close()
	if _, err := readAnswer(iotest.ErrReader(errors.New("boom")), nil, nil); err == nil || err.Error() != "boom" {
		t.Errorf("read error: %v", err)
	}
}

// keatestPage returns the fake Kea's first page of n leases of
// oneRelayLeases (the benchmark's).
func keatestPage(t testing.TB, n int) []byte {
	kea, err := keatest.Start(t.TempDir(), keatest.Options{N: n, Gen: oneRelayLeases(n)})
	if err != nil {
		t.Fatal(err)
	}
	defer kea.Close()
	raw, err := (&Kea{Socket: kea.Socket}).getPage(context.Background(), "start", n, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestDecodePageAllocs: a page of 1000 leases costs a few allocations in
// all (the lease slice, arena blocks, the text and from strings), not a
// few per lease as encoding/json does.
func TestDecodePageAllocs(t *testing.T) {
	raw := keatestPage(t, 1000)
	allocs := testing.AllocsPerRun(20, func() {
		if _, ok := decodePageFast(raw); !ok {
			t.Fatal("fast decoder gave up")
		}
	})
	if allocs > 20 {
		t.Errorf("%.0f allocations for a page of 1000 leases", allocs)
	}
}

// BenchmarkDecodePage: one page of 1000 leases of the benchmark's shape.
func BenchmarkDecodePage(b *testing.B) {
	raw := keatestPage(b, 1000)
	for _, c := range []struct {
		name string
		fn   func([]byte) error
	}{
		{"fast", func(p []byte) error { _, err := decodePage(p); return err }},
		{"encoding-json", func(p []byte) error { _, err := decodePageRef(p); return err }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if err := c.fn(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestLeaseKeyBit: the switch agrees with leaseKeys and the k* bits.
func TestLeaseKeyBit(t *testing.T) {
	for i, k := range leaseKeys {
		bit, ok := leaseKeyBit([]byte(k), true)
		gen, gok := keyBit([]byte(k), true, leaseKeys)
		if bit != 1<<i || !ok || gen != bit || !gok {
			t.Errorf("%s: bit %b %v (keyBit %b %v), want %b", k, bit, ok, gen, gok, 1<<i)
		}
	}
	for _, k := range []string{"Cltt", "IP-ADDRESS", "hostname", "x"} {
		bit, ok := leaseKeyBit([]byte(k), true)
		gen, gok := keyBit([]byte(k), true, leaseKeys)
		if bit != 0 || bit != gen || ok != gok || ok != (k == "hostname" || k == "x") {
			t.Errorf("%s: bit %b %v, keyBit %b %v", k, bit, ok, gen, gok)
		}
	}
}
