//! Kafka sink benchmarks against a plain producer, on the same broker in the same run
//! (`weir-bench kafka ...`, or `bench/run.sh kafka`). The broker is a tansu the bench starts
//! for the run on 127.0.0.1:19092 with a fresh SQLite store (on /dev/shm), or the one
//! `WEIR_BENCH_KAFKA` names (e.g. the shared tansu on 127.0.0.1:9092). tansu has no
//! transactions, so `delivery = "idempotent"`. Topics get unique names and are left on the
//! broker (tansu 0.6's DeleteTopics deletes every topic).
//!
//! (h1) throughput: `weir run --once` of a datagen → staging log → kafka sink pipeline (one
//!      table, inserts, transactions of 100, ~200-byte rows; the source stages concurrently,
//!      which is cheap next to the sink) against a plain rdkafka `BaseProducer` loop producing
//!      the same messages (rendered beforehand by weir's file sink from the same datagen
//!      source: the file sink writes the Kafka value's envelope; keys `{"id":N}`) to a fresh topic with weir's producer settings (idempotent, acks=all,
//!      linger.ms=10, lz4, ...), timed from the first send to the end of `flush`. Both topics
//!      must hold exactly the events (sum of high watermarks).
//! (h2) commit → Kafka latency at a fixed rate: a writer inserts rows carrying
//!      `clock_timestamp()` (µs) into a PostgreSQL table on 127.0.0.1:5432 at 5,000 rows/s (50
//!      rows per transaction every 10 ms; RATE changes it) while `weir run` streams it (pgoutput → log → kafka);
//!      a watcher thread polls the topic's high watermarks (messages the broker has
//!      acknowledged) every ~10 ms plus the request time (`WEIR_BENCH_WATCH_MS`; polling more
//!      often loads tansu, which serves every ListOffsets from SQLite, enough to slow the
//!      sink's own produce requests), and each transaction's latency is the
//!      first sample holding all its rows minus the time its INSERT was acknowledged.
//!      **Peer:** a plain producer (weir's settings) sending as many ~300-byte messages at the
//!      same pace, each message's time from `send` to its delivery report (the broker's own
//!      acknowledgement latency at that rate).

use crate::measure::{proc_cpu, vm_hwm};
use anyhow::{Context, Result, bail, ensure};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

/// The broker: `WEIR_BENCH_KAFKA` (host:port of a running one, e.g. the shared tansu on
/// 127.0.0.1:9092), else a tansu the bench starts for the run ([`OwnBroker`]): a fresh one,
/// which no test run loads at the same time.
static BROKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn brokers() -> &'static str {
    BROKER.get().map(String::as_str).unwrap_or("127.0.0.1:9092")
}

/// Where the bench's own tansu listens.
const OWN_BROKER: &str = "127.0.0.1:19092";

/// A tansu broker started for this run (`tansu` from ~/.cargo/bin or PATH, installed by
/// scripts/services.sh) with a fresh SQLite database in a scratch directory (on /dev/shm when
/// there is one), SIGKILLed and removed when dropped. `WEIR_BENCH_TANSU_STORAGE` overrides the
/// storage URL. Not `memory://`: tansu 0.6.0's in-memory store loses acknowledged messages
/// (a plain idempotent producer: 20,000 acknowledged, 17,496 in the partitions).
struct OwnBroker {
    child: std::process::Child,
    dir: PathBuf,
    storage: String,
}

