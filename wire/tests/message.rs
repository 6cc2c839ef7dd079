//! Framing rules of RFC 8489 §6.3 and §14, every attribute's round trip,
//! and the in-place framing of indications.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::SocketAddr;

use ip2p_wire::attr::*;
use ip2p_wire::{
    AddressFamily, Attribute, Class, Error, ErrorCode, IntegrityKind, Message, MessageType, MessageWriter, Method,
    RawAttribute, TransactionId, frame_indication, indication_overhead,
};

const TID: TransactionId = TransactionId([0x42; 12]);

fn writer(buf: &mut [u8]) -> MessageWriter<'_> {
    MessageWriter::new(buf, MessageType::new(Method::ALLOCATE, Class::Request), TID).unwrap()
}

#[test]
fn every_attribute_round_trips() {
    let v4: SocketAddr = "203.0.113.7:3478".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::1:2]:49152".parse().unwrap();
    let hash = [7u8; 32];
    let mi = [9u8; 20];
    let token = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let unknown = [AttrType(0x0024), AttrType(0x7777)];
    let algs =
        [PasswordAlgorithm::new(AlgorithmId::SHA256), PasswordAlgorithm { algorithm: AlgorithmId(9), params: b"xyz" }];
    let attrs = [
        Attribute::MappedAddress(MappedAddress(v4)),
        Attribute::XorMappedAddress(XorMappedAddress(v6)),
        Attribute::Username(Username("alice")),
        Attribute::Userhash(Userhash(&hash)),
        Attribute::ErrorCode(ErrorCodeAttr::new(ErrorCode::STALE_NONCE)),
        Attribute::Realm(Realm("ip2p.test")),
        Attribute::Nonce(Nonce("obMatJos2AAADabc")),
        Attribute::PasswordAlgorithms(PasswordAlgorithms::new(&algs)),
        Attribute::PasswordAlgorithm(PasswordAlgorithm::new(AlgorithmId::MD5)),
        Attribute::UnknownAttributes(UnknownAttributes::new(&unknown)),
        Attribute::Software(Software("ip2p 0.1")),
        Attribute::AlternateServer(AlternateServer(v6)),
        Attribute::AlternateDomain(AlternateDomain("relay.ip2p.test")),
        Attribute::ChannelNumber(ChannelNumber(0x4001)),
        Attribute::Lifetime(Lifetime(3600)),
        Attribute::XorPeerAddress(XorPeerAddress(v4)),
        Attribute::XorPeerAddress(XorPeerAddress(v6)),
        Attribute::Data(Data(b"hello")),
        Attribute::XorRelayedAddress(XorRelayedAddress(v4)),
        Attribute::RequestedAddressFamily(RequestedAddressFamily(AddressFamily::IPV6)),
        Attribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily::IPV6)),
        Attribute::AddressErrorCode(AddressErrorCode {
            family: AddressFamily::IPV6,
            code: ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
            reason: "no IPv6 here",
        }),
        Attribute::EvenPort(EvenPort { reserve_next: true }),
        Attribute::RequestedTransport(RequestedTransport::UDP),
        Attribute::DontFragment(DontFragment),
        Attribute::ReservationToken(ReservationToken(&token)),
        Attribute::Icmp(Icmp { icmp_type: 3, code: 4, error_data: 1400 }),
        Attribute::ConnectionId(ConnectionId(0xDEAD_BEEF)),
        Attribute::Unknown(RawAttribute { typ: AttrType(0xC001), value: b"opaque" }),
        Attribute::MessageIntegrity(MessageIntegrity(&mi)),
    ];
    let mut buf = [0u8; 1024];
    let mut w = writer(&mut buf);
    for a in &attrs {
        w.add_attribute(a).unwrap();
    }
    let len = w.finish();
    let msg = Message::parse(&buf[..len]).unwrap();
    // MESSAGE-INTEGRITY ends what a receiver processes.
    let decoded: Vec<_> = msg.decoded().collect::<Result<_, _>>().unwrap();
    assert_eq!(decoded, attrs[..attrs.len() - 1]);
    let all: Vec<_> = msg.all_attributes().map(|a| Attribute::decode(a, &TID).unwrap()).collect();
    assert_eq!(all, attrs);
    assert_eq!(msg.get_all::<XorPeerAddress>().map(|a| a.unwrap().0).collect::<Vec<_>>(), [v4, v6]);
    assert_eq!(msg.unknown_comprehension_required().count(), 0);
}

