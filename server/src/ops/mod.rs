//! Operations: schema migrations, retention tiers, backups, health and
//! monitoring, and the records they keep (`records`).

pub mod audit;
pub mod backups;
pub mod health;
pub mod migrations;
pub mod monitor;
pub mod rates;
pub mod records;
pub mod retention;

/// Every statement a `clickhouse` backend sends word for word, with `home`
/// its data's database and `system` its records': what ClickHouse's HTTP
/// interface lets its writers run as they are (`clickhouse_http::allow::Policy`).
pub fn fixed_statements(home: &str, system: &str) -> Vec<String> {
    migrations::fixed()
        .into_iter()
        .chain(records::fixed(system))
        .chain(crate::tenants::store::ddl())
        .map(|sql| crate::storage::in_database(&sql, home))
        .collect()
}
