//! The command line: argument definitions for every verb of SPEC.md, and the
//! client side of the `clients`, `keys` and `usage` verbs, which talk to a
//! running server's admin API.
//!
//! With `--json` a verb prints exactly one JSON document on stdout, the admin
//! API's response body; without it, a table or summary. Failures go to stderr;
//! the exit status is 2 for bad usage or input, 1 otherwise.
//!
//! A verb runs in four steps, each in its own place: [`plan`] validates the
//! arguments and decides the request (nothing is sent for bad input);
//! [`target`] resolves the base URL and token; [`http`] sends the request;
//! [`answer`] turns the response into what is printed, with [`output`]
//! formatting the human-readable forms.

pub mod http;
pub mod output;
pub mod target;

use std::io::Write as _;
use std::path::PathBuf;

use ::http::{Method, StatusCode};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use self::http::{encode_segment, ApiRequest, ApiResponse};

use crate::api::{
    ClientBody, ClientId, ClientList, ClientName, CreateClient, CreateKey, CreatedKey,
    ExpiresInDays, GraceSeconds, KeyList, KeyName, Monthly, PatchClient, PerMinute, PlanName,
    QuotaDay, QuotaTz, RotateKey, RotatedKey, Scopes, UsageDoc,
};
use crate::history::HistoryDoc;
use crate::keys::valid_key_id;
use crate::model::ClientStatus;
use output::ClientEvent;

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An authenticating, rate-limiting reverse proxy",
    after_help = "Environment:\n  \
        TOLLGATE_CONFIG       config file, when --config is not given\n  \
        TOLLGATE_ADMIN_URL    admin API base URL, when --admin-url is not given\n  \
        TOLLGATE_ADMIN_TOKEN  admin API bearer token (or the variable the config's admin.token_env names)"
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
    /// Show a client's rate-limit and quota usage, or its daily history.
    Usage {
        /// Client id.
        #[arg(long, value_name = "ID")]
        client: String,
        /// The daily history (local days of the client's quota_tz) instead.
        #[arg(long)]
        history: bool,
        /// First day, YYYY-MM-DD (default: the current period's first day).
        #[arg(long, value_name = "D", requires = "history")]
        from: Option<String>,
        /// Last day, YYYY-MM-DD (default: the current period's last day).
        #[arg(long, value_name = "D", requires = "history")]
        to: Option<String>,
        /// Print the history as CSV (with a header line).
        #[arg(long, requires = "history")]
        csv: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Create a client.
    Create {
        /// Client id: 1-64 characters of a-z, 0-9, '_' and '-'.
        id: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Requests per minute (default: the config's [limits] per_minute).
        #[arg(long, value_name = "N")]
        per_minute: Option<u64>,
        /// Requests per quota period (default: the config's [limits] monthly).
        #[arg(long, value_name = "N")]
        monthly: Option<u64>,
        /// A plan of the config ([plans.<name>]) whose limits apply where the client sets none.
        #[arg(long, value_name = "P")]
        plan: Option<String>,
        #[command(flatten)]
        cycle: CycleArgs,
    },
    /// Change a client: its plan, name, limits or billing cycle.
    Update {
        /// Client id.
        id: String,
        /// Put the client on plan P ([plans.<name>] of the server's config).
        #[arg(long, value_name = "P", conflicts_with = "no_plan")]
        plan: Option<String>,
        /// Take the client off its plan ([limits] apply where it sets none).
        #[arg(long)]
        no_plan: bool,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Requests per minute.
        #[arg(long, value_name = "N")]
        per_minute: Option<u64>,
        /// Requests per quota period.
        #[arg(long, value_name = "N")]
        monthly: Option<u64>,
        #[command(flatten)]
        cycle: CycleArgs,
    },
    /// List clients.
    List,
    /// Show one client.
    Show {
        /// Client id.
        id: String,
    },
    /// Suspend a client: its keys are refused with 403.
    Suspend {
        /// Client id.
        id: String,
    },
    /// Re-activate a suspended client.
    Activate {
        /// Client id.
        id: String,
    },
}

/// A client's billing cycle (docs/billing.md).
#[derive(Debug, Clone, Default, Args)]
pub struct CycleArgs {
    /// Day of the month the quota resets, 1-31 (default 1; a shorter month resets on its last day).
    #[arg(long, value_name = "N")]
    pub quota_day: Option<u64>,
    /// IANA time zone whose local midnight the quota resets at (default UTC).
    #[arg(long, value_name = "ZONE")]
    pub quota_tz: Option<String>,
}

impl CycleArgs {
    fn validated(self) -> Result<(Option<QuotaDay>, Option<QuotaTz>), CliError> {
        let day = self
            .quota_day
            .map(|d| QuotaDay::try_from(d).map_err(|e| flag("--quota-day", e)))
            .transpose()?;
        let tz = self
            .quota_tz
            .map(|z| QuotaTz::try_from(z).map_err(|e| flag("--quota-tz", e)))
            .transpose()?;
        Ok((day, tz))
    }
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its secret is printed once.
    Create {
        /// The client the key belongs to.
        #[arg(long, value_name = "ID")]
        client: String,
        /// Key name, unique within the client (1-128 characters).
        #[arg(long)]
        name: String,
        /// A scope the key holds; repeat for several.
        #[arg(long = "scope", value_name = "S", required = true)]
        scopes: Vec<String>,
        /// Days until the key expires, 1-3650 (default: never).
        #[arg(long, value_name = "N")]
        expires_in_days: Option<i64>,
    },
    /// List a client's keys.
    List {
        /// Client id.
        #[arg(long, value_name = "ID")]
        client: String,
    },
    /// Revoke a key.
    ///
    /// From the moment this succeeds, every tollgate process sharing the store
    /// refuses the key. The admin API answers 204 with an empty body, so with
    /// --json this prints {"id":"<KEY_ID>","revoked":true} instead.
    Revoke {
        /// Key id (key_ followed by 16 characters).
        key_id: String,
    },
    /// Give a key a new secret; the old one keeps working for a grace period.
    ///
    /// The key keeps its id, name, scopes and expiry. The new secret is
    /// printed once; the old secret is refused after --grace-seconds.
    Rotate {
        /// Key id (key_ followed by 16 characters).
        key_id: String,
        /// Seconds the old secret keeps working, 0-2592000 (default: 86400, one day).
        #[arg(long, value_name = "N")]
        grace_seconds: Option<u64>,
    },
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
pub async fn execute(command: Command, global: &GlobalOpts) -> Result<(), CliError> {
    // 1. Validate the arguments: bad input is refused before anything is sent.
    let plan = plan(command)?;
    // 2. Where to, and with which token.
    let env = |name: &str| std::env::var(name).ok();
    let target = target::resolve(global, &env, &target::load_admin_settings)?;
    // 3. One request, bounded by http::REQUEST_TIMEOUT.
    let response = http::send(&target, &plan.request).await?;
    // 4. Error statuses become errors; a success becomes the text to print.
    let out = answer(&plan, &response, global.json, target.token.is_some())?;
    write_stdout(&out)
}

/// A verb, validated: the request it sends and how its answer is shown.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub request: ApiRequest,
    pub view: View,
}

/// How a successful answer is shown without `--json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Client(ClientEvent),
    ClientList,
    CreatedKey { client: String },
    KeyList { client: String },
    Revoked { key_id: String },
    Rotated,
    Usage,
    History { csv: bool },
}

