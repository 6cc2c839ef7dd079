//! TCP and TLS connections on io_uring: a multishot accept per listener,
//! a multishot receive per connection into the provided buffers, at most
//! one send in flight per connection.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd};

use io_uring::types::Fd;
use io_uring::{cqueue, opcode};

use super::bufring::BGID;
use super::ops::{Op, user_data};
use super::sockets::ConnIo;
use super::{Loop, now};
use crate::datapath::moving::MovedConn;
use ip2p_turn::ListenerId;

impl Loop {
    pub(super) fn arm_accept(&mut self, index: usize) -> bool {
        let Some((listener, _)) = self.streams.get(index) else { return false };
        let fd = listener.as_raw_fd();
        let data = user_data(Op::Accept, 0, u32::try_from(index).unwrap_or(u32::MAX));
        self.sockets.push(&opcode::AcceptMulti::new(Fd(fd)).build().user_data(data))
    }

    /// A connection came in on stream listener `index` (`result` is its fd).
    pub(super) fn accepted(&mut self, index: usize, result: i32) {
        if result == -libc::ECANCELED {
            // Cancelled for a handover: re-armed if the worker resumes.
            return;
        }
        if result < 0 {
            // The accept is re-armed after a back-off (see `ended`).
            let e = io::Error::from_raw_os_error(-result);
            let Some((listener, _)) = self.streams.get(index) else { return };
            return self.clients.accept_failed(&e, || listener.accept());
        }
        // SAFETY: a successful accept's result is a new fd that nothing
        // else owns.
        let socket = unsafe { TcpStream::from_raw_fd(result) };
        let (Ok(listener), Some((_, tls)), Ok(peer)) =
            (u16::try_from(index).map(ListenerId::stream), self.streams.get(index), socket.peer_addr())
        else {
            return;
        };
        let _ = socket.set_nodelay(true);
        self.next_conn_generation = self.next_conn_generation.wrapping_add(1) & 0x00FF_FFFF;
        let generation = self.next_conn_generation;
        let io = ConnIo { socket, generation, receiving: false, sending: false, data_connection: None };
        let Some(slot) = self.clients.admit(&self.worker, listener, tls.as_ref(), peer, io) else { return };
        if !self.arm_conn(slot) {
            self.close(slot, "cannot queue its receive");
        }
    }

    pub(super) fn arm_conn(&mut self, slot: usize) -> bool {
        let Some(conn) = self.clients.conns.get_mut(slot) else { return false };
        let data = user_data(Op::RecvConn, conn.io.generation, u32::try_from(slot).unwrap_or(u32::MAX));
        let entry = opcode::RecvMulti::new(Fd(conn.io.socket.as_raw_fd()), BGID).build().user_data(data);
        conn.io.receiving = self.sockets.push(&entry);
        conn.io.receiving
    }

    /// A connection's receive completed: hand its frames to the core, then
    /// give the buffer back (nothing sent holds it).
    pub(super) fn conn_received(&mut self, slot: usize, generation: u32, buffer: Option<u16>, result: i32, flags: u32) {
        let live = self.clients.conns.get_mut(slot).filter(|c| c.io.generation == generation);
        let Some(conn) = live else {
            if let Some(bid) = buffer {
                self.bufs.provide(bid);
            }
            return;
        };
        if !cqueue::more(flags) {
            conn.io.receiving = false;
        }
        if result == -libc::ECANCELED && !conn.closing {
            // Cancelled for a handover: armed again if the worker resumes.
            if let Some(bid) = buffer {
                self.bufs.provide(bid);
            }
            return;
        }
        if conn.closing {
            if let Some(bid) = buffer {
                self.bufs.provide(bid);
            }
            return self.finish_close(slot);
        }
        let mut closed = None;
        match (buffer, result) {
            (Some(bid), 1..) => {
                let bytes = self.bufs.buffer(bid).get_mut(..usize::try_from(result).unwrap_or(0)).unwrap_or_default();
                if self.clients.received(slot, bytes, &mut self.worker, &mut self.sockets).is_err() {
                    closed = Some("protocol error");
                }
                self.bufs.provide(bid);
            }
            (_, 0) => closed = Some("closed by the client"),
            (_, e) if e == -libc::ENOBUFS => self.out_of_buffers += 1,
            (_, _) => closed = Some("reset"),
        }
        if let Some(b) = buffer
            && result <= 0
        {
            self.bufs.provide(b);
        }
        self.clients.dirty.push(slot);
        if let Some(why) = closed {
            self.write_conns();
            return self.close(slot, why);
        }
        if !self.sockets.data_connections.is_empty() {
            return self.splice_data_connections();
        }
        let receiving = self.clients.conns.get_mut(slot).is_some_and(|c| c.io.receiving);
        if !receiving {
            self.rearm.push(user_data(Op::RecvConn, generation, u32::try_from(slot).unwrap_or(u32::MAX)));
        }
    }

