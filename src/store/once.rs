//! Exactly-once admission on Redis: the ids of admission calls and how long
//! the store keeps what it knows about them (docs/rate-limiting.md,
//! "Exactly-once admission").
//!
//! Owns [`CallId`] (unique across processes) and [`Retention`] (the record
//! and fence lifetimes, derived from the store timeout). It does no I/O: the
//! calls themselves are made by `store::redis`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The id of one admission call (one group-commit batch).
///
/// `<16 hex digits of a per-process random prefix><hex counter>`. Unique
/// across processes: within a process the counter never repeats (a `u64`
/// does not wrap in practice); two processes share a prefix with probability
/// about P² / 2⁶⁵ for P processes (64 random bits, drawn once per process
/// from the operating system's generator), and even then only ids with the
/// same counter value, in the same client, within one record lifetime, could
/// meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallId(String);

impl CallId {
    /// A fresh id, never returned before by this process.
    pub fn next() -> CallId {
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(rand::random::<u64>);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        CallId(format!("{prefix:016x}{n:x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long the store keeps a call's record, and a fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// An applied call's record (written by every admission): four
    /// timeouts plus two seconds. The recheck of a lost reply asks within one timeout of the
    /// call (the batch's deadline), so the record outlives it with three
    /// timeouts and two seconds to spare (a reconnect, a Redis clock step);
    /// a void after the deadline is attempted while the record lasts.
    pub record: Duration,
    /// A fence or void marker (written only after a lost reply):
    /// [`FENCE_TTL`], so that a call stuck in a stalled Redis's socket
    /// buffer is still refused when it runs long after tollgate gave up.
    pub fence: Duration,
}

/// Lifetime of a fence or void marker.
pub const FENCE_TTL: Duration = Duration::from_secs(3600);

impl Retention {
    pub fn for_timeout(timeout: Duration) -> Retention {
        Retention {
            record: timeout * 4 + Duration::from_secs(2),
            fence: FENCE_TTL.max(timeout * 4 + Duration::from_secs(2)),
        }
    }

    /// How long after sending a call a void is still worth attempting: while
    /// the record certainly exists (sent before it was written), less one
    /// timeout for the void's own call.
    pub fn void_window(&self, timeout: Duration) -> Duration {
        self.record.saturating_sub(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_do_not_repeat_and_share_the_process_prefix() {
        let a = CallId::next();
        let b = CallId::next();
        assert_ne!(a, b);
        assert_eq!(a.as_str()[..16], b.as_str()[..16]);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn records_outlive_the_recheck_and_fences_the_records() {
        let r = Retention::for_timeout(Duration::from_millis(1000));
        assert_eq!(r.record, Duration::from_secs(6));
        assert_eq!(r.fence, FENCE_TTL);
        assert_eq!(
            r.void_window(Duration::from_millis(1000)),
            Duration::from_secs(5)
        );
        // A huge timeout: the fence still outlives the record.
        let r = Retention::for_timeout(Duration::from_secs(3600));
        assert!(r.fence >= r.record);
    }
}
