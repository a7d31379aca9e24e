//! Policies (SPEC.md "Policies"): which limits and which shadow setting a
//! request is judged by, and the units arithmetic of a route's cost.
//!
//! Owns plan resolution (a client's own value, else its plan's, else
//! `[limits]`), the shadow precedence (route, else plan, else `[limits]`), how
//! many requests of a batch fit at a cost, and the compact plan table the
//! Redis script searches (`admit.lua`, its "-- Policies:" blocks run the same
//! rules; the store conformance suite holds both stores to the same answers).
//! Pure: no I/O, no clock.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

use super::{Limits, Verdict};

/// Most units one request of a route may cost (`[[routes]] cost`).
pub const MAX_COST: u64 = 10_000;

/// `[plans.<name>]`: a named limit set. A limit left out falls through to
/// `[limits]`; `shadow` left out falls through to `[limits] shadow`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct PlanLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<bool>,
}

/// The plans and the `[limits] shadow` of one config snapshot, built once
/// per (re)load, with the string `admit.lua` reads them from (ARGV[15]):
/// `<limits shadow 0|1>;<name>=<per_minute>,<monthly>,<shadow>;...;`, a
/// field left empty when the plan does not set it. Equal tables compare
/// equal (group commit batches requests of equal policies together).
#[derive(Debug, Default)]
pub struct Plans {
    plans: BTreeMap<String, PlanLimits>,
    shadow: bool,
    encoded: String,
}

impl Plans {
    pub fn new(plans: BTreeMap<String, PlanLimits>, shadow: bool) -> Plans {
        let mut encoded = String::from(if shadow { "1;" } else { "0;" });
        for (name, p) in &plans {
            let num = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
            let sh = match p.shadow {
                Some(true) => "1",
                Some(false) => "0",
                None => "",
            };
            let _ = write!(
                encoded,
                "{name}={},{},{sh};",
                num(p.per_minute),
                num(p.monthly)
            );
        }
        Plans {
            plans,
            shadow,
            encoded,
        }
    }

    pub fn get(&self, name: &str) -> Option<&PlanLimits> {
        self.plans.get(name)
    }

    /// The plan names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plans.keys().map(String::as_str)
    }

    /// `[limits] shadow`.
    pub fn shadow(&self) -> bool {
        self.shadow
    }

    /// The table as `admit.lua` reads it (ARGV[15]).
    pub fn encoded(&self) -> &str {
        &self.encoded
    }
}

impl PartialEq for Plans {
    fn eq(&self, other: &Plans) -> bool {
        self.encoded == other.encoded
    }
}

impl Eq for Plans {}

impl std::hash::Hash for Plans {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.encoded.hash(state);
    }
}

/// What a request brings to its admission besides key, client and scope:
/// its route's cost and shadow setting, and the plans in force.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Units one request counts (1..=[`MAX_COST`]).
    pub cost: u64,
    /// The route's `shadow`, if it sets one.
    pub route_shadow: Option<bool>,
    pub plans: Arc<Plans>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            cost: 1,
            route_shadow: None,
            plans: Arc::default(),
        }
    }
}

/// Where an effective limit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The client's own value.
    Client,
    /// The client's plan.
    Plan,
    /// The config's `[limits]`.
    Limits,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Client => "client",
            Source::Plan => "plan",
            Source::Limits => "limits",
        }
    }
}

/// The limits a client is judged by, and where each came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub limits: Limits,
    pub per_minute_source: Source,
    pub monthly_source: Source,
    /// Whether refusals by the limits are shadowed.
    pub shadow: bool,
    /// The client names a plan the config does not define (served with `[limits]`).
    pub plan_unknown: bool,
}

/// Resolves a client's limits: own value, else its plan's, else `defaults`;
/// shadow: the route's, else the plan's, else `[limits]`.
pub fn resolve(
    own: (Option<u64>, Option<u64>),
    plan: Option<&str>,
    defaults: Limits,
    policy: &Policy,
) -> Resolved {
    let named = plan.filter(|p| !p.is_empty());
    let found = named.and_then(|p| policy.plans.get(p));
    let pick = |own: Option<u64>, planned: Option<u64>, default: u64| match (own, planned) {
        (Some(n), _) => (n, Source::Client),
        (None, Some(n)) => (n, Source::Plan),
        (None, None) => (default, Source::Limits),
    };
    let (per_minute, per_minute_source) =
        pick(own.0, found.and_then(|p| p.per_minute), defaults.per_minute);
    let (monthly, monthly_source) = pick(own.1, found.and_then(|p| p.monthly), defaults.monthly);
    let shadow = policy
        .route_shadow
        .or_else(|| found.and_then(|p| p.shadow))
        .unwrap_or(policy.plans.shadow());
    Resolved {
        limits: Limits {
            per_minute,
            monthly,
        },
        per_minute_source,
        monthly_source,
        shadow,
        plan_unknown: named.is_some() && found.is_none(),
    }
}

