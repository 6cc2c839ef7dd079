//! Long-term credentials: wrong ones and stale nonces, TURN REST
//! credentials with rotation and expiry, SHA-256 and precomputed keys.

use super::harness::*;

#[test]
fn wrong_credentials_and_stale_nonces() {
    let mut h = Harness::new();
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    let r = h.authed(CLIENT, Method::ALLOCATE, &udp, &creds("alice", "wrong"));
    assert_eq!(r.code(), Some(401));
    assert!(r.msg().get::<Nonce>().unwrap().is_some(), "401 carries a fresh nonce");
    let r = h.authed(CLIENT, Method::ALLOCATE, &udp, &creds("mallory", "x"));
    assert_eq!(r.code(), Some(401));

    // A nonce older than its lifetime gets 438 and a new nonce that works.
    let tid = h.tid();
    let first = h.build(Method::ALLOCATE, tid, &udp, None);
    let nonce = h.exchange(CLIENT, &first).nonce();
    h.advance(601);
    let c = Harness::alice();
    let tid = h.tid();
    let stale = h.build(Method::ALLOCATE, tid, &udp, Some((&c, &nonce)));
    let r = h.exchange(CLIENT, &stale);
    assert_eq!(r.code(), Some(438));
    let fresh = r.nonce();
    assert_ne!(fresh, nonce);
    let tid = h.tid();
    let retry = h.build(Method::ALLOCATE, tid, &udp, Some((&c, &fresh)));
    assert_eq!(h.exchange(CLIENT, &retry).class(), Class::Success);

    // A nonce issued to another client address is not accepted.
    let tid = h.tid();
    let stolen = h.build(Method::ALLOCATE, tid, &udp, Some((&c, &fresh)));
    assert_eq!(h.exchange("127.0.0.1:40001", &stolen).code(), Some(438));

    // Integrity without USERNAME, REALM or NONCE is a bad request.
    let tid = h.tid();
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::ALLOCATE, Class::Request), tid).unwrap();
    w.add(&RequestedTransport::UDP).unwrap();
    w.integrity(b"k").unwrap();
    let len = w.finish();
    assert_eq!(h.exchange(CLIENT, &buf[..len]).code(), Some(400));
    let failures = h.server.stats().auth_failures;
    let expected =
        AuthFailures { bad_integrity: 1, unknown_user: 1, stale_nonce: 2, bad_request: 1, ..Default::default() };
    assert_eq!(failures, expected);
    let responses = &h.server.stats().responses;
    assert_eq!(responses.get("allocate", "401"), 4, "two failures and two challenges (the client keeps its nonce)");
    assert_eq!(responses.get("allocate", "438"), 2);
    assert_eq!(responses.get("allocate", "400"), 1);
    assert_eq!(responses.get("allocate", "success"), 1);
}

#[test]
fn rest_api_credentials_with_rotation_and_expiry() {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let rest = |secret: &[u8], user: &str| {
        let mut mac = <hmac::Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret).unwrap();
        mac.update(user.as_bytes());
        creds(user, &base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
    };
    let mut h = Harness::new();
    let live = format!("{}:web-user", UNIX0 + 3600);
    h.allocate("127.0.0.1:43000", &rest(b"old secret", &live));
    h.allocate("127.0.0.1:43001", &rest(b"new secret", &live));
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    assert_eq!(h.authed("127.0.0.1:43002", Method::ALLOCATE, &udp, &rest(b"other", &live)).code(), Some(401));
    let expired = format!("{}:web-user", UNIX0 - 1);
    assert_eq!(h.authed("127.0.0.1:43003", Method::ALLOCATE, &udp, &rest(b"new secret", &expired)).code(), Some(401));
    let garbage = "not-a-number:web-user";
    assert_eq!(h.authed("127.0.0.1:43004", Method::ALLOCATE, &udp, &rest(b"new secret", garbage)).code(), Some(401));
}

#[test]
fn sha256_password_algorithm_and_precomputed_keys() {
    let mut h = Harness::new();
    let mut c = Harness::alice();
    c.sha256 = true;
    let udp = [Attribute::RequestedTransport(RequestedTransport::UDP)];
    let r = h.authed(CLIENT, Method::ALLOCATE, &udp, &c);
    assert_eq!(r.class(), Class::Success);
    let key = LongTermKey::derive(AlgorithmId::SHA256, "alice", REALM, "wonderland").unwrap();
    assert_eq!(r.msg().verify_integrity(key.as_bytes()), Ok(IntegrityKind::Sha256));

    // carol has only an MD5 key: MD5 works, SHA-256 cannot.
    h.allocate("127.0.0.1:44000", &creds("carol", "c"));
    let mut carol = creds("carol", "c");
    carol.sha256 = true;
    assert_eq!(h.authed("127.0.0.1:44001", Method::ALLOCATE, &udp, &carol).code(), Some(401));

    // A client that alters PASSWORD-ALGORITHMS (a downgrade) gets 400.
    let tid = h.tid();
    let first = h.build(Method::ALLOCATE, tid, &udp, None);
    let nonce = h.exchange("127.0.0.1:44002", &first).nonce();
    let only_md5 = [PasswordAlgorithm::new(AlgorithmId::MD5)];
    let tampered = [
        udp[0],
        Attribute::PasswordAlgorithms(PasswordAlgorithms::new(&only_md5)),
        Attribute::PasswordAlgorithm(PasswordAlgorithm::new(AlgorithmId::MD5)),
    ];
    let tid = h.tid();
    let req = h.build(Method::ALLOCATE, tid, &tampered, Some((&Harness::alice(), &nonce)));
    assert_eq!(h.exchange("127.0.0.1:44002", &req).code(), Some(400));
}
