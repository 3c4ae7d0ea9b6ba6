//! PostgreSQL source benchmarks against the server's own tools, on the same data in the same
//! run (`weir-bench pg ...`, or `bench/run.sh pg`).
//!
//! (c) decode: a fixed WAL backlog (inserts and updates in 1,000-row transactions) read from
//!     copies of one logical slot made before the backlog was written: `pg_recvlogical` with
//!     `test_decoding` to `/dev/null` (the peer: the server's decode ceiling) against
//!     `weir run --once` (pgoutput → staging log → file sink, what users run) and against
//!     weir's `PostgresSource` driven in this process (decode only, no log, no sink).
//! (d) snapshot: `COPY table TO STDOUT` by `psql` to `/dev/null` (the peer) against
//!     `weir run --once` with `snapshot = "only"` to the file sink.
//!
//! Rounds alternate which contender goes first. CPU is the contender's own (client) and the
//! server backends' serving it (sampled from `/proc` every 20 ms while they live, so a few
//! milliseconds at the end of each backend are missed).

use crate::measure::{count_lines, median, proc_cpu, vm_hwm};
use anyhow::{Context, Result, bail, ensure};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};
use weir_api::{Source, SourceItem, SourcePosition};
use weir_postgres::source::{PostgresSource, PostgresSourceConfig};

const HOST: &str = "127.0.0.1";
const PORT: &str = "5432";
const USER: &str = "postgres";
const PASSWORD: &str = "postgres";
const TXN_ROWS: u64 = 1000;

/// Settings of `weir-bench pg`.
pub struct PgBench {
    pub weir: PathBuf,
    pub stream_events: u64,
    pub snapshot_rows: u64,
    pub rounds: u32,
}

/// What one contender's run cost.
#[derive(Clone, Copy, Default)]
pub(crate) struct Cost {
    pub(crate) secs: f64,
    /// CPU seconds of the client process (pg_recvlogical, psql, weir, or this process).
    pub(crate) client_cpu: f64,
    /// CPU seconds of the server backends (walsender, COPY backends) serving it.
    pub(crate) server_cpu: f64,
    /// Peak RSS of the client, bytes (0 when not measured).
    pub(crate) rss: u64,
}

impl Cost {
    pub(crate) fn rate(&self, n: u64) -> f64 {
        n as f64 / self.secs
    }
    pub(crate) fn per_cpu(&self, n: u64) -> f64 {
        n as f64 / self.client_cpu.max(0.01)
    }
    pub(crate) fn per_total_cpu(&self, n: u64) -> f64 {
        n as f64 / (self.client_cpu + self.server_cpu).max(0.01)
    }
}

/// Samples the CPU of every backend of the bench database except the monitor's own.
pub(crate) struct ServerCpu {
    last: HashMap<i32, f64>,
}

impl ServerCpu {
    pub(crate) fn new() -> Self {
        ServerCpu {
            last: HashMap::new(),
        }
    }
    pub(crate) async fn sample(&mut self, mon: &Client, db: &str) -> Result<()> {
        let rows = mon
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db],
            )
            .await?;
        for r in rows {
            let pid: i32 = r.get(0);
            if let Some(c) = proc_cpu(&pid.to_string(), false) {
                self.last.insert(pid, c);
            }
        }
        Ok(())
    }
    pub(crate) fn total(&self) -> f64 {
        self.last.values().sum()
    }
}

async fn connect(db: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host={HOST} port={PORT} user={USER} password={PASSWORD} dbname={db}"),
        NoTls,
    )
    .await
    .with_context(|| format!("connecting to PostgreSQL at {HOST}:{PORT} (scripts/services.sh)"))?;
    tokio::spawn(conn);
    Ok(client)
}

/// Runs a child to completion while sampling its peak RSS and the bench database's backends.
async fn run_child(mut cmd: Command, mon: &Client, db: &str) -> Result<Cost> {
    let before = proc_cpu("self", true).unwrap_or(0.0) - proc_cpu("self", false).unwrap_or(0.0);
    let mut server = ServerCpu::new();
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting the contender")?;
    let pid = child.id();
    let mut rss = 0;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        rss = rss.max(vm_hwm(pid));
        server.sample(mon, db).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let secs = start.elapsed().as_secs_f64();
    ensure!(status.success(), "{cmd:?} failed: {status}");
    let after = proc_cpu("self", true).unwrap_or(0.0) - proc_cpu("self", false).unwrap_or(0.0);
    Ok(Cost {
        secs,
        client_cpu: after - before,
        server_cpu: server.total(),
        rss,
    })
}

