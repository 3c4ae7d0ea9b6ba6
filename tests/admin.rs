//! The operations plane: `[admin]` in the pipeline file, and the HTTP endpoints of a running
//! `weir run` (`/metrics`, `/healthz`, `/status`, `/`).

use crate::common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// GET over plain HTTP/1.1: (status, body), or None while the server is not up.
pub(crate) fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Parses Prometheus text exposition: `name{labels}` → value. Panics on malformed lines.
fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let kind = rest.split_whitespace().nth(1).unwrap();
                assert!(
                    ["counter", "gauge", "histogram"].contains(&kind),
                    "bad TYPE line {line:?}"
                );
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "bad labels in {line:?}");
        }
        out.insert(series.to_string(), value);
    }
    out
}

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(pipeline: &Path, env: &[(&str, &str)]) -> Running {
    let mut cmd = weir();
    cmd.arg("run")
        .arg(pipeline)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Running(cmd.spawn().expect("cannot start weir"))
}

fn stderr_of(mut r: Running) -> String {
    // SIGTERM: a clean stop.
    let _ = std::process::Command::new("kill")
        .arg(r.0.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut err = String::new();
    if let Some(mut s) = r.0.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    err
}

#[test]
fn admin_section_is_validated() {
    let dir = TempDir::new("admin-config");
    let base = "name = \"t\"\n[source]\ntype = \"datagen\"\n[[sinks]]\nname = \"f\"\ntype = \"file\"\npath = \"out\"\n";
    let parse =
        |admin: &str| weir::config::parse(&dir.path().join("p.toml"), &format!("{base}{admin}"));
    let cfg = parse("").unwrap();
    assert_eq!(cfg.admin, weir::config::AdminConfig::default());
    assert_eq!(cfg.admin.stall_seconds, 300);

    let cfg = parse(
        "[admin]\nlisten = \"127.0.0.1:6543\"\npassword = \"${PATH}\"\nmetrics = \"localhost:9187\"\nstall_seconds = 5\n",
    )
    .unwrap();
    assert_eq!(cfg.admin.listen, Some("127.0.0.1:6543".parse().unwrap()));
    assert_eq!(cfg.admin.metrics, Some("127.0.0.1:9187".parse().unwrap()));
    assert_eq!(cfg.admin.stall_seconds, 5);
    let path = std::env::var("PATH").unwrap();
    assert_eq!(cfg.admin.password.as_deref(), Some(path.as_str()));
    assert!(!format!("{cfg:?}").contains(&path), "password in Debug");

    let e = parse("[admin]\nmetrics = \"127.0.0.1\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("p.toml:9:") && e.contains("not a listen address"),
        "{e}"
    );
    let e = parse("[admin]\nlisten = \"127.0.0.1:6543\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("p.toml:8") && e.contains("password"), "{e}");
    let e = parse("[admin]\nmetric = \"127.0.0.1:1\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("p.toml:9:") && e.contains("did you mean `metrics`"),
        "{e}"
    );

    // The schema agrees.
    let (schemas, index) = crate::schemas::compile("pipeline.schema.json");
    let good: toml::Value = toml::from_str(&format!(
        "{base}[admin]\nlisten = \"127.0.0.1:6543\"\npassword = \"${{PW}}\"\nmetrics = \"127.0.0.1:9187\"\nstall_seconds = 60\n"
    ))
    .unwrap();
    let good = serde_json::to_value(good).unwrap();
    schemas.validate(&good, index).unwrap();
    let bad: toml::Value =
        toml::from_str(&format!("{base}[admin]\nlisten = \"127.0.0.1:6543\"\n")).unwrap();
    assert!(
        schemas
            .validate(&serde_json::to_value(bad).unwrap(), index)
            .is_err()
    );
}

#[test]
fn metrics_health_status_and_page_of_a_running_pipeline() {
    let dir = TempDir::new("admin-http");
    let port = free_port();
    let events = 30_000u64;
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"adm\"\ndata_dir = \"data\"\n\n[source]\ntype = \"datagen\"\ntable_count = 2\nevents = {events}\ntxn_size = 50\nrow_bytes = 40\nrate = 15000\n\n[[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n\n[admin]\nmetrics = \"127.0.0.1:{port}\"\n"
        ),
    );
    let run = start(&pipeline, &[]);
    // Counters grow while the pipeline runs...
    let first = wait_for("/metrics", 30, || {
        let (status, body) = get(port, "/metrics")?;
        assert_eq!(status, 200);
        let m = parse_metrics(&body);
        let n = m["weir_source_events_total"];
        (n > 0.0 && n < events as f64).then_some(n)
    });
    // ...up to every event, all applied.
    let m = wait_for("every event applied", 60, || {
        let m = parse_metrics(&get(port, "/metrics")?.1);
        (m["weir_sink_applied_events_total{sink=\"files\"}"] == events as f64).then_some(m)
    });
    assert!(first < events as f64);
    assert_eq!(m["weir_source_events_total"], events as f64);
    assert_eq!(m["weir_source_transactions_total"], (events / 50) as f64);
    assert_eq!(m["weir_up"], 1.0);
    let head = m["weir_log_head_seq"];
    assert!(head >= (events + events / 50) as f64, "head {head}");
    let m = wait_for("lag 0", 10, || {
        let m = parse_metrics(&get(port, "/metrics")?.1);
        (m["weir_sink_lag_records{sink=\"files\"}"] == 0.0).then_some(m)
    });
    assert_eq!(
        m["weir_sink_applied_seq{sink=\"files\"}"],
        m["weir_log_head_seq"]
    );
    assert_eq!(m["weir_sink_lag_seconds{sink=\"files\"}"], 0.0);
    assert_eq!(m["weir_sink_retries_total{sink=\"files\"}"], 0.0);
    assert_eq!(m["weir_snapshot_chunks_total"], 0.0);
    let count = m["weir_sink_apply_seconds_count{sink=\"files\"}"];
    assert!(count >= 1.0);
    assert_eq!(
        m["weir_sink_apply_seconds_bucket{sink=\"files\",le=\"+Inf\"}"],
        count
    );

    assert_eq!(get(port, "/healthz").unwrap(), (200, "ok\n".to_string()));

    let (status, body) = get(port, "/status").unwrap();
    assert_eq!(status, 200);
    let st: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(st["pipeline"], "adm");
    assert_eq!(st["state"], "running");
    assert_eq!(st["healthy"], true);
    assert_eq!(st["source"]["type"], "datagen");
    assert_eq!(st["source"]["staged_events"], events);
    assert_eq!(st["log"]["head_seq"].as_f64().unwrap(), head);
    let sink = &st["sinks"][0];
    assert_eq!(sink["name"], "files");
    assert_eq!(sink["type"], "file");
    assert_eq!(sink["state"], "running");
    assert_eq!(sink["applied_events"], events);
    assert_eq!(sink["lag_records"], 0);
    assert!(sink["last_error"].is_null());
    assert!(sink["events_per_sec"].is_number());

    let (status, page) = get(port, "/").unwrap();
    assert_eq!(status, 200);
    assert!(page.starts_with("<!doctype html>") && page.contains("fetch(\"/status\""));
    assert!(
        !page.contains("<script src") && !page.contains("<link"),
        "external assets"
    );
    assert_eq!(get(port, "/nope").unwrap().0, 404);

    let err = stderr_of(run);
    assert!(!err.contains("panicked"), "{err}");
    // What reached the sink is what was staged.
    assert_output_matches_datagen(
        &dir.path().join("out"),
        &weir::config::DatagenConfig::new(2, events, 50, 40, weir::config::Mix::Insert, 1),
        "adm",
    );
}

