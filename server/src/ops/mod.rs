//! Operations: schema migrations (retention, monitoring and backups join here).

pub mod migrations;
