//! PostgreSQL → file sink through the binary, against the real server from scripts/services.sh.

use crate::common::*;
use std::process::Command;

/// `psql` on the test server's `postgres` database (tests/common.rs).
fn psql_command() -> Command {
    crate::common::psql_command("postgres")
}

fn psql(sql: &str) -> String {
    psql_in("postgres", sql)
}

/// Drops the test's slot, publication and table even when the test fails.
struct Cleanup {
    name: String,
    table: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Best effort: go on past errors so every object gets its chance to be dropped.
        let _ = psql_command()
            .args(["-v", "ON_ERROR_STOP=0", "-c"])
            .arg(format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'weir_{0}'; \
                 DROP PUBLICATION IF EXISTS weir_{0}; DROP TABLE IF EXISTS public.\"{1}\";",
                self.name, self.table
            ))
            .output();
    }
}

/// A test's unique pipeline name and table (`kind` tells tests apart), with its cleanup.
fn fixture(kind: &str, columns: &str) -> (String, String, Cleanup) {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let tag = format!("{kind}{}_{}", std::process::id(), millis % 1_000_000);
    let name = format!("pg{tag}");
    let table = format!("weir_{kind}_{tag}");
    let cleanup = Cleanup {
        name: name.clone(),
        table: table.clone(),
    };
    psql(&format!("CREATE TABLE public.\"{table}\" ({columns})"));
    (name, table, cleanup)
}

/// A postgres → file pipeline over `table`; `password` is the URL's password text.
fn pg_pipeline(
    dir: &std::path::Path,
    name: &str,
    table: &str,
    password: &str,
) -> std::path::PathBuf {
    write_pipeline(
        dir,
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"postgres\"\nurl = \"postgres://postgres:{password}@127.0.0.1:5432/postgres\"\ntables = [\"public.{table}\"]\nsnapshot = \"never\"\n\n[[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n"
        ),
    )
}

#[test]
fn postgres_changes_reach_the_file_sink_exactly_once() {
    let (name, table, _cleanup) = fixture(
        "e2e",
        "id bigint PRIMARY KEY, name text, amount numeric(20,2), at timestamptz, doc jsonb, ok boolean",
    );
    let dir = TempDir::new("pg-file");
    let pipeline = pg_pipeline(dir.path(), &name, &table, "${WEIR_TEST_PGPASSWORD}");
    let run_once = || {
        let out = run(weir()
            .args(["run", "--once"])
            .arg(&pipeline)
            .env("WEIR_TEST_PGPASSWORD", "postgres"));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "weir run --once failed: {stderr}");
        assert!(
            !stderr.contains(":postgres@"),
            "the password reached the log: {stderr}"
        );
    };
    // First run: creates the publication and the slot; nothing to stream yet.
    run_once();
    psql(&format!(
        "BEGIN; INSERT INTO public.\"{table}\" VALUES \
           (1, 'caf\u{e9} \u{1F600}', 12345678901234567.25, '2024-02-29 13:45:01.250001+01', '{{\"a\": [1, 2]}}', true), \
           (2, NULL, NULL, NULL, NULL, NULL); COMMIT; \
         BEGIN; UPDATE public.\"{table}\" SET name = 'renamed' WHERE id = 1; DELETE FROM public.\"{table}\" WHERE id = 2; COMMIT;"
    ));
    run_once();
    let file = dir.path().join(format!("out/public.{table}.jsonl"));
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let events = read();
    let (schemas, index) = crate::schemas::compile("change-event.schema.json");
    for e in &events {
        if let Err(err) = schemas.validate(e, index) {
            panic!("{e}\ndoes not match schemas/change-event.schema.json: {err}");
        }
    }
    let ops: Vec<&str> = events.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["c", "c", "u", "d"]);
    let first = &events[0]["after"];
    assert_eq!(first["id"], 1);
    assert_eq!(first["name"], "caf\u{e9} \u{1F600}");
    assert_eq!(first["amount"], "12345678901234567.25");
    assert_eq!(first["at"], "2024-02-29T12:45:01.250001Z");
    assert_eq!(first["doc"], serde_json::json!({"a": [1, 2]}));
    assert_eq!(first["ok"], true);
    assert!(events[1]["after"]["name"].is_null());
    assert_eq!(events[2]["after"]["name"], "renamed");
    assert_eq!(events[3]["before"]["id"], 2);
    assert!(events[3]["after"].is_null());
    let source = &events[0]["source"];
    assert_eq!(source["connector"], "postgres");
    assert_eq!(source["db"], "postgres");
    assert_eq!(source["table"], table.as_str());
    assert!(source["lsn"].as_str().unwrap().contains('/'));
    assert_eq!(
        events[0]["source"]["txid"], events[1]["source"]["txid"],
        "one source transaction"
    );
    // Nothing new: a third run adds nothing.
    run_once();
    assert_eq!(read().len(), 4);
}

