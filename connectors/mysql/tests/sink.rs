//! MySQL sink tests against the real server: hand-built log entries are applied and the
//! target rows compared in their exact text form (`CAST(... AS CHAR)`, `HEX`, `BIN`). Each
//! test writes into its own target database and pipeline name (pid + counter) and drops them
//! afterwards, also when the body panics.

use super::{exec, sql, url};
use mysql_async::prelude::Queryable;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use weir_api::{
    ChangeEvent, Column, ColumnType, CommitInfo, ConnectorError, Date, Entry, LogEntry, Lsn, Op,
    PgPosition, Row, Sink, SinkContext, SourceInfo, SourcePosition, TableId, TableSchema, Time,
    Timestamp, Value,
};
use weir_mysql::sink::{MysqlSink, MysqlSinkConfig, quote_ident, values_nulled};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A target database and pipeline name of one test.
#[derive(Clone)]
struct Fx {
    db: String,
    pipeline: String,
    connector: &'static str,
}

impl Fx {
    fn cfg(&self) -> MysqlSinkConfig {
        let mut cfg = MysqlSinkConfig::new(url());
        cfg.schema = Some(self.db.clone());
        cfg
    }

    fn ctx(&self) -> SinkContext {
        SinkContext {
            pipeline: self.pipeline.clone(),
            sink: "replica".into(),
            source: SourceInfo {
                connector: self.connector.into(),
                name: self.pipeline.clone(),
                db: "shop".into(),
            },
        }
    }

    async fn sink(&self) -> MysqlSink {
        MysqlSink::connect(self.cfg(), self.ctx())
            .await
            .unwrap_or_else(|e| panic!("connect the sink: {e}"))
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{}", quote_ident(&self.db), quote_ident(name))
    }
}

/// Runs `body` with a fresh fixture, then drops its database(s) and position rows whatever
/// happened, then re-raises a panic.
async fn with_fx<F, Fut>(tag: &str, connector: &'static str, body: F)
where
    F: FnOnce(Fx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let fx = Fx {
        db: format!("weir_sink_{tag}_{}_{n}", std::process::id()),
        pipeline: format!("p_{tag}_{}_{n}", std::process::id()),
        connector,
    };
    let outcome = tokio::spawn(body(fx.clone())).await;
    let mut c = sql().await;
    let dbs: Vec<String> = c
        .query(format!(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE '{}%'",
            fx.db.replace('_', "\\_")
        ))
        .await
        .unwrap_or_default();
    for db in dbs {
        exec(
            &mut c,
            &format!("DROP DATABASE IF EXISTS {}", quote_ident(&db)),
        )
        .await;
    }
    let _ = c
        .query_drop(format!(
            "DELETE FROM _weir.positions WHERE pipeline = '{}'",
            fx.pipeline
        ))
        .await;
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

/// Every row of `query` as text.
async fn rows(c: &mut mysql_async::Conn, query: &str) -> Vec<Vec<Option<String>>> {
    let result: Vec<mysql_async::Row> = c
        .query(query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    result
        .into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.as_ref(i) {
                    Some(mysql_async::Value::Bytes(b)) => {
                        Some(String::from_utf8_lossy(b).into_owned())
                    }
                    Some(mysql_async::Value::NULL) | None => None,
                    Some(v) => Some(v.as_sql(true)),
                })
                .collect()
        })
        .collect()
}

fn r(cells: &[Option<&str>]) -> Vec<Option<String>> {
    cells.iter().map(|c| c.map(String::from)).collect()
}

fn col(name: &str, ty: ColumnType, source_type: &str) -> Column {
    Column {
        name: name.into(),
        ty,
        source_type: source_type.into(),
        nullable: true,
    }
}

fn int() -> ColumnType {
    ColumnType::Int {
        bits: 32,
        unsigned: false,
    }
}

fn text() -> ColumnType {
    ColumnType::Text { max_len: None }
}

fn schema(name: &str, version: u32, columns: Vec<Column>, key: &[usize]) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        table: TableId::new("shop", name),
        version,
        columns,
        primary_key: key.to_vec(),
    })
}

/// `(id int key, name text, note text)`.
fn people(name: &str) -> Arc<TableSchema> {
    schema(
        name,
        1,
        vec![
            col("id", int(), "int"),
            col("name", text(), "text"),
            col("note", text(), "text"),
        ],
        &[0],
    )
}

fn row3(id: i64, name: &str, note: Value) -> Row {
    Row(vec![Value::Int(id), Value::Text(name.into()), note])
}

fn t(s: &str) -> Value {
    Value::Text(s.into())
}

fn pos(n: u64) -> SourcePosition {
    SourcePosition::Postgres(PgPosition {
        commit_lsn: Lsn(n),
        lsn: Lsn(n),
    })
}

/// Builds log entries with dense sequence numbers.
struct Log {
    next: u64,
}

impl Log {
    fn new() -> Self {
        Log { next: 1 }
    }

    fn entry(&mut self, entry: Entry) -> LogEntry {
        let seq = self.next;
        self.next += 1;
        LogEntry {
            seq,
            staged_ms: 0,
            entry,
        }
    }

    fn schema(&mut self, s: &Arc<TableSchema>) -> LogEntry {
        self.entry(Entry::Schema(s.clone()))
    }

    fn change(
        &mut self,
        s: &Arc<TableSchema>,
        op: Op,
        before: Option<Row>,
        after: Option<Row>,
    ) -> LogEntry {
        let seq = self.next;
        self.entry(Entry::Change(
            ChangeEvent {
                table: s.table.to_shared(),
                schema_version: s.version,
                op,
                before,
                after,
                position: pos(seq),
                txid: Some(seq),
                ts_ms: 0,
            },
            s.clone(),
        ))
    }

    fn insert(&mut self, s: &Arc<TableSchema>, row: Row) -> LogEntry {
        self.change(s, Op::Insert, None, Some(row))
    }

    fn read(&mut self, s: &Arc<TableSchema>, row: Row) -> LogEntry {
        self.change(s, Op::Read, None, Some(row))
    }

    fn update(&mut self, s: &Arc<TableSchema>, before: Option<Row>, after: Row) -> LogEntry {
        self.change(s, Op::Update, before, Some(after))
    }

    fn delete(&mut self, s: &Arc<TableSchema>, before: Row) -> LogEntry {
        self.change(s, Op::Delete, Some(before), None)
    }

    fn commit(&mut self) -> LogEntry {
        let seq = self.next;
        self.entry(Entry::Commit(CommitInfo {
            position: pos(seq),
            txid: Some(seq),
            ts_ms: 0,
            events: 0,
        }))
    }
}

async fn apply(sink: &mut MysqlSink, entries: &[LogEntry]) {
    if let Err(e) = sink.apply(entries).await {
        panic!("apply: {e}");
    }
}

async fn committed(sink: &mut MysqlSink) -> Option<u64> {
    sink.committed().await.expect("committed")
}

