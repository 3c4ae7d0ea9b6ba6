//! The PostgreSQL sink: applies the staging log to a PostgreSQL database, exactly once,
//! whole source transactions at a time.
//!
//! # Exactly-once
//!
//! The target holds `_weir.positions (pipeline, sink, seq, updated_at)`, one row per pipeline
//! and sink. Every target transaction starts with `SELECT seq ... FOR UPDATE` on that row
//! (which also fences a second weir process writing the same sink: the row lock serialises
//! them and a position that moved under us is a transient error) and ends with the row set to
//! the sequence of the last source `Commit` it contains, then `COMMIT`. [`Sink::committed`]
//! reads the row. Entries at or below the stored sequence are skipped, so re-applying a batch
//! changes nothing.
//!
//! # Transactions
//!
//! A target transaction stays open across [`Sink::apply`] calls until a `Commit`. At the end
//! of each call the sink commits at the *last* `Commit` of the batch, so under load many
//! source transactions share one target transaction (one fsync); entries after that commit
//! (the head of a large transaction) are written into a new target transaction that stays
//! open into the next call. A reader of the target never sees part of a source transaction.
//!
//! # Applying changes
//!
//! Changes are buffered per table and *reduced per key* to the final state of each key
//! (unchanged-TOAST columns are filled from earlier images of the same key in the buffer).
//! A flush then runs, per table, in this order (each key has exactly one final state, so the
//! order between keys does not matter and per-key source order is kept):
//!
//! 1. deletes by key in bulk: `DELETE ... USING unnest($1::text[], ...)` (also for a key that
//!    was deleted and inserted again in the buffer, before its new row);
//! 2. full rows as upserts: `INSERT ... SELECT ... FROM unnest(...) ON CONFLICT (key) DO
//!    UPDATE SET <non-key columns>` (one statement, one parameter per column);
//! 3. rows whose final image still has unchanged-TOAST columns: `UPDATE ... FROM unnest(...)`
//!    of the present columns only, one statement per set of present columns.
//!
//! Snapshot rows (`op = r`) for a table that is empty (checked once per session) go in with a
//! direct text `COPY` (under a savepoint: a duplicate key rolls back to it and takes the merge
//! path). Into a non-empty table, from [`STAGE_MIN_ROWS`] rows on, they are copied into a
//! session temp table and merged with one `INSERT ... SELECT ... ON CONFLICT DO UPDATE`.
//! *Text* COPY, not binary: every value is then parsed by the column's own input function,
//! which keeps values exact without a binary encoder per target type (binary COPY is a possible
//! later speed-up). Keyless tables take large insert batches by direct COPY too.
//!
//! # Copy streams
//!
//! A flush of a table that holds only snapshot rows, at least [`STAGE_MIN_ROWS`] of them, goes
//! to one of up to `copy_streams` extra connections (default 2; 0 turns them off), so the
//! target loads several batches at once while the sink reads and converts the next ones. A
//! stream runs the same COPY (or COPY into its own temp stage and merge) in a transaction of
//! its own, one savepoint per batch. The sink *settles* the streams — waits for them and
//! commits their transactions — before it writes its position at a commit, and before its
//! own connection writes any table or changes the schema, so:
//!
//! * the position is never committed ahead of the rows: a crash between a stream's commit and
//!   the position's re-applies those snapshot rows, which then meet their keys and merge (the
//!   same values), so the effect is exactly once;
//! * later changes of the same keys (stream updates, deletes, a truncate) always run after the
//!   snapshot rows are committed, in log order;
//! * a table whose schema changed, or that the sink's own connection wrote, in the open
//!   transaction takes its snapshot rows on that connection until the commit (a stream would
//!   not see a new table and would wait on the other locks);
//! * two uncommitted stream batches never hold the same key (a fingerprint set per table; a
//!   batch with a key already in flight settles the streams first), so streams never wait on
//!   each other. A stream gives up any lock wait after 5 s and runs that batch again once the
//!   others have committed.
//!
//! Snapshot rows are not part of a source transaction, so a reader may see them before the
//! sink's own commit; a rejected value still rolls back every stream and the sink's
//! transaction, so nothing of that batch lands.
//!
//! A flush happens when the buffered rows or bytes reach `batch_rows`/`batch_bytes`, before a
//! table's schema changes, before a truncate, and at the end of every `apply` call, so memory
//! is bounded by the batch knobs whatever the transaction size.
//!
//! **Values** go as PostgreSQL text (elements of `text[]` parameters, binary-encoded so no
//! escaping is involved) and are cast in SQL to the target column's type without its typmod
//! (`format_type(atttypid, -1)`: `numeric`, `"bit"`, `character varying`); assignment to
//! the column then applies the typmod, so a too-long string is an error rather than cut. A
//! value the column rejects stops the sink with a definite error naming table and column.
//!
//! **Keyless tables** (no primary key at the source): inserts in bulk; an update or delete
//! touches one row matching the whole old row (`col::text IS NOT DISTINCT FROM value`,
//! unchanged-TOAST columns skipped), via `ctid`. PostgreSQL sources need `REPLICA IDENTITY
//! FULL` for that.
//!
//! **Truncate** (`op = t`) drops the table's buffered changes and runs `TRUNCATE`.
//!
//! # Tables and schema changes
//!
//! Tables are created when missing, in `schema` (`{schema}` in it is replaced by the source
//! schema, so `schema = "{schema}"` mirrors the source layout), named as at the source or as
//! `tables` renames them, with the source's primary key. A new schema version:
//!
//! * **ADD COLUMN** → `ALTER TABLE ... ADD COLUMN` (always nullable).
//! * **DROP COLUMN** → the target **keeps** the column; it is made nullable if it was
//!   `NOT NULL`; new rows get NULL there and upserts leave it alone.
//! * **type change** → applied when it widens (`smallint`→`integer`→`bigint`→`numeric`,
//!   `numeric(p,s)` to more digits, `varchar(n)` longer or `text`, `real`→`double precision`,
//!   more fractional digits of time/timestamp); otherwise the target type is kept and a
//!   warning logged (values that do not fit then stop the sink with a clear error).
//!
//! # Type mapping
//!
//! From a PostgreSQL source the column keeps its exact type (`format_type` spelling from the
//! source: `numeric(10,2)`, `timestamp(3) with time zone`, `character varying(20)[]`,
//! `interval`, `inet`, `money`, ranges, ...). Enums, domains and extension types (the source
//! names them only by oid) become `text`. From other sources (MySQL):
//!
//! | engine type (source type) | PostgreSQL |
//! |---|---|
//! | Bool | `boolean` |
//! | Int 8/16 signed, 8 unsigned (`tinyint(1)` too: it holds -128..127) | `smallint` |
//! | Int 24/32 signed, 16/24 unsigned | `integer` |
//! | Int 64 signed, 32 unsigned | `bigint` |
//! | Int 64 unsigned (`bigint unsigned`) | `numeric(20,0)` |
//! | Float32 / Float64 | `real` / `double precision` |
//! | Decimal(p,s) | `numeric(p,s)` (`numeric` when unconstrained) |
//! | Text(n) / Text | `character varying(n)` / `text` |
//! | Bytes | `bytea` |
//! | Bits(n) | `bit varying(n)` |
//! | Date | `date` |
//! | Time (`time(p)`) | `time(p) without time zone` (a MySQL duration outside 0..24h is rejected) |
//! | Timestamp (`datetime(p)`) | `timestamp(p) without time zone` |
//! | TimestampTz (MySQL `timestamp(p)`) | `timestamp(p) with time zone` |
//! | Json | `jsonb` |
//! | Uuid | `uuid` |
//! | Array(T) | `T[]` |
//! | Other (enum, set, geometry, ...) | `text` |
//!
//! MySQL zero dates (`0000-00-00`, `2024-00-10`) cannot be held by PostgreSQL: they become
//! NULL, a warning names table and column (once per column and session) and
//! [`zero_dates_nulled`] counts them. Date and timestamp columns of non-PostgreSQL sources are
//! therefore created nullable.
//!
//! # Connections and errors
//!
//! One connection per sink, whatever the number of tables, plus up to `copy_streams` copy
//! streams while snapshot rows are loaded. Connection loss, a server
//! shutting down, serialization failures and deadlocks are transient (the engine rebuilds the
//! sink, which resumes from `committed()`); a value, constraint or privilege the target
//! rejects is definite, with the table, column and what to do. The password never appears in
//! messages.

mod mapping;
mod preflight;
mod side;

pub use preflight::check;

use crate::source::{parse_url, quote_ident, sql_config};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::SinkExt;
use mapping::{Cell, Conversion};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, SimpleQueryMessage, Statement};
use weir_api::keyed::{KeyedChanges, PendingOp, fill_unchanged};
use weir_api::{
    ChangeEvent, ConnectorError, Entry, LogEntry, Op, Result, Row, Sink, SinkContext, TableId,
    TableSchema,
};

