//! Configuration, resolved once: a TOML file (every key documented in
//! `deploy/ip2p-relay.example.toml`) and command-line flags that override
//! it, parsed (`file`, `cli`), resolved and checked section by section
//! (`resolve`, `auth`, `check`) into the typed [`Settings`] the node runs
//! with; every default is a named constant (`defaults`). A bad value never
//! starts a half-working node: its [`ConfigError`] names the key.
//!
//! This file only declares the parts and says what the module offers;
//! the parts never import it, so nothing here points back.

#![warn(clippy::too_many_lines)]

mod auth;
mod check;
mod cli;
pub mod defaults;
mod file;
mod fleet;
mod init;
mod resolve;
mod settings;
mod summary;
#[cfg(test)]
mod tests;

pub use self::cli::{Cli, Command, RunArgs};
pub use self::fleet::sentinel_parts;
pub use self::init::{initial_config, write_initial};
pub use self::settings::{
    ConfigError, Connections, DatapathKind, Engine, Fleet, LogFormat, Settings, StoreDown, Usage, Xdp, XdpMode,
};
