#!/usr/bin/env bash
# Checks both ways of installing a node, for real: `make install` into a
# staging root, and the Debian package with apt-get on this machine (root
# needed; CI runs it on a throwaway machine). Where no systemd runs as PID 1
# (containers), the service is started the way its unit says, as its user,
# with a notification socket standing in for systemd's.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "test-packaging: FAIL: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "needs root (it installs a package)"

echo "== make install into a staging root"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
make --no-print-directory install DESTDIR="$stage" >/dev/null
for f in usr/local/bin/ip2p-relay etc/systemd/system/ip2p-relay.service \
         etc/sysctl.d/60-ip2p-relay.conf etc/ip2p/relay.example.toml; do
    [ -f "$stage/$f" ] || fail "make install did not install /$f"
done
grep -q '^ExecStart=/usr/local/bin/ip2p-relay --config /etc/ip2p/relay.toml --handover-socket /run/ip2p-relay/handover.sock$' \
    "$stage/etc/systemd/system/ip2p-relay.service" || fail "unit does not run the installed binary"
# The example's secrets are placeholders: check-config must refuse them.
if out=$("$stage/usr/local/bin/ip2p-relay" check-config "$stage/etc/ip2p/relay.example.toml" 2>&1); then
    fail "the installed example config's placeholder secrets were accepted"
fi
grep -q placeholder <<<"$out" || fail "the example config is refused for another reason: $out"

echo "== apt-get install the package"
deb=$(ls -t target/debian/ip2p-relay_*.deb | head -1)
export DEBIAN_FRONTEND=noninteractive
apt-get purge -y -qq ip2p-relay >/dev/null 2>&1 || true
apt-get install -y -qq "./$deb" >/dev/null || fail "apt-get install ./$deb"
unit=$(systemctl show -P FragmentPath ip2p-relay 2>/dev/null || true)
[ -f "$unit" ] || unit=$(ls /lib/systemd/system/ip2p-relay.service /usr/lib/systemd/system/ip2p-relay.service 2>/dev/null | head -1)
[ -f "$unit" ] || fail "no unit installed"
[ -x /usr/bin/ip2p-relay ] || fail "no /usr/bin/ip2p-relay"
[ -f /usr/lib/sysctl.d/60-ip2p-relay.conf ] || fail "no sysctl file"
[ -L /etc/systemd/system/multi-user.target.wants/ip2p-relay.service ] || fail "the unit is not enabled"
getent passwd ip2p-relay >/dev/null || fail "no ip2p-relay user"
[ "$(stat -c '%a %G' /etc/ip2p/relay.toml)" = "640 ip2p-relay" ] || fail "config not 0640 root:ip2p-relay"
systemd-analyze verify --man=no "$unit" || fail "systemd-analyze verify $unit"

echo "== the unit's commands, as its user"
pre=$(sed -n 's/^ExecStartPre=//p' "$unit")
start=$(sed -n 's/^ExecStart=//p' "$unit")
setpriv --reuid=ip2p-relay --regid=ip2p-relay --init-groups $pre >/dev/null || fail "ExecStartPre: $pre"
# What RuntimeDirectory= makes under systemd: the handover socket's place.
install -d -o ip2p-relay -g ip2p-relay -m 0755 /run/ip2p-relay
sock=$(mktemp -u /tmp/ip2p-notify-XXXXXX)
python3 - "$sock" "$start" <<'PY' || fail "the service did not start, serve and drain as its unit says"
import os, signal, socket, subprocess, sys, time, urllib.request
path, command = sys.argv[1], sys.argv[2].split()
notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
notify.bind(path)
os.chmod(path, 0o777)
env = dict(os.environ, NOTIFY_SOCKET=path)
relay = subprocess.Popen(["setpriv", "--reuid=ip2p-relay", "--regid=ip2p-relay", "--init-groups"] + command, env=env)
notify.settimeout(10)
seen = ""
while "READY=1" not in seen:
    seen += notify.recv(4096).decode() + "\n"
print("  notified:", " ".join(l for l in seen.split() if l.startswith(("READY", "STATUS"))))
for path_ in ("/readyz", "/healthz", "/status"):
    with urllib.request.urlopen("http://127.0.0.1:9478" + path_, timeout=5) as r:
        assert r.status == 200, (path_, r.status)
print("  admin: /readyz /healthz /status answer 200")
# An upgrade in place, as `systemctl kill -s USR2 --kill-whom=main` does it.
os.kill(relay.pid, signal.SIGUSR2)
seen = ""
while "MAINPID=" not in seen:
    seen += notify.recv(4096).decode() + "\n"
new = int(next(l for l in seen.split() if l.startswith("MAINPID="))[len("MAINPID="):])
code = relay.wait(timeout=10)
assert code == 0, f"the old process exited {code}"
try:
    with urllib.request.urlopen("http://127.0.0.1:9478/readyz", timeout=5) as r:
        assert r.status == 200, r.status
    print(f"  SIGUSR2: handed over to {new} (MAINPID), which serves; the old one exited 0")
    os.kill(new, signal.SIGTERM)
    deadline = time.time() + 40
    while os.path.exists(f"/proc/{new}") and time.time() < deadline:
        with open(f"/proc/{new}/stat") as f:
            if f.read().split(")")[-1].split()[0] == "Z":
                break
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{new}") or open(f"/proc/{new}/stat").read().split(")")[-1].split()[0] == "Z"
    print("  SIGTERM: the new process drained and exited")
finally:
    if os.path.exists(f"/proc/{new}"):
        os.kill(new, signal.SIGKILL)
PY
rm -f "$sock"

echo "== apt-get purge"
apt-get purge -y -qq ip2p-relay >/dev/null || fail "apt-get purge"
[ ! -e /usr/bin/ip2p-relay ] || fail "binary left behind"
[ ! -e /etc/ip2p/relay.toml ] || fail "config left behind after purge"
echo "test-packaging: ok"
