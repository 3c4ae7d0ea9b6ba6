//! The operations plane (`[admin]` in the pipeline file).
//!
//! - `metrics = "127.0.0.1:9187"`: a small HTTP/1.1 server ([`http`]): `/` (a live status
//!   page, self-contained HTML), `/metrics` (Prometheus text), `/healthz`, `/status` (JSON:
//!   the report of `weir status --json` plus live figures).
//! - `listen`: admin SQL over the PostgreSQL wire protocol ([`sql`]): `weir.pipeline`,
//!   `weir.sinks`, `weir.stages`, `weir.tables`, `weir.changes`, `PAUSE SINK` / `RESUME SINK`.
//! - Always (even without servers): a once-a-second stall watch that logs when a sink makes
//!   no progress for `stall_seconds` while records wait, and when it moves again.
//!
//! **Stages** (`weir.stages`, `weir_stage_seconds`, `/status` `stages`): where the pipeline's
//! time goes. `source` (awaiting `Source::next()`: read + decode, and waiting for the source
//! to have something, except waits that end with a heartbeat), `snapshot read` (chunk readers), `log append` (encoding plus the
//! writer thread's RocksDB write and fsync, per group write), `sink NAME` (`apply`). Each is
//! timed once per call with atomics. `share` is the stage's seconds over the sum of every
//! stage's seconds (stages run concurrently, so the sum is busy time, not wall time); p50 and
//! p99 are estimated from the histogram buckets by linear interpolation within the bucket
//! (Prometheus `histogram_quantile`), see [`crate::runtime::HistogramSnapshot::quantile`].
//!
//! Everything is read from [`Stats`] (atomics the runtime updates) and the staging log; no
//! secret is ever part of what is served (the pipeline file's URLs are not read here; the
//! admin password only checks logins).

mod http;
mod scram;
mod sql;

use crate::config::PipelineConfig;
use crate::log::{StagingLog, now_ms};
use crate::runtime::{HistogramSnapshot, SinkState, SinkStats, Stats};
use anyhow::Context as _;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The running admin servers; [`Admin::stop`] ends them.
#[derive(Debug, Default)]
pub struct Admin {
    tasks: Vec<JoinHandle<()>>,
}

impl Admin {
    /// Stops the servers.
    pub fn stop(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Starts what `[admin]` asks for. Binding errors are returned (a port in use is a
/// start-up failure, not something to find out later).
pub async fn start(
    cfg: &PipelineConfig,
    log: &Arc<StagingLog>,
    stats: &Arc<Stats>,
) -> anyhow::Result<Admin> {
    let mut admin = Admin::default();
    admin.tasks.push(tokio::spawn(stall_watch(
        cfg.clone(),
        Arc::clone(log),
        Arc::clone(stats),
    )));
    if cfg.admin.metrics.is_none() && cfg.admin.listen.is_none() {
        return Ok(admin);
    }
    let ctx = Arc::new(Context {
        cfg: cfg.clone(),
        log: Arc::clone(log),
        stats: Arc::clone(stats),
        samples: Mutex::new(VecDeque::new()),
    });
    admin.tasks.push(tokio::spawn(sampler(Arc::clone(&ctx))));
    if let Some(addr) = cfg.admin.metrics {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("[admin] metrics: cannot listen on {addr}"))?;
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!(address = %bound, "admin HTTP: / (status page), /metrics, /healthz, /status");
        admin
            .tasks
            .push(tokio::spawn(http::serve(listener, Arc::clone(&ctx))));
    }
    if let Some(addr) = cfg.admin.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("[admin] listen: cannot listen on {addr}"))?;
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!(address = %bound, "admin SQL (PostgreSQL protocol, SCRAM-SHA-256 password): SELECT * FROM weir.pipeline | weir.sinks | weir.stages | weir.tables | weir.changes");
        let password = cfg.admin.password.clone().unwrap_or_default();
        admin.tasks.push(tokio::spawn(sql::serve(
            listener,
            Arc::clone(&ctx),
            password,
        )));
    }
    Ok(admin)
}

/// What the servers read.
pub(crate) struct Context {
    cfg: PipelineConfig,
    log: Arc<StagingLog>,
    stats: Arc<Stats>,
    /// Recent counter samples, for rates.
    samples: Mutex<VecDeque<Sample>>,
}