pub(crate) fn pg_bin(name: &str) -> PathBuf {
    let p = Path::new("/usr/lib/postgresql/15/bin").join(name);
    if p.exists() { p } else { PathBuf::from(name) }
}

pub(crate) fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

const COLUMNS: &str = "id bigint PRIMARY KEY, aid integer NOT NULL, bid integer NOT NULL, \
     abalance integer NOT NULL, amount numeric(12,2) NOT NULL, created timestamptz NOT NULL, \
     active boolean NOT NULL, filler text NOT NULL";

fn insert_sql(table: &str) -> String {
    format!(
        "INSERT INTO {table} SELECT g, g % 100000, g % 10, (g * 7) % 10000 - 5000, \
         (g % 100000) / 100.0, timestamptz '2026-01-01 00:00:00+00' + g * interval '1.000001 s', \
         g % 2 = 0, md5(g::text) || md5((g + 1)::text) FROM generate_series($1::bigint, $2::bigint) g"
    )
}

struct Setup {
    db: String,
    tag: String,
    /// The template slot (pgoutput), made before the backlog; rounds read copies of it.
    template: String,
    publication: String,
    /// The server's flush LSN right after the backlog.
    end_lsn: String,
    end: u64,
}

pub(crate) fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

async fn cleanup(admin: &Client, db: &str) -> Result<()> {
    // Slots of the bench database (and leftovers of earlier, interrupted runs).
    admin
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE (database = $1 OR (database LIKE 'weir_bench_%' AND NOT active))",
            &[&db],
        )
        .await?;
    let stale = admin
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'weir_bench_%' \
             AND datname NOT IN (SELECT datname FROM pg_stat_activity WHERE datname IS NOT NULL)",
            &[],
        )
        .await?;
    for r in stale {
        let name: String = r.get(0);
        if name == db || name.starts_with("weir_bench_") {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                .await?;
        }
    }
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .await?;
    Ok(())
}

async fn setup(admin: &Client, cfg: &PgBench) -> Result<Setup> {
    let tag = format!("{}", std::process::id());
    let db = format!("weir_bench_{tag}");
    cleanup(admin, &db).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{db}\""))
        .await?;
    let c = connect(&db).await?;
    c.batch_execute(&format!(
        "CREATE TABLE bench_stream ({COLUMNS}); CREATE TABLE bench_snap ({COLUMNS});"
    ))
    .await?;
    let t = Instant::now();
    let ins = insert_sql("bench_snap");
    let mut lo = 1i64;
    let n = cfg.snapshot_rows as i64;
    while lo <= n {
        let hi = (lo + 499_999).min(n);
        c.execute(&ins, &[&lo, &hi]).await?;
        lo = hi + 1;
    }
    c.batch_execute("VACUUM (FREEZE, ANALYZE) bench_snap")
        .await?;
    println!(
        "snapshot table: {} rows in {:.1} s",
        cfg.snapshot_rows,
        t.elapsed().as_secs_f64()
    );
    let publication = format!("weir_bench_pub_{tag}");
    c.batch_execute(&format!(
        "CREATE PUBLICATION {publication} FOR TABLE bench_stream"
    ))
    .await?;
    let template = format!("weir_bench_t_{tag}");
    c.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&template],
    )
    .await?;
    // The backlog: 4 of 5 transactions insert 1,000 new rows, every 5th updates 1,000 rows.
    let t = Instant::now();
    let txns = cfg.stream_events.div_ceil(TXN_ROWS);
    let upd = "UPDATE bench_stream SET abalance = abalance + 1, amount = amount + 0.01, \
               created = created + interval '1 s' WHERE id BETWEEN $1 AND $2";
    let (ins, upd) = (
        c.prepare(&insert_sql("bench_stream")).await?,
        c.prepare(upd).await?,
    );
    let mut inserted = 0i64;
    for i in 0..txns {
        if i % 5 == 4 && inserted >= TXN_ROWS as i64 {
            let lo = ((i as i64 * 7919) % (inserted / TXN_ROWS as i64)) * TXN_ROWS as i64 + 1;
            let n = c.execute(&upd, &[&lo, &(lo + TXN_ROWS as i64 - 1)]).await?;
            ensure!(n == TXN_ROWS, "update touched {n} rows");
        } else {
            c.execute(&ins, &[&(inserted + 1), &(inserted + TXN_ROWS as i64)])
                .await?;
            inserted += TXN_ROWS as i64;
        }
    }
    let row = c
        .query_one(
            "SELECT pg_current_wal_flush_lsn()::text, \
             pg_size_pretty(pg_current_wal_flush_lsn() - confirmed_flush_lsn) \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&template],
        )
        .await?;
    let end_lsn: String = row.get(0);
    let wal: String = row.get(1);
    println!(
        "stream backlog: {} events in {txns} transactions ({wal} of WAL) in {:.1} s, ends at {end_lsn}",
        txns * TXN_ROWS,
        t.elapsed().as_secs_f64()
    );
    let end = parse_lsn(&end_lsn).context("bad LSN")?;
    Ok(Setup {
        db,
        tag,
        template,
        publication,
        end_lsn,
        end,
    })
}

