//! The config file contract (SPEC.md "Configuration (TOML)"): what is
//! accepted, what every default is, and the exact key and line each rejected
//! config is reported at — through the library and through `tollgate check`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

mod common;

use common::tollgate::command;
use tollgate::config::*;
use tollgate::limits::Limits;

/// SPEC.md's example block, verbatim.
const SPEC_EXAMPLE: &str = r#"[server]
listen = "0.0.0.0:8080"               # public listener: proxied traffic + tollgate's own client endpoints

[admin]
listen = "127.0.0.1:9090"             # /healthz, /readyz, /metrics, /admin/v1/...
token_env = "TOLLGATE_ADMIN_TOKEN"    # admin API bearer token is read from this environment variable

[upstream]
url = "http://127.0.0.1:3000"

[store]
backend = "memory"                    # "memory" (single process, the default) or "redis"
url = "redis://127.0.0.1:6379/0"      # redis only

[limits]                              # defaults for clients that set none
per_minute = 100
monthly = 10000

[auth]
scopes = ["read:charge_points", "write:charge_points"]   # the scopes keys may hold (besides read:/write:api_keys)

[[routes]]                            # first match wins; a request that matches no route needs a valid key only
path = "/api/v1/charge_points"        # prefix match on the normalised path, on segment boundaries
methods = ["GET"]                     # absent: any method
scope = "read:charge_points"
"#;

/// The smallest valid file.
const MINIMAL: &str = "[upstream]\nurl = \"http://127.0.0.1:3000\"\n";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("tollgate.toml"))
}

fn accept(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("rejected:\n{e}\n--- config ---\n{text}"),
    }
}

fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(c) => panic!("accepted: {c:#?}\n--- config ---\n{text}"),
        Err(e) => e.problems,
    }
}

fn methods(list: &[&str]) -> Option<Vec<http::Method>> {
    Some(
        list.iter()
            .map(|m| http::Method::from_bytes(m.as_bytes()).unwrap())
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// Accepted configs
// ---------------------------------------------------------------------------

#[test]
fn spec_example_is_accepted() {
    let c = accept(SPEC_EXAMPLE);
    assert_eq!(c.server.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.admin.listen, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(c.admin.token_env, "TOLLGATE_ADMIN_TOKEN");
    assert_eq!(c.upstream.authority.as_str(), "127.0.0.1:3000");
    assert_eq!(c.upstream.port(), 3000);
    assert_eq!(c.upstream.base_path, "");
    assert_eq!(c.store.backend, StoreBackend::Memory);
    assert_eq!(
        c.limits.defaults(),
        Limits {
            per_minute: 100,
            monthly: 10_000
        }
    );
    let scopes: BTreeSet<String> = [
        "read:charge_points",
        "write:charge_points",
        "read:api_keys",
        "write:api_keys",
    ]
    .map(String::from)
    .into();
    assert_eq!(c.auth.scopes, scopes);
    assert_eq!(
        c.routes,
        vec![Route {
            path: "/api/v1/charge_points".into(),
            methods: methods(&["GET"]),
            scope: Some("read:charge_points".into()),
            cost: 1,
            shadow: None,
        }]
    );
    // The example's "redis only" url does nothing with the memory backend: said so, not fatal.
    assert_eq!(
        c.warnings,
        vec![
            "line 13: store.url: ignored because store.backend is \"memory\"; \
             set backend = \"redis\" to use it, or remove it"
        ]
    );
}

#[test]
fn shipped_example_file_is_accepted_without_warnings() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let c = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.path, path);
    assert_eq!(
        c.routes,
        vec![
            Route {
                path: "/api/v1/charge_points".into(),
                methods: methods(&["GET"]),
                scope: Some("read:charge_points".into()),
                cost: 1,
                shadow: None,
            },
            Route {
                path: "/api/v1/charge_points".into(),
                methods: methods(&["POST", "PUT", "PATCH", "DELETE"]),
                scope: Some("write:charge_points".into()),
                cost: 1,
                shadow: None,
            },
        ]
    );
    assert!(c.auth.scopes.contains("write:charge_points"));
}

#[test]
fn minimal_file_gets_every_default() {
    let c = accept(MINIMAL);
    assert_eq!(c.server.listen, DEFAULT_SERVER_LISTEN.parse().unwrap());
    assert_eq!(
        c.server.header_read_timeout,
        Duration::from_millis(DEFAULT_HEADER_READ_TIMEOUT_MS)
    );
    assert_eq!(
        c.server.body_read_timeout,
        Duration::from_millis(DEFAULT_BODY_READ_TIMEOUT_MS)
    );
    assert_eq!(c.server.max_body_bytes, None);
    assert_eq!(
        u64::from(c.server.max_header_bytes),
        DEFAULT_MAX_HEADER_BYTES
    );
    assert!(!c.server.websocket);
    assert_eq!(c.admin.listen, DEFAULT_ADMIN_LISTEN.parse().unwrap());
    assert_eq!(c.admin.token_env, DEFAULT_TOKEN_ENV);
    assert_eq!(
        c.upstream.timeout,
        Duration::from_millis(DEFAULT_UPSTREAM_TIMEOUT_MS)
    );
    assert_eq!(
        c.upstream.connect_timeout,
        Duration::from_millis(DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS)
    );
    assert_eq!(
        c.upstream.pool_idle_timeout,
        Duration::from_millis(DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT_MS)
    );
    assert_eq!(
        c.upstream.pool_max_idle_per_host,
        DEFAULT_UPSTREAM_POOL_MAX_IDLE
    );
    assert_eq!(c.upstream.keep_credential, DEFAULT_KEEP_CREDENTIAL);
    assert_eq!(c.store.backend, StoreBackend::Memory);
    assert_eq!(
        c.store.timeout,
        Duration::from_millis(DEFAULT_STORE_TIMEOUT_MS)
    );
    assert_eq!(
        c.limits.defaults(),
        Limits {
            per_minute: DEFAULT_PER_MINUTE,
            monthly: DEFAULT_MONTHLY
        }
    );
    assert_eq!(c.auth.bcrypt_cost, DEFAULT_BCRYPT_COST);
    assert_eq!(c.auth.cache_capacity, DEFAULT_CACHE_CAPACITY);
    assert_eq!(
        c.auth.max_failures_per_minute,
        DEFAULT_MAX_FAILURES_PER_MINUTE
    );
    assert!(c.server.trusted_proxies.is_empty());
    assert!(c.routes.is_empty());
    assert_eq!(c.headers.ietf, DEFAULT_HEADERS_IETF);
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.log.level, DEFAULT_LOG_LEVEL);
    assert_eq!(
        c.server.drain_timeout,
        Duration::from_millis(DEFAULT_DRAIN_TIMEOUT_MS)
    );
    assert_eq!(c.server.drain_timeout, Duration::from_secs(25));
    assert_eq!(
        c.metrics,
        MetricsConfig {
            per_client: DEFAULT_METRICS_PER_CLIENT,
            per_client_max: DEFAULT_METRICS_PER_CLIENT_MAX,
        }
    );
    assert!(!c.metrics.per_client);
    assert_eq!(
        c.reload,
        ReloadConfig {
            watch: DEFAULT_RELOAD_WATCH,
            interval: Duration::from_millis(DEFAULT_RELOAD_INTERVAL_MS),
        }
    );
    assert!(c.warnings.is_empty());
}