struct Sample {
    at: Instant,
    staged: u64,
    applied: Vec<u64>,
}

/// Samples the counters once a second (rates over the last 5 s).
async fn sampler(ctx: Arc<Context>) {
    loop {
        let s = Sample {
            at: Instant::now(),
            staged: ctx.stats.staged_events.load(Ordering::Relaxed),
            applied: ctx
                .stats
                .sinks
                .values()
                .map(|s| s.applied_events.load(Ordering::Relaxed))
                .collect(),
        };
        {
            let mut q = ctx.samples.lock().unwrap_or_else(|p| p.into_inner());
            q.push_back(s);
            while q.len() > 6 {
                q.pop_front();
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// How long a sink has made no progress while records wait, once that is over
/// `stall_seconds` (`None`: not stalled). A running sink stalls, and so does one that hangs
/// while starting (connecting, reading its position); one that is retrying or failed is
/// reported as such, and a paused or caught-up one counts as progressing. Time is counted
/// from the later of its last progress and the start of its current state.
fn stalled_for(stall_ms: u64, st: &SinkStats, lag_records: u64, now_ms: u64) -> Option<u64> {
    let since = st
        .last_progress_ms
        .load(Ordering::Relaxed)
        .max(st.state_since_ms.load(Ordering::Relaxed));
    let idle = now_ms.saturating_sub(since);
    let state = st.state();
    (lag_records > 0
        && matches!(state, SinkState::Running | SinkState::Starting)
        && idle > stall_ms)
        .then_some(idle / 1000)
}

/// Logs a sink that stalls (once, when it does) and when it moves again.
async fn stall_watch(cfg: PipelineConfig, log: Arc<StagingLog>, stats: Arc<Stats>) {
    let stall_ms = cfg.admin.stall_seconds.saturating_mul(1000);
    let mut stalled: std::collections::BTreeMap<String, u64> = Default::default();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = now_ms().max(0) as u64;
        let head = log.head().seq;
        let cursors = log.cursors();
        for sink in &cfg.sinks {
            let Some(st) = stats.sinks.get(&sink.name) else {
                continue;
            };
            let lag = head.saturating_sub(cursors.get(&sink.name).map_or(0, |c| c.seq));
            match (stalled_for(stall_ms, st, lag, now), stalled.get(&sink.name)) {
                (Some(secs), None) => {
                    tracing::warn!(
                        sink = %sink.name,
                        stalled_seconds = secs,
                        lag_records = lag,
                        stall_seconds = cfg.admin.stall_seconds,
                        "sink is stalled: no progress for {secs} s while {lag} records wait \
                         (is the target blocked, e.g. by a lock?)"
                    );
                    stalled.insert(sink.name.clone(), now.saturating_sub(secs * 1000));
                }
                (None, Some(&since)) => {
                    tracing::info!(
                        sink = %sink.name,
                        stalled_seconds = now.saturating_sub(since) / 1000,
                        "sink is no longer stalled (applying, caught up, paused or retrying)"
                    );
                    stalled.remove(&sink.name);
                }
                _ => {}
            }
        }
    }
}

/// One pipeline stage, as served.
#[derive(Debug, Clone)]
pub(crate) struct StageView {
    /// `source`, `snapshot read`, `log append`, `sink NAME`.
    pub name: String,
    pub events: u64,
    pub calls: u64,
    pub seconds: f64,
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    /// This stage's seconds over the sum of all stages' seconds (0 while nothing is timed).
    pub share: f64,
    pub histogram: HistogramView,
}

/// One sink, as served.
#[derive(Debug, Clone)]
pub(crate) struct SinkView {
    pub name: String,
    pub state: SinkState,
    pub applied_seq: u64,
    pub applied_events: u64,
    pub lag_records: u64,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    pub retries: u64,
    pub last_error: Option<String>,
    pub events_per_sec: f64,
    /// Seconds without progress while records wait, once over `stall_seconds`.
    pub stalled_for: Option<u64>,
    pub apply: HistogramView,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct HistogramView {
    /// Cumulative counts per bound (the last is `+Inf`).
    pub cumulative: Vec<u64>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl From<&HistogramSnapshot> for HistogramView {
    fn from(h: &HistogramSnapshot) -> Self {
        HistogramView {
            cumulative: h.cumulative(),
            sum_seconds: h.sum_seconds,
            count: h.count,
        }
    }
}

/// The live picture.
pub(crate) struct View {
    pub running: bool,
    pub uptime_seconds: u64,
    pub staged_events: u64,
    pub staged_txns: u64,
    pub source_events_per_sec: f64,
    pub source_retries: u64,
    pub source_error: Option<String>,
    /// Change log the database keeps for the pipeline, where the source can tell.
    pub source_retained_bytes: Option<u64>,
    pub head_seq: u64,
    pub backlog_bytes: u64,
    pub sinks: Vec<SinkView>,
    pub stages: Vec<StageView>,
}

impl View {
    /// Why the pipeline is unhealthy (empty: healthy).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.running {
            out.push("the pipeline is not running".to_string());
        }
        for s in &self.sinks {
            let err = s.last_error.as_deref().unwrap_or("unknown error");
            match s.state {
                SinkState::Retrying => out.push(format!(
                    "sink {} is retrying ({} retries so far); last error: {err}",
                    s.name, s.retries
                )),
                SinkState::Failed => out.push(format!("sink {} failed: {err}", s.name)),
                _ => {}
            }
            if let Some(secs) = s.stalled_for {
                out.push(format!(
                    "sink {} is stalled: no progress for {secs} s with {} records to apply",
                    s.name, s.lag_records
                ));
            }
        }
        out
    }
}

impl Context {
    /// Reads the current figures (a few staging-log reads: call off the async threads).
    pub(crate) fn view(&self) -> View {
        let now = now_ms().max(0) as u64;
        let stats = &self.stats;
        let head = self.log.head();
        let cursors = self.log.cursors();
        let (rate_src, rates) = self.rates();
        let mut reader = self.log.reader();
        let stall_ms = self.cfg.admin.stall_seconds.saturating_mul(1000);
        let sinks = self
            .cfg
            .sinks
            .iter()
            .enumerate()
            .map(|(i, cfg)| {
                let st = stats.sinks.get(&cfg.name).cloned().unwrap_or_default();
                let cursor = cursors.get(&cfg.name).copied();
                let applied_seq = cursor.map_or(0, |c| c.seq);
                let lag_records = head.seq.saturating_sub(applied_seq);
                let lag_bytes = head
                    .bytes_total
                    .saturating_sub(cursor.map_or(0, |c| c.bytes_total));
                // Age of the oldest record not applied yet.
                let lag_seconds = if lag_records > 0 {
                    reader
                        .read(applied_seq + 1, head.seq, 8)
                        .ok()
                        .and_then(|b| {
                            b.entries
                                .iter()
                                .find(|e| e.staged_ms > 0)
                                .map(|e| e.staged_ms)
                        })
                        .map_or(0.0, |ms| {
                            now.saturating_sub(ms.max(0) as u64) as f64 / 1000.0
                        })
                } else {
                    0.0
                };
                let state = st.state();
                let stalled_for = stalled_for(stall_ms, &st, lag_records, now);
                SinkView {
                    name: cfg.name.clone(),
                    state,
                    applied_seq,
                    applied_events: st.applied_events.load(Ordering::Relaxed),
                    lag_records,
                    lag_bytes,
                    lag_seconds,
                    retries: st.retries.load(Ordering::Relaxed),
                    last_error: st.last_error(),
                    events_per_sec: rates.get(i).copied().unwrap_or(0.0),
                    stalled_for,
                    apply: HistogramView::from(&st.apply_seconds.read()),
                }
            })
            .collect();
        let readings = stats.stages(self.cfg.sinks.iter().map(|s| s.name.as_str()));
        let busy: f64 = readings.iter().map(|r| r.seconds.sum_seconds).sum();
        let stages = readings
            .iter()
            .map(|r| StageView {
                name: r.name.clone(),
                events: r.events,
                calls: r.seconds.count,
                seconds: r.seconds.sum_seconds,
                p50_seconds: r.seconds.quantile(0.5),
                p99_seconds: r.seconds.quantile(0.99),
                share: if busy > 0.0 {
                    r.seconds.sum_seconds / busy
                } else {
                    0.0
                },
                histogram: HistogramView::from(&r.seconds),
            })
            .collect();
        View {
            running: stats.running.load(Ordering::Relaxed),
            uptime_seconds: now.saturating_sub(stats.started_ms.load(Ordering::Relaxed)) / 1000,
            staged_events: stats.staged_events.load(Ordering::Relaxed),
            staged_txns: stats.staged_txns.load(Ordering::Relaxed),
            source_events_per_sec: rate_src,
            source_retries: stats.source_retries.load(Ordering::Relaxed),
            source_retained_bytes: u64::try_from(
                stats.source_retained_bytes.load(Ordering::Relaxed),
            )
            .ok(),
            source_error: stats
                .source_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            head_seq: head.seq,
            backlog_bytes: self.log.backlog_bytes(),
            sinks,
            stages,
        }
    }

    /// Events per second staged, and applied per sink (in `stats.sinks` order, which is the
    /// pipeline file's sorted by name; mapped back by name below).
    fn rates(&self) -> (f64, Vec<f64>) {
        let q = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(a), Some(b)) = (q.front(), q.back()) else {
            return (0.0, Vec::new());
        };
        let dt = b.at.duration_since(a.at).as_secs_f64();
        if dt <= 0.0 {
            return (0.0, Vec::new());
        }
        let by_name: Vec<f64> = b
            .applied
            .iter()
            .zip(&a.applied)
            .map(|(x, y)| x.saturating_sub(*y) as f64 / dt)
            .collect();
        let names: Vec<&String> = self.stats.sinks.keys().collect();
        let per_sink = self
            .cfg
            .sinks
            .iter()
            .map(|s| {
                names
                    .iter()
                    .position(|n| **n == s.name)
                    .and_then(|i| by_name.get(i).copied())
                    .unwrap_or(0.0)
            })
            .collect();
        (b.staged.saturating_sub(a.staged) as f64 / dt, per_sink)
    }

    /// `/status`: the `weir status --json` report with the live figures merged in.
    pub(crate) fn status(&self) -> anyhow::Result<serde_json::Value> {
        let view = self.view();
        let mut report = crate::cli::status_report(&self.cfg, Some(&self.log))?;
        let problems = view.problems();
        report["state"] = serde_json::json!(if view.running { "running" } else { "stopped" });
        report["uptime_seconds"] = serde_json::json!(view.uptime_seconds);
        report["healthy"] = serde_json::json!(problems.is_empty());
        report["problems"] = serde_json::json!(problems);
        report["source"]["staged_events"] = serde_json::json!(view.staged_events);
        report["source"]["staged_transactions"] = serde_json::json!(view.staged_txns);
        report["source"]["events_per_sec"] = serde_json::json!(round2(view.source_events_per_sec));
        report["source"]["retries"] = serde_json::json!(view.source_retries);
        report["source"]["last_error"] = serde_json::json!(view.source_error);
        report["source"]["retained_bytes"] = serde_json::json!(view.source_retained_bytes);
        report["time_ms"] = serde_json::json!(now_ms());
        let live = self
            .stats
            .backfill
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        report["backfills"] = crate::backfill::report(&live, &self.cfg.log_dir());
        if let Some(arr) = report["sinks"].as_array_mut() {
            for (j, s) in arr.iter_mut().zip(&view.sinks) {
                // A running sink that makes no progress while records wait says so.
                let state = match s.stalled_for {
                    Some(_) => "stalled",
                    None => s.state.as_str(),
                };
                j["state"] = serde_json::json!(state);
                j["applied_events"] = serde_json::json!(s.applied_events);
                j["events_per_sec"] = serde_json::json!(round2(s.events_per_sec));
                j["lag_seconds"] = serde_json::json!(round2(s.lag_seconds));
                j["retries"] = serde_json::json!(s.retries);
                j["last_error"] = serde_json::json!(s.last_error);
                j["stalled_seconds"] = serde_json::json!(s.stalled_for);
            }
        }
        let ms = |s: Option<f64>| s.map(|s| round3(s * 1000.0));
        report["stages"] = view
            .stages
            .iter()
            .map(|s| {
                serde_json::json!({
                    "stage": s.name,
                    "events": s.events,
                    "calls": s.calls,
                    "seconds": round3(s.seconds),
                    "p50_ms": ms(s.p50_seconds),
                    "p99_ms": ms(s.p99_seconds),
                    "share": round3(s.share),
                })
            })
            .collect();
        Ok(report)
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