#[test]
fn sigkilled_postgres_pipeline_delivers_every_committed_change_exactly_once() {
    let (name, table, _cleanup) = fixture("kill", "id bigint PRIMARY KEY, v int NOT NULL");
    let dir = TempDir::new("pg-kill");
    let pipeline = pg_pipeline(dir.path(), &name, &table, "postgres");
    run_once_ok(&pipeline); // creates the slot

    // Load: 400 transactions of 5 inserts, spread over a few seconds, then one 2,000-row update.
    const TXNS: u64 = 400;
    let mut script = String::new();
    for t in 0..TXNS {
        let rows: Vec<String> = (0..5).map(|r| format!("({}, 0)", t * 5 + r)).collect();
        script.push_str(&format!(
            "BEGIN; INSERT INTO public.\"{table}\" VALUES {}; COMMIT;\n",
            rows.join(", ")
        ));
        if t % 20 == 0 {
            script.push_str("SELECT pg_sleep(0.1);\n");
        }
    }
    script.push_str(&format!("UPDATE public.\"{table}\" SET v = 1;\n"));
    let script_path = dir.path().join("load.sql");
    std::fs::write(&script_path, script).unwrap();
    let load = std::thread::spawn(move || {
        let out = psql_command().arg("-f").arg(&script_path).output().unwrap();
        assert!(
            out.status.success(),
            "load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let mut rng = Rng(77);
    for _ in 0..6 {
        let mut child = weir().arg("run").arg(&pipeline).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.range(300, 900)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    load.join().unwrap();
    run_once_ok(&pipeline);

    let file = dir.path().join(format!("out/public.{table}.jsonl"));
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let n = (TXNS * 5) as usize;
    assert_eq!(
        events.len(),
        2 * n,
        "every insert and every update exactly once"
    );
    for (i, e) in events[..n].iter().enumerate() {
        assert_eq!(
            (e["op"].as_str(), e["after"]["id"].as_u64()),
            (Some("c"), Some(i as u64)),
            "insert {i}"
        );
    }
    let mut updated: Vec<u64> = events[n..]
        .iter()
        .map(|e| {
            assert_eq!(e["op"], "u");
            assert_eq!(e["after"]["v"], 1);
            e["after"]["id"].as_u64().unwrap()
        })
        .collect();
    updated.sort_unstable();
    assert_eq!(updated, (0..n as u64).collect::<Vec<_>>());
    let txids: std::collections::BTreeSet<String> = events[n..]
        .iter()
        .map(|e| e["source"]["txid"].to_string())
        .collect();
    assert_eq!(
        txids.len(),
        1,
        "the 2,000-row update is one source transaction"
    );
}

#[test]
fn check_reports_postgres_problems_with_their_fix() {
    let (name, table, _cleanup) = fixture("check", "a int, b text");
    let dir = TempDir::new("pg-check");
    let write = |tables: &str| {
        write_pipeline(
            dir.path(),
            &format!(
                "name = \"{name}\"\n[source]\ntype = \"postgres\"\nurl = \"postgres://postgres:postgres@127.0.0.1:5432/postgres\"\ntables = [{tables}]\nsnapshot = \"never\"\n[[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n"
            ),
        )
    };
    // A keyless table: a warning that says what to run; not fatal.
    let out = run(weir()
        .arg("check")
        .arg(write(&format!("\"public.{table}\""))));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("REPLICA IDENTITY FULL") && stdout.contains(table.as_str()),
        "{stdout}"
    );
    assert!(!stdout.contains(":postgres@"), "password printed: {stdout}");
    // Nothing matches: fatal, exit 1.
    let out = run(weir().arg("check").arg(write("\"nosuchschema.nothing_*\"")));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Applies file-sink events in order, by key: what a key-upserting target ends up holding.
pub(crate) fn converge(
    events: &[serde_json::Value],
    key: &[&str],
) -> std::collections::BTreeMap<String, String> {
    let key_of = |row: &serde_json::Value| -> String {
        key.iter()
            .map(|k| row[*k].to_string())
            .collect::<Vec<_>>()
            .join("|")
    };
    let mut rows = std::collections::BTreeMap::new();
    for e in events {
        match e["op"].as_str().unwrap() {
            "r" | "c" | "u" => {
                if e["op"] == "u" && e["before"].is_object() {
                    rows.remove(&key_of(&e["before"]));
                }
                rows.insert(key_of(&e["after"]), e["after"].to_string());
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

#[test]
fn snapshot_then_stream_converges_under_writes_and_kills() {
    let (name, table, _cleanup) =
        fixture("snap", "id bigint PRIMARY KEY, v int NOT NULL, note text");
    const ROWS: u64 = 200_000;
    psql(&format!(
        "INSERT INTO public.\"{table}\" SELECT g, 0, 'row ' || g FROM generate_series(1, {ROWS}) g"
    ));
    let dir = TempDir::new("pg-snap");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"postgres\"\n\
             url = \"postgres://postgres:postgres@127.0.0.1:5432/postgres\"\n\
             tables = [\"public.{table}\"]\nsnapshot_workers = 3\nsnapshot_chunk_rows = 2000\n\n\
             [[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n"
        ),
    );
    // Writers during the snapshot and the stream: updates over the whole key range, inserts
    // past it, deletes, in small transactions.
    let mut script = String::new();
    let mut rng = Rng(4242);
    for t in 0..300u64 {
        let a = rng.range(1, ROWS);
        let b = rng.range(1, ROWS);
        script.push_str(&format!(
            "BEGIN; UPDATE public.\"{table}\" SET v = v + 1, note = 'upd {t}' WHERE id IN ({a}, {b}); \
             INSERT INTO public.\"{table}\" VALUES ({}, {t}, NULL); \
             DELETE FROM public.\"{table}\" WHERE id = {}; COMMIT;\n",
            ROWS + 1 + t,
            rng.range(1, ROWS)
        ));
        if t % 10 == 0 {
            script.push_str("SELECT pg_sleep(0.05);\n");
        }
    }
    let script_path = dir.path().join("load.sql");
    std::fs::write(&script_path, script).unwrap();
    let load = std::thread::spawn(move || {
        let out = psql_command().arg("-f").arg(&script_path).output().unwrap();
        assert!(
            out.status.success(),
            "load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    for _ in 0..4 {
        let mut child = weir()
            .arg("run")
            .arg(&pipeline)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.range(400, 1500)));
        child.kill().unwrap(); // SIGKILL, often mid-snapshot
        child.wait().unwrap();
    }
    load.join().unwrap();
    run_once_ok(&pipeline);

    let file = dir.path().join(format!("out/public.{table}.jsonl"));
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reads = events.iter().filter(|e| e["op"] == "r").count() as u64;
    assert!(reads >= ROWS - 300, "snapshot rows staged: {reads}");
    for e in events.iter().filter(|e| e["op"] == "r").take(3) {
        assert_eq!(e["source"]["snapshot"], true, "{e}");
    }
    let got = converge(&events, &["id"]);
    let expected: std::collections::BTreeMap<String, String> = psql(&format!(
        "SELECT json_build_object('id', id, 'v', v, 'note', note)::text FROM public.\"{table}\""
    ))
    .lines()
    .map(|l| {
        let row: serde_json::Value = serde_json::from_str(l).unwrap();
        (row["id"].to_string(), row.to_string())
    })
    .collect();
    assert_eq!(got.len(), expected.len(), "row count after convergence");
    let diff: Vec<_> = expected
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .take(5)
        .collect();
    assert!(diff.is_empty(), "rows differ (first 5 expected): {diff:?}");
    // 100 chunks of 2,000 keys and the rest; all finished.
    let status = run(weir().arg("status").arg(&pipeline));
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("snapshot   done  chunks=101/101"),
        "{status}"
    );
    // A second run adds nothing.
    let lines = events.len();
    run_once_ok(&pipeline);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().lines().count(),
        lines
    );
}

#[test]
fn dropped_slot_stops_the_pipeline_and_says_what_to_do() {
    let (name, table, _cleanup) = fixture("drop", "id bigint PRIMARY KEY");
    let dir = TempDir::new("pg-drop");
    let pipeline = pg_pipeline(dir.path(), &name, &table, "postgres");
    run_once_ok(&pipeline); // creates the slot
    psql(&format!("INSERT INTO public.\"{table}\" VALUES (1)"));
    psql(&format!("SELECT pg_drop_replication_slot('weir_{name}')"));
    let out = run(weir().args(["run", "--once"]).arg(&pipeline));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not exist any more") && stderr.contains("staging log directory"),
        "{stderr}"
    );
    // It did not quietly make a new slot and skip the change.
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'weir_{name}'"
        )),
        "0"
    );
}

