//! The pipeline runtime: one source task, the staging log's writer thread, one task per sink.
//!
//! ```text
//!            ┌──────────── ack(durable position) ◀──────────┐
//!            ▼                                              │
//!  source task ──WriteOp (bounded queue)──▶ log writer ──▶ head (watch)
//!     ▲ pauses while the backlog is over [log] max_bytes          │
//!     └───────── cursor moved ◀────┐                               ▼
//!                                  └── sink task (one per sink): read ▶ apply ▶ cursor
//! ```
//!
//! Each sink session reads the log on a thread of its own, one batch ahead of the apply
//! (`readahead`).
//!
//! - The source is acknowledged only up to the log's durable head.
//! - Each sink reads at its own cursor; a failing sink retries with exponential backoff from
//!   what its target says it has applied, and never blocks the other sinks.
//! - Backpressure: while the log holds more than `max_bytes` not yet applied by every sink,
//!   the source pauses at its next transaction boundary (a transaction larger than the limit
//!   still goes through whole: pausing inside it could never end).
//! - Stop: the source stops at a transaction boundary (a transaction in progress is rolled
//!   back in the log and re-read on restart), the writer drains, sinks finish the batch in
//!   hand. `once`: stage up to the source's end position at start-up, then wait until every
//!   sink has applied it.

pub(crate) mod backoff;
mod readahead;

pub(crate) use crate::log::now_ms;
use crate::log::{Cursor, LogError, LogWriter, StagingLog, WriteOp};
use crate::snapshot::{self, Outcome, SnapshotOptions};
use async_trait::async_trait;
use backoff::Backoff;
use readahead::ReadAhead;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};
use weir_api::{ConnectorError, Sink, SinkContext, Source, SourceInfo, SourceItem, SourcePosition};

/// How often a heartbeat may move the log head's position (each move is a sync).
const ADVANCE_EVERY: Duration = Duration::from_secs(1);

/// Most records handed to a sink in one `apply` (bigger batches: fewer target commits/fsyncs).
const SINK_BATCH: usize = 16_384;

/// Builds the source (again after a transient failure).
#[async_trait]
pub trait SourceFactory: Send + Sync {
    /// Envelope facts, known before the source connects.
    fn info(&self) -> SourceInfo;
    /// A fresh source.
    async fn build(&self) -> weir_api::Result<Box<dyn Source>>;
    /// A snapshot reader, for sources that can read existing rows.
    async fn snapshot(&self) -> weir_api::Result<Option<Box<dyn weir_api::Snapshot>>> {
        Ok(None)
    }
    /// A backfill reader (`weir snapshot`), for sources that can read a table while streaming.
    async fn backfill(&self) -> weir_api::Result<Option<Box<dyn weir_api::Backfill>>> {
        Ok(None)
    }
}

/// Builds a sink (again after every failure).
#[async_trait]
pub trait SinkFactory: Send + Sync {
    /// A fresh sink.
    async fn build(&self, ctx: SinkContext) -> weir_api::Result<Box<dyn Sink>>;
}

/// A sink of the pipeline.
#[derive(Clone)]
pub struct SinkSpec {
    /// Unique name.
    pub name: String,
    /// How to build it.
    pub factory: Arc<dyn SinkFactory>,
}

/// Everything the runtime needs.
pub struct Pipeline {
    /// Pipeline name.
    pub name: String,
    /// The opened staging log.
    pub log: Arc<StagingLog>,
    /// Backpressure threshold in bytes.
    pub max_log_bytes: u64,
    /// The source.
    pub source: Arc<dyn SourceFactory>,
    /// The sinks.
    pub sinks: Vec<SinkSpec>,
    /// The initial snapshot.
    pub snapshot: SnapshotOptions,
}

/// How to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Stage up to the source's end position at start-up, wait for every sink, return.
    pub once: bool,
}