const CLIENTS_PATH: &str = "/admin/v1/clients";
const KEYS_PATH: &str = "/admin/v1/keys";

/// Validates a verb's arguments and decides its request. Bad input is a
/// [`CliError::usage`] (exit 2), so nothing is sent.
pub fn plan(command: Command) -> Result<Plan, CliError> {
    let request = |method: Method, path: String, body: Option<serde_json::Value>| ApiRequest {
        method,
        path,
        body,
    };
    let plan = match command {
        Command::Serve | Command::Check => {
            return Err(CliError::usage(
                "`serve` and `check` do not talk to the admin API",
            ))
        }
        Command::Clients(ClientsCommand::Create {
            id,
            name,
            per_minute,
            monthly,
            cycle,
            plan,
        }) => {
            let (quota_day, quota_tz) = cycle.validated()?;
            let (name, per_minute, monthly) = client_flags(name, per_minute, monthly)?;
            let body = CreateClient {
                plan: plan.map(|p| plan_name(&p)).transpose()?,
                id: client_id(&id)?,
                name,
                per_minute,
                monthly,
                quota_day,
                quota_tz,
            };
            Plan {
                request: request(Method::POST, CLIENTS_PATH.into(), Some(to_json(&body)?)),
                view: View::Client(ClientEvent::Created),
            }
        }
        Command::Clients(ClientsCommand::Update {
            id,
            plan,
            no_plan,
            name,
            per_minute,
            monthly,
            cycle,
        }) => {
            let plan = match (plan, no_plan) {
                (Some(p), _) => Some(Some(plan_name(&p)?)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            let (quota_day, quota_tz) = cycle.validated()?;
            let (name, per_minute, monthly) = client_flags(name, per_minute, monthly)?;
            let body = PatchClient {
                name,
                per_minute,
                monthly,
                plan,
                quota_day,
                quota_tz,
                ..PatchClient::default()
            };
            if body == PatchClient::default() {
                return Err(CliError::usage(
                    "nothing to change: give --plan P, --no-plan, --name, --per-minute, --monthly, --quota-day or --quota-tz",
                ));
            }
            Plan {
                request: request(Method::PATCH, client_path(&id, "")?, Some(to_json(&body)?)),
                view: View::Client(ClientEvent::Updated),
            }
        }
        Command::Clients(ClientsCommand::List) => Plan {
            request: request(Method::GET, CLIENTS_PATH.into(), None),
            view: View::ClientList,
        },
        Command::Clients(ClientsCommand::Show { id }) => Plan {
            request: request(Method::GET, client_path(&id, "")?, None),
            view: View::Client(ClientEvent::Shown),
        },
        Command::Clients(ClientsCommand::Suspend { id }) => {
            set_status(&id, ClientStatus::Suspended, ClientEvent::Suspended)?
        }
        Command::Clients(ClientsCommand::Activate { id }) => {
            set_status(&id, ClientStatus::Active, ClientEvent::Activated)?
        }
        Command::Keys(KeysCommand::Create {
            client,
            name,
            scopes,
            expires_in_days,
        }) => {
            let path = client_path(&client, "/keys")?;
            let name = KeyName::try_from(name.clone())
                .map_err(|e| CliError::usage(format!("invalid key name {name:?}: {e}")))?;
            if scopes.is_empty() {
                return Err(CliError::usage("at least one --scope is required"));
            }
            if scopes.iter().any(|s| s.trim().is_empty()) {
                return Err(CliError::usage("--scope cannot be empty"));
            }
            let body = CreateKey {
                name,
                scopes: Scopes::try_from(scopes).map_err(|e| flag("--scope", e))?,
                expires_in_days: expires_in_days
                    .map(|d| ExpiresInDays::try_from(d).map_err(|e| flag("--expires-in-days", e)))
                    .transpose()?,
            };
            Plan {
                request: request(Method::POST, path, Some(to_json(&body)?)),
                view: View::CreatedKey { client },
            }
        }
        Command::Keys(KeysCommand::List { client }) => Plan {
            request: request(Method::GET, client_path(&client, "/keys")?, None),
            view: View::KeyList { client },
        },
        Command::Keys(KeysCommand::Rotate {
            key_id,
            grace_seconds,
        }) => {
            check_key_id(&key_id)?;
            let body = RotateKey {
                grace_seconds: grace_seconds
                    .map(|g| GraceSeconds::try_from(g).map_err(|e| flag("--grace-seconds", e)))
                    .transpose()?,
            };
            Plan {
                request: request(
                    Method::POST,
                    format!("{KEYS_PATH}/{}/rotate", encode_segment(&key_id)),
                    Some(to_json(&body)?),
                ),
                view: View::Rotated,
            }
        }
        Command::Keys(KeysCommand::Revoke { key_id }) => {
            check_key_id(&key_id)?;
            Plan {
                request: request(
                    Method::DELETE,
                    format!("{KEYS_PATH}/{}", encode_segment(&key_id)),
                    None,
                ),
                view: View::Revoked { key_id },
            }
        }
        Command::Usage {
            client,
            history: false,
            ..
        } => Plan {
            request: request(Method::GET, client_path(&client, "/usage")?, None),
            view: View::Usage,
        },
        Command::Usage {
            client,
            history: true,
            from,
            to,
            csv,
        } => {
            let mut query = Vec::new();
            for (name, value) in [("from", from), ("to", to)] {
                if let Some(v) = value {
                    if crate::history::parse_date(&v).is_none() {
                        return Err(CliError::usage(format!(
                            "--{name} must be a date YYYY-MM-DD, got {v:?}"
                        )));
                    }
                    query.push(format!("{name}={v}"));
                }
            }
            let mut path = client_path(&client, "/usage/history")?;
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            Plan {
                request: request(Method::GET, path, None),
                view: View::History { csv },
            }
        }
    };
    Ok(plan)
}

fn check_key_id(key_id: &str) -> Result<(), CliError> {
    if valid_key_id(key_id) {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "invalid key id {key_id:?}: expected key_ followed by 16 characters \
             of A-Z, a-z, 0-9, '-' and '_'"
        )))
    }
}

