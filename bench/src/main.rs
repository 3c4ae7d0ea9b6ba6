//! weir benchmarks. Every figure is reported next to a peer measured in the same run on the
//! same machine, because these machines are shared and noisy.
//!
//! (a) staging-log append: events/s and MB/s of `StagingLog` (bincode encoding, group
//!     commit, fsync per group) against raw RocksDB `WriteBatch` writes of the same bytes with
//!     the same number of syncs.
//! (b) end to end: `weir run --once` of a datagen → file pipeline: events/s and peak RSS;
//!     and the 5,000,000-row single transaction's peak RSS.
//!
//! (c), (d) PostgreSQL source against `pg_recvlogical` and `COPY ... TO STDOUT`: see `pg.rs`.
//! (e) MySQL/MariaDB source against python `mysql-replication` and `mariadb-binlog`: see
//!     `mysql.rs`.
//! (f) `weir.stages` with a deliberately slow PostgreSQL sink: see `stages.rs`.
//! (g) PostgreSQL sink drain rate against native logical replication: see `sql.rs`.
//! (h) Kafka sink against a plain rdkafka producer, and commit → ack latency: see `kafka.rs`.
//! (i) MySQL sink drain rate against a native MariaDB replica: see `mysql_sql.rs`.
//! (j) PostgreSQL → PostgreSQL snapshot against a COPY pipe and `pgcopydb clone`: see
//!     `pg_snapshot.rs`.
//!
//! Usage: weir-bench WEIR_BINARY [EVENTS]
//!        weir-bench pg WEIR_BINARY [STREAM_EVENTS] [SNAPSHOT_ROWS] [ROUNDS]
//!        weir-bench mysql WEIR_BINARY [EVENTS] [ROUNDS] [PYTHON]
//!        weir-bench stages WEIR_BINARY [EVENTS] [SLEEP_SECONDS]
//!        weir-bench sql WEIR_BINARY [PGBENCH_TXNS_PER_CLIENT] [BULK_TXNS] [ROUNDS]
//!        weir-bench kafka WEIR_BINARY [EVENTS] [ROUNDS] [LATENCY_SECONDS] [RATE]
//!        weir-bench mysql-sql WEIR_BINARY [SYSBENCH_TXNS] [BULK_TXNS] [ROUNDS]
//!        weir-bench pg-snapshot WEIR_BINARY [SCALE] [WIDE_ROWS] [ROUNDS] [WORKERS]

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir::config::{DatagenConfig, Mix};
use weir::datagen::{Datagen, Generator};
use weir::log::{LogOptions, StagingLog, WriteOp};
use weir_api::ChangeEvent;

mod kafka;
mod measure;
mod mysql;
mod mysql_sql;
mod pg;
mod pg_snapshot;
mod sql;
mod stages;

/// The next argument parsed, or `default` when there is none.
fn arg_or<T>(args: &mut impl Iterator<Item = String>, default: T) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    Ok(args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(default))
}

