#!/bin/sh
# First-time setup of an ip2p-relay host, shared by `make install` and the
# Debian package's postinst: the service's user, /etc/ip2p, and a first
# config (loopback only, its own random secrets) unless one exists.
# Usage: setup.sh /path/to/ip2p-relay
set -eu
bin=${1:-/usr/local/bin/ip2p-relay}

# A system user with no home and no shell: the unit runs as it
# (DynamicUser=yes with User=ip2p-relay takes this static user when it
# exists), and it may read the config, which holds secrets.
if ! getent passwd ip2p-relay >/dev/null; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "ip2p STUN/TURN relay" ip2p-relay
fi
install -d -m 0750 -o root -g ip2p-relay /etc/ip2p
if [ ! -e /etc/ip2p/relay.toml ]; then
    "$bin" init-config /etc/ip2p/relay.toml
    chgrp ip2p-relay /etc/ip2p/relay.toml
fi
