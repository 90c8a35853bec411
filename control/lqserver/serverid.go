package lqserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ServerIDFile is the file in Kea's data-directory where kea-dhcp6 keeps
// its DUID when "server-id" has "persist": true (Kea's default).
const ServerIDFile = "kea-dhcp6-serverid"

// DefaultDataDirectory is Kea's data-directory when the configuration
// names none (Debian's build).
const DefaultDataDirectory = "/var/lib/kea"

// DUID types (RFC 8415 section 11, RFC 6355).
const (
	duidLLT  = 1
	duidEN   = 2
	duidLL   = 3
	duidUUID = 4
)

// ErrServerIDUnknown is returned when Kea's DUID cannot be learned from
// its configuration or its data directory.
var ErrServerIDUnknown = errors.New("kea's server DUID is unknown")

// ServerID works out the DUID kea-dhcp6 answers with, from its running
// configuration: the "server-id" map when it fixes every field of the
// DUID (an LLT with htype, time and identifier; an LL with htype and
// identifier; an EN with enterprise-id and identifier), else the DUID
// Kea persisted in <data-directory>/kea-dhcp6-serverid when its type is
// the configured one (Kea regenerates the DUID otherwise). With
// "persist": false and an underspecified map Kea makes a new DUID at
// every start that it tells nobody: ServerID then fails with
// ErrServerIDUnknown and the operator must pass it (--server-id). It
// returns the DUID and where it came from.
func ServerID(cfg *KeaConfig, readFile func(string) ([]byte, error)) ([]byte, string, error) {
	if readFile == nil {
		readFile = os.ReadFile
	}
	sid := KeaServerID{Type: "LLT"}
	if cfg.ServerID != nil {
		sid = *cfg.ServerID
	}
	typ := strings.ToUpper(sid.Type)
	var want uint16
	switch typ {
	case "LLT", "":
		typ, want = "LLT", duidLLT
	case "EN":
		want = duidEN
	case "LL":
		want = duidLL
	default:
		return nil, "", fmt.Errorf("%w: server-id type %q", ErrServerIDUnknown, sid.Type)
	}
	if sid.Identifier != "" {
		id, err := ParseHex(sid.Identifier)
		if err != nil {
			return nil, "", fmt.Errorf("kea server-id identifier: %w", err)
		}
		var d []byte
		switch {
		case typ == "LLT" && sid.HType != 0 && sid.Time != 0:
			d = binary.BigEndian.AppendUint16(nil, duidLLT)
			d = binary.BigEndian.AppendUint16(d, sid.HType)
			d = binary.BigEndian.AppendUint32(d, sid.Time)
		case typ == "LL" && sid.HType != 0:
			d = binary.BigEndian.AppendUint16(nil, duidLL)
			d = binary.BigEndian.AppendUint16(d, sid.HType)
		case typ == "EN" && sid.EnterpriseID != 0:
			d = binary.BigEndian.AppendUint16(nil, duidEN)
			d = binary.BigEndian.AppendUint32(d, sid.EnterpriseID)
		}
		if d != nil {
			return append(d, id...), "kea config server-id", nil
		}
	}
	if sid.Persist != nil && !*sid.Persist {
		return nil, "", fmt.Errorf("%w: kea's server-id has persist false and does not fix the DUID", ErrServerIDUnknown)
	}
	dir := cfg.DataDirectory
	if dir == "" {
		dir = DefaultDataDirectory
	}
	path := filepath.Join(dir, ServerIDFile)
	b, err := readFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrServerIDUnknown, err)
	}
	d, err := ParseHex(string(b))
	if err != nil || len(d) < 3 || len(d) > 130 {
		return nil, "", fmt.Errorf("%w: %s does not hold a DUID", ErrServerIDUnknown, path)
	}
	if got := binary.BigEndian.Uint16(d); got != want {
		return nil, "", fmt.Errorf("%w: %s holds a DUID of type %d, kea is configured for %s", ErrServerIDUnknown, path, got, typ)
	}
	return d, path, nil
}
