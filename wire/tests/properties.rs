//! Property tests: what is written parses back to the same attributes, and
//! no input makes a parser panic.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[path = "support/reencode.rs"]
mod reencode;

use std::net::{IpAddr, SocketAddr};

use ip2p_wire::attr::*;
use ip2p_wire::{
    AddressFamily, Attribute, Class, ErrorCode, Message, MessageType, MessageWriter, Method, RawAttribute,
    TransactionId,
};
use proptest::prelude::*;

/// An attribute with owned data, so proptest can generate it.
#[derive(Debug, Clone)]
enum Spec {
    Addr(u8, SocketAddr),
    Text(u8, String),
    Number(u8, u32),
    Bytes(u8, Vec<u8>),
    Channel(u16),
    EvenPort(bool),
    Transport(u8),
    Family(bool, u8),
    Error(u16, String),
    DontFragment,
    Icmp(u8, u8, u32),
    Unknown(u16, Vec<u8>),
}

impl Spec {
    fn attribute(&self) -> Attribute<'_> {
        match self {
            Spec::Addr(k, a) => match k % 5 {
                0 => Attribute::MappedAddress(MappedAddress(*a)),
                1 => Attribute::XorMappedAddress(XorMappedAddress(*a)),
                2 => Attribute::AlternateServer(AlternateServer(*a)),
                3 => Attribute::XorPeerAddress(XorPeerAddress(*a)),
                _ => Attribute::XorRelayedAddress(XorRelayedAddress(*a)),
            },
            Spec::Text(k, s) => match k % 5 {
                0 => Attribute::Username(Username(s)),
                1 => Attribute::Realm(Realm(s)),
                2 => Attribute::Nonce(Nonce(s)),
                3 => Attribute::Software(Software(s)),
                _ => Attribute::AlternateDomain(AlternateDomain(s)),
            },
            Spec::Number(k, n) => match k % 2 {
                0 => Attribute::Lifetime(Lifetime(*n)),
                _ => Attribute::ConnectionId(ConnectionId(*n)),
            },
            Spec::Bytes(k, b) => match k % 2 {
                0 => Attribute::Data(Data(b)),
                _ => Attribute::ReservationToken(ReservationToken(b[..8].try_into().unwrap())),
            },
            Spec::Channel(c) => Attribute::ChannelNumber(ChannelNumber(*c)),
            Spec::EvenPort(r) => Attribute::EvenPort(EvenPort { reserve_next: *r }),
            Spec::Transport(p) => Attribute::RequestedTransport(RequestedTransport(*p)),
            Spec::Family(additional, f) if *additional => {
                Attribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily(*f)))
            }
            Spec::Family(_, f) => Attribute::RequestedAddressFamily(RequestedAddressFamily(AddressFamily(*f))),
            Spec::Error(code, reason) => {
                Attribute::ErrorCode(ErrorCodeAttr { code: ErrorCode::new(*code).unwrap(), reason })
            }
            Spec::DontFragment => Attribute::DontFragment(DontFragment),
            Spec::Icmp(t, c, d) => Attribute::Icmp(Icmp { icmp_type: *t, code: *c, error_data: *d }),
            Spec::Unknown(t, v) => Attribute::Unknown(RawAttribute { typ: AttrType(*t), value: v }),
        }
    }
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        (any::<u8>(), socket_addr()).prop_map(|(k, a)| Spec::Addr(k, a)),
        (any::<u8>(), "\\PC{0,60}").prop_map(|(k, s)| Spec::Text(k, s)),
        (any::<u8>(), any::<u32>()).prop_map(|(k, n)| Spec::Number(k, n)),
        (any::<u8>(), proptest::collection::vec(any::<u8>(), 8..200)).prop_map(|(k, b)| Spec::Bytes(k, b)),
        any::<u16>().prop_map(Spec::Channel),
        any::<bool>().prop_map(Spec::EvenPort),
        any::<u8>().prop_map(Spec::Transport),
        (any::<bool>(), any::<u8>()).prop_map(|(a, f)| Spec::Family(a, f)),
        (300u16..700, "\\PC{0,40}").prop_map(|(c, r)| Spec::Error(c, r)),
        Just(Spec::DontFragment),
        (any::<u8>(), any::<u8>(), any::<u32>()).prop_map(|(t, c, d)| Spec::Icmp(t, c, d)),
        (
            any::<u16>().prop_filter("unknown type", |t| !AttrType(*t).is_known()),
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(t, v)| Spec::Unknown(t, v)),
    ]
}

proptest! {
    #[test]
    fn written_attributes_parse_back(
        specs in proptest::collection::vec(spec(), 0..12),
        tid in any::<[u8; 12]>(),
        method in 0u16..0x1000,
        integrity in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64)),
        fingerprint in any::<bool>(),
    ) {
        let tid = TransactionId(tid);
        let typ = MessageType::new(Method::new(method).unwrap(), Class::Request);
        let mut buf = vec![0u8; 4096];
        let mut w = MessageWriter::new(&mut buf, typ, tid).unwrap();
        let attrs: Vec<_> = specs.iter().map(Spec::attribute).collect();
        for a in &attrs {
            w.add_attribute(a).unwrap();
        }
        if let Some(key) = &integrity {
            w.integrity(key).unwrap();
        }
        let len = if fingerprint { w.fingerprint().unwrap() } else { w.finish() };

        let msg = Message::parse(&buf[..len]).unwrap();
        prop_assert_eq!(msg.message_type(), typ);
        prop_assert_eq!(msg.transaction_id(), &tid);
        let decoded: Vec<_> = msg.decoded().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(decoded, attrs);
        if let Some(key) = &integrity {
            prop_assert!(msg.verify_integrity(key).is_ok());
            prop_assert!(msg.verify_integrity(b"another key").is_err());
        }
        prop_assert_eq!(msg.verify_fingerprint().is_ok(), fingerprint);
        reencode::check(&buf[..len]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        reencode::check(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(
        specs in proptest::collection::vec(spec(), 1..6),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut buf = vec![0u8; 2048];
        let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::ALLOCATE, Class::Request), TransactionId([1; 12])).unwrap();
        for s in &specs {
            w.add_attribute(&s.attribute()).unwrap();
        }
        w.integrity(b"key").unwrap();
        let len = w.fingerprint().unwrap();
        let mut bytes = buf[..len].to_vec();
        for (at, x) in flips {
            let i = at % bytes.len();
            bytes[i] ^= x;
        }
        reencode::check(&bytes);
    }
}

/// Inputs fuzzing once broke, kept so they stay fixed.
#[test]
fn fuzz_regressions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        reencode::check(&std::fs::read(entry.unwrap().path()).unwrap());
        n += 1;
    }
    assert!(n > 0);
}
