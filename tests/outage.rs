//! Outages of a sink's target while pgbench writes to the source (issues 5, 6 and 7): a
//! PostgreSQL target stopped for 30 s, a MariaDB target killed and kept down for 30 s, and a
//! Kafka broker (tansu on SQLite) killed with SIGKILL and restarted on the same storage.
//!
//! The source is the shared PostgreSQL 15 at 127.0.0.1:5432 (scripts/services.sh), with a
//! fresh database per test. The targets that go down are throwaway servers each test starts
//! itself on a free loopback port, in a temporary directory (never the shared servers):
//! `initdb` + `pg_ctl`, `mariadb-install-db` + `mariadbd`, `tansu broker`.
//!
//! What is checked, against real servers only:
//! - the supervisor restarts the failing sink and it catches up in the *running* process,
//!   with nothing lost (every pgbench keyed table equal at the end: row count and an ordered
//!   checksum);
//! - `/healthz` is 503, naming the sink, for the whole outage once the sink noticed it, the
//!   sink's `weir_sink_retries_total` grows meanwhile, and `/healthz` is 200 again after;
//! - the source keeps staging while the sink is down;
//! - Kafka: the broker SIGKILLed for 10 s under a running weir, then the broker and weir
//!   SIGKILLed together while the sink catches up on the backlog, and a new weir started while
//!   the broker is down: every source change exactly once per key, in commit order
//!   (pgbench_history's rows say which change each transaction made). Turning off the sink's
//!   skip of what already reached a partition makes this test fail (tried: 2 of 2 runs).
//!   What `/healthz` says while the broker is down is printed, not asserted: the sink waits
//!   inside librdkafka's flush (up to 120 s) and stays "running", so it is 200 throughout.

use crate::common::*;
use crate::connectors::{Defer, first_differences, psql, unique};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

/// GET over plain HTTP/1.1: (status, body), or None when the server does not answer.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// One series of the Prometheus text from `/metrics` (`name` with its labels), if present.
pub(crate) fn metric(port: u16, series: &str) -> Option<f64> {
    let (status, body) = http_get(port, "/metrics")?;
    assert_eq!(status, 200, "/metrics: {body}");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A program of the PostgreSQL 15 install (Debian's postgresql-15), else from PATH.
fn pg_bin(name: &str) -> String {
    let p = format!("/usr/lib/postgresql/15/bin/{name}");
    if Path::new(&p).exists() {
        p
    } else {
        name.into()
    }
}

/// `pgbench` on database `db` of the shared PostgreSQL.
fn pgbench(db: &str) -> Command {
    let mut c = Command::new(pg_bin("pgbench"));
    c.args(["-h", "127.0.0.1", "-U", "postgres"])
        .env("PGPASSWORD", "postgres")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c.arg(db);
    c
}

/// A child process SIGKILLed and reaped when dropped.
pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }
}

/// A pgbench database on the shared PostgreSQL (`pgbench -i -s SCALE`) and the pipeline
/// name for it; the pipeline's slot and the database are dropped with it.
struct PgbenchSource {
    db: String,
    name: String,
    _cleanup: Defer,
}

impl PgbenchSource {
    fn new(kind: &str, scale: u32) -> Self {
        let tag = unique(kind);
        let db = format!("weir_out_{tag}");
        let name = format!("out{tag}");
        psql("postgres", &format!("CREATE DATABASE \"{db}\""));
        let cleanup = {
            let (db, slot) = (db.clone(), format!("weir_{name}"));
            Defer::new(move || {
                let _ = psql_command("postgres")
                    .args(["-v", "ON_ERROR_STOP=0", "-c"])
                    .arg(format!(
                        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                           WHERE slot_name = '{slot}' AND active_pid IS NOT NULL"
                    ))
                    .args(["-c", "SELECT pg_sleep(0.3)", "-c"])
                    .arg(format!(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                           WHERE slot_name = '{slot}'"
                    ))
                    .arg("-c")
                    .arg(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))
                    .output();
            })
        };
        let out = pgbench(&db)
            .args(["-i", "-q", "-s", &scale.to_string()])
            .output()
            .expect("pgbench is missing (Debian package postgresql-15)");
        assert!(
            out.status.success(),
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PgbenchSource {
            db,
            name,
            _cleanup: cleanup,
        }
    }

    /// `pgbench -T secs -R rate` with two clients, running.
    fn load(&self, secs: u32, rate: u32) -> Proc {
        Proc(
            pgbench(&self.db)
                .args(["-n", "-c", "2", "-j", "1"])
                .args(["-T", &secs.to_string(), "-R", &rate.to_string()])
                .spawn()
                .unwrap(),
        )
    }

    fn url(&self) -> String {
        format!("postgres://postgres:postgres@127.0.0.1:5432/{}", self.db)
    }
}

