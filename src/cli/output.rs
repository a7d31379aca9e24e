//! Human-readable output of the admin verbs: aligned tables and summaries.
//!
//! Everything here is pure: it takes the admin API's decoded views and returns
//! the text to print. It never sees the admin token, and the only secret it
//! ever renders is the one in a key-creation response, which is shown once,
//! labelled as such. `--json` output does not pass through here: it is the
//! response body as the server sent it.

use std::fmt::Write as _;

use crate::api::UsageDoc;
use crate::api::{ClientBody, CreatedKey, KeyBody, RotatedKey};

/// What a cell shows for a JSON `null`.
const NULL_CELL: &str = "-";
/// Space between table columns.
const COLUMN_GAP: &str = "  ";

const CLIENT_COLUMNS: [&str; 6] = ["ID", "NAME", "STATUS", "PER_MINUTE", "MONTHLY", "CREATED"];
const KEY_COLUMNS: [&str; 7] = [
    "ID",
    "NAME",
    "PREFIX",
    "SCOPES",
    "CREATED",
    "LAST_USED",
    "EXPIRES",
];

/// What just happened to a client, for the line above its summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent {
    Created,
    Shown,
    Suspended,
    Activated,
    Updated,
}

/// Makes text from the server safe for one table cell or summary line:
/// control characters (newlines, escapes) become `?`, so they can neither
/// break the alignment nor drive the terminal.
pub(super) fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn or_null(value: Option<&str>) -> String {
    value.map_or_else(|| NULL_CELL.to_string(), clean)
}

/// Aligns `rows` under `headers`: columns padded to their widest cell and
/// separated by two spaces; no line ends in spaces. Every line ends with a
/// newline.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str(COLUMN_GAP);
            }
            line.push_str(cell);
            let pad = widths
                .get(i)
                .map_or(0, |w| w.saturating_sub(cell.chars().count()));
            line.extend(std::iter::repeat_n(' ', pad));
        }
        // Padding after the last non-empty cell would only be trailing spaces.
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `clients list`: one row per client.
pub fn clients_table(clients: &[ClientBody]) -> String {
    if clients.is_empty() {
        return "No clients.\n".to_string();
    }
    let rows: Vec<Vec<String>> = clients
        .iter()
        .map(|c| {
            vec![
                clean(&c.id),
                clean(&c.name),
                c.status.as_str().to_string(),
                c.per_minute.to_string(),
                c.monthly.to_string(),
                clean(&c.created_at),
            ]
        })
        .collect();
    table(&CLIENT_COLUMNS, &rows)
}

/// `clients create | show | suspend | activate`: what happened, then the client.
pub fn client_summary(event: ClientEvent, client: &ClientBody) -> String {
    let id = clean(&client.id);
    let mut out = match event {
        ClientEvent::Created => format!("Client {id} created.\n"),
        ClientEvent::Shown => format!("Client {id}\n"),
        ClientEvent::Suspended => format!("Client {id} suspended: its keys are refused.\n"),
        ClientEvent::Activated => format!("Client {id} activated.\n"),
        ClientEvent::Updated => format!("Client {id} updated.\n"),
    };
    let sources = client.limit_sources;
    let fields = [
        ("name", clean(&client.name)),
        ("status", client.status.as_str().to_string()),
        ("plan", client.plan.as_deref().map_or("-".into(), clean)),
        (
            "per minute",
            format!(
                "{} (from {})",
                client.per_minute,
                sources.per_minute.as_str()
            ),
        ),
        (
            "monthly",
            format!("{} (from {})", client.monthly, sources.monthly.as_str()),
        ),
        ("created", clean(&client.created_at)),
    ];
    push_fields(&mut out, &fields);
    out
}

/// `keys list`: one row per key, `-` for a null timestamp.
pub fn keys_table(client_id: &str, keys: &[KeyBody], total: usize) -> String {
    if keys.is_empty() && total == 0 {
        return format!("No keys for client {}.\n", clean(client_id));
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                clean(&k.id),
                clean(&k.name),
                clean(&k.prefix),
                clean(&k.scopes.join(",")),
                clean(&k.created_at),
                or_null(k.last_used_at.as_deref()),
                or_null(k.expires_at.as_deref()),
            ]
        })
        .collect();
    let mut out = table(&KEY_COLUMNS, &rows);
    if total != keys.len() {
        let _ = writeln!(out, "({} of {total} keys shown)", keys.len());
    }
    out
}

