//! Requests and their responses: transaction ids, retransmission, the
//! long-term credential dance (RFC 8489 §9.2).

use std::io::{self};
use std::time::Instant;

use crate::{ATTEMPTS, Client, ClientError, RTO};
use ip2p_wire::attr::{ErrorCodeAttr, Nonce, Realm, Username};
use ip2p_wire::credentials::LongTermKey;
use ip2p_wire::{Attribute, Class, Message, MessageType, MessageWriter, Method, TransactionId, Transport};

impl Client {
    /// An authenticated request with the current nonce, not sent: what
    /// tools that replay or time requests send themselves.
    ///
    /// # Errors
    /// The client has not authenticated yet, or the attributes do not fit.
    pub fn signed(&mut self, method: Method, attrs: &[Attribute<'_>]) -> io::Result<Vec<u8>> {
        let key = self.key.clone().ok_or_else(|| io::Error::other("not authenticated yet"))?;
        let tid = self.tid();
        let mut out = vec![0u8; 1024];
        let mut w =
            MessageWriter::new(&mut out, MessageType::new(method, Class::Request), tid).map_err(io::Error::other)?;
        for a in attrs {
            w.add_attribute(a).map_err(io::Error::other)?;
        }
        w.add(&Username(&self.username)).map_err(io::Error::other)?;
        w.add(&Realm(&self.realm)).map_err(io::Error::other)?;
        w.add(&Nonce(&self.nonce)).map_err(io::Error::other)?;
        w.integrity(key.as_bytes()).map_err(io::Error::other)?;
        let len = w.finish();
        out.truncate(len);
        Ok(out)
    }

    pub(crate) fn tid(&mut self) -> TransactionId {
        self.next_tid = self.next_tid.wrapping_add(1);
        let mut t = [0u8; 12];
        if let Some(head) = t.first_chunk_mut::<8>() {
            *head = self.next_tid.to_be_bytes();
        }
        TransactionId(t)
    }

    /// Sends a request (retransmitting over UDP only: RFC 8489 §6.2.2) and
    /// waits for its response; the response's bytes are in `self.buf[..len]`.
    pub(crate) fn transact(&mut self, request: &[u8], tid: TransactionId) -> Result<usize, ClientError> {
        let mut rto = RTO;
        let reliable = self.link.transport() == Transport::Stream;
        for attempt in 0..ATTEMPTS {
            if attempt == 0 || !reliable {
                self.send_bytes(request)?;
            }
            let deadline = Instant::now() + rto;
            while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
                let Some(len) = self.recv_bytes(left)? else {
                    break;
                };
                let Some(bytes) = self.buf.get(..len) else {
                    continue;
                };
                if let Ok(msg) = Message::parse(bytes)
                    && *msg.transaction_id() == tid
                    && matches!(msg.class(), Class::Success | Class::Error)
                {
                    return Ok(len);
                }
            }
            rto *= 2;
        }
        Err(ClientError::Io(io::Error::new(io::ErrorKind::TimedOut, "no response from the TURN server")))
    }

    /// Builds and runs an authenticated request, answering one 401 or 438
    /// challenge. Returns the success response's length in `self.buf`.
    pub(crate) fn request(&mut self, method: Method, attrs: &[Attribute<'_>]) -> Result<usize, ClientError> {
        for _ in 0..3 {
            let tid = self.tid();
            let mut out = vec![0u8; 2048];
            let mut w = MessageWriter::new(&mut out, MessageType::new(method, Class::Request), tid)
                .map_err(|_| ClientError::Protocol("request too large"))?;
            for a in attrs {
                w.add_attribute(a).map_err(|_| ClientError::Protocol("request too large"))?;
            }
            if let Some(key) = &self.key {
                w.add(&Username(&self.username)).map_err(|_| ClientError::Protocol("request too large"))?;
                w.add(&Realm(&self.realm)).map_err(|_| ClientError::Protocol("request too large"))?;
                w.add(&Nonce(&self.nonce)).map_err(|_| ClientError::Protocol("request too large"))?;
                w.integrity(key.as_bytes()).map_err(|_| ClientError::Protocol("request too large"))?;
            }
            let len = w.finish();
            let rlen = self.transact(out.get(..len).unwrap_or_default(), tid)?;
            let msg = Message::parse(self.buf.get(..rlen).unwrap_or_default())
                .map_err(|_| ClientError::Protocol("malformed response"))?;
            if msg.class() == Class::Success {
                if let Some(key) = &self.key
                    && msg.verify_integrity(key.as_bytes()).is_err()
                {
                    return Err(ClientError::Protocol("response integrity does not verify"));
                }
                return Ok(rlen);
            }
            let error =
                msg.get::<ErrorCodeAttr>().ok().flatten().ok_or(ClientError::Protocol("error without ERROR-CODE"))?;
            let (code, reason) = (error.code.code(), error.reason.to_owned());
            if code == 300 {
                self.alternate = msg.get::<ip2p_wire::attr::AlternateServer>().ok().flatten().map(|a| a.0);
            }
            let challenged = code == 438 || (code == 401 && self.key.is_none());
            if challenged
                && let (Ok(Some(Realm(realm))), Ok(Some(Nonce(nonce)))) = (msg.get::<Realm>(), msg.get::<Nonce>())
            {
                self.realm = realm.to_owned();
                self.nonce = nonce.to_owned();
                self.key = Some(LongTermKey::md5(&self.username, &self.realm, &self.password));
                continue;
            }
            return Err(ClientError::Rejected(code, reason));
        }
        Err(ClientError::Protocol("too many challenges"))
    }

    pub(crate) fn response(&self, len: usize) -> Result<Message<'_>, ClientError> {
        Message::parse(self.buf.get(..len).unwrap_or_default()).map_err(|_| ClientError::Protocol("malformed response"))
    }

    /// Takes note of a STUN answer received outside a transaction: a
    /// 438 carries the nonce to use from now on. Returns its error code.
    pub fn absorb(&mut self, msg: &Message<'_>) -> Option<u16> {
        let code = msg.get::<ErrorCodeAttr>().ok().flatten()?.code.code();
        if code == 438
            && let Ok(Some(Nonce(nonce))) = msg.get::<Nonce>()
        {
            self.nonce = nonce.to_owned();
        }
        Some(code)
    }
}
