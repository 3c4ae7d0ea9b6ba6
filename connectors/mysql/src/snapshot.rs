//! Consistent parallel snapshot of the selected MySQL / MariaDB tables (the `Snapshot` half
//! of the source).
//!
//! # Consistency (the mydumper method)
//!
//! [`Snapshot::plan`] connects `workers + 1` SQL sessions first (no lock yet), then, on a
//! separate control session, takes `FLUSH TABLES WITH READ LOCK` (with
//! `lock_wait_timeout = 30`: a long-running statement makes it fail transiently instead of
//! piling up writers behind it). While the lock holds, no transaction can commit, so it:
//!
//! 1. reads the binlog position exactly as [`MysqlSource::end_position`] does
//!    (`SHOW MASTER STATUS` + `@@gtid_binlog_pos` on MariaDB / `Executed_Gtid_Set` on MySQL):
//!    that is `stream_from`. The source's `start(Some(stream_from))` streams every
//!    transaction committed after it (by GTID where the server has them, else by file and
//!    position), so there is no gap and nothing is read twice;
//! 2. runs `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY` on every prepared session
//!    (REPEATABLE READ): all of them see exactly the transactions committed before
//!    `stream_from`;
//!
//! and releases the lock (`UNLOCK TABLES`). The lock is held for a few milliseconds — one
//! statement per session — instead of across `plan()` → `reader()` × N →
//! `readers_ready()`: the chunk bounds are walked afterwards, in the planning session's
//! snapshot. That is why [`SnapshotSettings::workers`] exists: `plan()` must know how many
//! sessions to open under the lock. [`Snapshot::reader`] hands them out (the planning
//! session becomes a worker too); a reader asked for beyond them opens a fresh view, which is
//! newer than `stream_from` — still convergent, like [`Snapshot::resume`] — and says so in a
//! warning. [`Snapshot::readers_ready`] closes the sessions nobody took.
//!
//! **Without `RELOAD`** (`FLUSH TABLES WITH READ LOCK` fails with an access error) the
//! control session takes `LOCK TABLES db.t READ, ...` of the selected tables instead
//! (needs the `LOCK TABLES` privilege). That blocks only writers of those tables: every
//! transaction that wrote to them has committed (and is in the binlog) before the lock is
//! granted, and none can commit until it is released, so the sessions' snapshots and the
//! binlog position agree *for the selected tables*; other tables' transactions that slip
//! in between carry no change weir streams. Because the lock is held by the control
//! session, not by the readers, the fallback keeps all workers (mydumper's
//! `--lock-all-tables` does the same); it is logged as a warning.
//!
//! MariaDB's `binlog_snapshot_file` / `binlog_snapshot_position` status (the exact
//! position of a single `WITH CONSISTENT SNAPSHOT` transaction, no lock at all) would only
//! serve one session and gives no GTID state, so it is not used.
//!
//! **After a restart** ([`Snapshot::resume`]) the old views are gone. Weir first checks that
//! the binlog holding `stream_from` still exists (`SHOW BINARY LOGS`; gone = a definite error
//! asking to re-snapshot), then opens `workers` fresh `WITH CONSISTENT SNAPSHOT` sessions,
//! without any lock. They are newer than `stream_from`; the stream replays the changes in
//! between (full row images), so targets applying by key converge.
//!
//! DDL on a table while it is being snapshotted waits for the snapshot sessions' metadata
//! locks (and writers queue behind it); a table altered after the consistent point fails to
//! read with "table definition has changed" (a transient error: the snapshot retries with a
//! fresh view). Avoid DDL during the initial snapshot.
//!
//! # Schemas
//!
//! Each table's [`TableSchema`] is built from `information_schema` into the same
//! column description a TABLE_MAP gives the stream ([`decode::RawColumn`]: type code,
//! metadata bytes, signedness, charset, ENUM/SET labels, MariaDB JSON from its
//! `json_valid` check) and classified by the stream's own [`decode::classify`], so names,
//! [`weir_api::ColumnType`]s, source types and nullability are identical and the staging log
//! sees no spurious schema change. The primary key is listed in key order (as the stream's
//! FULL metadata does); with `binlog_row_metadata` other than FULL the stream lists it in
//! column order, and so does the snapshot.
//!
//! # Values
//!
//! Rows are read with prepared statements (the binary protocol, so FLOAT and DOUBLE keep
//! every bit) in sessions with `character_set_results = NULL` (text arrives in the column's
//! own charset and is decoded by the stream's [`Charset`] rules, latin1 = cp1252) and
//! `time_zone = '+00:00'` (TIMESTAMP as UTC). Each value is converted by the column's
//! [`Kind`] exactly as the stream decodes it: UNSIGNED as `UInt`, DECIMAL as the server's
//! exact text, TIME signed and over 24 h, microseconds, zero dates, BIT as a 0/1 string of
//! its width, BINARY with its padding, ENUM/SET by label, GEOMETRY from the same internal
//! (SRID + WKB) bytes through [`decode::geometry_to_wkt`], MariaDB JSON as its text, MySQL
//! JSON re-serialised the way the stream renders binary JSON.
//!
//! # Chunks
//!
//! A table is cut by its primary key into ranges of `chunk_rows` keys: walking the key
//! index in the planning snapshot with `ORDER BY key LIMIT 1 OFFSET chunk_rows - 1`. A
//! bound holds one string per key column: integers and DECIMALs as decimal text, dates as
//! `YYYY-MM-DD`, DATETIME/TIMESTAMP as `YYYY-MM-DD HH:MM:SS.ffffff` (UTC), TIME as
//! `[-]H:MM:SS.ffffff`, text as itself, binary strings as lowercase hex. Bounds never become
//! SQL text: they are bound as typed parameters (`CAST(? AS DECIMAL(p,s))`,
//! `CONVERT(? USING cs) COLLATE <column collation>`, `UNHEX(?)`), and composite keys are
//! compared as `a >= ? AND (a > ? OR (a = ? AND b > ?))` (a form the range optimizer uses).
//! A table without primary key, with a prefix key, or with a key column of another type
//! (FLOAT, BIT, ENUM, SET, ...) is one chunk. Estimated rows come from
//! `information_schema.TABLES.TABLE_ROWS`.
//!
//! Each chunk is read by one `SELECT` streamed row by row by a task that owns the worker's
//! connection (bounded channel, batches of at most 256 rows or 4 MiB), so memory stays
//! bounded whatever the chunk or row size. Sessions set `net_write_timeout = 3600`, so a
//! slow consumer does not make the server drop the connection mid-chunk.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value as MyValue};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_api::{
    ChangeEvent, ChunkReader, Column, ConnectorError, Date, Op, Result, Row, Snapshot,
    SnapshotChunk, SnapshotPlan, Source, SourcePosition, TableId, TableSchema, Time, Timestamp,
    Value,
};

use crate::config::{MysqlSourceConfig, opts};
use crate::decode::{self, Charset, Kind, RawColumn, ty};
use crate::source::{MysqlSource, my_error, parse_labels};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Seconds `FLUSH TABLES WITH READ LOCK` / `LOCK TABLES` may wait.
const LOCK_WAIT_SECS: u32 = 30;
/// Rows per message from a chunk's reading task.
const SEND_ROWS: usize = 256;
/// Bytes (roughly) per message from a chunk's reading task.
const SEND_BYTES: usize = 4 << 20;

/// Settings of the snapshot reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// Rows per chunk (a crash re-reads at most the chunks in progress).
    pub chunk_rows: u64,
    /// Sessions opened inside the consistent point (set it to the engine's snapshot
    /// workers): readers beyond them get a fresh, newer view (convergent, with a warning).
    pub workers: usize,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            chunk_rows: 50_000,
            workers: 4,
        }
    }
}

