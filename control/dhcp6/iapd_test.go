package dhcp6_test

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/pdrelay/pdrelay/control/dhcp6"
)

func TestParseIAPD(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		want     dhcp6.IAPD
		wantErr  error
		wantStat uint16
	}{
		{
			name: "two prefixes",
			in: []byte{
				0, 0, 0, 7, // IAID 7
				0, 0, 0x0e, 0x10, // T1 3600
				0, 0, 0x15, 0x18, // T2 5400
				0, 26, // IAPrefix option code
				0, 25, // option length
				0, 0, 0x1c, 0x20, // preferred-lifetime 7200
				0, 0, 0x38, 0x40, // valid-lifetime 14400
				56,                                                            // prefix-length
				0x20, 0x01, 0x0d, 0xb8, 0, 1, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix 2001:db8:1:200::
				0, 26, // IAPrefix option code
				0, 25, // option length
				0, 0, 0, 60, // preferred-lifetime 60
				0, 0, 0, 120, // valid-lifetime 120
				64,                                                         // prefix-length
				0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix 2001:db8:2::
			},
			want:     dhcp6.IAPD{IAID: 7, T1: 3600, T2: 5400},
			wantStat: dhcp6.StatusSuccess,
		},
		{
			name: "no options",
			in: []byte{
				0xde, 0xad, 0xbe, 0xef, // IAID
				0xff, 0xff, 0xff, 0xff, // T1 infinity
				0, 0, 0, 0, // T2 0
			},
			want:     dhcp6.IAPD{IAID: 0xdeadbeef, T1: 0xffffffff, T2: 0},
			wantStat: dhcp6.StatusSuccess,
		},
		{
			name: "status NoBinding",
			in: []byte{
				0, 0, 0, 1, // IAID 1
				0, 0, 0, 0, // T1 0
				0, 0, 0, 0, // T2 0
				0, 13, // Status Code option code
				0, 2, // option length
				0, 3, // status-code NoBinding
			},
			want:     dhcp6.IAPD{IAID: 1},
			wantStat: dhcp6.StatusNoBinding,
		},
		{
			name: "eleven bytes",
			in: []byte{
				0, 0, 0, 1, // IAID 1
				0, 0, 0, 0, // T1 0
				0, 0, 0, // T2, one byte short
			},
			wantErr: dhcp6.ErrShort,
		},
		{
			name: "option runs past the end",
			in: []byte{
				0, 0, 0, 1, // IAID 1
				0, 0, 0, 0, // T1 0
				0, 0, 0, 0, // T2 0
				0, 26, // IAPrefix option code
				0, 25, // option length 25, 4 follow
				0, 0, 0, 0, // preferred-lifetime
			},
			wantErr: dhcp6.ErrBadOption,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := dhcp6.ParseIAPD(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseIAPD err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.IAID != tt.want.IAID || got.T1 != tt.want.T1 || got.T2 != tt.want.T2 {
				t.Errorf("= IAID %d T1 %d T2 %d, want %d %d %d", got.IAID, got.T1, got.T2, tt.want.IAID, tt.want.T1, tt.want.T2)
			}
			if !bytes.Equal(got.Options, tt.in[12:]) {
				t.Errorf("Options = %x, want %x", got.Options, tt.in[12:])
			}
			if s := got.Status(); s != tt.wantStat {
				t.Errorf("Status = %d, want %d", s, tt.wantStat)
			}
		})
	}
}

// The two IAPREFIXes of the "two prefixes" IA_PD decode in order.
func TestParseIAPDPrefixes(t *testing.T) {
	in := []byte{
		0, 0, 0, 7, // IAID 7
		0, 0, 0x0e, 0x10, // T1 3600
		0, 0, 0x15, 0x18, // T2 5400
		0, 26, // IAPrefix option code
		0, 25, // option length
		0, 0, 0x1c, 0x20, // preferred-lifetime 7200
		0, 0, 0x38, 0x40, // valid-lifetime 14400
		56,                                                            // prefix-length
		0x20, 0x01, 0x0d, 0xb8, 0, 1, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix 2001:db8:1:200::
		0, 13, // Status Code option code (between the prefixes)
		0, 2, // option length
		0, 0, // status-code Success
		0, 26, // IAPrefix option code
		0, 25, // option length
		0, 0, 0, 60, // preferred-lifetime 60
		0, 0, 0, 120, // valid-lifetime 120
		64,                                                         // prefix-length
		0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix 2001:db8:2::
	}
	ia, err := dhcp6.ParseIAPD(in)
	if err != nil {
		t.Fatal(err)
	}
	type pfx struct {
		pref, valid uint32
		p           netip.Prefix
	}
	var got []pfx
	for o := ia.Options; ; {
		code, data, rest, ok := o.Next()
		if !ok {
			break
		}
		o = rest
		if code != dhcp6.OptIAPrefix {
			continue
		}
		p, err := dhcp6.ParseIAPrefix(data)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, pfx{p.Preferred, p.Valid, p.Prefix})
	}
	want := []pfx{
		{7200, 14400, netip.MustParsePrefix("2001:db8:1:200::/56")},
		{60, 120, netip.MustParsePrefix("2001:db8:2::/64")},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("prefixes = %v, want %v", got, want)
	}
}

