//! Integration tests of weir-mysql against a real server (scripts/services.sh: MariaDB 10.11
//! with a ROW binlog, FULL row image and FULL row metadata).
//!
//! The server comes from WEIR_MYSQL_URL (default mysql://root@127.0.0.1:3306/); an
//! unreachable server fails the tests (never skips). Every test works in its own database
//! (pid + counter) and drops it afterwards, also when the body panics.

mod sink;
mod snapshot;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use weir_api::{
    ChangeEvent, CommitInfo, ConnectorError, Date, GtidSet, MysqlPosition, Op, Row, Source,
    SourceInfo, SourceItem, SourcePosition, TableId, TableSchema, Time, Timestamp, Value,
    render_envelope,
};
use weir_mysql::check::preflight;
use weir_mysql::{MysqlSource, MysqlSourceConfig};

const DEADLINE: Duration = Duration::from_secs(120);

fn url() -> String {
    std::env::var("WEIR_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/".into())
}

async fn sql() -> mysql_async::Conn {
    let opts = mysql_async::Opts::from_url(&url()).expect("WEIR_MYSQL_URL");
    mysql_async::Conn::new(opts).await.unwrap_or_else(|e| {
        panic!(
            "MySQL/MariaDB is not reachable at {} ({e}); start it with scripts/services.sh",
            weir_mysql::redact_url(&url())
        )
    })
}

