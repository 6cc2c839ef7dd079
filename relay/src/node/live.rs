//! The configuration the workers run with, kept by the handle: the
//! node's settings (after reloads) and what its fleet's store adds (users
//! and REST secrets), merged and pushed to every worker whenever either
//! changes.

use std::sync::{Arc, PoisonError};

use super::handle::{Live, NodeHandle};
use super::resources::worker_config;
use crate::config::Settings;
use crate::datapath::worker::Command;
use crate::fleet::FleetAuth;

impl NodeHandle {
    /// The workers run with `settings` (a reload's), with what the fleet
    /// adds.
    pub(super) fn run_with(&self, settings: Settings) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.settings = settings;
        self.push(&live);
    }

    /// The workers run with the fleet's users and REST secrets `auth`
    /// beside the configuration's.
    pub(crate) fn set_fleet_auth(&self, auth: FleetAuth) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.fleet_auth = Some(auth);
        self.push(&live);
    }

    fn push(&self, live: &Live) {
        let mut settings = live.settings.clone();
        if let Some(auth) = &live.fleet_auth {
            auth.merge(&mut settings.turn.credentials);
        }
        for (id, w) in self.workers.iter().enumerate() {
            w.send(Command::Reconfigure(Arc::new(worker_config(&settings, id, self.workers.len()))));
        }
        *self.credentials.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(settings.turn.credentials);
    }
}
