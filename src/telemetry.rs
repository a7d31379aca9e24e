//! Logging set-up and the access log.
//!
//! Every line goes to stderr through `tracing-appender`'s non-blocking writer:
//! a request thread hands the formatted line to a channel and a worker thread
//! writes it (through a 64 KiB buffer, flushed whenever the channel runs empty,
//! so a quiet process writes each line at once and a busy one writes many
//! lines per `write(2)`). [`init`] returns the [`LogGuard`] that flushes what
//! is still queued when it is dropped; `tollgate serve` holds it until the
//! process exits. Lines are dropped, never blocking a request, only if the
//! worker falls [`LOG_QUEUE_LINES`] lines behind.
//!
//! Ordinary events are formatted by `tracing-subscriber` (text or JSON, from
//! `log.format`); the level comes from the config (overridden by `RUST_LOG`)
//! and can be changed while the process runs ([`set_level`], used by a config
//! reload); the format cannot.
//!
//! The access log is tollgate's own: one [`AccessRecord`] per public request,
//! emitted once as an event of target [`ACCESS_TARGET`] (so the level filter
//! applies to it), rendered by [`AccessRecord`] itself in the format
//! docs/operations.md documents — not an imitation of a logging library's.

use std::cell::RefCell;
use std::fmt;
use std::io::{BufWriter, Write};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};
use crate::metrics::Outcome;

/// The target of the access log's events.
pub const ACCESS_TARGET: &str = "tollgate::access";
/// The field of an access event that carries its [`AccessRecord`].
const RECORD_FIELD: &str = "record";
/// The buffer between the log worker and stderr.
const WRITE_BUFFER: usize = 64 * 1024;
/// How long the log worker waits after a write before it looks at the queue
/// again (see [`Linger`]).
pub const LINGER: Duration = Duration::from_millis(10);

/// The handle that swaps the level filter of the installed subscriber.
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();
/// Set when `RUST_LOG` decided the level: the config's level then never applies.
static FROM_ENV: OnceLock<bool> = OnceLock::new();

/// Keeps the log worker running; dropping it writes out every queued line
/// (waiting up to a second) and stops the worker.
#[must_use = "dropping the guard stops the log writer"]
#[derive(Debug)]
pub struct LogGuard {
    _worker: Option<WorkerGuard>,
}

/// Lines the log worker may fall behind before new ones are dropped. The
/// queue is allocated whole at start (`tracing-appender`'s default of 128,000
/// lines held 4 MB of RSS in an idle process); at 10 ms per worker pass this
/// still absorbs a burst of over a million lines a second.
pub const LOG_QUEUE_LINES: usize = 16_384;

/// Installs the global subscriber; a second call is a no-op (and its guard
/// holds nothing).
pub fn init(cfg: &LogConfig) -> LogGuard {
    let (filter, from_env) = match EnvFilter::try_from_default_env() {
        Ok(f) => (f, true),
        Err(_) => (
            EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info")),
            false,
        ),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let (writer, worker) = NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("tollgate-log")
        .finish(Linger::new(std::io::stderr()));
    if tracing_subscriber::registry()
        .with(filter)
        .with(output_layer(cfg.format, writer))
        .try_init()
        .is_ok()
    {
        let _ = LEVEL.set(handle);
        let _ = FROM_ENV.set(from_env);
        LogGuard {
            _worker: Some(worker),
        }
    } else {
        LogGuard { _worker: None }
    }
}

/// The layer that writes events to `writer`: tracing-subscriber's text (no
/// ANSI colours) or flattened JSON format, and access records in their own.
fn output_layer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .map_event_format(|inner| WithAccess { inner, json: true })
            .with_writer(writer)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .map_event_format(|inner| WithAccess { inner, json: false })
            .with_writer(writer)
            .boxed(),
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

/// The log worker's output: `W` behind a [`WRITE_BUFFER`] buffer that the
/// worker flushes whenever its queue runs empty. After a flush that wrote
/// something, the worker sleeps [`LINGER`] before it takes the next lines —
/// the lines just written are already out, so no line waits for it — and the
/// lines queued meanwhile go out together in one `write(2)`. Without it a
/// busy process pays a write, a wake-up of the worker and two context
/// switches for nearly every request (measured on a loaded 2-core machine:
/// 20–30 % more CPU per request than the old hand-made batching; with a
/// 10 ms linger, none). Requests never wait for it: they only queue a line.
struct Linger<W: Write> {
    out: BufWriter<W>,
    /// Something was written since the last flush.
    written: bool,
}

impl<W: Write> Linger<W> {
    fn new(out: W) -> Self {
        Linger {
            out: BufWriter::with_capacity(WRITE_BUFFER, out),
            written: false,
        }
    }
}

impl<W: Write> Write for Linger<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written = true;
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let flushed = self.out.flush();
        if std::mem::take(&mut self.written) {
            std::thread::sleep(LINGER);
        }
        flushed
    }
}

