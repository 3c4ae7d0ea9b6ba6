//! weir's unified change model and connector contracts.
//!
//! Every connector depends on this crate and nothing else of weir's: sources turn their
//! database's change log into [`SourceItem`]s, the engine stages them in its log, and sinks
//! receive them back as [`LogEntry`]s. The crate is deliberately light (serde, base64, thiserror, hashbrown).
//!
//! ```text
//!  Source::next() ──SourceItem──▶ staging log ──LogEntry──▶ Sink::apply()
//!        ▲                                                   │
//!        └──────── Source::ack(position) (durable) ◀─────────┘ (per sink cursor)
//! ```

mod connector;
mod envelope;
mod error;
mod event;
pub mod keyed;
mod position;
mod schema;
mod value;

pub use connector::{
    Backfill, BackfillRows, BackfillView, ChunkReader, Entry, LogEntry, Sink, SinkContext,
    Snapshot, SnapshotChunk, SnapshotPlan, Source, SourceInfo, SourceItem,
};
pub use envelope::{render_envelope, render_key};
pub use error::{BoxError, ConnectorError, Result};
pub use event::{ChangeEvent, CommitInfo, Op, Row, Transaction};
pub use position::{
    BackfillPosition, DatagenPosition, GtidSet, Lsn, MariaDbGtid, MariaDbGtidList, MysqlGtidSet,
    MysqlPosition, PgPosition, SnapshotPosition, SourcePosition,
};
pub use schema::{Column, ColumnType, TableId, TableSchema};

/// The hash map for per-row lookups (a table's state by [`TableId`], a batch's keys): hashbrown
/// with foldhash and a per-process random seed, several times faster than std's SipHash on
/// short keys.
pub type FastMap<K, V> = hashbrown::HashMap<K, V>;
/// The hash set to go with [`FastMap`].
pub type FastSet<T> = hashbrown::HashSet<T>;
/// The hasher of [`FastMap`] and [`FastSet`] (foldhash, per-process random seed), for
/// fingerprints of keys.
pub type FastHasher = hashbrown::DefaultHashBuilder;
pub use value::{Date, Time, Timestamp, Value};
