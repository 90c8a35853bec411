package lab

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
)

// physEnd is an interface of the caller's namespace that Config.Phys
// lent the lab, and what Close restores.
type physEnd struct {
	ns, labName string // where it is and its name there
	name        string // its own name
	mac         net.HardwareAddr
	up          bool
}

var linkName = regexp.MustCompile(`^(up0|dl[0-9]+)$`)

// takePhys checks Config.Phys and moves each pair's ends into their
// namespaces (down, as a move leaves them), recording what Close gives
// back. build renames them and sets their MACs.
func (l *Lab) takePhys() error {
	if len(l.cfg.Phys) == 0 {
		return nil
	}
	if l.SwitchNS != "" {
		return errors.New("lab: Phys needs point-to-point downlinks, not SharedSegment")
	}
	names := make([]string, 0, len(l.cfg.Phys))
	for name := range l.cfg.Phys {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		pair := l.cfg.Phys[name]
		if !linkName.MatchString(name) {
			return fmt.Errorf("lab: Phys: no link %q (up0, or dl0 to dl%d)", name, len(l.ClientNS)-1)
		}
		peer := l.ServerNS
		if name != "up0" {
			i, _ := strconv.Atoi(name[2:])
			if i >= len(l.ClientNS) {
				return fmt.Errorf("lab: Phys: no link %q (up0, or dl0 to dl%d)", name, len(l.ClientNS)-1)
			}
			peer = l.ClientNS[i]
		}
		if pair[0] == pair[1] {
			return fmt.Errorf("lab: Phys %s: both ends are %s", name, pair[0])
		}
		for j, ns := range []string{l.RelayNS, peer} {
			ifi, err := net.InterfaceByName(pair[j])
			if err != nil {
				return fmt.Errorf("lab: Phys %s: %w", name, err)
			}
			labName := name
			if j == 1 {
				labName = "eth0"
			}
			if out, err := exec.Command("ip", "link", "set", "dev", pair[j], "netns", ns).CombinedOutput(); err != nil {
				return fmt.Errorf("lab: Phys %s: move %s: %v: %s", name, pair[j], err, bytes.TrimSpace(out))
			}
			l.phys = append(l.phys, physEnd{ns: ns, labName: labName, name: pair[j],
				mac: ifi.HardwareAddr, up: ifi.Flags&net.FlagUp != 0})
		}
	}
	return nil
}

// givePhysBack returns the interfaces Config.Phys lent the lab to the
// caller's namespace, with their names, MACs and up state, before the
// namespaces go (a physical interface would come back from a deleted
// namespace with the lab's name and MAC; a veth would be destroyed).
func (l *Lab) givePhysBack() error {
	var errs []error
	self := strconv.Itoa(os.Getpid())
	for i := len(l.phys) - 1; i >= 0; i-- {
		p := l.phys[i]
		// An end build did not rename yet still has its own name.
		cur := p.labName
		if err := exec.Command("ip", "-n", p.ns, "link", "show", "dev", cur).Run(); err != nil {
			cur = p.name
		}
		batch := fmt.Sprintf("link set dev %s down\nlink set dev %s name %s address %s\nlink set dev %s netns %s\n",
			cur, cur, p.name, p.mac, p.name, self)
		if err := l.ipBatch(p.ns, batch); err != nil {
			errs = append(errs, err)
			continue
		}
		if p.up {
			if out, err := exec.Command("ip", "link", "set", "dev", p.name, "up").CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("lab: %s up: %v: %s", p.name, err, bytes.TrimSpace(out)))
			}
		}
	}
	l.phys = nil
	return errors.Join(errs...)
}
