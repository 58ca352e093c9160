//! The server backend: a ClickHouse server or cluster over HTTP, through the
//! official `clickhouse` crate. Rows go as JSONEachRow, the same bytes the
//! embedded engine takes, so both backends share the batcher and the log.

use async_trait::async_trait;
use bytes::Bytes;
use clickhouse::Client;

use super::{Storage, StorageError};
use crate::config::ClickHouseConfig;

pub struct ClickHouseStorage {
    client: Client,
}

impl ClickHouseStorage {
    pub fn new(cfg: &ClickHouseConfig) -> Self {
        let mut client = Client::default()
            .with_url(&cfg.url)
            .with_user(&cfg.user)
            .with_database(&cfg.database);
        if let Some(password) = &cfg.password {
            client = client.with_password(password);
        }
        ClickHouseStorage { client }
    }

    /// For tests: a client pointed at the crate's mock server.
    pub fn from_client(client: Client) -> Self {
        ClickHouseStorage { client }
    }
}

fn classify(e: clickhouse::error::Error) -> StorageError {
    use clickhouse::error::Error;
    match e {
        Error::Network(_) | Error::TimedOut => StorageError::Transient(e.to_string()),
        Error::BadResponse(text) => {
            // The crate folds HTTP 5xx without an exception code into this text.
            match super::exception_code(&text) {
                None => StorageError::Transient(text),
                Some(_) => StorageError::from_exception(text),
            }
        }
        other => StorageError::Rejected(other.to_string()),
    }
}

#[async_trait]
impl Storage for ClickHouseStorage {
    fn kind(&self) -> &'static str {
        "clickhouse"
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.client
            .query("SELECT 1")
            .execute()
            .await
            .map_err(classify)
    }

    async fn execute(&self, sql: &str) -> Result<(), StorageError> {
        self.client.query(sql).execute().await.map_err(classify)
    }

    async fn query(&self, sql: &str, format: &str) -> Result<Bytes, StorageError> {
        let mut cursor = self
            .client
            .query(sql)
            .fetch_bytes(format)
            .map_err(classify)?;
        let mut out = Vec::new();
        while let Some(chunk) = cursor.next().await.map_err(classify)? {
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    async fn query_readonly(&self, sql: &str, format: &str) -> Result<Bytes, StorageError> {
        // readonly=2 forbids writes and DDL but still lets the client set the
        // output settings it sends along with the query.
        let mut cursor = self
            .client
            .query(sql)
            .with_setting("readonly", "2")
            .fetch_bytes(format)
            .map_err(classify)?;
        let mut out = Vec::new();
        while let Some(chunk) = cursor.next().await.map_err(|e| match classify(e) {
            StorageError::Rejected(t) if t.contains("READONLY") => StorageError::NotReadOnly(t),
            other => other,
        })? {
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    async fn insert(&self, table: &str, rows: Bytes, token: &str) -> Result<(), StorageError> {
        let mut insert = self
            .client
            .insert_formatted_with(super::insert_statement(table, token));
        insert.send(rows).await.map_err(classify)?;
        insert.end().await.map_err(classify)
    }

    async fn close(&self) {}
}