/// From this many rows in one flush of a table, snapshot rows into a non-empty table go
/// through `COPY` into a temp table and one merge, and keyless inserts through `COPY`.
pub const STAGE_MIN_ROWS: usize = 2000;

/// Bytes of COPY data sent per message.
const COPY_CHUNK: usize = 1 << 20;

/// Settings of every session of the sink (its own connection and its copy streams).
const SESSION_SQL: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
     SET idle_in_transaction_session_timeout = 0; SET statement_timeout = 0";

/// A copy stream gives up a lock wait after this long and runs the job again once the other
/// streams have committed (see "Copy streams" in the module docs).
const STREAM_LOCK_TIMEOUT: &str = "5s";

static ZERO_DATES: AtomicU64 = AtomicU64::new(0);

/// How many MySQL zero dates PostgreSQL sinks of this process turned into NULL (a metric).
pub fn zero_dates_nulled() -> u64 {
    ZERO_DATES.load(Ordering::Relaxed)
}

/// `[[sinks]] type = "postgres"` settings.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Target schema (created if missing); `{schema}` is replaced by the source schema.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Optional renaming: source `"schema.table"` → target table name (in `schema`).
    #[serde(default)]
    pub tables: BTreeMap<String, String>,
    /// Buffered rows (all tables) that trigger a flush into the open target transaction.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Buffered bytes (approximate) that trigger a flush.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// Extra connections that load large batches of snapshot rows in parallel (0: none).
    #[serde(default = "default_copy_streams")]
    pub copy_streams: usize,
}

fn default_copy_streams() -> usize {
    2
}

fn default_schema() -> String {
    "public".into()
}

fn default_batch_rows() -> usize {
    10_000
}

fn default_batch_bytes() -> usize {
    32 << 20
}

impl PostgresSinkConfig {
    /// A configuration with defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        PostgresSinkConfig {
            url: url.into(),
            schema: default_schema(),
            tables: BTreeMap::new(),
            batch_rows: default_batch_rows(),
            batch_bytes: default_batch_bytes(),
            copy_streams: default_copy_streams(),
        }
    }
}

impl std::fmt::Debug for PostgresSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSinkConfig")
            .field("url", &redacted_url(&self.url))
            .field("schema", &self.schema)
            .field("tables", &self.tables)
            .field("batch_rows", &self.batch_rows)
            .field("batch_bytes", &self.batch_bytes)
            .field("copy_streams", &self.copy_streams)
            .finish()
    }
}

/// The raw (percent-encoded) password of a URL.
pub(crate) fn raw_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let pw = userinfo.split_once(':')?.1;
    (!pw.is_empty()).then_some(pw)
}

/// The URL with its password replaced by `<redacted>`.
pub fn redacted_url(url: &str) -> String {
    match raw_password(url) {
        Some(pw) => url.replacen(&format!(":{pw}@"), ":<redacted>@", 1),
        None => url.to_string(),
    }
}

/// Removes the password (raw and decoded) from a message.
fn scrub(mut msg: String, secrets: &[String]) -> String {
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        if msg.contains(s.as_str()) {
            msg = msg.replace(s.as_str(), "<redacted>");
        }
    }
    msg
}

/// Quotes an SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The server's message (SQLSTATE, message, detail, hint) or the client error with causes.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
        if let Some(d) = db.detail() {
            let _ = write!(s, " (detail: {d})");
        }
        if let Some(h) = db.hint() {
            let _ = write!(s, " (hint: {h})");
        }
        return s;
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            let _ = write!(s, ": {text}");
        }
        cause = c.source();
    }
    s
}

/// Whether retrying may help: connection problems, shutdowns, lock and serialization
/// conflicts, resource shortages, a target table changed under the sink.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            let c = code.code();
            matches!(c.get(..2), Some("08" | "40" | "53" | "57" | "58" | "55"))
                // A failed transaction; a target table or column dropped under the sink (a
                // rebuilt sink reads the catalog again and recreates it).
                || matches!(c, "25P02" | "42P01" | "42703")
        }
    }
}

/// What to do about a definite server error, by SQLSTATE.
fn advice(code: &str) -> &'static str {
    match code {
        "23502" => {
            "the target column is NOT NULL but the row has no value there (a column dropped at \
             the source, or a value PostgreSQL cannot hold turned into NULL); make it nullable \
             with ALTER TABLE ... ALTER COLUMN ... DROP NOT NULL, then restart"
        }
        "42P10" => {
            "the target table has no primary key or unique index on the source's key columns; \
             add one (or drop the table so weir recreates it), then restart"
        }
        "42501" => {
            "grant the sink's user the privilege named above (CREATE on the database and schema, \
             INSERT/UPDATE/DELETE/TRUNCATE on the tables), then restart"
        }
        c if c.starts_with("22") => {
            "the value does not fit the target column's type; widen the column (ALTER TABLE ... \
             ALTER COLUMN ... TYPE ...), then restart"
        }
        c if c.starts_with("23") => {
            "the target has a constraint the source does not (or rows the source does not \
             know); drop the constraint or fix the rows, then restart"
        }
        _ => "fix the target as the message says, then restart",
    }
}

/// One connection and its prepared statements.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    async fn statement(
        &mut self,
        sql: &str,
    ) -> std::result::Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql).await?;
        if self.statements.len() >= 2048 {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// Runs `sql` with one `text[]` parameter per entry of `columns`.
    async fn exec_arrays(
        &mut self,
        sql: &str,
        columns: &[Vec<Option<&str>>],
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        let stmt = self.statement(sql).await?;
        let params: Vec<&(dyn ToSql + Sync)> =
            columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        self.client.execute(&stmt, &params).await
    }

    /// Runs `sql` with one `text` parameter per entry of `values`.
    async fn exec_texts(
        &mut self,
        sql: &str,
        values: &[Option<&str>],
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        let stmt = self.statement(sql).await?;
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        self.client.execute(&stmt, &params).await
    }

    /// A text-format `COPY ... FROM STDIN` of `rows`.
    async fn copy<'a>(
        &self,
        sql: &str,
        rows: impl Iterator<Item = &'a [Cell]>,
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        copy_rows(&self.client, sql, rows).await
    }
}

/// A text-format `COPY ... FROM STDIN` of `rows` on `client`.
async fn copy_rows<'a>(
    client: &Client,
    sql: &str,
    rows: impl Iterator<Item = &'a [Cell]>,
) -> std::result::Result<u64, tokio_postgres::Error> {
    let sink = client.copy_in::<_, Bytes>(sql).await?;
    let mut sink = std::pin::pin!(sink);
    let mut buf: Vec<u8> = Vec::with_capacity(COPY_CHUNK + 4096);
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                buf.push(b'\t');
            }
            match cell {
                Cell::Short(s) => mapping::copy_escape(s.as_bytes(), &mut buf),
                Cell::Text(s) => mapping::copy_escape(s.as_bytes(), &mut buf),
                Cell::Null | Cell::Unchanged => buf.extend_from_slice(b"\\N"),
            }
        }
        buf.push(b'\n');
        if buf.len() >= COPY_CHUNK {
            let chunk = std::mem::replace(&mut buf, Vec::with_capacity(COPY_CHUNK + 4096));
            sink.send(Bytes::from(chunk)).await?;
        }
    }
    if !buf.is_empty() {
        sink.send(Bytes::from(buf)).await?;
    }
    sink.as_mut().finish().await
}

/// A column of the target table that a source column maps to.
#[derive(Debug, Clone)]
struct TargetCol {
    /// Source column name (for messages).
    name: String,
    /// Quoted column name.
    quoted: String,
    /// Type to cast the text to: `format_type(atttypid, -1)`.
    base: String,
}

/// A target table and the changes buffered for it.
struct TableState {
    schema: Arc<TableSchema>,
    /// Quoted `schema.table`.
    qualified: String,
    /// Target name for messages.
    display: String,
    /// Per source column.
    cols: Vec<TargetCol>,
    /// Keyed tables: each key's final state.
    changes: KeyedChanges<Vec<Cell>, Cell>,
    /// Keyless tables: rows to insert.
    inserts: Vec<Vec<Cell>>,
    /// Rows and approximate bytes buffered.
    rows: usize,
    bytes: usize,
    /// The table holds only rows this session copied from snapshot reads (direct COPY ok).
    /// `None`: not checked yet.
    copy_direct: Option<bool>,
    /// Temp stage table for COPY + merge, once created in this session.
    stage: Option<String>,
    stage_id: u64,
}

