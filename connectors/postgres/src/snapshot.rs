//! Consistent parallel snapshot of the selected tables (the `Snapshot` half of the source).
//!
//! # Consistency
//!
//! A new pipeline creates its replication slot with `CREATE_REPLICATION_SLOT ... (SNAPSHOT
//! 'export')`: PostgreSQL hands back a snapshot that sees exactly the transactions committed
//! before the slot's consistent point `C`, and the slot streams exactly those committed after
//! it. The replication connection stays idle (which keeps the snapshot importable) until every
//! worker has run `SET TRANSACTION SNAPSHOT` in its own `REPEATABLE READ` transaction; the
//! chunk boundaries are read in the same snapshot. Streaming then starts after `(C - 1)`
//! (see the position rules in `source.rs`): no gap, no change seen twice.
//!
//! After a restart mid-snapshot (or when the slot already existed) that snapshot is gone.
//! [`Snapshot::resume`] exports a fresh one (`pg_export_snapshot()`); it is newer than the
//! slot's position, so the stream replays changes the fresh snapshot already shows. Applied in
//! order by key, the targets converge to the same rows; nothing is missed.
//!
//! # Chunks
//!
//! A table with a primary key is cut into ranges of `chunk_rows` keys by walking the key
//! index (`ORDER BY key OFFSET n LIMIT 1`, an index-only scan); bounds are the key columns'
//! text forms and are compared as row values (`(a, b) > ('x'::t1, 'y'::t2)`). A table without a
//! primary key is one chunk. Rows are read with `COPY (SELECT ...) TO STDOUT` in text format
//! and decoded with the same text parser as the replication stream, so a snapshot row and a
//! streamed row of the same data are identical.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio_postgres::{Client, CopyOutStream};
use weir_api::{
    ChangeEvent, ChunkReader, Column, ConnectorError, Op, Result, Row, Snapshot, SnapshotChunk,
    SnapshotPlan, SourcePosition, TableId, TableSchema, Value,
};

use crate::replication::{ReplicationClient, SnapshotAction, parse_lsn};
use crate::source::{
    PostgresSource, PostgresSourceConfig, boundary, load_domains, quote_ident, resolve_domain,
    sql_config, sql_error,
};
use crate::types;

/// Session settings that give the text forms `types::parse_text` expects (the same as the
/// replication connection's).
const SESSION: &str = "SET DateStyle = 'ISO'; SET IntervalStyle = 'postgres'; \
     SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET bytea_output = 'hex'";

/// A column as the catalog describes it.
#[derive(Debug, Clone)]
pub(crate) struct ColumnMeta {
    pub(crate) name: String,
    pub(crate) type_oid: u32,
    /// `format_type()`: the spelling used to cast key literals.
    pub(crate) type_sql: String,
}

/// What a worker needs to read a table.
#[derive(Debug, Clone)]
pub(crate) struct TableMeta {
    pub(crate) schema: TableSchema,
    pub(crate) columns: Vec<ColumnMeta>,
    /// Indices of the primary-key columns, in key order (empty: no primary key).
    pub(crate) pk: Vec<usize>,
    pub(crate) estimated_rows: u64,
}

impl TableMeta {
    pub(crate) fn qualified(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.schema.table.schema),
            quote_ident(&self.schema.table.name)
        )
    }

    pub(crate) fn key_list(&self) -> String {
        let names: Vec<String> = self
            .pk
            .iter()
            .map(|&i| quote_ident(&self.columns[i].name))
            .collect();
        format!("({})", names.join(", "))
    }

    pub(crate) fn key_literal(&self, values: &[String]) -> Result<String> {
        if values.len() != self.pk.len() {
            return Err(ConnectorError::definite(format!(
                "postgres snapshot: chunk bound of {} has {} values for a {}-column key; the \
                 table's primary key changed since the snapshot was planned: remove the \
                 pipeline's data directory and the slot to snapshot again",
                self.schema.table,
                values.len(),
                self.pk.len()
            )));
        }
        let parts: Vec<String> = self
            .pk
            .iter()
            .zip(values)
            .map(|(&i, v)| format!("{}::{}", string_literal(v), self.columns[i].type_sql))
            .collect();
        Ok(format!("({})", parts.join(", ")))
    }

    /// `WHERE ...` for a chunk (empty for a whole table).
    fn chunk_filter(&self, chunk: &SnapshotChunk) -> Result<String> {
        let mut conds = Vec::new();
        if let Some(after) = &chunk.after {
            conds.push(format!(
                "{} > {}",
                self.key_list(),
                self.key_literal(after)?
            ));
        }
        if let Some(upto) = &chunk.upto {
            conds.push(format!(
                "{} <= {}",
                self.key_list(),
                self.key_literal(upto)?
            ));
        }
        Ok(if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        })
    }
}