/// One public request, as the access log records it. Built when the
/// response is ready and emitted once with [`AccessRecord::emit`].
#[derive(Clone, Copy)]
pub struct AccessRecord<'a> {
    /// When the response headers were ready.
    pub at: SystemTime,
    pub method: &'a http::Method,
    /// The path as received, without the query.
    pub path: &'a str,
    pub status: u16,
    pub client_id: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub decision: Outcome,
    /// Policies: for a request forwarded under shadow mode, the refusal it
    /// would have got; the decision is then logged as `shadow_<refusal>`.
    pub shadow: Option<&'static str>,
    /// Arrival to response headers.
    pub duration: Duration,
}

impl AccessRecord<'_> {
    /// Emits the record: one `INFO` event of target [`ACCESS_TARGET`].
    pub fn emit(&self) {
        tracing::info!(target: ACCESS_TARGET, record = ?self, "request");
    }

    /// `forwarded`, `rate_limited`, ..., or `shadow_rate_limited` /
    /// `shadow_quota_exceeded` for a request forwarded under shadow mode.
    fn write_decision(&self, f: &mut dyn fmt::Write) -> fmt::Result {
        match self.shadow {
            Some(reason) => write!(f, "shadow_{reason}"),
            None => write!(f, "{:?}", self.decision),
        }
    }

    /// The text line, without its newline:
    /// `<timestamp>  INFO tollgate::access: request method=GET path=/x status=200 ...`.
    fn write_text(&self, f: &mut dyn fmt::Write) -> fmt::Result {
        timestamp(f, self.at)?;
        f.write_str("  INFO ")?;
        f.write_str(ACCESS_TARGET)?;
        f.write_str(": request method=")?;
        text_value(f, self.method.as_str())?;
        f.write_str(" path=")?;
        text_value(f, self.path)?;
        f.write_str(" status=")?;
        f.write_str(itoa::Buffer::new().format(self.status))?;
        f.write_str(" client_id=")?;
        text_value(f, self.client_id.unwrap_or("-"))?;
        f.write_str(" key_id=")?;
        text_value(f, self.key_id.unwrap_or("-"))?;
        f.write_str(" upstream_status=")?;
        f.write_str(itoa::Buffer::new().format(self.upstream_status.unwrap_or(0)))?;
        f.write_str(" decision=")?;
        self.write_decision(f)?;
        f.write_str(" duration_ms=")?;
        millis(f, self.duration)
    }

    /// The JSON object, without its newline; the keys of the text line plus
    /// `timestamp`, `level`, `target` and `message`.
    fn write_json(&self, f: &mut dyn fmt::Write) -> fmt::Result {
        f.write_str("{\"timestamp\":\"")?;
        timestamp(f, self.at)?;
        f.write_str("\",\"level\":\"INFO\",\"target\":\"")?;
        f.write_str(ACCESS_TARGET)?;
        f.write_str("\",\"message\":\"request\",\"method\":")?;
        json_string(f, self.method.as_str())?;
        f.write_str(",\"path\":")?;
        json_string(f, self.path)?;
        f.write_str(",\"status\":")?;
        f.write_str(itoa::Buffer::new().format(self.status))?;
        f.write_str(",\"client_id\":")?;
        json_string(f, self.client_id.unwrap_or("-"))?;
        f.write_str(",\"key_id\":")?;
        json_string(f, self.key_id.unwrap_or("-"))?;
        f.write_str(",\"upstream_status\":")?;
        f.write_str(itoa::Buffer::new().format(self.upstream_status.unwrap_or(0)))?;
        f.write_str(",\"decision\":\"")?;
        self.write_decision(f)?;
        f.write_str("\",\"duration_ms\":")?;
        millis(f, self.duration)?;
        f.write_char('}')
    }
}

