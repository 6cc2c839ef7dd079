//! The long-term credential mechanism (RFC 8489 §9.2.4) on the server side:
//! who may allocate, with which key, and stateless nonces any worker (or
//! any node sharing the secret) can check.

use std::collections::HashMap;
use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use ip2p_wire::attr::{AlgorithmId, Nonce, PasswordAlgorithm, PasswordAlgorithms, Realm, Userhash, Username};
use ip2p_wire::credentials::{LongTermKey, SecurityFeatures};
use ip2p_wire::{IntegrityKind, Message};
use sha1::Sha1;
use sha2::Sha256;

use super::stats::AuthFailure;

/// The longest REALM: the 401 to the smallest well-formed Allocate (28
/// bytes: a header and REQUESTED-TRANSPORT) is 80 bytes plus the realm's
/// padded length, and must stay within four times it.
pub const MAX_REALM: usize = 32;

/// The algorithms offered in PASSWORD-ALGORITHMS, in order of preference.
pub(crate) const OFFERED_ALGORITHMS: [PasswordAlgorithm<'static>; 2] =
    [PasswordAlgorithm::new(AlgorithmId::SHA256), PasswordAlgorithm::new(AlgorithmId::MD5)];

/// Seconds a TURN REST credential's expiry may lie past the longest
/// lifetime (clocks of the nodes and servers that mint them differ).
pub const REST_CLOCK_SLACK: u64 = 60;

/// What a static user's password is stored as.
#[derive(Clone, PartialEq, Eq)]
pub enum UserSecret {
    /// The password itself: both MD5 and SHA-256 keys can be derived.
    Password(String),
    /// A precomputed MD5 key, MD5(user:realm:password), as coturn's
    /// `turnadmin -k` prints: only MD5 clients can authenticate.
    Md5Key([u8; 16]),
}

impl std::fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Password(_) => "Password(..)",
            Self::Md5Key(_) => "Md5Key(..)",
        })
    }
}

/// Everything needed to authenticate requests.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The REALM (RFC 8489 §14.9).
    pub realm: String,
    /// Static users by name.
    pub users: HashMap<String, UserSecret>,
    /// TURN REST API shared secrets: the first signs nothing, all verify,
    /// so a new secret can be added before the old one is retired.
    pub rest_secrets: Vec<Vec<u8>>,
    /// Key of the nonce MAC; shared by every worker, and by every node that
    /// should accept each other's nonces.
    pub nonce_secret: [u8; 32],
    /// How long a nonce stays valid, in seconds.
    pub nonce_lifetime: u64,
    /// The furthest in the future a TURN REST username's expiry may lie,
    /// in seconds: a credential that claims to live longer is refused (401).
    pub max_rest_lifetime: u64,
}

/// A request that passed authentication.
#[derive(Debug, Clone)]
pub(crate) struct Authed {
    pub(crate) username: Box<str>,
    /// Who the quotas count: the static user, or a REST username's user
    /// part (so that one user's credentials of several expiries are one).
    pub(crate) quota_user: Box<str>,
    pub(crate) key: LongTermKey,
    pub(crate) integrity: IntegrityKind,
    /// A TURN REST username's expiry (unix seconds).
    pub(crate) expiry: Option<u64>,
}

/// Why a request failed authentication; each maps to one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No MESSAGE-INTEGRITY: answer 401 with REALM and a fresh NONCE.
    Challenge,
    /// Integrity present but USERNAME, REALM or NONCE missing, or the
    /// password algorithm negotiation was tampered with: 400.
    BadRequest,
    /// Unknown user, expired REST username or wrong key: 401.
    Unauthenticated(AuthFailure),
    /// The nonce is too old or not ours: 438 with a fresh one.
    StaleNonce,
}

/// The nonce's security features: we offer password algorithms.
const FEATURES: SecurityFeatures = SecurityFeatures::PASSWORD_ALGORITHMS;
/// Bytes of the nonce after its 13-byte cookie: a 4-byte timestamp and an
/// 8-byte MAC, base64url-encoded. Forging one means guessing 64 bits
/// online, one request per guess; keeping it short keeps the 401 small
/// (it is the answer an unverified source gets).
const NONCE_BODY: usize = 12;
/// Bytes of the MAC.
const NONCE_MAC: usize = NONCE_BODY - 4;
/// Total NONCE length: cookie plus 16 base64 characters.
pub(crate) const NONCE_LEN: usize = 13 + 16;

