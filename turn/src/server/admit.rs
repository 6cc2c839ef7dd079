//! The fleet's word on an Allocate (`crate::admission`): parking a
//! request, handing out what to ask the store, and running the request
//! again when the word comes.

use std::net::SocketAddr;
use std::time::Instant;

use ip2p_wire::Message;

use super::Server;
use crate::admission::{ADMISSION_WAIT, Admission, AdmissionRequest, MAX_PARKED, Parked};
use crate::packet::{ListenerId, Transmit, Via};
use crate::shared::Account;
use crate::sockets::Sockets;

/// What the quota step does with an Allocate in a fleet.
pub(super) enum Word {
    /// Answer later: it is parked (or already was).
    Wait,
    /// Go on with the fleet's word (`None`: not counted by a fleet).
    Go(Option<Admission>),
}

impl Server {
    /// The fleet's word on `msg` from `from` at the quota step, for
    /// `count` allocations of `account`: parked when it must be asked.
    pub(super) fn fleet_word(
        &mut self,
        now: Instant,
        listener: ListenerId,
        from: SocketAddr,
        msg: &Message<'_>,
        account: &Account,
        count: u8,
    ) -> Word {
        if self.config.admission.is_none() {
            return Word::Go(None);
        }
        let limits = self.shared.quotas.limits();
        if limits.per_user == 0 && limits.per_prefix == 0 {
            return Word::Go(None);
        }
        let key = (listener, from);
        if let Some((k, word)) = self.admissions.word
            && k == key
        {
            self.admissions.word = None;
            return Word::Go(Some(word));
        }
        if self.admissions.by_client.contains_key(&key) {
            return Word::Wait;
        }
        if self.admissions.parked.len() >= MAX_PARKED {
            return Word::Go(Some(Admission::Unknown));
        }
        let ticket = self.admissions.next_ticket;
        self.admissions.next_ticket += 1;
        let request = msg.as_bytes().into();
        let parked = Parked { listener, client: from, request, since: now, account: account.clone(), count };
        self.admissions.parked.insert(ticket, parked);
        self.admissions.by_client.insert(key, ticket);
        let (user, prefix) = (account.user.clone(), account.prefix);
        self.admissions.requests.push_back(AdmissionRequest { ticket, user, prefix, count });
        Word::Wait
    }

    /// Whether Allocates wait for the fleet's word, or requests for the
    /// store: nothing to do for a datapath otherwise.
    #[must_use]
    pub fn admissions_pending(&self) -> bool {
        !self.admissions.parked.is_empty() || !self.admissions.requests.is_empty()
    }

    /// The next allocation to take to the fleet's store, if any (with
    /// [`crate::Config::admission`]: the caller must take them, and answer
    /// each with [`Self::admitted`]).
    pub fn poll_admission(&mut self) -> Option<AdmissionRequest> {
        self.admissions.requests.pop_front()
    }

    /// A parked request that waited [`ADMISSION_WAIT`] by `now` without
    /// its word, if any: answer it with [`Admission::Unknown`].
    #[must_use]
    pub fn overdue_admission(&self, now: Instant) -> Option<u64> {
        self.admissions.parked.iter().find(|(_, p)| p.since + ADMISSION_WAIT <= now).map(|(&t, _)| t)
    }

    /// The fleet's `word` on parked request `ticket`: the request runs
    /// again at `now` and its answer is written into `reply` (at least
    /// [`crate::REPLY_BUFFER`] bytes), to send as the transmit says.
    /// `None` when there is nothing to send (the ticket is unknown, or
    /// the request is dropped now).
    pub fn admitted(
        &mut self,
        now: Instant,
        ticket: u64,
        word: Admission,
        reply: &mut [u8],
        sockets: &mut impl Sockets,
    ) -> Option<Transmit> {
        let parked = self.admissions.parked.remove(&ticket)?;
        let key = (parked.listener, parked.client);
        if self.admissions.by_client.get(&key) == Some(&ticket) {
            self.admissions.by_client.remove(&key);
        }
        let Ok(msg) = Message::parse(&parked.request) else {
            self.unused(word, &parked);
            return None;
        };
        self.admissions.word = Some((key, word));
        let answer = self.request(now, parked.listener, parked.client, &msg, reply, sockets);
        // Answered before the quota step (its nonce went stale, its user
        // was revoked, the node drains...): the word went unused.
        if self.admissions.word.take().is_some() {
            self.unused(word, &parked);
        }
        let len = answer.ok().flatten()?;
        self.stats.responses.count(reply.get(..len).unwrap_or_default());
        Some(Transmit { via: Via::Listener(parked.listener), to: parked.client, range: 0..len })
    }

    /// A stream client's connection closed: its parked request is not
    /// run again (its word, when it comes, is given back if it counted).
    pub(super) fn forget_parked(&mut self, listener: ListenerId, from: SocketAddr) {
        if let Some(ticket) = self.admissions.by_client.remove(&(listener, from))
            && let Some(p) = self.admissions.parked.get_mut(&ticket)
        {
            p.request = Box::default();
        }
    }

    /// What the fleet counted for a request that made nothing goes back.
    fn unused(&self, word: Admission, parked: &Parked) {
        if word == Admission::Admitted {
            self.shared.quotas.unadmit(&parked.account, parked.count);
        }
    }
}
