package release

import "time"

// schedule returns the retransmission timeouts of RFC 8415 section 15
// with MRT 0 and MRD 0 (the draft's section 4.1.1: IRT REL_TIMEOUT, MRC
// REL_MAX_RC): the wait after each of the mrc transmissions. The first is
// IRT + RAND*IRT, each next 2*RTprev + RAND*RTprev, RAND from rnd, which
// must return values in [-0.1, 0.1]. After the last wait the exchange has
// failed.
func schedule(irt time.Duration, mrc int, rnd func() float64) []time.Duration {
	out := make([]time.Duration, 0, mrc)
	var rt time.Duration
	for i := range mrc {
		if i == 0 {
			rt = irt + time.Duration(rnd()*float64(irt))
		} else {
			rt = 2*rt + time.Duration(rnd()*float64(rt))
		}
		out = append(out, rt)
	}
	return out
}