#[test]
fn lost_replication_connections_are_reconnected_without_loss_or_duplicates() {
    let (name, table, _cleanup) = fixture("conn", "id bigint PRIMARY KEY, v text");
    let dir = TempDir::new("pg-conn");
    let pipeline = pg_pipeline(dir.path(), &name, &table, "postgres");
    run_once_ok(&pipeline);
    let mut child = weir()
        .arg("run")
        .arg(&pipeline)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    const TXNS: u64 = 200;
    let mut script = String::new();
    for t in 0..TXNS {
        script.push_str(&format!(
            "INSERT INTO public.\"{table}\" VALUES ({}, 'a'), ({}, 'b');\n",
            2 * t,
            2 * t + 1
        ));
        if t % 10 == 0 {
            script.push_str("SELECT pg_sleep(0.05);\n");
        }
    }
    let script_path = dir.path().join("load.sql");
    std::fs::write(&script_path, script).unwrap();
    let load = std::thread::spawn(move || {
        let out = psql_command().arg("-f").arg(&script_path).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    // Cut weir's replication connection a few times while the load runs.
    let mut cuts = 0;
    for _ in 0..30 {
        std::thread::sleep(std::time::Duration::from_millis(150));
        let killed = psql(&format!(
            "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots \
             WHERE slot_name = 'weir_{name}' AND active_pid IS NOT NULL"
        ));
        if killed == "1" {
            cuts += 1;
        }
        if cuts == 3 {
            break;
        }
    }
    load.join().unwrap();
    assert!(cuts >= 2, "the test cut only {cuts} connections");
    // weir is still running: it reconnects by itself. Stop it gracefully, then catch up.
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "weir run exited with {status}");
    run_once_ok(&pipeline);
    let file = dir.path().join(format!("out/public.{table}.jsonl"));
    let ids: Vec<u64> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| {
            let e: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(e["op"], "c");
            e["after"]["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        ids,
        (0..2 * TXNS).collect::<Vec<_>>(),
        "every insert once, in order"
    );
}

#[test]
fn add_drop_and_retype_columns_decode_with_the_right_columns_in_stream_order() {
    let (name, table, _cleanup) = fixture("ddl", "id bigint PRIMARY KEY, a text");
    let dir = TempDir::new("pg-ddl");
    let pipeline = pg_pipeline(dir.path(), &name, &table, "postgres");
    run_once_ok(&pipeline);
    psql(&format!(
        "INSERT INTO public.\"{table}\" VALUES (1, 'x'); \
         ALTER TABLE public.\"{table}\" ADD COLUMN b int; \
         INSERT INTO public.\"{table}\" VALUES (2, 'y', 7); \
         ALTER TABLE public.\"{table}\" DROP COLUMN a; \
         INSERT INTO public.\"{table}\" VALUES (3, 8); \
         ALTER TABLE public.\"{table}\" ALTER COLUMN b TYPE bigint; \
         INSERT INTO public.\"{table}\" VALUES (4, 9000000000);"
    ));
    run_once_ok(&pipeline);
    let file = dir.path().join(format!("out/public.{table}.jsonl"));
    let afters: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["after"].clone())
        .collect();
    assert_eq!(
        afters,
        vec![
            serde_json::json!({"id": 1, "a": "x"}),
            serde_json::json!({"id": 2, "a": "y", "b": 7}),
            serde_json::json!({"id": 3, "b": 8}),
            serde_json::json!({"id": 4, "b": 9000000000u64}),
        ]
    );
}

#[test]
fn an_idle_pipeline_next_to_a_busy_database_does_not_hold_wal() {
    let (name, table, _cleanup) = fixture("idle", "id bigint PRIMARY KEY");
    let (_, busy, _busy_cleanup) = fixture("busy", "id bigint PRIMARY KEY, pad text");
    let dir = TempDir::new("pg-idle");
    let pipeline = pg_pipeline(dir.path(), &name, &table, "postgres");
    run_once_ok(&pipeline);
    let confirmed = || {
        psql(&format!(
            "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots \
             WHERE slot_name = 'weir_{name}'"
        ))
        .parse::<u64>()
        .unwrap()
    };
    let before = confirmed();
    let mut child = weir()
        .arg("run")
        .arg(&pipeline)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // 2 MB of WAL on another table, none on the pipeline's.
    psql(&format!(
        "INSERT INTO public.\"{busy}\" SELECT g, repeat('x', 1000) FROM generate_series(1, 2000) g"
    ));
    let target = psql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        .parse::<u64>()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while confirmed() < target && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let after = confirmed();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        after >= target && after > before,
        "the slot's confirmed_flush_lsn stayed at {after} (target {target}, before {before})"
    );
}