#[test]
fn a_failing_sink_makes_healthz_503_without_leaking_secrets() {
    let dir = TempDir::new("admin-unhealthy");
    let port = free_port();
    let closed = free_port(); // nothing listens there
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"adm\"\ndata_dir = \"data\"\n\n[source]\ntype = \"datagen\"\nevents = 1000\n\n[[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n\n[[sinks]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"postgres://weir:${{SINK_PW}}@127.0.0.1:{closed}/x\"\n\n[admin]\nlisten = \"127.0.0.1:{}\"\npassword = \"${{ADMIN_PW}}\"\nmetrics = \"127.0.0.1:{port}\"\n",
            free_port()
        ),
    );
    let run = start(
        &pipeline,
        &[("SINK_PW", "sinksecret42"), ("ADMIN_PW", "adminsecret42")],
    );
    let body = wait_for("/healthz 503", 30, || {
        let (status, body) = get(port, "/healthz")?;
        (status == 503).then_some(body)
    });
    assert!(body.contains("sink db is retrying"), "{body}");
    assert!(body.contains("last error:"), "{body}");
    assert!(!body.contains("sink files"), "{body}");
    let m = parse_metrics(&get(port, "/metrics").unwrap().1);
    assert!(m["weir_sink_retries_total{sink=\"db\"}"] >= 1.0);
    assert_eq!(m["weir_sink_healthy{sink=\"db\"}"], 0.0);
    assert_eq!(m["weir_sink_healthy{sink=\"files\"}"], 1.0);
    let status = get(port, "/status").unwrap().1;
    let st: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(st["healthy"], false);
    assert_eq!(st["sinks"][1]["state"], "retrying");
    assert!(st["sinks"][1]["last_error"].is_string());
    let metrics = get(port, "/metrics").unwrap().1;
    let err = stderr_of(run);
    for text in [&body, &status, &metrics, &err] {
        assert!(
            !text.contains("sinksecret42"),
            "sink password leaked: {text}"
        );
        assert!(
            !text.contains("adminsecret42"),
            "admin password leaked: {text}"
        );
    }
}

