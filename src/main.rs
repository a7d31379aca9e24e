//! The `tollgate` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;
use tollgate::cli::{Cli, Command};
use tollgate::config::{Config, CONFIG_ENV, DEFAULT_CONFIG_PATH};

fn main() -> ExitCode {
    // One TLS stack for the whole process (rustls with ring), installed before
    // anything builds a TLS config.
    tollgate::tls::install_default_provider();
    let cli = Cli::parse();
    let config_path = || {
        cli.global
            .config
            .clone()
            .or_else(|| std::env::var_os(CONFIG_ENV).map(Into::into))
            .unwrap_or_else(|| DEFAULT_CONFIG_PATH.into())
    };
    match cli.command {
        Command::Check => match Config::load(&config_path()) {
            Ok(config) => {
                use std::io::Write;
                // A closed pipe (`tollgate check | head`) is not an error of the config.
                let _ = writeln!(std::io::stdout(), "{}", config.describe());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Serve => {
            let config = match Config::load(&config_path()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            match tollgate::server::serve_blocking(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tollgate: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        command => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tollgate: cannot start runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match runtime.block_on(tollgate::cli::execute(command, &cli.global)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tollgate: {}", e.message);
                    ExitCode::from(e.status)
                }
            }
        }
    }
}

/// mimalloc, not the system allocator: the request path allocates and frees
/// dozens of small objects per request (hyper's buffers and header maps, the
/// admission call), where glibc's malloc spent ~18 % of tollgate's user time
/// at 1,000 keys on Redis (docs/operations.md, "Allocator").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
