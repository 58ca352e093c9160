-- The audit log and the migration records moved to the server's system
-- database (`bilten_system`), which no user of ClickHouse's HTTP interface
-- may write; their rows were copied there before this runs. The old tables
-- go, so nothing reads or forges them.
DROP TABLE IF EXISTS bilten_analytics.audit_log;
DROP TABLE IF EXISTS bilten_analytics.schema_migrations;
DROP TABLE IF EXISTS bilten_analytics.migration_lock;