#[test]
fn a_new_table_matching_the_globs_joins_the_publication_on_restart() {
    let (name, table, _cleanup) = fixture("glob", "id bigint PRIMARY KEY");
    let dir = TempDir::new("pg-glob");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"postgres\"\n\
             url = \"postgres://postgres:postgres@127.0.0.1:5432/postgres\"\n\
             tables = [\"public.{table}*\", \"public.Later_{table}\"]\nsnapshot = \"never\"\n\n\
             [[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n"
        ),
    );
    // An explicit entry that matches nothing yet is reported (a typo would be), not skipped
    // in silence.
    let logged = run_once_ok(&pipeline);
    let warning = format!("the `tables` entry \"public.Later_{table}\" matches no table");
    assert!(logged.contains(&warning), "{logged}");
    let create = |t: &str| {
        psql(&format!(
            "CREATE TABLE public.\"{t}\" (id bigint PRIMARY KEY)"
        ));
        Cleanup {
            name: name.clone(),
            table: t.to_string(),
        }
    };
    let later = format!("Later_{table}");
    let _cleanup_later = create(&later);
    let newer = format!("{table}_new");
    let _cleanup_newer = create(&newer);
    let logged = run_once_ok(&pipeline); // adds both to the publication
    assert!(!logged.contains(&warning), "{logged}");
    psql(&format!(
        "INSERT INTO public.\"{newer}\" VALUES (1); INSERT INTO public.\"{table}\" VALUES (2); \
         INSERT INTO public.\"{later}\" VALUES (3)"
    ));
    run_once_ok(&pipeline);
    let lines = |t: &str| {
        std::fs::read_to_string(dir.path().join(format!("out/public.{t}.jsonl")))
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!((lines(&table), lines(&newer), lines(&later)), (1, 1, 1));
}