#[test]
fn basic_checks_discard_what_is_not_stun() {
    let mut buf = [0u8; 64];
    let mut w = writer(&mut buf);
    w.add(&Lifetime(600)).unwrap();
    let len = w.finish();
    let good = buf[..len].to_vec();
    assert!(Message::parse(&good).is_ok());

    let mut b = good.clone();
    b[0] |= 0x80; // leading bits must be zero
    assert_eq!(Message::parse(&b).unwrap_err(), Error::NotStun);
    let mut b = good.clone();
    b[5] ^= 1; // magic cookie
    assert_eq!(Message::parse(&b).unwrap_err(), Error::NotStun);
    let mut b = good.clone();
    b[3] = 7; // length not a multiple of 4
    assert_eq!(Message::parse(&b).unwrap_err(), Error::NotStun);
    assert_eq!(Message::parse(&good[..len - 4]).unwrap_err(), Error::LengthMismatch);
    assert_eq!(Message::parse(&good[..19]).unwrap_err(), Error::Truncated);
    let mut b = good.clone();
    b[23] = 8; // LIFETIME claims 8 bytes, 4 are there
    assert_eq!(Message::parse(&b).unwrap_err(), Error::AttributeOverflow);
    for e in [Error::NotStun, Error::LengthMismatch, Error::Truncated] {
        assert_eq!(e.response(), None, "{e} is discarded silently");
    }
    assert_eq!(Error::AttributeOverflow.response(), Some(ErrorCode::BAD_REQUEST));
    assert_eq!(Error::IntegrityMismatch.response(), Some(ErrorCode::UNAUTHENTICATED));
}

#[test]
fn attributes_after_integrity_are_ignored_and_fingerprint_is_last() {
    let mut buf = [0u8; 128];
    let mut w = writer(&mut buf);
    w.add(&Username("bob")).unwrap();
    w.integrity(b"key").unwrap();
    w.add(&Lifetime(1)).unwrap(); // after MESSAGE-INTEGRITY: to be ignored
    w.integrity_sha256(b"key").unwrap();
    let len = w.fingerprint().unwrap();
    let msg = Message::parse(&buf[..len]).unwrap();
    assert_eq!(msg.get::<Lifetime>().unwrap(), None);
    assert_eq!(msg.attributes().count(), 1);
    assert_eq!(msg.all_attributes().count(), 5);
    // SHA-256 covers what follows MESSAGE-INTEGRITY, so it is the one checked.
    assert_eq!(msg.verify_integrity(b"key"), Ok(IntegrityKind::Sha256));
    assert_eq!(msg.verify_fingerprint(), Ok(()));

    let mut buf = [0u8; 64];
    let mut w = writer(&mut buf);
    w.add(&Fingerprint(0)).unwrap();
    w.add(&Lifetime(1)).unwrap();
    let len = w.finish();
    assert_eq!(Message::parse(&buf[..len]).unwrap_err(), Error::InvalidAttribute(AttrType::FINGERPRINT));

    let mut buf = [0u8; 64];
    let mut w = writer(&mut buf);
    w.add_raw(AttrType::MESSAGE_INTEGRITY, &[0; 16]).unwrap();
    let len = w.finish();
    assert_eq!(Message::parse(&buf[..len]).unwrap_err(), Error::InvalidAttribute(AttrType::MESSAGE_INTEGRITY));
}

#[test]
fn truncated_sha256_integrity_verifies() {
    // RFC 8489 §14.6: a sender may truncate to 16 bytes; the length field
    // used in the HMAC counts the truncated attribute.
    let key = b"a long-term key";
    let mut full = [0u8; 128];
    let mut w = writer(&mut full);
    w.add(&Username("carol")).unwrap();
    let before = w.len();
    // Compute the MAC as if the attribute were 16 bytes long, then write it.
    let mut scratch = full;
    let mut ws = MessageWriter::new(&mut scratch, MessageType::new(Method::ALLOCATE, Class::Request), TID).unwrap();
    ws.add(&Username("carol")).unwrap();
    ws.add_raw(AttrType::MESSAGE_INTEGRITY_SHA256, &[0; 16]).unwrap();
    let len = ws.finish();
    use hmac::{KeyInit, Mac};
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(&scratch[..before]);
    let tag = mac.finalize().into_bytes();
    scratch[before + 4..before + 20].copy_from_slice(&tag[..16]);
    let msg = Message::parse(&scratch[..len]).unwrap();
    assert_eq!(msg.verify_integrity(key), Ok(IntegrityKind::Sha256));
    scratch[before + 19] ^= 1;
    let msg = Message::parse(&scratch[..len]).unwrap();
    assert_eq!(msg.verify_integrity(key), Err(Error::IntegrityMismatch));
    let msg = Message::parse(&full[..before]).unwrap();
    assert_eq!(msg.verify_integrity(key), Err(Error::MissingIntegrity));
}

