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
use crate::datapath::Spare;
use crate::datapath::stream::{self, Conn};
use crate::datapath::tcp_relay::TcpEvent;
use crate::proto::{ListenerId, Verdict, Via};

impl Loop {
    pub(super) fn arm_accept(&mut self, index: usize) -> bool {
        let Some((listener, _)) = self.streams.get(index) else { return false };
        let fd = listener.as_raw_fd();
        let data = user_data(Op::Accept, 0, u32::try_from(index).unwrap_or(u32::MAX));
        self.io.push(&opcode::AcceptMulti::new(Fd(fd)).build().user_data(data))
    }

    /// A connection came in on stream listener `index` (`result` is its fd).
    pub(super) fn accepted(&mut self, index: usize, result: i32) {
        if result < 0 {
            // Out of descriptors: the connections waiting in the backlog
            // are refused with the reserve; the accept is re-armed after a
            // back-off (see `ended`).
            let e = io::Error::from_raw_os_error(-result);
            let refused = match self.streams.get(index) {
                Some((listener, _)) if Spare::exhausted(&e) => self.spare.shed(|| listener.accept()),
                _ => 0,
            };
            self.stream_counters.refused += refused;
            if let Some(unlogged) = self.logs.accept.admit(now()) {
                tracing::warn!(error = %e, refused, unlogged, "accept failed");
            }
            return;
        }
        // SAFETY: a successful accept's result is a new fd that nothing
        // else owns.
        let socket = unsafe { TcpStream::from_raw_fd(result) };
        let (Ok(listener), Some((_, tls)), Ok(peer)) =
            (u16::try_from(index).map(ListenerId::stream), self.streams.get(index), socket.peer_addr())
        else {
            return;
        };
        let Some((ticket, framing, wait)) = stream::admit(&self.worker.limits, tls.as_ref(), peer.ip()) else {
            self.stream_counters.refused += 1;
            return;
        };
        let _ = socket.set_nodelay(true);
        self.next_conn_generation = self.next_conn_generation.wrapping_add(1) & 0x00FF_FFFF;
        let generation = self.next_conn_generation;
        let io = ConnIo { socket, generation, receiving: false, sending: false, data_connection: None };
        let conn =
            Conn { listener, peer, stream: framing, io, ticket: Some(ticket), deadline: now() + wait, closing: false };
        let slot = self.conns.insert(conn);
        self.stream_counters.accepted += 1;
        if !self.arm_conn(slot) {
            self.close(slot, "cannot queue its receive");
        }
    }

    pub(super) fn arm_conn(&mut self, slot: usize) -> bool {
        let Some(conn) = self.conns.get_mut(slot) else { return false };
        let data = user_data(Op::RecvConn, conn.io.generation, u32::try_from(slot).unwrap_or(u32::MAX));
        let entry = opcode::RecvMulti::new(Fd(conn.io.socket.as_raw_fd()), BGID).build().user_data(data);
        conn.io.receiving = self.io.push(&entry);
        conn.io.receiving
    }

    /// A connection's receive completed: hand its frames to the core, then
    /// give the buffer back (nothing sent holds it).
    pub(super) fn conn_received(&mut self, slot: usize, generation: u32, buffer: Option<u16>, result: i32, flags: u32) {
        let live = self.conns.get_mut(slot).filter(|c| c.io.generation == generation);
        let Some(conn) = live else {
            if let Some(bid) = buffer {
                self.bufs.provide(bid);
            }
            return;
        };
        if !cqueue::more(flags) {
            conn.io.receiving = false;
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
                closed = self.conn_bytes(slot, bid, usize::try_from(result).unwrap_or(0));
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
        self.dirty.push(slot);
        if let Some(why) = closed {
            self.write_conns();
            return self.close(slot, why);
        }
        if !self.io.data_connections.is_empty() {
            return self.splice_data_connections();
        }
        let receiving = self.conns.get_mut(slot).is_some_and(|c| c.io.receiving);
        if !receiving {
            self.rearm.push(user_data(Op::RecvConn, generation, u32::try_from(slot).unwrap_or(u32::MAX)));
        }
    }

    /// Frames what connection `slot` sent in buffer `bid`; `Some` if it
    /// must close.
    pub(super) fn conn_bytes(&mut self, slot: usize, bid: u16, len: usize) -> Option<&'static str> {
        let Self { io, bufs, worker, conns, stream_reply, plain, .. } = self;
        let conn = conns.get_mut(slot)?;
        let (listener, peer) = (conn.listener, conn.peer);
        let bytes = bufs.buffer(bid).get(..len).unwrap_or_default();
        let now = now();
        let mut send_errors = 0;
        let result = conn.stream.receive(bytes, stream_reply, plain, &mut |frame, reply| match worker
            .handle_client(now, listener, peer, frame, reply, io)
        {
            Verdict::Forward(t) if worker.short_circuit_copy(&t, frame) => None,
            Verdict::Forward(t) => {
                let relay = match t.via {
                    Via::Relay(token) => io.relays.get(token.0 as usize).and_then(Option::as_ref),
                    Via::Listener(_) => None,
                };
                let sent = relay.zip(frame.get(t.range)).map(|(r, b)| r.socket.send_to(b, t.to));
                if !matches!(sent, Some(Ok(_))) {
                    send_errors += 1;
                }
                None
            }
            Verdict::Reply(t) => Some(t.range.end),
            Verdict::Drop(_) => None,
        });
        self.send_errors += send_errors;
        match result {
            Ok(dropped) => {
                self.stream_counters.dropped_backlog += dropped;
                if !conn.stream.trusted() && worker.server.has_allocation(listener, peer) {
                    conn.stream.trust();
                }
                None
            }
            Err(e) => {
                self.logs.protocol_error(&mut self.stream_counters, peer, &e);
                Some("protocol error")
            }
        }
    }

