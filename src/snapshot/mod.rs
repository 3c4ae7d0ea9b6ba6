//! The initial snapshot: existing rows read in parallel chunks and staged as `op = r` events
//! before the stream continues from the snapshot's consistent point.
//!
//! ```text
//!  Snapshot::plan ──▶ plan stored in the log's metadata
//!  N workers: ChunkReader::open/next_batch ──▶ batches ──▶ this task ──▶ LogWriter
//!                                                           (one log transaction per batch,
//!                                                            committed with a Snapshot position)
//! ```
//!
//! Every staged batch is a transaction of its own whose position is a
//! [`SnapshotPosition`]: the consistent point plus the set of finished chunks. A restart
//! therefore knows exactly which chunks are finished; it re-reads the ones that were in
//! progress (their rows can appear again as `op = r`, which SQL and Kafka sinks absorb by key)
//! and never a finished one. The stream then resumes after `stream_from`, so the first
//! streamed commit sorts after every snapshot position.

use crate::log::{LogError, LogWriter, StagingLog, WriteOp};
use crate::runtime::{RuntimeError, SourceFactory, StageStats, backoff::Backoff, chain, wait_true};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};
use weir_api::{
    ChangeEvent, ChunkReader, CommitInfo, ConnectorError, SnapshotChunk, SnapshotPlan,
    SnapshotPosition, SourcePosition, TableId,
};

/// How the pipeline snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Snapshot existing rows of a new pipeline.
    pub enabled: bool,
    /// Stop after the snapshot (no streaming).
    pub only: bool,
    /// Parallel readers.
    pub workers: usize,
    /// Rows per staged batch.
    pub batch_rows: usize,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            enabled: false,
            only: false,
            workers: 4,
            batch_rows: 4096,
        }
    }
}

/// How a snapshot run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every chunk is staged (or there was nothing to snapshot).
    Done,
    /// Stopped by the caller; a later run resumes.
    Stopped,
}

/// Per-table progress, for the log lines and `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableProgress {
    /// Chunks in the plan.
    pub chunks: u32,
    /// Chunks finished.
    pub chunks_done: u32,
    /// Estimated rows (from the planner's statistics).
    pub estimated_rows: u64,
    /// Estimated rows of the finished chunks.
    pub rows_done_estimate: u64,
}

/// Progress per table, from a plan and a snapshot position.
pub fn progress(
    plan: &SnapshotPlan,
    pos: Option<&SnapshotPosition>,
) -> BTreeMap<TableId, TableProgress> {
    let mut out: BTreeMap<TableId, TableProgress> = BTreeMap::new();
    for c in &plan.chunks {
        let p = out.entry(c.table.clone()).or_default();
        p.chunks += 1;
        p.estimated_rows += c.estimated_rows;
        if pos.is_some_and(|s| s.is_done(c.index)) {
            p.chunks_done += 1;
            p.rows_done_estimate += c.estimated_rows;
        }
    }
    out
}

enum Msg {
    Batch {
        chunk: u32,
        events: Vec<ChangeEvent>,
        last: bool,
    },
    Failed(ConnectorError),
}

enum AttemptError {
    Connector(ConnectorError),
    Log(LogError),
}

impl From<ConnectorError> for AttemptError {
    fn from(e: ConnectorError) -> Self {
        AttemptError::Connector(e)
    }
}
impl From<LogError> for AttemptError {
    fn from(e: LogError) -> Self {
        AttemptError::Log(e)
    }
}

/// Runs (or resumes) the initial snapshot; returns once every chunk is staged, or when
/// stopped. Transient failures retry with backoff from the last finished chunk. The
/// workers' reads are timed in `stage` (`snapshot read`).
pub async fn run(
    log: &Arc<StagingLog>,
    writer: &mut LogWriter,
    factory: &dyn SourceFactory,
    opts: &SnapshotOptions,
    stage: &Arc<StageStats>,
    mut halt: watch::Receiver<bool>,
) -> Result<Outcome, RuntimeError> {
    let mut backoff = Backoff::new();
    loop {
        let mut progressed = false;
        let result = attempt(
            log,
            writer,
            factory,
            opts,
            stage,
            &mut halt,
            &mut progressed,
        )
        .await;
        if progressed {
            backoff.reset();
        }
        match result {
            Ok(o) => return Ok(o),
            Err(AttemptError::Log(e)) => return Err(RuntimeError::Log(e)),
            Err(AttemptError::Connector(e)) if e.is_transient() => {
                writer.rollback().await?;
                let delay = backoff.next_delay();
                warn!(error = %chain(&e), retry_in = ?delay, "snapshot failed; resuming from the last finished chunk");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wait_true(&mut halt) => return Ok(Outcome::Stopped),
                }
            }
            Err(AttemptError::Connector(e)) => return Err(RuntimeError::Source(e)),
        }
    }
}