/// The PostgreSQL sink (see the module docs).
pub struct PostgresSink {
    cfg: PostgresSinkConfig,
    ctx: SinkContext,
    label: String,
    conn: Conn,
    connection: tokio::task::JoinHandle<()>,
    pg_source: bool,
    can_temp: bool,
    /// Durable position (the last commit this session wrote, or what it read at start).
    applied: Option<u64>,
    /// Last sequence processed (including the open target transaction).
    high: Option<u64>,
    in_txn: bool,
    broken: bool,
    tables: weir_api::FastMap<TableId, TableState>,
    /// Target (schema, table) → source table, to refuse two tables writing one.
    targets: HashMap<(String, String), TableId>,
    schemas_ready: HashSet<String>,
    rows: usize,
    bytes: usize,
    warned: HashSet<(TableId, String)>,
    /// Working space for value → text conversion.
    scratch: String,
    stage_seq: u64,
    /// Copy streams for large snapshot batches.
    streams: side::Streams,
    /// Tables this sink's own connection wrote in the open transaction: their snapshot rows
    /// stay on this connection until the commit (a stream would wait on its row locks).
    touched: HashSet<TableId>,
    /// The open transaction changed the schema: streams wait for the commit (they would not
    /// see a new table, and would wait on the lock of an altered one).
    ddl_in_txn: bool,
    /// Tables where a stream's direct COPY met a key already there (merge from now on).
    merged: HashSet<TableId>,
    /// Stream jobs that gave up a lock wait, to run again when the streams settle.
    retry: Vec<side::Job>,
    /// Per table, fingerprints of the keys in stream jobs not yet committed: a job with one
    /// of them waits for the streams to settle first, so two uncommitted jobs never hold the
    /// same key (one would wait on the other, and a retry could reorder them).
    inflight: weir_api::FastMap<TableId, weir_api::FastSet<u64>>,
    key_hasher: weir_api::FastHasher,
}

impl Drop for PostgresSink {
    fn drop(&mut self) {
        // Closing the connections rolls back open transactions at the server.
        self.streams.abort();
        self.connection.abort();
    }
}

