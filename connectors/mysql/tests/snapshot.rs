//! The consistent parallel snapshot against the real server: values and schemas equal the
//! stream's, chunks cover every key exactly once, and snapshot + stream converge to the
//! tables' final content under concurrent writers (and after `resume`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use mysql_async::prelude::Queryable;
use weir_api::{
    ChangeEvent, ConnectorError, MysqlPosition, Op, Row, Snapshot, SnapshotPlan, Source,
    SourceItem, SourcePosition, TableId, TableSchema, Time, Value,
};
use weir_mysql::MysqlSource;
use weir_mysql::snapshot::{MysqlSnapshot, SnapshotSettings};

use super::{Collector, DEADLINE, config, exec, get, mysql_pos, sql, started, ts, with_db};

fn snapshot(db: &str, chunk_rows: u64, workers: usize) -> MysqlSnapshot {
    MysqlSnapshot::new(
        config(db),
        db,
        SnapshotSettings {
            chunk_rows,
            workers,
        },
    )
}

/// Reads every chunk of `plan` with `workers` readers in parallel; rows per chunk index.
async fn read_chunks(
    snap: &mut MysqlSnapshot,
    plan: &SnapshotPlan,
    workers: usize,
) -> Vec<Vec<Row>> {
    let mut readers = Vec::new();
    for _ in 0..workers {
        readers.push(
            snap.reader()
                .await
                .unwrap_or_else(|e| panic!("reader: {e}")),
        );
    }
    snap.readers_ready().await.unwrap();
    let queue: Arc<Mutex<VecDeque<usize>>> = Arc::new(Mutex::new((0..plan.chunks.len()).collect()));
    let chunks = Arc::new(plan.chunks.clone());
    let mut tasks = Vec::new();
    for mut reader in readers {
        let (queue, chunks) = (Arc::clone(&queue), Arc::clone(&chunks));
        let from = plan.stream_from.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let next = queue.lock().unwrap().pop_front();
                let Some(i) = next else { break };
                let chunk = &chunks[i];
                assert_eq!(chunk.index as usize, i);
                reader
                    .open(chunk)
                    .await
                    .unwrap_or_else(|e| panic!("open chunk {i}: {e}"));
                let mut rows = Vec::new();
                while let Some(batch) = reader
                    .next_batch(37)
                    .await
                    .unwrap_or_else(|e| panic!("chunk {i}: {e}"))
                {
                    assert!(!batch.is_empty() && batch.len() <= 37);
                    for ev in batch {
                        assert_eq!(ev.op, Op::Read);
                        assert_eq!(*ev.table, chunk.table);
                        assert!(ev.before.is_none() && ev.txid.is_none());
                        assert_eq!(ev.schema_version, 0);
                        assert_eq!(ev.position, from);
                        rows.push(ev.after.expect("a read has an after image"));
                    }
                }
                out.push((i, rows));
            }
            out
        }));
    }
    let mut by_chunk = vec![Vec::new(); plan.chunks.len()];
    for t in tasks {
        for (i, rows) in t.await.unwrap() {
            by_chunk[i] = rows;
        }
    }
    by_chunk
}

/// Every change the stream brings after `from` up to the server's current end.
async fn stream_to_end(db: &str, pipeline: &str, from: SourcePosition) -> Vec<ChangeEvent> {
    let mut probe = MysqlSource::new(config(db), &format!("{pipeline}_probe"));
    let end = mysql_pos(&probe.end_position().await.unwrap());
    drop(probe);
    let mut src = started(db, pipeline, Some(from)).await;
    let mut out = Vec::new();
    let reached = |p: &SourcePosition| mysql_pos(p) >= end;
    loop {
        let item = tokio::time::timeout(DEADLINE, src.next())
            .await
            .expect("the stream reaches the end position in time")
            .unwrap_or_else(|e| panic!("source error: {e}"));
        match item {
            SourceItem::Schema(_) => {}
            SourceItem::Changes(c) => out.extend(c),
            SourceItem::Commit(c) => {
                if reached(&c.position) {
                    break;
                }
            }
            SourceItem::Transaction(t) => {
                out.extend(t.changes);
                if reached(&t.commit.position) {
                    break;
                }
            }
            SourceItem::Heartbeat(p) => {
                if reached(&p) {
                    break;
                }
            }
        }
    }
    out
}