/// `keys create`: the key, then its secret, labelled as shown only this once.
pub fn created_key_summary(client_id: &str, key: &CreatedKey) -> String {
    let mut out = format!(
        "Key {} created for client {}.\n",
        clean(&key.id),
        clean(client_id)
    );
    let fields = [
        ("name", clean(&key.name)),
        ("scopes", clean(&key.scopes.join(", "))),
        ("created", clean(&key.created_at)),
        (
            "expires",
            key.expires_at
                .as_deref()
                .map_or_else(|| "never".to_string(), clean),
        ),
    ];
    push_fields(&mut out, &fields);
    out.push('\n');
    out.push_str("Secret (store it now; it cannot be shown again):\n");
    let _ = writeln!(out, "  {}", clean(&key.key));
    out
}

/// `keys revoke`.
/// `keys rotate`: the new secret, shown once, and when the old one stops working.
pub fn rotated_key_summary(key: &RotatedKey) -> String {
    let k = &key.key;
    let mut out = format!("Key {} rotated.\n", clean(&k.id));
    let fields = [
        ("name", clean(&k.name)),
        ("scopes", clean(&k.scopes.join(", "))),
        ("old secret refused from", clean(&key.previous_expires_at)),
    ];
    push_fields(&mut out, &fields);
    out.push('\n');
    out.push_str("New secret (store it now; it cannot be shown again):\n");
    let _ = writeln!(out, "  {}", clean(&k.key));
    out
}

pub fn revoked_summary(key_id: &str) -> String {
    format!(
        "Key {} revoked: it is refused from now on.\n",
        clean(key_id)
    )
}

/// `usage`: both limits on one line.
pub fn usage_summary(usage: &UsageDoc) -> String {
    let r = &usage.rate_limit;
    let q = &usage.monthly_quota;
    format!(
        "rate limit: {}/{} remaining this {}, resets at {}; \
         monthly quota: {}/{} used ({} remaining), {} \u{2013} {}\n",
        r.remaining,
        r.limit,
        clean(&r.period),
        clean(&r.reset_at),
        q.used,
        q.limit,
        q.remaining,
        clean(&q.period_start),
        clean(&q.period_end),
    )
}

