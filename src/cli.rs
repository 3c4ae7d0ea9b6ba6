//! The `weir` command line (SPEC.md): exit 0 success, 1 runtime failure, 2 bad usage or an
//! invalid pipeline file.

use crate::config::{self, PipelineConfig};
use crate::log::{LogOptions, StagingLog};
use crate::registry;
use crate::runtime::{self, Pipeline, RunOptions, chain};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weir_api::{Entry, render_envelope};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Change-data-capture: database change logs to SQL, Kafka and files"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipeline: snapshot (per config), then stream.
    Run {
        /// Pipeline file.
        pipeline: PathBuf,
        /// Stage up to the source's position at start-up, wait until every sink applied it, exit.
        #[arg(long)]
        once: bool,
    },
    /// Validate the file and preflight source and sinks.
    Check {
        /// Pipeline file.
        pipeline: PathBuf,
    },
    /// Positions, per-sink lag, log size (live states, stalls and stages from a running
    /// pipeline with `[admin] metrics`).
    Status {
        /// Pipeline file.
        pipeline: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print staged events as JSON lines.
    Log {
        /// Pipeline file.
        pipeline: PathBuf,
        /// First log sequence to print (default: the oldest kept).
        #[arg(long)]
        from: Option<u64>,
        /// At most this many records.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Backfill tables while streaming goes on.
    Snapshot {
        /// Pipeline file.
        pipeline: PathBuf,
        /// Tables (schema.table).
        #[arg(required = true)]
        tables: Vec<String>,
    },
    /// Crash-test workload for the staging log.
    #[command(name = "__log-torture", hide = true)]
    LogTorture {
        /// Log directory.
        dir: PathBuf,
    },
}

/// Runs the command line; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    init_tracing(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let result = rt.block_on(dispatch(cli.command));
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(ce) = e.downcast_ref::<config::ConfigError>() {
                eprintln!("error: {ce}");
                return 2;
            }
            eprintln!("error: {}", chain(e.as_ref()));
            1
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn dispatch(command: Command) -> Result<i32> {
    match command {
        Command::Run { pipeline, once } => run(&pipeline, once).await,
        Command::Check { pipeline } => check(&pipeline).await,
        Command::Status { pipeline, json } => status(&pipeline, json),
        Command::Log {
            pipeline,
            from,
            limit,
        } => print_log(&pipeline, from, limit),
        Command::Snapshot { pipeline, tables } => snapshot(&pipeline, &tables),
        Command::LogTorture { dir } => {
            crate::log::torture::run(&dir).await?;
            Ok(0)
        }
    }
}

/// `weir snapshot`: queues backfills (the running pipeline, or the next `weir run`, does them).
fn snapshot(path: &Path, tables: &[String]) -> Result<i32> {
    let cfg = config::load(path)?;
    let mut checked = Vec::new();
    for name in tables {
        match crate::backfill::check_table(&cfg, name) {
            Ok(t) => checked.push(t),
            Err(e) => {
                eprintln!("error: weir snapshot: {e}");
                return Ok(2);
            }
        }
    }
    for table in checked {
        let id = crate::backfill::request(&cfg.log_dir(), &table).map_err(|e| {
            anyhow::anyhow!(
                "cannot write the backfill request in {}: {e}",
                crate::backfill::requests_dir(&cfg.log_dir()).display()
            )
        })?;
        println!(
            "queued backfill of {table} (request {id}): a running pipeline starts it within a \
             second, else the next `weir run` does; `weir status` shows its progress"
        );
    }
    Ok(0)
}

async fn run(path: &Path, once: bool) -> Result<i32> {
    let cfg = config::load(path)?;
    let log = StagingLog::open(&cfg.log_dir(), LogOptions::default())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_signal().await;
        tracing::info!(
            "stopping: finishing the batch in hand (signal again to exit at once; nothing is lost)"
        );
        let _ = stop_tx.send(true);
        wait_signal().await;
        tracing::warn!(
            "second signal: exiting now; the next run resumes from the last durable position"
        );
        std::process::exit(130);
    });
    tracing::info!(pipeline = %cfg.name, source = cfg.source.kind(), sinks = cfg.sinks.len(), log = %log.path().display(), once, "starting");
    let pipeline = Pipeline {
        name: cfg.name.clone(),
        log: Arc::clone(&log),
        max_log_bytes: cfg.log.max_bytes.0,
        source: registry::source(&cfg),
        sinks: registry::sinks(&cfg),
        snapshot: registry::snapshot_options(&cfg),
    };
    let stats = Arc::new(runtime::Stats::new(
        cfg.sinks.iter().map(|s| s.name.as_str()),
    ));
    let admin = crate::admin::start(&cfg, &log, &stats).await?;
    let result = runtime::run_with_stats(pipeline, RunOptions { once }, stop_rx, stats).await;
    admin.stop();
    let summary = result?;
    tracing::info!(
        staged_events = summary.staged_events,
        head = summary.head_seq,
        "stopped"
    );
    Ok(0)
}

