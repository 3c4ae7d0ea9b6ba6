//! PostgreSQL → file sink through the binary, against the real server from scripts/services.sh.

use crate::common::*;
use std::process::Command;

fn psql(sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-XtAq",
            "-c",
            sql,
        ])
        .env("PGPASSWORD", "postgres")
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
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-XtAq", "-c"])
            .arg(format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'weir_{0}'; \
                 DROP PUBLICATION IF EXISTS weir_{0}; DROP TABLE IF EXISTS public.\"{1}\";",
                self.name, self.table
            ))
            .env("PGPASSWORD", "postgres")
            .output();
    }
}

#[test]
fn postgres_changes_reach_the_file_sink_exactly_once() {
    let tag = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 1_000_000
    );
    let name = format!("pg{tag}");
    let table = format!("weir_e2e_{tag}");
    let _cleanup = Cleanup {
        name: name.clone(),
        table: table.clone(),
    };
    psql(&format!(
        "CREATE TABLE public.\"{table}\" (id bigint PRIMARY KEY, name text, amount numeric(20,2), at timestamptz, doc jsonb, ok boolean)"
    ));
    let dir = TempDir::new("pg-file");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"postgres\"\nurl = \"postgres://postgres:${{WEIR_TEST_PGPASSWORD}}@127.0.0.1:5432/postgres\"\ntables = [\"public.{table}\"]\nsnapshot = \"never\"\n\n[[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n"
        ),
    );
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
