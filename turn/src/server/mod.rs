//! The TURN server of one worker: allocations, their expiry, and the
//! packet paths.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use ip2p_wire::attr::{Data, XorPeerAddress};
use ip2p_wire::{
    ChannelData, Class, Message, Method, PacketKind, TransactionId, classify, frame_channel_data, frame_indication,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

mod admit;
mod allocate;
mod ending;
pub(crate) mod export;
mod publish;
mod relay_ports;
mod request;
mod respond;
mod sessions;
mod tcp;

use crate::allocation::{self, Allocation};
use crate::loglimit::LogLimit;
use crate::policy::Judgement;
use crate::ratelimit::ResponseLimiter;
use crate::session::SessionId;
use crate::shared::Owner;
use crate::timer::Timers;
use crate::{
    Config, DropReason, Event, Gauges, ListenerId, NodeState, PEER_HEADROOM, PEER_TAILROOM, RelayToken, Sockets, Stats,
    ToOwner, Transmit, Verdict, Via,
};

/// The TURN server of one worker.
#[derive(Debug)]
pub struct Server {
    config: Arc<Config>,
    pub(crate) shared: Arc<NodeState>,
    /// Which worker of the node this is (the short-circuit's owners).
    worker: u16,
    /// `now` at construction and the unix time it stands for: unix time for
    /// nonces and REST expiry is derived from `now`, never read.
    epoch: (Instant, u64),
    pub(crate) rng: SmallRng,
    slots: Vec<Option<Allocation>>,
    free: Vec<u32>,
    by_client: HashMap<(ListenerId, SocketAddr), u32, foldhash::fast::RandomState>,
    /// When allocations expire and reservations lapse.
    timers: Timers,
    /// Response rate limiting of unauthenticated requests.
    limiter: ResponseLimiter,
    /// Log lines a client can cause at will.
    logs: Logs,
    /// Relay addresses (as bound) in use.
    ports: std::collections::HashSet<SocketAddr, foldhash::fast::RandomState>,
    /// Which relay address of a family the next allocation tries first.
    next_relay_ip: usize,
    /// This server's UDP relayed addresses (as advertised) and their
    /// relays: the local short-circuit's table.
    local: HashMap<SocketAddr, RelayToken, foldhash::fast::RandomState>,
    stats: Stats,
    /// Changes to the forwarding state not yet polled (only with
    /// `config.events`).
    pub(crate) events: VecDeque<Event>,
    /// Sessions that began or ended, not yet polled (only with
    /// `config.session_events`).
    session_events: VecDeque<crate::session::SessionEvent>,
    /// The node is shutting down: no new allocations.
    draining: bool,
    /// The generation of the host's addresses its permissions were last
    /// judged by.
    judged_at: u64,
    /// Allocates waiting for the fleet's word (`config.admission`).
    pub(crate) admissions: crate::admission::Admissions,
}

/// Where a short-circuited packet goes.
enum Route {
    /// To an allocation of this worker.
    Here,
    /// To another worker's, delivered by this one as its view says.
    Direct(Result<Delivery, DropReason>),
    /// To the owner's inbox.
    Inbox(usize),
}

/// Who gets a datagram for a client, and how it is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Delivery {
    listener: ListenerId,
    client: SocketAddr,
    /// Its channel to the datagram's sender, if any (else a Data indication).
    channel: Option<u16>,
}

/// The core's log lines that clients cause, each limited on its own.
#[derive(Debug)]
struct Logs {
    created: LogLimit,
    deleted: LogLimit,
    refused: LogLimit,
}

impl Server {
    /// A server whose clock reads `now` at unix time `unix_now`, with
    /// randomness (relay ports, transaction IDs) from `seed`.
    #[must_use]
    pub fn new(config: Arc<Config>, shared: Arc<NodeState>, now: Instant, unix_now: u64, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let judged_at = shared.local.generation();
        Self {
            config,
            shared,
            worker: 0,
            epoch: (now, unix_now),
            limiter: ResponseLimiter::new(rng.random()),
            rng,
            slots: Vec::new(),
            free: Vec::new(),
            by_client: HashMap::default(),
            timers: Timers::default(),
            logs: Logs { created: LogLimit::new(50), deleted: LogLimit::new(50), refused: LogLimit::new(5) },
            ports: Default::default(),
            next_relay_ip: 0,
            local: HashMap::default(),
            stats: Stats::default(),
            events: VecDeque::new(),
            session_events: VecDeque::new(),
            draining: false,
            judged_at,
            admissions: crate::admission::Admissions::default(),
        }
    }

