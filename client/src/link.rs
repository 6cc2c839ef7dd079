//! What a client reaches its server over: a UDP socket, or a TCP or TLS
//! stream.

use std::io::{self, Read};
use std::net::{TcpStream, UdpSocket};

use ip2p_wire::Transport;

/// How the client reaches the server.
#[derive(Debug)]
pub(crate) enum Link {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Link {
    pub(crate) fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Self::Udp(_) => None,
            Self::Tcp(s) => Some(s),
            Self::Tls(s) => Some(s.get_ref()),
        }
    }

    pub(crate) fn transport(&self) -> Transport {
        if let Self::Udp(_) = self { Transport::Datagram } else { Transport::Stream }
    }
}

/// Reads what the stream has into `pending`; `Ok(None)` always (the caller
/// looks for a frame), an error at the end of the stream.
pub(crate) fn read_into(stream: &mut impl Read, pending: &mut Vec<u8>) -> io::Result<Option<usize>> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk)?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
    }
    pending.extend_from_slice(chunk.get(..n).unwrap_or_default());
    Ok(None)
}
