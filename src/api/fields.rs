//! The validated values of the API bodies. Each newtype's `TryFrom` is the
//! only way to make one and carries the message a bad value is refused with;
//! serde goes through the same `TryFrom`, so a value that deserialised is a
//! valid one, and the server, the CLI and the documentation (docs/api.md,
//! openapi.yaml) share one rule and one message per field.
//!
//! Messages are reasons without the field's name ("must be at least 1"): the
//! server prefixes the JSON field (`"per_minute": ...`), the CLI its flag.

use std::num::NonZeroU64;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::model::valid_client_id;

/// Longest client name, in characters.
pub const MAX_CLIENT_NAME_CHARS: usize = 256;
/// Longest key name, in characters.
pub const MAX_KEY_NAME_CHARS: usize = 128;
/// Largest per-minute or monthly limit: every count stays exact in a Lua
/// (double-precision) number, 2^53.
pub const MAX_LIMIT: u64 = 1_000_000_000_000_000;
/// Accepted `expires_in_days`.
pub const EXPIRES_IN_DAYS: RangeInclusive<i64> = 1..=3650;
/// Accepted `grace_seconds` of a rotation: up to 30 days.
pub const GRACE_SECONDS: RangeInclusive<u64> = 0..=30 * 86_400;
/// The grace period when none is given: 24 hours.
pub const DEFAULT_GRACE_SECONDS: u64 = 86_400;

/// Why a value was refused: a reason for a person, without the field's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(reason: impl Into<String>) -> Invalid {
    Invalid(reason.into())
}

/// Refuses a text with a control character, naming the first one.
fn no_control(s: &str) -> Result<(), Invalid> {
    match s.chars().enumerate().find(|(_, c)| c.is_control()) {
        Some((at, c)) => Err(invalid(format!(
            "must not contain control characters (U+{:04X} at character {})",
            c as u32,
            at + 1
        ))),
        None => Ok(()),
    }
}

/// A text of 1 to `max` characters without control characters.
fn bounded_text(s: &str, max: usize) -> Result<(), Invalid> {
    let n = s.chars().count();
    if !(1..=max).contains(&n) {
        return Err(invalid(format!("must be 1 to {max} characters, got {n}")));
    }
    no_control(s)
}

/// A JSON number that is an integer as JSON Schema counts one (`5`, `5.0`,
/// `-1`), whatever its size; the numeric fields' rules apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Integer(pub i128);

