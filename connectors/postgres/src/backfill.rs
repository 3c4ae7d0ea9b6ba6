//! Backfill of one table while the stream goes on (`weir snapshot`, `SNAPSHOT TABLE`).
//!
//! # Consistency
//!
//! [`Backfill::open`] creates a *temporary* replication slot with `(SNAPSHOT 'export')` on a
//! replication connection, imports the exported snapshot into a `REPEATABLE READ` transaction
//! on a SQL connection, and closes the replication connection (which drops the slot). As for
//! the initial snapshot, the view sees exactly the transactions that commit before the slot's
//! consistent point `C`; the pipeline's own slot streams every transaction committed after
//! it. So the view's position in the stream is exact (`C - 1`), with no watermark and no race
//! between commit order and visibility. The engine drops from each batch the keys the stream
//! changed after that position, and stages the rest between stream transactions.
//!
//! The view is one transaction for the whole table (like `pg_dump`), read in key order with
//! keyset pagination: `COPY (SELECT ... WHERE (key) > (last) ORDER BY key LIMIT n) TO STDOUT`.
//! After a restart a fresh view continues after the last staged key.
//!
//! To let the engine know promptly that the stream passed `C`, `open` writes a transactional
//! logical message (`pg_logical_emit_message`); the source requests messages (PostgreSQL 14+)
//! and turns the message's empty transaction into a heartbeat.

use async_trait::async_trait;
use futures_util::StreamExt;
use tokio_postgres::Client;
use weir_api::{
    Backfill, BackfillRows, BackfillView, ChangeEvent, ConnectorError, Op, Result, SourcePosition,
    TableId,
};

use crate::replication::{ReplicationClient, SnapshotAction};
use crate::snapshot::{
    TableMeta, connect, copy_row, import, now_ms, table_meta, unescape_copy_text,
};
use crate::source::{PostgresSource, PostgresSourceConfig, boundary, quote_ident, sql_error};

/// The PostgreSQL [`Backfill`].
pub struct PostgresBackfill {
    source: PostgresSource,
    cfg: PostgresSourceConfig,
    /// Inside the view's transaction.
    reader: Option<Client>,
    meta: Option<TableMeta>,
    consistent: Option<SourcePosition>,
}

impl PostgresBackfill {
    /// A backfill reader for the source `cfg` of pipeline `pipeline_name`.
    pub fn new(cfg: PostgresSourceConfig, pipeline_name: &str) -> Self {
        PostgresBackfill {
            source: PostgresSource::new(cfg.clone(), pipeline_name),
            cfg,
            reader: None,
            meta: None,
            consistent: None,
        }
    }

    fn order_list(meta: &TableMeta) -> String {
        let names: Vec<String> = meta
            .pk
            .iter()
            .map(|&i| quote_ident(&meta.columns[i].name))
            .collect();
        names.join(", ")
    }
}