/// Sends a startup packet and returns the server's first authentication request: (code,
/// payload as text), e.g. (10, "SCRAM-SHA-256\0\0") for SASL.
fn auth_request(port: u16) -> (u32, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    body.extend_from_slice(b"user\0weir\0database\0weir\0\0");
    let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    s.write_all(&packet).unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], b'R', "not an authentication request");
    let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
    let mut rest = vec![0u8; len - 4];
    s.read_exact(&mut rest).unwrap();
    let code = u32::from_be_bytes(rest[..4].try_into().unwrap());
    (code, String::from_utf8_lossy(&rest[4..]).into_owned())
}

/// Connects to admin SQL as user `weir`.
async fn sql_connect(
    port: u16,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("weir")
        .dbname("weir")
        .password(password)
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// One sink's row of `weir.sinks`: (state, applied_seq, paused).
async fn sink_row(c: &tokio_postgres::Client, name: &str) -> (String, i64, bool) {
    let row = c
        .query_one(
            format!("SELECT state, applied_seq, paused FROM weir.sinks WHERE name = '{name}'")
                .as_str(),
            &[],
        )
        .await
        .unwrap();
    (
        row.get(0),
        row.get::<_, Option<i64>>(1).unwrap_or(0),
        row.get(2),
    )
}

#[test]
fn admin_sql_views_pause_resume_and_psql() {
    let dir = TempDir::new("admin-sql");
    let (port, http) = (free_port(), free_port());
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"adm\"\ndata_dir = \"data\"\n\n[source]\ntype = \"datagen\"\ntable_count = 2\nevents = 1000000\ntxn_size = 10\nrow_bytes = 40\nrate = 3000\n\n\
             [[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n\n[[sinks]]\nname = \"files2\"\ntype = \"file\"\npath = \"out2\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{port}\"\npassword = \"${{ADMIN_PW}}\"\nmetrics = \"127.0.0.1:{http}\"\n"
        ),
    );
    let secret = "s3cret-admin-pw";
    let run = start(&pipeline, &[("ADMIN_PW", secret)]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        let c = loop {
            match sql_connect(port, secret).await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "admin SQL not up: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };

        // The server asks for SCRAM-SHA-256 (not MD5 or a cleartext password).
        assert_eq!(auth_request(port), (10, "SCRAM-SHA-256\0\0".to_string()));

        // A wrong password is refused.
        let Err(e) = sql_connect(port, "wrong").await else {
            panic!("wrong password accepted");
        };
        let db = e.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "28P01", "{e:?}");
        assert!(db.message().contains("assword"), "{e:?}");

        // weir.pipeline, extended protocol (tokio-postgres prepares every query).
        let stmt = c.prepare("SELECT * FROM weir.pipeline").await.unwrap();
        let cols: Vec<&str> = stmt.columns().iter().map(|c| c.name()).collect();
        assert_eq!(
            &cols[..4],
            ["name", "source_type", "source_position", "state"]
        );
        let p1 = c.query_one(&stmt, &[]).await.unwrap();
        assert_eq!(p1.get::<_, String>("name"), "adm");
        assert_eq!(p1.get::<_, String>("source_type"), "datagen");
        assert_eq!(p1.get::<_, String>("state"), "running");
        assert!(p1.get::<_, bool>("healthy"));
        assert!(p1.get::<_, Option<String>>("source_last_error").is_none());
        let staged1: i64 = p1.get("staged_events");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let p2 = c.query_one(&stmt, &[]).await.unwrap();
        let staged2: i64 = p2.get("staged_events");
        assert!(
            staged2 > staged1 && staged2 < 1_000_000,
            "{staged1} -> {staged2}"
        );
        assert!(p2.get::<_, i64>("log_head_seq") > p1.get::<_, i64>("log_head_seq"));
        assert!(p2.get::<_, i64>("uptime_seconds") >= 1);
        assert!(p2.get::<_, f64>("events_per_sec") > 0.0);
        assert!(p2.get::<_, Option<String>>("source_position").is_some());

        // weir.sinks: both running, applied <= head.
        let sinks = c.query("SELECT * FROM weir.sinks", &[]).await.unwrap();
        let head: i64 = c
            .query_one("select log_head_seq from weir.pipeline;", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(sinks.len(), 2);
        for (row, name) in sinks.iter().zip(["files", "files2"]) {
            assert_eq!(row.get::<_, String>("name"), name);
            assert_eq!(row.get::<_, String>("type"), "file");
            assert_eq!(row.get::<_, String>("state"), "running");
            assert!(!row.get::<_, bool>("paused"));
            let applied: i64 = row.get("applied_seq");
            assert!(applied > 0 && applied <= head, "{applied} vs {head}");
            assert!(row.get::<_, i64>("lag_records") >= 0);
            assert!(row.get::<_, f64>("lag_seconds") >= 0.0);
            assert!(row.get::<_, i64>("events_applied") > 0);
            assert_eq!(row.get::<_, i64>("retries"), 0);
            assert!(row.get::<_, Option<String>>("last_error").is_none());
        }

        // weir.tables: the two datagen tables with their schema version.
        let tables = c.query("SELECT * FROM weir.tables", &[]).await.unwrap();
        let names: Vec<String> = tables.iter().map(|r| r.get("table")).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            names.iter().all(|n| n.starts_with("datagen.t")),
            "{names:?}"
        );
        for r in &tables {
            assert_eq!(r.get::<_, Option<i64>>("schema_version"), Some(1));
            assert_eq!(r.get::<_, String>("snapshot_state"), "none");
        }

        // weir.changes: staged events of one table, oldest first, valid JSON after-images.
        let sql = format!(
            "SELECT * FROM weir.changes WHERE \"table\" = '{}' LIMIT 3",
            names[1]
        );
        let changes = c.query(sql.as_str(), &[]).await.unwrap();
        assert_eq!(changes.len(), 3);
        let mut last = 0;
        for r in &changes {
            let seq: i64 = r.get("seq");
            assert!(seq > last);
            last = seq;
            assert_eq!(r.get::<_, String>("table"), names[1]);
            assert_eq!(r.get::<_, String>("op"), "c");
            let after: serde_json::Value =
                serde_json::from_str(&r.get::<_, String>("after")).unwrap();
            assert!(
                after.is_object() && !after.as_object().unwrap().is_empty(),
                "{after}"
            );
            assert!(r.get::<_, Option<String>>("before").is_none());
            assert!(r.get::<_, i64>("ts_ms") > 0);
        }
        // Default limit, and the simple query protocol.
        let msgs = c.simple_query("select * from weir.changes").await.unwrap();
        let rows = msgs
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        assert_eq!(rows, 100);

        // Unsupported: a SQL error, and the connection keeps working.
        let e = c.simple_query("DELETE FROM weir.sinks").await.unwrap_err();
        let db = e.as_db_error().expect("a SQL error");
        assert_eq!(db.code().code(), "0A000");
        assert!(db.message().contains("weir.changes"), "{}", db.message());
        let e = c.query("SELECT * FROM weir.nope", &[]).await.unwrap_err();
        assert_eq!(e.as_db_error().unwrap().code().code(), "42P01");
        let e = c
            .batch_execute("SNAPSHOT TABLE datagen.t0")
            .await
            .unwrap_err();
        // The datagen source cannot backfill: a clear error (weir.tables' tests in
        // tests/backfill.rs cover a PostgreSQL source).
        assert_eq!(e.as_db_error().unwrap().code().code(), "0A000");
        assert!(
            e.as_db_error()
                .unwrap()
                .message()
                .contains("the datagen source cannot backfill tables"),
            "{e:?}"
        );
        let one: i32 = c.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);
        c.batch_execute("SET application_name = 'x'").await.unwrap();

        // PAUSE SINK holds one sink while the other continues.
        c.batch_execute("PAUSE SINK files").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if sink_row(&c, "files").await.0 == "paused" {
                break;
            }
            assert!(Instant::now() < deadline, "files never paused");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The batch in hand may finish: settle, then compare.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, held, paused) = sink_row(&c, "files").await;
        assert!(paused);
        let (_, other_before, _) = sink_row(&c, "files2").await;
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let (state, held_after, _) = sink_row(&c, "files").await;
        let (state2, other_after, _) = sink_row(&c, "files2").await;
        assert_eq!(state, "paused");
        assert_eq!(state2, "running");
        assert_eq!(held, held_after, "a paused sink applied records");
        assert!(other_after > other_before, "the other sink stopped too");
        let (_, body) = get(http, "/status").unwrap();
        let st: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(st["sinks"][0]["state"], "paused");
        assert_eq!(st["healthy"], true);
        let e = c.batch_execute("PAUSE SINK nope").await.unwrap_err();
        assert!(e.as_db_error().unwrap().message().contains("files2"));

        // RESUME SINK catches it up.
        c.batch_execute("resume sink files;").await.unwrap();
        let target: i64 = c
            .query_one("SELECT log_head_seq FROM weir.pipeline", &[])
            .await
            .unwrap()
            .get(0);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (state, applied, paused) = sink_row(&c, "files").await;
            if applied >= target {
                assert_eq!(state, "running");
                assert!(!paused);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "files never caught up: {applied} < {target}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // psql works (it may try SSL first; the server declines and psql goes on without).
    let out = admin_psql(port, secret)
        .args(["-c", "SELECT * FROM weir.sinks"])
        .output()
        .expect("psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "psql: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("applied_seq") && stdout.contains("files2") && stdout.contains("(2 rows)"),
        "{stdout}"
    );
    let out = admin_psql(port, "wrong")
        .args(["-c", "SELECT 1"])
        .output()
        .expect("psql");
    assert!(!out.status.success());

    let err = stderr_of(run);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains(secret), "admin password in the log: {err}");
}

