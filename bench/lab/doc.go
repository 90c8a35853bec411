// Package lab builds a network-namespace lab for pdrelay's end-to-end
// tests, benchmarks and `make demo`, and runs real DHCPv6 peers in it:
// Kea as the server, dhclient and dhcpcd as requesting routers, and ISC
// dhcrelay as a stand-in relay for the lab's own tests.
//
// # Topology
//
//	ns <id>-c0  eth0 ──veth── dl0 ┐
//	ns <id>-c1  eth0 ──veth── dl1 ┼─ ns <id>-rly  up0 ──veth── eth0  ns <id>-srv
//	   ...                    ... ┘   (relay)                        (Kea; upstream host)
//
// With Config.SharedSegment every client shares ONE multi-access port,
// dl0, through a Linux bridge (br0, no STP, no MLD snooping, no IPv6 of
// its own) in an extra namespace <id>-sw:
//
//	ns <id>-c0  eth0 ──veth── c0 ┐
//	ns <id>-c1  eth0 ──veth── c1 ┼ br0 (ns <id>-sw) rly ──veth── dl0  ns <id>-rly ...
//	   ...                   ... ┘
//
// Then Lab.Downlinks holds only dl0 (its Peer* fields are client 0's),
// Kea's default config has one subnet (DownlinkPrefix(0), pool
// DefaultPDPool(0)), and Lab.ClientLinks tells each client apart: entry i
// is the relay port client i is behind (always dl0 here) with client i's
// eth0 as its peer (PeerNS, PeerMAC, PeerLinkLocal, PeerIndex). Without
// SharedSegment ClientLinks equals Downlinks. Client indexes (StartDhclient
// and StartDhcpcd's port, AddClientAddr's i, Client.Port) always index
// ClientNS. PdrelayConfigWith's default link_type is multi-access in
// this mode.
//
// Namespace names are "pdl-<pid>-<random>-<tag><role>" (roles srv, rly,
// sw, c0, c1, ...; Config.Tag is empty unless a test names itself), so
// labs of parallel tests never collide, and SweepStale (run by New) can
// remove labs whose test binary died before Close.
//
// Address plan (the same in every lab; each lab is isolated):
//
//	uplink           fd00:0:0:ffff::/64   server eth0 ::1 (ServerAddr), relay up0 ::2 (RelayUplinkAddr)
//	upstream host    fd00:beef::1/128 on the server's lo (UpstreamAddr)
//	downlink i       relay dl<i>: fe80::1 (DownlinkGateway) and fd00:0:0:<i+1>::1/64
//	                 (DownlinkPrefix; left out with Config.NoDownlinkAddrs)
//	                 client eth0: only its EUI-64 link-local; default route via fe80::1
//	PD pool i        2001:db8:<i+1>00::/40 delegating /56 (DefaultPDPool)
//	routes           relay: default via ServerAddr; server: 2001:db8::/32 (unless
//	                 Config.NoPoolRoute) and every DownlinkPrefix via RelayUplinkAddr
//
// MACs are fixed, so link-locals, DUID-LL/LLT and dhclient IAIDs are
// predictable: relay up0 02:00:00:00:ff:02, server eth0 02:00:00:00:ff:01,
// relay dl<i> 02:00:00:00:<i+1>:01, client i eth0 02:00:00:00:<i+1>:02.
// Kea's server DUID is DUID-LL of the server's eth0 (Kea.ServerDUID).
//
// DAD is off in every namespace, and IPv6 forwarding in the relay
// namespace is off unless Config.Forwarding or Lab.SetForwarding asks.
//
// # Use
//
//	l := lab.NewT(t, lab.Config{Clients: 2})       // skips unless root + ip netns
//	lab.Require(t, "kea-dhcp6", "dhclient")        // skips if binaries are missing
//	k, _ := l.StartKea(lab.KeaOptions{})           // one subnet + PD pool per downlink
//	relay, _ := l.Start(l.RelayNS, "pdrelay", bin, "run", "-c", cfg)
//	c, _ := l.StartDhclient(0, lab.ClientOptions{IAPDs: 2})
//	prefixes, _ := c.WaitPrefix(10 * time.Second)
//	leases, _ := k.Leases6()                       // lease6-get-all, IA_PD only
//	_ = c.Release()                                // Kea 2.2 then deletes the leases
//
// Lab.StartFRR runs FRR's zebra and bgpd in the server namespace, as an
// upstream router a BGP speaker under test peers with; FRR.Routes and
// FRR.Session read its table and sessions through vtysh.
//
// Lab.Start runs any long-lived process in a namespace (its output goes
// to <Dir>/<name>.log); Lab.Exec and Lab.Run run short commands;
// Lab.ListenUDP and Lab.InNS give a test sockets inside a namespace;
// Lab.Ping sends ICMPv6 echo from a namespace. Close (registered by NewT)
// stops every process, kills anything left in the namespaces, deletes
// them and their /etc/netns entries and the scratch directory.
//
// # Safety
//
// Every namespace has /etc/netns/<ns>/resolv.conf, which `ip netns exec`
// mounts over /etc/resolv.conf; clients run without scripts (dhclient
// -sf /bin/true; dhcpcd -c /bin/true and nohook resolv.conf) and keep
// their leases, pid files and DUIDs in the lab directory (dhcpcd through
// private bind mounts over /run/dhcpcd and /var/lib/dhcpcd). Traffic stays
// inside the lab's namespaces.
//
// NOTES.md beside this file records the package versions, how Kea picks
// a subnet, and the clients' quirks that matter to the relay.
package lab