/// `{:?}` is the text line, `{:#?}` the JSON object: how [`WithAccess`]
/// reaches the record through the event's field (tracing hands a visitor a
/// field only as `dyn Debug`).
impl fmt::Debug for AccessRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            self.write_json(f)
        } else {
            self.write_text(f)
        }
    }
}

/// `d` in milliseconds with three decimals (`3.207`), without float formatting.
fn millis(f: &mut dyn fmt::Write, d: Duration) -> fmt::Result {
    let micros = d.as_micros();
    f.write_str(itoa::Buffer::new().format(micros / 1000))?;
    let frac = (micros % 1000) as u16;
    let digits = [
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    f.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
}

/// A text value as it is when it is plain (printable ASCII without space,
/// `"`, `\` or `=`), else as a JSON string, so that a line always splits
/// back into its fields.
fn text_value(f: &mut dyn fmt::Write, s: &str) -> fmt::Result {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'='));
    if plain {
        f.write_str(s)
    } else {
        json_string(f, s)
    }
}

/// `s` as a JSON string: `"`, `\` and control characters escaped.
fn json_string(f: &mut dyn fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if c.is_control() => "",
            _ => continue,
        };
        f.write_str(&s[start..i])?;
        if escape.is_empty() {
            write!(f, "\\u{:04x}", u32::from(c))?;
        } else {
            f.write_str(escape)?;
        }
        start = i + c.len_utf8();
    }
    f.write_str(&s[start..])?;
    f.write_char('"')
}

/// `at` in UTC with microseconds: `2026-02-10T10:00:00.123456Z`. The part up
/// to the second is made once a second per thread.
fn timestamp(f: &mut dyn fmt::Write, at: SystemTime) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != secs {
            let t = i64::try_from(secs)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .unwrap_or_default();
            *cell = (secs, t.format("%Y-%m-%dT%H:%M:%S").to_string());
        }
        write!(f, "{}.{:06}Z", cell.1, since.subsec_micros())
    })
}

/// The `fmt` layer's event format: `inner` (tracing-subscriber's) for every
/// event except an access record, which writes itself.
struct WithAccess<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithAccess<F>
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
        if event.metadata().target() == ACCESS_TARGET {
            let mut record = RecordField {
                writer: &mut writer,
                json: self.json,
                written: None,
            };
            event.record(&mut record);
            if let Some(result) = record.written {
                return result.and_then(|()| writer.write_char('\n'));
            }
        }
        self.inner.format_event(ctx, writer, event)
    }
}

/// Writes the [`RECORD_FIELD`] of an access event, as text or JSON.
struct RecordField<'a, 'w> {
    writer: &'a mut Writer<'w>,
    json: bool,
    written: Option<fmt::Result>,
}

impl Visit for RecordField<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == RECORD_FIELD && self.written.is_none() {
            self.written = Some(if self.json {
                write!(self.writer, "{value:#?}")
            } else {
                write!(self.writer, "{value:?}")
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer whose output the test can read.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Shared {
        type Writer = Shared;
        fn make_writer(&'a self) -> Shared {
            self.clone()
        }
    }

    fn method() -> &'static http::Method {
        static GET: http::Method = http::Method::GET;
        &GET
    }

    fn record() -> AccessRecord<'static> {
        AccessRecord {
            at: SystemTime::UNIX_EPOCH + Duration::new(1_770_717_600, 123_456_789),
            method: method(),
            path: "/api/v1/charge_points/%20x",
            status: 200,
            client_id: Some("acme"),
            key_id: Some("key_AbC-9_"),
            upstream_status: Some(201),
            decision: Outcome::forwarded,
            shadow: None,
            duration: Duration::from_micros(3_207),
        }
    }