/// A SQL string literal that means exactly `s`, whatever `standard_conforming_strings` is.
fn string_literal(s: &str) -> String {
    format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Opens a SQL connection for snapshot work, with the session settings applied.
pub(crate) async fn connect(source: &PostgresSource, what: &str) -> Result<Client> {
    let url = source.url()?;
    let (client, connection) = sql_config(&url)
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            sql_error(
                &format!(
                    "postgres snapshot: connecting {what} to {}:{}",
                    url.host, url.port
                ),
                e,
            )
        })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
        .batch_execute(SESSION)
        .await
        .map_err(|e| sql_error("postgres snapshot: session settings", e))?;
    Ok(client)
}

/// Starts a read-only repeatable-read transaction in the exported snapshot `name`.
pub(crate) async fn import(client: &Client, name: &str) -> Result<()> {
    let sql = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
        string_literal(name)
    );
    client.batch_execute(&sql).await.map_err(|e| {
        sql_error(
            "postgres snapshot: importing the exported snapshot (it is only valid while the \
             exporting session waits; a retry exports a new one)",
            e,
        )
    })
}

/// Reads the catalog description of `table` (in the current snapshot); `estimate`: also
/// count a small never-analyzed table for progress (the planner needs it, readers do not).
pub(crate) async fn table_meta(
    client: &Client,
    table: &TableId,
    estimate: bool,
) -> Result<TableMeta> {
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid, a.atttypmod, a.attnotnull, \
                    pg_catalog.format_type(a.atttypid, a.atttypmod), \
                    pg_catalog.array_position(pk.indkey::int2[], a.attnum), \
                    pg_catalog.array_position(ri.indkey::int2[], a.attnum) IS NOT NULL, \
                    c.relreplident::text, c.reltuples::float8 \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 \
                  AND NOT a.attisdropped AND a.attgenerated = '' \
             LEFT JOIN pg_catalog.pg_index pk ON pk.indrelid = c.oid AND pk.indisprimary \
             LEFT JOIN pg_catalog.pg_index ri ON ri.indrelid = c.oid AND ri.indisreplident \
             WHERE n.nspname = $1 AND c.relname = $2 \
             ORDER BY a.attnum",
            &[&table.schema, &table.name],
        )
        .await
        .map_err(|e| sql_error(&format!("postgres snapshot: reading columns of {table}"), e))?;
    if rows.is_empty() {
        return Err(ConnectorError::definite(format!(
            "postgres snapshot: table {table} does not exist (dropped?); remove it from \
             `tables` or recreate it"
        )));
    }
    let domains = load_domains(client).await?;
    let mut columns = Vec::new();
    let mut schema_cols = Vec::new();
    let mut pk: Vec<(i32, usize)> = Vec::new();
    let mut identity = Vec::new();
    let mut replident = String::new();
    let mut reltuples = 0f64;
    for (i, r) in rows.iter().enumerate() {
        let name: String = r.get(0);
        let (type_oid, typmod) = resolve_domain(&domains, r.get(1), r.get(2));
        let not_null: bool = r.get(3);
        let type_sql: String = r.get(4);
        if let Some(pos) = r.get::<_, Option<i32>>(5) {
            pk.push((pos, i));
        }
        if r.get::<_, bool>(6) {
            identity.push(i);
        }
        replident = r.get(7);
        reltuples = r.get(8);
        let (ty, source_type) = types::column_type(type_oid, typmod);
        schema_cols.push(Column {
            name: name.clone(),
            ty,
            source_type,
            nullable: !not_null,
        });
        columns.push(ColumnMeta {
            name,
            type_oid,
            type_sql,
        });
    }
    pk.sort();
    let pk: Vec<usize> = pk.into_iter().map(|(_, i)| i).collect();
    // The key the replication stream announces (pgoutput flags the replica identity).
    let primary_key = match replident.as_str() {
        "f" => (0..columns.len()).collect(),
        "i" => identity,
        "n" => Vec::new(),
        _ => pk.clone(),
    };
    // A table never analyzed has no estimate (reltuples = -1): count it when it is small
    // (up to 16 MB), for progress and ETA.
    if estimate && reltuples < 0.0 {
        let pages: i64 = client
            .query_one(
                "SELECT pg_catalog.pg_relation_size(c.oid) / 8192 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&table.schema, &table.name],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(i64::MAX);
        if pages < 2_000 {
            let sql = format!(
                "SELECT count(*) FROM {}.{}",
                quote_ident(&table.schema),
                quote_ident(&table.name)
            );
            if let Ok(r) = client.query_one(&sql, &[]).await {
                reltuples = r.get::<_, i64>(0) as f64;
            }
        }
    }
    Ok(TableMeta {
        schema: TableSchema {
            table: table.clone(),
            version: 0,
            columns: schema_cols,
            primary_key,
        },
        columns,
        pk,
        estimated_rows: if reltuples > 0.0 { reltuples as u64 } else { 0 },
    })
}