    pub(super) fn conn_sent(&mut self, slot: usize, generation: u32, result: i32) {
        let Some(conn) = self.clients.conns.get_mut(slot).filter(|c| c.io.generation == generation) else { return };
        conn.io.sending = false;
        if result == -libc::ECANCELED && !conn.closing {
            // Cancelled for a handover: its bytes are still unsent.
            return;
        }
        let written = usize::try_from(result).ok().filter(|&n| n > 0);
        if let Some(n) = written {
            // Even while closing: a handed-over connection's unsent bytes
            // must not repeat what went.
            conn.stream.wrote(n);
        }
        if conn.closing {
            return self.finish_close(slot);
        }
        match written {
            Some(_) => self.clients.dirty.push(slot),
            None => self.close(slot, "write failed"),
        }
    }

    /// Takes over the connections a previous process handed over: their
    /// receives are armed, and what they had unsent goes out.
    pub(super) fn adopt_conns(&mut self, conns: Vec<MovedConn>) {
        for m in conns {
            self.next_conn_generation = self.next_conn_generation.wrapping_add(1) & 0x00FF_FFFF;
            let socket = TcpStream::from(m.fd);
            let io = ConnIo {
                socket,
                generation: self.next_conn_generation,
                receiving: false,
                sending: false,
                data_connection: None,
            };
            let Some(slot) = self.clients.adopt(&self.worker, m.state, io) else { continue };
            if !self.arm_conn(slot) {
                self.close(slot, "cannot queue its receive");
            }
        }
        self.write_conns();
    }

    /// Starts a send on each connection with bytes queued and none in flight.
    pub(super) fn write_conns(&mut self) {
        while let Some(slot) = self.clients.dirty.pop() {
            let Some(conn) = self.clients.conns.get_mut(slot) else { continue };
            if conn.io.sending || conn.closing {
                continue;
            }
            let fd = conn.io.socket.as_raw_fd();
            let data = user_data(Op::SendConn, conn.io.generation, u32::try_from(slot).unwrap_or(u32::MAX));
            let Some(bytes) = conn.stream.next_write() else { continue };
            let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            // The bytes stay put until the completion: see `Stream::next_write`.
            let entry =
                opcode::Send::new(Fd(fd), bytes.as_ptr(), len).flags(libc::MSG_NOSIGNAL).build().user_data(data);
            if self.sockets.push(&entry) {
                conn.io.sending = true;
            }
        }
    }

    /// Starts handing the connections a ConnectionBind claimed to the TCP
    /// relays: their receive is cancelled (not the socket shut down), and
    /// once nothing of theirs is in flight [`Self::finish_close`] passes
    /// them on with their TLS state and unsent bytes (the response).
    pub(super) fn splice_data_connections(&mut self) {
        for h in std::mem::take(&mut self.sockets.data_connections) {
            let Some((slot, conn)) = self.clients.conns.find(h.listener, h.client) else { continue };
            conn.io.data_connection = Some(h.id);
            let recv = user_data(Op::RecvConn, conn.io.generation, u32::try_from(slot).unwrap_or(u32::MAX));
            let receiving = conn.io.receiving;
            self.clients.conns.detach(slot);
            if receiving {
                let _ =
                    self.sockets.push(&opcode::AsyncCancel::new(recv).build().user_data(user_data(Op::Cancel, 0, 0)));
            }
            self.finish_close(slot);
        }
    }

    /// Closes a connection: its allocation goes, its socket is shut down,
    /// and its slot is freed once no operation of it is in flight.
    pub(super) fn close(&mut self, slot: usize, why: &str) {
        let Some(conn) = self.clients.conns.get_mut(slot) else { return };
        if conn.closing {
            return;
        }
        let (listener, peer) = (conn.listener, conn.peer);
        let _ = conn.io.socket.shutdown(std::net::Shutdown::Both);
        // Its place in the limits goes now, not when its last operation ends.
        conn.ticket = None;
        self.clients.conns.detach(slot);
        self.worker.server.client_closed(now(), listener, peer, &mut self.sockets);
        tracing::debug!(client = %peer, why, "connection closed");
        self.finish_close(slot);
    }

    pub(super) fn finish_close(&mut self, slot: usize) {
        if !self.clients.conns.get_mut(slot).is_some_and(|c| c.closing && !c.io.receiving && !c.io.sending) {
            return;
        }
        let Some(conn) = self.clients.conns.remove(slot) else { return };
        if let Some(id) = conn.io.data_connection {
            let (tls, unsent) = conn.stream.into_parts();
            let _ = conn.io.socket.set_nonblocking(false);
            self.sockets.tcp.splice(id, conn.io.socket, tls, unsent, conn.ticket);
        }
    }
}
