//! The users and REST secrets a fleet's store adds to a node's
//! configuration, as the node holds them, and how a stored one reads.

use ip2p_turn::{Credentials, UserSecret};

/// The users and REST secrets a fleet's store adds to the configuration's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetAuth {
    /// Users by name; one of the store wins over the file's of that name.
    pub users: Vec<(String, UserSecret)>,
    /// REST secrets, before the configuration's (the first signs).
    pub secrets: Vec<Vec<u8>>,
}

impl FleetAuth {
    /// `credentials` with what the store adds.
    pub fn merge(&self, credentials: &mut Credentials) {
        for (user, secret) in &self.users {
            credentials.users.insert(user.clone(), secret.clone());
        }
        let mut secrets = self.secrets.clone();
        secrets.extend(credentials.rest_secrets.drain(..).filter(|s| !self.secrets.contains(s)));
        credentials.rest_secrets = secrets;
    }
}

/// A stored user's secret: `key:<32 hex>` or `password:<text>`.
#[must_use]
pub(super) fn parse_secret(stored: &str) -> Option<UserSecret> {
    if let Some(hex) = stored.strip_prefix("key:") {
        let mut key = [0u8; 16];
        hex::decode_to_slice(hex, &mut key).ok()?;
        return Some(UserSecret::Md5Key(key));
    }
    let password = stored.strip_prefix("password:")?;
    (!password.is_empty()).then(|| UserSecret::Password(password.to_owned()))
}

/// A REST secret as the API names it: the first 8 bytes of its SHA-256,
/// in hex (the secret itself never leaves the store).
#[must_use]
pub(super) fn fingerprint(secret: &[u8]) -> String {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(secret);
    hex::encode(digest.get(..8).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_secrets_read_as_keys_or_passwords_and_nothing_else() {
        assert_eq!(parse_secret("password:wonderland"), Some(UserSecret::Password("wonderland".into())));
        assert_eq!(parse_secret(&format!("key:{}", "ab".repeat(16))), Some(UserSecret::Md5Key([0xab; 16])));
        for bad in ["wonderland", "password:", "key:abc", "key:zz", &format!("key:{}", "ab".repeat(17))] {
            assert_eq!(parse_secret(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_stores_secrets_come_first_and_its_users_win() {
        let mut c = Credentials {
            realm: "r".into(),
            users: std::collections::HashMap::new(),
            rest_secrets: Vec::new(),
            nonce_secret: [0; 32],
            nonce_lifetime: 600,
            max_rest_lifetime: 3600,
        };
        c.users.insert("alice".into(), UserSecret::Password("file".into()));
        c.users.insert("bob".into(), UserSecret::Password("file".into()));
        c.rest_secrets = vec![b"file-secret-0123456".to_vec(), b"shared-secret-01234".to_vec()];
        let auth = FleetAuth {
            users: vec![("alice".into(), UserSecret::Password("store".into()))],
            secrets: vec![b"store-secret-01234".to_vec(), b"shared-secret-01234".to_vec()],
        };
        auth.merge(&mut c);
        assert_eq!(c.users["alice"], UserSecret::Password("store".into()));
        assert_eq!(c.users["bob"], UserSecret::Password("file".into()));
        let secrets: Vec<&[u8]> = c.rest_secrets.iter().map(Vec::as_slice).collect();
        assert_eq!(secrets, [&b"store-secret-01234"[..], b"shared-secret-01234", b"file-secret-0123456"]);
    }
}
