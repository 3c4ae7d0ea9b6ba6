//! (f) Where the time goes: `weir.stages` on a pipeline whose PostgreSQL sink is slow on
//! purpose (`weir-bench stages ...`, or `bench/run.sh stages`).
//!
//! datagen (as fast as it goes) → staging log → two sinks: a file sink, and a PostgreSQL sink
//! whose target table has a `BEFORE INSERT OR UPDATE` row trigger doing
//! `pg_sleep(SLEEP)` (0.5 ms by default) per row. `weir run` streams until both sinks have
//! applied every event (polled over admin SQL); then `SELECT * FROM weir.stages` is read
//! and printed, and the run fails unless the slow sink's stage has the largest share. The
//! target rows are counted, and the database is dropped at the end (with leftovers of bench
//! processes that are gone).

use anyhow::{Context, Result, bail, ensure};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

const PG: &str = "host=127.0.0.1 port=5432 user=postgres password=postgres";
const ADMIN_PASSWORD: &str = "weir-bench-stages";

/// Settings of `weir-bench stages`.
pub struct StagesBench {
    pub weir: PathBuf,
    pub events: u64,
    /// Seconds the trigger sleeps per row.
    pub sleep: f64,
}

async fn connect(conninfo: &str) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .with_context(|| format!("connecting to {conninfo:?}"))?;
    tokio::spawn(conn);
    Ok(client)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Drops `db`, and bench databases of processes that are gone.
async fn drop_databases(pg: &Client, db: &str) -> Result<()> {
    let rows = pg
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'weir\\_stages\\_%'",
            &[],
        )
        .await?;
    for r in rows {
        let name: String = r.get(0);
        let pid = name.trim_start_matches("weir_stages_");
        let gone = !std::path::Path::new(&format!("/proc/{pid}")).exists();
        if name == db || gone {
            pg.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await?;
        }
    }
    Ok(())
}

