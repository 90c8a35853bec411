package lqserver

import (
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseFlags(t *testing.T) {
	c, err := ParseFlags([]string{"--kea-socket", "/run/kea/sock", "--allow", "2001:db8::/32", "--allow", "192.0.2.7",
		"--server-id", "00:01:00:01:32:a4:01:a5:02:00:00:00:ff:01", "--query-types", "3,4", "--release-types", "240,241"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "[::]:547" || c.MaxConns != 10 || c.PageSize != 1000 || len(c.ServerID) != 14 ||
		!slices.Equal(c.Allow, []netip.Prefix{netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("192.0.2.7/32")}) ||
		!slices.Equal(c.QueryTypes, []uint8{3, 4}) || c.RequestType != 240 || c.ReplyType != 241 {
		t.Errorf("config %+v", c)
	}
	if c, _ := ParseFlags([]string{"--kea-socket", "s"}, io.Discard); len(c.Allow) != 2 || !c.Allow[0].Contains(netip.IPv6Loopback()) {
		t.Errorf("default --allow %v, want loopback only", c.Allow)
	}
	bad := []struct {
		args []string
		want string // the message names the flag and the value
	}{
		{[]string{}, "--kea-socket"},
		{[]string{"--kea-socket", "s", "--server-id", "zz"}, `--server-id "zz"`},
		{[]string{"--kea-socket", "s", "--allow", "nope"}, `"nope"`},
		{[]string{"--kea-socket", "s", "--max-conns", "0"}, "--max-conns 0"},
		{[]string{"--kea-socket", "s", "--query-types", "3,6"}, `--query-types "3,6"`},
		{[]string{"--kea-socket", "s", "--release-types", "18,19"}, `--release-types "18,19"`},
		{[]string{"--kea-socket", "s", "--release-types", "250,250"}, `--release-types "250,250"`},
		{[]string{"--kea-socket", "s", "extra"}, `"extra"`},
	}
	for _, b := range bad {
		_, err := ParseFlags(b.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%v: %v, want an error naming %s", b.args, err, b.want)
		}
	}
}
