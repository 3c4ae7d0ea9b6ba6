//! MySQL sink drain rate against MariaDB's native replication, side by side on the same
//! binlog range in the same run (`weir-bench mysql-sql ...`, or `bench/run.sh mysql-sql`).
//!
//! The source is the shared MariaDB on 127.0.0.1:3306 (never restarted from here): a database
//! `weir_mysink_<pid>` gets `sysbench oltp_write_only prepare` (4 tables of 50,000 rows), a
//! 100,000-row `bulk` table and `bench_marker`. The target is a throwaway second `mariadbd`
//! (`mariadb-install-db` into a temp dir, first free port from 3399, own socket, own
//! `server_id`, `--skip-log-bin`, everything else at its defaults: one replication SQL thread
//! (`slave_parallel_threads = 0`), `innodb_flush_log_at_trx_commit = 1`), stopped and removed
//! at the end, also after an error. For each backlog kind:
//!
//! 1. a *template* weir pipeline (mysql source, `snapshot = "never"` → staging log → mysql
//!    sink into the target) runs `weir run --once`, so its log position is before the backlog;
//!    then `SHOW MASTER STATUS` is the backlog's start, and the bench database is dumped
//!    (`mariadb-dump --single-transaction`; nothing writes to it in between);
//! 2. the backlog: **sysbench** = `sysbench oltp_write_only --threads=4 --events=N` (small
//!    transactions: an index update, a non-index update, a delete and an insert), or **bulk** =
//!    transactions updating 100 rows each; then one marker row in its own, last, transaction;
//!    its row events (in the bench database) are counted from the binlog
//!    (`mariadb-binlog --verbose` over the range);
//! 3. every round, each contender starts from the dump loaded into an empty database on the
//!    target, and reads the binlog from the same start:
//!    - **native**: the target as a replica, `CHANGE MASTER TO ... MASTER_LOG_FILE/POS` (no
//!      GTID), `replicate_do_db` = the bench database (the shared source carries other
//!      databases' traffic), timed from `START SLAVE` until the marker is visible;
//!    - **weir**: `weir run --once` from a fresh copy of the template pipeline (binlog →
//!      staging log → mysql sink into `<db>_w` on the target; its `_weir` database dropped
//!      first), timed from the process's start until the marker is visible (process exit is
//!      shown too: `--once` reads on to the source's binlog end at its start);
//! 4. every table of the target equals the source's (row count and `CHECKSUM TABLE`), or the
//!    bench fails.
//!
//! CPU: weir's (the child's), and the whole `mariadbd` process of each server over the
//! contender's run (the source's includes other clients of the shared server: shown, not used
//! in ratios). Rounds alternate which contender goes first. Nothing here purges binlogs.

use crate::measure::{proc_cpu, vm_hwm};
use crate::mysql::{FilePos, binlog_bin, client_bin, master_status};
use crate::pg::summary;
use anyhow::{Context, Result, bail, ensure};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Row};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOST: &str = "127.0.0.1";
const PORT: u16 = 3306;
const SB_TABLES: u32 = 4;
const SB_TABLE_SIZE: u32 = 50_000;
const BULK_ROWS: u64 = 100_000;
const BULK_TXN_ROWS: u64 = 100;

/// Settings of `weir-bench mysql-sql`.
pub struct MysqlSqlBench {
    pub weir: PathBuf,
    /// `sysbench --events` (transactions, 4 threads).
    pub sysbench_txns: u64,
    /// 100-row update transactions of the bulk backlog.
    pub bulk_txns: u64,
    pub rounds: u32,
}

async fn connect(port: u16, db: &str) -> Result<Conn> {
    let opts = Opts::from_url(&format!(
        "mysql://root@{HOST}:{port}/{db}?prefer_socket=false"
    ))?;
    Conn::new(opts)
        .await
        .with_context(|| format!("connecting to MariaDB at {HOST}:{port}"))
}

