//! Fleet-wide quotas in the core: an Allocate that passes every local
//! check is parked until the fleet's word comes, then answered as that
//! word says; the journal tells the fleet what it has not counted.

use super::harness::*;

const UDP: [Attribute<'static>; 1] = [Attribute::RequestedTransport(RequestedTransport::UDP)];

fn fleet(fallback: Fallback, per_user: usize) -> Harness {
    let config = Config { admission: Some(fallback), ..config() };
    let h = Harness::with(config, Quotas::new(QuotaLimits { total: 0, per_user, per_prefix: 0 }));
    h.server.shared.quotas.keep_journal();
    h
}

/// Parks alice's Allocate from `from`; its request.
fn parked(h: &mut Harness, from: &str) -> AdmissionRequest {
    assert_eq!(h.send_authed_deferred(from, Method::ALLOCATE, &UDP, &Harness::alice()), Verdict::Deferred);
    h.server.poll_admission().expect("an admission request")
}

/// The answer to `ticket` under `word`.
fn answer(h: &mut Harness, ticket: u64, word: Admission) -> Response {
    let t = h.server.admitted(h.now, ticket, word, &mut h.reply, &mut h.sockets).expect("an answer");
    assert_eq!(t.via, Via::Listener(h.listener));
    Response(h.reply[t.range].to_vec())
}

fn journal(h: &Harness) -> Vec<i32> {
    h.server.shared.quotas.take_journal().changes.iter().map(|(_, n)| *n).collect()
}

#[test]
fn an_allocate_waits_for_the_fleets_word_and_a_retransmission_adds_nothing() {
    let mut h = fleet(Fallback::Local, 2);
    let c = Harness::alice();
    let nonce = h.nonce_for(CLIENT);
    let tid = h.tid();
    let request = h.build(Method::ALLOCATE, tid, &UDP, Some((&c, &nonce)));
    assert_eq!(h.send(CLIENT, &request), Verdict::Deferred);
    let asked = h.server.poll_admission().unwrap();
    assert_eq!((&*asked.user, asked.prefix, asked.count), ("alice", addr(CLIENT).ip(), 1));
    // The client retransmits: still waiting, not asked twice.
    assert_eq!(h.send(CLIENT, &request), Verdict::Deferred);
    assert_eq!(h.server.poll_admission(), None);
    let r = answer(&mut h, asked.ticket, Admission::Admitted);
    assert_eq!((r.class(), r.msg().transaction_id()), (Class::Success, &tid));
    assert_eq!(h.server.allocations(), 1);
    assert!(journal(&h).is_empty(), "the fleet counted it");
    // Its retransmission now gets the same success, from the allocation.
    assert_eq!(h.exchange(CLIENT, &request).class(), Class::Success);
    // A word for a ticket no one holds answers nothing.
    assert!(h.server.admitted(h.now, asked.ticket, Admission::Admitted, &mut h.reply, &mut h.sockets).is_none());
    // Ended: the fleet hears it.
    assert_eq!(h.authed(CLIENT, Method::REFRESH, &[Attribute::Lifetime(Lifetime(0))], &c).class(), Class::Success);
    assert_eq!(journal(&h), [-1]);
}

#[test]
fn the_fleets_refusals_are_the_quotas_answers() {
    let mut h = fleet(Fallback::Local, 2);
    let asked = parked(&mut h, CLIENT);
    assert_eq!(answer(&mut h, asked.ticket, Admission::OverUser).code(), Some(486));
    let asked = parked(&mut h, CLIENT);
    assert_eq!(answer(&mut h, asked.ticket, Admission::OverPrefix).code(), Some(486));
    let refused = h.server.stats().allocations_refused;
    assert_eq!((refused.user_quota, refused.ip_quota, h.server.allocations()), (1, 1, 0));
    assert!(journal(&h).is_empty());
}

#[test]
fn without_the_fleets_word_the_fallback_decides() {
    // Local: the node's own limits, and the journal notes it.
    let mut h = fleet(Fallback::Local, 1);
    let asked = parked(&mut h, CLIENT);
    assert_eq!(answer(&mut h, asked.ticket, Admission::Unknown).class(), Class::Success);
    assert_eq!(journal(&h), [1]);
    let asked = parked(&mut h, "127.0.0.1:40001");
    assert_eq!(answer(&mut h, asked.ticket, Admission::Unknown).code(), Some(486), "the node's own quota");
    // Refuse: 508.
    let mut h = fleet(Fallback::Refuse, 1);
    let asked = parked(&mut h, CLIENT);
    assert_eq!(answer(&mut h, asked.ticket, Admission::Unknown).code(), Some(508));
    assert_eq!(h.server.stats().allocations_refused.store_down, 1);
    // A word that never comes: overdue after ADMISSION_WAIT, a timeout set.
    let mut h = fleet(Fallback::Local, 1);
    let asked = parked(&mut h, CLIENT);
    assert_eq!(h.server.poll_timeout(), Some(h.now + ADMISSION_WAIT));
    assert_eq!(h.server.overdue_admission(h.now), None);
    h.now += ADMISSION_WAIT;
    assert_eq!(h.server.overdue_admission(h.now), Some(asked.ticket));
    assert_eq!(answer(&mut h, asked.ticket, Admission::Unknown).class(), Class::Success);
    assert_eq!(h.server.poll_timeout(), Some(h.now + Duration::from_secs(600)), "the allocation's own");
}

#[test]
fn what_the_fleet_counted_and_this_node_did_not_make_goes_back() {
    // The fleet admits a second one, but the node's own count (1) refuses.
    let mut h = fleet(Fallback::Local, 1);
    let asked = parked(&mut h, CLIENT);
    answer(&mut h, asked.ticket, Admission::Admitted);
    let asked = parked(&mut h, "127.0.0.1:40001");
    assert_eq!(answer(&mut h, asked.ticket, Admission::Admitted).code(), Some(486));
    assert_eq!(journal(&h), [-1]);
}

#[test]
fn nothing_waits_without_limits_to_count_and_a_closed_client_is_forgotten() {
    let mut h = fleet(Fallback::Local, 0);
    h.allocate(CLIENT, &Harness::alice());
    assert_eq!(h.server.poll_admission(), None);
    let mut h = fleet(Fallback::Local, 1);
    h.listener = ListenerId::stream(0);
    let asked = parked(&mut h, CLIENT);
    h.server.client_closed(h.now, h.listener, addr(CLIENT), &mut h.sockets);
    assert!(h.server.admitted(h.now, asked.ticket, Admission::Admitted, &mut h.reply, &mut h.sockets).is_none());
    assert_eq!(h.server.allocations(), 0);
    assert_eq!(journal(&h), [-1], "what the fleet counted goes back");
}

#[test]
fn a_word_that_comes_after_the_request_stopped_mattering_goes_back() {
    // The node began to drain meanwhile: 508, and the count given back.
    let mut h = fleet(Fallback::Local, 2);
    let asked = parked(&mut h, CLIENT);
    h.server.drain();
    assert_eq!(answer(&mut h, asked.ticket, Admission::Admitted).code(), Some(508));
    assert_eq!(journal(&h), [-1]);
}

#[test]
fn a_worker_parks_a_bounded_number() {
    let mut h = fleet(Fallback::Local, 0);
    h.server.shared.quotas.set_limits(QuotaLimits { total: 0, per_user: 0, per_prefix: MAX_PARKED + 10 });
    for i in 0..MAX_PARKED {
        let _ = parked(&mut h, &format!("127.0.{}.{}:4000", i / 250, i % 250 + 1));
    }
    // One more is judged at once by the node's own limits.
    h.allocate("127.9.9.9:4000", &Harness::alice());
}
