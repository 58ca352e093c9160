//! ClickHouse's own HTTP interface on the embedded engine (`[clickhouse_http]`,
//! a listener of its own), for clients that speak it unmodified:
//! clickhouse-connect, `@clickhouse/client`, the Rust crate, Grafana, and
//! another ingest server's `clickhouse` backend.
//!
//! # The path of a request
//! ```text
//! GET|POST /?query=…  (its own listener)              routes::clickhouse_http
//!   ──► credentials (sign-in buckets per address), session cap,
//!       Origin; URL settings, parameters, the statement text
//!   ──► body: content encoding, then ClickHouse's blocks   codec
//!   ──► SessionRequest: user kind (reader, writer, backup), session
//!       its settings and rows                               session
//!   ──► the engine: a connection of its own, walled in       storage::embedded::interface
//!       (the kind's role, the writers' profile)             walls
//!   ──► a read: read-only, EXPLAIN AST names no file()       session
//!       anything else: judged on the engine's spelling      allow
//!       and run as that spelling, rows streamed as data
//!   ──► the answer in the asked format, size-capped, encoded   codec
//! ```
//!
//! # Where each piece lives
//! Here, what knows neither HTTP nor the engine's connections:
//! - [`session`]: the request and the rules for reads and a request's
//!   own settings;
//! - [`allow`]: the shapes a writer may run, an allow-list;
//! - [`walls`]: the roles and the settings profile the engine enforces,
//!   written into its users file at start;
//! - [`codec`]: content encodings and ClickHouse's compressed blocks, each
//!   decoder capped.
//!
//! Apart, where the layers put them (`lib.rs`: config imports only model,
//! storage knows no HTTP):
//! - the settings, `config::clickhouse_http` (`ClickHouseHttpConfig`, the
//!   users and their kinds), validated with the rest of the config;
//! - the engine's side, `storage::embedded::interface`: a session's
//!   connection walled in, reads and writes run on it;
//! - the handler, `routes::clickhouse_http`: ClickHouse's routes, headers,
//!   error text and statuses.
//!
//! Tests: `tests/clickhouse_http.rs` (the real clients, hostile statements),
//! `tests/interface_walls.rs` (the engine's walls, parser bypasses).

pub mod allow;
pub mod codec;
pub mod session;
pub mod walls;