#[test]
fn invalid_values_are_reported_with_their_type() {
    let cases: [(AttrType, &[u8]); 8] = [
        (AttrType::LIFETIME, &[0, 0, 1]),
        (AttrType::XOR_PEER_ADDRESS, &[0, 3, 0, 0, 1, 2, 3, 4]),
        (AttrType::ERROR_CODE, &[0, 0, 2, 0]),   // class 2
        (AttrType::ERROR_CODE, &[0, 0, 4, 100]), // number 100
        (AttrType::USERNAME, &[0xff, 0xfe]),     // not UTF-8
        (AttrType::UNKNOWN_ATTRIBUTES, &[0, 1, 0]),
        (AttrType::PASSWORD_ALGORITHMS, &[0, 1, 0, 9]),
        (AttrType::USERHASH, &[0; 31]),
    ];
    for (typ, value) in cases {
        let mut buf = [0u8; 64];
        let mut w = writer(&mut buf);
        w.add_raw(typ, value).unwrap();
        let len = w.finish();
        let msg = Message::parse(&buf[..len]).unwrap();
        let err = msg.decoded().next().unwrap().unwrap_err();
        assert_eq!(err, Error::InvalidAttribute(typ), "{typ}");
        assert_eq!(err.response(), Some(ErrorCode::BAD_REQUEST));
    }
    let long = "x".repeat(509);
    let mut buf = [0u8; 600];
    let mut w = writer(&mut buf);
    w.add(&Username(&long)).unwrap();
    let len = w.finish();
    assert!(Message::parse(&buf[..len]).unwrap().get::<Username>().is_err());
}

#[test]
fn unknown_values_are_data_not_errors() {
    let mut buf = [0u8; 64];
    let mut w = writer(&mut buf);
    w.add_raw(AttrType::REQUESTED_TRANSPORT, &[6, 0, 0, 0]).unwrap();
    w.add_raw(AttrType::REQUESTED_ADDRESS_FAMILY, &[3, 0, 0, 0]).unwrap();
    w.add_raw(AttrType::CHANNEL_NUMBER, &[0x30, 0, 0, 0]).unwrap();
    w.add_raw(AttrType(0x0031), b"??").unwrap();
    let len = w.finish();
    let msg = Message::parse(&buf[..len]).unwrap();
    assert_eq!(msg.get::<RequestedTransport>().unwrap(), Some(RequestedTransport::TCP));
    assert_eq!(msg.get::<RequestedAddressFamily>().unwrap(), Some(RequestedAddressFamily(AddressFamily(3))));
    assert_eq!(msg.get::<ChannelNumber>().unwrap(), Some(ChannelNumber(0x3000)));
    assert_eq!(msg.unknown_comprehension_required().collect::<Vec<_>>(), [AttrType(0x0031)]);
}

#[test]
fn writer_refuses_what_does_not_fit() {
    let mut small = [0u8; 30];
    let mut w = writer(&mut small);
    assert_eq!(w.add(&Data(&[0; 8])).unwrap_err(), Error::BufferTooSmall);
    assert!(w.is_empty(), "a failed add leaves the message as it was");
    assert_eq!(
        MessageWriter::new(&mut [0u8; 19], MessageType::new(Method::BINDING, Class::Request), TID).unwrap_err(),
        Error::BufferTooSmall
    );
    let mut big = vec![0u8; 70_000];
    let mut w = writer(&mut big);
    assert_eq!(w.add(&Data(&[0; 65_536])).unwrap_err(), Error::TooLong);
    w.add(&Data(&[0; 65_000])).unwrap();
    assert_eq!(w.add(&Data(&[0; 600])).unwrap_err(), Error::TooLong);
}

#[test]
fn indications_are_framed_around_the_payload_in_place() {
    for peer in ["198.51.100.9:5000", "[2001:db8::9]:5000"] {
        let peer: SocketAddr = peer.parse().unwrap();
        for size in [0, 1, 2, 3, 4, 5, 100, 1201] {
            let headroom = 64;
            let mut buf = vec![0xEE; headroom + size + 3];
            let payload: Vec<u8> = (0..=255u8).cycle().take(size).collect();
            buf[headroom..headroom + size].copy_from_slice(&payload);
            let r = frame_indication(&mut buf, headroom..headroom + size, Method::DATA, peer, TID).unwrap();
            assert_eq!(r.start, headroom - indication_overhead(&peer));
            let msg = Message::parse(&buf[r]).unwrap();
            assert_eq!(msg.message_type(), MessageType::new(Method::DATA, Class::Indication));
            assert_eq!(msg.get::<XorPeerAddress>().unwrap(), Some(XorPeerAddress(peer)));
            assert_eq!(msg.get::<Data>().unwrap(), Some(Data(&payload)));
        }
    }
    let peer: SocketAddr = "198.51.100.9:5000".parse().unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(frame_indication(&mut buf, 35..40, Method::SEND, peer, TID), Err(Error::BufferTooSmall));
    assert_eq!(frame_indication(&mut buf, 37..62, Method::SEND, peer, TID), Err(Error::BufferTooSmall));
    assert!(frame_indication(&mut buf, 36..61, Method::SEND, peer, TID).is_ok());
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 50..40;
    assert_eq!(frame_indication(&mut buf, reversed, Method::SEND, peer, TID), Err(Error::BufferTooSmall));
}
