//! The XDP fast path in the node (docs/xdp.md): [`start`] loads the
//! program and attaches it as `[xdp]` says, and each worker's `Mirror`
//! writes the core's events into its tables. Everything the program does
//! not carry still reaches the sockets, so the node works the same with the
//! fast path off, detached (draining), or absent from the build.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ip2p_turn::{ChannelPath, Event, RelayToken, SessionId, Usage};
use ip2p_xdp::{Capacity, Channel, FastPath, Mode, Outcomes, Tables};

use crate::config::{Settings, XdpMode};

/// The loaded program, shared by the node (attach, detach, metrics).
pub type Loaded = Arc<Mutex<FastPath>>;

/// Per-allocation counter slots (each worker gets an equal share).
const SLOTS: u32 = 16_384;

/// Loads and attaches the fast path as `settings.xdp` says: `None` when it
/// is off, or (with `auto`) when it could attach nowhere.
///
/// # Errors
/// With `on`: the program cannot load, or an interface refuses it.
pub fn start(settings: &Settings) -> io::Result<Option<Loaded>> {
    let xdp = &settings.xdp;
    if xdp.mode == XdpMode::Off {
        return Ok(None);
    }
    let strict = xdp.mode == XdpMode::On;
    let mut fast = match FastPath::load(Capacity { channels: xdp.channels, slots: SLOTS }) {
        Ok(f) => f,
        Err(e) if strict => return Err(io::Error::other(format!("xdp = on, but the fast path cannot load: {e}"))),
        Err(e) => {
            tracing::warn!(reason = %e, "XDP fast path off");
            return Ok(None);
        }
    };
    let mode = if xdp.generic { Mode::Generic } else { Mode::Native };
    let interfaces = if xdp.interfaces.is_empty() { serving_interfaces(settings) } else { xdp.interfaces.clone() };
    if interfaces.is_empty() {
        let why = "no interface holds the listen or relay addresses (set xdp.interfaces)";
        if strict {
            return Err(io::Error::other(format!("xdp = on: {why}")));
        }
        tracing::warn!(reason = why, "XDP fast path off");
        return Ok(None);
    }
    for ifname in &interfaces {
        match fast.attach(ifname, mode).map_err(|e| attach_failed(ifname, &e)) {
            Ok(()) => tracing::info!(interface = %ifname, mode = ?mode, "XDP fast path attached"),
            Err(why) if strict => {
                return Err(io::Error::other(format!("xdp = on, but not on {ifname}: {why}")));
            }
            Err(why) => tracing::warn!(interface = %ifname, reason = %why, "XDP fast path not attached here"),
        }
    }
    if fast.interfaces().next().is_none() {
        tracing::warn!("XDP fast path off: attached to no interface");
        return Ok(None);
    }
    if let Err(why) = loopback_forwards(!settings.turn.relay_ips[1].is_empty()) {
        if strict {
            return Err(io::Error::other(format!("xdp = on: {why}")));
        }
        tracing::warn!(reason = %why, "XDP fast path off");
        return Ok(None);
    }
    Ok(Some(Arc::new(Mutex::new(fast))))
}

/// Why attaching failed, with what to do when another program holds the
/// hook (ours never does after we exit: our attachments are links that die
/// with the process; a program attached another way stays).
fn attach_failed(ifname: &str, e: &ip2p_xdp::Error) -> String {
    if e.errno() == Some(libc::EBUSY) || e.errno() == Some(libc::EEXIST) {
        format!(
            "{e}: another XDP program holds the hook (`ip link show {ifname}` names it; \
             `ip link set dev {ifname} xdp off` removes it)"
        )
    } else {
        e.to_string()
    }
}

/// The kernel's FIB lookup for XDP answers only for an interface with
/// forwarding on, and the program's lookups name lo (xdp/bpf/relay.bpf.c):
/// turned on here if it is off. Forwarding on lo routes nothing (what
/// arrives on lo is the host's own), so no interface packets arrive by
/// needs it and the host stays no router.
fn loopback_forwards(v6: bool) -> Result<(), String> {
    let ensure = |family: &str| -> Result<(), String> {
        let path = format!("/proc/sys/net/{family}/conf/lo/forwarding");
        let on = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        if on.trim() != "0" {
            return Ok(());
        }
        std::fs::write(&path, "1").map_err(|e| {
            format!(
                "the kernel's FIB lookup for XDP needs forwarding on lo, and it is off \
                 (sysctl -w net.{family}.conf.lo.forwarding=1, or the package's sysctl.d file; \
                 writing it here: {e})"
            )
        })?;
        tracing::info!(setting = %format!("net.{family}.conf.lo.forwarding=1"), "set for the XDP fast path's FIB lookups");
        Ok(())
    };
    ensure("ipv4")?;
    if v6 && let Err(why) = ensure("ipv6") {
        tracing::warn!(reason = %why, "IPv6 channels stay on the socket path");
    }
    Ok(())
}

