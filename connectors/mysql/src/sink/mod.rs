//! The MySQL / MariaDB sink: applies the staging log to a MySQL 8 or MariaDB 10.5+
//! database, exactly once, whole source transactions at a time.
//!
//! ```toml
//! [[sinks]]
//! name = "replica"
//! type = "mysql"
//! url = "mysql://weir:${MYSQL_PASSWORD}@127.0.0.1:3306/replica"
//! schema = "replica"        # target database; default: the database in the url
//! # tables = { "public.orders" = "orders_copy" }   # optional renaming
//! # batch_rows = 10000, batch_bytes = 33554432
//! ```
//!
//! # Exactly-once
//!
//! The target holds `_weir.positions (pipeline, sink, seq, updated_at)` (InnoDB), one row per
//! pipeline and sink. Every target transaction starts with `SELECT seq ... FOR UPDATE` on that
//! row (which also fences a second weir process on the same sink: a position that moved under
//! the sink is a transient error) and ends with the row set to the sequence of the last source
//! `Commit` it holds, then `COMMIT`, in one round trip. [`Sink::committed`] reads the row;
//! entries at or below it are skipped, so re-applying changes nothing.
//!
//! # Transactions
//!
//! A target transaction stays open across [`Sink::apply`] calls until a `Commit`; at the end
//! of a call the sink commits at the *last* `Commit` of the batch, so many source transactions
//! share one target transaction, and the head of an unfinished one is written into a new
//! target transaction that stays open into the next call. Readers never see part of a source
//! transaction. The session runs `READ COMMITTED`, `foreign_key_checks = 0` (changes are
//! reduced per key, so their order across tables within one target transaction is not the
//! source's; each commit is consistent again), `time_zone = '+00:00'` and
//! `sql_mode = STRICT_ALL_TABLES,NO_BACKSLASH_ESCAPES,NO_AUTO_VALUE_ON_ZERO,...` — strict, so
//! a value the column cannot hold is an error rather than silently changed, and *without*
//! `NO_ZERO_DATE`/`NO_ZERO_IN_DATE`, so MySQL zero dates (`0000-00-00`, `2024-00-10`)
//! replicate MySQL → MySQL as they are.
//!
//! **DDL commits implicitly in MySQL**, so it never runs inside a data transaction. At the
//! start of every `apply` call the sink looks at every schema in the batch and runs the DDL
//! they need (create database/table, add column, widen, drop NOT NULL) *before* writing any
//! row of the batch: all of that DDL only adds or widens, so running it early is harmless to
//! the earlier rows. When a target transaction is open then, it holds no rows (commit
//! boundary) and is simply committed first — except when a large source transaction that
//! began in an earlier call is still open and a schema change arrives in its middle: then the
//! sink rolls the target transaction back, runs the DDL and returns a transient error; the
//! rebuilt sink resumes from `committed()` and finds the DDL already done (every DDL step is
//! decided by reading the catalog first, so re-running after a crash never fails).
//!
//! **Truncate** (`op = t`) is `DELETE FROM` the table, not `TRUNCATE TABLE` (which commits
//! implicitly and would break exactly-once); the table's buffered changes are dropped first.
//!
//! # Applying changes
//!
//! Changes are buffered per table and *reduced per key* to the final state of each key
//! (unchanged-TOAST columns of PostgreSQL sources filled from earlier images of the key). A
//! flush runs, per table: (1) deletes by key in bulk, `DELETE ... WHERE k IN (...)` /
//! `WHERE (k1, k2) IN ((..), (..))`, up to 1000 keys a statement; (2) full rows as multi-row
//! `INSERT ... ON DUPLICATE KEY UPDATE c = VALUES(c)` (the `AS new` alias of MySQL 8.0.19+ is
//! not understood by MariaDB); (3) rows whose final image still has unchanged-TOAST columns as
//! `UPDATE ... SET <present columns> WHERE key`, many statements per round trip. Snapshot rows
//! (`op = r`) take the same multi-row upsert: statements are as large as the target allows
//! (`max_allowed_packet` less 64 KiB, at most 16 MiB), so a snapshot goes in at the target's
//! bulk-insert speed; a single row larger than `max_allowed_packet` is a definite error that
//! says to raise it. A flush happens when the buffer reaches `batch_rows`/`batch_bytes`,
//! before a table's schema changes, before a truncate, and at the end of every call, so memory
//! stays bounded whatever the transaction size.
//!
//! **Keyless tables**: inserts in bulk; an update or delete touches one row matching the whole
//! old row with null-safe equality (`c <=> value AND ... LIMIT 1`; native JSON columns through
//! `CAST(... AS JSON)`), unchanged-TOAST columns skipped. Each is a scan of the table.
//!
//! # Tables and type mapping
//!
//! Tables are created when missing in `schema` (`{schema}` in it is replaced by the source
//! schema), named as at the source or as `tables` renames them, with the source's primary key,
//! `ENGINE=InnoDB DEFAULT CHARSET=utf8mb4` and a **binary NO PAD collation**
//! (`utf8mb4_nopad_bin` on MariaDB, `utf8mb4_0900_bin` on MySQL 8, else `utf8mb4_bin`): keys
//! that differ only in case, accents *or trailing spaces* stay distinct (`utf8mb4_bin` is a PAD
//! SPACE collation, under which `'a'` and `'a '` collide).
//!
//! From a **MySQL source** a column keeps its source type (`bigint unsigned`,
//! `decimal(65,30)`, `datetime(6)`, `time(6)`, `char(10)`, `varchar(64)`, `binary(4)`,
//! `varbinary(16)`, `enum('a','b')`, `set(...)`, `bit(5)`, `year`, `json`, ...), except:
//! `timestamp(p)` → `datetime(p)` holding UTC (no 2038 limit, no session time zone, no implicit
//! `DEFAULT/ON UPDATE CURRENT_TIMESTAMP`); geometry → `longtext` (WKT). `char(n)` /
//! `varchar(n)` keep their length in characters (the source reads it from the TABLE_MAP's
//! length in bytes and the column's character set, or from `information_schema`) in the
//! target's `utf8mb4`, so a `latin1` `varchar(20)` becomes a `utf8mb4` `varchar(20)`.
//! From other sources (PostgreSQL):
//!
//! | engine type (source type) | MySQL |
//! |---|---|
//! | Bool | `tinyint(1)` |
//! | Int 8/16/24/32/64, signed or unsigned | `tinyint` .. `bigint` [`unsigned`] |
//! | Float32 / Float64 | `float` / `double` (NaN, ±Infinity → NULL, see below) |
//! | Decimal(p,s), p ≤ 65, s ≤ 30 | `decimal(p,s)` |
//! | numeric unconstrained (or beyond 65/30) | `decimal(65,30)`: a value with more than 35 integer or 30 significant fractional digits is refused with a definite error (never rounded) — change the target column to `longtext` to keep such values as exact text; NaN → NULL |
//! | Text(n ≤ 16383) (`varchar(n)`, `char(n)`) | `varchar(n)` (exact, no space padding) |
//! | Text unbounded, Other (interval, inet, money, ranges, ...) | `longtext` (the server's text form) |
//! | Bytes | `longblob` |
//! | bit(n ≤ 64) / bit varying(n) | `bit(n)` / `varchar(n)` of 0/1 |
//! | Date | `date` (±infinity and years outside 0..9999 → NULL) |
//! | Time(p) | `time(p)` |
//! | Timestamp(p) / TimestampTz(p) | `datetime(p)` (TimestampTz as UTC; ±infinity → NULL) |
//! | Json, jsonb | `json` (MariaDB keeps the exact text; MySQL 8 normalises it and rounds numbers beyond a double) |
//! | Uuid | `char(36)` |
//! | Array(T) | `json` (elements as in the change-event JSON) |
//!
//! **Key columns need a bounded length** in MySQL: text key columns become `varchar(n)` and
//! binary ones `varbinary(n)`, sharing InnoDB's 3072-byte key limit equally after the fixed-size
//! key columns (one text key column: `varchar(767)`); a longer key value is refused with a
//! definite error naming the column (not cut). Non-key `varchar(n)` columns beyond 40,000 bytes
//! of row become `longtext` (MySQL's 65,535-byte row limit).
//!
//! **Values MySQL cannot hold** (float/numeric NaN and ±Infinity, dates and timestamps that
//! are ±infinity or outside years 0..9999) become NULL: a warning names table and column (once
//! per column and session) and [`values_nulled`] counts them; such columns are created
//! nullable. When the target column is text (for example changed by hand), the value's text
//! is written instead.
//!
//! # Schema changes
//!
//! * **ADD COLUMN** → `ALTER TABLE ... ADD COLUMN` (nullable).
//! * **DROP COLUMN** → the target keeps the column; it is made nullable (`MODIFY`, which keeps
//!   its type and collation but drops a default or comment set by hand).
//! * **type change** → applied when it widens (int ranks, int → decimal with room, decimal
//!   with more digits, float → double, longer varchar/text/varbinary/blob/bit, more fractional
//!   seconds, enum/set labels appended); otherwise the target type is kept and a warning
//!   logged (values that do not fit then stop the sink with a clear error).
//! * a target table whose primary key differs from the source's is a definite error.
//!
//! # Connections and errors
//!
//! One connection per sink. Connection loss, server shutdown, deadlocks, lock wait timeouts
//! and a table or column dropped under the sink are transient (the engine rebuilds the sink,
//! which resumes from `committed()`); a value the target rejects is definite, naming the table
//! and column (from the server's message) and what to do; so are missing privileges. The
//! password never appears in messages.