impl OwnBroker {
    fn start() -> Result<OwnBroker> {
        let home = std::env::var("HOME").unwrap_or_default();
        let bin = [format!("{home}/.cargo/bin/tansu")]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| "tansu".into());
        let storage = std::env::var("WEIR_BENCH_TANSU_STORAGE")
            .unwrap_or_else(|_| "sqlite://tansu.db".into());
        ensure!(
            std::net::TcpStream::connect_timeout(&OWN_BROKER.parse()?, Duration::from_millis(300))
                .is_err(),
            "something already listens on {OWN_BROKER}; stop it or set WEIR_BENCH_KAFKA"
        );
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("weir-bench-tansu-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("tansu.log"))?;
        let url = format!("tcp://{OWN_BROKER}");
        // tansu reads the sqlite URL's path relative to its working directory.
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &storage])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("starting {bin} (install it with scripts/services.sh kafka)")
            })?;
        let me = OwnBroker {
            child,
            dir,
            storage,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect_timeout(&OWN_BROKER.parse()?, Duration::from_secs(1))
            .is_err()
        {
            ensure!(
                Instant::now() < deadline,
                "tansu did not come up on {OWN_BROKER}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(me)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const PG_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432";

/// Settings of `weir-bench kafka`.
pub struct KafkaBench {
    pub weir: PathBuf,
    pub events: u64,
    pub rounds: u32,
    pub latency_secs: u64,
    /// Rows per second written in (h2); a multiple of 100.
    pub rate: u64,
}

/// weir's kafka sink producer defaults (connectors/kafka/src/sink.rs), for the plain producer.
const PRODUCER: [(&str, &str); 8] = [
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "10"),
    ("batch.size", "1000000"),
    ("batch.num.messages", "10000"),
    ("compression.type", "lz4"),
    ("queue.buffering.max.kbytes", "65536"),
    ("partitioner", "murmur2_random"),
];

struct Counter {
    ok: AtomicU64,
    failed: AtomicU64,
}
impl ClientContext for Counter {}
impl ProducerContext for Counter {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

struct Msg {
    key: Vec<u8>,
    payload: Vec<u8>,
}

fn consumer(extra: &[(&str, &str)]) -> Result<BaseConsumer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers())
        .set(
            "group.id",
            format!("weir-bench-reader-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    Ok(c.create()?)
}

/// Partitions of `topic`, waiting up to `wait` for it to exist.
fn partitions(c: &BaseConsumer, topic: &str, wait: Duration) -> Result<usize> {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(md) = c.fetch_metadata(Some(topic), Duration::from_secs(5))
            && let Some(t) = md.topics().first()
            && t.error().is_none()
            && !t.partitions().is_empty()
        {
            return Ok(t.partitions().len());
        }
        ensure!(Instant::now() < deadline, "topic {topic} does not appear");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Messages in `topic` (sum of the partitions' high watermarks: fresh topics start at 0).
fn count_topic(c: &BaseConsumer, topic: &str) -> Result<i64> {
    let parts = partitions(c, topic, Duration::from_secs(30))?;
    let mut n = 0;
    for p in 0..parts {
        let (lo, hi) = c.fetch_watermarks(topic, p as i32, Duration::from_secs(10))?;
        n += hi - lo;
    }
    Ok(n)
}

/// The messages weir renders for the datagen backlog, from a file-sink run of the same
/// source (the file sink writes the same envelope as the Kafka value); keys as weir's
/// (`{"id":N}`).
fn render(weir: &Path, dir: &Path, events: u64) -> Result<Vec<Msg>> {
    let file = write_pipeline(
        dir,
        &format!(
            "name = \"render\"\ndata_dir = \"data\"\n[source]\ntype = \"datagen\"\ntable_count = 1\n\
             events = {events}\ntxn_size = 100\nrow_bytes = 200\n[[sinks]]\nname = \"files\"\n\
             type = \"file\"\npath = \"out\"\n"
        ),
    )?;
    let status = Command::new(weir)
        .args(["run", "--once"])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()?;
    ensure!(
        status.success(),
        "weir run --once (file sink) failed: {status}"
    );
    let text = std::fs::read_to_string(dir.join("out/datagen.t0.jsonl"))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let id = v["after"]["id"].as_i64().context("no after.id")?;
        out.push(Msg {
            key: format!("{{\"id\":{id}}}").into_bytes(),
            payload: line.as_bytes().to_vec(),
        });
    }
    std::fs::remove_dir_all(dir)?;
    Ok(out)
}

fn write_pipeline(dir: &Path, toml: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, toml)?;
    Ok(file)
}

fn sink_toml(name: &str) -> String {
    format!(
        "[[sinks]]\nname = \"events\"\ntype = \"kafka\"\nbrokers = \"{}\"\n\
         topic = \"{{pipeline}}.{{schema}}.{{table}}\"\ndelivery = \"idempotent\"\n\
         offsets_topic = \"{name}_offsets\"\n",
        brokers()
    )
}

/// `weir run --once` datagen → kafka: (seconds, client CPU seconds, peak RSS, topic).
fn weir_once(weir: &Path, dir: &Path, name: &str, events: u64) -> Result<(f64, f64, u64, String)> {
    let file = write_pipeline(
        dir,
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n[source]\ntype = \"datagen\"\ntable_count = 1\n\
             events = {events}\ntxn_size = 100\nrow_bytes = 200\n{}",
            sink_toml(name)
        ),
    )?;
    let before = proc_cpu("self", true).unwrap_or(0.0) - proc_cpu("self", false).unwrap_or(0.0);
    let start = Instant::now();
    let mut child = Command::new(weir)
        .args(["run", "--once"])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting weir")?;
    let pid = child.id();
    let mut rss = 0;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        rss = rss.max(vm_hwm(pid));
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs = start.elapsed().as_secs_f64();
    ensure!(status.success(), "weir run --once failed: {status}");
    let after = proc_cpu("self", true).unwrap_or(0.0) - proc_cpu("self", false).unwrap_or(0.0);
    std::fs::remove_dir_all(dir)?;
    Ok((secs, after - before, rss, format!("{name}.datagen.t0")))
}

async fn create_topic(topic: &str, parts: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()?;
    let opts = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(60)))
        .operation_timeout(Some(Duration::from_secs(60)));
    // The shared broker is sometimes slow to answer: a few tries.
    let mut tries = 0;
    loop {
        tries += 1;
        let r = admin
            .create_topics(
                &[NewTopic::new(topic, parts, TopicReplication::Fixed(1))],
                &opts,
            )
            .await;
        match r {
            Ok(r) => {
                for x in r {
                    if let Err((t, e)) = x {
                        ensure!(
                            e == RDKafkaErrorCode::TopicAlreadyExists,
                            "creating {t}: {e}"
                        );
                    }
                }
                return Ok(());
            }
            Err(e) if tries < 4 => eprintln!("creating {topic}: {e}; retrying"),
            Err(e) => bail!("creating {topic}: {e}"),
        }
    }
}