/// The interfaces holding a listen or relay address; with a wildcard
/// listener, also every physical NIC that is up (one with a device behind
/// it): never a bridge, a veth of another namespace or a tunnel unless
/// named in `xdp.interfaces`.
fn serving_interfaces(settings: &Settings) -> Vec<String> {
    let mut ips: Vec<IpAddr> = settings.listen.iter().map(SocketAddr::ip).collect();
    ips.extend(settings.turn.relay_ips.iter().flatten().map(|r| r.bind));
    let wildcard = ips.iter().any(IpAddr::is_unspecified);
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    let mut names = Vec::new();
    for a in addrs {
        let flags = a.flags;
        if flags.contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
            || !flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)
        {
            continue;
        }
        let ip = a.address.as_ref().and_then(|s| {
            s.as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        });
        let serves = ip.is_some_and(|ip| ips.contains(&ip)) || (wildcard && physical(&a.interface_name));
        if serves && !names.contains(&a.interface_name) {
            names.push(a.interface_name);
        }
    }
    names
}

/// Whether interface `name` is a NIC (a device behind it), not a bridge,
/// veth, tunnel or other virtual interface.
fn physical(name: &str) -> bool {
    !name.contains('/') && std::path::Path::new("/sys/class/net").join(name).join("device").exists()
}

/// What the program did, for `/metrics`.
pub fn outcomes(fast: &Loaded) -> Option<Outcomes> {
    fast.lock().ok()?.outcomes().ok()
}

/// Detaches the program everywhere (a draining node's remaining traffic
/// goes through the sockets, which finish the job as they always do).
pub fn detach(fast: &Loaded) {
    if let Ok(mut f) = fast.lock() {
        f.detach();
        tracing::info!("XDP fast path detached");
    }
}

/// Detaches the program for a handover (the new process attaches its
/// own), and returns how to attach it again if the handover fails.
pub(crate) fn detach_for_handover(fast: &Loaded) -> Vec<String> {
    let Ok(mut f) = fast.lock() else { return Vec::new() };
    let interfaces = f.interfaces().map(str::to_owned).collect();
    f.detach();
    tracing::info!("XDP fast path detached for the handover");
    interfaces
}

/// Attaches the program again to `interfaces` after a handover that did
/// not happen (`generic`: the generic hook).
pub(crate) fn reattach(fast: &Loaded, interfaces: &[String], generic: bool) {
    let Ok(mut f) = fast.lock() else { return };
    let mode = if generic { Mode::Generic } else { Mode::Native };
    for ifname in interfaces {
        match f.attach(ifname, mode) {
            Ok(()) => tracing::info!(interface = %ifname, "XDP fast path attached again"),
            Err(e) => {
                tracing::warn!(interface = %ifname, reason = %attach_failed(ifname, &e), "XDP fast path not attached again")
            }
        }
    }
}

/// One worker's writer of the tables: keeps, per relay socket, the channels
/// it installed, so that an allocation's end removes them all, and removes
/// those that lapsed (every [`SWEEP_EVERY`], and an allocation's own when
/// a path of it changes): dead entries never fill the tables.
#[derive(Debug)]
pub(crate) struct Mirror {
    tables: Tables,
    /// The worker's UDP listeners' addresses, by listener index.
    listen: Vec<SocketAddr>,
    relays: HashMap<RelayToken, Relay>,
    /// Counter slots not in use.
    free: Vec<u32>,
    counts: MirrorCounts,
    /// When lapsed entries are next removed.
    next_sweep: Instant,
}

/// What a worker's mirror holds and did, for `/metrics`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MirrorCounts {
    /// Channels installed (two table entries each), counted when asked.
    pub channels: u64,
    /// Channels the tables refused (full, or their allocation at its
    /// limit): they stay on the socket path.
    pub refused: u64,
    /// Lapsed channels removed.
    pub lapsed: u64,
}

