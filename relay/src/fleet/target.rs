//! Where the fleet's store is: one Redis (`redis://`, `rediss://`,
//! `redis+unix://`), or the master a set of Sentinels names
//! (`redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER`, a password for
//! the master as `redis+sentinel://:PASSWORD@...`), asked again at every
//! connection, so a failover moves the nodes to the new master.

use std::sync::{Mutex, PoisonError};

use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Client, RedisConnectionInfo, RedisResult};

use crate::config::sentinel_parts;

/// The store's address.
pub(super) enum Target {
    /// One server.
    Direct(Client),
    /// The master the Sentinels name.
    Sentinel(Mutex<SentinelClient>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Direct(_) => "Direct",
            Self::Sentinel(_) => "Sentinel",
        })
    }
}

impl Target {
    /// The target `fleet.redis` names (a `rediss://` server's
    /// certificate checked against `fleet.ca_file` when given, else the
    /// system's roots).
    pub(super) fn parse(fleet: &crate::config::Fleet) -> RedisResult<Self> {
        let url = fleet.redis.as_str();
        let Some((password, sentinels, master)) = sentinel_parts(url) else {
            return match &fleet.ca {
                Some(ca) => {
                    let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(ca.clone()) };
                    Client::build_with_tls(url, certs).map(Self::Direct)
                }
                None => Client::open(url).map(Self::Direct),
            };
        };
        let urls: Vec<String> = sentinels.iter().map(|s| format!("redis://{s}")).collect();
        let mut node = SentinelNodeConnectionInfo::default();
        if let Some(password) = password {
            node = node.set_redis_connection_info(RedisConnectionInfo::default().set_password(password));
        }
        let client = SentinelClient::build(urls, master, Some(node), SentinelServerType::Master)?;
        Ok(Self::Sentinel(Mutex::new(client)))
    }

    /// A client for the store's server now (the Sentinels asked which it
    /// is).
    pub(super) fn client(&self) -> RedisResult<Client> {
        match self {
            Self::Direct(c) => Ok(c.clone()),
            Self::Sentinel(s) => s.lock().unwrap_or_else(PoisonError::into_inner).get_client(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentinel_url_reads_as_its_sentinels_master_and_password() {
        assert_eq!(
            sentinel_parts("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster"),
            Some((None, vec!["10.0.0.1:26379".into(), "10.0.0.2:26379".into()], "mymaster".into()))
        );
        assert_eq!(sentinel_parts("redis+sentinel://:p%2Fw@h:26379/m").unwrap().0.as_deref(), Some("p/w"));
        for bad in ["redis://h:6379", "redis+sentinel://h:26379", "redis+sentinel:///m", "redis+sentinel://h/"] {
            assert_eq!(sentinel_parts(bad), None, "{bad}");
        }
    }
}