impl PostgresSink {
    /// Connects, prepares `_weir.positions` and the target schema.
    pub async fn connect(cfg: PostgresSinkConfig, ctx: SinkContext) -> Result<Self> {
        let label = format!("postgres sink {}", ctx.sink);
        let url = parse_url(&cfg.url).map_err(|e| {
            ConnectorError::definite(scrub(
                format!(
                    "{label}: bad url {}: {e}; write it as postgres://user:password@host:port/database",
                    redacted_url(&cfg.url)
                ),
                &[raw_password(&cfg.url).unwrap_or("").to_string()],
            ))
        })?;
        let secrets = vec![
            url.password.clone().unwrap_or_default(),
            raw_password(&cfg.url).unwrap_or("").to_string(),
        ];
        let where_ = format!(
            "{}:{} (database {:?}, user {:?})",
            url.host, url.port, url.database, url.user
        );
        let streams = side::Streams::new(
            sql_config(&url),
            format!("{SESSION_SQL}; SET lock_timeout = '{STREAM_LOCK_TIMEOUT}'"),
            cfg.copy_streams,
        );
        let (client, connection) = sql_config(&url)
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| {
                let msg = scrub(
                    format!(
                        "{label}: cannot connect to PostgreSQL at {where_}: {}; check the url, \
                         that the server runs and that pg_hba.conf lets this user in",
                        describe(&e)
                    ),
                    &secrets,
                );
                let definite = matches!(
                    e.code().map(|c| c.code()),
                    Some("28P01" | "28000" | "3D000" | "42501")
                );
                if definite {
                    ConnectorError::definite_from(msg, e)
                } else {
                    ConnectorError::transient_from(msg, e)
                }
            })?;
        let conn_label = label.clone();
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(sink = %conn_label, error = %describe(&e), "target connection ended");
            }
        });
        let pg_source = ctx.source.connector == "postgres";
        let mut sink = PostgresSink {
            cfg,
            label,
            conn: Conn {
                client,
                statements: HashMap::new(),
            },
            connection,
            pg_source,
            can_temp: false,
            applied: None,
            high: None,
            in_txn: false,
            broken: false,
            tables: weir_api::FastMap::new(),
            targets: HashMap::new(),
            schemas_ready: HashSet::new(),
            rows: 0,
            bytes: 0,
            warned: HashSet::new(),
            scratch: String::new(),
            stage_seq: 0,
            streams,
            touched: HashSet::new(),
            ddl_in_txn: false,
            merged: HashSet::new(),
            retry: Vec::new(),
            inflight: weir_api::FastMap::new(),
            key_hasher: weir_api::FastHasher::default(),
            ctx,
        };
        sink.setup().await?;
        Ok(sink)
    }

    async fn setup(&mut self) -> Result<()> {
        self.conn
            .client
            .batch_execute(SESSION_SQL)
            .await
            .map_err(|e| self.pg_error(e, "setting up the session"))?;
        self.ensure_schema("_weir").await?;
        self.conn
            .client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS _weir.positions (pipeline text NOT NULL, \
                 sink text NOT NULL, seq bigint, updated_at timestamptz NOT NULL DEFAULT now(), \
                 PRIMARY KEY (pipeline, sink))",
            )
            .await
            .or_else(|e| if is_duplicate(&e) { Ok(()) } else { Err(e) })
            .map_err(|e| self.pg_error(e, "creating _weir.positions"))?;
        self.conn
            .client
            .execute(
                "INSERT INTO _weir.positions (pipeline, sink, seq) VALUES ($1, $2, NULL) \
                 ON CONFLICT (pipeline, sink) DO NOTHING",
                &[&self.ctx.pipeline, &self.ctx.sink],
            )
            .await
            .map_err(|e| self.pg_error(e, "registering the sink in _weir.positions"))?;
        if !self.cfg.schema.contains("{schema}") {
            let schema = self.cfg.schema.clone();
            self.ensure_schema(&schema).await?;
        }
        self.can_temp = self
            .conn
            .client
            .query_one(
                "SELECT has_database_privilege(current_database(), 'TEMP')",
                &[],
            )
            .await
            .ok()
            .and_then(|r| r.try_get::<_, bool>(0).ok())
            .unwrap_or(false);
        self.applied = self.read_position().await?;
        self.high = self.applied;
        Ok(())
    }

    async fn ensure_schema(&mut self, schema: &str) -> Result<()> {
        if self.schemas_ready.contains(schema) {
            return Ok(());
        }
        let exists: bool = self
            .conn
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
                &[&schema],
            )
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.pg_error(e, &format!("looking up schema {schema:?}")))?;
        if !exists {
            let sql = format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(schema));
            // Inside an open transaction a failed statement would abort it; the race with
            // another sink creating the schema is only possible outside one.
            if let Err(e) = self.conn.client.batch_execute(&sql).await
                && (!is_duplicate(&e) || self.in_txn)
            {
                return Err(self.pg_error(e, &format!("creating schema {schema:?}")));
            }
        }
        self.schemas_ready.insert(schema.to_string());
        Ok(())
    }

    async fn read_position(&mut self) -> Result<Option<u64>> {
        let row = self
            .conn
            .client
            .query_opt(
                "SELECT seq FROM _weir.positions WHERE pipeline = $1 AND sink = $2",
                &[&self.ctx.pipeline, &self.ctx.sink],
            )
            .await
            .map_err(|e| self.pg_error(e, "reading the applied position"))?;
        let seq: Option<i64> = match row {
            Some(r) => r
                .try_get(0)
                .map_err(|e| self.pg_error(e, "reading the applied position"))?,
            None => None,
        };
        seq.map(|s| {
            u64::try_from(s).map_err(|_| {
                ConnectorError::definite(format!(
                    "{}: _weir.positions holds a negative position {s} for pipeline {:?}; \
                     delete that row only if the target is to be rebuilt from the log",
                    self.label, self.ctx.pipeline
                ))
            })
        })
        .transpose()
    }

    /// An error of the target, classified; `what` says what the sink was doing.
    fn pg_error(&self, e: tokio_postgres::Error, what: &str) -> ConnectorError {
        let msg = format!("{}: {what}: {}", self.label, describe(&e));
        if is_transient(&e) {
            ConnectorError::transient_from(
                format!("{msg}; will reconnect and resume from the last applied commit"),
                e,
            )
        } else {
            let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
            let column = e
                .as_db_error()
                .and_then(|d| d.column())
                .map(|c| format!(" (column {c:?})"))
                .unwrap_or_default();
            ConnectorError::definite_from(format!("{msg}{column}; {}", advice(&code)), e)
        }
    }

    async fn begin(&mut self) -> Result<()> {
        if self.in_txn {
            return Ok(());
        }
        let sql = format!(
            "BEGIN; SELECT seq FROM _weir.positions WHERE pipeline = {} AND sink = {} FOR UPDATE",
            literal(&self.ctx.pipeline),
            literal(&self.ctx.sink)
        );
        let messages = self
            .conn
            .client
            .simple_query(&sql)
            .await
            .map_err(|e| self.pg_error(e, "starting a transaction"))?;
        self.in_txn = true;
        let stored = messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).and_then(|s| s.parse::<u64>().ok())),
            _ => None,
        });
        let stored = stored.flatten();
        if stored != self.applied {
            return Err(ConnectorError::transient(format!(
                "{}: the position in _weir.positions moved from {:?} to {:?} under this sink \
                 (is another weir process applying pipeline {:?} sink {:?}?); resuming from \
                 the stored position",
                self.label, self.applied, stored, self.ctx.pipeline, self.ctx.sink
            )));
        }
        Ok(())
    }

    async fn commit(&mut self, seq: u64) -> Result<()> {
        self.flush_all().await?;
        self.settle().await?;
        let seq_i = i64::try_from(seq).map_err(|_| {
            ConnectorError::definite(format!(
                "{}: log sequence {seq} does not fit a bigint",
                self.label
            ))
        })?;
        let sql = format!(
            "INSERT INTO _weir.positions (pipeline, sink, seq) VALUES ({p}, {s}, {seq_i}) \
             ON CONFLICT (pipeline, sink) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now(); \
             COMMIT",
            p = literal(&self.ctx.pipeline),
            s = literal(&self.ctx.sink),
        );
        self.conn
            .client
            .batch_execute(&sql)
            .await
            .map_err(|e| self.pg_error(e, &format!("committing up to log sequence {seq}")))?;
        self.in_txn = false;
        self.touched.clear();
        self.ddl_in_txn = false;
        self.applied = Some(seq);
        Ok(())
    }

    /// Before this sink's own connection writes `table` (or, with `None`, changes the
    /// schema): waits for the copy streams and commits them, so that statement neither waits
    /// on their locks nor misses their rows.
    async fn claim(&mut self, table: Option<&TableId>) -> Result<()> {
        self.settle().await?;
        match table {
            Some(t) => {
                if !self.touched.contains(t) {
                    self.touched.insert(t.clone());
                }
            }
            None => self.ddl_in_txn = true,
        }
        Ok(())
    }

    /// Waits for every copy stream's jobs and commits their transactions; jobs that gave up
    /// a lock wait run once more after that.
    async fn settle(&mut self) -> Result<()> {
        let mut retries = std::mem::take(&mut self.retry);
        for round in 0.. {
            let mut again = Vec::new();
            for job in retries.drain(..) {
                match self.streams.submit(job).await {
                    Ok(Some(d)) => again.extend(self.stream_done(d).await?),
                    Ok(None) => {}
                    Err(e) => return Err(self.stream_error(e, "loading snapshot rows")),
                }
            }
            if !self.streams.active() {
                break;
            }
            let done = match self.streams.join().await {
                Ok(d) => d,
                Err(e) => return Err(self.stream_error(e, "loading snapshot rows")),
            };
            for d in done {
                again.extend(self.stream_done(d).await?);
            }
            if let Err(e) = self.streams.commit().await {
                return Err(self.stream_error(e, "committing snapshot rows"));
            }
            self.inflight.clear();
            if again.is_empty() {
                break;
            }
            if round >= 2 {
                self.streams.abort();
                return Err(ConnectorError::transient(format!(
                    "{}: loading snapshot rows into {} gave up a lock wait three times (another \
                     session holds a lock on the table); will retry",
                    self.label, again[0].display
                )));
            }
            retries = again;
        }
        Ok(())
    }

    /// Handles a finished copy-stream job; returns it when it must run again.
    async fn stream_done(&mut self, done: side::Done) -> Result<Option<side::Job>> {
        match done.outcome {
            side::Outcome::Copied => Ok(None),
            side::Outcome::Merged => {
                self.merged.insert(done.job.table);
                Ok(None)
            }
            side::Outcome::LockTimeout => Ok(Some(done.job)),
            side::Outcome::Failed(e) => {
                self.streams.abort();
                self.inflight.clear();
                let job = done.job;
                let rows: Vec<&[Cell]> = job.rows.iter().map(Vec::as_slice).collect();
                let all: Vec<usize> = (0..job.cols.len()).collect();
                Err(self
                    .value_error(
                        &job.display,
                        &job.cols,
                        e,
                        &format!("copying rows into {}", job.display),
                        &rows,
                        &all,
                    )
                    .await)
            }
        }
    }

    fn stream_error(&mut self, e: side::StreamError, what: &str) -> ConnectorError {
        self.streams.abort();
        self.inflight.clear();
        match e {
            side::StreamError::Pg(e) => self.pg_error(e, &format!("{what} (copy stream)")),
            side::StreamError::Task(m) => self.internal(&format!("copy stream: {m}")),
        }
    }

    async fn apply_inner(&mut self, entries: &[LogEntry]) -> Result<()> {
        let last_commit = entries
            .iter()
            .rposition(|e| matches!(e.entry, Entry::Commit(_)) && Some(e.seq) > self.high);
        for (i, e) in entries.iter().enumerate() {
            if Some(e.seq) <= self.high {
                continue;
            }
            self.begin().await?;
            self.high = Some(e.seq);
            match &e.entry {
                Entry::Schema(schema) => {
                    self.table(schema).await?;
                }
                Entry::Change(ev, schema) => self.change(ev, schema).await?,
                Entry::Commit(_) => {
                    if Some(i) == last_commit {
                        self.commit(e.seq).await?;
                    }
                }
            }
            if self.rows >= self.cfg.batch_rows.max(1) || self.bytes >= self.cfg.batch_bytes {
                self.flush_all().await?;
            }
        }
        // The head of an unfinished transaction goes into the open target transaction now,
        // so nothing waits in memory between calls.
        self.flush_all().await
    }

    /// Target (schema, table) of a source table.
    fn target_of(&self, t: &TableId) -> (String, String) {
        let schema = self.cfg.schema.replace("{schema}", &t.schema);
        let name = self
            .cfg
            .tables
            .get(&format!("{}.{}", t.schema, t.name))
            .cloned()
            .unwrap_or_else(|| t.name.clone());
        (schema, name)
    }

    /// Makes sure the table state follows `schema` (creating or altering the target table).
    async fn table(&mut self, schema: &Arc<TableSchema>) -> Result<()> {
        if let Some(st) = self.tables.get(&schema.table) {
            if Arc::ptr_eq(&st.schema, schema) || st.schema.as_ref() == schema.as_ref() {
                return Ok(());
            }
            if st.schema.same_shape(schema) {
                if let Some(st) = self.tables.get_mut(&schema.table) {
                    st.schema = schema.clone();
                }
                return Ok(());
            }
            self.flush_table(&schema.table).await?;
        }
        let (tschema, tname) = self.target_of(&schema.table);
        if let Some(other) = self.targets.get(&(tschema.clone(), tname.clone()))
            && *other != schema.table
        {
            return Err(ConnectorError::definite(format!(
                "{}: source tables {other} and {} both map to target table {tschema}.{tname}; \
                 set schema = \"{{schema}}\" or rename one in the sink's `tables`",
                self.label, schema.table
            )));
        }
        self.ensure_schema(&tschema).await?;
        let prev = self.tables.remove(&schema.table);
        let st = self.open_table(schema, &tschema, &tname, prev).await?;
        self.targets.insert((tschema, tname), schema.table.clone());
        self.tables.insert(schema.table.clone(), st);
        Ok(())
    }

    async fn catalog(&mut self, schema: &str, table: &str) -> Result<Option<Vec<CatalogCol>>> {
        let what = || format!("reading the columns of {schema}.{table}");
        let rel = self
            .conn
            .client
            .query_opt(
                "SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n \
                 ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
                &[&schema, &table],
            )
            .await
            .map_err(|e| self.pg_error(e, &what()))?;
        let Some(rel) = rel else { return Ok(None) };
        let oid: u32 = rel.try_get(0).map_err(|e| self.pg_error(e, &what()))?;
        let rows = self
            .conn
            .client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, -1), \
                 format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                 EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = a.attrelid \
                 AND i.indisprimary AND a.attnum = ANY (i.indkey)) \
                 FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 \
                 AND NOT a.attisdropped ORDER BY a.attnum",
                &[&oid],
            )
            .await
            .map_err(|e| self.pg_error(e, &what()))?;
        let mut cols = Vec::with_capacity(rows.len());
        for r in rows {
            let get = |i| r.try_get::<_, String>(i);
            cols.push(CatalogCol {
                name: get(0).map_err(|e| self.pg_error(e, &what()))?,
                base: get(1).map_err(|e| self.pg_error(e, &what()))?,
                full: get(2).map_err(|e| self.pg_error(e, &what()))?,
                not_null: r.try_get(3).map_err(|e| self.pg_error(e, &what()))?,
                in_pk: r.try_get(4).map_err(|e| self.pg_error(e, &what()))?,
            });
        }
        Ok(Some(cols))
    }

    async fn ddl(&mut self, sql: &str, what: &str) -> Result<()> {
        self.claim(None).await?;
        tracing::info!(sink = %self.label, statement = %sql, "changing the target schema");
        self.conn
            .client
            .batch_execute(sql)
            .await
            .map_err(|e| self.pg_error(e, what))
    }

    async fn open_table(
        &mut self,
        schema: &Arc<TableSchema>,
        tschema: &str,
        tname: &str,
        prev: Option<TableState>,
    ) -> Result<TableState> {
        let qualified = format!("{}.{}", quote_ident(tschema), quote_ident(tname));
        let shown = format!("{tschema}.{tname}");
        let want: Vec<String> = schema
            .columns
            .iter()
            .map(|c| mapping::target_type(c, self.pg_source))
            .collect();
        let mut copy_direct = prev.as_ref().and_then(|p| p.copy_direct);
        let mut catalog = self.catalog(tschema, tname).await?;
        if catalog.is_none() {
            let mut sql = format!("CREATE TABLE IF NOT EXISTS {qualified} (");
            for (i, (col, ty)) in schema.columns.iter().zip(&want).enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let key = schema.primary_key.contains(&i);
                let lossy_dates = !self.pg_source
                    && matches!(
                        col.ty,
                        weir_api::ColumnType::Date
                            | weir_api::ColumnType::Timestamp
                            | weir_api::ColumnType::TimestampTz
                    );
                let not_null = key || (!col.nullable && !lossy_dates);
                let _ = write!(
                    sql,
                    "{} {ty}{}",
                    quote_ident(&col.name),
                    if not_null { " NOT NULL" } else { "" }
                );
            }
            if !schema.primary_key.is_empty() {
                let keys: Vec<String> = schema.key_names().map(quote_ident).collect();
                let _ = write!(sql, ", PRIMARY KEY ({})", keys.join(", "));
            }
            sql.push(')');
            self.ddl(&sql, &format!("creating table {shown}")).await?;
            copy_direct = Some(true);
            catalog = self.catalog(tschema, tname).await?;
        } else if let Some(existing) = &catalog {
            let mut altered = false;
            for (col, ty) in schema.columns.iter().zip(&want) {
                match existing.iter().find(|c| c.name == col.name) {
                    None => {
                        let sql = format!(
                            "ALTER TABLE {qualified} ADD COLUMN IF NOT EXISTS {} {ty}",
                            quote_ident(&col.name)
                        );
                        self.ddl(&sql, &format!("adding column {:?} to {shown}", col.name))
                            .await?;
                        altered = true;
                    }
                    Some(c) if c.full != *ty => {
                        if mapping::is_widening(&c.full, ty) {
                            let sql = format!(
                                "ALTER TABLE {qualified} ALTER COLUMN {q} TYPE {ty} USING {q}::{ty}",
                                q = quote_ident(&col.name)
                            );
                            self.ddl(
                                &sql,
                                &format!(
                                    "widening column {:?} of {shown} from {} to {ty}",
                                    col.name, c.full
                                ),
                            )
                            .await?;
                            altered = true;
                        } else if self
                            .warned
                            .insert((schema.table.clone(), format!("type {}", col.name)))
                        {
                            tracing::warn!(
                                sink = %self.label, table = shown.as_str(), column = %col.name,
                                target_type = %c.full, source_type = %ty,
                                "target column type differs from the source's and the change is not a widening; keeping the target type"
                            );
                        }
                    }
                    Some(_) => {}
                }
            }
            for c in existing {
                let in_source = schema.columns.iter().any(|s| s.name == c.name);
                if !in_source && c.not_null && !c.in_pk {
                    let sql = format!(
                        "ALTER TABLE {qualified} ALTER COLUMN {} DROP NOT NULL",
                        quote_ident(&c.name)
                    );
                    self.ddl(
                        &sql,
                        &format!(
                            "making column {:?} of {shown} (not at the source any more) nullable",
                            c.name
                        ),
                    )
                    .await?;
                    altered = true;
                }
            }
            if altered {
                catalog = self.catalog(tschema, tname).await?;
            }
        }
        let catalog = catalog.ok_or_else(|| {
            ConnectorError::definite(format!(
                "{}: table {shown} is missing right after creating it; check for an event \
                 trigger or a concurrent DROP",
                self.label
            ))
        })?;
        let mut cols = Vec::with_capacity(schema.columns.len());
        for col in &schema.columns {
            let c = catalog.iter().find(|c| c.name == col.name).ok_or_else(|| {
                ConnectorError::definite(format!(
                    "{}: column {:?} is missing from {shown} right after adding it",
                    self.label, col.name
                ))
            })?;
            cols.push(TargetCol {
                name: col.name.clone(),
                quoted: quote_ident(&col.name),
                base: c.base.clone(),
            });
        }
        self.stage_seq += 1;
        Ok(TableState {
            schema: schema.clone(),
            qualified,
            display: shown,
            cols,
            changes: KeyedChanges::default(),
            inserts: Vec::new(),
            rows: 0,
            bytes: 0,
            copy_direct,
            stage: None,
            stage_id: self.stage_seq,
        })
    }

    /// Converts a row of `schema` to cells.
    fn cells(&mut self, schema: &TableSchema, row: &Row) -> Result<Vec<Cell>> {
        if row.0.len() != schema.columns.len() {
            return Err(ConnectorError::definite(format!(
                "{}: a row of {} has {} values for {} columns (schema version {}); the staging \
                 log is inconsistent, re-snapshot the table",
                self.label,
                schema.table,
                row.0.len(),
                schema.columns.len(),
                schema.version
            )));
        }
        let mut out = Vec::with_capacity(row.0.len());
        for (v, col) in row.0.iter().zip(&schema.columns) {
            let mut conv = Conversion::default();
            let c = mapping::cell(v, &mut conv, &mut self.scratch).map_err(|e| {
                ConnectorError::definite(format!(
                    "{}: table {} column {:?}: {e}; PostgreSQL cannot store this value, change \
                     it at the source or exclude the table",
                    self.label, schema.table, col.name
                ))
            })?;
            if conv.zero_dates > 0 {
                ZERO_DATES.fetch_add(conv.zero_dates, Ordering::Relaxed);
                if self
                    .warned
                    .insert((schema.table.clone(), format!("zero {}", col.name)))
                {
                    tracing::warn!(
                        sink = %self.label, table = %schema.table, column = %col.name,
                        "a zero date (e.g. 0000-00-00) cannot be stored in PostgreSQL; writing NULL (counted in zero_dates_nulled)"
                    );
                }
            }
            out.push(c);
        }
        Ok(out)
    }

    fn key_of(&self, schema: &TableSchema, cells: &[Cell]) -> Result<Vec<Cell>> {
        schema
            .primary_key
            .iter()
            .map(|&i| match cells.get(i) {
                Some(c @ (Cell::Short(_) | Cell::Text(_))) => Ok(c.clone()),
                _ => Err(ConnectorError::definite(format!(
                    "{}: a change to {} has no value for key column {:?}; the source must send \
                     the key of every changed row",
                    self.label,
                    schema.table,
                    schema
                        .columns
                        .get(i)
                        .map(|c| c.name.as_str())
                        .unwrap_or("?")
                ))),
            })
            .collect()
    }

    async fn change(&mut self, ev: &ChangeEvent, schema: &Arc<TableSchema>) -> Result<()> {
        self.table(schema).await?;
        let missing = |what: &str| {
            ConnectorError::definite(format!(
                "{}: a {} change to {} carries no {what} row; the staging log is inconsistent",
                self.label,
                ev.op.code(),
                ev.table
            ))
        };
        let keyless = schema.primary_key.is_empty();
        match ev.op {
            Op::Truncate => {
                let st = self.state(&schema.table)?;
                let (rows, bytes) = (st.rows, st.bytes);
                st.changes.clear();
                st.inserts.clear();
                st.rows = 0;
                st.bytes = 0;
                st.copy_direct = Some(true);
                let sql = format!("TRUNCATE TABLE {}", st.qualified);
                let display = st.display.clone();
                self.rows -= rows;
                self.bytes -= bytes;
                self.merged.remove(&schema.table);
                self.claim(Some(&schema.table)).await?;
                self.conn
                    .client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| self.pg_error(e, &format!("truncating {display}")))?;
            }
            Op::Insert | Op::Read => {
                let after = ev.after.as_ref().ok_or_else(|| missing("new"))?;
                let cells = self.cells(schema, after)?;
                let size: usize = cells.iter().map(Cell::size).sum();
                if keyless {
                    self.state(&schema.table)?.inserts.push(cells);
                } else {
                    let key = self.key_of(schema, &cells)?;
                    self.state(&schema.table)?
                        .changes
                        .upsert(key, cells, ev.op == Op::Read);
                }
                self.account(&schema.table, size)?;
            }
            Op::Update => {
                let after = ev.after.as_ref().ok_or_else(|| missing("new"))?;
                let new = self.cells(schema, after)?;
                let old = match &ev.before {
                    Some(b) => Some(self.cells(schema, b)?),
                    None => None,
                };
                if keyless {
                    let old = old.ok_or_else(|| self.no_old_row(&ev.table))?;
                    self.flush_table(&schema.table).await?;
                    return self.keyless_update(&schema.table, &old, &new).await;
                }
                let size: usize = new.iter().map(Cell::size).sum();
                let new_key = self.key_of(schema, &new)?;
                let old_key = match &old {
                    Some(o) => Some(self.key_of(schema, o)?),
                    None => None,
                };
                match old_key {
                    Some(old_key) if old_key != new_key => {
                        let st = self.state(&schema.table)?;
                        let mut merged = new;
                        if let Some(img) = st.changes.image(&old_key) {
                            fill_unchanged(&mut merged, img);
                        }
                        if merged.contains(&Cell::Unchanged) {
                            // The new row needs values only the target has: move the row.
                            self.flush_table(&schema.table).await?;
                            return self.move_row(&schema.table, &old_key, &merged).await;
                        }
                        let st = self.state(&schema.table)?;
                        st.changes.delete(old_key);
                        st.changes.upsert(new_key, merged, false);
                    }
                    _ => self
                        .state(&schema.table)?
                        .changes
                        .upsert(new_key, new, false),
                }
                self.account(&schema.table, size)?;
            }
            Op::Delete => {
                let before = ev.before.as_ref().ok_or_else(|| missing("old"))?;
                let old = self.cells(schema, before)?;
                if keyless {
                    self.flush_table(&schema.table).await?;
                    return self.keyless_delete(&schema.table, &old).await;
                }
                let key = self.key_of(schema, &old)?;
                let size = key.iter().map(Cell::size).sum();
                self.state(&schema.table)?.changes.delete(key);
                self.account(&schema.table, size)?;
            }
        }
        Ok(())
    }

    fn no_old_row(&self, table: &TableId) -> ConnectorError {
        ConnectorError::definite(format!(
            "{}: table {table} has no primary key and an update or delete came without the old \
             row, so the target row cannot be found; give the table a primary key or set \
             ALTER TABLE {table} REPLICA IDENTITY FULL at the source, then re-snapshot it",
            self.label
        ))
    }

    fn state(&mut self, t: &TableId) -> Result<&mut TableState> {
        let label = &self.label;
        self.tables.get_mut(t).ok_or_else(|| {
            ConnectorError::definite(format!("{label}: internal: no state for table {t}"))
        })
    }

    fn account(&mut self, t: &TableId, size: usize) -> Result<()> {
        let st = self.state(t)?;
        st.rows += 1;
        st.bytes += size;
        self.rows += 1;
        self.bytes += size;
        Ok(())
    }

    async fn flush_all(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let ids: Vec<TableId> = self
            .tables
            .iter()
            .filter(|(_, st)| st.rows > 0)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.flush_table(&id).await?;
        }
        Ok(())
    }

    async fn flush_table(&mut self, id: &TableId) -> Result<()> {
        let Some(mut st) = self.tables.remove(id) else {
            return Ok(());
        };
        let result = self.flush_state(&mut st).await;
        self.rows -= st.rows;
        self.bytes -= st.bytes;
        st.rows = 0;
        st.bytes = 0;
        self.tables.insert(id.clone(), st);
        result
    }

    async fn flush_state(&mut self, st: &mut TableState) -> Result<()> {
        if st.rows == 0 {
            return Ok(());
        }
        if self.merged.remove(&st.schema.table) {
            st.copy_direct = Some(false);
        }
        let inserts = std::mem::take(&mut st.inserts);
        let ops = st.changes.take();
        if inserts.is_empty() && self.streamable(st, &ops) {
            if st.copy_direct.is_none() {
                self.check_empty(st).await?;
            }
            let rows = ops.into_iter().filter_map(|o| o.image).collect();
            return self.stream_rows(st, rows).await;
        }
        self.claim(Some(&st.schema.table)).await?;
        if !inserts.is_empty() {
            let rows: Vec<&[Cell]> = inserts.iter().map(Vec::as_slice).collect();
            st.copy_direct = Some(false);
            if rows.len() >= STAGE_MIN_ROWS {
                self.copy_into(st, &st.qualified.clone(), &rows).await?;
            } else {
                self.insert_unnest(st, &rows, false).await?;
            }
        }
        if ops.is_empty() {
            return Ok(());
        }
        // 1. Deletes (also of keys inserted again afterwards).
        let deletes: Vec<&Vec<Cell>> = ops.iter().filter(|o| o.delete).map(|o| &o.key).collect();
        if !deletes.is_empty() {
            st.copy_direct = Some(false);
            self.delete_keys(st, &deletes).await?;
        }
        // 2. Full rows.
        let full: Vec<&[Cell]> = ops
            .iter()
            .filter_map(|o| o.image.as_deref())
            .filter(|img| !img.contains(&Cell::Unchanged))
            .collect();
        if !full.is_empty() {
            let all_read = ops.iter().all(|o| o.read);
            self.upsert_rows(st, &full, all_read).await?;
        }
        // 3. Rows with unchanged-TOAST columns: update the present columns only.
        let mut groups: BTreeMap<Vec<bool>, Vec<&[Cell]>> = BTreeMap::new();
        for img in ops
            .iter()
            .filter_map(|o| o.image.as_deref())
            .filter(|img| img.contains(&Cell::Unchanged))
        {
            let mask = img.iter().map(|c| *c != Cell::Unchanged).collect();
            groups.entry(mask).or_default().push(img);
        }
        if !groups.is_empty() {
            st.copy_direct = Some(false);
        }
        for (mask, rows) in groups {
            self.update_present(st, &mask, &rows).await?;
        }
        Ok(())
    }

    /// Builds `unnest($1::text[], ...) AS weir_u(c0, ...)` over `n` columns.
    fn unnest_from(n: usize) -> String {
        let params: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
        let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        format!(
            "unnest({}) AS weir_u({})",
            params.join(", "),
            names.join(", ")
        )
    }

    fn arrays<'a>(rows: &[&'a [Cell]], cols: &[usize]) -> Vec<Vec<Option<&'a str>>> {
        cols.iter()
            .map(|&i| {
                rows.iter()
                    .map(|r| r.get(i).and_then(Cell::as_param))
                    .collect()
            })
            .collect()
    }

    fn key_cols(st: &TableState) -> Vec<String> {
        st.schema
            .primary_key
            .iter()
            .filter_map(|&i| st.cols.get(i))
            .map(|c| c.quoted.clone())
            .collect()
    }

    async fn delete_keys(&mut self, st: &TableState, keys: &[&Vec<Cell>]) -> Result<()> {
        let key = &st.schema.primary_key;
        let mut cond = Vec::with_capacity(key.len());
        for (j, &i) in key.iter().enumerate() {
            let c = st.cols.get(i).ok_or_else(|| self.internal("key column"))?;
            cond.push(format!("weir_t.{} = weir_u.c{j}::{}", c.quoted, c.base));
        }
        let sql = format!(
            "DELETE FROM {} AS weir_t USING {} WHERE {}",
            st.qualified,
            Self::unnest_from(key.len()),
            cond.join(" AND ")
        );
        let arrays: Vec<Vec<Option<&str>>> = (0..key.len())
            .map(|j| {
                keys.iter()
                    .map(|k| k.get(j).and_then(Cell::as_param))
                    .collect()
            })
            .collect();
        self.conn
            .exec_arrays(&sql, &arrays)
            .await
            .map_err(|e| self.pg_error(e, &format!("deleting rows of {}", st.display)))?;
        Ok(())
    }

    /// Full rows: direct COPY into an empty table (snapshot reads), COPY + merge for many
    /// rows, else an `unnest` upsert.
    async fn upsert_rows(
        &mut self,
        st: &mut TableState,
        rows: &[&[Cell]],
        all_read: bool,
    ) -> Result<()> {
        if !all_read {
            st.copy_direct = Some(false);
        } else if st.copy_direct.is_none() {
            self.check_empty(st).await?;
        }
        if all_read && st.copy_direct == Some(true) {
            self.conn
                .client
                .batch_execute("SAVEPOINT weir_copy")
                .await
                .map_err(|e| self.pg_error(e, "setting a savepoint"))?;
            let target = st.qualified.clone();
            match self.copy_raw(st, &target, rows).await {
                Ok(_) => {
                    self.conn
                        .client
                        .batch_execute("RELEASE SAVEPOINT weir_copy")
                        .await
                        .map_err(|e| self.pg_error(e, "releasing a savepoint"))?;
                    return Ok(());
                }
                Err(e) if e.code().map(|c| c.code()) == Some("23505") => {
                    self.conn
                        .client
                        .batch_execute(
                            "ROLLBACK TO SAVEPOINT weir_copy; RELEASE SAVEPOINT weir_copy",
                        )
                        .await
                        .map_err(|e| self.pg_error(e, "rolling back to a savepoint"))?;
                    st.copy_direct = Some(false);
                }
                Err(e) => {
                    let all: Vec<usize> = (0..st.cols.len()).collect();
                    return Err(self
                        .value_error(
                            &st.display,
                            &st.cols,
                            e,
                            &format!("copying rows into {}", st.display),
                            rows,
                            &all,
                        )
                        .await);
                }
            }
        }
        // Streamed upserts measured at least as fast with `unnest` as with COPY + merge, so
        // the stage is for large snapshot chunks into non-empty tables only.
        if all_read && rows.len() >= STAGE_MIN_ROWS && self.can_temp {
            return self.merge_via_stage(st, rows).await;
        }
        self.insert_unnest(st, rows, true).await
    }

    /// Whether `st.schema.table` is empty (then snapshot rows go in by direct COPY).
    async fn check_empty(&mut self, st: &mut TableState) -> Result<()> {
        let sql = format!("SELECT NOT EXISTS (SELECT 1 FROM {})", st.qualified);
        let empty: bool = self
            .conn
            .client
            .query_one(&sql, &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.pg_error(e, &format!("checking whether {} is empty", st.display)))?;
        st.copy_direct = Some(empty);
        Ok(())
    }

    /// Whether a flush of `ops` goes to a copy stream: many snapshot rows and nothing else,
    /// into a table this connection has not written in its open transaction, with no schema
    /// change in that transaction.
    fn streamable(&self, st: &TableState, ops: &[PendingOp<Vec<Cell>, Cell>]) -> bool {
        self.streams.enabled()
            && self.can_temp
            && !self.ddl_in_txn
            && ops.len() >= STAGE_MIN_ROWS
            && !self.touched.contains(&st.schema.table)
            && ops.iter().all(|o| {
                o.read
                    && !o.delete
                    && o.image
                        .as_ref()
                        .is_some_and(|i| !i.contains(&Cell::Unchanged))
            })
    }

    /// Hands snapshot rows of one table to a copy stream.
    async fn stream_rows(&mut self, st: &TableState, rows: Vec<Vec<Cell>>) -> Result<()> {
        let keys: Vec<u64> = rows
            .iter()
            .map(|r| {
                let mut h = self.key_hasher.build_hasher();
                for &i in &st.schema.primary_key {
                    r.get(i).hash(&mut h);
                }
                h.finish()
            })
            .collect();
        let overlaps = self
            .inflight
            .get(&st.schema.table)
            .is_some_and(|set| keys.iter().any(|k| set.contains(k)));
        if overlaps {
            self.settle().await?;
        }
        match self.inflight.get_mut(&st.schema.table) {
            Some(set) => set.extend(keys),
            None => {
                self.inflight
                    .insert(st.schema.table.clone(), keys.into_iter().collect());
            }
        }
        let names: Vec<&str> = st.cols.iter().map(|c| c.quoted.as_str()).collect();
        let cols = names.join(", ");
        let stage = format!("pg_temp.weir_stage_{}", st.stage_id);
        let job = side::Job {
            table: st.schema.table.clone(),
            display: st.display.clone(),
            cols: st.cols.clone(),
            direct: st.copy_direct == Some(true),
            copy_sql: format!("COPY {} ({cols}) FROM STDIN", st.qualified),
            stage_sql: format!(
                "CREATE TEMP TABLE IF NOT EXISTS weir_stage_{} AS SELECT {cols} FROM {} WITH NO DATA",
                st.stage_id, st.qualified
            ),
            stage_copy_sql: format!("COPY {stage} ({cols}) FROM STDIN"),
            merge_sql: format!(
                "INSERT INTO {} ({cols}) SELECT {cols} FROM {stage}{}; TRUNCATE {stage}",
                st.qualified,
                Self::conflict_clause(st),
            ),
            rows,
        };
        match self.streams.submit(job).await {
            Ok(Some(done)) => {
                if let Some(job) = self.stream_done(done).await? {
                    // A lock wait given up: runs again when the streams settle.
                    self.retry.push(job);
                }
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(self.stream_error(e, "loading snapshot rows")),
        }
    }

    fn conflict_clause(st: &TableState) -> String {
        let keys = Self::key_cols(st);
        let set: Vec<String> = st
            .cols
            .iter()
            .enumerate()
            .filter(|(i, _)| !st.schema.primary_key.contains(i))
            .map(|(_, c)| format!("{q} = EXCLUDED.{q}", q = c.quoted))
            .collect();
        if set.is_empty() {
            format!(" ON CONFLICT ({}) DO NOTHING", keys.join(", "))
        } else {
            format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                keys.join(", "),
                set.join(", ")
            )
        }
    }

    async fn insert_unnest(
        &mut self,
        st: &TableState,
        rows: &[&[Cell]],
        upsert: bool,
    ) -> Result<()> {
        let names: Vec<&str> = st.cols.iter().map(|c| c.quoted.as_str()).collect();
        let casts: Vec<String> = st
            .cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("weir_u.c{i}::{}", c.base))
            .collect();
        let mut sql = format!(
            "INSERT INTO {} ({}) SELECT {} FROM {}",
            st.qualified,
            names.join(", "),
            casts.join(", "),
            Self::unnest_from(st.cols.len())
        );
        if upsert {
            sql.push_str(&Self::conflict_clause(st));
        }
        let all: Vec<usize> = (0..st.cols.len()).collect();
        let arrays = Self::arrays(rows, &all);
        let result = self.conn.exec_arrays(&sql, &arrays).await;
        drop(arrays);
        if let Err(e) = result {
            return Err(self
                .value_error(
                    &st.display,
                    &st.cols,
                    e,
                    &format!("writing rows into {}", st.display),
                    rows,
                    &all,
                )
                .await);
        }
        Ok(())
    }

    /// A text COPY of `rows` (all columns) into `target`.
    async fn copy_raw(
        &mut self,
        st: &TableState,
        target: &str,
        rows: &[&[Cell]],
    ) -> std::result::Result<u64, tokio_postgres::Error> {
        let names: Vec<&str> = st.cols.iter().map(|c| c.quoted.as_str()).collect();
        let sql = format!("COPY {target} ({}) FROM STDIN", names.join(", "));
        self.conn.copy(&sql, rows.iter().copied()).await
    }

    async fn copy_into(&mut self, st: &TableState, target: &str, rows: &[&[Cell]]) -> Result<()> {
        if let Err(e) = self.copy_raw(st, target, rows).await {
            let all: Vec<usize> = (0..st.cols.len()).collect();
            return Err(self
                .value_error(
                    &st.display,
                    &st.cols,
                    e,
                    &format!("copying rows into {}", st.display),
                    rows,
                    &all,
                )
                .await);
        }
        Ok(())
    }

    async fn merge_via_stage(&mut self, st: &mut TableState, rows: &[&[Cell]]) -> Result<()> {
        let names: Vec<&str> = st.cols.iter().map(|c| c.quoted.as_str()).collect();
        let stage = format!("pg_temp.weir_stage_{}", st.stage_id);
        if st.stage.is_none() {
            let sql = format!(
                "CREATE TEMP TABLE IF NOT EXISTS weir_stage_{} AS SELECT {} FROM {} WITH NO DATA",
                st.stage_id,
                names.join(", "),
                st.qualified
            );
            self.conn.client.batch_execute(&sql).await.map_err(|e| {
                self.pg_error(e, &format!("creating a stage table for {}", st.display))
            })?;
            st.stage = Some(stage.clone());
        }
        self.copy_into(st, &stage, rows).await?;
        let sql = format!(
            "INSERT INTO {} ({cols}) SELECT {cols} FROM {stage}{}; TRUNCATE {stage}",
            st.qualified,
            Self::conflict_clause(st),
            cols = names.join(", "),
        );
        self.conn
            .client
            .batch_execute(&sql)
            .await
            .map_err(|e| self.pg_error(e, &format!("merging rows into {}", st.display)))
    }

    async fn update_present(
        &mut self,
        st: &TableState,
        mask: &[bool],
        rows: &[&[Cell]],
    ) -> Result<()> {
        let key = &st.schema.primary_key;
        let present: Vec<usize> = (0..st.cols.len())
            .filter(|i| mask.get(*i).copied().unwrap_or(false))
            .collect();
        let set: Vec<String> = present
            .iter()
            .enumerate()
            .filter(|(_, i)| !key.contains(i))
            .filter_map(|(j, &i)| {
                st.cols
                    .get(i)
                    .map(|c| format!("{} = weir_u.c{j}::{}", c.quoted, c.base))
            })
            .collect();
        if set.is_empty() {
            return Ok(());
        }
        let mut cond = Vec::new();
        for &k in key {
            let j = present
                .iter()
                .position(|&i| i == k)
                .ok_or_else(|| self.internal("key column absent"))?;
            let c = st.cols.get(k).ok_or_else(|| self.internal("key column"))?;
            cond.push(format!("weir_t.{} = weir_u.c{j}::{}", c.quoted, c.base));
        }
        let sql = format!(
            "UPDATE {} AS weir_t SET {} FROM {} WHERE {}",
            st.qualified,
            set.join(", "),
            Self::unnest_from(present.len()),
            cond.join(" AND ")
        );
        let arrays = Self::arrays(rows, &present);
        let result = self.conn.exec_arrays(&sql, &arrays).await;
        drop(arrays);
        if let Err(e) = result {
            return Err(self
                .value_error(
                    &st.display,
                    &st.cols,
                    e,
                    &format!("updating rows of {}", st.display),
                    rows,
                    &present,
                )
                .await);
        }
        Ok(())
    }

    /// `col::text IS NOT DISTINCT FROM ($n::text)::type::text` for every known old value.
    fn match_old(
        st: &TableState,
        old: &[Cell],
        first_param: usize,
    ) -> (String, Vec<Option<String>>) {
        let mut cond = Vec::new();
        let mut params = Vec::new();
        for (c, cell) in st.cols.iter().zip(old) {
            if *cell == Cell::Unchanged {
                continue;
            }
            let n = first_param + params.len();
            cond.push(format!(
                "weir_t.{}::text IS NOT DISTINCT FROM (${n}::text)::{}::text",
                c.quoted, c.base
            ));
            params.push(cell.as_param().map(str::to_string));
        }
        if cond.is_empty() {
            cond.push("false".into());
        }
        (cond.join(" AND "), params)
    }

    async fn keyless_delete(&mut self, t: &TableId, old: &[Cell]) -> Result<()> {
        self.claim(Some(t)).await?;
        let st = self
            .tables
            .remove(t)
            .ok_or_else(|| self.internal("table state"))?;
        let (cond, params) = Self::match_old(&st, old, 1);
        let sql = format!(
            "DELETE FROM {q} WHERE ctid = (SELECT ctid FROM {q} AS weir_t WHERE {cond} LIMIT 1)",
            q = st.qualified
        );
        let values: Vec<Option<&str>> = params.iter().map(|p| p.as_deref()).collect();
        let result = self.conn.exec_texts(&sql, &values).await;
        let display = st.display.clone();
        self.tables.insert(t.clone(), st);
        result.map_err(|e| self.pg_error(e, &format!("deleting a row of {display}")))?;
        Ok(())
    }

    async fn keyless_update(&mut self, t: &TableId, old: &[Cell], new: &[Cell]) -> Result<()> {
        self.claim(Some(t)).await?;
        let st = self
            .tables
            .remove(t)
            .ok_or_else(|| self.internal("table state"))?;
        let mut set = Vec::new();
        let mut params: Vec<Option<String>> = Vec::new();
        for (c, cell) in st.cols.iter().zip(new) {
            if *cell == Cell::Unchanged {
                continue;
            }
            params.push(cell.as_param().map(str::to_string));
            set.push(format!(
                "{} = (${}::text)::{}",
                c.quoted,
                params.len(),
                c.base
            ));
        }
        let (cond, more) = Self::match_old(&st, old, params.len() + 1);
        params.extend(more);
        let display = st.display.clone();
        let result = if set.is_empty() {
            Ok(0)
        } else {
            let sql = format!(
                "UPDATE {q} SET {} WHERE ctid = (SELECT ctid FROM {q} AS weir_t WHERE {cond} LIMIT 1)",
                set.join(", "),
                q = st.qualified
            );
            let values: Vec<Option<&str>> = params.iter().map(|p| p.as_deref()).collect();
            self.conn.exec_texts(&sql, &values).await
        };
        self.tables.insert(t.clone(), st);
        result.map_err(|e| self.pg_error(e, &format!("updating a row of {display}")))?;
        Ok(())
    }

    /// An update that changes the key while some columns are unchanged TOAST: one UPDATE
    /// that moves the row and leaves those columns alone.
    async fn move_row(&mut self, t: &TableId, old_key: &[Cell], new: &[Cell]) -> Result<()> {
        self.claim(Some(t)).await?;
        let st = self
            .tables
            .remove(t)
            .ok_or_else(|| self.internal("table state"))?;
        let mut set = Vec::new();
        let mut params: Vec<Option<String>> = Vec::new();
        for (c, cell) in st.cols.iter().zip(new) {
            if *cell == Cell::Unchanged {
                continue;
            }
            params.push(cell.as_param().map(str::to_string));
            set.push(format!(
                "{} = (${}::text)::{}",
                c.quoted,
                params.len(),
                c.base
            ));
        }
        let mut cond = Vec::new();
        for (&i, v) in st.schema.primary_key.iter().zip(old_key) {
            if let Some(c) = st.cols.get(i) {
                params.push(v.as_param().map(str::to_string));
                cond.push(format!(
                    "weir_t.{} = (${}::text)::{}",
                    c.quoted,
                    params.len(),
                    c.base
                ));
            }
        }
        let sql = format!(
            "UPDATE {} AS weir_t SET {} WHERE {}",
            st.qualified,
            set.join(", "),
            cond.join(" AND ")
        );
        let values: Vec<Option<&str>> = params.iter().map(|p| p.as_deref()).collect();
        let result = self.conn.exec_texts(&sql, &values).await;
        let display = st.display.clone();
        self.tables.insert(t.clone(), st);
        result.map_err(|e| self.pg_error(e, &format!("moving a row of {display} to a new key")))?;
        Ok(())
    }

    fn internal(&self, what: &str) -> ConnectorError {
        ConnectorError::definite(format!(
            "{}: internal error ({what}); please report it",
            self.label
        ))
    }

    /// The error of a bulk write; for a value the target rejects, finds the column (the
    /// transaction is rolled back: the sink is rebuilt after an error anyway).
    async fn value_error(
        &mut self,
        display: &str,
        target_cols: &[TargetCol],
        e: tokio_postgres::Error,
        what: &str,
        rows: &[&[Cell]],
        cols: &[usize],
    ) -> ConnectorError {
        let is_data = e.code().is_some_and(|c| c.code().starts_with("22"));
        if !is_data {
            return self.pg_error(e, what);
        }
        let _ = self.conn.client.batch_execute("ROLLBACK").await;
        self.in_txn = false;
        for &i in cols {
            let Some(c) = target_cols.get(i) else {
                continue;
            };
            let values: Vec<Option<&str>> = rows
                .iter()
                .map(|r| r.get(i).and_then(Cell::as_param))
                .collect();
            let sql = format!(
                "SELECT weir_x::{} FROM unnest($1::text[]) AS weir_x",
                c.base
            );
            if let Err(ce) = self.conn.client.query(&sql, &[&values]).await {
                return ConnectorError::definite_from(
                    format!(
                        "{}: table {} column {:?} (type {}) rejects a value: {}; widen the target \
                         column (ALTER TABLE ... ALTER COLUMN ... TYPE ...) or fix the value at \
                         the source, then restart",
                        self.label,
                        display,
                        c.name,
                        c.base,
                        describe(&ce)
                    ),
                    e,
                );
            }
        }
        let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
        ConnectorError::definite_from(
            format!(
                "{}: {what}: {}; {}",
                self.label,
                describe(&e),
                advice(&code)
            ),
            e,
        )
    }
}

/// A row of the catalog query.
struct CatalogCol {
    name: String,
    base: String,
    full: String,
    not_null: bool,
    in_pk: bool,
}

fn is_duplicate(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code().map(|c| c.code()),
        Some("23505" | "42P06" | "42P07" | "42710")
    )
}

#[async_trait]
impl Sink for PostgresSink {
    async fn committed(&mut self) -> Result<Option<u64>> {
        let seq = self.read_position().await?;
        if !self.in_txn {
            self.applied = seq;
            if self.high < seq {
                self.high = seq;
            }
        }
        Ok(seq)
    }

    async fn apply(&mut self, entries: &[LogEntry]) -> Result<()> {
        if self.broken {
            return Err(ConnectorError::transient(format!(
                "{}: an earlier error left the target transaction unusable; rebuild the sink",
                self.label
            )));
        }
        let result = self.apply_inner(entries).await;
        if result.is_err() {
            self.broken = true;
            self.streams.abort();
        }
        result
    }
}