/// On a terminal the snapshot draws progress bars per table (rows, rate, ETA, chunks), redrawn
/// in place; without one it logs progress lines instead and draws nothing.
#[test]
fn snapshot_progress_is_drawn_as_bars_on_a_terminal_and_logged_otherwise() {
    let (name, table, _cleanup) = fixture("bars", "id bigint PRIMARY KEY, note text");
    psql(&format!(
        "INSERT INTO public.\"{table}\" SELECT g, 'row ' || g FROM generate_series(1, 60000) g; \
         ANALYZE public.\"{table}\""
    ));
    let dir = TempDir::new("pg-bars");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"postgres\"\n\
             url = \"postgres://postgres:postgres@127.0.0.1:5432/postgres\"\n\
             tables = [\"public.{table}\"]\nsnapshot = \"only\"\nsnapshot_chunk_rows = 6000\n\n\
             [[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n"
        ),
    );
    // `script` (util-linux) runs weir on a pseudo-terminal and copies what it shows.
    let weir_bin = env!("CARGO_BIN_EXE_weir");
    let out = Command::new("script")
        .args(["-qfec"])
        .arg(format!("{weir_bin} run --once {}", pipeline.display()))
        .arg("/dev/null")
        .env("RUST_LOG", "info")
        .output()
        .expect("script (util-linux) is missing");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "weir run --once failed: {shown}");
    let plain = shown.replace("\x1b[2K", "");
    let bar = format!("public.{table}  [");
    assert!(
        plain.contains(&bar),
        "no progress bar for the table: {plain}"
    );
    assert!(
        plain.contains("100%  60,000 / 60,000 rows") && plain.contains("chunks 11/11"),
        "the last bar does not show the finished table: {plain}"
    );
    assert!(
        plain.contains("snapshot: 1/1 tables done, 60,000 / 60,000 rows"),
        "no total line: {plain}"
    );
    assert!(
        plain.contains('\u{2588}') && plain.contains("rows/s"),
        "bars without blocks or rate: {plain}"
    );
    assert!(
        !plain.contains("snapshot progress"),
        "progress log lines as well as bars: {plain}"
    );
    let lines = std::fs::read_to_string(dir.path().join(format!("out/public.{table}.jsonl")))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines, 60_000);

    // Not a terminal: progress as log lines, no bars, no cursor movement.
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    psql(&format!("SELECT pg_drop_replication_slot('weir_{name}')"));
    let out = weir()
        .env("RUST_LOG", "info")
        .args(["run", "--once"])
        .arg(&pipeline)
        .output()
        .unwrap();
    let logged = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "weir run --once failed: {logged}");
    assert!(
        logged.contains("snapshot progress") && logged.contains("chunks=\"11/11\""),
        "no progress log lines: {logged}"
    );
    assert!(
        !logged.contains('\u{2588}') && !logged.contains('\x1b'),
        "bars or terminal escapes written to a non-terminal: {logged}"
    );
}

