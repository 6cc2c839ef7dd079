//! ChannelData parsing, and framing the parsed data back in place.
#![no_main]

use ip2p_wire::{ChannelData, Transport, frame_channel_data};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(cd) = ChannelData::parse(data) else {
        return;
    };
    let (channel, len) = (cd.channel(), cd.data().len());
    assert!(4 + len <= data.len());
    let mut buf = data.to_vec();
    buf.resize(4 + len + 3, 0);
    for transport in [Transport::Datagram, Transport::Stream] {
        let range = frame_channel_data(&mut buf, 4..4 + len, channel, transport).unwrap();
        let again = ChannelData::parse(&buf[range]).unwrap();
        assert_eq!((again.channel(), again.data()), (channel, &data[4..4 + len]));
    }
});