fn client_id(id: &str) -> Result<ClientId, CliError> {
    ClientId::try_from(id.to_owned())
        .map_err(|e| CliError::usage(format!("invalid client id {id:?}: {e}")))
}

/// A flag's value refused by its type's rule: `--flag <reason>`.
fn flag(name: &str, reason: crate::api::Invalid) -> CliError {
    CliError::usage(format!("{name} {reason}"))
}

/// A request body as the JSON the CLI sends.
fn to_json(body: &impl serde::Serialize) -> Result<serde_json::Value, CliError> {
    serde_json::to_value(body)
        .map_err(|e| CliError::failure(format!("cannot encode the request: {e}")))
}

/// `/admin/v1/clients/{id}{rest}`, after checking the id.
fn client_path(id: &str, rest: &str) -> Result<String, CliError> {
    client_id(id)?;
    Ok(format!("{CLIENTS_PATH}/{}{rest}", encode_segment(id)))
}

/// `--name`, `--per-minute` and `--monthly` of `clients create|update`, checked.
type ClientFlags = (Option<ClientName>, Option<PerMinute>, Option<Monthly>);

fn client_flags(
    name: Option<String>,
    per_minute: Option<u64>,
    monthly: Option<u64>,
) -> Result<ClientFlags, CliError> {
    Ok((
        name.map(|n| ClientName::try_from(n).map_err(|e| flag("--name", e)))
            .transpose()?,
        per_minute
            .map(|n| PerMinute::try_from(n).map_err(|e| flag("--per-minute", e)))
            .transpose()?,
        monthly
            .map(|n| Monthly::try_from(n).map_err(|e| flag("--monthly", e)))
            .transpose()?,
    ))
}