type Content = BTreeMap<String, Vec<Value>>;

fn key_of(schema: &TableSchema, row: &Row) -> String {
    let k: Vec<&Value> = schema.primary_key.iter().map(|&i| &row.0[i]).collect();
    format!("{k:?}")
}

/// Snapshot rows, then streamed changes, applied by key.
fn converge(
    schemas: &[TableSchema],
    snapshot: &[Vec<Row>],
    plan: &SnapshotPlan,
    stream: &[ChangeEvent],
) -> HashMap<TableId, Content> {
    let by_table: HashMap<&TableId, &TableSchema> = schemas.iter().map(|s| (&s.table, s)).collect();
    let mut state: HashMap<TableId, Content> = HashMap::new();
    for (chunk, rows) in plan.chunks.iter().zip(snapshot) {
        let s = by_table[&chunk.table];
        let t = state.entry(chunk.table.clone()).or_default();
        for r in rows {
            assert!(
                t.insert(key_of(s, r), r.0.clone()).is_none(),
                "row {r:?} of {} read twice",
                chunk.table
            );
        }
    }
    for ev in stream {
        let Some(s) = by_table.get(&*ev.table) else {
            continue;
        };
        let t = state.entry((*ev.table).clone()).or_default();
        if let Some(b) = &ev.before {
            t.remove(&key_of(s, b));
        }
        if let Some(a) = &ev.after {
            t.insert(key_of(s, a), a.0.clone());
        }
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_rows_and_schema_equal_the_stream() {
    with_db("snaptypes", |db| async move {
        let mut c = sql().await;
        exec(&mut c, &format!("USE `{db}`")).await;
        exec(
            &mut c,
            crate::EVERY_TYPE_TABLE,
        )
        .await;
        let mut src = started(&db, &db, None).await;
        exec(&mut c, "SET NAMES utf8mb4").await;
        exec(&mut c, "SET SESSION sql_mode = ''").await;
        exec(&mut c, "SET SESSION time_zone = '+02:00'").await;
        let dec = "-12345678901234567890123456789012345.123456789012345678901234567890";
        exec(
            &mut c,
            &format!(
                "INSERT INTO t VALUES (1,
                -128, 2155, 255, -32768, -8388608,
                -2147483648, 4294967295, -9223372036854775808, 18446744073709551615,
                '{dec}', 12345678.90,
                1.5, 0.1,
                b'1', b'1000000101', b'1111111111111111111111111111111111111111111111111111111111111111',
                'héllo', '😀 emoji 𝄞', 'text ✓', 'café €',
                x'0102', x'00ff', x'deadbeef', NULL,
                'large', 'c,a',
                '0000-00-00', '-838:59:59.000000', '0000-00-00 00:00:00',
                '2024-02-29 13:45:01.250000',
                '{{\"a\": [1, 2.5, \"x\"], \"b\": null}}', ST_GeomFromText('POINT(1.5 -2)'), NULL)"
            ),
        )
        .await;
        exec(
            &mut c,
            "INSERT INTO t VALUES (2,
                127, 0, 0, 32767, 8388607, 2147483647, 0, 9223372036854775807, 0,
                '0.000000000000000000000000000001', 0.00,
                3.4028235e38, -1.7976931348623157e308,
                b'0', b'0000000001', b'1000000000000000000000000000000000000000000000000000000000000000',
                'a', '', 'it''s \\\\ \"q\"', 'Ärger',
                x'ffffffff', x'', x'00', REPEAT(x'01020304', 256 * 1024),
                '', '', '2024-02-29', '25:00:00.000001', '2024-02-29 13:45:01.000001',
                '1970-01-01 02:00:01.000001',
                '[]', ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))'), 7)",
        )
        .await;
        exec(&mut c, "INSERT INTO t (id) VALUES (3)").await;
        let mut col = Collector::default();
        let txns = col.txns(&mut src, 3).await;
        drop(src);
        let mut streamed: HashMap<String, Row> = HashMap::new();
        let mut stream_schema = None;
        for t in &txns {
            let (ev, schema) = &t.changes[0];
            let row = ev.after.clone().unwrap();
            streamed.insert(format!("{:?}", row.0[0]), row);
            stream_schema = Some(schema.clone());
        }
        let stream_schema = stream_schema.unwrap();

        let mut snap = snapshot(&db, 2, 2);
        let plan = snap.plan().await.unwrap_or_else(|e| panic!("plan: {e}"));
        assert_eq!(plan.schemas, vec![stream_schema.clone()], "schemas differ");
        assert_eq!(plan.chunks.len(), 2, "{:?}", plan.chunks);
        assert_eq!(plan.chunks[0].upto, Some(vec!["2".to_string()]));
        let rows: Vec<Row> = read_chunks(&mut snap, &plan, 2).await.concat();
        assert_eq!(rows.len(), 3);
        for r in &rows {
            let id = &r.0[0];
            let s = &streamed[&format!("{id:?}")];
            for (i, col) in stream_schema.columns.iter().enumerate() {
                assert_eq!(r.0[i], s.0[i], "row {id:?} column {}", col.name);
            }
        }
        // Literal spot checks (the stream's own test pins the rest).
        let row = |id: i64| rows.iter().find(|r| r.0[0] == Value::Int(id)).unwrap();
        let s = &stream_schema;
        assert_eq!(get(s, row(1), "biu"), &Value::UInt(u64::MAX));
        assert_eq!(get(s, row(1), "dec65"), &Value::Decimal(dec.into()));
        assert_eq!(
            get(s, row(1), "tm"),
            &Value::Time(Time {
                micros: -Time::hms(838, 59, 59, 0).micros
            })
        );
        assert_eq!(
            get(s, row(1), "ts"),
            &Value::TimestampTz(ts(2024, 2, 29, 11, 45, 1, 250_000))
        );
        assert_eq!(get(s, row(1), "lat"), &Value::Text("café €".into()));
        assert_eq!(get(s, row(1), "bin"), &Value::Bytes(vec![1, 2, 0, 0]));
        assert_eq!(get(s, row(1), "g"), &Value::Other("POINT(1.5 -2)".into()));
        assert_eq!(get(s, row(2), "f"), &Value::Float32(3.402_823_5e38));
        assert_eq!(get(s, row(2), "d"), &Value::Float64(-1.797_693_134_862_315_7e308));
        assert_eq!(
            get(s, row(2), "tm"),
            &Value::Time(Time {
                micros: Time::hms(25, 0, 0, 1).micros
            })
        );
        assert_eq!(
            get(s, row(2), "dtm"),
            &Value::Timestamp(ts(2024, 2, 29, 13, 45, 1, 1))
        );
        assert_eq!(
            get(s, row(2), "ts"),
            &Value::TimestampTz(ts(1970, 1, 1, 0, 0, 1, 1))
        );
        let Value::Bytes(lb) = get(s, row(2), "lb") else {
            panic!("lb is not bytes")
        };
        assert_eq!(lb.len(), 1024 * 1024);
        assert!(row(3).0[1..].iter().all(|v| *v == Value::Null));
    })
    .await;
}

