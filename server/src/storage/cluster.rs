//! The cluster layout (`storage.clickhouse.cluster`): the same `sql/`
//! statements, rendered for a ClickHouse cluster as the `clickhouse` backend
//! sends them.
//!
//! - a table becomes `name_local` on every node, in the Replicated family
//!   (`{shard}` and `{replica}` macros), and `name`, a Distributed table
//!   over it, sharded by `cityHash64(organizer_id)` where the table has that
//!   column (so per-organizer views stay shard-local), `rand()` otherwise;
//! - a materialized view reads and writes the local tables, on every node;
//! - a plain view reads the Distributed tables: it sees every shard;
//! - `ALTER` goes to the local tables (column changes to both), every DDL
//!   statement `ON CLUSTER`.
//!
//! The input is this project's own SQL (migrations and the statements the
//! server builds), written in a few known shapes; any other DDL is refused
//! rather than half-rendered. Reads and inserts pass as they are: inserts
//! go to the Distributed tables.

use std::fmt::Write;

/// Why a statement has no cluster rendering.
#[derive(Debug, thiserror::Error)]
#[error("no cluster rendering for this statement ({0}): {1}")]
pub struct RenderError(&'static str, String);

/// `sql` as one or more statements for `cluster`.
pub fn render(sql: &str, cluster: &str) -> Result<Vec<String>, RenderError> {
    let sql = sql.trim().trim_end_matches(';').trim();
    let head: Vec<String> = sql
        .split_whitespace()
        .take(6)
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    let on = format!("ON CLUSTER {cluster}");
    match head.as_slice() {
        ["CREATE", "DATABASE", "IF", "NOT", "EXISTS", ..] => Ok(vec![after_name(sql, 6, &on)?]),
        ["CREATE", "TABLE", "IF", "NOT", "EXISTS", ..] => table(sql, cluster, &on),
        ["CREATE", "MATERIALIZED", "VIEW", "IF", "NOT", "EXISTS"] => {
            let mut out = after_name(sql, 7, &on)?;
            out = local_references(&out);
            Ok(vec![out])
        }
        ["CREATE", "VIEW", "IF", "NOT", "EXISTS", ..] => Ok(vec![after_name(sql, 6, &on)?]),
        ["CREATE", "OR", "REPLACE", "VIEW", ..] => Ok(vec![after_name(sql, 5, &on)?]),
        // A materialized view's new query: the view keeps its name on every
        // node, and reads the local tables as when it was made.
        ["ALTER", "TABLE", _, "MODIFY", "QUERY", ..] => {
            Ok(vec![local_references(&after_name(sql, 3, &on)?)])
        }
        // A materialized view is one on each node.
        ["DROP", "VIEW", "IF", "EXISTS", ..] => Ok(vec![after_name(sql, 5, &on)?]),
        // A table is two on a cluster: the Distributed one, then its local ones.
        ["DROP", "TABLE", "IF", "EXISTS", ..] => {
            let name = name_in(sql, 4)?;
            let local = sql.replacen(&name, &format!("{name}_local"), 1);
            Ok(vec![after_name(sql, 5, &on)?, after_name(&local, 5, &on)?])
        }
        ["ALTER", "TABLE", _, command, ..] => {
            let name = name_in(sql, 2)?;
            let local = sql.replacen(&name, &format!("{name}_local"), 1);
            let local = after_name(&local, 3, &on)?;
            // Columns must match on the Distributed table too.
            if matches!(*command, "ADD" | "MODIFY" | "DROP" | "RENAME")
                && sql
                    .split_whitespace()
                    .nth(4)
                    .is_some_and(|w| w.eq_ignore_ascii_case("COLUMN"))
            {
                Ok(vec![local, after_name(sql, 3, &on)?])
            } else {
                Ok(vec![local])
            }
        }
        [
            "CREATE" | "DROP" | "ALTER" | "RENAME" | "TRUNCATE" | "ATTACH" | "DETACH",
            ..,
        ] => Err(RenderError(
            "a DDL shape this layout does not know",
            first_line(sql),
        )),
        _ => Ok(vec![sql.to_string()]),
    }
}

fn first_line(sql: &str) -> String {
    sql.lines().next().unwrap_or("").to_string()
}

/// The `n`-th word (from 0): a statement's object name.
fn name_in(sql: &str, n: usize) -> Result<String, RenderError> {
    sql.split_whitespace()
        .nth(n)
        .map(|w| w.trim_end_matches('(').to_string())
        .ok_or_else(|| RenderError("no name", first_line(sql)))
}

/// Inserts `clause` after the first `words` words (the name being the last).
fn after_name(sql: &str, words: usize, clause: &str) -> Result<String, RenderError> {
    let mut seen = 0;
    let mut in_word = false;
    for (i, c) in sql.char_indices() {
        if c.is_whitespace() || c == '(' {
            if in_word {
                seen += 1;
                in_word = false;
                if seen == words {
                    return Ok(format!("{} {clause}{}", &sql[..i], &sql[i..]));
                }
            }
        } else {
            in_word = true;
        }
    }
    if in_word && seen + 1 == words {
        return Ok(format!("{sql} {clause}"));
    }
    Err(RenderError("too short", first_line(sql)))
}

/// `db.name` references after `TO`, `FROM` and `JOIN` point at the local tables.
fn local_references(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 64);
    let mut previous = String::new();
    for word in sql.split_inclusive(char::is_whitespace) {
        let bare = word.trim_end();
        let after_keyword = matches!(previous.as_str(), "TO" | "FROM" | "JOIN");
        if after_keyword && bare.contains('.') && !bare.starts_with('(') {
            let name = bare.trim_end_matches([',', ')']);
            let tail = &bare[name.len()..];
            let _ = write!(out, "{name}_local{tail}{}", &word[bare.len()..]);
        } else {
            out.push_str(word);
        }
        if !bare.is_empty() {
            previous = bare.to_ascii_uppercase();
        }
    }
    out
}