mod mapping;
mod preflight;

pub use mapping::quote_ident;
pub use preflight::check;

use crate::config::{opts, redact_text, redact_url};
use async_trait::async_trait;
use mapping::{Cell, Kind, Ty};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use weir_api::keyed::{KeyedChanges, fill_unchanged};
use weir_api::{
    ChangeEvent, ConnectorError, Entry, LogEntry, Op, Result, Row as LogRow, Sink, SinkContext,
    TableId, TableSchema,
};

/// Keys per bulk `DELETE` statement.
const DELETE_KEYS: usize = 1000;

static NULLED: AtomicU64 = AtomicU64::new(0);

/// How many values MySQL sinks of this process turned into NULL because MySQL cannot hold
/// them (NaN, ±infinity, dates outside years 0..9999): a metric.
pub fn values_nulled() -> u64 {
    NULLED.load(Ordering::Relaxed)
}

/// `[[sinks]] type = "mysql"` settings.
#[derive(Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlSinkConfig {
    /// `mysql://user:password@host:port/[database]`.
    pub url: String,
    /// Target database (created if missing); `{schema}` is replaced by the source schema.
    /// Default: the database in the url.
    #[serde(default)]
    pub schema: Option<String>,
    /// Optional renaming: source `"schema.table"` → target table name (in `schema`).
    #[serde(default)]
    pub tables: BTreeMap<String, String>,
    /// Buffered rows (all tables) that trigger a flush into the open target transaction.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: usize,
    /// Buffered bytes (approximate) that trigger a flush.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
}

fn default_batch_rows() -> usize {
    10_000
}

fn default_batch_bytes() -> usize {
    32 << 20
}

impl MysqlSinkConfig {
    /// A configuration with defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        MysqlSinkConfig {
            url: url.into(),
            schema: None,
            tables: BTreeMap::new(),
            batch_rows: default_batch_rows(),
            batch_bytes: default_batch_bytes(),
        }
    }

    /// The target database: `schema`, else the url's database, else an error saying so.
    pub(crate) fn target_database(
        &self,
        url_db: Option<&str>,
    ) -> std::result::Result<String, String> {
        self.schema
            .as_deref()
            .or(url_db)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                format!(
                    "mysql sink: no target database: set schema = \"...\" in the sink or put \
                     the database in the url ({}/replica)",
                    redact_url(self.url.trim_end_matches('/'))
                )
            })
    }
}

impl std::fmt::Debug for MysqlSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlSinkConfig")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("tables", &self.tables)
            .field("batch_rows", &self.batch_rows)
            .field("batch_bytes", &self.batch_bytes)
            .finish()
    }
}

/// Column `i` of a text-protocol row as text (`None` for NULL).
pub(crate) fn cell_text(row: &Row, i: usize) -> Option<String> {
    match row.as_ref(i)? {
        mysql_async::Value::NULL => None,
        mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        mysql_async::Value::Int(v) => Some(v.to_string()),
        mysql_async::Value::UInt(v) => Some(v.to_string()),
        other => Some(other.as_sql(true).trim_matches('\'').to_owned()),
    }
}

/// Server errors after which a retry may succeed.
const TRANSIENT: &[u16] = &[
    1040, 1053, 1077, 1078, 1079, 1080, 1152, 1154, 1155, 1156, 1157, 1158, 1159, 1160, 1161, 1184,
    1205, 1213, 1317, 1637, 1927, 2006, 2013, 3024, 4031,
    // A target table or column dropped under the sink: the rebuilt sink recreates it.
    1146, 1054,
];

