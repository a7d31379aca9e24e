//! A call whose reply may be lost: what failed, whether it may have run,
//! and what `settle.lua` found.

use super::*;

/// A failed exchange, and whether its command may have run.
#[derive(Debug)]
pub(super) struct CallError {
    pub(super) error: StoreError,
    /// `false` when the command certainly did not run: it was never sent,
    /// or Redis answered it with an error.
    pub(super) maybe_applied: bool,
}

impl CallError {
    pub(super) fn unsent(error: StoreError) -> CallError {
        CallError {
            error,
            maybe_applied: false,
        }
    }
}

/// What `settle.lua` found.
#[derive(Debug)]
pub(super) enum Settled {
    /// The call ran; its recorded reply.
    Applied(Batch),
    /// The call did not run, and is fenced so that it never will.
    NotApplied,
    /// The call ran and was voided before.
    Voided,
}

/// `admit.lua` / `settle.lua`: the call id was settled (fenced or voided).
pub(super) const SETTLED: i64 = -1;

/// Pauses between attempts at settling a call while Redis does not answer.
pub(super) const SETTLE_BACKOFF_MIN: Duration = Duration::from_millis(5);
pub(super) const SETTLE_BACKOFF_MAX: Duration = Duration::from_millis(200);

/// Whether a failed command may have run: not when Redis answered it with
/// an error, or the connection was refused or could not be made.
pub(super) fn maybe_applied(e: &RedisError) -> bool {
    !(e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::Server(_)
                | ErrorKind::Extension
                | ErrorKind::Parse
                | ErrorKind::UnexpectedReturnType
                | ErrorKind::AuthenticationFailed
                | ErrorKind::InvalidClientConfig
                | ErrorKind::ClusterConnectionNotFound
        ))
}
