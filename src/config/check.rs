//! Validation: the raw file ([`super::raw`]) → the validated [`Config`],
//! collecting every problem (key path, line, message) rather than stopping
//! at the first. Owns the wording of every semantic error; the value checks
//! it calls live in [`super::values`], `[store]` in [`store`] and
//! [`super::redis_access`]. Reads the files the config names (TLS material),
//! never connects to anything.

mod store;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Authority;
use toml::Spanned;

use super::raw::*;
use super::spans::{line_of, Problem};
use super::values::*;
use super::*;
use crate::limits::policy::PlanLimits;
use crate::model::BUILTIN_SCOPES;
use crate::throttle::Cidr;

pub(super) struct Checker<'t> {
    pub(super) text: &'t str,
    pub(super) problems: Vec<Problem>,
    pub(super) warnings: Vec<Problem>,
}

impl Checker<'_> {
    pub(super) fn line(&self, span: &Range<usize>) -> usize {
        line_of(self.text, span.start)
    }

    pub(super) fn report(
        &mut self,
        span: Option<&Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) {
        let problem = self.problem(span, key, message);
        self.problems.push(problem);
    }

    /// A setting that is accepted but does nothing.
    pub(super) fn warn(
        &mut self,
        span: Option<&Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) {
        let problem = self.problem(span, key, message);
        self.warnings.push(problem);
    }

    pub(super) fn problem(
        &self,
        span: Option<&Range<usize>>,
        key: &str,
        message: impl Into<String>,
    ) -> Problem {
        Problem {
            line: span.map(|s| self.line(s)),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// An integer in `min..=max`, or `default` when absent.
    pub(super) fn int(
        &mut self,
        key: &str,
        value: &Opt<i64>,
        default: u64,
        min: u64,
        max: u64,
    ) -> u64 {
        let Some(v) = value else { return default };
        match u64::try_from(*v.get_ref()) {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                let bounds = if max == u64::MAX {
                    format!("must be at least {min}")
                } else {
                    format!("must be between {min} and {max}")
                };
                self.report(
                    Some(&v.span()),
                    key,
                    format!("{bounds}, got {}", v.get_ref()),
                );
                default
            }
        }
    }

    pub(super) fn millis(&mut self, key: &str, value: &Opt<i64>, default: u64) -> Duration {
        Duration::from_millis(self.int(key, value, default, 1, u64::MAX))
    }

    pub(super) fn socket_addr(
        &mut self,
        key: &str,
        value: &Opt<String>,
        default: &str,
    ) -> SocketAddr {
        let (text, span) = match value {
            Some(v) => (v.get_ref().as_str(), Some(v.span())),
            None => (default, None),
        };
        text.parse().unwrap_or_else(|_| {
            self.report(
                span.as_ref(),
                key,
                format!("{text:?} is not an IP address and port, like \"0.0.0.0:8080\" or \"[::1]:8080\""),
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        })
    }

    pub(super) fn config(&mut self, raw: RawConfig, path: &Path) -> Config {
        let server = self.server(raw.server);
        let admin = self.admin(raw.admin, &server);
        let upstream = self.upstream(raw.upstream);
        let store = self.store(raw.store);
        let limits = self.limits(raw.limits);
        let plans = self.plans(raw.plans);
        let (auth, declared) = self.auth(raw.auth);
        let routes = self.routes(raw.routes.unwrap_or_default(), &auth, &declared);
        let headers = self.headers(raw.headers);
        let log = self.log(raw.log);
        let metrics = self.metrics(raw.metrics);
        let reload = self.reload(raw.reload);
        let history = self.history(raw.history);
        let notify = self.notify(raw.notify);
        Config {
            path: path.to_owned(),
            server,
            admin,
            upstream,
            store,
            limits,
            plans,
            auth,
            routes,
            headers,
            log,
            metrics,
            reload,
            history,
            notify,
            warnings: Vec::new(),
        }
    }

    pub(super) fn server(&mut self, raw: Opt<RawServer>) -> ServerConfig {
        let (_, raw) = section(raw);
        let mut trusted_proxies = Vec::new();
        for (i, net) in raw
            .trusted_proxies
            .iter()
            .flat_map(|s| s.get_ref().iter())
            .enumerate()
        {
            match Cidr::parse(net.get_ref()) {
                Ok(c) => trusted_proxies.push(c),
                Err(message) => self.report(
                    Some(&net.span()),
                    &format!("server.trusted_proxies[{i}]"),
                    message,
                ),
            }
        }
        ServerConfig {
            listen: self.socket_addr("server.listen", &raw.listen, DEFAULT_SERVER_LISTEN),
            header_read_timeout: self.millis(
                "server.header_read_timeout_ms",
                &raw.header_read_timeout_ms,
                DEFAULT_HEADER_READ_TIMEOUT_MS,
            ),
            drain_timeout: Duration::from_millis(self.int(
                "server.drain_timeout_ms",
                &raw.drain_timeout_ms,
                DEFAULT_DRAIN_TIMEOUT_MS,
                *DRAIN_TIMEOUT_MS.start(),
                *DRAIN_TIMEOUT_MS.end(),
            )),
            trusted_proxies,
            body_read_timeout: self.millis(
                "server.body_read_timeout_ms",
                &raw.body_read_timeout_ms,
                DEFAULT_BODY_READ_TIMEOUT_MS,
            ),
            max_body_bytes: Some(self.int(
                "server.max_body_bytes",
                &raw.max_body_bytes,
                DEFAULT_MAX_BODY_BYTES,
                0,
                u64::MAX,
            ))
            .filter(|&n| n > 0),
            max_header_bytes: u32::try_from(self.int(
                "server.max_header_bytes",
                &raw.max_header_bytes,
                DEFAULT_MAX_HEADER_BYTES,
                *MAX_HEADER_BYTES.start(),
                *MAX_HEADER_BYTES.end(),
            ))
            .unwrap_or(u32::MAX),
            websocket: raw.websocket.map_or(DEFAULT_WEBSOCKET, Spanned::into_inner),
            tls: self.server_tls(raw.tls),
        }
    }

    /// `[server.tls]`: both files named, readable, matching, the key private.
    pub(super) fn server_tls(&mut self, raw: Opt<RawServerTls>) -> Option<ServerTls> {
        let span = raw.as_ref().map(Spanned::span);
        let raw = raw?.into_inner();
        let mut file = |key: &str, value: &Opt<String>| match value {
            Some(v) if !v.get_ref().is_empty() => Some((PathBuf::from(v.get_ref()), v.span())),
            _ => {
                self.report(
                    span.as_ref(),
                    key,
                    "required with [server.tls]: a PEM file path",
                );
                None
            }
        };
        let cert = file("server.tls.cert", &raw.cert);
        let key = file("server.tls.key", &raw.key);
        let ((cert, cert_span), (key, key_span)) = (cert?, key?);
        if let Err(e) = crate::tls::load_certified_key(&cert, &key) {
            let (name, span) = if e.is_key {
                ("server.tls.key", key_span)
            } else {
                ("server.tls.cert", cert_span)
            };
            self.report(Some(&span), name, e.to_string());
            return None;
        }
        Some(ServerTls { cert, key })
    }

    pub(super) fn admin(&mut self, raw: Opt<RawAdmin>, server: &ServerConfig) -> AdminConfig {
        let (_, raw) = section(raw);
        let listen = self.socket_addr("admin.listen", &raw.listen, DEFAULT_ADMIN_LISTEN);
        if listeners_clash(listen, server.listen) {
            let span = raw.listen.as_ref().map(Spanned::span);
            self.report(
                span.as_ref(),
                "admin.listen",
                format!(
                    "{listen} clashes with server.listen {}: the admin listener needs its own port",
                    server.listen
                ),
            );
        }
        let token_env = match &raw.token_env {
            None => DEFAULT_TOKEN_ENV.to_owned(),
            Some(v) => {
                let name = v.get_ref();
                if !valid_env_name(name) {
                    self.report(
                        Some(&v.span()),
                        "admin.token_env",
                        format!(
                            "{name:?} is not an environment variable name \
                             (letters, digits and _, not starting with a digit)"
                        ),
                    );
                }
                name.clone()
            }
        };
        AdminConfig { listen, token_env }
    }

    pub(super) fn upstream(&mut self, raw: Opt<RawUpstream>) -> UpstreamConfig {
        let (span, raw) = section(raw);
        let (tls, authority, base_path) = match &raw.url {
            None => {
                let message = "required: the API to forward to, e.g. \
                               [upstream] url = \"http://127.0.0.1:3000\"";
                self.report(span.as_ref(), "upstream.url", message);
                (false, Authority::from_static("invalid"), String::new())
            }
            Some(url) => match parse_upstream_url(url.get_ref()) {
                Ok(parts) => parts,
                Err(message) => {
                    self.report(Some(&url.span()), "upstream.url", message);
                    (false, Authority::from_static("invalid"), String::new())
                }
            },
        };
        let protocol = match &raw.protocol {
            None => DEFAULT_UPSTREAM_PROTOCOL,
            Some(p) => match p.get_ref().as_str() {
                "http1" => UpstreamProtocol::Http1,
                "http2" => UpstreamProtocol::Http2,
                "auto" => UpstreamProtocol::Auto,
                other => {
                    self.report(
                        Some(&p.span()),
                        "upstream.protocol",
                        format!("must be \"http1\", \"http2\" or \"auto\", not {other:?}"),
                    );
                    DEFAULT_UPSTREAM_PROTOCOL
                }
            },
        };
        let ca = match &raw.ca {
            None => None,
            Some(v) if !tls => {
                self.report(
                    Some(&v.span()),
                    "upstream.ca",
                    "applies only to an https:// upstream.url",
                );
                None
            }
            Some(v) => {
                let path = PathBuf::from(v.get_ref());
                match crate::tls::load_ca(&path) {
                    Ok(certs) => Some(UpstreamCa { path, certs }),
                    Err(e) => {
                        self.report(Some(&v.span()), "upstream.ca", e.to_string());
                        None
                    }
                }
            }
        };
        let pool_max_idle = self.int(
            "upstream.pool_max_idle_per_host",
            &raw.pool_max_idle_per_host,
            DEFAULT_UPSTREAM_POOL_MAX_IDLE as u64,
            0,
            u64::MAX,
        );
        UpstreamConfig {
            tls,
            authority,
            base_path,
            timeout: self.millis(
                "upstream.timeout_ms",
                &raw.timeout_ms,
                DEFAULT_UPSTREAM_TIMEOUT_MS,
            ),
            connect_timeout: self.millis(
                "upstream.connect_timeout_ms",
                &raw.connect_timeout_ms,
                DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS,
            ),
            pool_idle_timeout: self.millis(
                "upstream.pool_idle_timeout_ms",
                &raw.pool_idle_timeout_ms,
                DEFAULT_UPSTREAM_POOL_IDLE_TIMEOUT_MS,
            ),
            pool_max_idle_per_host: usize::try_from(pool_max_idle).unwrap_or(usize::MAX),
            keep_credential: raw
                .keep_credential
                .map_or(DEFAULT_KEEP_CREDENTIAL, Spanned::into_inner),
            protocol,
            ca,
        }
    }

    pub(super) fn limits(&mut self, raw: Opt<RawLimits>) -> LimitsConfig {
        let (_, raw) = section(raw);
        let mut refund_on = Vec::new();
        for (i, r) in raw.refund_on.iter().flat_map(|l| l.get_ref()).enumerate() {
            let key = format!("limits.refund_on[{i}]");
            match RefundReason::parse(r.get_ref()) {
                None => self.report(
                    Some(&r.span()),
                    &key,
                    format!(
                        "unknown outcome {:?}; refund_on takes \"unreachable\" and \"5xx\"",
                        r.get_ref()
                    ),
                ),
                Some(reason) if refund_on.contains(&reason) => self.report(
                    Some(&r.span()),
                    &key,
                    format!("{:?} is listed twice", r.get_ref()),
                ),
                Some(reason) => refund_on.push(reason),
            }
        }
        LimitsConfig {
            per_minute: self.int(
                "limits.per_minute",
                &raw.per_minute,
                DEFAULT_PER_MINUTE,
                1,
                u64::MAX,
            ),
            monthly: self.int("limits.monthly", &raw.monthly, DEFAULT_MONTHLY, 1, u64::MAX),
            shadow: raw.shadow.map_or(DEFAULT_SHADOW, Spanned::into_inner),
            refund_on,
        }
    }

    /// `[plans.<name>]`: a name like a client id, at least one limit.
    pub(super) fn plans(
        &mut self,
        raw: Opt<std::collections::BTreeMap<String, Spanned<RawPlan>>>,
    ) -> std::collections::BTreeMap<String, PlanLimits> {
        let (_, raw) = section(raw);
        let mut plans = std::collections::BTreeMap::new();
        for (name, spanned) in raw {
            let span = spanned.span();
            let plan = spanned.into_inner();
            let key = format!("plans.{name}");
            if !crate::model::valid_client_id(&name) {
                self.report(
                    Some(&span),
                    &key,
                    "a plan name is 1 to 64 characters of a-z, 0-9, '_' and '-', \
                     starting with a letter or digit",
                );
                continue;
            }
            let per_minute = plan.per_minute.as_ref().map(|_| {
                self.int(
                    &format!("{key}.per_minute"),
                    &plan.per_minute,
                    1,
                    1,
                    u64::MAX,
                )
            });
            let monthly = plan
                .monthly
                .as_ref()
                .map(|_| self.int(&format!("{key}.monthly"), &plan.monthly, 1, 1, u64::MAX));
            if per_minute.is_none() && monthly.is_none() {
                self.report(
                    Some(&span),
                    &key,
                    "a plan needs per_minute, monthly or both (a limit it leaves out is [limits]')",
                );
            }
            plans.insert(
                name,
                PlanLimits {
                    per_minute,
                    monthly,
                    shadow: plan.shadow.map(Spanned::into_inner),
                },
            );
        }
        plans
    }

    /// The validated section, and the scopes as listed (configured ones in
    /// file order, then the built-ins) for "known: ..." messages.
    pub(super) fn auth(&mut self, raw: Opt<RawAuth>) -> (AuthConfig, Vec<String>) {
        let (_, raw) = section(raw);
        let mut declared: Vec<String> = Vec::new();
        for (i, scope) in raw
            .scopes
            .iter()
            .flat_map(|s| s.get_ref().iter())
            .enumerate()
        {
            let key = format!("auth.scopes[{i}]");
            let name = scope.get_ref();
            if let Err(message) = check_scope(name) {
                self.report(Some(&scope.span()), &key, message);
            } else if declared.contains(name) {
                self.report(
                    Some(&scope.span()),
                    &key,
                    format!("scope {name:?} is listed twice"),
                );
            } else {
                declared.push(name.clone());
            }
        }
        for builtin in BUILTIN_SCOPES {
            if !declared.iter().any(|s| s == builtin) {
                declared.push(builtin.to_owned());
            }
        }
        let bcrypt_cost = self.int(
            "auth.bcrypt_cost",
            &raw.bcrypt_cost,
            u64::from(DEFAULT_BCRYPT_COST),
            u64::from(*BCRYPT_COST.start()),
            u64::from(*BCRYPT_COST.end()),
        );
        let cache_capacity = self.int(
            "auth.cache_capacity",
            &raw.cache_capacity,
            DEFAULT_CACHE_CAPACITY as u64,
            1,
            u64::MAX,
        );
        let max_failures = self.int(
            "auth.max_failures_per_minute",
            &raw.max_failures_per_minute,
            u64::from(DEFAULT_MAX_FAILURES_PER_MINUTE),
            u64::from(*MAX_FAILURES_PER_MINUTE.start()),
            u64::from(*MAX_FAILURES_PER_MINUTE.end()),
        );
        let auth = AuthConfig {
            scopes: declared.iter().cloned().collect(),
            bcrypt_cost: u32::try_from(bcrypt_cost).unwrap_or(DEFAULT_BCRYPT_COST),
            cache_capacity: usize::try_from(cache_capacity).unwrap_or(usize::MAX),
            max_failures_per_minute: u32::try_from(max_failures)
                .unwrap_or(DEFAULT_MAX_FAILURES_PER_MINUTE),
        };
        (auth, declared)
    }

    pub(super) fn routes(
        &mut self,
        raw: Vec<Spanned<RawRoute>>,
        auth: &AuthConfig,
        declared: &[String],
    ) -> Vec<Route> {
        // (route, span of its table) for the routes without problems.
        let mut valid: Vec<(usize, Route, Range<usize>)> = Vec::new();
        for (i, spanned) in raw.into_iter().enumerate() {
            let span = spanned.span();
            let raw = spanned.into_inner();
            let before = self.problems.len();

            let path = match &raw.path {
                None => {
                    self.report(
                        Some(&span),
                        &format!("routes[{i}].path"),
                        "required: the path prefix this route matches, e.g. path = \"/api/v1\"",
                    );
                    String::new()
                }
                Some(p) => normalize_route_path(p.get_ref()).unwrap_or_else(|message| {
                    self.report(Some(&p.span()), &format!("routes[{i}].path"), message);
                    String::new()
                }),
            };

            let methods = raw.methods.as_ref().map(|list| {
                if list.get_ref().is_empty() {
                    self.report(
                        Some(&list.span()),
                        &format!("routes[{i}].methods"),
                        "is empty, so the route could never match; remove the key to match any method",
                    );
                }
                let mut methods: Vec<http::Method> = Vec::new();
                for (j, m) in list.get_ref().iter().enumerate() {
                    let key = format!("routes[{i}].methods[{j}]");
                    match parse_method(m.get_ref()) {
                        Err(message) => self.report(Some(&m.span()), &key, message),
                        Ok(method) if methods.contains(&method) => {
                            self.report(Some(&m.span()), &key, format!("method {method} is listed twice"));
                        }
                        Ok(method) => methods.push(method),
                    }
                }
                methods
            });

            let scope = raw.scope.as_ref().map(|s| {
                let name = s.get_ref();
                if !auth.scopes.contains(name) {
                    self.report(
                        Some(&s.span()),
                        &format!("routes[{i}].scope"),
                        format!("unknown scope {name:?} (known: {})", declared.join(", ")),
                    );
                }
                name.clone()
            });

            let cost = self.int(
                &format!("routes[{i}].cost"),
                &raw.cost,
                DEFAULT_ROUTE_COST,
                1,
                crate::limits::policy::MAX_COST,
            );
            let shadow = raw.shadow.map(Spanned::into_inner);

            if self.problems.len() == before {
                valid.push((
                    i,
                    Route {
                        path,
                        methods,
                        scope,
                        cost,
                        shadow,
                    },
                    span,
                ));
            }
        }
        self.unreachable_routes(&valid);
        valid.into_iter().map(|(_, route, _)| route).collect()
    }

    /// First match wins, so a route that an earlier one fully covers never matches.
    pub(super) fn unreachable_routes(&mut self, routes: &[(usize, Route, Range<usize>)]) {
        for (n, (j, later, span)) in routes.iter().enumerate() {
            let cover = routes[..n]
                .iter()
                .find(|(_, earlier, _)| covers(earlier, later));
            if let Some((i, earlier, earlier_span)) = cover {
                let message = format!(
                    "unreachable: routes[{i}] (line {}, path {:?}, {}) matches every request \
                     this route would (first match wins); move this route above it or remove it",
                    self.line(earlier_span),
                    earlier.path,
                    describe_methods(&earlier.methods),
                );
                self.report(Some(span), &format!("routes[{j}]"), message);
            }
        }
    }

    pub(super) fn headers(&mut self, raw: Opt<RawHeaders>) -> HeadersConfig {
        let (_, raw) = section(raw);
        HeadersConfig {
            ietf: raw.ietf.map_or(DEFAULT_HEADERS_IETF, Spanned::into_inner),
        }
    }

    pub(super) fn log(&mut self, raw: Opt<RawLog>) -> LogConfig {
        let (_, raw) = section(raw);
        let format = match &raw.format {
            None => LogFormat::default(),
            Some(f) => match f.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    self.report(
                        Some(&f.span()),
                        "log.format",
                        format!("unknown format {other:?} (known: \"text\", \"json\")"),
                    );
                    LogFormat::default()
                }
            },
        };
        let level = match &raw.level {
            None => DEFAULT_LOG_LEVEL.to_owned(),
            Some(l) => {
                let text = l.get_ref();
                if text.trim().is_empty() {
                    self.report(
                        Some(&l.span()),
                        "log.level",
                        "is empty; use a level like \"info\" or a filter like \"tollgate=debug,info\"",
                    );
                } else if let Err(e) = tracing_subscriber::EnvFilter::try_new(text) {
                    self.report(
                        Some(&l.span()),
                        "log.level",
                        format!("{text:?} is not a level or filter directive: {e}"),
                    );
                }
                text.clone()
            }
        };
        LogConfig { format, level }
    }

    pub(super) fn metrics(&mut self, raw: Opt<RawMetrics>) -> MetricsConfig {
        let (_, raw) = section(raw);
        let max = self.int(
            "metrics.per_client_max",
            &raw.per_client_max,
            DEFAULT_METRICS_PER_CLIENT_MAX as u64,
            *METRICS_PER_CLIENT_MAX.start(),
            *METRICS_PER_CLIENT_MAX.end(),
        );
        MetricsConfig {
            per_client: raw
                .per_client
                .map_or(DEFAULT_METRICS_PER_CLIENT, Spanned::into_inner),
            per_client_max: usize::try_from(max).unwrap_or(DEFAULT_METRICS_PER_CLIENT_MAX),
        }
    }

    pub(super) fn history(&mut self, raw: Opt<RawHistory>) -> HistoryConfig {
        let (_, raw) = section(raw);
        let days = self.int(
            "history.days",
            &raw.days,
            crate::history::DEFAULT_DAYS.into(),
            (*crate::history::DAYS_RANGE.start()).into(),
            (*crate::history::DAYS_RANGE.end()).into(),
        );
        HistoryConfig {
            days: u32::try_from(days).unwrap_or(crate::history::DEFAULT_DAYS),
        }
    }

    /// `[notify]`: without `url`, no notifications (and the other keys are
    /// warned about); with it, an http(s) URL, valid thresholds and a set
    /// secret variable.
    pub(super) fn notify(&mut self, raw: Opt<RawNotify>) -> Option<NotifyConfig> {
        let (span, raw) = section(raw);
        let Some(url) = &raw.url else {
            if let Some(span) = &span {
                self.warn(
                    Some(span),
                    "notify.url",
                    "is not set: no notifications are sent (the other [notify] keys do nothing)",
                );
            }
            return None;
        };
        let text = url.get_ref();
        match http::Uri::try_from(text.as_str()) {
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => {}
            _ => self.report(
                Some(&url.span()),
                "notify.url",
                format!("{text:?} is not an http:// or https:// URL"),
            ),
        }
        let mut thresholds: Vec<u8> = Vec::new();
        match &raw.thresholds {
            None => thresholds.extend(crate::notify::DEFAULT_THRESHOLDS),
            Some(list) if list.get_ref().is_empty() => self.report(
                Some(&list.span()),
                "notify.thresholds",
                "is empty: list at least one percent, like [80, 100]",
            ),
            Some(list) if list.get_ref().len() > crate::notify::MAX_THRESHOLDS => self.report(
                Some(&list.span()),
                "notify.thresholds",
                format!(
                    "lists {} thresholds; at most {} are allowed",
                    list.get_ref().len(),
                    crate::notify::MAX_THRESHOLDS
                ),
            ),
            Some(list) => {
                for (i, t) in list.get_ref().iter().enumerate() {
                    let key = format!("notify.thresholds[{i}]");
                    match u8::try_from(*t.get_ref()) {
                        Ok(n) if (1..=100).contains(&n) => {
                            if thresholds.last().is_some_and(|&last| last >= n) {
                                self.report(
                                    Some(&t.span()),
                                    &key,
                                    format!(
                                        "{n} is not above the threshold before it: list each \
                                         percent once, in ascending order"
                                    ),
                                );
                            } else {
                                thresholds.push(n);
                            }
                        }
                        _ => self.report(
                            Some(&t.span()),
                            &key,
                            format!("must be a percent between 1 and 100, got {}", t.get_ref()),
                        ),
                    }
                }
            }
        }
        let secret_env = raw.secret_env.clone().unwrap_or_else(|| {
            Spanned::new(
                span.clone().unwrap_or(0..0),
                crate::notify::DEFAULT_SECRET_ENV.to_owned(),
            )
        });
        let secret = self.env_value("notify.secret_env", &secret_env);
        Some(NotifyConfig {
            url: text.clone(),
            thresholds,
            secret_env: secret_env.into_inner(),
            secret: Secret::new(secret.unwrap_or_default()),
        })
    }

    pub(super) fn reload(&mut self, raw: Opt<RawReload>) -> ReloadConfig {
        let (_, raw) = section(raw);
        let interval_ms = self.int(
            "reload.interval_ms",
            &raw.interval_ms,
            DEFAULT_RELOAD_INTERVAL_MS,
            *RELOAD_INTERVAL_MS.start(),
            *RELOAD_INTERVAL_MS.end(),
        );
        ReloadConfig {
            watch: raw.watch.map_or(DEFAULT_RELOAD_WATCH, Spanned::into_inner),
            interval: Duration::from_millis(interval_ms),
        }
    }
}
