//! The single writer: [`WriteOp`]s are versioned, numbered and encoded on the caller's task
//! (the source task), then written by one thread in RocksDB batches with group commit.
//!
//! ```text
//!  source task: LogWriter::send(op) ── stamp schema versions, assign sequences, encode ──▶ Block
//!  writer thread: drain queued Blocks into one WriteBatch ── write (sync if a commit) ──▶ publish head
//! ```
//!
//! Encoding on the caller's side keeps the writer thread to RocksDB work, so encoding and
//! writing run in parallel.

use super::record::{self, Head, Stored};
use super::{EVENTS, HEAD_KEY, LogError, META, SNAPSHOT_PLAN_KEY, StagingLog};
use crate::runtime::StageStats;
use rocksdb::WriteBatch;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use weir_api::{ChangeEvent, CommitInfo, SnapshotPlan, TableId, TableSchema};

/// Most changes in one pack.
pub(super) const PACK_RECORDS: usize = 1024;
/// A pack is closed once it holds this many bytes.
pub(super) const PACK_BYTES: usize = 1 << 20;

/// What the source task asks the log to do.
#[derive(Debug)]
pub enum WriteOp {
    /// A table schema as the source sees it now (versioned by the log).
    Schema(TableSchema),
    /// Changes of the transaction in progress.
    Changes(Vec<ChangeEvent>),
    /// Ends the transaction in progress and makes it visible.
    Commit(CommitInfo),
    /// Moves the head's source position forward without a record: nothing to stage up to
    /// here (a source heartbeat). Ignored inside a transaction or if it does not move forward.
    Advance(weir_api::SourcePosition),
    /// Stores a metadata record, in order with the other operations (durable with the next
    /// commit).
    Meta(Vec<u8>, Vec<u8>),
    /// Discards the transaction in progress (the source failed mid-transaction). The sender,
    /// if any, is told once everything queued before is written.
    Rollback(Option<oneshot::Sender<()>>),
}

/// Encoded records for the writer thread.
#[derive(Default)]
struct Block {
    /// The stored values (single records and packs), back to back.
    data: Vec<u8>,
    /// Per stored value: its key (the sequence of its first record) and its end in `data`.
    values: Vec<(u64, usize)>,
    /// Metadata puts (head, schema versions).
    meta: Vec<(Vec<u8>, Vec<u8>)>,
    /// Event sequences to delete (a rolled-back transaction).
    delete: Option<(u64, u64)>,
    /// The head this block makes visible (a commit).
    head: Option<Head>,
    /// Told once the block is written.
    reply: Option<oneshot::Sender<()>>,
    /// Change records in `data` (for the `log append` stage).
    changes: u64,
    /// Time spent encoding the block on the caller's task (nanoseconds; 0 when not timed).
    encode_nanos: u64,
}

/// The log's single writer, owned by the source task.
pub struct LogWriter {
    tx: mpsc::Sender<Block>,
    thread: JoinHandle<Result<(), LogError>>,
    log: Arc<StagingLog>,
    /// The last commit sent.
    head: Head,
    next_seq: u64,
    bytes_total: u64,
    /// Latest schema per table, including versions of the transaction in progress.
    schemas: weir_api::FastMap<TableId, TableSchema>,
    /// Versions introduced by the transaction in progress, with what they replaced; written
    /// to the metadata only with its commit, restored on rollback.
    pending_schemas: Vec<(TableSchema, Option<TableSchema>)>,
    scratch: Vec<u8>,
    /// Where the `log append` stage is timed, if anywhere.
    stage: Option<Arc<StageStats>>,
}

impl LogWriter {
    /// Stages an operation; waits while the writer's queue is full (memory stays bounded).
    pub async fn send(&mut self, op: WriteOp) -> Result<(), LogError> {
        let started = self.stage.is_some().then(Instant::now);
        let mut block = self.encode(op)?;
        if let Some(t) = started {
            block.encode_nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
        }
        self.log.note_appended(self.bytes_total);
        self.tx.send(block).await.map_err(|_| LogError::WriterGone)
    }

    /// Records the snapshot plan (durable with the next commit).
    pub async fn put_snapshot_plan(&mut self, plan: &SnapshotPlan) -> Result<(), LogError> {
        let mut value = Vec::new();
        record::encode(plan, &mut value)?;
        self.send(WriteOp::Meta(SNAPSHOT_PLAN_KEY.to_vec(), value))
            .await
    }

    /// Whether the writer thread has stopped (after an error).
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the writer thread has stopped.
    pub async fn closed(&self) {
        self.tx.closed().await
    }