fn plan_name(p: &str) -> Result<PlanName, CliError> {
    PlanName::try_from(p.to_owned()).map_err(|e| flag("--plan", e))
}

fn set_status(id: &str, status: ClientStatus, event: ClientEvent) -> Result<Plan, CliError> {
    Ok(Plan {
        request: ApiRequest {
            method: Method::PATCH,
            path: client_path(id, "")?,
            body: Some(to_json(&PatchClient {
                status: Some(status),
                ..PatchClient::default()
            })?),
        },
        view: View::Client(event),
    })
}

/// The exit status for an error response: 2 when the server judged the
/// input bad, 1 for everything else (auth, server trouble, surprises).
pub fn exit_status_for(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 | 404 | 409 | 422 => 2,
        _ => 1,
    }
}

/// The admin API's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    code: Option<String>,
}

/// Longest excerpt of an unexpected error body quoted in a message.
const BODY_EXCERPT_CHARS: usize = 200;

/// The error for a non-success response: `<error> (<code>)` from the body,
/// or the status and an excerpt when the body is not the API's error shape.
pub fn api_error(response: &ApiResponse, token_sent: bool) -> CliError {
    let mut message = match serde_json::from_slice::<ErrorBody>(&response.body) {
        Ok(ErrorBody {
            error,
            code: Some(code),
        }) => format!("{} ({})", output::clean(&error), output::clean(&code)),
        Ok(ErrorBody { error, code: None }) => output::clean(&error),
        Err(_) => {
            let text = String::from_utf8_lossy(&response.body);
            let excerpt: String = text.trim().chars().take(BODY_EXCERPT_CHARS).collect();
            if excerpt.is_empty() {
                format!("the admin API answered {}", response.status)
            } else {
                format!(
                    "the admin API answered {}: {}",
                    response.status,
                    output::clean(&excerpt)
                )
            }
        }
    };
    if response.status == StatusCode::UNAUTHORIZED && !token_sent {
        message.push_str(&format!(
            "\nhint: no admin token was sent; set ${} (or the variable the config's \
             admin.token_env names)",
            target::ADMIN_TOKEN_ENV
        ));
    }
    CliError {
        message,
        status: exit_status_for(response.status),
    }
}

