//! The stream framer over a stream delivered in arbitrary pieces: the
//! frames it cuts must not depend on how the bytes arrived.
#![no_main]

use ip2p_wire::framer::{Framed, frame};
use libfuzzer_sys::fuzz_target;

/// Cuts `stream` into frames, feeding it `chunk` bytes at a time.
fn cut(stream: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    for piece in stream.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match frame(&buf) {
                Ok(Framed::Complete { bytes, .. }) => {
                    let n = bytes.len();
                    frames.push(bytes.to_vec());
                    buf.drain(..n);
                }
                Ok(Framed::Incomplete { needed }) => {
                    assert!(needed > 0);
                    break;
                }
                Err(_) => return frames,
            }
        }
    }
    frames
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    assert_eq!(cut(stream, stream.len()), cut(stream, usize::from(chunk)));
});