/// The plain producer: the same messages and keys, weir's settings. (seconds, CPU s).
fn plain(topic: &str, msgs: &[Msg]) -> Result<(f64, f64)> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers())
        .set("client.id", "weir-bench-plain");
    for (k, v) in PRODUCER {
        cfg.set(k, v);
    }
    let p: BaseProducer<Counter> = cfg.create_with_context(Counter {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    })?;
    let cpu0 = proc_cpu("self", false).unwrap_or(0.0);
    let start = Instant::now();
    for m in msgs {
        let mut rec = BaseRecord::<[u8], [u8]>::to(topic)
            .key(m.key.as_slice())
            .payload(m.payload.as_slice());
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    p.poll(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("producing to {topic}: {e}"),
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(300))?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = proc_cpu("self", false).unwrap_or(0.0) - cpu0;
    let ctx = p.context();
    let (ok, failed) = (
        ctx.ok.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
    );
    ensure!(
        failed == 0 && ok == msgs.len() as u64,
        "plain producer: {ok} delivered, {failed} failed of {}",
        msgs.len()
    );
    Ok((secs, cpu))
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

async fn latency(cfg: &KafkaBench, base: &Path) -> Result<()> {
    let tag = std::process::id();
    let name = format!("wkl{tag}");
    let db = format!("weir_kbench_{tag}");
    let table = "lat";
    let (admin, conn) = tokio_postgres::connect(&format!("{PG_URL}/postgres"), NoTls)
        .await
        .context("the shared PostgreSQL on 127.0.0.1:5432 (scripts/services.sh postgres)")?;
    tokio::spawn(conn);
    // Leftovers of interrupted runs.
    admin
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name LIKE 'weir_kbench_%' AND NOT active",
            &[],
        )
        .await?;
    for r in admin
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'weir_kbench_%' \
             AND datname NOT IN (SELECT datname FROM pg_stat_activity WHERE datname IS NOT NULL)",
            &[],
        )
        .await?
    {
        let d: String = r.get(0);
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{d}\""))
            .await?;
    }
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await?;
    let slot = format!("weir_kbench_{tag}");
    let result = latency_run(cfg, base, &name, &db, table, &slot).await;
    let _ = admin
        .execute(
            "SELECT pg_drop_replication_slot($1) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .await?;
    result
}