#[test]
fn builtin_scopes_are_always_added() {
    let builtins: BTreeSet<String> = tollgate::model::BUILTIN_SCOPES.map(String::from).into();
    assert_eq!(accept(MINIMAL).auth.scopes, builtins);

    let c = accept(&format!("{MINIMAL}[auth]\nscopes = [\"billing:read\"]\n"));
    assert!(c.auth.scopes.is_superset(&builtins));
    assert!(c.auth.scopes.contains("billing:read"));
    assert_eq!(c.auth.scopes.len(), 3);

    // Naming a built-in explicitly is allowed (it is what `check` prints).
    let c = accept(&format!("{MINIMAL}[auth]\nscopes = [\"read:api_keys\"]\n"));
    assert_eq!(c.auth.scopes, builtins);

    // A route may require a built-in scope without declaring it.
    let c = accept(&format!(
        "{MINIMAL}[[routes]]\npath = \"/admin\"\nscope = \"write:api_keys\"\n"
    ));
    assert_eq!(c.routes[0].scope.as_deref(), Some("write:api_keys"));
}

#[test]
fn route_paths_are_normalised_and_methods_uppercased() {
    let c = accept(&format!(
        "{MINIMAL}\
         [[routes]]\npath = \"//api//v1/charge_points/\"\nmethods = [\"get\", \"Head\"]\n\
         [[routes]]\npath = \"/\"\n"
    ));
    assert_eq!(
        c.routes,
        vec![
            Route {
                path: "/api/v1/charge_points".into(),
                methods: methods(&["GET", "HEAD"]),
                scope: None,
                cost: 1,
                shadow: None,
            },
            Route {
                path: "/".into(),
                methods: None,
                scope: None,
                cost: 1,
                shadow: None,
            },
        ]
    );
}

#[test]
fn every_key_can_be_set() {
    let c = accept(
        r#"
[server]
listen = "[::1]:8081"
header_read_timeout_ms = 2500
drain_timeout_ms = 0
trusted_proxies = ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]
body_read_timeout_ms = 700
max_body_bytes = 1048576
max_header_bytes = 8192
websocket = true

[admin]
listen = "127.0.0.1:0"
token_env = "MY_TOKEN"

[upstream]
url = "http://api.internal:8000/base/"
timeout_ms = 1000
connect_timeout_ms = 200
pool_idle_timeout_ms = 3000
pool_max_idle_per_host = 0
keep_credential = true

[store]
backend = "redis"
url = "redis://user:hunter2@redis:6380/3"
timeout_ms = 250

[limits]
per_minute = 7
monthly = 9

[auth]
scopes = ["a", "b:c.*"]
bcrypt_cost = 4
cache_capacity = 1
max_failures_per_minute = 5

[headers]
ietf = true

[log]
format = "json"
level = "tollgate=debug,info"

[metrics]
per_client = true
per_client_max = 5

[reload]
watch = false
interval_ms = 250
"#,
    );
    assert_eq!(c.server.listen, "[::1]:8081".parse().unwrap());
    assert_eq!(c.server.header_read_timeout, Duration::from_millis(2500));
    assert_eq!(c.server.body_read_timeout, Duration::from_millis(700));
    assert_eq!(c.server.max_body_bytes, Some(1_048_576));
    assert_eq!(c.server.max_header_bytes, 8192);
    assert!(c.server.websocket);
    assert_eq!(c.admin.listen.port(), 0);
    assert_eq!(c.admin.token_env, "MY_TOKEN");
    assert_eq!(c.upstream.authority.as_str(), "api.internal:8000");
    assert_eq!(c.upstream.base_path, "/base");
    assert_eq!(c.upstream.url(), "http://api.internal:8000/base");
    assert_eq!(c.upstream.timeout, Duration::from_millis(1000));
    assert_eq!(c.upstream.connect_timeout, Duration::from_millis(200));
    assert_eq!(c.upstream.pool_idle_timeout, Duration::from_millis(3000));
    assert_eq!(c.upstream.pool_max_idle_per_host, 0);
    assert!(c.upstream.keep_credential);
    assert_eq!(
        c.store.backend,
        StoreBackend::Redis {
            url: "redis://user:hunter2@redis:6380/3".into()
        }
    );
    assert_eq!(c.store.timeout, Duration::from_millis(250));
    assert_eq!(
        c.limits.defaults(),
        Limits {
            per_minute: 7,
            monthly: 9
        }
    );
    assert!(c.auth.scopes.contains("b:c.*"));
    assert_eq!(c.auth.bcrypt_cost, 4);
    assert_eq!(c.auth.cache_capacity, 1);
    assert_eq!(c.auth.max_failures_per_minute, 5);
    let proxies: Vec<String> = c
        .server
        .trusted_proxies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(proxies, ["10.0.0.0/8", "fd00::/8", "192.0.2.7/32"]);
    assert!(c.headers.ietf);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "tollgate=debug,info");
    assert_eq!(c.server.drain_timeout, Duration::ZERO);
    assert_eq!(
        c.metrics,
        MetricsConfig {
            per_client: true,
            per_client_max: 5
        }
    );
    assert_eq!(
        c.reload,
        ReloadConfig {
            watch: false,
            interval: Duration::from_millis(250)
        }
    );
}