/// How many of `n` requests of `cost` units fit, in order, in `window_room`
/// and `month_room` units.
pub fn fitting(n: u64, cost: u64, window_room: u64, month_room: u64) -> u64 {
    let cost = cost.max(1);
    n.min(window_room / cost).min(month_room / cost)
}

/// The refusal a request of `cost` units gets with these rooms: the quota
/// first (as without cost), then the window.
pub fn refusal(cost: u64, month_room: u64) -> Verdict {
    if month_room < cost {
        Verdict::QuotaExhausted
    } else {
        Verdict::RateLimited
    }
}

/// What the policies did to a decision, beyond its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyOutcome {
    /// Units the request counted (or would have).
    pub cost: u64,
    /// For a request admitted only because shadow mode applies: the refusal
    /// it would have got (`RateLimited` or `QuotaExhausted`).
    pub shadow: Option<Verdict>,
    /// The client names a plan the config does not define.
    pub plan_unknown: bool,
}

impl Default for PolicyOutcome {
    fn default() -> PolicyOutcome {
        PolicyOutcome {
            cost: 1,
            shadow: None,
            plan_unknown: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Limits = Limits {
        per_minute: 100,
        monthly: 1000,
    };

    fn policy(route_shadow: Option<bool>, limits_shadow: bool) -> Policy {
        let mut plans = BTreeMap::new();
        plans.insert(
            "free".to_owned(),
            PlanLimits {
                per_minute: Some(5),
                monthly: None,
                shadow: Some(false),
            },
        );
        plans.insert(
            "pro".to_owned(),
            PlanLimits {
                per_minute: Some(50),
                monthly: Some(5000),
                shadow: None,
            },
        );
        Policy {
            cost: 1,
            route_shadow,
            plans: Arc::new(Plans::new(plans, limits_shadow)),
        }
    }

    #[test]
    fn limits_resolve_own_then_plan_then_defaults() {
        let p = policy(None, false);
        // (own, plan) → (per_minute, source, monthly, source, unknown)
        let table = [
            (
                (None, None),
                None,
                (100, Source::Limits, 1000, Source::Limits, false),
            ),
            (
                (None, None),
                Some("free"),
                (5, Source::Plan, 1000, Source::Limits, false),
            ),
            (
                (Some(7), None),
                Some("pro"),
                (7, Source::Client, 5000, Source::Plan, false),
            ),
            (
                (None, Some(9)),
                Some("gone"),
                (100, Source::Limits, 9, Source::Client, true),
            ),
            (
                (None, None),
                Some(""),
                (100, Source::Limits, 1000, Source::Limits, false),
            ),
        ];
        for (own, plan, want) in table {
            let r = resolve(own, plan, D, &p);
            let got = (
                r.limits.per_minute,
                r.per_minute_source,
                r.limits.monthly,
                r.monthly_source,
                r.plan_unknown,
            );
            assert_eq!(got, want, "{own:?} {plan:?}");
        }
    }

    #[test]
    fn shadow_is_route_then_plan_then_limits() {
        // (route, limits, plan) → shadow
        let table = [
            (None, false, Some("pro"), false),
            (None, true, Some("pro"), true),
            (None, true, Some("free"), false),
            (Some(true), false, Some("free"), true),
            (Some(false), true, None, false),
            (None, true, Some("gone"), true),
        ];
        for (route, limits, plan, want) in table {
            let r = resolve((None, None), plan, D, &policy(route, limits));
            assert_eq!(r.shadow, want, "{route:?} {limits} {plan:?}");
        }
    }

    #[test]
    fn the_table_string_is_what_the_script_parses() {
        let p = policy(None, true);
        assert_eq!(p.plans.encoded(), "1;free=5,,0;pro=50,5000,;");
        assert_eq!(Plans::default().encoded(), "");
        assert_eq!(Plans::new(BTreeMap::new(), false).encoded(), "0;");
    }

    #[test]
    fn batches_fit_whole_requests_only() {
        assert_eq!(fitting(5, 3, 10, 100), 3);
        assert_eq!(fitting(5, 3, 9, 100), 3);
        assert_eq!(fitting(5, 3, 8, 100), 2);
        assert_eq!(fitting(5, 3, 100, 2), 0);
        assert_eq!(fitting(2, 1, 100, 100), 2);
        assert_eq!(refusal(3, 2), Verdict::QuotaExhausted);
        assert_eq!(refusal(3, 3), Verdict::RateLimited);
    }
}
