//! MySQL/MariaDB source benchmark against python `mysql-replication` and `mariadb-binlog`, on
//! the same binlog backlog in the same run (`weir-bench mysql ...`, or `bench/run.sh mysql`).
//!
//! (e) decode: a fixed binlog backlog (inserts and updates in 1,000-row transactions into a
//!     fresh database) read by
//!     - `mariadb-binlog --read-from-remote-server --raw` (the transfer ceiling: no decoding,
//!       the events are written as they arrive to a tmpfs file),
//!     - python `mysql-replication` (`BinLogStreamReader`, rows decoded and counted),
//!     - `weir run --once` (binlog → staging log → file sink, what users run), from a fresh
//!       copy of a pipeline data dir made before the backlog, so every round reads the same
//!       events,
//!     - weir's `MysqlSource` driven in this process (decode only: no log, no sink).
//!
//! Rounds rotate which contender goes first. CPU is the contender's own (client); the server
//! figure is the whole `mariadbd` process over the contender's run, which includes whatever
//! else the shared server does at that moment (reported, not used in ratios).
//! Nothing here purges binlogs: the server is shared with other tests.

use crate::measure::{count_lines, median, proc_cpu, vm_hwm};
use anyhow::{Context, Result, bail, ensure};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weir_api::{MysqlPosition, Source, SourceItem, SourcePosition};
use weir_mysql::{MysqlSource, MysqlSourceConfig};

const HOST: &str = "127.0.0.1";
const PORT: &str = "3306";
const USER: &str = "root";
const TXN_ROWS: u64 = 1000;

/// Settings of `weir-bench mysql`.
pub struct MysqlBench {
    pub weir: PathBuf,
    pub events: u64,
    pub rounds: u32,
    /// The python of a venv with `mysql-replication` installed.
    pub python: PathBuf,
}

#[derive(Clone, Copy, Default)]
struct Cost {
    secs: f64,
    client_cpu: f64,
    /// CPU of the whole mariadbd process during the run (includes other clients).
    server_cpu: f64,
    rss: u64,
}

impl Cost {
    fn rate(&self, n: u64) -> f64 {
        n as f64 / self.secs
    }
    fn per_cpu(&self, n: u64) -> f64 {
        n as f64 / self.client_cpu.max(0.01)
    }
}

/// The pid of the local `mariadbd` (or `mysqld`), if this process may read it.
fn server_pid() -> Option<String> {
    for e in std::fs::read_dir("/proc").ok()? {
        let Ok(e) = e else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if matches!(comm.trim(), "mariadbd" | "mysqld") {
            return Some(name);
        }
    }
    None
}

fn server_cpu(pid: &Option<String>) -> f64 {
    pid.as_deref()
        .and_then(|p| proc_cpu(p, false))
        .unwrap_or(0.0)
}

/// Runs a child to completion (stdout to `out`), sampling its peak RSS.
fn run_child(mut cmd: Command, out: Option<&Path>, srv: &Option<String>) -> Result<Cost> {
    match out {
        Some(p) => cmd.stdout(std::fs::File::create(p)?),
        None => cmd.stdout(Stdio::null()),
    };
    cmd.stdin(Stdio::null());
    let before = proc_cpu("self", true).unwrap_or(0.0) - proc_cpu("self", false).unwrap_or(0.0);
    let s0 = server_cpu(srv);
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
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
    ensure!(status.success(), "{cmd:?} failed: {status}");
    let after = proc_cpu("self", true).unwrap_or(0.0) - proc_cpu("self", false).unwrap_or(0.0);
    Ok(Cost {
        secs,
        client_cpu: after - before,
        server_cpu: server_cpu(srv) - s0,
        rss,
    })
}

