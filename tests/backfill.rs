//! Backfills while streaming (`weir snapshot`, admin SQL `SNAPSHOT TABLE`) against the real
//! PostgreSQL from scripts/services.sh: under concurrent writes (updates over the whole key
//! range, key changes, inserts, deletes) and SIGKILLs, every key ends at its current value.

use crate::common::*;
use crate::connectors::{pg_source_cleanup, pg_target_database, psql, unique};
use std::path::Path;
use std::time::{Duration, Instant};

/// The file sink section of these tests' pipelines.
const FILES_SINK: &str = "[[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n";

/// A PostgreSQL sink section named `replica`, into database `target`.
fn replica_sink(target: &str) -> String {
    format!(
        "[[sinks]]\nname = \"replica\"\ntype = \"postgres\"\n\
         url = \"postgres://postgres:postgres@127.0.0.1:5432/{target}\"\nschema = \"public\"\n"
    )
}

/// A pipeline from the test server's `postgres` database over the tables `glob` (with
/// `snapshot = "never"` when `never`), then `rest` (sinks, admin).
fn pg_pipeline(dir: &Path, name: &str, glob: &str, never: bool, rest: &str) -> std::path::PathBuf {
    let snapshot = if never { "snapshot = \"never\"\n" } else { "" };
    write_pipeline(
        dir,
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"postgres\"\n\
             url = \"postgres://postgres:postgres@127.0.0.1:5432/postgres\"\n\
             tables = [\"{glob}\"]\n{snapshot}\n{rest}"
        ),
    )
}

/// Writes `txns` small transactions over keys `1..=rows` of `table` (a `psql -f` script).
fn load_script(dir: &Path, table: &str, rows: u64, txns: u64, seed: u64) -> std::path::PathBuf {
    let mut script = String::new();
    let mut rng = Rng(seed);
    for t in 0..txns {
        let (a, b, c) = (rng.range(1, rows), rng.range(1, rows), rng.range(1, rows));
        script.push_str(&format!(
            "BEGIN; UPDATE public.\"{table}\" SET v = v + 1, note = 'upd {t}' WHERE id IN ({a}, {b}); \
             INSERT INTO public.\"{table}\" VALUES ({}, {t}, 'new'); \
             DELETE FROM public.\"{table}\" WHERE id = {c}; COMMIT;\n",
            rows + 1 + t,
        ));
        if t % 7 == 0 {
            // A key change: the old key goes, a new one (past every other) comes.
            script.push_str(&format!(
                "UPDATE public.\"{table}\" SET id = id + 10000000 WHERE id = {};\n",
                rng.range(1, rows)
            ));
        }
        if t % 10 == 0 {
            script.push_str("SELECT pg_sleep(0.02);\n");
        }
    }
    let path = dir.join("load.sql");
    std::fs::write(&path, script).unwrap();
    path
}

/// Runs a `psql -f` script on a thread.
fn start_load(script: std::path::PathBuf) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let out = crate::common::psql_command("postgres")
            .arg("-f")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "load failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
}

/// The table's rows as the file sink renders `after` (id → JSON object text).
fn source_rows(table: &str) -> std::collections::BTreeMap<String, String> {
    psql(
        "postgres",
        &format!(
            "SELECT json_build_object('id', id, 'v', v, 'note', note)::text FROM public.\"{table}\""
        ),
    )
    .lines()
    .map(|l| {
        let row: serde_json::Value = serde_json::from_str(l).unwrap();
        (row["id"].to_string(), row.to_string())
    })
    .collect()
}

/// Polls `f` every 100 ms for up to 30 s until it gives a value.
async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `weir run` `times` times, SIGKILLing it after 0.7–2.5 s each time.
fn sigkill_runs(pipeline: &Path, times: usize, rng: &mut Rng) {
    for _ in 0..times {
        let mut child = weir()
            .arg("run")
            .arg(pipeline)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.range(700, 2500)));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// Replayed in order per `id`, the file sink's events give exactly `expected`.
fn assert_replay_equals(
    events: &[serde_json::Value],
    expected: &std::collections::BTreeMap<String, String>,
) {
    let got = crate::postgres::converge(events, &["id"]);
    assert_eq!(got.len(), expected.len(), "row count after replay");
    let diff: Vec<_> = expected
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .take(5)
        .map(|(k, v)| (k, v, got.get(k)))
        .collect();
    assert!(
        diff.is_empty(),
        "rows differ (key, expected, got): {diff:?}"
    );
}