impl<'de> Deserialize<'de> for Integer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Integer;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Integer, E> {
                Ok(Integer(n.into()))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Integer, E> {
                Ok(Integer(n.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, x: f64) -> Result<Integer, E> {
                // 1e30 is an integer too; beyond i128 it is refused as too large anyway.
                if x.is_finite() && x.fract() == 0.0 && x.abs() < 1e38 {
                    Ok(Integer(x as i128))
                } else {
                    Err(E::invalid_type(serde::de::Unexpected::Float(x), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `n` within `range`, or the message that says which range.
fn within(n: i128, lo: i128, hi: i128) -> Result<i128, Invalid> {
    if (lo..=hi).contains(&n) {
        Ok(n)
    } else {
        Err(invalid(format!("must be between {lo} and {hi}, got {n}")))
    }
}

/// A client id: `[a-z0-9][a-z0-9_-]{0,63}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

impl TryFrom<String> for ClientId {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        if valid_client_id(&s) {
            Ok(ClientId(s))
        } else {
            Err(invalid(
                "must be 1 to 64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit",
            ))
        }
    }
}

/// A plan name, shaped like a client id: `[a-z0-9][a-z0-9_-]{0,63}`. Whether
/// the config defines it is checked by the server (the CLI cannot know).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PlanName(String);

impl TryFrom<String> for PlanName {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        if valid_client_id(&s) {
            Ok(PlanName(s))
        } else {
            Err(invalid(
                "must be a plan name: 1 to 64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit",
            ))
        }
    }
}

/// A client's display name: 1 to 256 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientName(String);

impl TryFrom<String> for ClientName {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        bounded_text(&s, MAX_CLIENT_NAME_CHARS)?;
        Ok(ClientName(s))
    }
}

/// A key's name: 1 to 128 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyName(String);

impl TryFrom<String> for KeyName {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        bounded_text(&s, MAX_KEY_NAME_CHARS)?;
        Ok(KeyName(s))
    }
}

/// A key's scopes: a non-empty list of non-empty names, duplicates dropped
/// (first occurrence kept). Whether each is a known scope depends on the
/// config and is checked where the config is at hand ([`Scopes::unknown`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Scopes(Vec<String>);

impl TryFrom<Vec<String>> for Scopes {
    type Error = Invalid;
    fn try_from(list: Vec<String>) -> Result<Self, Invalid> {
        if list.is_empty() {
            return Err(invalid("must not be empty"));
        }
        let mut out: Vec<String> = Vec::with_capacity(list.len());
        for s in list {
            if s.trim().is_empty() {
                return Err(invalid("must not contain an empty scope"));
            }
            if !out.contains(&s) {
                out.push(s);
            }
        }
        Ok(Scopes(out))
    }
}

impl Scopes {
    /// The first scope not in `known`, if any.
    pub fn unknown<'a>(&'a self, known: &std::collections::BTreeSet<String>) -> Option<&'a str> {
        self.0
            .iter()
            .find(|s| !known.contains(s.as_str()))
            .map(String::as_str)
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// Days until a new key expires: 1 to 3650.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Integer", into = "i64")]
pub struct ExpiresInDays(i64);

impl TryFrom<Integer> for ExpiresInDays {
    type Error = Invalid;
    fn try_from(d: Integer) -> Result<Self, Invalid> {
        let (lo, hi) = (*EXPIRES_IN_DAYS.start(), *EXPIRES_IN_DAYS.end());
        let d = within(d.0, lo.into(), hi.into())?;
        Ok(ExpiresInDays(d as i64))
    }
}

impl TryFrom<i64> for ExpiresInDays {
    type Error = Invalid;
    fn try_from(d: i64) -> Result<Self, Invalid> {
        Self::try_from(Integer(d.into()))
    }
}

impl ExpiresInDays {
    pub fn days(self) -> i64 {
        self.0
    }
}

/// Seconds a rotated-out secret keeps working: 0 to 2592000 (30 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Integer", into = "u64")]
pub struct GraceSeconds(u64);

impl TryFrom<Integer> for GraceSeconds {
    type Error = Invalid;
    fn try_from(g: Integer) -> Result<Self, Invalid> {
        let (lo, hi) = (*GRACE_SECONDS.start(), *GRACE_SECONDS.end());
        let g = within(g.0, lo.into(), hi.into())?;
        Ok(GraceSeconds(g as u64))
    }
}

impl TryFrom<u64> for GraceSeconds {
    type Error = Invalid;
    fn try_from(g: u64) -> Result<Self, Invalid> {
        Self::try_from(Integer(g.into()))
    }
}

impl Default for GraceSeconds {
    fn default() -> Self {
        GraceSeconds(DEFAULT_GRACE_SECONDS)
    }
}

impl GraceSeconds {
    pub fn secs(self) -> u64 {
        self.0
    }
}

macro_rules! limit {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "Integer", into = "u64")]
        pub struct $name(NonZeroU64);

        impl TryFrom<Integer> for $name {
            type Error = Invalid;
            fn try_from(n: Integer) -> Result<Self, Invalid> {
                if n.0 < 1 {
                    return Err(invalid("must be at least 1"));
                }
                if n.0 > i128::from(MAX_LIMIT) {
                    return Err(invalid(format!("must be at most {MAX_LIMIT}, got {}", n.0)));
                }
                NonZeroU64::new(n.0 as u64)
                    .map($name)
                    .ok_or_else(|| invalid("must be at least 1"))
            }
        }

        impl TryFrom<u64> for $name {
            type Error = Invalid;
            fn try_from(n: u64) -> Result<Self, Invalid> {
                Self::try_from(Integer(n.into()))
            }
        }

        impl $name {
            pub fn get(self) -> u64 {
                self.0.get()
            }
        }

        impl From<$name> for u64 {
            fn from(v: $name) -> u64 {
                v.get()
            }
        }
    };
}