async fn latency_run(
    cfg: &KafkaBench,
    base: &Path,
    name: &str,
    db: &str,
    table: &str,
    slot: &str,
) -> Result<()> {
    let (c, conn) = tokio_postgres::connect(&format!("{PG_URL}/{db}"), NoTls).await?;
    tokio::spawn(conn);
    c.batch_execute(&format!(
        "CREATE TABLE {table} (id bigserial PRIMARY KEY, ts bigint NOT NULL, warm boolean NOT NULL, \
           pad text NOT NULL); \
         CREATE PUBLICATION {slot} FOR TABLE {table};"
    ))
    .await?;
    c.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&slot],
    )
    .await?;
    let dir = base.join("latency");
    let file = write_pipeline(
        &dir,
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n[source]\ntype = \"postgres\"\n\
             url = \"{PG_URL}/{db}\"\ntables = [\"public.{table}\"]\nslot = \"{slot}\"\n\
             publication = \"{slot}\"\nsnapshot = \"never\"\n{}",
            sink_toml(name)
        ),
    )?;
    let mut child = Command::new(&cfg.weir)
        .arg("run")
        .arg(&file)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting weir")?;
    let pid = child.id();
    let out = latency_measure(cfg, &c, name, table).await;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    out
}

async fn latency_measure(
    cfg: &KafkaBench,
    c: &tokio_postgres::Client,
    name: &str,
    table: &str,
) -> Result<()> {
    let insert = format!(
        "INSERT INTO {table} (ts, warm, pad) SELECT \
         (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, $1, repeat('x', 100) \
         FROM generate_series(1, $2::int)"
    );
    // Warm up: one row, until weir made the topic and it holds the row.
    c.execute(&insert, &[&true, &1i32]).await?;
    let topic = format!("{name}.public.{table}");
    let per_txn = (cfg.rate / 100).max(1);
    let rows = cfg.latency_secs * per_txn * 100;
    let watcher = consumer(&[])?;
    let parts = {
        let t = topic.clone();
        tokio::task::spawn_blocking(move || -> Result<(BaseConsumer, usize)> {
            let parts = partitions(&watcher, &t, Duration::from_secs(90))?;
            Ok((watcher, parts))
        })
        .await??
    };
    let (watcher, parts) = parts;
    let count = move |w: &BaseConsumer| -> Result<i64> {
        let mut n = 0;
        for p in 0..parts {
            n += w
                .fetch_watermarks(&topic, p as i32, Duration::from_secs(5))?
                .1;
        }
        Ok(n)
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while count(&watcher)? < 1 {
        ensure!(
            Instant::now() < deadline,
            "the warm-up row never reached Kafka"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The watcher: (time since start, messages in the topic), every WEIR_BENCH_WATCH_MS.
    let watch = Duration::from_millis(
        std::env::var("WEIR_BENCH_WATCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10),
    );
    let done = Arc::new(AtomicBool::new(false));
    let latest = Arc::new(AtomicI64::new(0));
    let start = Instant::now();
    let seen = {
        let (done, latest) = (done.clone(), latest.clone());
        std::thread::spawn(move || -> Result<Vec<(f64, i64)>> {
            let mut v = Vec::new();
            while !done.load(Ordering::Relaxed) {
                // A slow broker may time a request out: skip that sample.
                let Ok(n) = count(&watcher) else { continue };
                latest.store(n, Ordering::Relaxed);
                v.push((start.elapsed().as_secs_f64(), n));
                std::thread::sleep(watch);
            }
            Ok(v)
        })
    };
    println!(
        "writing {rows} rows at {} rows/s ({per_txn} per transaction every 10 ms) for {} s",
        per_txn * 100,
        cfg.latency_secs
    );
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    // (commit acknowledged, rows in the topic once this transaction is there)
    let mut commits: Vec<(f64, i64)> = Vec::new();
    for i in 0..rows / per_txn {
        tick.tick().await;
        c.execute(&insert, &[&false, &(per_txn as i32)]).await?;
        commits.push((
            start.elapsed().as_secs_f64(),
            1 + (per_txn * (i + 1)) as i64,
        ));
    }
    let wrote = start.elapsed().as_secs_f64();
    let want = 1 + rows as i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if Instant::now() > deadline || seen.is_finished() {
            break;
        }
        if latest.load(Ordering::Relaxed) >= want {
            tokio::time::sleep(Duration::from_millis(50)).await;
            break;
        }
    }
    done.store(true, Ordering::Relaxed);
    let seen = seen
        .join()
        .map_err(|_| anyhow::anyhow!("watcher panicked"))??;
    let last = seen.last().map_or(0, |x| x.1);
    ensure!(
        last == want,
        "the topic holds {last} messages, expected {want}"
    );
    // Each transaction's latency: the first sample with all its rows in the topic, minus
    // its commit (the INSERT's acknowledgement). The topic fills in source order (one
    // idempotent producer), so "count >= rows up to here" means this transaction is in.
    let mut lat = Vec::with_capacity(commits.len());
    let mut j = 0;
    for (t, need) in &commits {
        while j < seen.len() && seen[j].1 < *need {
            j += 1;
        }
        ensure!(
            j < seen.len(),
            "transaction ending at row {need} never seen"
        );
        lat.push(((seen[j].0 - t) * 1000.0).max(0.0));
    }
    lat.sort_by(f64::total_cmp);
    let gaps: Vec<f64> = seen.windows(2).map(|w| w[1].0 - w[0].0).collect();
    println!(
        "  writer: {rows} rows in {wrote:.1} s ({:.0} rows/s); topic watched every {:.1} ms (median)",
        rows as f64 / wrote,
        crate::measure::median(&mut gaps.clone()) * 1000.0
    );
    println!(
        "  commit -> in Kafka (high watermark), ms, over {} transactions: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}   [aim p99 < 100]",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    Ok(())
}

/// Records each message's send → acknowledgement time.
struct Timer {
    lat: std::sync::Mutex<Vec<f64>>,
    failed: AtomicU64,
}
impl ClientContext for Timer {}
impl ProducerContext for Timer {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, r: &DeliveryResult<'_>, sent: Box<Instant>) {
        match r {
            Ok(_) => self
                .lat
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(sent.elapsed().as_secs_f64() * 1000.0),
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The latency peer: a plain producer (weir's settings) sending the same number of ~300-byte
/// messages at the same pace; each message's time from `send` to its delivery report.
async fn plain_latency(cfg: &KafkaBench, topic: &str) -> Result<()> {
    create_topic(topic, 3).await?;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers())
        .set("client.id", "weir-bench-plain-latency");
    for (k, v) in PRODUCER {
        c.set(k, v);
    }
    let p: BaseProducer<Timer> = c.create_with_context(Timer {
        lat: std::sync::Mutex::new(Vec::new()),
        failed: AtomicU64::new(0),
    })?;
    let per_txn = (cfg.rate / 100).max(1);
    let n = cfg.latency_secs * per_txn * 100;
    let payload = vec![b'x'; 300];
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..n / per_txn {
        tick.tick().await;
        for j in 0..per_txn {
            let key = (i * per_txn + j).to_string();
            let rec = BaseRecord::with_opaque_to(topic, Box::new(Instant::now()))
                .key(key.as_bytes())
                .payload(payload.as_slice());
            if let Err((e, _)) = p.send(rec) {
                bail!("producing to {topic}: {e}");
            }
        }
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(120))?;
    let ctx = p.context();
    let mut lat = std::mem::take(&mut *ctx.lat.lock().unwrap_or_else(|e| e.into_inner()));
    ensure!(
        lat.len() as u64 == n && ctx.failed.load(Ordering::Relaxed) == 0,
        "plain producer: {} of {n} acknowledged",
        lat.len()
    );
    lat.sort_by(f64::total_cmp);
    println!(
        "  peer: plain producer at the same pace, send -> ack, ms, over {n} messages: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        pct(&lat, 0.5),
        pct(&lat, 0.9),
        pct(&lat, 0.99),
        pct(&lat, 1.0)
    );
    Ok(())
}

pub async fn run(cfg: KafkaBench) -> Result<()> {
    let tag = std::process::id();
    let _own = match std::env::var("WEIR_BENCH_KAFKA") {
        Ok(addr) => {
            let _ = BROKER.set(addr);
            None
        }
        Err(_) => {
            let own = OwnBroker::start()?;
            let _ = BROKER.set(OWN_BROKER.to_owned());
            println!(
                "broker: a tansu started for this run on {OWN_BROKER}, storage {} in {}",
                own.storage,
                own.dir.display()
            );
            Some(own)
        }
    };
    std::net::TcpStream::connect_timeout(&brokers().parse()?, Duration::from_secs(3))
        .with_context(|| {
            format!(
                "no Kafka broker at {} (scripts/services.sh kafka)",
                brokers()
            )
        })?;
    let base = std::env::temp_dir().join(format!("weir-bench-kafka-{tag}"));
    std::fs::create_dir_all(&base)?;
    let result = async {
        throughput(&cfg, &base).await?;
        if cfg.latency_secs > 0 {
            println!();
            println!(
                "## (h2) commit -> Kafka latency, PostgreSQL source at {} rows/s",
                cfg.rate
            );
            latency(&cfg, &base).await?;
            plain_latency(&cfg, &format!("wkl{tag}_plain")).await?;
        }
        Ok(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&base);
    result
}

async fn throughput(cfg: &KafkaBench, base: &Path) -> Result<()> {
    let tag = std::process::id();
    let n = cfg.events;
    println!(
        "## (h1) {n} events: weir run --once (datagen -> log -> kafka, idempotent) vs a plain rdkafka producer of the same messages, broker {}",
        brokers()
    );
    let msgs = {
        let (weir, dir) = (cfg.weir.clone(), base.join("render"));
        tokio::task::spawn_blocking(move || render(&weir, &dir, n)).await??
    };
    ensure!(msgs.len() as u64 == n, "rendered {} messages", msgs.len());
    println!(
        "messages: {n}, {} value bytes (rendered by weir's file sink from the same datagen source)",
        msgs.iter().map(|m| m.payload.len()).sum::<usize>()
    );
    let counter = consumer(&[])?;
    let mut ratios = Vec::new();
    for r in 1..=cfg.rounds {
        println!("round {r}:");
        let name = format!("wkb{tag}r{r}");
        let plain_topic = format!("wkb{tag}r{r}_plain");
        let run_weir = || {
            let (weir, dir, name) = (cfg.weir.clone(), base.join(format!("r{r}")), name.clone());
            tokio::task::spawn_blocking(move || weir_once(&weir, &dir, &name, n))
        };
        create_topic(&plain_topic, 3).await?;
        let (w, p) = if r % 2 == 1 {
            let w = run_weir().await??;
            (w, plain(&plain_topic, &msgs)?)
        } else {
            let p = plain(&plain_topic, &msgs)?;
            (run_weir().await??, p)
        };
        let got = count_topic(&counter, &w.3)?;
        ensure!(
            got as u64 == n,
            "weir's topic {} holds {got} messages, expected {n}",
            w.3
        );
        let got = count_topic(&counter, &plain_topic)?;
        ensure!(
            got as u64 == n,
            "the plain topic holds {got} messages, expected {n}"
        );
        let (wsecs, wcpu, rss, _) = w;
        let (psecs, pcpu) = p;
        println!(
            "  weir run --once   {wsecs:>6.2} s {:>9.0} events/s | {wcpu:.2} s CPU ({:.0} events/CPU-s) | peak RSS {} MiB",
            n as f64 / wsecs,
            n as f64 / wcpu.max(0.01),
            rss >> 20
        );
        println!(
            "  plain producer    {psecs:>6.2} s {:>9.0} events/s | {pcpu:.2} s CPU ({:.0} events/CPU-s)",
            n as f64 / psecs,
            n as f64 / pcpu.max(0.01)
        );
        println!("  ratio weir / plain (events/s): {:.2}", psecs / wsecs);
        ratios.push(psecs / wsecs);
    }
    crate::pg::summary(
        "(h1) weir / plain producer, events/s [aim >= 0.7]",
        &mut ratios,
    );
    Ok(())
}
