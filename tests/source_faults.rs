//! Source servers that restart under a running pipeline, and a source held paused by
//! backpressure longer than the server's replication timeout. The servers here are
//! throwaway ones (tests/outage.rs), so restarting them disturbs no other test.

use crate::common::*;
use crate::outage::{ThrowawayMaria, ThrowawayPg, WeirRun, metric};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Ids per op from a file sink's JSON lines of table `file` (missing file: none).
fn ids_by_op(file: &Path) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(file) else {
        return out;
    };
    for line in text.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        let op = e["op"].as_str().unwrap().to_string();
        let row = if op == "d" { &e["before"] } else { &e["after"] };
        out.entry(op).or_default().push(row["id"].as_i64().unwrap());
    }
    out
}

/// Asserts the inserts in `file` are exactly ids `1..=n`, each once.
fn assert_inserted_once(file: &Path, n: i64, log: &str) {
    let mut got = ids_by_op(file).remove("c").unwrap_or_default();
    let total = got.len();
    got.sort_unstable();
    got.dedup();
    assert_eq!(
        got.len(),
        total,
        "duplicated inserts in {}:\n{log}",
        file.display()
    );
    assert_eq!(
        got,
        (1..=n).collect::<Vec<_>>(),
        "missing inserts in {}:\n{log}",
        file.display()
    );
}

fn wait_lines(
    file: &Path,
    n: usize,
    secs: u64,
    weir: &mut WeirRun,
    server_log: &dyn Fn() -> String,
) {
    wait_for(&format!("{n} lines in {}", file.display()), secs, || {
        if weir.proc.0.try_wait().unwrap().is_some() {
            panic!(
                "weir run exited while waiting for the changes:\n{}\nserver log:\n{}",
                weir.log_text(),
                server_log()
            );
        }
        let have = std::fs::read_to_string(file)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        (have >= n).then_some(())
    });
}

/// Admin SQL (`PAUSE SINK` / `RESUME SINK`) through psql.
fn admin_sql(port: u16, sql: &str) {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "weir",
            "-d",
            "weir",
        ])
        .args(["-XtAq", "-c", sql])
        .env("PGPASSWORD", "adminpw")
        .output()
        .expect("psql is missing");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The walsender's pid for `slot` (None while no walsender holds it).
fn walsender(pg: &ThrowawayPg, slot: &str) -> Option<String> {
    let pid = pg.psql(&format!(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = '{slot}'"
    ));
    (!pid.is_empty()).then_some(pid)
}

#[test]
fn postgres_source_keeps_its_walsender_while_paused_and_survives_a_server_restart() {
    // A 3 s replication timeout: a source that stops answering while paused is cut off fast.
    let pg = ThrowawayPg::with_settings(&[
        "wal_level=logical",
        "max_wal_senders=10",
        "max_replication_slots=10",
        "wal_sender_timeout=3s",
    ]);
    pg.psql("CREATE TABLE public.t (id bigint PRIMARY KEY, pad text NOT NULL)");
    let dir = TempDir::new("srcfault-pg");
    let (metrics, admin) = (free_port(), free_port());
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"pgrestart\"\ndata_dir = \"data\"\n\n[source]\ntype = \"postgres\"\n\
             url = \"{}\"\ntables = [\"public.t\"]\nsnapshot = \"never\"\n\n\
             [log]\nmax_bytes = \"256KiB\"\n\n\
             [[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n\n\
             [admin]\nmetrics = \"127.0.0.1:{metrics}\"\nlisten = \"127.0.0.1:{admin}\"\n\
             password = \"adminpw\"\n",
            pg.url()
        ),
    );
    run_once_ok(&pipeline); // slot and publication
    let file = dir.path().join("out/public.t.jsonl");
    let mut weir = WeirRun::start(&pipeline);
    wait_for("the admin SQL port", 60, || {
        std::net::TcpStream::connect(("127.0.0.1", admin))
            .ok()
            .map(|_| ())
    });
    let slot = "weir_pgrestart";
    let sender = wait_for("the walsender", 60, || walsender(&pg, slot));

    // 1. Paused by backpressure for 4x wal_sender_timeout: the source keeps answering.
    admin_sql(admin, "PAUSE SINK files");
    // ~2 MB of changes: far past [log] max_bytes, so the source pauses.
    for b in 0..20 {
        pg.psql(&format!(
            "INSERT INTO public.t SELECT g, repeat('x', 1000) FROM generate_series({}, {}) g",
            b * 100 + 1,
            b * 100 + 100
        ));
    }
    std::thread::sleep(Duration::from_secs(12));
    weir.assert_running("while paused");
    let log = pg.server_log();
    assert!(
        !log.contains("replication timeout"),
        "the walsender timed out while weir was paused:\n{log}"
    );
    assert_eq!(
        walsender(&pg, slot).as_deref(),
        Some(sender.as_str()),
        "the walsender changed while paused (the connection was lost):\n{}",
        weir.log_text()
    );
    assert_eq!(metric(metrics, "weir_source_retries_total"), Some(0.0));
    admin_sql(admin, "RESUME SINK files");
    wait_lines(&file, 2000, 120, &mut weir, &|| pg.server_log());

    // 2. The server restarts (fast shutdown cuts the walsender) between and during loads.
    pg.psql("INSERT INTO public.t SELECT g, 'b' FROM generate_series(2001, 2500) g");
    pg.restart_fast();
    pg.psql("INSERT INTO public.t SELECT g, 'c' FROM generate_series(2501, 3000) g");
    wait_lines(&file, 3000, 120, &mut weir, &|| pg.server_log());
    let retries = metric(metrics, "weir_source_retries_total").unwrap_or(0.0);
    assert!(
        retries >= 1.0,
        "the restart did not make the source reconnect"
    );
    let log = weir.stop();
    assert_inserted_once(&file, 3000, &log);
    assert_eq!(pg.psql("SELECT count(*) FROM public.t"), "3000");
}

