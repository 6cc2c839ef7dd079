//! `[auth]`: static users (file, table, flags), TURN REST secrets, the
//! nonce secret, lifetimes and the rate of unauthenticated answers. Every
//! secret is checked against placeholders and weak patterns.

use std::collections::HashMap;

use ip2p_turn::UserSecret;

use super::check::{check_secret, is_placeholder, pick, ranged, read_lines, weak_key};
use super::cli::RunArgs;
use super::defaults::{self, DEV_USER, MIN_SECRET};
use super::file::AuthSection;
use super::settings::{ConfigError, err};

/// `[auth]`, checked, with the secrets read from their files.
pub(super) struct AuthKeys {
    pub(super) users: HashMap<String, UserSecret>,
    pub(super) secrets: Vec<String>,
    pub(super) nonce_secret: [u8; 32],
    pub(super) nonce_secret_generated: bool,
    pub(super) nonce_lifetime: u64,
    pub(super) max_rest_lifetime: u64,
    pub(super) unauthenticated_rate: u32,
}

/// `[auth]` and the flags that override it; with `dev` and no user, the
/// demo user.
pub(super) fn auth(args: &RunArgs, file: &AuthSection, dev: bool) -> Result<AuthKeys, ConfigError> {
    let users = users(args, file, dev)?;
    let mut secrets = rest_secrets(args, file)?;
    if dev && secrets.is_empty() {
        // The self-test page mints its credential with it: nothing to type.
        secrets.push(hex::encode(rand::random::<[u8; 24]>()));
    }
    if users.is_empty() && secrets.is_empty() {
        return Err(err(
            "auth",
            "no credentials: add a user (--user NAME:PASSWORD) or a REST secret (--auth-secret); \
             ip2p does not run an open relay",
        ));
    }
    let (nonce_secret, nonce_secret_generated) = match nonce_secret(file)? {
        Some(secret) => (secret, false),
        None => (rand::random(), true),
    };
    let nonce_lifetime = ranged(
        "auth.nonce_lifetime",
        file.nonce_lifetime.unwrap_or(defaults::NONCE_LIFETIME.as_secs()),
        1,
        86_400,
        "seconds",
    )?;
    let max_rest_lifetime = ranged(
        "auth.max_credential_lifetime",
        file.max_credential_lifetime.unwrap_or(defaults::MAX_CREDENTIAL_LIFETIME.as_secs()),
        60,
        366 * 86_400,
        "seconds",
    )?;
    let unauthenticated_rate = ranged(
        "auth.unauthenticated_rate",
        file.unauthenticated_rate.unwrap_or(defaults::UNAUTHENTICATED_RATE),
        0,
        1_000_000,
        "responses a second",
    )?;
    Ok(AuthKeys {
        users,
        secrets,
        nonce_secret,
        nonce_secret_generated,
        nonce_lifetime,
        max_rest_lifetime,
        unauthenticated_rate,
    })
}

/// Static users: `auth.users_file`, then the `auth.users` table (neither
/// may name a user twice), then `--user` flags (which may replace one).
fn users(args: &RunArgs, file: &AuthSection, dev: bool) -> Result<HashMap<String, UserSecret>, ConfigError> {
    let mut users = HashMap::new();
    if let Some(path) = args.users_file.as_ref().or(file.users_file.as_ref()) {
        let key = "auth.users_file";
        for (i, line) in read_lines(key, path)?.iter().enumerate() {
            let (name, password) = line
                .split_once(':')
                .filter(|(n, _)| !n.is_empty())
                .ok_or_else(|| err(key, format!("line {}: expected NAME:PASSWORD", i + 1)))?;
            if users.insert(name.to_owned(), UserSecret::Password(password.to_owned())).is_some() {
                return Err(err(key, format!("user {name:?} is listed twice")));
            }
        }
    }
    for (i, u) in file.users.iter().enumerate() {
        let key = format!("auth.users[{i}]");
        if u.name.is_empty() {
            return Err(err(&key, "name is empty"));
        }
        let secret = match (&u.password, &u.key) {
            (Some(p), None) if is_placeholder(p) => {
                return Err(err(&key, "password is the example's placeholder: set a real one"));
            }
            (Some(p), None) => UserSecret::Password(p.clone()),
            (None, Some(k)) => {
                let mut md5 = [0u8; 16];
                hex::decode_to_slice(k, &mut md5)
                    .map_err(|_| err(&key, "key must be 32 hex digits: MD5(name:realm:password)"))?;
                UserSecret::Md5Key(md5)
            }
            _ => return Err(err(&key, "give exactly one of password or key")),
        };
        if users.insert(u.name.clone(), secret).is_some() {
            return Err(err(&key, format!("user {:?} is listed twice", u.name)));
        }
    }
    for spec in &args.users {
        let (name, password) = spec
            .split_once(':')
            .filter(|(n, _)| !n.is_empty())
            .ok_or_else(|| err("--user", format!("expected NAME:PASSWORD, got {spec:?}")))?;
        users.insert(name.to_owned(), UserSecret::Password(password.to_owned()));
    }
    if dev && users.is_empty() {
        users.insert(DEV_USER.0.into(), UserSecret::Password(DEV_USER.1.into()));
    }
    for (name, secret) in &users {
        if let UserSecret::Password(p) = secret
            && is_placeholder(p)
            && !(dev && name == DEV_USER.0)
        {
            return Err(err("auth.users", format!("{name:?}'s password is a placeholder: set a real one")));
        }
    }
    Ok(users)
}

/// TURN REST secrets: the flags or `auth.secrets`, and those of
/// `auth.secrets_file`.
fn rest_secrets(args: &RunArgs, file: &AuthSection) -> Result<Vec<String>, ConfigError> {
    let mut secrets = pick(&args.auth_secrets, Some(file.secrets.clone()), Vec::new);
    if let Some(path) = args.auth_secret_file.as_ref().or(file.secrets_file.as_ref()) {
        secrets.extend(read_lines("auth.secrets_file", path)?);
    }
    for secret in &secrets {
        check_secret("auth.secrets", secret, MIN_SECRET)?;
    }
    Ok(secrets)
}

/// `auth.nonce_secret` or the first line of `auth.nonce_secret_file`, if
/// either is given: 32 bytes in hex, not a placeholder.
fn nonce_secret(file: &AuthSection) -> Result<Option<[u8; 32]>, ConfigError> {
    let text = match (&file.nonce_secret, &file.nonce_secret_file) {
        (Some(_), Some(_)) => {
            return Err(err("auth.nonce_secret_file", "give nonce_secret or nonce_secret_file, not both"));
        }
        (Some(text), None) => text.clone(),
        (None, Some(path)) => read_lines("auth.nonce_secret_file", path)?
            .into_iter()
            .next()
            .ok_or_else(|| err("auth.nonce_secret_file", "the file holds no secret"))?,
        (None, None) => return Ok(None),
    };
    let mut secret = [0u8; 32];
    hex::decode_to_slice(&text, &mut secret)
        .map_err(|_| err("auth.nonce_secret", "must be 64 hex digits (32 bytes)"))?;
    if weak_key(&secret) {
        return Err(err(
            "auth.nonce_secret",
            "is a placeholder (a run or a pattern): make one with `openssl rand -hex 32`",
        ));
    }
    Ok(Some(secret))
}
