//! [`View`] and [`Tx`] over one SQLite connection inside an open transaction.

use std::sync::OnceLock;

use cohort_core::store::{Pair, Table, Tx, View};
use cohort_core::Result;
use rusqlite::{params, Connection, OptionalExtension};

use super::error::runtime;

/// The key-value port over a connection whose transaction (and savepoint) the caller manages.
/// Writers hand it out as `&mut dyn Tx`, readers as `&dyn View` on a read-only connection.
pub(crate) struct SqlTx<'c> {
    conn: &'c Connection,
}

impl<'c> SqlTx<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        SqlTx { conn }
    }
}

impl View for SqlTx<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let sql = statements(table);
        let mut stmt = self
            .conn
            .prepare_cached(&sql.get)
            .map_err(|e| failed("get", table, &e))?;
        stmt.query_row(params![key], |row| row.get(0))
            .optional()
            .map_err(|e| failed("get", table, &e))
    }

    fn scan(&self, table: Table, from: &[u8], to: &[u8], limit: usize) -> Result<Vec<Pair>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // SQLite's LIMIT is an i64; anything larger means "no limit" anyway.
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let sql = statements(table);
        let read = |row: &rusqlite::Row<'_>| Ok((row.get(0)?, row.get(1)?));
        let pairs = if to.is_empty() {
            let mut stmt = self
                .conn
                .prepare_cached(&sql.scan_to_end)
                .map_err(|e| failed("scan", table, &e))?;
            let rows = stmt
                .query_map(params![from, limit], read)
                .map_err(|e| failed("scan", table, &e))?;
            rows.collect::<rusqlite::Result<Vec<Pair>>>()
        } else {
            let mut stmt = self
                .conn
                .prepare_cached(&sql.scan)
                .map_err(|e| failed("scan", table, &e))?;
            let rows = stmt
                .query_map(params![from, to, limit], read)
                .map_err(|e| failed("scan", table, &e))?;
            rows.collect::<rusqlite::Result<Vec<Pair>>>()
        };
        pairs.map_err(|e| failed("scan", table, &e))
    }
}

impl Tx for SqlTx<'_> {
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) -> Result<()> {
        let sql = statements(table);
        let mut stmt = self
            .conn
            .prepare_cached(&sql.put)
            .map_err(|e| failed("put", table, &e))?;
        stmt.execute(params![key, value])
            .map_err(|e| failed("put", table, &e))?;
        Ok(())
    }

    fn delete(&mut self, table: Table, key: &[u8]) -> Result<()> {
        let sql = statements(table);
        let mut stmt = self
            .conn
            .prepare_cached(&sql.delete)
            .map_err(|e| failed("delete", table, &e))?;
        stmt.execute(params![key])
            .map_err(|e| failed("delete", table, &e))?;
        Ok(())
    }
}

fn failed(op: &str, table: Table, e: &rusqlite::Error) -> cohort_core::Error {
    runtime(&format!("{op} on table {}", table.name()), e)
}

/// The SQL text of one table's statements, built once so the hot path neither formats
/// strings nor misses the prepared-statement cache (which is keyed by the text).
struct TableSql {
    get: String,
    scan: String,
    scan_to_end: String,
    put: String,
    delete: String,
}

/// How many statements [`SqlTx`] may prepare per connection, with room for the writer's
/// savepoint statements: the cache must hold them all or the hot path re-parses SQL.
pub(crate) const STATEMENT_CACHE_CAPACITY: usize = Table::ALL.len() * 5 + 16;

fn statements(table: Table) -> &'static TableSql {
    static SQL: OnceLock<Vec<TableSql>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        let mut all: Vec<Option<TableSql>> = Table::ALL.iter().map(|_| None).collect();
        for table in Table::ALL {
            let t = table.name();
            all[table as usize] = Some(TableSql {
                get: format!("SELECT v FROM {t} WHERE k = ?1"),
                scan: format!("SELECT k, v FROM {t} WHERE k >= ?1 AND k < ?2 ORDER BY k LIMIT ?3"),
                scan_to_end: format!("SELECT k, v FROM {t} WHERE k >= ?1 ORDER BY k LIMIT ?2"),
                // An upsert updates the row in place; INSERT OR REPLACE would delete and
                // re-insert it in the B-tree.
                put: format!(
                    "INSERT INTO {t} (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
                ),
                delete: format!("DELETE FROM {t} WHERE k = ?1"),
            });
        }
        all.into_iter().flatten().collect()
    });
    &all[table as usize]
}
