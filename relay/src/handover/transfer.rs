//! Moving bytes and file descriptors between two processes over a Unix
//! socket of type SOCK_SEQPACKET (message boundaries kept, descriptors
//! carried with SCM_RIGHTS). A transfer is a header (magic, byte count,
//! descriptor count) and then messages of at most [`CHUNK`] bytes and
//! [`MAX_FDS`] descriptors each, in order, until both counts are reached.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Bytes per message: well under a Unix socket's default send buffer.
const CHUNK: usize = 32 * 1024;
/// Descriptors per message (the kernel's limit, SCM_MAX_FD, is 253).
pub(crate) const MAX_FDS: usize = 250;
const MAGIC: &[u8; 8] = b"ip2p-ho1";
const HEADER: usize = 8 + 8 + 8;

/// Sends `bytes` and `fds` as one transfer.
///
/// # Errors
/// The socket's (the peer went away, the send timed out).
pub(crate) fn send(socket: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut header = [0u8; HEADER];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&(bytes.len() as u64).to_be_bytes());
    header[16..].copy_from_slice(&(fds.len() as u64).to_be_bytes());
    send_one(socket, &header, &[])?;
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let (mut bytes, mut raw) = (bytes, &raw[..]);
    while !bytes.is_empty() || !raw.is_empty() {
        let (b, rest) = bytes.split_at(bytes.len().min(CHUNK));
        let (f, others) = raw.split_at(raw.len().min(MAX_FDS));
        send_one(socket, b, f)?;
        (bytes, raw) = (rest, others);
    }
    Ok(())
}

fn send_one(socket: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    // A message carries at least a byte: an empty one cannot be told from
    // the peer's end of the connection.
    let filler = [0u8];
    let payload = if bytes.is_empty() { &filler[..] } else { bytes };
    let cmsgs: Vec<ControlMessage<'_>> = if fds.is_empty() { Vec::new() } else { vec![ControlMessage::ScmRights(fds)] };
    let sent = sendmsg::<()>(socket.as_raw_fd(), &[IoSlice::new(payload)], &cmsgs, MsgFlags::MSG_NOSIGNAL, None)?;
    if sent != payload.len() {
        return Err(io::Error::other("a handover message went out in part"));
    }
    Ok(())
}

/// Receives one transfer of at most `max_bytes` bytes and `max_fds`
/// descriptors (more is refused: a peer cannot make this process hold
/// what it likes). Descriptors are close-on-exec, and closed again on any
/// error.
///
/// # Errors
/// The socket's, a malformed transfer, limits exceeded, or the peer's end
/// before the transfer was whole.
pub(crate) fn recv(socket: BorrowedFd<'_>, max_bytes: usize, max_fds: usize) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; CHUNK.max(HEADER)];
    let mut fds = Vec::new();
    let n = recv_one(socket, &mut buf, &mut fds)?;
    let header = buf.get(..n).filter(|h| h.len() == HEADER && h.starts_with(MAGIC));
    let Some(header) = header.filter(|_| fds.is_empty()) else {
        return Err(invalid("not a handover transfer"));
    };
    let count = |at: usize| {
        let b: [u8; 8] = header.get(at..at + 8).and_then(|b| b.try_into().ok()).unwrap_or_default();
        usize::try_from(u64::from_be_bytes(b)).unwrap_or(usize::MAX)
    };
    let (want_bytes, want_fds) = (count(8), count(16));
    if want_bytes > max_bytes || want_fds > max_fds {
        return Err(invalid(&format!(
            "a transfer of {want_bytes} bytes and {want_fds} descriptors is over the limits ({max_bytes}, {max_fds})"
        )));
    }
    let mut bytes = Vec::with_capacity(want_bytes);
    while bytes.len() < want_bytes || fds.len() < want_fds {
        let n = recv_one(socket, &mut buf, &mut fds)?;
        let expected = (want_bytes - bytes.len().min(want_bytes)).clamp(1, CHUNK);
        if n != expected || fds.len() > want_fds {
            return Err(invalid("a handover message of the wrong size"));
        }
        if bytes.len() < want_bytes {
            bytes.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
    }
    Ok((bytes, fds))
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

/// One message into `buf`, its descriptors appended to `fds`; the
/// message's length.
fn recv_one(socket: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let (len, flags) = (msg.bytes, msg.flags);
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: each descriptor was just installed in this process by
            // the kernel for this message, and nothing else owns it.
            fds.extend(received.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    if len == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the other process went away mid-transfer"));
    }
    if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
        return Err(invalid("a handover message was cut short"));
    }
    Ok(len)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::os::fd::AsFd;

    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};

    use super::*;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap()
    }

    /// Hundreds of sockets and a snapshot larger than one message arrive
    /// whole and in order, each descriptor a live socket.
    #[test]
    fn many_descriptors_and_bytes_arrive_whole() {
        let (a, b) = pair();
        let sockets: Vec<std::net::UdpSocket> =
            (0..600).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sender = {
            let bytes = bytes.clone();
            let fds: Vec<OwnedFd> = sockets.iter().map(|s| s.as_fd().try_clone_to_owned().unwrap()).collect();
            std::thread::spawn(move || {
                let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
                send(a.as_fd(), &bytes, &borrowed).unwrap();
            })
        };
        let (got, fds) = recv(b.as_fd(), 1 << 20, 1000).unwrap();
        sender.join().unwrap();
        assert_eq!(got, bytes);
        assert_eq!(fds.len(), 600);
        for (fd, socket) in fds.into_iter().zip(&sockets) {
            let received = std::net::UdpSocket::from(fd);
            assert_eq!(received.local_addr().unwrap(), socket.local_addr().unwrap(), "in order");
        }
    }

    #[test]
    fn nothing_to_carry_is_a_transfer_too() {
        let (a, b) = pair();
        send(a.as_fd(), &[], &[]).unwrap();
        let (bytes, fds) = recv(b.as_fd(), 10, 10).unwrap();
        assert!(bytes.is_empty() && fds.is_empty());
    }

    /// A peer that promises more than the limits, sends something else, or
    /// goes away halfway gets an error, never a hang or a half transfer.
    #[test]
    fn bad_transfers_are_refused() {
        let (a, b) = pair();
        send(a.as_fd(), &[7; 100], &[]).unwrap();
        let e = recv(b.as_fd(), 99, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");

        let (a, b) = pair();
        send_one(a.as_fd(), b"hello, who is this?", &[]).unwrap();
        assert_eq!(recv(b.as_fd(), 100, 10).unwrap_err().kind(), io::ErrorKind::InvalidData);

        let (a, b) = pair();
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&100_000u64.to_be_bytes());
        send_one(a.as_fd(), &header, &[]).unwrap();
        send_one(a.as_fd(), &[1; CHUNK], &[]).unwrap();
        drop(a);
        assert_eq!(recv(b.as_fd(), 1 << 20, 10).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
