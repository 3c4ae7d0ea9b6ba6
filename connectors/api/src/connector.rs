//! The contracts between the engine and connectors: [`Source`], [`Snapshot`] and [`Sink`].

use crate::{
    ChangeEvent, CommitInfo, Result, Row, SourcePosition, TableId, TableSchema, Transaction,
};
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
}

/// A range of one table's rows, by primary key, read from a consistent point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotChunk {
    /// The table.
    pub table: TableId,
    /// Chunk number within the table, from 0.
    pub index: u32,
    /// Primary-key lower bound, inclusive (`None`: from the start).
    pub lower: Option<Row>,
    /// Primary-key upper bound, exclusive (`None`: to the end).
    pub upper: Option<Row>,
}

/// What a snapshot will read, and where streaming continues afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotPlan {
    /// Schemas of the tables read.
    pub schemas: Vec<TableSchema>,
    /// Chunks, in any order; workers read them in parallel.
    pub chunks: Vec<SnapshotChunk>,
    /// The consistent point: streaming starts right after it, so nothing is missed or read twice.
    pub stream_from: SourcePosition,
}

/// Reads existing rows consistently, in primary-key chunks, in parallel.
#[async_trait]
pub trait Snapshot: Send {
    /// Fixes the consistent point and splits the tables into chunks.
    async fn plan(&mut self, tables: &[TableId]) -> Result<SnapshotPlan>;

    /// Reads one chunk as `op = r` events (memory bounded by the chunk size).
    async fn read_chunk(&mut self, chunk: &SnapshotChunk) -> Result<Vec<ChangeEvent>>;
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