/// Cuts `meta`'s table into chunks of `chunk_rows` keys, numbering them from `first_index`.
async fn plan_chunks(
    client: &Client,
    meta: &TableMeta,
    chunk_rows: u64,
    first_index: u32,
) -> Result<Vec<SnapshotChunk>> {
    let table = &meta.schema.table;
    let whole = |index| SnapshotChunk {
        table: table.clone(),
        index,
        after: None,
        upto: None,
        estimated_rows: meta.estimated_rows,
    };
    if meta.pk.is_empty() || chunk_rows == 0 {
        return Ok(vec![whole(first_index)]);
    }
    // Aliased, so that ORDER BY names the table's columns (and their index), not the text
    // casts: `ORDER BY id` after `SELECT id::text AS id` would sort as text.
    let select: Vec<String> = meta
        .pk
        .iter()
        .enumerate()
        .map(|(n, &i)| format!("{}::text AS weir_k{n}", quote_ident(&meta.columns[i].name)))
        .collect();
    // Qualified: a qualified name always means the table's column.
    let order: Vec<String> = meta
        .pk
        .iter()
        .map(|&i| format!("weir_t.{}", quote_ident(&meta.columns[i].name)))
        .collect();
    let mut chunks = Vec::new();
    let mut after: Option<Vec<String>> = None;
    loop {
        let filter = match &after {
            Some(a) => format!(" WHERE {} > {}", meta.key_list(), meta.key_literal(a)?),
            None => String::new(),
        };
        let sql = format!(
            "SELECT {} FROM {} AS weir_t{filter} ORDER BY {} OFFSET {} LIMIT 1",
            select.join(", "),
            meta.qualified(),
            order.join(", "),
            chunk_rows - 1
        );
        let row = client.query_opt(&sql, &[]).await.map_err(|e| {
            sql_error(
                &format!("postgres snapshot: finding chunk bounds of {table}"),
                e,
            )
        })?;
        let index = first_index + chunks.len() as u32;
        match row {
            Some(r) => {
                let upto: Vec<String> = (0..meta.pk.len()).map(|i| r.get(i)).collect();
                chunks.push(SnapshotChunk {
                    table: table.clone(),
                    index,
                    after: after.take(),
                    upto: Some(upto.clone()),
                    estimated_rows: chunk_rows,
                });
                after = Some(upto);
            }
            None => {
                let counted = chunk_rows * chunks.len() as u64;
                chunks.push(SnapshotChunk {
                    table: table.clone(),
                    index,
                    after,
                    upto: None,
                    estimated_rows: meta.estimated_rows.saturating_sub(counted).max(1),
                });
                return Ok(chunks);
            }
        }
    }
}

/// Settings of the snapshot reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// Rows per chunk (a crash re-reads at most the chunks in progress).
    pub chunk_rows: u64,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings { chunk_rows: 50_000 }
    }
}

/// What keeps an exported snapshot importable until the readers have it.
enum Holder {
    /// The replication connection that created the slot (idle).
    Slot(ReplicationClient),
    /// A SQL session inside the transaction that ran `pg_export_snapshot()`.
    Sql(Client),
}

