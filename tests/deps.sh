#!/usr/bin/env bash
# What the tests need that cargo does not bring, installed when missing:
# coturn's client tools, systemd-analyze, iproute2's `ip` for network
# namespaces, a headless Chromium for the self-test page, redis-server for
# the fleet, HAProxy and nginx (with its stream module) as load balancers
# in front of the relay (Debian packages, apt-get; their services are not
# started: the tests start their own), Prometheus and promtool for the dashboard and alert
# rules (taken out of Debian's prometheus package into target/promtool, so
# that no Prometheus service is installed or started), and
# Python's aioice in a project-local virtual environment (.venv, ignored by
# git) that the interop tests use. `make test` runs it first.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v turnutils_uclient >/dev/null || missing+=(coturn)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v ip >/dev/null || missing+=(iproute2)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v nginx >/dev/null || missing+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null || missing+=(chromium-headless-shell)
sudo=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then
  sudo=(sudo)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && [ ${#sudo[@]} -eq 0 ]; then
    echo "tests need ${missing[*]}: apt-get install them as root" >&2
    exit 1
  fi
  echo "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  # Packages with a service (nginx, haproxy) would start it on ports of
  # their own: forbid that for the install (policy-rc.d), unless the host
  # has its own policy.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod +x "$policy"
    trap '"${sudo[@]}" rm -f "$policy"' EXIT
  fi
  "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x target/promtool/usr/bin/promtool ]; then
  echo "fetching promtool (Debian's prometheus package, unpacked into target/promtool)"
  scratch=$(mktemp -d)
  (cd "$scratch" && { apt-get download prometheus >/dev/null 2>&1 ||
    { "${sudo[@]}" apt-get update -qq && apt-get download prometheus >/dev/null; }; })
  mkdir -p target/promtool
  dpkg-deb -x "$scratch"/prometheus_*.deb target/promtool
  rm -rf "$scratch"
fi

if ! .venv/bin/python3 -c 'import aioice' 2>/dev/null; then
  echo "installing aioice into .venv"
  python3 -m venv .venv
  .venv/bin/python3 -m pip install --quiet --disable-pip-version-check 'aioice==0.13.0'
fi
