//! The connectors through the `weir` binary, against the real servers scripts/services.sh
//! starts: PostgreSQL 15 (127.0.0.1:5432), MariaDB 10.11 (127.0.0.1:3306) and the tansu
//! Kafka-protocol broker (127.0.0.1:9092). A missing server fails the test; nothing is skipped.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The Kafka-protocol broker: tansu from scripts/services.sh unless `WEIR_TEST_KAFKA` names
/// another.
fn kafka_brokers() -> String {
    std::env::var("WEIR_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

// ---------------------------------------------------------------- helpers

/// A unique tag for a test's objects: `kind`, the process id and the time.
pub(crate) fn unique(kind: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("{kind}{}_{}", std::process::id(), millis % 1_000_000)
}

/// `psql` on database `db` (tests/common.rs), with NULL spelled out and tab-separated fields.
pub(crate) fn psql_command(db: &str) -> Command {
    let mut c = crate::common::psql_command(db);
    c.args(["-P", "null=NULL", "-F", "\t"]);
    c
}

pub(crate) fn psql_output(db: &str, sql: &str) -> std::process::Output {
    psql_command(db)
        .args(["-c", sql])
        .output()
        .expect("psql is missing: run scripts/services.sh (it installs postgresql-client)")
}

/// Runs `sql` in database `db`; panics with psql's error.
pub(crate) fn psql(db: &str, sql: &str) -> String {
    crate::common::psql_checked(psql_command(db).args(["-c", sql]), sql)
}

/// `mariadb` as root on the test server, utf8mb4, raw batch output without column names.
pub(crate) fn mariadb_command() -> Command {
    let mut c = Command::new("mariadb");
    c.args([
        "-h",
        "127.0.0.1",
        "-P",
        "3306",
        "-u",
        "root",
        "--default-character-set=utf8mb4",
        "-N",
        "-B",
        "-r",
    ]);
    c
}

/// Runs `sql` on MariaDB; panics with the client's error.
pub(crate) fn mariadb(sql: &str) -> String {
    let out = mariadb_command()
        .args(["-e", sql])
        .output()
        .expect("the mariadb client is missing: run scripts/services.sh");
    assert!(
        out.status.success(),
        "mariadb failed (is MariaDB up at 127.0.0.1:3306? run scripts/services.sh): {}\n{sql}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `f` when dropped: cleanup that happens even when the test panics.
pub(crate) struct Defer(Option<Box<dyn FnOnce()>>);

impl Defer {
    pub(crate) fn new(f: impl FnOnce() + 'static) -> Self {
        Defer(Some(Box::new(f)))
    }
}

impl Drop for Defer {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

/// Drops a PostgreSQL pipeline's slot and publication, and `tables` in database `postgres`.
pub(crate) fn pg_source_cleanup(name: &str, tables: &[&str]) -> Defer {
    let name = name.to_owned();
    let tables: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
    Defer::new(move || {
        let drops: String = tables
            .iter()
            .map(|t| format!("DROP TABLE IF EXISTS public.\"{t}\";"))
            .collect();
        // Best effort, past errors; a slot a killed walsender still holds is freed first.
        let _ = psql_command("postgres")
            .args(["-v", "ON_ERROR_STOP=0", "-c"])
            .arg(format!(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                   WHERE slot_name = 'weir_{name}' AND active_pid IS NOT NULL;"
            ))
            .arg("-c")
            .arg("SELECT pg_sleep(0.3)")
            .arg("-c")
            .arg(format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                   WHERE slot_name = 'weir_{name}';"
            ))
            .arg("-c")
            .arg(format!("DROP PUBLICATION IF EXISTS weir_{name}; {drops}"))
            .output();
    })
}

/// Creates database `db` on the PostgreSQL server; dropped (forcibly) with the guard.
pub(crate) fn pg_target_database(db: &str) -> Defer {
    psql("postgres", &format!("CREATE DATABASE \"{db}\""));
    let db = db.to_owned();
    Defer::new(move || {
        let _ = psql_output(
            "postgres",
            &format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"),
        );
    })
}

/// Creates MariaDB database `db`; dropped with the guard.
pub(crate) fn mariadb_database(db: &str) -> Defer {
    mariadb(&format!("CREATE DATABASE `{db}` CHARACTER SET utf8mb4"));
    let db = db.to_owned();
    Defer::new(move || {
        let _ = mariadb_command()
            .args(["-e", &format!("DROP DATABASE IF EXISTS `{db}`")])
            .output();
    })
}

/// A `weir run` process, SIGKILLed when dropped.
struct Running(std::process::Child);

impl Running {
    fn start(pipeline: &Path) -> Self {
        Running(
            weir()
                .arg("run")
                .arg(pipeline)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot start weir"),
        )
    }
    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `weir run` and kills it (SIGKILL) `times` times: the first two after a random
/// 150..700 ms (usually inside the snapshot), the others after 300..1500 ms.
pub(crate) fn kill_loop(pipeline: &Path, times: usize, rng: &mut Rng) {
    for i in 0..times {
        let child = Running::start(pipeline);
        let ms = if i < 2 {
            rng.range(150, 700)
        } else {
            rng.range(300, 1500)
        };
        std::thread::sleep(Duration::from_millis(ms));
        child.kill();
        // Where the kill landed (in the test's output on failure or with --no-capture).
        let status = run(weir().arg("status").arg(pipeline));
        let status = String::from_utf8_lossy(&status.stdout);
        for line in status.lines().filter(|l| l.contains("snapshot")) {
            eprintln!("after kill: {}", line.trim());
        }
    }
}

/// `weir run --once PIPELINE`, which must succeed within `limit` (a hung run fails the test
/// with its log rather than hanging it).
pub(crate) fn run_once_within(pipeline: &Path, limit: Duration) {
    let log = pipeline.with_extension("once.log");
    let mut child = weir()
        .args(["run", "--once"])
        .arg(pipeline)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("cannot start weir");
    let begun = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if begun.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect::<Vec<_>>();
            panic!(
                "weir run --once did not finish within {limit:?}; last log lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "weir run --once failed ({status}): {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// [`run_once_within`] 45 s.
pub(crate) fn run_once(pipeline: &Path) {
    run_once_within(pipeline, Duration::from_secs(45));
}

/// Runs a SQL script file through `cmd` (stdin) in a thread; the handle panics on failure.
pub(crate) fn load_script(
    mut cmd: Command,
    script: String,
    dir: &Path,
) -> std::thread::JoinHandle<()> {
    let path = dir.join(format!(
        "load-{}.sql",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(&path, script).unwrap();
    std::thread::spawn(move || {
        let out = cmd
            .stdin(std::fs::File::open(&path).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
}

/// The events of a file-sink output file.
pub(crate) fn read_events(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Applies file-sink events in order, by key: what a key-upserting target ends up holding.
fn converge(events: &[serde_json::Value], key: &[&str]) -> BTreeMap<String, serde_json::Value> {
    let key_of = |row: &serde_json::Value| -> String {
        key.iter()
            .map(|k| row[*k].to_string())
            .collect::<Vec<_>>()
            .join("|")
    };
    let mut rows = BTreeMap::new();
    for e in events {
        match e["op"].as_str().unwrap() {
            "r" | "c" | "u" => {
                if e["op"] == "u" && e["before"].is_object() {
                    rows.remove(&key_of(&e["before"]));
                }
                rows.insert(key_of(&e["after"]), e["after"].clone());
            }
            "d" => {
                rows.remove(&key_of(&e["before"]));
            }
            "t" => rows.clear(),
            other => panic!("unexpected op {other}"),
        }
    }
    rows
}

/// Lines of text that differ between two sorted dumps, the first few, for messages.
pub(crate) fn first_differences(expected: &str, got: &str) -> String {
    let e: Vec<&str> = expected.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    let mut out = format!(
        "{} rows expected, {} rows in the target\n",
        e.len(),
        g.len()
    );
    let es: std::collections::BTreeSet<&str> = e.iter().copied().collect();
    let gs: std::collections::BTreeSet<&str> = g.iter().copied().collect();
    for l in es.difference(&gs).take(5) {
        out.push_str(&format!("  only at the source: {l}\n"));
    }
    for l in gs.difference(&es).take(5) {
        out.push_str(&format!("  only in the target: {l}\n"));
    }
    out
}

fn tcp_up(addr: &str, what: &str) {
    if std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(3)).is_err()
    {
        panic!("no {what} at {addr}: start the test services with scripts/services.sh");
    }
}

// ---------------------------------------------------------------- 1. PostgreSQL → PostgreSQL

#[test]
fn postgres_to_postgres_snapshot_writes_and_kills_converge_exactly() {
    let started = Instant::now();
    let tag = unique("pp");
    let name = format!("pg{tag}");
    let table = format!("weir_pp_{tag}");
    let bank = format!("weir_bank_{tag}");
    let target = format!("weir_tgt_{tag}");
    let _source = pg_source_cleanup(&name, &[&table, &bank]);
    let _target = pg_target_database(&target);

    const ROWS: u64 = 50_000;
    const ACCOUNTS: u64 = 100;
    const TOTAL: u64 = ACCOUNTS * 1_000;
    psql(
        "postgres",
        &format!(
            "CREATE TABLE public.\"{table}\" (region int NOT NULL, id bigint NOT NULL, \
               amount numeric(20,4), at timestamptz, doc jsonb, note text, \
               PRIMARY KEY (region, id)); \
             INSERT INTO public.\"{table}\" SELECT g % 7, g, g * 1.0001, \
               timestamptz '2024-02-29 13:45:01.250001+01' + g * interval '1.5 second', \
               jsonb_build_object('g', g, 'tags', jsonb_build_array('a', g, null)), \
               CASE WHEN g % 1000 = 0 THEN NULL ELSE 'row ' || g || ' caf\u{e9} \u{1F600}' END \
               FROM generate_series(1, {ROWS}) g; \
             CREATE TABLE public.\"{bank}\" (id int PRIMARY KEY, balance bigint NOT NULL); \
             INSERT INTO public.\"{bank}\" SELECT g, 1000 FROM generate_series(1, {ACCOUNTS}) g;"
        ),
    );
    let dir = TempDir::new("pg-pg");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"postgres\"\n\
             url = \"postgres://postgres:postgres@127.0.0.1:5432/postgres\"\n\
             tables = [\"public.{table}\", \"public.{bank}\"]\n\
             snapshot_workers = 1\nsnapshot_chunk_rows = 2000\n\n\
             [[sinks]]\nname = \"replica\"\ntype = \"postgres\"\n\
             url = \"postgres://postgres:postgres@127.0.0.1:5432/{target}\"\nschema = \"public\"\n"
        ),
    );

    // Writers: updates over the key range, inserts past it, deletes, key changes, and bank
    // transfers (each its own transaction, the sum constant), in small transactions.
    let mut rng = Rng(0x5eed_0001);
    let mut script = String::new();
    for t in 0..400u64 {
        let (a, b, d) = (rng.range(1, ROWS), rng.range(1, ROWS), rng.range(1, ROWS));
        let n = ROWS + 1 + t;
        script.push_str(&format!(
            "BEGIN; UPDATE public.\"{table}\" SET amount = amount + 1, note = 'upd {t} \u{1F680}', \
               doc = jsonb_set(doc, '{{t}}', '{t}') WHERE id IN ({a}, {b}); \
             INSERT INTO public.\"{table}\" VALUES ({}, {n}, {t}.5, now(), '{{\"new\": true}}', NULL); \
             DELETE FROM public.\"{table}\" WHERE id = {d}; COMMIT;\n",
            n % 7
        ));
        if t % 50 == 7 {
            // A primary-key change.
            let k = rng.range(1, ROWS);
            script.push_str(&format!(
                "UPDATE public.\"{table}\" SET id = id + 1000000 WHERE id = {k};\n"
            ));
        }
        let (from, to, amount) = (
            rng.range(1, ACCOUNTS + 1),
            rng.range(1, ACCOUNTS + 1),
            rng.range(1, 50),
        );
        script.push_str(&format!(
            "BEGIN; UPDATE public.\"{bank}\" SET balance = balance - {amount} WHERE id = {from}; \
             UPDATE public.\"{bank}\" SET balance = balance + {amount} WHERE id = {to}; COMMIT;\n"
        ));
        if t % 10 == 0 {
            script.push_str("SELECT pg_sleep(0.05);\n");
        }
    }
    let load = load_script(psql_command("postgres"), script, dir.path());

    // The bank poller: the target never shows part of a transfer (or part of the accounts).
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        let (target, bank) = (target.clone(), bank.clone());
        std::thread::spawn(move || {
            let mut seen = BTreeMap::<String, u64>::new();
            while !stop.load(Ordering::Relaxed) {
                let out = psql_output(
                    &target,
                    &format!("SELECT count(*), coalesce(sum(balance), 0) FROM public.\"{bank}\""),
                );
                if out.status.success() {
                    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    *seen.entry(s).or_default() += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };

    kill_loop(&pipeline, 4, &mut rng);
    load.join().unwrap();
    run_once(&pipeline);
    stop.store(true, Ordering::Relaxed);
    let seen = poller.join().unwrap();

    let dump = |db: &str, t: &str, key: &str| {
        psql(
            db,
            &format!("SELECT t::text FROM public.\"{t}\" t ORDER BY {key}"),
        )
    };
    let digest = |db: &str, t: &str, key: &str| {
        psql(
            db,
            &format!(
                "SELECT count(*), md5(string_agg(t::text, ',' ORDER BY {key})) FROM public.\"{t}\" t"
            ),
        )
    };
    for (t, key) in [(&table, "region, id"), (&bank, "id")] {
        let (src, dst) = (digest("postgres", t, key), digest(&target, t, key));
        if src != dst {
            panic!(
                "{t}: target differs from source ({src} vs {dst}):\n{}",
                first_differences(&dump("postgres", t, key), &dump(&target, t, key))
            );
        }
    }
    // Same column types as the source.
    let columns = |db: &str| {
        psql(
            db,
            &format!(
                "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) \
                 FROM pg_attribute WHERE attrelid = 'public.\"{table}\"'::regclass AND attnum > 0 AND NOT attisdropped"
            ),
        )
    };
    assert_eq!(columns(&target), columns("postgres"));
    let position = psql(
        &target,
        &format!(
            "SELECT seq FROM _weir.positions WHERE pipeline = '{name}' AND sink = 'replica' AND seq IS NOT NULL"
        ),
    );
    assert!(
        position.parse::<u64>().is_ok(),
        "no position row in _weir.positions: {position:?}"
    );
    let expected_sum = format!("{ACCOUNTS}\t{TOTAL}");
    let bad: Vec<_> = seen
        .keys()
        .filter(|s| **s != expected_sum && **s != "0\t0")
        .collect();
    assert!(
        bad.is_empty(),
        "the target showed part of a source transaction (count, sum): {bad:?}; all: {seen:?}"
    );
    assert!(
        seen.contains_key(&expected_sum),
        "the poller never saw the accounts: {seen:?}"
    );
    eprintln!(
        "postgres → postgres took {:?}; target (accounts, sum) seen by the poller: {seen:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------- 2. MariaDB → file

/// The MariaDB test table's columns, in order, and the SELECT that renders them the way
/// `json_text` renders a file-sink row.
const MARIA_COLUMNS: &[&str] = &["id", "v", "amount", "at", "note", "big"];

fn maria_select(db: &str, table: &str) -> String {
    format!(
        "SELECT id, v, amount, DATE_FORMAT(at, '%Y-%m-%dT%H:%i:%s.%f'), note, big \
         FROM `{db}`.`{table}` ORDER BY id"
    )
}

/// A JSON row as the tab-separated text `mariadb -N -B -r` prints.
fn json_text(row: &serde_json::Value, columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| match &row[*c] {
            serde_json::Value::Null => "NULL".to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\t")
}

#[test]
fn mariadb_to_file_snapshot_writes_and_kills_converge() {
    let started = Instant::now();
    let tag = unique("mf");
    let name = format!("my{tag}");
    let db = format!("weir_{tag}");
    let table = "items";
    let _db = mariadb_database(&db);
    const ROWS: u64 = 20_000;
    mariadb(&format!(
        "USE `{db}`; \
         CREATE TABLE {table} (id BIGINT UNSIGNED NOT NULL PRIMARY KEY, v INT NOT NULL, \
           amount DECIMAL(65,30), at DATETIME(6), note VARCHAR(100) CHARACTER SET utf8mb4, \
           big BIGINT UNSIGNED) ENGINE=InnoDB; \
         INSERT INTO {table} SELECT seq, 0, \
           CAST(CONCAT('12345678901234567890123456789', LPAD(seq, 6, '0'), '.', RPAD(seq, 30, '7')) AS DECIMAL(65,30)), \
           TIMESTAMP('2024-02-29 13:45:01.250001') + INTERVAL seq SECOND, \
           IF(seq % 1000 = 0, NULL, CONCAT('row ', seq, ' caf\u{e9} \u{1F600}')), \
           18446744073709551615 - seq FROM seq_1_to_{ROWS}; \
         INSERT INTO {table} VALUES (18446744073709551615, -1, \
           -99999999999999999999999999999999999.999999999999999999999999999999, \
           '1000-01-01 00:00:00.000001', '\u{1F9EA}\u{1F600} max', 18446744073709551615);"
    ));
    let server_id: u64 = mariadb("SELECT @@server_id").parse().unwrap();
    let dir = TempDir::new("maria-file");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"mysql\"\n\
             url = \"mysql://root@127.0.0.1:3306/{db}\"\ntables = [\"{db}.{table}\"]\n\
             snapshot_workers = 1\nsnapshot_chunk_rows = 1000\n\n\
             [[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n"
        ),
    );
    let mut rng = Rng(0x5eed_0002);
    let mut script = format!("USE `{db}`;\n");
    for t in 0..300u64 {
        let (a, b, d) = (rng.range(1, ROWS), rng.range(1, ROWS), rng.range(1, ROWS));
        script.push_str(&format!(
            "BEGIN; UPDATE {table} SET v = v + 1, note = 'upd {t} \u{1F680}', \
               amount = amount + 0.000000000000000000000000000001, \
               at = at + INTERVAL 1 MICROSECOND WHERE id IN ({a}, {b}); \
             INSERT INTO {table} VALUES ({}, {t}, {t}.5, '2030-01-01 00:00:00.{t:06}', NULL, {t}); \
             DELETE FROM {table} WHERE id = {d}; COMMIT;\n",
            ROWS + 1 + t
        ));
        if t % 10 == 0 {
            script.push_str("DO SLEEP(0.05);\n");
        }
    }
    let load = load_script(mariadb_command(), script, dir.path());
    kill_loop(&pipeline, 2, &mut rng);
    load.join().unwrap();
    run_once(&pipeline);

    let file = dir.path().join(format!("out/{db}.{table}.jsonl"));
    let events = read_events(&file);
    let reads: Vec<_> = events.iter().filter(|e| e["op"] == "r").collect();
    assert!(
        reads.len() as u64 >= ROWS - 300,
        "snapshot rows staged: {}",
        reads.len()
    );
    for e in &reads {
        assert_eq!(e["source"]["snapshot"], true, "{e}");
        assert_eq!(e["source"]["connector"], "mysql", "{e}");
    }
    let streamed: Vec<_> = events.iter().filter(|e| e["op"] != "r").collect();
    assert!(
        streamed.len() >= 900,
        "streamed changes: {}",
        streamed.len()
    );
    for e in &streamed {
        let s = &e["source"];
        assert_eq!(s["snapshot"], false, "{e}");
        assert_eq!(s["connector"], "mysql", "{e}");
        assert_eq!(s["db"], db.as_str(), "{e}");
        assert_eq!(s["table"], table, "{e}");
        assert!(
            s["file"].as_str().is_some_and(|f| !f.is_empty()),
            "source.file: {e}"
        );
        assert!(s["pos"].as_u64().is_some_and(|p| p > 4), "source.pos: {e}");
        let gtid = s["gtid"]
            .as_str()
            .unwrap_or_else(|| panic!("source.gtid: {e}"));
        assert!(
            gtid.split(',').all(|g| g
                .trim()
                .splitn(3, '-')
                .filter_map(|n| n.parse::<u64>().ok())
                .count()
                == 3),
            "source.gtid is not a MariaDB GTID list: {e}"
        );
        assert_eq!(
            s["server_id"].as_u64(),
            Some(server_id),
            "source.server_id: {e}"
        );
        if e["op"] == "d" {
            assert!(e["after"].is_null() && e["before"].is_object(), "{e}");
        }
        if e["op"] == "u" {
            assert!(e["before"].is_object(), "FULL row image: {e}");
        }
    }
    // Positions advance in the binlog.
    let pos = |e: &serde_json::Value| {
        (
            e["source"]["file"].as_str().unwrap().to_owned(),
            e["source"]["pos"].as_u64().unwrap(),
        )
    };
    for w in streamed.windows(2) {
        assert!(
            pos(w[0]) <= pos(w[1]),
            "positions go back: {} then {}",
            w[0],
            w[1]
        );
    }

    let got: Vec<String> = converge(&events, &["id"])
        .values()
        .map(|r| json_text(r, MARIA_COLUMNS))
        .collect();
    // BTreeMap order is the key's JSON text; sort both the same way.
    let mut got = got;
    got.sort();
    let mut expected: Vec<String> = mariadb(&maria_select(&db, table))
        .lines()
        .map(str::to_owned)
        .collect();
    expected.sort();
    if got != expected {
        panic!(
            "converged file events differ from the table:\n{}",
            first_differences(&expected.join("\n"), &got.join("\n"))
        );
    }
    // A second run adds nothing.
    let lines = events.len();
    run_once(&pipeline);
    assert_eq!(read_events(&file).len(), lines);
    eprintln!(
        "mariadb → file took {:?}: {} snapshot reads, {} streamed changes",
        started.elapsed(),
        reads.len(),
        streamed.len()
    );
}

// ---------------------------------------------------------------- 3. MariaDB → PostgreSQL

#[test]
fn mariadb_to_postgres_sink_types_and_changes() {
    let tag = unique("mp");
    let name = format!("my{tag}");
    let db = format!("weir_{tag}");
    let target = format!("weir_tgt_{tag}");
    let _db = mariadb_database(&db);
    let _target = pg_target_database(&target);
    mariadb(&format!(
        "USE `{db}`; SET time_zone = '+00:00'; \
         CREATE TABLE t (id INT NOT NULL PRIMARY KEY, tiny TINYINT, u BIGINT UNSIGNED, \
           d DECIMAL(12,4), f DOUBLE, dt DATETIME(6), ts TIMESTAMP(3) NULL, dte DATE, tm TIME(6), \
           vc VARCHAR(50), js JSON, b VARBINARY(16), e ENUM('small','large'), flag BOOLEAN) \
           ENGINE=InnoDB; \
         INSERT INTO t VALUES \
           (1, -128, 18446744073709551615, 12345678.9012, 0.1, '2024-02-29 13:45:01.250001', \
            '2024-02-29 12:45:01.250', '2024-02-29', '13:45:01.000500', 'caf\u{e9} \u{1F600}', \
            '{{\"a\": [1, 2, {{\"b\": null}}], \"s\": \"x\"}}', X'00FF10', 'large', TRUE), \
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL), \
           (3, 127, 0, -0.0001, -2.5, '1970-01-01 00:00:00.000000', '1999-12-31 23:59:59.999', \
            '1000-01-01', '00:00:00', '', '[]', X'', 'small', FALSE);"
    ));
    let dir = TempDir::new("maria-pg");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"mysql\"\n\
             url = \"mysql://root@127.0.0.1:3306/{db}\"\ntables = [\"{db}.t\"]\n\n\
             [[sinks]]\nname = \"replica\"\ntype = \"postgres\"\n\
             url = \"postgres://postgres:postgres@127.0.0.1:5432/{target}\"\nschema = \"public\"\n"
        ),
    );
    let maria_rows = || {
        mariadb(&format!(
            "USE `{db}`; SET time_zone = '+00:00'; \
             SELECT id, tiny, u, d, f, DATE_FORMAT(dt, '%Y-%m-%d %H:%i:%s.%f'), \
               DATE_FORMAT(ts, '%Y-%m-%d %H:%i:%s.%f'), dte, TIME_FORMAT(tm, '%H:%i:%s.%f'), vc, \
               js, HEX(b), e, flag FROM t ORDER BY id"
        ))
    };
    let pg_rows = || {
        psql(
            &target,
            "SELECT id, tiny, u, d, f, to_char(dt, 'YYYY-MM-DD HH24:MI:SS.US'), \
               to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), dte, \
               to_char(tm, 'HH24:MI:SS.US'), vc, js, upper(encode(b, 'hex')), e, flag \
             FROM public.t ORDER BY id",
        )
    };
    // Rows as columns, the double (4) and JSON (10) columns parsed so formatting does not
    // matter.
    let parse = |text: &str| -> Vec<Vec<serde_json::Value>> {
        text.lines()
            .map(|l| {
                l.split('\t')
                    .enumerate()
                    .map(|(i, v)| match (i, v) {
                        (10, "NULL") => serde_json::Value::Null,
                        (10, v) => serde_json::from_str(v)
                            .unwrap_or_else(|e| panic!("json column {v:?}: {e}")),
                        // The double: `1e100` (MariaDB) and `1e+100` (PostgreSQL) alike.
                        (4, v) if v != "NULL" => serde_json::json!(v.parse::<f64>().unwrap()),
                        (_, v) => serde_json::Value::String(v.to_owned()),
                    })
                    .collect()
            })
            .collect()
    };
    let compare = |when: &str| {
        let (src, dst) = (maria_rows(), pg_rows());
        assert_eq!(
            parse(&dst),
            parse(&src),
            "{when}: target rows differ\nsource:\n{src}\ntarget:\n{dst}"
        );
    };

    run_once(&pipeline);
    compare("after the snapshot");
    let types = psql(
        &target,
        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum) \
         FROM pg_attribute WHERE attrelid = 'public.t'::regclass AND attnum > 0 AND NOT attisdropped",
    );
    for expected in [
        "u numeric(20,0)",
        "d numeric(12,4)",
        "f double precision",
        "dt timestamp(6) without time zone",
        "ts timestamp(3) with time zone",
        "js jsonb",
        "b bytea",
        "vc character varying(50)",
    ] {
        assert!(types.contains(expected), "{expected} not in {types}");
    }

    mariadb(&format!(
        "USE `{db}`; SET time_zone = '+00:00'; \
         BEGIN; INSERT INTO t VALUES (4, 5, 42, 1.5, 1e100, '2000-01-01 00:00:00.5', \
           '2000-01-01 00:00:00.5', '2000-01-01', '23:59:59.999999', 'new \u{1F9EA}', \
           '{{\"n\": 1}}', X'DEADBEEF', 'small', TRUE); \
         UPDATE t SET vc = 'changed', js = JSON_OBJECT('k', 'v'), u = 1 WHERE id = 1; COMMIT; \
         DELETE FROM t WHERE id = 3; \
         UPDATE t SET tiny = 1, d = 99999999.9999, dt = '2024-01-01 00:00:00.000001' WHERE id = 2; \
         UPDATE t SET id = 30 WHERE id = 4;"
    ));
    run_once(&pipeline);
    compare("after the changes");
    let position = psql(
        &target,
        &format!(
            "SELECT seq FROM _weir.positions WHERE pipeline = '{name}' AND sink = 'replica' AND seq IS NOT NULL"
        ),
    );
    assert!(
        position.parse::<u64>().is_ok(),
        "no position row: {position:?}"
    );
    // Nothing new: unchanged.
    run_once(&pipeline);
    compare("after a run with nothing new");
}

// ---------------------------------------------------------------- 4. PostgreSQL → Kafka

struct KafkaMsg {
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: Option<serde_json::Value>,
}

/// Every message of `topic`, per partition in offset order.
fn read_topic(topic: &str) -> Vec<KafkaMsg> {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::KafkaError;
    use rdkafka::message::Message;
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts = md.topics()[0].partitions().len();
    assert!(parts > 0, "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut eof = std::collections::HashSet::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while eof.len() < parts {
        assert!(Instant::now() < deadline, "timed out reading {topic}");
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => out.push(KafkaMsg {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(|k| String::from_utf8(k.to_vec()).unwrap()),
                value: m.payload().map(|v| serde_json::from_slice(v).unwrap()),
            }),
        }
    }
    out.sort_by_key(|m| (m.partition, m.offset));
    out
}

#[test]
fn postgres_to_kafka_delivers_each_change_once_with_keys_and_tombstones() {
    let brokers = kafka_brokers();
    tcp_up(&brokers, "Kafka broker (tansu)");
    let tag = unique("pk");
    let name = format!("pg{tag}");
    let table = format!("weir_pk_{tag}");
    let topic = format!("{name}.public.{table}");
    // The topics stay on the broker (unique names): tansu 0.6.0's DeleteTopics deletes every
    // topic of the cluster (its topic_delete_by.sql), which would break everyone else's.
    let _source = pg_source_cleanup(&name, &[&table]);
    psql(
        "postgres",
        &format!(
            "CREATE TABLE public.\"{table}\" (id int PRIMARY KEY, name text, amount numeric(10,2)); \
             INSERT INTO public.\"{table}\" VALUES (1, 'one', 1.10), (2, 'two \u{1F600}', NULL), (3, 'three', 3.30);"
        ),
    );
    let dir = TempDir::new("pg-kafka");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"postgres\"\n\
             url = \"postgres://postgres:postgres@127.0.0.1:5432/postgres\"\n\
             tables = [\"public.{table}\"]\n\n\
             [[sinks]]\nname = \"events\"\ntype = \"kafka\"\nbrokers = \"{brokers}\"\n\
             topic = \"{{pipeline}}.{{schema}}.{{table}}\"\ndelivery = \"idempotent\"\n\
             offsets_topic = \"{name}_offsets\"\n"
        ),
    );
    run_once(&pipeline);
    psql(
        "postgres",
        &format!(
            "INSERT INTO public.\"{table}\" VALUES (4, 'four', 4.40); \
             BEGIN; UPDATE public.\"{table}\" SET name = 'uno', amount = 11.00 WHERE id = 1; \
               DELETE FROM public.\"{table}\" WHERE id = 2; COMMIT; \
             UPDATE public.\"{table}\" SET amount = 33.33 WHERE id = 3;"
        ),
    );
    run_once(&pipeline);

    let msgs = read_topic(&topic);
    let changes: Vec<(String, String, serde_json::Value)> = msgs
        .iter()
        .filter_map(|m| {
            let v = m.value.as_ref()?;
            Some((
                v["op"].as_str().unwrap().to_owned(),
                m.key.clone().expect("a change without a key"),
                v.clone(),
            ))
        })
        .collect();
    let mut got: Vec<(String, String)> = changes
        .iter()
        .map(|(op, key, _)| (op.clone(), key.clone()))
        .collect();
    got.sort();
    let mut expected: Vec<(String, String)> = [
        ("r", 1),
        ("r", 2),
        ("r", 3),
        ("c", 4),
        ("u", 1),
        ("d", 2),
        ("u", 3),
    ]
    .iter()
    .map(|(op, id)| (op.to_string(), format!("{{\"id\":{id}}}")))
    .collect();
    expected.sort();
    assert_eq!(got, expected, "each change exactly once, keyed by id");
    for (op, key, v) in &changes {
        let row = if op == "d" { &v["before"] } else { &v["after"] };
        assert_eq!(
            format!("{{\"id\":{}}}", row["id"]),
            *key,
            "key matches the row: {v}"
        );
        assert_eq!(v["source"]["snapshot"], op == "r", "{v}");
        assert_eq!(v["source"]["table"], table.as_str(), "{v}");
    }
    let by_op = |op: &str, id: i64| {
        &changes
            .iter()
            .find(|(o, k, _)| o == op && *k == format!("{{\"id\":{id}}}"))
            .unwrap()
            .2
    };
    assert_eq!(by_op("r", 2)["after"]["name"], "two \u{1F600}");
    assert!(by_op("r", 2)["after"]["amount"].is_null());
    assert_eq!(by_op("u", 1)["after"]["name"], "uno");
    assert_eq!(by_op("u", 1)["after"]["amount"], "11.00");
    assert_eq!(by_op("c", 4)["after"]["amount"], "4.40");
    assert_eq!(
        by_op("u", 1)["source"]["txid"],
        by_op("d", 2)["source"]["txid"],
        "one source transaction"
    );

    // One tombstone, for id 2, after its delete in the same partition.
    let tombstones: Vec<&KafkaMsg> = msgs.iter().filter(|m| m.value.is_none()).collect();
    assert_eq!(tombstones.len(), 1, "exactly one tombstone");
    let t = tombstones[0];
    assert_eq!(t.key.as_deref(), Some("{\"id\":2}"));
    let delete = msgs
        .iter()
        .find(|m| m.value.as_ref().is_some_and(|v| v["op"] == "d"))
        .unwrap();
    assert_eq!(
        delete.partition, t.partition,
        "tombstone in the delete's partition"
    );
    assert!(delete.offset < t.offset, "tombstone after the delete");
    // Per key, source order within the partition: id 1's read before its update.
    let offset_of = |op: &str, id: i64| {
        msgs.iter()
            .find(|m| {
                m.key.as_deref() == Some(&format!("{{\"id\":{id}}}"))
                    && m.value.as_ref().is_some_and(|v| v["op"] == op)
            })
            .map(|m| (m.partition, m.offset))
            .unwrap()
    };
    let (p_r, o_r) = offset_of("r", 1);
    let (p_u, o_u) = offset_of("u", 1);
    assert_eq!(p_r, p_u, "same key, same partition");
    assert!(o_r < o_u);

    // A second run adds nothing.
    run_once(&pipeline);
    assert_eq!(
        read_topic(&topic).len(),
        msgs.len(),
        "the second run wrote messages"
    );
}

// ---------------------------------------------------------------- 5. check

#[test]
fn check_names_each_unreachable_sink() {
    // Ports nothing listens on (bound and dropped to find a free one).
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (pg_port, kafka_port) = (free_port(), free_port());
    let dir = TempDir::new("check-sinks");
    let pipeline: PathBuf = write_pipeline(
        dir.path(),
        &format!(
            "name = \"checksinks\"\ndata_dir = \"data\"\n\n[source]\ntype = \"datagen\"\nevents = 10\n\n\
             [[sinks]]\nname = \"pgsink\"\ntype = \"postgres\"\n\
             url = \"postgres://postgres:s3cretpw@127.0.0.1:{pg_port}/nowhere\"\n\n\
             [[sinks]]\nname = \"kafkasink\"\ntype = \"kafka\"\nbrokers = \"127.0.0.1:{kafka_port}\"\n\
             delivery = \"idempotent\"\n"
        ),
    );
    let begun = Instant::now();
    let out = run(weir().arg("check").arg(&pipeline));
    let elapsed = begun.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    for sink in ["pgsink", "kafkasink"] {
        let named: Vec<&&str> = lines
            .iter()
            .filter(|l| l.contains(&format!("sink {sink}")))
            .collect();
        assert_eq!(
            named.len(),
            1,
            "one line for the unreachable sink {sink}:\n{stdout}"
        );
        assert!(named[0].starts_with("error: "), "{stdout}");
    }
    assert_eq!(
        lines.len(),
        2,
        "one line per problem, nothing else:\n{stdout}"
    );
    assert!(
        lines.iter().any(|l| l.contains(&pg_port.to_string())),
        "the postgres line names the address:\n{stdout}"
    );
    assert!(
        lines.iter().any(|l| l.contains(&kafka_port.to_string())),
        "the kafka line names the broker:\n{stdout}"
    );
    assert!(
        !stdout.contains("s3cretpw") && !stderr.contains("s3cretpw"),
        "password printed"
    );
    assert!(elapsed < Duration::from_secs(45), "check took {elapsed:?}");
}
