//! Exactly-once admission on Redis: the names of admission calls and how
//! long the store keeps what it knows about them (docs/rate-limiting.md,
//! "Exactly-once admission").
//!
//! Owns [`Session`] and [`CallId`] (unique across processes) and the
//! lifetimes [`SESSION_IDLE`] and [`VOID_WINDOW`]. It does no I/O: the
//! calls themselves are made by `store::redis`.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::group::GroupKey;

/// An admission session: the calls of one group (client, key, generation,
/// scope, defaults) made by one store, one at a time.
///
/// Named by `<16 hex digits of the store's random prefix><16 hex digits of a
/// hash of the group>`; its two fields in the client's hash are `s:<name>`
/// (the last call's sequence number) and `r:<name>` (that call's reply).
/// Unique across processes: two stores share a prefix with probability
/// about S² / 2⁶⁵ for S stores (64 random bits, drawn when the store is
/// made from the operating system's generator); within a store, two groups
/// of one client share a session only if their 64-bit hashes collide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `s:<name>`
    pub state: String,
    /// `r:<name>`
    pub record: String,
}

impl Session {
    pub fn of(prefix: u64, group: &GroupKey) -> Session {
        // foldhash, fixed within the process (seeded with the prefix): as
        // well spread as SipHash for names tollgate picks, at a fraction of
        // its cost per admission call.
        let hash = foldhash::quality::FixedState::with_seed(prefix).hash_one(group);
        // "s:" and 32 hex digits, written digit by digit (no formatting
        // machinery: this runs for every admission call).
        let mut state = String::with_capacity(34);
        state.push_str("s:");
        for n in [prefix, hash] {
            for shift in (0..16).rev() {
                let digit = (n >> (shift * 4)) as u32 & 0xf;
                state.push(char::from_digit(digit, 16).unwrap_or('0'));
            }
        }
        let record = ["r:", &state[2..]].concat();
        Session { state, record }
    }

    /// A fresh random prefix for a store's sessions.
    pub fn new_prefix() -> u64 {
        rand::random()
    }

    pub fn as_str(&self) -> &str {
        &self.state
    }
}

/// One admission call: its session and its sequence number there.
///
/// Sequence numbers come from one process-wide counter, so they increase
/// within every session (a `u64` does not wrap in practice) and a call is
/// never numbered like an earlier one. The store refuses a call whose
/// number its session has passed, so a call is applied at most once, and
/// never after a later call of its session, or after it was fenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallId {
    pub session: Session,
    pub seq: u64,
}

impl CallId {
    /// The next call of `session`.
    pub fn next(session: &Session) -> CallId {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        CallId {
            session: session.clone(),
            seq: COUNTER.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.session.state, self.seq)
    }
}

/// How long a session's record is kept after its last call: `admit.lua`'s
/// `SESSION_IDLE_SECS` (pruned by the client's admissions after that). A call is refused (fenced, or passed by a later
/// call) for at least this long after its session last moved.
pub const SESSION_IDLE: Duration = Duration::from_secs(600);

/// How long after a call whose reply was lost tollgate keeps trying to void
/// it (give back what it counted) when Redis does not answer: well inside
/// [`SESSION_IDLE`], so the record it voids is still there.
pub const VOID_WINDOW: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Limits;

    fn group(key_id: &str) -> GroupKey {
        GroupKey {
            client_id: "acme".into(),
            key_id: key_id.into(),
            gen: 1,
            scope: None,
            defaults: Limits {
                per_minute: 10,
                monthly: 100,
            },
            policy: Default::default(),
        }
    }

    #[test]
    fn sessions_are_per_group_and_calls_increase() {
        let p = Session::new_prefix();
        let (a, b) = (Session::of(p, &group("k1")), Session::of(p, &group("k2")));
        assert_ne!(a, b);
        assert_eq!(a, Session::of(p, &group("k1")));
        assert_ne!(a, Session::of(p ^ 1, &group("k1")));
        // The store's prefix, then the group's hash.
        assert_eq!(a.state[..18], b.state[..18]);
        assert_eq!(a.state.len(), 34);
        assert_eq!(a.state[2..], a.record[2..]);
        let named = Session::of(0x0123_4567_89ab_cdef, &group("k1"));
        assert!(named.state.starts_with("s:0123456789abcdef"), "{named:?}");
        assert!(named.record.starts_with("r:0123456789abcdef"), "{named:?}");
        assert!(named.state[2..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let (x, y) = (CallId::next(&a), CallId::next(&a));
        assert!(y.seq > x.seq);
        assert!(VOID_WINDOW < SESSION_IDLE);
    }
}