/// Runs SQL through the `mariadb` client; returns its tab-separated output.
fn sql(db: Option<&str>, text: &str) -> Result<String> {
    let mut cmd = Command::new(client_bin());
    cmd.args(["-h", HOST, "-P", PORT, "-u", USER, "-N", "-B"]);
    if let Some(db) = db {
        cmd.arg(db);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the mariadb client")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "mariadb client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

pub(crate) fn client_bin() -> &'static str {
    if Path::new("/usr/bin/mariadb").exists() {
        "mariadb"
    } else {
        "mysql"
    }
}

pub(crate) fn binlog_bin() -> &'static str {
    if Path::new("/usr/bin/mariadb-binlog").exists() {
        "mariadb-binlog"
    } else {
        "mysqlbinlog"
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FilePos {
    pub(crate) file: String,
    pub(crate) pos: u64,
}

impl FilePos {
    pub(crate) fn key(&self) -> (u64, u64) {
        let n = self
            .file
            .rsplit_once('.')
            .and_then(|(_, n)| n.parse().ok())
            .unwrap_or(0);
        (n, self.pos)
    }
}

impl std::fmt::Display for FilePos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

pub(crate) fn master_status() -> Result<FilePos> {
    let out = sql(None, "SHOW MASTER STATUS")?;
    let mut f = out.split('\t');
    let file = f.next().context("SHOW MASTER STATUS: no file")?.trim();
    let pos = f.next().context("SHOW MASTER STATUS: no position")?.trim();
    ensure!(!file.is_empty(), "the binary log is off");
    Ok(FilePos {
        file: file.to_owned(),
        pos: pos.parse()?,
    })
}

struct Setup {
    db: String,
    /// Pipeline dir (pipeline.toml + data) made before the backlog; each round copies it.
    template: PathBuf,
    start: FilePos,
    end: FilePos,
    /// Bytes of binlog between start and end (other clients' events included).
    bytes: u64,
    server_id: u32,
}

fn cleanup(db: &str) -> Result<()> {
    // This run's database and leftovers of interrupted runs (never binlogs).
    let dbs = sql(
        None,
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'weir\\_mybench\\_%'",
    )?;
    let mut drop = String::new();
    for name in dbs.lines().map(str::trim).filter(|s| !s.is_empty()) {
        let pid = name.trim_start_matches("weir_mybench_");
        // Only databases of bench processes that are gone (or this one).
        if name == db || !Path::new("/proc").join(pid).exists() {
            drop.push_str(&format!("DROP DATABASE IF EXISTS `{name}`;\n"));
        }
    }
    drop.push_str(&format!("DROP DATABASE IF EXISTS `{db}`;\n"));
    sql(None, &drop)?;
    Ok(())
}

fn pipeline_toml(db: &str, server_id: u32) -> String {
    format!(
        "name = \"bench\"\ndata_dir = \"data\"\n[source]\ntype = \"mysql\"\n\
         url = \"mysql://{USER}@{HOST}:{PORT}/{db}\"\ntables = [\"{db}.bench_stream\"]\n\
         server_id = {server_id}\nsnapshot = \"never\"\n[[sinks]]\nname = \"files\"\n\
         type = \"file\"\npath = \"out\"\n"
    )
}

fn weir_cmd(weir: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(weir);
    cmd.args(["run", "--once"])
        .arg(dir.join("pipeline.toml"))
        .current_dir(dir)
        .env("RUST_LOG", "warn");
    cmd
}

fn setup(cfg: &MysqlBench, base: &Path) -> Result<Setup> {
    let pid = std::process::id();
    let db = format!("weir_mybench_{pid}");
    // A replica id unlikely to clash with other tests' replicas.
    let server_id = 3_000_000_000 + (pid % 1_000_000) * 10;
    cleanup(&db)?;
    sql(
        None,
        &format!(
            "CREATE DATABASE `{db}`; CREATE TABLE `{db}`.bench_stream (id BIGINT PRIMARY KEY, \
             aid INT NOT NULL, bid INT NOT NULL, abalance INT NOT NULL, amount DECIMAL(12,2) NOT NULL, \
             created DATETIME(6) NOT NULL, active BOOLEAN NOT NULL, filler VARCHAR(64) NOT NULL) \
             ENGINE=InnoDB;"
        ),
    )?;
    // The template pipeline: started (and caught up) before the backlog, so its position is
    // before it.
    let template = base.join("template");
    std::fs::create_dir_all(&template)?;
    std::fs::write(
        template.join("pipeline.toml"),
        pipeline_toml(&db, server_id + 1),
    )?;
    let mut cmd = weir_cmd(&cfg.weir, &template);
    cmd.stdout(Stdio::null());
    let st = cmd.status().context("running weir")?;
    ensure!(st.success(), "the template weir run failed: {st}");
    let _ = std::fs::remove_dir_all(template.join("out"));
    let start = master_status()?;

    // The backlog: 4 of 5 transactions insert 1,000 new rows, every 5th updates 1,000 rows.
    let t = Instant::now();
    let txns = cfg.events.div_ceil(TXN_ROWS);
    let mut script = String::from("SET SESSION binlog_format = 'ROW';\n");
    let mut inserted = 0u64;
    for i in 0..txns {
        if i % 5 == 4 && inserted >= TXN_ROWS {
            let lo = ((i * 7919) % (inserted / TXN_ROWS)) * TXN_ROWS + 1;
            let hi = lo + TXN_ROWS - 1;
            script.push_str(&format!(
                "BEGIN; UPDATE bench_stream SET abalance = abalance + 1, amount = amount + 0.01, \
                 created = created + INTERVAL 1 SECOND WHERE id BETWEEN {lo} AND {hi}; COMMIT;\n"
            ));
        } else {
            let (lo, hi) = (inserted + 1, inserted + TXN_ROWS);
            script.push_str(&format!(
                "BEGIN; INSERT INTO bench_stream SELECT seq, seq % 100000, seq % 10, \
                 CAST((seq * 7) % 10000 AS SIGNED) - 5000, (seq % 100000) / 100.0, \
                 TIMESTAMP'2026-01-01 00:00:00' + INTERVAL seq * 1000001 MICROSECOND, seq % 2 = 0, \
                 CONCAT(MD5(seq), MD5(seq + 1)) FROM seq_{lo}_to_{hi}; COMMIT;\n"
            ));
            inserted += TXN_ROWS;
        }
    }
    sql(Some(&db), &script)?;
    let end = master_status()?;
    let count: u64 = sql(Some(&db), "SELECT COUNT(*) FROM bench_stream")?
        .trim()
        .parse()?;
    ensure!(
        count == inserted,
        "backlog has {count} rows, expected {inserted}"
    );
    let bytes = if start.file == end.file {
        end.pos - start.pos
    } else {
        0
    };
    println!(
        "backlog: {} row events in {txns} transactions in {:.1} s, binlog {start} .. {end} ({:.0} MB)",
        txns * TXN_ROWS,
        t.elapsed().as_secs_f64(),
        bytes as f64 / 1e6
    );
    Ok(Setup {
        db,
        template,
        start,
        end,
        bytes,
        server_id,
    })
}

/// `mariadb-binlog --read-from-remote-server --raw` from the backlog's start to the end of the
/// log (server id 0: the server closes the stream at the end instead of waiting).
fn raw(s: &Setup, dir: &Path, srv: &Option<String>) -> Result<(Cost, u64)> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Command::new(binlog_bin());
    cmd.args([
        "--read-from-remote-server",
        "--host",
        HOST,
        "--port",
        PORT,
        "--user",
        USER,
        "--raw",
        "--to-last-log",
    ])
    .arg(format!("--start-position={}", s.start.pos))
    .arg(format!("--result-file={}/", dir.display()))
    .arg(&s.start.file);
    let cost = run_child(cmd, None, srv)?;
    let mut bytes = 0;
    for e in std::fs::read_dir(dir)? {
        bytes += e?.metadata()?.len();
    }
    std::fs::remove_dir_all(dir)?;
    Ok((cost, bytes))
}

const PY: &str = r#"
import sys
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent
from pymysqlreplication.event import XidEvent
host, port, sid, f, pos, endf, endpos, schema = sys.argv[1:9]
end = (int(endf.rsplit('.', 1)[1]), int(endpos))
s = BinLogStreamReader(
    connection_settings=dict(host=host, port=int(port), user='root', passwd=''),
    server_id=int(sid), blocking=False, resume_stream=True, log_file=f, log_pos=int(pos),
    only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent])
