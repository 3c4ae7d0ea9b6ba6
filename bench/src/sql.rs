//! SQL sink drain rate against PostgreSQL's native logical replication, side by side on the
//! same WAL in the same run (`weir-bench sql ...`, or `bench/run.sh sql`).
//!
//! A source database on the shared server (127.0.0.1:5432) gets `pgbench -i -s 2` and a
//! 100,000-row `bulk` table. A second, throwaway PostgreSQL 15 cluster (the target) is started
//! on a free port in a temp dir. For each backlog kind:
//!
//! 1. a pgoutput *template* slot is created, then the source is dumped (`pg_dump`, schema and
//!    data, no writes in between) into a template database on the target cluster;
//! 2. the backlog is written: **pgbench** = `pgbench -n -t N -c 4` (small transactions: 3
//!    updates + 1 insert each), or **bulk** = transactions updating 100 rows each; then one
//!    marker row (`bench_marker`) in its own, last, transaction;
//! 3. every round, each contender gets a fresh copy of the template database
//!    (`CREATE DATABASE ... TEMPLATE`) and its own copy of the template slot
//!    (`pg_copy_logical_replication_slot`), so both read the same WAL range into the same
//!    starting state:
//!    - **native**: `CREATE SUBSCRIPTION ... WITH (copy_data = false, create_slot = false,
//!      slot_name = <copy>)`, timed from the `CREATE` until the marker row is visible on the
//!      target (applied in commit order, so everything before it is there too);
//!    - **weir**: `weir run --once` (postgres source, `snapshot = "never"`, that slot →
//!      staging log → postgres sink into its database), timed from the process's start until
//!      the marker row is visible on the target, like native (process exit comes later:
//!      `--once` reads on to the server's flush position at its start, which on the shared
//!      server includes other databases' WAL written since the backlog; shown apart);
//! 4. every table of both targets is compared with the source: row count and an md5 of all rows
//!    as text in a fixed order. A mismatch fails the bench.
//!
//! CPU: weir's own (the child's), the native apply worker's (sampled from `/proc`), and the
//! server backends on both sides (walsender on the source, apply worker / sink session on the
//! target). Rounds alternate which contender goes first.

use crate::measure::{proc_cpu, vm_hwm};
use crate::pg::{Cost, ServerCpu, copy_slot, drop_slot, pg_bin, summary};
use anyhow::{Context, Result, ensure};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

const HOST: &str = "127.0.0.1";
const PORT: u16 = 5432;
const BULK_ROWS: i64 = 100_000;
const BULK_TXN_ROWS: i64 = 100;
const TABLES: [&str; 6] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "pgbench_history",
    "bulk",
    "bench_marker",
];

/// Settings of `weir-bench sql`.
pub struct SqlBench {
    pub weir: PathBuf,
    /// `pgbench -t` (per client, 4 clients).
    pub pgbench_txns: u64,
    /// 100-row update transactions of the bulk backlog.
    pub bulk_txns: u64,
    pub rounds: u32,
}

pub(crate) async fn connect(port: u16, db: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host={HOST} port={port} user=postgres password=postgres dbname={db}"),
        NoTls,
    )
    .await
    .with_context(|| format!("connecting to PostgreSQL at {HOST}:{port}/{db}"))?;
    tokio::spawn(conn);
    Ok(client)
}

pub(crate) fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The throwaway target cluster.
pub(crate) struct Peer {
    pub(crate) dir: PathBuf,
    pub(crate) port: u16,
}

