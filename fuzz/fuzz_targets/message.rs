//! Message::parse and every accessor on whatever it accepts.
#![no_main]

use ip2p_wire::{Attribute, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    let _ = (msg.message_type(), msg.transaction_id(), msg.integrity_kind());
    for attr in msg.all_attributes() {
        let _ = Attribute::decode(attr, msg.transaction_id());
    }
    for attr in msg.decoded().flatten() {
        if let Attribute::PasswordAlgorithms(algs) = attr {
            let _ = algs.iter().count();
        }
        if let Attribute::UnknownAttributes(types) = attr {
            let _ = types.iter().count();
        }
    }
    let _ = msg.unknown_comprehension_required().count();
    let _ = msg.verify_integrity(b"fuzz key");
    let _ = msg.verify_fingerprint();
});
