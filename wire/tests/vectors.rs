//! RFC 5769 (all four vectors) and RFC 8489 Appendix B.1 (as corrected by
//! verified erratum 6268), parsed and rebuilt byte for byte.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use hex_literal::hex;
use ip2p_wire::attr::{AlgorithmId, Nonce, PasswordAlgorithm, Realm, Software, Userhash, Username, XorMappedAddress};
use ip2p_wire::credentials::{LongTermKey, SecurityFeatures, userhash};
use ip2p_wire::{AttrType, Class, Error, IntegrityKind, Message, MessageType, MessageWriter, Method, TransactionId};

const SHORT_TERM_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
const TID: TransactionId = TransactionId(hex!("b7e7a701bc34d686fa87dfae"));
const TID_AUTH: TransactionId = TransactionId(hex!("78ad3433c6ad72c029da412e"));
const USER: &str = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
const REALM: &str = "example.org";

/// RFC 5769 §2.1: sample request (padding bytes are spaces).
const REQUEST: [u8; 108] = hex!(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "80220010" "5354554e207465737420636c69656e74"
    "00240004" "6e0001ff"
    "80290008" "932ff9b151263b36"
    "00060009" "6576746a3a68367659202020"
    "00080014" "9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004" "e57a3bcf"
);

/// RFC 5769 §2.2: sample IPv4 response.
const RESPONSE_V4: [u8; 80] = hex!(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b" "7465737420766563746f7220"
    "00200008" "0001a147e112a643"
    "00080014" "2b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004" "c07d4c96"
);

/// RFC 5769 §2.3: sample IPv6 response.
const RESPONSE_V6: [u8; 92] = hex!(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b" "7465737420766563746f7220"
    "00200014" "0002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014" "a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004" "c8fb0b4c"
);

/// RFC 5769 §2.4: request with long-term authentication.
const REQUEST_LONG_TERM: [u8; 116] = hex!(
    "000100602112a44278ad3433c6ad72c029da412e"
    "00060012" "e3839ee38388e383aae38383e382afe382b90000"
    "0015001c" "662f2f3439396b39353464364f4c33346f4c39465354767936347341"
    "0014000b" "6578616d706c652e6f726700"
    "00080014" "f67024656dd64a3e02b8e0712e85c9a28ca89666"
);

/// RFC 8489 Appendix B.1 with erratum 6268 (which adds PASSWORD-ALGORITHM
/// and corrects the length and the MESSAGE-INTEGRITY-SHA256 value).
const REQUEST_SHA256: [u8; 164] = hex!(
    "000100902112a44278ad3433c6ad72c029da412e"
    "001e0020" "4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704"
    "00150029" "6f624d61744a6f733241414143662f2f3439396b39353464364f4c33346f4c39465354767936347341000000"
    "0014000b" "6578616d706c652e6f726700"
    "001d0004" "00020000"
    "001c0020" "b5c7bf005b6c52a21c51c5e892f81924136296cb927c43149309278cc6518e65"
);

#[test]
fn rfc5769_sample_request() {
    let msg = Message::parse(&REQUEST).unwrap();
    assert_eq!(msg.message_type(), MessageType::new(Method::BINDING, Class::Request));
    assert_eq!(msg.transaction_id(), &TID);
    assert_eq!(msg.get::<Software>().unwrap(), Some(Software("STUN test client")));
    assert_eq!(msg.get::<Username>().unwrap(), Some(Username("evtj:h6vY")));
    // PRIORITY (0x0024) is an ICE attribute this codec does not decode: it is
    // comprehension-required, so a server would answer 420 listing it.
    assert_eq!(msg.unknown_comprehension_required().collect::<Vec<_>>(), [AttrType(0x0024)]);
    assert_eq!(msg.verify_integrity(SHORT_TERM_PASSWORD), Ok(IntegrityKind::Sha1));
    assert_eq!(msg.verify_fingerprint(), Ok(()));

    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, msg.message_type(), TID).unwrap();
    w.set_padding(b' ');
    w.add(&Software("STUN test client")).unwrap();
    w.add_raw(AttrType(0x0024), &hex!("6e0001ff")).unwrap();
    w.add_raw(AttrType(0x8029), &hex!("932ff9b151263b36")).unwrap();
    w.add(&Username("evtj:h6vY")).unwrap();
    w.integrity(SHORT_TERM_PASSWORD).unwrap();
    let len = w.fingerprint().unwrap();
    assert_eq!(&buf[..len], &REQUEST[..]);
}

