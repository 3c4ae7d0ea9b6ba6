//! The contracts between the engine and connectors: [`Source`], [`Snapshot`] and [`Sink`].

use crate::{ChangeEvent, CommitInfo, Result, SourcePosition, TableId, TableSchema, Transaction};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Facts about the source that every envelope carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Connector type (`postgres`, `mysql`, `datagen`).
    pub connector: String,
    /// Pipeline name.
    pub name: String,
    /// Database name.
    pub db: String,
}

/// What a source yields, in source commit order.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceItem {
    /// A new version of a table's schema; comes before the first change that uses it.
    Schema(TableSchema),
    /// Changes belonging to the transaction in progress. A large transaction arrives as many
    /// of these; the staging log keeps them invisible until [`SourceItem::Commit`].
    Changes(Vec<ChangeEvent>),
    /// Ends the transaction in progress.
    Commit(CommitInfo),
    /// A whole transaction at once (same as `Changes` then `Commit`).
    Transaction(Transaction),
    /// Nothing to stage up to this position (keepalive, or a transaction with no change for
    /// the selected tables). Lets `run --once` finish and lets acknowledgements advance.
    Heartbeat(SourcePosition),
}

/// Reads a database's change log.
///
/// Contract: items come in commit order; a transaction's changes are never interleaved with
/// another's; [`Source::ack`] is called only with positions that are durable in the staging
/// log, and only then may the source let the database release its log (WAL, binlog).
#[async_trait]
pub trait Source: Send {
    /// Facts for the envelope.
    fn info(&self) -> SourceInfo;

    /// Starts reading after `resume` (the last durably staged commit), or from the
    /// beginning when `None`.
    async fn start(&mut self, resume: Option<SourcePosition>) -> Result<()>;

    /// The position of the newest change committed at the source right now; `run --once`
    /// stops after staging up to it.
    async fn end_position(&mut self) -> Result<SourcePosition>;

    /// The next item. Waits while there is nothing new (a source may return a
    /// [`SourceItem::Heartbeat`] now and then while idle).
    async fn next(&mut self) -> Result<SourceItem>;

    /// Everything up to `position` is durable in the staging log.
    async fn ack(&mut self, position: &SourcePosition) -> Result<()>;

    /// Called now and then while the engine does not read (backpressure): keep the
    /// connection alive without consuming anything (PostgreSQL: a standby status update, so
    /// `wal_sender_timeout` does not fire). Must be cheap; the default does nothing.
    async fn keepalive(&mut self) -> Result<()> {
        Ok(())
    }

    /// Tables that joined the selection since the last call (they started matching the
    /// pipeline's `tables` while it ran or since its last run); the engine backfills their
    /// existing rows unless the pipeline never snapshots. The default has none.
    fn added_tables(&mut self) -> Vec<TableId> {
        Vec::new()
    }

    /// CPU time spent decoding (protocol messages into change events) since the last call;
    /// the rest of the time in [`Source::next`] is reading and waiting. For the `decode`
    /// stage of `weir.stages`; the default reports none.
    fn decode_time(&mut self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Bytes of change log the database keeps for this pipeline, where the source can tell
    /// (PostgreSQL: WAL the replication slot holds), as last measured; `None` if unknown.
    fn retained_bytes(&self) -> Option<u64> {
        None
    }
}

/// A range of one table's rows, by primary key, read from a consistent point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The table.
    pub table: TableId,
    /// Position of this chunk in [`SnapshotPlan::chunks`].
    pub index: u32,
    /// Primary-key lower bound, exclusive (`None`: from the start), in the connector's own
    /// encoding of key values (PostgreSQL: each key column's text form).
    pub after: Option<Vec<String>>,
    /// Primary-key upper bound, inclusive (`None`: to the end), same encoding.
    pub upto: Option<Vec<String>>,
    /// Estimated rows, for progress.
    pub estimated_rows: u64,
}

/// What a snapshot will read, and where streaming continues afterwards. Stored in the
/// staging log, so a restarted snapshot reads the same chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotPlan {
    /// Schemas of the tables read.
    pub schemas: Vec<TableSchema>,
    /// Chunks; `chunks[i].index == i`. Workers read them in parallel.
    pub chunks: Vec<SnapshotChunk>,
    /// The consistent point: streaming starts right after it, so nothing is missed or read twice.
    pub stream_from: SourcePosition,
}