#[test]
fn cluster_and_sentinel_backends_and_failure_mode() {
    let c = accept(
        r#"
[upstream]
url = "http://a"
[store]
backend = "redis-cluster"
urls = ["redis://127.0.0.1:7000", "redis://:hunter2@127.0.0.1:7001"]
failure_mode = "open"
replicas = 3
max_in_flight = 64
"#,
    );
    assert_eq!(
        c.store.backend,
        StoreBackend::RedisCluster {
            urls: vec![
                "redis://127.0.0.1:7000".into(),
                "redis://:hunter2@127.0.0.1:7001".into()
            ]
        }
    );
    assert_eq!(c.store.failure_mode, FailureMode::Open);
    assert_eq!((c.store.replicas, c.store.max_in_flight), (3, 64));
    let text = c.describe();
    for line in [
        "backend = \"redis-cluster\"",
        "urls = [\"redis://127.0.0.1:7000\", \"redis://:***@127.0.0.1:7001\"]",
        "failure_mode = \"open\"",
        "replicas = 3",
        "max_in_flight = 64",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
    assert!(!text.contains("hunter2"));

    let c = accept(
        r#"
[upstream]
url = "http://a"
[store]
backend = "redis-sentinel"
sentinels = ["redis://127.0.0.1:26379", "redis://127.0.0.1:26380"]
master_name = "mymaster"
"#,
    );
    assert_eq!(
        c.store.backend,
        StoreBackend::RedisSentinel {
            sentinels: vec![
                "redis://127.0.0.1:26379".into(),
                "redis://127.0.0.1:26380".into()
            ],
            master_name: "mymaster".into()
        }
    );
    assert_eq!(c.store.failure_mode, FailureMode::Closed);
    let text = c.describe();
    assert!(
        text.lines().any(|l| l == "master_name = \"mymaster\""),
        "{text}"
    );
}

#[test]
fn upstream_without_port_defaults_to_80() {
    let c = accept("[upstream]\nurl = \"http://api.internal\"\n");
    assert_eq!(c.upstream.port(), 80);
    assert_eq!(c.upstream.base_path, "");
}

#[test]
fn listeners_on_port_zero_may_share_an_address() {
    accept(&format!(
        "{MINIMAL}[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n"
    ));
}

// ---------------------------------------------------------------------------
// describe(): what `tollgate check` prints
// ---------------------------------------------------------------------------

#[test]
fn describe_fills_in_every_default() {
    let text = accept(MINIMAL).describe();
    for line in [
        "[server]",
        "listen = \"0.0.0.0:8080\"",
        "header_read_timeout_ms = 10000",
        "trusted_proxies = []",
        "body_read_timeout_ms = 30000",
        "max_body_bytes = 0",
        "max_header_bytes = 65536",
        "websocket = false",
        "[admin]",
        "listen = \"127.0.0.1:9090\"",
        "token_env = \"TOLLGATE_ADMIN_TOKEN\"",
        "[upstream]",
        "url = \"http://127.0.0.1:3000\"",
        "timeout_ms = 30000",
        "connect_timeout_ms = 5000",
        "pool_idle_timeout_ms = 90000",
        "pool_max_idle_per_host = 256",
        "keep_credential = false",
        "[store]",
        "backend = \"memory\"",
        "timeout_ms = 1000",
        "failure_mode = \"closed\"",
        "replicas = 1",
        "max_in_flight = 1024",
        "[limits]",
        "per_minute = 100",
        "monthly = 10000",
        "[auth]",
        "scopes = [\"read:api_keys\", \"write:api_keys\"]",
        "bcrypt_cost = 10",
        "cache_capacity = 100000",
        "max_failures_per_minute = 20",
        "[headers]",
        "ietf = false",
        "[log]",
        "format = \"text\"",
        "level = \"info\"",
        "drain_timeout_ms = 25000",
        "[metrics]",
        "per_client = false",
        "per_client_max = 1000",
        "[reload]",
        "watch = true",
        "interval_ms = 1000",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing from:\n{text}"
        );
    }
}

#[test]
fn describe_masks_the_redis_password() {
    let c = accept(&format!(
        "{MINIMAL}[store]\nbackend = \"redis\"\nurl = \"redis://tollgate:hunter2@redis:6379/0\"\n"
    ));
    let text = c.describe();
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.contains("url = \"redis://tollgate:***@redis:6379/0\""),
        "{text}"
    );
}

#[test]
fn describe_output_is_a_config_that_means_the_same() {
    for input in [MINIMAL, SPEC_EXAMPLE] {
        let first = accept(input);
        let second = accept(&first.describe());
        // Warnings are comments, and do not survive the round trip.
        let body = |c: &Config| {
            let text = c.describe();
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(body(&second), body(&first));
        assert!(second.warnings.is_empty());
        assert_eq!(second.routes, first.routes);
        assert_eq!(second.auth.scopes, first.auth.scopes);
    }
}

/// Every section of a `Config`, as `Debug` shows it (path and warnings aside).
fn sections(c: &Config) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        c.server,
        c.admin,
        c.upstream,
        c.store,
        c.limits.defaults(),
        c.auth,
        c.routes,
        c.headers,
        c.log,
        c.metrics,
        c.reload
    )
}

/// `check` prints the validated types through serde: every key set to a
/// value other than its default must come back, under the file's name and
/// unit, as the same value.
#[test]
fn describe_round_trips_every_key() {
    let every_key = r#"
[server]
listen = "[::1]:8081"
header_read_timeout_ms = 2500
drain_timeout_ms = 0
trusted_proxies = ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]
body_read_timeout_ms = 700
max_body_bytes = 1048576
max_header_bytes = 8192
websocket = true

