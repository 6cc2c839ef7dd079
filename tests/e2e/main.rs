//! The end-to-end suite: the relay binary and node over real sockets,
//! driven by raw packets, ip2p-client and clients we did not write
//! (coturn's tools, aioice). One binary, one harness (`ip2p_tests`, in
//! `tests/src`); unit tests and the core's virtual-clock tests stay next
//! to their code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod admin;
mod aioice;
mod cli;
mod coturn;
mod deploy;
mod drain;
mod ipv6;
mod limits;
mod reload;
mod security;
mod stream;
mod systemd;
mod tcp_allocations;
mod udp;
