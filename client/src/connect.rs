//! How a client reaches its server: over a UDP socket, or a TCP or TLS
//! stream cut into frames.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::link::{Link, read_into};
use crate::{ALPN, Client};
use ip2p_wire::Transport;
use ip2p_wire::framer::{Framed, frame};

impl Client {
    /// A client on a fresh loopback (or unspecified) socket.
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub fn new(server: SocketAddr, username: &str, password: &str) -> io::Result<Self> {
        let local: SocketAddr =
            if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(io::Error::other)?;
        let local = if server.ip().is_loopback() { SocketAddr::new(server.ip(), 0) } else { local };
        Ok(Self::with_link(Link::Udp(UdpSocket::bind(local)?), server, username, password))
    }

    /// A client over TCP.
    ///
    /// # Errors
    /// The connection fails.
    pub fn tcp(server: SocketAddr, username: &str, password: &str) -> io::Result<Self> {
        Self::over_tcp(TcpStream::connect_timeout(&server, Duration::from_secs(5))?, username, password)
    }

    /// A client over a TCP connection the caller made (from an address
    /// of its choosing).
    ///
    /// # Errors
    /// The connection has no peer.
    pub fn over_tcp(stream: TcpStream, username: &str, password: &str) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        let server = stream.peer_addr()?;
        Ok(Self::with_link(Link::Tcp(stream), server, username, password))
    }

    /// A client over TLS, trusting `roots` for a certificate of `name`;
    /// it offers ALPN `stun.turn`. The handshake runs here.
    ///
    /// # Errors
    /// The connection or the handshake fails.
    pub fn tls(
        server: SocketAddr,
        name: &str,
        roots: rustls::RootCertStore,
        username: &str,
        password: &str,
    ) -> io::Result<Self> {
        Self::tls_with_config(server, name, Self::tls_config(roots)?, username, password)
    }

    /// A client over TLS with a TLS configuration of the caller's.
    ///
    /// # Errors
    /// The connection or the handshake fails.
    pub fn tls_with_config(
        server: SocketAddr,
        name: &str,
        config: Arc<rustls::ClientConfig>,
        username: &str,
        password: &str,
    ) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
        Self::tls_over(stream, name, config, username, password)
    }

    /// A client over TLS on a TCP connection the caller made.
    ///
    /// # Errors
    /// The handshake fails.
    pub fn tls_over(
        stream: TcpStream,
        name: &str,
        config: Arc<rustls::ClientConfig>,
        username: &str,
        password: &str,
    ) -> io::Result<Self> {
        let server = stream.peer_addr()?;
        let name = rustls::pki_types::ServerName::try_from(name.to_owned()).map_err(io::Error::other)?;
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut tls = rustls::StreamOwned::new(conn, stream);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(Self::with_link(Link::Tls(Box::new(tls)), server, username, password))
    }

    /// The TLS configuration [`Self::tls`] uses: trusting `roots`,
    /// offering ALPN `stun.turn`.
    ///
    /// # Errors
    /// The TLS provider offers no safe protocol version.
    pub fn tls_config(roots: rustls::RootCertStore) -> io::Result<Arc<rustls::ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(config))
    }

    fn with_link(link: Link, server: SocketAddr, username: &str, password: &str) -> Self {
        Self {
            link,
            pending: Vec::new(),
            server,
            username: username.into(),
            password: password.into(),
            realm: String::new(),
            nonce: String::new(),
            key: None,
            relayed: None,
            mapped: None,
            lifetime: None,
            alternate: None,
            next_tid: rand::random(),
            buf: vec![0; 65_536],
        }
    }

    /// The client's UDP socket (to send and receive data on it directly);
    /// `None` over TCP and TLS.
    #[must_use]
    pub fn socket(&self) -> Option<&UdpSocket> {
        match &self.link {
            Link::Udp(s) => Some(s),
            _ => None,
        }
    }

    /// The TCP connection's TLS version and ALPN protocol, over TLS.
    #[must_use]
    pub fn tls_info(&self) -> Option<(Option<rustls::ProtocolVersion>, Option<Vec<u8>>)> {
        match &self.link {
            Link::Tls(s) => Some((s.conn.protocol_version(), s.conn.alpn_protocol().map(<[u8]>::to_vec))),
            _ => None,
        }
    }

    /// The client's own address.
    ///
    /// # Errors
    /// From the socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.link {
            Link::Udp(s) => s.local_addr(),
            link => link.tcp().map_or_else(|| Err(io::ErrorKind::NotConnected.into()), TcpStream::local_addr),
        }
    }

    /// The server's address.
    #[must_use]
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Sends bytes to the server: a datagram, or onto the stream.
    pub(crate) fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.link {
            Link::Udp(s) => s.send_to(bytes, self.server).map(|_| ()),
            Link::Tcp(s) => s.write_all(bytes),
            Link::Tls(s) => s.write_all(bytes).and_then(|()| s.flush()),
        }
    }

    /// Waits up to `timeout` for the next datagram or frame from the
    /// server; its bytes are in `self.buf[..len]`. `Ok(None)` on timeout.
    pub(crate) fn recv_bytes(&mut self, timeout: Duration) -> io::Result<Option<usize>> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.link.transport() == Transport::Stream
                && let Some(len) = self.take_frame()?
            {
                return Ok(Some(len));
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                return Ok(None);
            };
            let got = match &mut self.link {
                Link::Udp(s) => {
                    s.set_read_timeout(Some(left))?;
                    s.recv_from(&mut self.buf).map(|(len, from)| (from == self.server).then_some(len))
                }
                Link::Tcp(s) => {
                    s.set_read_timeout(Some(left))?;
                    read_into(s, &mut self.pending)
                }
                Link::Tls(s) => {
                    s.sock.set_read_timeout(Some(left))?;
                    read_into(s, &mut self.pending)
                }
            };
            match got {
                Ok(Some(len)) if matches!(self.link, Link::Udp(_)) => return Ok(Some(len)),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves a whole frame from the stream's pending bytes into `buf`.
    pub(crate) fn take_frame(&mut self) -> io::Result<Option<usize>> {
        match frame(&self.pending) {
            Ok(Framed::Complete { bytes, .. }) => {
                let len = bytes.len();
                if let Some(dst) = self.buf.get_mut(..len) {
                    dst.copy_from_slice(bytes);
                }
                self.pending.drain(..len);
                Ok(Some(len))
            }
            Ok(Framed::Incomplete { .. }) => Ok(None),
            Err(_) => Err(io::Error::new(io::ErrorKind::InvalidData, "the server sent neither STUN nor ChannelData")),
        }
    }
}