[admin]
listen = "127.0.0.1:0"
token_env = "MY_TOKEN"

[upstream]
url = "http://api.internal:8000/base/"
timeout_ms = 1000
connect_timeout_ms = 200
pool_idle_timeout_ms = 3000
pool_max_idle_per_host = 0
keep_credential = true
protocol = "http2"

[store]
backend = "redis"
url = "redis://user@redis:6380/3"
timeout_ms = 250
failure_mode = "open"
replicas = 4
max_in_flight = 9

[limits]
per_minute = 7
monthly = 9

[auth]
scopes = ["a", "b:c.*"]
bcrypt_cost = 4
cache_capacity = 1
max_failures_per_minute = 5

[[routes]]
path = "/x"
methods = ["get", "POST"]
scope = "a"

[[routes]]
path = "/"

[headers]
ietf = true

[log]
format = "json"
level = "tollgate=debug,info"

[metrics]
per_client = true
per_client_max = 5

[reload]
watch = false
interval_ms = 250
"#;
    let cluster = "[upstream]\nurl = \"https://h\"\nprotocol = \"auto\"\n[store]\n\
                   backend = \"redis-cluster\"\nurls = [\"redis://a:1\", \"redis://b:2\"]\n";
    let sentinel = "[upstream]\nurl = \"http://h\"\n[store]\nbackend = \"redis-sentinel\"\n\
                    sentinels = [\"redis://s:1\"]\nmaster_name = \"m\"\n";
    for input in [every_key, cluster, sentinel, MINIMAL, SPEC_EXAMPLE] {
        let first = accept(input);
        let printed = first.describe();
        let second = accept(&printed);
        assert_eq!(sections(&second), sections(&first), "printed:\n{printed}");
    }
}