func TestParseIAPrefix(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		want     dhcp6.IAPrefix
		wantStat uint16
		wantErr  bool
	}{
		{
			name: "/56",
			in: []byte{
				0, 0, 0x0e, 0x10, // preferred-lifetime 3600
				0, 0, 0x1c, 0x20, // valid-lifetime 7200
				56,                                                            // prefix-length
				0x20, 0x01, 0x0d, 0xb8, 0, 1, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix 2001:db8:1:200::
			},
			want: dhcp6.IAPrefix{Preferred: 3600, Valid: 7200, Prefix: netip.MustParsePrefix("2001:db8:1:200::/56")},
		},
		{
			name: "host bits are masked",
			in: []byte{
				0, 0, 0, 1, // preferred-lifetime 1
				0, 0, 0, 2, // valid-lifetime 2
				48,                                                                     // prefix-length
				0x20, 0x01, 0x0d, 0xb8, 0, 1, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0xab, 0xcd, // 2001:db8:1:ffff::abcd
			},
			want: dhcp6.IAPrefix{Preferred: 1, Valid: 2, Prefix: netip.MustParsePrefix("2001:db8:1::/48")},
		},
		{
			name: "/128 infinity",
			in: []byte{
				0xff, 0xff, 0xff, 0xff, // preferred-lifetime infinity
				0xff, 0xff, 0xff, 0xff, // valid-lifetime infinity
				128,                                                        // prefix-length
				0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // prefix 2001:db8::1
			},
			want: dhcp6.IAPrefix{Preferred: 0xffffffff, Valid: 0xffffffff, Prefix: netip.MustParsePrefix("2001:db8::1/128")},
		},
		{
			name: "/0",
			in: []byte{
				0, 0, 0, 0, // preferred-lifetime 0
				0, 0, 0, 0, // valid-lifetime 0
				0,                                                          // prefix-length 0
				0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix bits, all masked
			},
			want: dhcp6.IAPrefix{Prefix: netip.MustParsePrefix("::/0")},
		},
		{
			name: "with status option",
			in: []byte{
				0, 0, 0, 0, // preferred-lifetime 0
				0, 0, 0, 0, // valid-lifetime 0
				60,                                                                     // prefix-length
				0x20, 0x01, 0x0d, 0xb8, 0x0a, 0xbc, 0xde, 0xf0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix 2001:db8:abc:def0::
				0, 13, // Status Code option code
				0, 2, // option length
				0, 6, // status-code NoPrefixAvail
			},
			want:     dhcp6.IAPrefix{Prefix: netip.MustParsePrefix("2001:db8:abc:def0::/60")},
			wantStat: dhcp6.StatusNoPrefixAvail,
		},
		{
			name: "prefix length 129",
			in: []byte{
				0, 0, 0, 1, // preferred-lifetime 1
				0, 0, 0, 1, // valid-lifetime 1
				129,                                                        // prefix-length 129: no such thing
				0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix
			},
			wantErr: true,
		},
		{
			name: "prefix length 255",
			in: []byte{
				0, 0, 0, 1, // preferred-lifetime 1
				0, 0, 0, 1, // valid-lifetime 1
				255,                                                        // prefix-length 255
				0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix
			},
			wantErr: true,
		},
		{
			name: "24 bytes",
			in: []byte{
				0, 0, 0, 1, // preferred-lifetime 1
				0, 0, 0, 1, // valid-lifetime 1
				56,                                                      // prefix-length
				0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix, one byte short
			},
			wantErr: true,
		},
		{
			name: "bad sub-option",
			in: []byte{
				0, 0, 0, 1, // preferred-lifetime 1
				0, 0, 0, 1, // valid-lifetime 1
				56,                                                         // prefix-length
				0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // prefix
				0, 13, // Status Code option code
				0, 9, // option length 9, 0 follow
			},
			wantErr: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := dhcp6.ParseIAPrefix(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseIAPrefix = %+v, want error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Preferred != tt.want.Preferred || got.Valid != tt.want.Valid || got.Prefix != tt.want.Prefix {
				t.Errorf("= %d %d %v, want %d %d %v", got.Preferred, got.Valid, got.Prefix,
					tt.want.Preferred, tt.want.Valid, tt.want.Prefix)
			}
			if !bytes.Equal(got.Options, tt.in[25:]) {
				t.Errorf("Options = %x, want %x", got.Options, tt.in[25:])
			}
			stat := uint16(dhcp6.StatusSuccess)
			if d, ok := got.Options.Get(dhcp6.OptStatusCode); ok {
				stat, _, _ = dhcp6.StatusCode(d)
			}
			if stat != tt.wantStat {
				t.Errorf("status = %d, want %d", stat, tt.wantStat)
			}
		})
	}
}