impl Peer {
    pub(crate) fn start(base: &Path) -> Result<Peer> {
        let port = (5499..5600)
            .find(|p| std::net::TcpListener::bind((HOST, *p)).is_ok())
            .context("no free port for the target cluster")?;
        let dir = base.join("peer");
        std::fs::create_dir_all(&dir)?;
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(base),
        )?;
        let as_pg = |bin: &str| {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(pg_bin(bin));
            c
        };
        run_ok(
            as_pg("initdb")
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "-D",
                ])
                .arg(dir.join("data")),
        )?;
        let opts = format!(
            "-p {port} -c listen_addresses={HOST} -c unix_socket_directories={} \
             -c max_logical_replication_workers=8 -c max_worker_processes=16 \
             -c wal_retrieve_retry_interval=100ms",
            dir.display()
        );
        run_ok(
            as_pg("pg_ctl")
                .args(["-w", "-D"])
                .arg(dir.join("data"))
                .args(["-o", &opts, "-l"])
                .arg(dir.join("log"))
                .arg("start"),
        )?;
        Ok(Peer { dir, port })
    }

    pub(crate) fn stop(&self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("pg_ctl"))
            .args(["-w", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Row count and md5 of every row as text (ordered, "C" collation) of each table.
async fn checksums(c: &Client) -> Result<Vec<(i64, String)>> {
    let mut v = Vec::new();
    for t in TABLES {
        let r = c
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(x::text, ',' ORDER BY x::text COLLATE \"C\")), '') \
                     FROM public.{t} x"
                ),
                &[],
            )
            .await?;
        v.push((r.get(0), r.get(1)));
    }
    Ok(v)
}

async fn check_target(c: &Client, want: &[(i64, String)], who: &str) -> Result<()> {
    let got = checksums(c).await?;
    for ((t, w), g) in TABLES.iter().zip(want).zip(&got) {
        ensure!(
            w == g,
            "{who}: table {t} differs from the source: {} rows md5 {} vs source {} rows md5 {}",
            g.0,
            g.1,
            w.0,
            w.1
        );
    }
    Ok(())
}

struct Backlog {
    kind: &'static str,
    template_slot: String,
    template_db: String,
    marker: i32,
    events: u64,
    sums: Vec<(i64, String)>,
}

struct Ctx {
    weir: PathBuf,
    tag: String,
    src_db: String,
    publication: String,
    peer: Peer,
    base: PathBuf,
    pgbench_txns: u64,
    bulk_txns: u64,
}

impl Ctx {
    fn src_url(&self) -> String {
        format!("postgres://postgres:postgres@{HOST}:{PORT}/{}", self.src_db)
    }
}

async fn prepare(ctx: &Ctx, src: &Client, peer: &Client, kind: &'static str) -> Result<Backlog> {
    let template_slot = format!("weir_sqlb_t_{kind}_{}", ctx.tag);
    src.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&template_slot],
    )
    .await?;
    // The starting state of every target: a dump right after the slot (no writes between).
    let template_db = format!("base_{kind}");
    peer.batch_execute(&format!("CREATE DATABASE {template_db}"))
        .await?;
    let t = Instant::now();
    let dump = ctx.base.join(format!("{kind}.sql"));
    run_ok(
        Command::new(pg_bin("pg_dump"))
            .args(["-h", HOST, "-p", &PORT.to_string(), "-U", "postgres"])
            .args(["--no-publications", "--no-subscriptions", "-f"])
            .arg(&dump)
            .arg(&ctx.src_db)
            .env("PGPASSWORD", "postgres"),
    )?;
    run_ok(
        Command::new(pg_bin("psql"))
            .args([
                "-h",
                HOST,
                "-p",
                &ctx.peer.port.to_string(),
                "-U",
                "postgres",
            ])
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &template_db,
                "-f",
            ])
            .arg(&dump)
            .stdout(Stdio::null()),
    )?;
    std::fs::remove_file(&dump)?;
    println!(
        "[{kind}] template database copied in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let events = match kind {
        "pgbench" => {
            let before: i64 = src
                .query_one("SELECT count(*) FROM pgbench_history", &[])
                .await?
                .get(0);
            run_ok(
                Command::new("pgbench")
                    .args(["-h", HOST, "-p", &PORT.to_string(), "-U", "postgres"])
                    .args(["-n", "-c", "4", "-j", "2", "-t"])
                    .arg(ctx.pgbench_txns.to_string())
                    .arg(&ctx.src_db)
                    .env("PGPASSWORD", "postgres")
                    .env("PGOPTIONS", "-c synchronous_commit=off"),
            )?;
            let after: i64 = src
                .query_one("SELECT count(*) FROM pgbench_history", &[])
                .await?
                .get(0);
            let txns = (after - before) as u64;
            ensure!(
                txns == 4 * ctx.pgbench_txns,
                "pgbench committed {txns} transactions, expected {}",
                4 * ctx.pgbench_txns
            );
            txns * 4
        }
        _ => {
            src.batch_execute("SET synchronous_commit = off").await?;
            let upd = src
                .prepare(
                    "UPDATE bulk SET v = v + 1, filler = md5(filler) WHERE id BETWEEN $1 AND $2",
                )
                .await?;
            let txns = ctx.bulk_txns as i64;
            for i in 0..txns {
                let lo = (i * BULK_TXN_ROWS) % BULK_ROWS + 1;
                let n = src.execute(&upd, &[&lo, &(lo + BULK_TXN_ROWS - 1)]).await?;
                ensure!(n == BULK_TXN_ROWS as u64, "bulk update touched {n} rows");
            }
            src.batch_execute("SET synchronous_commit = on").await?;
            txns as u64 * BULK_TXN_ROWS as u64
        }
    };
    let marker = if kind == "pgbench" { 1 } else { 2 };
    src.execute(
        "INSERT INTO bench_marker VALUES ($1, clock_timestamp())",
        &[&marker],
    )
    .await?;
    let events = events + 1;
    let wal: String = src
        .query_one(
            "SELECT pg_size_pretty(pg_current_wal_flush_lsn() - restart_lsn) \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&template_slot],
        )
        .await?
        .get(0);
    println!(
        "[{kind}] backlog: {events} events (incl. the marker) written in {:.1} s, {wal} of WAL since the slot",
        t.elapsed().as_secs_f64()
    );
    let sums = checksums(src).await?;
    Ok(Backlog {
        kind,
        template_slot,
        template_db,
        marker,
        events,
        sums,
    })
}