#[test]
fn describe_shows_warnings_as_comments() {
    let text = accept(SPEC_EXAMPLE).describe();
    assert!(
        text.lines()
            .any(|l| l.starts_with("# warning: line 13: store.url: ignored")),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// Rejected configs: one case per rule, each pinned to its key and line.
// ---------------------------------------------------------------------------

/// `(config, the start of the one problem it must produce)`. Every config
/// starts with the two lines of MINIMAL unless the case is about them.
const REJECTED: &[(&str, &str)] = &[
    // -- Policies: plans, cost, shadow, refund_on --
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/r\"\ncost = 0\n",
        "line 5: routes[0].cost: must be between 1 and 10000, got 0",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/r\"\ncost = 10001\n",
        "line 5: routes[0].cost: must be between 1 and 10000, got 10001",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/r\"\nshadow = \"yes\"\n",
        "line 5: routes[0].shadow: invalid type: string \"yes\", expected a boolean",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[limits]\nshadow = 1\n",
        "line 4: limits.shadow: invalid type: integer `1`, expected a boolean",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[plans.pro]\nper_minute = 5\nshadow = \"no\"\n",
        "line 5: plans.pro.shadow: invalid type: string \"no\", expected a boolean",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[limits]\nrefund_on = [\"unreachable\", \"4xx\"]\n",
        "line 4: limits.refund_on[1]: unknown outcome \"4xx\"; refund_on takes \"unreachable\" and \"5xx\"",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[limits]\nrefund_on = [\"5xx\", \"5xx\"]\n",
        "line 4: limits.refund_on[1]: \"5xx\" is listed twice",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[plans.empty]\nshadow = true\n",
        "line 3: plans.empty: a plan needs per_minute, monthly or both",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[plans.pro]\nmonthly = 0\n",
        "line 4: plans.pro.monthly: must be at least 1, got 0",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[plans.Pro]\nmonthly = 5\n",
        "line 3: plans.Pro: a plan name is 1 to 64 characters",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[plans.pro]\nper_minit = 5\n",
        "line 4: plans.pro.per_minit: unknown key `per_minit`, expected one of `per_minute`, `monthly`, `shadow`",
    ),
    // -- TOML syntax and types (the reader stops at the first) --
    (
        "bogus = 1\n[upstream]\nurl = \"http://a\"\n",
        "line 1: bogus: unknown key `bogus`, expected one of `server`, `admin`, `upstream`",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[bogus]\nx = 1\n",
        "line 3: bogus: unknown key `bogus`",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[server]\nlistn = \"0.0.0.0:1\"\n",
        "line 4: server.listn: unknown key `listn`, expected one of `listen`, `header_read_timeout_ms`, `drain_timeout_ms`, `trusted_proxies`",
    ),
    (
        "[upstream]\nurl = \"http://a\"\nretries = 3\n",
        "line 3: upstream.retries: unknown key `retries`",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/\"\n[[routes]]\npath = \"/x\"\nmethod = [\"GET\"]\n",
        "line 7: routes[1].method: unknown key `method`, expected one of `path`, `methods`, `scope`, `cost`, `shadow`",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[server]\nlisten = 8080\n",
        "line 4: server.listen: invalid type: integer `8080`, expected a string",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[limits]\nper_minute = \"100\"\n",
        "line 4: limits.per_minute: invalid type: string \"100\", expected an integer",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[limits]\nmonthly = 1.5\n",
        "line 4: limits.monthly: invalid type: floating point `1.5`, expected an integer",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[limits]\nper_minute = 99999999999999999999\n",
        "line 4: limits.per_minute: integer 99999999999999999999 is too large",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[upstream.keep_credential]\nx = 1\n",
        "line 3: upstream.keep_credential: invalid type: table, expected a boolean",
    ),
    (
        "upstream = \"http://a\"\n",
        "line 1: upstream: invalid type: string \"http://a\", expected a table",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[auth]\nscopes = \"read:x\"\n",
        "line 4: auth.scopes: invalid type: string \"read:x\", expected an array",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/\"\nmethods = \"GET\"\n",
        "line 5: routes[0].methods: invalid type: string \"GET\", expected an array",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/\"\nmethods = [\"GET\", 1]\n",
        "line 5: routes[0].methods[1]: invalid type: integer `1`, expected a string",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[routes]\npath = \"/\"\n",
        "line 3: routes: invalid type: table, expected an array",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[headers]\nietf = \"yes\"\n",
        "line 4: headers.ietf: invalid type: string \"yes\", expected a boolean",
    ),
    (
        "[upstream]\nurl = \"http://a\"\nurl = \"http://b\"\n",
        "line 3: upstream.url: duplicate key `url`",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[upstream]\ntimeout_ms = 5\n",
        "line 3: upstream: duplicate key `upstream`",
    ),
    (
        "[upstream]\nurl = \"http://a\n",
        "line 2: upstream.url: invalid basic string",
    ),
    // -- [server] / [admin] --
    (
        "[upstream]\nurl = \"http://a\"\n[server]\nlisten = \"localhost:8080\"\n",
        "line 4: server.listen: \"localhost:8080\" is not an IP address and port",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[server]\nheader_read_timeout_ms = 0\n",
        "line 4: server.header_read_timeout_ms: must be at least 1, got 0",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[server]\nbody_read_timeout_ms = 0\n",
        "line 4: server.body_read_timeout_ms: must be at least 1, got 0",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[server]\nmax_body_bytes = -1\n",
        "line 4: server.max_body_bytes: must be at least 0, got -1",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[server]\nmax_header_bytes = 4096\n",
        "line 4: server.max_header_bytes: must be between 8192 and 1048576, got 4096",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[server]\nwebsocket = \"on\"\n",
        "line 4: server.websocket: invalid type: string \"on\", expected a boolean",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[admin]\nlisten = \"0.0.0.0:8080\"\n",
        "line 4: admin.listen: 0.0.0.0:8080 clashes with server.listen 0.0.0.0:8080",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[server]\nlisten = \"0.0.0.0:9000\"\n[admin]\nlisten = \"127.0.0.1:9000\"\n",
        "line 6: admin.listen: 127.0.0.1:9000 clashes with server.listen 0.0.0.0:9000",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[admin]\ntoken_env = \"\"\n",
        "line 4: admin.token_env: \"\" is not an environment variable name",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[admin]\ntoken_env = \"MY-TOKEN\"\n",
        "line 4: admin.token_env: \"MY-TOKEN\" is not an environment variable name",
    ),
    // -- [upstream] --
    ("", "upstream.url: required"),
    (
        "[upstream]\ntimeout_ms = 100\n",
        "line 1: upstream.url: required",
    ),
    (
        "[upstream]\nurl = \"ftp://api\"\n",
        "line 2: upstream.url: scheme must be \"http\" or \"https\", not \"ftp\"",
    ),
    (
        "[upstream]\nurl = \"http://api\"\nprotocol = \"h3\"\n",
        "line 3: upstream.protocol: must be \"http1\", \"http2\" or \"auto\", not \"h3\"",
    ),
    (
        "[upstream]\nurl = \"http://api\"\nca = \"/etc/ca.pem\"\n",
        "line 3: upstream.ca: applies only to an https:// upstream.url",
    ),
    (
        "[upstream]\nurl = \"https://api\"\nca = \"/nonexistent/ca.pem\"\n",
        "line 3: upstream.ca: /nonexistent/ca.pem: cannot read: ",
    ),
    (
        "[server.tls]\ncert = \"/nonexistent/tls.crt\"\n[upstream]\nurl = \"http://api\"\n",
        "line 1: server.tls.key: required with [server.tls]: a PEM file path",
    ),
    (
        "[upstream]\nurl = \"127.0.0.1:3000\"\n",
        "line 2: upstream.url: \"127.0.0.1:3000\" is not an absolute URL",
    ),
    (
        "[upstream]\nurl = \"http://api/v1?x=1\"\n",
        "line 2: upstream.url: \"http://api/v1?x=1\" has a query",
    ),
    (
        "[upstream]\nurl = \"http://api/v1#top\"\n",
        "line 2: upstream.url: \"http://api/v1#top\" has a fragment",
    ),
    (
        "[upstream]\nurl = \"http://api:0\"\n",
        "line 2: upstream.url: port \"0\" is not a port number",
    ),
    (
        "[upstream]\nurl = \"http://api:70000\"\n",
        "line 2: upstream.url: port \"70000\" is not a port number",
    ),
    (
        "[upstream]\nurl = \"http://user:pw@api\"\n",
        "line 2: upstream.url: must not contain credentials",
    ),
    (
        "[upstream]\nurl = \"http://a b\"\n",
        "line 2: upstream.url: \"http://a b\" is not a valid URL",
    ),
    (
        "[upstream]\nurl = \"http://a\"\ntimeout_ms = 0\n",
        "line 3: upstream.timeout_ms: must be at least 1, got 0",
    ),
    (
        "[upstream]\nurl = \"http://a\"\nconnect_timeout_ms = -5\n",
        "line 3: upstream.connect_timeout_ms: must be at least 1, got -5",
    ),
    (
        "[upstream]\nurl = \"http://a\"\npool_idle_timeout_ms = 0\n",
        "line 3: upstream.pool_idle_timeout_ms: must be at least 1, got 0",
    ),
    (
        "[upstream]\nurl = \"http://a\"\npool_max_idle_per_host = -1\n",
        "line 3: upstream.pool_max_idle_per_host: must be at least 0, got -1",
    ),
    // -- [store] --
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"postgres\"\n",
        "line 4: store.backend: unknown backend \"postgres\" (known: \"memory\", \"redis\", \"redis-cluster\", \"redis-sentinel\")",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"redis-cluster\"\n",
        "line 4: store.urls: required by this store.backend",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"redis-cluster\"\nurls = []\n",
        "line 5: store.urls: is empty",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"redis-cluster\"\nurls = [\"redis://r:7000\",\n  \"http://r:7001\"]\n",
        "line 6: store.urls: must be a redis:// or rediss:// URL",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"redis\"\nurl = \"redis://r\"\nurls = [\"redis://r:7000\"]\n",
        "line 6: store.urls: is not read by store.backend = \"redis\"",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"redis-sentinel\"\nmaster_name = \"m\"\n",
        "line 4: store.sentinels: required by this store.backend",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"redis-sentinel\"\nsentinels = [\"redis://r:26379\"]\n",
        "line 4: store.master_name: required when store.backend is \"redis-sentinel\"",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"redis-sentinel\"\nsentinels = [\"redis://r:26379\"]\nmaster_name = \" \"\n",
        "line 6: store.master_name: is empty",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nsentinels = [\"redis://r:26379\"]\n",
        "line 4: store.sentinels: is not read by store.backend = \"memory\"",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nmaster_name = \"mymaster\"\n",
        "line 4: store.master_name: is not read by store.backend = \"memory\"",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nfailure_mode = \"ajar\"\n",
        "line 4: store.failure_mode: unknown mode \"ajar\" (known: \"closed\", \"open\")",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nreplicas = 0\n",
        "line 4: store.replicas: must be between 1 and 10000, got 0",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nmax_in_flight = 0\n",
        "line 4: store.max_in_flight: must be between 1 and 1000000, got 0",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"redis\"\n",
        "line 4: store.url: required when store.backend is \"redis\"",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"redis\"\nurl = \"http://r:6379\"\n",
        "line 5: store.url: must be a redis:// or rediss:// URL",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"redis\"\nurl = \"rediss://r:6379/#insecure\"\n",
        "line 5: store.url: has a fragment (\"#...\"); remove it: there is no \"#insecure\"",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"redis-cluster\"\nurls = [\"rediss://r:1\", \"redis://r:2\"]\n",
        "line 5: store.urls: mixes redis:// and rediss:// URLs",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"redis\"\nurl = \"redis://r:6379\"\nclient_key = \"k.pem\"\n",
        "line 6: store.client_key: is only used over TLS",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\npassword_env = \"P\"\n",
        "line 4: store.password_env: is not read by store.backend = \"memory\"",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"redis\"\nurl = \"rediss://r\"\npassword_env = \"1X\"\n",
        "line 6: store.password_env: \"1X\" is not an environment variable name",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"redis-sentinel\"\nmaster_name = \"m\"\nsentinels = [\"rediss://s:1\"]\npassword_env = \"TG_CONFIG_TEST_SURELY_UNSET\"\n",
        "line 7: store.password_env: the environment variable TG_CONFIG_TEST_SURELY_UNSET is not set",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\nbackend = \"redis\"\nurl = \"redis://:hunter2@r/zero\"\n",
        "line 5: store.url: cannot be used: Invalid database number",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\ntimeout_ms = 0\n",
        "line 4: store.timeout_ms: must be between 1 and 60000, got 0",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[store]\ntimeout_ms = 60001\n",
        "line 4: store.timeout_ms: must be between 1 and 60000, got 60001",
    ),
    // -- [limits] --
    (
        "[upstream]\nurl = \"http://a\"\n[limits]\nper_minute = 0\n",
        "line 4: limits.per_minute: must be at least 1, got 0",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[limits]\nper_minute = -10\n",
        "line 4: limits.per_minute: must be at least 1, got -10",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[limits]\nper_minute = 5\nmonthly = 0\n",
        "line 5: limits.monthly: must be at least 1, got 0",
    ),
    // -- [auth] --
    (
        "[upstream]\nurl = \"http://a\"\n[auth]\nscopes = [\"a\", \"b\", \"a\"]\n",
        "line 4: auth.scopes[2]: scope \"a\" is listed twice",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[auth]\nscopes = [\"read charge points\"]\n",
        "line 4: auth.scopes[0]: invalid scope \"read charge points\"",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[auth]\nscopes = [\n  \"ok\",\n  \"\",\n]\n",
        "line 6: auth.scopes[1]: empty scope",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[auth]\nscopes = [\"read:\"]\n",
        "line 4: auth.scopes[0]: invalid scope \"read:\"",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[auth]\nscopes = [\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]\n",
        "line 4: auth.scopes[0]: scope \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is longer than 64 characters",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[auth]\nbcrypt_cost = 3\n",
        "line 4: auth.bcrypt_cost: must be between 4 and 31, got 3",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[auth]\nbcrypt_cost = 32\n",
        "line 4: auth.bcrypt_cost: must be between 4 and 31, got 32",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[auth]\ncache_capacity = 0\n",
        "line 4: auth.cache_capacity: must be at least 1, got 0",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[auth]\nmax_failures_per_minute = 0\n",
        "line 4: auth.max_failures_per_minute: must be between 1 and 60000, got 0",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n",
        "line 4: server.trusted_proxies[1]: \"10.0.0.0/33\": the prefix length must be 0 to 32",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[server]\n\ntrusted_proxies = [\"proxy.local\"]\n",
        "line 5: server.trusted_proxies[0]: \"proxy.local\" is not an IP address or network like \"10.0.0.0/8\"",
    ),
    // -- [[routes]] --
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\nscope = \"read:api_keys\"\n",
        "line 3: routes[0].path: required",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"api/v1\"\n",
        "line 4: routes[0].path: \"api/v1\" must start with \"/\"",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/api/../admin\"\n",
        "line 4: routes[0].path: \"/api/../admin\": \".\" and \"..\" segments are not allowed",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/api/./v1\"\n",
        "line 4: routes[0].path: \"/api/./v1\": \".\" and \"..\" segments are not allowed",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/caf%C3%A9\"\n",
        "line 4: routes[0].path: \"/caf%C3%A9\": percent-encoding",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/search?q=1\"\n",
        "line 4: routes[0].path: \"/search?q=1\": a route matches the path only",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/docs#intro\"\n",
        "line 4: routes[0].path: \"/docs#intro\": a route matches the path only",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/api v1\"\n",
        "line 4: routes[0].path: \"/api v1\": whitespace and control characters are not allowed",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/a\\u0000b\"\n",
        "line 4: routes[0].path: \"/a\\0b\": whitespace and control characters are not allowed",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/\"\nmethods = []\n",
        "line 5: routes[0].methods: is empty, so the route could never match",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/\"\nmethods = [\"GET\", \"FETCH\"]\n",
        "line 5: routes[0].methods[1]: unknown HTTP method \"FETCH\" (known: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT, TRACE)",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/\"\nmethods = [\"G E T\"]\n",
        "line 5: routes[0].methods[0]: unknown HTTP method \"G E T\"",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/\"\nmethods = [\"GET\", \"get\"]\n",
        "line 5: routes[0].methods[1]: method GET is listed twice",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/\"\nscope = \"billing:read\"\n",
        "line 5: routes[0].scope: unknown scope \"billing:read\" (known: read:api_keys, write:api_keys)",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/api\"\n[[routes]]\npath = \"/api/v1/x\"\nmethods = [\"GET\"]\n",
        "line 5: routes[1]: unreachable: routes[0] (line 3, path \"/api\", any method) matches every request this route would",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[[routes]]\npath = \"/a/\"\nmethods = [\"GET\", \"POST\"]\n[[routes]]\npath = \"//a\"\nmethods = [\"POST\"]\n",
        "line 6: routes[1]: unreachable: routes[0] (line 3, path \"/a\", GET, POST)",
    ),
    // -- [headers] / [log] --
    (
        "[upstream]\nurl = \"http://a\"\n[headers]\nietf = true\nx_ratelimit = false\n",
        "line 5: headers.x_ratelimit: unknown key `x_ratelimit`, expected `ietf`",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[log]\nformat = \"xml\"\n",
        "line 4: log.format: unknown format \"xml\" (known: \"text\", \"json\")",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[log]\nlevel = \"\"\n",
        "line 4: log.level: is empty",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[log]\nlevel = \"[bad\"\n",
        "line 4: log.level: \"[bad\" is not a level or filter directive",
    ),
    // -- [server] drain / [metrics] / [reload] --
    (
        "[upstream]\nurl = \"http://a\"\n[server]\ndrain_timeout_ms = -1\n",
        "line 4: server.drain_timeout_ms: must be between 0 and 3600000, got -1",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[server]\ndrain_timeout_ms = 3600001\n",
        "line 4: server.drain_timeout_ms: must be between 0 and 3600000, got 3600001",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[metrics]\nper_client = \"yes\"\n",
        "line 4: metrics.per_client: invalid type: string \"yes\", expected a boolean",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[metrics]\nper_client = true\nper_client_max = 0\n",
        "line 5: metrics.per_client_max: must be between 1 and 100000, got 0",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[metrics]\nper_client_labels = true\n",
        "line 4: metrics.per_client_labels: unknown key `per_client_labels`, expected `per_client` or `per_client_max`",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[reload]\nwatch = 1\n",
        "line 4: reload.watch: invalid type: integer `1`, expected a boolean",
    ),
    (
        "[upstream]\nurl = \"http://a\"\n[reload]\ninterval_ms = 50\n",
        "line 4: reload.interval_ms: must be between 100 and 3600000, got 50",
    ),
];

#[test]
fn each_rejected_config_names_its_key_and_line() {
    let mut failures = Vec::new();
    for (i, (text, expected)) in REJECTED.iter().enumerate() {
        let got = match parse(text) {
            Ok(_) => vec!["<accepted>".to_owned()],
            Err(e) => e.problems,
        };
        if got.len() != 1 || !got[0].starts_with(expected) {
            failures.push(format!(
                "case {i}:\n  config:   {text:?}\n  expected: {expected}\n  got:      {got:#?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        REJECTED.len(),
        failures.join("\n")
    );
}

#[test]
fn unknown_route_scope_message_lists_the_known_scopes() {
    // The layout of the brief's example: the bad scope on line 14, in the second route.
    let text = r#"[upstream]
url = "http://127.0.0.1:3000"

[auth]
scopes = ["read:charge_points", "write:charge_points"]

[[routes]]
path = "/api/v1/charge_points"
methods = ["GET"]
scope = "read:charge_points"

[[routes]]
path = "/api/v1/invoices"
scope = "billing:read"
"#;
    let err = parse(text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tollgate.toml: line 14: routes[1].scope: unknown scope \"billing:read\" \
         (known: read:charge_points, write:charge_points, read:api_keys, write:api_keys)"
    );
}

#[test]
fn all_semantic_problems_are_reported_in_file_order() {
    let text = r#"[server]
listen = "nowhere"

[limits]
per_minute = 0
monthly = -1

[auth]
scopes = ["a", "a"]

[[routes]]
path = "relative"
scope = "nope"
"#;
    assert_eq!(
        problems(text),
        vec![
            "upstream.url: required: the API to forward to, e.g. [upstream] url = \"http://127.0.0.1:3000\"",
            "line 2: server.listen: \"nowhere\" is not an IP address and port, like \"0.0.0.0:8080\" or \"[::1]:8080\"",
            "line 5: limits.per_minute: must be at least 1, got 0",
            "line 6: limits.monthly: must be at least 1, got -1",
            "line 9: auth.scopes[1]: scope \"a\" is listed twice",
            "line 12: routes[0].path: \"relative\" must start with \"/\"",
            "line 13: routes[0].scope: unknown scope \"nope\" (known: a, read:api_keys, write:api_keys)",
        ]
    );
}

#[test]
fn error_messages_never_show_a_redis_password() {
    let text =
        format!("{MINIMAL}[store]\nbackend = \"redis\"\nurl = \"redis://u:hunter2@0.0.0.0/1\"\n");
    let all = problems(&text).join("\n");
    assert!(
        all.starts_with("line 5: store.url: cannot be used"),
        "{all}"
    );
    assert!(!all.contains("hunter2"), "{all}");
}

#[test]
fn missing_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let err = Config::load(&path).unwrap_err();
    assert_eq!(err.path, path);
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read config file", path.display())),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// The binary: `tollgate check --config FILE`
// ---------------------------------------------------------------------------

fn write_config(dir: &tempfile::TempDir, text: &str) -> PathBuf {
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn check(path: &Path) -> Output {
    command()
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_prints_the_effective_config_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, SPEC_EXAMPLE);
    let out = check(&path);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(
        stdout.contains("[upstream]\nurl = \"http://127.0.0.1:3000\"\n"),
        "{stdout}"
    );
    assert!(stdout.contains("bcrypt_cost = 10"), "{stdout}");
    assert!(
        stdout.contains("scope = \"read:charge_points\""),
        "{stdout}"
    );
    // What it printed is itself a valid config.
    accept(&stdout);
}

#[test]
fn check_masks_the_redis_password_and_shows_the_operating_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &format!(
            "{MINIMAL}[store]\nbackend = \"redis\"\nurl = \"redis://tollgate:hunter2@redis:6379/0\"\n\
             [server]\ndrain_timeout_ms = 5000\n[metrics]\nper_client = true\n"
        ),
    );
    let out = check(&path);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(!text(&out.stderr).contains("hunter2"));
    for line in [
        "url = \"redis://tollgate:***@redis:6379/0\"",
        "drain_timeout_ms = 5000",
        "per_client = true",
        "per_client_max = 1000",
        "interval_ms = 1000",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} missing:\n{stdout}"
        );
    }
}

/// The credentials `check` resolves from the environment are shown by the
/// variable's name; their values are never printed.
#[test]
fn check_shows_credential_variables_by_name_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &format!(
            "{MINIMAL}[store]\nbackend = \"redis\"\nurl = \"rediss://redis:6379/0\"\n\
             username_env = \"TG_CHECK_USER\"\npassword_env = \"TG_CHECK_PASSWORD\"\n"
        ),
    );
    let out = command()
        .arg("check")
        .arg("--config")
        .arg(&path)
        .env("TG_CHECK_USER", "user-value-7f3a")
        .env("TG_CHECK_PASSWORD", "password-value-9c1e")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    for line in [
        "username_env = \"TG_CHECK_USER\"",
        "password_env = \"TG_CHECK_PASSWORD\"",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} missing:\n{stdout}"
        );
    }
    assert!(!stdout.contains("user-value-7f3a"), "{stdout}");
    assert!(!stdout.contains("password-value-9c1e"), "{stdout}");
}

#[test]
fn check_names_every_error_of_the_operating_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "[upstream]\nurl = \"http://a\"\n[server]\ndrain_timeout_ms = -5\n\
         [metrics]\nper_client_max = 0\n[reload]\ninterval_ms = 1\n[log]\nlevel = \"[x\"\n",
    );
    let out = check(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    let p = path.display();
    assert!(lines[0].starts_with(&format!("{p}: line 4: server.drain_timeout_ms:")));
    assert!(lines[1].starts_with(&format!("{p}: line 6: metrics.per_client_max:")));
    assert!(lines[2].starts_with(&format!("{p}: line 8: reload.interval_ms:")));
    assert!(lines[3].starts_with(&format!("{p}: line 10: log.level:")));
}

