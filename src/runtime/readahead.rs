//! A sink's log reader on a thread of its own, one batch ahead of the sink.
//!
//! Reading and decoding the next batch from the staging log overlaps the sink applying the
//! current one. One dedicated thread per sink session does every read (rather than
//! `block_in_place` on whichever runtime worker the task happens to be on), so the decoded
//! batches are allocated from one malloc arena, and at most two batches are decoded at a
//! time: the one being applied and the one being read. Session 5 tried a read-ahead task
//! that decoded on the runtime's workers: peak RSS of the 5,000,000-row transaction test went
//! from ~92 MiB to 275 MiB; those memory tests are the gate for this design.

use crate::log::{LogError, LogReader, ReadBatch, StagingLog};
use std::sync::Arc;
use std::sync::mpsc;
use tokio::sync::oneshot;

type Reply = oneshot::Sender<Result<ReadBatch, LogError>>;

/// A request to the reader thread: records `from..=upto`, at most `max` of them.
struct Request {
    from: u64,
    upto: u64,
    max: usize,
    reply: Reply,
}

/// The reader thread of one sink session; it ends when this is dropped.
pub(super) struct ReadAhead {
    requests: Option<mpsc::Sender<Request>>,
    /// The read in flight: its first sequence and where its answer comes.
    pending: Option<(u64, oneshot::Receiver<Result<ReadBatch, LogError>>)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ReadAhead {
    pub(super) fn start(log: &Arc<StagingLog>, sink: &str) -> std::io::Result<ReadAhead> {
        let (tx, rx) = mpsc::channel::<Request>();
        let mut reader: LogReader = log.reader();
        let thread = std::thread::Builder::new()
            .name(format!("weir-read-{sink}"))
            .spawn(move || {
                while let Ok(r) = rx.recv() {
                    // The session may be gone (halted); its answer is then dropped.
                    let _ = r.reply.send(reader.read(r.from, r.upto, r.max));
                }
            })?;
        Ok(ReadAhead {
            requests: Some(tx),
            pending: None,
            thread: Some(thread),
        })
    }

    /// Starts reading `from..=upto` in the background unless a read is already in flight.
    pub(super) fn prefetch(&mut self, from: u64, upto: u64, max: usize) {
        if self.pending.is_some() || from > upto {
            return;
        }
        let Some(requests) = &self.requests else {
            return;
        };
        let (reply, answer) = oneshot::channel();
        let request = Request {
            from,
            upto,
            max,
            reply,
        };
        if requests.send(request).is_ok() {
            self.pending = Some((from, answer));
        }
    }

    /// The batch starting at `from` (up to `upto`): the prefetched one when it starts there,
    /// else a fresh read (a prefetch from elsewhere is waited for and dropped first).
    pub(super) async fn read(
        &mut self,
        from: u64,
        upto: u64,
        max: usize,
    ) -> Result<ReadBatch, LogError> {
        if let Some((at, answer)) = self.pending.take() {
            let answer = answer.await.unwrap_or_else(|_| Err(gone()));
            if at == from {
                return answer;
            }
        }
        if from > upto {
            return Ok(ReadBatch::default());
        }
        self.prefetch(from, upto, max);
        match self.pending.take() {
            Some((_, answer)) => answer.await.unwrap_or_else(|_| Err(gone())),
            None => Err(gone()),
        }
    }
}

fn gone() -> LogError {
    LogError::Protocol("the staging log's reader thread ended unexpectedly".into())
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Closing the channel ends the thread after the read it may be doing (at most one
        // batch, milliseconds); joined so the staging log is not held open past the session.
        self.requests = None;
        self.pending = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::tests::{change, commit, schema, temp};
    use crate::log::{LogOptions, WriteOp};
    use weir_api::Entry;

    fn seqs(batch: &ReadBatch) -> Vec<u64> {
        batch.entries.iter().map(|e| e.seq).collect()
    }

    /// Reads ahead in order, answers a read from elsewhere than the prefetch correctly, and
    /// its thread ends (releasing the log) when it is dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_ahead_and_answers_any_position() {
        let dir = temp("readahead");
        let log = StagingLog::open(&dir, LogOptions::default()).unwrap();
        let mut writer = log.writer(32).unwrap();
        writer.send(WriteOp::Schema(schema(1))).await.unwrap();
        let events = (0..99).map(|n| change(n, 1)).collect();
        writer.send(WriteOp::Changes(events)).await.unwrap();
        writer.send(commit(99)).await.unwrap();
        writer.rollback().await.unwrap(); // a barrier: everything above is durable
        let head = log.head().seq;
        assert_eq!(head, 101, "schema, 99 changes, commit");

        let mut ra = ReadAhead::start(&log, "unit").unwrap();
        let first = ra.read(1, head, 40).await.unwrap();
        assert_eq!(seqs(&first), (1..=40).collect::<Vec<_>>());
        ra.prefetch(41, head, 40);
        let second = ra.read(41, head, 40).await.unwrap();
        assert_eq!(seqs(&second), (41..=80).collect::<Vec<_>>());
        assert!(matches!(second.entries[0].entry, Entry::Change(..)));
        // A prefetch from elsewhere is not what a read from 10 gets.
        ra.prefetch(81, head, 40);
        let again = ra.read(10, head, 5).await.unwrap();
        assert_eq!(seqs(&again), (10..=14).collect::<Vec<_>>());
        let last = ra.read(81, head, 40).await.unwrap();
        assert_eq!(seqs(&last), (81..=101).collect::<Vec<_>>());
        assert_eq!(last.last_commit.map(|c| c.seq), Some(101));
        assert!(ra.read(102, head, 40).await.unwrap().entries.is_empty());
        // Below what retention kept: the reader's own error comes through.
        log.retain_below(50).unwrap();
        let err = ra.read(3, head, 40).await.unwrap_err();
        assert!(err.to_string().contains("retention"), "{err}");

        drop(ra);
        writer.finish().unwrap();
        assert_eq!(
            Arc::strong_count(&log),
            1,
            "the reader thread let go of the log"
        );
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