/// Waits up to `secs` for `child` to exit; its exit code and stderr (killed on timeout).
fn wait_exit(mut child: std::process::Child, secs: u64) -> (Option<i32>, String) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    (code, err)
}

/// A table dropped while streaming, then the publication dropped: each time the pipeline
/// delivers every change from before the drop, then stops with exit 1 and a message naming
/// what was dropped and what to do.
#[test]
fn dropped_table_or_publication_stops_the_pipeline_after_what_came_before() {
    let (name, gone, _cleanup) = fixture("dropt", "id bigint PRIMARY KEY");
    let (_, kept, _cleanup_kept) = fixture("keptt", "id bigint PRIMARY KEY");
    let dir = TempDir::new("pg-dropt");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"postgres\"\n\
             url = \"postgres://postgres:postgres@127.0.0.1:5432/postgres\"\n\
             tables = [\"public.{gone}\", \"public.{kept}\"]\nsnapshot = \"never\"\n\n\
             [[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n"
        ),
    );
    run_once_ok(&pipeline); // slot and publication
    let start = || {
        weir()
            .arg("run")
            .arg(&pipeline)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let lines = |table: &str| {
        std::fs::read_to_string(dir.path().join(format!("out/public.{table}.jsonl")))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let child = start();
    psql(&format!(
        "INSERT INTO public.\"{gone}\" SELECT generate_series(1, 50); \
         INSERT INTO public.\"{kept}\" SELECT generate_series(1, 5)"
    ));
    // The drop must come after weir resolved its tables: one that starts after the drop
    // never watched the table (the publication lost it with the drop), so it has nothing
    // to stop for. Seeing the first changes delivered shows it is streaming.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while (lines(&gone) < 50 || lines(&kept) < 5) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        (lines(&gone), lines(&kept)),
        (50, 5),
        "the first changes did not arrive"
    );
    psql(&format!(
        "INSERT INTO public.\"{gone}\" SELECT generate_series(51, 60); DROP TABLE public.\"{gone}\""
    ));
    let (code, stderr) = wait_exit(child, 60);
    assert_eq!(
        code,
        Some(1),
        "weir did not stop on the dropped table: {stderr}"
    );
    assert!(
        stderr.contains(&format!("public.{gone} dropped")) && stderr.contains("restart weir"),
        "{stderr}"
    );
    assert_eq!(
        lines(&gone),
        60,
        "changes before the drop were not all delivered"
    );
    assert_eq!(lines(&kept), 5);

    // Restarted, it goes on with the table that is left; then the publication is dropped.
    let child = start();
    psql(&format!(
        "INSERT INTO public.\"{kept}\" SELECT generate_series(6, 8)"
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while lines(&kept) < 8 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        lines(&kept),
        8,
        "the restarted pipeline did not go on with the kept table"
    );
    psql(&format!("DROP PUBLICATION weir_{name}"));
    let (code, stderr) = wait_exit(child, 60);
    assert_eq!(
        code,
        Some(1),
        "weir did not stop on the dropped publication: {stderr}"
    );
    assert!(
        stderr.contains(&format!("publication \"weir_{name}\""))
            && (stderr.contains("was dropped") || stderr.contains("does not exist")),
        "{stderr}"
    );
}