#[test]
fn weir_snapshot_backfills_a_streamed_table_under_writes_and_kills() {
    let tag = unique("bf");
    let name = format!("bf{tag}");
    let table = format!("weir_bf_{tag}");
    let other = format!("weir_bfo_{tag}");
    let _cleanup = pg_source_cleanup(&name, &[&table, &other]);
    const ROWS: u64 = 60_000;
    psql(
        "postgres",
        &format!(
            "CREATE TABLE public.\"{table}\" (id bigint PRIMARY KEY, v int NOT NULL, note text); \
             INSERT INTO public.\"{table}\" SELECT g, 0, 'row ' || g FROM generate_series(1, {ROWS}) g; \
             CREATE TABLE public.\"{other}\" (id int PRIMARY KEY)"
        ),
    );
    let dir = TempDir::new("pg-backfill");
    let pipeline = pg_pipeline(
        dir.path(),
        &name,
        &format!("public.{table}"),
        true,
        FILES_SINK,
    );
    // The pipeline starts streaming without the existing rows.
    run_once_ok(&pipeline);

    // A table the pipeline does not stream is refused, saying why.
    let out = run(weir()
        .arg("snapshot")
        .arg(&pipeline)
        .arg(format!("public.{other}")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not selected by the pipeline's tables"),
        "{err}"
    );
    let out = run(weir().arg("snapshot").arg(&pipeline).arg("orders"));
    assert_eq!(out.status.code(), Some(2));

    let out = run(weir()
        .arg("snapshot")
        .arg(&pipeline)
        .arg(format!("public.{table}")));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("queued backfill of public.{table}")),
        "{said}"
    );
    let status = crate::admin::weir_status(&pipeline, &[]);
    assert!(
        status.contains(&format!("backfill   public.{table}  requested")),
        "{status}"
    );

    // Writes all along; weir SIGKILLed while it backfills, then finished by `run --once`.
    let load = start_load(load_script(dir.path(), &table, ROWS, 400, 77));
    let mut rng = Rng(99);
    sigkill_runs(&pipeline, 4, &mut rng);
    load.join().unwrap();
    run_once_ok(&pipeline);

    let file = dir.path().join(format!("out/public.{table}.jsonl"));
    let events = crate::connectors::read_events(&file);
    let reads = events.iter().filter(|e| e["op"] == "r").count() as u64;
    assert!(reads >= ROWS / 2, "backfilled rows staged: {reads}");
    for e in events.iter().filter(|e| e["op"] == "r").take(3) {
        assert_eq!(e["source"]["snapshot"], true, "{e}");
    }
    // Replayed in order, the stream and the backfill give exactly the table.
    assert_replay_equals(&events, &source_rows(&table));

    let status = crate::admin::weir_status(&pipeline, &[]);
    assert!(
        status.contains(&format!("backfill   public.{table}  done")),
        "{status}"
    );
    // The request is removed once its job is durably done.
    let requests = dir.path().join(format!("data/{name}/backfill-requests"));
    let left: Vec<_> = std::fs::read_dir(&requests)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "requests left: {left:?}");
    // A second run adds nothing.
    let lines = events.len();
    run_once_ok(&pipeline);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().lines().count(),
        lines
    );
}