    pub(super) fn conn_sent(&mut self, slot: usize, generation: u32, result: i32) {
        let Some(conn) = self.conns.get_mut(slot).filter(|c| c.io.generation == generation) else { return };
        conn.io.sending = false;
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
            Some(_) => self.dirty.push(slot),
            None => self.close(slot, "write failed"),
        }
    }

    /// Starts a send on each connection with bytes queued and none in flight.
    pub(super) fn write_conns(&mut self) {
        while let Some(slot) = self.dirty.pop() {
            let Some(conn) = self.conns.get_mut(slot) else { continue };
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
            if self.io.push(&entry) {
                conn.io.sending = true;
            }
        }
    }

    /// Closes connections past their deadline: a TLS handshake that takes
    /// too long, or no allocation for too long.
    pub(super) fn sweep(&mut self, now: std::time::Instant) {
        for slot in self.conns.overdue(now) {
            let Some(conn) = self.conns.get_mut(slot) else { continue };
            if !conn.stream.handshaking() && self.worker.server.has_allocation(conn.listener, conn.peer) {
                conn.deadline = now + self.worker.limits.idle;
                continue;
            }
            self.stream_counters.closed_idle += 1;
            self.close(slot, "idle");
        }
        self.io.tcp.sweep(now);
    }

    /// Starts handing the connections a ConnectionBind claimed to the TCP
    /// relays: their receive is cancelled (not the socket shut down), and
    /// once nothing of theirs is in flight [`Self::finish_close`] passes
    /// them on with their TLS state and unsent bytes (the response).
    pub(super) fn splice_data_connections(&mut self) {
        for h in std::mem::take(&mut self.io.data_connections) {
            let Some((slot, conn)) = self.conns.find(h.listener, h.client) else { continue };
            conn.io.data_connection = Some(h.conn);
            let recv = user_data(Op::RecvConn, conn.io.generation, u32::try_from(slot).unwrap_or(u32::MAX));
            let receiving = conn.io.receiving;
            self.conns.detach(slot);
            if receiving {
                let _ = self.io.push(&opcode::AsyncCancel::new(recv).build().user_data(user_data(Op::Cancel, 0, 0)));
            }
            self.finish_close(slot);
        }
    }

    /// A TCP relay's news for the core; what the core answers goes to the
    /// client's control connection.
    pub(super) fn tcp_event(&mut self, event: TcpEvent) {
        let reply = &mut self.stream_reply[..];
        let t = match event {
            TcpEvent::Connected { token, peer, conn } => self.worker.server.tcp_connected(token, peer, conn, reply),
            TcpEvent::Incoming { token, peer, conn } => {
                self.worker.server.tcp_incoming(now(), token, peer, conn, reply, &mut self.io)
            }
        };
        let Some(t) = t else { return };
        let Via::Listener(listener) = t.via else { return };
        let bytes = self.stream_reply.get(t.range).unwrap_or_default();
        if let Some((slot, conn)) = self.conns.find(listener, t.to)
            && conn.stream.send(bytes)
        {
            self.dirty.push(slot);
        }
    }

    /// Closes a connection: its allocation goes, its socket is shut down,
    /// and its slot is freed once no operation of it is in flight.
    pub(super) fn close(&mut self, slot: usize, why: &str) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if conn.closing {
            return;
        }
        let (listener, peer) = (conn.listener, conn.peer);
        let _ = conn.io.socket.shutdown(std::net::Shutdown::Both);
        // Its place in the limits goes now, not when its last operation ends.
        conn.ticket = None;
        self.conns.detach(slot);
        self.worker.server.client_closed(now(), listener, peer, &mut self.io);
        tracing::debug!(client = %peer, why, "connection closed");
        self.finish_close(slot);
    }

    pub(super) fn finish_close(&mut self, slot: usize) {
        if !self.conns.get_mut(slot).is_some_and(|c| c.closing && !c.io.receiving && !c.io.sending) {
            return;
        }
        let Some(conn) = self.conns.remove(slot) else { return };
        if let Some(id) = conn.io.data_connection {
            let (tls, unsent) = conn.stream.into_parts();
            let _ = conn.io.socket.set_nonblocking(false);
            self.io.tcp.splice(id, conn.io.socket, tls, unsent, conn.ticket);
        }
    }
}