/// Inserts, updates and deletes in transactions on `a` and `b` until `stop`.
async fn writer(db: String, stop: Arc<AtomicBool>, commits: Arc<AtomicU64>) {
    use std::sync::atomic::Ordering::SeqCst;
    let mut c = sql().await;
    exec(&mut c, &format!("USE `{db}`")).await;
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut next_id = 5001u64;
    let mut next_k = 2001u64;
    while !stop.load(SeqCst) {
        exec(&mut c, "BEGIN").await;
        for _ in 0..1 + rnd(4) {
            let q = match rnd(6) {
                0 => {
                    next_id += 1;
                    format!("INSERT INTO a VALUES ({next_id}, 'new {next_id}', 0)")
                }
                1 | 2 => format!(
                    "UPDATE a SET v = CONCAT('u', n + 1), n = n + 1 WHERE id = {}",
                    1 + rnd(next_id)
                ),
                3 => format!("DELETE FROM a WHERE id = {}", 1 + rnd(next_id)),
                4 => {
                    next_k += 1;
                    format!(
                        "INSERT INTO b VALUES ({}, 'k{next_k}', 0) ON DUPLICATE KEY UPDATE v = 9",
                        rnd(50)
                    )
                }
                _ => format!(
                    "UPDATE b SET v = v + 1 WHERE k1 = {} ORDER BY k2 LIMIT 3",
                    rnd(50)
                ),
            };
            exec(&mut c, &q).await;
        }
        if rnd(5) == 0 {
            exec(
                &mut c,
                &format!("DELETE FROM b WHERE k1 = {} ORDER BY k2 LIMIT 1", rnd(50)),
            )
            .await;
        }
        exec(&mut c, "COMMIT").await;
        commits.fetch_add(1, SeqCst);
    }
}