/// The PostgreSQL [`Snapshot`].
pub struct PostgresSnapshot {
    source: PostgresSource,
    cfg: PostgresSourceConfig,
    settings: SnapshotSettings,
    holder: Option<Holder>,
    snapshot_name: Option<String>,
    stream_from: Option<SourcePosition>,
}

impl PostgresSnapshot {
    /// A snapshot reader for the source `cfg` of pipeline `pipeline_name`.
    pub fn new(cfg: PostgresSourceConfig, pipeline_name: &str, settings: SnapshotSettings) -> Self {
        PostgresSnapshot {
            source: PostgresSource::new(cfg.clone(), pipeline_name),
            cfg,
            settings,
            holder: None,
            snapshot_name: None,
            stream_from: None,
        }
    }

    /// The slot's confirmed position, if the slot exists.
    async fn existing_slot(&mut self) -> Result<Option<u64>> {
        let slot = self.cfg.slot.clone();
        let client = self.source.connect_sql().await?;
        let row = client
            .query_opt(
                "SELECT confirmed_flush_lsn::text, plugin::text, active_pid \
                 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| sql_error("postgres snapshot: looking up the replication slot", e))?;
        let Some(row) = row else { return Ok(None) };
        // A slot still held by another session may be one a killed weir was creating: it
        // vanishes if that creation never finishes. Wait until it is settled either way.
        if let Some(pid) = row.get::<_, Option<i32>>(2) {
            return Err(ConnectorError::transient(format!(
                "postgres snapshot: replication slot {slot:?} is in use by server process {pid} \
                 (a previous weir session still creating or reading it?); retrying until it is \
                 released"
            )));
        }
        let plugin: Option<String> = row.get(1);
        if plugin.as_deref() != Some("pgoutput") {
            return Err(ConnectorError::definite(format!(
                "postgres snapshot: replication slot {slot:?} exists but uses plugin {plugin:?}, \
                 not pgoutput; choose another slot name or drop it"
            )));
        }
        let confirmed: Option<String> = row.get(0);
        Ok(Some(confirmed.as_deref().and_then(parse_lsn).unwrap_or(0)))
    }

    /// Exports a fresh snapshot from a SQL session (kept open in `holder`).
    async fn export_fresh(&mut self) -> Result<()> {
        let client = connect(&self.source, "to export a snapshot").await?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| sql_error("postgres snapshot: starting the export transaction", e))?;
        let row = client
            .query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
            .await
            .map_err(|e| sql_error("postgres snapshot: pg_export_snapshot()", e))?;
        self.snapshot_name = Some(row.get(0));
        self.holder = Some(Holder::Sql(client));
        Ok(())
    }

    fn name(&self) -> Result<&str> {
        self.snapshot_name
            .as_deref()
            .ok_or_else(|| ConnectorError::definite("postgres snapshot: reader() before plan()"))
    }
}

#[async_trait]
impl Snapshot for PostgresSnapshot {
    async fn plan(&mut self) -> Result<SnapshotPlan> {
        let tables = self.source.resolve_tables().await?;
        // The publication must exist before the slot: pgoutput looks it up as of each change.
        self.source.ensure_publication(&tables).await?;
        let stream_from = match self.existing_slot().await? {
            Some(confirmed) => {
                tracing::warn!(
                    slot = %self.cfg.slot,
                    "replication slot exists already, so its creation snapshot is gone; \
                     snapshotting with a fresh one (the stream replays changes since the slot's \
                     position, so targets converge)"
                );
                self.export_fresh().await?;
                boundary(confirmed.saturating_sub(1))
            }
            None => {
                let url = self.source.url()?;
                let config = PostgresSource::repl_config(&url);
                let mut repl = ReplicationClient::connect(&config)
                    .await
                    .map_err(|e| self.source.repl_error("connecting for replication", e))?;
                let slot = self.cfg.slot.clone();
                let created = repl
                    .create_logical_slot(&slot, "pgoutput", SnapshotAction::Export, false)
                    .await
                    .map_err(|e| {
                        self.source
                            .repl_error(&format!("creating replication slot {slot:?}"), e)
                    })?;
                self.snapshot_name = Some(created.snapshot_name.ok_or_else(|| {
                    ConnectorError::definite(
                        "postgres snapshot: CREATE_REPLICATION_SLOT exported no snapshot",
                    )
                })?);
                self.holder = Some(Holder::Slot(repl));
                boundary(created.consistent_point.saturating_sub(1))
            }
        };
        let stream_from = SourcePosition::Postgres(stream_from);
        self.stream_from = Some(stream_from.clone());
        let client = connect(&self.source, "to plan the snapshot").await?;
        import(&client, self.name()?).await?;
        let mut schemas = Vec::new();
        let mut chunks = Vec::new();
        for table in &tables {
            let meta = table_meta(&client, table, true).await?;
            let first = chunks.len() as u32;
            chunks.extend(plan_chunks(&client, &meta, self.settings.chunk_rows, first).await?);
            schemas.push(meta.schema);
        }
        let _ = client.batch_execute("COMMIT").await;
        Ok(SnapshotPlan {
            schemas,
            chunks,
            stream_from,
        })
    }

