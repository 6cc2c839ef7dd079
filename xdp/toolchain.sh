#!/usr/bin/env bash
# What building the XDP fast path needs: clang (the BPF target), libbpf's
# headers and the kernel's UAPI headers; and ethtool, which its tests use.
# Installed with apt-get when missing and when we can (root or sudo);
# otherwise it says so and goes on: the relay builds and runs without the
# fast path. `make build`, `make run` and `make test` call it.
set -uo pipefail

need=()
command -v clang >/dev/null || need+=(clang)
[ -e /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
[ -e /usr/include/linux/bpf.h ] || need+=(linux-libc-dev)
command -v ethtool >/dev/null || need+=(ethtool)
[ ${#need[@]} -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null; then
    echo "xdp/toolchain.sh: ${need[*]} missing and not root: building without the XDP fast path" >&2
    exit 0
  fi
  sudo=(sudo)
fi
if ! command -v apt-get >/dev/null; then
  echo "xdp/toolchain.sh: ${need[*]} missing and no apt-get: building without the XDP fast path" >&2
  exit 0
fi
echo "installing ${need[*]} (apt-get) for the XDP fast path"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq || true
"${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null \
  || echo "xdp/toolchain.sh: apt-get install ${need[*]} failed: building without the XDP fast path" >&2
exit 0