/// Why a pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The source failed definitely.
    #[error("source: {0}")]
    Source(#[source] ConnectorError),
    /// A sink failed definitely.
    #[error("sink {name}: {error}")]
    Sink {
        /// Sink name.
        name: String,
        /// Cause.
        #[source]
        error: ConnectorError,
    },
    /// The staging log failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Counters the runtime keeps (progress lines, the admin plane). Updated with atomics on
/// the hot path; the mutexes are touched only when something fails.
#[derive(Debug, Default)]
pub struct Stats {
    /// Change events staged.
    pub staged_events: AtomicU64,
    /// Transactions staged.
    pub staged_txns: AtomicU64,
    /// Whether the pipeline runs (from start until every task has stopped).
    pub running: AtomicBool,
    /// When this run started (ms since the epoch).
    pub started_ms: AtomicU64,
    /// Source restarts after transient failures.
    pub source_retries: AtomicU64,
    /// The source's last error (redacted by the connector).
    pub source_error: Mutex<Option<String>>,
    /// Change log the database keeps for the pipeline (`Source::retained_bytes`); -1 unknown.
    pub source_retained_bytes: std::sync::atomic::AtomicI64,
    /// Per sink, registered before the run starts.
    pub sinks: BTreeMap<String, Arc<SinkStats>>,
    /// Stage `source`: time the source task awaits `Source::next()` (reading and decoding,
    /// and waiting for the source to have something), per item; events are the changes. A
    /// wait that ends with a heartbeat (the source had nothing) is idle and not counted.
    pub source_stage: Arc<StageStats>,
    /// Stage `decode`: the source's CPU time turning protocol messages into change events
    /// (`Source::decode_time`), per item; taken out of the `source` stage.
    pub decode_stage: Arc<StageStats>,
    /// Stage `snapshot read`: time the snapshot workers spend in `ChunkReader::open` and
    /// `next_batch`, per batch; events are the rows.
    pub snapshot_stage: Arc<StageStats>,
    /// Stage `log append`: encoding on the source task plus the writer thread's RocksDB
    /// write (and fsync when a commit is in it), per group write; events are the changes.
    pub log_stage: Arc<StageStats>,
    /// Backfill jobs as the source task sees them (`weir snapshot`, `SNAPSHOT TABLE`).
    pub backfill: Arc<Mutex<crate::backfill::BackfillState>>,
    /// Per table: change events staged by this run, and the source commit time of the
    /// latest (ms since the epoch).
    pub tables: Mutex<BTreeMap<weir_api::TableId, (u64, i64)>>,
}

impl Stats {
    /// Counts staged changes per table.
    fn count_tables(&self, changes: &[weir_api::ChangeEvent]) {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let mut i = 0;
        while i < changes.len() {
            let table = &changes[i].table;
            let run = changes[i..]
                .iter()
                .take_while(|c| &c.table == table)
                .count();
            let ts = changes[i + run - 1].ts_ms;
            // Hot path: no allocation once the table is known.
            match tables.get_mut(table) {
                Some(e) => {
                    e.0 += run as u64;
                    e.1 = e.1.max(ts);
                }
                None => {
                    tables.insert((**table).clone(), (run as u64, ts));
                }
            }
            i += run;
        }
    }
}

/// One stage's figures, read at one moment ([`Stats::stages`]).
#[derive(Debug, Clone)]
pub struct StageReading {
    /// `source`, `snapshot read`, `log append`, `sink NAME`.
    pub name: String,
    /// Change events (snapshot rows) handled.
    pub events: u64,
    /// Time per call.
    pub seconds: HistogramSnapshot,
}

impl Stats {
    /// Stats with a [`SinkStats`] for each of `sinks`.
    pub fn new<'a>(sinks: impl IntoIterator<Item = &'a str>) -> Self {
        Stats {
            sinks: sinks
                .into_iter()
                .map(|n| (n.to_string(), Arc::new(SinkStats::default())))
                .collect(),
            source_retained_bytes: std::sync::atomic::AtomicI64::new(-1),
            ..Stats::default()
        }
    }

    fn sink(&self, name: &str) -> Arc<SinkStats> {
        self.sinks.get(name).cloned().unwrap_or_default()
    }

    /// Every stage, in the order data flows: `source`, `decode`, `snapshot read`, `log append`, then
    /// `sink NAME` for each of `sinks` (the pipeline file's order; a sink's stage is its
    /// `apply` calls, its events the change events applied).
    pub fn stages<'a>(&self, sinks: impl IntoIterator<Item = &'a str>) -> Vec<StageReading> {
        let stage = |name: String, s: &StageStats| StageReading {
            name,
            events: s.events.load(Ordering::Relaxed),
            seconds: s.seconds.read(),
        };
        let mut out = vec![
            stage("source".into(), &self.source_stage),
            stage("decode".into(), &self.decode_stage),
            stage("snapshot read".into(), &self.snapshot_stage),
            stage("log append".into(), &self.log_stage),
        ];
        for name in sinks {
            let st = self.sink(name);
            out.push(StageReading {
                name: format!("sink {name}"),
                events: st.applied_events.load(Ordering::Relaxed),
                seconds: st.apply_seconds.read(),
            });
        }
        out
    }
}

/// What a sink task is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SinkState {
    /// Connecting / reading its target's committed position.
    Starting = 0,
    /// Applying (or caught up and waiting).
    Running = 1,
    /// Failed transiently; waiting to retry.
    Retrying = 2,
    /// Failed definitely (the pipeline stops).
    Failed = 3,
    /// Finished.
    Stopped = 4,
    /// Held by `PAUSE SINK` (admin SQL) until `RESUME SINK`.
    Paused = 5,
}

impl SinkState {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkState::Starting => "starting",
            SinkState::Running => "running",
            SinkState::Retrying => "retrying",
            SinkState::Failed => "failed",
            SinkState::Stopped => "stopped",
            SinkState::Paused => "paused",
        }
    }
}

/// One sink's live figures.
#[derive(Debug, Default)]
pub struct SinkStats {
    state: AtomicU8,
    /// The last log sequence the sink has applied (its cursor).
    pub applied_seq: AtomicU64,
    /// Change events applied in this run.
    pub applied_events: AtomicU64,
    /// Restarts after transient failures.
    pub retries: AtomicU64,
    /// When the sink last applied something or was caught up (ms since the epoch).
    pub last_progress_ms: AtomicU64,
    /// The last error.
    pub last_error: Mutex<Option<String>>,
    /// Time per `apply` call.
    pub apply_seconds: Histogram,
    /// Set by `PAUSE SINK`: the sink task applies no further batch until it is cleared.
    paused: AtomicBool,
    /// When the sink entered its current state (ms since the epoch).
    pub state_since_ms: AtomicU64,
}

impl SinkStats {
    /// The current state (`Paused` while paused and otherwise running).
    pub fn state(&self) -> SinkState {
        match self.state.load(Ordering::Relaxed) {
            1 if self.is_paused() => SinkState::Paused,
            1 => SinkState::Running,
            2 => SinkState::Retrying,
            3 => SinkState::Failed,
            4 => SinkState::Stopped,
            _ => SinkState::Starting,
        }
    }

    /// Pauses (`true`) or resumes the sink: it finishes the batch in hand, then waits
    /// before the next one. Other sinks and the source are not held (beyond the usual
    /// backpressure of the log growing while this sink's records wait).
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// Whether `PAUSE SINK` holds the sink.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    fn set_state(&self, s: SinkState) {
        if self.state.swap(s as u8, Ordering::Relaxed) != s as u8
            || self.state_since_ms.load(Ordering::Relaxed) == 0
        {
            self.state_since_ms
                .store(now_ms().max(0) as u64, Ordering::Relaxed);
        }
    }

    fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }

    /// The last error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Upper bounds (seconds) of the latency histograms' buckets: 10 µs to 60 s, so that both a