impl Credentials {
    /// A fresh nonce for `client` at `unix_now`.
    pub(crate) fn nonce(&self, client: SocketAddr, unix_now: u64) -> [u8; NONCE_LEN] {
        let ts = u32::try_from(unix_now).unwrap_or(u32::MAX).to_be_bytes();
        let mut body = [0u8; NONCE_BODY];
        let (t, m) = body.split_at_mut(4);
        t.copy_from_slice(&ts);
        m.copy_from_slice(&self.nonce_mac(ts, client));
        let mut out = [0u8; NONCE_LEN];
        let (cookie, rest) = out.split_at_mut(13);
        cookie.copy_from_slice(&FEATURES.cookie());
        // 12 bytes are exactly 16 base64 characters.
        let _ = URL_SAFE_NO_PAD.encode_slice(body, rest);
        out
    }

    #[allow(clippy::expect_used)] // HMAC accepts a key of any length
    fn nonce_mac(&self, ts: [u8; 4], client: SocketAddr) -> [u8; NONCE_MAC] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.nonce_secret).expect("HMAC takes any key");
        mac.update(&ts);
        match client {
            SocketAddr::V4(a) => mac.update(&a.ip().octets()),
            SocketAddr::V6(a) => mac.update(&a.ip().octets()),
        }
        mac.update(&client.port().to_be_bytes());
        let full: [u8; 32] = mac.finalize().into_bytes().into();
        *full.first_chunk::<NONCE_MAC>().unwrap_or(&[0; NONCE_MAC])
    }

    /// Whether `nonce` is one of ours, for `client`, and young enough.
    fn nonce_valid(&self, nonce: &str, client: SocketAddr, unix_now: u64) -> bool {
        let Some(encoded) = nonce.strip_prefix(core::str::from_utf8(&FEATURES.cookie()).unwrap_or_default()) else {
            return false;
        };
        let mut body = [0u8; NONCE_BODY + 2];
        let Ok(NONCE_BODY) = URL_SAFE_NO_PAD.decode_slice(encoded, &mut body) else {
            return false;
        };
        let (ts, mac) = body.split_at(4);
        let ts: [u8; 4] = ts.try_into().unwrap_or_default();
        let issued = u64::from(u32::from_be_bytes(ts));
        let fresh = issued <= unix_now && unix_now - issued < self.nonce_lifetime;
        let expected = self.nonce_mac(ts, client);
        ip2p_wire::credentials::constant_time_eq(mac.get(..NONCE_MAC).unwrap_or_default(), &expected) && fresh
    }

    /// Authenticates a request as RFC 8489 §9.2.4 orders the checks.
    pub(crate) fn check(&self, msg: &Message<'_>, client: SocketAddr, unix_now: u64) -> Result<Authed, Refusal> {
        let Some(integrity) = msg.integrity_kind() else {
            return Err(Refusal::Challenge);
        };
        let username = msg.get::<Username>().ok().flatten();
        let realm = msg.get::<Realm>().ok().flatten();
        let nonce = msg.get::<Nonce>().ok().flatten();
        let (Some(realm), Some(nonce)) = (realm, nonce) else {
            return Err(Refusal::BadRequest);
        };
        let Some(Username(username)) = username else {
            // USERHASH (username anonymity) is not offered: without a
            // USERNAME the request names nobody we know.
            return Err(if msg.get::<Userhash>().ok().flatten().is_some() {
                Refusal::Unauthenticated(AuthFailure::UnknownUser)
            } else {
                Refusal::BadRequest
            });
        };
        let algorithm = negotiated_algorithm(msg, nonce.0)?;
        if realm.0 != self.realm {
            return Err(Refusal::Unauthenticated(AuthFailure::WrongRealm));
        }
        if !self.nonce_valid(nonce.0, client, unix_now) {
            return Err(Refusal::StaleNonce);
        }
        let verify = |key: LongTermKey| msg.verify_integrity(key.as_bytes()).ok().map(|_| key);
        let bad = Refusal::Unauthenticated(AuthFailure::BadIntegrity);
        let (key, quota_user, expiry) = match self.users.get(username) {
            Some(UserSecret::Password(password)) => {
                let key =
                    LongTermKey::derive(algorithm, username, &self.realm, password).and_then(verify).ok_or(bad)?;
                (key, username, None)
            }
            Some(UserSecret::Md5Key(key)) if algorithm == AlgorithmId::MD5 => {
                (verify(LongTermKey::Md5(*key)).ok_or(bad)?, username, None)
            }
            Some(UserSecret::Md5Key(_)) => return Err(bad),
            None => self.rest_key(username, algorithm, unix_now, verify)?,
        };
        Ok(Authed { username: username.into(), quota_user: quota_user.into(), key, integrity, expiry })
    }

    /// TURN REST API: the username is `<unix-expiry>:<user>` and the
    /// password base64(HMAC-SHA1(secret, username)); any configured secret
    /// may have signed it. Returns the key, the user part and the expiry.
    fn rest_key<'u>(
        &self,
        username: &'u str,
        algorithm: AlgorithmId,
        unix_now: u64,
        verify: impl Fn(LongTermKey) -> Option<LongTermKey>,
    ) -> Result<(LongTermKey, &'u str, Option<u64>), Refusal> {
        let unknown = Refusal::Unauthenticated(AuthFailure::UnknownUser);
        let parts = username.split_once(':').and_then(|(expiry, user)| Some((expiry.parse::<u64>().ok()?, user)));
        let Some((expiry, user)) = parts.filter(|_| !self.rest_secrets.is_empty()) else {
            return Err(unknown);
        };
        if expiry < unix_now {
            return Err(Refusal::Unauthenticated(AuthFailure::Expired));
        }
        // A minute's grace: the credential may come from another node (or
        // the application's server) whose clock is a little ahead, minted
        // for the longest lifetime.
        if expiry - unix_now > self.max_rest_lifetime.saturating_add(REST_CLOCK_SLACK) {
            return Err(Refusal::Unauthenticated(AuthFailure::TooLongLived));
        }
        let key = self
            .rest_secrets
            .iter()
            .find_map(|secret| {
                let password = rest_password(secret, username);
                LongTermKey::derive(algorithm, username, &self.realm, &password).and_then(&verify)
            })
            .ok_or(Refusal::Unauthenticated(AuthFailure::BadIntegrity))?;
        Ok((key, user, Some(expiry)))
    }
}

