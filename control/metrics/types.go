package metrics

import "github.com/pdrelay/pdrelay/control/dhcp6"

type dhcp6Type = dhcp6.MessageType