/// source's microsecond reads and a stuck sink's minutes land in a finite bucket.
pub const HISTOGRAM_BOUNDS: [f64; 21] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A latency histogram with fixed buckets (atomics; one update per batch or call).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    pub buckets: [AtomicU64; HISTOGRAM_BOUNDS.len() + 1],
    /// Sum in nanoseconds.
    pub sum_nanos: AtomicU64,
    /// Observations.
    pub count: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = HISTOGRAM_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(HISTOGRAM_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The current figures.
    pub fn read(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// A [`Histogram`] read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// Observations per bucket (not cumulative), bounds [`HISTOGRAM_BOUNDS`] then `+Inf`.
    pub buckets: Vec<u64>,
    /// Sum of the observations, seconds.
    pub sum_seconds: f64,
    /// Observations.
    pub count: u64,
}

impl HistogramSnapshot {
    /// Cumulative counts per bound (the last is `+Inf`), as Prometheus wants them.
    pub fn cumulative(&self) -> Vec<u64> {
        let mut acc = 0;
        self.buckets
            .iter()
            .map(|b| {
                acc += b;
                acc
            })
            .collect()
    }

    /// The `q` quantile (0..=1) in seconds, estimated as Prometheus' `histogram_quantile`
    /// does: find the bucket holding the rank, interpolate linearly between its lower and
    /// upper bound (the first bucket's lower bound is 0). A rank in the `+Inf` bucket gives
    /// the highest finite bound (60 s: "at least"). `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let Some(&upper) = HISTOGRAM_BOUNDS.get(i) else {
                    return HISTOGRAM_BOUNDS.last().copied();
                };
                let lower = if i == 0 { 0.0 } else { HISTOGRAM_BOUNDS[i - 1] };
                let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
                return Some(lower + (upper - lower) * within);
            }
            below += n;
        }
        HISTOGRAM_BOUNDS.last().copied()
    }
}

/// One stage of the pipeline: time per call and the change events that went through.
/// Updated once per call (a source read, a log group write, a snapshot batch, a sink batch).
#[derive(Debug, Default)]
pub struct StageStats {
    /// Change events (or snapshot rows) handled.
    pub events: AtomicU64,
    /// Time per call.
    pub seconds: Histogram,
}

impl StageStats {
    /// Records one call that took `d` and handled `events`.
    pub fn record(&self, d: Duration, events: u64) {
        self.seconds.observe(d);
        if events > 0 {
            self.events.fetch_add(events, Ordering::Relaxed);
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Change events staged in this run.
    pub staged_events: u64,
    /// Head sequence at the end.
    pub head_seq: u64,
}

/// Runs the pipeline until `stop` turns true (or, with `once`, until done).
pub async fn run(
    p: Pipeline,
    opts: RunOptions,
    stop: watch::Receiver<bool>,
) -> Result<Summary, RuntimeError> {
    let stats = Arc::new(Stats::new(p.sinks.iter().map(|s| s.name.as_str())));
    run_with_stats(p, opts, stop, stats).await
}

/// [`run`], keeping its figures in `stats` (made with [`Stats::new`] over the sink names),
/// which the admin plane reads while it runs.
pub async fn run_with_stats(
    p: Pipeline,
    opts: RunOptions,
    mut stop: watch::Receiver<bool>,
    stats: Arc<Stats>,
) -> Result<Summary, RuntimeError> {
    stats
        .started_ms
        .store(now_ms().max(0) as u64, Ordering::Relaxed);
    stats.running.store(true, Ordering::Relaxed);
    let _running = RunningGuard(Arc::clone(&stats));
    let log = Arc::clone(&p.log);
    for name in log.cursors().keys() {
        if !p.sinks.iter().any(|s| &s.name == name) {
            warn!(sink = %name, "sink is no longer in the pipeline file; forgetting its cursor");
            log.remove_cursor(name)?;
        }
    }
    // Internal stop: the caller's stop, or a definite failure of the source.
    let (halt_tx, halt_rx) = watch::channel(false);
    let (final_tx, final_rx) = watch::channel(None::<u64>);
    let info = p.source.info();

    let mut sinks = JoinSet::new();
    for spec in &p.sinks {
        let ctx = SinkContext {
            pipeline: p.name.clone(),
            sink: spec.name.clone(),
            source: info.clone(),
        };
        sinks.spawn(sink_task(
            Arc::clone(&log),
            stats.sink(&spec.name),
            spec.clone(),
            ctx,
            opts.once,
            final_rx.clone(),
            halt_rx.clone(),
            halt_tx.clone(),
        ));
    }
    let sink_names: Vec<String> = p.sinks.iter().map(|s| s.name.clone()).collect();
    let retention = tokio::spawn(retention_task(
        Arc::clone(&log),
        sink_names.clone(),
        halt_rx.clone(),
    ));
    let reporter = tokio::spawn(report_task(
        Arc::clone(&log),
        Arc::clone(&stats),
        halt_rx.clone(),
    ));

    // Forward the caller's stop to every task.
    let forward = {
        let halt_tx = halt_tx.clone();
        tokio::spawn(async move {
            wait_true(&mut stop).await;
            let _ = halt_tx.send(true);
        })
    };
    let mut writer = log.writer_timed(32, Arc::clone(&stats.log_stage))?;
    let mut stream = true;
    let mut source_result = Ok(());
    if p.snapshot.enabled {
        match snapshot::run(
            &log,
            &mut writer,
            p.source.as_ref(),
            &p.snapshot,
            &stats.snapshot_stage,
            halt_rx.clone(),
        )
        .await
        {
            Ok(Outcome::Done) => stream = !p.snapshot.only,
            Ok(Outcome::Stopped) => stream = false,
            Err(e) => {
                stream = false;
                source_result = Err(e);
            }
        }
    }
    if stream {
        source_result = source_task(
            &log,
            &mut writer,
            p.source.as_ref(),
            opts.once,
            p.max_log_bytes,
            p.snapshot.enabled,
            &stats,
            halt_rx.clone(),
        )
        .await;
    }
    let writer_result = tokio::task::spawn_blocking(move || writer.finish())
        .await
        .unwrap_or_else(|_| Err(LogError::Protocol("the staging log writer panicked".into())));
    let mut first_error = None;
    if let Err(e) = writer_result {
        first_error = Some(RuntimeError::Log(e));
    }
    match source_result {
        Err(e) if first_error.is_none() => first_error = Some(e),
        _ => {}
    }
    let head = log.head();
    if opts.once && first_error.is_none() && !*halt_rx.borrow() {
        let _ = final_tx.send(Some(head.seq));
        info!(
            head = head.seq,
            "source caught up; waiting for the sinks to apply everything"
        );
    } else {
        let _ = halt_tx.send(true);
    }
    while let Some(joined) = sinks.join_next().await {
        let result = joined.unwrap_or_else(|e| {
            Err(RuntimeError::Log(LogError::Protocol(format!(
                "a sink task panicked: {e}"
            ))))
        });
        if let Err(e) = result
            && first_error.is_none()
        {
            first_error = Some(e);
        }
    }
    forward.abort();
    let _ = halt_tx.send(true);
    let _ = retention.await;
    reporter.abort();
    if let Some(floor) = retention_floor(&log, &sink_names) {
        log.retain_below(floor)?;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(Summary {
            staged_events: stats.staged_events.load(Ordering::Relaxed),
            head_seq: log.head().seq,
        }),
    }
}

/// Clears `running` when the run ends, however it ends.
struct RunningGuard(Arc<Stats>);
impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Relaxed);
    }
}