/// The TURN REST API password of `username` under `secret`:
/// base64(HMAC-SHA1(secret, username)).
#[must_use]
#[allow(clippy::expect_used)] // HMAC accepts a key of any length
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The password algorithm a request uses (RFC 8489 §9.2.4): MD5 when it
/// names none; otherwise it must echo our PASSWORD-ALGORITHMS unchanged
/// (downgrade protection) and pick one of them.
fn negotiated_algorithm(msg: &Message<'_>, nonce: &str) -> Result<AlgorithmId, Refusal> {
    let algs = msg.get::<PasswordAlgorithms>().map_err(|_| Refusal::BadRequest)?;
    let alg = msg.get::<PasswordAlgorithm>().map_err(|_| Refusal::BadRequest)?;
    let ours = SecurityFeatures::from_nonce(nonce).is_some_and(|f| f.contains(FEATURES));
    match (algs, alg) {
        (None, None) => Ok(AlgorithmId::MD5),
        (Some(algs), Some(alg))
            if ours
                && algs == PasswordAlgorithms::new(&OFFERED_ALGORITHMS)
                && alg.params.is_empty()
                && OFFERED_ALGORITHMS.iter().any(|o| o.algorithm == alg.algorithm) =>
        {
            Ok(alg.algorithm)
        }
        _ => Err(Refusal::BadRequest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            realm: "ip2p.test".into(),
            users: HashMap::new(),
            rest_secrets: vec![b"old".to_vec(), b"new".to_vec()],
            nonce_secret: [7; 32],
            nonce_lifetime: 600,
            max_rest_lifetime: 86_400,
        }
    }

    #[test]
    fn nonces_are_bound_to_client_and_time() {
        let c = creds();
        let a: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let b: SocketAddr = "192.0.2.1:5001".parse().unwrap();
        let n = c.nonce(a, 1_000_000);
        let n = core::str::from_utf8(&n).unwrap();
        assert!(n.starts_with("obMatJos2AAAB"), "{n}");
        assert!(c.nonce_valid(n, a, 1_000_000));
        assert!(c.nonce_valid(n, a, 1_000_599));
        assert!(!c.nonce_valid(n, a, 1_000_600), "expired");
        assert!(!c.nonce_valid(n, a, 999_999), "from the future");
        assert!(!c.nonce_valid(n, b, 1_000_000), "other client");
        let mut other = creds();
        other.nonce_secret = [8; 32];
        assert!(!other.nonce_valid(n, a, 1_000_000), "other secret");
        assert!(!c.nonce_valid("obMatJos2AAAB", a, 1_000_000));
        assert!(!c.nonce_valid("garbage", a, 1_000_000));
    }
}
