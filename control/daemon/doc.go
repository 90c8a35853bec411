// Package daemon wires pdrelay together for `pdrelay run`: config, store,
// binding manager, FIB, relay sockets, operator API and metrics. It holds
// no protocol logic of its own, only the order of start-up and shutdown
// and the sinks that carry binding changes to the FIB and the store.
package daemon