async fn attempt(
    log: &Arc<StagingLog>,
    writer: &mut LogWriter,
    factory: &dyn SourceFactory,
    opts: &SnapshotOptions,
    stage: &Arc<StageStats>,
    halt: &mut watch::Receiver<bool>,
    progressed: &mut bool,
) -> Result<Outcome, AttemptError> {
    let head = log.head();
    let stored = log.snapshot_plan()?;
    let in_progress = match &head.position {
        None => None,
        Some(SourcePosition::Snapshot(s)) if s.complete() => return Ok(Outcome::Done),
        Some(SourcePosition::Snapshot(s)) => Some(s.clone()),
        // Already streaming: the snapshot finished earlier, or the pipeline began without one.
        Some(_) => return Ok(Outcome::Done),
    };
    let Some(mut snap) = factory.snapshot().await? else {
        return Ok(Outcome::Done);
    };
    let (plan, mut pos) = match (stored, in_progress) {
        (Some(plan), pos) => {
            let pos = pos.unwrap_or_else(|| {
                SnapshotPosition::start(plan.stream_from.clone(), plan.chunks.len() as u32)
            });
            info!(
                done = pos.done_count(),
                chunks = pos.total,
                "resuming the snapshot with a fresh consistent view; chunks already staged are kept"
            );
            snap.resume(&plan).await?;
            (plan, pos)
        }
        (None, Some(_)) => {
            return Err(LogError::Protocol(
                "the staging log holds snapshot progress but no snapshot plan; remove the \
                 pipeline's data directory to start over"
                    .into(),
            )
            .into());
        }
        (None, None) => {
            let plan = snap.plan().await?;
            for (i, c) in plan.chunks.iter().enumerate() {
                if c.index as usize != i {
                    return Err(ConnectorError::definite(format!(
                        "snapshot plan: chunk {i} is numbered {}; this is a bug in the source connector",
                        c.index
                    ))
                    .into());
                }
            }
            writer.put_snapshot_plan(&plan).await?;
            let pos = SnapshotPosition::start(plan.stream_from.clone(), plan.chunks.len() as u32);
            let rows: u64 = plan.chunks.iter().map(|c| c.estimated_rows).sum();
            info!(
                tables = plan.schemas.len(),
                chunks = plan.chunks.len(),
                estimated_rows = rows,
                stream_from = %plan.stream_from,
                "snapshot planned"
            );
            (plan, pos)
        }
    };
    for schema in &plan.schemas {
        writer.send(WriteOp::Schema(schema.clone())).await?;
    }
    let pending: VecDeque<SnapshotChunk> = plan
        .chunks
        .iter()
        .filter(|c| !pos.is_done(c.index))
        .cloned()
        .collect();
    if pending.is_empty() {
        // Nothing (left) to read: record completion so the next start streams.
        pos.batch += 1;
        commit(writer, &mut pos, None, Vec::new()).await?;
        snap.readers_ready().await?;
        return Ok(Outcome::Done);
    }
    let workers = opts.workers.clamp(1, pending.len());
    let mut readers: Vec<Box<dyn ChunkReader>> = Vec::with_capacity(workers);
    for _ in 0..workers {
        readers.push(snap.reader().await?);
    }
    snap.readers_ready().await?;
    let queue = Arc::new(Mutex::new(pending));
    let (tx, mut rx) = mpsc::channel::<Msg>(workers * 2);
    let mut set = JoinSet::new();
    for reader in readers {
        set.spawn(worker(
            reader,
            Arc::clone(&queue),
            tx.clone(),
            opts.batch_rows,
            Arc::clone(stage),
        ));
    }
    drop(tx);
    let mut meter = Meter::new(&plan, &pos);
    loop {
        let msg = tokio::select! {
            biased;
            _ = wait_true(halt) => {
                set.abort_all();
                return Ok(Outcome::Stopped);
            }
            _ = writer.closed() => return Err(LogError::WriterGone.into()),
            msg = rx.recv() => msg,
        };
        match msg {
            None => break,
            Some(Msg::Failed(e)) => {
                set.abort_all();
                return Err(e.into());
            }
            Some(Msg::Batch {
                chunk,
                events,
                last,
            }) => {
                let table = plan.chunks[chunk as usize].table.clone();
                meter.rows(&table, events.len() as u64);
                pos.batch += 1;
                commit(writer, &mut pos, last.then_some(chunk), events).await?;
                *progressed = true;
                if last {
                    meter.chunk_done(&table);
                }
                meter.maybe_report(false);
            }
        }
    }
    while set.join_next().await.is_some() {}
    meter.maybe_report(true);
    if !pos.complete() {
        return Err(ConnectorError::transient(format!(
            "snapshot workers ended with {} of {} chunks staged",
            pos.done_count(),
            pos.total
        ))
        .into());
    }
    info!(
        chunks = pos.total,
        stream_from = %plan.stream_from,
        "snapshot staged; streaming continues from its consistent point"
    );
    Ok(Outcome::Done)
}