    /// The same server as worker `worker` of its node (0 unless set): the
    /// node's other workers find its relayed addresses by this number.
    #[must_use]
    pub fn on_worker(mut self, worker: u16) -> Self {
        self.worker = worker;
        self
    }

    /// Takes a new configuration at `now` (a reload): credentials, peer
    /// policy, lifetimes and the rest apply to requests from now on;
    /// allocations stay, and their permissions and channels stay as far as
    /// the new peer policy allows them ([`Self::rejudge`]). The relay
    /// addresses and ports must not change (they need a restart).
    pub fn reconfigure(&mut self, config: Arc<Config>, now: Instant) {
        // What decides which paths are published.
        let published = |c: &Config| (c.bandwidth > 0, c.short_circuit);
        let changed = published(&config) != published(&self.config);
        self.config = config;
        if changed && self.config.events {
            for slot in 0..u32::try_from(self.slots.len()).unwrap_or(u32::MAX) {
                self.publish_relays_gone(slot);
                self.publish_paths(slot, now, allocation::Paths::All);
            }
        }
        self.rejudge(now);
    }

    /// Starts draining: new Allocates are refused (300 with
    /// ALTERNATE-SERVER when alternates are configured, else 508), while
    /// existing allocations keep working until they end.
    pub fn drain(&mut self) {
        self.draining = true;
        self.publish(Event::Draining);
    }

    /// The configuration it runs with (the last reload's).
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether it drains (refuses new allocations).
    #[must_use]
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Live allocations on this worker.
    #[must_use]
    pub fn allocations(&self) -> usize {
        self.by_client.len()
    }

    /// What this worker holds at `now`: a walk over its allocations, for
    /// a scrape, never on the packet path.
    #[must_use]
    pub fn gauges(&self, now: Instant) -> Gauges {
        let mut g = Gauges::default();
        for alloc in self.slots.iter().flatten() {
            *if alloc.tcp { &mut g.tcp_allocations } else { &mut g.udp_allocations } += 1;
            let (permissions, channels) = alloc.live(now);
            g.permissions += permissions as u64;
            g.channels += channels as u64;
        }
        g.timers = self.timers.len() as u64;
        g
    }

    fn unix(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs()
    }

    /// A new session's id and start (unix seconds) at `now`.
    fn new_session(&mut self, now: Instant) -> (SessionId, u64) {
        (SessionId(self.rng.random()), self.unix(now))
    }