#[test]
fn snapshot_table_in_admin_sql_backfills_into_a_postgres_target() {
    let tag = unique("bfsql");
    let name = format!("bq{tag}");
    let table = format!("weir_bfsql_{tag}");
    let target = format!("weir_bfsql_tgt_{tag}");
    let _cleanup = pg_source_cleanup(&name, &[&table]);
    let _target = pg_target_database(&target);
    const ROWS: u64 = 30_000;
    psql(
        "postgres",
        &format!(
            "CREATE TABLE public.\"{table}\" (id bigint PRIMARY KEY, v int NOT NULL, note text); \
             INSERT INTO public.\"{table}\" SELECT g, 0, 'row ' || g FROM generate_series(1, {ROWS}) g"
        ),
    );
    let dir = TempDir::new("pg-backfill-sql");
    let (port, http) = (free_port(), free_port());
    let pipeline = pg_pipeline(
        dir.path(),
        &name,
        &format!("public.{table}"),
        true,
        &format!(
            "{}\n[admin]\nlisten = \"127.0.0.1:{port}\"\npassword = \"bf-pw\"\n\
             metrics = \"127.0.0.1:{http}\"\n",
            replica_sink(&target)
        ),
    );
    let mut weir_run = crate::outage::WeirRun::start(&pipeline);
    let load = start_load(load_script(dir.path(), &table, ROWS, 600, 5));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = crate::admin::sql_connect_retry(port, "bf-pw").await;
        let staged = |row: tokio_postgres::Row| row.get::<_, i64>("staged_events");
        let pipeline_row = "SELECT * FROM weir.pipeline";
        let staged_before = staged(admin.query_one(pipeline_row, &[]).await.unwrap());
        // Before: the table streams, nothing backfilled.
        let e = admin
            .simple_query("SNAPSHOT TABLE public.no_such_table")
            .await
            .expect_err("a table the pipeline does not stream");
        assert_eq!(e.as_db_error().unwrap().code().code(), "42P01", "{e:?}");
        admin
            .simple_query(&format!("SNAPSHOT TABLE public.{table}"))
            .await
            .unwrap();
        let query = format!(
            "SELECT backfill_state, backfill_rows, events_streamed, last_change_ms \
             FROM weir.tables WHERE \"table\" = 'public.{table}'"
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut states = Vec::new();
        loop {
            weir_run.assert_running("during the backfill");
            let row = admin.query_one(&query, &[]).await.unwrap();
            let state: Option<String> = row.get(0);
            if states.last() != Some(&state) {
                states.push(state.clone());
            }
            if state.as_deref() == Some("done") {
                assert!(row.get::<_, Option<i64>>(1).unwrap() > 0);
                assert!(row.get::<_, i64>(2) > 0, "events streamed");
                assert!(row.get::<_, Option<i64>>(3).unwrap() > 1_700_000_000_000);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "backfill states so far: {states:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            states.iter().any(|s| s.as_deref() == Some("running")),
            "{states:?}"
        );
        // Every view, on a PostgreSQL source: figures that moved with the load.
        let p = admin.query_one(pipeline_row, &[]).await.unwrap();
        assert_eq!(p.get::<_, String>("source_type"), "postgres");
        assert_eq!(p.get::<_, String>("state"), "running");
        // A stream position, or a backfill batch right after one.
        let position: String = p.get("source_position");
        assert!(position.contains("commit_lsn="), "{position}");
        assert!(staged(p) > staged_before);
        let sink = admin
            .query_one(
                "SELECT state, applied_seq, events_applied FROM weir.sinks WHERE name = 'replica'",
                &[],
            )
            .await
            .unwrap();
        assert!(sink.get::<_, i64>(1) > 0 && sink.get::<_, i64>(2) > 0);
        let changes = admin
            .query(
                &format!(
                    "SELECT op, after, position FROM weir.changes \
                     WHERE \"table\" = 'public.{table}' AND op = 'r' LIMIT 5"
                ),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(changes.len(), 5);
        for c in &changes {
            let after: serde_json::Value =
                serde_json::from_str(&c.get::<_, String>("after")).unwrap();
            assert!(after["id"].is_i64() && after["note"].is_string(), "{after}");
            // A backfilled row's position is its view's consistent point.
            let position: String = c.get("position");
            assert!(position.starts_with("commit_lsn="), "{position}");
        }
        // psql reads them too.
        let out = crate::admin::admin_psql(port, "bf-pw")
            .args(["-A", "-t", "-c"])
            .arg(format!(
                "SELECT backfill_state FROM weir.tables WHERE \"table\" = 'public.{table}'"
            ))
            .output()
            .expect("psql");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "done",
            "{out:?}"
        );
        // The WAL the slot holds is measured (weir.pipeline, /metrics).
        let retained = wait_for_async(|| async {
            let row = admin
                .query_one("SELECT source_retained_bytes FROM weir.pipeline", &[])
                .await
                .unwrap();
            row.get::<_, Option<i64>>(0)
        })
        .await;
        assert!(retained >= 0, "{retained}");
        let (_, metrics) = crate::admin::get(http, "/metrics").unwrap();
        assert!(
            metrics.contains("\nweir_source_retained_bytes "),
            "{metrics}"
        );
        // The PostgreSQL source reports its decoding as its own stage.
        let rows = crate::admin::stage_rows(&admin).await;
        let decode = crate::admin::stage(&rows, "decode");
        assert!(
            decode.events > 0 && decode.calls > 0 && decode.seconds > 0.0,
            "{rows:#?}"
        );
    });
    load.join().unwrap();
    // The target converges to the source, row for row.
    let digest = |db: &str| {
        psql(
            db,
            &format!(
                "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY id), '')) \
                 FROM public.\"{table}\" t"
            ),
        )
    };
    let expected = digest("postgres");
    wait_for("the target to equal the source", 90, || {
        weir_run.assert_running("while catching up");
        (digest(&target) == expected).then_some(())
    });
    let count: u64 = expected.split('\t').next().unwrap().parse().unwrap();
    assert!(count >= ROWS, "{expected}");
    let log = weir_run.stop();
    assert!(log.contains("backfill finished"), "{log}");
}

