//! The walls the engine itself keeps around ClickHouse's HTTP interface:
//! roles with grants and a settings profile with constraints, written into
//! the embedded engine's users file at start.
//!
//! chDB authenticates every connection as its `default` user, so users of
//! the interface cannot be engine users. Roles can stand in for them: the
//! `default` user holds [`ENGINE`] (everything, for this server's own
//! connections) and one role per kind of interface user, and each session's
//! connection is narrowed to its kind's role with `SET ROLE` before the
//! user's statement runs. Writers' sessions also take [`PROFILE`] (`SET
//! profile`), whose constraints then hold for the rest of the connection:
//! the engine refuses to loosen a limit or to change a setting that names
//! a file, a path, a URL, a schema or a disk, whatever the statement.
//!
//! What no grant covers, and only the parser (`clickhouse_http::allow`) stops: the
//! scalar `file()` function (unchecked in the engine's local mode),
//! `INSERT … FROM INFILE` (read by the client side of the engine), and a
//! second `SET ROLE`, which is why nothing but the allow-listed shapes runs
//! on a session's connection.

use std::fmt::Write;

use crate::model::CONTROL_DATABASE;

/// This server's own connections: every right.
pub const ENGINE: &str = "bilten_engine";
/// Read-only users, and every read: `SELECT` and `SHOW` anywhere, and no
/// file, URL, remote or process source.
pub const READER: &str = "bilten_reader";
/// Read-write users: what a `clickhouse` backend sends for the home
/// database and for its own records in the guest system database.
pub const WRITER: &str = "bilten_writer";
/// Backup users: a writer that may also back up and restore.
pub const BACKUP: &str = "bilten_backup";
/// The writers' settings profile: its constraints.
pub const PROFILE: &str = "bilten_interface";

/// Settings no interface session may change, at whatever value they have:
/// each names a file, a path, a URL, a schema, a disk or credentials, or
/// opens a gate (read-only mode, DDL, introspection, expressions evaluated
/// in inserted rows). A test holds this list to the engine's own
/// (`tests/engine.rs`): every string setting whose name says it points
/// outside the engine is here.
pub const FROZEN_SETTINGS: &[&str] = &[
    "readonly",
    "allow_ddl",
    "allow_introspection_functions",
    "input_format_values_interpret_expressions",
    "input_format_values_deduce_templates_of_expressions",
    "input_format_record_errors_file_path",
    "format_schema",
    "format_schema_source",
    "format_schema_message_name",
    "output_format_schema",
    "format_template_resultset",
    "format_template_resultset_format",
    "format_template_row",
    "format_template_row_format",
    "format_template_rows_between_delimiter",
    "format_avro_schema_registry_url",
    "url_base",
    "rename_files_after_processing",
    "s3queue_default_zookeeper_path",
    "filesystem_cache_name",
    "distributed_cache_file_cache_name",
    "ai_function_embedding_default_credentials",
    "ai_function_text_default_credentials",
    "s3_allow_server_credentials_in_user_queries",
    "into_outfile_create_parent_directories",
    "engine_file_truncate_on_insert",
    "engine_file_allow_create_multiple_files",
    "dynamic_disk_allow_from_env",
    "dynamic_disk_allow_from_zk",
    "dynamic_disk_allow_include",
    "jemalloc_enable_profiler",
    "jemalloc_collect_profile_samples_in_trace_log",
];

/// MergeTree settings (a table's own `SETTINGS`) no session may set: a
/// disk made up on the spot (`disk = disk(type = web, …)`) reaches the
/// network or the host, and a table that cannot load stops the engine.
pub const FROZEN_TABLE_SETTINGS: &[&str] =
    &["disk", "table_disk", "remote_fs_zero_copy_zookeeper_path"];

/// Values the writers' connections start with, then frozen by [`PROFILE`]:
/// rows of an insert are data, never expressions.
pub const WRITER_START: &[(&str, &str)] = &[
    ("input_format_values_interpret_expressions", "0"),
    ("input_format_values_deduce_templates_of_expressions", "0"),
    ("allow_introspection_functions", "0"),
];

/// Where the walls are drawn: the interface's home database, the guest
/// system database (a `clickhouse` backend's own records), this server's
/// system database, and the limits every session runs under.
#[derive(Debug, Clone)]
pub struct Walls {
    pub home: String,
    pub guest: String,
    pub system: String,
    /// `(setting, value)`: the query limits, as the engine's settings.
    pub limits: Vec<(String, String)>,
}

