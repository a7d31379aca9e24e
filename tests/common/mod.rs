//! Helpers shared by the integration tests (`mod common;` in a test file):
//! a real upstream, a raw misbehaving upstream, the real tollgate binary, a
//! real redis-server, and small clients for HTTP and the admin API.
#![allow(dead_code)]

/// Which store an end-to-end case runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Memory,
    Redis,
}

/// Runs each listed `async fn name(Backend)` of the test file once per
/// backend (`#[macro_use] mod common;` and `use common::Backend;` in the file).
#[allow(unused_macros)]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Memory).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Redis).await })*
        }
    };
}

pub mod admin;
pub mod env;
pub mod fault_proxy;
pub mod flood;
pub mod grpc;
pub mod http;
pub mod raw_upstream;
pub mod receiver;
pub mod records;
pub mod redis_cluster;
pub mod redis_server;
pub mod refusing_h2;
pub mod tls;
pub mod tls_redis;
pub mod tollgate;
pub mod two;
pub mod upstream;
