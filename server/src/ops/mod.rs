//! Operations: schema migrations, retention tiers, backups.

pub mod backups;
pub mod migrations;
pub mod retention;