/// Reads existing rows consistently, in primary-key chunks, by several workers at once.
///
/// The engine calls [`Snapshot::plan`] (or [`Snapshot::resume`] after a restart), then
/// [`Snapshot::reader`] once per worker, then [`Snapshot::readers_ready`], then reads chunks.
#[async_trait]
pub trait Snapshot: Send {
    /// Fixes the consistent point (PostgreSQL: creates the slot and exports its snapshot),
    /// reads the schemas and splits the tables into chunks.
    async fn plan(&mut self) -> Result<SnapshotPlan>;

    /// Re-opens a consistent view to finish `plan` after a restart. The view is newer than the
    /// plan's consistent point; streaming from `stream_from` replays the changes in between,
    /// so targets converge.
    async fn resume(&mut self, plan: &SnapshotPlan) -> Result<()>;

    /// A reader for one worker (its own connection, in the same consistent view).
    async fn reader(&mut self) -> Result<Box<dyn ChunkReader>>;

    /// Every reader is open: whatever holds the consistent view for them may let go.
    async fn readers_ready(&mut self) -> Result<()>;
}

/// One snapshot worker's connection.
#[async_trait]
pub trait ChunkReader: Send {
    /// Starts reading `chunk`; rows follow from [`ChunkReader::next_batch`].
    async fn open(&mut self, chunk: &SnapshotChunk) -> Result<()>;

    /// Up to `max_rows` rows of the open chunk as `op = r` events (with `schema_version` 0:
    /// the log stamps the version); `None` once the chunk is exhausted.
    async fn next_batch(&mut self, max_rows: usize) -> Result<Option<Vec<ChangeEvent>>>;
}

/// A backfill's consistent view of one table (see [`Backfill`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillView {
    /// The table's schema, as the stream announces it (its key is the stream's key).
    pub schema: TableSchema,
    /// Changes the stream brings at or before this position are in the rows read; later
    /// ones are not. A stream position, never a snapshot or backfill one.
    pub consistent: SourcePosition,
    /// Estimated rows, for progress.
    pub estimated_rows: u64,
}

/// Rows of one [`Backfill::read`].
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillRows {
    /// `op = r` events in key order (`schema_version` 0: the log stamps the version).
    pub events: Vec<ChangeEvent>,
    /// The last row's key in the connector's own encoding, to read on after it; `None` when
    /// there was no row left (the table is done).
    pub last_key: Option<Vec<String>>,
}

/// Reads one table's existing rows while the stream goes on (`weir snapshot`, `SNAPSHOT
/// TABLE`), in key order, from one consistent view whose position in the stream is known.
///
/// The engine tracks the keys the stream changes after [`BackfillView::consistent`] and
/// stages each batch of rows between stream transactions without those keys (the stream
/// carries their newer state), so every key ends at its current state, in order.
#[async_trait]
pub trait Backfill: Send {
    /// Opens a consistent view for reading `table` (a table the source streams, with a
    /// primary key). A definite error says why the table cannot be backfilled.
    async fn open(&mut self, table: &TableId) -> Result<BackfillView>;

    /// Up to `max_rows` rows of the open view with a key after `after` (`None`: from the
    /// first), in key order.
    async fn read(&mut self, after: Option<&[String]>, max_rows: usize) -> Result<BackfillRows>;
}

/// What a sink receives from the staging log.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A new version of a table's schema.
    Schema(Arc<TableSchema>),
    /// A change, with the schema version its rows follow.
    Change(ChangeEvent, Arc<TableSchema>),
    /// The end of a source transaction.
    Commit(CommitInfo),
}

/// One staged record.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// Log sequence number: dense, increasing, never reused.
    pub seq: u64,
    /// When weir staged it (milliseconds since the Unix epoch): the envelope's `ts_ms`.
    pub staged_ms: i64,
    /// The record.
    pub entry: Entry,
}

/// What a sink is told when it is built.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// Pipeline name.
    pub pipeline: String,
    /// Sink name from the pipeline file.
    pub sink: String,
    /// The source's envelope facts.
    pub source: SourceInfo,
}

/// Applies staged changes to a target.
///
/// Contract: [`Sink::apply`] gets entries in log order, resuming right after
/// [`Sink::committed`]. A batch may end inside a large transaction; the rest follows in the
/// next call. When `apply` returns, every transaction whose `Commit` was in the batch must be
/// durable in the target *together with* its commit's sequence number, so that `committed`
/// returns it after a crash (exactly-once effect). After an error the engine drops the sink,
/// builds a new one and resumes from `committed`.
#[async_trait]
pub trait Sink: Send {
    /// The sequence of the last `Commit` durably applied, read from the target; `None` if
    /// nothing was ever applied.
    async fn committed(&mut self) -> Result<Option<u64>>;

    /// Applies entries in order (see the trait docs for the contract).
    async fn apply(&mut self, entries: &[LogEntry]) -> Result<()>;
}
