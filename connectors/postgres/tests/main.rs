//! Integration tests against a real PostgreSQL (see scripts/services.sh): the replication
//! transport streaming pgoutput, decoded with `pgoutput::Decoder`.
//!
//! Connection settings come from WEIR_PG_HOST / WEIR_PG_PORT / WEIR_PG_USER /
//! WEIR_PG_PASSWORD / WEIR_PG_DATABASE (defaults 127.0.0.1, 5432, postgres, postgres,
//! postgres). Every test uses its own table, publication and slot names (pid + time) and
//! drops them afterwards, also when the test body panics.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weir_postgres::Decoder;
use weir_postgres::pgoutput::{Lsn, OldTuple, PgOutputMessage, TupleValue};
use weir_postgres::replication::{
    ReplicationClient, ReplicationConfig, ReplicationError, ReplicationEvent, ReplicationStream,
    SnapshotAction, parse_lsn,
};

const DEADLINE: Duration = Duration::from_secs(60);

struct Env {
    host: String,
    port: u16,
    user: String,
    password: String,
    database: String,
}

fn env() -> Env {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    Env {
        host: var("WEIR_PG_HOST", "127.0.0.1"),
        port: var("WEIR_PG_PORT", "5432").parse().expect("WEIR_PG_PORT"),
        user: var("WEIR_PG_USER", "postgres"),
        password: var("WEIR_PG_PASSWORD", "postgres"),
        database: var("WEIR_PG_DATABASE", "postgres"),
    }
}

fn repl_config() -> ReplicationConfig {
    let e = env();
    ReplicationConfig::new(e.host, e.port, e.user)
        .password(e.password)
        .database(e.database)
}

/// A normal SQL connection; fails loudly (never skips) when the server is not there.
async fn sql() -> tokio_postgres::Client {
    let e = env();
    try_sql().await.unwrap_or_else(|err| {
        panic!(
            "PostgreSQL is not reachable at {}:{} ({err}); start it with scripts/services.sh",
            e.host, e.port
        )
    })
}

async fn try_sql() -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let e = env();
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&e.host)
        .port(e.port)
        .user(&e.user)
        .password(&e.password)
        .dbname(&e.database)
        .connect_timeout(Duration::from_secs(5));
    let (client, connection) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn repl_connect(config: &ReplicationConfig) -> ReplicationClient {
    ReplicationClient::connect(config).await.unwrap_or_else(|err| {
        panic!(
            "replication connection to PostgreSQL failed ({err}); start it with scripts/services.sh"
        )
    })
}

struct Names {
    table: String,
    publication: String,
    slot: String,
}

fn names(tag: &str) -> Names {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
        % 1_000_000_000_000;
    let suffix = format!("{tag}_{}_{nanos}", std::process::id());
    Names {
        table: format!("weir_t_{suffix}"),
        publication: format!("weir_p_{suffix}"),
        slot: format!("weir_s_{suffix}"),
    }
}

/// Runs `body`, then drops the slot, publication and table whatever happened, then
/// re-raises a panic from the body.
async fn with_cleanup<F>(names: &Names, body: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(body).await;
    if let Ok(client) = try_sql().await {
        cleanup(&client, names).await;
    }
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

async fn cleanup(client: &tokio_postgres::Client, names: &Names) {
    // Kick any walsender still holding the slot, then drop it.
    for _ in 0..50 {
        let rows = client
            .query(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&names.slot],
            )
            .await;
        let Some(row) = rows.ok().and_then(|r| r.into_iter().next()) else {
            break;
        };
        if let Some(pid) = row.get::<_, Option<i32>>(0) {
            let _ = client
                .execute("SELECT pg_terminate_backend($1)", &[&pid])
                .await;
        } else if client
            .execute("SELECT pg_drop_replication_slot($1)", &[&names.slot])
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = client
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}; DROP TABLE IF EXISTS {};",
            names.publication, names.table
        ))
        .await;
}

