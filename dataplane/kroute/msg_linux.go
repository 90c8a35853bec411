package kroute

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The rtnetlink messages of the Router, written by appendOp and read with
// the help of github.com/vishvananda/netlink/nl. Routes:
//
//	RTM_NEWROUTE  NLM_F_CREATE|NLM_F_REPLACE
//	  rtmsg    family AF_INET6, dst_len = the prefix's length, table,
//	           protocol Protocol, scope universe, type unicast
//	           (flags RTNH_F_ONLINK for a next hop that is not link-local)
//	  RTA_DST      the prefix (16 bytes)
//	  RTA_GATEWAY  the next hop (16 bytes)
//	  RTA_OIF      the downlink's index (u32)
//	  RTA_PRIORITY Metric (u32)
//	  RTA_TABLE    the table (u32; rtmsg's table is 8 bits)
//	RTM_DELROUTE
//	  rtmsg    family, dst_len, table, protocol Protocol: the kernel
//	           deletes only a route of this protocol (any metric)
//	  RTA_DST, RTA_TABLE
//
// Neighbour entries:
//
//	RTM_NEWNEIGH  NLM_F_CREATE|NLM_F_REPLACE
//	  ndmsg    family AF_INET6, ifindex, state NUD_STALE, flags NTF_EXT_LEARNED
//	  NDA_DST      the next hop (16 bytes)
//	  NDA_LLADDR   its MAC (6 bytes)
//	  NDA_PROTOCOL Protocol (u8, Linux 5.3)
//	RTM_DELNEIGH
//	  ndmsg    family AF_INET6, ifindex
//	  NDA_DST

// headerTable is the rtmsg table field for table: the table itself if it
// fits in 8 bits, else RT_TABLE_UNSPEC and RTA_TABLE alone says it.
func headerTable(table uint32) uint8 {
	if table < 256 {
		return uint8(table)
	}
	return unix.RT_TABLE_UNSPEC
}