impl Walls {
    /// The users file: the `default` user with every role, the roles'
    /// grants, and the writers' profile. Names are plain identifiers
    /// (checked when the configuration loads), so they need no quoting.
    pub fn users_xml(&self) -> String {
        let Walls {
            home,
            guest,
            system,
            ..
        } = self;
        let mut constraints = String::new();
        for (name, value) in &self.limits {
            // A limit may be tightened, never loosened.
            let _ = write!(constraints, "<{name}><max>{value}</max></{name}>");
        }
        for name in FROZEN_SETTINGS {
            let _ = write!(constraints, "<{name}><const/></{name}>");
        }
        for name in FROZEN_TABLE_SETTINGS {
            let _ = write!(
                constraints,
                "<merge_tree_{name}><const/></merge_tree_{name}>"
            );
        }
        let grants = |queries: &[String]| -> String {
            queries
                .iter()
                .map(|q| format!("<query>{q}</query>"))
                .collect()
        };
        let reader = grants(&["GRANT SELECT, SHOW, dictGet ON *.*".into()]);
        // What the `clickhouse` backend's statements need (its migrations,
        // retention, inserts, deletes), in the home database; its records
        // in the guest one, insert-only; nothing in this server's own.
        let writer = grants(&[
            format!(
                "GRANT SELECT, INSERT, CREATE DATABASE, CREATE TABLE, CREATE VIEW, ALTER UPDATE, \
                 ALTER DELETE, ALTER COLUMN, ALTER INDEX, ALTER PROJECTION, ALTER TTL, \
                 ALTER SETTINGS, ALTER MOVE PARTITION, ALTER VIEW, DROP TABLE, DROP VIEW \
                 ON {home}.*"
            ),
            format!("GRANT SELECT, INSERT, CREATE DATABASE, CREATE TABLE ON {guest}.*"),
            // Tenants' records: added to, never changed or deleted (a
            // revocation stays); a row without a server's seal is ignored.
            format!("GRANT SELECT, INSERT, CREATE DATABASE, CREATE TABLE ON {CONTROL_DATABASE}.*"),
            format!("GRANT {READER}"),
        ]);
        // A restore creates a database and fills it; a verification drops
        // its scratch copy; never in the engine's or this server's own.
        let backup = grants(&[
            format!("GRANT {WRITER}"),
            format!("GRANT BACKUP ON {home}.*"),
            "GRANT SELECT, INSERT, CREATE DATABASE, CREATE TABLE, CREATE VIEW, ALTER, \
             DROP DATABASE, DROP TABLE, DROP VIEW ON *.*"
                .into(),
            format!("REVOKE ALL ON {system}.*"),
            // What the writer's role gives there, nothing more.
            format!("REVOKE ALL ON {CONTROL_DATABASE}.*"),
            "REVOKE ALL ON system.*".into(),
            "REVOKE ALL ON default.*".into(),
            "REVOKE ALL ON information_schema.*".into(),
            "REVOKE ALL ON INFORMATION_SCHEMA.*".into(),
            "REVOKE ALTER FREEZE PARTITION, ALTER FETCH PARTITION ON *.*".into(),
        ]);
        let engine = grants(&["GRANT ALL ON *.* WITH GRANT OPTION".into()]);
        let everyone = grants(&[format!("GRANT {ENGINE}, {READER}, {WRITER}, {BACKUP}")]);
        format!(
            r#"<clickhouse>
  <profiles>
    <default></default>
    <{PROFILE}><constraints>{constraints}</constraints></{PROFILE}>
  </profiles>
  <roles>
    <{ENGINE}><grants>{engine}</grants></{ENGINE}>
    <{READER}><grants>{reader}</grants></{READER}>
    <{WRITER}><grants>{writer}</grants></{WRITER}>
    <{BACKUP}><grants>{backup}</grants></{BACKUP}>
  </roles>
  <users>
    <default>
      <password></password>
      <networks><ip>::/0</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
      <grants>{everyone}</grants>
    </default>
  </users>
  <quotas><default></default></quotas>
</clickhouse>
"#
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_users_file_names_every_role_and_freezes_the_host_settings() {
        let walls = Walls {
            home: "bilten_analytics".into(),
            guest: "bilten_remote".into(),
            system: "bilten_system".into(),
            limits: vec![("max_execution_time".into(), "30".into())],
        };
        let xml = walls.users_xml();
        for role in [ENGINE, READER, WRITER, BACKUP] {
            assert!(xml.contains(&format!("<{role}><grants>")), "{role}");
        }
        assert!(xml.contains("<max_execution_time><max>30</max></max_execution_time>"));
        assert!(xml.contains("<input_format_record_errors_file_path><const/>"));
        assert!(xml.contains("<merge_tree_disk><const/></merge_tree_disk>"));
        assert!(xml.contains("REVOKE ALL ON bilten_system.*"));
        // The writer's grants name no database but its two.
        let writer = xml
            .split(&format!("<{WRITER}>"))
            .nth(1)
            .and_then(|s| s.split(&format!("</{WRITER}>")).next())
            .unwrap();
        assert!(!writer.contains("*.*"), "{writer}");
        assert!(!writer.contains("bilten_system"), "{writer}");
    }
}
