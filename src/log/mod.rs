//! The staging log: source transactions, staged durably in RocksDB, read by each sink at its
//! own cursor.
//!
//! ```text
//!  source task ──WriteOp──▶ writer thread ──WriteBatch (sync per group)──▶ RocksDB
//!                                 │                                        │
//!       ack ◀── durable head ◀────┘               sink tasks ◀── LogReader ┘ (seq ≤ head)
//! ```
//!
//! Invariants:
//! - Sequences are dense and start at 1. The `events` column family maps big-endian sequence
//!   to one [`record::Stored`], each value starting with a format version byte; or, for the
//!   changes of a transaction, to a *pack* of records with consecutive sequences, stored under
//!   the first one's (see [`record`]). Schema and commit records are never packed, so a
//!   commit's sequence is always a key of its own.
//! - The metadata record `head` names the last *visible* commit. It is written in the same
//!   atomic `WriteBatch` as that commit record, with the commit's source position, so the log
//!   and the position acknowledged to the source cannot disagree.
//! - Readers never read past `head`. A large transaction is written in chunks as it arrives
//!   (memory stays bounded); its records are invisible until its commit moves `head`. On open,
//!   everything after `head` (a transaction torn by a crash) is deleted.
//! - Group commit: the writer drains every operation waiting in its queue into one batch and
//!   syncs once for all the commits in it.
//! - Retention deletes records below the slowest sink's cursor (a range delete).
//! - Schema versions are assigned here, durably: a schema announced by the source gets a new
//!   version only if its shape differs from the table's latest; changes are stamped with it.

pub mod record;
pub mod torture;
mod writer;
pub(crate) use writer::now_ms;

pub use record::{Cursor, Head};
pub use writer::{LogWriter, WriteOp};

use record::{DecodeError, Stored};
use rocksdb::{
    ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, ReadOptions, WriteBatch,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, watch};
use weir_api::{Entry, LogEntry, TableId, TableSchema};

/// A stored key and value.
type KeyValue = (Box<[u8]>, Box<[u8]>);

const EVENTS: &str = "events";
const META: &str = "meta";
const HEAD_KEY: &[u8] = b"head";
const FIRST_KEY: &[u8] = b"first";
const SNAPSHOT_PLAN_KEY: &[u8] = b"snapshot_plan";
const CURSOR_PREFIX: &[u8] = b"cursor/";
const SCHEMA_PREFIX: &[u8] = b"schema/";

/// Staging log errors.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// RocksDB failed.
    #[error("staging log {path}: {what}")]
    Rocks {
        /// Log directory.
        path: String,
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: rocksdb::Error,
    },
    /// A stored record could not be read.
    #[error("staging log {path}: record {seq} cannot be read")]
    Decode {
        /// Log directory.
        path: String,
        /// Sequence.
        seq: u64,
        /// Cause.
        #[source]
        source: DecodeError,
    },
    /// A record could not be encoded.
    #[error("staging log: cannot encode a record")]
    Encode(#[from] bincode::error::EncodeError),
    /// The source broke the contract.
    #[error("{0}")]
    Protocol(String),
    /// The writer stopped.
    #[error("the staging log writer has stopped")]
    WriterGone,
}

/// Tuning.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Bytes of unsynced chunk data after which a large transaction's records are written out.
    pub chunk_bytes: usize,
    /// Upper bound of one group-commit batch.
    pub group_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            chunk_bytes: 4 << 20,
            group_bytes: 16 << 20,
        }
    }
}

/// What [`LogReader::read`] returns.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// Entries in sequence order.
    pub entries: Vec<LogEntry>,
    /// The last commit among them, as a cursor.
    pub last_commit: Option<Cursor>,
}