/// Facts about the server that shape schemas.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    pub(crate) mariadb: bool,
    /// `binlog_row_metadata = FULL`: the stream lists the primary key in key order.
    full_metadata: bool,
}

/// How one key column's bound is encoded and bound as a parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KeyCodec {
    Int {
        unsigned: bool,
    },
    Decimal {
        precision: u8,
        scale: u8,
    },
    Date,
    DateTime,
    Time,
    /// Character set and collation names (checked to be plain identifiers).
    Text {
        charset: String,
        collation: String,
    },
    Binary,
}

#[derive(Debug, Clone)]
pub(crate) struct ColumnMeta {
    pub(crate) name: String,
    kind: Kind,
    /// Character set of the value bytes (text, ENUM and SET columns).
    pub(crate) charset: Charset,
    /// How this column is bound when it is part of the chunking key.
    pub(crate) codec: Option<KeyCodec>,
}

/// What a worker needs to read a table.
#[derive(Debug, Clone)]
pub(crate) struct TableMeta {
    pub(crate) schema: TableSchema,
    pub(crate) columns: Vec<ColumnMeta>,
    /// Primary-key column indices in key order when the table can be chunked, else empty.
    pub(crate) key: Vec<usize>,
    pub(crate) estimated_rows: u64,
}

pub(crate) fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

pub(crate) fn qualified(t: &TableId) -> String {
    format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name))
}

fn plain_ident(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn snap_error(context: &str, url: &str, e: mysql_async::Error) -> ConnectorError {
    if server_code(&e) == Some(1412) {
        // ER_TABLE_DEF_CHANGED: DDL after the consistent point. A retry resumes with a
        // fresh view (and the new definition); the stream carries the DDL.
        return ConnectorError::transient(format!(
            "mysql snapshot: {context}: the table was altered after the snapshot's consistent              point; retrying with a fresh view"
        ));
    }
    my_error(&format!("snapshot: {context}"), url, e)
}

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

impl TableMeta {
    pub(crate) fn key_names(&self) -> Vec<String> {
        self.key
            .iter()
            .map(|&i| quote_ident(&self.columns[i].name))
            .collect()
    }

    /// The parameter expressions and values of a bound.
    fn bound_params(&self, values: &[String]) -> Result<Vec<(String, MyValue)>> {
        if values.len() != self.key.len() {
            return Err(ConnectorError::definite(format!(
                "mysql snapshot: a chunk bound of {} has {} values for a {}-column key; the \
                 table's primary key changed since the snapshot was planned: remove the \
                 pipeline's staging log (<data_dir>/<name>) to snapshot again",
                self.schema.table,
                values.len(),
                self.key.len()
            )));
        }
        self.key
            .iter()
            .zip(values)
            .map(|(&i, v)| {
                let col = &self.columns[i];
                let codec = col.codec.as_ref().ok_or_else(|| {
                    ConnectorError::definite(format!(
                        "mysql snapshot: key column {} of {} cannot bound a chunk",
                        col.name, self.schema.table
                    ))
                })?;
                param(codec, v).map_err(|e| {
                    ConnectorError::definite(format!(
                        "mysql snapshot: bad chunk bound {v:?} for key column {} of {}: {e}; \
                         the stored plan does not match the table: remove the pipeline's \
                         staging log to snapshot again",
                        col.name, self.schema.table
                    ))
                })
            })
            .collect()
    }

    /// `WHERE ...` (or nothing) for the keys after `after` (exclusive) up to `upto`
    /// (inclusive), with its parameters.
    pub(crate) fn range(
        &self,
        after: Option<&[String]>,
        upto: Option<&[String]>,
    ) -> Result<(String, Vec<MyValue>)> {
        let names = self.key_names();
        let mut conds = Vec::new();
        let mut params = Vec::new();
        for (bound, lower) in [(after, true), (upto, false)] {
            let Some(values) = bound else { continue };
            let p = self.bound_params(values)?;
            conds.push(compare(&names, &p, lower, &mut params));
        }
        if conds.is_empty() {
            return Ok((String::new(), params));
        }
        Ok((format!(" WHERE {}", conds.join(" AND ")), params))
    }
}

/// `key > bound` (`lower`) or `key <= bound` as SQL over the key columns `names`, pushing
/// one parameter per placeholder.
fn compare(
    names: &[String],
    bound: &[(String, MyValue)],
    lower: bool,
    params: &mut Vec<MyValue>,
) -> String {
    let n = names.len();
    let (strict, last, outer) = if lower {
        (">", ">", ">=")
    } else {
        ("<", "<=", "<=")
    };
    if n == 1 {
        params.push(bound[0].1.clone());
        return format!("{} {last} {}", names[0], bound[0].0);
    }
    // The leading column's range first, so the optimizer can use the key.
    params.push(bound[0].1.clone());
    let mut terms = Vec::with_capacity(n);
    for i in 0..n {
        let mut parts = Vec::with_capacity(i + 1);
        for j in 0..i {
            parts.push(format!("{} = {}", names[j], bound[j].0));
            params.push(bound[j].1.clone());
        }
        let op = if i == n - 1 { last } else { strict };
        parts.push(format!("{} {op} {}", names[i], bound[i].0));
        params.push(bound[i].1.clone());
        terms.push(format!("({})", parts.join(" AND ")));
    }
    format!(
        "({} {outer} {} AND ({}))",
        names[0],
        bound[0].0,
        terms.join(" OR ")
    )
}

/// A bound value as a parameter expression and its value.
fn param(codec: &KeyCodec, v: &str) -> std::result::Result<(String, MyValue), String> {
    Ok(match codec {
        KeyCodec::Int { unsigned: true } => (
            "?".into(),
            MyValue::UInt(v.parse().map_err(|_| "not an unsigned integer")?),
        ),
        KeyCodec::Int { unsigned: false } => (
            "?".into(),
            MyValue::Int(v.parse().map_err(|_| "not an integer")?),
        ),
        KeyCodec::Decimal { precision, scale } => {
            let ok = !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-');
            if !ok {
                return Err("not a decimal number".into());
            }
            (
                format!("CAST(? AS DECIMAL({precision},{scale}))"),
                MyValue::Bytes(v.as_bytes().to_vec()),
            )
        }
        KeyCodec::Date => {
            let (y, m, d) = parse_date(v)?;
            ("?".into(), MyValue::Date(y, m, d, 0, 0, 0, 0))
        }
        KeyCodec::DateTime => {
            let (date, time) = v.split_once(' ').ok_or("not YYYY-MM-DD HH:MM:SS.ffffff")?;
            let (y, m, d) = parse_date(date)?;
            let micros = parse_time(time)?;
            if !(0..86_400_000_000).contains(&micros) {
                return Err("time of day out of range".into());
            }
            let (h, mi, s, us) = split_micros(micros.unsigned_abs());
            ("?".into(), MyValue::Date(y, m, d, h as u8, mi, s, us))
        }
        KeyCodec::Time => {
            let micros = parse_time(v)?;
            let (h, mi, s, us) = split_micros(micros.unsigned_abs());
            let days = u32::try_from(h / 24).map_err(|_| "TIME out of range")?;
            (
                "?".into(),
                MyValue::Time(micros < 0, days, (h % 24) as u8, mi, s, us),
            )
        }
        KeyCodec::Text { charset, collation } => (
            format!("CONVERT(? USING {charset}) COLLATE {collation}"),
            MyValue::Bytes(v.as_bytes().to_vec()),
        ),
        KeyCodec::Binary => {
            if !v.len().is_multiple_of(2) || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("not hex".into());
            }
            ("UNHEX(?)".into(), MyValue::Bytes(v.as_bytes().to_vec()))
        }
    })
}

