//! ip2p-bench: an open-loop TURN load generator and latency harness.
//!
//! - [`stamp`]: the sequence number and intended send time in each payload.
//! - [`schedule`]: the fixed-rate, open-loop schedule.
//! - [`stats`]: loss, duplicates, reordering and latency percentiles.
//! - [`run`]: sessions, the sending and receiving threads, one run.
//! - [`allocs`]: allocation setup rate and concurrent allocations.
//! - [`engine`]: the I/O of bench threads: io_uring or epoll.
//! - [`forward`]: a bare UDP forwarder, the baseline for a relay.
//! - [`plot`]: latency percentile plots of several runs, as SVG.
//! - [`search`]: the capacity search, robust to a noisy machine.

// Schedules and rates are float arithmetic on nanoseconds and counts, all
// far below 2^53: the casts back to integers are exact where it matters.
#![allow(clippy::cast_possible_truncation, clippy::cast_precision_loss, clippy::cast_sign_loss)]

pub mod allocs;
pub mod engine;
pub mod forward;
pub mod plot;
pub mod run;
pub mod schedule;
pub mod search;
pub mod stamp;
pub mod stats;