/// The staging log.
pub struct StagingLog {
    db: DB,
    path: PathBuf,
    opts: LogOptions,
    head: watch::Sender<Head>,
    /// Bytes the writer has encoded so far, visible or not (ahead of `head` while a group
    /// or a large transaction is being written).
    appended_bytes: std::sync::atomic::AtomicU64,
    first: Mutex<u64>,
    cursors: Mutex<BTreeMap<String, Cursor>>,
    /// Woken whenever a cursor moves (the backpressured source waits on it).
    pub cursor_moved: Notify,
    read_only: bool,
}

impl std::fmt::Debug for StagingLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagingLog")
            .field("path", &self.path)
            .finish()
    }
}

fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_max_background_jobs(2);
    // Without a bound, the rarely-flushed meta family would keep every WAL file alive.
    o.set_max_total_wal_size(64 << 20);
    o.set_keep_log_file_num(3);
    o
}

fn events_options() -> Options {
    let mut o = Options::default();
    // Records are mostly read and deleted soon after they are written: compressing them on
    // every flush and first compaction costs CPU on the hot path for nothing. A backlog that
    // stays long enough to reach level 2 is compressed there.
    use rocksdb::DBCompressionType::{Lz4, None as Plain};
    o.set_compression_per_level(&[Plain, Plain, Lz4, Lz4, Lz4, Lz4, Lz4]);
    // Memtables bound most of the log's memory: 3 x 8 MiB.
    o.set_write_buffer_size(8 << 20);
    o.set_max_write_buffer_number(3);
    o.set_target_file_size_base(64 << 20);
    o
}

fn meta_options() -> Options {
    let mut o = Options::default();
    o.set_write_buffer_size(4 << 20);
    o
}

impl StagingLog {
    /// Opens (creating if needed) the log in `path`, deleting any torn transaction tail.
    pub fn open(path: &Path, opts: LogOptions) -> Result<Arc<Self>, LogError> {
        std::fs::create_dir_all(path).map_err(|e| {
            LogError::Protocol(format!(
                "cannot create the staging log directory {}: {e}",
                path.display()
            ))
        })?;
        let cfs = vec![
            ColumnFamilyDescriptor::new(EVENTS, events_options()),
            ColumnFamilyDescriptor::new(META, meta_options()),
        ];
        let db = DB::open_cf_descriptors(&db_options(), path, cfs).map_err(|source| {
            LogError::Rocks {
                path: path.display().to_string(),
                what: "cannot open (is another `weir run` of this pipeline running?)".into(),
                source,
            }
        })?;
        let log = Self::from_db(db, path, opts, false)?;
        log.recover()?;
        Ok(Arc::new(log))
    }

    /// Opens an existing log read-only (for `weir status` and `weir log` next to a running
    /// pipeline). Sees the log as of opening.
    pub fn open_read_only(path: &Path) -> Result<Arc<Self>, LogError> {
        let db = DB::open_cf_for_read_only(&Options::default(), path, [EVENTS, META], false)
            .map_err(|source| LogError::Rocks {
                path: path.display().to_string(),
                what: "cannot open read-only (has the pipeline run yet?)".into(),
                source,
            })?;
        Ok(Arc::new(Self::from_db(
            db,
            path,
            LogOptions::default(),
            true,
        )?))
    }

    fn from_db(db: DB, path: &Path, opts: LogOptions, read_only: bool) -> Result<Self, LogError> {
        let mut log = StagingLog {
            db,
            path: path.to_path_buf(),
            opts,
            head: watch::Sender::new(Head {
                seq: 0,
                position: None,
                bytes_total: 0,
                txns: 0,
            }),
            appended_bytes: std::sync::atomic::AtomicU64::new(0),
            first: Mutex::new(1),
            cursors: Mutex::new(BTreeMap::new()),
            cursor_moved: Notify::new(),
            read_only,
        };
        if let Some(head) = log.get_meta::<Head>(HEAD_KEY)? {
            log.head = watch::Sender::new(head);
        }
        if let Some(first) = log.get_meta::<u64>(FIRST_KEY)? {
            *log.first.get_mut().unwrap_or_else(|e| e.into_inner()) = first;
        }
        let mut cursors = BTreeMap::new();
        for (key, value) in log.scan_meta(CURSOR_PREFIX)? {
            let name = String::from_utf8_lossy(&key[CURSOR_PREFIX.len()..]).into_owned();
            let cursor =
                record::decode::<Cursor>(&value).map_err(|source| log.decode_err(0, source))?;
            cursors.insert(name, cursor);
        }
        *log.cursors.get_mut().unwrap_or_else(|e| e.into_inner()) = cursors;
        Ok(log)
    }