fn parse_date(v: &str) -> std::result::Result<(u16, u8, u8), String> {
    let mut it = v.split('-');
    let (Some(y), Some(m), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err("not YYYY-MM-DD".into());
    };
    let bad = |_| "not YYYY-MM-DD".to_string();
    let (y, m, d): (u16, u8, u8) = (
        y.parse().map_err(bad)?,
        m.parse().map_err(bad)?,
        d.parse().map_err(bad)?,
    );
    if y > 9999 || m > 12 || d > 31 {
        return Err("date out of range".into());
    }
    Ok((y, m, d))
}

/// `[-]H:MM:SS[.ffffff]` in signed microseconds.
fn parse_time(v: &str) -> std::result::Result<i64, String> {
    let (neg, body) = match v.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, v),
    };
    let (hms, frac) = body.split_once('.').unwrap_or((body, ""));
    let mut it = hms.split(':');
    let (Some(h), Some(m), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err("not H:MM:SS.ffffff".into());
    };
    let num = |x: &str| -> std::result::Result<i64, String> {
        if x.is_empty() || x.len() > 7 || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err("not H:MM:SS.ffffff".into());
        }
        x.parse().map_err(|_| "not H:MM:SS.ffffff".to_string())
    };
    let (h, m, s) = (num(h)?, num(m)?, num(s)?);
    let us = if frac.is_empty() {
        0
    } else {
        if frac.len() > 6 {
            return Err("more than 6 fractional digits".into());
        }
        num(frac)? * 10i64.pow(6 - frac.len() as u32)
    };
    if m > 59 || s > 59 {
        return Err("minutes or seconds out of range".into());
    }
    let micros = ((h * 60 + m) * 60 + s) * 1_000_000 + us;
    Ok(if neg { -micros } else { micros })
}

/// Microseconds as (hours, minutes, seconds, microseconds).
fn split_micros(micros: u64) -> (u64, u8, u8, u32) {
    let secs = micros / 1_000_000;
    (
        secs / 3600,
        (secs / 60 % 60) as u8,
        (secs % 60) as u8,
        (micros % 1_000_000) as u32,
    )
}

fn fmt_time(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let (h, m, s, us) = split_micros(micros.unsigned_abs());
    format!("{sign}{h}:{m:02}:{s:02}.{us:06}")
}

/// A key value read from the server as its bound text.
pub(crate) fn bound_text(
    codec: &KeyCodec,
    charset: &Charset,
    v: MyValue,
) -> std::result::Result<String, String> {
    Ok(match (codec, v) {
        (_, MyValue::NULL) => return Err("NULL in a primary key column".into()),
        (KeyCodec::Int { .. }, MyValue::Int(i)) => i.to_string(),
        (KeyCodec::Int { .. }, MyValue::UInt(u)) => u.to_string(),
        (KeyCodec::Int { .. } | KeyCodec::Decimal { .. }, MyValue::Bytes(b)) => {
            String::from_utf8(b).map_err(|_| "a number that is not text")?
        }
        (KeyCodec::Date, MyValue::Date(y, m, d, ..)) => format!("{y:04}-{m:02}-{d:02}"),
        (KeyCodec::DateTime, MyValue::Date(y, m, d, h, mi, s, us)) => {
            format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}")
        }
        (KeyCodec::Time, MyValue::Time(neg, days, h, m, s, us)) => {
            fmt_time(time_micros(neg, days, h, m, s, us))
        }
        (KeyCodec::Text { .. }, MyValue::Bytes(b)) => charset.decode(&b).map_err(|e| e.0)?,
        (KeyCodec::Binary, MyValue::Bytes(b)) => hex(&b),
        (c, v) => return Err(format!("unexpected value {v:?} for a {c:?} key")),
    })
}

fn time_micros(neg: bool, days: u32, h: u8, m: u8, s: u8, us: u32) -> i64 {
    let micros = (((i64::from(days) * 24 + i64::from(h)) * 60 + i64::from(m)) * 60 + i64::from(s))
        * 1_000_000
        + i64::from(us);
    if neg { -micros } else { micros }
}

/// Metadata bytes of a CHAR/BINARY/ENUM/SET column as a TABLE_MAP writes them.
fn string_meta(real: u8, len: u32) -> Vec<u8> {
    let high = ((len >> 8) & 3) as u8;
    vec![(real & !0x30) | (0x30 ^ (high << 4)), (len & 0xff) as u8]
}

/// One `information_schema.COLUMNS` row.
struct InfoColumn {
    name: String,
    data_type: String,
    column_type: String,
    charset: Option<String>,
    collation: Option<String>,
    octets: Option<u64>,
    precision: Option<u64>,
    scale: Option<u64>,
    fsp: Option<u64>,
    nullable: bool,
    json: bool,
}

/// The TABLE_MAP description of a column, rebuilt from `information_schema`.
fn raw_column(c: &InfoColumn) -> std::result::Result<RawColumn, String> {
    let dt = c.data_type.to_ascii_lowercase();
    let unsigned = c.column_type.to_ascii_lowercase().contains("unsigned");
    let octets = c.octets.unwrap_or(0).min(u64::from(u32::MAX)) as u32;
    let small = |v: Option<u64>, what: &str| -> std::result::Result<u8, String> {
        u8::try_from(v.unwrap_or(0)).map_err(|_| format!("{what} out of range"))
    };
    let text_charset = c.charset.as_deref().map(Charset::from_name);
    let binary = Some(Charset::Binary);
    let (type_code, meta, charset): (u8, Vec<u8>, Option<Charset>) = match dt.as_str() {
        "tinyint" => (ty::TINY, vec![], None),
        "smallint" => (ty::SHORT, vec![], None),
        "mediumint" => (ty::INT24, vec![], None),
        "int" | "integer" => (ty::LONG, vec![], None),
        "bigint" => (ty::LONGLONG, vec![], None),
        "float" => (ty::FLOAT, vec![4], None),
        "double" | "real" | "double precision" => (ty::DOUBLE, vec![8], None),
        "decimal" | "numeric" => (
            ty::NEWDECIMAL,
            vec![small(c.precision, "precision")?, small(c.scale, "scale")?],
            None,
        ),
        "year" => (ty::YEAR, vec![], None),
        "date" => (ty::DATE, vec![], None),
        "time" => (ty::TIME2, vec![small(c.fsp, "precision")?], None),
        "datetime" => (ty::DATETIME2, vec![small(c.fsp, "precision")?], None),
        "timestamp" => (ty::TIMESTAMP2, vec![small(c.fsp, "precision")?], None),
        "bit" => {
            let bits = c.precision.unwrap_or(1);
            (ty::BIT, vec![(bits % 8) as u8, (bits / 8) as u8], None)
        }
        "char" => (ty::STRING, string_meta(ty::STRING, octets), text_charset),
        "binary" => (ty::STRING, string_meta(ty::STRING, octets), binary),
        "varchar" | "varbinary" => {
            let len = u16::try_from(octets).map_err(|_| "VARCHAR longer than 65535 bytes")?;
            let cs = if dt == "varchar" {
                text_charset
            } else {
                binary
            };
            (ty::VARCHAR, len.to_le_bytes().to_vec(), cs)
        }
        "tinytext" | "text" | "mediumtext" | "longtext" | "tinyblob" | "blob" | "mediumblob"
        | "longblob" => {
            let n = if dt.starts_with("tiny") {
                1
            } else if dt.starts_with("medium") {
                3
            } else if dt.starts_with("long") {
                4
            } else {
                2
            };
            let cs = if dt.ends_with("text") {
                text_charset
            } else {
                binary
            };
            (ty::BLOB, vec![n], cs)
        }
        "json" => (ty::JSON, vec![4], None),
        "enum" | "set" => {
            let labels = parse_labels(&c.column_type).len();
            let (real, pack) = if dt == "enum" {
                (ty::ENUM, if labels > 255 { 2 } else { 1 })
            } else {
                let p = labels.div_ceil(8);
                (ty::SET, if p > 4 { 8 } else { p.max(1) as u8 })
            };
            (ty::STRING, vec![real, pack], text_charset)
        }
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => (ty::GEOMETRY, vec![4], None),
        other => {
            return Err(format!(
                "column type {other} ({}) is not supported by weir; leave the table out with \
                 `exclude` or change the column",
                c.column_type
            ));
        }
    };
    let labels = if dt == "enum" || dt == "set" {
        parse_labels(&c.column_type)
    } else {
        Vec::new()
    };
    Ok(RawColumn {
        type_code,
        meta,
        unsigned,
        charset,
        labels,
        json: c.json,
    })
}