/// What to do about a definite server error.
fn advice(code: u16) -> &'static str {
    match code {
        1264 | 1406 | 1366 | 1292 | 1265 | 1367 | 1416 | 3140 | 4025 | 1690 => {
            "the value does not fit the target column; widen the column (ALTER TABLE ... MODIFY \
             ...) or fix the value at the source, then restart"
        }
        1048 | 1364 => {
            "the target column is NOT NULL but the row has no value there (a column dropped at \
             the source, or a value MySQL cannot hold turned into NULL); make it nullable with \
             ALTER TABLE ... MODIFY ... NULL, then restart"
        }
        1062 | 1452 | 1451 | 3819 => {
            "the target has a constraint or unique key the source does not (or rows the source \
             does not know); drop it or fix the rows, then restart"
        }
        1044 | 1045 | 1142 | 1143 | 1227 | 1370 => {
            "grant the sink's user CREATE, ALTER, SELECT, INSERT, UPDATE and DELETE on the \
             target database and on _weir, then restart"
        }
        1153 => {
            "raise max_allowed_packet on the target server (SET GLOBAL max_allowed_packet = ...)"
        }
        1118 | 1071 | 1074 => {
            "the target cannot hold this table layout; create the table by hand with smaller \
             column types (weir keeps an existing table's columns), then restart"
        }
        1290 | 1792 | 1836 => "the target is read-only; point the sink at a writable server",
        _ => "fix the target as the message says, then restart",
    }
}

/// The column a server message names (`for column 'c'`, `` `db`.`t`.`c` ``, `Column 'c'`).
fn column_in_message(msg: &str) -> Option<String> {
    for marker in ["column '", "Column '", "Field '"] {
        if let Some(i) = msg.find(marker) {
            let rest = &msg[i + marker.len()..];
            return rest.find('\'').map(|j| rest[..j].to_owned());
        }
    }
    if let Some(i) = msg.find("column `") {
        let rest = &msg[i + "column ".len()..];
        let end = rest.find(" at row").unwrap_or(rest.len());
        let last = rest[..end].rsplit("`.`").next()?;
        return Some(last.trim_matches('`').replace("``", "`"));
    }
    None
}

/// A column of the target table that a source column maps to.
#[derive(Debug, Clone)]
struct TargetCol {
    /// Quoted target column name.
    quoted: String,
    kind: Kind,
}

/// A row of the catalog query.
#[derive(Debug, Clone)]
struct CatalogCol {
    name: String,
    column_type: String,
    data_type: String,
    nullable: bool,
    in_pk: bool,
    collation: Option<String>,
}

/// A target table and the changes buffered for it.
struct TableState {
    schema: Arc<TableSchema>,
    qualified: String,
    display: String,
    cols: Vec<TargetCol>,
    /// Keyed tables: each key's final state.
    changes: KeyedChanges<Vec<String>, Cell>,
    inserts: Vec<Vec<Cell>>,
    rows: usize,
    bytes: usize,
}

impl TableState {
    fn clear(&mut self) {
        self.changes.clear();
        self.inserts.clear();
        self.rows = 0;
        self.bytes = 0;
    }
}

/// The text around the items of a chunked statement: `prefix item sep item ... suffix`.
struct Frame<'a> {
    prefix: &'a str,
    sep: &'a str,
    suffix: &'a str,
}

/// One DDL statement and what it does (for messages).
struct Ddl {
    sql: String,
    what: String,
}

/// The MySQL / MariaDB sink (see the module docs).
pub struct MysqlSink {
    cfg: MysqlSinkConfig,
    ctx: SinkContext,
    label: String,
    /// Target database (may hold `{schema}`).
    database: String,
    conn: Conn,
    mysql_source: bool,
    collation: String,
    max_stmt: usize,
    max_packet: usize,
    /// Durable position (the last commit this session wrote, or what it read at start).
    applied: Option<u64>,
    /// Last sequence processed (including the open target transaction).
    high: Option<u64>,
    in_txn: bool,
    /// The open target transaction holds (or has buffered) rows.
    txn_data: bool,
    broken: bool,
    tables: weir_api::FastMap<TableId, TableState>,
    targets: HashMap<(String, String), TableId>,
    dbs_ready: HashSet<String>,
    rows: usize,
    bytes: usize,
    warned: HashSet<(TableId, String)>,
}