    fn recover(&self) -> Result<(), LogError> {
        let head = self.head();
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(EVENTS),
            (head.seq + 1).to_be_bytes(),
            u64::MAX.to_be_bytes(),
        );
        self.write(batch, true, "cannot remove a torn transaction")
    }

    /// The log directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created on open")
    }

    pub(crate) fn rocks_err(&self, what: &str, source: rocksdb::Error) -> LogError {
        LogError::Rocks {
            path: self.path.display().to_string(),
            what: what.into(),
            source,
        }
    }

    fn decode_err(&self, seq: u64, source: DecodeError) -> LogError {
        LogError::Decode {
            path: self.path.display().to_string(),
            seq,
            source,
        }
    }

    pub(crate) fn write(&self, batch: WriteBatch, sync: bool, what: &str) -> Result<(), LogError> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(sync);
        self.db
            .write_opt(batch, &wo)
            .map_err(|e| self.rocks_err(what, e))
    }

    pub(crate) fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, LogError> {
        match self
            .db
            .get_cf(self.cf(META), key)
            .map_err(|e| self.rocks_err("cannot read metadata", e))?
        {
            Some(v) => record::decode(&v)
                .map(Some)
                .map_err(|e| self.decode_err(0, e)),
            None => Ok(None),
        }
    }

    fn scan_meta(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, LogError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(META),
            IteratorMode::From(prefix, Direction::Forward),
        ) {
            let (k, v) = item.map_err(|e| self.rocks_err("cannot read metadata", e))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k, v));
        }
        Ok(out)
    }

    /// The initial snapshot's plan, once one was made.
    pub fn snapshot_plan(&self) -> Result<Option<weir_api::SnapshotPlan>, LogError> {
        self.get_meta(SNAPSHOT_PLAN_KEY)
    }

    /// The last visible commit.
    pub fn head(&self) -> Head {
        self.head.borrow().clone()
    }

    /// Watches the durable head (changes after every group commit).
    pub fn subscribe(&self) -> watch::Receiver<Head> {
        self.head.subscribe()
    }

    /// The oldest sequence still stored.
    pub fn first_seq(&self) -> u64 {
        *self.first.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every sink cursor the log knows.
    pub fn cursors(&self) -> BTreeMap<String, Cursor> {
        self.cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records a sink's progress (after the sink made it durable in its target).
    pub fn set_cursor(&self, sink: &str, cursor: Cursor) -> Result<(), LogError> {
        let mut value = Vec::new();
        record::encode(&cursor, &mut value)?;
        let mut key = CURSOR_PREFIX.to_vec();
        key.extend_from_slice(sink.as_bytes());
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(META), key, value);
        self.write(batch, false, "cannot record a sink cursor")?;
        self.cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(sink.to_string(), cursor);
        self.cursor_moved.notify_waiters();
        Ok(())
    }

    /// Forgets a sink that left the pipeline file, so it no longer holds back retention.
    pub fn remove_cursor(&self, sink: &str) -> Result<(), LogError> {
        let mut key = CURSOR_PREFIX.to_vec();
        key.extend_from_slice(sink.as_bytes());
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(META), key);
        self.write(batch, false, "cannot remove a sink cursor")?;
        self.cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(sink);
        self.cursor_moved.notify_waiters();
        Ok(())
    }

    /// Bytes staged (or being staged) but not yet applied by the slowest sink.
    pub fn backlog_bytes(&self) -> u64 {
        let head = self.head.borrow().bytes_total.max(
            self.appended_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let min = self
            .cursors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|c| c.bytes_total)
            .min();
        head.saturating_sub(min.unwrap_or(head))
    }

    /// The cursor for the commit at `seq`, if that record is still stored and is a commit.
    pub fn cursor_at(&self, seq: u64) -> Result<Option<Cursor>, LogError> {
        if seq == 0 {
            return Ok(Some(Cursor::default()));
        }
        match self
            .db
            .get_cf(self.cf(EVENTS), seq.to_be_bytes())
            .map_err(|e| self.rocks_err("cannot read", e))?
        {
            Some(v) => match record::decode::<Stored>(&v).map_err(|e| self.decode_err(seq, e))? {
                Stored::Commit { bytes_total, .. } => Ok(Some(Cursor { seq, bytes_total })),
                _ => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// Deletes records below `seq` (the slowest sink's cursor; its own commit record stays,
    /// so the sink can resume from it).
    pub fn retain_below(&self, seq: u64) -> Result<(), LogError> {
        let seq = seq.min(self.head().seq);
        let first = self.first_seq();
        if seq <= first || self.read_only {
            return Ok(());
        }
        // Readers never go below `first`, so records under it need not be deleted one by one:
        // whole files below it are dropped, and the few records left in a file that straddles
        // it (or still in a memtable) go with that file later. No range tombstone means no
        // compaction rewriting dead records: keys only grow, so files never overlap and
        // RocksDB moves them between levels without rewriting them.
        let mut batch = WriteBatch::default();
        let mut value = Vec::new();
        record::encode(&seq, &mut value)?;
        batch.put_cf(self.cf(META), FIRST_KEY, value);
        // Synced before any file goes, so a restart never starts below what is gone.
        self.write(batch, true, "cannot record applied records")?;
        *self.first.lock().unwrap_or_else(|e| e.into_inner()) = seq;
        // `seq` itself stays (the slowest sink resumes from that commit record); the range
        // end is inclusive.
        self.db
            .delete_file_in_range_cf(self.cf(EVENTS), 0u64.to_be_bytes(), (seq - 1).to_be_bytes())
            .map_err(|e| self.rocks_err("cannot delete applied records", e))?;
        Ok(())
    }

    /// Latest schema of every table (for the writer).
    pub(crate) fn latest_schemas(
        &self,
    ) -> Result<weir_api::FastMap<TableId, TableSchema>, LogError> {
        let mut out = weir_api::FastMap::<TableId, TableSchema>::new();
        for (_, v) in self.scan_meta(SCHEMA_PREFIX)? {
            let s: TableSchema = record::decode(&v).map_err(|e| self.decode_err(0, e))?;
            match out.get(&s.table) {
                Some(old) if old.version >= s.version => {}
                _ => {
                    out.insert(s.table.clone(), s);
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn schema_key(table: &TableId, version: u32) -> Vec<u8> {
        let mut key = SCHEMA_PREFIX.to_vec();
        key.extend_from_slice(table.schema.as_bytes());
        key.push(0);
        key.extend_from_slice(table.name.as_bytes());
        key.push(0);
        key.extend_from_slice(&version.to_be_bytes());
        key
    }

    fn schema(&self, table: &TableId, version: u32) -> Result<Option<TableSchema>, LogError> {
        self.get_meta(&Self::schema_key(table, version))
    }

    /// A reader positioned anywhere; see [`LogReader::read`].
    pub fn reader(self: &Arc<Self>) -> LogReader {
        LogReader {
            log: Arc::clone(self),
            schemas: weir_api::FastMap::new(),
        }
    }

    /// Starts the single writer thread.
    pub fn writer(self: &Arc<Self>, queue: usize) -> Result<LogWriter, LogError> {
        writer::start(Arc::clone(self), queue, None)
    }

    /// [`StagingLog::writer`], timing its work as the `log append` stage in `stage`.
    pub fn writer_timed(
        self: &Arc<Self>,
        queue: usize,
        stage: Arc<crate::runtime::StageStats>,
    ) -> Result<LogWriter, LogError> {
        writer::start(Arc::clone(self), queue, Some(stage))
    }

    pub(crate) fn note_appended(&self, bytes_total: u64) {
        self.appended_bytes
            .store(bytes_total, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn publish_head(&self, head: Head) {
        self.head.send_replace(head);
    }

    pub(crate) fn options(&self) -> &LogOptions {
        &self.opts
    }
}

/// Reads visible records in order, resolving each change's schema version.
pub struct LogReader {
    log: Arc<StagingLog>,
    schemas: weir_api::FastMap<TableId, BTreeMap<u32, Arc<TableSchema>>>,
}

impl LogReader {
    /// Reads records `from..=upto` (capped at the visible head), at most `max_entries`.
    pub fn read(
        &mut self,
        from: u64,
        upto: u64,
        max_entries: usize,
    ) -> Result<ReadBatch, LogError> {
        let upto = upto.min(self.log.head().seq);
        let mut batch = ReadBatch::default();
        if from > upto {
            return Ok(batch);
        }
        if from < self.log.first_seq() {
            return Err(self.retained_error(from));
        }
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound((upto + 1).to_be_bytes().to_vec());
        let log = Arc::clone(&self.log);
        let mut it = log.db.raw_iterator_cf_opt(log.cf(EVENTS), ro);
        // `from` is either a stored key or inside the pack stored under an earlier one.
        it.seek(from.to_be_bytes());
        if it.key() != Some(&from.to_be_bytes()[..]) {
            it.seek_for_prev(from.to_be_bytes());
            if !it.valid() {
                it.seek(from.to_be_bytes());
            }
        }
        let mut expect = from;
        'values: while it.valid() && batch.entries.len() < max_entries {
            let (Some(key), Some(value)) = (it.key(), it.value()) else {
                break;
            };
            let first = u64::from_be_bytes(key.try_into().map_err(|_| {
                LogError::Protocol(format!(
                    "staging log {}: malformed key",
                    self.log.path.display()
                ))
            })?);
            let mut records =
                record::Records::new(value).map_err(|e| self.log.decode_err(first, e))?;
            let end = first.saturating_add(u64::from(records.remaining()));
            if end <= expect {
                // The value before `from`, found by the backward seek.
                it.next();
                continue;
            }
            if first > expect {
                return Err(LogError::Protocol(format!(
                    "staging log {}: record {expect} is missing (next stored is {first}); it was deleted \
                     before every sink applied it. Re-snapshot the sinks that need it",
                    self.log.path.display()
                )));
            }
            for seq in first..end {
                let body = records
                    .next_body()
                    .map_err(|e| self.log.decode_err(seq, e))?
                    .ok_or_else(|| self.log.decode_err(seq, DecodeError::Truncated))?;
                if seq < expect {
                    continue;
                }
                if seq > upto || batch.entries.len() >= max_entries {
                    break 'values;
                }
                expect = seq + 1;
                let stored: Stored =
                    record::decode_body(body).map_err(|e| self.log.decode_err(seq, e))?;
                batch
                    .entries
                    .push(self.entry(seq, stored, &mut batch.last_commit)?);
            }
            it.next();
        }
        it.status()
            .map_err(|e| self.log.rocks_err("cannot read", e))?;
        if batch.entries.is_empty() && from >= self.log.first_seq() {
            return Err(LogError::Protocol(format!(
                "staging log {}: record {from} is not stored although the head is {upto}",
                self.log.path.display()
            )));
        }
        if batch.entries.is_empty() {
            return Err(self.retained_error(from));
        }
        Ok(batch)
    }

    fn entry(
        &mut self,
        seq: u64,
        stored: Stored,
        last_commit: &mut Option<Cursor>,
    ) -> Result<LogEntry, LogError> {
        Ok(match stored {
            Stored::Schema(s) => {
                let s = Arc::new(s);
                self.schemas
                    .entry(s.table.clone())
                    .or_default()
                    .insert(s.version, Arc::clone(&s));
                LogEntry {
                    seq,
                    staged_ms: 0,
                    entry: Entry::Schema(s),
                }
            }
            Stored::Change { staged_ms, event } => {
                let schema = self.schema(&event.table, event.schema_version)?;
                LogEntry {
                    seq,
                    staged_ms,
                    entry: Entry::Change(event, schema),
                }
            }
            Stored::Commit {
                staged_ms,
                info,
                bytes_total,
            } => {
                *last_commit = Some(Cursor { seq, bytes_total });
                LogEntry {
                    seq,
                    staged_ms,
                    entry: Entry::Commit(info),
                }
            }
        })
    }

    fn retained_error(&self, from: u64) -> LogError {
        LogError::Protocol(format!(
            "staging log {}: record {from} was already deleted by retention (oldest kept: {}); \
             re-snapshot the sinks that need it",
            self.log.path.display(),
            self.log.first_seq()
        ))
    }

    fn schema(&mut self, table: &TableId, version: u32) -> Result<Arc<TableSchema>, LogError> {
        if let Some(s) = self.schemas.get(table).and_then(|m| m.get(&version)) {
            return Ok(Arc::clone(s));
        }
        let s = self.log.schema(table, version)?.ok_or_else(|| {
            LogError::Protocol(format!(
                "staging log {}: schema version {version} of {table} is missing",
                self.log.path.display()
            ))
        })?;
        let s = Arc::new(s);
        self.schemas
            .entry(table.clone())
            .or_default()
            .insert(version, Arc::clone(&s));
        Ok(s)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use weir_api::{
        ChangeEvent, Column, ColumnType, CommitInfo, DatagenPosition, Op, Row, SourcePosition,
        Value,
    };

    pub(crate) fn schema(cols: usize) -> TableSchema {
        TableSchema {
            table: TableId::new("s", "t"),
            version: 0,
            columns: (0..cols)
                .map(|i| Column {
                    name: format!("c{i}"),
                    ty: ColumnType::Int {
                        bits: 64,
                        unsigned: false,
                    },
                    source_type: "bigint".into(),
                    nullable: false,
                })
                .collect(),
            primary_key: vec![0],
        }
    }

    pub(crate) fn change(n: i64, cols: usize) -> ChangeEvent {
        ChangeEvent {
            table: TableId::shared("s", "t"),
            schema_version: 0,
            op: Op::Insert,
            before: None,
            after: Some(Row((0..cols).map(|_| Value::Int(n)).collect())),
            position: SourcePosition::Datagen(DatagenPosition { events: n as u64 }),
            txid: None,
            ts_ms: 0,
        }
    }

    pub(crate) fn commit(n: u64) -> WriteOp {
        WriteOp::Commit(CommitInfo {
            position: SourcePosition::Datagen(DatagenPosition { events: n }),
            txid: None,
            ts_ms: 0,
            events: 1,
        })
    }

    pub(crate) fn temp(tag: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        std::env::temp_dir().join(format!(
            "weir-log-unit-{tag}-{}-{nanos}",
            std::process::id()
        ))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn schema_versions_follow_commits_and_rollbacks() {
        let dir = temp("schemas");
        let log = StagingLog::open(&dir, LogOptions::default()).unwrap();
        let mut writer = log.writer(8).unwrap();
        // Announced, then rolled back before any commit: forgotten.
        writer.send(WriteOp::Schema(schema(2))).await.unwrap();
        writer
            .send(WriteOp::Changes(vec![change(1, 2)]))
            .await
            .unwrap();
        writer.rollback().await.unwrap();
        assert_eq!(log.head().seq, 0);
        // Announced again: staged again, as version 1.
        writer.send(WriteOp::Schema(schema(2))).await.unwrap();
        writer
            .send(WriteOp::Changes(vec![change(1, 2)]))
            .await
            .unwrap();
        writer.send(commit(1)).await.unwrap();
        // Same shape: no new version. New column: version 2.
        writer.send(WriteOp::Schema(schema(2))).await.unwrap();
        writer.send(WriteOp::Schema(schema(3))).await.unwrap();
        writer
            .send(WriteOp::Changes(vec![change(2, 3)]))
            .await
            .unwrap();
        writer.send(commit(2)).await.unwrap();
        writer.rollback().await.unwrap(); // a barrier: everything above is written
        // A position that does not move forward is refused.
        let err = writer.send(commit(2)).await.unwrap_err();
        assert!(err.to_string().contains("did not move forward"), "{err}");
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .unwrap()
            .unwrap();

        let mut reader = log.reader();
        let batch = reader.read(1, u64::MAX, 100).unwrap();
        let kinds: Vec<String> = batch
            .entries
            .iter()
            .map(|e| match &e.entry {
                Entry::Schema(s) => format!("schema v{}", s.version),
                Entry::Change(ev, s) => format!(
                    "change v{} ({} values, schema v{})",
                    ev.schema_version,
                    ev.after.as_ref().map_or(0, |r| r.0.len()),
                    s.version
                ),
                Entry::Commit(c) => format!("commit {}", c.position),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "schema v1",
                "change v1 (2 values, schema v1)",
                "commit event=1",
                "schema v2",
                "change v2 (3 values, schema v2)",
                "commit event=2"
            ]
        );
        drop(reader);
        drop(log);
        let log = StagingLog::open(&dir, LogOptions::default()).unwrap();
        assert_eq!(
            log.latest_schemas().unwrap()[&TableId::new("s", "t")].version,
            2
        );
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// What the pack test staged at `seq`: a change's value, or a commit's position.
    fn packed_entry(e: &LogEntry) -> String {
        match &e.entry {
            Entry::Schema(s) => format!("schema v{}", s.version),
            Entry::Change(ev, _) => match ev.after.as_ref().map(|r| &r.0[..]) {
                Some([Value::Int(n), Value::Int(m)]) if n == m => format!("change {n}"),
                other => format!("bad change {other:?}"),
            },
            Entry::Commit(c) => format!("commit {}", c.position),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn packed_changes_read_from_any_sequence_after_rollback_and_reopen() {
        let dir = temp("packs");
        let log = StagingLog::open(&dir, LogOptions::default()).unwrap();
        let mut writer = log.writer(8).unwrap();
        let changes = |ns: std::ops::RangeInclusive<i64>| {
            WriteOp::Changes(ns.map(|n| change(n, 2)).collect())
        };
        writer.send(WriteOp::Schema(schema(2))).await.unwrap(); // 1
        writer.send(changes(1..=3000)).await.unwrap(); // 2..=3001: packs of 1024, 1024, 952
        writer.send(commit(1)).await.unwrap(); // 3002
        writer.send(changes(-2000..=-1)).await.unwrap(); // rolled back
        writer.rollback().await.unwrap();
        writer.send(changes(5001..=5002)).await.unwrap(); // 3003, 3004: a pack of 2
        writer.send(commit(2)).await.unwrap(); // 3005
        writer.send(changes(6000..=6000)).await.unwrap(); // 3006: a single record
        writer.send(commit(3)).await.unwrap(); // 3007
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .unwrap()
            .unwrap();
        let expected = |seq: u64| match seq {
            1 => "schema v1".to_string(),
            2..=3001 => format!("change {}", seq - 1),
            3002 => "commit event=1".into(),
            3003 | 3004 => format!("change {}", seq + 1998),
            3005 => "commit event=2".into(),
            3006 => "change 6000".into(),
            3007 => "commit event=3".into(),
            _ => panic!("nothing staged at {seq}"),
        };
        let keys = log
            .db
            .iterator_cf(log.cf(EVENTS), IteratorMode::Start)
            .count();
        assert_eq!(
            keys, 9,
            "schema, 3 packs, commit, pack, commit, single, commit"
        );

        let check = |log: &Arc<StagingLog>, when: &str| {
            let mut reader = log.reader();
            let all = reader.read(1, u64::MAX, 10_000).unwrap();
            assert_eq!(all.entries.len(), 3007, "{when}");
            for e in &all.entries {
                assert_eq!(packed_entry(e), expected(e.seq), "seq {}", e.seq);
            }
            assert_eq!(all.last_commit.map(|c| c.seq), Some(3007));
            // Starting anywhere: at a pack's first record, inside one, at its last, across
            // pack boundaries, capped by `upto` and by `max_entries`.
            for (from, upto, max) in [
                (1, u64::MAX, 1),
                (2, u64::MAX, 5),
                (500, u64::MAX, 1000),
                (1025, u64::MAX, 3),
                (1026, u64::MAX, 1),
                (1000, 1500, 10_000),
                (2049, u64::MAX, 2000),
                (3001, u64::MAX, 2),
                (3004, u64::MAX, 10),
                (3007, u64::MAX, 10),
            ] {
                let got = reader.read(from, upto, max).unwrap();
                let want: Vec<u64> = (from..=upto.min(3007)).take(max).collect();
                let seqs: Vec<u64> = got.entries.iter().map(|e| e.seq).collect();
                assert_eq!(seqs, want, "{when}: read({from}, {upto}, {max})");
                for e in &got.entries {
                    assert_eq!(packed_entry(e), expected(e.seq), "seq {}", e.seq);
                }
            }
        };
        check(&log, "written");
        drop(log);
        let log = StagingLog::open(&dir, LogOptions::default()).unwrap();
        check(&log, "reopened");
        log.retain_below(3002).unwrap();
        // Retention keeps the slowest cursor's commit and refuses what is below it, even
        // inside a pack whose file is still there.
        let mut reader = log.reader();
        assert_eq!(reader.read(3002, u64::MAX, 1).unwrap().entries[0].seq, 3002);
        let err = reader.read(1500, u64::MAX, 1).unwrap_err().to_string();
        assert!(err.contains("already deleted by retention"), "{err}");
        drop(reader);
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_transaction_is_invisible_and_removed_on_open() {
        let dir = temp("torn");
        let log = StagingLog::open(
            &dir,
            LogOptions {
                chunk_bytes: 1,
                group_bytes: 1,
            },
        )
        .unwrap();
        let mut writer = log.writer(8).unwrap();
        writer.send(WriteOp::Schema(schema(1))).await.unwrap();
        writer
            .send(WriteOp::Changes(vec![change(1, 1)]))
            .await
            .unwrap();
        writer.send(commit(1)).await.unwrap();
        // A large transaction written out in chunks, never committed.
        for n in 2..50 {
            writer
                .send(WriteOp::Changes(vec![change(n, 1)]))
                .await
                .unwrap();
        }
        tokio::task::spawn_blocking(move || writer.finish())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(log.head().seq, 3);
        let stored = log
            .db
            .iterator_cf(log.cf(EVENTS), IteratorMode::Start)
            .count();
        assert_eq!(stored, 3 + 48, "chunks reach RocksDB before their commit");
        assert_eq!(
            log.reader().read(1, u64::MAX, 1000).unwrap().entries.len(),
            3,
            "readers stop at the head"
        );
        drop(log);
        let log = StagingLog::open(&dir, LogOptions::default()).unwrap();
        assert_eq!(
            log.db
                .iterator_cf(log.cf(EVENTS), IteratorMode::Start)
                .count(),
            3,
            "the torn tail is deleted on open"
        );
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