/// How a key column of this kind bounds chunks (None: the table is one chunk).
fn key_codec(kind: &Kind, c: &InfoColumn) -> Option<KeyCodec> {
    let text = |cs: &Charset| -> Option<KeyCodec> {
        match cs {
            Charset::Binary => Some(KeyCodec::Binary),
            Charset::Unsupported(_) => None,
            _ => {
                let charset = c.charset.clone()?;
                let collation = c.collation.clone()?;
                (plain_ident(&charset) && plain_ident(&collation))
                    .then_some(KeyCodec::Text { charset, collation })
            }
        }
    };
    match kind {
        Kind::Int { unsigned, .. } => Some(KeyCodec::Int {
            unsigned: *unsigned,
        }),
        Kind::Year => Some(KeyCodec::Int { unsigned: false }),
        Kind::Decimal { precision, scale } => Some(KeyCodec::Decimal {
            precision: *precision,
            scale: *scale,
        }),
        Kind::Date => Some(KeyCodec::Date),
        Kind::DateTimeOld | Kind::DateTime2(_) | Kind::TimestampOld | Kind::Timestamp2(_) => {
            Some(KeyCodec::DateTime)
        }
        Kind::TimeOld | Kind::Time2(_) => Some(KeyCodec::Time),
        Kind::Char { charset, .. } | Kind::VarChar { charset, .. } => text(charset),
        Kind::Blob {
            charset,
            json: false,
            ..
        } => text(charset),
        _ => None,
    }
}

pub(crate) async fn server_facts(conn: &mut Conn, url: &str) -> Result<Facts> {
    let version: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(|e| snap_error("reading the server version", url, e))?;
    let mariadb = version
        .unwrap_or_default()
        .to_ascii_lowercase()
        .contains("mariadb");
    // Older servers have no binlog_row_metadata: never FULL there.
    let meta: Option<String> = conn
        .query_first("SELECT @@GLOBAL.binlog_row_metadata")
        .await
        .unwrap_or(None);
    Ok(Facts {
        mariadb,
        full_metadata: meta.is_some_and(|m| m.eq_ignore_ascii_case("FULL")),
    })
}

/// The selected base tables, sorted.
pub(crate) async fn selected_tables(
    conn: &mut Conn,
    cfg: &MysqlSourceConfig,
) -> Result<Vec<TableId>> {
    let rows: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN \
             ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1, 2",
        )
        .await
        .map_err(|e| snap_error("listing the tables", &cfg.url, e))?;
    for entry in &cfg.tables {
        if !rows
            .iter()
            .any(|(d, t)| crate::config::glob_match(entry, &format!("{d}.{t}")))
        {
            tracing::warn!(
                "mysql source: the `tables` entry {entry:?} matches no table (names are \
                 database.table); its tables are not snapshotted, and their changes stream only \
                 if such a table is created later; fix the entry if it is a typo"
            );
        }
    }
    Ok(rows
        .into_iter()
        .filter(|(d, t)| cfg.selects(d, t))
        .map(|(d, t)| TableId::new(d, t))
        .collect())
}

/// Reads the description of `table` (the current definition).
pub(crate) async fn table_meta(
    conn: &mut Conn,
    url: &str,
    facts: Facts,
    table: &TableId,
) -> Result<TableMeta> {
    type ColRow = (
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<u64>,
        Option<u64>,
        Option<u64>,
        Option<u64>,
        String,
    );
    let (db, name) = (table.schema.as_str(), table.name.as_str());
    let ctx = |what: &str| format!("reading the {what} of {table}");
    let rows: Vec<ColRow> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME, \
             CHARACTER_OCTET_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, \
             IS_NULLABLE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND \
             TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, name),
        )
        .await
        .map_err(|e| snap_error(&ctx("columns"), url, e))?;
    if rows.is_empty() {
        return Err(ConnectorError::definite(format!(
            "mysql snapshot: table {table} does not exist (dropped?); remove it from `tables` \
             or recreate it"
        )));
    }
    let checks: Vec<String> = if facts.mariadb {
        conn.exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE \
             CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (db, name),
        )
        .await
        .map_err(|e| snap_error(&ctx("checks"), url, e))?
    } else {
        Vec::new()
    };
    let pk: Vec<(String, Option<u64>)> = conn
        .exec(
            "SELECT COLUMN_NAME, SUB_PART FROM information_schema.STATISTICS WHERE \
             TABLE_SCHEMA = ? AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' \
             ORDER BY SEQ_IN_INDEX",
            (db, name),
        )
        .await
        .map_err(|e| snap_error(&ctx("primary key"), url, e))?;
    let estimated: Option<Option<u64>> = conn
        .exec_first(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND \
             TABLE_NAME = ?",
            (db, name),
        )
        .await
        .map_err(|e| snap_error(&ctx("row estimate"), url, e))?;

    let mut columns = Vec::with_capacity(rows.len());
    let mut schema_cols = Vec::with_capacity(rows.len());
    for (
        name,
        data_type,
        column_type,
        charset,
        collation,
        octets,
        precision,
        scale,
        fsp,
        nullable,
    ) in rows
    {
        let json_check = format!("json_valid(`{}`)", name.replace('`', "``"));
        let info = InfoColumn {
            json: data_type.eq_ignore_ascii_case("json")
                || checks
                    .iter()
                    .any(|c| c.replace(' ', "").eq_ignore_ascii_case(&json_check)),
            name,
            data_type,
            column_type,
            charset,
            collation,
            octets,
            precision,
            scale,
            fsp,
            nullable: nullable == "YES",
        };
        let bad = |e: String| {
            ConnectorError::definite(format!(
                "mysql snapshot: cannot read column {} of {table}: {e}",
                info.name
            ))
        };
        let raw = raw_column(&info).map_err(bad)?;
        let (kind, ty, source_type) = decode::classify(&raw).map_err(|e| bad(e.0))?;
        schema_cols.push(Column {
            name: info.name.clone(),
            ty,
            source_type,
            nullable: info.nullable,
        });
        columns.push(ColumnMeta {
            codec: key_codec(&kind, &info),
            name: info.name,
            charset: raw.charset.unwrap_or(Charset::Utf8mb4),
            kind,
        });
    }
    let mut key = Vec::with_capacity(pk.len());
    let mut prefix = false;
    for (col, sub_part) in &pk {
        let i = columns.iter().position(|c| &c.name == col).ok_or_else(|| {
            ConnectorError::transient(format!(
                "mysql snapshot: primary key column {col} of {table} is not among its columns \
                 (the table changed while weir read it); retrying"
            ))
        })?;
        prefix |= sub_part.is_some();
        key.push(i);
    }
    let primary_key = if facts.full_metadata {
        key.clone()
    } else {
        let mut k = key.clone();
        k.sort_unstable();
        k
    };
    let chunkable = !prefix && key.iter().all(|&i| columns[i].codec.is_some());
    if !key.is_empty() && !chunkable {
        tracing::info!(
            table = %table,
            "the primary key has a prefix part or a column type weir cannot bound chunks by \
             (FLOAT, BIT, ENUM, SET, ...): the table is read as one chunk"
        );
    }
    Ok(TableMeta {
        schema: TableSchema {
            table: table.clone(),
            version: 0,
            columns: schema_cols,
            primary_key,
        },
        columns,
        key: if chunkable { key } else { Vec::new() },
        estimated_rows: estimated.flatten().unwrap_or(0),
    })
}