pub(crate) async fn wait_true(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Stages the source until stopped, or (once) until its end position at start-up.
#[allow(clippy::too_many_arguments)]
async fn source_task(
    log: &Arc<StagingLog>,
    writer: &mut LogWriter,
    factory: &dyn SourceFactory,
    once: bool,
    max_log_bytes: u64,
    backfill_new: bool,
    stats: &Stats,
    mut halt: watch::Receiver<bool>,
) -> Result<(), RuntimeError> {
    let mut backoff = Backoff::new();
    let mut target = None;
    loop {
        let staged_before = stats.staged_txns.load(Ordering::Relaxed);
        let result = source_session(
            log,
            writer,
            factory,
            once,
            &mut target,
            max_log_bytes,
            backfill_new,
            stats,
            &mut halt,
        )
        .await;
        if stats.staged_txns.load(Ordering::Relaxed) != staged_before {
            backoff.reset();
        }
        match result {
            Ok(()) => return Ok(()),
            Err(SessionError::Log(e)) => return Err(RuntimeError::Log(e)),
            Err(SessionError::Connector(e)) if e.is_transient() => {
                // Wait until everything queued is written, so the next session resumes
                // from the true head (neither re-staging nor skipping a transaction).
                writer.rollback().await?;
                let delay = backoff.next_delay();
                stats.source_retries.fetch_add(1, Ordering::Relaxed);
                *stats.source_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain(&e));
                warn!(error = %chain(&e), retry_in = ?delay, "source failed; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wait_true(&mut halt) => return Ok(()),
                }
            }
            Err(SessionError::Connector(e)) => {
                *stats.source_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain(&e));
                return Err(RuntimeError::Source(e));
            }
        }
    }
}

enum SessionError {
    Connector(ConnectorError),
    Log(LogError),
}

impl From<ConnectorError> for SessionError {
    fn from(e: ConnectorError) -> Self {
        SessionError::Connector(e)
    }
}
impl From<LogError> for SessionError {
    fn from(e: LogError) -> Self {
        SessionError::Log(e)
    }
}

fn reached(pos: &SourcePosition, target: &Option<SourcePosition>) -> bool {
    target.as_ref().is_some_and(|t| {
        matches!(
            pos.partial_cmp(t),
            Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
        )
    })
}

