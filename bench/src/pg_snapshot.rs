//! PostgreSQL → PostgreSQL snapshot (initial copy) against `COPY ... TO STDOUT | COPY ... FROM
//! STDIN` and `pgcopydb clone`, side by side in the same run (`weir-bench pg-snapshot ...`, or
//! `bench/run.sh pg-snapshot`).
//!
//! The source is a fresh database `weir_snapb_<pid>` on the shared PostgreSQL (127.0.0.1:5432,
//! never restarted from here): `pgbench -i -s SCALE` (SCALE × 100,000 accounts) and a `wide`
//! table of mixed types (bigint key, int, numeric(12,2), timestamptz, boolean, 64-char text,
//! jsonb), vacuumed, analysed and read once (warm cache). The target is a throwaway PostgreSQL
//! 15 cluster (`sql.rs`'s [`Peer`]). Every round, in an order rotating each round, each
//! contender copies the four tables (`pgbench_accounts`, `pgbench_branches`,
//! `pgbench_tellers`, `wide`; `pgbench_history` is empty and left out) into its own new target
//! database:
//!
//! - **COPY pipe**: the target database is made from a template holding the schema
//!   (`pg_dump --schema-only`: tables *with* their primary keys); then one
//!   `psql -c "COPY t TO STDOUT" | psql -c "COPY t FROM STDIN"` pipe per table, all tables at
//!   once (so the biggest table is one stream);
//! - **pgcopydb clone** (`--table-jobs W --index-jobs W`, `--split-tables-larger-than` so the
//!   big table is copied by several jobs too), into an *empty* database: its time includes
//!   the schema, the index and primary-key builds after the data and its `VACUUM ANALYZE` of
//!   the copied tables (0.10 has no switch to skip it);
//! - **weir**: `weir run --once`, postgres source with `snapshot = "only"` and
//!   `snapshot_workers = W` (the default 4) → staging log → `postgres` sink into a database
//!   made from the same schema template as the COPY pipe's.
//!
//! Each target is then compared with the source: row count and an md5 over the sorted md5s of
//! every row's text. CPU: the client's (user+sys of the children: psql pairs, pgcopydb and the
//! pg_dump/pg_restore it runs, weir) and the server backends of the source and target
//! databases (sampled from `/proc` every 20 ms).

use crate::measure::{proc_cpu, vm_hwm};
use crate::pg::{ServerCpu, drop_slot, pg_bin, summary};
use crate::sql::{Peer, cleanup_source, connect, run_ok};
use anyhow::{Context, Result, ensure};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::Client;

const HOST: &str = "127.0.0.1";
const PORT: u16 = 5432;
const TABLES: [&str; 4] = [
    "pgbench_accounts",
    "pgbench_branches",
    "pgbench_tellers",
    "wide",
];

/// Settings of `weir-bench pg-snapshot`.
pub struct PgSnapshotBench {
    pub weir: PathBuf,
    /// `pgbench -i -s`.
    pub scale: u32,
    /// Rows of the `wide` table.
    pub wide_rows: u64,
    pub rounds: u32,
    /// Parallel jobs of weir's snapshot and of pgcopydb.
    pub workers: u32,
}

struct Cost {
    secs: f64,
    client_cpu: f64,
    src_cpu: f64,
    dst_cpu: f64,
    rss: u64,
}

impl Cost {
    fn rate(&self, n: u64) -> f64 {
        n as f64 / self.secs
    }
    fn per_cpu(&self, n: u64) -> f64 {
        n as f64 / (self.client_cpu + self.src_cpu + self.dst_cpu).max(0.01)
    }
}

/// Row count and md5 of the sorted md5s of every row's text, per table.
async fn checksums(c: &Client) -> Result<Vec<(i64, String)>> {
    c.batch_execute("SET TimeZone = 'UTC'; SET extra_float_digits = 1")
        .await?;
    let mut v = Vec::new();
    for t in TABLES {
        let r = c
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '') \
                     FROM (SELECT md5(x::text) h FROM public.\"{t}\" x) s"
                ),
                &[],
            )
            .await?;
        v.push((r.get(0), r.get(1)));
    }
    Ok(v)
}

struct Ctx {
    weir: PathBuf,
    tag: String,
    src_db: String,
    peer: Peer,
    base: PathBuf,
    workers: u32,
    rows: u64,
    sums: Vec<(i64, String)>,
}

