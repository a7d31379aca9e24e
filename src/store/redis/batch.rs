//! Admissions of many keys in one script call, on one Redis server.
//!
//! Owns the queue of admission calls waiting for the connection and the
//! runner tasks that send them. Each queued call is one group-commit batch
//! of one key (`store::group`) with its own call id (`store::once`): this
//! module changes how calls travel, never what a call is. While a call is
//! in flight, the calls of every other key that arrive queue here; the next
//! call takes up to `store.batch_keys` ([`DEFAULT_BATCH_KEYS`]) of them and sends them as one
//! `admit_batch.lua` call: `admit.lua` verbatim, wrapped in a function and
//! run once per admission with that admission's own KEYS and ARGV, each
//! under `pcall`, one reply each. A call that finds nothing in flight is
//! sent at once, alone, as plain `admit.lua`, from its caller's task: an
//! idle store (or one busy key, whose group commit has one call in flight
//! at a time) pays no added wait, no task hop and no wrapper.
//!
//! One server only (and a Sentinel's primary): every key lives on it.
//! On Redis Cluster a script's keys must share a slot, and two clients'
//! keys almost never do, so the cluster keeps one `admit.lua` call per
//! admission (which the cluster connection already pipelines per node).
//!
//! Failure: a batch call that fails fails every admission in it with the
//! same error and the same "may have run" flag, and each admission then
//! settles its own call id (`settle.lua`) exactly as a lone call would, so
//! none is counted twice or lost. An admission that raised an error inside
//! the script (its data corrupt) fails alone: the others' replies stand.
//! Bounds: at most `max_queued` calls wait here (more fail at once, never
//! sent), and a call waits no longer than its deadline: if it is still
//! queued then, it is taken out (never sent); if it was sent, it fails as
//! "may have run" and is settled by id.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Weak;
use std::time::Instant;

use parking_lot::Mutex;
use redis::Script;
use tokio::sync::oneshot;

use super::scripts::{evalsha, invoke};
use super::settle::CallError;
use super::{Inner, RedisStore, StoreError};

/// Most admissions in one script call by default (`store.batch_keys`):
/// bounds the time Redis spends in one script (about 20 µs each, measured)
/// and the size of one command.
pub const DEFAULT_BATCH_KEYS: usize = 64;

/// Batch calls in flight at once on the connection (pipelined by it).
const RUNNERS: usize = 1;

/// `admit_lib.lua`, then `admit.lua` wrapped as `admit_one(KEYS, ARGV)`,
/// then the driver loop of `admit_batch.lua`: the library's constants and
/// helpers are made once per call and shared by its admissions.
pub(super) fn batch_script(lib: &str, admit: &str, driver: &str) -> Script {
    Script::new(&format!(
        "{lib}\nlocal function admit_one(KEYS, ARGV)\n{admit}\nend\n{driver}"
    ))
}

/// One `admit.lua` call's keys and arguments.
#[derive(Debug, Clone)]
pub(super) struct Admission {
    pub(super) keys: Vec<String>,
    pub(super) args: Args,
}

/// A call's arguments, each written in place into one buffer as it is
/// pushed (numbers formatted without a `String` of their own): an
/// admission has some twenty, and a `Vec<String>` made each an allocation.
#[derive(Debug, Clone, Default)]
pub(super) struct Args(redis::Cmd);

impl Args {
    /// Room for `count` arguments of `bytes` bytes in all, so that pushing
    /// them does not grow the buffers step by step.
    pub(super) fn with_capacity(count: usize, bytes: usize) -> Args {
        Args(redis::Cmd::with_capacity(count, bytes))
    }

    /// Appends one argument (a `&str`, a number; `Option` writes nothing for `None`).
    pub(super) fn push(&mut self, arg: impl redis::ToRedisArgs) -> &mut Self {
        self.0.arg(arg);
        self
    }

    /// Appends one argument formatted from `arg`.
    pub(super) fn push_fmt(&mut self, arg: std::fmt::Arguments<'_>) -> &mut Self {
        redis::RedisWrite::write_arg_fmt(&mut self.0, arg);
        self
    }

    pub(super) fn len(&self) -> usize {
        self.0.args_iter().len()
    }

    /// The arguments, in order.
    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.0.args_iter().filter_map(|arg| match arg {
            redis::Arg::Simple(bytes) => Some(bytes),
            _ => None,
        })
    }
}

impl Admission {
    /// How many KEYS and ARGV it has: the admissions of one batch call
    /// have the same ([`Batcher::take`]).
    fn shape(&self) -> (usize, usize) {
        (self.keys.len(), self.args.len())
    }
}

impl redis::ToRedisArgs for Args {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        for arg in self.iter() {
            out.write_arg(arg);
        }
    }
}

type Reply = Result<redis::Value, CallError>;

struct Pending {
    id: u64,
    admission: Admission,
    deadline: Instant,
    tx: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Pending>,
    runners: usize,
}

