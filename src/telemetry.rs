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
//!
//! The access line is also formatted here ([`AccessFormat`]) rather than by
//! `tracing-subscriber`'s formatters, to the very same bytes, without their
//! `fmt` machinery per field and per timestamp digit. Any event it is not
//! sure to render identically goes to those formatters.

use std::cell::RefCell;
use std::fmt;
use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
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
    if tracing_subscriber::registry()
        .with(filter)
        .with(output_layer(cfg.format, sink.clone(), true))
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

/// The layer that formats events (text or JSON) to `writer`; with `fast`, the
/// access line takes [`AccessFormat`]'s way to the same bytes.
fn output_layer<S, W>(format: LogFormat, writer: W, fast: bool) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .map_event_format(|inner| AccessFormat {
                inner,
                json: true,
                fast,
            })
            .with_writer(writer)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .map_event_format(|inner| AccessFormat {
                inner,
                json: false,
                fast,
            })
            .with_writer(writer)
            .boxed(),
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

/// The event format of the `fmt` layer: `inner` (tracing-subscriber's full
/// text format without ANSI colours, or its flattened JSON format), except
/// for access lines, which are written here to the same bytes.
///
/// Only an event of target [`ACCESS_TARGET`] outside any span whose fields
/// are numbers, booleans, plain strings and `Debug`/`Display` values takes
/// this way; anything else (a message that would need ANSI escaping, a field
/// named `r#...` or `log.*`, an error value, a clock before 1970 or after
/// 9999) is left to `inner`. `text_and_json_access_lines_match_tracing_subscriber`
/// holds the two to the same output.
struct AccessFormat<F> {
    inner: F,
    json: bool,
    /// Off only in tests, to compare with `inner`.
    fast: bool,
}

impl<S, N, F> FormatEvent<S, N> for AccessFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.fast
            && event.metadata().target() == ACCESS_TARGET
            && event.is_contextual()
            && ctx.lookup_current().is_none()
        {
            thread_local! {
                static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
            }
            let written = LINE.with(|line| {
                let Ok(mut line) = line.try_borrow_mut() else {
                    return None;
                };
                line.clear();
                let done = if self.json {
                    json_line(&mut line, event, SystemTime::now())
                } else {
                    text_line(&mut line, event, SystemTime::now())
                };
                let text = std::str::from_utf8(&line).ok().filter(|_| done.is_some())?;
                Some(writer.write_str(text))
            });
            if let Some(result) = written {
                #[cfg(test)]
                tests::FAST_LINES.with(|n| n.set(n.get() + 1));
                return result;
            }
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// `inner`'s full text format: `<timestamp>  INFO <target>: <message> name=value ...`.
fn text_line(out: &mut Vec<u8>, event: &Event<'_>, now: SystemTime) -> Option<()> {
    timestamp(out, now)?;
    // Right-aligned in five columns, as tracing-subscriber writes it.
    let level = event.metadata().level().as_str();
    out.push(b' ');
    out.extend(std::iter::repeat_n(
        b' ',
        5usize.saturating_sub(level.len()),
    ));
    out.extend_from_slice(level.as_bytes());
    out.push(b' ');
    out.extend_from_slice(event.metadata().target().as_bytes());
    out.extend_from_slice(b": ");
    let mut fields = TextFields {
        out,
        first: true,
        ok: true,
    };
    event.record(&mut fields);
    fields.ok.then_some(())?;
    out.push(b'\n');
    Some(())
}

/// `inner`'s flattened JSON format: timestamp, level, the fields, target.
fn json_line(out: &mut Vec<u8>, event: &Event<'_>, now: SystemTime) -> Option<()> {
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(out, now)?;
    let level = event.metadata().level().as_str();
    out.extend_from_slice(b"\",\"level\":\"");
    out.extend_from_slice(level.as_bytes());
    out.push(b'"');
    let mut fields = JsonFields { out, ok: true };
    event.record(&mut fields);
    fields.ok.then_some(())?;
    out.extend_from_slice(b",\"target\":");
    serde_json::to_writer(&mut *out, event.metadata().target()).ok()?;
    out.extend_from_slice(b"}\n");
    Some(())
}

/// `now` as tracing-subscriber writes it: `2026-02-10T10:00:00.123456Z`. The
/// part up to the second is made once a second per thread.
fn timestamp(out: &mut Vec<u8>, now: SystemTime) -> Option<()> {
    thread_local! {
        static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [0; 19])) };
    }
    let since = now.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    let secs = since.as_secs();
    let prefix = SECOND.with(|cell| {
        let mut cell = cell.try_borrow_mut().ok()?;
        if cell.0 != secs {
            let t = chrono::DateTime::from_timestamp(i64::try_from(secs).ok()?, 0)?;
            let text = t.format("%Y-%m-%dT%H:%M:%S").to_string();
            // Years past 9999 are written differently; leave them to tracing-subscriber.
            *cell = (secs, text.as_bytes().try_into().ok()?);
        }
        Some(cell.1)
    })?;
    out.extend_from_slice(&prefix);
    let micros = since.subsec_micros();
    out.push(b'.');
    for div in [100_000, 10_000, 1_000, 100, 10, 1] {
        out.push(b'0' + (micros / div % 10) as u8);
    }
    out.push(b'Z');
    Some(())
}