/// `psql -X` on the admin SQL port as user `weir` with `password` (add `-c SQL`).
pub(crate) fn admin_psql(port: u16, password: &str) -> std::process::Command {
    let mut c = std::process::Command::new("psql");
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "weir",
        "-d",
        "weir",
        "-X",
    ])
    .env("PGPASSWORD", password)
    .env("PGCONNECT_TIMEOUT", "10");
    c
}

/// Connects to admin SQL, retrying while the server starts.
pub(crate) async fn sql_connect_retry(port: u16, password: &str) -> tokio_postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sql_connect(port, password).await {
            Ok(c) => return c,
            Err(e) => {
                assert!(Instant::now() < deadline, "admin SQL not up: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One row of `weir.stages`.
#[derive(Debug, Clone)]
pub(crate) struct StageRow {
    pub(crate) stage: String,
    pub(crate) events: i64,
    pub(crate) calls: i64,
    pub(crate) seconds: f64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) share: f64,
}

pub(crate) async fn stage_rows(c: &tokio_postgres::Client) -> Vec<StageRow> {
    c.query("SELECT * FROM weir.stages", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| StageRow {
            stage: r.get("stage"),
            events: r.get("events"),
            calls: r.get("calls"),
            seconds: r.get("seconds"),
            p50_ms: r.get("p50_ms"),
            p99_ms: r.get("p99_ms"),
            share: r.get("share"),
        })
        .collect()
}

pub(crate) fn stage<'a>(rows: &'a [StageRow], name: &str) -> &'a StageRow {
    rows.iter()
        .find(|r| r.stage == name)
        .unwrap_or_else(|| panic!("no stage {name:?} in {rows:#?}"))
}