/// The cross-key queue; see the module documentation.
pub(super) struct Batcher {
    state: Mutex<State>,
    max_queued: usize,
    /// Most admissions in one script call.
    per_call: AtomicUsize,
    next_id: AtomicU64,
}

fn timed_out(store: &RedisStore) -> StoreError {
    StoreError::Unavailable(format!(
        "redis did not answer within {} ms",
        store.inner.timeout.as_millis()
    ))
}

impl Batcher {
    pub(super) fn new(max_queued: usize) -> Batcher {
        Batcher {
            state: Mutex::default(),
            max_queued: max_queued.max(1),
            per_call: AtomicUsize::new(DEFAULT_BATCH_KEYS),
            next_id: AtomicU64::new(0),
        }
    }

    pub(super) fn set_per_call(&self, n: usize) {
        self.per_call.store(n.max(1), Ordering::Relaxed);
    }

    /// Off (`store.batch_keys = 1`): every admission is its own call, sent at
    /// once (pipelined on the connection), as before this module.
    pub(super) fn enabled(&self) -> bool {
        self.per_call.load(Ordering::Relaxed) > 1
    }

    /// Runs one admission call, alone or with others, by `deadline`.
    pub(super) async fn submit(
        &self,
        store: &RedisStore,
        admission: Admission,
        deadline: Instant,
    ) -> Reply {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let inline = {
            let mut s = self.state.lock();
            let free = s.runners < RUNNERS && s.queue.is_empty();
            if free {
                s.runners += 1;
            }
            free
        };
        if inline {
            // Nothing in flight: this call goes now, alone, from this task
            // (no hop to a runner task: an idle store, or one key's group
            // commit, pays nothing for this module).
            let _turn = Turn {
                store: std::sync::Arc::downgrade(&store.inner),
            };
            return send_alone(store, &admission, deadline).await;
        }
        let start_runner = {
            let mut s = self.state.lock();
            if s.queue.len() >= self.max_queued {
                return Err(CallError::unsent(StoreError::Unavailable(
                    "too many store calls in flight".into(),
                )));
            }
            s.queue.push_back(Pending {
                id,
                admission,
                deadline,
                tx,
            });
            let start = s.runners < RUNNERS;
            if start {
                s.runners += 1;
            }
            start
        };
        if start_runner {
            spawn_runner(std::sync::Arc::downgrade(&store.inner));
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(reply)) => reply,
            // The runner went away with the call (runtime shutdown, a
            // panic): it may have been sent.
            Ok(Err(_)) => Err(CallError {
                error: StoreError::Unavailable("the store call was abandoned".into()),
                maybe_applied: true,
            }),
            Err(_elapsed) => {
                let mut s = self.state.lock();
                if let Some(at) = s.queue.iter().position(|p| p.id == id) {
                    // Still queued: never sent, so certainly not applied.
                    s.queue.remove(at);
                    return Err(CallError::unsent(timed_out(store)));
                }
                Err(CallError {
                    error: timed_out(store),
                    maybe_applied: true,
                })
            }
        }
    }

    /// Up to `per_call` calls from the front of the queue, all of one shape
    /// (as many KEYS and ARGV as the first: `admit_batch.lua` sends an
    /// admission's arguments as differences from the first's; one of
    /// another shape, e.g. queued across a reload that set `[notify]`,
    /// starts the next call), answering at once those past their deadline;
    /// `None` (and the runner counted out, under the same lock) when none
    /// are left.
    fn take(&self, store: &RedisStore) -> Option<Vec<Pending>> {
        let now = Instant::now();
        let most = self.per_call.load(Ordering::Relaxed);
        let mut s = self.state.lock();
        let mut batch = Vec::new();
        while batch.len() < most {
            let Some(p) = s.queue.pop_front() else { break };
            if p.tx.is_closed() {
                continue;
            }
            if p.deadline <= now {
                let _ = p.tx.send(Err(CallError::unsent(timed_out(store))));
                continue;
            }
            if batch
                .first()
                .is_some_and(|f: &Pending| f.admission.shape() != p.admission.shape())
            {
                s.queue.push_front(p);
                break;
            }
            batch.push(p);
        }
        if batch.is_empty() {
            s.runners -= 1;
            return None;
        }
        Some(batch)
    }
}

fn spawn_runner(store: Weak<Inner>) {
    let runner = Runner {
        store,
        finished: false,
    };
    tokio::spawn(runner.run());
}

/// A call sent from its caller's task holds the runner's turn; when it
/// ends (or is dropped mid-call), the calls that queued meanwhile get a
/// runner task, which takes the turn over.
struct Turn {
    store: Weak<Inner>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(inner) = self.store.upgrade() else {
            return;
        };
        let Some(batcher) = inner.batch.as_ref() else {
            return;
        };
        let mut s = batcher.state.lock();
        if !s.queue.is_empty() && tokio::runtime::Handle::try_current().is_ok() {
            drop(s);
            spawn_runner(self.store.clone());
        } else {
            s.runners -= 1;
        }
    }
}

/// Sends batches until the queue is empty.
struct Runner {
    store: Weak<Inner>,
    /// Set when the runner counted itself out.
    finished: bool,
}

