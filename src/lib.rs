//! tollgate: an authenticating, rate-limiting reverse proxy.
//!
//! The crate is organised by owner: `config` owns the TOML contract, `store`
//! owns persistence and the atomic admission decision, `limits` owns the pure
//! window and calendar maths, `keys` owns secret formats and hashing, `auth`
//! owns turning a request's credential into a verified [`auth::Principal`],
//! `throttle` owns the per-peer budget of failed authentications,
//! `proxy` owns the public request path, `admin` owns the admin listener, and
//! `cli` owns the command-line client of the admin API.

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod body;
pub mod cli;
pub mod clock;
pub mod config;
pub mod degraded;
pub mod error;
pub mod first_bytes;
pub mod grpc;
pub mod headers;
pub mod history;
pub mod keymgmt;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod proxy;
pub mod refunds;
pub mod reload;
pub mod routes;
pub mod server;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod throttle;
pub mod tls;
pub mod usage;
