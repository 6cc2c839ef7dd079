//! `ip2p-relay`: the command line. Each subcommand is one call into the
//! library: the relay's life is `lifecycle::run`.

use std::process::ExitCode;

use clap::Parser;
use ip2p_relay::config::{Cli, Command, Settings};

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
        None => ip2p_relay::lifecycle::run(&cli.run),
    }
}