/// `weir run`, SIGTERMed (then killed) when dropped.
struct Weir(Child);
impl Drop for Weir {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One row of `weir.stages`.
struct Stage {
    name: String,
    events: i64,
    calls: i64,
    seconds: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    share: f64,
}

pub async fn run(cfg: StagesBench) -> Result<()> {
    let pg = connect(&format!("{PG} dbname=postgres")).await?;
    let db = format!("weir_stages_{}", std::process::id());
    drop_databases(&pg, &db).await?;
    pg.batch_execute(&format!("CREATE DATABASE \"{db}\""))
        .await?;
    let result = bench(&cfg, &db).await;
    drop_databases(&pg, &db).await?;
    result
}

async fn bench(cfg: &StagesBench, db: &str) -> Result<()> {
    let target = connect(&format!("{PG} dbname={db}")).await?;
    // The table the sink would create for datagen.t0, plus the slow trigger.
    target
        .batch_execute(&format!(
            "CREATE TABLE public.t0 (id bigint PRIMARY KEY, k integer NOT NULL, \
               amount numeric(12,2) NOT NULL, payload text NOT NULL, at timestamptz NOT NULL); \
             CREATE FUNCTION public.weir_bench_slow() RETURNS trigger LANGUAGE plpgsql AS \
               $$ BEGIN PERFORM pg_sleep({}); RETURN NEW; END $$; \
             CREATE TRIGGER weir_bench_slow BEFORE INSERT OR UPDATE ON public.t0 \
               FOR EACH ROW EXECUTE FUNCTION public.weir_bench_slow();",
            cfg.sleep
        ))
        .await?;
    let dir = std::env::temp_dir().join(format!("weir-bench-stages-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (sql_port, http_port) = (free_port()?, free_port()?);
    let pipeline = dir.join("stages.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"stages_bench\"\ndata_dir = \"data\"\n\n\
             [source]\ntype = \"datagen\"\ntable_count = 1\nevents = {}\ntxn_size = 100\nrow_bytes = 100\n\n\
             [[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n\n\
             [[sinks]]\nname = \"slow\"\ntype = \"postgres\"\n\
             url = \"postgres://postgres:${{PGPASSWORD}}@127.0.0.1:5432/{db}\"\nschema = \"public\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{sql_port}\"\npassword = \"${{WEIR_ADMIN_PASSWORD}}\"\n\
             metrics = \"127.0.0.1:{http_port}\"\n",
            cfg.events
        ),
    )?;
    println!(
        "## (f) stages: datagen {} events → file sink `files` + PostgreSQL sink `slow` (trigger: pg_sleep({}) per row)",
        cfg.events, cfg.sleep
    );
    let started = Instant::now();
    let weir = Weir(
        Command::new(&cfg.weir)
            .arg("run")
            .arg(&pipeline)
            .env("PGPASSWORD", "postgres")
            .env("WEIR_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting weir run")?,
    );
    let admin_conninfo =
        format!("host=127.0.0.1 port={sql_port} user=weir password={ADMIN_PASSWORD} dbname=weir");
    let deadline = Instant::now() + Duration::from_secs(30);
    let admin = loop {
        match connect(&admin_conninfo).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.context("weir's admin SQL did not come up")),
        }
    };
    // Until both sinks have applied everything.
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let rows = admin
            .query("SELECT name, events_applied, state FROM weir.sinks", &[])
            .await?;
        let done = rows.iter().all(|r| r.get::<_, i64>(1) >= cfg.events as i64);
        if done {
            break;
        }
        for r in &rows {
            let state: String = r.get(2);
            ensure!(
                state == "running" || state == "starting",
                "sink {} is {state}",
                r.get::<_, String>(0)
            );
        }
        ensure!(
            Instant::now() < deadline,
            "the sinks did not finish in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let stages: Vec<Stage> = admin
        .query("SELECT * FROM weir.stages", &[])
        .await?
        .iter()
        .map(|r| Stage {
            name: r.get("stage"),
            events: r.get("events"),
            calls: r.get("calls"),
            seconds: r.get("seconds"),
            p50_ms: r.get("p50_ms"),
            p99_ms: r.get("p99_ms"),
            share: r.get("share"),
        })
        .collect();
    drop(weir);
    let rows: i64 = target
        .query_one("SELECT count(*) FROM public.t0", &[])
        .await?
        .get(0);
    ensure!(
        rows == cfg.events as i64,
        "the slow sink's table has {rows} rows, expected {}",
        cfg.events
    );
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "both sinks applied {} events in {wall:.1} s (wall)",
        cfg.events
    );
    println!();
    println!("| stage | events | calls | seconds | p50 ms | p99 ms | share |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    for s in &stages {
        println!(
            "| {} | {} | {} | {:.3} | {} | {} | {:.1}% |",
            s.name,
            s.events,
            s.calls,
            s.seconds,
            ms(s.p50_ms),
            ms(s.p99_ms),
            s.share * 100.0
        );
    }
    let top = stages
        .iter()
        .max_by(|a, b| a.share.total_cmp(&b.share))
        .context("weir.stages is empty")?;
    let total: f64 = stages.iter().map(|s| s.share).sum();
    ensure!((total - 1.0).abs() < 1e-6, "shares sum to {total}");
    let per_row_ms = stages
        .iter()
        .find(|s| s.name == "sink slow")
        .filter(|s| s.events > 0)
        .map_or(0.0, |s| s.seconds * 1000.0 / s.events as f64);
    println!();
    println!(
        "largest share: {} ({:.1}%); the slow sink spends {per_row_ms:.3} ms per row (trigger sleeps {:.3} ms)",
        top.name,
        top.share * 100.0,
        cfg.sleep * 1000.0
    );
    if top.name != "sink slow" {
        bail!(
            "expected the slow sink to dominate, but {} has the largest share",
            top.name
        );
    }
    Ok(())
}