/// Waits for pgbench to end and asserts it succeeded.
fn assert_load_ok(mut bench: Proc) {
    let mut err = String::new();
    if let Some(mut e) = bench.0.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = bench.0.wait().unwrap();
    assert!(status.success(), "pgbench failed ({status}): {err}");
}

/// pgbench's keyed tables with their key, and the columns compared on a MariaDB target.
const PGBENCH_KEYED: [(&str, &str, &str); 3] = [
    ("pgbench_accounts", "aid", "aid, bid, abalance"),
    ("pgbench_branches", "bid", "bid, bbalance"),
    ("pgbench_tellers", "tid", "tid, bid, tbalance"),
];

/// `weir run PIPELINE`, stderr appended to `log`; SIGKILLed when dropped.
pub(crate) struct WeirRun {
    pub(crate) proc: Proc,
    log: PathBuf,
}

impl WeirRun {
    pub(crate) fn start(pipeline: &Path) -> Self {
        let log = pipeline.with_extension("run.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = weir()
            .arg("run")
            .arg(pipeline)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("cannot start weir");
        WeirRun {
            proc: Proc(child),
            log,
        }
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) when weir has exited.
    pub(crate) fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.proc.0.try_wait().unwrap() {
            panic!("weir run exited {when} ({status}):\n{}", self.log_text());
        }
    }

    /// SIGTERM; asserts a graceful exit (status 0) within 60 s and no panic in the log.
    pub(crate) fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.proc.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.proc.0.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "weir run did not stop within 60 s of SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let log = self.log_text();
        assert!(status.success(), "weir run exited with {status}:\n{log}");
        assert!(!log.contains("panicked"), "weir panicked:\n{log}");
        log
    }
}

/// A pipeline file: the pgbench source (`tables`), one sink `replica` (`sink` is the rest of
/// its section), and `/metrics` + `/healthz` on `metrics_port`.
fn outage_pipeline(
    dir: &Path,
    src: &PgbenchSource,
    tables: &str,
    sink: &str,
    metrics_port: u16,
) -> PathBuf {
    write_pipeline(
        dir,
        &format!(
            "name = \"{}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"postgres\"\n\
             url = \"{}\"\n{tables}\n\n\
             [[sinks]]\nname = \"replica\"\n{sink}\n\n\
             [admin]\nmetrics = \"127.0.0.1:{metrics_port}\"\n",
            src.name,
            src.url()
        ),
    )
}

const KEYED_TABLES: &str =
    "tables = [\"public.pgbench_*\"]\nexclude = [\"public.pgbench_history\"]";

// ---------------------------------------------------------------- throwaway servers

/// A throwaway PostgreSQL 15 cluster (`initdb`, trust auth) on a free loopback port, run as
/// the `postgres` OS user when the tests run as root; stopped and deleted when dropped.
pub(crate) struct ThrowawayPg {
    dir: TempDir,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    /// Extra server settings (`name=value`), passed as `-c` options.
    settings: Vec<String>,
}

impl ThrowawayPg {
    fn new() -> Self {
        Self::with_settings(&[])
    }