async fn commit(
    writer: &mut LogWriter,
    pos: &mut SnapshotPosition,
    finished: Option<u32>,
    events: Vec<ChangeEvent>,
) -> Result<(), LogError> {
    let n = events.len() as u64;
    if !events.is_empty() {
        writer.send(WriteOp::Changes(events)).await?;
    }
    if let Some(chunk) = finished {
        pos.mark_done(chunk);
    }
    writer
        .send(WriteOp::Commit(CommitInfo {
            position: SourcePosition::Snapshot(pos.clone()),
            txid: None,
            ts_ms: crate::runtime::now_ms(),
            events: n,
        }))
        .await
}

async fn worker(
    mut reader: Box<dyn ChunkReader>,
    queue: Arc<Mutex<VecDeque<SnapshotChunk>>>,
    tx: mpsc::Sender<Msg>,
    batch_rows: usize,
    stage: Arc<StageStats>,
) {
    loop {
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        let Some(chunk) = next else { return };
        if let Err(e) = read_chunk(reader.as_mut(), &chunk, &tx, batch_rows, &stage).await {
            let _ = tx.send(Msg::Failed(e)).await;
            return;
        }
    }
}

/// Sends a chunk's rows in batches, the last one flagged (holding one batch back to know).
/// Each `next_batch` is one call of the `snapshot read` stage (the first includes `open`);
/// waiting for room in the channel is not timed.
async fn read_chunk(
    reader: &mut dyn ChunkReader,
    chunk: &SnapshotChunk,
    tx: &mpsc::Sender<Msg>,
    batch_rows: usize,
    stage: &StageStats,
) -> Result<(), ConnectorError> {
    let started = Instant::now();
    reader.open(chunk).await?;
    let mut opening = started.elapsed();
    let mut held: Option<Vec<ChangeEvent>> = None;
    loop {
        let started = Instant::now();
        let batch = reader.next_batch(batch_rows).await?;
        stage.record(
            std::mem::take(&mut opening) + started.elapsed(),
            batch.as_ref().map_or(0, |b| b.len() as u64),
        );
        match batch {
            Some(b) if b.is_empty() => {}
            Some(b) => {
                if let Some(prev) = held.replace(b) {
                    let msg = Msg::Batch {
                        chunk: chunk.index,
                        events: prev,
                        last: false,
                    };
                    if tx.send(msg).await.is_err() {
                        return Ok(());
                    }
                }
            }
            None => {
                let msg = Msg::Batch {
                    chunk: chunk.index,
                    events: held.take().unwrap_or_default(),
                    last: true,
                };
                let _ = tx.send(msg).await;
                return Ok(());
            }
        }
    }
}

/// Rows per table, rate and ETA: progress bars redrawn in place when stderr is a terminal
/// (unless `WEIR_PROGRESS=0`), else a log line per table every few seconds.
struct Meter {
    started: Instant,
    last_report: Instant,
    /// Per table: progress, rows staged in all runs, rows staged in this run (for the rate).
    tables: BTreeMap<TableId, (TableProgress, u64, u64)>,
    /// Draw bars on the terminal instead of logging progress lines.
    bars: bool,
    /// Lines of bars drawn last time (redrawn over).
    drawn: usize,
}

const REPORT_EVERY: Duration = Duration::from_secs(5);
const DRAW_EVERY: Duration = Duration::from_millis(250);

impl Meter {
    fn new(plan: &SnapshotPlan, pos: &SnapshotPosition) -> Self {
        use std::io::IsTerminal as _;
        let tables = progress(plan, Some(pos))
            .into_iter()
            .map(|(t, p)| {
                let rows = p.rows_done_estimate;
                (t, (p, rows, 0))
            })
            .collect();
        let now = Instant::now();
        let bars = std::io::stderr().is_terminal()
            && std::env::var("WEIR_PROGRESS").map_or(true, |v| v != "0");
        Meter {
            started: now,
            last_report: now,
            tables,
            bars,
            drawn: 0,
        }
    }

    fn rows(&mut self, table: &TableId, n: u64) {
        if let Some((_, rows, run_rows)) = self.tables.get_mut(table) {
            *rows += n;
            *run_rows += n;
        }
    }