#[test]
fn check_rejects_an_unknown_key_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "[upstream]\nurl = \"http://a\"\n[limits]\nper_minut = 5\n",
    );
    let out = check(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr),
        format!(
            "{}: line 4: limits.per_minut: unknown key `per_minut`, expected one of `per_minute`, `monthly`, `shadow`, `refund_on`\n",
            path.display()
        )
    );
}

#[test]
fn check_rejects_a_wrong_type_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "[upstream]\nurl = \"http://a\"\n[limits]\nmonthly = \"lots\"\n",
    );
    let out = check(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr),
        format!(
            "{}: line 4: limits.monthly: invalid type: string \"lots\", expected an integer\n",
            path.display()
        )
    );
}

#[test]
fn check_rejects_an_unknown_route_scope_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = SPEC_EXAMPLE.replace(
        "scope = \"read:charge_points\"",
        "scope = \"read:chargepoints\"",
    );
    let path = write_config(&dir, &bad);
    let out = check(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        text(&out.stderr),
        format!(
            "{}: line 25: routes[0].scope: unknown scope \"read:chargepoints\" \
             (known: read:charge_points, write:charge_points, read:api_keys, write:api_keys)\n",
            path.display()
        )
    );
}

#[test]
fn check_prints_every_problem_on_its_own_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "[limits]\nper_minute = 0\nmonthly = 0\n");
    let out = check(&path);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let p = path.display();
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(lines[0].starts_with(&format!("{p}: upstream.url: required")));
    assert!(lines[1].starts_with(&format!(
        "{p}: line 2: limits.per_minute: must be at least 1"
    )));
    assert!(lines[2].starts_with(&format!("{p}: line 3: limits.monthly: must be at least 1")));
}