/// tracing-subscriber's `DefaultVisitor`, without ANSI colours: `message`
/// first as it is, every other field as ` name={value:?}`.
struct TextFields<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    ok: bool,
}

impl TextFields<'_> {
    /// Starts a field; false (and the line left to tracing-subscriber) for
    /// names it treats specially.
    fn name(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name.starts_with("r#") || name.starts_with("log.") {
            self.ok = false;
            return false;
        }
        if !std::mem::take(&mut self.first) {
            self.out.push(b' ');
        }
        if name != "message" {
            self.out.extend_from_slice(name.as_bytes());
            self.out.push(b'=');
        }
        true
    }
}

impl Visit for TextFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.ok || !self.name(field) {
            return;
        }
        if field.name() == "message" {
            self.ok = !needs_ansi_escape(value);
            self.out.extend_from_slice(value.as_bytes());
        } else if value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
        {
            // What `{:?}` makes of a string that needs no escape.
            self.out.push(b'"');
            self.out.extend_from_slice(value.as_bytes());
            self.out.push(b'"');
        } else {
            self.ok = write!(self.out, "{value:?}").is_ok();
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.ok && self.name(field) {
            self.out
                .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.ok && self.name(field) {
            self.out
                .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.ok && self.name(field) {
            self.out
                .extend_from_slice(if value { b"true" } else { b"false" });
        }
    }

    fn record_error(&mut self, _: &Field, _: &(dyn std::error::Error + 'static)) {
        self.ok = false;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.ok || !self.name(field) {
            return;
        }
        let start = self.out.len();
        self.ok = write!(self.out, "{value:?}").is_ok();
        if field.name() == "message" {
            let written = std::str::from_utf8(&self.out[start..]).unwrap_or("\x1b");
            self.ok &= !needs_ansi_escape(written);
        }
    }
}

/// Characters tracing-subscriber escapes in a message (terminal injection).
fn needs_ansi_escape(s: &str) -> bool {
    s.chars().any(|c| {
        matches!(
            c,
            '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
        )
    })
}

/// tracing-serde's `SerdeMapVisitor` on serde_json: `,"name":value` per field,
/// `Debug` values as strings.
struct JsonFields<'a> {
    out: &'a mut Vec<u8>,
    ok: bool,
}

impl JsonFields<'_> {
    fn entry(&mut self, field: &Field, value: &impl serde::Serialize) {
        if !self.ok {
            return;
        }
        if field.name().starts_with("log.") {
            self.ok = false;
            return;
        }
        self.out.push(b',');
        self.ok = serde_json::to_writer(&mut *self.out, field.name()).is_ok();
        self.out.push(b':');
        self.ok &= serde_json::to_writer(&mut *self.out, value).is_ok();
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, &value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, &value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, &value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, &value);
    }

    fn record_error(&mut self, _: &Field, _: &(dyn std::error::Error + 'static)) {
        self.ok = false;
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, &format_args!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Lines [`AccessFormat`] wrote itself, on this thread.
        pub(super) static FAST_LINES: Cell<usize> = const { Cell::new(0) };
    }

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

    /// What the `fmt` layer of [`init`] writes for the events `emit` makes,
    /// and how many of them took the fast way.
    fn render(format: LogFormat, fast: bool, emit: &dyn Fn()) -> (Vec<String>, usize) {
        let out = Shared::default();
        let sink = LogSink::new(out.clone());
        let subscriber =
            tracing_subscriber::registry().with(output_layer(format, sink.clone(), fast));
        let before = FAST_LINES.with(Cell::get);
        tracing::subscriber::with_default(subscriber, emit);
        sink.flush();
        let lines = out.text().lines().map(str::to_owned).collect();
        (lines, FAST_LINES.with(Cell::get) - before)
    }

    /// The line with its timestamp replaced, once checked for its shape.
    fn untimed(format: LogFormat, line: &str) -> String {
        let at = match format {
            LogFormat::Text => 0,
            LogFormat::Json => "{\"timestamp\":\"".len(),
        };
        let stamp = &line[at..at + 27];
        let shape: String = stamp
            .chars()
            .map(|c| if c.is_ascii_digit() { '0' } else { c })
            .collect();
        assert_eq!(shape, "0000-00-00T00:00:00.000000Z", "{line}");
        format!("{}<time>{}", &line[..at], &line[at + 27..])
    }

    #[test]
    fn text_and_json_access_lines_match_tracing_subscriber() {
        use crate::metrics::Outcome;
        type Emit = Box<dyn Fn()>;
        // (the events, whether the fast way takes them in text, in JSON)
        let cases: Vec<(Emit, bool, bool)> = vec![
            (
                Box::new(|| {
                    tracing::info!(
                        target: ACCESS_TARGET,
                        method = %http::Method::GET,
                        path = %"/api/v1/charge_points/%20x",
                        status = 200u16,
                        client_id = "acme",
                        key_id = "key_AbC-9_",
                        upstream_status = 0u16,
                        decision = ?Outcome::forwarded,
                        duration_ms = 0.007260999999999999f64,
                        "request"
                    )
                }),
                true,
                true,
            ),
            (
                Box::new(|| {
                    tracing::warn!(
                        target: ACCESS_TARGET,
                        client_id = "q\"uo\\te\ttab\n\u{e9}\u{1b}[31m\u{301}'",
                        empty = "",
                        n = -42i64,
                        big = u64::MAX,
                        yes = true,
                        tiny = 1e-7f64,
                        huge = 1e21f64,
                        zero = -0.0f64,
                        nan = f64::NAN,
                        inf = f64::INFINITY,
                        round = 123.0f64,
                        debug = ?Some("x\ny"),
                        "request {}", 7
                    )
                }),
                true,
                true,
            ),
            (
                Box::new(|| tracing::error!(target: ACCESS_TARGET, "no fields")),
                true,
                true,
            ),
            // A raw identifier is named without its `r#`.
            (
                Box::new(|| tracing::info!(target: ACCESS_TARGET, r#type = 1, "request")),
                true,
                true,
            ),
            // A message the text format escapes is left to it.
            (
                Box::new(|| tracing::info!(target: ACCESS_TARGET, "bell \x07 esc \x1b[0m")),
                false,
                true,
            ),
            // Left to tracing-subscriber: an error, a span around the event.
            (
                Box::new(|| {
                    let e = std::io::Error::other("broken");
                    tracing::info!(target: ACCESS_TARGET, error = &e as &dyn std::error::Error, "request")
                }),
                false,
                false,
            ),
            (
                Box::new(|| {
                    tracing::info_span!("conn", peer = "p").in_scope(
                        || tracing::info!(target: ACCESS_TARGET, status = 1u16, "request"),
                    )
                }),
                false,
                false,
            ),
            // Other targets always are.
            (
                Box::new(|| tracing::info!(status = 1u16, "request")),
                false,
                false,
            ),
        ];
        for format in [LogFormat::Text, LogFormat::Json] {
            for (i, (emit, text, json)) in cases.iter().enumerate() {
                let fast = if format == LogFormat::Text {
                    text
                } else {
                    json
                };
                let (want, none) = render(format, false, emit.as_ref());
                let (got, taken) = render(format, true, emit.as_ref());
                assert_eq!(none, 0);
                assert_eq!(taken, usize::from(*fast), "case {i}, {format:?}: {got:?}");
                assert_eq!(want.len(), 1, "case {i}: {want:?}");
                assert_eq!(
                    untimed(format, &got[0]),
                    untimed(format, &want[0]),
                    "case {i}, {format:?}"
                );
            }
        }
    }

    #[test]
    fn timestamps_are_written_as_tracing_subscriber_writes_them() {
        for (secs, nanos) in [
            (0, 0),
            (1_770_717_600, 123_456_789),
            (1_770_717_600, 999_999_999),
            (951_782_400, 1_000), // 2000-02-29
            (253_402_300_799, 5), // 9999-12-31T23:59:59
        ] {
            let now = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
            let mut out = Vec::new();
            timestamp(&mut out, now).unwrap();
            // Twice: the second from this thread's last second.
            timestamp(&mut out, now).unwrap();
            let want = chrono::DateTime::from_timestamp(secs as i64, nanos)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            assert_eq!(String::from_utf8(out).unwrap(), want.repeat(2));
        }
        let mut out = Vec::new();
        let past = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert!(timestamp(&mut out, past).is_none());
        assert!(timestamp(&mut out, later).is_none());
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
