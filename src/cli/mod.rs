//! The command line: argument definitions for every verb of SPEC.md, and the
//! client side of the `clients`, `keys` and `usage` verbs, which talk to a
//! running server's admin API.
//!
//! With `--json` a verb prints exactly one JSON document on stdout, the admin
//! API's response body; without it, a table or summary. Failures go to stderr;
//! the exit status is 2 for bad usage or input, 1 otherwise.

pub mod http;
pub mod output;
pub mod target;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An authenticating, rate-limiting reverse proxy"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Config file (default: $TOLLGATE_CONFIG, else tollgate.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Admin API base URL (default: $TOLLGATE_ADMIN_URL, else the config's [admin] listen).
    #[arg(long, global = true, value_name = "URL")]
    pub admin_url: Option<String>,
    /// Print the admin API's JSON response instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve,
    /// Validate the config, print what was understood, exit 0 (valid) or 2.
    Check,
    /// Manage clients (organisations).
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Show a client's rate-limit and quota usage.
    Usage {
        #[arg(long, value_name = "ID")]
        client: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Create a client.
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_name = "N")]
        per_minute: Option<u64>,
        #[arg(long, value_name = "N")]
        monthly: Option<u64>,
    },
    /// List clients.
    List,
    /// Show one client.
    Show { id: String },
    /// Suspend a client: its keys are refused with 403.
    Suspend { id: String },
    /// Re-activate a suspended client.
    Activate { id: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        #[arg(long, value_name = "ID")]
        client: String,
        #[arg(long)]
        name: String,
        #[arg(long = "scope", value_name = "S", required = true)]
        scopes: Vec<String>,
        #[arg(long, value_name = "N")]
        expires_in_days: Option<i64>,
    },
    /// List a client's keys.
    List {
        #[arg(long, value_name = "ID")]
        client: String,
    },
    /// Revoke a key.
    Revoke { key_id: String },
}

/// A failure of an admin verb, with its exit status.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    /// 2 for bad usage or input, 1 otherwise.
    pub status: u8,
}

impl CliError {
    /// Bad usage or input: exit 2.
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            status: 2,
        }
    }

    /// Anything else (server refused, unreachable, broken): exit 1.
    pub fn failure(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            status: 1,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// Runs a `clients`, `keys` or `usage` verb against the admin API.
pub async fn execute(_command: Command, _global: &GlobalOpts) -> Result<(), CliError> {
    Err(CliError {
        message: "not implemented".into(),
        status: 1,
    })
}