/// Checks what holds for any reading of `weir.stages`.
fn assert_stage_invariants(rows: &[StageRow]) {
    let total: f64 = rows.iter().map(|r| r.share).sum();
    assert!(
        (total - 1.0).abs() < 1e-6,
        "shares sum to {total}: {rows:#?}"
    );
    for r in rows {
        assert!(r.events >= 0 && r.calls >= 0 && r.seconds >= 0.0, "{r:?}");
        assert!((0.0..=1.0).contains(&r.share), "{r:?}");
        match (r.p50_ms, r.p99_ms) {
            (None, None) => assert_eq!(r.calls, 0, "{r:?}"),
            (Some(p50), Some(p99)) => {
                assert!(r.calls > 0, "{r:?}");
                assert!(p50 > 0.0 && p50 <= p99 && p99 <= 60_000.0, "{r:?}");
            }
            _ => panic!("p50 and p99 disagree: {r:?}"),
        }
    }
}

#[test]
fn stages_show_where_the_time_goes() {
    let dir = TempDir::new("admin-stages");
    let (port, http) = (free_port(), free_port());
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"stg\"\ndata_dir = \"data\"\n\n[source]\ntype = \"datagen\"\ntable_count = 2\nevents = 1000000\ntxn_size = 20\nrow_bytes = 40\nrate = 4000\n\n\
             [[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{port}\"\npassword = \"${{ADMIN_PW}}\"\nmetrics = \"127.0.0.1:{http}\"\n"
        ),
    );
    let secret = "stages-pw";
    let run = start(&pipeline, &[("ADMIN_PW", secret)]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = sql_connect_retry(port, secret).await;
        // The columns, in order (extended protocol: tokio-postgres prepares).
        let stmt = c.prepare("SELECT * FROM weir.stages").await.unwrap();
        let cols: Vec<&str> = stmt.columns().iter().map(|c| c.name()).collect();
        assert_eq!(
            cols,
            [
                "stage", "events", "calls", "seconds", "p50_ms", "p99_ms", "share"
            ]
        );
        // Wait until every stage on the streaming path has done some work.
        let deadline = Instant::now() + Duration::from_secs(30);
        let first = loop {
            let rows = stage_rows(&c).await;
            if ["source", "log append", "sink files"]
                .iter()
                .all(|s| stage(&rows, s).events > 0)
            {
                break rows;
            }
            assert!(Instant::now() < deadline, "stages idle: {rows:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let names: Vec<&str> = first.iter().map(|r| r.stage.as_str()).collect();
        assert_eq!(
            names,
            [
                "source",
                "decode",
                "snapshot read",
                "log append",
                "sink files"
            ]
        );
        assert_stage_invariants(&first);
        // datagen has no snapshot and decodes nothing: those stages exist and are empty
        // (tests/backfill.rs sees a PostgreSQL source's decode stage at work).
        for empty in ["snapshot read", "decode"] {
            let s = stage(&first, empty);
            assert_eq!((s.events, s.calls, s.seconds), (0, 0, 0.0), "{empty}");
            assert_eq!(s.share, 0.0);
        }

        tokio::time::sleep(Duration::from_millis(1500)).await;
        let second = stage_rows(&c).await;
        assert_stage_invariants(&second);
        for name in ["source", "log append", "sink files"] {
            let (a, b) = (stage(&first, name), stage(&second, name));
            assert!(
                b.events > a.events,
                "{name} events did not grow: {a:?} -> {b:?}"
            );
            assert!(
                b.calls > a.calls,
                "{name} calls did not grow: {a:?} -> {b:?}"
            );
            assert!(
                b.seconds > a.seconds,
                "{name} time did not grow: {a:?} -> {b:?}"
            );
        }
        // Every staged event goes through the source, the log and the sink.
        let staged: i64 = c
            .query_one("SELECT staged_events FROM weir.pipeline", &[])
            .await
            .unwrap()
            .get(0);
        let src = stage(&second, "source").events;
        assert!(src > 0 && src <= staged, "source {src}, staged {staged}");
        assert!(stage(&second, "sink files").events <= staged);

        // Filters and a projection, over the simple protocol too.
        let msgs = c
            .simple_query("select stage, share from weir.stages where stage = 'sink files'")
            .await
            .unwrap();
        let rows: Vec<_> = msgs
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get(0), Some("sink files"));
        let share: f64 = rows[0].get(1).unwrap().parse().unwrap();
        assert!(share > 0.0 && share < 1.0, "{share}");
    });

    // /metrics: a histogram and an event counter per stage.
    let m = parse_metrics(&get(http, "/metrics").unwrap().1);
    for s in [
        "source",
        "decode",
        "snapshot read",
        "log append",
        "sink files",
    ] {
        let count = m[&format!("weir_stage_seconds_count{{stage=\"{s}\"}}")];
        assert_eq!(
            m[&format!("weir_stage_seconds_bucket{{stage=\"{s}\",le=\"+Inf\"}}")],
            count,
            "{s}"
        );
        assert!(m.contains_key(&format!("weir_stage_seconds_sum{{stage=\"{s}\"}}")));
        assert!(m.contains_key(&format!("weir_stage_events_total{{stage=\"{s}\"}}")));
    }
    assert!(m["weir_stage_events_total{stage=\"log append\"}"] > 0.0);
    assert!(m["weir_stage_seconds_count{stage=\"sink files\"}"] > 0.0);
    // Buckets are cumulative.
    let buckets: Vec<f64> = m
        .iter()
        .filter(|(k, _)| k.starts_with("weir_stage_seconds_bucket{stage=\"source\""))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(buckets.len(), weir::runtime::HISTOGRAM_BOUNDS.len() + 1);

    // /status has the same stages; the page shows them.
    let st: serde_json::Value = serde_json::from_str(&get(http, "/status").unwrap().1).unwrap();
    let stages = st["stages"].as_array().expect("stages in /status");
    assert_eq!(stages.len(), 5);
    assert_eq!(stages[4]["stage"], "sink files");
    assert!(stages[4]["events"].as_u64().unwrap() > 0);
    assert!(stages[4]["p99_ms"].is_number());
    let (_, page) = get(http, "/").unwrap();
    assert!(page.contains("id=\"stages\"") && page.contains("st.stages"));

    // psql prints the view.
    let out = admin_psql(port, secret)
        .args(["-c", "SELECT * FROM weir.stages"])
        .output()
        .expect("psql");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "psql: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("p99_ms") && stdout.contains("sink files") && stdout.contains("(5 rows)"),
        "{stdout}"
    );

    let err = stderr_of(run);
    assert!(!err.contains("panicked"), "{err}");
}