async fn setup_table(names: &Names) -> tokio_postgres::Client {
    let client = sql().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {t} (id int PRIMARY KEY, name text, note text);
             CREATE PUBLICATION {p} FOR TABLE {t};",
            t = names.table,
            p = names.publication
        ))
        .await
        .expect("create table and publication");
    client
}

async fn confirmed_flush(client: &tokio_postgres::Client, slot: &str) -> Option<Lsn> {
    let row = client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("slot row");
    row.get::<_, Option<String>>(0).and_then(|s| parse_lsn(&s))
}

/// Reads and decodes pgoutput messages until `done` says so, answering keepalives.
async fn collect(
    stream: &mut ReplicationStream,
    decoder: &Decoder,
    mut done: impl FnMut(&[PgOutputMessage]) -> bool,
) -> Vec<PgOutputMessage> {
    let start = Instant::now();
    let mut messages = Vec::new();
    let mut in_stream = false;
    while !done(&messages) {
        let left = DEADLINE
            .checked_sub(start.elapsed())
            .unwrap_or_else(|| panic!("timed out; got {messages:?}"));
        let event = tokio::time::timeout(left, stream.next())
            .await
            .unwrap_or_else(|_| panic!("timed out; got {messages:?}"))
            .expect("replication event");
        match event {
            ReplicationEvent::XLogData { data, .. } => {
                let message = decoder.decode(&data, in_stream).expect("decode pgoutput");
                match message {
                    PgOutputMessage::StreamStart(_) => in_stream = true,
                    PgOutputMessage::StreamStop => in_stream = false,
                    _ => {}
                }
                messages.push(message);
            }
            ReplicationEvent::Keepalive {
                reply_requested: true,
                ..
            } => stream.send_status(0, false).await.expect("status reply"),
            ReplicationEvent::Keepalive { .. } => {}
            ReplicationEvent::End => panic!("stream ended early; got {messages:?}"),
        }
    }
    messages
}

fn kinds(messages: &[PgOutputMessage]) -> String {
    messages
        .iter()
        .map(|m| match m {
            PgOutputMessage::Begin(_) => 'B',
            PgOutputMessage::Relation(_) => 'R',
            PgOutputMessage::Insert(_) => 'I',
            PgOutputMessage::Update(_) => 'U',
            PgOutputMessage::Delete(_) => 'D',
            PgOutputMessage::Commit(_) => 'C',
            PgOutputMessage::StreamStart(_) => 'S',
            PgOutputMessage::StreamStop => 'E',
            PgOutputMessage::StreamCommit(_) => 'c',
            _ => '?',
        })
        .collect()
}

fn text(s: &str) -> TupleValue {
    TupleValue::Text(s.as_bytes().to_vec())
}

fn count(messages: &[PgOutputMessage], kind: char) -> usize {
    kinds(messages).chars().filter(|&c| c == kind).count()
}