limit!(
    /// A client's requests per minute: 1 to [`MAX_LIMIT`].
    PerMinute
);
limit!(
    /// A client's requests per calendar month: 1 to [`MAX_LIMIT`].
    Monthly
);

macro_rules! text_into {
    ($($name:ident),*) => {$(
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }
    )*};
}

text_into!(ClientId, ClientName, KeyName, PlanName);

impl From<Scopes> for Vec<String> {
    fn from(s: Scopes) -> Vec<String> {
        s.0
    }
}

impl From<ExpiresInDays> for i64 {
    fn from(d: ExpiresInDays) -> i64 {
        d.0
    }
}

impl From<GraceSeconds> for u64 {
    fn from(g: GraceSeconds) -> u64 {
        g.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_control_characters_naming_them() {
        let e = ClientName::try_from("Acme\u{f}Corp".to_owned()).unwrap_err();
        assert_eq!(
            e.0,
            "must not contain control characters (U+000F at character 5)"
        );
        let e = KeyName::try_from("a\nb".to_owned()).unwrap_err();
        assert!(e.0.contains("U+000A"), "{e}");
        assert!(ClientName::try_from("é".repeat(256)).is_ok());
        assert_eq!(
            ClientName::try_from("x".repeat(257)).unwrap_err().0,
            "must be 1 to 256 characters, got 257"
        );
        assert!(KeyName::try_from("é".repeat(128)).is_ok());
        assert!(KeyName::try_from("x".repeat(129)).is_err());
        assert!(KeyName::try_from(String::new()).is_err());
    }

    #[test]
    fn numbers_and_lists() {
        assert_eq!(PerMinute::try_from(0).unwrap_err().0, "must be at least 1");
        assert_eq!(PerMinute::try_from(7).map(PerMinute::get), Ok(7));
        assert!(Monthly::try_from(MAX_LIMIT + 1).is_err());
        assert!(Monthly::try_from(MAX_LIMIT).is_ok());
        assert_eq!(
            ExpiresInDays::try_from(0).unwrap_err().0,
            "must be between 1 and 3650, got 0"
        );
        assert!(ExpiresInDays::try_from(3650).is_ok());
        assert!(GraceSeconds::try_from(2_592_001).is_err());
        assert_eq!(GraceSeconds::default().secs(), 86_400);
        let s = Scopes::try_from(vec!["a".into(), "b".into(), "a".into()]).unwrap();
        assert_eq!(s.as_slice(), ["a", "b"]);
        assert!(Scopes::try_from(vec![]).is_err());
        assert!(Scopes::try_from(vec![" ".into()]).is_err());
        assert!(ClientId::try_from("Acme".to_owned()).is_err());
    }

    /// serde reaches the same constructors: a bad value never deserialises.
    #[test]
    fn serde_goes_through_the_constructors() {
        let e = serde_json::from_str::<ClientName>("\"a\\u000fb\"").unwrap_err();
        assert!(e.to_string().contains("U+000F"), "{e}");
        assert!(serde_json::from_str::<PerMinute>("0").is_err());
        // JSON Schema's integers: 5.0 is one, 5.5 is not.
        assert_eq!(
            serde_json::from_str::<PerMinute>("5.0")
                .map(PerMinute::get)
                .ok(),
            Some(5)
        );
        assert!(serde_json::from_str::<PerMinute>("5.5").is_err());
        assert!(serde_json::from_str::<PerMinute>("\"5\"").is_err());
        let e = serde_json::from_str::<GraceSeconds>("-1").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("must be between 0 and 2592000, got -1"),
            "{e}"
        );
        let e = serde_json::from_str::<Monthly>("1e30").unwrap_err();
        assert!(e.to_string().starts_with("must be at most"), "{e}");
        assert_eq!(
            serde_json::to_string(&PerMinute::try_from(5).unwrap()).unwrap(),
            "5"
        );
    }
}