#[test]
fn mariadb_source_server_killed_and_restarted_resumes_exactly() {
    let mut db = ThrowawayMaria::with_args(&[
        "--log-bin=mysql-bin",
        "--binlog-format=ROW",
        "--binlog-row-image=FULL",
        "--binlog-row-metadata=FULL",
        "--server-id=77",
    ]);
    db.sql("CREATE DATABASE src; CREATE TABLE src.t (id bigint PRIMARY KEY, v int NOT NULL)");
    let dir = TempDir::new("srcfault-maria");
    let metrics = free_port();
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"mariarestart\"\ndata_dir = \"data\"\n\n[source]\ntype = \"mysql\"\n\
             url = \"mysql://root@127.0.0.1:{}/src\"\ntables = [\"src.t\"]\nsnapshot = \"never\"\n\
             server_id = 4242\n\n\
             [[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n\n\
             [admin]\nmetrics = \"127.0.0.1:{metrics}\"\n",
            db.port()
        ),
    );
    let file = dir.path().join("out/src.t.jsonl");
    let mut weir = WeirRun::start(&pipeline);
    wait_for("the metrics port", 60, || {
        metric(metrics, "weir_source_retries_total")
    });
    let insert = |db: &ThrowawayMaria, from: i64, to: i64| {
        // One transaction per 10 rows.
        let mut sql = String::new();
        let mut id = from;
        while id <= to {
            let end = (id + 9).min(to);
            sql.push_str(&format!(
                "BEGIN; INSERT INTO src.t SELECT seq, seq % 7 FROM src.seq_{id}_to_{end}; COMMIT;"
            ));
            id = end + 1;
        }
        db.sql(&sql);
    };
    insert(&db, 1, 500);
    wait_lines(&file, 500, 120, &mut weir, &|| db.error_log());
    // A crash (SIGKILL) while weir streams, then a restart on the same data.
    insert(&db, 501, 800);
    db.kill();
    let started = Instant::now();
    db.start();
    insert(&db, 801, 1200);
    let rows: i64 = db.sql("SELECT count(*) FROM src.t").parse().unwrap();
    assert!(rows >= 1000, "the crash lost more than it should: {rows}");
    wait_lines(&file, rows as usize, 120, &mut weir, &|| db.error_log());
    let retries = metric(metrics, "weir_source_retries_total").unwrap_or(0.0);
    assert!(
        retries >= 1.0,
        "the crash did not make the source reconnect"
    );
    let log = weir.stop();
    // What the server kept after its crash recovery is exactly what arrived, once each.
    let ids: Vec<i64> = db
        .sql("SELECT id FROM src.t ORDER BY id")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let mut got = ids_by_op(&file).remove("c").unwrap_or_default();
    got.sort_unstable();
    assert_eq!(
        got,
        ids,
        "the stream differs from the table after a server crash ({:.1}s down+up):\n{log}",
        started.elapsed().as_secs_f64()
    );
}
