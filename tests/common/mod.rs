//! Helpers shared by the integration tests (`mod common;` in a test file):
//! a real upstream, a raw misbehaving upstream, the real tollgate binary, a
//! real redis-server, and small clients for HTTP and the admin API.
#![allow(dead_code)]

pub mod admin;
pub mod http;
pub mod raw_upstream;
pub mod redis_cluster;
pub mod redis_server;
pub mod tollgate;
pub mod upstream;