#[test]
fn a_table_that_starts_matching_while_running_is_published_and_backfilled() {
    let tag = unique("bfnew");
    let name = format!("bn{tag}");
    let first = format!("weir_bfnew_{tag}_a");
    let newer = format!("weir_bfnew_{tag}_b");
    let _cleanup = pg_source_cleanup(&name, &[&first, &newer]);
    psql(
        "postgres",
        &format!(
            "CREATE TABLE public.\"{first}\" (id bigint PRIMARY KEY, v int NOT NULL, note text); \
             INSERT INTO public.\"{first}\" VALUES (1, 0, 'first')"
        ),
    );
    let dir = TempDir::new("pg-backfill-new");
    let pipeline = pg_pipeline(
        dir.path(),
        &name,
        &format!("public.weir_bfnew_{tag}_*"),
        false,
        FILES_SINK,
    );
    let weir_run = crate::outage::WeirRun::start(&pipeline);
    let out = |t: &str| dir.path().join(format!("out/public.{t}.jsonl"));
    wait_for("the initial snapshot", 60, || {
        std::fs::read_to_string(out(&first))
            .ok()
            .filter(|s| s.lines().count() == 1)
    });
    // A new matching table, with rows from before weir knows it, then writes to it.
    const ROWS: u64 = 20_000;
    psql(
        "postgres",
        &format!(
            "CREATE TABLE public.\"{newer}\" (id bigint PRIMARY KEY, v int NOT NULL, note text); \
             INSERT INTO public.\"{newer}\" SELECT g, 0, 'row ' || g FROM generate_series(1, {ROWS}) g"
        ),
    );
    let load = start_load(load_script(dir.path(), &newer, ROWS, 300, 3));
    load.join().unwrap();
    // Found by the source's periodic check (every 10 s) and backfilled while running.
    wait_for("the new table backfilled while running", 90, || {
        weir_run
            .log_text()
            .contains("backfill finished")
            .then_some(())
    });
    let log = weir_run.stop();
    assert!(log.contains("table now matches `tables`"), "{log}");
    run_once_ok(&pipeline);
    let events = crate::connectors::read_events(&out(&newer));
    assert_replay_equals(&events, &source_rows(&newer));
    let status = crate::admin::weir_status(&pipeline, &[]);
    assert!(
        status.contains(&format!("backfill   public.{newer}  done")),
        "{status}"
    );
}