    async fn resume(&mut self, plan: &SnapshotPlan) -> Result<()> {
        if self.existing_slot().await?.is_none() {
            return Err(ConnectorError::definite(format!(
                "postgres snapshot: replication slot {:?} is gone, so changes made since the \
                 snapshot started are lost; remove the pipeline's data directory to start over \
                 (weir recreates the slot and snapshots again)",
                self.cfg.slot
            )));
        }
        self.stream_from = Some(plan.stream_from.clone());
        self.export_fresh().await
    }

    async fn reader(&mut self) -> Result<Box<dyn ChunkReader>> {
        let name = self.name()?.to_owned();
        let stream_from = self
            .stream_from
            .clone()
            .ok_or_else(|| ConnectorError::definite("postgres snapshot: reader() before plan()"))?;
        let client = connect(&self.source, "a snapshot worker").await?;
        import(&client, &name).await?;
        Ok(Box::new(PgChunkReader {
            client,
            tables: HashMap::new(),
            copy: None,
            buf: BytesMut::new(),
            stream_from,
            ts_ms: now_ms(),
        }))
    }

    async fn readers_ready(&mut self) -> Result<()> {
        match self.holder.take() {
            Some(Holder::Slot(repl)) => {
                let _ = repl.close().await;
            }
            Some(Holder::Sql(client)) => {
                let _ = client.batch_execute("COMMIT").await;
            }
            None => {}
        }
        Ok(())
    }
}

struct OpenChunk {
    stream: std::pin::Pin<Box<CopyOutStream>>,
    meta: TableMeta,
    done: bool,
}

/// One worker's connection, inside the imported snapshot.
struct PgChunkReader {
    client: Client,
    tables: HashMap<TableId, TableMeta>,
    copy: Option<OpenChunk>,
    buf: BytesMut,
    stream_from: SourcePosition,
    ts_ms: i64,
}

/// Decodes one line of `COPY ... TO STDOUT` (text format) of `meta`'s table.
pub(crate) fn copy_row(meta: &TableMeta, line: &[u8]) -> Result<Row> {
    let mut values = Vec::with_capacity(meta.columns.len());
    for (i, field) in line.split(|&b| b == b'\t').enumerate() {
        let Some(col) = meta.columns.get(i) else {
            return Err(ConnectorError::definite(format!(
                "postgres snapshot: {} row has more than {} fields in COPY output",
                meta.schema.table,
                meta.columns.len()
            )));
        };
        if field == b"\\N" {
            values.push(Value::Null);
            continue;
        }
        let text = unescape_copy_text(field);
        let v = types::parse_text(col.type_oid, &text).map_err(|e| {
            ConnectorError::definite_from(
                format!(
                    "postgres snapshot: {} column {}: {e}",
                    meta.schema.table, col.name
                ),
                e,
            )
        })?;
        values.push(v);
    }
    if values.len() != meta.columns.len() {
        return Err(ConnectorError::definite(format!(
            "postgres snapshot: {} row has {} fields for {} columns in COPY output",
            meta.schema.table,
            values.len(),
            meta.columns.len()
        )));
    }
    Ok(Row(values))
}

