//! Backfill of one table while the stream goes on (`weir snapshot`, `SNAPSHOT TABLE`).
//!
//! [`Backfill::open`] starts a `START TRANSACTION WITH CONSISTENT SNAPSHOT` session and
//! learns the binlog position that view corresponds to: on MariaDB without any lock, from
//! the `binlog_snapshot_file` / `binlog_snapshot_position` status of that very session; on
//! MySQL under a lock held for milliseconds (`FLUSH TABLES WITH READ LOCK`, else `LOCK TABLES
//! ... READ`), as the initial snapshot does. Stream events carry the binlog position *after*
//! them, so every change of a transaction that commits after the view is strictly after that
//! position, and every change the view holds is at or before it. Rows are read in key order
//! by keyset pagination (`WHERE (key) > (last) ORDER BY key LIMIT n`, bounds as typed
//! parameters), with the snapshot reader's own conversion, so rows equal the stream's. An
//! idle server's heartbeats (every second) show the stream passing the position.

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value as MyValue};
use weir_api::{
    Backfill, BackfillRows, BackfillView, ChangeEvent, ConnectorError, MysqlPosition, Op, Result,
    Source, SourcePosition, TableId,
};

use crate::config::MysqlSourceConfig;
use crate::snapshot::{
    TableMeta, begin, bound_text, connect, convert_row, lock_tables, now_ms, qualified,
    selected_tables, server_facts, snap_error, table_meta,
};
use crate::source::MysqlSource;

/// The MySQL / MariaDB [`Backfill`].
pub struct MysqlBackfill {
    cfg: MysqlSourceConfig,
    source: MysqlSource,
    /// Inside the view's transaction.
    reader: Option<Conn>,
    meta: Option<TableMeta>,
    consistent: Option<SourcePosition>,
}

impl MysqlBackfill {
    /// A backfill reader for the source `cfg` of pipeline `pipeline_name`.
    pub fn new(cfg: MysqlSourceConfig, pipeline_name: &str) -> Self {
        MysqlBackfill {
            source: MysqlSource::new(cfg.clone(), pipeline_name),
            cfg,
            reader: None,
            meta: None,
            consistent: None,
        }
    }
}

#[async_trait]
impl Backfill for MysqlBackfill {
    async fn open(&mut self, table: &TableId) -> Result<BackfillView> {
        self.reader = None;
        self.meta = None;
        let url = self.cfg.url.clone();
        let mut ctl = connect(&url, "to open a backfill").await?;
        let facts = server_facts(&mut ctl, &url).await?;
        if !selected_tables(&mut ctl, &self.cfg).await?.contains(table) {
            return Err(ConnectorError::definite(format!(
                "mysql backfill: table {table} does not exist or is not selected by the \
                 pipeline's `tables`, so weir does not stream its changes"
            )));
        }
        let mut reader = connect(&url, "a backfill reader").await?;
        let consistent = if facts.mariadb {
            begin(&mut reader, &url).await?;
            let rows: Vec<(String, String)> = reader
                .query("SHOW SESSION STATUS LIKE 'binlog_snapshot_%'")
                .await
                .map_err(|e| snap_error("reading binlog_snapshot_file/position", &url, e))?;
            let get = |name: &str| rows.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            let (Some(file), Some(pos)) = (
                get("Binlog_snapshot_file"),
                get("Binlog_snapshot_position").and_then(|p| p.parse::<u64>().ok()),
            ) else {
                return Err(ConnectorError::definite(
                    "mysql backfill: the server did not report binlog_snapshot_file/position \
                     for the consistent snapshot (is the binary log on?)",
                ));
            };
            SourcePosition::Mysql(MysqlPosition {
                file,
                pos,
                gtid: None,
                server_id: None,
            })
        } else {
            let locked = lock_tables(&mut ctl, &url, std::slice::from_ref(table)).await;
            let inside = async {
                locked?;
                let at = self.source.end_position().await?;
                begin(&mut reader, &url).await?;
                Ok::<_, ConnectorError>(at)
            }
            .await;
            let _ = ctl.query_drop("UNLOCK TABLES").await;
            inside?
        };
        drop(ctl);
        let meta = table_meta(&mut reader, &url, facts, table).await?;
        if meta.key.is_empty() {
            return Err(ConnectorError::definite(format!(
                "mysql backfill: table {table} has no primary key weir can read in order; weir \
                 backfills tables in key order only (add a primary key)"
            )));
        }
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
            (self.reader.as_mut(), &self.meta, &self.consistent)
        else {
            return Err(ConnectorError::definite(
                "mysql backfill: read() before open()",
            ));
        };
        let url = &self.cfg.url;
        let table = &meta.schema.table;
        let names = meta.key_names();
        let (filter, params) = meta.range(after, None)?;
        let cols: Vec<String> = meta
            .columns
            .iter()
            .map(|c| crate::snapshot::quote_ident(&c.name))
            .collect();
        let sql = format!(
            "SELECT {} FROM {}{filter} ORDER BY {} LIMIT {}",
            cols.join(", "),
            qualified(table),
            names.join(", "),
            max_rows.max(1)
        );
        let rows: Vec<mysql_async::Row> = reader
            .exec(sql, params)
            .await
            .map_err(|e| snap_error(&format!("reading {table}"), url, e))?;
        let ts_ms = now_ms();
        let mut events = Vec::with_capacity(rows.len());
        let mut last_key = None;
        let count = rows.len();
        for (n, row) in rows.into_iter().enumerate() {
            let raw = row.unwrap_raw();
            if n + 1 == count {
                let mut key = Vec::with_capacity(meta.key.len());
                for &i in &meta.key {
                    let col = &meta.columns[i];
                    let codec = col.codec.as_ref().ok_or_else(|| {
                        ConnectorError::definite(format!(
                            "mysql backfill: {table} key has no codec"
                        ))
                    })?;
                    let v = raw.get(i).cloned().flatten().unwrap_or(MyValue::NULL);
                    key.push(bound_text(codec, &col.charset, v).map_err(|e| {
                        ConnectorError::definite(format!(
                            "mysql backfill: key column {} of {table}: {e}",
                            col.name
                        ))
                    })?);
                }
                last_key = Some(key);
            }
            let (row, _) = convert_row(meta, raw)?;
            events.push(ChangeEvent {
                table: table.to_shared(),
                schema_version: 0,
                op: Op::Read,
                before: None,
                after: Some(row),
                position: consistent.clone(),
                txid: None,
                ts_ms,
            });
        }
        Ok(BackfillRows { events, last_key })
    }
}