#[test]
fn mariadb_weir_snapshot_backfills_under_writes_and_kills() {
    use crate::connectors::{mariadb, mariadb_command, mariadb_database};
    let tag = unique("bfm");
    let name = format!("bm{tag}");
    let db = format!("weir_bfm_{tag}");
    let _db = mariadb_database(&db);
    const ROWS: u64 = 20_000;
    mariadb(&format!(
        "USE `{db}`; CREATE TABLE t (id BIGINT PRIMARY KEY, v INT NOT NULL, note VARCHAR(64)); \
         INSERT INTO t SELECT seq, 0, CONCAT('row ', seq) FROM seq_1_to_{ROWS}"
    ));
    let dir = TempDir::new("maria-backfill");
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"mysql\"\n\
             url = \"mysql://root@127.0.0.1:3306/{db}\"\ntables = [\"{db}.t\"]\nsnapshot = \"never\"\n\n\
             [[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n"
        ),
    );
    run_once_ok(&pipeline);
    let out = run(weir().arg("snapshot").arg(&pipeline).arg(format!("{db}.t")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Writes all along (updates over the range, key changes, inserts, deletes).
    let mut script = format!("USE `{db}`;\n");
    let mut rng = Rng(31);
    for t in 0..300u64 {
        let (a, b, c) = (rng.range(1, ROWS), rng.range(1, ROWS), rng.range(1, ROWS));
        script.push_str(&format!(
            "BEGIN; UPDATE t SET v = v + 1, note = 'upd {t}' WHERE id IN ({a}, {b}); \
             INSERT INTO t VALUES ({}, {t}, 'new'); DELETE FROM t WHERE id = {c}; COMMIT;\n",
            ROWS + 1 + t
        ));
        if t % 7 == 0 {
            script.push_str(&format!(
                "UPDATE t SET id = id + 10000000 WHERE id = {};\n",
                rng.range(1, ROWS)
            ));
        }
        if t % 10 == 0 {
            script.push_str("DO SLEEP(0.02);\n");
        }
    }
    let load = std::thread::spawn(move || {
        use std::io::Write;
        let mut child = mariadb_command()
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "load failed");
    });
    sigkill_runs(&pipeline, 3, &mut rng);
    load.join().unwrap();
    run_once_ok(&pipeline);

    let file = dir.path().join(format!("out/{db}.t.jsonl"));
    let events = crate::connectors::read_events(&file);
    let reads = events.iter().filter(|e| e["op"] == "r").count() as u64;
    assert!(reads >= ROWS / 2, "backfilled rows staged: {reads}");
    let expected = mariadb(&format!(
        "USE `{db}`; SELECT JSON_OBJECT('id', id, 'v', v, 'note', note) FROM t"
    ))
    .lines()
    .map(|l| {
        let row: serde_json::Value = serde_json::from_str(l).unwrap();
        (row["id"].to_string(), row.to_string())
    })
    .collect();
    assert_replay_equals(&events, &expected);
    let status = crate::admin::weir_status(&pipeline, &[]);
    assert!(
        status.contains(&format!("backfill   {db}.t  done")),
        "{status}"
    );
}

/// Updates that leave a TOASTed column unchanged send no value for it (`u`): for a key the
/// target never had, the backfill must still deliver the whole row.
#[test]
fn unchanged_toast_columns_survive_a_backfill_into_a_postgres_target() {
    let tag = unique("bftoast");
    let name = format!("bt{tag}");
    let table = format!("weir_bftoast_{tag}");
    let target = format!("weir_bftoast_tgt_{tag}");
    let _cleanup = pg_source_cleanup(&name, &[&table]);
    let _target = pg_target_database(&target);
    const ROWS: u64 = 6_000;
    psql(
        "postgres",
        &format!(
            "CREATE TABLE public.\"{table}\" (id bigint PRIMARY KEY, v int NOT NULL, big text); \
             ALTER TABLE public.\"{table}\" ALTER COLUMN big SET STORAGE EXTERNAL; \
             INSERT INTO public.\"{table}\" SELECT g, 0, repeat(md5(g::text), 80) \
             FROM generate_series(1, {ROWS}) g"
        ),
    );
    let dir = TempDir::new("pg-backfill-toast");
    let pipeline = pg_pipeline(
        dir.path(),
        &name,
        &format!("public.{table}"),
        true,
        &replica_sink(&target),
    );
    let weir_run = crate::outage::WeirRun::start(&pipeline);
    // Updates of `v` only (so `big` arrives unchanged) over every key, all through the job.
    let mut script = String::new();
    let mut rng = Rng(8);
    for _ in 0..4000 {
        script.push_str(&format!(
            "UPDATE public.\"{table}\" SET v = v + 1 WHERE id = {};\n",
            rng.range(1, ROWS)
        ));
    }
    let path = dir.path().join("toast.sql");
    std::fs::write(&path, script).unwrap();
    let load = start_load(path);
    std::thread::sleep(Duration::from_millis(300));
    let out = run(weir()
        .arg("snapshot")
        .arg(&pipeline)
        .arg(format!("public.{table}")));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    load.join().unwrap();
    wait_for("the backfill to finish", 120, || {
        weir_run
            .log_text()
            .contains("backfill finished")
            .then_some(())
    });
    let digest = |db: &str| {
        psql(
            db,
            &format!(
                "SELECT count(*), count(big), md5(coalesce(string_agg(t::text, ',' ORDER BY id), '')) \
                 FROM public.\"{table}\" t"
            ),
        )
    };
    let expected = digest("postgres");
    let mut last = String::new();
    let caught_up = (0..90).any(|_| {
        last = digest(&target);
        if last == expected {
            return true;
        }
        std::thread::sleep(Duration::from_secs(1));
        false
    });
    assert!(caught_up, "target {last} != source {expected}");
    weir_run.stop();
}
