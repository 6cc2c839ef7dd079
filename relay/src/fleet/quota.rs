//! Fleet-wide quotas in the store. Each node owns one field in a hash per
//! user and per client prefix (`ip2p:{NAME}:quota:user:USER`,
//! `...:quota:ip:PREFIX`): its count there. An admission sums the fields
//! of the live nodes and, when the limits allow, adds to this node's in
//! the same script, so Allocates that come one at a time are held
//! exactly. The node's journal (what the store has not counted: ends,
//! and allocations made under the node's own limits) is applied on every
//! turn of the agent; on every new connection the node writes its whole
//! counts over what it owned before (the store may have lost them, or a
//! previous life of the node left some).

use std::collections::HashMap;
use std::net::IpAddr;

use ip2p_turn::{Admission, AdmissionRequest, CountsNow, Journal, QuotaLimits};
use redis::RedisResult;

use super::scripts::{ADMIT, APPLY, REWRITE};
use super::store::{Keys, Store};

/// Key and count pairs per script call at most.
const CHUNK: usize = 2000;

impl Keys {
    fn user(&self, user: &str) -> String {
        format!("{}quota:user:{user}", self.prefix())
    }

    fn ip(&self, prefix: IpAddr) -> String {
        format!("{}quota:ip:{prefix}", self.prefix())
    }

    /// The keys node `node` owns a field in.
    pub(super) fn owned(&self, node: &str) -> String {
        format!("{}owned:{node}", self.prefix())
    }
}

impl Store {
    /// The fleet's word on each of `asked` for node `node` under
    /// `limits`, in one round trip.
    pub(super) fn admit(
        &mut self,
        node: &str,
        asked: &[&AdmissionRequest],
        limits: QuotaLimits,
    ) -> RedisResult<Vec<Admission>> {
        self.with(|con, keys| {
            let mut pipe = redis::pipe();
            for a in asked {
                let (user, ip) = (keys.user(&a.user), keys.ip(a.prefix));
                pipe.cmd("EVALSHA").arg(ADMIT.get_hash()).arg(4).arg(keys.nodes()).arg(user).arg(ip);
                pipe.arg(keys.owned(node)).arg(node).arg(a.count).arg(limits.per_user).arg(limits.per_prefix);
            }
            let answers: Vec<i64> = pipe.query(con)?;
            Ok(answers
                .into_iter()
                .map(|n| match n {
                    0 => Admission::Admitted,
                    1 => Admission::OverUser,
                    2 => Admission::OverPrefix,
                    _ => Admission::Unknown,
                })
                .collect())
        })
    }

    /// Applies `journal`'s changes to node `node`'s counts.
    pub(super) fn apply(&mut self, node: &str, journal: Journal) -> RedisResult<()> {
        let mut changes: HashMap<String, i64> = HashMap::new();
        self.with(|con, keys| {
            for (account, change) in journal.changes {
                *changes.entry(keys.user(&account.user)).or_default() += i64::from(change);
                *changes.entry(keys.ip(account.prefix)).or_default() += i64::from(change);
            }
            changes.retain(|_, n| *n != 0);
            let pairs: Vec<(String, i64)> = changes.into_iter().collect();
            for chunk in pairs.chunks(CHUNK) {
                let mut call = APPLY.key(keys.owned(node));
                call.arg(node);
                for (key, n) in chunk {
                    call.arg(key).arg(*n);
                }
                call.invoke::<i64>(con)?;
            }
            Ok(())
        })
    }

    /// Writes node `node`'s whole `counts` over what it owned before.
    pub(super) fn rewrite(&mut self, node: &str, counts: CountsNow) -> RedisResult<()> {
        self.with(|con, keys| {
            let (users, prefixes) = counts;
            let pairs: Vec<(String, usize)> = users
                .into_iter()
                .map(|(u, n)| (keys.user(&u), n))
                .chain(prefixes.into_iter().map(|(p, n)| (keys.ip(p), n)))
                .collect();
            let mut reset = true;
            for chunk in pairs.chunks(CHUNK).chain(pairs.is_empty().then_some(&[][..])) {
                let mut call = REWRITE.key(keys.owned(node));
                call.arg(node).arg(u8::from(reset));
                for (key, n) in chunk {
                    call.arg(key).arg(*n);
                }
                call.invoke::<i64>(con)?;
                reset = false;
            }
            Ok(())
        })
    }
}
