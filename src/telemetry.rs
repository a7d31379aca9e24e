//! Logging set-up: `tracing` to stderr, text or JSON, level from the config
//! (overridden by `RUST_LOG` when set). The level can be changed while the
//! process runs ([`set_level`], used by a config reload); the format cannot.
//!
//! Access lines (target [`ACCESS_TARGET`], one per public request) are not
//! written one `write(2)` each: a [`LogSink`] collects them in memory and
//! writes them out in batches — when [`FLUSH_INTERVAL`] has passed (a
//! background thread), when the batch passes [`FLUSH_BYTES`], before any
//! other log line (so the order of lines is kept and start-up, reload and
//! shutdown lines appear at once), and at shutdown ([`flush`]). A failed
//! write to stderr drops the lines it carried; it never panics and never
//! fails a request.

use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

/// The target of the access log's events.
pub const ACCESS_TARGET: &str = "tollgate::access";
/// Longest an access line waits in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Buffered access lines past this many bytes are written at once.
pub const FLUSH_BYTES: usize = 64 * 1024;

/// The handle that swaps the level filter of the installed subscriber.
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// Set when `RUST_LOG` decided the level: the config's level then never applies.
static FROM_ENV: OnceLock<bool> = OnceLock::new();
/// The sink of the installed subscriber, for [`flush`].
static SINK: OnceLock<LogSink<std::io::Stderr>> = OnceLock::new();

/// Installs the global subscriber; a second call is a no-op.
pub fn init(cfg: &LogConfig) {
    let (filter, from_env) = match EnvFilter::try_from_default_env() {
        Ok(f) => (f, true),
        Err(_) => (
            EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info")),
            false,
        ),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let sink = LogSink::new(std::io::stderr());
    let output = match cfg.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(sink.clone())
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(sink.clone())
            .boxed(),
    };
    if tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok()
    {
        let _ = LEVEL.set(handle);
        let _ = FROM_ENV.set(from_env);
        if SINK.set(sink.clone()).is_ok() {
            sink.spawn_flusher(FLUSH_INTERVAL);
        }
    }
}

/// Writes out the access lines still in memory. Called at shutdown; a no-op
/// when [`init`] installed nothing.
pub fn flush() {
    if let Some(sink) = SINK.get() {
        sink.flush();
    }
}

/// What [`set_level`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelChange {
    Applied,
    /// `RUST_LOG` is set and wins over the config.
    OverriddenByEnv,
    /// No subscriber of ours is installed (a library user installed their own).
    NotInstalled,
}

/// Replaces the level filter with `level` (an `EnvFilter` directive, already
/// validated by the config).
pub fn set_level(level: &str) -> Result<LevelChange, String> {
    if FROM_ENV.get().copied().unwrap_or(false) {
        return Ok(LevelChange::OverriddenByEnv);
    }
    let Some(handle) = LEVEL.get() else {
        return Ok(LevelChange::NotInstalled);
    };
    let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
    handle.reload(filter).map_err(|e| e.to_string())?;
    Ok(LevelChange::Applied)
}

/// The log's destination: access lines are batched in memory, every other
/// line first writes out the batch and then itself. A [`MakeWriter`] for the
/// `fmt` layer, which hands each formatted line to one `write_all`.
#[derive(Debug)]
pub struct LogSink<W> {
    inner: Arc<Inner<W>>,
}

impl<W> Clone for LogSink<W> {
    fn clone(&self) -> Self {
        LogSink {
            inner: self.inner.clone(),
        }
    }
}

#[derive(Debug)]
struct Inner<W> {
    /// Access lines not yet written.
    pending: Mutex<Vec<u8>>,
    /// The output and the batch being written to it. Taken before `pending`
    /// (never the other way round), so batches go out in order; a request
    /// that only appends never waits for a write.
    out: Mutex<Output<W>>,
}

#[derive(Debug)]
struct Output<W> {
    writer: W,
    batch: Vec<u8>,
}

impl<W: Write> LogSink<W> {
    pub fn new(writer: W) -> Self {
        LogSink {
            inner: Arc::new(Inner {
                pending: Mutex::new(Vec::with_capacity(FLUSH_BYTES)),
                out: Mutex::new(Output {
                    writer,
                    batch: Vec::with_capacity(FLUSH_BYTES),
                }),
            }),
        }
    }

    /// Writes out the pending access lines, if any.
    pub fn flush(&self) {
        self.write_through(&[]);
    }

    /// Writes the pending access lines, then `line`, in one write.
    fn write_through(&self, line: &[u8]) {
        let mut out = self.inner.out.lock();
        let out = &mut *out;
        std::mem::swap(&mut *self.inner.pending.lock(), &mut out.batch);
        out.batch.extend_from_slice(line);
        if !out.batch.is_empty() {
            // A failed write drops the lines: the log must never fail a request.
            let _ = out.writer.write_all(&out.batch);
            let _ = out.writer.flush();
            out.batch.clear();
        }
    }