/// Runs a benchmark on a multi-threaded tokio runtime.
fn block_on(bench: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "pg") {
        args.next();
        let usage = "usage: weir-bench pg WEIR_BINARY [STREAM_EVENTS] [SNAPSHOT_ROWS] [ROUNDS]";
        let weir = PathBuf::from(args.next().context(usage)?);
        let mut num = |default: u64| arg_or(&mut args, default);
        let cfg = pg::PgBench {
            weir,
            stream_events: num(1_000_000)?,
            snapshot_rows: num(2_000_000)?,
            rounds: u32::try_from(num(3)?)?,
        };
        println!(
            "# weir PostgreSQL source benchmarks ({} cores)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        return block_on(pg::run(cfg));
    }
    if args.peek().is_some_and(|a| a == "sql") {
        args.next();
        let usage =
            "usage: weir-bench sql WEIR_BINARY [PGBENCH_TXNS_PER_CLIENT] [BULK_TXNS] [ROUNDS]";
        let weir = PathBuf::from(args.next().context(usage)?);
        let mut num = |default: u64| arg_or(&mut args, default);
        let cfg = sql::SqlBench {
            weir,
            pgbench_txns: num(5000)?,
            bulk_txns: num(2000)?,
            rounds: u32::try_from(num(3)?)?,
        };
        println!(
            "# weir SQL sink vs native logical replication ({} cores)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        return block_on(sql::run(cfg));
    }
    if args.peek().is_some_and(|a| a == "mysql-sql") {
        args.next();
        let usage = "usage: weir-bench mysql-sql WEIR_BINARY [SYSBENCH_TXNS] [BULK_TXNS] [ROUNDS]";
        let weir = PathBuf::from(args.next().context(usage)?);
        let mut num = |default: u64| arg_or(&mut args, default);
        let cfg = mysql_sql::MysqlSqlBench {
            weir,
            sysbench_txns: num(20_000)?,
            bulk_txns: num(2000)?,
            rounds: u32::try_from(num(3)?)?,
        };
        println!(
            "# weir MySQL sink vs a native MariaDB replica ({} cores)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        return block_on(mysql_sql::run(cfg));
    }
    if args.peek().is_some_and(|a| a == "pg-snapshot") {
        args.next();
        let usage =
            "usage: weir-bench pg-snapshot WEIR_BINARY [SCALE] [WIDE_ROWS] [ROUNDS] [WORKERS]";
        let weir = PathBuf::from(args.next().context(usage)?);
        let mut num = |default: u64| arg_or(&mut args, default);
        let cfg = pg_snapshot::PgSnapshotBench {
            weir,
            scale: u32::try_from(num(10)?)?,
            wide_rows: num(200_000)?,
            rounds: u32::try_from(num(3)?)?,
            workers: u32::try_from(num(4)?)?,
        };
        println!(
            "# weir PostgreSQL snapshot vs COPY pipe and pgcopydb ({} cores)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        return block_on(pg_snapshot::run(cfg));
    }
    if args.peek().is_some_and(|a| a == "kafka") {
        args.next();
        let usage =
            "usage: weir-bench kafka WEIR_BINARY [EVENTS] [ROUNDS] [LATENCY_SECONDS] [RATE]";
        let weir = PathBuf::from(args.next().context(usage)?);
        let mut num = |default: u64| arg_or(&mut args, default);
        let cfg = kafka::KafkaBench {
            weir,
            events: num(100_000)?,
            rounds: u32::try_from(num(3)?)?,
            latency_secs: num(20)?,
            rate: num(5000)?,
        };
        println!(
            "# weir Kafka sink benchmark ({} cores)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        return block_on(kafka::run(cfg));
    }
    if args.peek().is_some_and(|a| a == "stages") {
        args.next();
        let usage = "usage: weir-bench stages WEIR_BINARY [EVENTS] [SLEEP_SECONDS]";
        let weir = PathBuf::from(args.next().context(usage)?);
        let events: u64 = arg_or(&mut args, 20_000)?;
        let sleep: f64 = arg_or(&mut args, 0.0005)?;
        println!(
            "# weir stages benchmark ({} cores)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        return block_on(stages::run(stages::StagesBench {
            weir,
            events,
            sleep,
        }));
    }
    if args.peek().is_some_and(|a| a == "mysql") {
        args.next();
        let usage = "usage: weir-bench mysql WEIR_BINARY [EVENTS] [ROUNDS] [PYTHON]";
        let weir = PathBuf::from(args.next().context(usage)?);
        let events: u64 = arg_or(&mut args, 1_000_000)?;
        let rounds: u32 = arg_or(&mut args, 3)?;
        let python = PathBuf::from(
            args.next()
                .unwrap_or_else(|| "/tmp/weir-bench-venv/bin/python".into()),
        );
        let cfg = mysql::MysqlBench {
            weir,
            events,
            rounds,
            python,
        };
        println!(
            "# weir MySQL/MariaDB source benchmark ({} cores)",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        return block_on(mysql::run(cfg));
    }
    let weir = PathBuf::from(
        args.next()
            .context("usage: weir-bench WEIR_BINARY [EVENTS]")?,
    );
    let events: u64 = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let base = std::env::temp_dir().join(format!("weir-bench-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    println!(
        "# weir benchmarks ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "## (a) staging-log append vs raw RocksDB, {events} events of ~200 bytes in transactions of 100"
    );
    let txns = build_txns(events);
    for round in 1..=2 {
        let (log_secs, bytes, syncs) =
            rt.block_on(log_append(&base.join(format!("log{round}")), txns.clone()))?;
        let raw_secs = raw_rocksdb(&base.join(format!("raw{round}")), &txns, syncs)?;
        println!(
            "round {round}: weir log {:>9.0} events/s {:>6.1} MB/s | raw RocksDB {:>9.0} events/s {:>6.1} MB/s | ratio {:.2} ({} syncs)",
            events as f64 / log_secs,
            bytes as f64 / log_secs / 1e6,
            events as f64 / raw_secs,
            bytes as f64 / raw_secs / 1e6,
            raw_secs / log_secs,
            syncs
        );
    }
    println!();
    println!("## (b) end to end: datagen -> staging log -> file sink (`weir run --once`)");
    let cfg = DatagenConfig::new(4, events, 100, 200, Mix::Insert, 1);
    let (secs, rss) = run_weir(&weir, &base.join("e2e"), &cfg)?;
    println!(
        "{events} events in {:.2} s: {:.0} events/s, peak RSS {} MiB",
        secs,
        events as f64 / secs,
        rss >> 20
    );
    let dd = dd_baseline(&base.join("e2e/out"))?;
    println!(
        "peer: plain `cat` of the produced files to one file: {:.0} MB/s ({} MB written by weir)",
        dd.1 / dd.0 / 1e6,
        (dd.1 / 1e6) as u64
    );
    let big = DatagenConfig::new(1, 5_000_000, 5_000_000, 16, Mix::Insert, 1);
    let (secs, rss) = run_weir(&weir, &base.join("big"), &big)?;
    println!(
        "one 5,000,000-row transaction: {:.2} s, {:.0} events/s, peak RSS {} MiB",
        secs,
        5e6 / secs,
        rss >> 20
    );
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

fn build_txns(events: u64) -> Vec<Vec<ChangeEvent>> {
    let cfg = DatagenConfig::new(4, events, 100, 150, Mix::Insert, 1);
    let mut generator = Generator::new(&cfg);
    (0..events.div_ceil(100))
        .map(|_| {
            (0..100.min(events - generator.emitted))
                .map(|_| generator.event(None))
                .collect()
        })
        .collect()
}

async fn log_append(dir: &Path, txns: Vec<Vec<ChangeEvent>>) -> Result<(f64, u64, u64)> {
    let log = StagingLog::open(dir, LogOptions::default())?;
    let cfg = DatagenConfig::new(4, 0, 100, 150, Mix::Insert, 1);
    let mut writer = log.writer(64)?;
    for s in Datagen::schemas(&cfg) {
        writer.send(WriteOp::Schema(s)).await?;
    }
    let total = txns.len() as u64;
    let mut heads = log.subscribe();
    let syncs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = {
        let syncs = Arc::clone(&syncs);
        tokio::spawn(async move {
            while heads.changed().await.is_ok() {
                syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if heads.borrow_and_update().txns >= total {
                    break;
                }
            }
        })
    };
    let start = Instant::now();
    let mut events = 0u64;
    for changes in txns {
        let n = changes.len() as u64;
        let commit = changes.last().map(|e| weir_api::CommitInfo {
            position: e.position.clone(),
            txid: e.txid,
            ts_ms: e.ts_ms,
            events: n,
        });
        events += n;
        writer.send(WriteOp::Changes(changes)).await?;
        if let Some(c) = commit {
            writer.send(WriteOp::Commit(c)).await?;
        }
    }
    counter.await?;
    let secs = start.elapsed().as_secs_f64();
    tokio::task::spawn_blocking(move || writer.finish()).await??;
    let _ = events;
    Ok((
        secs,
        log.head().bytes_total,
        syncs.load(std::sync::atomic::Ordering::Relaxed),
    ))
}

/// The same records, encoded the same way, written with plain WriteBatches and the same number
/// of synced writes.
fn raw_rocksdb(dir: &Path, txns: &[Vec<ChangeEvent>], syncs: u64) -> Result<f64> {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.set_write_buffer_size(8 << 20); // as the log's events family
    opts.set_max_write_buffer_number(3);
    let db = rocksdb::DB::open(&opts, dir)?;
    // Pre-encode so only the write is timed (the weir log's time includes its encoding).
    let mut values = Vec::with_capacity(txns.len());
    for t in txns {
        let v: Vec<Vec<u8>> = t
            .iter()
            .map(|e| {
                let mut out = vec![1u8];
                out.extend(
                    bincode::serde::encode_to_vec(e, bincode::config::standard())
                        .unwrap_or_default(),
                );
                out
            })
            .collect();
        values.push(v);
    }
    let per_sync = (txns.len() as u64).div_ceil(syncs.max(1));
    let start = Instant::now();
    let mut seq = 0u64;
    let mut batch = rocksdb::WriteBatch::default();
    for (i, t) in values.iter().enumerate() {
        for v in t {
            seq += 1;
            batch.put(seq.to_be_bytes(), v);
        }
        seq += 1;
        batch.put(seq.to_be_bytes(), b"commit");
        if (i as u64 + 1).is_multiple_of(per_sync) || i + 1 == values.len() {
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(true);
            db.write_opt(std::mem::take(&mut batch), &wo)?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

fn run_weir(weir: &Path, dir: &Path, cfg: &DatagenConfig) -> Result<(f64, u64)> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("pipeline.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"bench\"\ndata_dir = \"data\"\n[source]\ntype = \"datagen\"\ntable_count = {}\nevents = {}\ntxn_size = {}\nrow_bytes = {}\n[[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n",
            cfg.table_count.0, cfg.events, cfg.txn_size.0, cfg.row_bytes
        ),
    )?;
    let start = Instant::now();
    let mut child = std::process::Command::new(weir)
        .args(["run", "--once"])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .spawn()?;
    let pid = child.id();
    let mut peak = 0;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        peak = peak.max(vm_hwm(pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    };
    anyhow::ensure!(status.success(), "weir run failed: {status}");
    Ok((start.elapsed().as_secs_f64(), peak))
}

fn dd_baseline(dir: &Path) -> Result<(f64, f64)> {
    let mut bytes = 0u64;
    let start = Instant::now();
    let target = dir.with_extension("cat");
    let mut out = std::fs::File::create(&target)?;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            let mut f = std::fs::File::open(&p)?;
            bytes += std::io::copy(&mut f, &mut out)?;
        }
    }
    out.sync_all()?;
    Ok((start.elapsed().as_secs_f64(), bytes as f64))
}

fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}
