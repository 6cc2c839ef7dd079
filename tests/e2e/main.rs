//! The end-to-end suite: the relay binary and node over real sockets,
//! driven by raw packets, ip2p-client and clients we did not write
//! (coturn's tools, aioice). One binary, one harness (`ip2p_tests`, in
//! `tests/src`); unit tests and the core's virtual-clock tests stay next
//! to their code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

/// Each of a module's tests once per datapath, in its submodules `epoll`
/// and `io_uring`: `name: function(args);` is a test `name` calling
/// `function(datapath, args)`. With `names:` first, the datapath is passed
/// as the binary's `--datapath` value instead of a `DatapathKind`.
macro_rules! on_both_datapaths {
    (@ $epoll:expr, $io_uring:expr; $($test:ident: $function:ident($($arg:expr),*);)*) => {
        mod epoll {
            $(#[test]
            fn $test() {
                super::$function($epoll $(, $arg)*);
            })*
        }
        mod io_uring {
            $(#[test]
            fn $test() {
                super::$function($io_uring $(, $arg)*);
            })*
        }
    };
    (names: $($tests:tt)*) => {
        on_both_datapaths!(@ "epoll", "io_uring"; $($tests)*);
    };
    ($($tests:tt)*) => {
        on_both_datapaths!(
            @ ip2p_relay::config::DatapathKind::Epoll, ip2p_relay::config::DatapathKind::IoUring; $($tests)*
        );
    };
}

mod admin;
mod aioice;
mod beside_https;
mod cli;
mod coturn;
mod deploy;
mod drain;
mod fleet;
mod fleet_auth;
mod fleet_faults;
mod fleet_quotas;
mod fleet_sessions;
mod fleet_usage;
mod grants;
mod handover;
mod handover_trust;
mod host_addresses;
mod ipv6;
mod limits;
mod operator;
mod proxy_protocol;
mod reload;
mod security;
mod selftest;
mod sessions;
mod steering;
mod stream;
mod systemd;
mod tcp_allocations;
mod udp;
mod usage;
mod xdp;
mod xdp_safety;