/// Cuts `meta`'s table into chunks of `chunk_rows` keys, numbering them from `first_index`.
async fn plan_chunks(
    conn: &mut Conn,
    url: &str,
    meta: &TableMeta,
    chunk_rows: u64,
    first_index: u32,
) -> Result<Vec<SnapshotChunk>> {
    let table = &meta.schema.table;
    if meta.key.is_empty() || chunk_rows == 0 {
        return Ok(vec![SnapshotChunk {
            table: table.clone(),
            index: first_index,
            after: None,
            upto: None,
            estimated_rows: meta.estimated_rows,
        }]);
    }
    let names = meta.key_names();
    let mut chunks = Vec::new();
    let mut after: Option<Vec<String>> = None;
    loop {
        let (filter, params) = meta.range(after.as_deref(), None)?;
        let sql = format!(
            "SELECT {} FROM {}{filter} ORDER BY {} LIMIT 1 OFFSET {}",
            names.join(", "),
            qualified(table),
            names.join(", "),
            chunk_rows - 1
        );
        let row: Option<mysql_async::Row> = conn
            .exec_first(sql, params)
            .await
            .map_err(|e| snap_error(&format!("finding chunk bounds of {table}"), url, e))?;
        let index = first_index + chunks.len() as u32;
        let Some(row) = row else {
            let counted = chunk_rows * chunks.len() as u64;
            chunks.push(SnapshotChunk {
                table: table.clone(),
                index,
                after,
                upto: None,
                estimated_rows: meta.estimated_rows.saturating_sub(counted).max(1),
            });
            return Ok(chunks);
        };
        let values = row.unwrap_raw();
        let mut upto = Vec::with_capacity(meta.key.len());
        for (&i, v) in meta.key.iter().zip(values) {
            let col = &meta.columns[i];
            let codec = col.codec.as_ref().ok_or_else(|| {
                ConnectorError::definite(format!("mysql snapshot: {table} key has no codec"))
            })?;
            let text =
                bound_text(codec, &col.charset, v.unwrap_or(MyValue::NULL)).map_err(|e| {
                    ConnectorError::definite(format!(
                        "mysql snapshot: key column {} of {table}: {e}",
                        col.name
                    ))
                })?;
            upto.push(text);
        }
        chunks.push(SnapshotChunk {
            table: table.clone(),
            index,
            after: after.take(),
            upto: Some(upto.clone()),
            estimated_rows: chunk_rows,
        });
        after = Some(upto);
    }
}

/// Converts a row read with the binary protocol (`SELECT` of `meta.columns`) as the stream
/// decodes the same row; also returns its bytes (roughly).
pub(crate) fn convert_row(meta: &TableMeta, raw: Vec<Option<MyValue>>) -> Result<(Row, usize)> {
    let table = &meta.schema.table;
    if raw.len() != meta.columns.len() {
        return Err(ConnectorError::definite(format!(
            "mysql snapshot: a row of {table} has {} values for {} columns",
            raw.len(),
            meta.columns.len()
        )));
    }
    let mut bytes = 0;
    let mut values = Vec::with_capacity(raw.len());
    for (col, v) in meta.columns.iter().zip(raw) {
        let v = v.unwrap_or(MyValue::NULL);
        if let MyValue::Bytes(b) = &v {
            bytes += b.len();
        }
        values.push(convert(col, v).map_err(|e| {
            ConnectorError::definite(format!(
                "mysql snapshot: {table} column {} ({}): {e}",
                col.name,
                meta.schema
                    .columns
                    .iter()
                    .find(|c| c.name == col.name)
                    .map(|c| c.source_type.as_str())
                    .unwrap_or("?")
            ))
        })?);
    }
    Ok((Row(values), bytes))
}

/// Converts one value read with the binary protocol as the stream decodes the same column.
fn convert(col: &ColumnMeta, v: MyValue) -> std::result::Result<Value, String> {
    let text = |b: &[u8], cs: &Charset| -> std::result::Result<String, String> {
        cs.decode(b).map_err(|e| e.0)
    };
    let int = |v: &MyValue| -> std::result::Result<i128, String> {
        match v {
            MyValue::Int(i) => Ok(i128::from(*i)),
            MyValue::UInt(u) => Ok(i128::from(*u)),
            MyValue::Bytes(b) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| "an integer that is not a number".to_string()),
            other => Err(format!("{other:?} for an integer column")),
        }
    };
    if v == MyValue::NULL {
        return Ok(Value::Null);
    }
    Ok(match (&col.kind, v) {
        (Kind::Int { unsigned: true, .. }, v) => Value::UInt(
            u64::try_from(int(&v)?).map_err(|_| "out of range for UNSIGNED".to_string())?,
        ),
        (Kind::Int { .. } | Kind::Year, v) => {
            Value::Int(i64::try_from(int(&v)?).map_err(|_| "out of range for BIGINT".to_string())?)
        }
        (Kind::Float, MyValue::Float(f)) => Value::Float32(f),
        (Kind::Float, MyValue::Double(d)) => Value::Float32(d as f32),
        (Kind::Double, MyValue::Double(d)) => Value::Float64(d),
        (Kind::Double, MyValue::Float(f)) => Value::Float64(f64::from(f)),
        (Kind::Decimal { .. }, MyValue::Bytes(b)) => {
            Value::Decimal(String::from_utf8(b).map_err(|_| "DECIMAL that is not text")?)
        }
        (Kind::Date, MyValue::Date(y, m, d, ..)) => Value::Date(Date::new(i32::from(y), m, d)),
        (Kind::DateTimeOld | Kind::DateTime2(_), MyValue::Date(y, m, d, h, mi, s, us)) => {
            Value::Timestamp(timestamp(y, m, d, h, mi, s, us)?)
        }
        (Kind::TimestampOld | Kind::Timestamp2(_), MyValue::Date(y, m, d, h, mi, s, us)) => {
            Value::TimestampTz(timestamp(y, m, d, h, mi, s, us)?)
        }
        (Kind::TimeOld | Kind::Time2(_), MyValue::Time(neg, days, h, m, s, us)) => {
            if m > 59 || s > 59 || us > 999_999 {
                return Err(format!("invalid TIME {h}:{m}:{s}.{us}"));
            }
            Value::Time(Time {
                micros: time_micros(neg, days, h, m, s, us),
            })
        }
        (Kind::Bit(bits), MyValue::Bytes(b)) => {
            if b.len() > 8 {
                return Err(format!("BIT value of {} bytes", b.len()));
            }
            let v = b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
            Value::Bits(
                (0..*bits)
                    .rev()
                    .map(|i| if (v >> i) & 1 == 1 { '1' } else { '0' })
                    .collect(),
            )
        }
        (Kind::Char { max_bytes, charset }, MyValue::Bytes(b)) => {
            if *charset == Charset::Binary {
                let mut v = b;
                if v.len() < *max_bytes as usize {
                    v.resize(*max_bytes as usize, 0);
                }
                Value::Bytes(v)
            } else {
                Value::Text(text(&b, charset)?)
            }
        }
        (Kind::VarChar { charset, .. }, MyValue::Bytes(b))
        | (
            Kind::Blob {
                charset,
                json: false,
                ..
            },
            MyValue::Bytes(b),
        ) => {
            if *charset == Charset::Binary {
                Value::Bytes(b)
            } else {
                Value::Text(text(&b, charset)?)
            }
        }
        (
            Kind::Blob {
                charset,
                json: true,
                ..
            },
            MyValue::Bytes(b),
        ) => Value::Json(text(&b, charset)?),
        (Kind::Json { .. }, MyValue::Bytes(b)) => {
            // The stream renders MySQL binary JSON through serde_json; do the same.
            let j: serde_json::Value =
                serde_json::from_slice(&b).map_err(|e| format!("bad JSON: {e}"))?;
            Value::Json(j.to_string())
        }
        (Kind::Enum { .. } | Kind::Set { .. }, MyValue::Bytes(b)) => {
            if col.charset == Charset::Binary {
                Value::Text(String::from_utf8_lossy(&b).into_owned())
            } else {
                Value::Text(text(&b, &col.charset)?)
            }
        }
        (Kind::Geometry { .. }, MyValue::Bytes(b)) => {
            Value::Other(decode::geometry_to_wkt(&b).map_err(|e| e.0)?)
        }
        (Kind::Null, _) => Value::Null,
        (kind, v) => return Err(format!("unexpected value {v:?} for a {kind:?} column")),
    })
}

