//! Integration tests against a real PostgreSQL (see scripts/services.sh): the replication
//! transport streaming pgoutput, decoded with `pgoutput::Decoder`.
//!
//! Connection settings come from WEIR_PG_HOST / WEIR_PG_PORT / WEIR_PG_USER /
//! WEIR_PG_PASSWORD / WEIR_PG_DATABASE (defaults 127.0.0.1, 5432, postgres, postgres,
//! postgres). Every test uses its own table, publication and slot names (pid + time) and
//! drops them afterwards, also when the test body panics.

mod sink;
mod snapshot;
mod streaming;

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

// ---------------------------------------------------------------------------------------
// The streaming source (weir_postgres::source::PostgresSource).
// ---------------------------------------------------------------------------------------

mod source {
    use super::*;
    use weir_api::{
        ChangeEvent, ColumnType, ConnectorError, DatagenPosition, Op, PgPosition, Row, Source,
        SourceItem, SourcePosition, Timestamp, Transaction, Value,
    };
    use weir_postgres::source::{PostgresSource, PostgresSourceConfig};

    fn url() -> String {
        let e = env();
        // Percent-encoded user and password go through the URL parser.
        let enc = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
        format!(
            "postgres://{}:{}@{}:{}/{}",
            enc(&e.user),
            enc(&e.password),
            e.host,
            e.port,
            e.database
        )
    }

    fn source_config(n: &Names) -> PostgresSourceConfig {
        PostgresSourceConfig {
            url: url(),
            // `?` stands for the `_` after `weir`; the exclude glob matches nothing here.
            tables: vec![format!("public.weir?{}", &n.table["weir_".len()..])],
            exclude: vec!["public.weir_excluded_*".into()],
            slot: n.slot.clone(),
            publication: n.publication.clone(),
        }
    }

    fn pg(p: &SourcePosition) -> PgPosition {
        match p {
            SourcePosition::Postgres(p) => *p,
            other => panic!("not a postgres position: {other:?}"),
        }
    }

    /// Starts, retrying while the previous walsender still holds the slot (transient).
    async fn start(source: &mut PostgresSource, resume: Option<SourcePosition>) {
        let begun = Instant::now();
        loop {
            match source.start(resume.clone()).await {
                Ok(()) => return,
                Err(e) if e.is_transient() && begun.elapsed() < Duration::from_secs(20) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("start: {e:?}"),
            }
        }
    }

    /// Collects items (heartbeats included) until `transactions` transactions have ended.
    async fn collect_items(source: &mut PostgresSource, transactions: usize) -> Vec<SourceItem> {
        let begun = Instant::now();
        let mut items = Vec::new();
        let ends = |items: &[SourceItem]| {
            items
                .iter()
                .filter(|i| matches!(i, SourceItem::Transaction(_) | SourceItem::Commit(_)))
                .count()
        };
        while ends(&items) < transactions {
            let left = DEADLINE
                .checked_sub(begun.elapsed())
                .unwrap_or_else(|| panic!("timed out; got {}", summary(&items)));
            let item = tokio::time::timeout(left, source.next())
                .await
                .unwrap_or_else(|_| panic!("timed out; got {}", summary(&items)))
                .expect("source item");
            items.push(item);
        }
        items
    }