async fn setup_load_tables(c: &mut mysql_async::Conn, db: &str) {
    exec(c, &format!("USE `{db}`")).await;
    exec(
        c,
        "CREATE TABLE a (id BIGINT PRIMARY KEY, v VARCHAR(40), n BIGINT NOT NULL)",
    )
    .await;
    exec(
        c,
        "CREATE TABLE b (k1 INT, k2 VARCHAR(20), v INT NOT NULL, PRIMARY KEY (k1, k2))",
    )
    .await;
    exec(
        c,
        "INSERT INTO a SELECT seq, CONCAT('row ', seq), 0 FROM seq_1_to_5000",
    )
    .await;
    exec(
        c,
        "INSERT INTO b SELECT seq % 50, CONCAT('k', seq), seq FROM seq_1_to_2000",
    )
    .await;
}

/// The tables' content now, in the snapshot's value shapes.
async fn final_content(db: &str) -> HashMap<TableId, Content> {
    let mut c = sql().await;
    exec(&mut c, &format!("USE `{db}`")).await;
    let mut out: HashMap<TableId, Content> = HashMap::new();
    let a: Vec<(i64, Option<String>, i64)> = c.query("SELECT id, v, n FROM a").await.unwrap();
    let t = out.entry(TableId::new(db, "a")).or_default();
    for (id, v, n) in a {
        let k = [Value::Int(id)];
        let row = vec![
            Value::Int(id),
            v.map(Value::Text).unwrap_or(Value::Null),
            Value::Int(n),
        ];
        t.insert(format!("{:?}", k.iter().collect::<Vec<_>>()), row);
    }
    let b: Vec<(i64, String, i64)> = c.query("SELECT k1, k2, v FROM b").await.unwrap();
    let t = out.entry(TableId::new(db, "b")).or_default();
    for (k1, k2, v) in b {
        let row = vec![Value::Int(k1), Value::Text(k2), Value::Int(v)];
        t.insert(format!("{:?}", row[..2].iter().collect::<Vec<_>>()), row);
    }
    out
}