#[allow(clippy::too_many_arguments)]
async fn source_session(
    log: &Arc<StagingLog>,
    writer: &mut LogWriter,
    factory: &dyn SourceFactory,
    once: bool,
    target: &mut Option<SourcePosition>,
    max_log_bytes: u64,
    backfill_new: bool,
    stats: &Stats,
    halt: &mut watch::Receiver<bool>,
) -> Result<(), SessionError> {
    // After a snapshot, the head holds its progress; the stream continues from its point.
    // `log.head()` is the *durable* head: wait until everything queued (the snapshot's last
    // batches) is written first. Read too early, a fresh pipeline's head has no position
    // yet, and the source would start at its current end, skipping every transaction
    // committed since the snapshot's consistent point. (Nothing is in progress here, so
    // the rollback discards nothing.)
    writer.rollback().await?;
    let resume = log.head().position;
    if backfill_new && resume.is_none() {
        // (`backfill_new` is "a snapshot is configured".) A finished snapshot always leaves
        // its position in the head (an empty one too). Starting without one would start at
        // the source's current end and skip whatever was committed since the snapshot's
        // consistent point: refuse instead.
        return Err(ConnectorError::definite(format!(
            "the snapshot finished but the staging log {} holds no position to stream from; \
             this is a bug in weir. Nothing was skipped: remove the pipeline's data directory \
             and run again to start over with a fresh snapshot",
            log.path().display()
        ))
        .into());
    }
    let mut source = factory.build().await?;
    source
        .start(resume.as_ref().map(|p| p.stream_position().clone()))
        .await?;
    if once && target.is_none() {
        let end = source.end_position().await?;
        info!(end = %end, "run --once: staging up to the source's current end");
        *target = Some(end);
    }
    let mut backfill = crate::backfill::Backfiller::new(log, stats.backfill.clone())?;
    backfill.added(log, source.added_tables(), backfill_new);
    backfill.poll(log, factory).await?;
    if once && !backfill.busy() && resume.as_ref().is_some_and(|r| reached(r, target)) {
        return Ok(());
    }
    let mut durable = log.subscribe();
    // `run --once`: the source's end is staged; stop once no backfill is left either.
    let mut target_reached = false;
    let mut acked = resume;
    let mut in_txn = false;
    let mut last_sent: Option<SourcePosition> = None;
    let mut last_advance = std::time::Instant::now()
        .checked_sub(ADVANCE_EVERY)
        .unwrap_or_else(std::time::Instant::now);
    let mut paused = false;
    // Time awaiting the current `next()` so far: the select below may drop it (it is
    // cancel-safe) when an acknowledgement is due, and a fresh call picks up where it was.
    let mut awaiting = Duration::ZERO;
    loop {
        // Near the limit, let the writer catch up first, so the backlog figure includes
        // everything sent and the limit holds to within one transaction.
        if !in_txn
            && log.backlog_bytes() > max_log_bytes / 2
            && let Some(last) = &last_sent
            && durable.borrow().position.as_ref() != Some(last)
        {
            tokio::select! {
                _ = durable.changed() => {}
                _ = writer.closed() => return Err(LogError::WriterGone.into()),
                _ = wait_true(halt) => return Ok(()),
            }
            ack_durable(&mut durable, source.as_mut(), &mut acked).await?;
            source.keepalive().await?;
            continue;
        }
        if !in_txn && log.backlog_bytes() > max_log_bytes {
            if !paused {
                paused = true;
                warn!(
                    backlog = log.backlog_bytes(),
                    max = max_log_bytes,
                    "staging log is full; pausing the source until sinks catch up"
                );
            }
            let moved = log.cursor_moved.notified();
            tokio::select! {
                _ = moved => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = writer.closed() => return Err(LogError::WriterGone.into()),
                _ = wait_true(halt) => return Ok(()),
            }
            ack_durable(&mut durable, source.as_mut(), &mut acked).await?;
            source.keepalive().await?;
            continue;
        }
        if paused {
            paused = false;
            info!("staging log has room again; resuming the source");
        }
        if !in_txn && backfill.ready() {
            let head = last_sent.clone().or_else(|| log.head().position);
            if let Some((pos, events)) = backfill.stage(writer, head).await? {
                stats.staged_txns.fetch_add(1, Ordering::Relaxed);
                stats.staged_events.fetch_add(events, Ordering::Relaxed);
                last_sent = Some(pos);
            }
            continue;
        }
        if target_reached && !in_txn && !backfill.busy() {
            break;
        }
        let waited = Instant::now();
        let item = tokio::select! {
            biased;
            _ = wait_true(halt) => {
                if in_txn {
                    writer.send(WriteOp::Rollback(None)).await?;
                }
                return Ok(());
            }
            _ = durable.changed() => {
                awaiting += waited.elapsed();
                ack_durable(&mut durable, source.as_mut(), &mut acked).await?;
                continue;
            }
            _ = writer.closed() => return Err(LogError::WriterGone.into()),
            _ = tokio::time::sleep_until(backfill.poll_at()) => {
                awaiting += waited.elapsed();
                stats.source_retained_bytes.store(
                    source.retained_bytes().map_or(-1, |b| b as i64),
                    Ordering::Relaxed,
                );
                backfill.added(log, source.added_tables(), backfill_new);
                backfill.poll(log, factory).await?;
                continue;
            }
            reply = backfill.reply() => {
                awaiting += waited.elapsed();
                backfill.handle(reply).await;
                continue;
            }
            item = source.next() => item?,
        };
        // A heartbeat says the source had nothing to stage: that wait was idle, not work.
        let waited = std::mem::take(&mut awaiting) + waited.elapsed();
        let decode = source.decode_time();
        let events = match &item {
            SourceItem::Heartbeat(_) => None,
            SourceItem::Changes(c) => Some(c.len() as u64),
            SourceItem::Transaction(t) => Some(t.changes.len() as u64),
            SourceItem::Schema(_) | SourceItem::Commit(_) => Some(0),
        };
        if let Some(events) = events {
            stats
                .source_stage
                .record(waited.saturating_sub(decode), events);
            if !decode.is_zero() {
                stats.decode_stage.record(decode, events);
            }
        }
        let commit = match item {
            SourceItem::Schema(s) => {
                backfill.schema(&s);
                writer.send(WriteOp::Schema(s)).await?;
                None
            }
            SourceItem::Changes(changes) => {
                in_txn = true;
                backfill.changes(&changes);
                stats.count_tables(&changes);
                stats
                    .staged_events
                    .fetch_add(changes.len() as u64, Ordering::Relaxed);
                writer.send(WriteOp::Changes(changes)).await?;
                None
            }
            SourceItem::Commit(c) => Some(c),
            SourceItem::Transaction(t) => {
                backfill.changes(&t.changes);
                stats.count_tables(&t.changes);
                stats
                    .staged_events
                    .fetch_add(t.changes.len() as u64, Ordering::Relaxed);
                writer.send(WriteOp::Changes(t.changes)).await?;
                Some(t.commit)
            }
            SourceItem::Heartbeat(p) => {
                backfill.reached(&p);
                // Nothing to stage up to here: record the position in the log's head (at most
                // once a second), and the source is acknowledged once that is durable, so the
                // source never releases more than the log holds, and a restart resumes here.
                let reached_end = once && !in_txn && reached(&p, target);
                let current = last_sent.clone().or_else(|| log.head().position);
                if !in_txn
                    && ahead(&p, &current)
                    && (reached_end || last_advance.elapsed() >= ADVANCE_EVERY)
                {
                    writer.send(WriteOp::Advance(p.clone())).await?;
                    last_sent = Some(p);
                    last_advance = std::time::Instant::now();
                }
                if reached_end {
                    target_reached = true;
                }
                None
            }
        };
        if let Some(c) = commit {
            in_txn = false;
            let pos = c.position.clone();
            backfill.reached(&pos);
            stats.staged_txns.fetch_add(1, Ordering::Relaxed);
            writer.send(WriteOp::Commit(c)).await?;
            if once && reached(&pos, target) {
                target_reached = true;
            }
            last_sent = Some(pos);
        }
        if writer.is_closed() {
            return Err(LogError::WriterGone.into());
        }
    }
    // Acknowledge the last transaction once it is durable.
    if let Some(last) = last_sent {
        while durable.borrow_and_update().position.as_ref() != Some(&last) {
            tokio::select! {
                _ = durable.changed() => {}
                _ = writer.closed() => return Err(LogError::WriterGone.into()),
                _ = wait_true(halt) => return Ok(()),
            }
        }
        source.ack(last.stream_position()).await?;
    }
    Ok(())
}