/// What a verb prints on stdout for `response`, or the error it fails with.
///
/// With `json`, a success prints the body exactly as sent (checked to be one
/// JSON document) plus a newline; an empty revoke answer prints
/// `{"id":"<key_id>","revoked":true}`.
pub fn answer(
    plan: &Plan,
    response: &ApiResponse,
    json: bool,
    token_sent: bool,
) -> Result<Vec<u8>, CliError> {
    if !response.status.is_success() {
        return Err(api_error(response, token_sent));
    }
    if json {
        return json_output(&plan.view, response);
    }
    let text = match &plan.view {
        View::Client(event) => output::client_summary(*event, &decode::<ClientBody>(response)?),
        View::ClientList => output::clients_table(&decode::<ClientList>(response)?.clients),
        View::CreatedKey { client } => {
            output::created_key_summary(client, &decode::<CreatedKey>(response)?)
        }
        View::KeyList { client } => {
            let list = decode::<KeyList>(response)?;
            output::keys_table(client, &list.keys, list.total)
        }
        View::Revoked { key_id } => output::revoked_summary(key_id),
        View::Rotated => output::rotated_key_summary(&decode::<RotatedKey>(response)?),
        View::Usage => output::usage_summary(&decode::<UsageDoc>(response)?),
        View::History { csv } => output::history_table(&decode::<HistoryDoc>(response)?, *csv),
    };
    Ok(text.into_bytes())
}

fn json_output(view: &View, response: &ApiResponse) -> Result<Vec<u8>, CliError> {
    let body = response.body.trim_ascii();
    if let (View::Revoked { key_id }, true) = (view, body.is_empty()) {
        let doc = serde_json::json!({ "id": key_id, "revoked": true });
        return Ok(format!("{doc}\n").into_bytes());
    }
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(body) {
        return Err(unexpected_body(response, &e));
    }
    let mut out = Vec::with_capacity(body.len() + 1);
    out.extend_from_slice(body);
    out.push(b'\n');
    Ok(out)
}

fn decode<'a, T: Deserialize<'a>>(response: &'a ApiResponse) -> Result<T, CliError> {
    serde_json::from_slice(&response.body).map_err(|e| unexpected_body(response, &e))
}

fn unexpected_body(response: &ApiResponse, e: &serde_json::Error) -> CliError {
    CliError::failure(format!(
        "the admin API answered {} with a body tollgate does not understand: {e}",
        response.status
    ))
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::failure(format!("cannot write to stdout: {e}"))),
    }
}

#[cfg(test)]
mod tests;