/// Indented `label: value` lines, values aligned.
fn push_fields(out: &mut String, fields: &[(&str, String)]) {
    let width = fields.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, value) in fields {
        let _ = writeln!(
            out,
            "  {:<width$}  {value}",
            format!("{label}:"),
            width = width + 1
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ClientStatus;

    fn client(id: &str, name: &str, status: ClientStatus) -> ClientBody {
        ClientBody {
            id: id.into(),
            name: name.into(),
            status,
            per_minute: 100,
            monthly: 10_000,
            plan: None,
            limit_sources: crate::api::bodies::LimitSources {
                per_minute: crate::limits::policy::Source::Limits,
                monthly: crate::limits::policy::Source::Limits,
            },
            created_at: "2026-02-10T10:00:00Z".into(),
        }
    }

    fn key(id: &str, name: &str, last_used: Option<&str>, expires: Option<&str>) -> KeyBody {
        KeyBody {
            id: id.into(),
            name: name.into(),
            prefix: "sk_live_AbCd".into(),
            scopes: vec!["read:charge_points".into(), "write:api_keys".into()],
            created_at: "2026-02-10T10:00:00Z".into(),
            last_used_at: last_used.map(Into::into),
            expires_at: expires.map(Into::into),
        }
    }

    #[test]
    fn table_aligns_columns_without_trailing_spaces() {
        let out = table(
            &["A", "LONG_HEADER", "C"],
            &[
                vec!["wide-cell".into(), "x".into(), "end".into()],
                vec!["y".into(), "z".into(), "".into()],
            ],
        );
        assert_eq!(
            out,
            "A          LONG_HEADER  C\n\
             wide-cell  x            end\n\
             y          z\n"
        );
    }

    #[test]
    fn table_counts_characters_not_bytes() {
        let out = table(&["N", "X"], &[vec!["é".into(), "1".into()]]);
        assert_eq!(out, "N  X\né  1\n");
    }

    #[test]
    fn clients_table_has_the_documented_columns() {
        let out = clients_table(&[
            client("acme", "Acme Corp", ClientStatus::Active),
            client("globex-2", "Globex", ClientStatus::Suspended),
        ]);
        assert_eq!(
            out,
            "ID        NAME       STATUS     PER_MINUTE  MONTHLY  CREATED\n\
             acme      Acme Corp  active     100         10000    2026-02-10T10:00:00Z\n\
             globex-2  Globex     suspended  100         10000    2026-02-10T10:00:00Z\n"
        );
    }

    #[test]
    fn empty_client_list_says_so() {
        assert_eq!(clients_table(&[]), "No clients.\n");
    }

    #[test]
    fn keys_table_shows_dash_for_null() {
        let out = keys_table(
            "acme",
            &[
                key("key_AAAAAAAAAAAAAAAA", "ci", None, None),
                key(
                    "key_BBBBBBBBBBBBBBBB",
                    "deploy",
                    Some("2026-02-11T08:00:00Z"),
                    Some("2027-02-10T10:00:00Z"),
                ),
            ],
            2,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "ID                    NAME    PREFIX        SCOPES                             \
             CREATED               LAST_USED             EXPIRES"
        );
        assert_eq!(
            lines[1],
            "key_AAAAAAAAAAAAAAAA  ci      sk_live_AbCd  read:charge_points,write:api_keys  \
             2026-02-10T10:00:00Z  -                     -"
        );
        assert!(lines[2].ends_with("2026-02-11T08:00:00Z  2027-02-10T10:00:00Z"));
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn keys_table_notes_a_partial_listing() {
        let out = keys_table("acme", &[key("key_AAAAAAAAAAAAAAAA", "ci", None, None)], 3);
        assert!(out.ends_with("(1 of 3 keys shown)\n"), "{out}");
    }

    #[test]
    fn empty_key_list_names_the_client() {
        assert_eq!(keys_table("acme", &[], 0), "No keys for client acme.\n");
    }

    #[test]
    fn control_characters_cannot_break_a_table() {
        let out = clients_table(&[client("acme", "Evil\n\u{1b}[31mCorp", ClientStatus::Active)]);
        assert_eq!(out.lines().count(), 2);
        assert!(out.contains("Evil??[31mCorp"));
        assert!(!out.contains('\u{1b}'));
    }

    #[test]
    fn client_summaries_say_what_happened() {
        let c = client("acme", "Acme Corp", ClientStatus::Suspended);
        let out = client_summary(ClientEvent::Suspended, &c);
        assert_eq!(
            out,
            "Client acme suspended: its keys are refused.\n\
             \x20 name:        Acme Corp\n\
             \x20 status:      suspended\n\
             \x20 plan:        -\n\
             \x20 per minute:  100 (from limits)\n\
             \x20 monthly:     10000 (from limits)\n\
             \x20 created:     2026-02-10T10:00:00Z\n"
        );
        assert!(client_summary(ClientEvent::Created, &c).starts_with("Client acme created.\n"));
        assert!(client_summary(ClientEvent::Activated, &c).starts_with("Client acme activated.\n"));
        assert!(client_summary(ClientEvent::Shown, &c).starts_with("Client acme\n"));
    }

    #[test]
    fn created_key_shows_the_secret_once_labelled() {
        let k = CreatedKey {
            id: "key_AAAAAAAAAAAAAAAA".into(),
            name: "ci".into(),
            key: "sk_live_secretsecretsecret".into(),
            scopes: vec!["read:charge_points".into()],
            created_at: "2026-02-10T10:00:00Z".into(),
            expires_at: None,
        };
        let out = created_key_summary("acme", &k);
        assert!(out.starts_with("Key key_AAAAAAAAAAAAAAAA created for client acme.\n"));
        assert!(out.contains("  expires:  never\n"), "{out}");
        assert!(out.ends_with(
            "Secret (store it now; it cannot be shown again):\n  sk_live_secretsecretsecret\n"
        ));
        assert_eq!(out.matches("sk_live_secretsecretsecret").count(), 1);
    }

    #[test]
    fn usage_summary_reads_as_one_line() {
        let usage: UsageDoc = serde_json::from_str(
            r#"{
              "rate_limit":    {"limit": 100, "remaining": 87, "period": "minute", "reset_at": "2026-02-10T10:01:00Z"},
              "monthly_quota": {"limit": 10000, "used": 3456, "remaining": 6544, "period": "month",
                                "period_start": "2026-02-01", "period_end": "2026-02-28"}
            }"#,
        )
        .expect("the SPEC.md example parses");
        assert_eq!(
            usage_summary(&usage),
            "rate limit: 87/100 remaining this minute, resets at 2026-02-10T10:01:00Z; \
             monthly quota: 3456/10000 used (6544 remaining), 2026-02-01 \u{2013} 2026-02-28\n"
        );
    }

    #[test]
    fn revoked_summary_names_the_key() {
        assert_eq!(
            revoked_summary("key_AAAAAAAAAAAAAAAA"),
            "Key key_AAAAAAAAAAAAAAAA revoked: it is refused from now on.\n"
        );
    }
}