/// A name for the temporary slot: unique on the server while this process lives.
fn temp_slot_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "weir_backfill_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[async_trait]
impl Backfill for PostgresBackfill {
    async fn open(&mut self, table: &TableId) -> Result<BackfillView> {
        self.reader = None;
        self.meta = None;
        let publication = self.cfg.publication.clone();
        let client = self.source.connect_sql().await?;
        let published = client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_publication_tables \
                 WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                &[&publication, &table.schema, &table.name],
            )
            .await
            .map_err(|e| sql_error("postgres backfill: reading the publication", e))?;
        if published.is_none() {
            return Err(ConnectorError::definite(format!(
                "postgres backfill: table {table} is not in publication {publication:?}, so \
                 weir does not stream its changes; select it in the pipeline's `tables` (weir \
                 adds it to the publication when it starts) and backfill it then"
            )));
        }
        let url = self.source.url()?;
        let config = PostgresSource::repl_config(&url);
        let mut repl = ReplicationClient::connect(&config)
            .await
            .map_err(|e| self.source.repl_error("connecting for replication", e))?;
        let slot = temp_slot_name();
        let created = repl
            .create_logical_slot(&slot, "pgoutput", SnapshotAction::Export, true)
            .await
            .map_err(|e| {
                self.source.repl_error(
                    &format!("creating the temporary replication slot {slot:?} for a backfill"),
                    e,
                )
            })?;
        let name = created.snapshot_name.ok_or_else(|| {
            ConnectorError::definite(
                "postgres backfill: CREATE_REPLICATION_SLOT exported no snapshot",
            )
        })?;
        let reader = connect(&self.source, "a backfill reader").await?;
        import(&reader, &name).await?;
        // The view is imported: the temporary slot may go (closing drops it).
        let _ = repl.close().await;
        let meta = table_meta(&reader, table, true).await?;
        if meta.pk.is_empty() {
            return Err(ConnectorError::definite(format!(
                "postgres backfill: table {table} has no primary key; weir backfills tables \
                 in key order only (add a primary key)"
            )));
        }
        if meta.schema.primary_key != meta.pk {
            return Err(ConnectorError::definite(format!(
                "postgres backfill: table {table} has a replica identity other than its \
                 primary key; weir backfills only tables whose changes are keyed by the \
                 primary key (ALTER TABLE {table} REPLICA IDENTITY DEFAULT)"
            )));
        }
        // An empty transaction with a message after C: the stream shows promptly that it
        // passed C, even when the database is idle. Best effort: a keepalive does it too.
        if let Ok(client) = self.source.connect_sql().await
            && let Err(e) = client
                .execute(
                    "SELECT pg_catalog.pg_logical_emit_message(true, 'weir', 'backfill')",
                    &[],
                )
                .await
        {
            tracing::debug!(error = %e, "postgres backfill: pg_logical_emit_message failed");
        }
        let consistent =
            SourcePosition::Postgres(boundary(created.consistent_point.saturating_sub(1)));
        let view = BackfillView {
            schema: meta.schema.clone(),
            consistent: consistent.clone(),
            estimated_rows: meta.estimated_rows,
        };
        self.reader = Some(reader);
        self.meta = Some(meta);
        self.consistent = Some(consistent);
        Ok(view)
    }

    async fn read(&mut self, after: Option<&[String]>, max_rows: usize) -> Result<BackfillRows> {
        let (Some(reader), Some(meta), Some(consistent)) =
            (&self.reader, &self.meta, &self.consistent)
        else {
            return Err(ConnectorError::definite(
                "postgres backfill: read() before open()",
            ));
        };
        let cols: Vec<String> = meta.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let filter = match after {
            Some(after) => format!(" WHERE {} > {}", meta.key_list(), meta.key_literal(after)?),
            None => String::new(),
        };
        let sql = format!(
            "COPY (SELECT {} FROM {}{} ORDER BY {} LIMIT {}) TO STDOUT",
            cols.join(", "),
            meta.qualified(),
            filter,
            Self::order_list(meta),
            max_rows.max(1)
        );
        let table = &meta.schema.table;
        let what = || format!("postgres backfill: reading {table}");
        let stream = reader
            .copy_out(&sql)
            .await
            .map_err(|e| sql_error(&what(), e))?;
        let mut stream = Box::pin(stream);
        let mut buf = Vec::new();
        while let Some(data) = stream.next().await {
            buf.extend_from_slice(&data.map_err(|e| sql_error(&what(), e))?);
        }
        let ts_ms = now_ms();
        let mut events = Vec::new();
        let mut last_line: &[u8] = &[];
        for line in buf.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            last_line = line;
            events.push(ChangeEvent {
                table: table.to_shared(),
                schema_version: 0,
                op: Op::Read,
                before: None,
                after: Some(copy_row(meta, line)?),
                position: consistent.clone(),
                txid: None,
                ts_ms,
            });
        }
        let last_key = if events.is_empty() {
            None
        } else {
            let fields: Vec<&[u8]> = last_line.split(|&b| b == b'\t').collect();
            let mut key = Vec::with_capacity(meta.pk.len());
            for &i in &meta.pk {
                let text = unescape_copy_text(fields[i]);
                key.push(String::from_utf8(text.into_owned()).map_err(|_| {
                    ConnectorError::definite(format!(
                        "postgres backfill: a key of {table} is not UTF-8 text"
                    ))
                })?);
            }
            Some(key)
        };
        Ok(BackfillRows { events, last_key })
    }
}