#[tokio::test]
async fn proto1_streams_exact_changes_and_confirms_flush() {
    let n = names("p1");
    let (table, publication, slot) = (n.table.clone(), n.publication.clone(), n.slot.clone());
    with_cleanup(&n, async move {
        let sql = setup_table(&Names {
            table: table.clone(),
            publication: publication.clone(),
            slot: slot.clone(),
        })
        .await;
        let config = repl_config();
        let mut client = repl_connect(&config).await;
        assert!(client.server_param("server_version").is_some());
        let system = client.identify_system().await.expect("IDENTIFY_SYSTEM");
        assert!(system.timeline >= 1 && system.xlog_pos > 0, "{system:?}");
        assert_eq!(system.dbname.as_deref(), Some(env().database.as_str()));

        let created = client
            .create_logical_slot(&slot, "pgoutput", SnapshotAction::Export, false)
            .await
            .expect("CREATE_REPLICATION_SLOT");
        assert_eq!(created.slot_name, slot);
        assert!(created.consistent_point > 0);
        assert!(
            created
                .snapshot_name
                .as_deref()
                .is_some_and(|s| !s.is_empty())
        );
        assert_eq!(created.output_plugin.as_deref(), Some("pgoutput"));

        // A second slot with the same name: a server error with its SQLSTATE.
        let dup = client
            .create_logical_slot(&slot, "pgoutput", SnapshotAction::NoExport, false)
            .await
            .expect_err("duplicate slot");
        assert_eq!(dup.sqlstate(), Some("42710"), "{dup}");
        assert!(!dup.is_connection_lost());

        // Three transactions (one simple-query batch would be a single transaction).
        for dml in [
            format!("INSERT INTO {table} VALUES (1, 'a', NULL), (2, 'b', 'x')"),
            format!("UPDATE {table} SET name = 'b2' WHERE id = 2"),
            format!("DELETE FROM {table} WHERE id = 1"),
        ] {
            sql.batch_execute(&dml).await.expect("DML");
        }

        let mut stream = client
            .start_logical_replication(
                &slot,
                created.consistent_point,
                &[
                    ("proto_version", "1"),
                    ("publication_names", &format!("\"{publication}\"")),
                ],
            )
            .await
            .expect("START_REPLICATION");
        let decoder = Decoder::new(1).expect("decoder");
        let messages = collect(&mut stream, &decoder, |m| count(m, 'C') == 3).await;
        assert_eq!(kinds(&messages), "BRIICBUCBDC", "{messages:?}");

        let PgOutputMessage::Relation(rel) = &messages[1] else {
            unreachable!()
        };
        assert_eq!(
            (rel.namespace.as_str(), rel.name.as_str()),
            ("public", table.as_str())
        );
        let cols: Vec<_> = rel
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.is_key()))
            .collect();
        assert_eq!(cols, [("id", true), ("name", false), ("note", false)]);
        let PgOutputMessage::Insert(i1) = &messages[2] else {
            unreachable!()
        };
        assert_eq!(i1.relation_oid, rel.oid);
        assert_eq!(i1.new, [text("1"), text("a"), TupleValue::Null]);
        let PgOutputMessage::Insert(i2) = &messages[3] else {
            unreachable!()
        };
        assert_eq!(i2.new, [text("2"), text("b"), text("x")]);
        let PgOutputMessage::Update(u) = &messages[6] else {
            unreachable!()
        };
        assert_eq!(u.old, None);
        assert_eq!(u.new, [text("2"), text("b2"), text("x")]);
        let PgOutputMessage::Delete(d) = &messages[9] else {
            unreachable!()
        };
        assert_eq!(
            d.old,
            OldTuple::Key(vec![text("1"), TupleValue::Null, TupleValue::Null])
        );
        let PgOutputMessage::Begin(b) = &messages[0] else {
            unreachable!()
        };
        let PgOutputMessage::Commit(c1) = &messages[4] else {
            unreachable!()
        };
        assert_eq!(b.final_lsn, c1.commit_lsn);
        let PgOutputMessage::Commit(last) = &messages[10] else {
            unreachable!()
        };
        assert!(last.end_lsn > created.consistent_point);

        // Acknowledge the last commit; the slot's confirmed_flush_lsn must follow.
        let before = confirmed_flush(&sql, &slot)
            .await
            .expect("confirmed_flush_lsn");
        assert!(before < last.end_lsn);
        stream
            .send_status(last.end_lsn, false)
            .await
            .expect("status update");
        let start = Instant::now();
        loop {
            let now = confirmed_flush(&sql, &slot)
                .await
                .expect("confirmed_flush_lsn");
            if now >= last.end_lsn {
                assert_eq!(now, last.end_lsn);
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "confirmed_flush_lsn stuck at {now:X}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stream.close().await.expect("close stream");

        // Drop the slot through the replication protocol (WAIT for the walsender to let go).
        let mut client = repl_connect(&config).await;
        client
            .drop_slot(&slot, true)
            .await
            .expect("DROP_REPLICATION_SLOT");
        client.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn proto2_streams_large_transaction_in_chunks() {
    let n = names("p2");
    let (table, publication, slot) = (n.table.clone(), n.publication.clone(), n.slot.clone());
    with_cleanup(&n, async move {
        let sql = setup_table(&Names {
            table: table.clone(),
            publication: publication.clone(),
            slot: slot.clone(),
        })
        .await;
        // Small decoding memory so that a modest transaction gets streamed.
        let config = repl_config().param("options", "-c logical_decoding_work_mem=64kB");
        let mut client = repl_connect(&config).await;
        let created = client
            .create_logical_slot(&slot, "pgoutput", SnapshotAction::NoExport, false)
            .await
            .expect("CREATE_REPLICATION_SLOT");
        assert_eq!(created.snapshot_name, None);
        const ROWS: i32 = 3000;
        for dml in [
            format!(
                "INSERT INTO {table} SELECT g, repeat('x', 100), NULL FROM generate_series(1, {ROWS}) g"
            ),
            format!("INSERT INTO {table} VALUES (0, 'small', NULL)"),
        ] {
            sql.batch_execute(&dml).await.expect("DML");
        }

        let mut stream = client
            .start_logical_replication(
                &slot,
                created.consistent_point,
                &[
                    ("proto_version", "2"),
                    ("publication_names", &format!("\"{publication}\"")),
                    ("streaming", "on"),
                ],
            )
            .await
            .expect("START_REPLICATION");
        let decoder = Decoder::new(2).expect("decoder");
        let messages = collect(&mut stream, &decoder, |m| count(m, 'C') == 1).await;
        let k = kinds(&messages);
        // The big transaction arrives as stream chunks and a stream commit, then the small
        // one as an ordinary transaction.
        assert!(k.starts_with('S'), "{k}");
        assert!(k.ends_with("cBIC"), "{k}");
        assert_eq!(count(&messages, 'I'), ROWS as usize + 1);
        assert_eq!(count(&messages, 'S'), count(&messages, 'E'));
        let PgOutputMessage::StreamStart(first) = &messages[0] else {
            unreachable!()
        };
        assert_eq!(first.first_segment, 1);
        let streamed_xid = first.xid;
        for m in &messages[..messages.len() - 4] {
            if let PgOutputMessage::Insert(i) = m {
                assert_eq!(i.xid, Some(streamed_xid));
            }
        }
        let PgOutputMessage::Insert(small) = &messages[messages.len() - 2] else {
            unreachable!()
        };
        assert_eq!(small.xid, None);
        assert_eq!(small.new, [text("0"), text("small"), TupleValue::Null]);
        let PgOutputMessage::Commit(last) = messages.last().expect("commit") else {
            unreachable!()
        };
        stream.send_status(last.end_lsn, true).await.expect("status update");
        stream.close().await.expect("close stream");
        let mut client = repl_connect(&config).await;
        client.drop_slot(&slot, true).await.expect("DROP_REPLICATION_SLOT");
    })
    .await;
}

#[tokio::test]
async fn server_errors_keep_sqlstate_and_are_not_connection_loss() {
    // Also the loud "is the server there" check.
    drop(sql().await);
    let n = names("err");
    let client = repl_connect(&repl_config()).await;
    let err = client
        .start_logical_replication(&n.slot, 0, &[("proto_version", "1")])
        .await
        .expect_err("no such slot");
    match &err {
        ReplicationError::Server { code, message, .. } => {
            assert_eq!(code, "42704", "{err}");
            assert!(message.contains(&n.slot), "{message}");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert!(!err.is_connection_lost());

    let mut client = repl_connect(&repl_config()).await;
    let err = client
        .simple_query("NOT A COMMAND")
        .await
        .expect_err("syntax");
    assert_eq!(err.sqlstate(), Some("42601"), "{err}");
    // The connection is still usable after an error.
    client
        .identify_system()
        .await
        .expect("IDENTIFY_SYSTEM after error");
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let config = ReplicationConfig::new("127.0.0.1", 1, "postgres").password("hunter2");
    let err = ReplicationClient::connect(&config)
        .await
        .expect_err("port 1");
    assert!(matches!(err, ReplicationError::Connect { .. }), "{err:?}");
    assert!(!format!("{config:?}{err}{err:?}").contains("hunter2"));
}
