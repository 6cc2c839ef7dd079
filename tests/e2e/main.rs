//! The end-to-end suite: the relay binary over real sockets. One binary,
//! one harness (`ip2p_tests`, in `tests/src`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod security;