/// Acknowledges the source up to the durable head, if it moved.
async fn ack_durable(
    durable: &mut watch::Receiver<crate::log::Head>,
    source: &mut dyn Source,
    acked: &mut Option<SourcePosition>,
) -> Result<(), ConnectorError> {
    let pos = durable.borrow_and_update().position.clone();
    if let Some(p) = pos
        && ahead(&p, acked)
    {
        source.ack(p.stream_position()).await?;
        *acked = Some(p);
    }
    Ok(())
}

/// Whether `p` is past `acked` (acknowledgements never move back).
fn ahead(p: &SourcePosition, acked: &Option<SourcePosition>) -> bool {
    acked
        .as_ref()
        .is_none_or(|a| matches!(p.partial_cmp(a), Some(std::cmp::Ordering::Greater)))
}

/// Applies the log to one sink, restarting it with backoff after failures.
#[allow(clippy::too_many_arguments)]
async fn sink_task(
    log: Arc<StagingLog>,
    st: Arc<SinkStats>,
    spec: SinkSpec,
    ctx: SinkContext,
    once: bool,
    mut final_seq: watch::Receiver<Option<u64>>,
    mut halt: watch::Receiver<bool>,
    stop_all: watch::Sender<bool>,
) -> Result<(), RuntimeError> {
    let mut backoff = Backoff::new();
    // Only the first session is "starting": a reconnect after a failure stays "retrying"
    // (unhealthy) until the session is connected and running, so /healthz does not report a
    // sink whose target is still down as healthy while a connection attempt hangs.
    st.set_state(SinkState::Starting);
    loop {
        let mut progressed = false;
        let result = sink_session(
            &log,
            &st,
            &spec,
            &ctx,
            once,
            &mut final_seq,
            &mut halt,
            &mut progressed,
        )
        .await;
        if progressed {
            backoff.reset();
        }
        match result {
            Ok(()) => {
                st.set_state(SinkState::Stopped);
                return Ok(());
            }
            Err(e) if e.is_transient() => {
                let delay = backoff.next_delay();
                st.retries.fetch_add(1, Ordering::Relaxed);
                st.set_error(chain(&e));
                st.set_state(SinkState::Retrying);
                warn!(sink = %spec.name, error = %chain(&e), retry_in = ?delay, "sink failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = wait_true(&mut halt) => return Ok(()),
                }
            }
            Err(error) => {
                // A definite failure stops the pipeline (the others finish their batch).
                error!(sink = %spec.name, error = %chain(&error), "sink failed definitely; stopping the pipeline");
                st.set_error(chain(&error));
                st.set_state(SinkState::Failed);
                let _ = stop_all.send(true);
                return Err(RuntimeError::Sink {
                    name: spec.name.clone(),
                    error,
                });
            }
        }
    }
}

fn log_err(e: LogError) -> ConnectorError {
    match e {
        LogError::Rocks { .. } => ConnectorError::transient_from("staging log read failed", e),
        other => ConnectorError::definite_from("staging log read failed", other),
    }
}

