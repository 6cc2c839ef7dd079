//! What `check-config` prints: the settings a file resolves to, as an
//! operator reads them.

use std::fmt::Write;

use super::settings::{Settings, XdpMode};

impl Settings {
    /// The resolved settings, a line each (no secrets).
    #[must_use]
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, value: String| {
            let _ = writeln!(out, "  {name:<13} {value}");
        };
        line("listen", format!("{:?} (UDP and TCP)", self.listen));
        if !self.tls_listen.is_empty() {
            line("tls listen", format!("{:?}", self.tls_listen));
        }
        if !self.connections.proxy_protocol_from.is_empty() {
            let nets: Vec<String> = self.connections.proxy_protocol_from.iter().map(ToString::to_string).collect();
            line("proxy from", format!("{} (their TCP/TLS connections carry a PROXY header)", nets.join(", ")));
        }
        line("workers", format!("{} ({:?} datapath)", self.engine.workers, self.engine.datapath));
        if self.xdp.mode != XdpMode::Off {
            let on = if self.xdp.interfaces.is_empty() {
                "the serving interfaces".to_owned()
            } else {
                self.xdp.interfaces.join(", ")
            };
            let hook = if self.xdp.generic { "generic" } else { "native" };
            let built = if ip2p_xdp::PROGRAM.is_some() { "" } else { " (this build has no XDP program)" };
            line("xdp", format!("{:?} on {on}, {hook} hook, {} channels{built}", self.xdp.mode, self.xdp.channels));
        }
        let turn = &self.turn;
        line("relay", format!("{:?}", turn.relay_ips));
        line("relay ports", format!("{:?}", turn.ports));
        line("realm", turn.credentials.realm.clone());
        line(
            "credentials",
            format!("{} users, {} REST secrets", turn.credentials.users.len(), turn.credentials.rest_secrets.len()),
        );
        line("lifetimes", format!("default {:?}, max {:?}", turn.default_lifetime, turn.max_lifetime));
        let total = self.max_allocations.map_or_else(|| "from relay ports and fds".to_owned(), |n| n.to_string());
        line(
            "quotas",
            format!(
                "allocations {total} on the node, {} per user, {} per address (0: none)",
                self.user_quota, self.ip_quota
            ),
        );
        line(
            "limits",
            format!(
                "{} unauthenticated answers/s per prefix, REST credentials up to {} s ahead",
                turn.unauthenticated_rate, turn.credentials.max_rest_lifetime
            ),
        );
        if let Some(admin) = self.admin {
            let token = if self.admin_token.is_some() { "with a token" } else { "no token" };
            line("admin", format!("{admin} ({token})"));
        }
        if let Some(f) = &self.fleet {
            let url = super::fleet::shown_url(&f.redis);
            line("fleet", format!("{} as node {} in region {}, store {url}", f.name, f.node, f.region));
        }
        if self.nonce_secret_generated {
            line("note", "auth.nonce_secret is not set: nonces will not survive a restart".to_owned());
        }
        out
    }
}