    /// Discards the transaction in progress and waits until everything queued before it is
    /// written, so that [`StagingLog::head`] is final.
    pub async fn rollback(&mut self) -> Result<(), LogError> {
        let (tx, rx) = oneshot::channel();
        self.send(WriteOp::Rollback(Some(tx))).await?;
        rx.await.map_err(|_| LogError::WriterGone)
    }

    /// Stops the writer after it has written everything queued, and returns its outcome.
    pub fn finish(self) -> Result<(), LogError> {
        drop(self.tx);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(LogError::Protocol("the staging log writer panicked".into())))
    }

    fn push(&mut self, block: &mut Block, stored: &Stored) -> Result<(), LogError> {
        let start = block.data.len();
        record::encode_append(stored, &mut block.data)?;
        block.values.push((self.next_seq, block.data.len()));
        self.bytes_total += (block.data.len() - start) as u64;
        self.next_seq += 1;
        Ok(())
    }

    /// Stages changes as packs of up to [`PACK_RECORDS`] records or about [`PACK_BYTES`]
    /// (a lone change as a single record).
    fn push_changes(
        &mut self,
        block: &mut Block,
        events: Vec<ChangeEvent>,
    ) -> Result<(), LogError> {
        let staged_ms = now_ms();
        block.data.reserve(events.len() * 256);
        block.changes = events.len() as u64;
        let mut left = events.len();
        // The open pack and the sequence of its first record.
        let mut pack: Option<(record::PackWriter, u64)> = None;
        for mut event in events {
            let Some(schema) = self.schemas.get(&*event.table) else {
                return Err(LogError::Protocol(format!(
                    "the source sent a change of {} before announcing its schema; this is a bug in the source connector",
                    event.table
                )));
            };
            event.schema_version = schema.version;
            let stored = Stored::Change { staged_ms, event };
            left -= 1;
            if pack.is_none() && left == 0 {
                self.push(block, &stored)?;
                continue;
            }
            let (writer, _) = pack
                .get_or_insert_with(|| (record::PackWriter::begin(&mut block.data), self.next_seq));
            writer.push(&stored, &mut block.data)?;
            self.next_seq += 1;
            if writer.count() as usize >= PACK_RECORDS || writer.len(&block.data) >= PACK_BYTES {
                self.close_pack(block, pack.take());
            }
        }
        self.close_pack(block, pack);
        Ok(())
    }

    fn close_pack(&mut self, block: &mut Block, pack: Option<(record::PackWriter, u64)>) {
        if let Some((writer, first)) = pack {
            self.bytes_total += writer.len(&block.data) as u64;
            block.values.push((first, block.data.len()));
        }
    }

    fn encode(&mut self, op: WriteOp) -> Result<Block, LogError> {
        let mut block = Block::default();
        match op {
            WriteOp::Schema(mut schema) => {
                let old = self.schemas.get(&schema.table);
                let version = match old {
                    Some(old) if old.same_shape(&schema) => return Ok(block),
                    Some(old) => old.version + 1,
                    None => 1,
                };
                schema.version = version;
                self.push(&mut block, &Stored::Schema(schema.clone()))?;
                let old = self.schemas.insert(schema.table.clone(), schema.clone());
                self.pending_schemas.push((schema, old));
            }
            WriteOp::Changes(events) => self.push_changes(&mut block, events)?,
            WriteOp::Commit(info) => {
                if let Some(old) = &self.head.position
                    && !matches!(
                        info.position.partial_cmp(old),
                        Some(std::cmp::Ordering::Greater)
                    )
                {
                    return Err(LogError::Protocol(format!(
                        "the source position did not move forward ({old} then {}): a transaction would be \
                         staged twice or out of order. If the source database was replaced, start the \
                         pipeline with a new name or data_dir",
                        info.position
                    )));
                }
                let seq = self.next_seq;
                let position = info.position.clone();
                let mut stored = Stored::Commit {
                    staged_ms: now_ms(),
                    info,
                    bytes_total: 0,
                };
                // bytes_total counts the commit record itself.
                record::encode(&stored, &mut self.scratch)?;
                let bytes_total = self.bytes_total + self.scratch.len() as u64;
                if let Stored::Commit { bytes_total: b, .. } = &mut stored {
                    *b = bytes_total;
                }
                self.push(&mut block, &stored)?;
                self.bytes_total = bytes_total;
                self.head = Head {
                    seq,
                    position: Some(position),
                    bytes_total,
                    txns: self.head.txns + 1,
                };
                let mut value = Vec::new();
                record::encode(&self.head, &mut value)?;
                block.meta.push((HEAD_KEY.to_vec(), value));
                for (schema, _) in self.pending_schemas.drain(..) {
                    let mut value = Vec::new();
                    record::encode(&schema, &mut value)?;
                    block
                        .meta
                        .push((StagingLog::schema_key(&schema.table, schema.version), value));
                }
                block.head = Some(self.head.clone());
            }
            WriteOp::Meta(key, value) => block.meta.push((key, value)),
            WriteOp::Advance(position) => {
                let forward = match &self.head.position {
                    None => true,
                    Some(old) => {
                        matches!(position.partial_cmp(old), Some(std::cmp::Ordering::Greater))
                    }
                };
                if forward && self.next_seq == self.head.seq + 1 {
                    self.head.position = Some(position);
                    let mut value = Vec::new();
                    record::encode(&self.head, &mut value)?;
                    block.meta.push((HEAD_KEY.to_vec(), value));
                    block.head = Some(self.head.clone());
                }
            }
            WriteOp::Rollback(reply) => {
                block.reply = reply;
                for (schema, old) in self.pending_schemas.drain(..).rev() {
                    match old {
                        Some(old) => self.schemas.insert(schema.table.clone(), old),
                        None => self.schemas.remove(&schema.table),
                    };
                }
                if self.next_seq > self.head.seq + 1 {
                    block.delete = Some((self.head.seq + 1, self.next_seq));
                }
                self.next_seq = self.head.seq + 1;
                self.bytes_total = self.head.bytes_total;
            }
        }
        Ok(block)
    }
}