    /// One line per item, without the rows.
    fn summary(items: &[SourceItem]) -> String {
        items
            .iter()
            .map(|i| match i {
                SourceItem::Schema(s) => format!("Schema({})", s.table),
                SourceItem::Changes(c) => format!("Changes({})", c.len()),
                SourceItem::Commit(c) => format!("Commit({})", c.position),
                SourceItem::Transaction(t) => {
                    format!("Transaction({}, {})", t.changes.len(), t.commit.position)
                }
                SourceItem::Heartbeat(p) => format!("Heartbeat({p})"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn position_of(item: &SourceItem) -> Option<PgPosition> {
        match item {
            SourceItem::Schema(_) => None,
            SourceItem::Changes(c) => c.last().map(|e| pg(&e.position)),
            SourceItem::Commit(c) => Some(pg(&c.position)),
            SourceItem::Transaction(t) => Some(pg(&t.commit.position)),
            SourceItem::Heartbeat(p) => Some(pg(p)),
        }
    }

    fn assert_positions_never_go_back(items: &[SourceItem]) {
        let mut last: Option<PgPosition> = None;
        for item in items {
            let mut here: Vec<PgPosition> = Vec::new();
            match item {
                SourceItem::Transaction(t) => {
                    here.extend(t.changes.iter().map(|e| pg(&e.position)));
                    here.push(pg(&t.commit.position));
                }
                SourceItem::Changes(c) => here.extend(c.iter().map(|e| pg(&e.position))),
                other => here.extend(position_of(other)),
            }
            for p in here {
                if let Some(l) = last {
                    assert!(p >= l, "position {p:?} after {l:?} in {items:?}");
                }
                last = Some(p);
            }
        }
    }

    fn transactions(items: &[SourceItem]) -> Vec<Transaction> {
        items
            .iter()
            .filter_map(|i| match i {
                SourceItem::Transaction(t) => Some(t.clone()),
                _ => None,
            })
            .collect()
    }

    async fn wait_confirmed(sql: &tokio_postgres::Client, slot: &str, want: u64) {
        let begun = Instant::now();
        loop {
            let now = confirmed_flush(sql, slot)
                .await
                .expect("confirmed_flush_lsn");
            if now == want {
                return;
            }
            assert!(
                begun.elapsed() < Duration::from_secs(10),
                "confirmed_flush_lsn {now:X}, want {want:X}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn source_streams_exact_transactions_acks_and_resumes() {
        let n = names("src");
        let (table, publication, slot) = (n.table.clone(), n.publication.clone(), n.slot.clone());
        let cfg = source_config(&n);
        with_cleanup(&n, async move {
            let sql = sql().await;
            sql.batch_execute(&format!(
                "CREATE TABLE {table} (id int8 PRIMARY KEY, name text, amount numeric(10,2),
                 at timestamptz, doc jsonb, flag bool)"
            ))
            .await
            .expect("create table");

            let mut source = PostgresSource::new(cfg.clone(), "pipe");
            let info = source.info();
            assert_eq!(
                (info.connector.as_str(), info.name.as_str(), info.db.as_str()),
                ("postgres", "pipe", env().database.as_str())
            );
            // A position of another source kind is a definite error.
            let err = source
                .start(Some(SourcePosition::Datagen(DatagenPosition { events: 1 })))
                .await
                .expect_err("foreign position");
            assert!(matches!(err, ConnectorError::Definite { .. }), "{err:?}");

            start(&mut source, None).await;
            // The source created the publication and the slot.
            let published = sql
                .query_one(
                    "SELECT count(*) FROM pg_publication_tables WHERE pubname = $1 AND tablename = $2",
                    &[&publication, &table],
                )
                .await
                .expect("publication tables")
                .get::<_, i64>(0);
            assert_eq!(published, 1);
            let slot_start = confirmed_flush(&sql, &slot).await.expect("slot created");

            let before_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_millis() as i64;
            sql.batch_execute(&format!(
                "BEGIN;
                 INSERT INTO {table} VALUES (1, 'a', 12.50, '2024-02-29 13:45:01.25+00', '{{\"a\": 1}}', true);
                 INSERT INTO {table} VALUES (2, NULL, NULL, NULL, NULL, NULL);
                 COMMIT;
                 BEGIN;
                 UPDATE {table} SET name = 'a2', flag = false WHERE id = 1;
                 DELETE FROM {table} WHERE id = 2;
                 COMMIT;"
            ))
            .await
            .expect("DML");
            let after_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock")
                .as_millis() as i64;

            let end = source.end_position().await.expect("end position");

            let items = collect_items(&mut source, 2).await;
            assert_positions_never_go_back(&items);
            let meaningful: Vec<&SourceItem> = items
                .iter()
                .filter(|i| !matches!(i, SourceItem::Heartbeat(_)))
                .collect();
            assert_eq!(meaningful.len(), 3, "{}", summary(&items));

            // The schema comes first.
            let SourceItem::Schema(schema) = meaningful[0] else {
                panic!("schema first: {items:?}")
            };
            assert_eq!(schema.table, weir_api::TableId::new("public", table.as_str()));
            assert_eq!(schema.version, 0);
            assert_eq!(schema.primary_key, vec![0]);
            let cols: Vec<(&str, &ColumnType, &str, bool)> = schema
                .columns
                .iter()
                .map(|c| (c.name.as_str(), &c.ty, c.source_type.as_str(), c.nullable))
                .collect();
            assert_eq!(
                cols,
                vec![
                    ("id", &ColumnType::Int { bits: 64, unsigned: false }, "bigint", false),
                    ("name", &ColumnType::Text { max_len: None }, "text", true),
                    (
                        "amount",
                        &ColumnType::Decimal { precision: Some(10), scale: Some(2) },
                        "numeric(10,2)",
                        true
                    ),
                    ("at", &ColumnType::TimestampTz, "timestamp with time zone", true),
                    ("doc", &ColumnType::Json, "jsonb", true),
                    ("flag", &ColumnType::Bool, "boolean", true),
                ]
            );

            let txns = transactions(&items);
            assert_eq!(txns.len(), 2);
            let (t1, t2) = (&txns[0], &txns[1]);
            let c1 = pg(&t1.commit.position);
            let c2 = pg(&t2.commit.position);
            assert_eq!(c1.commit_lsn, c1.lsn);
            assert_eq!(c2.commit_lsn, c2.lsn);
            assert!(c1 < c2);
            assert!(c1.commit_lsn.0 > slot_start);
            // end_position (read after both commits) lies past the second commit: a
            // keepalive at or past the flush LSN reaches it (checked below).
            assert!(pg(&end) > c2, "{end:?} vs {c2:?}");

            let ts = |s: i64| Timestamp::from_unix_micros(s);
            let row1 = Row(vec![
                Value::Int(1),
                Value::Text("a".into()),
                Value::Decimal("12.50".into()),
                Value::TimestampTz(ts(1_709_214_301_250_000)),
                Value::Json("{\"a\": 1}".into()),
                Value::Bool(true),
            ]);
            let row2 = Row(vec![
                Value::Int(2),
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
            ]);
            let mut row1b = row1.clone();
            row1b.0[1] = Value::Text("a2".into());
            row1b.0[5] = Value::Bool(false);
            let key2 = Row(vec![
                Value::Int(2),
                Value::Unchanged,
                Value::Unchanged,
                Value::Unchanged,
                Value::Unchanged,
                Value::Unchanged,
            ]);
            type Shape = (Op, Option<Row>, Option<Row>);
            let shape = |t: &Transaction| -> Vec<Shape> {
                t.changes
                    .iter()
                    .map(|e| (e.op, e.before.clone(), e.after.clone()))
                    .collect()
            };
            assert_eq!(
                shape(t1),
                vec![(Op::Insert, None, Some(row1)), (Op::Insert, None, Some(row2))]
            );
            assert_eq!(
                shape(t2),
                vec![(Op::Update, None, Some(row1b)), (Op::Delete, Some(key2), None)]
            );
            for (t, c) in [(t1, c1), (t2, c2)] {
                assert_eq!(t.commit.events, 2);
                assert!(t.commit.txid.is_some());
                assert!(
                    (before_ms - 1000..=after_ms + 1000).contains(&t.commit.ts_ms),
                    "{} not in {before_ms}..{after_ms}",
                    t.commit.ts_ms
                );
                let mut last_lsn = 0;
                for e in &t.changes {
                    let ChangeEvent {
                        table: et,
                        schema_version,
                        position,
                        txid,
                        ts_ms,
                        ..
                    } = e;
                    assert_eq!(**et, schema.table);
                    assert_eq!(*schema_version, 0);
                    assert_eq!(*txid, t.commit.txid);
                    assert_eq!(*ts_ms, t.commit.ts_ms);
                    let p = pg(position);
                    assert_eq!(p.commit_lsn, c.commit_lsn);
                    assert!(p.lsn.0 > last_lsn && p.lsn < c.commit_lsn, "{p:?}");
                    last_lsn = p.lsn.0;
                }
            }
            assert_ne!(t1.commit.txid, t2.commit.txid);

            // Acknowledge the first commit: the slot confirms just past its commit record, so
            // a restart skips it and sends the second again.
            source.ack(&t1.commit.position).await.expect("ack");
            wait_confirmed(&sql, &slot, c1.commit_lsn.0 + 1).await;
            drop(source);

            let mut again = PostgresSource::new(cfg.clone(), "pipe");
            start(&mut again, Some(t1.commit.position.clone())).await;
            let items = collect_items(&mut again, 1).await;
            assert_positions_never_go_back(&items);
            let meaningful: Vec<&SourceItem> = items
                .iter()
                .filter(|i| !matches!(i, SourceItem::Heartbeat(_)))
                .collect();
            assert_eq!(meaningful.len(), 2, "{}", summary(&items));
            assert_eq!(meaningful[0], &SourceItem::Schema(schema.clone()));
            assert_eq!(meaningful[1], &SourceItem::Transaction(t2.clone()));

            again.ack(&t2.commit.position).await.expect("ack");
            wait_confirmed(&sql, &slot, c2.commit_lsn.0 + 1).await;

            // Idle: keepalives come as heartbeats past the last commit; acking one confirms
            // its wal_end.
            let item = tokio::time::timeout(DEADLINE, again.next())
                .await
                .expect("heartbeat in time")
                .expect("item");
            let SourceItem::Heartbeat(hb) = item else {
                panic!("unexpected item {item:?}")
            };
            assert!(pg(&hb) > c2, "{hb:?}");
            assert!(pg(&hb) >= pg(&end), "{hb:?} vs {end:?}");
            again.ack(&hb).await.expect("ack heartbeat");
            wait_confirmed(&sql, &slot, pg(&hb).lsn.0 + 1).await;
        })
        .await;
    }

    #[tokio::test]
    async fn source_chunks_large_transactions_and_reports_truncate() {
        let n = names("srcbig");
        let table = n.table.clone();
        let cfg = source_config(&n);
        with_cleanup(&n, async move {
            let sql = sql().await;
            sql.batch_execute(&format!(
                "CREATE TABLE {table} (id int8 PRIMARY KEY, v text)"
            ))
            .await
            .expect("create table");
            let mut source = PostgresSource::new(cfg, "big");
            start(&mut source, None).await;
            const ROWS: usize = 5000;
            // Two simple queries: two transactions.
            sql.batch_execute(&format!(
                "INSERT INTO {table} SELECT g, 'v' || g FROM generate_series(1, {ROWS}) g"
            ))
            .await
            .expect("insert");
            sql.batch_execute(&format!("TRUNCATE {table}"))
                .await
                .expect("truncate");
            let items = collect_items(&mut source, 2).await;
            assert_positions_never_go_back(&items);
            let meaningful: Vec<&SourceItem> = items
                .iter()
                .filter(|i| !matches!(i, SourceItem::Heartbeat(_)))
                .collect();
            // Relation messages repeated after cache invalidations (the TRUNCATE, other
            // sessions' DDL) are not announced again when the schema is the same.
            assert_eq!(meaningful.len(), 5, "{}", summary(&items));
            assert!(matches!(meaningful[0], SourceItem::Schema(_)));
            let SourceItem::Changes(a) = meaningful[1] else {
                panic!("chunk")
            };
            let SourceItem::Changes(b) = meaningful[2] else {
                panic!("chunk")
            };
            assert_eq!((a.len(), b.len()), (4096, ROWS - 4096));
            assert_eq!(
                b.last().and_then(|e| e.after.clone()),
                Some(Row(vec![Value::Int(5000), Value::Text("v5000".into())]))
            );
            let SourceItem::Commit(commit) = meaningful[3] else {
                panic!("commit")
            };
            assert_eq!(commit.events, ROWS as u64);
            let SourceItem::Transaction(t) = meaningful[4] else {
                panic!("truncate transaction")
            };
            assert_eq!(t.changes.len(), 1);
            let e = &t.changes[0];
            assert_eq!((e.op, &e.before, &e.after), (Op::Truncate, &None, &None));
            assert_eq!(e.table.name, table);
            assert!(pg(&t.commit.position) > pg(&commit.position));
        })
        .await;
    }
}

// ---------------------------------------------------------------------------------------
// The preflight (weir_postgres::check::preflight).
// ---------------------------------------------------------------------------------------

mod preflight {
    use super::*;
    use weir_postgres::check::{Finding, preflight};
    use weir_postgres::source::PostgresSourceConfig;

    fn url_for(user: &str, password: &str, port: u16) -> String {
        let e = env();
        format!(
            "postgres://{user}:{password}@{}:{port}/{}",
            e.host, e.database
        )
    }

    fn config(url: String, n: &Names) -> PostgresSourceConfig {
        PostgresSourceConfig {
            url,
            tables: vec![format!("public.{}", n.table)],
            exclude: vec![],
            slot: n.slot.clone(),
            publication: n.publication.clone(),
        }
    }

    fn good_config(n: &Names) -> PostgresSourceConfig {
        let e = env();
        config(url_for(&e.user, &e.password, e.port), n)
    }

    fn fatal(findings: &[Finding]) -> Vec<&Finding> {
        findings.iter().filter(|f| f.fatal).collect()
    }

    /// Runs `body`, then whatever happened runs `drop_sql` (each statement on its own) and the
    /// usual slot/publication/table cleanup, then re-raises a panic from the body.
    async fn guarded<F>(n: &Names, drop_sql: Vec<String>, body: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let outcome = tokio::spawn(body).await;
        if let Ok(client) = try_sql().await {
            cleanup(&client, n).await;
            for sql in &drop_sql {
                let _ = client.batch_execute(sql).await;
            }
        }
        if let Err(err) = outcome {
            std::panic::resume_unwind(err.into_panic());
        }
    }

    #[tokio::test]
    async fn good_config_has_no_fatal_findings() {
        let n = names("pf_good");
        let cfg = good_config(&n);
        let table = n.table.clone();
        guarded(&n, vec![], async move {
            sql()
                .await
                .batch_execute(&format!(
                    "CREATE TABLE {table} (id int PRIMARY KEY, v text)"
                ))
                .await
                .expect("create table");
            let findings = preflight(&cfg).await;
            assert!(fatal(&findings).is_empty(), "{findings:#?}");
            assert!(
                !findings.iter().any(|f| f.message.contains(&table)),
                "{findings:#?}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn glob_matching_nothing_is_fatal() {
        let n = names("pf_none");
        let mut cfg = good_config(&n);
        cfg.tables = vec![format!("public.{}_nothing_*", n.table)];
        guarded(&n, vec![], async move {
            let findings = preflight(&cfg).await;
            let f = fatal(&findings);
            assert_eq!(f.len(), 1, "{findings:#?}");
            assert!(f[0].message.contains("no table matches"), "{findings:#?}");
        })
        .await;
    }

    #[tokio::test]
    async fn keyless_table_warns_about_replica_identity() {
        let n = names("pf_nokey");
        let cfg = good_config(&n);
        let table = n.table.clone();
        guarded(&n, vec![], async move {
            sql()
                .await
                .batch_execute(&format!("CREATE TABLE {table} (id int, v text)"))
                .await
                .expect("create table");
            let findings = preflight(&cfg).await;
            assert!(fatal(&findings).is_empty(), "{findings:#?}");
            let w: Vec<_> = findings
                .iter()
                .filter(|f| f.message.contains(&table))
                .collect();
            assert_eq!(w.len(), 1, "{findings:#?}");
            assert!(!w[0].fatal);
            assert!(
                w[0].message.contains(&format!(
                    "ALTER TABLE \"public\".\"{table}\" REPLICA IDENTITY FULL"
                )),
                "{findings:#?}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn replica_identity_nothing_is_fatal() {
        let n = names("pf_nothing");
        let cfg = good_config(&n);
        let table = n.table.clone();
        guarded(&n, vec![], async move {
            sql()
                .await
                .batch_execute(&format!(
                    "CREATE TABLE {table} (id int PRIMARY KEY, v text);
                     ALTER TABLE {table} REPLICA IDENTITY NOTHING;"
                ))
                .await
                .expect("create table");
            let findings = preflight(&cfg).await;
            let f = fatal(&findings);
            assert_eq!(f.len(), 1, "{findings:#?}");
            assert!(f[0].message.contains(&table), "{findings:#?}");
            assert!(
                f[0].message.contains("REPLICA IDENTITY NOTHING"),
                "{findings:#?}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn role_without_replication_or_select_is_told_what_to_grant() {
        let n = names("pf_role");
        let role = format!("weir_r_{}", &n.table["weir_t_".len()..]);
        let password = "weir_pf_Secret_42";
        let e = env();
        let cfg = config(url_for(&role, password, e.port), &n);
        let table = n.table.clone();
        let drop = vec![
            format!("DROP TABLE IF EXISTS {table}"),
            format!("DROP ROLE IF EXISTS {role}"),
        ];
        guarded(&n, drop, async move {
            sql()
                .await
                .batch_execute(&format!(
                    "CREATE ROLE {role} LOGIN PASSWORD '{password}' NOSUPERUSER NOREPLICATION;
                     CREATE TABLE {table} (id int PRIMARY KEY, v text);"
                ))
                .await
                .expect("create role and table");
            let findings = preflight(&cfg).await;
            let f = fatal(&findings);
            assert!(
                f.iter().any(|f| f
                    .message
                    .contains(&format!("ALTER ROLE \"{role}\" REPLICATION"))),
                "{findings:#?}"
            );
            assert!(
                f.iter().any(|f| f.message.contains(&format!(
                    "GRANT SELECT ON \"public\".\"{table}\" TO \"{role}\""
                ))),
                "{findings:#?}"
            );
            assert!(
                !findings.iter().any(|f| f.message.contains(password)),
                "{findings:#?}"
            );
        })
        .await;
    }

    /// A one-connection stand-in for a PostgreSQL server that asks for a cleartext password
    /// and rejects it with an error message quoting it back (as a careless proxy might), so
    /// the redaction is tested too. Returns its port.
    async fn password_rejecting_server() -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            // Startup (answering an SSLRequest with 'N' first).
            loop {
                let len = sock.read_i32().await.expect("length") as usize;
                let mut body = vec![0; len - 4];
                sock.read_exact(&mut body).await.expect("startup");
                if body[..4] == 80877103i32.to_be_bytes() {
                    sock.write_all(b"N").await.expect("ssl refusal");
                } else {
                    break;
                }
            }
            sock.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3])
                .await
                .expect("auth request");
            let tag = sock.read_u8().await.expect("tag");
            assert_eq!(tag, b'p');
            let len = sock.read_i32().await.expect("length") as usize;
            let mut body = vec![0; len - 4];
            sock.read_exact(&mut body).await.expect("password");
            let sent = String::from_utf8_lossy(&body[..body.len() - 1]).into_owned();
            let mut fields = Vec::new();
            for (code, value) in [
                (b'S', "FATAL".to_owned()),
                (b'V', "FATAL".to_owned()),
                (b'C', "28P01".to_owned()),
                (
                    b'M',
                    format!("password authentication failed for user \"postgres\" ({sent})"),
                ),
            ] {
                fields.push(code);
                fields.extend_from_slice(value.as_bytes());
                fields.push(0);
            }
            fields.push(0);
            let mut msg = vec![b'E'];
            msg.extend_from_slice(&(fields.len() as i32 + 4).to_be_bytes());
            msg.extend_from_slice(&fields);
            let _ = sock.write_all(&msg).await;
        });
        port
    }

    #[tokio::test]
    async fn wrong_password_is_a_connect_finding_without_the_password() {
        let n = names("pf_pw");
        let e = env();
        let password = "Not_The_Password_7731";
        let port = password_rejecting_server().await;
        let cfg = config(url_for(&e.user, password, port), &n);
        let findings = preflight(&cfg).await;
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert!(findings[0].fatal);
        let m = &findings[0].message;
        assert!(m.contains("cannot connect"), "{m}");
        assert!(m.contains(&format!("{}:{port}", e.host)), "{m}");
        assert!(m.contains("password authentication failed"), "{m}");
        assert!(!m.contains(password), "{m}");

        // The real server (which may trust local connections, so only the redaction is
        // certain): whatever it says, the password is not repeated.
        let cfg = config(url_for(&e.user, password, e.port), &n);
        let findings = preflight(&cfg).await;
        assert!(
            !findings.iter().any(|f| f.message.contains(password)),
            "{findings:#?}"
        );
        if findings
            .iter()
            .any(|f| f.message.contains("cannot connect"))
        {
            assert_eq!(findings.len(), 1, "{findings:#?}");
        }
    }

    #[tokio::test]
    async fn existing_slot_of_another_kind_is_fatal() {
        let n = names("pf_slot");
        let cfg = good_config(&n);
        let (table, slot) = (n.table.clone(), n.slot.clone());
        guarded(&n, vec![], async move {
            let client = sql().await;
            client
                .batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"))
                .await
                .expect("create table");
            client
                .execute("SELECT pg_create_physical_replication_slot($1)", &[&slot])
                .await
                .expect("create physical slot");
            let findings = preflight(&cfg).await;
            let f = fatal(&findings);
            assert_eq!(f.len(), 1, "{findings:#?}");
            assert!(
                f[0].message.contains("instead of pgoutput"),
                "{findings:#?}"
            );
            assert!(
                f[0].message
                    .contains(&format!("SELECT pg_drop_replication_slot('{slot}')")),
                "{findings:#?}"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn bad_port_is_a_connect_finding() {
        let n = names("pf_port");
        let e = env();
        let cfg = config(url_for(&e.user, "hunter2", 1), &n);
        let findings = preflight(&cfg).await;
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert!(findings[0].fatal);
        let m = &findings[0].message;
        assert!(
            m.contains(&format!("cannot connect to PostgreSQL at {}:1", e.host)),
            "{m}"
        );
        assert!(!m.contains("hunter2"), "{m}");
    }
}