// appendOp appends o's request, with sequence number seq and no ack
// asked, to b. It writes the bytes in place: a Flush of thousands of
// bindings allocates nothing per request.
func appendOp(b []byte, o *op, seq uint32) []byte {
	var typ, flags uint16
	switch o.kind {
	case opRoute:
		typ, flags = unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE
	case opUnroute:
		typ = unix.RTM_DELROUTE
	case opNeigh:
		typ, flags = unix.RTM_NEWNEIGH, unix.NLM_F_CREATE|unix.NLM_F_REPLACE
	default:
		typ = unix.RTM_DELNEIGH
	}
	start := len(b)
	b = native.AppendUint32(b, 0) // nlmsg_len, set below
	b = native.AppendUint16(b, typ)
	b = native.AppendUint16(b, unix.NLM_F_REQUEST|flags)
	b = native.AppendUint32(b, seq)
	b = native.AppendUint32(b, 0) // pid: the kernel's
	switch o.kind {
	case opRoute, opUnroute:
		b = appendRoute(b, o)
	default:
		b = appendNeigh(b, o)
	}
	native.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

// native is netlink's byte order, the host's.
var native = binary.NativeEndian

func appendRoute(b []byte, o *op) []byte {
	dst := o.prefix.Addr().As16()
	scope, typ, flags := uint8(unix.RT_SCOPE_NOWHERE), uint8(0), uint32(0)
	if o.kind == opRoute {
		scope, typ = unix.RT_SCOPE_UNIVERSE, unix.RTN_UNICAST
		if !o.addr.IsLinkLocalUnicast() {
			// A global next hop (a client behind an LDRA may be known by
			// one) is on the downlink's link whatever its prefix.
			flags = unix.RTNH_F_ONLINK
		}
	}
	// rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
	b = append(b, unix.AF_INET6, uint8(o.prefix.Bits()), 0, 0, headerTable(o.table), Protocol, scope, typ)
	b = native.AppendUint32(b, flags)
	b = appendAttr(b, unix.RTA_DST, dst[:])
	if o.kind == opUnroute {
		b = appendAttrU32(b, unix.RTA_TABLE, o.table)
		if o.metric != 0 {
			b = appendAttrU32(b, unix.RTA_PRIORITY, o.metric)
		}
		return b
	}
	gw := o.addr.As16()
	b = appendAttr(b, unix.RTA_GATEWAY, gw[:])
	b = appendAttrU32(b, unix.RTA_OIF, uint32(o.index))
	b = appendAttrU32(b, unix.RTA_PRIORITY, Metric)
	return appendAttrU32(b, unix.RTA_TABLE, o.table)
}

func appendNeigh(b []byte, o *op) []byte {
	dst := o.addr.As16()
	state, flags := uint16(0), uint8(0)
	if o.kind == opNeigh {
		state, flags = unix.NUD_STALE, unix.NTF_EXT_LEARNED
	}
	// ndmsg: family, two pads, ifindex, state, flags, type
	b = append(b, unix.AF_INET6, 0, 0, 0)
	b = native.AppendUint32(b, uint32(o.index))
	b = native.AppendUint16(b, state)
	b = append(b, flags, 0)
	b = appendAttr(b, unix.NDA_DST, dst[:])
	if o.kind == opUnneigh {
		return b
	}
	b = appendAttr(b, unix.NDA_LLADDR, o.mac[:])
	return appendAttr(b, netlink.NDA_PROTOCOL, []byte{Protocol})
}

// appendAttr appends a netlink attribute, padded to 4 bytes.
func appendAttr(b []byte, typ uint16, v []byte) []byte {
	b = native.AppendUint16(b, uint16(unix.SizeofRtAttr+len(v)))
	b = native.AppendUint16(b, typ)
	b = append(b, v...)
	for range -len(v) & (unix.RTA_ALIGNTO - 1) {
		b = append(b, 0)
	}
	return b
}

func appendAttrU32(b []byte, typ uint16, x uint32) []byte {
	var v [4]byte
	native.PutUint32(v[:], x)
	return appendAttr(b, typ, v[:])
}

// parseAck reads an NLMSG_ERROR payload: the errno (0 for an ack) and
// the kernel's extended ack message, if any. hdrFlags are the answer's
// header flags: NLM_F_CAPPED (the request is not echoed) and
// NLM_F_ACK_TLVS (attributes follow).
func parseAck(hdrFlags uint16, data []byte) (syscall.Errno, string, error) {
	if len(data) < 4+unix.NLMSG_HDRLEN {
		return 0, "", errShort
	}
	code := int32(nl.NativeEndian().Uint32(data))
	errno := syscall.Errno(-code)
	if code > 0 {
		errno = syscall.Errno(code)
	}
	if hdrFlags&unix.NLM_F_ACK_TLVS == 0 {
		return errno, "", nil
	}
	off := 4 + unix.NLMSG_HDRLEN // errno, the request's header
	if hdrFlags&unix.NLM_F_CAPPED == 0 {
		// The whole request is echoed: skip it, aligned.
		reqLen := int(nl.NativeEndian().Uint32(data[4:]))
		if reqLen < unix.NLMSG_HDRLEN || 4+reqLen > len(data) {
			return errno, "", nil
		}
		off = 4 + (reqLen+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)
	}
	if off > len(data) {
		return errno, "", nil
	}
	msg := ""
	_ = eachAttr(data[off:], func(typ uint16, v []byte) { // the message is a nicety
		if typ == unix.NLMSGERR_ATTR_MSG {
			msg = cstring(v)
		}
	})
	return errno, msg, nil
}

// nlHdr is a netlink message's header, as eachMsg reads it.
type nlHdr struct {
	typ, flags uint16
	seq        uint32
}

// eachMsg calls f with the header and payload of each netlink message in
// b, one datagram as read, until f returns false. It returns errShort if
// b is not a well-formed run of messages (f may have been called for the
// messages before the fault). It is syscall.ParseNetlinkMessage without
// its slice of messages, which costs a dump 40 bytes a route.
func eachMsg(b []byte, f func(h nlHdr, data []byte) bool) error {
	for len(b) > 0 {
		if len(b) < unix.NLMSG_HDRLEN {
			return errShort
		}
		l := int(native.Uint32(b))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return errShort
		}
		h := nlHdr{typ: native.Uint16(b[4:]), flags: native.Uint16(b[6:]), seq: native.Uint32(b[8:])}
		if !f(h, b[unix.NLMSG_HDRLEN:l]) {
			return nil
		}
		l = (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if l >= len(b) {
			return nil
		}
		b = b[l:]
	}
	return nil
}

// eachAttr calls f with the type and value of each netlink attribute in
// b, and reports false if b is not a well-formed list (f may have been
// called for the attributes before the fault). It is
// nl.ParseRouteAttr with its bounds checked: that one panics on a
// length past the end.
func eachAttr(b []byte, f func(typ uint16, v []byte)) bool {
	for len(b) >= unix.SizeofRtAttr {
		l := int(nl.NativeEndian().Uint16(b))
		typ := nl.NativeEndian().Uint16(b[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < unix.SizeofRtAttr || l > len(b) {
			return false
		}
		f(typ, b[unix.SizeofRtAttr:l])
		l = (l + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1)
		if l >= len(b) {
			return true
		}
		b = b[l:]
	}
	return len(b) == 0
}

var errShort = errors.New("short netlink message")

func cstring(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// parseRoute reads an RTM_NEWROUTE payload and returns it if it is an
// IPv6 route of Protocol in table (not a cached clone, not
// source-specific).
func parseRoute(data []byte, table uint32) (kernelRoute, bool) {
	var kr kernelRoute
	if len(data) < unix.SizeofRtMsg {
		return kr, false
	}
	h := nl.DeserializeRtMsg(data)
	if h.Family != unix.AF_INET6 || h.Protocol != Protocol || h.Flags&unix.RTM_F_CLONED != 0 ||
		h.Src_len != 0 || h.Tos != 0 || h.Dst_len > 128 {
		return kr, false
	}
	tab := uint32(h.Table)
	var dst [16]byte
	metric := uint32(0)
	gw, oif, bad := false, false, false
	ok := eachAttr(data[unix.SizeofRtMsg:], func(typ uint16, v []byte) {
		switch typ {
		case unix.RTA_TABLE:
			if len(v) == 4 {
				tab = nl.NativeEndian().Uint32(v)
			}
		case unix.RTA_DST:
			if len(v) != 16 {
				bad = true
				return
			}
			dst = [16]byte(v)
		case unix.RTA_GATEWAY:
			if len(v) == 16 {
				kr.via = netip.AddrFrom16([16]byte(v))
				gw = true
			}
		case unix.RTA_OIF:
			if len(v) == 4 {
				kr.index = int32(nl.NativeEndian().Uint32(v))
				oif = true
			}
		case unix.RTA_PRIORITY:
			if len(v) == 4 {
				metric = nl.NativeEndian().Uint32(v)
			}
		case unix.RTA_MULTIPATH, unix.RTA_VIA, rtaNHID, unix.RTA_ENCAP:
			kr.odd = true
		}
	})
	if !ok || bad || tab != table {
		return kr, false
	}
	kr.prefix = netip.PrefixFrom(netip.AddrFrom16(dst), int(h.Dst_len))
	if kr.prefix != kr.prefix.Masked() {
		return kr, false
	}
	kr.metric = metric
	if !gw || !oif || h.Type != unix.RTN_UNICAST {
		kr.odd = true
	}
	return kr, true
}

// parseNeigh reads an RTM_NEWNEIGH payload and returns it if it is an
// IPv6 neighbour entry (not a proxy entry).
func parseNeigh(data []byte) (kernelNeigh, bool) {
	var kn kernelNeigh
	const ndmsgLen = 12 // family, pads, ifindex, state, flags, type
	if len(data) < ndmsgLen {
		return kn, false
	}
	family, flags := data[0], data[10]
	if family != unix.AF_INET6 || flags&unix.NTF_PROXY != 0 {
		return kn, false
	}
	kn.index = int32(nl.NativeEndian().Uint32(data[4:]))
	bad := false
	ok := eachAttr(data[ndmsgLen:], func(typ uint16, v []byte) {
		switch typ {
		case unix.NDA_DST:
			if len(v) != 16 {
				bad = true
				return
			}
			kn.addr = netip.AddrFrom16([16]byte(v))
		case unix.NDA_LLADDR:
			if len(v) == 6 {
				kn.mac = [6]byte(v)
			}
		case netlink.NDA_PROTOCOL:
			kn.ours = len(v) == 1 && v[0] == Protocol
		}
	})
	return kn, ok && !bad && kn.addr.IsValid()
}

// rtaNHID is RTA_NH_ID (Linux 5.3): the route uses a nexthop object,
// which pdrelay never does.
const rtaNHID = 30