/// Samples the CPU of backends of a database (on either cluster) and of extra pids.
struct Sampler {
    src: ServerCpu,
    dst: ServerCpu,
}

impl Sampler {
    fn new() -> Self {
        Sampler {
            src: ServerCpu::new(),
            dst: ServerCpu::new(),
        }
    }
    async fn sample(&mut self, src: &Client, src_db: &str, dst: &Client, dst_db: &str) {
        let _ = self.src.sample(src, src_db).await;
        let _ = self.dst.sample(dst, dst_db).await;
    }
}

async fn native(
    ctx: &Ctx,
    b: &Backlog,
    src: &Client,
    peer: &Client,
    round: u32,
) -> Result<(Cost, f64)> {
    let db = format!("native_{}_{round}", b.kind);
    let slot = format!("weir_sqlb_n_{}_{round}_{}", b.kind, ctx.tag);
    peer.batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .await?;
    peer.batch_execute(&format!("CREATE DATABASE {db} TEMPLATE {}", b.template_db))
        .await?;
    copy_slot(src, &b.template_slot, &slot, "pgoutput").await?;
    let target = connect(ctx.peer.port, &db).await?;
    let mut cpu = Sampler::new();
    let start = Instant::now();
    target
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION sub CONNECTION 'host={HOST} port={PORT} user=postgres password=postgres dbname={}' \
             PUBLICATION {} WITH (copy_data = false, create_slot = false, slot_name = '{slot}')",
            ctx.src_db, ctx.publication
        ))
        .await?;
    let mut apply = 0.0;
    let mut worker_at = None;
    loop {
        let r = target
            .query(
                "SELECT 1 FROM public.bench_marker WHERE id = $1",
                &[&b.marker],
            )
            .await?;
        if !r.is_empty() {
            break;
        }
        cpu.sample(src, &ctx.src_db, &target, &db).await;
        if let Some(pid) = target
            .query_opt(
                "SELECT pid FROM pg_stat_subscription WHERE pid IS NOT NULL AND relid IS NULL",
                &[],
            )
            .await?
            .map(|r| r.get::<_, i32>(0))
        {
            apply = proc_cpu(&pid.to_string(), false).unwrap_or(apply);
            worker_at.get_or_insert_with(|| start.elapsed().as_secs_f64());
        }
        ensure!(
            start.elapsed() < Duration::from_secs(1800),
            "native replication did not reach the marker in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    cpu.sample(src, &ctx.src_db, &target, &db).await;
    target
        .batch_execute(
            "ALTER SUBSCRIPTION sub DISABLE; ALTER SUBSCRIPTION sub SET (slot_name = NONE); \
             DROP SUBSCRIPTION sub",
        )
        .await?;
    if let Some(w) = worker_at {
        println!("  (native: apply worker running {w:.2} s after CREATE SUBSCRIPTION)");
    }
    let checked = check_target(&target, &b.sums, "native replication").await;
    drop(target);
    drop_slot(src, &slot).await?;
    peer.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await?;
    checked?;
    Ok((
        Cost {
            secs,
            client_cpu: apply,
            server_cpu: cpu.src.total(),
            rss: 0,
        },
        cpu.dst.total(),
    ))
}

async fn weir_run(
    ctx: &Ctx,
    b: &Backlog,
    src: &Client,
    peer: &Client,
    round: u32,
) -> Result<(Cost, f64)> {
    let db = format!("weir_{}_{round}", b.kind);
    let slot = format!("weir_sqlb_w_{}_{round}_{}", b.kind, ctx.tag);
    peer.batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .await?;
    peer.batch_execute(&format!("CREATE DATABASE {db} TEMPLATE {}", b.template_db))
        .await?;
    copy_slot(src, &b.template_slot, &slot, "pgoutput").await?;
    let dir = ctx.base.join(format!("weir_{}_{round}", b.kind));
    std::fs::create_dir_all(&dir)?;
    let tables = TABLES
        .iter()
        .map(|t| format!("\"public.{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let toml = format!(
        "name = \"bench\"\ndata_dir = \"data\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\
         tables = [{tables}]\nslot = \"{slot}\"\npublication = \"{}\"\nsnapshot = \"never\"\n\
         [[sinks]]\nname = \"replica\"\ntype = \"postgres\"\n\
         url = \"postgres://postgres@{HOST}:{}/{db}\"\nschema = \"public\"\n",
        ctx.src_url(),
        ctx.publication,
        ctx.peer.port
    );
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, toml)?;
    let target = connect(ctx.peer.port, &db).await?;
    let mut cmd = Command::new(&ctx.weir);
    cmd.args(["run", "--once"])
        .arg(&file)
        .env(
            "RUST_LOG",
            std::env::var("WEIR_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let before = proc_cpu("self", true).unwrap_or(0.0) - proc_cpu("self", false).unwrap_or(0.0);
    let mut cpu = Sampler::new();
    let start = Instant::now();
    let mut child = cmd.spawn().context("starting weir")?;
    let pid = child.id();
    let mut rss = 0;
    // The same end as native's: the marker row visible on the target. `--once` then goes on
    // reading the WAL up to the server's flush position at its start, which on a shared
    // server includes other databases' WAL written after the backlog: that tail is timed
    // separately (process exit).
    let mut marker_at = None;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        rss = rss.max(vm_hwm(pid));
        cpu.sample(src, &ctx.src_db, &target, &db).await;
        if marker_at.is_none()
            && target
                .query(
                    "SELECT 1 FROM public.bench_marker WHERE id = $1",
                    &[&b.marker],
                )
                .await
                .is_ok_and(|r| !r.is_empty())
        {
            marker_at = Some(start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let exit = start.elapsed().as_secs_f64();
    let secs = marker_at.unwrap_or(exit);
    println!("  (weir: marker on the target after {secs:.2} s, process exit after {exit:.2} s)");
    let after = proc_cpu("self", true).unwrap_or(0.0) - proc_cpu("self", false).unwrap_or(0.0);
    let result = if status.success() {
        check_target(&target, &b.sums, "weir").await
    } else {
        Err(anyhow::anyhow!("weir run --once failed: {status}"))
    };
    drop(target);
    drop_slot(src, &slot).await?;
    peer.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await?;
    std::fs::remove_dir_all(&dir)?;
    result?;
    Ok((
        Cost {
            secs,
            client_cpu: after - before,
            server_cpu: cpu.src.total(),
            rss,
        },
        cpu.dst.total(),
    ))
}

/// Drops the bench's source database `db`, its slots, and what earlier runs of the bench
/// whose names start with `prefix` left behind (killed runs).
pub(crate) async fn cleanup_source(admin: &Client, db: &str, prefix: &str) -> Result<()> {
    let like = format!("{prefix}_%");
    admin
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE database = $1 OR (slot_name LIKE $2 AND NOT active)",
            &[&db, &like],
        )
        .await?;
    let stale = admin
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE $1 \
             AND datname NOT IN (SELECT datname FROM pg_stat_activity WHERE datname IS NOT NULL)",
            &[&like],
        )
        .await?;
    for r in stale {
        let name: String = r.get(0);
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\""))
            .await?;
    }
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
        .await?;
    Ok(())
}

pub async fn run(cfg: SqlBench) -> Result<()> {
    let tag = std::process::id().to_string();
    let admin = connect(PORT, "postgres")
        .await
        .context("the shared PostgreSQL (scripts/services.sh postgres)")?;
    let src_db = format!("weir_sqlb_{tag}");
    cleanup_source(&admin, &src_db, "weir_sqlb").await?;
    let base = std::env::temp_dir().join(format!("weir-bench-sql-{tag}"));
    std::fs::create_dir_all(&base)?;
    let peer = match Peer::start(&base) {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&base);
            return Err(e);
        }
    };
    let ctx = Ctx {
        weir: cfg.weir.clone(),
        publication: format!("weir_sqlb_pub_{tag}"),
        tag,
        src_db,
        peer,
        base,
        pgbench_txns: cfg.pgbench_txns,
        bulk_txns: cfg.bulk_txns,
    };
    let result = bench(&cfg, &ctx, &admin).await;
    ctx.peer.stop();
    let cleaned = cleanup_source(&admin, &ctx.src_db, "weir_sqlb").await;
    let _ = std::fs::remove_dir_all(&ctx.base);
    result?;
    cleaned
}