impl MirrorCounts {
    /// Adds another worker's.
    pub fn add(&mut self, o: &Self) {
        self.channels += o.channels;
        self.refused += o.refused;
        self.lapsed += o.lapsed;
    }
}

#[derive(Debug)]
struct Relay {
    /// Its counters' slot: every packet the program relays for it is
    /// counted there (a relay without one keeps its channels on the sockets).
    slot: u32,
    /// The session whose counters they are.
    session: SessionId,
    channels: Vec<Channel>,
}

/// Slot for "no per-allocation counters" (out of the array's range).
const NO_SLOT: u32 = u32::MAX;
/// How often lapsed entries are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Most channels one relay socket holds in the tables: the core's limit of
/// live channels per allocation; lapsed ones make room.
const MAX_CHANNELS_PER_RELAY: usize = 256;

impl Mirror {
    /// Worker `worker` of `workers`, serving `listen`.
    pub(crate) fn new(fast: &Loaded, worker: usize, workers: usize, listen: Vec<SocketAddr>) -> io::Result<Self> {
        let tables = fast.lock().map_err(|_| io::Error::other("fast path lock"))?.tables().map_err(io::Error::other)?;
        let share = SLOTS / u32::try_from(workers.max(1)).unwrap_or(1);
        let first = share * u32::try_from(worker).unwrap_or(0);
        Ok(Self {
            tables,
            listen,
            relays: HashMap::new(),
            free: (first..first + share).rev().collect(),
            counts: MirrorCounts::default(),
            next_sweep: Instant::now() + SWEEP_EVERY,
        })
    }

    /// Writes one event of the core into the tables. When a relay leaves
    /// them: what the program carried for it, to be credited to its session.
    pub(crate) fn apply(&mut self, event: Event) -> Option<(RelayToken, SessionId, Usage)> {
        match event {
            Event::Path(p) => self.path(&p),
            Event::RelayGone(token) => return self.gone(token),
            // The node detaches the program; the entries die with their
            // allocations as always.
            Event::Draining => {}
        }
        None
    }

    /// What the program carried for relay socket `token` of session
    /// `session` so far (read from the per-CPU counters: no cost to the
    /// program).
    pub(crate) fn usage(&self, token: RelayToken, session: SessionId) -> Usage {
        let Some(relay) = self.relays.get(&token).filter(|r| r.session == session) else { return Usage::default() };
        let Ok(c) = self.tables.counters(relay.slot) else { return Usage::default() };
        Usage {
            packets_to_peers: c.packets[0],
            bytes_to_peers: c.bytes[0],
            packets_from_peers: c.packets[1],
            bytes_from_peers: c.bytes[1],
        }
    }

    /// What it holds and did.
    pub(crate) fn counts(&self) -> MirrorCounts {
        let channels = self.relays.values().map(|r| r.channels.len() as u64).sum();
        MirrorCounts { channels, ..self.counts }
    }

    /// When it next wants to remove lapsed entries (`None`: it holds none).
    pub(crate) fn next_sweep(&self) -> Option<Instant> {
        (!self.relays.is_empty()).then_some(self.next_sweep)
    }

    /// Removes the entries that lapsed by `now`, when it is time to.
    pub(crate) fn sweep(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP_EVERY;
        for relay in self.relays.values_mut() {
            self.counts.lapsed += lapse(&mut self.tables, relay, now);
        }
    }