#[async_trait]
impl ChunkReader for PgChunkReader {
    async fn open(&mut self, chunk: &SnapshotChunk) -> Result<()> {
        self.copy = None;
        self.buf.clear();
        if !self.tables.contains_key(&chunk.table) {
            let meta = table_meta(&self.client, &chunk.table, false).await?;
            self.tables.insert(chunk.table.clone(), meta);
        }
        let meta = self.tables[&chunk.table].clone();
        let cols: Vec<String> = meta.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let sql = format!(
            "COPY (SELECT {} FROM {}{}) TO STDOUT",
            cols.join(", "),
            meta.qualified(),
            meta.chunk_filter(chunk)?
        );
        let stream = self.client.copy_out(&sql).await.map_err(|e| {
            sql_error(
                &format!(
                    "postgres snapshot: reading {} chunk {}",
                    chunk.table, chunk.index
                ),
                e,
            )
        })?;
        self.copy = Some(OpenChunk {
            stream: Box::pin(stream),
            meta,
            done: false,
        });
        Ok(())
    }

    async fn next_batch(&mut self, max_rows: usize) -> Result<Option<Vec<ChangeEvent>>> {
        let Some(mut open) = self.copy.take() else {
            return Ok(None);
        };
        let mut events = Vec::new();
        while events.len() < max_rows.max(1) {
            if let Some(nl) = memchr::memchr(b'\n', &self.buf) {
                let line = self.buf.split_to(nl + 1);
                let row = copy_row(&open.meta, &line[..nl])?;
                events.push(ChangeEvent {
                    table: open.meta.schema.table.to_shared(),
                    schema_version: 0,
                    op: Op::Read,
                    before: None,
                    after: Some(row),
                    position: self.stream_from.clone(),
                    txid: None,
                    ts_ms: self.ts_ms,
                });
                continue;
            }
            if open.done {
                if !self.buf.is_empty() {
                    return Err(ConnectorError::definite(format!(
                        "postgres snapshot: COPY output of {} ended inside a row",
                        open.meta.schema.table
                    )));
                }
                break;
            }
            match open.stream.next().await {
                Some(Ok(data)) => self.buf.extend_from_slice(&data),
                Some(Err(e)) => {
                    return Err(sql_error(
                        &format!("postgres snapshot: reading {}", open.meta.schema.table),
                        e,
                    ));
                }
                None => open.done = true,
            }
        }
        let exhausted = open.done && self.buf.is_empty();
        if !exhausted {
            self.copy = Some(open);
        }
        if events.is_empty() && exhausted {
            return Ok(None);
        }
        Ok(Some(events))
    }
}

/// Undoes COPY text-format escaping of one field.
pub(crate) fn unescape_copy_text(field: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !field.contains(&b'\\') {
        return std::borrow::Cow::Borrowed(field);
    }
    let mut out = Vec::with_capacity(field.len());
    let mut b = Bytes::copy_from_slice(field);
    while b.has_remaining() {
        let c = b.get_u8();
        if c != b'\\' || !b.has_remaining() {
            out.push(c);
            continue;
        }
        let e = b.get_u8();
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match b.chunk().first() {
                        Some(&d @ b'0'..=b'7') => {
                            b.advance(1);
                            v = v * 8 + u32::from(d - b'0');
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                let mut v = 0u32;
                let mut digits = 0;
                while digits < 2 {
                    match b.chunk().first().and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            b.advance(1);
                            v = v * 16 + d;
                            digits += 1;
                        }
                        None => break,
                    }
                }
                if digits == 0 {
                    out.push(b'x');
                } else {
                    out.push(v as u8);
                }
            }
            other => out.push(other),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_unescapes() {
        assert_eq!(&*unescape_copy_text(b"plain"), b"plain");
        assert_eq!(
            &*unescape_copy_text(b"a\\tb\\nc\\\\d\\r\\b\\f\\v"),
            b"a\tb\nc\\d\r\x08\x0c\x0b"
        );
        assert_eq!(&*unescape_copy_text(b"\\101\\x41\\x4"), b"AA\x04");
        assert_eq!(&*unescape_copy_text(b"end\\"), b"end\\");
        assert_eq!(&*unescape_copy_text(b"\\q\\x"), b"qx");
    }

    #[test]
    fn literals_mean_exactly_their_text() {
        assert_eq!(string_literal("it's"), "E'it''s'");
        assert_eq!(string_literal("a\\b"), "E'a\\\\b'");
    }
}
