//! Writing answers: success and error responses with the request's
//! integrity, SOFTWARE only to whoever authenticated, FINGERPRINT when the
//! request had one, and the challenge (RFC 8489 §9.2.4) that must stay
//! small because nobody verified where it goes.

use std::net::SocketAddr;

use ip2p_wire::attr::{ErrorCodeAttr, Nonce, PasswordAlgorithms, Realm, Software};
use ip2p_wire::credentials::LongTermKey;
use ip2p_wire::{Class, Error as WireError, ErrorCode, IntegrityKind, Message, MessageType, MessageWriter, Method};

use super::Server;
use crate::auth::{Authed, OFFERED_ALGORITHMS, Refusal};
use crate::stats::AuthFailure;

/// The integrity to put on a response: the request's key and algorithm.
pub(super) type Integrity<'a> = Option<(&'a LongTermKey, IntegrityKind)>;

pub(super) fn integrity(authed: &Authed) -> Integrity<'_> {
    Some((&authed.key, authed.integrity))
}

/// The most a response to a request that did not authenticate may weigh,
/// as a multiple of the request's size (a forged source must not get an
/// amplifier).
pub(crate) const MAX_AMPLIFICATION: usize = 4;

impl Server {
    /// Answers a request that failed authentication (RFC 8489 §9.2.4).
    pub(super) fn refuse(
        &mut self,
        reply: &mut [u8],
        msg: &Message<'_>,
        from: SocketAddr,
        unix: u64,
        refusal: Refusal,
    ) -> Option<usize> {
        let code = match refusal {
            Refusal::BadRequest => {
                self.stats.auth_failures.count(AuthFailure::BadRequest);
                return self.error(reply, msg, ErrorCode::BAD_REQUEST, None);
            }
            Refusal::Challenge => ErrorCode::UNAUTHENTICATED,
            Refusal::Unauthenticated(why) => {
                self.stats.auth_failures.count(why);
                ErrorCode::UNAUTHENTICATED
            }
            Refusal::StaleNonce => {
                self.stats.auth_failures.count(AuthFailure::StaleNonce);
                ErrorCode::STALE_NONCE
            }
        };
        let nonce = self.config.credentials.nonce(from, unix);
        let config = self.config.clone();
        let len = self.respond(reply, msg, Class::Error, None, |w| {
            w.add(&ErrorCodeAttr { code, reason: "" })?;
            w.add(&Realm(&config.credentials.realm))?;
            w.add(&Nonce(core::str::from_utf8(&nonce).unwrap_or_default()))?;
            w.add(&PasswordAlgorithms::new(&OFFERED_ALGORITHMS))?;
            Ok(())
        })?;
        // The challenge goes to a source nobody verified: never more than
        // four times the request. A request too small to deserve it (no
        // well-formed Allocate is: see `MAX_REALM`) gets the bare code.
        if len > MAX_AMPLIFICATION * msg.as_bytes().len() {
            return self.error(reply, msg, code, None);
        }
        Some(len)
    }

    pub(super) fn error(
        &mut self,
        reply: &mut [u8],
        msg: &Message<'_>,
        code: ErrorCode,
        auth: Integrity<'_>,
    ) -> Option<usize> {
        // Reason phrases are for people: a source nobody verified gets none.
        let reason = if auth.is_some() { code.reason() } else { "" };
        self.respond(reply, msg, Class::Error, auth, |w| {
            w.add(&ErrorCodeAttr { code, reason })?;
            Ok(())
        })
    }

    /// Writes a response: `body`, and when the request authenticated,
    /// SOFTWARE and the integrity of its key; FINGERPRINT if the request
    /// had one. A response to a request that did not authenticate carries
    /// no optional attribute: it may go to a forged source.
    pub(super) fn respond(
        &self,
        reply: &mut [u8],
        msg: &Message<'_>,
        class: Class,
        auth: Integrity<'_>,
        body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), WireError>,
    ) -> Option<usize> {
        let to = Respond { method: msg.method(), tid: *msg.transaction_id(), fingerprint: msg.has_fingerprint() };
        self.respond_to(reply, &to, class, auth, body)
    }

    /// Writes a response to the request `to` names (which may be answered
    /// after it is gone: RFC 6062 Connect).
    pub(super) fn respond_to(
        &self,
        reply: &mut [u8],
        to: &Respond,
        class: Class,
        auth: Integrity<'_>,
        body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), WireError>,
    ) -> Option<usize> {
        let typ = MessageType::new(to.method, class);
        let mut w = MessageWriter::new(reply, typ, to.tid).ok()?;
        body(&mut w).ok()?;
        if let (Some(software), Some(_)) = (&self.config.software, auth) {
            w.add(&Software(software)).ok()?;
        }
        match auth {
            Some((key, IntegrityKind::Sha1)) => w.integrity(key.as_bytes()).ok()?,
            Some((key, IntegrityKind::Sha256)) => w.integrity_sha256(key.as_bytes()).ok()?,
            None => &mut w,
        };
        if to.fingerprint { w.fingerprint().ok() } else { Some(w.finish()) }
    }
}

/// What a response needs of its request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Respond {
    pub(super) method: Method,
    pub(super) tid: ip2p_wire::TransactionId,
    pub(super) fingerprint: bool,
}