    fn path(&mut self, p: &ChannelPath) {
        let Some(&listen) = self.listen.get(usize::from(p.listener.index)) else { return };
        let mut c = Channel {
            listen,
            client: p.client,
            relayed: p.relayed,
            peer: p.peer,
            channel: p.channel,
            host: p.host,
            until: p.until,
            slot: NO_SLOT,
        };
        if !c.supported() {
            return;
        }
        let relay = match self.relays.entry(p.relay) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let Some(slot) = self.free.pop() else {
                    // Uncounted, it would relay unbilled: the sockets count.
                    self.counts.refused += 1;
                    return;
                };
                let _ = self.tables.reset(slot);
                e.insert(Relay { slot, session: p.session, channels: Vec::new() })
            }
        };
        c.slot = relay.slot;
        // A path replaces whatever held its channel number or its peer.
        let tables = &mut self.tables;
        relay.channels.retain(|old| {
            let replaced = old.channel == c.channel || old.peer == c.peer;
            if replaced && (old.client_key() != c.client_key() || old.peer_key() != c.peer_key()) {
                tables.remove(old);
            }
            !replaced
        });
        // Its lapsed ones go first, whenever it changes.
        self.counts.lapsed += lapse(tables, relay, Instant::now());
        let installed = if relay.channels.len() < MAX_CHANNELS_PER_RELAY {
            tables.install(&c).map_err(|e| e.to_string())
        } else {
            Err("the allocation's channels are at their limit".to_owned())
        };
        match installed {
            Ok(()) => {
                tracing::debug!(client = %c.client, channel = c.channel, peer = %c.peer, relayed = %c.relayed, "XDP entry");
                relay.channels.push(c);
            }
            Err(e) => {
                // Nothing of it stays behind that the mirror no longer
                // knows of (a refresh of an entry whose keys it shared).
                tables.remove(&c);
                self.counts.refused += 1;
                if self.counts.refused.is_power_of_two() {
                    tracing::warn!(error = %e, refused = self.counts.refused, "XDP table full: channels stay on the socket path");
                }
            }
        }
    }

    fn gone(&mut self, token: RelayToken) -> Option<(RelayToken, SessionId, Usage)> {
        let usage = self.usage(token, self.relays.get(&token)?.session);
        let relay = self.relays.remove(&token)?;
        for c in &relay.channels {
            self.tables.remove(c);
        }
        self.free.push(relay.slot);
        Some((token, relay.session, usage))
    }
}

/// Removes `relay`'s entries that lapsed by `now`; how many.
fn lapse(tables: &mut Tables, relay: &mut Relay, now: Instant) -> u64 {
    let before = relay.channels.len();
    relay.channels.retain(|c| {
        let live = c.until > now;
        if !live {
            tables.remove(c);
        }
        live
    });
    (before - relay.channels.len()) as u64
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ip2p_turn::ListenerId;

    fn path(relay: usize, i: u16, until: Instant) -> Event {
        Event::Path(ChannelPath {
            relay: RelayToken(u32::try_from(relay).unwrap() << 1),
            listener: ListenerId::udp(0),
            client: SocketAddr::from(([192, 0, 2, 7], 40_000 + u16::try_from(relay).unwrap())),
            relayed: SocketAddr::from(([10, 0, 0, 1], 50_000 + u16::try_from(relay).unwrap())),
            channel: 0x4000 + i,
            peer: SocketAddr::from(([198, 51, 100, 9], 1000 + i)),
            host: false,
            until,
            session: ip2p_turn::SessionId(relay as u64),
        })
    }

    /// Tables of 300 channels; four rounds of 256 channels that lapse in
    /// a live allocation: each round fits, and none is left behind. And one
    /// allocation never holds more than its 256.
    #[test]
    fn lapsed_channels_leave_the_tables_and_an_allocation_holds_its_share() {
        let fast = FastPath::load(Capacity { channels: 300, slots: 4 }).expect("the XDP program (run as root)");
        let fast: Loaded = Arc::new(Mutex::new(fast));
        let mut mirror = Mirror::new(&fast, 0, 1, vec!["10.0.0.1:3478".parse().unwrap()]).unwrap();
        let tables = fast.lock().unwrap().tables().unwrap();
        for round in 0..4 {
            let until = Instant::now() + Duration::from_millis(20);
            for i in 0..256 {
                mirror.apply(path(round, i, until));
            }
            assert_eq!(tables.len(), (256, 256), "round {round}");
            std::thread::sleep(Duration::from_millis(30));
            // Its next sweep, whenever that falls.
            mirror.sweep(mirror.next_sweep().unwrap());
            assert_eq!(tables.len(), (0, 0), "round {round}: dead entries left");
        }
        let counts = mirror.counts();
        assert_eq!((counts.channels, counts.refused, counts.lapsed), (0, 0, 1024));

        let later = Instant::now() + Duration::from_secs(60);
        for i in 0..300 {
            mirror.apply(path(9, i, later));
        }
        let counts = mirror.counts();
        assert_eq!((counts.channels, counts.refused), (256, 44), "one allocation, 256 at most");
        mirror.apply(Event::RelayGone(RelayToken(9 << 1)));
        assert_eq!(tables.len(), (0, 0));
    }
}