impl MysqlSink {
    /// Connects (one connection), sets the session up, creates `_weir.positions` and the
    /// target database when missing.
    pub async fn connect(cfg: MysqlSinkConfig, ctx: SinkContext) -> Result<Self> {
        let label = format!("mysql sink {}", ctx.sink);
        let o = opts(&cfg.url).map_err(|e| ConnectorError::definite(format!("{label}: {e}")))?;
        let database = cfg
            .target_database(o.db_name())
            .map_err(|e| ConnectorError::definite(format!("{label}: {e}")))?;
        let host = format!("{}:{}", o.ip_or_hostname(), o.tcp_port());
        let user = o.user().unwrap_or_default().to_owned();
        let o: mysql_async::Opts = OptsBuilder::from_opts(o).db_name(None::<String>).into();
        let conn = match tokio::time::timeout(Duration::from_secs(15), Conn::new(o)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let msg = redact_text(
                    &format!(
                        "{label}: cannot connect to MySQL/MariaDB at {host} as {user:?}: {e}; \
                         check the url, that the server runs and that the user may connect"
                    ),
                    &cfg.url,
                );
                let definite = matches!(&e, mysql_async::Error::Server(s) if matches!(s.code, 1044 | 1045 | 1049 | 1698 | 1227));
                return Err(if definite {
                    ConnectorError::definite(msg)
                } else {
                    ConnectorError::transient(msg)
                });
            }
            Err(_) => {
                return Err(ConnectorError::transient(format!(
                    "{label}: connecting to {host} timed out after 15 s"
                )));
            }
        };
        let mysql_source = ctx.source.connector == "mysql";
        let mut sink = MysqlSink {
            cfg,
            ctx,
            label,
            database,
            conn,
            mysql_source,
            collation: "utf8mb4_bin".into(),
            max_stmt: 1 << 20,
            max_packet: 4 << 20,
            applied: None,
            high: None,
            in_txn: false,
            txn_data: false,
            broken: false,
            tables: weir_api::FastMap::new(),
            targets: HashMap::new(),
            dbs_ready: HashSet::new(),
            rows: 0,
            bytes: 0,
            warned: HashSet::new(),
        };
        sink.setup().await?;
        Ok(sink)
    }

    async fn setup(&mut self) -> Result<()> {
        self.exec(
            "SET NAMES utf8mb4; \
             SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_BACKSLASH_ESCAPES,NO_AUTO_VALUE_ON_ZERO,\
             NO_ENGINE_SUBSTITUTION,ERROR_FOR_DIVISION_BY_ZERO'; \
             SET SESSION time_zone = '+00:00'; SET SESSION foreign_key_checks = 0; \
             SET SESSION autocommit = 1; \
             SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "setting up the session",
        )
        .await?;
        let rows = self
            .query(
                "SELECT @@max_allowed_packet, COLLATION_NAME FROM information_schema.COLLATIONS \
                 WHERE COLLATION_NAME IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin', 'utf8mb4_bin')",
                "reading the server's settings",
            )
            .await?;
        let names: Vec<String> = rows.iter().filter_map(|r| cell_text(r, 1)).collect();
        for c in ["utf8mb4_nopad_bin", "utf8mb4_0900_bin", "utf8mb4_bin"] {
            if names.iter().any(|n| n == c) {
                self.collation = c.into();
                break;
            }
        }
        let packet: usize = rows
            .first()
            .and_then(|r| cell_text(r, 0))
            .and_then(|s| s.parse().ok())
            .unwrap_or(4 << 20);
        self.max_packet = packet;
        self.max_stmt = packet.saturating_sub(64 << 10).clamp(64 << 10, 16 << 20);
        let coll = self.collation.clone();
        self.exec(
            &format!(
                "CREATE DATABASE IF NOT EXISTS `_weir` CHARACTER SET utf8mb4 COLLATE {coll}; \
                 CREATE TABLE IF NOT EXISTS `_weir`.`positions` (pipeline VARCHAR(191) NOT NULL, \
                 sink VARCHAR(191) NOT NULL, seq BIGINT UNSIGNED NULL, updated_at DATETIME(6) \
                 NOT NULL, PRIMARY KEY (pipeline, sink)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 \
                 COLLATE={coll}"
            ),
            "creating _weir.positions",
        )
        .await?;
        let engine = self
            .query(
                "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = '_weir' AND \
                 TABLE_NAME = 'positions'",
                "checking _weir.positions",
            )
            .await?;
        let engine = engine.first().and_then(|r| cell_text(r, 0));
        if !engine
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("InnoDB"))
        {
            return Err(ConnectorError::definite(format!(
                "{}: _weir.positions uses storage engine {engine:?}, not InnoDB, so positions \
                 cannot be stored with the data atomically; run ALTER TABLE _weir.positions \
                 ENGINE=InnoDB",
                self.label
            )));
        }
        // Registered only when missing: a plain read does not wait for the row lock a
        // previous (dying) session of this sink may still hold.
        let registered = self
            .query(
                &format!(
                    "SELECT 1 FROM `_weir`.`positions` WHERE pipeline = {} AND sink = {}",
                    mapping::quote_str(&self.ctx.pipeline),
                    mapping::quote_str(&self.ctx.sink)
                ),
                "reading _weir.positions",
            )
            .await?;
        if registered.is_empty() {
            let sql = format!(
                "INSERT INTO `_weir`.`positions` (pipeline, sink, seq, updated_at) VALUES ({}, \
                 {}, NULL, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE pipeline = pipeline",
                mapping::quote_str(&self.ctx.pipeline),
                mapping::quote_str(&self.ctx.sink)
            );
            self.exec(&sql, "registering the sink in _weir.positions")
                .await?;
        }
        if !self.database.contains("{schema}") {
            let db = self.database.clone();
            if !self.db_exists(&db).await? {
                let sql = format!(
                    "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4 COLLATE {coll}",
                    quote_ident(&db)
                );
                self.exec(&sql, &format!("creating database {db:?}"))
                    .await?;
            }
            self.dbs_ready.insert(db);
        }
        self.applied = self.read_position(false).await?;
        self.high = self.applied;
        Ok(())
    }

    /// A driver error, classified, with what the sink was doing.
    fn my_error(&self, e: mysql_async::Error, what: &str) -> ConnectorError {
        let (transient, code, column) = match &e {
            mysql_async::Error::Server(s) => (
                TRANSIENT.contains(&s.code),
                s.code,
                column_in_message(&s.message),
            ),
            mysql_async::Error::Url(_) => (false, 0, None),
            _ => (true, 0, None),
        };
        let column = column
            .map(|c| format!(" (column {c:?})"))
            .unwrap_or_default();
        let msg = if transient {
            format!(
                "{}: {what}{column}: {e}; will reconnect and resume from the last applied commit",
                self.label
            )
        } else {
            format!("{}: {what}{column}: {e}; {}", self.label, advice(code))
        };
        let msg = redact_text(&msg, &self.cfg.url);
        if transient {
            ConnectorError::transient(msg)
        } else {
            ConnectorError::definite(msg)
        }
    }

    async fn exec(&mut self, sql: &str, what: &str) -> Result<()> {
        match self.conn.query_drop(sql).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.my_error(e, what)),
        }
    }

    async fn query(&mut self, sql: &str, what: &str) -> Result<Vec<Row>> {
        match self.conn.query::<Row, _>(sql).await {
            Ok(r) => Ok(r),
            Err(e) => Err(self.my_error(e, what)),
        }
    }

    async fn db_exists(&mut self, db: &str) -> Result<bool> {
        let sql = format!(
            "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = BINARY {}",
            mapping::quote_str(db)
        );
        Ok(!self
            .query(&sql, &format!("looking up database {db:?}"))
            .await?
            .is_empty())
    }

    async fn read_position(&mut self, lock: bool) -> Result<Option<u64>> {
        let sql = format!(
            "SELECT seq FROM `_weir`.`positions` WHERE pipeline = {} AND sink = {}{}",
            mapping::quote_str(&self.ctx.pipeline),
            mapping::quote_str(&self.ctx.sink),
            if lock { " FOR UPDATE" } else { "" }
        );
        let rows = self.query(&sql, "reading the applied position").await?;
        let Some(text) = rows.first().and_then(|r| cell_text(r, 0)) else {
            return Ok(None);
        };
        text.parse().map(Some).map_err(|_| {
            ConnectorError::definite(format!(
                "{}: _weir.positions holds {text:?} for pipeline {:?}; delete that row only if \
                 the target is to be rebuilt from the log",
                self.label, self.ctx.pipeline
            ))
        })
    }

    async fn begin(&mut self) -> Result<()> {
        if self.in_txn {
            return Ok(());
        }
        self.exec("START TRANSACTION", "starting a transaction")
            .await?;
        self.in_txn = true;
        self.txn_data = false;
        let stored = self.read_position(true).await?;
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
        let sql = format!(
            "INSERT INTO `_weir`.`positions` (pipeline, sink, seq, updated_at) VALUES ({}, {}, \
             {seq}, UTC_TIMESTAMP(6)) ON DUPLICATE KEY UPDATE seq = VALUES(seq), \
             updated_at = VALUES(updated_at); COMMIT",
            mapping::quote_str(&self.ctx.pipeline),
            mapping::quote_str(&self.ctx.sink),
        );
        self.exec(&sql, &format!("committing up to log sequence {seq}"))
            .await?;
        self.in_txn = false;
        self.txn_data = false;
        self.applied = Some(seq);
        Ok(())
    }

    async fn apply_inner(&mut self, entries: &[LogEntry]) -> Result<()> {
        self.prepare_ddl(entries).await?;
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
                Entry::Schema(schema) => self.table(schema).await?,
                Entry::Change(ev, schema) => {
                    self.txn_data = true;
                    self.change(ev, schema).await?
                }
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

    /// Runs the DDL every schema of the batch needs, before any row of the batch is written.
    async fn prepare_ddl(&mut self, entries: &[LogEntry]) -> Result<()> {
        let mut checked: Vec<Arc<TableSchema>> = Vec::new();
        for e in entries {
            if Some(e.seq) <= self.high {
                continue;
            }
            let schema = match &e.entry {
                Entry::Schema(s) | Entry::Change(_, s) => s,
                Entry::Commit(_) => continue,
            };
            if let Some(st) = self.tables.get(&schema.table)
                && (Arc::ptr_eq(&st.schema, schema) || st.schema.same_shape(schema))
            {
                continue;
            }
            if checked
                .iter()
                .any(|c| Arc::ptr_eq(c, schema) || c.same_shape(schema))
            {
                continue;
            }
            checked.push(schema.clone());
            let plan = self.plan_ddl(schema).await?;
            if !plan.is_empty() {
                self.run_ddl(plan, &schema.table).await?;
                if let Some(mut st) = self.tables.remove(&schema.table) {
                    let (r, b) = (st.rows, st.bytes);
                    st.clear();
                    self.rows -= r;
                    self.bytes -= b;
                }
            }
        }
        Ok(())
    }

    /// Runs DDL at a safe point: no target transaction holding rows is open. If one is (a
    /// schema change inside a source transaction that started in an earlier call), rolls it
    /// back, runs the DDL, and fails transiently so the rebuilt sink replays the transaction.
    async fn run_ddl(&mut self, plan: Vec<Ddl>, table: &TableId) -> Result<()> {
        let mut replay = false;
        if self.in_txn {
            if self.txn_data || self.rows > 0 {
                self.exec("ROLLBACK", "rolling back before a schema change")
                    .await?;
                replay = true;
                for st in self.tables.values_mut() {
                    st.clear();
                }
                self.rows = 0;
                self.bytes = 0;
            } else {
                self.exec(
                    "COMMIT",
                    "ending an empty transaction before a schema change",
                )
                .await?;
            }
            self.in_txn = false;
            self.txn_data = false;
        }
        for d in plan {
            tracing::info!(sink = %self.label, statement = %d.sql, "changing the target schema");
            self.exec(&d.sql, &d.what).await?;
        }
        if replay {
            self.broken = true;
            return Err(ConnectorError::transient(format!(
                "{}: table {table} changed inside a source transaction that began in an earlier \
                 batch; MySQL commits DDL implicitly, so the sink rolled that transaction back, \
                 applied the schema change and will replay it from the last commit",
                self.label
            )));
        }
        Ok(())
    }

    /// Target (database, table) of a source table.
    fn target_of(&self, t: &TableId) -> (String, String) {
        let db = self.database.replace("{schema}", &t.schema);
        let name = self
            .cfg
            .tables
            .get(&format!("{}.{}", t.schema, t.name))
            .cloned()
            .unwrap_or_else(|| t.name.clone());
        (db, name)
    }

    async fn catalog(&mut self, db: &str, table: &str) -> Result<Option<Vec<CatalogCol>>> {
        let sql = format!(
            "SELECT COLUMN_NAME, COLUMN_TYPE, DATA_TYPE, IS_NULLABLE, COLUMN_KEY, COLLATION_NAME \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = BINARY {} AND TABLE_NAME = \
             BINARY {} ORDER BY ORDINAL_POSITION",
            mapping::quote_str(db),
            mapping::quote_str(table)
        );
        let rows = self
            .query(&sql, &format!("reading the columns of {db}.{table}"))
            .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            rows.iter()
                .map(|r| CatalogCol {
                    name: cell_text(r, 0).unwrap_or_default(),
                    column_type: cell_text(r, 1).unwrap_or_default(),
                    data_type: cell_text(r, 2).unwrap_or_default(),
                    nullable: cell_text(r, 3).as_deref() == Some("YES"),
                    in_pk: cell_text(r, 4).as_deref() == Some("PRI"),
                    collation: cell_text(r, 5),
                })
                .collect(),
        ))
    }

    /// The DDL that makes the target table fit `schema` (empty when it already does).
    async fn plan_ddl(&mut self, schema: &TableSchema) -> Result<Vec<Ddl>> {
        let (db, name) = self.target_of(&schema.table);
        let qualified = format!("{}.{}", quote_ident(&db), quote_ident(&name));
        let shown = format!("{db}.{name}");
        let mut plan = Vec::new();
        let want = mapping::target_types(schema, self.mysql_source);
        let coll = self.collation.clone();
        let existing = if !self.dbs_ready.contains(&db) && !self.db_exists(&db).await? {
            plan.push(Ddl {
                sql: format!(
                    "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4 COLLATE {coll}",
                    quote_ident(&db)
                ),
                what: format!("creating database {db:?}"),
            });
            None
        } else {
            self.dbs_ready.insert(db.clone());
            self.catalog(&db, &name).await?
        };
        let Some(existing) = existing else {
            let mut sql = format!("CREATE TABLE IF NOT EXISTS {qualified} (");
            for (i, (col, (ty, not_null))) in schema.columns.iter().zip(&want).enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let _ = write!(
                    sql,
                    "{} {}{}",
                    quote_ident(&col.name),
                    ty.sql(),
                    if *not_null { " NOT NULL" } else { " NULL" }
                );
            }
            if !schema.primary_key.is_empty() {
                let keys: Vec<String> = schema.key_names().map(quote_ident).collect();
                let _ = write!(sql, ", PRIMARY KEY ({})", keys.join(", "));
            }
            let _ = write!(
                sql,
                ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={coll}"
            );
            plan.push(Ddl {
                sql,
                what: format!("creating table {shown}"),
            });
            return Ok(plan);
        };
        let mut alters = Vec::new();
        for (col, (ty, _)) in schema.columns.iter().zip(&want) {
            match find_col(&existing, &col.name) {
                None => alters.push(format!(
                    "ADD COLUMN {} {} NULL",
                    quote_ident(&col.name),
                    ty.sql()
                )),
                Some(c) => match mapping::parse_type(&c.column_type) {
                    Some(old) if mapping::same_type(&old, ty) => {}
                    Some(old) if mapping::is_widening(&old, ty) => {
                        let collate = match (&c.collation, ty) {
                            (Some(cl), Ty::Char(_) | Ty::VarChar(_) | Ty::Text(_)) => {
                                format!(" COLLATE {cl}")
                            }
                            _ => String::new(),
                        };
                        alters.push(format!(
                            "MODIFY COLUMN {} {}{collate}{}",
                            quote_ident(&c.name),
                            ty.sql(),
                            if c.nullable { " NULL" } else { " NOT NULL" }
                        ));
                    }
                    _ => {
                        if self
                            .warned
                            .insert((schema.table.clone(), format!("type {}", col.name)))
                        {
                            tracing::warn!(
                                sink = %self.label, table = shown.as_str(), column = %col.name,
                                target_type = %c.column_type, source_type = %ty.sql(),
                                "target column type differs from the source's and the change is not a widening; keeping the target type"
                            );
                        }
                    }
                },
            }
        }
        for c in &existing {
            let in_source = schema
                .columns
                .iter()
                .any(|s| find_col(std::slice::from_ref(c), &s.name).is_some());
            if !in_source && !c.nullable && !c.in_pk {
                let collate = c
                    .collation
                    .as_ref()
                    .filter(|_| {
                        matches!(
                            mapping::parse_type(&c.column_type),
                            Some(Ty::Char(_) | Ty::VarChar(_) | Ty::Text(_))
                        )
                    })
                    .map(|cl| format!(" COLLATE {cl}"))
                    .unwrap_or_default();
                alters.push(format!(
                    "MODIFY COLUMN {} {}{collate} NULL",
                    quote_ident(&c.name),
                    c.column_type
                ));
            }
        }
        if !alters.is_empty() {
            plan.push(Ddl {
                sql: format!("ALTER TABLE {qualified} {}", alters.join(", ")),
                what: format!("altering table {shown}"),
            });
        }
        Ok(plan)
    }

    /// Makes sure the table state follows `schema` (running DDL only if the start-of-call
    /// pass missed something, e.g. a table dropped meanwhile).
    async fn table(&mut self, schema: &Arc<TableSchema>) -> Result<()> {
        if let Some(st) = self.tables.get_mut(&schema.table) {
            if Arc::ptr_eq(&st.schema, schema) {
                return Ok(());
            }
            if st.schema.same_shape(schema) {
                st.schema = schema.clone();
                return Ok(());
            }
            self.flush_table(&schema.table).await?;
        }
        let (db, name) = self.target_of(&schema.table);
        if let Some(other) = self.targets.get(&(db.clone(), name.clone()))
            && *other != schema.table
        {
            return Err(ConnectorError::definite(format!(
                "{}: source tables {other} and {} both map to target table {db}.{name}; set \
                 schema = \"{{schema}}\" or rename one in the sink's `tables`",
                self.label, schema.table
            )));
        }
        let plan = self.plan_ddl(schema).await?;
        if !plan.is_empty() {
            self.run_ddl(plan, &schema.table).await?;
        }
        let st = self.open_table(schema, &db, &name).await?;
        self.targets.insert((db, name), schema.table.clone());
        self.tables.insert(schema.table.clone(), st);
        Ok(())
    }

    async fn open_table(
        &mut self,
        schema: &Arc<TableSchema>,
        db: &str,
        name: &str,
    ) -> Result<TableState> {
        let shown = format!("{db}.{name}");
        let catalog = self.catalog(db, name).await?.ok_or_else(|| {
            ConnectorError::transient(format!(
                "{}: table {shown} is missing right after creating it (dropped meanwhile?); \
                 will retry",
                self.label
            ))
        })?;
        let mut cols = Vec::with_capacity(schema.columns.len());
        for col in &schema.columns {
            let c = find_col(&catalog, &col.name).ok_or_else(|| {
                ConnectorError::transient(format!(
                    "{}: column {:?} is missing from {shown} right after adding it (dropped \
                     meanwhile?); will retry",
                    self.label, col.name
                ))
            })?;
            cols.push(TargetCol {
                quoted: quote_ident(&c.name),
                kind: Kind::of(&c.data_type, &c.column_type),
            });
        }
        if !schema.primary_key.is_empty() {
            let mut want: Vec<String> = schema
                .key_names()
                .filter_map(|k| find_col(&catalog, k).map(|c| c.name.to_lowercase()))
                .collect();
            let mut have: Vec<String> = catalog
                .iter()
                .filter(|c| c.in_pk)
                .map(|c| c.name.to_lowercase())
                .collect();
            want.sort();
            have.sort();
            if want != have {
                return Err(ConnectorError::definite(format!(
                    "{}: the primary key of target table {shown} is ({}) but the source's key of \
                     {} is ({}); upserts need the same key: change the target's primary key \
                     (or drop the table so weir recreates it), then restart",
                    self.label,
                    have.join(", "),
                    schema.table,
                    want.join(", ")
                )));
            }
        }
        let engine = self
            .query(
                &format!(
                    "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = BINARY {} \
                     AND TABLE_NAME = BINARY {}",
                    mapping::quote_str(db),
                    mapping::quote_str(name)
                ),
                &format!("reading the storage engine of {shown}"),
            )
            .await?;
        let engine = engine.first().and_then(|r| cell_text(r, 0));
        if !engine
            .as_deref()
            .is_some_and(|e| e.eq_ignore_ascii_case("InnoDB"))
            && self
                .warned
                .insert((schema.table.clone(), "engine".to_owned()))
        {
            tracing::warn!(
                sink = %self.label, table = shown.as_str(), engine = ?engine,
                "target table is not InnoDB: its changes are not atomic with the sink's position (exactly-once does not hold for it); ALTER TABLE ... ENGINE=InnoDB"
            );
        }
        Ok(TableState {
            schema: schema.clone(),
            qualified: format!("{}.{}", quote_ident(db), quote_ident(name)),
            display: shown,
            cols,
            changes: KeyedChanges::default(),
            inserts: Vec::new(),
            rows: 0,
            bytes: 0,
        })
    }

    /// Converts a row of `schema` to cells for its target columns.
    fn cells(&mut self, schema: &TableSchema, row: &LogRow) -> Result<Vec<Cell>> {
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
        let st = self
            .tables
            .get(&schema.table)
            .ok_or_else(|| self.internal("no table state"))?;
        let mut out = Vec::with_capacity(row.0.len());
        let mut nulled: Vec<(String, &'static str)> = Vec::new();
        for ((v, col), tc) in row.0.iter().zip(&schema.columns).zip(&st.cols) {
            let (c, why) = mapping::cell(v, &tc.kind).map_err(|e| {
                ConnectorError::definite(format!(
                    "{}: table {} column {:?}: {e}; change the target column to a wider type \
                     (ALTER TABLE {} MODIFY {} ...; longtext keeps any value as exact text), \
                     then restart",
                    self.label, st.display, col.name, st.qualified, tc.quoted
                ))
            })?;
            if let Some(why) = why {
                nulled.push((col.name.clone(), why));
            }
            out.push(c);
        }
        for (column, why) in nulled {
            NULLED.fetch_add(1, Ordering::Relaxed);
            if self
                .warned
                .insert((schema.table.clone(), format!("null {column}")))
            {
                tracing::warn!(
                    sink = %self.label, table = %schema.table, column = %column, reason = why,
                    "MySQL cannot hold this value; writing NULL (counted in values_nulled)"
                );
            }
        }
        Ok(out)
    }

    fn key_of(&self, schema: &TableSchema, cells: &[Cell]) -> Result<Vec<String>> {
        schema
            .primary_key
            .iter()
            .map(|&i| match cells.get(i) {
                Some(Cell::Lit(s)) => Ok(s.clone()),
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
                st.clear();
                // Not TRUNCATE TABLE: it would commit the open transaction implicitly.
                let sql = format!("DELETE FROM {}", st.qualified);
                let display = st.display.clone();
                self.rows -= rows;
                self.bytes -= bytes;
                self.exec(
                    &sql,
                    &format!("emptying {display} (truncate at the source)"),
                )
                .await?;
            }
            Op::Insert | Op::Read => {
                let after = ev.after.as_ref().ok_or_else(|| missing("new"))?;
                let cells = self.cells(schema, after)?;
                let size: usize = cells.iter().map(Cell::size).sum();
                if keyless {
                    self.state(&schema.table)?.inserts.push(cells);
                } else {
                    let key = self.key_of(schema, &cells)?;
                    self.state(&schema.table)?.changes.upsert(key, cells, false);
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
                let size = key.iter().map(|k| k.len() + 24).sum();
                self.state(&schema.table)?.changes.delete(key);
                self.account(&schema.table, size)?;
            }
        }
        Ok(())
    }

    fn no_old_row(&self, table: &TableId) -> ConnectorError {
        ConnectorError::definite(format!(
            "{}: table {table} has no primary key and an update or delete came without the old \
             row, so the target row cannot be found; give the table a primary key, or have the \
             source send full old rows (PostgreSQL: ALTER TABLE {table} REPLICA IDENTITY FULL; \
             MySQL: binlog_row_image=FULL), then re-snapshot it",
            self.label
        ))
    }

    fn internal(&self, what: &str) -> ConnectorError {
        ConnectorError::definite(format!(
            "{}: internal error ({what}); please report it",
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
        st.clear();
        self.tables.insert(id.clone(), st);
        result
    }

    async fn flush_state(&mut self, st: &mut TableState) -> Result<()> {
        if st.rows == 0 {
            return Ok(());
        }
        let inserts = std::mem::take(&mut st.inserts);
        if !inserts.is_empty() {
            let rows: Vec<&[Cell]> = inserts.iter().map(Vec::as_slice).collect();
            self.insert_rows(st, &rows, false).await?;
        }
        let ops = st.changes.take();
        if ops.is_empty() {
            return Ok(());
        }
        // 1. Deletes (also of keys inserted again afterwards).
        let deletes: Vec<&Vec<String>> = ops.iter().filter(|o| o.delete).map(|o| &o.key).collect();
        if !deletes.is_empty() {
            self.delete_keys(st, &deletes).await?;
        }
        // 2. Full rows.
        let full: Vec<&[Cell]> = ops
            .iter()
            .filter_map(|o| o.image.as_deref())
            .filter(|img| !img.contains(&Cell::Unchanged))
            .collect();
        if !full.is_empty() {
            self.insert_rows(st, &full, true).await?;
        }
        // 3. Rows with unchanged-TOAST columns: update the present columns only.
        let partial: Vec<&[Cell]> = ops
            .iter()
            .filter_map(|o| o.image.as_deref())
            .filter(|img| img.contains(&Cell::Unchanged))
            .collect();
        if !partial.is_empty() {
            self.update_present(st, &partial).await?;
        }
        Ok(())
    }

    /// Sends `prefix item, item, ... suffix` statements no larger than `max_stmt` (and at
    /// most `max_items` items each).
    async fn chunked(
        &mut self,
        st: &TableState,
        frame: Frame<'_>,
        items: impl Iterator<Item = String>,
        max_items: usize,
        what: &str,
    ) -> Result<()> {
        let Frame {
            prefix,
            sep,
            suffix,
        } = frame;
        let mut sql = String::with_capacity(self.max_stmt.min(1 << 20));
        let mut n = 0;
        for item in items {
            if n > 0
                && (sql.len() + sep.len() + item.len() + suffix.len() > self.max_stmt
                    || n >= max_items)
            {
                sql.push_str(suffix);
                self.exec(&sql, what).await?;
                sql.clear();
                n = 0;
            }
            if n == 0 {
                if prefix.len() + item.len() + suffix.len() + 1024 > self.max_packet {
                    return Err(ConnectorError::definite(format!(
                        "{}: {what}: one row of {} is {} bytes as SQL, more than the target's \
                         max_allowed_packet ({} bytes); raise max_allowed_packet on the target \
                         server (SET GLOBAL max_allowed_packet = ...), then restart",
                        self.label,
                        st.display,
                        item.len(),
                        self.max_packet
                    )));
                }
                sql.push_str(prefix);
            } else {
                sql.push_str(sep);
            }
            sql.push_str(&item);
            n += 1;
        }
        if n > 0 {
            sql.push_str(suffix);
            self.exec(&sql, what).await?;
        }
        Ok(())
    }

    fn row_tuple(row: &[Cell]) -> String {
        let mut s = String::with_capacity(row.iter().map(|c| c.sql().len() + 1).sum::<usize>() + 2);
        s.push('(');
        for (i, c) in row.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(c.sql());
        }
        s.push(')');
        s
    }

    async fn insert_rows(&mut self, st: &TableState, rows: &[&[Cell]], upsert: bool) -> Result<()> {
        let names: Vec<&str> = st.cols.iter().map(|c| c.quoted.as_str()).collect();
        let prefix = format!(
            "INSERT INTO {} ({}) VALUES ",
            st.qualified,
            names.join(", ")
        );
        let suffix = if upsert {
            let key = &st.schema.primary_key;
            let set: Vec<String> = st
                .cols
                .iter()
                .enumerate()
                .filter(|(i, _)| !key.contains(i))
                .map(|(_, c)| format!("{q} = VALUES({q})", q = c.quoted))
                .collect();
            if set.is_empty() {
                let k = key
                    .first()
                    .and_then(|&i| st.cols.get(i))
                    .ok_or_else(|| self.internal("key column"))?;
                format!(" ON DUPLICATE KEY UPDATE {q} = {q}", q = k.quoted)
            } else {
                format!(" ON DUPLICATE KEY UPDATE {}", set.join(", "))
            }
        } else {
            String::new()
        };
        let what = format!("writing rows into {}", st.display);
        self.chunked(
            st,
            Frame {
                prefix: &prefix,
                sep: ",",
                suffix: &suffix,
            },
            rows.iter().map(|r| Self::row_tuple(r)),
            usize::MAX,
            &what,
        )
        .await
    }

    async fn delete_keys(&mut self, st: &TableState, keys: &[&Vec<String>]) -> Result<()> {
        let cols: Vec<&str> = st
            .schema
            .primary_key
            .iter()
            .filter_map(|&i| st.cols.get(i))
            .map(|c| c.quoted.as_str())
            .collect();
        let (prefix, items): (String, Vec<String>) = if cols.len() == 1 {
            (
                format!("DELETE FROM {} WHERE {} IN (", st.qualified, cols[0]),
                keys.iter().map(|k| k.join(",")).collect(),
            )
        } else {
            (
                format!(
                    "DELETE FROM {} WHERE ({}) IN (",
                    st.qualified,
                    cols.join(", ")
                ),
                keys.iter().map(|k| format!("({})", k.join(","))).collect(),
            )
        };
        let what = format!("deleting rows of {}", st.display);
        self.chunked(
            st,
            Frame {
                prefix: &prefix,
                sep: ",",
                suffix: ")",
            },
            items.into_iter(),
            DELETE_KEYS,
            &what,
        )
        .await
    }

    /// `UPDATE ... SET <present non-key columns> WHERE <key>` per row, many per round trip.
    async fn update_present(&mut self, st: &TableState, rows: &[&[Cell]]) -> Result<()> {
        let key = &st.schema.primary_key;
        let mut items = Vec::with_capacity(rows.len());
        for row in rows {
            let set: Vec<String> = st
                .cols
                .iter()
                .zip(row.iter())
                .enumerate()
                .filter(|(i, (_, c))| !key.contains(i) && **c != Cell::Unchanged)
                .map(|(_, (col, c))| format!("{} = {}", col.quoted, c.sql()))
                .collect();
            if set.is_empty() {
                continue;
            }
            let cond: Vec<String> = key
                .iter()
                .filter_map(|&i| {
                    Some(format!(
                        "{} = {}",
                        st.cols.get(i)?.quoted,
                        row.get(i)?.sql()
                    ))
                })
                .collect();
            items.push(format!(
                "UPDATE {} SET {} WHERE {}",
                st.qualified,
                set.join(", "),
                cond.join(" AND ")
            ));
        }
        let what = format!("updating rows of {}", st.display);
        self.chunked(
            st,
            Frame {
                prefix: "",
                sep: "; ",
                suffix: "",
            },
            items.into_iter(),
            500,
            &what,
        )
        .await
    }

    /// `c <=> value AND ...` over every known old value.
    fn match_old(st: &TableState, old: &[Cell]) -> String {
        let mut cond = Vec::new();
        for (c, cell) in st.cols.iter().zip(old) {
            if *cell == Cell::Unchanged {
                continue;
            }
            if c.kind == Kind::Json && *cell != Cell::Null {
                cond.push(format!("{} <=> CAST({} AS JSON)", c.quoted, cell.sql()));
            } else {
                cond.push(format!("{} <=> {}", c.quoted, cell.sql()));
            }
        }
        if cond.is_empty() {
            cond.push("FALSE".into());
        }
        cond.join(" AND ")
    }

    async fn keyless_delete(&mut self, t: &TableId, old: &[Cell]) -> Result<()> {
        let st = self.state(t)?;
        let sql = format!(
            "DELETE FROM {} WHERE {} LIMIT 1",
            st.qualified,
            Self::match_old(st, old)
        );
        let what = format!("deleting a row of {}", st.display);
        self.exec(&sql, &what).await
    }

    async fn keyless_update(&mut self, t: &TableId, old: &[Cell], new: &[Cell]) -> Result<()> {
        let st = self.state(t)?;
        let set: Vec<String> = st
            .cols
            .iter()
            .zip(new)
            .filter(|(_, c)| **c != Cell::Unchanged)
            .map(|(col, c)| format!("{} = {}", col.quoted, c.sql()))
            .collect();
        if set.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE {} SET {} WHERE {} LIMIT 1",
            st.qualified,
            set.join(", "),
            Self::match_old(st, old)
        );
        let what = format!("updating a row of {}", st.display);
        self.exec(&sql, &what).await
    }

    /// An update that changes the key while some columns are unchanged TOAST: one UPDATE
    /// that moves the row and leaves those columns alone.
    async fn move_row(&mut self, t: &TableId, old_key: &[String], new: &[Cell]) -> Result<()> {
        let st = self.state(t)?;
        let set: Vec<String> = st
            .cols
            .iter()
            .zip(new)
            .filter(|(_, c)| **c != Cell::Unchanged)
            .map(|(col, c)| format!("{} = {}", col.quoted, c.sql()))
            .collect();
        let cond: Vec<String> = st
            .schema
            .primary_key
            .iter()
            .zip(old_key)
            .filter_map(|(&i, v)| Some(format!("{} = {v}", st.cols.get(i)?.quoted)))
            .collect();
        let sql = format!(
            "UPDATE {} SET {} WHERE {}",
            st.qualified,
            set.join(", "),
            cond.join(" AND ")
        );
        let what = format!("moving a row of {} to a new key", st.display);
        self.exec(&sql, &what).await
    }
}

/// The catalog column of source column `name`: the same name, else the same name ignoring
/// case (MySQL column names are case-insensitive).
fn find_col<'a>(catalog: &'a [CatalogCol], name: &str) -> Option<&'a CatalogCol> {
    catalog.iter().find(|c| c.name == name).or_else(|| {
        let lower = name.to_lowercase();
        catalog.iter().find(|c| c.name.to_lowercase() == lower)
    })
}