pub(super) fn start(
    log: Arc<StagingLog>,
    queue: usize,
    stage: Option<Arc<StageStats>>,
) -> Result<LogWriter, LogError> {
    let (tx, rx) = mpsc::channel(queue.max(1));
    let head = log.head();
    let schemas = log.latest_schemas()?;
    let thread_log = Arc::clone(&log);
    let thread_stage = stage.clone();
    let thread = std::thread::Builder::new()
        .name("weir-log-writer".into())
        .spawn(move || run(&thread_log, rx, thread_stage.as_deref()))
        .map_err(|e| LogError::Protocol(format!("cannot start the staging log writer: {e}")))?;
    Ok(LogWriter {
        tx,
        thread,
        next_seq: head.seq + 1,
        bytes_total: head.bytes_total,
        head,
        schemas,
        pending_schemas: Vec::new(),
        log,
        scratch: Vec::with_capacity(4096),
        stage,
    })
}

/// The writer thread: group commit. Each group write is one call of the `log append`
/// stage: from taking its first block to the write (and sync) being done, plus the time
/// its blocks took to encode on the caller's task.
fn run(
    log: &StagingLog,
    mut rx: mpsc::Receiver<Block>,
    stage: Option<&StageStats>,
) -> Result<(), LogError> {
    let group_bytes = log.options().group_bytes;
    let chunk_bytes = log.options().chunk_bytes;
    let mut replies = Vec::new();
    while let Some(block) = rx.blocking_recv() {
        let started = Instant::now();
        let mut batch = WriteBatch::default();
        let mut head = None;
        let (mut changes, mut encode_nanos) = (0u64, 0u64);
        changes += block.changes;
        encode_nanos += block.encode_nanos;
        add(log, &mut batch, block, &mut head, &mut replies);
        // Group commit: take everything already waiting, up to a bound.
        while batch.size_in_bytes() < group_bytes {
            // A huge transaction with no commit in sight: write its chunk out unsynced.
            if head.is_none() && batch.size_in_bytes() >= chunk_bytes {
                break;
            }
            match rx.try_recv() {
                Ok(block) => {
                    changes += block.changes;
                    encode_nanos = encode_nanos.saturating_add(block.encode_nanos);
                    add(log, &mut batch, block, &mut head, &mut replies)
                }
                Err(_) => break,
            }
        }
        log.write(batch, head.is_some(), "cannot append")?;
        if let Some(head) = head {
            log.publish_head(head);
        }
        if let Some(stage) = stage {
            stage.record(
                started.elapsed() + Duration::from_nanos(encode_nanos),
                changes,
            );
        }
        for reply in replies.drain(..) {
            let _ = reply.send(());
        }
    }
    Ok(())
}

fn add(
    log: &StagingLog,
    batch: &mut WriteBatch,
    block: Block,
    head: &mut Option<Head>,
    replies: &mut Vec<oneshot::Sender<()>>,
) {
    let events = log.cf(EVENTS);
    if let Some((from, to)) = block.delete {
        batch.delete_range_cf(events, from.to_be_bytes(), to.to_be_bytes());
    }
    let mut start = 0;
    for &(seq, end) in &block.values {
        batch.put_cf(events, seq.to_be_bytes(), &block.data[start..end]);
        start = end;
    }
    let meta = log.cf(META);
    for (k, v) in &block.meta {
        batch.put_cf(meta, k, v);
    }
    if block.head.is_some() {
        *head = block.head;
    }
    replies.extend(block.reply);
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