#[tokio::test]
async fn upserts_deletes_and_exactly_once_across_a_crash() {
    with_fx("eo", "postgres", |fx| async move {
        let s = people("people");
        let mut log = Log::new();
        let batch1 = vec![
            log.schema(&s),
            log.insert(&s, row3(1, "a", t("n1"))),
            log.insert(&s, row3(2, "b", Value::Null)),
            log.insert(&s, row3(3, "c", t("n3"))),
            log.commit(),
            log.update(&s, None, row3(2, "b2", t("x"))),
            log.delete(&s, row3(3, "", Value::Null)),
            log.commit(),
            // An unfinished transaction: must not be visible and must roll back on a crash.
            log.insert(&s, row3(4, "d", t("n4"))),
        ];
        let last_commit = batch1[7].seq;
        let mut c = sql().await;
        let q = format!(
            "SELECT CAST(id AS CHAR), name, note FROM {} ORDER BY id",
            fx.table("people")
        );
        {
            let mut sink = fx.sink().await;
            assert_eq!(committed(&mut sink).await, None);
            apply(&mut sink, &batch1).await;
            assert_eq!(committed(&mut sink).await, Some(last_commit));
            // Another session sees the two whole transactions, not the open one.
            assert_eq!(
                rows(&mut c, &q).await,
                vec![
                    r(&[Some("1"), Some("a"), Some("n1")]),
                    r(&[Some("2"), Some("b2"), Some("x")])
                ]
            );
            // Dropped here without the commit of id 4: a crash.
        }
        let mut sink = fx.sink().await;
        assert_eq!(committed(&mut sink).await, Some(last_commit));
        assert_eq!(rows(&mut c, &q).await.len(), 2, "the open transaction rolled back");
        // Resume right after the commit: the rest of the unfinished transaction arrives.
        let tail = vec![batch1[8].clone(), log.commit()];
        let final_seq = tail[1].seq;
        apply(&mut sink, &tail).await;
        assert_eq!(committed(&mut sink).await, Some(final_seq));
        let expected = vec![
            r(&[Some("1"), Some("a"), Some("n1")]),
            r(&[Some("2"), Some("b2"), Some("x")]),
            r(&[Some("4"), Some("d"), Some("n4")]),
        ];
        assert_eq!(rows(&mut c, &q).await, expected);
        drop(sink);
        // Re-applying everything already applied (a new sink, as after a crash) changes
        // nothing, and the position stays.
        let mut sink = fx.sink().await;
        apply(&mut sink, &batch1).await;
        apply(&mut sink, &tail).await;
        assert_eq!(rows(&mut c, &q).await, expected);
        assert_eq!(committed(&mut sink).await, Some(final_seq));
        let stored = rows(
            &mut c,
            &format!(
                "SELECT CAST(seq AS CHAR) FROM _weir.positions WHERE pipeline = '{}' AND sink = 'replica'",
                fx.pipeline
            ),
        )
        .await;
        assert_eq!(stored, vec![r(&[Some(&final_seq.to_string())])]);
        // The created table: InnoDB, utf8mb4 with a binary NO PAD collation.
        let info = rows(
            &mut c,
            &format!(
                "SELECT ENGINE, TABLE_COLLATION FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = 'people'",
                fx.db
            ),
        )
        .await;
        assert_eq!(info, vec![r(&[Some("InnoDB"), Some("utf8mb4_nopad_bin")])]);
    })
    .await;
}

#[tokio::test]
async fn a_transaction_split_over_calls_stays_invisible_until_its_commit() {
    with_fx("split", "postgres", |fx| async move {
        let s = people("bank");
        let mut log = Log::new();
        let mut sink = fx.sink().await;
        let mut c = sql().await;
        let count = format!("SELECT CAST(count(*) AS CHAR) FROM {}", fx.table("bank"));
        apply(
            &mut sink,
            &[log.schema(&s), log.insert(&s, row3(1, "a", Value::Null))],
        )
        .await;
        apply(&mut sink, &[log.insert(&s, row3(2, "b", Value::Null))]).await;
        // The table exists (DDL runs before the data transaction) but shows no row yet.
        assert_eq!(rows(&mut c, &count).await, vec![r(&[Some("0")])]);
        assert_eq!(committed(&mut sink).await, None);
        apply(
            &mut sink,
            &[log.insert(&s, row3(3, "c", Value::Null)), log.commit()],
        )
        .await;
        assert_eq!(rows(&mut c, &count).await, vec![r(&[Some("3")])]);
        // Several transactions in one call: one target transaction, all visible.
        let mut batch = Vec::new();
        for id in 10..20 {
            batch.push(log.insert(&s, row3(id, "x", Value::Null)));
            batch.push(log.commit());
        }
        batch.push(log.insert(&s, row3(99, "tail", Value::Null)));
        apply(&mut sink, &batch).await;
        assert_eq!(rows(&mut c, &count).await, vec![r(&[Some("13")])]);
        assert_eq!(committed(&mut sink).await, Some(batch[batch.len() - 2].seq));
    })
    .await;
}

#[tokio::test]
async fn per_key_order_and_unchanged_toast_values() {
    with_fx("order", "postgres", |fx| async move {
        let s = people("k");
        let mut log = Log::new();
        let mut sink = fx.sink().await;
        let mut c = sql().await;
        let q = format!(
            "SELECT CAST(id AS CHAR), name, note FROM {} ORDER BY id",
            fx.table("k")
        );
        // One batch: insert, update, delete, reinsert of key 1; key 2 inserted then deleted;
        // key 3 inserted then updated with an unchanged TOAST column (filled from the insert).
        apply(
            &mut sink,
            &[
                log.schema(&s),
                log.insert(&s, row3(1, "a", t("big1"))),
                log.update(&s, None, row3(1, "a2", Value::Unchanged)),
                log.delete(&s, row3(1, "", Value::Null)),
                log.insert(&s, row3(1, "again", Value::Null)),
                log.insert(&s, row3(2, "b", t("x"))),
                log.delete(&s, row3(2, "", Value::Null)),
                log.insert(&s, row3(3, "c", t("big3"))),
                log.update(&s, None, row3(3, "c2", Value::Unchanged)),
                log.insert(&s, row3(4, "d", t("big4"))),
                log.commit(),
            ],
        )
        .await;
        assert_eq!(
            rows(&mut c, &q).await,
            vec![
                r(&[Some("1"), Some("again"), None]),
                r(&[Some("3"), Some("c2"), Some("big3")]),
                r(&[Some("4"), Some("d"), Some("big4")]),
            ]
        );
        // Across batches: the unchanged column keeps the target's value; a key change with an
        // unchanged column moves the row and keeps the value; delete and reinsert of 3.
        apply(
            &mut sink,
            &[
                log.update(&s, None, row3(4, "d2", Value::Unchanged)),
                log.commit(),
            ],
        )
        .await;
        apply(
            &mut sink,
            &[
                log.update(
                    &s,
                    Some(row3(4, "", Value::Null)),
                    row3(40, "d3", Value::Unchanged),
                ),
                log.delete(&s, row3(3, "", Value::Null)),
                log.commit(),
                log.insert(&s, row3(3, "c-new", t("n"))),
                log.update(&s, None, row3(3, "c-newer", Value::Unchanged)),
                log.commit(),
            ],
        )
        .await;
        assert_eq!(
            rows(&mut c, &q).await,
            vec![
                r(&[Some("1"), Some("again"), None]),
                r(&[Some("3"), Some("c-newer"), Some("n")]),
                r(&[Some("40"), Some("d3"), Some("big4")]),
            ]
        );
        // A key change whose old row is still buffered: merged in memory.
        apply(
            &mut sink,
            &[
                log.insert(&s, row3(5, "e", t("big5"))),
                log.update(
                    &s,
                    Some(row3(5, "", Value::Null)),
                    row3(50, "e2", Value::Unchanged),
                ),
                log.commit(),
            ],
        )
        .await;
        assert_eq!(
            rows(
                &mut c,
                &format!(
                    "SELECT CAST(id AS CHAR), name, note FROM {} WHERE id IN (5, 50) ORDER BY id",
                    fx.table("k")
                )
            )
            .await,
            vec![r(&[Some("50"), Some("e2"), Some("big5")])]
        );
    })
    .await;
}