#[allow(clippy::too_many_arguments)]
async fn sink_session(
    log: &Arc<StagingLog>,
    st: &SinkStats,
    spec: &SinkSpec,
    ctx: &SinkContext,
    once: bool,
    final_seq: &mut watch::Receiver<Option<u64>>,
    halt: &mut watch::Receiver<bool>,
    progressed: &mut bool,
) -> Result<(), ConnectorError> {
    // Connecting can hang (a target that accepts and never answers): a stop must not wait.
    let start = async {
        let mut sink = spec.factory.build(ctx.clone()).await?;
        let committed = sink.committed().await?;
        Ok::<_, ConnectorError>((sink, committed))
    };
    let (mut sink, committed) = tokio::select! {
        started = start => started?,
        _ = wait_true(halt) => return Ok(()),
    };
    let committed = committed.unwrap_or(0);
    let head = log.head().seq;
    if committed > head {
        return Err(ConnectorError::definite(format!(
            "the target says it applied log record {committed}, but the staging log {} ends at {head}: \
             the staging log was deleted or replaced. Point the sink at a fresh target (or clear its \
             weir state) to rebuild it",
            log.path().display()
        )));
    }
    if committed + 1 < log.first_seq() {
        return Err(ConnectorError::definite(format!(
            "the target has applied up to log record {committed}, but the staging log keeps records \
             from {} on: the records in between are gone. Re-snapshot this sink's target",
            log.first_seq()
        )));
    }
    let mut cursor = log
        .cursor_at(committed)
        .map_err(log_err)?
        .unwrap_or(Cursor {
            seq: committed,
            bytes_total: 0,
        });
    log.set_cursor(&spec.name, cursor).map_err(log_err)?;
    st.applied_seq.store(cursor.seq, Ordering::Relaxed);
    st.last_progress_ms
        .store(now_ms().max(0) as u64, Ordering::Relaxed);
    st.set_state(SinkState::Running);
    let mut reader = ReadAhead::start(log, &spec.name).map_err(|e| {
        ConnectorError::transient_from("starting the sink's staging log reader thread", e)
    })?;
    let mut next = committed + 1;
    let mut heads = log.subscribe();
    loop {
        if *halt.borrow() {
            return Ok(());
        }
        if once && final_seq.borrow().is_some_and(|f| cursor.seq >= f) {
            info!(sink = %spec.name, applied = cursor.seq, "sink caught up");
            return Ok(());
        }
        if st.is_paused() {
            // Paused counts as progress (it is asked for, not a stall).
            st.last_progress_ms
                .store(now_ms().max(0) as u64, Ordering::Relaxed);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = halt.changed() => {}
            }
            continue;
        }
        let head = heads.borrow_and_update().seq;
        if next > head {
            // Caught up counts as progress (for stall detection).
            st.last_progress_ms
                .store(now_ms().max(0) as u64, Ordering::Relaxed);
            tokio::select! {
                _ = heads.changed() => {}
                _ = final_seq.changed() => {}
                _ = halt.changed() => {}
            }
            // Caught up until now: a stall is counted from here, not from before the wait.
            st.last_progress_ms
                .store(now_ms().max(0) as u64, Ordering::Relaxed);
            continue;
        }
        let batch = reader.read(next, head, SINK_BATCH).await.map_err(log_err)?;
        // The next batch is read and decoded on the reader thread while this one is applied.
        let after = batch.entries.last().map_or(next, |e| e.seq + 1);
        reader.prefetch(after, heads.borrow().seq, SINK_BATCH);
        let started = Instant::now();
        sink.apply(&batch.entries).await?;
        st.apply_seconds.observe(started.elapsed());
        *progressed = true;
        let changes = batch
            .entries
            .iter()
            .filter(|e| matches!(e.entry, weir_api::Entry::Change(..)))
            .count();
        st.applied_events
            .fetch_add(changes as u64, Ordering::Relaxed);
        st.last_progress_ms
            .store(now_ms().max(0) as u64, Ordering::Relaxed);
        next = batch.entries.last().map_or(next, |e| e.seq + 1);
        if let Some(c) = batch.last_commit {
            cursor = c;
            log.set_cursor(&spec.name, c).map_err(log_err)?;
            st.applied_seq.store(c.seq, Ordering::Relaxed);
        }
    }
}

/// The oldest sequence any configured sink still needs: its cursor, or 0 for a sink that has
/// not recorded one yet (so nothing it may need is deleted).
fn retention_floor(log: &StagingLog, sinks: &[String]) -> Option<u64> {
    let cursors = log.cursors();
    sinks
        .iter()
        .map(|s| cursors.get(s).map_or(0, |c| c.seq))
        .min()
}

/// Deletes what every sink has applied, once a second.
async fn retention_task(log: Arc<StagingLog>, sinks: Vec<String>, mut halt: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = wait_true(&mut halt) => return,
        }
        if let Some(floor) = retention_floor(&log, &sinks)
            && let Err(e) = log.retain_below(floor)
        {
            warn!(error = %chain(&e), "staging log retention failed; will retry");
        }
    }
}

/// A progress line every 10 seconds.
async fn report_task(log: Arc<StagingLog>, stats: Arc<Stats>, mut halt: watch::Receiver<bool>) {
    let mut last = 0;
    let period = Duration::from_secs(10);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = wait_true(&mut halt) => return,
        }
        let staged = stats.staged_events.load(Ordering::Relaxed);
        let head = log.head();
        let lags: Vec<String> = log
            .cursors()
            .iter()
            .map(|(n, c)| format!("{n}={}", head.seq.saturating_sub(c.seq)))
            .collect();
        info!(
            staged_events = staged,
            rate = (staged - last) / period.as_secs(),
            head = head.seq,
            backlog_bytes = log.backlog_bytes(),
            sink_lag_records = %lags.join(","),
            "progress"
        );
        last = staged;
    }
}

