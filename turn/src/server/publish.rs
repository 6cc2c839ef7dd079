//! Queueing the changes to the forwarding state ([`crate::Event`]).

use std::time::Instant;

use ip2p_wire::Transport;

use crate::{ChannelPath, Event, RelayToken, Server};

impl Server {
    /// The next change to the forwarding state, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Queues the paths of allocation `slot` as they stand at `now`: none
    /// under a bandwidth limit or for a stream client, and those to the
    /// host's own relayed addresses only with the short-circuit on.
    pub(crate) fn publish_paths(&mut self, slot: u32, now: Instant) {
        if !self.config.events || self.config.bandwidth > 0 {
            return;
        }
        let Some(Some(alloc)) = self.slots.get(slot as usize) else { return };
        if alloc.tcp || alloc.listener.transport != Transport::Datagram {
            return;
        }
        for (channel, until, host) in alloc.channel_paths(now) {
            // A peer of the host's own: only with the short-circuit on,
            // which a fast path then takes too.
            if host && !self.config.short_circuit {
                continue;
            }
            let family = crate::allocation::family_index(&channel.peer.ip());
            let Some(relay) = alloc.relays.get(family).copied().flatten() else { continue };
            self.events.push_back(Event::Path(ChannelPath {
                relay: RelayToken::new(slot, family),
                listener: alloc.listener,
                client: alloc.client,
                relayed: relay.bound,
                channel: channel.number,
                peer: channel.peer,
                host,
                until: until.min(alloc.expires),
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
    /// has.
    pub(crate) fn publish_relays_gone(&mut self, slot: u32) {
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
