# Sourced by bench/compare.sh and bench/scaling.sh: where the servers and
# the bench run, by $TOPOLOGY. "loopback": this host's loopback. "veth":
# two network namespaces ($NS-r, $NS-b) joined by a veth pair, made here and
# removed by topology_down. Sets IN_R and IN_B (prefixes that run a command
# in the relay's or the bench's namespace), SERVER_IP and PEER_IP (the
# bench's peers' address), and free_port.
topology_down() {
  if [ "$TOPOLOGY" = veth ]; then sleep 0.2; ip netns del "$NS-r" 2>/dev/null || true; ip netns del "$NS-b" 2>/dev/null || true; fi
}

case "$TOPOLOGY" in
  loopback) IN_R=(); IN_B=(); SERVER_IP=127.0.0.1; PEER_IP=127.0.0.2 ;;
  veth)
    [ "$(id -u)" = 0 ] || { echo "TOPOLOGY=veth needs root (network namespaces)" >&2; exit 1; }
    ip netns add "$NS-r"; ip netns add "$NS-b"
    for n in r b; do ip -n "$NS-$n" link set lo up; done
    ip -n "$NS-r" link add vr type veth peer name vb netns "$NS-b"
    ip -n "$NS-r" addr add 10.73.0.1/24 dev vr; ip -n "$NS-b" addr add 10.73.0.2/24 dev vb
    ip -n "$NS-r" link set dev vr up; ip -n "$NS-b" link set dev vb up
    IN_R=(ip netns exec "$NS-r"); IN_B=(ip netns exec "$NS-b"); SERVER_IP=10.73.0.1; PEER_IP=10.73.0.2 ;;
  *) echo "TOPOLOGY is loopback or veth, not $TOPOLOGY" >&2; exit 1 ;;
esac

free_port() { # in the namespace of "$@" (none: this one)
  "$@" python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 0)); print(s.getsockname()[1])'
}