impl Ctx {
    fn src_url(&self) -> String {
        format!("postgres://postgres:postgres@{HOST}:{PORT}/{}", self.src_db)
    }
    fn dst_url(&self, db: &str) -> String {
        format!("postgres://postgres@{HOST}:{}/{db}", self.peer.port)
    }
}

/// Waits for the children (a contender's processes) while sampling CPU and peak RSS.
async fn watch(
    ctx: &Ctx,
    mut children: Vec<Child>,
    src: &Client,
    dst: &Client,
    db: &str,
) -> Result<Cost> {
    let before = proc_cpu("self", true).unwrap_or(0.0) - proc_cpu("self", false).unwrap_or(0.0);
    let (mut sc, mut dc) = (ServerCpu::new(), ServerCpu::new());
    let start = Instant::now();
    let mut rss = 0;
    let mut failed = Vec::new();
    while !children.is_empty() {
        let mut i = 0;
        while i < children.len() {
            if let Some(st) = children[i].try_wait()? {
                if !st.success() {
                    failed.push(st);
                }
                children.remove(i).wait()?; // reaped already: returns at once
            } else {
                rss = rss.max(vm_hwm(children[i].id()));
                i += 1;
            }
        }
        let _ = sc.sample(src, &ctx.src_db).await;
        let _ = dc.sample(dst, db).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let after = proc_cpu("self", true).unwrap_or(0.0) - proc_cpu("self", false).unwrap_or(0.0);
    ensure!(
        failed.is_empty(),
        "a contender's process failed: {failed:?}"
    );
    Ok(Cost {
        secs,
        client_cpu: after - before,
        src_cpu: sc.total(),
        dst_cpu: dc.total(),
        rss,
    })
}

fn psql(port: u16, db: &str, sql: &str) -> Command {
    let mut c = Command::new(pg_bin("psql"));
    c.args([
        "-h",
        HOST,
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
        "-X",
        "-q",
    ])
    .args(["-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql])
    .env("PGPASSWORD", "postgres");
    c
}

async fn copy_pipe(ctx: &Ctx, src: &Client, dst: &Client, db: &str) -> Result<Cost> {
    let mut children = Vec::new();
    for t in TABLES {
        let mut out = psql(PORT, &ctx.src_db, &format!("COPY public.\"{t}\" TO STDOUT"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let pipe = out.stdout.take().context("stdout")?;
        let inp = psql(
            ctx.peer.port,
            db,
            &format!("COPY public.\"{t}\" FROM STDIN"),
        )
        .stdin(Stdio::from(pipe))
        .stdout(Stdio::null())
        .spawn()?;
        children.push(out);
        children.push(inp);
    }
    watch(ctx, children, src, dst, db).await
}

async fn pgcopydb(ctx: &Ctx, src: &Client, dst: &Client, db: &str, round: u32) -> Result<Cost> {
    let dir = ctx.base.join(format!("pgcopydb_{round}"));
    std::fs::create_dir_all(&dir)?;
    let filters = dir.join("filters.ini");
    let mut f = String::from("[include-only-table]\n");
    for t in TABLES {
        f.push_str(&format!("public.{t}\n"));
    }
    std::fs::write(&filters, f)?;
    let log = dir.join("log");
    let log_file = std::fs::File::create(&log)?;
    let w = ctx.workers.to_string();
    let child = Command::new("pgcopydb")
        .arg("clone")
        .args(["--source", &ctx.src_url(), "--target", &ctx.dst_url(db)])
        .args(["--table-jobs", &w, "--index-jobs", &w])
        .args(["--split-tables-larger-than", "32MB"])
        .args(["--no-owner", "--no-acl"])
        .arg("--filters")
        .arg(&filters)
        .arg("--dir")
        .arg(dir.join("work"))
        .env("PGPASSWORD", "postgres")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .context("starting pgcopydb (apt-get install pgcopydb)")?;
    let cost = watch(ctx, vec![child], src, dst, db).await;
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
    // (lossy: its log is not always valid UTF-8)
    if let Err(e) = cost {
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(e.context(format!("pgcopydb log:\n{}", tail.join("\n"))));
    }
    // Its own timing summary: the data copy and the index builds.
    for l in text.lines().filter(|l| {
        [
            "COPY (cumulative)",
            "CREATE INDEX, CONSTRAINTS",
            "COPY, INDEX",
        ]
        .iter()
        .any(|k| l.contains(k))
    }) {
        println!(
            "    (pgcopydb: {})",
            l.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }
    std::fs::remove_dir_all(&dir)?;
    cost
}

async fn weir_run(ctx: &Ctx, src: &Client, dst: &Client, db: &str, round: u32) -> Result<Cost> {
    let dir = ctx.base.join(format!("weir_{round}"));
    std::fs::create_dir_all(&dir)?;
    let slot = format!("weir_snapb_s_{}_{round}", ctx.tag);
    let tables = TABLES
        .iter()
        .map(|t| format!("\"public.{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let toml = format!(
        "name = \"bench\"\ndata_dir = \"data\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\n\
         tables = [{tables}]\nslot = \"{slot}\"\npublication = \"weir_snapb_pub_{}\"\n\
         snapshot = \"only\"\nsnapshot_workers = {}\n\
         [[sinks]]\nname = \"replica\"\ntype = \"postgres\"\nurl = \"{}\"\nschema = \"public\"\n",
        ctx.src_url(),
        ctx.tag,
        ctx.workers,
        ctx.dst_url(db)
    );
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, toml)?;
    let child = Command::new(&ctx.weir)
        .args(["run", "--once"])
        .arg(&file)
        .current_dir(&dir)
        .env(
            "RUST_LOG",
            std::env::var("WEIR_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting weir")?;
    let cost = watch(ctx, vec![child], src, dst, db).await;
    drop_slot(src, &slot).await?;
    std::fs::remove_dir_all(&dir)?;
    cost
}

pub async fn run(cfg: PgSnapshotBench) -> Result<()> {
    let tag = std::process::id().to_string();
    let admin = connect(PORT, "postgres")
        .await
        .context("the shared PostgreSQL (scripts/services.sh postgres)")?;
    let src_db = format!("weir_snapb_{tag}");
    cleanup_source(&admin, &src_db, "weir_snapb").await?;
    let base = std::env::temp_dir().join(format!("weir-bench-snap-{tag}"));
    std::fs::create_dir_all(&base)?;
    let peer = match Peer::start(&base) {
        Ok(p) => p,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&base);
            return Err(e);
        }
    };
    let mut ctx = Ctx {
        weir: cfg.weir.clone(),
        tag,
        src_db,
        peer,
        base,
        workers: cfg.workers,
        rows: 0,
        sums: Vec::new(),
    };
    let result = bench(&cfg, &mut ctx, &admin).await;
    ctx.peer.stop();
    let cleaned = cleanup_source(&admin, &ctx.src_db, "weir_snapb").await;
    let _ = std::fs::remove_dir_all(&ctx.base);
    result?;
    cleaned
}

async fn bench(cfg: &PgSnapshotBench, ctx: &mut Ctx, admin: &Client) -> Result<()> {
    admin
        .batch_execute(&format!("CREATE DATABASE \"{}\"", ctx.src_db))
        .await?;
    let t = Instant::now();
    run_ok(
        Command::new(pg_bin("pgbench"))
            .args(["-h", HOST, "-p", &PORT.to_string(), "-U", "postgres"])
            .args(["-i", "-q", "-s", &cfg.scale.to_string()])
            .arg(&ctx.src_db)
            .env("PGPASSWORD", "postgres")
            .stderr(Stdio::null()),
    )?;
    let src = connect(PORT, &ctx.src_db).await?;
    src.batch_execute(&format!(
        "CREATE TABLE wide (id bigint PRIMARY KEY, a integer NOT NULL, amount numeric(12,2) NOT NULL, \
           at timestamptz NOT NULL, flag boolean NOT NULL, name text NOT NULL, doc jsonb); \
         INSERT INTO wide SELECT g, g % 100000, (g % 100000) / 100.0, \
           timestamptz '2026-01-01 00:00:00+00' + g * interval '1001 milliseconds', g % 2 = 0, \
           md5(g::text) || md5((g + 1)::text), \
           CASE WHEN g % 3 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'tags', jsonb_build_array('a', g % 7)) END \
         FROM generate_series(1, {}) g",
        cfg.wide_rows
    ))
    .await?;
    src.batch_execute("VACUUM (FREEZE, ANALYZE)").await?;
    ctx.sums = checksums(&src).await?; // also reads every table once (warm cache)
    ctx.rows = ctx.sums.iter().map(|s| s.0 as u64).sum();
    let peer = connect(ctx.peer.port, "postgres").await?;
    // The schema template of the COPY pipe's and weir's targets.
    let schema = ctx.base.join("schema.sql");
    let mut dump = Command::new(pg_bin("pg_dump"));
    dump.args(["-h", HOST, "-p", &PORT.to_string(), "-U", "postgres"])
        .args(["--schema-only", "--no-owner", "--no-acl", "-f"])
        .arg(&schema)
        .env("PGPASSWORD", "postgres");
    for t in TABLES {
        dump.args(["-t", &format!("public.\"{t}\"")]);
    }
    run_ok(dump.arg(&ctx.src_db))?;
    peer.batch_execute("CREATE DATABASE snap_schema").await?;
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
                "snap_schema",
                "-f",
            ])
            .arg(&schema)
            .stdout(Stdio::null()),
    )?;
    println!(
        "source {}: pgbench -i -s {} + {}-row wide table ({} rows in {} tables) in {:.1} s; \
         target cluster on port {}; {} jobs for weir and pgcopydb",
        ctx.src_db,
        cfg.scale,
        cfg.wide_rows,
        ctx.rows,
        TABLES.len(),
        t.elapsed().as_secs_f64(),
        ctx.peer.port,
        ctx.workers
    );
    let n = ctx.rows;
    let names = ["COPY pipe", "pgcopydb clone", "weir run --once"];
    let mut ratios: [Vec<f64>; 4] = Default::default();
    for r in 1..=cfg.rounds {
        println!("round {r}:");
        let mut costs: [Option<Cost>; 3] = [None, None, None];
        for k in 0..3 {
            let who = ((r as usize - 1) + k) % 3;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let db = format!("snap_{who}_{r}");
            if who == 1 {
                peer.batch_execute(&format!("CREATE DATABASE {db}")).await?;
            } else {
                peer.batch_execute(&format!("CREATE DATABASE {db} TEMPLATE snap_schema"))
                    .await?;
            }
            let dst = connect(ctx.peer.port, &db).await?;
            let cost = match who {
                0 => copy_pipe(ctx, &src, &dst, &db).await,
                1 => pgcopydb(ctx, &src, &dst, &db, r).await,
                _ => weir_run(ctx, &src, &dst, &db, r).await,
            };
            let checked = match &cost {
                Ok(_) => {
                    let got = checksums(&dst).await?;
                    let mut res = Ok(());
                    for ((t, w), g) in TABLES.iter().zip(&ctx.sums).zip(&got) {
                        if w != g {
                            res = Err(anyhow::anyhow!(
                                "{}: table {t} differs from the source: {} rows md5 {} vs source {} rows md5 {}",
                                names[who],
                                g.0,
                                g.1,
                                w.0,
                                w.1
                            ));
                            break;
                        }
                    }
                    res
                }
                Err(_) => Ok(()),
            };
            drop(dst);
            peer.batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
                .await?;
            let cost = cost?;
            checked?;
            let mut line = format!(
                "  {:<16} {:>7.2} s {:>9.0} rows/s | client {:.2} s CPU, source backends {:.2} s, target backends {:.2} s | {:>8.0} rows per CPU-s",
                names[who],
                cost.secs,
                cost.rate(n),
                cost.client_cpu,
                cost.src_cpu,
                cost.dst_cpu,
                cost.per_cpu(n)
            );
            if who == 2 {
                line.push_str(&format!(" | peak RSS {} MiB", cost.rss >> 20));
            }
            println!("{line}");
            costs[who] = Some(cost);
        }
        println!("  targets equal to the source (count + md5): all three");
        let [Some(copy), Some(pgc), Some(weir)] = &costs else {
            unreachable!("every contender ran")
        };
        let v = [
            copy.secs / weir.secs,
            pgc.secs / weir.secs,
            weir.per_cpu(n) / copy.per_cpu(n),
            weir.per_cpu(n) / pgc.per_cpu(n),
        ];
        println!(
            "  ratio weir / COPY pipe {:.2} (rows per CPU-s {:.2}), weir / pgcopydb {:.2} (rows per CPU-s {:.2})",
            v[0], v[2], v[1], v[3]
        );
        for (i, x) in v.into_iter().enumerate() {
            ratios[i].push(x);
        }
    }
    peer.batch_execute("DROP DATABASE snap_schema").await?;
    println!();
    println!("## summary (higher is better)");
    let labels = [
        "weir / COPY pipe, rows/s [aim >= 0.70]",
        "weir / pgcopydb, rows/s [aim > 1.0]",
        "weir / COPY pipe, rows per CPU-s",
        "weir / pgcopydb, rows per CPU-s",
    ];
    for (l, v) in labels.iter().zip(ratios.iter_mut()) {
        summary(l, v);
    }
    Ok(())
}
