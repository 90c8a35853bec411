package binding

import "net/netip"

// ReasonNotAtServer removes a binding that a complete Bulk Leasequery
// answer from its server did not return: the server no longer holds it.
const ReasonNotAtServer = "not-at-server"

// ByPrefix returns the binding of prefix p, whatever its key. Bulk
// Leasequery uses it to keep the IAID of a binding the server returns
// without one (RFC 5007 client data carries no IAID).
func (t *Table) ByPrefix(p netip.Prefix) (Binding, bool) {
	e, ok := t.byPrefix[p.Masked()]
	if !ok {
		return Binding{}, false
	}
	return e.Binding, true
}