/// One column per interesting value: `(name, engine type, source type, value, SQL to read
/// it back with `{}` for the column, expected text)`.
type Case = (
    &'static str,
    ColumnType,
    &'static str,
    Value,
    &'static str,
    Option<&'static str>,
);

const CH: &str = "CAST({} AS CHAR)";

async fn round_trip(fx: &Fx, table: &str, cases: Vec<Case>) {
    let mut columns = vec![col("id", int(), "int")];
    let mut values = vec![Value::Int(1)];
    for (name, ty, st, v, ..) in &cases {
        columns.push(col(name, ty.clone(), st));
        values.push(v.clone());
    }
    let s = schema(table, 1, columns, &[0]);
    let mut log = Log::new();
    let mut sink = fx.sink().await;
    // The same values twice: as a streamed insert and as a snapshot row.
    let mut second = values.clone();
    second[0] = Value::Int(2);
    apply(
        &mut sink,
        &[
            log.schema(&s),
            log.insert(&s, Row(values)),
            log.commit(),
            log.read(&s, Row(second)),
            log.commit(),
        ],
    )
    .await;
    let mut c = sql().await;
    let list: Vec<String> = cases
        .iter()
        .map(|(n, _, _, _, expr, _)| expr.replace("{}", &quote_ident(n)))
        .collect();
    let got = rows(
        &mut c,
        &format!(
            "SELECT {} FROM {} ORDER BY id",
            list.join(", "),
            fx.table(table)
        ),
    )
    .await;
    assert_eq!(got.len(), 2);
    for row in &got {
        for ((name, .., expected), value) in cases.iter().zip(row) {
            assert_eq!(value.as_deref(), *expected, "column {name}");
        }
    }
}

async fn column_types(fx: &Fx, table: &str, names: &[&str]) -> Vec<Vec<Option<String>>> {
    let mut c = sql().await;
    let list: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    rows(
        &mut c,
        &format!(
            "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = '{table}' AND COLUMN_NAME IN ({}) ORDER BY COLUMN_NAME",
            fx.db,
            list.join(", ")
        ),
    )
    .await
}

fn ts(y: i32, m: u8, d: u8, h: i64, mi: i64, s: i64, us: i64) -> Timestamp {
    Timestamp {
        date: Date::new(y, m, d),
        micros: Time::hms(h, mi, s, us).micros as u64,
    }
}

