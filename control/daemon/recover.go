package daemon

import (
	"context"
	"log/slog"

	"github.com/pdrelay/pdrelay/control/binding"
	"github.com/pdrelay/pdrelay/control/config"
	"github.com/pdrelay/pdrelay/control/leasequery"
)

// newRequestor builds the Bulk Leasequery requestor (RFC 5460) from the
// config: its queries, and the downlinks as the relay's Relay-Forwards
// name them (Interface-ID, link-address), so a recovered binding lands
// on the port the relay relayed it from. It returns nil when
// leasequery.servers is empty.
//
// Bindings recovered without a MAC (the server kept no option 79) have
// MAC zero, and the next-hop sink (resolve.go) asks neighbour discovery
// for it, as for a Reply whose request the relay did not see.
func newRequestor(cfg *config.Config, relayID []byte, mgr *binding.Manager, log *slog.Logger) *leasequery.Requestor {
	lq := cfg.Leasequery
	if len(lq.Servers) == 0 {
		return nil
	}
	var ports []leasequery.Port
	var queries []leasequery.Query
	for _, d := range cfg.Downlinks {
		p := leasequery.Port{Name: d.Interface, InterfaceID: []byte(d.InterfaceID), LinkAddr: d.LinkAddress}
		if !p.LinkAddr.IsValid() {
			p.LinkAddr = globalAddr(d.Interface) // what the relay sends (engineConfig)
		}
		ports = append(ports, p)
		if lq.Query == config.QueryLinkAddress && d.LinkAddress.IsValid() {
			queries = append(queries, leasequery.LinkAddressQuery(d.Interface, d.LinkAddress))
		}
	}
	var q leasequery.Query
	switch lq.Query {
	case config.QueryRemoteID:
		q = leasequery.RemoteIDQuery(lq.RemoteID)
	case config.QueryLinkAddress:
	default:
		q = leasequery.RelayIDQuery(relayID)
	}
	if lq.Query != config.QueryLinkAddress {
		if !lq.PerLink {
			queries = []leasequery.Query{q}
		}
		for _, d := range cfg.Downlinks {
			if lq.PerLink && d.LinkAddress.IsValid() {
				queries = append(queries, q.OnLink(d.Interface, d.LinkAddress))
			}
		}
	}
	return leasequery.New(leasequery.Config{
		Servers:     lq.Servers,
		Queries:     queries,
		ClientID:    relayID,
		Converter:   leasequery.Converter{Ports: ports, RelayID: relayID},
		ConnTimeout: lq.ConnTimeout,
		DataTimeout: lq.DataTimeout,
		MaxRetry:    lq.MaxRetry,
	}, mgr, log.With("part", "leasequery"))
}

// recoverAtStart runs one recovery when the relay starts
// (leasequery.on_start), beside the relay, which relays meanwhile.
func recoverAtStart(ctx context.Context, lq *leasequery.Requestor, log *slog.Logger) {
	log.Info("leasequery recovery at start")
	if _, err := lq.Recover(ctx, ""); err != nil {
		log.Warn("leasequery recovery at start not run", "err", err)
	}
}
