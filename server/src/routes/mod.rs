//! Thin HTTP handlers. Each decodes, calls a plain function, encodes.

pub mod admin;
pub mod auth;
pub mod health;
pub mod ingest;