    /// What the `fmt` layer of [`init`] writes for the events `emit` makes.
    fn render(format: LogFormat, emit: impl Fn()) -> String {
        let out = Shared::default();
        let subscriber = tracing_subscriber::registry().with(output_layer(format, out.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn an_access_record_is_one_text_line_in_its_documented_format() {
        assert_eq!(
            render(LogFormat::Text, || record().emit()),
            "2026-02-10T10:00:00.123456Z  INFO tollgate::access: request method=GET \
             path=/api/v1/charge_points/%20x status=200 client_id=acme key_id=key_AbC-9_ \
             upstream_status=201 decision=forwarded duration_ms=3.207\n"
        );
        let unauthenticated = AccessRecord {
            client_id: None,
            key_id: None,
            upstream_status: None,
            decision: Outcome::unauthorized,
            shadow: None,
            status: 401,
            path: "/a b\"c=\\\u{7}",
            ..record()
        };
        assert_eq!(
            render(LogFormat::Text, || unauthenticated.emit()),
            "2026-02-10T10:00:00.123456Z  INFO tollgate::access: request method=GET \
             path=\"/a b\\\"c=\\\\\\u0007\" status=401 client_id=- key_id=- \
             upstream_status=0 decision=unauthorized duration_ms=3.207\n"
        );
    }

    #[test]
    fn an_access_record_is_one_json_object_with_every_documented_key() {
        let line = render(LogFormat::Json, || record().emit());
        assert_eq!(
            line,
            "{\"timestamp\":\"2026-02-10T10:00:00.123456Z\",\"level\":\"INFO\",\
             \"target\":\"tollgate::access\",\"message\":\"request\",\"method\":\"GET\",\
             \"path\":\"/api/v1/charge_points/%20x\",\"status\":200,\"client_id\":\"acme\",\
             \"key_id\":\"key_AbC-9_\",\"upstream_status\":201,\"decision\":\"forwarded\",\
             \"duration_ms\":3.207}\n"
        );
        // Any text survives as a JSON string.
        let odd = AccessRecord {
            path: "/q\"uo\\te\ttab\n\u{e9}\u{1b}[31m\u{7f}",
            ..record()
        };
        let line = render(LogFormat::Json, || odd.emit());
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["path"], odd.path);
    }

    #[test]
    fn other_events_keep_tracing_subscribers_format() {
        let text = render(LogFormat::Text, || tracing::warn!(n = 1, "something else"));
        assert!(
            text.ends_with(" WARN tollgate::telemetry::tests: something else n=1\n"),
            "{text}"
        );
        let json = render(LogFormat::Json, || tracing::warn!(n = 1, "something else"));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["message"], "something else");
        assert_eq!(v["n"], 1);
        // An access-target event without a record is an ordinary event.
        let text = render(
            LogFormat::Text,
            || tracing::info!(target: ACCESS_TARGET, "plain"),
        );
        assert!(text.ends_with(" INFO tollgate::access: plain\n"), "{text}");
    }

    #[test]
    fn durations_are_milliseconds_with_three_decimals() {
        for (micros, want) in [
            (0, "0.000"),
            (12, "0.012"),
            (3_207, "3.207"),
            (1_000_000, "1000.000"),
            (12_345_678, "12345.678"),
        ] {
            let mut out = String::new();
            millis(&mut out, Duration::from_nanos(micros * 1000 + 999)).unwrap();
            assert_eq!(out, want);
        }
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        for (secs, nanos, want) in [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 1_000, "2000-02-29T00:00:00.000001Z"),
            (1_770_717_600, 999_999_999, "2026-02-10T10:00:00.999999Z"),
        ] {
            let mut out = String::new();
            let at = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
            timestamp(&mut out, at).unwrap();
            // Twice: the second from this thread's last second.
            timestamp(&mut out, at).unwrap();
            assert_eq!(out, want.repeat(2));
        }
    }
}
