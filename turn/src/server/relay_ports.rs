//! Relay sockets: a free port of the range on one of the family's relay
//! addresses (even, or even with its successor reserved, as EVEN-PORT
//! asks), a reserved address claimed, and a family given up.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::Server;
use crate::allocation::Relay;
use crate::packet::RelayToken;
use crate::shared::{Account, Held};
use crate::sockets::Sockets;

/// How many relay ports are tried when binds fail with "address in use"
/// before the request gets 508.
const MAX_BIND_ATTEMPTS: usize = 64;

/// RFC 8656 §7.2: a reservation is held "for at least 30 seconds".
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// A port reserved next to a new relay: its token and when it lapses.
pub(super) type Reserved = ([u8; 8], Instant);

/// How to choose a relay port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PortChoice<'a> {
    Any,
    Even,
    /// An even port N whose N+1 is free too, to be reserved.
    EvenPair,
    /// Any port, for a TCP relay (RFC 6062) of this user's.
    Tcp(&'a str),
}

impl Server {
    /// Binds a relay socket of `family` on a random free port of the range
    /// (as `choice` says), trying others while ports turn out in use. The
    /// family's relay addresses take turns, the next one when one is full. For
    /// [`PortChoice::EvenPair`], port N+1 is reserved for `account` and
    /// its token returned with when the reservation lapses.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_relay(
        &mut self,
        now: Instant,
        slot: u32,
        family: usize,
        choice: PortChoice<'_>,
        df: bool,
        account: &Account,
        sockets: &mut impl Sockets,
    ) -> Option<(Relay, Option<Reserved>)> {
        let ips: Vec<IpAddr> = self.config.relay_ips(family).iter().map(|r| r.bind).collect();
        self.next_relay_ip = self.next_relay_ip.wrapping_add(1);
        let first = self.next_relay_ip % ips.len().max(1);
        let mut attempts = 0;
        for ip in ips.iter().cycle().skip(first).take(ips.len()).copied() {
            let opened = self.open_on(now, (slot, ip), choice, df, account, &mut attempts, sockets);
            if opened.is_some() {
                return opened;
            }
            if attempts >= MAX_BIND_ATTEMPTS {
                return None;
            }
        }
        None
    }

    /// [`Self::open_relay`] on one relay address.
    #[allow(clippy::too_many_arguments)]
    fn open_on(
        &mut self,
        now: Instant,
        (slot, ip): (u32, IpAddr),
        choice: PortChoice<'_>,
        df: bool,
        account: &Account,
        attempts: &mut usize,
        sockets: &mut impl Sockets,
    ) -> Option<(Relay, Option<Reserved>)> {
        let family = super::allocation::family_index(&ip);
        let (lo, hi) = (*self.config.ports.start(), *self.config.ports.end());
        let span = u32::from(hi.checked_sub(lo)?) + 1;
        let start = rand::Rng::random_range(&mut self.rng, 0..span);
        for i in 0..span {
            let port = u16::try_from(u32::from(lo) + (start + i) % span).ok()?;
            let free = |p: u16, s: &Self| {
                let addr = SocketAddr::new(ip, p);
                !s.ports.contains(&addr) && !s.shared.reservations.holds(addr, now)
            };
            let fits = match choice {
                PortChoice::Any | PortChoice::Tcp(_) => true,
                PortChoice::Even => port % 2 == 0,
                PortChoice::EvenPair => port % 2 == 0 && port < hi && free(port + 1, self),
            };
            if !fits || !free(port, self) {
                continue;
            }
            let bound = SocketAddr::new(ip, port);
            let token = RelayToken::new(slot, family);
            let opened = match choice {
                PortChoice::Tcp(user) => sockets.open_tcp_relay(token, bound, user, account.prefix),
                _ => sockets.open_relay(token, bound, df),
            };
            // EvenPair: N+1 is bound now too, and held for the token.
            let opened = match (opened, choice) {
                (Ok(()), PortChoice::EvenPair) => match sockets.hold(SocketAddr::new(ip, port + 1)) {
                    Ok(held) => Ok(Some(held)),
                    Err(e) => {
                        sockets.close_relay(token);
                        Err(e)
                    }
                },
                (opened, _) => opened.map(|()| None),
            };
            match opened {
                Ok(held) => {
                    let relay = self.record(bound);
                    // The reservation lapses by a timer of the allocation's
                    // (set when it is placed), which releases the port.
                    let token = held.map(|held| {
                        let token: [u8; 8] = rand::Rng::random(&mut self.rng);
                        let until = now + RESERVATION_LIFETIME;
                        self.shared.reserve(token, held, until, account.clone());
                        (token, until)
                    });
                    return Some((relay, token));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && *attempts < MAX_BIND_ATTEMPTS => {
                    *attempts += 1;
                }
                Err(e) => {
                    // EMFILE and the like: every Allocate meets it until
                    // something closes, so it is logged a few times a while.
                    if let Some(unlogged) = self.logs.refused.admit(now) {
                        tracing::warn!(%bound, error = %e, unlogged, "cannot open a relay socket");
                    }
                    *attempts = MAX_BIND_ATTEMPTS;
                    return None;
                }
            }
        }
        None
    }

    /// Opens a relay on a reserved address, with the socket held for it.
    pub(super) fn open_exact(&mut self, slot: u32, held: Held, df: bool, sockets: &mut impl Sockets) -> Option<Relay> {
        let bound = held.addr;
        let family = super::allocation::family_index(&bound.ip());
        // A reload may have removed its relay address since.
        self.config.relay_bound_to(bound.ip())?;
        sockets.adopt_relay(RelayToken::new(slot, family), held, df).ok()?;
        Some(self.record(bound))
    }

    /// Marks `bound`'s port used and returns the relay with its advertised
    /// address.
    fn record(&mut self, bound: SocketAddr) -> Relay {
        self.ports.insert(bound);
        let external = self.config.relay_bound_to(bound.ip()).and_then(|(_, r)| r.external).unwrap_or(bound.ip());
        Relay { bound, advertised: SocketAddr::new(external, bound.port()) }
    }

    pub(super) fn close_family(&mut self, slot: u32, family: usize, sockets: &mut impl Sockets) {
        let Some(alloc) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if let Some(relay) = alloc.relays.get_mut(family).and_then(Option::take) {
            self.unindex(relay);
            sockets.close_relay(RelayToken::new(slot, family));
            self.ports.remove(&relay.bound);
            self.publish_gone(RelayToken::new(slot, family));
        }
    }
}
