#!/usr/bin/env bash
# What the tests need that cargo does not bring, installed when missing:
# coturn's client tools, systemd-analyze and iproute2's `ip` for network
# namespaces (Debian packages, apt-get), and
# Python's aioice in a project-local virtual environment (.venv, ignored by
# git) that the interop tests use. `make test` runs it first.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v turnutils_uclient >/dev/null || missing+=(coturn)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v ip >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "tests need ${missing[*]}: apt-get install them as root" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! .venv/bin/python3 -c 'import aioice' 2>/dev/null; then
  echo "installing aioice into .venv"
  python3 -m venv .venv
  .venv/bin/python3 -m pip install --quiet --disable-pip-version-check 'aioice==0.13.0'
fi
