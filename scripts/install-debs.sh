#!/bin/sh
# Installs the named Debian packages that are missing. Only root can; for
# others it says which are missing and goes on (those tests then skip).
missing=""
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "not root: cannot install$missing; the end-to-end tests that need them will skip" >&2
	exit 0
fi
echo "installing$missing"
export DEBIAN_FRONTEND=noninteractive
# As root a failed install fails the build: the end-to-end tests would
# otherwise skip and a green run would mean nothing.
apt-get update -q >/dev/null || { echo "apt-get update failed" >&2; exit 1; }
apt-get install -y -q $missing >/dev/null || { echo "apt-get install$missing failed" >&2; exit 1; }
# The packages start their own daemons; the tests run their own instances.
for s in kea-dhcp6-server kea-dhcp4-server kea-ctrl-agent kea-dhcp-ddns-server isc-dhcp-relay frr; do
	systemctl disable --now "$s" >/dev/null 2>&1 || true
done
exit 0
