//! The single writer: turns [`WriteOp`]s into RocksDB batches with group commit.

use super::record::{self, Head, Stored};
use super::{EVENTS, HEAD_KEY, LogError, META, StagingLog};
use rocksdb::WriteBatch;
use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};
use weir_api::{ChangeEvent, CommitInfo, TableId, TableSchema};

/// What the source task asks the writer to do.
#[derive(Debug)]
pub enum WriteOp {
    /// A table schema as the source sees it now (versioned here).
    Schema(TableSchema),
    /// Changes of the transaction in progress.
    Changes(Vec<ChangeEvent>),
    /// Ends the transaction in progress and makes it visible.
    Commit(CommitInfo),
    /// Discards the transaction in progress (the source failed mid-transaction). The sender,
    /// if any, is told once everything queued before is written, so a reconnecting source
    /// resumes from the true head.
    Rollback(Option<oneshot::Sender<()>>),
}

/// Handle to the writer thread.
pub struct LogWriter {
    tx: mpsc::Sender<WriteOp>,
    thread: JoinHandle<Result<(), LogError>>,
}

impl LogWriter {
    /// Queues an operation; waits while the queue is full (memory stays bounded).
    pub async fn send(&self, op: WriteOp) -> Result<(), LogError> {
        self.tx.send(op).await.map_err(|_| LogError::WriterGone)
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
    pub async fn rollback(&self) -> Result<(), LogError> {
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
}

pub(super) fn start(log: Arc<StagingLog>, queue: usize) -> Result<LogWriter, LogError> {
    let (tx, rx) = mpsc::channel(queue.max(1));
    let state = WriterState::new(Arc::clone(&log))?;
    let thread = std::thread::Builder::new()
        .name("weir-log-writer".into())
        .spawn(move || state.run(rx))
        .map_err(|e| LogError::Protocol(format!("cannot start the staging log writer: {e}")))?;
    Ok(LogWriter { tx, thread })
}

struct WriterState {
    log: Arc<StagingLog>,
    head: Head,
    next_seq: u64,
    bytes_total: u64,
    /// Latest schema per table, including versions of the transaction in progress.
    schemas: HashMap<TableId, TableSchema>,
    /// Versions introduced by the transaction in progress, with what they replaced; written
    /// to the metadata only with its commit, restored on rollback.
    pending_schemas: Vec<(TableSchema, Option<TableSchema>)>,
    /// Rollbacks to confirm once the current batch is written.
    replies: Vec<oneshot::Sender<()>>,
    buf: Vec<u8>,
}

impl WriterState {
    fn new(log: Arc<StagingLog>) -> Result<Self, LogError> {
        let head = log.head();
        Ok(WriterState {
            next_seq: head.seq + 1,
            bytes_total: head.bytes_total,
            schemas: log.latest_schemas()?,
            pending_schemas: Vec::new(),
            replies: Vec::new(),
            head,
            log,
            buf: Vec::with_capacity(4096),
        })
    }

    fn run(mut self, mut rx: mpsc::Receiver<WriteOp>) -> Result<(), LogError> {
        let group_bytes = self.log.options().group_bytes;
        let chunk_bytes = self.log.options().chunk_bytes;
        while let Some(op) = rx.blocking_recv() {
            let mut batch = WriteBatch::default();
            let mut committed = false;
            committed |= self.apply(op, &mut batch)?;
            self.log.note_appended(self.bytes_total);
            // Group commit: take everything already waiting, up to a bound.
            while batch.size_in_bytes() < group_bytes {
                match rx.try_recv() {
                    Ok(op) => {
                        committed |= self.apply(op, &mut batch)?;
                        self.log.note_appended(self.bytes_total);
                    }
                    Err(_) => break,
                }
                // A huge transaction with no commit in sight: write its chunk out unsynced.
                if !committed && batch.size_in_bytes() >= chunk_bytes {
                    break;
                }
            }
            self.log.write(batch, committed, "cannot append")?;
            if committed {
                self.log.publish_head(self.head.clone());
            }
            for reply in self.replies.drain(..) {
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    fn put(&mut self, batch: &mut WriteBatch, stored: &Stored) -> Result<(), LogError> {
        record::encode(stored, &mut self.buf)?;
        batch.put_cf(self.log.cf(EVENTS), self.next_seq.to_be_bytes(), &self.buf);
        self.bytes_total += self.buf.len() as u64;
        self.next_seq += 1;
        Ok(())
    }

    /// Adds one operation to `batch`; true if it was a commit.
    fn apply(&mut self, op: WriteOp, batch: &mut WriteBatch) -> Result<bool, LogError> {
        match op {
            WriteOp::Schema(mut schema) => {
                let old = self.schemas.get(&schema.table);
                let version = match old {
                    Some(old) if old.same_shape(&schema) => return Ok(false),
                    Some(old) => old.version + 1,
                    None => 1,
                };
                schema.version = version;
                self.put(batch, &Stored::Schema(schema.clone()))?;
                let old = self.schemas.insert(schema.table.clone(), schema.clone());
                self.pending_schemas.push((schema, old));
            }
            WriteOp::Changes(events) => {
                let staged_ms = now_ms();
                for mut event in events {
                    let Some(schema) = self.schemas.get(&event.table) else {
                        return Err(LogError::Protocol(format!(
                            "the source sent a change of {} before announcing its schema; this is a bug in the source connector",
                            event.table
                        )));
                    };
                    event.schema_version = schema.version;
                    self.put(batch, &Stored::Change { staged_ms, event })?;
                }
            }
            WriteOp::Commit(info) => {
                if let (Some(old), new) = (&self.head.position, &info.position)
                    && !matches!(new.partial_cmp(old), Some(std::cmp::Ordering::Greater))
                {
                    return Err(LogError::Protocol(format!(
                        "the source position did not move forward ({old} then {new}): a transaction would be staged twice or out of order; \
                             refusing to stage it. If the source database was replaced, start the pipeline \
                             with a new name or data_dir"
                    )));
                }
                let seq = self.next_seq;
                let position = info.position.clone();
                let stored = Stored::Commit {
                    staged_ms: now_ms(),
                    info,
                    bytes_total: 0,
                };
                // bytes_total includes the commit record itself.
                record::encode(&stored, &mut self.buf)?;
                let bytes_total = self.bytes_total + self.buf.len() as u64;
                let Stored::Commit {
                    staged_ms, info, ..
                } = stored
                else {
                    unreachable!()
                };
                self.put(
                    batch,
                    &Stored::Commit {
                        staged_ms,
                        info,
                        bytes_total,
                    },
                )?;
                self.bytes_total = bytes_total;
                self.head = Head {
                    seq,
                    position: Some(position),
                    bytes_total,
                    txns: self.head.txns + 1,
                };
                let mut value = Vec::new();
                record::encode(&self.head, &mut value)?;
                batch.put_cf(self.log.cf(META), HEAD_KEY, value);
                for (schema, _) in self.pending_schemas.drain(..) {
                    let mut value = Vec::new();
                    record::encode(&schema, &mut value)?;
                    batch.put_cf(
                        self.log.cf(META),
                        StagingLog::schema_key(&schema.table, schema.version),
                        value,
                    );
                }
                return Ok(true);
            }
            WriteOp::Rollback(reply) => {
                self.replies.extend(reply);
                for (schema, old) in self.pending_schemas.drain(..).rev() {
                    match old {
                        Some(old) => self.schemas.insert(schema.table.clone(), old),
                        None => self.schemas.remove(&schema.table),
                    };
                }
                if self.next_seq > self.head.seq + 1 {
                    batch.delete_range_cf(
                        self.log.cf(EVENTS),
                        (self.head.seq + 1).to_be_bytes(),
                        self.next_seq.to_be_bytes(),
                    );
                }
                self.next_seq = self.head.seq + 1;
                self.bytes_total = self.head.bytes_total;
            }
        }
        Ok(false)
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
