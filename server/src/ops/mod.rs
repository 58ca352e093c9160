//! Operations: schema migrations, retention tiers, backups, monitoring.

pub mod audit;
pub mod backups;
pub mod migrations;
pub mod monitor;
pub mod retention;
