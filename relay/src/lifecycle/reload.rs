//! SIGHUP (`systemctl reload`): the configuration read again and applied
//! to the running node, allocations untouched.

use super::logging::LogFilter;
use crate::config::{RunArgs, Settings};
use crate::node::Node;
use crate::tls::Tls;

/// What a reload needs: how the config was given, the TLS certificate in
/// use, and the log filter to change.
pub(super) struct Reload<'a> {
    args: &'a RunArgs,
    tls: Option<Tls>,
    log_filter: LogFilter,
}

impl<'a> Reload<'a> {
    pub(super) fn new(args: &'a RunArgs, settings: &Settings, log_filter: LogFilter) -> Self {
        Self { args, tls: settings.tls.clone(), log_filter }
    }

    /// Reads the config again. A config that does not validate is refused
    /// and the running one stays. Otherwise users, REST secrets, peer
    /// policy, quotas, lifetimes and the log level change at once,
    /// allocations untouched; options that need a restart are named. The
    /// TLS certificate is read again too.
    pub(super) fn run(&mut self, node: &mut Node) {
        let new = match Settings::load(self.args) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "reload refused: the new configuration is invalid; keeping the running one");
                return;
            }
        };
        let restart = node.reconfigure(&new);
        match tracing_subscriber::EnvFilter::try_new(&new.log_level) {
            Ok(filter) => {
                let _ = self.log_filter.reload(filter);
            }
            Err(e) => tracing::warn!(error = %e, "log.level not applied"),
        }
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => tracing::error!(error = %e, "the new TLS certificate is refused; keeping the old one"),
            }
        }
        if restart.is_empty() {
            tracing::info!("configuration reloaded");
        } else {
            tracing::warn!(needs_restart = ?restart, "configuration reloaded; these changes need a restart");
        }
    }
}
