//! Issue 4's acceptance tests for the MySQL/MariaDB source, through the `weir` binary against
//! the real MariaDB from scripts/services.sh: a snapshot under `sysbench oltp_write_only`
//! load, SIGKILLs during that load, and a binlog purged past weir's position.
//!
//! Every test here reads the server's binlog, and the purge test deletes binlog files, which
//! would break any other pipeline whose position is in them. `.config/nextest.toml` therefore
//! puts every test that streams from MariaDB into one test group that runs one at a time.

use crate::common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A name part unique to this test run.
fn unique(kind: &str) -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("{kind}{}_{}", std::process::id(), millis % 1_000_000)
}

/// `mariadb` as root on the test server, utf8mb4, raw batch output without column names.
fn mariadb_command() -> Command {
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
fn mariadb(sql: &str) -> String {
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

/// A MariaDB database, dropped when this is dropped (also when the test panics).
struct Database(String);

impl Database {
    fn create(name: &str) -> Self {
        mariadb(&format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4"));
        Database(name.to_owned())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = mariadb_command()
            .args(["-e", &format!("DROP DATABASE IF EXISTS `{}`", self.0)])
            .output();
    }
}

/// A child process, SIGKILLed when dropped (also when the test panics).
struct Killed(Child);

impl Killed {
    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `weir run PIPELINE` with its log (RUST_LOG=info) in `log`.
fn start_weir(pipeline: &Path, log: &Path) -> Killed {
    Killed(
        weir()
            .arg("run")
            .arg(pipeline)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("cannot start weir"),
    )
}

/// `weir run --once PIPELINE`, which must succeed within `limit`; a hung run fails the test
/// with its log instead of hanging it.
fn run_once_within(pipeline: &Path, limit: Duration) {
    let log = pipeline.with_extension("once.log");
    let mut child = Killed(
        weir()
            .args(["run", "--once"])
            .arg(pipeline)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("cannot start weir"),
    );
    let begun = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if begun.elapsed() > limit {
            child.kill();
            panic!(
                "weir run --once did not finish within {limit:?}; log tail:\n{}",
                tail(&log, 30)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "weir run --once failed ({status}):\n{}",
        tail(&log, 60)
    );
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The `snapshot` line of `weir status` (empty when there is none).
fn snapshot_status(pipeline: &Path) -> String {
    let out = run(weir().arg("status").arg(pipeline));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("snapshot"))
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// `(done, total)` of a `snapshot   <state>  chunks=D/T` status line.
fn snapshot_chunks(line: &str) -> Option<(u64, u64)> {
    let (done, total) = line.split("chunks=").nth(1)?.split_once('/')?;
    Some((done.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// `sysbench oltp_write_only` on database `db` of the test server.
fn sysbench(db: &str, tables: u32, table_size: u32) -> Command {
    let mut c = Command::new("sysbench");
    c.args([
        "oltp_write_only",
        "--db-driver=mysql",
        "--mysql-host=127.0.0.1",
        "--mysql-port=3306",
        "--mysql-user=root",
        &format!("--mysql-db={db}"),
        &format!("--tables={tables}"),
        &format!("--table-size={table_size}"),
    ]);
    c
}

/// Runs sysbench `prepare`: `tables` tables `sbtestN` of `table_size` rows.
fn sysbench_prepare(db: &str, tables: u32, table_size: u32) {
    let out = sysbench(db, tables, table_size)
        .arg("prepare")
        .output()
        .expect("sysbench is missing: run scripts/services.sh mariadb (it installs sysbench)");
    assert!(
        out.status.success(),
        "sysbench prepare failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts sysbench `run` for `secs` seconds with `threads` threads; its output goes to `log`.
fn sysbench_run(
    db: &str,
    tables: u32,
    table_size: u32,
    secs: u32,
    threads: u32,
    log: &Path,
) -> Killed {
    Killed(
        sysbench(db, tables, table_size)
            .args([
                format!("--time={secs}"),
                format!("--threads={threads}"),
                "--report-interval=0".into(),
                "run".into(),
            ])
            .stdout(std::fs::File::create(log).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sysbench is missing: run scripts/services.sh mariadb"),
    )
}

/// Waits for sysbench to end, asserts it succeeded, and returns the number of transactions
/// it committed (from its summary).
fn sysbench_wait(sb: &mut Killed, log: &Path) -> u64 {
    let status = sb.0.wait().unwrap();
    let mut stderr = String::new();
    if let Some(mut e) = sb.0.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "sysbench run failed: {text}{stderr}");
    text.lines()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix("transactions:")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no transaction count in sysbench's output: {text}"))
}

/// A mysql → file pipeline over every table of `db`.
fn pipeline(dir: &Path, name: &str, db: &str, workers: u32, chunk_rows: u64) -> PathBuf {
    write_pipeline(
        dir,
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"mysql\"\n\
             url = \"mysql://root@127.0.0.1:3306/\"\ntables = [\"{db}.*\"]\n\
             snapshot = \"initial\"\nsnapshot_workers = {workers}\n\
             snapshot_chunk_rows = {chunk_rows}\n\n\
             [[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n"
        ),
    )
}

/// The events of a file-sink output file (none when the file does not exist).
fn read_events(file: &Path) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(file) {
        Ok(text) => text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", file.display()),
    }
}

/// Applies file-sink events in order, by key: what a key-upserting target ends up holding.
fn converge(events: &[serde_json::Value], key: &str) -> BTreeMap<String, serde_json::Value> {
    let mut rows = BTreeMap::new();
    for e in events {
        match e["op"].as_str().unwrap() {
            "r" | "c" | "u" => {
                if e["op"] == "u" && e["before"].is_object() {
                    rows.remove(&e["before"][key].to_string());
                }
                rows.insert(e["after"][key].to_string(), e["after"].clone());
            }
            "d" => {
                rows.remove(&e["before"][key].to_string());
            }
            "t" => rows.clear(),
            other => panic!("unexpected op {other}: {e}"),
        }
    }
    rows
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

/// What sets of lines differ, for the failure message.
fn first_differences(expected: &[String], got: &[String]) -> String {
    let es: std::collections::BTreeSet<&String> = expected.iter().collect();
    let gs: std::collections::BTreeSet<&String> = got.iter().collect();
    let mut out = format!(
        "{} rows expected, {} rows after replay\n",
        expected.len(),
        got.len()
    );
    for l in es.difference(&gs).take(5) {
        out.push_str(&format!("  in the table only:  {l}\n"));
    }
    for l in gs.difference(&es).take(5) {
        out.push_str(&format!("  in the replay only: {l}\n"));
    }
    out
}

const SBTEST_COLUMNS: &[&str] = &["id", "k", "c", "pad"];

/// Totals of one pipeline's output over the sysbench tables.
#[derive(Debug, Default)]
struct Replayed {
    reads: usize,
    streamed: usize,
    rows: usize,
}

/// Replays each `sbtestN` table's file events by `id` and asserts the result equals the
/// table, row for row and byte for byte (`c` and `pad` as the server returns them).
fn assert_replay_equals_tables(out: &Path, db: &str, tables: u32) -> Replayed {
    let mut totals = Replayed::default();
    for t in 1..=tables {
        let table = format!("sbtest{t}");
        let events = read_events(&out.join(format!("{db}.{table}.jsonl")));
        for e in &events {
            let snapshot = e["op"] == "r";
            assert_eq!(e["source"]["snapshot"], snapshot, "{e}");
            assert_eq!(e["source"]["connector"], "mysql", "{e}");
        }
        let reads = events.iter().filter(|e| e["op"] == "r").count();
        totals.reads += reads;
        totals.streamed += events.len() - reads;
        let mut got: Vec<String> = converge(&events, "id")
            .values()
            .map(|r| json_text(r, SBTEST_COLUMNS))
            .collect();
        got.sort();
        let mut expected: Vec<String> = mariadb(&format!(
            "SELECT id, k, c, pad FROM `{db}`.`{table}` ORDER BY id"
        ))
        .lines()
        .map(str::to_owned)
        .collect();
        expected.sort();
        if got != expected {
            panic!(
                "{db}.{table}: the replayed file events differ from the table:\n{}",
                first_differences(&expected, &got)
            );
        }
        totals.rows += expected.len();
    }
    totals
}

/// The number of lines the file sink wrote for the sysbench tables.
fn lines_written(out: &Path, db: &str, tables: u32) -> usize {
    (1..=tables)
        .map(|t| read_events(&out.join(format!("{db}.sbtest{t}.jsonl"))).len())
        .sum()
}

#[test]
fn mysql_snapshot_under_sysbench_load_converges_exactly() {
    const TABLES: u32 = 4;
    const SIZE: u32 = 20_000;
    const SECS: u32 = 15;
    let started = Instant::now();
    let tag = unique("sb");
    let db = format!("weir_sb_{tag}");
    let _db = Database::create(&db);
    sysbench_prepare(&db, TABLES, SIZE);
    let prepared = started.elapsed();
    let dir = TempDir::new("my-sysbench");
    let pipeline = pipeline(dir.path(), &format!("mysb{tag}"), &db, 4, 2_000);

    // The load starts first, so the whole snapshot runs under it.
    let sb_log = dir.path().join("sysbench.log");
    let mut sb = sysbench_run(&db, TABLES, SIZE, SECS, 4, &sb_log);
    std::thread::sleep(Duration::from_millis(500));
    let weir_log = dir.path().join("run.log");
    let mut running = start_weir(&pipeline, &weir_log);
    // Where the snapshot is while the load runs (done well before the load ends).
    let mut snapshot_done_after = None;
    let weir_started = Instant::now();
    while snapshot_done_after.is_none() && weir_started.elapsed() < Duration::from_secs(SECS as u64)
    {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(status) = running.0.try_wait().unwrap() {
            panic!("weir run exited with {status}:\n{}", tail(&weir_log, 60));
        }
        if snapshot_status(&pipeline).starts_with("snapshot   done") {
            snapshot_done_after = Some(weir_started.elapsed());
        }
    }
    let transactions = sysbench_wait(&mut sb, &sb_log);
    if let Some(status) = running.0.try_wait().unwrap() {
        panic!("weir run exited with {status}:\n{}", tail(&weir_log, 60));
    }
    running.kill();
    let once = Instant::now();
    run_once_within(&pipeline, Duration::from_secs(60));
    let once = once.elapsed();

    let out = dir.path().join("out");
    let totals = assert_replay_equals_tables(&out, &db, TABLES);
    assert!(
        totals.reads >= (TABLES * SIZE) as usize * 9 / 10,
        "snapshot rows: {totals:?}"
    );
    // oltp_write_only: 4 row changes per transaction (2 updates, a delete, an insert).
    assert!(
        totals.streamed as u64 >= transactions,
        "streamed changes {} for {transactions} sysbench transactions",
        totals.streamed
    );
    let Some(snapshot_done_after) = snapshot_done_after else {
        panic!(
            "the snapshot did not finish while sysbench ran: {}",
            snapshot_status(&pipeline)
        );
    };
    // A second run adds nothing.
    let lines = lines_written(&out, &db, TABLES);
    run_once_within(&pipeline, Duration::from_secs(60));
    assert_eq!(lines_written(&out, &db, TABLES), lines);
    eprintln!(
        "sysbench snapshot: prepare {prepared:?}, {transactions} sysbench transactions in \
         {SECS} s, snapshot done {snapshot_done_after:?} after start, {} snapshot reads, \
         {} streamed changes, {} rows equal, catch-up run --once {once:?}, total {:?}",
        totals.reads,
        totals.streamed,
        totals.rows,
        started.elapsed()
    );
}

#[test]
fn mysql_sigkilled_twenty_times_under_sysbench_load_converges_exactly() {
    const TABLES: u32 = 4;
    const SIZE: u32 = 20_000;
    const SECS: u32 = 20;
    const KILLS: usize = 20;
    let started = Instant::now();
    let tag = unique("kl");
    let db = format!("weir_sb_{tag}");
    let _db = Database::create(&db);
    sysbench_prepare(&db, TABLES, SIZE);
    let dir = TempDir::new("my-sbkill");
    let pipeline = pipeline(dir.path(), &format!("mykl{tag}"), &db, 3, 500);

    let sb_log = dir.path().join("sysbench.log");
    let mut sb = sysbench_run(&db, TABLES, SIZE, SECS, 4, &sb_log);
    let mut rng = Rng(0x5eed_4004);
    let (mut kills, mut in_snapshot) = (0, 0);
    let weir_log = dir.path().join("run.log");
    // Kill until the load is over and at least KILLS kills happened: the first ones inside the
    // snapshot (each once its run has finished a chunk), the others at random moments.
    let mut chunks_before = 0;
    while kills < KILLS || sb.0.try_wait().unwrap().is_none() {
        let running = start_weir(&pipeline, &weir_log);
        let begun = Instant::now();
        if kills < 4 && !snapshot_status(&pipeline).starts_with("snapshot   done") {
            // Inside the snapshot: as soon as this run has finished a chunk of its own.
            while begun.elapsed() < Duration::from_secs(5) {
                let snap = snapshot_status(&pipeline);
                let done = snapshot_chunks(&snap).map_or(0, |(d, _)| d);
                if snap.starts_with("snapshot   done") || done > chunks_before {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        } else {
            std::thread::sleep(Duration::from_millis(rng.range(200, 1_200)));
        }
        let ms = begun.elapsed().as_millis();
        running.kill(); // SIGKILL
        kills += 1;
        let snap = snapshot_status(&pipeline);
        if !snap.starts_with("snapshot   done") {
            in_snapshot += 1;
        }
        chunks_before = snapshot_chunks(&snap).map_or(0, |(d, _)| d);
        eprintln!("kill {kills} after {ms} ms: {snap}");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the kill loop ran too long"
        );
    }
    let transactions = sysbench_wait(&mut sb, &sb_log);
    let once = Instant::now();
    run_once_within(&pipeline, Duration::from_secs(60));
    let once = once.elapsed();

    let out = dir.path().join("out");
    let totals = assert_replay_equals_tables(&out, &db, TABLES);
    assert!(kills >= KILLS, "{kills} kills");
    assert!(
        in_snapshot >= 1,
        "no kill landed inside the snapshot ({kills} kills)"
    );
    assert!(
        totals.streamed as u64 >= transactions,
        "streamed changes {} for {transactions} sysbench transactions",
        totals.streamed
    );
    let lines = lines_written(&out, &db, TABLES);
    run_once_within(&pipeline, Duration::from_secs(60));
    assert_eq!(lines_written(&out, &db, TABLES), lines);
    eprintln!(
        "sysbench kills: {kills} SIGKILLs ({in_snapshot} inside the snapshot), \
         {transactions} sysbench transactions, {} snapshot reads, \
         {} streamed changes, {} rows equal, catch-up run --once {once:?}, total {:?}",
        totals.reads,
        totals.streamed,
        totals.rows,
        started.elapsed()
    );
}

/// The binlog files the server has.
fn binlogs() -> Vec<String> {
    mariadb("SHOW BINARY LOGS")
        .lines()
        .filter_map(|l| l.split('\t').next().map(str::to_owned))
        .collect()
}

#[test]
fn mysql_purge_past_the_position_stops_with_the_missing_binlog_and_the_fix() {
    let tag = unique("pu");
    let name = format!("mypu{tag}");
    let db = format!("weir_pu_{tag}");
    let _db = Database::create(&db);
    mariadb(&format!(
        "CREATE TABLE `{db}`.t (id INT PRIMARY KEY, v INT NOT NULL); \
         INSERT INTO `{db}`.t VALUES (1, 1), (2, 2), (3, 3);"
    ));
    let dir = TempDir::new("my-purge");
    let pipeline = pipeline(dir.path(), &name, &db, 1, 1_000);
    run_once_within(&pipeline, Duration::from_secs(60)); // snapshot
    mariadb(&format!("INSERT INTO `{db}`.t VALUES (4, 4)"));
    run_once_within(&pipeline, Duration::from_secs(60)); // streams the insert
    let file = dir.path().join(format!("out/{db}.t.jsonl"));
    let before = read_events(&file);
    assert_eq!(before.len(), 4, "{before:?}");
    let last = &before[3];
    assert_eq!(last["op"], "c", "{last}");
    let weir_file = last["source"]["file"].as_str().unwrap().to_owned();
    let weir_gtid = last["source"]["gtid"].as_str().unwrap_or("").to_owned();

    let status = run(weir().arg("status").arg(&pipeline));
    let status_position = String::from_utf8_lossy(&status.stdout)
        .lines()
        .find(|l| l.starts_with("source"))
        .unwrap_or("")
        .to_owned();
    eprintln!("purge: weir status: {status_position}");

    // Stopped: changes, then the binlogs up to the current one are purged.
    mariadb(&format!(
        "UPDATE `{db}`.t SET v = 20 WHERE id = 2; DELETE FROM `{db}`.t WHERE id = 3; \
         INSERT INTO `{db}`.t VALUES (5, 5);"
    ));
    mariadb("FLUSH BINARY LOGS");
    mariadb("FLUSH BINARY LOGS");
    let current = mariadb("SHOW MASTER STATUS")
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    // The server keeps a file until its binlog checkpoint is written, and a replica that
    // just disconnected may still hold it for a moment: retry the purge for a while.
    let purge_started = Instant::now();
    loop {
        let warnings = mariadb(&format!("PURGE BINARY LOGS TO '{current}'; SHOW WARNINGS"));
        let left = binlogs();
        if !left.contains(&weir_file) {
            break;
        }
        if purge_started.elapsed() > Duration::from_secs(3) {
            // A binlog reader outside this test group (a benchmark, a stray replica) pins
            // the file: disconnect binlog readers so the purge can proceed. weir's own
            // sources treat a dropped connection as transient and reconnect.
            mariadb(
                "SELECT GROUP_CONCAT(CONCAT('KILL ', id, ';') SEPARATOR ' ') \
                 FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'",
            )
            .split(';')
            .map(str::trim)
            .filter(|k| k.starts_with("KILL "))
            .for_each(|k| {
                // The thread may already be gone: its error does not matter.
                let _ = mariadb_command().args(["-e", k]).output();
            });
        }
        assert!(
            purge_started.elapsed() < Duration::from_secs(20),
            "{weir_file} is still on the server after PURGE BINARY LOGS TO '{current}' \
             (another client reading it?): {left:?}; warnings: {warnings}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "purge: last event in {weir_file} (GTID {weir_gtid}); purged up to {current} in {:?}",
        purge_started.elapsed()
    );

    for attempt in 0..2 {
        let out = run(weir().args(["run", "--once"]).arg(&pipeline));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "attempt {attempt}: {stderr}");
        assert!(
            stderr.contains("re-snapshot"),
            "attempt {attempt}: the message does not say to re-snapshot: {stderr}"
        );
        // On MariaDB weir resumes by GTID: the message names the binlog file or the GTID
        // position weir stored (the one `weir status` shows).
        let gtid = stderr
            .split("GTID position ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next());
        assert!(
            stderr.contains(&weir_file) || gtid.is_some_and(|g| status_position.contains(g)),
            "attempt {attempt}: the message names neither the missing binlog {weir_file} nor \
             weir's position ({status_position}): {stderr}"
        );
        eprintln!("purge: weir said: {}", stderr.trim());
        // Nothing skipped: no event after the purge reached the sink.
        assert_eq!(read_events(&file).len(), before.len(), "attempt {attempt}");
    }

    // The recovery the message gives: remove the staging log, snapshot again.
    std::fs::remove_dir_all(dir.path().join("data").join(&name)).unwrap();
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    run_once_within(&pipeline, Duration::from_secs(60));
    let mut got: Vec<String> = converge(&read_events(&file), "id")
        .values()
        .map(|r| json_text(r, &["id", "v"]))
        .collect();
    got.sort();
    assert_eq!(got, ["1\t1", "2\t20", "4\t4", "5\t5"]);
}
