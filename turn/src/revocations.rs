//! Revoked users: until when each may not authenticate. Read by every
//! authenticated request (a read lock, never contended for long: writes
//! are the admin API's, one entry each), shared by the node's workers and
//! kept across reloads and handovers.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

/// The most revocations a node holds at once.
pub const MAX_REVOCATIONS: usize = 100_000;

/// Users whose credentials are refused until a unix time.
#[derive(Debug, Default)]
pub struct Revocations(RwLock<HashMap<Box<str>, u64>>);

/// Why a revocation was not recorded: [`MAX_REVOCATIONS`] live ones are
/// held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl Revocations {
    /// Whether `user` is revoked at unix time `now`.
    #[must_use]
    pub fn revoked(&self, user: &str, now: u64) -> bool {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        !map.is_empty() && map.get(user).is_some_and(|&until| until > now)
    }

    /// Revokes `user` until unix time `until` (replacing an earlier
    /// revocation of it); when the set is full, those lapsed by `now`
    /// make room.
    ///
    /// # Errors
    /// [`MAX_REVOCATIONS`] live ones are held.
    pub fn add(&self, user: &str, until: u64, now: u64) -> Result<(), Full> {
        let mut map = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= MAX_REVOCATIONS && !map.contains_key(user) {
            map.retain(|_, &mut t| t > now);
            if map.len() >= MAX_REVOCATIONS {
                return Err(Full);
            }
        }
        map.insert(user.into(), until);
        Ok(())
    }

    /// Lifts `user`'s revocation: whether there was one.
    pub fn remove(&self, user: &str) -> bool {
        self.0.write().unwrap_or_else(PoisonError::into_inner).remove(user).is_some()
    }

    /// The revocations live at `now`, by user.
    #[must_use]
    pub fn live(&self, now: u64) -> Vec<(String, u64)> {
        let map = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<(String, u64)> =
            map.iter().filter(|&(_, &until)| until > now).map(|(u, &t)| (u.to_string(), t)).collect();
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_holds_until_its_time_and_can_be_lifted() {
        let r = Revocations::default();
        r.add("alice", 100, 0).unwrap();
        assert!(r.revoked("alice", 99));
        assert!(!r.revoked("alice", 100), "until, not through");
        assert!(!r.revoked("bob", 0));
        assert_eq!(r.live(50), [("alice".to_owned(), 100)]);
        assert!(r.remove("alice"));
        assert!(!r.remove("alice"));
        assert!(!r.revoked("alice", 0));
    }

    #[test]
    fn the_set_is_bounded_and_lapsed_ones_make_room() {
        let r = Revocations::default();
        for i in 0..MAX_REVOCATIONS {
            r.add(&i.to_string(), 10, 0).unwrap();
        }
        assert_eq!(r.add("one more", 10, 0), Err(Full));
        r.add("0", 20, 0).unwrap();
        assert!(r.revoked("0", 15), "a user already held is updated");
        r.add("one more", 30, 10).unwrap();
        assert_eq!(r.live(10), [("0".to_owned(), 20), ("one more".to_owned(), 30)]);
    }
}