fn table(sql: &str, cluster: &str, on: &str) -> Result<Vec<String>, RenderError> {
    let name = name_in(sql, 5)?;
    let (db, table) = name
        .split_once('.')
        .ok_or_else(|| RenderError("an unqualified table", first_line(sql)))?;
    let engine_at = sql
        .find("ENGINE = ")
        .ok_or_else(|| RenderError("a table without ENGINE = ", first_line(sql)))?;
    let engine_text = &sql[engine_at + "ENGINE = ".len()..];
    let engine_name: String = engine_text
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    if !engine_name.ends_with("MergeTree") || engine_name.starts_with("Replicated") {
        return Err(RenderError(
            "an engine outside the MergeTree family",
            engine_name,
        ));
    }
    let after_engine = &engine_text[engine_name.len()..];
    // The engine's own arguments, if any, follow the replication ones.
    let (args, rest) = match after_engine.strip_prefix('(') {
        Some(inner) => {
            let close = inner
                .find(')')
                .ok_or_else(|| RenderError("unbalanced engine arguments", first_line(sql)))?;
            (format!(", {}", &inner[..close]), &inner[close + 1..])
        }
        None => (String::new(), after_engine),
    };
    let local_name = format!("{db}.{table}_local");
    let replicated = format!(
        "ENGINE = Replicated{engine_name}('/clickhouse/tables/{{shard}}/{db}/{table}_local', '{{replica}}'{args}){rest}"
    );
    let head = sql[..engine_at].replacen(&name, &local_name, 1);
    let local = after_name(&format!("{head}{replicated}"), 6, on)?;
    let key = if sql.contains("organizer_id String") {
        "cityHash64(organizer_id)"
    } else {
        "rand()"
    };
    let distributed = format!(
        "CREATE TABLE IF NOT EXISTS {name} {on} AS {local_name} \
         ENGINE = Distributed({cluster}, {db}, {table}_local, {key})"
    );
    Ok(vec![local, distributed])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_becomes_replicated_local_tables_and_a_distributed_one() {
        let out = render(
            "CREATE TABLE IF NOT EXISTS db.t\n(\n    organizer_id String,\n    v UInt64\n)\nENGINE = ReplacingMergeTree(v)\nORDER BY organizer_id;",
            "c",
        )
        .unwrap();
        assert_eq!(out.len(), 2);
        assert!(
            out[0].starts_with("CREATE TABLE IF NOT EXISTS db.t_local ON CLUSTER c\n("),
            "{}",
            out[0]
        );
        assert!(
            out[0].contains(
                "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/t_local', '{replica}', v)\nORDER BY organizer_id"
            ),
            "{}",
            out[0]
        );
        assert_eq!(
            out[1],
            "CREATE TABLE IF NOT EXISTS db.t ON CLUSTER c AS db.t_local ENGINE = Distributed(c, db, t_local, cityHash64(organizer_id))"
        );
    }

    #[test]
    fn a_dropped_table_goes_with_its_local_tables() {
        assert_eq!(
            render("DROP TABLE IF EXISTS db.t", "c").unwrap(),
            [
                "DROP TABLE IF EXISTS db.t ON CLUSTER c",
                "DROP TABLE IF EXISTS db.t_local ON CLUSTER c"
            ]
        );
    }

    #[test]
    fn views_alters_and_the_rest() {
        let mv = render(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS db.mv\nTO db.daily AS\nSELECT a FROM db.events\nGROUP BY a",
            "c",
        )
        .unwrap();
        assert_eq!(
            mv,
            [
                "CREATE MATERIALIZED VIEW IF NOT EXISTS db.mv ON CLUSTER c\nTO db.daily_local AS\nSELECT a FROM db.events_local\nGROUP BY a"
            ]
        );
        let view = render(
            "CREATE VIEW IF NOT EXISTS db.v AS SELECT 1 FROM db.daily",
            "c",
        )
        .unwrap();
        assert_eq!(
            view,
            ["CREATE VIEW IF NOT EXISTS db.v ON CLUSTER c AS SELECT 1 FROM db.daily"]
        );
        let setting = render("ALTER TABLE db.t MODIFY SETTING x = 1", "c").unwrap();
        assert_eq!(
            setting,
            ["ALTER TABLE db.t_local ON CLUSTER c MODIFY SETTING x = 1"]
        );
        let column = render("ALTER TABLE db.t ADD COLUMN IF NOT EXISTS y String", "c").unwrap();
        assert_eq!(
            column,
            [
                "ALTER TABLE db.t_local ON CLUSTER c ADD COLUMN IF NOT EXISTS y String",
                "ALTER TABLE db.t ON CLUSTER c ADD COLUMN IF NOT EXISTS y String"
            ]
        );
        assert_eq!(
            render("CREATE DATABASE IF NOT EXISTS db", "c").unwrap(),
            ["CREATE DATABASE IF NOT EXISTS db ON CLUSTER c"]
        );
        assert_eq!(
            render(
                "ALTER TABLE db.mv MODIFY QUERY\nSELECT a FROM db.events\nGROUP BY a",
                "c"
            )
            .unwrap(),
            [
                "ALTER TABLE db.mv ON CLUSTER c MODIFY QUERY\nSELECT a FROM db.events_local\nGROUP BY a"
            ]
        );
        assert_eq!(
            render(
                "CREATE OR REPLACE VIEW db.v AS\nSELECT 1 FROM db.daily",
                "c"
            )
            .unwrap(),
            ["CREATE OR REPLACE VIEW db.v ON CLUSTER c AS\nSELECT 1 FROM db.daily"]
        );
        assert_eq!(render("SELECT 1", "c").unwrap(), ["SELECT 1"]);
        assert!(render("DROP TABLE db.t", "c").is_err());
        assert!(
            render(
                "CREATE TABLE IF NOT EXISTS db.f (a String) ENGINE = File(TSV)",
                "c"
            )
            .is_err()
        );
    }
}
