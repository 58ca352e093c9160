//! Operations: schema migrations, retention tiers.

pub mod migrations;
pub mod retention;