#[async_trait]
impl Sink for MysqlSink {
    async fn committed(&mut self) -> Result<Option<u64>> {
        let seq = self.read_position(false).await?;
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
            // Release the position row's lock now rather than when the sink is dropped (a
            // lost connection just fails here).
            if self.in_txn {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), self.conn.query_drop("ROLLBACK"))
                        .await;
                self.in_txn = false;
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_found_in_server_messages() {
        assert_eq!(
            column_in_message("Out of range value for column 'small' at row 2").as_deref(),
            Some("small")
        );
        assert_eq!(
            column_in_message("Incorrect datetime value: 'x' for column `db`.`t`.`when` at row 1")
                .as_deref(),
            Some("when")
        );
        assert_eq!(
            column_in_message("Data too long for column 'name' at row 1").as_deref(),
            Some("name")
        );
    }

    #[test]
    fn config_debug_hides_the_password() {
        let cfg = MysqlSinkConfig::new("mysql://weir:s3cret@db:3306/replica");
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert_eq!(
            cfg.target_database(Some("replica")).as_deref(),
            Ok("replica")
        );
        let none = MysqlSinkConfig::new("mysql://weir:s3cret@db:3306/");
        let err = none.target_database(None).expect_err("no database");
        assert!(err.contains("schema") && !err.contains("s3cret"), "{err}");
    }
}