async fn wait_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn check(path: &Path) -> Result<i32> {
    let cfg = config::load(path)?;
    let problems = registry::check(&cfg).await;
    for p in &problems {
        println!(
            "{}: {}",
            if p.fatal { "error" } else { "warning" },
            p.message
        );
    }
    if problems.iter().any(|p| p.fatal) {
        return Ok(1);
    }
    println!(
        "pipeline {}: {} source and {} sink(s) look ready",
        cfg.name,
        cfg.source.kind(),
        cfg.sinks.len()
    );
    Ok(0)
}

fn open_existing(cfg: &PipelineConfig) -> Result<Option<Arc<StagingLog>>> {
    let dir = cfg.log_dir();
    if !dir.join("CURRENT").exists() {
        return Ok(None);
    }
    // A running pipeline may delete a RocksDB file between our listing and opening it: retry.
    let mut tries = 0;
    loop {
        match StagingLog::open_read_only(&dir) {
            Ok(log) => return Ok(Some(log)),
            Err(e) if tries < 10 => {
                tries += 1;
                tracing::debug!(error = %e, "opening the staging log read-only; retrying");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn status(path: &Path, json: bool) -> Result<i32> {
    let cfg = config::load(path)?;
    // A running pipeline with `[admin] metrics` answers with its live figures (sink states,
    // stalls, problems); otherwise the staging log is read directly.
    let report = match live_status(&cfg) {
        Some(report) => report,
        None => status_report(&cfg, open_existing(&cfg)?.as_ref())?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    let head_seq = report["log"]["head_seq"].as_u64().unwrap_or(0);
    print_status(&cfg, &report, head_seq);
    Ok(0)
}

/// `/status` of this pipeline's running `weir run`, if `[admin] metrics` is set and it
/// answers within a few seconds (and is this pipeline).
fn live_status(cfg: &PipelineConfig) -> Option<serde_json::Value> {
    use std::io::{Read as _, Write as _};
    use std::time::Duration;
    let mut addr = cfg.admin.metrics?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.take(64 << 20).read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    if head.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    let report: serde_json::Value = serde_json::from_str(body).ok()?;
    (report["pipeline"] == cfg.name.as_str()).then_some(report)
}

/// The report of `weir status --json` (also served on the admin plane's `/status`).
pub(crate) fn status_report(
    cfg: &PipelineConfig,
    log: Option<&Arc<StagingLog>>,
) -> Result<serde_json::Value> {
    let head = log.map(|l| l.head());
    let cursors = log.map(|l| l.cursors()).unwrap_or_default();
    let head_seq = head.as_ref().map_or(0, |h| h.seq);
    let head_bytes = head.as_ref().map_or(0, |h| h.bytes_total);
    let sinks: Vec<serde_json::Value> = cfg
        .sinks
        .iter()
        .map(|s| {
            let c = cursors.get(&s.name);
            serde_json::json!({
                "name": s.name,
                "type": s.kind.kind(),
                "applied_seq": c.map(|c| c.seq),
                "lag_records": head_seq.saturating_sub(c.map_or(0, |c| c.seq)),
                "lag_bytes": head_bytes.saturating_sub(c.map_or(0, |c| c.bytes_total)),
            })
        })
        .collect();
    let plan = match log {
        Some(l) => l.snapshot_plan()?,
        None => None,
    };
    let snapshot = plan.as_ref().map(|plan| {
        // Finished chunks: from the head while the snapshot runs; all once streaming.
        let pos = match head.as_ref().and_then(|h| h.position.as_ref()) {
            Some(weir_api::SourcePosition::Snapshot(s)) => Some(s.clone()),
            Some(_) => {
                let mut all = weir_api::SnapshotPosition::start(
                    plan.stream_from.clone(),
                    plan.chunks.len() as u32,
                );
                all.done_below = all.total;
                Some(all)
            }
            None => None,
        };
        let tables: Vec<serde_json::Value> = crate::snapshot::progress(plan, pos.as_ref())
            .into_iter()
            .map(|(t, p)| {
                serde_json::json!({
                    "table": t.to_string(),
                    "chunks": p.chunks,
                    "chunks_done": p.chunks_done,
                    "estimated_rows": p.estimated_rows,
                    "rows_done_estimate": p.rows_done_estimate,
                })
            })
            .collect();
        let done = pos.as_ref().map_or(0, |p| p.done_count());
        serde_json::json!({
            "state": if done as usize >= plan.chunks.len() { "done" } else { "in progress" },
            "chunks": plan.chunks.len(),
            "chunks_done": done,
            "stream_from": plan.stream_from.to_string(),
            "tables": tables,
        })
    });
    let backfill_state = match log {
        Some(l) => crate::backfill::durable_state(l)?,
        None => Default::default(),
    };
    let backfills = crate::backfill::report(&backfill_state, &cfg.log_dir());
    let report = serde_json::json!({
        "pipeline": cfg.name,
        "snapshot": snapshot,
        "backfills": backfills,
        "state": if log.is_some() { "started" } else { "not started" },
        "source": {
            "type": cfg.source.kind(),
            "position": head.as_ref().and_then(|h| h.position.as_ref()).map(|p| p.to_string()),
        },
        "log": {
            "path": cfg.log_dir().display().to_string(),
            "head_seq": head_seq,
            "first_seq": log.map(|l| l.first_seq()),
            "transactions": head.as_ref().map_or(0, |h| h.txns),
            "bytes_total": head_bytes,
            "backlog_bytes": log.map_or(0, |l| l.backlog_bytes()),
        },
        "sinks": sinks,
    });
    Ok(report)
}

fn print_status(cfg: &PipelineConfig, report: &serde_json::Value, head_seq: u64) {
    let health = match report["healthy"].as_bool() {
        Some(true) => ", healthy",
        Some(false) => ", unhealthy",
        None => "",
    };
    println!(
        "pipeline   {} ({}{health})",
        cfg.name,
        report["state"].as_str().unwrap_or("")
    );
    for p in report["problems"].as_array().cloned().unwrap_or_default() {
        println!("problem    {}", p.as_str().unwrap_or_default());
    }
    println!(
        "source     {}  position {}",
        cfg.source.kind(),
        report["source"]["position"].as_str().unwrap_or("-")
    );
    println!(
        "log        {}  head {}  transactions {}  backlog {}",
        cfg.log_dir().display(),
        head_seq,
        report["log"]["transactions"],
        human_bytes(report["log"]["backlog_bytes"].as_u64().unwrap_or(0))
    );
    if let Some(snap) = report["snapshot"].as_object() {
        println!(
            "snapshot   {}  chunks={}/{}",
            snap["state"].as_str().unwrap_or(""),
            snap["chunks_done"],
            snap["chunks"]
        );
        for t in snap["tables"].as_array().cloned().unwrap_or_default() {
            println!(
                "  table    {}  chunks {}/{}  ~{} of ~{} rows",
                t["table"].as_str().unwrap_or(""),
                t["chunks_done"],
                t["chunks"],
                t["rows_done_estimate"],
                t["estimated_rows"]
            );
        }
    }
    for b in report["backfills"].as_array().cloned().unwrap_or_default() {
        let of = match b["estimated_rows"].as_u64() {
            Some(e) if e > 0 => format!(" of ~{e}"),
            _ => String::new(),
        };
        let error = b["error"]
            .as_str()
            .map(|e| format!("  error: {e}"))
            .unwrap_or_default();
        println!(
            "backfill   {}  {}  {} rows{of}{error}",
            b["table"].as_str().unwrap_or(""),
            b["state"].as_str().unwrap_or(""),
            b["rows"]
        );
    }
    for s in &report["sinks"].as_array().cloned().unwrap_or_default() {
        // Live figures (from a running pipeline's /status) when there are any.
        let mut live = String::new();
        if let Some(state) = s["state"].as_str() {
            live.push_str(&format!("  {state}"));
        }
        if let Some(secs) = s["stalled_seconds"].as_u64() {
            live.push_str(&format!(" for {secs} s"));
        }
        println!(
            "sink       {} ({}){live}  applied {}  lag {} records, {}",
            s["name"].as_str().unwrap_or(""),
            s["type"].as_str().unwrap_or(""),
            s["applied_seq"]
                .as_u64()
                .map_or("-".to_string(), |v| v.to_string()),
            s["lag_records"],
            human_bytes(s["lag_bytes"].as_u64().unwrap_or(0)),
        );
    }
    let ms = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |v| format!("{v:.3}"));
    for st in report["stages"].as_array().cloned().unwrap_or_default() {
        println!(
            "stage      {}  {} events  {} calls  {:.3} s  p50 {} ms  p99 {} ms  share {:.1}%",
            st["stage"].as_str().unwrap_or(""),
            st["events"],
            st["calls"],
            st["seconds"].as_f64().unwrap_or(0.0),
            ms(&st["p50_ms"]),
            ms(&st["p99_ms"]),
            st["share"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn print_log(path: &Path, from: Option<u64>, limit: Option<u64>) -> Result<i32> {
    use std::io::Write as _;
    let cfg = config::load(path)?;
    let Some(log) = open_existing(&cfg)? else {
        eprintln!(
            "pipeline {} has not staged anything yet ({} does not exist)",
            cfg.name,
            cfg.log_dir().display()
        );
        return Ok(0);
    };
    let info = registry::source(&cfg).info();
    let head = log.head().seq;
    let mut next = from.unwrap_or_else(|| log.first_seq()).max(log.first_seq());
    let mut left = limit.unwrap_or(u64::MAX);
    let mut reader = log.reader();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut line = Vec::new();
    while next <= head && left > 0 {
        let batch = reader
            .read(next, head, left.min(4096) as usize)
            .context("reading the staging log")?;
        for e in &batch.entries {
            line.clear();
            match &e.entry {
                Entry::Change(ev, schema) => {
                    line.extend_from_slice(format!("{{\"seq\":{},\"event\":", e.seq).as_bytes());
                    render_envelope(&mut line, &info, schema, ev, e.staged_ms)?;
                    line.push(b'}');
                }
                Entry::Commit(c) => {
                    let v = serde_json::json!({"seq": e.seq, "commit": {"position": c.position.to_string(), "txid": c.txid, "events": c.events, "ts_ms": c.ts_ms}});
                    serde_json::to_writer(&mut line, &v)?;
                }
                Entry::Schema(s) => {
                    let v = serde_json::json!({"seq": e.seq, "schema": s.as_ref()});
                    serde_json::to_writer(&mut line, &v)?;
                }
            }
            line.push(b'\n');
            if out.write_all(&line).is_err() {
                return Ok(0); // stdout closed (e.g. `| head`)
            }
        }
        next = batch.entries.last().map_or(head + 1, |e| e.seq + 1);
        left -= batch.entries.len() as u64;
    }
    let _ = out.flush();
    Ok(0)
}