    fn chunk_done(&mut self, table: &TableId) {
        if let Some((p, ..)) = self.tables.get_mut(table) {
            p.chunks_done += 1;
        }
    }

    fn maybe_report(&mut self, last: bool) {
        let every = if self.bars { DRAW_EVERY } else { REPORT_EVERY };
        if !last && self.last_report.elapsed() < every {
            return;
        }
        self.last_report = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        if self.bars {
            self.draw(secs);
        }
        let mut total_rows = 0;
        for (table, (p, rows, run_rows)) in &self.tables {
            total_rows += run_rows;
            if self.bars || (p.chunks_done == p.chunks && !last) {
                continue;
            }
            let rate = *run_rows as f64 / secs;
            info!(
                table = %table,
                rows = *rows,
                estimated = p.estimated_rows,
                chunks = format!("{}/{}", p.chunks_done, p.chunks),
                rows_per_sec = rate as u64,
                eta = %eta(p, *rows, rate),
                "snapshot progress"
            );
        }
        if last {
            info!(
                rows = total_rows,
                seconds = format!("{secs:.1}"),
                rows_per_sec = (total_rows as f64 / secs) as u64,
                "snapshot read"
            );
        }
    }

    /// Redraws the bars over the previous ones.
    fn draw(&mut self, secs: f64) {
        use std::io::Write as _;
        let lines = bar_lines(&self.tables, secs);
        let mut out = String::new();
        if self.drawn > 0 {
            // To the start of the first bar line drawn last time.
            out.push_str(&format!("\x1b[{}F", self.drawn));
        }
        for line in &lines {
            out.push_str("\x1b[2K");
            out.push_str(line);
            out.push('\n');
        }
        self.drawn = lines.len();
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
    }
}

/// Estimated time left, or `-` once done or without a rate.
fn eta(p: &TableProgress, rows: u64, rate: f64) -> String {
    if rate > 0.0 && p.chunks_done < p.chunks {
        let left = p.estimated_rows.saturating_sub(rows) as f64 / rate;
        format!("{left:.0}s")
    } else {
        "-".into()
    }
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One progress bar per table (at most 12, then a summary line), plus a total line.
fn bar_lines(tables: &BTreeMap<TableId, (TableProgress, u64, u64)>, secs: f64) -> Vec<String> {
    const WIDTH: usize = 24;
    const MAX_TABLES: usize = 12;
    let name_width = tables
        .keys()
        .map(|t| t.to_string().chars().count())
        .max()
        .unwrap_or(0)
        .min(48);
    let mut lines = Vec::new();
    let (mut all_rows, mut all_run, mut all_est, mut done_tables) = (0u64, 0u64, 0u64, 0usize);
    for (table, (p, rows, run_rows)) in tables {
        all_rows += rows;
        all_run += run_rows;
        let finished = p.chunks_done == p.chunks;
        // A finished table's total is what was read (the estimate was the planner's guess).
        let total = if finished {
            *rows
        } else {
            p.estimated_rows.max(*rows)
        };
        all_est += total;
        if finished {
            done_tables += 1;
        }
        if lines.len() >= MAX_TABLES {
            continue;
        }
        let fraction = if finished {
            1.0
        } else if p.estimated_rows == 0 {
            f64::from(p.chunks_done) / f64::from(p.chunks.max(1))
        } else {
            (*rows as f64 / p.estimated_rows as f64).min(0.99)
        };
        let filled = (fraction * WIDTH as f64).round() as usize;
        let mut name: String = table.to_string().chars().take(name_width).collect();
        while name.chars().count() < name_width {
            name.push(' ');
        }
        let rate = *run_rows as f64 / secs;
        lines.push(format!(
            "  {name}  [{}{}] {:>3.0}%  {} / {} rows  {} rows/s  ETA {}  chunks {}/{}",
            "\u{2588}".repeat(filled),
            "\u{2591}".repeat(WIDTH - filled),
            fraction * 100.0,
            thousands(*rows),
            thousands(total),
            thousands(rate as u64),
            eta(p, *rows, rate),
            p.chunks_done,
            p.chunks
        ));
    }
    if tables.len() > MAX_TABLES {
        lines.push(format!(
            "  ... and {} more tables",
            tables.len() - MAX_TABLES
        ));
    }
    lines.push(format!(
        "  snapshot: {done_tables}/{} tables done, {} / {} rows, {} rows/s, {:.0}s",
        tables.len(),
        thousands(all_rows),
        thousands(all_est),
        thousands((all_run as f64 / secs) as u64),
        secs
    ));
    lines
}
