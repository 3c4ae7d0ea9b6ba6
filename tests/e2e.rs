//! End to end: datagen → staging log → file sink, through the binary and the engine.

use crate::common::*;
use async_trait::async_trait;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use weir::config::{DatagenConfig, Mix};
use weir::log::{LogOptions, StagingLog};
use weir::runtime::{self, Pipeline, RunOptions, SinkFactory, SinkSpec, SourceFactory};
use weir_api::{ConnectorError, LogEntry, Sink, SinkContext, Source, SourceInfo};

#[test]
fn million_events_in_ten_thousand_transactions_arrive_exactly() {
    let dir = TempDir::new("e2e-1m");
    let cfg = DatagenConfig::new(4, 1_000_000, 100, 100, Mix::Mixed, 42);
    let pipeline = datagen_pipeline(dir.path(), &cfg, "");
    run_once_ok(&pipeline);
    assert_output_matches_datagen(&dir.path().join("out"), &cfg, "t");

    // The log knows it has 10,000 transactions, and the sink applied all of them.
    let status = run(weir().args(["status", "--json"]).arg(&pipeline));
    assert!(status.status.success());
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["log"]["transactions"], 10_000);
    assert_eq!(s["source"]["position"], "event=1000000");
    assert_eq!(s["sinks"][0]["lag_records"], 0);

    // Run again: nothing new, nothing duplicated.
    run_once_ok(&pipeline);
    assert_output_matches_datagen(&dir.path().join("out"), &cfg, "t");
}

#[test]
fn sigkilled_runs_resume_without_loss_duplicates_or_partial_lines() {
    let dir = TempDir::new("e2e-kill");
    let cfg = DatagenConfig::new(3, 300_000, 250, 80, Mix::Mixed, 9);
    let pipeline = datagen_pipeline(dir.path(), &cfg, "rate = 100000");
    let mut rng = Rng(5);
    for round in 0..8 {
        let mut child = weir().arg("run").arg(&pipeline).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.range(200, 900)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: weir exited before the kill"
        );
    }
    run_once_ok(&pipeline);
    assert_output_matches_datagen(&dir.path().join("out"), &cfg, "t");
}