n = 0
for ev in s:
    if isinstance(ev, XidEvent):
        if (int(s.log_file.rsplit('.', 1)[1]), s.log_pos) >= end:
            break
        continue
    if ev.schema == schema:
        n += len(ev.rows)
s.close()
print(n)
"#;

fn python(s: &Setup, cfg: &MysqlBench, base: &Path, srv: &Option<String>) -> Result<(Cost, u64)> {
    let script = base.join("count.py");
    if !script.exists() {
        std::fs::write(&script, PY)?;
    }
    let out = base.join("python.out");
    let mut cmd = Command::new(&cfg.python);
    cmd.arg(&script).args([
        HOST,
        PORT,
        &(s.server_id + 2).to_string(),
        &s.start.file,
        &s.start.pos.to_string(),
        &s.end.file,
        &s.end.pos.to_string(),
        &s.db,
    ]);
    let cost = run_child(cmd, Some(&out), srv)?;
    let n = std::fs::read_to_string(&out)?
        .trim()
        .parse()
        .context("python's count")?;
    Ok((cost, n))
}

fn weir_run(s: &Setup, cfg: &MysqlBench, dir: &Path, srv: &Option<String>) -> Result<(Cost, u64)> {
    let _ = std::fs::remove_dir_all(dir);
    let st = Command::new("cp")
        .arg("-a")
        .arg(&s.template)
        .arg(dir)
        .status()?;
    ensure!(st.success(), "copying the template pipeline");
    let mut cmd = weir_cmd(&cfg.weir, dir);
    cmd.stderr(Stdio::inherit());
    let cost = run_child(cmd, None, srv)?;
    let lines = count_lines(&dir.join("out"))?;
    std::fs::remove_dir_all(dir)?;
    Ok((cost, lines))
}