/// Connects to the test PostgreSQL's database `db` as postgres.
async fn pg_connect(db: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(5432)
        .user("postgres")
        .password("postgres")
        .dbname(db)
        .connect(tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 (run scripts/services.sh)");
    tokio::spawn(conn);
    client
}

/// `weir status PIPELINE` (human output).
pub(crate) fn weir_status(pipeline: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = weir();
    cmd.arg("status").arg(pipeline);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    assert!(
        out.status.success(),
        "weir status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_sink_blocked_by_a_lock_is_reported_stalled_and_recovers() {
    use crate::connectors::{pg_source_cleanup, pg_target_database, psql, unique};
    let tag = unique("stall");
    let name = format!("st{tag}");
    let table = format!("weir_stall_{tag}");
    let target = format!("weir_stall_tgt_{tag}");
    let _source = pg_source_cleanup(&name, &[&table]);
    let _target = pg_target_database(&target);
    const SNAPSHOT_ROWS: i64 = 2_000;
    const MORE_ROWS: i64 = 500;
    psql(
        "postgres",
        &format!(
            "CREATE TABLE public.\"{table}\" (id bigint PRIMARY KEY, note text); \
             INSERT INTO public.\"{table}\" SELECT g, 'row ' || g FROM generate_series(1, {SNAPSHOT_ROWS}) g;"
        ),
    );
    let dir = TempDir::new("admin-stall");
    let (port, http) = (free_port(), free_port());
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"{name}\"\ndata_dir = \"data\"\n\n[source]\ntype = \"postgres\"\n\
             url = \"postgres://postgres:${{PG_PW}}@127.0.0.1:5432/postgres\"\n\
             tables = [\"public.{table}\"]\n\n\
             [[sinks]]\nname = \"replica\"\ntype = \"postgres\"\n\
             url = \"postgres://postgres:${{PG_PW}}@127.0.0.1:5432/{target}\"\nschema = \"public\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{port}\"\npassword = \"${{ADMIN_PW}}\"\n\
             metrics = \"127.0.0.1:{http}\"\nstall_seconds = 3\n"
        ),
    );
    let secret = "stall-admin-pw";
    let run = start(&pipeline, &[("PG_PW", "postgres"), ("ADMIN_PW", secret)]);
    let count = |t: &str| -> i64 {
        psql(&target, &format!("SELECT count(*) FROM public.\"{t}\""))
            .parse()
            .unwrap_or(-1)
    };
    // The snapshot arrives.
    wait_for("the snapshot in the target", 60, || {
        let n = psql(
            &target,
            &format!("SELECT count(*) FROM pg_tables WHERE tablename = '{table}'"),
        );
        (n == "1" && count(&table) == SNAPSHOT_ROWS).then_some(())
    });
    assert_eq!(get(http, "/healthz").unwrap(), (200, "ok\n".to_string()));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = sql_connect_retry(port, secret).await;
        // The snapshot was read by the snapshot stage, the rows applied by the sink.
        let rows = stage_rows(&admin).await;
        assert_stage_invariants(&rows);
        assert!(
            stage(&rows, "snapshot read").events >= SNAPSHOT_ROWS,
            "{rows:#?}"
        );
        assert!(
            stage(&rows, "sink replica").events >= SNAPSHOT_ROWS,
            "{rows:#?}"
        );
        let applied_before = stage(&rows, "sink replica").seconds;

        // Another session holds the target table: the sink's next apply waits on the lock.
        let mut holder = pg_connect(&target).await;
        let lock = holder.transaction().await.unwrap();
        tokio::time::timeout(
            Duration::from_secs(20),
            lock.batch_execute(&format!(
                "LOCK TABLE public.\"{table}\" IN ACCESS EXCLUSIVE MODE"
            )),
        )
        .await
        .expect("LOCK TABLE waited 20 s: the sink holds the table")
        .unwrap();
        psql(
            "postgres",
            &format!(
                "INSERT INTO public.\"{table}\" SELECT g, 'more ' || g \
                 FROM generate_series({}, {}) g",
                SNAPSHOT_ROWS + 1,
                SNAPSHOT_ROWS + MORE_ROWS
            ),
        );

        // /healthz turns 503 naming the sink and the stall.
        let body = wait_for("/healthz 503 for the stall", 60, || {
            let (status, body) = get(http, "/healthz")?;
            (status == 503).then_some(body)
        });
        assert!(
            body.contains("sink replica is stalled") && body.contains("no progress for"),
            "{body}"
        );
        assert!(!body.contains("retrying"), "{body}");

        // weir.sinks says so.
        let row = admin
            .query_one(
                "SELECT state, stalled_seconds, lag_records FROM weir.sinks WHERE name = 'replica'",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "stalled");
        assert!(row.get::<_, Option<i64>>(1).unwrap() >= 3);
        assert!(row.get::<_, i64>(2) > 0);
        let healthy: bool = admin
            .query_one("SELECT healthy FROM weir.pipeline", &[])
            .await
            .unwrap()
            .get(0);
        assert!(!healthy);
        // So do /status and the metrics.
        let st: serde_json::Value = serde_json::from_str(&get(http, "/status").unwrap().1).unwrap();
        assert_eq!(st["sinks"][0]["state"], "stalled");
        assert!(st["sinks"][0]["stalled_seconds"].as_u64().unwrap() >= 3);
        let m = parse_metrics(&get(http, "/metrics").unwrap().1);
        assert_eq!(m["weir_sink_healthy{sink=\"replica\"}"], 0.0);

        // And `weir status` (live, from the running pipeline's /status).
        let status = tokio::task::spawn_blocking({
            let pipeline = pipeline.clone();
            move || weir_status(&pipeline, &[("PG_PW", "postgres"), ("ADMIN_PW", secret)])
        })
        .await
        .unwrap();
        assert!(
            status.contains("unhealthy") && status.contains("sink replica is stalled"),
            "{status}"
        );
        let line = status
            .lines()
            .find(|l| l.starts_with("sink ") && l.contains("replica"))
            .unwrap_or_else(|| panic!("{status}"));
        assert!(line.contains("stalled for"), "{status}");
        assert!(status.contains("stage      sink replica"), "{status}");

        // Held a little longer (the stall watch that logs it looks once a second).
        wait_for("a 5 s stall", 60, || {
            let st: serde_json::Value = serde_json::from_str(&get(http, "/status")?.1).ok()?;
            (st["sinks"][0]["stalled_seconds"].as_u64()? >= 5).then_some(())
        });

        // Release the lock: healthy again, and everything arrives.
        lock.commit().await.unwrap();
        wait_for("/healthz 200 after the lock", 60, || {
            let (status, _) = get(http, "/healthz")?;
            (status == 200).then_some(())
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n: i64 = holder
                .query_one(&format!("SELECT count(*) FROM public.\"{table}\""), &[])
                .await
                .unwrap()
                .get(0);
            if n == SNAPSHOT_ROWS + MORE_ROWS {
                break;
            }
            assert!(Instant::now() < deadline, "{n} rows in the target");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (state, _, _) = sink_row(&admin, "replica").await;
        assert_eq!(state, "running");
        // The apply that waited on the lock is one long call of the sink's stage.
        let rows = stage_rows(&admin).await;
        assert_stage_invariants(&rows);
        let sink = stage(&rows, "sink replica");
        assert!(sink.seconds - applied_before >= 3.0, "{rows:#?}");
        assert!(sink.p99_ms.unwrap() >= 1000.0, "{rows:#?}");
        let mismatched: i64 = holder
            .query_one(
                &format!(
                    "SELECT count(*) FROM public.\"{table}\" WHERE note <> \
                     CASE WHEN id <= {SNAPSHOT_ROWS} THEN 'row ' ELSE 'more ' END || id"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(mismatched, 0);
    });

    let err = stderr_of(run);
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("sink is stalled") && err.contains("replica"),
        "no stall warning in the log: {err}"
    );
    assert!(!err.contains(secret), "{err}");
}

/// A target that accepts connections and never answers: the sink hangs while starting, and
/// that is a stall (unhealthy), not a healthy start.
#[test]
fn a_sink_hanging_while_connecting_is_reported_stalled() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = listener.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            keep.lock().unwrap().push(conn); // accepted, never answered
        }
    });
    let dir = TempDir::new("admin-hang");
    let port = free_port();
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"adm\"\ndata_dir = \"data\"\n\n[source]\ntype = \"datagen\"\nevents = 1000\n\n\
             [[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n\n\
             [[sinks]]\nname = \"db\"\ntype = \"postgres\"\nurl = \"postgres://weir:pw@127.0.0.1:{silent}/x\"\n\n\
             [admin]\nmetrics = \"127.0.0.1:{port}\"\nstall_seconds = 2\n"
        ),
    );
    let run = start(&pipeline, &[]);
    // Healthy while it starts, within stall_seconds.
    let body = wait_for("/healthz 503 for the hanging sink", 30, || {
        let (status, body) = get(port, "/healthz")?;
        (status == 503).then_some(body)
    });
    assert!(body.contains("sink db is stalled"), "{body}");
    assert!(!body.contains("sink files"), "{body}");
    assert!(!held.lock().unwrap().is_empty(), "weir never connected");
    let st: serde_json::Value = serde_json::from_str(&get(port, "/status").unwrap().1).unwrap();
    assert_eq!(st["sinks"][1]["state"], "stalled", "{st}");
    assert_eq!(st["sinks"][0]["state"], "running", "{st}");
    // SIGTERM stops it even though the sink is still connecting.
    let mut run = run;
    let _ = std::process::Command::new("kill")
        .arg(run.0.id().to_string())
        .status();
    let exited = wait_for("weir to stop on SIGTERM", 20, || run.0.try_wait().unwrap());
    let err = stderr_of(run);
    assert!(exited.success(), "{exited}: {err}");
    // (The stall's log line comes from a 1-second watcher, which may not have run yet: the
    // lock test checks it.)
    assert!(!err.contains("panicked"), "{err}");
}