async fn exec(conn: &mut mysql_async::Conn, q: &str) {
    conn.query_drop(q)
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"));
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn db_name(tag: &str) -> String {
    format!(
        "weir_{tag}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// Creates database `db`, runs `body`, drops the database whatever happened.
async fn with_db<F, Fut>(tag: &str, body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = db_name(tag);
    let mut c = sql().await;
    exec(&mut c, &format!("CREATE DATABASE `{db}`")).await;
    let outcome = tokio::spawn(body(db.clone())).await;
    exec(&mut c, &format!("DROP DATABASE IF EXISTS `{db}`")).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn config(db: &str) -> MysqlSourceConfig {
    MysqlSourceConfig {
        url: url(),
        tables: vec![format!("{db}.*")],
        exclude: vec![],
        server_id: None,
    }
}

/// One source transaction as received, with the schema each change was announced with.
#[derive(Debug)]
struct Txn {
    changes: Vec<(ChangeEvent, TableSchema)>,
    commit: CommitInfo,
    /// `Changes` items it arrived in (0: one `Transaction`).
    chunks: usize,
}

#[derive(Default)]
struct Collector {
    schemas: HashMap<TableId, TableSchema>,
    current: Vec<(ChangeEvent, TableSchema)>,
    chunks: usize,
    heartbeats: Vec<MysqlPosition>,
}

fn mysql_pos(p: &SourcePosition) -> MysqlPosition {
    match p {
        SourcePosition::Mysql(m) => m.clone(),
        other => panic!("not a mysql position: {other}"),
    }
}

impl Collector {
    fn attach(&self, changes: Vec<ChangeEvent>) -> Vec<(ChangeEvent, TableSchema)> {
        changes
            .into_iter()
            .map(|c| {
                let s = self
                    .schemas
                    .get(&c.table)
                    .unwrap_or_else(|| panic!("change of {} before its schema", c.table))
                    .clone();
                (c, s)
            })
            .collect()
    }

    /// The next `n` transactions with changes (heartbeats are recorded, not returned).
    async fn txns(&mut self, src: &mut MysqlSource, n: usize) -> Vec<Txn> {
        let start = Instant::now();
        let mut out = Vec::new();
        while out.len() < n {
            let left = DEADLINE.saturating_sub(start.elapsed());
            let item = tokio::time::timeout(left, src.next())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} transactions in time", out.len()))
                .unwrap_or_else(|e| panic!("source error: {e}"));
            if let Some(t) = self.item(item) {
                out.push(t);
            }
        }
        out
    }

    fn item(&mut self, item: SourceItem) -> Option<Txn> {
        match item {
            SourceItem::Schema(s) => {
                self.schemas.insert(s.table.clone(), s);
                None
            }
            SourceItem::Changes(c) => {
                let c = self.attach(c);
                self.current.extend(c);
                self.chunks += 1;
                None
            }
            SourceItem::Commit(commit) => Some(Txn {
                changes: std::mem::take(&mut self.current),
                commit,
                chunks: std::mem::take(&mut self.chunks),
            }),
            SourceItem::Transaction(t) => {
                assert!(self.current.is_empty(), "Transaction after open Changes");
                Some(Txn {
                    changes: self.attach(t.changes),
                    commit: t.commit,
                    chunks: 0,
                })
            }
            SourceItem::Heartbeat(p) => {
                self.heartbeats.push(mysql_pos(&p));
                None
            }
        }
    }

    /// Asserts nothing but heartbeats arrive for `wait`.
    async fn nothing_more(&mut self, src: &mut MysqlSource, wait: Duration) {
        let end = Instant::now() + wait;
        while let Ok(item) = tokio::time::timeout_at(end.into(), src.next()).await {
            let item = item.unwrap_or_else(|e| panic!("source error: {e}"));
            if let Some(t) = self.item(item) {
                panic!("unexpected transaction: {:?}", t.changes);
            }
        }
    }
}

fn get<'a>(schema: &TableSchema, row: &'a Row, name: &str) -> &'a Value {
    let i = schema
        .columns
        .iter()
        .position(|c| c.name == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", schema.columns));
    &row.0[i]
}

fn names(schema: &TableSchema) -> Vec<&str> {
    schema.columns.iter().map(|c| c.name.as_str()).collect()
}

fn ts(y: i32, mo: u8, d: u8, h: i64, mi: i64, s: i64, us: i64) -> Timestamp {
    Timestamp {
        date: Date::new(y, mo, d),
        micros: Time::hms(h, mi, s, us).micros as u64,
    }
}

async fn started(db: &str, pipeline: &str, resume: Option<SourcePosition>) -> MysqlSource {
    let mut cfg = config(db);
    cfg.server_id = Some(weir_mysql::default_server_id(pipeline));
    let mut src = MysqlSource::new(cfg, pipeline);
    src.start(resume)
        .await
        .unwrap_or_else(|e| panic!("start: {e}"));
    src
}

/// A table with a column of every MySQL/MariaDB type weir maps (the type tests' table).
pub(crate) const EVERY_TYPE_TABLE: &str = "CREATE TABLE t (
    id INT PRIMARY KEY,
    ti TINYINT, y YEAR, tiu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT,
    i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
    dec65 DECIMAL(65,30), du DECIMAL(10,2) UNSIGNED,
    f FLOAT, d DOUBLE,
    b1 BIT(1), b10 BIT(10), b64 BIT(64),
    c CHAR(10) CHARACTER SET utf8mb4, vc VARCHAR(100) CHARACTER SET utf8mb4,
    txt TEXT CHARACTER SET utf8mb4, lat VARCHAR(20) CHARACTER SET latin1,
    bin BINARY(4), vb VARBINARY(10), bl BLOB, lb LONGBLOB,
    e ENUM('small','medium','large'), s SET('a','b','c'),
    dt DATE, tm TIME(6), dtm DATETIME(6), ts TIMESTAMP(6) NULL DEFAULT NULL,
    j JSON, g GEOMETRY, n INT NULL
) DEFAULT CHARSET=utf8mb4";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_is_lossless() {
    with_db("types", |db| async move {
        let mut c = sql().await;
        exec(&mut c, &format!("USE `{db}`")).await;
        exec(
            &mut c,
            EVERY_TYPE_TABLE,
        )
        .await;
        let pipeline = db.clone();
        let mut src = started(&db, &pipeline, None).await;
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
            "UPDATE t SET tm = '25:00:00.000001', dtm = '2024-02-29 13:45:01.000001', \
             dt = '2024-02-29', n = 7, ti = 127, biu = 0 WHERE id = 1",
        )
        .await;
        exec(&mut c, "DELETE FROM t WHERE id = 1").await;
        // A 20 MiB LONGBLOB: the row event spans several 16 MiB packets.
        exec(
            &mut c,
            "INSERT INTO t (id, lb) VALUES (2, REPEAT(x'01020304', 5 * 1024 * 1024))",
        )
        .await;
        let mut col = Collector::default();
        let txns = col.txns(&mut src, 4).await;
        let ops: Vec<Op> = txns.iter().map(|t| t.changes[0].0.op).collect();
        assert_eq!(ops, vec![Op::Insert, Op::Update, Op::Delete, Op::Insert]);
        for t in &txns {
            assert_eq!(t.changes.len(), 1);
            assert_eq!(t.commit.events, 1);
        }

        let (ins, schema) = &txns[0].changes[0];
        assert_eq!(schema.primary_key, vec![0]);
        let after = ins.after.as_ref().expect("insert has after");
        let expect: Vec<(&str, Value)> = vec![
            ("id", Value::Int(1)),
            ("ti", Value::Int(-128)),
            ("y", Value::Int(2155)),
            ("tiu", Value::UInt(255)),
            ("si", Value::Int(-32768)),
            ("mi", Value::Int(-8388608)),
            ("i", Value::Int(-2147483648)),
            ("iu", Value::UInt(4294967295)),
            ("bi", Value::Int(i64::MIN)),
            ("biu", Value::UInt(18446744073709551615)),
            ("dec65", Value::Decimal(dec.into())),
            ("du", Value::Decimal("12345678.90".into())),
            ("f", Value::Float32(1.5)),
            ("d", Value::Float64(0.1)),
            ("b1", Value::Bits("1".into())),
            ("b10", Value::Bits("1000000101".into())),
            ("b64", Value::Bits("1".repeat(64))),
            ("c", Value::Text("héllo".into())),
            ("vc", Value::Text("😀 emoji 𝄞".into())),
            ("txt", Value::Text("text ✓".into())),
            ("lat", Value::Text("café €".into())),
            ("bin", Value::Bytes(vec![1, 2, 0, 0])),
            ("vb", Value::Bytes(vec![0, 0xff])),
            ("bl", Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef])),
            ("lb", Value::Null),
            ("e", Value::Text("large".into())),
            ("s", Value::Text("a,c".into())),
            ("dt", Value::Date(Date::new(0, 0, 0))),
            (
                "tm",
                Value::Time(Time {
                    micros: -Time::hms(838, 59, 59, 0).micros,
                }),
            ),
            ("dtm", Value::Timestamp(ts(0, 0, 0, 0, 0, 0, 0))),
            // Written at +02:00: 11:45 UTC.
            ("ts", Value::TimestampTz(ts(2024, 2, 29, 11, 45, 1, 250_000))),
            (
                "j",
                Value::Json("{\"a\": [1, 2.5, \"x\"], \"b\": null}".into()),
            ),
            ("g", Value::Other("POINT(1.5 -2)".into())),
            ("n", Value::Null),
        ];
        assert_eq!(after.0.len(), expect.len(), "{:?}", names(schema));
        for (name, v) in &expect {
            assert_eq!(get(schema, after, name), v, "column {name}");
        }
        let ty = |n: &str| {
            schema
                .columns
                .iter()
                .find(|c| c.name == n)
                .map(|c| c.ty.clone())
                .unwrap()
        };
        assert_eq!(ty("j"), weir_api::ColumnType::Json);
        assert_eq!(
            ty("biu"),
            weir_api::ColumnType::Int {
                bits: 64,
                unsigned: true
            }
        );

        // The rendered envelope.
        let info = SourceInfo {
            connector: "mysql".into(),
            name: "types".into(),
            db: String::new(),
        };
        let mut out = Vec::new();
        render_envelope(&mut out, &info, schema, ins, 0).unwrap();
        let json = String::from_utf8(out).unwrap();
        for part in [
            "\"op\":\"c\"",
            "\"before\":null",
            "\"biu\":18446744073709551615",
            &format!("\"dec65\":\"{dec}\""),
            "\"tm\":\"-838:59:59.000000\"",
            "\"dt\":\"0000-00-00\"",
            "\"dtm\":\"0000-00-00T00:00:00.000000\"",
            "\"ts\":\"2024-02-29T11:45:01.250000Z\"",
            "\"j\":{\"a\": [1, 2.5, \"x\"], \"b\": null}",
            "\"b10\":\"1000000101\"",
            "\"lat\":\"café €\"",
            "\"vc\":\"😀 emoji 𝄞\"",
            "\"s\":\"a,c\"",
            "\"bin\":\"AQIAAA==\"",
            "\"g\":\"POINT(1.5 -2)\"",
            "\"connector\":\"mysql\"",
            "\"file\":\"",
            "\"server_id\":1",
        ] {
            assert!(json.contains(part), "{part} not in {json}");
        }
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(parsed["after"]["iu"], serde_json::json!(4294967295u64));

        // Update: before = the inserted row, after = the new values.
        let (upd, schema) = &txns[1].changes[0];
        let before = upd.before.as_ref().unwrap();
        let after = upd.after.as_ref().unwrap();
        assert_eq!(get(schema, before, "ti"), &Value::Int(-128));
        assert_eq!(get(schema, after, "ti"), &Value::Int(127));
        assert_eq!(get(schema, after, "biu"), &Value::UInt(0));
        assert_eq!(
            get(schema, after, "tm"),
            &Value::Time(Time {
                micros: Time::hms(25, 0, 0, 1).micros
            })
        );
        assert_eq!(
            get(schema, after, "dtm"),
            &Value::Timestamp(ts(2024, 2, 29, 13, 45, 1, 1))
        );
        assert_eq!(get(schema, after, "dt"), &Value::Date(Date::new(2024, 2, 29)));
        assert_eq!(get(schema, after, "n"), &Value::Int(7));
        assert_eq!(get(schema, after, "dec65"), &Value::Decimal(dec.into()));

        // Delete: the full before image, no after.
        let (del, schema) = &txns[2].changes[0];
        assert!(del.after.is_none());
        let before = del.before.as_ref().unwrap();
        assert_eq!(get(schema, before, "tm").to_owned(), Value::Time(Time {
            micros: Time::hms(25, 0, 0, 1).micros
        }));
        assert_eq!(get(schema, before, "vc"), &Value::Text("😀 emoji 𝄞".into()));

        // The 20 MiB blob, byte for byte.
        let (big, schema) = &txns[3].changes[0];
        let Value::Bytes(b) = get(schema, big.after.as_ref().unwrap(), "lb") else {
            panic!("lb is not bytes")
        };
        assert_eq!(b.len(), 20 * 1024 * 1024);
        assert!(b.chunks(4).all(|c| c == [1, 2, 3, 4]));

        // Commit positions strictly increase.
        for w in txns.windows(2) {
            let (a, b) = (mysql_pos(&w[0].commit.position), mysql_pos(&w[1].commit.position));
            assert!(a < b, "{a:?} then {b:?}");
            assert!(matches!(b.gtid, Some(GtidSet::MariaDb(_))), "{b:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_stay_whole_and_large_ones_come_in_chunks() {
    with_db("txns", |db| async move {
        let mut c = sql().await;
        exec(&mut c, &format!("USE `{db}`")).await;
        exec(
            &mut c,
            "CREATE TABLE inc (id INT PRIMARY KEY, v VARCHAR(20))",
        )
        .await;
        exec(&mut c, "CREATE TABLE skip_me (id INT PRIMARY KEY)").await;
        let mut cfg = config(&db);
        cfg.exclude = vec![format!("{db}.skip_*")];
        let mut src = MysqlSource::new(cfg, &db);
        src.start(None).await.unwrap();
        // Mixed: one selected, one excluded change.
        exec(&mut c, "BEGIN").await;
        exec(&mut c, "INSERT INTO inc VALUES (1, 'a')").await;
        exec(&mut c, "INSERT INTO skip_me VALUES (1)").await;
        exec(&mut c, "COMMIT").await;
        // Only excluded changes: a heartbeat, no transaction.
        exec(&mut c, "INSERT INTO skip_me VALUES (2)").await;
        // 50,000 rows in one statement.
        exec(
            &mut c,
            "INSERT INTO inc SELECT seq, CONCAT('r', seq) FROM seq_2_to_50001",
        )
        .await;
        exec(&mut c, "UPDATE inc SET v = 'last' WHERE id = 1").await;
        let mut col = Collector::default();
        let txns = col.txns(&mut src, 3).await;

        assert_eq!(txns[0].changes.len(), 1);
        assert_eq!(txns[0].changes[0].0.table.name, "inc");
        assert_eq!(txns[0].commit.events, 1);
        let p0 = mysql_pos(&txns[0].commit.position);
        let p1 = mysql_pos(&txns[1].commit.position);
        assert!(
            col.heartbeats.iter().any(|h| *h > p0 && *h < p1),
            "no heartbeat for the excluded-only transaction between {p0:?} and {p1:?}: {:?}",
            col.heartbeats
        );

        let big = &txns[1];
        assert_eq!(big.commit.events, 50_000);
        assert_eq!(big.changes.len(), 50_000);
        assert!(big.chunks >= 49, "{} chunks", big.chunks);
        for (k, (ev, schema)) in big.changes.iter().enumerate() {
            let row = ev.after.as_ref().unwrap();
            assert_eq!(get(schema, row, "id"), &Value::Int(k as i64 + 2));
        }
        let last = &txns[2].changes[0];
        assert_eq!(
            get(&last.1, last.0.after.as_ref().unwrap(), "v"),
            &Value::Text("last".into())
        );
        assert!(p1 < mysql_pos(&txns[2].commit.position));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_exactly_by_gtid_and_by_file_position() {
    with_db("resume", |db| async move {
        let mut c = sql().await;
        exec(&mut c, &format!("USE `{db}`")).await;
        exec(&mut c, "CREATE TABLE t (id INT PRIMARY KEY)").await;
        let mut src = started(&db, &format!("{db}_a"), None).await;
        for id in 1..=5 {
            exec(&mut c, &format!("INSERT INTO t VALUES ({id})")).await;
        }
        let mut col = Collector::default();
        let txns = col.txns(&mut src, 5).await;
        let ids = |txns: &[Txn]| -> Vec<Value> {
            txns.iter()
                .map(|t| t.changes[0].0.after.as_ref().unwrap().0[0].clone())
                .collect()
        };
        assert_eq!(ids(&txns), (1..=5).map(Value::Int).collect::<Vec<_>>());
        drop(src);
        let pos = txns[1].commit.position.clone();
        let mp = mysql_pos(&pos);
        assert!(mp.gtid.is_some(), "{mp:?}");

        // By GTID.
        let mut src = started(&db, &format!("{db}_b"), Some(pos.clone())).await;
        let mut col = Collector::default();
        let again = col.txns(&mut src, 3).await;
        assert_eq!(ids(&again), (3..=5).map(Value::Int).collect::<Vec<_>>());
        for (a, b) in again.iter().zip(&txns[2..]) {
            assert_eq!(a.commit.position, b.commit.position);
        }
        col.nothing_more(&mut src, Duration::from_secs(2)).await;
        drop(src);

        // By file and position only.
        let file_pos = SourcePosition::Mysql(MysqlPosition { gtid: None, ..mp });
        let mut src = started(&db, &format!("{db}_c"), Some(file_pos)).await;
        let mut col = Collector::default();
        let again = col.txns(&mut src, 3).await;
        assert_eq!(ids(&again), (3..=5).map(Value::Int).collect::<Vec<_>>());
        for (a, b) in again.iter().zip(&txns[2..]) {
            let (pa, pb) = (mysql_pos(&a.commit.position), mysql_pos(&b.commit.position));
            assert_eq!((&pa.file, pa.pos), (&pb.file, pb.pos));
        }
        col.nothing_more(&mut src, Duration::from_secs(2)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_table_mid_stream_decodes_both_sides() {
    with_db("alter", |db| async move {
        let mut c = sql().await;
        exec(&mut c, &format!("USE `{db}`")).await;
        exec(&mut c, "CREATE TABLE t (id INT PRIMARY KEY, a INT)").await;
        let mut probe = MysqlSource::new(config(&db), &format!("{db}_probe"));
        let from = probe.end_position().await.unwrap();
        drop(probe);
        exec(&mut c, "INSERT INTO t VALUES (1, 10)").await;
        exec(&mut c, "ALTER TABLE t ADD COLUMN b VARCHAR(10) DEFAULT 'x'").await;
        exec(&mut c, "INSERT INTO t VALUES (2, 20, 'y')").await;
        exec(&mut c, "ALTER TABLE t DROP COLUMN a").await;
        exec(&mut c, "INSERT INTO t VALUES (3, 'z')").await;
        exec(&mut c, "UPDATE t SET b = 'w' WHERE id = 1").await;
        exec(&mut c, "TRUNCATE TABLE t").await;
        // Read it all afterwards: information_schema already has the final shape.
        let mut src = started(&db, &db, Some(from)).await;
        let mut col = Collector::default();
        let txns = col.txns(&mut src, 5).await;
        let row = |t: &Txn| {
            let (ev, s) = &t.changes[0];
            (names(s).join(","), ev.after.clone().map(|r| r.0))
        };
        assert_eq!(
            row(&txns[0]),
            ("id,a".into(), Some(vec![Value::Int(1), Value::Int(10)]))
        );
        assert_eq!(
            row(&txns[1]),
            (
                "id,a,b".into(),
                Some(vec![Value::Int(2), Value::Int(20), Value::Text("y".into())])
            )
        );
        assert_eq!(
            row(&txns[2]),
            (
                "id,b".into(),
                Some(vec![Value::Int(3), Value::Text("z".into())])
            )
        );
        let (upd, s) = &txns[3].changes[0];
        assert_eq!(names(s), vec!["id", "b"]);
        assert_eq!(
            upd.before.as_ref().unwrap().0,
            vec![Value::Int(1), Value::Text("x".into())]
        );
        assert_eq!(
            upd.after.as_ref().unwrap().0,
            vec![Value::Int(1), Value::Text("w".into())]
        );
        let (tr, s) = &txns[4].changes[0];
        assert_eq!(tr.op, Op::Truncate);
        assert_eq!(*tr.table, TableId::new(db.clone(), "t"));
        assert_eq!(names(s), vec!["id", "b"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_binlog_or_unknown_gtid_is_definite() {
    with_db("purge", |db| async move {
        // A binlog file the server does not have (purged long ago).
        let mut src = MysqlSource::new(config(&db), &db);
        let gone = SourcePosition::Mysql(MysqlPosition {
            file: "mariadb-bin.000000".into(),
            pos: 4,
            gtid: None,
            server_id: Some(1),
        });
        let err = src.start(Some(gone)).await.expect_err("must fail");
        let msg = err.to_string();
        assert!(matches!(err, ConnectorError::Definite { .. }), "{msg}");
        assert!(msg.contains("mariadb-bin.000000"), "{msg}");
        assert!(msg.contains("re-snapshot"), "{msg}");

        // A GTID the server never had.
        let mut src = MysqlSource::new(config(&db), &format!("{db}_g"));
        let gap = SourcePosition::Mysql(MysqlPosition {
            file: "mariadb-bin.000001".into(),
            pos: 4,
            gtid: Some(GtidSet::MariaDb(
                weir_mysql::gtid::parse_mariadb("0-4242-1").unwrap(),
            )),
            server_id: Some(4242),
        });
        let err = match src.start(Some(gap)).await {
            Err(e) => e,
            Ok(()) => src.next().await.expect_err("must fail"),
        };
        let msg = err.to_string();
        assert!(matches!(err, ConnectorError::Definite { .. }), "{msg}");
        assert!(msg.contains("0-4242-1"), "{msg}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_connection_is_transient_and_restart_resumes() {
    with_db("conn", |db| async move {
        let mut c = sql().await;
        exec(&mut c, &format!("USE `{db}`")).await;
        exec(&mut c, "CREATE TABLE t (id INT PRIMARY KEY)").await;
        let mut src = started(&db, &db, None).await;
        exec(&mut c, "INSERT INTO t VALUES (1)").await;
        let mut col = Collector::default();
        let first = col.txns(&mut src, 1).await;
        // A second replica with the same server_id makes the server drop the first one.
        let mut intruder = started(&db, &db, None).await;
        let err = loop {
            match tokio::time::timeout(DEADLINE, src.next()).await {
                Ok(Ok(item)) => {
                    assert!(col.item(item).is_none(), "no transaction expected");
                }
                Ok(Err(e)) => break e,
                Err(_) => panic!("the replaced connection never failed"),
            }
        };
        assert!(err.is_transient(), "{err}");
        drop(intruder.end_position().await);
        drop(intruder);
        exec(&mut c, "INSERT INTO t VALUES (2)").await;
        src.start(Some(first[0].commit.position.clone()))
            .await
            .unwrap();
        let mut col = Collector::default();
        let next = col.txns(&mut src, 1).await;
        assert_eq!(
            next[0].changes[0].0.after.as_ref().unwrap().0,
            vec![Value::Int(2)]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_on_the_real_server() {
    with_db("check", |db| async move {
        let mut c = sql().await;
        exec(&mut c, &format!("USE `{db}`")).await;
        exec(&mut c, "CREATE TABLE keyed (id INT PRIMARY KEY)").await;
        exec(&mut c, "CREATE TABLE keyless (v INT)").await;
        let findings = preflight(&config(&db), &db).await;
        assert!(
            findings.iter().all(|f| !f.fatal),
            "unexpected fatal findings: {findings:?}"
        );
        let keyless: Vec<_> = findings
            .iter()
            .filter(|f| f.message.contains(&format!("{db}.keyless")))
            .collect();
        assert_eq!(keyless.len(), 1, "{findings:?}");
        assert!(keyless[0].message.contains("ADD PRIMARY KEY"));
        assert!(
            !findings
                .iter()
                .any(|f| f.message.contains(&format!("{db}.keyed")))
        );

        let mut none = config(&db);
        none.tables = vec![format!("{db}_nothing_here.*")];
        let findings = preflight(&none, &db).await;
        assert!(
            findings
                .iter()
                .any(|f| f.fatal && f.message.contains("no table matches")),
            "{findings:?}"
        );

        let mut own = config(&db);
        own.server_id = Some(1);
        let findings = preflight(&own, &db).await;
        assert!(
            findings
                .iter()
                .any(|f| f.fatal && f.message.contains("server_id 1")),
            "{findings:?}"
        );

        let bad = MysqlSourceConfig {
            url: "mysql://root:hunter2@127.0.0.1:1/".into(),
            ..config(&db)
        };
        let findings = preflight(&bad, &db).await;
        assert!(findings.iter().any(|f| f.fatal), "{findings:?}");
        assert!(!findings.iter().any(|f| f.message.contains("hunter2")));
    })
    .await;
}