#[test]
fn check_fails_with_exit_2_for_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.toml");
    let out = check(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}: cannot read config file", path.display())),
        "{stderr}"
    );
}

#[test]
fn policies_are_read_and_described() {
    let c = accept(
        "[upstream]\nurl = \"http://a\"\n[limits]\nshadow = true\nrefund_on = [\"5xx\", \"unreachable\"]\n\
         [plans.free]\nper_minute = 60\n[plans.pro]\nper_minute = 1000\nmonthly = 1000000\nshadow = false\n\
         [[routes]]\npath = \"/api/v1/reports\"\ncost = 10\nshadow = true\n",
    );
    assert!(c.limits.shadow);
    assert_eq!(
        c.limits.refund_on,
        [RefundReason::ServerError, RefundReason::Unreachable]
    );
    assert_eq!(c.plans["free"].per_minute, Some(60));
    assert_eq!(c.plans["free"].monthly, None);
    assert_eq!(c.plans["pro"].shadow, Some(false));
    assert_eq!((c.routes[0].cost, c.routes[0].shadow), (10, Some(true)));
    let d = c.describe();
    for line in [
        "shadow = true",
        "refund_on = [\"5xx\", \"unreachable\"]",
        "[plans.free]",
        "cost = 10",
    ] {
        assert!(d.contains(line), "{line:?} not in\n{d}");
    }
    // The description is itself a config that means the same.
    let again = accept(&d);
    assert_eq!(again.plans, c.plans);
    assert_eq!(again.limits, c.limits);
    assert_eq!(again.routes, c.routes);
    // Defaults: no plans, cost 1, shadow off, no refunds.
    let m = accept(MINIMAL);
    assert!(m.plans.is_empty() && !m.limits.shadow && m.limits.refund_on.is_empty());
}