    /// Handles a client's packet, `buf[packet]`, which arrived on
    /// `listener` from `from`, and says what to send. A reply is written
    /// into `reply` (at least [`crate::REPLY_BUFFER`] bytes). Relayed data is
    /// forwarded where it lies; when it goes to another relayed address of
    /// this node (the local short-circuit) and has [`PEER_HEADROOM`] bytes
    /// free before its payload and [`PEER_TAILROOM`] after in `buf`, it is
    /// framed there for the destination's client, else handed off.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_client(
        &mut self,
        now: Instant,
        listener: ListenerId,
        from: SocketAddr,
        buf: &mut [u8],
        packet: Range<usize>,
        reply: &mut [u8],
        sockets: &mut impl Sockets,
    ) -> Verdict {
        let bytes = buf.get(packet.clone()).unwrap_or_default();
        let to_peer = match classify(bytes) {
            PacketKind::ChannelData => self.channel_data_from_client(now, listener, from, bytes),
            PacketKind::Stun => match Message::parse(bytes) {
                // RFC 8489 §14.7: a FINGERPRINT that does not match means
                // the message is not STUN (or was damaged): discard it.
                Ok(msg) if msg.has_fingerprint() && msg.verify_fingerprint().is_err() => {
                    Err(DropReason::BadFingerprint)
                }
                Ok(msg) if msg.class() == Class::Indication && msg.method() == Method::SEND => {
                    self.send_indication(now, listener, from, &msg)
                }
                Ok(msg) => return self.stun_from_client(now, listener, from, &msg, reply, sockets),
                Err(_) => Err(DropReason::NotTurn),
            },
            PacketKind::Other => Err(DropReason::NotTurn),
        };
        match to_peer {
            Ok(mut t) => {
                // Towards a peer the range is the payload itself.
                t.range = packet.start + t.range.start..packet.start + t.range.end;
                self.stats.to_peer_packets += 1;
                self.stats.to_peer_bytes += t.range.len() as u64;
                let (via, len) = (t.via, t.range.len());
                let verdict = self.short_circuit(now, t, buf);
                // The session's count: what was not dropped here (what
                // goes to another worker's inbox counts as sent).
                if let (Via::Relay(token), false) = (via, matches!(verdict, Verdict::Drop(_)))
                    && let Some(Some(alloc)) = self.slots.get_mut(token.slot())
                {
                    alloc.usage.count_to_peers(len);
                }
                verdict
            }
            Err(reason) => self.dropped(reason),
        }
    }

    /// The local short-circuit: `t`, a client's payload on its way to a
    /// peer, is handed to that peer's allocation when the peer is a UDP
    /// relayed address of this node, without a trip through the kernel.
    /// That allocation's permissions and channels decide exactly as they
    /// would for a datagram from outside, and the packet is counted as
    /// relayed both ways. Another worker's allocation is delivered to by
    /// this worker itself, from its own socket of the client's listener
    /// (all workers' sockets share the address), as that allocation's
    /// published view ([`crate::shared::View`]) says, without waking its
    /// owner. Only what needs the owner goes through its inbox: a stream
    /// client, a bandwidth limit (the owner's buckets), a payload with no
    /// room around it to be framed where it lies (a stream's frame).
    fn short_circuit(&mut self, now: Instant, t: Transmit, buf: &mut [u8]) -> Verdict {
        let Some((relay, from)) = self.short_circuits(&t) else {
            return Verdict::Forward(t);
        };
        let room = t.range.start >= PEER_HEADROOM && buf.len().saturating_sub(t.range.end) >= PEER_TAILROOM;
        let (me, limited) = (self.worker, self.config.bandwidth > 0);
        let route = self.shared.owners.with(relay, t.to.port(), |owner| match &owner.view {
            _ if owner.worker == me => Route::Here,
            Some(view) if room && !limited => Route::Direct(view.framing(from, now).map(|channel| {
                view.crossed.count(t.range.len());
                Delivery { listener: view.listener, client: view.client, channel }
            })),
            _ => Route::Inbox(usize::from(owner.worker)),
        });
        let delivered = match route {
            // Gone since the policy looked: the port is just the host's.
            None => return Verdict::Forward(t),
            Some(Route::Here) if room => self.handle_inbox(now, t.to, from, buf, t.range),
            Some(Route::Here) => return Verdict::ToOwner(ToOwner { worker: usize::from(me), from, transmit: t }),
            Some(Route::Inbox(worker)) => {
                self.stats.crossed += 1;
                self.stats.to_owner += 1;
                return Verdict::ToOwner(ToOwner { worker, from, transmit: t });
            }
            Some(Route::Direct(framing)) => {
                self.stats.crossed += 1;
                self.deliver(framing, from, buf, t.range)
            }
        };
        match delivered {
            Ok(t) => Verdict::Forward(t),
            Err(reason) => Verdict::Drop(reason),
        }
    }

    /// Frames `buf[data]`, a payload from relayed address `from`, for a
    /// client of another worker as its view decided, and counts it as that
    /// worker would have.
    fn deliver(
        &mut self,
        framing: Result<Delivery, DropReason>,
        from: SocketAddr,
        buf: &mut [u8],
        data: Range<usize>,
    ) -> Result<Transmit, DropReason> {
        // Counted as the owner counts a payload from its inbox: once the allocation is found.
        if framing != Err(DropReason::NoAllocation) {
            self.stats.short_circuited += 1;
        }
        let payload = data.len();
        let framed = framing.and_then(|to| self.frame_for(to, from, buf, data));
        self.count_to_client(payload, framed)
    }

    /// When `t`, a client's packet on its way to a peer, is addressed to a
    /// UDP relayed address of this node (and the short-circuit is on): the
    /// index of that relay address in the configuration (its owners
    /// table), and `t`'s relayed address it comes from.
    fn short_circuits(&self, t: &Transmit) -> Option<(usize, SocketAddr)> {
        let Via::Relay(source) = t.via else { return None };
        if !self.config.short_circuit {
            return None;
        }
        // Most peers are elsewhere: compare the IP before a lookup.
        let relay = self.config.relay_advertised_as(t.to.ip())?;
        let alloc = self.slots.get(source.slot())?.as_ref()?;
        let from = alloc.relays.get(source.family()).copied().flatten()?.advertised;
        Some((relay, from))
    }

    fn allocation_of(&self, listener: ListenerId, client: SocketAddr) -> Option<(u32, &Allocation)> {
        let slot = *self.by_client.get(&(listener, client))?;
        Some((slot, self.slots.get(slot as usize)?.as_ref()?))
    }

    /// RFC 8656 §12.6: ChannelData from the client goes to the bound peer.
    /// Receiving it refreshes nothing. We also require a live permission,
    /// as for Send: a channel outlives its permission unless refreshed.
    fn channel_data_from_client(
        &mut self,
        now: Instant,
        listener: ListenerId,
        from: SocketAddr,
        packet: &[u8],
    ) -> Result<Transmit, DropReason> {
        let Ok(cd) = ChannelData::parse(packet) else {
            return Err(DropReason::NotTurn);
        };
        let Some((slot, alloc)) = self.allocation_of(listener, from) else {
            return Err(DropReason::NoAllocation);
        };
        let Some(channel) = alloc.channel(cd.channel(), now) else {
            return Err(DropReason::NoChannel);
        };
        let peer = channel.peer;
        let Some(host) = alloc.permitted(peer.ip(), now) else {
            return Err(DropReason::NoPermission);
        };
        let Some(family) = alloc.relay_for(peer.ip()) else {
            return Err(DropReason::NoPermission);
        };
        if host && !self.live_relayed(peer) {
            return Err(DropReason::DeniedAddress);
        }
        if !self.within_bandwidth(slot as usize, cd.data().len(), now, true) {
            return Err(DropReason::RateLimit);
        }
        let start = ip2p_wire::channel::CHANNEL_HEADER_LEN;
        Ok(Transmit { via: Via::Relay(RelayToken::new(slot, family)), to: peer, range: start..start + cd.data().len() })
    }

    /// RFC 8656 §11.2: a Send indication's DATA goes to XOR-PEER-ADDRESS if
    /// a permission allows it. The DATA value is forwarded where it lies.
    fn send_indication(
        &mut self,
        now: Instant,
        listener: ListenerId,
        from: SocketAddr,
        msg: &Message<'_>,
    ) -> Result<Transmit, DropReason> {
        let Some((slot, alloc)) = self.allocation_of(listener, from) else {
            return Err(DropReason::NoAllocation);
        };
        let (Ok(Some(XorPeerAddress(peer))), Ok(Some(Data(data)))) = (msg.get(), msg.get()) else {
            return Err(DropReason::Ignored);
        };
        // An IPv4-mapped peer is refused as everywhere (no relay socket
        // sends to one), even when its IPv4 address has a permission.
        if crate::policy::canonical(peer.ip()) != peer.ip() {
            return Err(DropReason::DeniedAddress);
        }
        if alloc.tcp {
            // RFC 6062: a TCP allocation carries data on data connections only.
            return Err(DropReason::Ignored);
        }
        // DONT-FRAGMENT is honoured when the relay socket was opened with DF
        // (asked for at Allocate); otherwise it is an unknown
        // comprehension-required attribute and the indication is dropped.
        let unknown = msg.unknown_comprehension_required().next().is_some()
            || (!alloc.dont_fragment && msg.get_raw(ip2p_wire::AttrType::DONT_FRAGMENT).is_some());
        if unknown {
            return Err(DropReason::Ignored);
        }
        let Some(host) = alloc.permitted(peer.ip(), now) else {
            let denied = !self.peer_allowed(peer);
            return Err(if denied { DropReason::DeniedAddress } else { DropReason::NoPermission });
        };
        let Some(family) = alloc.relay_for(peer.ip()) else {
            return Err(DropReason::NoPermission);
        };
        // A permission for one of the host's addresses reaches only the
        // relayed addresses of live allocations there, whatever the port.
        if host && !self.live_relayed(peer) {
            return Err(DropReason::DeniedAddress);
        }
        if !self.within_bandwidth(slot as usize, data.len(), now, true) {
            return Err(DropReason::RateLimit);
        }
        // `data` borrows from the packet: its position is its offset there.
        let start = data.as_ptr() as usize - msg.as_bytes().as_ptr() as usize;
        Ok(Transmit { via: Via::Relay(RelayToken::new(slot, family)), to: peer, range: start..start + data.len() })
    }

    /// A STUN request (answered now, later, or dropped), or an indication
    /// that is not a Send (ignored).
    fn stun_from_client(
        &mut self,
        now: Instant,
        listener: ListenerId,
        from: SocketAddr,
        msg: &Message<'_>,
        reply: &mut [u8],
        sockets: &mut impl Sockets,
    ) -> Verdict {
        let len = if msg.class() == Class::Request {
            self.stats.requests += 1;
            self.request(now, listener, from, msg, reply, sockets)
        } else {
            Err(DropReason::Ignored)
        };
        match len {
            Ok(Some(len)) => {
                self.stats.responses.count(reply.get(..len).unwrap_or_default());
                Verdict::Reply(Transmit { via: Via::Listener(listener), to: from, range: 0..len })
            }
            Ok(None) => Verdict::Deferred,
            Err(reason) => self.dropped(reason),
        }
    }

    /// Counts a dropped packet.
    fn dropped(&mut self, reason: DropReason) -> Verdict {
        self.stats.dropped.count(reason);
        Verdict::Drop(reason)
    }

    /// Handles a datagram that relay socket `token` received from `from`,
    /// sitting in `buf[data]` with [`PEER_HEADROOM`] bytes free before it and
    /// [`PEER_TAILROOM`] after. On success the datagram is framed in place
    /// (ChannelData if a channel is bound to the peer, else a Data
    /// indication), to be sent to the client; otherwise, why not (counted).
    ///
    /// # Errors
    /// The reason the datagram is dropped.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        token: RelayToken,
        from: SocketAddr,
        buf: &mut [u8],
        data: Range<usize>,
    ) -> Result<Transmit, DropReason> {
        let payload = data.len();
        let framed = self.peer_datagram(now, token, from, buf, data);
        if framed.is_ok()
            && let Some(Some(alloc)) = self.slots.get_mut(token.slot())
        {
            alloc.usage.count_from_peers(payload);
        }
        self.count_to_client(payload, framed)
    }

    fn peer_datagram(
        &mut self,
        now: Instant,
        token: RelayToken,
        from: SocketAddr,
        buf: &mut [u8],
        data: Range<usize>,
    ) -> Result<Transmit, DropReason> {
        let Some(Some(alloc)) = self.slots.get(token.slot()) else {
            return Err(DropReason::NoAllocation);
        };
        if alloc.relays.get(token.family()).copied().flatten().is_none() {
            return Err(DropReason::NoAllocation);
        }
        // RFC 8656 §9: only the IP address is compared, not the port.
        if !alloc.permits(from.ip(), now) {
            return Err(DropReason::NoPermission);
        }
        let to = Delivery {
            listener: alloc.listener,
            client: alloc.client,
            channel: alloc.channel_to(from, now).map(|c| c.number),
        };
        if !self.within_bandwidth(token.slot(), data.len(), now, false) {
            return Err(DropReason::RateLimit);
        }
        self.frame_for(to, from, buf, data)
    }

    /// Frames `buf[data]`, a datagram from `from`, in place for a client:
    /// ChannelData on its channel to `from` if it has one, else a Data
    /// indication.
    fn frame_for(
        &mut self,
        to: Delivery,
        from: SocketAddr,
        buf: &mut [u8],
        data: Range<usize>,
    ) -> Result<Transmit, DropReason> {
        let framed = match to.channel {
            Some(number) => frame_channel_data(buf, data, number, to.listener.transport),
            None => frame_indication(buf, data, Method::DATA, from, TransactionId(self.rng.random())),
        };
        // Only a datapath that broke the headroom contract fails here.
        let range = framed.map_err(|_| DropReason::Ignored)?;
        Ok(Transmit { via: Via::Listener(to.listener), to: to.client, range })
    }

    /// Counts a datagram of `payload` bytes for a client: relayed, or
    /// dropped and why.
    fn count_to_client(
        &mut self,
        payload: usize,
        framed: Result<Transmit, DropReason>,
    ) -> Result<Transmit, DropReason> {
        match framed {
            Ok(t) => {
                self.stats.to_client_packets += 1;
                self.stats.to_client_bytes += payload as u64;
                Ok(t)
            }
            Err(reason) => {
                self.stats.dropped.count(reason);
                Err(reason)
            }
        }
    }

    /// A short-circuited payload for this server, from this worker or from
    /// another one's inbox ([`Verdict::ToOwner`]): from the relayed address
    /// `from` to this server's relayed address `to`, in `buf[data]` with the
    /// same room around it as for [`Server::handle_peer`], which decides as
    /// for a peer's datagram.
    ///
    /// # Errors
    /// The reason the payload is dropped.
    pub fn handle_inbox(
        &mut self,
        now: Instant,
        to: SocketAddr,
        from: SocketAddr,
        buf: &mut [u8],
        data: Range<usize>,
    ) -> Result<Transmit, DropReason> {
        // The allocation may have ended since the sender looked.
        let Some(&target) = self.local.get(&to) else {
            self.stats.dropped.count(DropReason::NoAllocation);
            return Err(DropReason::NoAllocation);
        };
        self.stats.short_circuited += 1;
        self.handle_peer(now, target, from, buf, data)
    }

    /// Adds or removes allocation `slot`'s UDP relays in the short-circuit
    /// tables: this server's and the node's owners.
    fn index_relays(&mut self, slot: u32, add: bool) {
        let Some(Some(alloc)) = self.slots.get(slot as usize) else { return };
        if alloc.tcp {
            // Connect may reach these (and only these) on this host.
            for relay in alloc.relays.iter().flatten() {
                self.shared.index_tcp([relay.bound, relay.advertised], add);
            }
            return;
        }
        let relays = alloc.relays;
        for (family, relay) in relays.iter().enumerate() {
            match relay {
                Some(relay) if add => self.index(*relay, RelayToken::new(slot, family)),
                Some(relay) => self.unindex(*relay),
                None => {}
            }
        }
    }

    fn index(&mut self, relay: allocation::Relay, token: RelayToken) {
        self.local.insert(relay.advertised, token);
        self.publish_owner(token.slot(), relay);
    }

    /// Publishes this worker's ownership of `relay` of allocation `slot`,
    /// with its current view for the others' short-circuit.
    fn publish_owner(&self, slot: usize, relay: allocation::Relay) {
        let Some((index, _)) = self.config.relay_bound_to(relay.bound.ip()) else { return };
        let Some(Some(alloc)) = self.slots.get(slot) else { return };
        let datagram = alloc.listener.transport == ip2p_wire::Transport::Datagram;
        let view = datagram.then(|| alloc.view());
        self.shared.owners.set(index, relay.bound.port(), Owner { worker: self.worker, view });
    }

    /// Allocation `slot`'s lifetime, permissions or channels changed (its
    /// paths `which` among them): republishes what mirrors them (the
    /// others' view, the events).
    pub(crate) fn changed(&mut self, slot: u32, now: Instant, which: allocation::Paths<'_>) {
        self.publish_view(slot);
        self.publish_paths(slot, now, which);
    }

    /// Republishes allocation `slot`'s view for the other workers'
    /// short-circuit (its lifetime, permissions or channels changed).
    pub(crate) fn publish_view(&self, slot: u32) {
        if let Some(Some(alloc)) = self.slots.get(slot as usize)
            && !alloc.tcp
        {
            for relay in alloc.relays.into_iter().flatten() {
                self.publish_owner(slot as usize, relay);
            }
        }
    }

    fn unindex(&mut self, relay: allocation::Relay) {
        if self.local.remove(&relay.advertised).is_some()
            && let Some((index, _)) = self.config.relay_bound_to(relay.bound.ip())
        {
            self.shared.owners.clear(index, relay.bound.port(), self.worker);
        }
    }

    /// Whether a client may name `peer` (CreatePermission, ChannelBind, a
    /// Send indication): the policy allows its IP, or the IP is the host's
    /// own and `peer` is the relayed address of a live allocation of this
    /// node. Every other port of the host's addresses (listeners, the admin
    /// port, any local service) is refused, whatever the allow list says.
    pub(crate) fn peer_allowed(&self, peer: SocketAddr) -> bool {
        match self.judge(peer.ip()) {
            Judgement::Allowed => true,
            Judgement::Denied => false,
            Judgement::Host => self.live_relayed(peer),
        }
    }

    /// The policy's judgement of a peer's IP, with this node's relay
    /// addresses (as bound and as advertised) among the host's whatever
    /// the policy's list says.
    pub(crate) fn judge(&self, ip: IpAddr) -> Judgement {
        if self.config.relay_bound_to(ip).is_some() || self.config.relay_advertised_as(ip).is_some() {
            return Judgement::Host;
        }
        self.config.policy.judge(ip, &self.shared.local.load())
    }

    /// Judges every live permission and channel again at `now` (after a
    /// reload, a handover, or a change of the host's addresses): what the
    /// policy now denies ends at once, on every path that mirrors it.
    pub fn rejudge(&mut self, now: Instant) {
        self.judged_at = self.shared.local.generation();
        for slot in 0..u32::try_from(self.slots.len()).unwrap_or(u32::MAX) {
            self.rejudge_slot(slot, now);
        }
    }

    /// [`Self::rejudge`] when the host's addresses changed since this
    /// worker last judged: a request judged by the new ones (a 403) leaves
    /// no permission of the old ones behind it, though the node's command
    /// to judge again may come later in the batch.
    pub(crate) fn rejudge_if_stale(&mut self, now: Instant) {
        if self.shared.local.generation() != self.judged_at {
            self.rejudge(now);
        }
    }

    /// [`Self::rejudge`] for allocation `slot`.
    pub(crate) fn rejudge_slot(&mut self, slot: u32, now: Instant) {
        let Some(mut alloc) = self.slots.get_mut(slot as usize).and_then(Option::take) else { return };
        let dropped = alloc.rejudge(now, |ip| self.judge(ip));
        if let Some(place) = self.slots.get_mut(slot as usize) {
            *place = Some(alloc);
        }
        self.stats.revoked += dropped;
        if dropped > 0 {
            self.publish_relays_gone(slot);
            self.changed(slot, now, allocation::Paths::All);
        }
    }

    /// Whether `addr` is the advertised relayed address of a live UDP
    /// allocation of this node (any worker's).
    pub(crate) fn live_relayed(&self, addr: SocketAddr) -> bool {
        self.config
            .relay_advertised_as(addr.ip())
            .is_some_and(|relay| self.shared.owners.get(relay, addr.port()).is_some())
    }

    /// Whether allocation `slot` may relay `bytes` more towards its peers
    /// (`to_peer`) or its client, under `bandwidth`.
    fn within_bandwidth(&mut self, slot: usize, bytes: usize, now: Instant, to_peer: bool) -> bool {
        let rate = self.config.bandwidth;
        if rate == 0 {
            return true;
        }
        let Some(Some(alloc)) = self.slots.get_mut(slot) else { return false };
        let bucket = if to_peer { &mut alloc.to_peer } else { &mut alloc.to_client };
        bucket.take(bytes, rate, now)
    }

    /// Whether the client on this 5-tuple has an allocation.
    #[must_use]
    pub fn has_allocation(&self, listener: ListenerId, from: SocketAddr) -> bool {
        self.by_client.contains_key(&(listener, from))
    }
}
