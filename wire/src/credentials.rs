//! Long-term credentials (RFC 8489 §9.2): key derivation, USERHASH, the
//! NONCE security-feature cookie, and constant-time comparison.
//!
//! Strings are used as given. RFC 8489 asks for usernames, realms and
//! passwords processed by the OpaqueString profile (RFC 8265), which is the
//! identity for ASCII; a deployment with non-ASCII credentials normalizes
//! them (NFC) before they get here, as WebRTC stacks and coturn also leave
//! to the operator.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::Md5;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::attr::AlgorithmId;

/// A long-term credential key: the key of MESSAGE-INTEGRITY and
/// MESSAGE-INTEGRITY-SHA256 (RFC 8489 §9.2.2).
#[derive(Clone, PartialEq, Eq)]
pub enum LongTermKey {
    /// MD5(username ":" realm ":" password), the RFC 5389 key.
    Md5([u8; 16]),
    /// SHA-256(username ":" realm ":" password).
    Sha256([u8; 32]),
}

impl core::fmt::Debug for LongTermKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // A key is a password equivalent: never print it.
        f.write_str(match self {
            Self::Md5(_) => "LongTermKey::Md5(..)",
            Self::Sha256(_) => "LongTermKey::Sha256(..)",
        })
    }
}

impl LongTermKey {
    /// Derives the key for a password algorithm; `None` for an algorithm
    /// other than MD5 and SHA-256.
    #[must_use]
    pub fn derive(algorithm: AlgorithmId, username: &str, realm: &str, password: &str) -> Option<Self> {
        match algorithm {
            AlgorithmId::MD5 => Some(Self::Md5(hash_joined::<Md5>(&[username, realm, password]).into())),
            AlgorithmId::SHA256 => Some(Self::Sha256(hash_joined::<Sha256>(&[username, realm, password]).into())),
            _ => None,
        }
    }

    /// The MD5 key: what RFC 5389 clients (every browser today) use.
    #[must_use]
    pub fn md5(username: &str, realm: &str, password: &str) -> Self {
        Self::Md5(hash_joined::<Md5>(&[username, realm, password]).into())
    }

    /// The key's bytes, to pass to [`crate::Message::verify_integrity`].
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Md5(k) => k,
            Self::Sha256(k) => k,
        }
    }
}

/// Hashes the parts joined by ':' without building the joined string.
fn hash_joined<D: Digest>(parts: &[&str]) -> sha2::digest::Output<D> {
    let mut d = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            d.update(b":");
        }
        d.update(part.as_bytes());
    }
    d.finalize()
}

/// USERHASH (RFC 8489 §14.4): SHA-256(username ":" realm).
#[must_use]
pub fn userhash(username: &str, realm: &str) -> [u8; 32] {
    hash_joined::<Sha256>(&[username, realm]).into()
}

/// Compares two byte strings in time that depends only on their lengths.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The prefix of a NONCE that carries security-feature bits (RFC 8489 §9.2).
pub const NONCE_COOKIE: &str = "obMatJos2";

/// The security features a server announces in its NONCE cookie.
///
/// Bit 0 is the least significant of the 24 bits (RFC 8489 erratum 6268's
/// reading, which its corrected test vector "AAAC" = username anonymity
/// follows, and which libjuice and others implement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecurityFeatures(pub u32);

impl SecurityFeatures {
    /// Bit 0: the server supports PASSWORD-ALGORITHMS.
    pub const PASSWORD_ALGORITHMS: Self = Self(1 << 0);
    /// Bit 1: the server accepts USERHASH instead of USERNAME.
    pub const USERNAME_ANONYMITY: Self = Self(1 << 1);

    /// Whether every bit of `other` is set.
    #[must_use]
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of two feature sets.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Reads the features from a NONCE; `None` when it has no cookie.
    #[must_use]
    pub fn from_nonce(nonce: &str) -> Option<Self> {
        let encoded = nonce.strip_prefix(NONCE_COOKIE)?.get(..4)?;
        let mut bits = [0u8; 3];
        STANDARD.decode_slice(encoded, &mut bits).ok()?;
        Some(Self(u32::from_be_bytes([0, bits[0], bits[1], bits[2]])))
    }

    /// The 13-byte cookie ("obMatJos2" and four base64 characters) a server
    /// puts at the front of its NONCE.
    #[must_use]
    pub fn cookie(self) -> [u8; 13] {
        let mut out = [0u8; 13];
        let (prefix, bits) = out.split_at_mut(NONCE_COOKIE.len());
        prefix.copy_from_slice(NONCE_COOKIE.as_bytes());
        let [_, b0, b1, b2] = (self.0 & 0x00FF_FFFF).to_be_bytes();
        // Three bytes are exactly four base64 characters: this cannot fail.
        let _ = STANDARD.encode_slice([b0, b1, b2], bits);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8489_vector_cookie_is_username_anonymity() {
        let f = SecurityFeatures::from_nonce("obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA").unwrap();
        assert_eq!(f, SecurityFeatures::USERNAME_ANONYMITY);
        assert_eq!(&f.cookie(), b"obMatJos2AAAC");
    }

    #[test]
    fn cookie_round_trips_and_plain_nonces_have_none() {
        let both = SecurityFeatures::PASSWORD_ALGORITHMS.union(SecurityFeatures::USERNAME_ANONYMITY);
        let cookie = both.cookie();
        let nonce = core::str::from_utf8(&cookie).unwrap();
        assert_eq!(SecurityFeatures::from_nonce(nonce), Some(both));
        assert!(both.contains(SecurityFeatures::PASSWORD_ALGORITHMS));
        assert_eq!(SecurityFeatures::from_nonce("f//499k954d6OL34oL9FSTvy64sA"), None);
        assert_eq!(SecurityFeatures::from_nonce("obMatJos2AA"), None);
        assert_eq!(SecurityFeatures::from_nonce("obMatJos2!!!!"), None);
    }

    #[test]
    fn keys_follow_the_rfc_formula() {
        // MD5("user:realm:pass"), computed independently.
        let k = LongTermKey::md5("user", "realm", "pass");
        assert_eq!(k.as_bytes(), &hex_literal::hex!("8493fbc53ba582fb4c044c456bdc40eb"));
        assert_eq!(LongTermKey::derive(AlgorithmId(3), "u", "r", "p"), None);
        assert!(!format!("{k:?}").contains("84"));
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