/// Runs SQL text through the `mariadb` client on `port` (stdin from `input`).
fn client(port: u16, db: &str, input: Stdio) -> Result<()> {
    let out = Command::new(client_bin())
        .args([
            "-h",
            HOST,
            "-P",
            &port.to_string(),
            "-u",
            "root",
            "-N",
            "-B",
        ])
        .arg(db)
        .stdin(input)
        .stdout(Stdio::null())
        .output()
        .context("running the mariadb client")?;
    ensure!(
        out.status.success(),
        "mariadb client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn run_ok(cmd: &mut Command) -> Result<String> {
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

/// The throwaway second `mariadbd`. Dropping it stops the server and removes its directory.
struct Target {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Target {
    fn start(base: &Path, server_id: u32) -> Result<Target> {
        let port = (3399..3499)
            .find(|p| std::net::TcpListener::bind((HOST, *p)).is_ok())
            .context("no free port for the target mariadbd")?;
        let dir = base.join("target");
        std::fs::create_dir_all(&dir)?;
        let mut t = Target {
            dir: dir.clone(),
            port,
            child: None,
        };
        let data = dir.join("data");
        run_ok(
            Command::new("mariadb-install-db")
                .arg("--no-defaults")
                .arg(format!("--datadir={}", data.display()))
                .args([
                    "--user=root",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ]),
        )?;
        let d = |name: &str| dir.join(name).display().to_string();
        let child = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--user=root", "--bind-address=127.0.0.1", "--skip-log-bin"])
            .arg(format!("--port={port}"))
            .arg(format!("--socket={}", d("sock")))
            .arg(format!("--pid-file={}", d("pid")))
            .arg(format!("--log-error={}", d("log")))
            .arg(format!("--relay-log={}", d("relay")))
            .arg(format!("--relay-log-index={}", d("relay.index")))
            .arg(format!("--server-id={server_id}"))
            .arg("--max-allowed-packet=64M")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mariadbd")?;
        t.child = Some(child);
        let start = Instant::now();
        loop {
            if std::net::TcpStream::connect((HOST, port)).is_ok() {
                break;
            }
            if let Some(c) = t.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                bail!("the target mariadbd exited: {st}\n{log}");
            }
            ensure!(
                start.elapsed() < Duration::from_secs(60),
                "the target mariadbd did not open port {port} in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(t)
    }

    fn pid(&self) -> Option<String> {
        self.child.as_ref().map(|c| c.id().to_string())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: a clean shutdown; SIGKILL if it takes too long.
            let _ = Command::new("kill")
                .arg(c.id().to_string())
                .stderr(Stdio::null())
                .status();
            let start = Instant::now();
            while !matches!(c.try_wait(), Ok(Some(_))) {
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pid of the shared source's `mariadbd`: a `mariadbd` that is not the target.
fn source_pid(target: &Option<String>) -> Option<String> {
    for e in std::fs::read_dir("/proc").ok()? {
        let Ok(e) = e else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) || Some(&name) == target.as_ref() {
            continue;
        }
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if matches!(comm.trim(), "mariadbd" | "mysqld") {
            return Some(name);
        }
    }
    None
}

fn cpu_of(pid: &Option<String>) -> f64 {
    pid.as_deref()
        .and_then(|p| proc_cpu(p, false))
        .unwrap_or(0.0)
}

/// Row count and `CHECKSUM TABLE` of each table.
async fn checksums(c: &mut Conn, db: &str, tables: &[String]) -> Result<Vec<(u64, u64)>> {
    let mut v = Vec::new();
    for t in tables {
        let n: u64 = c
            .query_first(format!("SELECT COUNT(*) FROM `{db}`.`{t}`"))
            .await?
            .context("count")?;
        let sum: Option<(String, Option<u64>)> = c
            .query_first(format!("CHECKSUM TABLE `{db}`.`{t}` EXTENDED"))
            .await?;
        v.push((n, sum.and_then(|s| s.1).context("CHECKSUM TABLE")?));
    }
    Ok(v)
}

async fn check_target(
    c: &mut Conn,
    db: &str,
    tables: &[String],
    want: &[(u64, u64)],
    who: &str,
) -> Result<()> {
    let got = checksums(c, db, tables).await?;
    for ((t, w), g) in tables.iter().zip(want).zip(&got) {
        ensure!(
            w == g,
            "{who}: table {t} differs from the source: {} rows checksum {} vs source {} rows checksum {}",
            g.0,
            g.1,
            w.0,
            w.1
        );
    }
    Ok(())
}

struct Ctx {
    weir: PathBuf,
    db: String,
    base: PathBuf,
    target: Target,
    /// The id the weir source registers with on the source.
    weir_server_id: u32,
    tables: Vec<String>,
    sysbench_txns: u64,
    bulk_txns: u64,
}

struct Backlog {
    kind: &'static str,
    template: PathBuf,
    dump: PathBuf,
    start: FilePos,
    marker: i32,
    events: u64,
    sums: Vec<(u64, u64)>,
}

fn pipeline_toml(ctx: &Ctx) -> String {
    let db = &ctx.db;
    format!(
        "name = \"bench\"\ndata_dir = \"data\"\n[source]\ntype = \"mysql\"\n\
         url = \"mysql://root@{HOST}:{PORT}/{db}\"\ntables = [\"{db}.*\"]\n\
         server_id = {}\nsnapshot = \"never\"\n[[sinks]]\nname = \"replica\"\n\
         type = \"mysql\"\nurl = \"mysql://root@{HOST}:{}/\"\nschema = \"{db}_w\"\n",
        ctx.weir_server_id, ctx.target.port
    )
}

fn weir_cmd(ctx: &Ctx, dir: &Path) -> Command {
    let mut cmd = Command::new(&ctx.weir);
    cmd.args(["run", "--once"])
        .arg(dir.join("pipeline.toml"))
        .current_dir(dir)
        .env(
            "RUST_LOG",
            std::env::var("WEIR_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    cmd
}

/// Row events of `db` in the binlog between `start` and `end`, counted from
/// `mariadb-binlog --verbose`'s pseudo-SQL.
fn count_row_events(db: &str, start: &FilePos, end: &FilePos, logs: &[String]) -> Result<u64> {
    let files: Vec<&String> = logs
        .iter()
        .filter(|f| {
            let k = FilePos {
                file: (*f).clone(),
                pos: 0,
            }
            .key()
            .0;
            k >= start.key().0 && k <= end.key().0
        })
        .collect();
    ensure!(
        !files.is_empty(),
        "no binlog files between {start} and {end}"
    );
    let mut child = Command::new(binlog_bin())
        .args(["--read-from-remote-server", "--host", HOST, "--port"])
        .arg(PORT.to_string())
        .args(["--user", "root", "--base64-output=decode-rows", "--verbose"])
        .arg(format!("--start-position={}", start.pos))
        .arg(format!("--stop-position={}", end.pos))
        .args(files)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting mariadb-binlog")?;
    let prefixes = [
        format!("### INSERT INTO `{db}`."),
        format!("### UPDATE `{db}`."),
        format!("### DELETE FROM `{db}`."),
    ];
    let mut n = 0;
    let out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    for line in out.split(b'\n') {
        let line = line?;
        if line.starts_with(b"### ") && prefixes.iter().any(|p| line.starts_with(p.as_bytes())) {
            n += 1;
        }
    }
    let st = child.wait()?;
    ensure!(st.success(), "mariadb-binlog failed: {st}");
    Ok(n)
}

async fn prepare(ctx: &Ctx, src: &mut Conn, kind: &'static str) -> Result<Backlog> {
    // The template pipeline: caught up before the backlog.
    let template = ctx.base.join(format!("template_{kind}"));
    std::fs::create_dir_all(&template)?;
    std::fs::write(template.join("pipeline.toml"), pipeline_toml(ctx))?;
    let st = weir_cmd(ctx, &template).status().context("running weir")?;
    ensure!(st.success(), "the template weir run failed: {st}");
    let start = master_status()?;
    let t = Instant::now();
    let dump = ctx.base.join(format!("{kind}.sql"));
    let out = std::fs::File::create(&dump)?;
    let st = Command::new("mariadb-dump")
        .args(["-h", HOST, "-P", &PORT.to_string(), "-u", "root"])
        .args(["--single-transaction", "--skip-triggers"])
        .arg(&ctx.db)
        .stdin(Stdio::null())
        .stdout(out)
        .status()
        .context("running mariadb-dump")?;
    ensure!(st.success(), "mariadb-dump failed: {st}");
    println!(
        "[{kind}] start {start}; dump of the starting state in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    match kind {
        "sysbench" => {
            run_ok(
                Command::new("sysbench")
                    .arg("oltp_write_only")
                    .args(sysbench_conn(&ctx.db))
                    .args(["--threads=4", "--time=0", "--rand-seed=1"])
                    .arg(format!("--events={}", ctx.sysbench_txns))
                    .arg("run"),
            )?;
        }
        _ => {
            let mut script = String::new();
            for i in 0..ctx.bulk_txns {
                let lo = (i * BULK_TXN_ROWS) % BULK_ROWS + 1;
                let hi = lo + BULK_TXN_ROWS - 1;
                script.push_str(&format!(
                    "UPDATE bulk SET v = v + 1, filler = MD5(filler) WHERE id BETWEEN {lo} AND {hi};\n"
                ));
            }
            let path = ctx.base.join("bulk_backlog.sql");
            std::fs::write(&path, script)?;
            client(PORT, &ctx.db, Stdio::from(std::fs::File::open(&path)?))?;
            std::fs::remove_file(&path)?;
        }
    }
    let marker = if kind == "sysbench" { 1 } else { 2 };
    src.query_drop(format!(
        "INSERT INTO `{}`.bench_marker VALUES ({marker}, NOW(6))",
        ctx.db
    ))
    .await?;
    let end = master_status()?;
    let written = t.elapsed().as_secs_f64();
    let logs: Vec<String> = src
        .query::<Row, _>("SHOW BINARY LOGS")
        .await?
        .into_iter()
        .filter_map(|r| r.get::<String, _>(0))
        .collect();
    let events = count_row_events(&ctx.db, &start, &end, &logs)?;
    if kind == "bulk" {
        ensure!(
            events == ctx.bulk_txns * BULK_TXN_ROWS + 1,
            "bulk backlog: {events} row events in the binlog, expected {}",
            ctx.bulk_txns * BULK_TXN_ROWS + 1
        );
    }
    println!(
        "[{kind}] backlog: {events} row events (incl. the marker) written in {written:.1} s, binlog {start} .. {end}"
    );
    let sums = checksums(src, &ctx.db, &ctx.tables).await?;
    Ok(Backlog {
        kind,
        template,
        dump,
        start,
        marker,
        events,
        sums,
    })
}

fn sysbench_conn(db: &str) -> Vec<String> {
    vec![
        "--db-driver=mysql".into(),
        format!("--mysql-host={HOST}"),
        format!("--mysql-port={PORT}"),
        "--mysql-user=root".into(),
        format!("--mysql-db={db}"),
        format!("--tables={SB_TABLES}"),
        format!("--table-size={SB_TABLE_SIZE}"),
    ]
}

/// Empties `db` on the target and loads the backlog's starting state into it.
async fn load_start(ctx: &Ctx, tc: &mut Conn, b: &Backlog, db: &str) -> Result<()> {
    tc.query_drop(format!(
        "DROP DATABASE IF EXISTS `{db}`; CREATE DATABASE `{db}`"
    ))
    .await?;
    client(
        ctx.target.port,
        db,
        Stdio::from(std::fs::File::open(&b.dump)?),
    )
}

struct Cost {
    secs: f64,
    /// weir's own CPU (0 for native).
    client_cpu: f64,
    target_cpu: f64,
    source_cpu: f64,
    rss: u64,
}

impl Cost {
    fn rate(&self, n: u64) -> f64 {
        n as f64 / self.secs
    }
    /// Events per CPU-second of the contender and the target server (the source's is shared).
    fn per_cpu(&self, n: u64) -> f64 {
        n as f64 / (self.client_cpu + self.target_cpu).max(0.01)
    }
}

async fn native(ctx: &Ctx, b: &Backlog, tc: &mut Conn) -> Result<Cost> {
    let db = &ctx.db;
    tc.query_drop("STOP SLAVE; RESET SLAVE ALL").await?;
    load_start(ctx, tc, b, db).await?;
    tc.query_drop(format!(
        "SET GLOBAL replicate_do_db = '{db}'; \
         CHANGE MASTER TO MASTER_HOST = '{HOST}', MASTER_PORT = {PORT}, MASTER_USER = 'root', \
         MASTER_PASSWORD = '', MASTER_LOG_FILE = '{}', MASTER_LOG_POS = {}, \
         MASTER_USE_GTID = no",
        b.start.file, b.start.pos
    ))
    .await?;
    let (tp, sp) = (ctx.target.pid(), source_pid(&ctx.target.pid()));
    let (t0, s0) = (cpu_of(&tp), cpu_of(&sp));
    let start = Instant::now();
    tc.query_drop("START SLAVE").await?;
    let mut polls = 0u64;
    loop {
        let seen: Option<i32> = tc
            .query_first(format!(
                "SELECT id FROM `{db}`.bench_marker WHERE id = {}",
                b.marker
            ))
            .await?;
        if seen.is_some() {
            break;
        }
        polls += 1;
        if polls.is_multiple_of(100) {
            let st: Option<Row> = tc.query_first("SHOW SLAVE STATUS").await?;
            if let Some(r) = st {
                let err: Option<Option<String>> = r.get("Last_Error");
                let io: Option<Option<String>> = r.get("Last_IO_Error");
                for e in [err, io].into_iter().flatten().flatten() {
                    ensure!(e.is_empty(), "native replication stopped: {e}");
                }
            }
        }
        ensure!(
            start.elapsed() < Duration::from_secs(1800),
            "native replication did not reach the marker in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let (t1, s1) = (cpu_of(&tp), cpu_of(&sp));
    tc.query_drop("STOP SLAVE; RESET SLAVE ALL").await?;
    check_target(tc, db, &ctx.tables, &b.sums, "native replica").await?;
    tc.query_drop(format!("DROP DATABASE `{db}`")).await?;
    Ok(Cost {
        secs,
        client_cpu: 0.0,
        target_cpu: t1 - t0,
        source_cpu: s1 - s0,
        rss: 0,
    })
}

async fn weir_run(ctx: &Ctx, b: &Backlog, tc: &mut Conn, round: u32) -> Result<Cost> {
    let db = format!("{}_w", ctx.db);
    tc.query_drop("DROP DATABASE IF EXISTS `_weir`").await?;
    load_start(ctx, tc, b, &db).await?;
    let dir = ctx.base.join(format!("weir_{}_{round}", b.kind));
    let _ = std::fs::remove_dir_all(&dir);
    run_ok(Command::new("cp").arg("-a").arg(&b.template).arg(&dir))?;
    let (tp, sp) = (ctx.target.pid(), source_pid(&ctx.target.pid()));
    let (t0, s0) = (cpu_of(&tp), cpu_of(&sp));
    let before = proc_cpu("self", true).unwrap_or(0.0) - proc_cpu("self", false).unwrap_or(0.0);
    let start = Instant::now();
    let mut child = weir_cmd(ctx, &dir).spawn().context("starting weir")?;
    let pid = child.id();
    let mut rss = 0;
    let mut marker_at = None;
    let mut cpu_at_marker = (0.0, 0.0);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        rss = rss.max(vm_hwm(pid));
        if marker_at.is_none() {
            let seen: Result<Option<i32>, _> = tc
                .query_first(format!(
                    "SELECT id FROM `{db}`.bench_marker WHERE id = {}",
                    b.marker
                ))
                .await;
            if matches!(seen, Ok(Some(_))) {
                marker_at = Some(start.elapsed().as_secs_f64());
                cpu_at_marker = (cpu_of(&tp), cpu_of(&sp));
            }
        }
        ensure!(
            start.elapsed() < Duration::from_secs(1800),
            "weir did not finish in 30 minutes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let exit = start.elapsed().as_secs_f64();
    let after = proc_cpu("self", true).unwrap_or(0.0) - proc_cpu("self", false).unwrap_or(0.0);
    ensure!(status.success(), "weir run --once failed: {status}");
    let secs = match marker_at {
        Some(s) => s,
        None => {
            cpu_at_marker = (cpu_of(&tp), cpu_of(&sp));
            exit
        }
    };
    println!("  (weir: marker on the target after {secs:.2} s, process exit after {exit:.2} s)");
    check_target(tc, &db, &ctx.tables, &b.sums, "weir").await?;
    tc.query_drop(format!(
        "DROP DATABASE `{db}`; DROP DATABASE IF EXISTS `_weir`"
    ))
    .await?;
    std::fs::remove_dir_all(&dir)?;
    Ok(Cost {
        secs,
        client_cpu: after - before,
        target_cpu: cpu_at_marker.0 - t0,
        source_cpu: cpu_at_marker.1 - s0,
        rss,
    })
}

fn cleanup_source(db: &str) -> Result<String> {
    // This run's database and leftovers of bench processes that are gone (never binlogs).
    let mut drop = String::new();
    let out = Command::new(client_bin())
        .args(["-h", HOST, "-P", &PORT.to_string(), "-u", "root", "-N", "-B", "-e"])
        .arg("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'weir\\_mysink\\_%'")
        .output()?;
    for name in String::from_utf8_lossy(&out.stdout).lines().map(str::trim) {
        let pid = name.trim_start_matches("weir_mysink_");
        if !name.is_empty() && (name == db || !Path::new("/proc").join(pid).exists()) {
            drop.push_str(&format!("DROP DATABASE IF EXISTS `{name}`;\n"));
        }
    }
    drop.push_str(&format!("DROP DATABASE IF EXISTS `{db}`;\n"));
    Ok(drop)
}

pub async fn run(cfg: MysqlSqlBench) -> Result<()> {
    let pid = std::process::id();
    let db = format!("weir_mysink_{pid}");
    let mut src = connect(PORT, "")
        .await
        .context("the shared MariaDB (scripts/services.sh mariadb)")?;
    src.query_drop(cleanup_source(&db)?).await?;
    let base = std::env::temp_dir().join(format!("weir-bench-mysql-sql-{pid}"));
    std::fs::create_dir_all(&base)?;
    // Ids unlikely to clash with the source's or other tests' replicas.
    let ids = 2_900_000_000 + (pid % 1_000_000) * 10;
    let target = match Target::start(&base, ids) {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&base);
            return Err(e);
        }
    };
    let mut ctx = Ctx {
        weir: cfg.weir.clone(),
        db,
        base,
        target,
        weir_server_id: ids + 1,
        tables: Vec::new(),
        sysbench_txns: cfg.sysbench_txns,
        bulk_txns: cfg.bulk_txns,
    };
    let result = bench(&cfg, &mut ctx, &mut src).await;
    let cleaned = match cleanup_source(&ctx.db) {
        Ok(sql) => src.query_drop(sql).await.map_err(anyhow::Error::from),
        Err(e) => Err(e),
    };
    let base = ctx.base.clone();
    drop(ctx); // stops the target and removes its directory
    let _ = std::fs::remove_dir_all(&base);
    result?;
    cleaned
}

async fn bench(cfg: &MysqlSqlBench, ctx: &mut Ctx, src: &mut Conn) -> Result<()> {
    let db = ctx.db.clone();
    let t = Instant::now();
    src.query_drop(format!("CREATE DATABASE `{db}`")).await?;
    run_ok(
        Command::new("sysbench")
            .arg("oltp_write_only")
            .args(sysbench_conn(&db))
            .arg("prepare"),
    )?;
    src.query_drop(format!(
        "CREATE TABLE `{db}`.bulk (id BIGINT PRIMARY KEY, k INT NOT NULL, v INT NOT NULL, \
           filler VARCHAR(64) NOT NULL) ENGINE=InnoDB; \
         INSERT INTO `{db}`.bulk SELECT seq, seq % 1000, 0, MD5(seq) FROM `{db}`.seq_1_to_{BULK_ROWS}; \
         CREATE TABLE `{db}`.bench_marker (id INT PRIMARY KEY, at DATETIME(6) NOT NULL) ENGINE=InnoDB"
    ))
    .await?;
    ctx.tables = src
        .query::<String, _>(format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' \
             ORDER BY TABLE_NAME"
        ))
        .await?;
    let (v, t_ver): (String, String) = {
        let mut tc = connect(ctx.target.port, "").await?;
        let tv: Option<String> = tc.query_first("SELECT VERSION()").await?;
        let sv: Option<String> = src.query_first("SELECT VERSION()").await?;
        (sv.unwrap_or_default(), tv.unwrap_or_default())
    };
    println!(
        "source {db} on {HOST}:{PORT} ({v}): sysbench {SB_TABLES} x {SB_TABLE_SIZE} rows + \
         {BULK_ROWS}-row bulk table in {:.1} s; target mariadbd ({t_ver}) on port {}",
        t.elapsed().as_secs_f64(),
        ctx.target.port
    );
    let mut tc = connect(ctx.target.port, "").await?;
    let mut ratios: Vec<(&str, Vec<f64>, Vec<f64>)> = Vec::new();
    for kind in ["sysbench", "bulk"] {
        if (kind == "sysbench" && cfg.sysbench_txns == 0) || (kind == "bulk" && cfg.bulk_txns == 0)
        {
            continue;
        }
        let b = prepare(ctx, src, kind).await?;
        let n = b.events;
        println!();
        println!(
            "## [{kind}] {n} row events: native replica (START SLAVE) vs weir run --once (mysql sink)"
        );
        let (mut rate, mut cpu) = (vec![], vec![]);
        for r in 1..=cfg.rounds {
            println!("round {r}:");
            let settle = || tokio::time::sleep(Duration::from_secs(2));
            let (nc, wc) = if r % 2 == 1 {
                settle().await;
                let n = native(ctx, &b, &mut tc).await?;
                settle().await;
                let w = weir_run(ctx, &b, &mut tc, r).await?;
                (n, w)
            } else {
                settle().await;
                let w = weir_run(ctx, &b, &mut tc, r).await?;
                settle().await;
                let n = native(ctx, &b, &mut tc).await?;
                (n, w)
            };
            println!(
                "  native replica   {:>7.2} s {:>9.0} events/s | target mariadbd {:.2} s CPU, source mariadbd {:.2} s",
                nc.secs,
                nc.rate(n),
                nc.target_cpu,
                nc.source_cpu
            );
            println!(
                "  weir run --once  {:>7.2} s {:>9.0} events/s | weir {:.2} s CPU, target mariadbd {:.2} s, source mariadbd {:.2} s | peak RSS {} MiB",
                wc.secs,
                wc.rate(n),
                wc.client_cpu,
                wc.target_cpu,
                wc.source_cpu,
                wc.rss >> 20
            );
            println!("  target checksums equal to the source: native yes, weir yes");
            let r_rate = nc.secs / wc.secs;
            let r_cpu = wc.per_cpu(n) / nc.per_cpu(n);
            println!(
                "  ratio weir / native: events/s {r_rate:.2}, events per CPU-s (contender + target server) {r_cpu:.2}"
            );
            rate.push(r_rate);
            cpu.push(r_cpu);
        }
        std::fs::remove_file(&b.dump)?;
        std::fs::remove_dir_all(&b.template)?;
        ratios.push((kind, rate, cpu));
    }
    println!();
    println!("## summary: weir / native replica (higher is better)");
    for (kind, mut rate, mut cpu) in ratios {
        summary(&format!("[{kind}] events/s [aim >= 1.0]"), &mut rate);
        summary(&format!("[{kind}] events per CPU-s"), &mut cpu);
    }
    Ok(())
}