impl Runner {
    async fn run(mut self) {
        loop {
            let Some(inner) = self.store.upgrade() else {
                return;
            };
            let store = RedisStore { inner };
            let Some(batcher) = store.inner.batch.as_ref() else {
                return;
            };
            let Some(batch) = batcher.take(&store) else {
                self.finished = true;
                return;
            };
            let replies = send(&store, &batch).await;
            for (p, reply) in batch.into_iter().zip(replies) {
                // A caller that went away meanwhile settles by id.
                let _ = p.tx.send(reply);
            }
        }
    }
}

impl Drop for Runner {
    /// A runner that ends early (cancelled, panicking) counts itself out,
    /// so the next call starts another one.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(inner) = self.store.upgrade() {
            if let Some(batcher) = inner.batch.as_ref() {
                batcher.state.lock().runners -= 1;
            }
        }
    }
}

/// One script call for `batch`; one reply per admission, in order.
async fn send(store: &RedisStore, batch: &[Pending]) -> Vec<Reply> {
    let deadline = batch
        .iter()
        .map(|p| p.deadline)
        .min()
        .unwrap_or_else(Instant::now);
    let fail_all = |e: CallError| {
        batch
            .iter()
            .map(|_| {
                Err(CallError {
                    error: e.error.clone(),
                    maybe_applied: e.maybe_applied,
                })
            })
            .collect()
    };
    let [first, rest @ ..] = batch else {
        return Vec::new();
    };
    if rest.is_empty() {
        return vec![send_alone(store, &first.admission, deadline).await];
    }
    let script = &store.inner.admit_batch;
    let cmd = batch_command(script, &first.admission, rest);
    let replies: Vec<redis::Value> = match store
        .call_until(deadline, |mut c| async move {
            invoke(script, &cmd, &mut c).await
        })
        .await
    {
        Ok(r) => r,
        Err(e) => return fail_all(e),
    };
    if replies.len() != batch.len() {
        return fail_all(CallError::unsent(StoreError::Corrupt(
            "unexpected admit reply".into(),
        )));
    }
    replies.into_iter().map(|r| decode_one(store, r)).collect()
}

/// The `admit_batch.lua` call of `first` and `rest` (admissions of one
/// shape): KEYS every admission's, in order; ARGV the count, the shape, the
/// positions of the arguments that differ between admissions, the first
/// admission's arguments, then each further admission's differing ones
/// (the layout is the script's header).
fn batch_command(script: &Script, first: &Admission, rest: &[Pending]) -> redis::Cmd {
    let (nk, na) = first.shape();
    let n = 1 + rest.len();
    let mut varies = vec![false; na];
    let template: Vec<&[u8]> = first.args.iter().collect();
    for p in rest {
        for ((arg, same), varies) in p.admission.args.iter().zip(&template).zip(&mut varies) {
            *varies |= arg != *same;
        }
    }
    let v = varies.iter().filter(|&&x| x).count();
    let args = 4 + v + na + rest.len() * v;
    evalsha(script, (n * nk, args), |cmd| {
        cmd.arg(&first.keys);
        for p in rest {
            cmd.arg(&p.admission.keys);
        }
        cmd.arg(n).arg(nk).arg(na).arg(v);
        for (at, _) in varies.iter().enumerate().filter(|(_, &x)| x) {
            cmd.arg(at + 1);
        }
        cmd.arg(&first.args);
        for p in rest {
            for (arg, _) in p.admission.args.iter().zip(&varies).filter(|(_, &x)| x) {
                cmd.arg(arg);
            }
        }
    })
}

/// One admission as plain `admit.lua`.
pub(super) async fn send_alone(
    store: &RedisStore,
    admission: &Admission,
    deadline: Instant,
) -> Reply {
    let script = &store.inner.admit;
    let (keys, args) = (&admission.keys, &admission.args);
    let cmd = evalsha(script, (keys.len(), args.len()), |cmd| {
        cmd.arg(keys).arg(args);
    });
    store
        .call_until(deadline, |mut c| async move {
            invoke(script, &cmd, &mut c).await
        })
        .await
}

/// One admission's reply in a batch: `admit.lua`'s (its packed state or
/// its array), or `{"E", message}` for an admission that raised an error
/// (it wrote nothing that counts: admit.lua raises before its writes).
fn decode_one(store: &RedisStore, reply: redis::Value) -> Reply {
    let bad = || CallError::unsent(StoreError::Corrupt("unexpected admit reply".into()));
    let items = match reply {
        redis::Value::Array(items) => items,
        state @ redis::Value::BulkString(_) => return Ok(state),
        _ => return Err(bad()),
    };
    if let [redis::Value::BulkString(tag), redis::Value::BulkString(msg)] = items.as_slice() {
        if tag.as_slice() == b"E" {
            return Err(CallError::unsent(
                store.script_error(&String::from_utf8_lossy(msg)),
            ));
        }
    }
    Ok(redis::Value::Array(items))
}
