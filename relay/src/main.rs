//! `ip2p-relay`: the command line. Each subcommand is one call into the
//! library: the relay's life is `lifecycle::run`.

use std::process::ExitCode;

use clap::Parser;
use ip2p_relay::config::{Cli, Command, Settings};
use ip2p_relay::ctl::{Call, FleetChange};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CheckConfig { file }) => {
            let mut args = cli.run;
            args.config = Some(file.clone());
            match Settings::load(&args) {
                Ok(s) => {
                    print!("{}: valid\n{}", file.display(), s.summary());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ip2p-relay: {}: {e}", file.display());
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::InitConfig { file }) => match ip2p_relay::config::write_initial(&file) {
            Ok(()) => {
                println!("{}: written (loopback only until edited)", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ip2p-relay: {}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        Some(Command::Sessions { user }) => ctl(&cli.run, &Call::Sessions { user }),
        Some(Command::Kill { id }) => ctl(&cli.run, &Call::Kill { id }),
        Some(Command::Revoke { user, duration }) => ctl(&cli.run, &Call::Revoke { user, seconds: duration }),
        Some(Command::Credentials { user, ttl }) => ctl(&cli.run, &Call::Credentials { user, ttl }),
        Some(Command::FleetUser { user, password_file, remove }) => {
            let change = match (user, password_file, remove) {
                (Some(user), _, true) => FleetChange::Remove(user),
                (Some(user), Some(file), false) => match read_secret(&file) {
                    Ok(password) => FleetChange::Set(user, password),
                    Err(code) => return code,
                },
                _ => FleetChange::List,
            };
            ctl(&cli.run, &Call::FleetUser(change))
        }
        Some(Command::FleetSecret { add_file, remove }) => {
            let change = match (add_file, remove) {
                (Some(file), _) => match read_secret(&file) {
                    Ok(secret) => FleetChange::Set(String::new(), secret),
                    Err(code) => return code,
                },
                (None, Some(fingerprint)) => FleetChange::Remove(fingerprint),
                (None, None) => FleetChange::List,
            };
            ctl(&cli.run, &Call::FleetSecret(change))
        }
        None => ip2p_relay::lifecycle::run(&cli.run),
    }
}

/// An operator's call to the running node: what it answered, or why not.
fn ctl(args: &ip2p_relay::config::RunArgs, call: &Call) -> ExitCode {
    match ip2p_relay::ctl::run(args, call) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ip2p-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A password or secret from `file`, its first line (never a flag: the
/// process list would show it).
fn read_secret(file: &std::path::Path) -> Result<String, ExitCode> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(text.lines().next().unwrap_or_default().trim().to_owned()),
        Err(e) => {
            eprintln!("ip2p-relay: {}: {e}", file.display());
            Err(ExitCode::FAILURE)
        }
    }
}