#[tokio::test]
async fn every_value_kind_round_trips_from_a_mysql_source() {
    with_fx("mytypes", "mysql", |fx| async move {
        let dec = "12345678901234567890123456789012345.123456789012345678901234567890";
        let i = |bits, unsigned| ColumnType::Int { bits, unsigned };
        let cases: Vec<Case> = vec![
            (
                "u64",
                i(64, true),
                "bigint unsigned",
                Value::UInt(u64::MAX),
                CH,
                Some("18446744073709551615"),
            ),
            (
                "i64",
                i(64, false),
                "bigint",
                Value::Int(i64::MIN),
                CH,
                Some("-9223372036854775808"),
            ),
            (
                "t1",
                i(8, false),
                "tinyint(1)",
                Value::Int(-128),
                CH,
                Some("-128"),
            ),
            (
                "u24",
                i(24, true),
                "mediumint unsigned",
                Value::UInt(16_777_215),
                CH,
                Some("16777215"),
            ),
            (
                "yr",
                i(16, false),
                "year",
                Value::Int(2155),
                CH,
                Some("2155"),
            ),
            (
                "d65",
                ColumnType::Decimal {
                    precision: Some(65),
                    scale: Some(30),
                },
                "decimal(65,30)",
                Value::Decimal(dec.into()),
                CH,
                Some(dec),
            ),
            (
                "d52",
                ColumnType::Decimal {
                    precision: Some(5),
                    scale: Some(2),
                },
                "decimal(5,2) unsigned",
                Value::Decimal("999.99".into()),
                CH,
                Some("999.99"),
            ),
            (
                "f4",
                ColumnType::Float32,
                "float",
                Value::Float32(1.5e-7),
                "CAST({} AS DOUBLE) = CAST(1.5e-7 AS FLOAT)",
                Some("1"),
            ),
            (
                "f8",
                ColumnType::Float64,
                "double",
                Value::Float64(0.1),
                "{} = 0.1",
                Some("1"),
            ),
            (
                "f8max",
                ColumnType::Float64,
                "double",
                Value::Float64(f64::MAX),
                "{} = 1.7976931348623157e308",
                Some("1"),
            ),
            (
                "dt6",
                ColumnType::Timestamp,
                "datetime(6)",
                Value::Timestamp(ts(2024, 2, 29, 13, 45, 1, 123_456)),
                CH,
                Some("2024-02-29 13:45:01.123456"),
            ),
            (
                "dt0",
                ColumnType::Timestamp,
                "datetime",
                Value::Timestamp(ts(9999, 12, 31, 23, 59, 59, 0)),
                CH,
                Some("9999-12-31 23:59:59"),
            ),
            (
                "ts6",
                ColumnType::TimestampTz,
                "timestamp(6)",
                Value::TimestampTz(ts(2024, 2, 29, 12, 45, 1, 250_000)),
                CH,
                Some("2024-02-29 12:45:01.250000"),
            ),
            (
                "tneg",
                ColumnType::Time,
                "time(6)",
                Value::Time(Time {
                    micros: -Time::hms(838, 59, 59, 0).micros,
                }),
                CH,
                Some("-838:59:59.000000"),
            ),
            (
                "tlong",
                ColumnType::Time,
                "time(6)",
                Value::Time(Time::hms(100, 0, 0, 1)),
                CH,
                Some("100:00:00.000001"),
            ),
            (
                "zd",
                ColumnType::Date,
                "date",
                Value::Date(Date::new(0, 0, 0)),
                CH,
                Some("0000-00-00"),
            ),
            (
                "zdt",
                ColumnType::Timestamp,
                "datetime",
                Value::Timestamp(ts(2024, 0, 10, 0, 0, 0, 0)),
                CH,
                Some("2024-00-10 00:00:00"),
            ),
            (
                "tx",
                text(),
                "varchar",
                t("4-byte 😀 'q\" back\\slash\ttab\nnl \\N nul\0end"),
                CH,
                Some("4-byte 😀 'q\" back\\slash\ttab\nnl \\N nul\0end"),
            ),
            ("lt", text(), "longtext", t(""), CH, Some("")),
            ("en", text(), "enum('a','b''c')", t("b'c"), CH, Some("b'c")),
            ("st", text(), "set('x','y','z')", t("x,z"), CH, Some("x,z")),
            (
                "bt",
                ColumnType::Bits { len: Some(5) },
                "bit(5)",
                Value::Bits("00101".into()),
                "LPAD(BIN({}), 5, '0')",
                Some("00101"),
            ),
            (
                "b64",
                ColumnType::Bits { len: Some(64) },
                "bit(64)",
                Value::Bits("1".repeat(64)),
                "CAST({} + 0 AS CHAR)",
                Some("18446744073709551615"),
            ),
            (
                "vb",
                ColumnType::Bytes,
                "varbinary(4)",
                Value::Bytes(vec![0, 1, 0x5c, 0xff]),
                "HEX({})",
                Some("00015CFF"),
            ),
            (
                "bn",
                ColumnType::Bytes,
                "binary(3)",
                Value::Bytes(vec![0x27, 0, 0]),
                "HEX({})",
                Some("270000"),
            ),
            (
                "bl",
                ColumnType::Bytes,
                "blob",
                Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef]),
                "HEX({})",
                Some("DEADBEEF"),
            ),
            (
                "js",
                ColumnType::Json,
                "json",
                Value::Json(
                    "{\"a\": 18446744073709551615, \"b\": 0.1000000000000000000001}".into(),
                ),
                CH,
                Some("{\"a\": 18446744073709551615, \"b\": 0.1000000000000000000001}"),
            ),
            (
                "geo",
                ColumnType::Other,
                "geometry",
                Value::Other("POINT(1 2)".into()),
                CH,
                Some("POINT(1 2)"),
            ),
            ("nul", text(), "varchar", Value::Null, CH, None),
        ];
        round_trip(&fx, "my", cases).await;
        assert_eq!(
            column_types(
                &fx,
                "my",
                &[
                    "u64", "d65", "dt6", "ts6", "tneg", "en", "st", "bt", "vb", "t1", "tx", "geo",
                    "yr"
                ]
            )
            .await,
            vec![
                r(&[Some("bt"), Some("bit(5)")]),
                r(&[Some("d65"), Some("decimal(65,30)")]),
                r(&[Some("dt6"), Some("datetime(6)")]),
                r(&[Some("en"), Some("enum('a','b''c')")]),
                r(&[Some("geo"), Some("longtext")]),
                r(&[Some("st"), Some("set('x','y','z')")]),
                r(&[Some("t1"), Some("tinyint(1)")]),
                r(&[Some("tneg"), Some("time(6)")]),
                r(&[Some("ts6"), Some("datetime(6)")]),
                r(&[Some("tx"), Some("longtext")]),
                r(&[Some("u64"), Some("bigint(20) unsigned")]),
                r(&[Some("vb"), Some("varbinary(4)")]),
                r(&[Some("yr"), Some("year(4)")]),
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn every_value_kind_round_trips_from_a_postgres_source() {
    with_fx("pgtypes", "postgres", |fx| async move {
        let before = values_nulled();
        let dec = "12345678901234567890123456789012345.123456789012345678901234567890";
        let arr = |t: ColumnType| ColumnType::Array(Box::new(t));
        let num = ColumnType::Decimal {
            precision: None,
            scale: None,
        };
        let cases: Vec<Case> = vec![
            (
                "i",
                int(),
                "integer",
                Value::Int(-2147483648),
                CH,
                Some("-2147483648"),
            ),
            (
                "b",
                ColumnType::Int {
                    bits: 64,
                    unsigned: false,
                },
                "bigint",
                Value::Int(i64::MAX),
                CH,
                Some("9223372036854775807"),
            ),
            (
                "n65",
                num.clone(),
                "numeric",
                Value::Decimal(dec.into()),
                CH,
                Some(dec),
            ),
            (
                "nsmall",
                num.clone(),
                "numeric",
                Value::Decimal("-1.5".into()),
                CH,
                Some("-1.500000000000000000000000000000"),
            ),
            (
                "nnan",
                num.clone(),
                "numeric",
                Value::Decimal("NaN".into()),
                CH,
                None,
            ),
            (
                "n102",
                ColumnType::Decimal {
                    precision: Some(10),
                    scale: Some(2),
                },
                "numeric(10,2)",
                Value::Decimal("-12345678.90".into()),
                CH,
                Some("-12345678.90"),
            ),
            (
                "f8",
                ColumnType::Float64,
                "double precision",
                Value::Float64(0.1),
                "{} = 0.1",
                Some("1"),
            ),
            (
                "f8inf",
                ColumnType::Float64,
                "double precision",
                Value::Float64(f64::NEG_INFINITY),
                CH,
                None,
            ),
            (
                "f4",
                ColumnType::Float32,
                "real",
                Value::Float32(1.5e-7),
                "CAST({} AS DOUBLE) = CAST(1.5e-7 AS FLOAT)",
                Some("1"),
            ),
            (
                "f4nan",
                ColumnType::Float32,
                "real",
                Value::Float32(f32::NAN),
                CH,
                None,
            ),
            (
                "bo",
                ColumnType::Bool,
                "boolean",
                Value::Bool(true),
                CH,
                Some("1"),
            ),
            (
                "tx",
                text(),
                "text",
                t("4-byte 😀 'q\" back\\slash\ttab\nnl"),
                CH,
                Some("4-byte 😀 'q\" back\\slash\ttab\nnl"),
            ),
            (
                "vc",
                ColumnType::Text { max_len: Some(5) },
                "character varying(5)",
                t("ab😀"),
                CH,
                Some("ab😀"),
            ),
            (
                "ch",
                ColumnType::Text { max_len: Some(5) },
                "character(5)",
                t("ab   "),
                CH,
                Some("ab   "),
            ),
            (
                "dt",
                ColumnType::Date,
                "date",
                Value::Date(Date::new(2024, 2, 29)),
                CH,
                Some("2024-02-29"),
            ),
            (
                "dinf",
                ColumnType::Date,
                "date",
                Value::Date(Date::INFINITY),
                CH,
                None,
            ),
            (
                "dbc",
                ColumnType::Date,
                "date",
                Value::Date(Date::new(-43, 3, 15)),
                CH,
                None,
            ),
            (
                "tsus",
                ColumnType::Timestamp,
                "timestamp(6) without time zone",
                Value::Timestamp(ts(2024, 2, 29, 13, 45, 1, 1)),
                CH,
                Some("2024-02-29 13:45:01.000001"),
            ),
            (
                "tstz",
                ColumnType::TimestampTz,
                "timestamp with time zone",
                Value::TimestampTz(ts(2024, 2, 29, 12, 45, 1, 250_000)),
                CH,
                Some("2024-02-29 12:45:01.250000"),
            ),
            (
                "tstz3",
                ColumnType::TimestampTz,
                "timestamp(3) with time zone",
                Value::TimestampTz(ts(1969, 7, 20, 20, 17, 40, 123_000)),
                CH,
                Some("1969-07-20 20:17:40.123"),
            ),
            (
                "tsinf",
                ColumnType::TimestampTz,
                "timestamp with time zone",
                Value::TimestampTz(Timestamp::INFINITY),
                CH,
                None,
            ),
            (
                "tm",
                ColumnType::Time,
                "time without time zone",
                Value::Time(Time::hms(23, 59, 59, 999_999)),
                CH,
                Some("23:59:59.999999"),
            ),
            (
                "u",
                ColumnType::Uuid,
                "uuid",
                Value::Uuid([
                    0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14,
                    0x17, 0x40, 0x00,
                ]),
                CH,
                Some("123e4567-e89b-12d3-a456-426614174000"),
            ),
            (
                "j",
                ColumnType::Json,
                "json",
                Value::Json("{\"big\": 123456789012345678901234567890.5, \"a\":1}".into()),
                CH,
                Some("{\"big\": 123456789012345678901234567890.5, \"a\":1}"),
            ),
            (
                "jb",
                ColumnType::Json,
                "jsonb",
                Value::Json("{\"n\": 12345678901234567890123}".into()),
                CH,
                Some("{\"n\": 12345678901234567890123}"),
            ),
            (
                "by",
                ColumnType::Bytes,
                "bytea",
                Value::Bytes(vec![0, 1, b'\\', b'\'', 255]),
                "HEX({})",
                Some("00015C27FF"),
            ),
            (
                "bits",
                ColumnType::Bits { len: Some(5) },
                "bit(5)",
                Value::Bits("10101".into()),
                "BIN({})",
                Some("10101"),
            ),
            (
                "vbits",
                ColumnType::Bits { len: Some(8) },
                "bit varying(8)",
                Value::Bits("001".into()),
                CH,
                Some("001"),
            ),
            (
                "ia",
                arr(int()),
                "integer[]",
                Value::Array(vec![Value::Int(1), Value::Null, Value::Int(3)]),
                CH,
                Some("[1, null, 3]"),
            ),
            (
                "ta2",
                arr(text()),
                "text[]",
                Value::Array(vec![
                    Value::Array(vec![t("a"), t("b c")]),
                    Value::Array(vec![t("q\"😀"), Value::Null]),
                ]),
                CH,
                Some("[[\"a\", \"b c\"], [\"q\\\"😀\", null]]"),
            ),
            (
                "iv",
                ColumnType::Other,
                "interval",
                Value::Other("1 year 2 mons 3 days 04:05:06.789".into()),
                CH,
                Some("1 year 2 mons 3 days 04:05:06.789"),
            ),
            (
                "en",
                ColumnType::Other,
                "oid 99999",
                Value::Other("happy".into()),
                CH,
                Some("happy"),
            ),
            ("nul", text(), "text", Value::Null, CH, None),
        ];
        round_trip(&fx, "pg", cases).await;
        // Two rows with six unrepresentable values each (NaN, -Infinity, infinity, BC date).
        assert!(values_nulled() >= before + 12, "nulled values counted");
        assert_eq!(
            column_types(
                &fx,
                "pg",
                &[
                    "n65", "n102", "tstz3", "u", "ia", "by", "vc", "vbits", "bits", "bo", "tm"
                ]
            )
            .await,
            vec![
                r(&[Some("bits"), Some("bit(5)")]),
                r(&[Some("bo"), Some("tinyint(1)")]),
                r(&[Some("by"), Some("longblob")]),
                r(&[Some("ia"), Some("longtext")]),
                r(&[Some("n102"), Some("decimal(10,2)")]),
                r(&[Some("n65"), Some("decimal(65,30)")]),
                r(&[Some("tm"), Some("time(6)")]),
                r(&[Some("tstz3"), Some("datetime(3)")]),
                r(&[Some("u"), Some("char(36)")]),
                r(&[Some("vbits"), Some("varchar(8)")]),
                r(&[Some("vc"), Some("varchar(5)")]),
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn text_keys_differing_in_case_accents_or_trailing_spaces_stay_distinct() {
    with_fx("keys", "postgres", |fx| async move {
        let s = schema(
            "tk",
            1,
            vec![
                col("k", text(), "text"),
                col("b", ColumnType::Bytes, "bytea"),
                col("v", int(), "integer"),
            ],
            &[0, 1],
        );
        let mut log = Log::new();
        let mut sink = fx.sink().await;
        let mut batch = vec![log.schema(&s)];
        for (i, k) in ["a", "A", "a ", "á", "ａ"].iter().enumerate() {
            for b in [vec![], vec![0u8], vec![0, 0]] {
                batch.push(log.insert(&s, Row(vec![t(k), Value::Bytes(b), Value::Int(i as i64)])));
            }
        }
        batch.push(log.commit());
        // Delete one of them by its composite key.
        batch.push(log.delete(&s, Row(vec![t("a "), Value::Bytes(vec![0]), Value::Null])));
        batch.push(log.commit());
        apply(&mut sink, &batch).await;
        let mut c = sql().await;
        assert_eq!(
            rows(
                &mut c,
                &format!(
                    "SELECT CAST(count(*) AS CHAR), CAST(count(DISTINCT k) AS CHAR) FROM {}",
                    fx.table("tk")
                )
            )
            .await,
            vec![r(&[Some("14"), Some("5")])]
        );
        assert_eq!(
            column_types(&fx, "tk", &["k", "b"]).await,
            vec![
                r(&[Some("b"), Some("varbinary(1534)")]),
                r(&[Some("k"), Some("varchar(383)")])
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn schema_changes_add_drop_and_widen_columns() {
    with_fx("ddl", "postgres", |fx| async move {
        let v1 = schema("evolve", 1, vec![col("id", int(), "integer"), col("a", int(), "integer")], &[0]);
        let mut c_a = col("a", int(), "integer");
        c_a.nullable = false;
        let v2 = schema(
            "evolve",
            2,
            vec![col("id", int(), "integer"), c_a, col("b", ColumnType::Text { max_len: Some(3) }, "character varying(3)")],
            &[0],
        );
        // DROP COLUMN a; b widened to varchar(10); c added as bigint; id widened to bigint.
        let v3 = schema(
            "evolve",
            3,
            vec![
                col("id", ColumnType::Int { bits: 64, unsigned: false }, "bigint"),
                col("b", ColumnType::Text { max_len: Some(10) }, "character varying(10)"),
                col("c", ColumnType::Int { bits: 64, unsigned: false }, "bigint"),
            ],
            &[0],
        );
        let mut log = Log::new();
        let mut sink = fx.sink().await;
        apply(
            &mut sink,
            &[
                log.schema(&v1),
                log.insert(&v1, Row(vec![Value::Int(1), Value::Int(10)])),
                log.schema(&v2),
                log.insert(&v2, Row(vec![Value::Int(2), Value::Int(20), t("abc")])),
                log.commit(),
            ],
        )
        .await;
        apply(
            &mut sink,
            &[
                log.schema(&v3),
                log.insert(&v3, Row(vec![Value::Int(i64::MAX), t("abcdefghij"), Value::Int(i64::MIN)])),
                // An upsert of an old row leaves the dropped column alone.
                log.update(&v3, None, Row(vec![Value::Int(2), t("zz"), Value::Int(7)])),
                log.commit(),
            ],
        )
        .await;
        let mut c = sql().await;
        assert_eq!(
            rows(&mut c, &format!("SELECT CAST(id AS CHAR), CAST(a AS CHAR), b, CAST(c AS CHAR) FROM {} ORDER BY id", fx.table("evolve"))).await,
            vec![
                r(&[Some("1"), Some("10"), None, None]),
                r(&[Some("2"), Some("20"), Some("zz"), Some("7")]),
                r(&[Some("9223372036854775807"), None, Some("abcdefghij"), Some("-9223372036854775808")]),
            ]
        );
        let cols = format!(
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = 'evolve' ORDER BY ORDINAL_POSITION",
            fx.db
        );
        assert_eq!(
            rows(&mut c, &cols).await,
            vec![
                r(&[Some("id"), Some("bigint(20)"), Some("NO")]),
                r(&[Some("a"), Some("int(11)"), Some("YES")]),
                r(&[Some("b"), Some("varchar(10)"), Some("YES")]),
                r(&[Some("c"), Some("bigint(20)"), Some("YES")]),
            ]
        );
        // A new sink (restart) that first sees the latest version finds everything in place.
        drop(sink);
        let mut sink = fx.sink().await;
        apply(&mut sink, &[log.insert(&v3, Row(vec![Value::Int(4), t("x"), Value::Int(1)])), log.commit()]).await;
        // A schema change in the middle of a source transaction that began in an earlier
        // call: the DDL is applied, the open target transaction rolled back, and a transient
        // error makes the engine replay the transaction into a new sink.
        let v4 = schema(
            "evolve",
            4,
            vec![
                col("id", ColumnType::Int { bits: 64, unsigned: false }, "bigint"),
                col("b", ColumnType::Text { max_len: Some(10) }, "character varying(10)"),
                col("c", ColumnType::Int { bits: 64, unsigned: false }, "bigint"),
                col("d", text(), "text"),
            ],
            &[0],
        );
        let head = vec![log.insert(&v3, Row(vec![Value::Int(5), t("five"), Value::Null]))];
        let rest = vec![
            log.schema(&v4),
            log.insert(&v4, Row(vec![Value::Int(6), t("six"), Value::Null, t("dd")])),
            log.commit(),
        ];
        let before = committed(&mut sink).await;
        apply(&mut sink, &head).await;
        let err = sink.apply(&rest).await.expect_err("must replay");
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("replay"), "{err}");
        drop(sink);
        let mut sink = fx.sink().await;
        assert_eq!(committed(&mut sink).await, before);
        let mut again = head.clone();
        again.extend(rest.iter().cloned());
        apply(&mut sink, &again).await;
        assert_eq!(
            rows(&mut c, &format!("SELECT CAST(id AS CHAR), b, d FROM {} WHERE id >= 4 AND id < 100 ORDER BY id", fx.table("evolve"))).await,
            vec![
                r(&[Some("4"), Some("x"), None]),
                r(&[Some("5"), Some("five"), None]),
                r(&[Some("6"), Some("six"), Some("dd")]),
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn truncate_is_propagated_in_order_without_an_implicit_commit() {
    with_fx("trunc", "postgres", |fx| async move {
        let s = people("tr");
        let mut log = Log::new();
        let mut sink = fx.sink().await;
        apply(
            &mut sink,
            &[
                log.schema(&s),
                log.insert(&s, row3(1, "a", Value::Null)),
                log.insert(&s, row3(2, "b", Value::Null)),
                log.commit(),
            ],
        )
        .await;
        let mut c = sql().await;
        let q = format!(
            "SELECT CAST(id AS CHAR) FROM {} ORDER BY id",
            fx.table("tr")
        );
        // Truncate inside an unfinished transaction: nothing visible until the commit.
        apply(
            &mut sink,
            &[
                log.insert(&s, row3(3, "c", Value::Null)),
                log.change(&s, Op::Truncate, None, None),
                log.insert(&s, row3(4, "d", Value::Null)),
            ],
        )
        .await;
        assert_eq!(
            rows(&mut c, &q).await,
            vec![r(&[Some("1")]), r(&[Some("2")])]
        );
        apply(&mut sink, &[log.commit()]).await;
        assert_eq!(rows(&mut c, &q).await, vec![r(&[Some("4")])]);
    })
    .await;
}

#[tokio::test]
async fn keyless_tables_update_and_delete_one_matching_row() {
    with_fx("keyless", "mysql", |fx| async move {
        let s = schema(
            "nokey",
            1,
            vec![
                col("a", int(), "int"),
                col("b", text(), "varchar"),
                col("j", ColumnType::Json, "json"),
                col("f", ColumnType::Float32, "float"),
                col(
                    "d",
                    ColumnType::Decimal {
                        precision: Some(20),
                        scale: Some(10),
                    },
                    "decimal(20,10)",
                ),
                col("ts", ColumnType::Timestamp, "datetime(6)"),
            ],
            &[],
        );
        let row = |a: i64, b: Option<&str>| {
            Row(vec![
                Value::Int(a),
                b.map_or(Value::Null, t),
                Value::Json("{\"x\": 1}".into()),
                Value::Float32(0.1),
                Value::Decimal("1.0000000001".into()),
                Value::Timestamp(ts(2024, 1, 1, 0, 0, 0, 1)),
            ])
        };
        let mut log = Log::new();
        let mut sink = fx.sink().await;
        apply(
            &mut sink,
            &[
                log.schema(&s),
                log.insert(&s, row(1, None)),
                log.insert(&s, row(1, None)),
                log.insert(&s, row(2, Some("b"))),
                log.commit(),
            ],
        )
        .await;
        apply(
            &mut sink,
            &[
                // Inserted and deleted in the same batch: the delete must see the insert.
                log.insert(&s, row(3, Some("c"))),
                log.delete(&s, row(3, Some("c"))),
                // One of the two identical rows (NULL matched with <=>).
                log.delete(&s, row(1, None)),
                log.update(&s, Some(row(2, Some("b"))), row(2, Some("b2"))),
                log.commit(),
            ],
        )
        .await;
        let mut c = sql().await;
        assert_eq!(
            rows(
                &mut c,
                &format!(
                    "SELECT CAST(a AS CHAR), b, j FROM {} ORDER BY a",
                    fx.table("nokey")
                )
            )
            .await,
            vec![
                r(&[Some("1"), None, Some("{\"x\": 1}")]),
                r(&[Some("2"), Some("b2"), Some("{\"x\": 1}")]),
            ]
        );
        // An update without the old row cannot be matched: a definite error that says why.
        let err = sink
            .apply(&[log.change(&s, Op::Update, None, Some(row(2, Some("b3"))))])
            .await
            .expect_err("no old row");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("binlog_row_image=FULL"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn snapshot_rows_go_in_as_large_multi_row_inserts() {
    with_fx("snap", "postgres", |fx| async move {
        let s = people("snap");
        let n: i64 = 40_000;
        let pad = "p".repeat(500);
        let mut log = Log::new();
        let mut sink = fx.sink().await;
        let mut batch = vec![log.schema(&s)];
        for id in 0..n {
            batch.push(log.read(&s, row3(id, "snap", t(&format!("{pad} {id}")))));
        }
        batch.push(log.commit());
        let start = std::time::Instant::now();
        apply(&mut sink, &batch).await;
        let secs = start.elapsed().as_secs_f64();
        eprintln!("snapshot: {n} rows of ~520 bytes in {secs:.2}s = {:.0} rows/s", n as f64 / secs);
        // A second chunk overlapping the first.
        let mut batch = Vec::new();
        for id in n - 100..2 * n {
            batch.push(log.read(&s, row3(id, "again", Value::Null)));
        }
        batch.push(log.commit());
        apply(&mut sink, &batch).await;
        let mut c = sql().await;
        let q = format!(
            "SELECT name, CAST(count(*) AS CHAR), CAST(min(id) AS CHAR), CAST(max(id) AS CHAR), CAST(count(note) AS CHAR) FROM {} GROUP BY name ORDER BY name",
            fx.table("snap")
        );
        let (first_again, last) = ((n - 100).to_string(), (2 * n - 1).to_string());
        let (snap_rows, again_rows) = ((n - 100).to_string(), (n + 100).to_string());
        assert_eq!(
            rows(&mut c, &q).await,
            vec![
                r(&[Some("again"), Some(&again_rows), Some(&first_again), Some(&last), Some("0")]),
                r(&[Some("snap"), Some(&snap_rows), Some("0"), Some(&(n - 101).to_string()), Some(&snap_rows)]),
            ]
        );
        assert_eq!(
            rows(&mut c, &format!("SELECT note FROM {} WHERE id = 7", fx.table("snap"))).await,
            vec![r(&[Some(&format!("{pad} 7"))])]
        );
    })
    .await;
}

#[tokio::test]
async fn tables_can_be_renamed_and_databases_mirrored() {
    with_fx("rename", "postgres", |fx| async move {
        let mut cfg = fx.cfg();
        // `{schema}` becomes the source schema ("shop" here, "sales" below).
        cfg.schema = Some(format!("{}_{{schema}}", fx.db));
        cfg.tables.insert("shop.orig".into(), "renamed".into());
        let a = people("orig");
        let b = Arc::new(TableSchema {
            table: TableId::new("sales", "orig"),
            ..(*people("orig")).clone()
        });
        let mut log = Log::new();
        let mut sink = MysqlSink::connect(cfg, fx.ctx()).await.expect("connect");
        // Two new tables in two new databases inside one source transaction.
        apply(
            &mut sink,
            &[
                log.schema(&a),
                log.insert(&a, row3(1, "pub", Value::Null)),
                log.schema(&b),
                log.insert(&b, row3(2, "sales", Value::Null)),
                log.commit(),
            ],
        )
        .await;
        let mut c = sql().await;
        let shop = format!("{}.`renamed`", quote_ident(&format!("{}_shop", fx.db)));
        let sales = format!("{}.`orig`", quote_ident(&format!("{}_sales", fx.db)));
        assert_eq!(
            rows(
                &mut c,
                &format!("SELECT CAST(id AS CHAR), name FROM {shop}")
            )
            .await,
            vec![r(&[Some("1"), Some("pub")])]
        );
        assert_eq!(
            rows(
                &mut c,
                &format!("SELECT CAST(id AS CHAR), name FROM {sales}")
            )
            .await,
            vec![r(&[Some("2"), Some("sales")])]
        );
    })
    .await;
}

/// A seeded xorshift generator: the same names every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// A hostile name MySQL accepts: quotes, backticks, spaces, semicolons, unicode of the BMP
/// (identifiers cannot hold characters beyond it), reserved words; at most 60 characters and
/// never ending in a space (MySQL refuses both).
fn gen_name(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "`",
        "``",
        "\"",
        "'",
        " ",
        ";",
        "é",
        "日本",
        "select",
        "table",
        "user",
        "order",
        "DROP TABLE x;--",
        "a",
        "Z",
        "_",
        "$1",
        "\\",
        ".",
        "-",
        "@",
        "/",
        "%",
    ];
    let len = 1 + rng.next() % 5;
    let mut s: String = (0..len).map(|_| rng.pick(PIECES)).collect();
    while s.chars().count() > 58 {
        s.pop();
    }
    if s.ends_with(' ') {
        s.push('x');
    }
    s
}

#[tokio::test]
async fn quoting_is_injective_and_round_trips_hostile_names_through_the_server() {
    with_fx("quote", "postgres", |fx| async move {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        // Injective: distinct names never quote alike, and quoting can be undone.
        let mut seen = std::collections::HashMap::new();
        for _ in 0..5000 {
            let name = gen_name(&mut rng);
            let q = quote_ident(&name);
            assert!(q.starts_with('`') && q.ends_with('`'));
            let inner = &q[1..q.len() - 1];
            assert!(!inner.replace("``", "").contains('`'), "unescaped backtick in {q}");
            assert_eq!(inner.replace("``", "`"), name, "quote_ident must round-trip");
            if let Some(prev) = seen.insert(q.clone(), name.clone()) {
                assert_eq!(prev, name, "two names quote to {q}");
            }
        }
        // Through the server: tables and columns with hostile names, created by the sink.
        let mut c = sql().await;
        for round in 0..6 {
            let table = format!("{}{round}", gen_name(&mut rng));
            // Column names are case- and accent-insensitive in MySQL: a distinct digit each.
            let names: Vec<String> = (0..4).map(|i| format!("{}{i}", gen_name(&mut rng))).collect();
            let columns: Vec<Column> = names.iter().map(|n| col(n, text(), "text")).collect();
            let s = schema(&table, 1, columns, &[0]);
            let mut log = Log::new();
            let mut sink = fx.sink().await;
            let values: Vec<Value> = names.iter().map(|n| t(&format!("v{n}"))).collect();
            let mut updated = values.clone();
            updated[1] = t("changed");
            apply(
                &mut sink,
                &[
                    log.schema(&s),
                    log.insert(&s, Row(values.clone())),
                    log.commit(),
                    log.update(&s, None, Row(updated.clone())),
                    log.commit(),
                ],
            )
            .await;
            let escaped = table.replace('\'', "''").replace('\\', "\\\\");
            let cols = rows(
                &mut c,
                &format!(
                    "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = BINARY '{escaped}' ORDER BY ORDINAL_POSITION",
                    fx.db
                ),
            )
            .await;
            let want: Vec<Vec<Option<String>>> = names.iter().map(|n| vec![Some(n.clone())]).collect();
            assert_eq!(cols, want, "table {table:?}");
            let list: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
            let got = rows(&mut c, &format!("SELECT {} FROM {}", list.join(", "), fx.table(&table))).await;
            let expect: Vec<Option<String>> = updated
                .iter()
                .map(|v| match v {
                    Value::Text(s) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(got, vec![expect], "table {table:?}");
            // Each table's sink run used the same pipeline position: reset it.
            exec(&mut c, &format!("DELETE FROM _weir.positions WHERE pipeline = '{}'", fx.pipeline)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn rejected_values_are_definite_errors_naming_table_and_column() {
    with_fx("reject", "mysql", |fx| async move {
        let s = schema(
            "strict",
            1,
            vec![
                col("id", int(), "int"),
                col(
                    "small",
                    ColumnType::Int {
                        bits: 16,
                        unsigned: false,
                    },
                    "smallint",
                ),
                col(
                    "amount",
                    ColumnType::Decimal {
                        precision: Some(6),
                        scale: Some(2),
                    },
                    "decimal(6,2)",
                ),
            ],
            &[0],
        );
        let mut log = Log::new();
        let mut sink = fx.sink().await;
        let ok = Row(vec![
            Value::Int(1),
            Value::Int(1),
            Value::Decimal("1.50".into()),
        ]);
        apply(
            &mut sink,
            &[log.schema(&s), log.insert(&s, ok), log.commit()],
        )
        .await;
        let err = sink
            .apply(&[
                log.insert(
                    &s,
                    Row(vec![Value::Int(2), Value::Int(70_000), Value::Null]),
                ),
                log.commit(),
            ])
            .await
            .expect_err("out of range");
        let msg = err.to_string();
        assert!(!err.is_transient(), "{msg}");
        assert!(
            msg.contains("strict") && msg.contains("\"small\"") && msg.contains("Out of range"),
            "{msg}"
        );
        // The sink stays unusable; a new one resumes from the stored position.
        assert!(sink.apply(&[]).await.is_err());
        let mut sink = fx.sink().await;
        assert_eq!(committed(&mut sink).await, Some(3));
        // A decimal MySQL would round is refused before it is sent.
        let err = sink
            .apply(&[
                log.insert(
                    &s,
                    Row(vec![
                        Value::Int(3),
                        Value::Null,
                        Value::Decimal("1.005".into()),
                    ]),
                ),
                log.commit(),
            ])
            .await
            .expect_err("too many fractional digits");
        let msg = err.to_string();
        assert!(!err.is_transient(), "{msg}");
        assert!(
            msg.contains("strict") && msg.contains("\"amount\"") && msg.contains("round"),
            "{msg}"
        );
        let mut c = sql().await;
        assert_eq!(
            rows(
                &mut c,
                &format!("SELECT CAST(count(*) AS CHAR) FROM {}", fx.table("strict"))
            )
            .await,
            vec![r(&[Some("1")])]
        );
    })
    .await;
}

#[tokio::test]
async fn unreachable_target_is_transient_and_config_hides_the_password() {
    let fx = Fx {
        db: "weir_unreach".into(),
        pipeline: "p_unreach".into(),
        connector: "postgres",
    };
    let cfg = MysqlSinkConfig::new("mysql://weir:s3cret-pw@127.0.0.1:1/db");
    let err = match MysqlSink::connect(cfg.clone(), fx.ctx()).await {
        Ok(_) => panic!("connected to port 1"),
        Err(e) => e,
    };
    assert!(matches!(err, ConnectorError::Transient { .. }), "{err:?}");
    let shown = format!("{err} {err:?} {cfg:?}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(format!("{cfg:?}").contains("<redacted>"));
    let findings = weir_mysql::sink::check(&cfg).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(findings[0].fatal && !findings[0].message.contains("s3cret-pw"));
    // No database anywhere: a definite error that says where to set it.
    let err = match MysqlSink::connect(MysqlSinkConfig::new(url()), fx.ctx()).await {
        Ok(_) => panic!("no target database"),
        Err(e) => e,
    };
    assert!(
        !err.is_transient() && err.to_string().contains("schema"),
        "{err}"
    );
    // A reachable target passes the preflight.
    let mut ok = MysqlSinkConfig::new(url());
    ok.schema = Some("weir_check_target".into());
    assert_eq!(weir_mysql::sink::check(&ok).await, vec![]);
}

#[test]
fn config_keys_defaults_and_unknown_keys() {
    let cfg: MysqlSinkConfig = toml::from_str(
        "url = \"mysql://weir:pw@127.0.0.1:3306/replica\"\nbatch_rows = 500\n[tables]\n\"shop.a\" = \"b\"\n",
    )
    .expect("parses");
    assert_eq!(cfg.schema, None);
    assert_eq!(cfg.batch_rows, 500);
    assert_eq!(cfg.batch_bytes, 32 << 20);
    assert_eq!(cfg.tables.get("shop.a").map(String::as_str), Some("b"));
    let cfg: MysqlSinkConfig =
        toml::from_str("url = \"mysql://u@h/\"\nschema = \"target\"\n").expect("parses");
    assert_eq!(cfg.schema.as_deref(), Some("target"));
    let err = toml::from_str::<MysqlSinkConfig>("url = \"mysql://u@h/d\"\nbatchrows = 1\n")
        .expect_err("unknown key");
    assert!(err.to_string().contains("batchrows"), "{err}");
}

#[tokio::test]
async fn a_position_moved_by_someone_else_is_detected() {
    with_fx("fence", "postgres", |fx| async move {
        let s = people("fence");
        let mut log = Log::new();
        let mut sink = fx.sink().await;
        apply(
            &mut sink,
            &[
                log.schema(&s),
                log.insert(&s, row3(1, "a", Value::Null)),
                log.commit(),
            ],
        )
        .await;
        // Another writer (a second weir process on the same pipeline and sink) moves it.
        let mut c = sql().await;
        exec(
            &mut c,
            &format!(
                "UPDATE _weir.positions SET seq = 99 WHERE pipeline = '{}' AND sink = 'replica'",
                fx.pipeline
            ),
        )
        .await;
        let err = sink
            .apply(&[log.insert(&s, row3(2, "b", Value::Null)), log.commit()])
            .await
            .expect_err("moved position");
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("another weir process"), "{err}");
    })
    .await;
}
