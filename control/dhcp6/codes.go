package dhcp6

import (
	"net/netip"
	"strconv"
)

// MessageType is the first byte of every DHCPv6 message.
type MessageType uint8

// Message types (RFC 8415, RFC 5007, RFC 5460; ARCHITECTURE.md, "Code points").
const (
	MsgSolicit            MessageType = 1
	MsgAdvertise          MessageType = 2
	MsgRequest            MessageType = 3
	MsgConfirm            MessageType = 4
	MsgRenew              MessageType = 5
	MsgRebind             MessageType = 6
	MsgReply              MessageType = 7
	MsgRelease            MessageType = 8
	MsgDecline            MessageType = 9
	MsgReconfigure        MessageType = 10
	MsgInformationRequest MessageType = 11
	MsgRelayForw          MessageType = 12
	MsgRelayRepl          MessageType = 13
	MsgLeasequery         MessageType = 14
	MsgLeasequeryReply    MessageType = 15
	MsgLeasequeryDone     MessageType = 16
	MsgLeasequeryData     MessageType = 17
)

var msgNames = [...]string{
	MsgSolicit: "solicit", MsgAdvertise: "advertise", MsgRequest: "request",
	MsgConfirm: "confirm", MsgRenew: "renew", MsgRebind: "rebind",
	MsgReply: "reply", MsgRelease: "release", MsgDecline: "decline",
	MsgReconfigure: "reconfigure", MsgInformationRequest: "information-request",
	MsgRelayForw: "relay-forward", MsgRelayRepl: "relay-reply",
	MsgLeasequery: "leasequery", MsgLeasequeryReply: "leasequery-reply",
	MsgLeasequeryDone: "leasequery-done", MsgLeasequeryData: "leasequery-data",
}

// String returns the lower-case RFC name, or "type-N" for an unknown type.
// It is used as a metric label, so the set of values is bounded (256).
func (t MessageType) String() string {
	if int(t) < len(msgNames) && msgNames[t] != "" {
		return msgNames[t]
	}
	return typeNames[t]
}

var typeNames = func() (n [256]string) {
	for i := range n {
		n[i] = "type-" + strconv.Itoa(i)
	}
	return n
}()

// Option codes (ARCHITECTURE.md, "Code points", names the RFC of each).
const (
	OptClientID          uint16 = 1
	OptServerID          uint16 = 2
	OptIANA              uint16 = 3
	OptIATA              uint16 = 4
	OptIAAddr            uint16 = 5
	OptRelayMsg          uint16 = 9
	OptStatusCode        uint16 = 13
	OptRapidCommit       uint16 = 14
	OptInterfaceID       uint16 = 18
	OptIAPD              uint16 = 25
	OptIAPrefix          uint16 = 26
	OptRemoteID          uint16 = 37
	OptLQQuery           uint16 = 44
	OptClientData        uint16 = 45
	OptCLTTime           uint16 = 46
	OptLQRelayData       uint16 = 47
	OptLQClientLink      uint16 = 48
	OptRelayID           uint16 = 53
	OptClientLinkLayer   uint16 = 79
	OptLQBaseTime        uint16 = 100
	OptLQStartTime       uint16 = 101
	OptLQEndTime         uint16 = 102
	HardwareTypeEthernet uint16 = 1
)

// Status codes.
const (
	StatusSuccess       uint16 = 0
	StatusUnspecFail    uint16 = 1
	StatusNoAddrsAvail  uint16 = 2
	StatusNoBinding     uint16 = 3
	StatusNotOnLink     uint16 = 4
	StatusUseMulticast  uint16 = 5
	StatusNoPrefixAvail uint16 = 6
)

// Relay agent constants (RFC 8415 section 7).
const (
	HopCountLimit = 32
	ClientPort    = 546
	ServerPort    = 547
)

var (
	// AllRelayAgentsAndServers is ff02::1:2, where clients send.
	AllRelayAgentsAndServers = netip.MustParseAddr("ff02::1:2")
	// AllServers is ff05::1:3, a site-scoped server group address.
	AllServers = netip.MustParseAddr("ff05::1:3")
)