    /// A cluster started with extra settings (`name=value`, e.g. `wal_level=logical`).
    pub(crate) fn with_settings(settings: &[&str]) -> Self {
        let dir = TempDir::new("outage-pg");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let as_postgres = running_as_root();
        let pg = ThrowawayPg {
            dir,
            data,
            port: free_port(),
            as_postgres,
            settings: settings.iter().map(|s| s.to_string()).collect(),
        };
        if as_postgres {
            // initdb refuses root: the cluster belongs to the postgres user.
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&pg.data)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot chown {} to postgres", pg.data.display());
        }
        let out = pg
            .command("initdb")
            .arg("-D")
            .arg(&pg.data)
            .args(["-U", "postgres", "--auth=trust", "-N", "-E", "UTF8"])
            .output()
            .expect("initdb is missing (Debian package postgresql-15)");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start();
        pg
    }

    /// A PostgreSQL program, as the postgres user when running as root.
    fn command(&self, program: &str) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &pg_bin(program)]);
            c
        } else {
            Command::new(pg_bin(program))
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        self.command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("pg_ctl is missing (Debian package postgresql-15)")
    }

    fn start(&self) {
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50",
            self.port,
            self.data.display()
        );
        for setting in &self.settings {
            opts.push_str(" -c ");
            opts.push_str(setting);
        }
        let log = self.data.join("server.log");
        let out = self.pg_ctl(&[
            "-w",
            "-t",
            "120",
            "-o",
            &opts,
            "-l",
            log.to_str().unwrap(),
            "start",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `pg_ctl stop -m fast`: disconnects every client, rolls back open transactions.
    fn stop_fast(&self) {
        let out = self.pg_ctl(&["-w", "-t", "120", "-m", "fast", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl restart -m fast`: every connection cut, the server back with the same data.
    pub(crate) fn restart_fast(&self) {
        self.stop_fast();
        self.start();
    }

    /// The server's log so far.
    pub(crate) fn server_log(&self) -> String {
        std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
    }

    pub(crate) fn psql(&self, sql: &str) -> String {
        let mut c = Command::new("psql");
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-XtAq",
            ])
            .args(["-c", sql]);
        psql_checked(&mut c, sql)
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-w", "-t", "60", "-m", "immediate", "stop"]);
        // `dir` (with the cluster) is removed next, by TempDir's drop.
        let _ = &self.dir;
    }
}

/// A throwaway MariaDB server (`mariadb-install-db`, root without password over TCP) on a
/// free loopback port; killed and deleted when dropped.
pub(crate) struct ThrowawayMaria {
    dir: TempDir,
    port: u16,
    server: Option<Proc>,
    /// Extra `mariadbd` options; the binary log stays off unless one of them turns it on.
    args: Vec<String>,
}

impl ThrowawayMaria {
    fn new() -> Self {
        Self::with_args(&[])
    }

    /// A server started with extra `mariadbd` options (e.g. `--log-bin=...`).
    pub(crate) fn with_args(args: &[&str]) -> Self {
        let dir = TempDir::new("outage-maria");
        let root = running_as_root();
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", dir.path().join("data").display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if root {
            install.arg("--user=root");
        }
        let out = install
            .output()
            .expect("mariadb-install-db is missing (Debian package mariadb-server)");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut m = ThrowawayMaria {
            dir,
            port: free_port(),
            server: None,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        m.start();
        m
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The server's error log so far.
    pub(crate) fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    pub(crate) fn start(&mut self) {
        let d = self.dir.path();
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--pid-file={}", d.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .args([
                "--bind-address=127.0.0.1",
                "--innodb-buffer-pool-size=64M",
                "--max-connections=50",
            ])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if !self.args.iter().any(|a| a.starts_with("--log-bin")) {
            cmd.arg("--skip-log-bin");
        }
        if running_as_root() {
            cmd.arg("--user=root");
        }
        let mut server = Proc(cmd.spawn().expect("mariadbd is missing (mariadb-server)"));
        wait_for("the throwaway mariadbd to accept connections", 90, || {
            if !server.running() {
                panic!(
                    "mariadbd exited:\n{}",
                    std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
                );
            }
            self.client()
                .args(["-e", "SELECT 1"])
                .output()
                .is_ok_and(|o| o.status.success())
                .then_some(())
        });
        self.server = Some(server);
    }

    /// SIGKILL: a crash, with whatever was in flight.
    pub(crate) fn kill(&mut self) {
        drop(self.server.take());
    }

    fn client(&self) -> Command {
        let mut c = Command::new("mariadb");
        c.args([
            "-h",
            "127.0.0.1",
            "-P",
            &self.port.to_string(),
            "-u",
            "root",
        ])
        .args(["--default-character-set=utf8mb4", "-N", "-B", "-r"]);
        c
    }

    pub(crate) fn sql(&self, sql: &str) -> String {
        let out = self
            .client()
            .args(["-e", sql])
            .output()
            .expect("the mariadb client is missing");
        assert!(
            out.status.success(),
            "mariadb failed: {}\n{sql}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// A throwaway tansu broker with its own SQLite file, started as scripts/services.sh starts
/// the shared one (tansu resolves `sqlite://` paths against its working directory).
struct ThrowawayTansu {
    dir: TempDir,
    port: u16,
    broker: Option<Proc>,
}

impl ThrowawayTansu {
    fn new() -> Self {
        let mut t = ThrowawayTansu {
            dir: TempDir::new("outage-tansu"),
            port: free_port(),
            broker: None,
        };
        t.start();
        t
    }

    fn binary() -> PathBuf {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        let cargo = home.join(".cargo/bin/tansu");
        if cargo.exists() {
            cargo
        } else {
            "tansu".into()
        }
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .unwrap();
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(Self::binary())
            .args(["broker", "--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tansu is missing: run scripts/services.sh (it installs it)");
        let mut broker = Proc(child);
        wait_for("the throwaway tansu to listen", 60, || {
            if !broker.running() {
                panic!("tansu exited:\n{}", self.log());
            }
            port_open(self.port).then_some(())
        });
        self.broker = Some(broker);
    }

    fn kill9(&mut self) {
        drop(self.broker.take());
    }

    /// Panics with the broker's log when it has exited.
    fn assert_running(&mut self) {
        if !self.broker.as_mut().is_some_and(|b| b.running()) {
            panic!("tansu is not running; its log:\n{}", self.log());
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

// ---------------------------------------------------------------- target outage scenario

/// A sink target that can be taken down and brought back.
trait Target {
    /// The `[[sinks]]` section after `name`.
    fn sink_section(&self) -> String;
    fn take_down(&mut self);
    fn bring_back(&mut self);
    /// Per keyed pgbench table: "count, checksum" of the target's rows, and a dump for
    /// messages; and the same computed at the source.
    fn digest(&self, table: &str, key: &str, cols: &str) -> (String, String);
    fn source_digest(&self, db: &str, table: &str, key: &str, cols: &str) -> (String, String);
}

struct PgTarget(ThrowawayPg);

impl Target for PgTarget {
    fn sink_section(&self) -> String {
        format!(
            "type = \"postgres\"\nurl = \"{}\"\nschema = \"public\"",
            self.0.url()
        )
    }
    fn take_down(&mut self) {
        self.0.stop_fast();
    }
    fn bring_back(&mut self) {
        self.0.start();
    }
    fn digest(&self, table: &str, key: &str, _: &str) -> (String, String) {
        (
            self.0.psql(&pg_digest_sql(table, key)),
            self.0.psql(&pg_dump_sql(table, key)),
        )
    }
    fn source_digest(&self, db: &str, table: &str, key: &str, _: &str) -> (String, String) {
        (
            psql_in(db, &pg_digest_sql(table, key)),
            psql_in(db, &pg_dump_sql(table, key)),
        )
    }
}

/// Row count and an ordered checksum of every column (the row's text form).
fn pg_digest_sql(table: &str, key: &str) -> String {
    format!(
        "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY {key}), '')) \
         FROM public.{table} t"
    )
}

fn pg_dump_sql(table: &str, key: &str) -> String {
    format!("SELECT t::text FROM public.{table} t ORDER BY {key}")
}

struct MariaTarget {
    server: ThrowawayMaria,
    db: &'static str,
}

impl Target for MariaTarget {
    fn sink_section(&self) -> String {
        format!(
            "type = \"mysql\"\nurl = \"mysql://root@127.0.0.1:{}/\"\nschema = \"{}\"",
            self.server.port, self.db
        )
    }
    fn take_down(&mut self) {
        self.server.kill();
    }
    fn bring_back(&mut self) {
        self.server.start();
    }
    fn digest(&self, table: &str, key: &str, cols: &str) -> (String, String) {
        let t = format!("`{}`.`{table}`", self.db);
        (
            self.server.sql(&format!(
                "SET SESSION group_concat_max_len = 1073741824; \
                 SELECT CONCAT(COUNT(*), '|', MD5(IFNULL(GROUP_CONCAT(CONCAT_WS(',', {cols}) \
                   ORDER BY {key} SEPARATOR '\\n'), ''))) FROM {t}"
            )),
            self.server.sql(&format!(
                "SELECT CONCAT_WS(',', {cols}) FROM {t} ORDER BY {key}"
            )),
        )
    }
    fn source_digest(&self, db: &str, table: &str, key: &str, cols: &str) -> (String, String) {
        (
            psql_in(
                db,
                &format!(
                    "SELECT count(*), md5(coalesce(string_agg(concat_ws(',', {cols}), E'\\n' \
                       ORDER BY {key}), '')) FROM public.{table}"
                ),
            ),
            psql_in(
                db,
                &format!("SELECT concat_ws(',', {cols}) FROM public.{table} ORDER BY {key}"),
            ),
        )
    }
}

/// Compares every keyed pgbench table; None when equal, else what differs.
fn differences(target: &dyn Target, db: &str) -> Option<String> {
    let mut out = String::new();
    for (table, key, cols) in PGBENCH_KEYED {
        let (src, _) = target.source_digest(db, table, key, cols);
        let (dst, _) = target.digest(table, key, cols);
        if src != dst {
            out.push_str(&format!("{table}: source {src:?}, target {dst:?}\n"));
        }
    }
    (!out.is_empty()).then_some(out)
}

fn assert_tables_equal(target: &dyn Target, db: &str, when: &str) -> String {
    let mut summary = String::new();
    for (table, key, cols) in PGBENCH_KEYED {
        let (src, src_dump) = target.source_digest(db, table, key, cols);
        let (dst, dst_dump) = target.digest(table, key, cols);
        if src != dst {
            panic!(
                "{when}: {table} differs (count, checksum: source {src:?}, target {dst:?}):\n{}",
                first_differences(&src_dump, &dst_dump)
            );
        }
        summary.push_str(&format!("{table} {src}; "));
    }
    summary
}

/// Issue 5/7's scenario: a pgbench load streams through weir into `target`; mid-load the
/// target goes down for `OUTAGE`; `/healthz` must say so the whole time and the sink's retries
/// grow; then the target comes back, `/healthz` is 200 again, and once the load ends the
/// running weir catches up to tables equal to the source's. A `--once` run after a graceful
/// stop changes nothing.
fn target_outage(kind: &str, target: &mut dyn Target) {
    const SCALE: u32 = 2;
    const OUTAGE: Duration = Duration::from_secs(30);
    const LOAD_SECS: u32 = 60;
    let started = Instant::now();
    let src = PgbenchSource::new(kind, SCALE);
    let dir = TempDir::new(kind);
    let http = free_port();
    let pipeline = outage_pipeline(dir.path(), &src, KEYED_TABLES, &target.sink_section(), http);
    let mut weir = WeirRun::start(&pipeline);
    let applied = "weir_sink_applied_events_total{sink=\"replica\"}".to_string();
    let retries = "weir_sink_retries_total{sink=\"replica\"}".to_string();
    let snapshot_rows = SCALE as f64 * (100_000.0 + 10.0 + 1.0);
    // The snapshot reaches the target first, so the outage falls into streaming.
    wait_for("the snapshot to be applied", 90, || {
        weir.assert_running("during the snapshot");
        (metric(http, &applied)? >= snapshot_rows).then_some(())
    });
    assert_eq!(http_get(http, "/healthz").unwrap().0, 200);
    let snapshot_done = started.elapsed();

    let bench = src.load(LOAD_SECS, 300);
    let load_started = Instant::now();
    // Streamed changes arrive at the target before it goes down.
    wait_for("streamed changes to be applied", 60, || {
        weir.assert_running("before the outage");
        (metric(http, &applied)? >= snapshot_rows + 500.0).then_some(())
    });
    let staged_at_stop = metric(http, "weir_source_events_total").unwrap();
    target.take_down();
    let down_at = Instant::now();

    // The sink notices at its next apply; from then on /healthz is 503 until the target is
    // back, naming the sink and its last error.
    let mut first: Option<(Duration, String, f64)> = None;
    let mut polls_503 = 0u32;
    while down_at.elapsed() < OUTAGE {
        weir.assert_running("during the outage");
        let (status, body) = http_get(http, "/healthz").expect("/healthz does not answer");
        match (&first, status) {
            (None, 200) => assert!(
                down_at.elapsed() < Duration::from_secs(20),
                "/healthz still 200 {:?} after the target went down",
                down_at.elapsed()
            ),
            (None, 503) => {
                let r = metric(http, &retries).unwrap();
                first = Some((down_at.elapsed(), body.clone(), r));
            }
            (Some((at, ..)), 200) => panic!(
                "/healthz turned 200 again {:?} after the target went down (503 since {at:?}) \
                 while it is still down: {body}",
                down_at.elapsed()
            ),
            (_, 503) => {}
            (_, s) => panic!("/healthz answered {s}: {body}"),
        }
        if status == 503 {
            polls_503 += 1;
            assert!(
                body.contains("sink replica is retrying") && body.contains("last error:"),
                "/healthz 503 without the sink's reason: {body}"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let (first_503, body_503, retries_first) =
        first.expect("/healthz never turned 503 while the target was down");
    let retries_end = metric(http, &retries).unwrap();
    assert!(
        retries_end > retries_first,
        "the sink's retries did not grow during the outage: {retries_first} → {retries_end}"
    );
    let staged_at_restart = metric(http, "weir_source_events_total").unwrap();
    assert!(
        staged_at_restart > staged_at_stop,
        "the source staged nothing while the sink's target was down"
    );
    let mut bench = bench;
    assert!(
        bench.running(),
        "the load ended during the outage: the test proved nothing (load took {:?})",
        load_started.elapsed()
    );
    let sink_state = http_get(http, "/status").unwrap().1;
    let st: Json = serde_json::from_str(&sink_state).unwrap();
    assert_eq!(st["healthy"], false, "{st}");
    assert_eq!(st["sinks"][0]["state"], "retrying", "{st}");

    target.bring_back();
    let back_at = Instant::now();
    // The supervisor's next retry (backoff of at most 30 s) reconnects.
    wait_for("/healthz 200 after the target came back", 90, || {
        weir.assert_running("after the outage");
        (http_get(http, "/healthz")?.0 == 200).then_some(())
    });
    let healthy_after = back_at.elapsed();
    assert_load_ok(bench);
    let load_took = load_started.elapsed();

    // The running weir catches up by itself: the tables converge.
    let caught_up_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(90);
    while let Some(d) = differences(target, &src.db) {
        weir.assert_running("while catching up");
        assert!(
            Instant::now() < deadline,
            "the running weir did not catch up within 90 s of the load's end:\n{d}\n{}",
            weir.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let catch_up = caught_up_at.elapsed();
    let summary = assert_tables_equal(target, &src.db, "after the running weir caught up");
    assert_eq!(http_get(http, "/healthz").unwrap().0, 200);
    let retries_total = metric(http, &retries).unwrap();
    let log = weir.stop();
    assert!(
        log.contains("sink failed; retrying"),
        "no retry in weir's log:\n{log}"
    );
    // A run with nothing new leaves the target as it is.
    crate::connectors::run_once_within(&pipeline, Duration::from_secs(60));
    assert_tables_equal(target, &src.db, "after run --once");
    eprintln!(
        "{kind}: snapshot applied after {snapshot_done:?}; target down {OUTAGE:?}: /healthz 503 \
         after {first_503:?} ({polls_503} polls, all 503: {:?}), retries {retries_first} → \
         {retries_end} ({retries_total} in all); healthy {healthy_after:?} after the target \
         came back; load {load_took:?}; caught up {catch_up:?} after it; {summary}total {:?}",
        body_503.trim(),
        started.elapsed()
    );
}

// ---------------------------------------------------------------- 1. PostgreSQL target

#[test]
fn postgres_target_down_30s_mid_load_healthz_503_then_caught_up_exactly() {
    let mut target = PgTarget(ThrowawayPg::new());
    target_outage("opg", &mut target);
}

// ---------------------------------------------------------------- 2. MariaDB target

#[test]
fn mariadb_target_killed_30s_mid_load_healthz_503_then_caught_up_exactly() {
    let mut target = MariaTarget {
        server: ThrowawayMaria::new(),
        db: "weir_outage",
    };
    target_outage("omy", &mut target);
}

// ---------------------------------------------------------------- 3. Kafka broker restart

/// One message as read back.
struct Msg {
    partition: i32,
    key: Option<String>,
    value: Option<Json>,
    seq: u64,
    tombstone: bool,
}

/// Every message of `topic` on `brokers`, per partition in offset order, each partition read
/// up to its high watermark.
///
/// tansu 0.6 on SQLite fetches each record's headers with a full scan of its `header` table
/// (no index on `(topition, offset_id)`), so reading costs (records read) × (headers in the
/// whole broker): about 20 ms a record once the broker holds 30,000 records with weir's 5-6
/// headers each. The test keeps its volume small for that reason.
fn read_topic(brokers: &str, topic: &str) -> Vec<Msg> {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("outage-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .unwrap();
    let parts = md.topics()[0].partitions().len() as i32;
    assert!(parts > 0, "topic {topic} has no partitions");
    let mut out = Vec::new();
    for p in 0..parts {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}"));
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
        c.assign(&tpl).unwrap();
        let mut next = low;
        let deadline = Instant::now() + Duration::from_secs(120);
        while next < high {
            assert!(
                Instant::now() < deadline,
                "timed out reading {topic}/{p}: at offset {next} of {low}..{high}"
            );
            let m = match c.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(e)) => panic!("reading {topic}/{p}: {e}"),
                Some(Ok(m)) => m,
            };
            assert_eq!(m.partition(), p);
            assert!(
                m.offset() >= next,
                "{topic}/{p}: offset {} again",
                m.offset()
            );
            next = m.offset() + 1;
            let header = |name: &str| {
                m.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == name)
                        .and_then(|x| x.value)
                        .map(|v| String::from_utf8(v.to_vec()).unwrap())
                })
            };
            let seq = header("weir.seq")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{topic}: a message without weir.seq"));
            out.push(Msg {
                partition: p,
                key: m.key().map(|k| String::from_utf8(k.to_vec()).unwrap()),
                value: m.payload().map(|v| serde_json::from_slice(v).unwrap()),
                seq,
                tombstone: header("weir.tombstone").is_some(),
            });
        }
    }
    out
}

/// pgbench's keyed tables with their key and balance columns (each pgbench transaction
/// changes one row of each, named by the same column in its pgbench_history row).
const PGBENCH_BALANCES: [(&str, &str, &str); 3] = [
    ("pgbench_accounts", "aid", "abalance"),
    ("pgbench_branches", "bid", "bbalance"),
    ("pgbench_tellers", "tid", "tbalance"),
];

/// Checks the Kafka topics of a streaming-only pgbench pipeline (started before the load,
/// every balance 0) against the source:
/// - no message twice (a `(weir.seq, tombstone)` pair is unique);
/// - one pgbench_history message per source history row, one per transaction;
/// - per keyed table, each transaction's update exactly once, on the row its history row
///   names, every key in one partition in log order, and the balance moving by exactly the
///   transaction's delta from the previous message of that key (from 0): a lost, duplicated
///   or reordered change breaks the chain;
/// - the last row per key equal to the source's, and every row absent from Kafka unchanged.
fn assert_pgbench_topics(brokers: &str, name: &str, db: &str) -> String {
    let topic = |t: &str| format!("{name}.public.{t}");
    let mut seen = HashSet::new();
    let mut dups = Vec::new();
    let mut summary = String::new();
    let mut read = |t: &str| {
        let msgs = read_topic(brokers, &topic(t));
        for m in &msgs {
            if !seen.insert((m.seq, m.tombstone)) && dups.len() < 5 {
                dups.push(format!(
                    "{t}: seq {} key {:?} value {:?}",
                    m.seq, m.key, m.value
                ));
            }
        }
        msgs
    };

    // Every transaction's history row: txid → the row.
    let history = read("pgbench_history");
    let mut txns: HashMap<String, Json> = HashMap::new();
    for m in &history {
        let v = m.value.as_ref().expect("a tombstone in pgbench_history");
        assert_eq!(v["op"], "c", "pgbench_history: {v}");
        let txid = v["source"]["txid"].as_str().expect("no txid").to_string();
        let before = txns.insert(txid.clone(), v["after"].clone());
        assert!(before.is_none(), "two history rows of transaction {txid}");
    }
    let source_history: usize = psql_in(db, "SELECT count(*) FROM pgbench_history")
        .parse()
        .unwrap();
    assert_eq!(
        history.len(),
        source_history,
        "pgbench_history: messages vs source rows"
    );

    for (table, key, balance) in PGBENCH_BALANCES {
        let msgs = read(table);
        // Per key: (partition, seq, balance, bid) of its last message.
        let mut rows: BTreeMap<i64, (i32, u64, i64, i64)> = BTreeMap::new();
        let mut used = HashSet::new();
        for m in &msgs {
            let v = m
                .value
                .as_ref()
                .unwrap_or_else(|| panic!("{table}: a tombstone without a delete"));
            assert_eq!(v["op"], "u", "{table}: only updates expected: {v}");
            let after = &v["after"];
            let id = after[key].as_i64().unwrap();
            assert_eq!(
                m.key.as_deref(),
                Some(format!("{{\"{key}\":{id}}}").as_str()),
                "{table}: message key"
            );
            let txid = v["source"]["txid"].as_str().unwrap();
            let h = txns.get(txid).unwrap_or_else(|| {
                panic!("{table}: {key}={id} updated by transaction {txid}, which has no history row: {v}")
            });
            assert_eq!(h[key].as_i64(), Some(id), "{table}: history row {h} vs {v}");
            assert!(
                used.insert(txid.to_string()),
                "{table}: transaction {txid} applied twice to {key}={id}"
            );
            let (partition, seq, prev, _) = *rows.entry(id).or_insert((m.partition, 0, 0, 0));
            assert_eq!(
                partition, m.partition,
                "{table}: {key}={id} in two partitions"
            );
            assert!(m.seq > seq, "{table}: {key}={id} out of log order: {v}");
            let delta = h["delta"].as_i64().unwrap();
            assert_eq!(
                after[balance].as_i64(),
                Some(prev + delta),
                "{table}: {key}={id}: balance {prev} + delta {delta} (transaction {txid}) \
                 should be {}: a change lost, duplicated or out of order before it",
                prev + delta
            );
            let bid = after["bid"].as_i64().unwrap();
            rows.insert(id, (m.partition, m.seq, prev + delta, bid));
        }
        assert_eq!(
            used.len(),
            txns.len(),
            "{table}: transactions applied vs pgbench_history rows"
        );
        // The last row per key is the source's row; rows never in Kafka never changed.
        let source = psql_in(
            db,
            &format!("SELECT {key}, {balance}, bid FROM public.{table} ORDER BY {key}"),
        );
        let mut in_kafka = 0;
        for line in source.lines() {
            let f: Vec<i64> = line.split('|').map(|x| x.parse().unwrap()).collect();
            match rows.get(&f[0]) {
                Some(&(_, _, b, bid)) => {
                    in_kafka += 1;
                    assert_eq!(
                        (b, bid),
                        (f[1], f[2]),
                        "{table}: {key}={}: (balance, bid) in Kafka vs the source",
                        f[0]
                    );
                }
                None => assert_eq!(f[1], 0, "{table}: {key}={} changed, never in Kafka", f[0]),
            }
        }
        assert_eq!(
            in_kafka,
            rows.len(),
            "{table}: keys in Kafka not at the source"
        );
        summary.push_str(&format!(
            "{table}: {} updates of {} rows; ",
            msgs.len(),
            rows.len()
        ));
    }
    assert!(dups.is_empty(), "messages written twice: {dups:#?}");
    format!("{summary}pgbench_history: {} inserts", history.len())
}

#[test]
fn kafka_broker_killed_and_restarted_mid_load_loses_and_duplicates_nothing() {
    let started = Instant::now();
    let mut broker = ThrowawayTansu::new();
    let src = PgbenchSource::new("oka", 1);
    let dir = TempDir::new("outage-kafka");
    let http = free_port();
    let sink = format!(
        "type = \"kafka\"\nbrokers = \"{}\"\ntopic = \"{{pipeline}}.{{schema}}.{{table}}\"\n\
         delivery = \"idempotent\"\noffsets_topic = \"{}_offsets\"",
        broker.brokers(),
        src.name
    );
    // Streaming only (tansu on SQLite takes ~40 s for a 100,000-row snapshot here); every
    // balance starts at 0, which the checks rely on.
    let pipeline = outage_pipeline(
        dir.path(),
        &src,
        "tables = [\"public.pgbench_*\"]\nsnapshot = \"never\"",
        &sink,
        http,
    );
    let mut weir = WeirRun::start(&pipeline);
    let slot = format!("weir_{}", src.name);
    wait_for("weir's replication slot", 60, || {
        weir.assert_running("at start-up");
        let confirmed = psql_in(
            &src.db,
            &format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' \
                   AND confirmed_flush_lsn IS NOT NULL AND active_pid IS NOT NULL"
            ),
        );
        (confirmed == "1" && http_get(http, "/healthz")?.0 == 200).then_some(())
    });
    // A small volume (see read_topic): about 1,000 transactions, 4,000 messages.
    let mut bench = src.load(40, 25);
    let applied = "weir_sink_applied_events_total{sink=\"replica\"}";
    wait_for("streamed changes to reach Kafka", 60, || {
        weir.assert_running("before the broker restart");
        (metric(http, applied)? >= 300.0).then_some(())
    });
    let applied_at_kill = metric(http, applied).unwrap();
    broker.kill9();
    let killed_at = started.elapsed();
    // The broker stays down 10 s. What /healthz says meanwhile is reported, not asserted:
    // librdkafka retries on its own and the sink waits in its flush (up to 120 s), so the
    // sink only turns unhealthy when that gives up or it stalls for `stall_seconds`.
    let down = Instant::now();
    let mut health: BTreeMap<u16, u32> = BTreeMap::new();
    while down.elapsed() < Duration::from_secs(10) {
        weir.assert_running("while the broker was down");
        if let Some((status, _)) = http_get(http, "/healthz") {
            *health.entry(status).or_default() += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let applied_while_down = metric(http, applied).unwrap() - applied_at_kill;
    broker.start();
    assert!(
        bench.running(),
        "the load ended before the broker came back: the test proved nothing"
    );
    // The sink finishes the batch it held through the outage, then takes on the backlog
    // staged meanwhile in one big batch: that is when the second outage strikes.
    let deadline = Instant::now() + Duration::from_secs(90);
    while metric(http, applied).unwrap_or(0.0) <= applied_at_kill + applied_while_down {
        weir.assert_running("after the restart");
        broker.assert_running();
        assert!(
            Instant::now() < deadline,
            "the sink applied nothing within 90 s of the broker's restart:\n{}",
            weir.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let retries = metric(http, "weir_sink_retries_total{sink=\"replica\"}").unwrap();
    // Into the backlog batch's delivery (timing, not a wait for something).
    std::thread::sleep(Duration::from_millis(150));

    // Second outage, mid-catch-up: the broker and weir die together (SIGKILL both), and a
    // new weir starts while the broker is still down. What librdkafka had queued is gone;
    // part of the batch may be in Kafka without the offset record after it, so the new sink
    // must skip what already reached each partition (its scan back) and send the rest.
    let killed2_at = started.elapsed();
    broker.kill9();
    drop(weir);
    let mut weir = WeirRun::start(&pipeline);
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(5) {
        weir.assert_running("while the broker was down the second time");
        std::thread::sleep(Duration::from_millis(250));
    }
    broker.start();
    assert!(
        bench.running(),
        "the load ended before the broker came back the second time: the test proved nothing"
    );
    wait_for("the new weir's sink to apply changes", 120, || {
        weir.assert_running("after the second restart");
        broker.assert_running();
        (metric(http, applied)? > 100.0).then_some(())
    });
    assert_load_ok(bench);
    weir.assert_running("after the load");
    weir.stop();
    // Everything up to the source's position now, then the topics against the source.
    let once_started = Instant::now();
    crate::connectors::run_once_within(&pipeline, Duration::from_secs(90));
    let once_took = once_started.elapsed();
    broker.assert_running();
    let summary = assert_pgbench_topics(&broker.brokers(), &src.name, &src.db);
    broker.assert_running();
    eprintln!(
        "kafka broker restart: broker SIGKILLed at {killed_at:?} after {applied_at_kill} \
         changes, down 10 s ({applied_while_down} changes applied meanwhile, /healthz status: \
         polls {health:?}); sink retries {retries}; broker and weir SIGKILLed at {killed2_at:?}, \
         broker back 5 s later; run --once after the load took {once_took:?}; {summary}; total {:?}",
        started.elapsed()
    );
}