/// weir's `MysqlSource` in this process, counting changes up to the backlog's end.
async fn weir_decode(s: &Setup, srv: &Option<String>) -> Result<(Cost, u64)> {
    let mut source = MysqlSource::new(
        MysqlSourceConfig {
            url: format!("mysql://{USER}@{HOST}:{PORT}/{}", s.db),
            tables: vec![format!("{}.bench_stream", s.db)],
            exclude: vec![],
            server_id: Some(s.server_id + 3),
        },
        "bench",
    );
    let end = s.end.key();
    let reached = |p: &SourcePosition| match p {
        SourcePosition::Mysql(p) => {
            FilePos {
                file: p.file.clone(),
                pos: p.pos,
            }
            .key()
                >= end
        }
        _ => false,
    };
    let cpu0 = proc_cpu("self", false).unwrap_or(0.0);
    let s0 = server_cpu(srv);
    let start = Instant::now();
    source
        .start(Some(SourcePosition::Mysql(MysqlPosition {
            file: s.start.file.clone(),
            pos: s.start.pos,
            gtid: None,
            server_id: None,
        })))
        .await?;
    let mut events = 0u64;
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
        if done {
            break;
        }
        if start.elapsed() > Duration::from_secs(3600) {
            bail!("MysqlSource did not reach {} within an hour", s.end);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(source);
    let cpu = proc_cpu("self", false).unwrap_or(0.0) - cpu0;
    Ok((
        Cost {
            secs,
            client_cpu: cpu,
            server_cpu: server_cpu(srv) - s0,
            rss: 0,
        },
        events,
    ))
}

fn line(what: &str, c: &Cost, n: u64) -> String {
    let mut s = format!(
        "  {what:<34} {:>7.2} s {:>9.0} rows/s | {:>9.0} rows/CPU-s ({:.2} s client) | mariadbd {:.2} s",
        c.secs,
        c.rate(n),
        c.per_cpu(n),
        c.client_cpu,
        c.server_cpu
    );
    if c.rss > 0 {
        s.push_str(&format!(" | peak RSS {} MiB", c.rss >> 20));
    }
    s
}

fn summary(name: &str, v: &mut [f64]) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "  {name:<52} min {lo:.2}  median {:.2}  ({} rounds: {})",
        median(v),
        v.len(),
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

pub async fn run(cfg: MysqlBench) -> Result<()> {
    ensure!(
        cfg.python.exists(),
        "{} not found: python3 -m venv /tmp/weir-bench-venv && /tmp/weir-bench-venv/bin/pip install mysql-replication",
        cfg.python.display()
    );
    let base = std::env::temp_dir().join(format!("weir-bench-mysql-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let db = format!("weir_mybench_{}", std::process::id());
    let result = match setup(&cfg, &base) {
        Ok(s) => rounds(&cfg, &s, &base).await,
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&base);
    cleanup(&db)?;
    result
}

async fn rounds(cfg: &MysqlBench, s: &Setup, base: &Path) -> Result<()> {
    let n = cfg.events.div_ceil(TXN_ROWS) * TXN_ROWS;
    let srv = server_pid();
    // Raw output goes to tmpfs when there is one, so the ceiling is the transfer, not a disk.
    let shm = Path::new("/dev/shm");
    let raw_dir = if shm.is_dir() {
        shm.join(format!("weir-bench-raw-{}", std::process::id()))
    } else {
        base.join("raw")
    };
    // Warm the binlog pages once for everyone.
    let (_, bytes) = raw(s, &raw_dir, &srv)?;
    println!(
        "raw read: {:.0} MB from {} to the end of the log (backlog {:.0} MB)",
        bytes as f64 / 1e6,
        s.start,
        s.bytes as f64 / 1e6
    );
    println!();
    println!(
        "## (e) decode {n} row events from a fixed binlog backlog: mariadb-binlog --raw, python mysql-replication, weir"
    );
    let (mut py_ratio, mut py_cpu, mut raw_ratio) = (vec![], vec![], vec![]);
    let (mut dpy_ratio, mut dpy_cpu, mut draw_ratio) = (vec![], vec![], vec![]);
    for r in 1..=cfg.rounds {
        println!("round {r}:");
        let (mut rawc, mut py, mut wr, mut dec) = (None, None, None, None);
        for k in 0..4 {
            match (k + r as usize) % 4 {
                0 => rawc = Some(raw(s, &raw_dir, &srv)?.0),
                1 => {
                    let (c, rows) = python(s, cfg, base, &srv)?;
                    ensure!(rows == n, "python counted {rows} rows, expected {n}");
                    py = Some(c);
                }
                2 => {
                    let (c, lines) = weir_run(s, cfg, &base.join(format!("run{r}")), &srv)?;
                    ensure!(lines == n, "weir run wrote {lines} events, expected {n}");
                    wr = Some(c);
                }
                _ => {
                    let (c, events) = weir_decode(s, &srv).await?;
                    ensure!(
                        events == n,
                        "MysqlSource gave {events} events, expected {n}"
                    );
                    dec = Some(c);
                }
            }
        }
        let (rawc, py, wr, dec) = (
            rawc.context("raw")?,
            py.context("python")?,
            wr.context("weir run")?,
            dec.context("decode")?,
        );
        println!("{}", line("mariadb-binlog --raw (no decode)", &rawc, n));
        println!("{}", line("python mysql-replication", &py, n));
        println!("{}", line("weir run --once (file sink)", &wr, n));
        println!("{}", line("weir MysqlSource only", &dec, n));
        py_ratio.push(py.secs / wr.secs);
        py_cpu.push(wr.per_cpu(n) / py.per_cpu(n));
        raw_ratio.push(rawc.secs / wr.secs);
        dpy_ratio.push(py.secs / dec.secs);
        dpy_cpu.push(dec.per_cpu(n) / py.per_cpu(n));
        draw_ratio.push(rawc.secs / dec.secs);
        println!(
            "  weir run: {:.1}x python, {:.2} of raw | MysqlSource: {:.1}x python, {:.2} of raw",
            py.secs / wr.secs,
            rawc.secs / wr.secs,
            py.secs / dec.secs,
            rawc.secs / dec.secs
        );
    }
    println!();
    println!("## summary (higher is better)");
    summary("weir run / python, rows/s [aim >= 20]", &mut py_ratio);
    summary("weir run / python, rows per CPU-s", &mut py_cpu);
    summary(
        "weir run / mariadb-binlog raw, rows/s [aim >= 0.5]",
        &mut raw_ratio,
    );
    summary("MysqlSource / python, rows/s [aim >= 20]", &mut dpy_ratio);
    summary("MysqlSource / python, rows per CPU-s", &mut dpy_cpu);
    summary(
        "MysqlSource / mariadb-binlog raw, rows/s [aim >= 0.5]",
        &mut draw_ratio,
    );
    Ok(())
}
