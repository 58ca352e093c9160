//! The server backend: a ClickHouse server or cluster over HTTP, through the
//! official `clickhouse` crate. Rows go as JSONEachRow, the same bytes the
//! embedded engine takes, so both backends share the batcher and the log.

use async_trait::async_trait;
use std::time::Duration;

use bytes::Bytes;
use clickhouse::Client;

use super::{Storage, StorageError};
use crate::config::{ClickHouseConfig, QueryLimits};
use crate::model::DATABASE;

pub struct ClickHouseStorage {
    client: Client,
    limits: QueryLimits,
    /// Admin queries at once (`limits.concurrency`): they cannot crowd out
    /// the inserts' connections.
    readers: tokio::sync::Semaphore,
    /// Bounds every call: a stalled server must not hold a flush worker forever.
    timeout: Duration,
    /// `storage.clickhouse.cluster`: DDL is rendered for it.
    cluster: Option<String>,
    /// `storage.clickhouse.database` when it is not `bilten_analytics`: the
    /// name every statement uses is replaced by it.
    database: Option<String>,
    /// `storage.clickhouse.system_database`.
    system_database: String,
}

impl ClickHouseStorage {
    pub fn new(cfg: &ClickHouseConfig, limits: QueryLimits) -> Self {
        // No `database` parameter: every statement names its database, and
        // a server refuses any request naming one that does not exist yet,
        // migrations' own `CREATE DATABASE` included.
        let mut client = Client::default().with_url(&cfg.url).with_user(&cfg.user);
        if let Some(password) = &cfg.password {
            client = client.with_password(password);
        }
        if cfg.cluster.is_some() {
            // An insert into a Distributed table returns once the shards
            // have the rows, not when they are queued on this node: a
            // batch is confirmed in the log only then.
            client = client.with_setting("distributed_foreground_insert", "1");
        }
        let mut storage = Self::with(client, limits, cfg.timeout);
        storage.cluster = cfg.cluster.clone();
        storage.database = (cfg.database != DATABASE).then(|| cfg.database.clone());
        storage.system_database = cfg.system_database.clone();
        storage
    }

    /// For tests: a client pointed at the crate's mock server.
    pub fn from_client(client: Client, timeout: Duration) -> Self {
        Self::with(client, QueryLimits::default(), timeout)
    }

    fn with(client: Client, limits: QueryLimits, timeout: Duration) -> Self {
        ClickHouseStorage {
            client,
            cluster: None,
            database: None,
            system_database: crate::model::SYSTEM_DATABASE.into(),
            readers: tokio::sync::Semaphore::new(limits.concurrency),
            limits,
            timeout,
        }
    }

    /// A statement sent verbatim: `query()` would take a `?` in the SQL
    /// (a string literal, say) for a bind placeholder. Only the database's
    /// name is changed, when another is configured.
    fn statement(&self, sql: &str) -> clickhouse::query::Query {
        self.client.query_raw(&self.named(sql))
    }

    /// `sql` with the project's database name (`sql/` and the server say
    /// `bilten_analytics`) replaced by the configured one, as a whole word,
    /// in quotes too (`WHERE database = 'bilten_analytics'`).
    fn named<'a>(&self, sql: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.database {
            Some(db) => std::borrow::Cow::Owned(super::in_database(sql, db)),
            None => std::borrow::Cow::Borrowed(sql),
        }
    }

    async fn timed<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(StorageError::transient(format!(
                    "no answer from ClickHouse within {:?}",
                    self.timeout
                )))
            })
    }

    async fn fetch(
        &self,
        query: clickhouse::query::Query,
        format: &str,
    ) -> Result<Bytes, StorageError> {
        self.timed(async {
            let mut cursor = query.fetch_bytes(format).map_err(classify)?;
            let mut out = Vec::new();
            while let Some(chunk) = cursor.next().await.map_err(classify)? {
                out.extend_from_slice(&chunk);
            }
            Ok(Bytes::from(out))
        })
        .await
    }
}

fn classify(e: clickhouse::error::Error) -> StorageError {
    use clickhouse::error::Error;
    match e {
        Error::Network(_) | Error::TimedOut => StorageError::transient(e.to_string()),
        Error::BadResponse(text) => {
            // The crate folds HTTP 5xx without an exception code into this text.
            match super::exception_code(&text) {
                None => StorageError::transient(text),
                Some(_) => StorageError::from_exception(text),
            }
        }
        other => StorageError::rejected(other.to_string()),
    }
}

#[async_trait]
impl Storage for ClickHouseStorage {
    fn kind(&self) -> &'static str {
        "clickhouse"
    }

    fn system_database(&self) -> &str {
        &self.system_database
    }

    async fn ping(&self) -> Result<(), StorageError> {
        self.execute("SELECT 1").await
    }

    async fn execute(&self, sql: &str) -> Result<(), StorageError> {
        for statement in self.render(sql)? {
            // Already named and rendered.
            let query = self.client.query_raw(&statement);
            self.timed(async { query.execute().await.map_err(classify) })
                .await?;
        }
        Ok(())
    }

    fn render(&self, sql: &str) -> Result<Vec<String>, StorageError> {
        let sql = self.named(sql);
        match &self.cluster {
            Some(cluster) => super::cluster::render(&sql, cluster)
                .map_err(|e| StorageError::rejected(e.to_string())),
            None => Ok(vec![sql.into_owned()]),
        }
    }

    async fn query(&self, sql: &str, format: &str) -> Result<Bytes, StorageError> {
        self.fetch(self.statement(sql), format).await
    }

    async fn query_readonly_with(
        &self,
        sql: &str,
        params: &[(String, String)],
        format: &str,
    ) -> Result<Bytes, StorageError> {
        // readonly=1: the server refuses writes, DDL, settings changes and
        // table functions (files, URLs, other servers, processes). The HTTP
        // interface runs one statement per request.
        let _permit = self
            .readers
            .acquire()
            .await
            .map_err(|_| StorageError::transient("closed"))?;
        let mut query = self.statement(sql).with_setting("readonly", "1");
        for (name, value) in params {
            query = query.param(name, value.as_str());
        }
        for (name, value) in self.limits.settings() {
            query = query.with_setting(name, value);
        }
        self.fetch(query, format)
            .await
            .map_err(StorageError::for_readonly_query)
    }

    async fn insert(&self, table: &str, rows: Bytes, token: &str) -> Result<(), StorageError> {
        let insert = self
            .client
            .insert_formatted_with(format!(
                "{} FORMAT {}",
                self.named(&super::insert_statement(table, token)),
                super::INSERT_FORMAT
            ))
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        self.timed(async move {
            let mut insert = insert;
            insert.send(rows).await.map_err(classify)?;
            insert.end().await.map_err(classify)
        })
        .await
    }

    async fn close(&self) {}
}
