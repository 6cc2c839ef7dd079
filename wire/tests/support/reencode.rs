//! The parse/re-encode invariant, shared by the property tests and the
//! `reencode` fuzz target: whatever parses must re-encode to the same
//! message (padding aside), and every attribute that decodes must encode
//! back to a value that decodes to the same thing.

use ip2p_wire::{Attribute, ChannelData, Message, MessageWriter, framer};

/// Checks every parser on `input` and, where one accepts it, the invariants
/// above. Panics on a violation; never on input alone.
pub(crate) fn check(input: &[u8]) {
    let _ = ip2p_wire::classify(input);
    if let Ok(cd) = ChannelData::parse(input) {
        assert!(cd.data().len() + 4 <= input.len());
    }
    if let Ok(framer::Framed::Complete { bytes, .. }) = framer::frame(input) {
        assert!(bytes.len() <= input.len());
    }
    let Ok(msg) = Message::parse(input) else {
        return;
    };
    let _ = msg.verify_integrity(b"key");
    let _ = msg.verify_fingerprint();
    let _ = msg.unknown_comprehension_required().count();

    // Raw re-encoding reproduces the message, padding zeroed.
    let mut out = vec![0u8; input.len()];
    let mut w = MessageWriter::new(&mut out, msg.message_type(), *msg.transaction_id()).unwrap();
    for raw in msg.all_attributes() {
        w.add_raw(raw.typ, raw.value).unwrap();
    }
    assert_eq!(w.finish(), input.len());
    assert_eq!(out[..20], input[..20]);
    let again = Message::parse(&out).unwrap();
    assert!(again.all_attributes().eq(msg.all_attributes()));
    assert_eq!(again.integrity_kind(), msg.integrity_kind());
    assert_eq!(again.attributes().count(), msg.attributes().count());

    // Typed re-encoding preserves every value that decodes.
    let tid = msg.transaction_id();
    for raw in msg.all_attributes() {
        let Ok(attr) = Attribute::decode(raw, tid) else {
            continue;
        };
        let mut buf = vec![0u8; 20 + 4 + attr.value_len() + 3];
        let mut w = MessageWriter::new(&mut buf, msg.message_type(), *tid).unwrap();
        w.add_attribute(&attr).unwrap();
        let len = w.finish();
        let reparsed = Message::parse(&buf[..len]).unwrap();
        let raw2 = reparsed.all_attributes().next().unwrap();
        assert_eq!(Attribute::decode(raw2, tid), Ok(attr), "{:?}", raw.typ);
    }
}
