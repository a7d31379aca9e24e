//! Micro-benchmarks of the pure (no I/O) parts of the request path:
//! key parsing with its checksum, the cache digest, path normalisation,
//! route matching, the sliding-window maths and the header decoration.
//! Run with `cargo bench --bench pure`; `bench/README.md` says more.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, Method};
use tollgate::config::Route;
use tollgate::headers::decorate;
use tollgate::keys::{self, Secret};
use tollgate::limits::window::Window;
use tollgate::limits::LimitState;
use tollgate::routes::{normalize, RouteTable};

fn key_parsing(c: &mut Criterion) {
    let secret = keys::generate();
    let text = secret.expose().to_owned();
    let mut g = c.benchmark_group("keys");
    g.bench_function("parse+checksum", |b| {
        b.iter(|| Secret::parse(black_box(&text)))
    });
    // One wrong character: refused by the checksum, before any lookup.
    let mut bad = text.clone().into_bytes();
    let last = bad.len() - 1;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap_or_default();
    g.bench_function("parse, bad checksum", |b| {
        b.iter(|| Secret::parse(black_box(&bad)))
    });
    g.bench_function("sha256 digest (cache key)", |b| {
        b.iter(|| black_box(&secret).digest())
    });
    g.finish();
}

fn paths(c: &mut Criterion) {
    let mut g = c.benchmark_group("routes");
    g.bench_function("normalize, clean path", |b| {
        b.iter(|| normalize(black_box("/api/v1/charge_points/CP-1234/sessions")))
    });
    g.bench_function("normalize, dots and escapes", |b| {
        b.iter(|| normalize(black_box("/api//v1/./charge_points/x/../%43P-1234/%7euser")))
    });
    let table = RouteTable::new(vec![
        route(
            "/api/v1/charge_points",
            &[Method::GET],
            "read:charge_points",
        ),
        route(
            "/api/v1/charge_points",
            &[Method::POST, Method::PUT, Method::PATCH, Method::DELETE],
            "write:charge_points",
        ),
        route("/api/v1/sessions", &[Method::GET], "read:charge_points"),
        route("/api/v1/tariffs", &[Method::GET], "read:charge_points"),
    ]);
    g.bench_function("requirement, first route", |b| {
        b.iter(|| {
            table.requirement(
                black_box(&Method::GET),
                black_box("/api/v1/charge_points/CP-1"),
            )
        })
    });
    g.bench_function("requirement, no route (4 tried)", |b| {
        b.iter(|| table.requirement(black_box(&Method::GET), black_box("/api/v2/other")))
    });
    g.finish();
}

fn route(path: &str, methods: &[Method], scope: &str) -> Route {
    Route {
        path: path.into(),
        methods: Some(methods.to_vec()),
        scope: Some(scope.into()),
        cost: 1,
        shadow: None,
    }
}

const T0: i64 = 1_770_717_600_000;

fn window(c: &mut Criterion) {
    let mut g = c.benchmark_group("window");
    // A full minute of history, one bucket a second: the steady state of a busy client.
    let mut full = Window::default();
    for s in 0..61 {
        full.add(T0 + s * 1000, 100);
    }
    let now = T0 + 60_500;
    g.bench_function("expire+state+add, same second", |b| {
        b.iter_batched_ref(
            || full.clone(),
            |w| {
                w.expire(black_box(now));
                let st = w.state(now, 1_000_000);
                w.add(now, 1);
                st
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("expire+state+add, new second", |b| {
        b.iter_batched_ref(
            || full.clone(),
            |w| {
                let now = now + 1000;
                w.expire(black_box(now));
                let st = w.state(now, 1_000_000);
                w.add(now, 1);
                st
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("state when full (retry instant)", |b| {
        b.iter(|| black_box(&full).state(black_box(now), 3000))
    });
    g.finish();
}

fn headers(c: &mut Criterion) {
    let st = LimitState {
        now_ms: T0 + 500,
        per_minute: 100_000_000,
        remaining: 99_987_654,
        reset_at: T0 / 1000 + 61,
        monthly: 1_000_000_000,
        monthly_used: 123_456,
        window_retry_at_ms: None,
    };
    let mut g = c.benchmark_group("headers");
    for ietf in [false, true] {
        let name = if ietf { "decorate, ietf" } else { "decorate" };
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                HeaderMap::new,
                |h| decorate(h, black_box(&st), ietf),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, key_parsing, paths, window, headers);
criterion_main!(benches);
