//! What a datapath provides to be the core's [`ip2p_turn::Sockets`]: its UDP
//! relay sockets and the node's TCP relays. The rest of the trait is the
//! same for both datapaths and written here once.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use ip2p_turn::{Held, ListenerId, RelayToken};

use super::socket;
use super::tcp_relay::TcpRelays;

/// What a datapath provides to be the core's [`Sockets`]: its UDP relay
/// sockets, and its TCP relays. The rest is the same for both datapaths.
pub(crate) trait RelaySockets {
    /// Watches `socket` as relay `token`'s.
    ///
    /// # Errors
    /// The socket cannot be watched.
    fn install(&mut self, token: RelayToken, socket: UdpSocket) -> io::Result<()>;
    /// Closes relay `token`'s UDP socket; `false` if it has none (the token
    /// is a TCP relay's).
    fn uninstall(&mut self, token: RelayToken) -> bool;
    /// Sends `bytes` to `to` from relay `token`'s UDP socket at once,
    /// outside the datapath's batches (a stream client's frame).
    ///
    /// # Errors
    /// The send's, or `NotFound` when the relay has no UDP socket.
    fn send_now(&self, token: RelayToken, bytes: &[u8], to: SocketAddr) -> io::Result<usize>;
    /// The node's TCP relays (RFC 6062), and this worker's index in them.
    fn tcp(&self) -> (&Arc<TcpRelays>, usize);
    /// ConnectionBinds that succeeded, for the loop to hand their client
    /// connections over to the TCP relays.
    fn data_connections(&mut self) -> &mut Vec<DataConnection>;
}

/// The core's [`ip2p_turn::Sockets`] for a datapath's [`RelaySockets`]: written once,
/// implemented for each datapath's type (the trait is the core crate's,
/// so no blanket implementation is allowed here).
macro_rules! impl_sockets {
    ($t:ty) => {
        impl ip2p_turn::Sockets for $t {
            fn open_relay(
                &mut self,
                token: ip2p_turn::RelayToken,
                addr: std::net::SocketAddr,
                dont_fragment: bool,
            ) -> std::io::Result<()> {
                $crate::datapath::relay_sockets::open_relay(self, token, addr, dont_fragment)
            }
            fn hold(&mut self, addr: std::net::SocketAddr) -> std::io::Result<ip2p_turn::Held> {
                $crate::datapath::socket::hold(addr)
            }
            fn adopt_relay(
                &mut self,
                token: ip2p_turn::RelayToken,
                held: ip2p_turn::Held,
                dont_fragment: bool,
            ) -> std::io::Result<()> {
                $crate::datapath::relay_sockets::adopt_relay(self, token, held, dont_fragment)
            }
            fn close_relay(&mut self, token: ip2p_turn::RelayToken) {
                $crate::datapath::relay_sockets::close_relay(self, token);
            }
            fn open_tcp_relay(
                &mut self,
                token: ip2p_turn::RelayToken,
                addr: std::net::SocketAddr,
                username: &str,
                client: std::net::IpAddr,
            ) -> std::io::Result<()> {
                let (tcp, worker) = $crate::datapath::relay_sockets::RelaySockets::tcp(self);
                tcp.listen((worker, token), addr, username, client)
            }
            fn tcp_connect(
                &mut self,
                token: ip2p_turn::RelayToken,
                from: std::net::SocketAddr,
                peer: std::net::SocketAddr,
            ) {
                let (tcp, worker) = $crate::datapath::relay_sockets::RelaySockets::tcp(self);
                tcp.connect((worker, token), from, peer);
            }
            fn tcp_busy(&mut self, token: ip2p_turn::RelayToken, peer: std::net::SocketAddr) -> bool {
                let (tcp, worker) = $crate::datapath::relay_sockets::RelaySockets::tcp(self);
                tcp.busy((worker, token), peer)
            }
            fn tcp_accept(&mut self, id: u32, accept: bool) {
                $crate::datapath::relay_sockets::RelaySockets::tcp(self).0.accept(id, accept);
            }
            fn tcp_bind(
                &mut self,
                id: u32,
                username: &str,
                listener: ip2p_turn::ListenerId,
                client: std::net::SocketAddr,
            ) -> bool {
                $crate::datapath::relay_sockets::tcp_bind(self, id, username, listener, client)
            }
        }
    };
}
pub(crate) use impl_sockets;

/// [`ip2p_turn::Sockets::open_relay`] for every datapath.
pub(crate) fn open_relay(
    s: &mut impl RelaySockets,
    token: RelayToken,
    addr: SocketAddr,
    dont_fragment: bool,
) -> io::Result<()> {
    s.install(token, socket::bind_udp(addr, false, dont_fragment)?)
}

/// [`ip2p_turn::Sockets::adopt_relay`] for every datapath.
pub(crate) fn adopt_relay(
    s: &mut impl RelaySockets,
    token: RelayToken,
    held: Held,
    dont_fragment: bool,
) -> io::Result<()> {
    s.install(token, socket::adopt(held, dont_fragment)?)
}

/// [`ip2p_turn::Sockets::close_relay`] for every datapath: its UDP socket, else its
/// TCP relay.
pub(crate) fn close_relay(s: &mut impl RelaySockets, token: RelayToken) {
    if !s.uninstall(token) {
        let (tcp, worker) = s.tcp();
        tcp.close((worker, token));
    }
}

/// [`ip2p_turn::Sockets::tcp_bind`] for every datapath.
pub(crate) fn tcp_bind(
    s: &mut impl RelaySockets,
    id: u32,
    username: &str,
    listener: ListenerId,
    client: SocketAddr,
) -> bool {
    let bound = s.tcp().0.bind(id, username);
    if bound {
        s.data_connections().push(DataConnection { listener, client, id });
    }
    bound
}

/// A client connection a ConnectionBind turned into a data connection
/// (RFC 6062 §5.4): the datapath hands it to the TCP relays.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DataConnection {
    pub(crate) listener: ListenerId,
    pub(crate) client: std::net::SocketAddr,
    pub(crate) id: u32,
}
