//! Queueing the changes to the forwarding state ([`crate::Event`]).

use std::time::{Duration, Instant};

use ip2p_wire::Transport;

use crate::allocation::Paths;
use crate::{ChannelPath, Event, RelayToken, Server};

/// How much later a path's deadline must move before it is published
/// again: a refresh replayed a thousand times a second rewrites a mirror's
/// entries once in this long, and a mirror's entry lapses at most this much
/// before the core's (its packets then take the sockets).
const REPUBLISH_AFTER: Duration = Duration::from_secs(10);

impl Server {
    /// The next change to the forwarding state, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Queues the paths of allocation `slot` that `which` names, as they
    /// stand at `now`, when they are new or their deadline moved on (see
    /// [`REPUBLISH_AFTER`]): none under a bandwidth limit or for a stream
    /// client, and those to the host's own relayed addresses only with the
    /// short-circuit on. A path's deadline is its channel's and its
    /// permission's; the allocation's end withdraws them all
    /// ([`Event::RelayGone`]), so a Refresh publishes nothing.
    pub(crate) fn publish_paths(&mut self, slot: u32, now: Instant, which: Paths<'_>) {
        if !self.config.events || self.config.bandwidth > 0 {
            return;
        }
        let Some(Some(alloc)) = self.slots.get_mut(slot as usize) else { return };
        if alloc.tcp || alloc.listener.transport != Transport::Datagram {
            return;
        }
        let (listener, client, relays, session) = (alloc.listener, alloc.client, alloc.relays, alloc.session);
        for (channel, until, host) in alloc.paths_to_publish(now, which, REPUBLISH_AFTER) {
            // A peer of the host's own: only with the short-circuit on,
            // which a fast path then takes too.
            if host && !self.config.short_circuit {
                continue;
            }
            let family = crate::allocation::family_index(&channel.peer.ip());
            let Some(relay) = relays.get(family).copied().flatten() else { continue };
            self.events.push_back(Event::Path(ChannelPath {
                relay: RelayToken::new(slot, family),
                listener,
                client,
                relayed: relay.bound,
                channel: channel.number,
                peer: channel.peer,
                host,
                until,
                session,
            }));
        }
    }

    /// Queues the end of relay `relay`'s paths.
    pub(crate) fn publish_gone(&mut self, relay: RelayToken) {
        if self.config.events {
            self.events.push_back(Event::RelayGone(relay));
        }
    }

    /// Queues the end of the paths of each relay socket allocation `slot`
    /// has (the next publishing publishes them all anew).
    pub(crate) fn publish_relays_gone(&mut self, slot: u32) {
        if let Some(Some(alloc)) = self.slots.get_mut(slot as usize) {
            alloc.unpublished();
        }
        for family in 0..2 {
            let open = matches!(self.slots.get(slot as usize), Some(Some(a)) if a.relays.get(family).is_some_and(Option::is_some));
            if open {
                self.publish_gone(RelayToken::new(slot, family));
            }
        }
    }

    /// Queues `event` when events are on.
    pub(crate) fn publish(&mut self, event: Event) {
        if self.config.events {
            self.events.push_back(event);
        }
    }
}