/// An error with its causes, `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogOptions;
    use crate::log::tests::{schema, temp};
    use weir_api::{ChangeEvent, CommitInfo, DatagenPosition, Op, Row, SnapshotPosition, Value};

    /// Records where it is asked to start, then fails definitely (ending the session).
    struct RecordingFactory(Arc<Mutex<Vec<Option<SourcePosition>>>>);
    struct RecordingSource(Arc<Mutex<Vec<Option<SourcePosition>>>>);

    #[async_trait]
    impl Source for RecordingSource {
        fn info(&self) -> SourceInfo {
            SourceInfo {
                connector: "test".into(),
                name: "t".into(),
                db: "t".into(),
            }
        }
        async fn start(&mut self, resume: Option<SourcePosition>) -> weir_api::Result<()> {
            self.0.lock().unwrap().push(resume);
            Err(ConnectorError::definite("recorded"))
        }
        async fn end_position(&mut self) -> weir_api::Result<SourcePosition> {
            Err(ConnectorError::definite("unused"))
        }
        async fn next(&mut self) -> weir_api::Result<SourceItem> {
            Err(ConnectorError::definite("unused"))
        }
        async fn ack(&mut self, _: &SourcePosition) -> weir_api::Result<()> {
            Ok(())
        }
    }

    #[async_trait]
    impl SourceFactory for RecordingFactory {
        fn info(&self) -> SourceInfo {
            RecordingSource(Arc::clone(&self.0)).info()
        }
        async fn build(&self) -> weir_api::Result<Box<dyn Source>> {
            Ok(Box::new(RecordingSource(Arc::clone(&self.0))))
        }
    }

    /// Runs one source session with a [`RecordingFactory`] (snapshot configured when
    /// `backfill_new`): its result and the positions the source was asked to start at.
    async fn recorded_session(
        log: &Arc<StagingLog>,
        writer: &mut LogWriter,
        backfill_new: bool,
    ) -> (
        Result<(), SessionError>,
        Arc<Mutex<Vec<Option<SourcePosition>>>>,
    ) {
        let starts = Arc::new(Mutex::new(Vec::new()));
        let factory = RecordingFactory(Arc::clone(&starts));
        let stats = Stats::new(std::iter::empty());
        let (_halt_tx, mut halt) = watch::channel(false);
        let result = source_session(
            log,
            writer,
            &factory,
            false,
            &mut None,
            u64::MAX,
            backfill_new,
            &stats,
            &mut halt,
        )
        .await;
        (result, starts)
    }

    /// The stream must start at the snapshot's consistent point even when the snapshot's
    /// last batches are still queued in the log writer (not yet durable) as it starts:
    /// reading the durable head then found no position and started at the source's current
    /// end, losing every transaction committed in between (seen with MariaDB under sysbench).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stream_starts_at_the_snapshot_point_even_before_the_snapshot_is_durable() {
        let dir = temp("handoff");
        let log = StagingLog::open(&dir, LogOptions::default()).unwrap();
        let mut writer = log.writer(32).unwrap();
        let cols = 8;
        let table = schema(cols).table;
        writer.send(WriteOp::Schema(schema(cols))).await.unwrap();
        // The stream position the snapshot is consistent with.
        let stream_from = SourcePosition::Datagen(DatagenPosition { events: 7 });
        let mut pos = SnapshotPosition::start(stream_from.clone(), 1);
        // One batch, big enough that writing it (synced) takes a while after `send` returns:
        // no commit is durable yet when the stream starts.
        let rows = 100_000i64;
        let events = (0..rows)
            .map(|n| ChangeEvent {
                table: table.to_shared(),
                schema_version: 0,
                op: Op::Read,
                before: None,
                after: Some(Row((0..cols).map(|_| Value::Int(n)).collect())),
                position: SourcePosition::Snapshot(pos.clone()),
                txid: None,
                ts_ms: 0,
            })
            .collect();
        writer.send(WriteOp::Changes(events)).await.unwrap();
        pos.batch = 1;
        pos.mark_done(0);
        writer
            .send(WriteOp::Commit(CommitInfo {
                position: SourcePosition::Snapshot(pos),
                txid: None,
                ts_ms: 0,
                events: rows as u64,
            }))
            .await
            .unwrap();
        let (result, starts) = recorded_session(&log, &mut writer, false).await;
        assert!(matches!(result, Err(SessionError::Connector(_))));
        assert_eq!(*starts.lock().unwrap(), vec![Some(stream_from)]);
        writer.finish().unwrap();
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// With a snapshot configured, a stream never starts without the snapshot's position
    /// (that would start at the source's current end): the session refuses definitely.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stream_refuses_to_start_without_a_position_after_a_snapshot() {
        let dir = temp("nopos");
        let log = StagingLog::open(&dir, LogOptions::default()).unwrap();
        let mut writer = log.writer(32).unwrap();
        let (result, starts) = recorded_session(&log, &mut writer, true).await;
        match result {
            Err(SessionError::Connector(e)) => {
                assert!(!e.is_transient(), "{e}");
                assert!(e.to_string().contains("no position to stream from"), "{e}");
            }
            _ => panic!("the session did not refuse"),
        }
        assert!(starts.lock().unwrap().is_empty(), "the source was started");
        writer.finish().unwrap();
        drop(log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn histogram_quantiles_interpolate_within_buckets() {
        let h = Histogram::default();
        assert_eq!(h.read().quantile(0.5), None);
        // 100 observations of 2 ms: all in the (1 ms, 2.5 ms] bucket.
        for _ in 0..100 {
            h.observe(Duration::from_millis(2));
        }
        let r = h.read();
        assert_eq!(r.count, 100);
        assert!((r.sum_seconds - 0.2).abs() < 1e-9, "{}", r.sum_seconds);
        let p50 = r.quantile(0.5).unwrap();
        assert!((p50 - 0.00175).abs() < 1e-9, "{p50}");
        let p99 = r.quantile(0.99).unwrap();
        assert!(p99 > 0.002 && p99 <= 0.0025, "{p99}");
        assert_eq!(*r.cumulative().last().unwrap(), 100);
        // One slow call in 100 moves p99 into its bucket, not p50.
        let h = Histogram::default();
        for _ in 0..98 {
            h.observe(Duration::from_micros(20));
        }
        h.observe(Duration::from_secs(3));
        h.observe(Duration::from_secs(3));
        let r = h.read();
        assert!(r.quantile(0.5).unwrap() <= 0.000025);
        let p99 = r.quantile(0.99).unwrap();
        assert!(p99 > 2.5 && p99 <= 5.0, "{p99}");
        // Beyond the last bound: the highest finite bound.
        let h = Histogram::default();
        h.observe(Duration::from_secs(600));
        assert_eq!(h.read().quantile(0.5), Some(60.0));
    }
}
