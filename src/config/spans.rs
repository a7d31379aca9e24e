//! Where a problem is: the [`Problem`] type (`line 14: routes[1].scope: ...`),
//! byte offset → line, and the TOML walker that recovers the key path of an
//! error the TOML reader reports only as a span. Also translates serde's
//! wording into TOML's terms. Owns no validation.

use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One thing wrong with the file: `line 14: routes[1].scope: unknown scope ...`.
#[derive(Debug)]
pub(super) struct Problem {
    pub(super) line: Option<usize>,
    pub(super) key: String,
    pub(super) message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// 1-based line of the byte at `offset`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A syntax, type or unknown-key error from the TOML reader, with the key
/// path recovered from its span.
pub(super) fn toml_problem(text: &str, err: &toml::de::Error) -> Problem {
    let mut message = humanize(err.message());
    let Some(span) = err.span() else {
        return Problem {
            line: None,
            key: String::new(),
            message,
        };
    };
    let mut key = key_at(text, &span);
    if err.message() == "duplicate key" {
        // The second definition is not in the parsed tree: name it from the text.
        let name = text.get(span.clone()).map(str::trim).unwrap_or_default();
        if !name.is_empty() {
            message = format!("duplicate key `{name}`");
            if key.is_empty() {
                key = match table_before(text, span.start) {
                    Some(table) => format!("{table}.{name}"),
                    None => name.to_owned(),
                };
            }
        }
    }
    Problem {
        line: Some(line_of(text, span.start)),
        key,
        message,
    }
}

/// The path of the table whose header is the last one before `offset`.
pub(super) fn table_before(text: &str, offset: usize) -> Option<String> {
    fn visit(
        value: &Spanned<DeValue<'_>>,
        path: &str,
        offset: usize,
        best: &mut Option<(usize, String)>,
    ) {
        match value.get_ref() {
            DeValue::Table(table) => {
                let start = value.span().start;
                if start <= offset && best.as_ref().is_none_or(|(b, _)| start >= *b) {
                    *best = Some((start, path.to_owned()));
                }
                for (k, v) in table {
                    visit(
                        v,
                        &format!("{path}.{}", key_segment(k.get_ref())),
                        offset,
                        best,
                    );
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    visit(item, &format!("{path}[{i}]"), offset, best);
                }
            }
            _ => {}
        }
    }
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut best = None;
    for (k, v) in doc.get_ref() {
        visit(v, &key_segment(k.get_ref()), offset, &mut best);
    }
    best.map(|(_, path)| path)
}

/// The path (`routes[1].scope`) of the innermost key or value whose span
/// contains `target`; empty if there is none (a syntax error between keys).
pub(super) fn key_at(text: &str, target: &Range<usize>) -> String {
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut best: Option<(usize, String)> = None;
    walk_table(doc.get_ref(), "", target, &mut best);
    best.map(|(_, path)| path).unwrap_or_default()
}

pub(super) fn walk_table(
    table: &DeTable<'_>,
    prefix: &str,
    target: &Range<usize>,
    best: &mut Option<(usize, String)>,
) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key_segment(key.get_ref())
        } else {
            format!("{prefix}.{}", key_segment(key.get_ref()))
        };
        consider(&key.span(), &path, target, best);
        walk_value(value, &path, target, best);
    }
}

pub(super) fn walk_value(
    value: &Spanned<DeValue<'_>>,
    path: &str,
    target: &Range<usize>,
    best: &mut Option<(usize, String)>,
) {
    consider(&value.span(), path, target, best);
    match value.get_ref() {
        DeValue::Table(table) => walk_table(table, path, target, best),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk_value(item, &format!("{path}[{i}]"), target, best);
            }
        }
        _ => {}
    }
}

/// Keeps the narrowest span containing `target`; on a tie, the deeper path
/// (visited later).
pub(super) fn consider(
    span: &Range<usize>,
    path: &str,
    target: &Range<usize>,
    best: &mut Option<(usize, String)>,
) {
    if span.start <= target.start && target.end <= span.end {
        let width = span.end - span.start;
        if best.as_ref().is_none_or(|(w, _)| width <= *w) {
            *best = Some((width, path.to_owned()));
        }
    }
}

/// A key as written in a path: bare if TOML allows it, else quoted.
pub(super) fn key_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

/// serde's wording, in TOML's terms.
pub(super) fn humanize(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("invalid type: integer `") {
        if let Some((number, tail)) = rest.split_once('`') {
            if tail.starts_with(" as i128") {
                return format!("integer {number} is too large");
            }
        }
    }
    let mut m = message
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key")
        .replace("invalid type: map", "invalid type: table")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("expected a sequence", "expected an array")
        .replace("expected i64", "expected an integer")
        .replace(" as i128", "");
    if let Some(at) = m.find("expected struct ") {
        m.truncate(at);
        m.push_str("expected a table");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawConfig;

    #[test]
    fn toml_errors_get_their_key_path_and_line() {
        let text = "[upstream]\nurl = \"http://h\"\n\n[server]\nlisten = 5\n";
        let err = match toml::from_str::<RawConfig>(text) {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        };
        let p = toml_problem(text, &err).to_string();
        assert!(p.starts_with("line 5: server.listen: invalid type"), "{p}");

        let text = "[[routes]]\npath = \"/\"\n[[routes]]\npath = \"/x\"\nbogus = 1\n";
        let err = match toml::from_str::<RawConfig>(text) {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        };
        let p = toml_problem(text, &err).to_string();
        assert!(
            p.starts_with("line 5: routes[1].bogus: unknown key `bogus`"),
            "{p}"
        );
    }

    #[test]
    fn serde_wording_is_translated() {
        assert_eq!(
            humanize("invalid type: integer `3`, expected struct RawServer"),
            "invalid type: integer `3`, expected a table"
        );
        assert_eq!(
            humanize("invalid type: map, expected a sequence"),
            "invalid type: table, expected an array"
        );
        assert_eq!(
            humanize("invalid type: integer `99999999999999999999` as i128, expected i64"),
            "integer 99999999999999999999 is too large"
        );
    }

    #[test]
    fn lines_are_one_based() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
    }
}
