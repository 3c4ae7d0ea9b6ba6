//! Change events, rows and transactions.

use crate::{SourcePosition, TableId, Value};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a change did (Debezium's op codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// `c`: insert.
    Insert,
    /// `u`: update.
    Update,
    /// `d`: delete.
    Delete,
    /// `r`: a row read by a snapshot.
    Read,
    /// `t`: truncate.
    Truncate,
}

impl Op {
    /// The one-letter code used in the envelope.
    pub fn code(self) -> &'static str {
        match self {
            Op::Insert => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }
}

/// A row: values positional over the columns of the [`crate::TableSchema`] version the event
/// names.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Row(pub Vec<Value>);

/// One row change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The table changed (shared: see [`TableId::shared`]).
    #[serde(with = "crate::schema::shared_table")]
    pub table: Arc<TableId>,
    /// The [`crate::TableSchema::version`] the rows were decoded with.
    pub schema_version: u32,
    /// What happened.
    pub op: Op,
    /// The old row where the source has it (replica identity / row image), else `None`.
    pub before: Option<Row>,
    /// The new row; `None` for deletes and truncates.
    pub after: Option<Row>,
    /// Where this change sits in the source's log.
    pub position: SourcePosition,
    /// Source transaction id, where the source has one.
    pub txid: Option<u64>,
    /// Source commit time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
}

/// What closes a source transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// The position to resume after once this transaction is applied.
    pub position: SourcePosition,
    /// Source transaction id, where the source has one.
    pub txid: Option<u64>,
    /// Source commit time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Number of change events in the transaction.
    pub events: u64,
}

/// A whole source transaction, for sources that have it in hand at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    /// The changes, in source order.
    pub changes: Vec<ChangeEvent>,
    /// The commit.
    pub commit: CommitInfo,
}
