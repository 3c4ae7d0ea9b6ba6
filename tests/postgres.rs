//! PostgreSQL → file sink through the binary, against the real server from scripts/services.sh.

use crate::common::*;
use std::process::Command;

/// `psql` connected to the test server, stopping at the first error.
fn psql_command() -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        "postgres",
        "-v",
        "ON_ERROR_STOP=1",
        "-XtAq",
    ])
    .env("PGPASSWORD", "postgres");
    c
}

fn psql(sql: &str) -> String {
    let out = psql_command()
        .args(["-c", sql])
        .output()
        .expect("psql is missing: run scripts/services.sh (it installs postgresql-client)");
    assert!(
        out.status.success(),
        "psql failed (is PostgreSQL up with wal_level=logical? run scripts/services.sh): {}\n{sql}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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