#[test]
fn rfc5769_sample_responses() {
    for (vector, addr) in
        [(&RESPONSE_V4[..], "192.0.2.1:32853"), (&RESPONSE_V6[..], "[2001:db8:1234:5678:11:2233:4455:6677]:32853")]
    {
        let addr = addr.parse().unwrap();
        let msg = Message::parse(vector).unwrap();
        assert_eq!(msg.message_type(), MessageType::new(Method::BINDING, Class::Success));
        assert_eq!(msg.get::<XorMappedAddress>().unwrap(), Some(XorMappedAddress(addr)));
        assert_eq!(msg.get::<Software>().unwrap(), Some(Software("test vector")));
        assert_eq!(msg.verify_integrity(SHORT_TERM_PASSWORD), Ok(IntegrityKind::Sha1));
        assert_eq!(msg.verify_fingerprint(), Ok(()));

        let mut buf = [0u8; 128];
        let mut w = MessageWriter::new(&mut buf, msg.message_type(), TID).unwrap();
        w.set_padding(b' ');
        w.add(&Software("test vector")).unwrap();
        w.add(&XorMappedAddress(addr)).unwrap();
        w.integrity(SHORT_TERM_PASSWORD).unwrap();
        let len = w.fingerprint().unwrap();
        assert_eq!(&buf[..len], vector);
    }
}

#[test]
fn rfc5769_long_term_request() {
    // The vector gives the password before SASLprep; RFC 8489 keys are
    // computed over the prepared form "TheMatrIX".
    let password = stringprep::saslprep("The\u{00AD}M\u{00AA}tr\u{2168}").unwrap();
    assert_eq!(password, "TheMatrIX");
    let key = LongTermKey::md5(USER, REALM, &password);

    let msg = Message::parse(&REQUEST_LONG_TERM).unwrap();
    assert_eq!(msg.get::<Username>().unwrap(), Some(Username(USER)));
    assert_eq!(msg.get::<Nonce>().unwrap(), Some(Nonce("f//499k954d6OL34oL9FSTvy64sA")));
    assert_eq!(msg.get::<Realm>().unwrap(), Some(Realm(REALM)));
    assert_eq!(msg.verify_integrity(key.as_bytes()), Ok(IntegrityKind::Sha1));
    assert!(!msg.has_fingerprint());
    let wrong = LongTermKey::md5(USER, REALM, "TheMatrIx");
    assert_eq!(msg.verify_integrity(wrong.as_bytes()), Err(Error::IntegrityMismatch));

    let mut buf = [0u8; 128];
    let mut w = MessageWriter::new(&mut buf, msg.message_type(), TID_AUTH).unwrap();
    w.add(&Username(USER)).unwrap();
    w.add(&Nonce("f//499k954d6OL34oL9FSTvy64sA")).unwrap();
    w.add(&Realm(REALM)).unwrap();
    w.integrity(key.as_bytes()).unwrap();
    let len = w.finish();
    assert_eq!(&buf[..len], &REQUEST_LONG_TERM[..]);
}

#[test]
fn rfc8489_sha256_request_with_userhash() {
    let nonce = "obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA";
    let key = LongTermKey::derive(AlgorithmId::SHA256, USER, REALM, "TheMatrIX").unwrap();

    let msg = Message::parse(&REQUEST_SHA256).unwrap();
    let hash = userhash(USER, REALM);
    assert_eq!(msg.get::<Userhash>().unwrap(), Some(Userhash(&hash)));
    assert_eq!(msg.get::<Nonce>().unwrap(), Some(Nonce(nonce)));
    assert_eq!(SecurityFeatures::from_nonce(nonce), Some(SecurityFeatures::USERNAME_ANONYMITY));
    assert_eq!(msg.get::<PasswordAlgorithm>().unwrap(), Some(PasswordAlgorithm::new(AlgorithmId::SHA256)));
    assert_eq!(msg.verify_integrity(key.as_bytes()), Ok(IntegrityKind::Sha256));
    let md5 = LongTermKey::md5(USER, REALM, "TheMatrIX");
    assert_eq!(msg.verify_integrity(md5.as_bytes()), Err(Error::IntegrityMismatch));

    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(&mut buf, msg.message_type(), TID_AUTH).unwrap();
    w.add(&Userhash(&hash)).unwrap();
    w.add(&Nonce(nonce)).unwrap();
    w.add(&Realm(REALM)).unwrap();
    w.add(&PasswordAlgorithm::new(AlgorithmId::SHA256)).unwrap();
    w.integrity_sha256(key.as_bytes()).unwrap();
    let len = w.finish();
    assert_eq!(&buf[..len], &REQUEST_SHA256[..]);
}

#[test]
fn tampering_breaks_integrity_and_fingerprint() {
    let mut bytes = REQUEST;
    bytes[30] ^= 0x01; // inside SOFTWARE
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.verify_integrity(SHORT_TERM_PASSWORD), Err(Error::IntegrityMismatch));
    assert_eq!(msg.verify_fingerprint(), Err(Error::FingerprintMismatch));

    let mut bytes = REQUEST_SHA256;
    bytes[100] ^= 0x80; // inside REALM
    let msg = Message::parse(&bytes).unwrap();
    let key = LongTermKey::derive(AlgorithmId::SHA256, USER, REALM, "TheMatrIX").unwrap();
    assert_eq!(msg.verify_integrity(key.as_bytes()), Err(Error::IntegrityMismatch));
}