    /// Appends an access line; writes the batch out once it is large.
    fn append(&self, line: &[u8]) {
        let full = {
            let mut pending = self.inner.pending.lock();
            pending.extend_from_slice(line);
            pending.len() >= FLUSH_BYTES
        };
        if full {
            self.flush();
        }
    }
}

impl<W: Write + Send + 'static> LogSink<W> {
    /// Starts the thread that writes the pending lines out every `interval`.
    /// It holds only a weak reference: it ends once the sink is gone.
    fn spawn_flusher(&self, interval: Duration) {
        let inner = Arc::downgrade(&self.inner);
        let started = std::thread::Builder::new()
            .name("tollgate-log".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                let Some(inner) = inner.upgrade() else { return };
                if !inner.pending.lock().is_empty() {
                    LogSink { inner }.flush();
                }
            });
        if let Err(e) = started {
            // Without the thread, lines still go out at 64 KiB, before every
            // other line and at shutdown; say so, unbuffered.
            eprintln!("tollgate: cannot start the log flusher ({e}); access lines may be late");
        }
    }
}

/// One line's way into a [`LogSink`].
#[derive(Debug)]
pub struct SinkWriter<'a, W: Write> {
    sink: &'a LogSink<W>,
    buffered: bool,
}

impl<W: Write> Write for SinkWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.buffered {
            self.sink.append(buf);
        } else {
            self.sink.write_through(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'a> MakeWriter<'a> for LogSink<W> {
    type Writer = SinkWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter {
            sink: self,
            buffered: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        SinkWriter {
            sink: self,
            buffered: meta.target() == ACCESS_TARGET,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose output the test can read, and which can be made to fail.
    #[derive(Clone, Default)]
    struct Shared {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
        broken: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.broken.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            *self.writes.lock() += 1;
            self.bytes.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().clone()).unwrap()
        }
    }

    fn subscriber(sink: LogSink<Shared>) -> impl tracing::Subscriber + Send + Sync {
        tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_writer(sink),
        )
    }

    #[test]
    fn access_lines_wait_and_other_lines_push_them_out_in_order() {
        let out = Shared::default();
        let sink = LogSink::new(out.clone());
        tracing::subscriber::with_default(subscriber(sink.clone()), || {
            tracing::info!(target: ACCESS_TARGET, n = 1, "request");
            tracing::info!(target: ACCESS_TARGET, n = 2, "request");
            assert_eq!(out.text(), "", "access lines are held back");
            tracing::warn!("something else");
        });
        assert_eq!(
            out.text(),
            " INFO tollgate::access: request n=1\n \
             INFO tollgate::access: request n=2\n \
             WARN tollgate::telemetry::tests: something else\n"
        );
        assert_eq!(
            *out.writes.lock(),
            1,
            "one write for the batch and the line"
        );
    }

    #[test]
    fn flush_writes_pending_lines_once() {
        let out = Shared::default();
        let sink = LogSink::new(out.clone());
        tracing::subscriber::with_default(subscriber(sink.clone()), || {
            tracing::info!(target: ACCESS_TARGET, "request");
        });
        sink.flush();
        sink.flush();
        assert_eq!(out.text(), " INFO tollgate::access: request\n");
        assert_eq!(*out.writes.lock(), 1);
    }

    #[test]
    fn a_large_batch_is_written_without_waiting() {
        let out = Shared::default();
        let sink = LogSink::new(out.clone());
        let line = [b'x'; 1000];
        let below = FLUSH_BYTES / line.len();
        for _ in 0..below {
            sink.append(&line);
        }
        assert_eq!(out.text(), "");
        sink.append(&line);
        assert_eq!(out.text().len(), (below + 1) * line.len());
    }

    #[test]
    fn the_flusher_thread_writes_within_the_interval() {
        let out = Shared::default();
        let sink = LogSink::new(out.clone());
        sink.spawn_flusher(Duration::from_millis(10));
        sink.append(b"late\n");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.text().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            std::thread::yield_now();
        }
        assert_eq!(out.text(), "late\n");
    }

    #[test]
    fn a_failing_output_drops_lines_without_panicking() {
        let out = Shared::default();
        let sink = LogSink::new(out.clone());
        out.broken.store(true, std::sync::atomic::Ordering::SeqCst);
        tracing::subscriber::with_default(subscriber(sink.clone()), || {
            tracing::info!(target: ACCESS_TARGET, "lost");
            tracing::warn!("lost too");
        });
        sink.flush();
        out.broken.store(false, std::sync::atomic::Ordering::SeqCst);
        tracing::subscriber::with_default(subscriber(sink.clone()), || {
            tracing::warn!("kept");
        });
        assert_eq!(out.text(), " WARN tollgate::telemetry::tests: kept\n");
    }
}