async fn bench(cfg: &SqlBench, ctx: &Ctx, admin: &Client) -> Result<()> {
    admin
        .batch_execute(&format!("CREATE DATABASE {}", ctx.src_db))
        .await?;
    let t = Instant::now();
    run_ok(
        Command::new("pgbench")
            .args(["-h", HOST, "-p", &PORT.to_string(), "-U", "postgres"])
            .args(["-i", "-q", "-s", "2"])
            .arg(&ctx.src_db)
            .env("PGPASSWORD", "postgres")
            .stderr(Stdio::null()),
    )?;
    let src = connect(PORT, &ctx.src_db).await?;
    src.batch_execute(&format!(
        "CREATE TABLE bulk (id bigint PRIMARY KEY, k integer NOT NULL, v integer NOT NULL, \
           filler text NOT NULL); \
         INSERT INTO bulk SELECT g, g % 1000, 0, md5(g::text) FROM generate_series(1, {BULK_ROWS}) g; \
         CREATE TABLE bench_marker (id integer PRIMARY KEY, at timestamptz NOT NULL); \
         CREATE PUBLICATION {} FOR TABLE {};",
        ctx.publication,
        TABLES.join(", ")
    ))
    .await?;
    src.batch_execute("VACUUM ANALYZE").await?;
    println!(
        "source {}: pgbench -i -s 2 + {BULK_ROWS}-row bulk table in {:.1} s; target cluster on port {}",
        ctx.src_db,
        t.elapsed().as_secs_f64(),
        ctx.peer.port
    );
    let peer = connect(ctx.peer.port, "postgres").await?;
    let mut ratios: Vec<(&str, Vec<f64>, Vec<f64>)> = Vec::new();
    for kind in ["pgbench", "bulk"] {
        if (kind == "pgbench" && cfg.pgbench_txns == 0) || (kind == "bulk" && cfg.bulk_txns == 0) {
            continue;
        }
        let b = prepare(ctx, &src, &peer, kind).await?;
        let n = b.events;
        println!();
        println!(
            "## [{kind}] {n} events: native logical replication (CREATE SUBSCRIPTION) vs weir run --once (postgres sink)"
        );
        let (mut rate, mut cpu) = (vec![], vec![]);
        for r in 1..=cfg.rounds {
            println!("round {r}:");
            // A pause before each contender, so one's leftovers (checkpoints, autovacuum,
            // the launcher's start interval) do not land on the other.
            let settle = || tokio::time::sleep(Duration::from_secs(2));
            let (nat, wr) = if r % 2 == 1 {
                settle().await;
                let n = native(ctx, &b, &src, &peer, r).await?;
                settle().await;
                let w = weir_run(ctx, &b, &src, &peer, r).await?;
                (n, w)
            } else {
                settle().await;
                let w = weir_run(ctx, &b, &src, &peer, r).await?;
                settle().await;
                let n = native(ctx, &b, &src, &peer, r).await?;
                (n, w)
            };
            let ((nc, nt), (wc, wt)) = (nat, wr);
            println!(
                "  native subscription  {:>7.2} s {:>9.0} events/s | apply worker {:.2} s CPU, walsender {:.2} s, target backends {:.2} s",
                nc.secs,
                nc.rate(n),
                nc.client_cpu,
                nc.server_cpu,
                nt
            );
            println!(
                "  weir run --once      {:>7.2} s {:>9.0} events/s | weir {:.2} s CPU, walsender {:.2} s, target backends {:.2} s | peak RSS {} MiB",
                wc.secs,
                wc.rate(n),
                wc.client_cpu,
                wc.server_cpu,
                wt,
                wc.rss >> 20
            );
            println!("  target checksums equal to the source: native yes, weir yes");
            let r_rate = nc.secs / wc.secs;
            // The apply worker is one of the target database's backends.
            let nat_total = nt + nc.server_cpu;
            let weir_total = wc.client_cpu + wc.server_cpu + wt;
            let r_cpu = nat_total / weir_total.max(0.01);
            println!(
                "  ratio weir / native: events/s {r_rate:.2}, events per CPU-s (all processes) {r_cpu:.2}"
            );
            rate.push(r_rate);
            cpu.push(r_cpu);
        }
        src.execute("SELECT pg_drop_replication_slot($1)", &[&b.template_slot])
            .await?;
        peer.batch_execute(&format!("DROP DATABASE {}", b.template_db))
            .await?;
        ratios.push((kind, rate, cpu));
    }
    println!();
    println!("## summary: weir / native (higher is better)");
    for (kind, mut rate, mut cpu) in ratios {
        let aim = if kind == "pgbench" { "1.5" } else { "1.0" };
        summary(&format!("[{kind}] events/s [aim >= {aim}]"), &mut rate);
        summary(&format!("[{kind}] events per CPU-s"), &mut cpu);
    }
    Ok(())
}