#[test]
fn sigterm_stops_gracefully_with_exit_0_and_resumes() {
    let dir = TempDir::new("e2e-term");
    let cfg = DatagenConfig::new(2, 100_000, 100, 50, Mix::Insert, 3);
    let pipeline = datagen_pipeline(dir.path(), &cfg, "rate = 50000");
    let mut child = weir().arg("run").arg(&pipeline).spawn().unwrap();
    // Stop it mid-stream: once output has started to arrive.
    let first = dir.path().join("out/datagen.t0.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::metadata(&first).is_ok_and(|m| m.len() > 0) {
        assert!(Instant::now() < deadline, "no output after 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful stop must exit 0");
    run_once_ok(&pipeline);
    assert_output_matches_datagen(&dir.path().join("out"), &cfg, "t");
}

#[test]
fn five_million_row_transaction_streams_with_bounded_memory() {
    let dir = TempDir::new("e2e-big");
    let cfg = DatagenConfig::new(1, 5_000_000, 5_000_000, 16, Mix::Insert, 1);
    let pipeline = datagen_pipeline(dir.path(), &cfg, "");
    let mut child = weir()
        .args(["run", "--once"])
        .arg(&pipeline)
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        peak = peak.max(peak_rss(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    eprintln!("5,000,000-row transaction: peak RSS {} MiB", peak >> 20);
    // The transaction's rows take well over 1 GiB as events; a bound far below that shows
    // memory does not grow with transaction size.
    assert!(peak > 0 && peak < 250 << 20, "peak RSS {} MiB", peak >> 20);
    let file = dir.path().join("out/datagen.t0.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 5_000_000);
    assert!(text.ends_with('\n'));
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["after"]["id"], 5_000_000);
    assert_eq!(last["source"]["txid"], "1");
}

/// A sink that fails every other `apply` call, after applying the first half of the batch
/// (as a crash mid-batch would).
struct Flaky {
    inner: Box<dyn Sink>,
    calls: Arc<AtomicU64>,
}

#[async_trait]
impl Sink for Flaky {
    async fn committed(&mut self) -> weir_api::Result<Option<u64>> {
        self.inner.committed().await
    }
    async fn apply(&mut self, entries: &[LogEntry]) -> weir_api::Result<()> {
        if self.calls.fetch_add(1, Ordering::SeqCst) % 2 == 1 {
            self.inner.apply(&entries[..entries.len() / 2]).await?;
            return Err(ConnectorError::transient("injected failure"));
        }
        self.inner.apply(entries).await
    }
}

struct FlakyFactory {
    cfg: weir_file::FileSinkConfig,
    calls: Arc<AtomicU64>,
    builds: AtomicU64,
}

#[async_trait]
impl SinkFactory for FlakyFactory {
    async fn build(&self, ctx: SinkContext) -> weir_api::Result<Box<dyn Sink>> {
        self.builds.fetch_add(1, Ordering::SeqCst);
        let inner = weir_file::FileSink::open(&self.cfg, ctx)?;
        Ok(Box::new(Flaky {
            inner: Box::new(inner),
            calls: Arc::clone(&self.calls),
        }))
    }
}

struct DatagenFactory(DatagenConfig);

#[async_trait]
impl SourceFactory for DatagenFactory {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            connector: "datagen".into(),
            name: "t".into(),
            db: "datagen".into(),
        }
    }
    async fn build(&self) -> weir_api::Result<Box<dyn Source>> {
        Ok(Box::new(weir::datagen::Datagen::new(self.0.clone(), "t")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_failing_every_other_call_still_ends_exactly_equal_and_does_not_block_others() {
    let dir = TempDir::new("e2e-flaky");
    let cfg = DatagenConfig::new(3, 300_000, 100, 60, Mix::Mixed, 11);
    let log = StagingLog::open(&dir.path().join("log"), LogOptions::default()).unwrap();
    let flaky = Arc::new(FlakyFactory {
        cfg: weir_file::FileSinkConfig {
            path: dir.path().join("flaky"),
        },
        calls: Arc::new(AtomicU64::new(0)),
        builds: AtomicU64::new(0),
    });
    let pipeline = Pipeline {
        snapshot: Default::default(),
        name: "t".into(),
        log: Arc::clone(&log),
        max_log_bytes: u64::MAX,
        source: Arc::new(DatagenFactory(cfg.clone())),
        sinks: vec![
            SinkSpec {
                name: "flaky".into(),
                factory: flaky.clone(),
            },
            SinkSpec {
                name: "healthy".into(),
                factory: Arc::new(FileFactory(weir_file::FileSinkConfig {
                    path: dir.path().join("healthy"),
                })),
            },
        ],
    };
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    runtime::run(pipeline, RunOptions { once: true }, stop_rx)
        .await
        .unwrap();
    let calls = flaky.calls.load(Ordering::SeqCst);
    let builds = flaky.builds.load(Ordering::SeqCst);
    eprintln!(
        "flaky sink: {calls} apply calls, {builds} builds, {:?}",
        started.elapsed()
    );
    assert!(
        calls >= 10,
        "the flaky sink must have failed many times (calls {calls})"
    );
    assert!(
        builds >= calls / 2,
        "every failure rebuilds the sink (builds {builds}, calls {calls})"
    );
    assert_output_matches_datagen(&dir.path().join("flaky"), &cfg, "t");
    assert_output_matches_datagen(&dir.path().join("healthy"), &cfg, "t");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_pauses_the_source_while_a_sink_lags() {
    struct Slow(weir_file::FileSinkConfig, Arc<AtomicU64>);
    struct SlowSink(Box<dyn Sink>, Arc<AtomicU64>);
    #[async_trait]
    impl Sink for SlowSink {
        async fn committed(&mut self) -> weir_api::Result<Option<u64>> {
            self.0.committed().await
        }
        async fn apply(&mut self, entries: &[LogEntry]) -> weir_api::Result<()> {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.1.fetch_add(1, Ordering::SeqCst);
            // A slow target: the sink lags far behind the source.
            self.0.apply(entries).await
        }
    }
    #[async_trait]
    impl SinkFactory for Slow {
        async fn build(&self, ctx: SinkContext) -> weir_api::Result<Box<dyn Sink>> {
            Ok(Box::new(SlowSink(
                Box::new(weir_file::FileSink::open(&self.0, ctx)?),
                Arc::clone(&self.1),
            )))
        }
    }
    let dir = TempDir::new("e2e-bp");
    let cfg = DatagenConfig::new(1, 200_000, 100, 100, Mix::Insert, 2);
    let log = StagingLog::open(&dir.path().join("log"), LogOptions::default()).unwrap();
    let applies = Arc::new(AtomicU64::new(0));
    let max = 4 << 20;
    let pipeline = Pipeline {
        snapshot: Default::default(),
        name: "t".into(),
        log: Arc::clone(&log),
        max_log_bytes: max,
        source: Arc::new(DatagenFactory(cfg.clone())),
        sinks: vec![SinkSpec {
            name: "slow".into(),
            factory: Arc::new(Slow(
                weir_file::FileSinkConfig {
                    path: dir.path().join("out"),
                },
                applies.clone(),
            )),
        }],
    };
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = {
        let log = Arc::clone(&log);
        tokio::spawn(async move {
            let mut worst = 0;
            for _ in 0..400 {
                worst = worst.max(log.backlog_bytes());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            worst
        })
    };
    runtime::run(pipeline, RunOptions { once: true }, stop_rx)
        .await
        .unwrap();
    let worst = watcher.await.unwrap();
    eprintln!("worst backlog {worst} bytes with a limit of {max}");
    // The source stops at the first transaction boundary past the limit.
    assert!(
        worst <= max + (64 << 10),
        "backlog {worst} exceeded the limit {max}"
    );
    assert!(
        worst > max / 2,
        "the sink should have lagged (backlog {worst})"
    );
    assert_output_matches_datagen(&dir.path().join("out"), &cfg, "t");
}

#[test]
fn status_and_log_commands_report_the_pipeline() {
    let dir = TempDir::new("e2e-cmds");
    let cfg = DatagenConfig::new(2, 1_000, 10, 20, Mix::Mixed, 8);
    let pipeline = datagen_pipeline(dir.path(), &cfg, "");
    let status = run(weir().args(["status", "--json"]).arg(&pipeline));
    assert!(status.status.success());
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(s["state"], "not started");

    run_once_ok(&pipeline);
    let text = run(weir().arg("status").arg(&pipeline));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("position event=1000"), "{text}");
    assert!(text.contains("sink       files (file)  applied"), "{text}");

    // Everything was applied, so retention kept only the last commit; `weir log` prints it.
    let log = run(weir().args(["log", "--limit", "10"]).arg(&pipeline));
    assert!(log.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(log.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty() && lines.len() <= 10);
    let last = lines.last().unwrap();
    assert_eq!(last["commit"]["position"], "event=1000");
    assert_eq!(last["commit"]["events"], 10);
}

/// A datagen source that fails (transiently) on about one call in eight, often in the middle of a
/// transaction: the runtime must roll back, reconnect and resume with nothing lost or doubled.
struct FlakySource {
    inner: weir::datagen::Datagen,
    calls: Arc<AtomicU64>,
}

#[async_trait]
impl Source for FlakySource {
    fn info(&self) -> SourceInfo {
        self.inner.info()
    }
    async fn start(&mut self, resume: Option<weir_api::SourcePosition>) -> weir_api::Result<()> {
        self.inner.start(resume).await
    }
    async fn end_position(&mut self) -> weir_api::Result<weir_api::SourcePosition> {
        self.inner.end_position().await
    }
    async fn next(&mut self) -> weir_api::Result<weir_api::SourceItem> {
        // Fail about one call in eight, at pseudo-random points (a fixed period could line
        // up with the transaction length and never let one through).
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if Rng(call).next().is_multiple_of(8) {
            return Err(ConnectorError::transient("injected source failure"));
        }
        self.inner.next().await
    }
    async fn ack(&mut self, position: &weir_api::SourcePosition) -> weir_api::Result<()> {
        self.inner.ack(position).await
    }
}

struct FlakySourceFactory(DatagenConfig, Arc<AtomicU64>);

#[async_trait]
impl SourceFactory for FlakySourceFactory {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            connector: "datagen".into(),
            name: "t".into(),
            db: "datagen".into(),
        }
    }
    async fn build(&self) -> weir_api::Result<Box<dyn Source>> {
        Ok(Box::new(FlakySource {
            inner: weir::datagen::Datagen::new(self.0.clone(), "t"),
            calls: Arc::clone(&self.1),
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_failing_mid_transaction_resumes_without_loss_or_duplicates() {
    let dir = TempDir::new("e2e-flaky-source");
    // 2,000-event transactions arrive in two pieces, so failures hit open transactions.
    let cfg = DatagenConfig::new(2, 60_000, 2_000, 30, Mix::Mixed, 13);
    let log = StagingLog::open(&dir.path().join("log"), LogOptions::default()).unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let pipeline = Pipeline {
        snapshot: Default::default(),
        name: "t".into(),
        log: Arc::clone(&log),
        max_log_bytes: u64::MAX,
        source: Arc::new(FlakySourceFactory(cfg.clone(), Arc::clone(&calls))),
        sinks: vec![SinkSpec {
            name: "files".into(),
            factory: Arc::new(FileFactory(weir_file::FileSinkConfig {
                path: dir.path().join("out"),
            })),
        }],
    };
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    runtime::run(pipeline, RunOptions { once: true }, stop_rx)
        .await
        .unwrap();
    assert!(calls.load(Ordering::SeqCst) > 50);
    assert_eq!(
        log.head().txns,
        30,
        "each source transaction staged exactly once"
    );
    assert_output_matches_datagen(&dir.path().join("out"), &cfg, "t");
}