fn timestamp(
    y: u16,
    m: u8,
    d: u8,
    h: u8,
    mi: u8,
    s: u8,
    us: u32,
) -> std::result::Result<Timestamp, String> {
    if m > 12 || d > 31 || h > 23 || mi > 59 || s > 59 || us > 999_999 {
        return Err(format!(
            "invalid DATETIME {y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"
        ));
    }
    Ok(Timestamp {
        date: Date::new(i32::from(y), m, d),
        micros: ((u64::from(h) * 60 + u64::from(mi)) * 60 + u64::from(s)) * 1_000_000
            + u64::from(us),
    })
}

/// Opens a session for snapshot work, with the settings the value conversion expects.
pub(crate) async fn connect(url: &str, what: &str) -> Result<Conn> {
    let o = opts(url).map_err(|e| ConnectorError::definite(format!("mysql snapshot: {e}")))?;
    let ctx = format!(
        "connecting {what} to {}:{}",
        o.ip_or_hostname(),
        o.tcp_port()
    );
    let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(o)).await {
        Ok(r) => r.map_err(|e| snap_error(&ctx, url, e))?,
        Err(_) => {
            return Err(ConnectorError::transient(format!(
                "mysql snapshot: {ctx}: timed out after {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    };
    for q in [
        "SET NAMES utf8mb4",
        "SET SESSION character_set_results = NULL, SESSION time_zone = '+00:00', \
         SESSION net_write_timeout = 3600",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
    ] {
        conn.query_drop(q)
            .await
            .map_err(|e| snap_error(&format!("preparing the session ({q})"), url, e))?;
    }
    Ok(conn)
}

pub(crate) async fn begin(conn: &mut Conn, url: &str) -> Result<()> {
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(|e| snap_error("starting a consistent-snapshot transaction", url, e))
}

/// A session in a fresh consistent snapshot.
async fn fresh_session(url: &str) -> Result<Conn> {
    let mut conn = connect(url, "a snapshot worker").await?;
    begin(&mut conn, url).await?;
    Ok(conn)
}

/// The MySQL / MariaDB [`Snapshot`].
pub struct MysqlSnapshot {
    cfg: MysqlSourceConfig,
    settings: SnapshotSettings,
    /// Reads positions exactly as the stream understands them.
    source: MysqlSource,
    facts: Option<Facts>,
    /// Sessions inside the consistent view, waiting for `reader()`.
    pool: VecDeque<Conn>,
    tables: Arc<HashMap<TableId, Arc<TableMeta>>>,
    stream_from: Option<SourcePosition>,
    /// The view is already newer than `stream_from` (after `resume`): extra readers are fine.
    fresh: bool,
}

impl std::fmt::Debug for MysqlSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlSnapshot")
            .field("cfg", &self.cfg)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl MysqlSnapshot {
    /// A snapshot reader for the source `cfg` of pipeline `pipeline_name`; nothing connects
    /// before [`Snapshot::plan`] or [`Snapshot::resume`].
    pub fn new(cfg: MysqlSourceConfig, pipeline_name: &str, settings: SnapshotSettings) -> Self {
        MysqlSnapshot {
            source: MysqlSource::new(cfg.clone(), pipeline_name),
            cfg,
            settings,
            facts: None,
            pool: VecDeque::new(),
            tables: Arc::new(HashMap::new()),
            stream_from: None,
            fresh: false,
        }
    }

    fn workers(&self) -> usize {
        self.settings.workers.max(1)
    }

    async fn facts(&mut self, conn: &mut Conn) -> Result<Facts> {
        if let Some(f) = self.facts {
            return Ok(f);
        }
        let f = server_facts(conn, &self.cfg.url).await?;
        self.facts = Some(f);
        Ok(f)
    }

    /// Takes the lock that freezes the selected tables: FTWRL, else `LOCK TABLES ... READ`.
    async fn lock(&self, ctl: &mut Conn, tables: &[TableId]) -> Result<()> {
        lock_tables(ctl, &self.cfg.url, tables).await
    }
}

/// Takes the lock that freezes `tables`: FTWRL, else `LOCK TABLES ... READ`.
pub(crate) async fn lock_tables(ctl: &mut Conn, url: &str, tables: &[TableId]) -> Result<()> {
    {
        ctl.query_drop(format!("SET SESSION lock_wait_timeout = {LOCK_WAIT_SECS}"))
            .await
            .map_err(|e| snap_error("setting lock_wait_timeout", url, e))?;
        let e = match ctl.query_drop("FLUSH TABLES WITH READ LOCK").await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // 1227: "you need (at least one of) the RELOAD privilege(s)".
        if !matches!(server_code(&e), Some(1227 | 1044 | 1045 | 1142)) {
            return Err(snap_error(
                &format!(
                    "FLUSH TABLES WITH READ LOCK (waits up to {LOCK_WAIT_SECS} s for running \
                     statements; retried)"
                ),
                url,
                e,
            ));
        }
        tracing::warn!(
            "the snapshot user lacks RELOAD, so FLUSH TABLES WITH READ LOCK is refused; \
             locking the selected tables with LOCK TABLES ... READ while the snapshot \
             sessions start instead (writers of those tables wait a moment)"
        );
        let list: Vec<String> = tables
            .iter()
            .map(|t| format!("{} READ", qualified(t)))
            .collect();
        ctl.query_drop(format!("LOCK TABLES {}", list.join(", ")))
            .await
            .map_err(|e| {
                let mut err =
                    snap_error("LOCK TABLES ... READ (the fallback without RELOAD)", url, e);
                if let ConnectorError::Definite { message, .. } = &mut err {
                    message.push_str(
                        "; the snapshot needs either RELOAD (GRANT RELOAD ON *.* TO ...) or \
                         LOCK TABLES and SELECT on the selected tables",
                    );
                }
                err
            })
    }
}

#[async_trait]
impl Snapshot for MysqlSnapshot {
    async fn plan(&mut self) -> Result<SnapshotPlan> {
        let url = self.cfg.url.clone();
        self.pool.clear();
        self.fresh = false;
        let mut ctl = connect(&url, "to plan the snapshot").await?;
        let facts = self.facts(&mut ctl).await?;
        let tables = selected_tables(&mut ctl, &self.cfg).await?;
        // Everything that can be slow happens before the lock: sessions, server facts.
        let mut sessions = Vec::with_capacity(self.workers() + 1);
        for _ in 0..=self.workers() {
            sessions.push(connect(&url, "a snapshot worker").await?);
        }
        self.source.end_position().await?;

        let locked = if tables.is_empty() {
            None
        } else {
            Some(self.lock(&mut ctl, &tables).await)
        };
        let inside = async {
            if let Some(r) = locked {
                r?;
            }
            let stream_from = self.source.end_position().await?;
            for s in &mut sessions {
                begin(s, &url).await?;
            }
            Ok::<_, ConnectorError>(stream_from)
        }
        .await;
        // Release whatever happened; a failed UNLOCK is harmless once the session closes.
        let _ = ctl.query_drop("UNLOCK TABLES").await;
        drop(ctl);
        let stream_from = inside?;
        self.stream_from = Some(stream_from.clone());

        let mut planner = sessions.remove(0);
        let mut schemas = Vec::with_capacity(tables.len());
        let mut chunks = Vec::new();
        let mut metas = HashMap::new();
        for table in &tables {
            let meta = table_meta(&mut planner, &url, facts, table).await?;
            let first = chunks.len() as u32;
            chunks.extend(
                plan_chunks(&mut planner, &url, &meta, self.settings.chunk_rows, first).await?,
            );
            schemas.push(meta.schema.clone());
            metas.insert(table.clone(), Arc::new(meta));
        }
        self.tables = Arc::new(metas);
        self.pool = std::iter::once(planner).chain(sessions).collect();
        // The planner walked the keys; the workers are still idle: hand them out first.
        self.pool.rotate_left(1);
        Ok(SnapshotPlan {
            schemas,
            chunks,
            stream_from,
        })
    }

    async fn resume(&mut self, plan: &SnapshotPlan) -> Result<()> {
        let url = self.cfg.url.clone();
        let SourcePosition::Mysql(from) = &plan.stream_from else {
            return Err(ConnectorError::definite(format!(
                "mysql snapshot: the stored snapshot plan streams from {}, not a mysql \
                 position; remove the pipeline's staging log (<data_dir>/<name>) to start over",
                plan.stream_from
            )));
        };
        let mut conn = connect(&url, "to resume the snapshot").await?;
        self.facts(&mut conn).await?;
        match conn.query::<mysql_async::Row, _>("SHOW BINARY LOGS").await {
            Ok(rows) => {
                // MySQL 8 adds an Encrypted column: read the name only, never by shape.
                let logs: Vec<(String, ())> = rows
                    .into_iter()
                    .filter_map(|r| r.get_opt::<String, _>(0).and_then(|x| x.ok()))
                    .map(|f| (f, ()))
                    .collect();
                if !logs.iter().any(|(f, _)| *f == from.file) {
                    let have = match (logs.first(), logs.last()) {
                        (Some(a), Some(b)) => format!("{} to {}", a.0, b.0),
                        _ => "none".into(),
                    };
                    return Err(ConnectorError::definite(format!(
                        "mysql snapshot: binlog {} (the snapshot's consistent point {}) is \
                         not on the server any more (purged; it has {have}), so the changes \
                         made since the snapshot started are lost; re-snapshot: remove the \
                         pipeline's staging log (<data_dir>/<name>) and run again",
                        from.file, plan.stream_from
                    )));
                }
            }
            Err(e) => tracing::warn!(
                error = %my_error("SHOW BINARY LOGS", &url, e),
                "cannot list the binlogs to check the snapshot's consistent point is still \
                 there; the stream checks it when it starts"
            ),
        }
        drop(conn);
        self.pool.clear();
        for _ in 0..self.workers() {
            self.pool.push_back(fresh_session(&url).await?);
        }
        self.tables = Arc::new(HashMap::new());
        self.stream_from = Some(plan.stream_from.clone());
        self.fresh = true;
        Ok(())
    }

    async fn reader(&mut self) -> Result<Box<dyn ChunkReader>> {
        let stream_from = self
            .stream_from
            .clone()
            .ok_or_else(|| ConnectorError::definite("mysql snapshot: reader() before plan()"))?;
        let conn = match self.pool.pop_front() {
            Some(c) => c,
            None => {
                if !self.fresh {
                    tracing::warn!(
                        workers = self.settings.workers,
                        "more snapshot readers than sessions opened at the consistent point \
                         (SnapshotSettings::workers): this one reads a newer view; the stream \
                         replays the changes in between, so targets still converge"
                    );
                }
                fresh_session(&self.cfg.url).await?
            }
        };
        let facts = match self.facts {
            Some(f) => f,
            None => {
                return Err(ConnectorError::definite(
                    "mysql snapshot: reader() before plan()",
                ));
            }
        };
        Ok(Box::new(MysqlChunkReader {
            url: self.cfg.url.clone(),
            facts,
            conn: Some(conn),
            shared: Arc::clone(&self.tables),
            tables: HashMap::new(),
            task: None,
            rx: None,
            pending: VecDeque::new(),
            open: None,
            stream_from,
            ts_ms: now_ms(),
        }))
    }

    async fn readers_ready(&mut self) -> Result<()> {
        while let Some(mut c) = self.pool.pop_front() {
            let _ = c.query_drop("ROLLBACK").await;
            let _ = c.disconnect().await;
        }
        Ok(())
    }
}

type ReadResult = (Conn, Result<()>);

/// One worker's session, inside the consistent view.
struct MysqlChunkReader {
    url: String,
    facts: Facts,
    /// The session while no chunk is being read (the reading task owns it meanwhile).
    conn: Option<Conn>,
    shared: Arc<HashMap<TableId, Arc<TableMeta>>>,
    tables: HashMap<TableId, Arc<TableMeta>>,
    task: Option<JoinHandle<ReadResult>>,
    rx: Option<mpsc::Receiver<Vec<Row>>>,
    pending: VecDeque<Row>,
    /// The table of the open chunk.
    open: Option<TableId>,
    stream_from: SourcePosition,
    ts_ms: i64,
}

impl Drop for MysqlChunkReader {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl MysqlChunkReader {
    fn lost(&self) -> ConnectorError {
        ConnectorError::transient(
            "mysql snapshot: the worker's session failed while reading a chunk; the snapshot \
             retries from the last finished chunk",
        )
    }

    /// Waits for the reading task and takes the session back.
    async fn finish(&mut self) -> Result<()> {
        self.rx = None;
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok((conn, r)) => {
                if r.is_ok() {
                    self.conn = Some(conn);
                }
                r
            }
            Err(e) => Err(ConnectorError::transient(format!(
                "mysql snapshot: a chunk reading task ended abnormally: {e}"
            ))),
        }
    }
}

async fn read_rows(
    conn: &mut Conn,
    sql: String,
    params: Vec<MyValue>,
    meta: &TableMeta,
    tx: &mpsc::Sender<Vec<Row>>,
    url: &str,
) -> Result<()> {
    let table = &meta.schema.table;
    let mut result = conn
        .exec_iter(sql, params)
        .await
        .map_err(|e| snap_error(&format!("reading {table}"), url, e))?;
    let mut batch = Vec::with_capacity(SEND_ROWS);
    let mut bytes = 0usize;
    while let Some(row) = result
        .next()
        .await
        .map_err(|e| snap_error(&format!("reading {table}"), url, e))?
    {
        let (row, size) = convert_row(meta, row.unwrap_raw())?;
        bytes += size;
        batch.push(row);
        if batch.len() >= SEND_ROWS || bytes >= SEND_BYTES {
            bytes = 0;
            if tx.send(std::mem::take(&mut batch)).await.is_err() {
                // The reader is gone: stop.
                return Ok(());
            }
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(batch).await;
    }
    Ok(())
}

#[async_trait]
impl ChunkReader for MysqlChunkReader {
    async fn open(&mut self, chunk: &SnapshotChunk) -> Result<()> {
        if self.task.is_some() {
            // A chunk left unfinished: drain its task so the session is free again.
            self.rx = None;
            self.finish().await?;
        }
        self.pending.clear();
        let Some(mut conn) = self.conn.take() else {
            return Err(self.lost());
        };
        let meta = match self
            .tables
            .get(&chunk.table)
            .or_else(|| self.shared.get(&chunk.table))
        {
            Some(m) => Arc::clone(m),
            None => {
                let m = table_meta(&mut conn, &self.url, self.facts, &chunk.table).await;
                let m = match m {
                    Ok(m) => Arc::new(m),
                    Err(e) => {
                        self.conn = Some(conn);
                        return Err(e);
                    }
                };
                self.tables.insert(chunk.table.clone(), Arc::clone(&m));
                m
            }
        };
        let bounded = chunk.after.is_some() || chunk.upto.is_some();
        if bounded && meta.key.is_empty() {
            self.conn = Some(conn);
            return Err(ConnectorError::definite(format!(
                "mysql snapshot: chunk {} of {} has key bounds but the table has no usable \
                 primary key now (changed since the plan); remove the pipeline's staging log \
                 (<data_dir>/<name>) to snapshot again",
                chunk.index, chunk.table
            )));
        }
        let (filter, params) = match meta.range(chunk.after.as_deref(), chunk.upto.as_deref()) {
            Ok(r) => r,
            Err(e) => {
                self.conn = Some(conn);
                return Err(e);
            }
        };
        let cols: Vec<String> = meta.columns.iter().map(|c| quote_ident(&c.name)).collect();
        let sql = format!(
            "SELECT {} FROM {}{filter}",
            cols.join(", "),
            qualified(&chunk.table)
        );
        let (tx, rx) = mpsc::channel(2);
        let url = self.url.clone();
        self.task = Some(tokio::spawn(async move {
            let r = read_rows(&mut conn, sql, params, &meta, &tx, &url).await;
            (conn, r)
        }));
        self.rx = Some(rx);
        self.open = Some(chunk.table.clone());
        Ok(())
    }

    async fn next_batch(&mut self, max_rows: usize) -> Result<Option<Vec<ChangeEvent>>> {
        let Some(table) = self.open.clone() else {
            return Ok(None);
        };
        let max = max_rows.max(1);
        let mut events = Vec::new();
        while events.len() < max {
            if let Some(row) = self.pending.pop_front() {
                events.push(ChangeEvent {
                    table: table.to_shared(),
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
            let Some(rx) = self.rx.as_mut() else { break };
            match rx.recv().await {
                Some(rows) => self.pending.extend(rows),
                None => {
                    self.finish().await?;
                    break;
                }
            }
        }
        if events.is_empty() {
            self.open = None;
            return Ok(None);
        }
        Ok(Some(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_round_trip_through_parameters() {
        let (e, v) = param(&KeyCodec::Int { unsigned: true }, "18446744073709551615").unwrap();
        assert_eq!((e.as_str(), v), ("?", MyValue::UInt(u64::MAX)));
        assert!(param(&KeyCodec::Int { unsigned: false }, "1; DROP TABLE x").is_err());
        let d = KeyCodec::Decimal {
            precision: 65,
            scale: 30,
        };
        assert_eq!(param(&d, "-1.50").unwrap().0, "CAST(? AS DECIMAL(65,30))");
        assert!(param(&d, "1' OR '1").is_err());
        let (_, v) = param(&KeyCodec::DateTime, "2024-02-29 13:45:01.000001").unwrap();
        assert_eq!(v, MyValue::Date(2024, 2, 29, 13, 45, 1, 1));
        assert_eq!(
            param(&KeyCodec::Date, "0000-00-00").unwrap().1,
            MyValue::Date(0, 0, 0, 0, 0, 0, 0)
        );
        let (_, v) = param(&KeyCodec::Time, "-838:59:59.000000").unwrap();
        assert_eq!(v, MyValue::Time(true, 34, 22, 59, 59, 0));
        assert_eq!(
            bound_text(&KeyCodec::Time, &Charset::Binary, v).unwrap(),
            "-838:59:59.000000"
        );
        assert!(param(&KeyCodec::Binary, "0g").is_err());
        assert_eq!(
            bound_text(
                &KeyCodec::Binary,
                &Charset::Binary,
                MyValue::Bytes(vec![0, 0xff])
            )
            .unwrap(),
            "00ff"
        );
        let t = KeyCodec::Text {
            charset: "latin1".into(),
            collation: "latin1_swedish_ci".into(),
        };
        let (e, v) = param(&t, "it's \\ ü").unwrap();
        assert_eq!(e, "CONVERT(? USING latin1) COLLATE latin1_swedish_ci");
        assert_eq!(v, MyValue::Bytes("it's \\ ü".as_bytes().to_vec()));
        assert!(bound_text(&t, &Charset::Utf8mb4, MyValue::NULL).is_err());
    }

    #[test]
    fn composite_comparisons() {
        let names = vec!["`a`".to_string(), "`b`".to_string()];
        let bound = vec![
            ("?".to_string(), MyValue::Int(1)),
            ("UNHEX(?)".to_string(), MyValue::Bytes(b"00".to_vec())),
        ];
        let mut p = Vec::new();
        let sql = compare(&names, &bound, true, &mut p);
        assert_eq!(
            sql,
            "(`a` >= ? AND ((`a` > ?) OR (`a` = ? AND `b` > UNHEX(?))))"
        );
        assert_eq!(p.len(), 4);
        let mut p = Vec::new();
        let sql = compare(&names, &bound, false, &mut p);
        assert_eq!(
            sql,
            "(`a` <= ? AND ((`a` < ?) OR (`a` = ? AND `b` <= UNHEX(?))))"
        );
        let mut p = Vec::new();
        assert_eq!(compare(&names[..1], &bound[..1], true, &mut p), "`a` > ?");
        assert_eq!(p, vec![MyValue::Int(1)]);
    }

    #[test]
    fn char_metadata_matches_the_table_map_encoding() {
        for len in [0u32, 4, 40, 255, 256, 600, 1020] {
            let (real, l) = decode::real_type(ty::STRING, &string_meta(ty::STRING, len)).unwrap();
            assert_eq!((real, l), (ty::STRING, len));
        }
        let (real, _) = decode::real_type(ty::STRING, &string_meta(ty::ENUM, 1)).unwrap();
        assert_eq!(real, ty::ENUM);
    }

    #[test]
    fn values_convert_like_the_stream() {
        let col = |kind| ColumnMeta {
            name: "c".into(),
            kind,
            charset: Charset::Latin1,
            codec: None,
        };
        assert_eq!(
            convert(&col(Kind::Bit(10)), MyValue::Bytes(vec![0b10, 0b101])).unwrap(),
            Value::Bits("1000000101".into())
        );
        assert_eq!(
            convert(&col(Kind::Time2(6)), MyValue::Time(false, 1, 1, 0, 0, 1)).unwrap(),
            Value::Time(Time::hms(25, 0, 0, 1))
        );
        assert_eq!(
            convert(
                &col(Kind::Enum {
                    pack: 1,
                    labels: vec![]
                }),
                MyValue::Bytes(vec![b'c', 0xe9, 0x80])
            )
            .unwrap(),
            Value::Text("cé€".into())
        );
        assert!(
            convert(
                &col(Kind::Int {
                    bytes: 1,
                    unsigned: true
                }),
                MyValue::Int(-1)
            )
            .is_err()
        );
        assert!(
            convert(
                &col(Kind::DateTime2(6)),
                MyValue::Date(2024, 13, 1, 0, 0, 0, 0)
            )
            .is_err()
        );
        assert_eq!(
            convert(
                &col(Kind::Timestamp2(0)),
                MyValue::Date(0, 0, 0, 0, 0, 0, 0)
            )
            .unwrap(),
            Value::TimestampTz(Timestamp {
                date: Date::new(0, 0, 0),
                micros: 0
            })
        );
    }
}