fn assert_same(got: &HashMap<TableId, Content>, want: &HashMap<TableId, Content>) {
    for (table, w) in want {
        let g = got.get(table).cloned().unwrap_or_default();
        let missing: Vec<_> = w.keys().filter(|k| !g.contains_key(*k)).take(5).collect();
        let extra: Vec<_> = g.keys().filter(|k| !w.contains_key(*k)).take(5).collect();
        let differ: Vec<_> = w
            .iter()
            .filter(|(k, v)| g.get(*k).is_some_and(|x| x != *v))
            .take(5)
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty() && differ.is_empty(),
            "{table}: missing {missing:?}, extra {extra:?}, different {differ:?}"
        );
        assert_eq!(g.len(), w.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_snapshot_under_concurrent_writes_converges_exactly() {
    use std::sync::atomic::Ordering::SeqCst;
    with_db("snapload", |db| async move {
        let mut c = sql().await;
        setup_load_tables(&mut c, &db).await;
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let w = tokio::spawn(writer(db.clone(), Arc::clone(&stop), Arc::clone(&commits)));
        while commits.load(SeqCst) < 20 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut snap = snapshot(&db, 100, 4);
        let plan = snap.plan().await.unwrap_or_else(|e| panic!("plan: {e}"));
        let during = commits.load(SeqCst);
        assert!(plan.chunks.len() >= 70, "{} chunks", plan.chunks.len());
        let b_chunks = plan.chunks.iter().filter(|c| c.table.name == "b").count();
        assert!(b_chunks >= 20, "{b_chunks} chunks of b");
        let rows = read_chunks(&mut snap, &plan, 4).await;
        drop(snap);
        // Keep writing a little after the snapshot, then stop.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        stop.store(true, SeqCst);
        w.await.unwrap();
        let after = commits.load(SeqCst);
        assert!(
            after > during + 5,
            "the writer must commit while the snapshot runs ({during} then {after})"
        );
        let stream = stream_to_end(&db, &db, plan.stream_from.clone()).await;
        assert!(!stream.is_empty());
        let got = converge(&plan.schemas, &rows, &plan, &stream);
        assert_same(&got, &final_content(&db).await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_a_fresh_view_converges() {
    with_db("snapresume", |db| async move {
        let mut c = sql().await;
        setup_load_tables(&mut c, &db).await;
        let mut first = snapshot(&db, 500, 2);
        let plan = first.plan().await.unwrap();
        drop(first);
        // Changes between the consistent point and the fresh view of the resumed snapshot.
        exec(&mut c, "INSERT INTO a VALUES (9001, 'after plan', 1)").await;
        exec(
            &mut c,
            "UPDATE a SET v = NULL, n = 5 WHERE id BETWEEN 10 AND 20",
        )
        .await;
        exec(&mut c, "DELETE FROM a WHERE id BETWEEN 100 AND 150").await;
        exec(&mut c, "DELETE FROM b WHERE k1 = 7").await;
        exec(&mut c, "UPDATE b SET k2 = CONCAT(k2, '!') WHERE k1 = 8").await;
        let mut second = snapshot(&db, 500, 2);
        second
            .resume(&plan)
            .await
            .unwrap_or_else(|e| panic!("resume: {e}"));
        let rows = read_chunks(&mut second, &plan, 3).await;
        // The fresh view is newer than the consistent point: it sees the insert.
        assert!(
            rows.concat().iter().any(|r| r.0[0] == Value::Int(9001)),
            "the resumed view should be newer than stream_from"
        );
        exec(&mut c, "INSERT INTO a VALUES (9002, 'later', 2)").await;
        let stream = stream_to_end(&db, &db, plan.stream_from.clone()).await;
        let got = converge(&plan.schemas, &rows, &plan, &stream);
        assert_same(&got, &final_content(&db).await);

        // A consistent point whose binlog is gone: definite, says what to do.
        let mut gone = plan.clone();
        gone.stream_from = SourcePosition::Mysql(MysqlPosition {
            file: "mariadb-bin.000000".into(),
            ..mysql_pos(&plan.stream_from)
        });
        let err = snapshot(&db, 500, 1)
            .resume(&gone)
            .await
            .expect_err("purged");
        let msg = err.to_string();
        assert!(matches!(err, ConnectorError::Definite { .. }), "{msg}");
        assert!(
            msg.contains("mariadb-bin.000000") && msg.contains("re-snapshot"),
            "{msg}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_cover_every_key_exactly_once() {
    with_db("snapchunks", |db| async move {
        let mut c = sql().await;
        exec(&mut c, &format!("USE `{db}`")).await;
        exec(&mut c, "SET NAMES utf8mb4").await;
        exec(
            &mut c,
            "CREATE TABLE s (k VARCHAR(50) PRIMARY KEY, v INT) \
             CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
        )
        .await;
        let specials = [
            "it's",
            "it''s",
            "back\\slash",
            "\\",
            "'",
            "\"",
            "a",
            "B",
            "c",
            "Zebra",
            "ünïcödé",
            "😀",
            "𝄞 clef",
            "%_",
            "",
            " lead",
            "trail",
            "\n",
            "日本語",
            "ß",
        ];
        let mut stmt = Vec::new();
        for (i, s) in specials.iter().enumerate() {
            stmt.push(format!(
                "('{}', {i})",
                s.replace('\\', "\\\\").replace('\'', "''")
            ));
        }
        exec(&mut c, &format!("INSERT INTO s VALUES {}", stmt.join(", "))).await;
        exec(
            &mut c,
            "INSERT INTO s SELECT CONCAT('key-', seq), seq FROM seq_1_to_80",
        )
        .await;
        exec(
            &mut c,
            "CREATE TABLE l (k VARCHAR(10) CHARACTER SET latin1 PRIMARY KEY)",
        )
        .await;
        exec(
            &mut c,
            "INSERT INTO l VALUES ('café'), ('€uro'), ('Ärger'), ('a''b'), ('z'), ('A1'), \
             ('ÿ'), ('x\\\\y'), ('m'), ('n')",
        )
        .await;
        exec(
            &mut c,
            "CREATE TABLE cmp (a INT, b VARCHAR(10), ts DATETIME(6), PRIMARY KEY (a, b, ts))",
        )
        .await;
        exec(
            &mut c,
            "INSERT INTO cmp SELECT seq % 4, CHAR(65 + seq % 3), \
             TIMESTAMPADD(MICROSECOND, seq, '2024-01-01 00:00:00') FROM seq_1_to_200",
        )
        .await;
        exec(&mut c, "CREATE TABLE bin (k VARBINARY(16) PRIMARY KEY)").await;
        exec(
            &mut c,
            "INSERT IGNORE INTO bin SELECT UNHEX(SUBSTR(MD5(seq), 1, 2 + 2 * (seq % 7))) \
             FROM seq_1_to_120",
        )
        .await;
        exec(
            &mut c,
            "INSERT IGNORE INTO bin VALUES (x''), (x'00'), (x'27'), (x'5c'), (x'ff'), \
             (x'0000'), (x'ffff')",
        )
        .await;
        exec(
            &mut c,
            "CREATE TABLE misc (u BIGINT UNSIGNED, d DECIMAL(30,10), t TIME(6), dt DATE, \
             PRIMARY KEY (u, d, t, dt))",
        )
        .await;
        exec(
            &mut c,
            "INSERT INTO misc SELECT 18446744073709551615 - (seq % 3), (seq % 5) - 2.5 + \
             seq / 1e10, SEC_TO_TIME((seq % 4) * 100000 - 150000.5), \
             IF(seq % 2, '0000-00-00', DATE_ADD('2024-01-01', INTERVAL seq DAY)) \
             FROM seq_1_to_150",
        )
        .await;
        exec(&mut c, "CREATE TABLE nokey (v INT)").await;
        exec(&mut c, "INSERT INTO nokey SELECT seq FROM seq_1_to_10").await;
        exec(&mut c, "CREATE TABLE fkey (f DOUBLE PRIMARY KEY)").await;
        exec(&mut c, "INSERT INTO fkey SELECT seq / 3 FROM seq_1_to_20").await;

        const N: u64 = 7;
        let mut snap = snapshot(&db, N, 3);
        let plan = snap.plan().await.unwrap_or_else(|e| panic!("plan: {e}"));
        let rows = read_chunks(&mut snap, &plan, 3).await;
        for (i, ch) in plan.chunks.iter().enumerate() {
            assert_eq!(ch.index as usize, i);
        }
        let schemas: HashMap<&str, &TableSchema> = plan
            .schemas
            .iter()
            .map(|s| (s.table.name.as_str(), s))
            .collect();
        for (name, whole) in [
            ("s", false),
            ("l", false),
            ("cmp", false),
            ("bin", false),
            ("misc", false),
            ("nokey", true),
            ("fkey", true),
        ] {
            let idx: Vec<usize> = plan
                .chunks
                .iter()
                .enumerate()
                .filter(|(_, ch)| ch.table.name == name)
                .map(|(i, _)| i)
                .collect();
            let count: i64 = c
                .query_first(format!("SELECT COUNT(*) FROM `{name}`"))
                .await
                .unwrap()
                .unwrap();
            let chunks: Vec<_> = idx.iter().map(|&i| &plan.chunks[i]).collect();
            if whole {
                assert_eq!(chunks.len(), 1, "{name}: {chunks:?}");
                assert!(chunks[0].after.is_none() && chunks[0].upto.is_none());
                assert_eq!(rows[idx[0]].len() as i64, count, "{name}");
                continue;
            }
            // Contiguous bounds from the start to the end of the key space.
            assert!(chunks[0].after.is_none(), "{name}");
            assert!(chunks.last().unwrap().upto.is_none(), "{name}");
            for w in chunks.windows(2) {
                assert_eq!(w[1].after, w[0].upto, "{name}");
            }
            assert_eq!(chunks.len() as i64, count / N as i64 + 1, "{name}");
            // Exactly N rows in every bounded chunk, every row once.
            let schema = schemas[name];
            let mut seen = std::collections::HashSet::new();
            for (k, &i) in idx.iter().enumerate() {
                if k + 1 < idx.len() {
                    assert_eq!(rows[i].len() as u64, N, "{name} chunk {:?}", plan.chunks[i]);
                }
                for r in &rows[i] {
                    assert!(seen.insert(key_of(schema, r)), "{name}: {r:?} twice");
                }
            }
            assert_eq!(seen.len() as i64, count, "{name}");
        }
        // Bounds are the readable key text (strings as themselves, binary as hex).
        let s_bounds: Vec<String> = plan
            .chunks
            .iter()
            .filter(|ch| ch.table.name == "s")
            .filter_map(|ch| ch.upto.clone())
            .flatten()
            .collect();
        assert!(!s_bounds.is_empty());
        let bin_bounds: Vec<String> = plan
            .chunks
            .iter()
            .filter(|ch| ch.table.name == "bin")
            .filter_map(|ch| ch.upto.clone())
            .flatten()
            .collect();
        assert!(
            bin_bounds
                .iter()
                .all(|b| b.bytes().all(|x| x.is_ascii_hexdigit())),
            "{bin_bounds:?}"
        );
        let all_s: Vec<Value> = plan
            .chunks
            .iter()
            .zip(&rows)
            .filter(|(ch, _)| ch.table.name == "s")
            .flat_map(|(_, r)| r.iter().map(|r| r.0[0].clone()))
            .collect();
        for s in specials {
            assert!(all_s.contains(&Value::Text(s.into())), "{s:?} missing");
        }
        assert_eq!(schemas["cmp"].primary_key, vec![0, 1, 2]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_reload_table_locks_keep_it_consistent() {
    use std::sync::atomic::Ordering::SeqCst;
    with_db("snapnoreload", |db| async move {
        let mut c = sql().await;
        setup_load_tables(&mut c, &db).await;
        let user = format!("weir_nr_{}", std::process::id());
        exec(&mut c, &format!("DROP USER IF EXISTS '{user}'@'%'")).await;
        exec(
            &mut c,
            &format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'nr-secret'"),
        )
        .await;
        exec(
            &mut c,
            &format!("GRANT SELECT, LOCK TABLES ON `{db}`.* TO '{user}'@'%'"),
        )
        .await;
        exec(
            &mut c,
            &format!("GRANT REPLICATION CLIENT ON *.* TO '{user}'@'%'"),
        )
        .await;
        let base = super::url();
        let host = base
            .split_once('@')
            .map(|(_, h)| h)
            .unwrap_or("127.0.0.1:3306/");
        let url = format!("mysql://{user}:nr-secret@{host}");
        let db2 = db.clone();
        let body = tokio::spawn(async move {
            let db = db2;
            let stop = Arc::new(AtomicBool::new(false));
            let commits = Arc::new(AtomicU64::new(0));
            let w = tokio::spawn(writer(db.clone(), Arc::clone(&stop), Arc::clone(&commits)));
            while commits.load(SeqCst) < 20 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            let mut cfg = config(&db);
            cfg.url = url;
            let mut snap = MysqlSnapshot::new(
                cfg,
                &db,
                SnapshotSettings {
                    chunk_rows: 250,
                    workers: 3,
                },
            );
            let plan = snap.plan().await.unwrap_or_else(|e| panic!("plan: {e}"));
            let rows = read_chunks(&mut snap, &plan, 3).await;
            drop(snap);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            stop.store(true, SeqCst);
            w.await.unwrap();
            let stream = stream_to_end(&db, &db, plan.stream_from.clone()).await;
            let got = converge(&plan.schemas, &rows, &plan, &stream);
            assert_same(&got, &final_content(&db).await);
        })
        .await;
        exec(&mut c, &format!("DROP USER IF EXISTS '{user}'@'%'")).await;
        if let Err(e) = body {
            std::panic::resume_unwind(e.into_panic());
        }
    })
    .await;
}