pub(crate) async fn copy_slot(c: &Client, from: &str, to: &str, plugin: &str) -> Result<()> {
    c.execute(
        "SELECT pg_copy_logical_replication_slot($1, $2, false, $3)",
        &[&from, &to, &plugin],
    )
    .await?;
    Ok(())
}

pub(crate) async fn drop_slot(c: &Client, slot: &str) -> Result<()> {
    // The walsender may take a moment to let go of the slot.
    for _ in 0..100 {
        let r = c
            .query(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?;
        match r.first() {
            None => return Ok(()),
            Some(row) if !row.get::<_, bool>(0) => {
                c.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                    .await?;
                return Ok(());
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    bail!("slot {slot} stays active")
}

fn pg_env(cmd: &mut Command) {
    cmd.env("PGPASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .stdin(Stdio::null());
}

fn url(db: &str) -> String {
    format!("postgres://{USER}:{PASSWORD}@{HOST}:{PORT}/{db}")
}

fn weir_cmd(weir: &Path, dir: &Path, toml: &str) -> Result<Command> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, toml)?;
    let mut cmd = Command::new(weir);
    cmd.args(["run", "--once"])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    Ok(cmd)
}

async fn recvlogical(s: &Setup, c: &Client, slot: &str) -> Result<Cost> {
    copy_slot(c, &s.template, slot, "test_decoding").await?;
    let mut cmd = Command::new(pg_bin("pg_recvlogical"));
    cmd.args(["-h", HOST, "-p", PORT, "-U", USER, "-d", &s.db, "-S", slot])
        .args([
            "--start",
            "--no-loop",
            "-f",
            "/dev/null",
            "--endpos",
            &s.end_lsn,
        ]);
    pg_env(&mut cmd);
    let cost = run_child(cmd, c, &s.db).await;
    drop_slot(c, slot).await?;
    cost
}

async fn weir_stream(
    s: &Setup,
    c: &Client,
    weir: &Path,
    dir: &Path,
    slot: &str,
) -> Result<(Cost, u64)> {
    copy_slot(c, &s.template, slot, "pgoutput").await?;
    let toml = format!(
        "name = \"bench\"\ndata_dir = \"data\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\
         tables = [\"public.bench_stream\"]\nslot = \"{slot}\"\npublication = \"{}\"\n\
         snapshot = \"never\"\n[[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n",
        url(&s.db),
        s.publication
    );
    let cost = run_child(weir_cmd(weir, dir, &toml)?, c, &s.db).await;
    drop_slot(c, slot).await?;
    let cost = cost?;
    let lines = count_lines(&dir.join("out"))?;
    std::fs::remove_dir_all(dir)?;
    Ok((cost, lines))
}

/// weir's `PostgresSource` in this process, counting events up to the backlog's end.
async fn weir_decode(s: &Setup, c: &Client, slot: &str) -> Result<(Cost, u64)> {
    copy_slot(c, &s.template, slot, "pgoutput").await?;
    let mut source = PostgresSource::new(
        PostgresSourceConfig {
            url: url(&s.db),
            tables: vec!["public.bench_stream".into()],
            exclude: vec![],
            slot: slot.into(),
            publication: s.publication.clone(),
        },
        "bench",
    );
    let last = s.end.saturating_sub(1);
    let reached = |p: &SourcePosition| match p {
        SourcePosition::Postgres(p) => p.commit_lsn.0 >= last,
        _ => false,
    };
    let cpu0 = proc_cpu("self", false).unwrap_or(0.0);
    let mut server = ServerCpu::new();
    let start = Instant::now();
    source.start(None).await?;
    let mut events = 0u64;
    let mut sampled = Instant::now();
    loop {
        let done = match source.next().await? {
            SourceItem::Changes(v) => {
                events += v.len() as u64;
                false
            }
            SourceItem::Transaction(t) => {
                events += t.changes.len() as u64;
                reached(&t.commit.position)
            }
            SourceItem::Commit(ci) => reached(&ci.position),
            SourceItem::Heartbeat(p) => reached(&p),
            SourceItem::Schema(_) => false,
        };
        if sampled.elapsed() > Duration::from_millis(20) {
            server.sample(c, &s.db).await?;
            sampled = Instant::now();
        }
        if done {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    server.sample(c, &s.db).await?;
    drop(source);
    let cpu = proc_cpu("self", false).unwrap_or(0.0) - cpu0;
    drop_slot(c, slot).await?;
    Ok((
        Cost {
            secs,
            client_cpu: cpu,
            server_cpu: server.total(),
            rss: 0,
        },
        events,
    ))
}

async fn copy_out(s: &Setup, c: &Client) -> Result<Cost> {
    let mut cmd = Command::new(pg_bin("psql"));
    cmd.args(["-h", HOST, "-p", PORT, "-U", USER, "-d", &s.db, "-X", "-q"])
        .args(["-c", "COPY bench_snap TO STDOUT"]);
    pg_env(&mut cmd);
    run_child(cmd, c, &s.db).await
}

async fn weir_snapshot(
    s: &Setup,
    c: &Client,
    weir: &Path,
    dir: &Path,
    round: u32,
) -> Result<(Cost, u64)> {
    let slot = format!("weir_bench_s_{}_{round}", s.tag);
    let toml = format!(
        "name = \"bench\"\ndata_dir = \"data\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\
         tables = [\"public.bench_snap\"]\nslot = \"{slot}\"\npublication = \"weir_bench_snap_{}\"\n\
         snapshot = \"only\"\n[[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n",
        url(&s.db),
        s.tag
    );
    let cost = run_child(weir_cmd(weir, dir, &toml)?, c, &s.db).await;
    drop_slot(c, &slot).await?;
    let cost = cost?;
    let lines = count_lines(&dir.join("out"))?;
    std::fs::remove_dir_all(dir)?;
    Ok((cost, lines))
}

fn line(what: &str, c: &Cost, n: u64) -> String {
    let mut s = format!(
        "  {what:<28} {:>6.2} s {:>9.0} rows/s | {:>9.0} rows/CPU-s client ({:.2} s) | {:>8.0} rows/CPU-s client+server ({:.2} s server)",
        c.secs,
        c.rate(n),
        c.per_cpu(n),
        c.client_cpu,
        c.per_total_cpu(n),
        c.server_cpu
    );
    if c.rss > 0 {
        s.push_str(&format!(" | peak RSS {} MiB", c.rss >> 20));
    }
    s
}

pub(crate) fn summary(name: &str, v: &mut [f64]) {
    let lo = min(v);
    println!(
        "  {name:<44} min {lo:.2}  median {:.2}  ({} rounds: {})",
        median(v),
        v.len(),
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

pub async fn run(cfg: PgBench) -> Result<()> {
    let admin = connect("postgres").await?;
    let base = std::env::temp_dir().join(format!("weir-bench-pg-{}", std::process::id()));
    let s = setup(&admin, &cfg).await?;
    let result = rounds(&cfg, &s, &base).await;
    let _ = std::fs::remove_dir_all(&base);
    cleanup(&admin, &s.db).await?;
    result
}

async fn rounds(cfg: &PgBench, s: &Setup, base: &Path) -> Result<()> {
    let c = connect(&s.db).await?;
    let n = cfg.stream_events;
    // Warm the caches (WAL and table pages) once for everyone.
    recvlogical(s, &c, &format!("weir_bench_w_{}", s.tag)).await?;
    copy_out(s, &c).await?;

    println!();
    println!(
        "## (c) decode {n} events from a fixed WAL backlog: pg_recvlogical (test_decoding) vs weir"
    );
    let (mut run_ratio, mut dec_ratio, mut run_cpu, mut dec_cpu) = (vec![], vec![], vec![], vec![]);
    for r in 1..=cfg.rounds {
        println!("round {r}:");
        let mut peer = None;
        let mut weir_run = None;
        let mut decode = None;
        // Rotate the order: peer first, weir first, decode first, ...
        for k in 0..3 {
            match (k + r as usize) % 3 {
                0 => {
                    let slot = format!("weir_bench_r_{}_{r}", s.tag);
                    peer = Some(recvlogical(s, &c, &slot).await?);
                }
                1 => {
                    let slot = format!("weir_bench_w_{}_{r}", s.tag);
                    let (cost, lines) =
                        weir_stream(s, &c, &cfg.weir, &base.join(format!("stream{r}")), &slot)
                            .await?;
                    ensure!(lines == n, "weir run wrote {lines} events, expected {n}");
                    weir_run = Some(cost);
                }
                _ => {
                    let slot = format!("weir_bench_d_{}_{r}", s.tag);
                    let (cost, events) = weir_decode(s, &c, &slot).await?;
                    ensure!(
                        events == n,
                        "PostgresSource gave {events} events, expected {n}"
                    );
                    decode = Some(cost);
                }
            }
        }
        let (peer, weir_run, decode) = (
            peer.context("peer")?,
            weir_run.context("weir")?,
            decode.context("decode")?,
        );
        println!("{}", line("pg_recvlogical test_decoding", &peer, n));
        println!("{}", line("weir run --once (file sink)", &weir_run, n));
        println!("{}", line("weir PostgresSource only", &decode, n));
        run_ratio.push(peer.secs / weir_run.secs);
        dec_ratio.push(peer.secs / decode.secs);
        run_cpu.push(weir_run.per_total_cpu(n) / peer.per_total_cpu(n));
        dec_cpu.push(decode.per_total_cpu(n) / peer.per_total_cpu(n));
        println!(
            "  ratio to pg_recvlogical (rows/s): weir run {:.2}, PostgresSource {:.2}",
            peer.secs / weir_run.secs,
            peer.secs / decode.secs
        );
    }

    println!();
    println!(
        "## (d) snapshot {} rows: COPY bench_snap TO STDOUT (psql, to /dev/null) vs weir snapshot = \"only\"",
        cfg.snapshot_rows
    );
    let m = cfg.snapshot_rows;
    let (mut snap_ratio, mut snap_cpu) = (vec![], vec![]);
    for r in 1..=cfg.rounds {
        println!("round {r}:");
        let (peer, weir) = if r % 2 == 1 {
            let p = copy_out(s, &c).await?;
            let w = weir_snapshot(s, &c, &cfg.weir, &base.join(format!("snap{r}")), r).await?;
            (p, w)
        } else {
            let w = weir_snapshot(s, &c, &cfg.weir, &base.join(format!("snap{r}")), r).await?;
            let p = copy_out(s, &c).await?;
            (p, w)
        };
        let (weir, lines) = weir;
        ensure!(lines == m, "weir snapshot wrote {lines} rows, expected {m}");
        println!("{}", line("COPY TO STDOUT (psql)", &peer, m));
        println!("{}", line("weir snapshot (file sink)", &weir, m));
        snap_ratio.push(peer.secs / weir.secs);
        snap_cpu.push(weir.per_total_cpu(m) / peer.per_total_cpu(m));
        println!("  ratio to COPY (rows/s): {:.2}", peer.secs / weir.secs);
    }

    println!();
    println!("## summary: weir / peer (higher is better)");
    summary("(c) weir run --once, rows/s [aim >= 0.80]", &mut run_ratio);
    summary("(c) PostgresSource only, rows/s", &mut dec_ratio);
    summary("(c) weir run, rows per CPU-s (client+server)", &mut run_cpu);
    summary("(c) PostgresSource, rows per CPU-s (c+s)", &mut dec_cpu);
    summary("(d) weir snapshot, rows/s [aim >= 0.70]", &mut snap_ratio);
    summary("(d) weir snapshot, rows per CPU-s (c+s)", &mut snap_cpu);
    Ok(())
}
