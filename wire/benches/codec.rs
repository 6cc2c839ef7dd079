//! Costs of the codec on the relay's paths: the per-packet forwarding path
//! (classify + ChannelData parse, in-place framing), and the per-request
//! path (parse an authenticated Allocate, check its integrity, write the
//! answer).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use ip2p_wire::attr::{
    Lifetime, Nonce, Realm, RequestedTransport, Software, Username, XorMappedAddress, XorRelayedAddress,
};
use ip2p_wire::credentials::LongTermKey;
use ip2p_wire::{
    ChannelData, Class, Message, MessageType, MessageWriter, Method, PacketKind, TransactionId, Transport, classify,
    frame_channel_data, frame_indication,
};

const TID: TransactionId = TransactionId([0x5a; 12]);

/// An Allocate request as browsers send it on the second try: USERNAME,
/// REALM, NONCE, REQUESTED-TRANSPORT, LIFETIME, MESSAGE-INTEGRITY,
/// FINGERPRINT.
fn allocate_request(key: &LongTermKey) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut w = MessageWriter::new(&mut buf, MessageType::new(Method::ALLOCATE, Class::Request), TID).unwrap();
    w.add(&RequestedTransport::UDP).unwrap();
    w.add(&Lifetime(600)).unwrap();
    w.add(&Username("1767225600:alice")).unwrap();
    w.add(&Realm("ip2p.example")).unwrap();
    w.add(&Nonce("obMatJos2AAABZGVhZGJlZWZkZWFkYmVlZmRlYWRiZWVm")).unwrap();
    w.integrity(key.as_bytes()).unwrap();
    let len = w.fingerprint().unwrap();
    buf.truncate(len);
    buf
}

fn forwarding(c: &mut Criterion) {
    let mut packet = vec![0u8; 4 + 1200];
    packet[..4].copy_from_slice(&[0x40, 0x01, 0x04, 0xb0]);
    c.bench_function("forward/classify+channel_data_parse", |b| {
        b.iter(|| {
            let p = black_box(&packet[..]);
            match classify(p) {
                PacketKind::ChannelData => ChannelData::parse(p).map(|cd| (cd.channel(), cd.data().len())).ok(),
                _ => None,
            }
        });
    });

    let mut buf = vec![0u8; 64 + 1200 + 4];
    c.bench_function("forward/frame_channel_data_in_place", |b| {
        b.iter(|| frame_channel_data(black_box(&mut buf), 64..64 + 1200, 0x4001, Transport::Datagram).unwrap());
    });
    let peer: SocketAddr = "198.51.100.20:40000".parse().unwrap();
    c.bench_function("forward/frame_data_indication_in_place", |b| {
        b.iter(|| frame_indication(black_box(&mut buf), 64..64 + 1200, Method::DATA, peer, TID).unwrap());
    });
}

fn requests(c: &mut Criterion) {
    let key = LongTermKey::md5("1767225600:alice", "ip2p.example", "s3cret");
    let request = allocate_request(&key);

    c.bench_function("request/parse_allocate", |b| {
        b.iter(|| {
            let msg = Message::parse(black_box(&request)).unwrap();
            let user = msg.get::<Username>().unwrap();
            let nonce = msg.get::<Nonce>().unwrap();
            let transport = msg.get::<RequestedTransport>().unwrap();
            let lifetime = msg.get::<Lifetime>().unwrap();
            (user, nonce, transport, lifetime, msg.unknown_comprehension_required().next())
        });
    });
    let msg = Message::parse(&request).unwrap();
    c.bench_function("request/verify_integrity_sha1", |b| {
        b.iter(|| black_box(&msg).verify_integrity(key.as_bytes()).unwrap());
    });
    c.bench_function("request/verify_fingerprint", |b| {
        b.iter(|| black_box(&msg).verify_fingerprint().unwrap());
    });
    c.bench_function("request/derive_md5_key", |b| {
        b.iter(|| LongTermKey::md5(black_box("1767225600:alice"), "ip2p.example", "s3cret"));
    });
    let mut sha = vec![0u8; 512];
    let mut w = MessageWriter::new(&mut sha, MessageType::new(Method::ALLOCATE, Class::Request), TID).unwrap();
    w.add(&Username("alice")).unwrap();
    w.add(&Realm("ip2p.example")).unwrap();
    w.integrity_sha256(key.as_bytes()).unwrap();
    let len = w.finish();
    let sha_msg = Message::parse(&sha[..len]).unwrap();
    c.bench_function("request/verify_integrity_sha256", |b| {
        b.iter(|| black_box(&sha_msg).verify_integrity(key.as_bytes()).unwrap());
    });

    let relayed: SocketAddr = "203.0.113.1:50000".parse().unwrap();
    let mapped: SocketAddr = "198.51.100.7:61000".parse().unwrap();
    let mut out = [0u8; 256];
    c.bench_function("request/write_allocate_success", |b| {
        b.iter(|| {
            let typ = MessageType::new(Method::ALLOCATE, Class::Success);
            let mut w = MessageWriter::new(black_box(&mut out), typ, TID).unwrap();
            w.add(&XorRelayedAddress(relayed)).unwrap();
            w.add(&XorMappedAddress(mapped)).unwrap();
            w.add(&Lifetime(600)).unwrap();
            w.add(&Software("ip2p")).unwrap();
            w.integrity(key.as_bytes()).unwrap();
            w.fingerprint().unwrap()
        });
    });
}

criterion_group!(benches, forwarding, requests);
criterion_main!(benches);
