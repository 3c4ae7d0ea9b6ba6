//! PostgreSQL sink tests against the real server: hand-built log entries are applied and the
//! target rows compared in their exact text form. Each test writes into its own target
//! schema and pipeline name (pid + counter) and drops them afterwards.

use super::{env, sql};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio_postgres::{Client, SimpleQueryMessage};
use weir_api::{
    ChangeEvent, Column, ColumnType, CommitInfo, ConnectorError, Date, Entry, LogEntry, Lsn, Op,
    PgPosition, Row, Sink, SinkContext, SourceInfo, SourcePosition, TableId, TableSchema, Time,
    Timestamp, Value,
};
use weir_postgres::sink::{PostgresSink, PostgresSinkConfig, STAGE_MIN_ROWS, zero_dates_nulled};
use weir_postgres::source::quote_ident;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A target schema and pipeline name of one test.
#[derive(Clone)]
struct Fx {
    schema: String,
    pipeline: String,
    connector: &'static str,
}

impl Fx {
    fn cfg(&self) -> PostgresSinkConfig {
        let e = env();
        let mut cfg = PostgresSinkConfig::new(format!(
            "postgres://{}:{}@{}:{}/{}",
            e.user, e.password, e.host, e.port, e.database
        ));
        cfg.schema = self.schema.clone();
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

    async fn sink(&self) -> PostgresSink {
        PostgresSink::connect(self.cfg(), self.ctx())
            .await
            .expect("connect the sink")
    }

    fn table(&self, name: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(name))
    }
}

/// Runs `body` with a fresh fixture, then drops its schema and position row whatever
/// happened, then re-raises a panic.
async fn with_fx<F, Fut>(tag: &str, connector: &'static str, body: F)
where
    F: FnOnce(Fx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let fx = Fx {
        schema: format!("weir_sink_{tag}_{}_{n}", std::process::id()),
        pipeline: format!("p_{tag}_{}_{n}", std::process::id()),
        connector,
    };
    let outcome = tokio::spawn(body(fx.clone())).await;
    let client = sql().await;
    let _ = client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(&fx.schema)
        ))
        .await;
    let _ = client
        .execute(
            "DELETE FROM _weir.positions WHERE pipeline = $1",
            &[&fx.pipeline],
        )
        .await;
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

/// Every row of `query` in text form (what `::text` gives), in UTC.
async fn rows(c: &Client, query: &str) -> Vec<Vec<Option<String>>> {
    c.batch_execute("SET TimeZone = 'UTC'")
        .await
        .expect("set tz");
    c.simple_query(query)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e:?}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(String::from)).collect())
            }
            _ => None,
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
        table: TableId::new("public", name),
        version,
        columns,
        primary_key: key.to_vec(),
    })
}

/// `(id integer key, name text, note text)`.
fn people(name: &str) -> Arc<TableSchema> {
    schema(
        name,
        1,
        vec![
            col("id", int(), "integer"),
            col("name", text(), "text"),
            col("note", text(), "text"),
        ],
        &[0],
    )
}

/// `name (id integer primary key, small smallint)`: a table some values do not fit.
fn id_and_smallint(name: &str) -> Arc<TableSchema> {
    schema(
        name,
        1,
        vec![
            col("id", int(), "integer"),
            col(
                "small",
                ColumnType::Int {
                    bits: 16,
                    unsigned: false,
                },
                "smallint",
            ),
        ],
        &[0],
    )
}

/// A definite error naming the table and its `small` column as out of range.
fn assert_out_of_range_named(err: &ConnectorError, table: &str) {
    let msg = err.to_string();
    assert!(!err.is_transient(), "{msg}");
    assert!(
        msg.contains(table) && msg.contains("\"small\"") && msg.contains("out of range"),
        "{msg}"
    );
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

async fn apply(sink: &mut PostgresSink, entries: &[LogEntry]) {
    sink.apply(entries).await.expect("apply");
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
        let client = sql().await;
        let q = format!(
            "SELECT id::text, name, note FROM {} ORDER BY id",
            fx.table("people")
        );
        {
            let mut sink = fx.sink().await;
            assert_eq!(sink.committed().await.expect("committed"), None);
            apply(&mut sink, &batch1).await;
            assert_eq!(
                sink.committed().await.expect("committed"),
                Some(last_commit)
            );
            // Another session sees the two whole transactions, not the open one.
            assert_eq!(
                rows(&client, &q).await,
                vec![
                    r(&[Some("1"), Some("a"), Some("n1")]),
                    r(&[Some("2"), Some("b2"), Some("x")])
                ]
            );
            // Dropped here without the commit of id 4: a crash.
        }
        let mut sink = fx.sink().await;
        assert_eq!(
            sink.committed().await.expect("committed"),
            Some(last_commit)
        );
        assert_eq!(
            rows(&client, &q).await.len(),
            2,
            "the open transaction rolled back"
        );
        // Resume right after the commit: the rest of the unfinished transaction arrives.
        let tail = vec![batch1[8].clone(), log.commit()];
        let final_seq = tail[1].seq;
        apply(&mut sink, &tail).await;
        assert_eq!(sink.committed().await.expect("committed"), Some(final_seq));
        let expected = vec![
            r(&[Some("1"), Some("a"), Some("n1")]),
            r(&[Some("2"), Some("b2"), Some("x")]),
            r(&[Some("4"), Some("d"), Some("n4")]),
        ];
        assert_eq!(rows(&client, &q).await, expected);
        drop(sink);
        // Re-applying everything already applied (a new sink, as after a crash) changes
        // nothing, and the position stays.
        let mut sink = fx.sink().await;
        apply(&mut sink, &batch1).await;
        apply(&mut sink, &tail).await;
        assert_eq!(rows(&client, &q).await, expected);
        assert_eq!(sink.committed().await.expect("committed"), Some(final_seq));
        let stored = rows(
            &client,
            &format!(
                "SELECT seq::text FROM _weir.positions WHERE pipeline = '{}' AND sink = 'replica'",
                fx.pipeline
            ),
        )
        .await;
        assert_eq!(stored, vec![r(&[Some(&final_seq.to_string())])]);
    })
    .await;
}

#[tokio::test]
async fn a_transaction_split_over_calls_stays_invisible_until_its_commit() {
    with_fx("split", "postgres", |fx| async move {
        let s = people("bank");
        let mut log = Log::new();
        let mut sink = fx.sink().await;
        let client = sql().await;
        let count = format!("SELECT count(*)::text FROM {}", fx.table("bank"));
        apply(
            &mut sink,
            &[log.schema(&s), log.insert(&s, row3(1, "a", Value::Null))],
        )
        .await;
        apply(&mut sink, &[log.insert(&s, row3(2, "b", Value::Null))]).await;
        // The table was created inside the open transaction: not there yet for others.
        let visible = client
            .simple_query(&count)
            .await
            .map(|_| ())
            .map_err(|e| e.code().map(|c| c.code().to_string()));
        assert_eq!(visible, Err(Some("42P01".into())), "{visible:?}");
        assert_eq!(sink.committed().await.expect("committed"), None);
        apply(
            &mut sink,
            &[log.insert(&s, row3(3, "c", Value::Null)), log.commit()],
        )
        .await;
        assert_eq!(rows(&client, &count).await, vec![r(&[Some("3")])]);
        // Several transactions in one call: one target transaction, all visible.
        let mut batch = Vec::new();
        for id in 10..20 {
            batch.push(log.insert(&s, row3(id, "x", Value::Null)));
            batch.push(log.commit());
        }
        batch.push(log.insert(&s, row3(99, "tail", Value::Null)));
        apply(&mut sink, &batch).await;
        assert_eq!(rows(&client, &count).await, vec![r(&[Some("13")])]);
        assert_eq!(
            sink.committed().await.expect("committed"),
            Some(batch[batch.len() - 2].seq)
        );
    })
    .await;
}

#[tokio::test]
async fn per_key_order_and_unchanged_toast_values() {
    with_fx("order", "postgres", |fx| async move {
        let s = people("k");
        let mut log = Log::new();
        let mut sink = fx.sink().await;
        let client = sql().await;
        let q = format!(
            "SELECT id::text, name, note FROM {} ORDER BY id",
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
            rows(&client, &q).await,
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
            rows(&client, &q).await,
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
                &client,
                &format!(
                    "SELECT id::text, name, note FROM {} WHERE id IN (5, 50) ORDER BY id",
                    fx.table("k")
                )
            )
            .await,
            vec![r(&[Some("50"), Some("e2"), Some("big5")])]
        );
    })
    .await;
}

/// One column per interesting value; `(name, engine type, source type, value, expected text)`.
type Case = (
    &'static str,
    ColumnType,
    &'static str,
    Value,
    Option<&'static str>,
);

async fn round_trip(fx: &Fx, table: &str, cases: Vec<Case>) {
    let mut columns = vec![col("id", int(), "integer")];
    let mut values = vec![Value::Int(1)];
    for (name, ty, st, v, _) in &cases {
        columns.push(col(name, ty.clone(), st));
        values.push(v.clone());
    }
    let s = schema(table, 1, columns, &[0]);
    let mut log = Log::new();
    let mut sink = fx.sink().await;
    // The same values twice: as a streamed insert and as a snapshot row (COPY path).
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
    let client = sql().await;
    let list: Vec<String> = cases
        .iter()
        .map(|(n, ..)| format!("{}::text", quote_ident(n)))
        .collect();
    let got = rows(
        &client,
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

fn ts(y: i32, m: u8, d: u8, h: i64, mi: i64, s: i64, us: i64) -> Timestamp {
    Timestamp {
        date: Date::new(y, m, d),
        micros: Time::hms(h, mi, s, us).micros as u64,
    }
}

#[tokio::test]
async fn every_value_kind_round_trips_from_a_postgres_source() {
    with_fx("types", "postgres", |fx| async move {
        let dec65 = "12345678901234567890123456789012345678901234567890.123456789012345";
        let arr = |t: ColumnType| ColumnType::Array(Box::new(t));
        let cases: Vec<Case> = vec![
            ("i", int(), "integer", Value::Int(-2147483648), Some("-2147483648")),
            ("b", ColumnType::Int { bits: 64, unsigned: false }, "bigint", Value::Int(i64::MAX), Some("9223372036854775807")),
            ("n65", ColumnType::Decimal { precision: None, scale: None }, "numeric", Value::Decimal(dec65.into()), Some(dec65)),
            ("nnan", ColumnType::Decimal { precision: None, scale: None }, "numeric", Value::Decimal("NaN".into()), Some("NaN")),
            ("n102", ColumnType::Decimal { precision: Some(10), scale: Some(2) }, "numeric(10,2)", Value::Decimal("-12345678.90".into()), Some("-12345678.90")),
            ("f8", ColumnType::Float64, "double precision", Value::Float64(0.1), Some("0.1")),
            ("f8inf", ColumnType::Float64, "double precision", Value::Float64(f64::NEG_INFINITY), Some("-Infinity")),
            ("f8big", ColumnType::Float64, "double precision", Value::Float64(1.7976931348623157e308), Some("1.7976931348623157e+308")),
            ("f4", ColumnType::Float32, "real", Value::Float32(1.5e-7), Some("1.5e-07")),
            ("bo", ColumnType::Bool, "boolean", Value::Bool(true), Some("true")),
            ("tx", text(), "text", t("4-byte 😀 'q\" back\\slash\ttab\nnl \\N"), Some("4-byte 😀 'q\" back\\slash\ttab\nnl \\N")),
            ("vc", ColumnType::Text { max_len: Some(5) }, "character varying(5)", t("ab😀"), Some("ab😀")),
            ("dinf", ColumnType::Date, "date", Value::Date(Date::INFINITY), Some("infinity")),
            ("dbc", ColumnType::Date, "date", Value::Date(Date::new(-43, 3, 15)), Some("0044-03-15 BC")),
            ("tsninf", ColumnType::Timestamp, "timestamp without time zone", Value::Timestamp(Timestamp::NEG_INFINITY), Some("-infinity")),
            ("tsus", ColumnType::Timestamp, "timestamp(6) without time zone", Value::Timestamp(ts(2024, 2, 29, 13, 45, 1, 1)), Some("2024-02-29 13:45:01.000001")),
            ("tstz", ColumnType::TimestampTz, "timestamp with time zone", Value::TimestampTz(ts(2024, 2, 29, 12, 45, 1, 250_000)), Some("2024-02-29 12:45:01.25+00")),
            ("tstzinf", ColumnType::TimestampTz, "timestamp with time zone", Value::TimestampTz(Timestamp::INFINITY), Some("infinity")),
            ("tm", ColumnType::Time, "time without time zone", Value::Time(Time::hms(23, 59, 59, 999_999)), Some("23:59:59.999999")),
            ("u", ColumnType::Uuid, "uuid", Value::Uuid([0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00]), Some("123e4567-e89b-12d3-a456-426614174000")),
            ("j", ColumnType::Json, "json", Value::Json("{\"big\": 123456789012345678901234567890.5, \"a\":1}".into()), Some("{\"big\": 123456789012345678901234567890.5, \"a\":1}")),
            ("jb", ColumnType::Json, "jsonb", Value::Json("{\"n\":12345678901234567890123}".into()), Some("{\"n\": 12345678901234567890123}")),
            ("by", ColumnType::Bytes, "bytea", Value::Bytes(vec![0, 1, b'\\', 255]), Some("\\x00015cff")),
            ("bits", ColumnType::Bits { len: Some(5) }, "bit(5)", Value::Bits("10101".into()), Some("10101")),
            ("ch", ColumnType::Text { max_len: Some(5) }, "character(5)", t("ab"), Some("ab")),
            ("bita", arr(ColumnType::Bits { len: Some(3) }), "bit(3)[]", Value::Array(vec![Value::Bits("101".into()), Value::Null]), Some("{101,NULL}")),
            ("vbits", ColumnType::Bits { len: None }, "bit varying", Value::Bits("1".into()), Some("1")),
            ("ia", arr(int()), "integer[]", Value::Array(vec![Value::Int(1), Value::Null, Value::Int(3)]), Some("{1,NULL,3}")),
            ("ta2", arr(text()), "text[]", Value::Array(vec![
                Value::Array(vec![t("a"), t("b c")]),
                Value::Array(vec![t("q\"😀"), Value::Null]),
            ]), Some("{{a,\"b c\"},{\"q\\\"😀\",NULL}}")),
            ("iv", ColumnType::Other, "interval", Value::Other("1 year 2 mons 3 days 04:05:06.789".into()), Some("1 year 2 mons 3 days 04:05:06.789")),
            ("ip", ColumnType::Other, "inet", Value::Other("192.168.0.1/24".into()), Some("192.168.0.1/24")),
            ("en", ColumnType::Other, "oid 99999", Value::Other("happy".into()), Some("happy")),
            ("nul", text(), "text", Value::Null, None),
        ];
        round_trip(&fx, "types", cases).await;
        // The created column types follow the source's.
        let client = sql().await;
        let types = rows(
            &client,
            &format!(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '{}'::regclass AND attname IN ('n102', 'tsus', 'vc', 'en', 'jb', 'bits', 'ta2') ORDER BY attname",
                fx.table("types").replace('\'', "''")
            ),
        )
        .await;
        assert_eq!(
            types,
            vec![
                r(&[Some("bits"), Some("bit(5)")]),
                r(&[Some("en"), Some("text")]),
                r(&[Some("jb"), Some("jsonb")]),
                r(&[Some("n102"), Some("numeric(10,2)")]),
                r(&[Some("ta2"), Some("text[]")]),
                r(&[Some("tsus"), Some("timestamp(6) without time zone")]),
                r(&[Some("vc"), Some("character varying(5)")]),
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn mysql_types_map_losslessly_and_zero_dates_become_null() {
    with_fx("mysql", "mysql", |fx| async move {
        let before = zero_dates_nulled();
        let cases: Vec<Case> = vec![
            ("u64", ColumnType::Int { bits: 64, unsigned: true }, "bigint unsigned", Value::UInt(u64::MAX), Some("18446744073709551615")),
            ("t1", ColumnType::Int { bits: 8, unsigned: false }, "tinyint(1)", Value::Int(-128), Some("-128")),
            ("u32", ColumnType::Int { bits: 32, unsigned: true }, "int unsigned", Value::UInt(u32::MAX.into()), Some("4294967295")),
            ("dt6", ColumnType::Timestamp, "datetime(6)", Value::Timestamp(ts(2024, 2, 29, 13, 45, 1, 123_456)), Some("2024-02-29 13:45:01.123456")),
            ("zd", ColumnType::Date, "date", Value::Date(Date::new(0, 0, 0)), None),
            ("zdt", ColumnType::Timestamp, "datetime", Value::Timestamp(ts(2024, 0, 10, 0, 0, 0, 0)), None),
            ("d65", ColumnType::Decimal { precision: Some(65), scale: Some(30) }, "decimal(65,30)", Value::Decimal("12345678901234567890123456789012345.123456789012345678901234567890".into()), Some("12345678901234567890123456789012345.123456789012345678901234567890")),
            ("js", ColumnType::Json, "json", Value::Json("{\"a\": 18446744073709551615}".into()), Some("{\"a\": 18446744073709551615}")),
            ("st", ColumnType::Other, "set('a','b')", Value::Text("a,b".into()), Some("a,b")),
            ("bl", ColumnType::Bytes, "blob", Value::Bytes(vec![0xde, 0xad]), Some("\\xdead")),
        ];
        round_trip(&fx, "my", cases).await;
        // Two rows, two zero dates each.
        assert!(zero_dates_nulled() >= before + 4, "zero dates counted");
        let client = sql().await;
        let types = rows(
            &client,
            &format!(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = '{}'::regclass AND attname IN ('u64', 't1', 'dt6', 'js', 'u32') ORDER BY attname",
                fx.table("my")
            ),
        )
        .await;
        assert_eq!(
            types,
            vec![
                r(&[Some("dt6"), Some("timestamp(6) without time zone")]),
                r(&[Some("js"), Some("jsonb")]),
                r(&[Some("t1"), Some("smallint")]),
                r(&[Some("u32"), Some("bigint")]),
                r(&[Some("u64"), Some("numeric(20,0)")]),
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
        // DROP COLUMN a; b widened to varchar(10); c added as bigint.
        let v3 = schema(
            "evolve",
            3,
            vec![
                col("id", int(), "integer"),
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
                log.insert(&v3, Row(vec![Value::Int(3), t("abcdefghij"), Value::Int(i64::MIN)])),
                // An upsert of an old row leaves the dropped column alone.
                log.update(&v3, None, Row(vec![Value::Int(2), t("zz"), Value::Int(7)])),
                log.commit(),
            ],
        )
        .await;
        let client = sql().await;
        assert_eq!(
            rows(&client, &format!("SELECT id::text, a::text, b, c::text FROM {} ORDER BY id", fx.table("evolve"))).await,
            vec![
                r(&[Some("1"), Some("10"), None, None]),
                r(&[Some("2"), Some("20"), Some("zz"), Some("7")]),
                r(&[Some("3"), None, Some("abcdefghij"), Some("-9223372036854775808")]),
            ]
        );
        let types = rows(
            &client,
            &format!(
                "SELECT attname, format_type(atttypid, atttypmod), attnotnull::text FROM pg_attribute WHERE attrelid = '{}'::regclass AND attnum > 0 ORDER BY attnum",
                fx.table("evolve")
            ),
        )
        .await;
        assert_eq!(
            types,
            vec![
                r(&[Some("id"), Some("integer"), Some("true")]),
                r(&[Some("a"), Some("integer"), Some("false")]),
                r(&[Some("b"), Some("character varying(10)"), Some("false")]),
                r(&[Some("c"), Some("bigint"), Some("false")]),
            ]
        );
        // A new sink (restart) that first sees the latest version finds everything in place.
        drop(sink);
        let mut sink = fx.sink().await;
        apply(&mut sink, &[log.insert(&v3, Row(vec![Value::Int(4), t("x"), Value::Int(1)])), log.commit()]).await;
        assert_eq!(
            rows(&client, &format!("SELECT count(*)::text FROM {}", fx.table("evolve"))).await,
            vec![r(&[Some("4")])]
        );
    })
    .await;
}

#[tokio::test]
async fn truncate_is_propagated_in_order() {
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
        apply(
            &mut sink,
            &[
                log.insert(&s, row3(3, "c", Value::Null)),
                log.change(&s, Op::Truncate, None, None),
                log.insert(&s, row3(4, "d", Value::Null)),
                log.commit(),
            ],
        )
        .await;
        let client = sql().await;
        assert_eq!(
            rows(
                &client,
                &format!("SELECT id::text FROM {} ORDER BY id", fx.table("tr"))
            )
            .await,
            vec![r(&[Some("4")])]
        );
    })
    .await;
}

#[tokio::test]
async fn keyless_tables_update_and_delete_one_matching_row() {
    with_fx("keyless", "postgres", |fx| async move {
        let s = schema(
            "nokey",
            1,
            vec![
                col("a", int(), "integer"),
                col("b", text(), "text"),
                col("j", ColumnType::Json, "json"),
            ],
            &[],
        );
        let row = |a: i64, b: Option<&str>| {
            Row(vec![
                Value::Int(a),
                b.map_or(Value::Null, t),
                Value::Json("{\"x\": 1}".into()),
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
                // One of the two identical rows (NULL matched with IS NOT DISTINCT FROM).
                log.delete(&s, row(1, None)),
                log.update(&s, Some(row(2, Some("b"))), row(2, Some("b2"))),
                log.commit(),
            ],
        )
        .await;
        let client = sql().await;
        assert_eq!(
            rows(
                &client,
                &format!(
                    "SELECT a::text, b, j::text FROM {} ORDER BY a",
                    fx.table("nokey")
                )
            )
            .await,
            vec![
                r(&[Some("1"), None, Some("{\"x\": 1}")]),
                r(&[Some("2"), Some("b2"), Some("{\"x\": 1}")]),
            ]
        );
        // A large batch of keyless inserts (COPY path), duplicates included.
        let mut batch: Vec<LogEntry> = (0..STAGE_MIN_ROWS as i64 + 10)
            .map(|i| log.insert(&s, row(100 + i % 7, Some("bulk\ttab"))))
            .collect();
        batch.push(log.commit());
        apply(&mut sink, &batch).await;
        let want_rows = (STAGE_MIN_ROWS + 10).to_string();
        assert_eq!(
            rows(
                &client,
                &format!(
                    "SELECT count(*)::text, count(DISTINCT a)::text, min(b) FROM {} WHERE a >= 100",
                    fx.table("nokey")
                )
            )
            .await,
            vec![r(&[Some(&want_rows), Some("7"), Some("bulk\ttab")])]
        );
        // An update without the old row cannot be matched: a definite error that says why.
        let err = sink
            .apply(&[log.change(&s, Op::Update, None, Some(row(2, Some("b3"))))])
            .await
            .expect_err("no old row");
        assert!(!err.is_transient());
        assert!(err.to_string().contains("REPLICA IDENTITY FULL"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn snapshot_rows_copy_into_empty_and_merge_into_non_empty_tables() {
    with_fx("snap", "postgres", |fx| async move {
        let s = people("snap");
        let n = (STAGE_MIN_ROWS + 500) as i64;
        let mut log = Log::new();
        let mut sink = fx.sink().await;
        let mut batch = vec![log.schema(&s)];
        for id in 0..n {
            batch.push(log.read(&s, row3(id, "snap", t(&format!("tab\there {id}")))));
        }
        batch.push(log.commit());
        apply(&mut sink, &batch).await;
        // A second chunk into the now non-empty table, overlapping the first: merged.
        let mut batch = Vec::new();
        for id in n - 100..2 * n {
            batch.push(log.read(&s, row3(id, "again", Value::Null)));
        }
        batch.push(log.commit());
        apply(&mut sink, &batch).await;
        let client = sql().await;
        let q = format!(
            "SELECT name, count(*)::text, min(id)::text, max(id)::text, count(note)::text FROM {} GROUP BY name ORDER BY name",
            fx.table("snap")
        );
        let first_again = (n - 100).to_string();
        let last = (2 * n - 1).to_string();
        let snap_rows = (n - 100).to_string();
        let again_rows = (n + 100).to_string();
        assert_eq!(
            rows(&client, &q).await,
            vec![
                r(&[Some("again"), Some(&again_rows), Some(&first_again), Some(&last), Some("0")]),
                r(&[Some("snap"), Some(&snap_rows), Some("0"), Some(&(n - 101).to_string()), Some(&snap_rows)]),
            ]
        );
        assert_eq!(
            rows(&client, &format!("SELECT note FROM {} WHERE id = 7", fx.table("snap"))).await,
            vec![r(&[Some("tab\there 7")])]
        );
        // A large streamed batch of updates of existing keys (one unnest upsert).
        let mut batch = Vec::new();
        for id in 0..n {
            batch.push(log.update(&s, None, row3(id, "upd", t("u"))));
        }
        batch.push(log.commit());
        apply(&mut sink, &batch).await;
        assert_eq!(
            rows(&client, &format!("SELECT count(*)::text FROM {} WHERE name = 'upd' AND note = 'u'", fx.table("snap"))).await,
            vec![r(&[Some(&n.to_string())])]
        );
    })
    .await;
}

#[tokio::test]
async fn large_snapshot_copies_fall_back_on_duplicates_keep_truncate_order_and_name_bad_values() {
    with_fx("bgcopy", "postgres", |fx| async move {
        let s = people("bg");
        let mut log = Log::new();
        let mut sink = fx.sink().await;
        let client = sql().await;
        let summary = |table: String| {
            let client = &client;
            async move {
                rows(
                    client,
                    &format!("SELECT count(*)::text, min(id)::text, max(id)::text FROM {table}"),
                )
                .await
            }
        };
        // The first flush finds the table empty: later snapshot rows go by direct COPY.
        apply(
            &mut sink,
            &[
                log.schema(&s),
                log.read(&s, row3(0, "first", t("n"))),
                log.commit(),
            ],
        )
        .await;
        // One batch of 12,000 rows (more than one flush), one of them a key already there
        // (id 0): that COPY fails, is rolled back to its savepoint and merged; the rest is
        // merged too, and a streamed update after the snapshot rows lands last.
        let mut batch = Vec::new();
        for id in 1..=12_000 {
            let row = if id == 6000 {
                row3(0, "dup", t("d"))
            } else {
                row3(id, "snap", t("s"))
            };
            batch.push(log.read(&s, row));
        }
        batch.push(log.update(&s, None, row3(3, "upd", t("u"))));
        batch.push(log.commit());
        apply(&mut sink, &batch).await;
        assert_eq!(
            summary(fx.table("bg")).await,
            vec![r(&[Some("12000"), Some("0"), Some("12000")])]
        );
        assert_eq!(
            rows(
                &client,
                &format!(
                    "SELECT id::text, name FROM {} WHERE id IN (0, 3, 6000) ORDER BY id",
                    fx.table("bg")
                )
            )
            .await,
            vec![r(&[Some("0"), Some("dup")]), r(&[Some("3"), Some("upd")])]
        );
        // Truncates in the middle of snapshot rows: rows before each are gone, rows after stay.
        let mut batch = vec![log.change(&s, Op::Truncate, None, None)];
        for id in 20_000..30_000 {
            batch.push(log.read(&s, row3(id, "again", Value::Null)));
        }
        batch.push(log.change(&s, Op::Truncate, None, None));
        for id in 50_000..50_010 {
            batch.push(log.read(&s, row3(id, "last", Value::Null)));
        }
        batch.push(log.commit());
        apply(&mut sink, &batch).await;
        assert_eq!(
            summary(fx.table("bg")).await,
            vec![r(&[Some("10"), Some("50000"), Some("50009")])]
        );

        // A value the column rejects, deep in a large COPY: a definite error naming table
        // and column, and nothing of that transaction lands.
        let strict = id_and_smallint("bgstrict");
        let ok = |id: i64| Row(vec![Value::Int(id), Value::Int(1)]);
        apply(
            &mut sink,
            &[log.schema(&strict), log.read(&strict, ok(0)), log.commit()],
        )
        .await;
        let committed = log.next - 1;
        let mut batch = Vec::new();
        for id in 1..=9000 {
            let row = if id == 6000 {
                Row(vec![Value::Int(id), Value::Int(70_000)])
            } else {
                ok(id)
            };
            batch.push(log.read(&strict, row));
        }
        batch.push(log.commit());
        let err = sink.apply(&batch).await.expect_err("out of range");
        assert_out_of_range_named(&err, "bgstrict");
        let mut sink = fx.sink().await;
        assert_eq!(sink.committed().await.expect("committed"), Some(committed));
        assert_eq!(
            summary(fx.table("bgstrict")).await,
            vec![r(&[Some("1"), Some("0"), Some("0")])]
        );
    })
    .await;
}

#[tokio::test]
async fn copy_streams_load_snapshot_rows_in_parallel_exactly_once_in_key_order() {
    with_fx("streams", "postgres", |fx| async move {
        let s = people("st");
        let mut log = Log::new();
        let mut cfg = fx.cfg();
        cfg.batch_rows = 3000;
        assert_eq!(cfg.copy_streams, 2);
        let connect = || PostgresSink::connect(cfg.clone(), fx.ctx());
        let mut sink = connect().await.expect("connect");
        let client = sql().await;
        let table = fx.table("st");
        let summary = || {
            let (client, table) = (&client, &table);
            async move {
                rows(
                    client,
                    &format!(
                        "SELECT count(*)::text, string_agg(id || '=' || name, ',' ORDER BY id) FILTER \
                         (WHERE id IN (7, 8, 1999, 2000, 4999, 5000, 11999)) FROM {table}"
                    ),
                )
                .await
            }
        };
        // The table is created in a transaction of its own (streams cannot see it before).
        apply(&mut sink, &[log.schema(&s), log.commit()]).await;
        let before = log.next - 1;
        // One transaction: 12,000 snapshot rows in four flushes of 3,000 (to the streams),
        // keys 2,000..=4,999 read again with newer values (in flight already: the streams
        // settle first, so the newer values win), then an update and a delete of keys among
        // them on the sink's own connection (after the streams committed).
        let mut batch = Vec::new();
        for id in 0..12_000 {
            batch.push(log.read(&s, row3(id, "snap", Value::Null)));
        }
        for id in 2_000..5_000 {
            batch.push(log.read(&s, row3(id, "again", Value::Null)));
        }
        batch.push(log.update(&s, None, row3(7, "upd", t("u"))));
        batch.push(log.delete(&s, row3(8, "snap", Value::Null)));
        batch.push(log.commit());
        // Up to the commit: the update made the streams settle (commit) before it ran, so
        // another session sees every snapshot row already, and neither the update nor the
        // delete (the sink's own transaction is still open). Without the streams it would
        // see nothing.
        let (head, tail) = batch.split_at(batch.len() - 1);
        apply(&mut sink, head).await;
        assert_eq!(
            summary().await,
            vec![r(&[
                Some("12000"),
                Some("7=snap,8=snap,1999=snap,2000=again,4999=again,5000=snap,11999=snap")
            ])]
        );
        apply(&mut sink, tail).await;
        let done = log.next - 1;
        assert_eq!(sink.committed().await.expect("committed"), Some(done));
        let expected = "7=upd,1999=snap,2000=again,4999=again,5000=snap,11999=snap";
        let got = summary().await;
        assert_eq!(got[0][0].as_deref(), Some("11999"));
        assert_eq!(got[0][1].as_deref(), Some(expected));

        // A crash after the streams committed but before the position: the same batch again
        // from the older position merges into the rows already there and changes nothing.
        client
            .execute(
                "UPDATE _weir.positions SET seq = $1 WHERE pipeline = $2",
                &[&(before as i64), &fx.pipeline],
            )
            .await
            .expect("move the position back");
        drop(sink);
        let mut sink = connect().await.expect("reconnect");
        assert_eq!(sink.committed().await.expect("committed"), Some(before));
        apply(&mut sink, &batch).await;
        assert_eq!(sink.committed().await.expect("committed"), Some(done));
        let again = summary().await;
        assert_eq!(again[0][0].as_deref(), Some("11999"));
        assert_eq!(again[0][1].as_deref(), Some(expected));

        // Another session holds an uncommitted row with a key of the next batch: the stream
        // gives up its lock wait after 5 s, runs the batch again after the others committed,
        // waits until that session commits, then merges; the snapshot value lands.
        let other = sql().await;
        other
            .batch_execute(&format!(
                "BEGIN; INSERT INTO {table} (id, name) VALUES (20500, 'other')"
            ))
            .await
            .expect("hold a key");
        let release = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(8000)).await;
            other.batch_execute("COMMIT").await.expect("commit");
        });
        let mut batch = Vec::new();
        for id in 20_000..23_000 {
            batch.push(log.read(&s, row3(id, "late", Value::Null)));
        }
        batch.push(log.commit());
        let started = std::time::Instant::now();
        apply(&mut sink, &batch).await;
        assert!(
            started.elapsed() >= std::time::Duration::from_secs(5),
            "the stream did not wait for the other session"
        );
        release.await.expect("release");
        assert_eq!(
            rows(
                &client,
                &format!(
                    "SELECT count(*)::text, min(name), max(name) FROM {table} WHERE id >= 20000"
                )
            )
            .await,
            vec![r(&[Some("3000"), Some("late"), Some("late")])]
        );
        assert_eq!(
            sink.committed().await.expect("committed"),
            Some(log.next - 1)
        );
    })
    .await;
}

#[tokio::test]
async fn tables_can_be_renamed_and_schemas_mirrored() {
    with_fx("rename", "postgres", |fx| async move {
        let mut cfg = fx.cfg();
        // `{schema}` becomes the source schema ("public" here, "sales" below).
        cfg.schema = format!("{}_{{schema}}", fx.schema);
        cfg.tables.insert("public.orig".into(), "renamed".into());
        let a = people("orig");
        let b = Arc::new(TableSchema {
            table: TableId::new("sales", "orig"),
            ..(*people("orig")).clone()
        });
        let mut log = Log::new();
        let mut sink = PostgresSink::connect(cfg, fx.ctx()).await.expect("connect");
        let result = sink
            .apply(&[
                log.schema(&a),
                log.insert(&a, row3(1, "pub", Value::Null)),
                log.schema(&b),
                log.insert(&b, row3(2, "sales", Value::Null)),
                log.commit(),
            ])
            .await;
        let client = sql().await;
        let public = format!(
            "{}.{}",
            quote_ident(&format!("{}_public", fx.schema)),
            quote_ident("renamed")
        );
        let sales = format!(
            "{}.{}",
            quote_ident(&format!("{}_sales", fx.schema)),
            quote_ident("orig")
        );
        let got_public = rows(&client, &format!("SELECT id::text, name FROM {public}")).await;
        let got_sales = rows(&client, &format!("SELECT id::text, name FROM {sales}")).await;
        for suffix in ["public", "sales"] {
            let _ = client
                .batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    quote_ident(&format!("{}_{suffix}", fx.schema))
                ))
                .await;
        }
        result.expect("apply");
        assert_eq!(got_public, vec![r(&[Some("1"), Some("pub")])]);
        assert_eq!(got_sales, vec![r(&[Some("2"), Some("sales")])]);
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

fn gen_name(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "\"",
        "\"\"",
        "`",
        " ",
        ";",
        "'",
        "é",
        "😀",
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
    ];
    let len = 1 + rng.next() % 5;
    let mut s: String = (0..len).map(|_| rng.pick(PIECES)).collect();
    // PostgreSQL identifiers are at most 63 bytes.
    while s.len() > 60 {
        s.pop();
    }
    s
}

#[tokio::test]
async fn quoting_is_injective_and_round_trips_hostile_names_through_the_server() {
    with_fx("quote", "postgres", |fx| async move {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        // Injective: distinct names never quote alike (and quoting can be undone).
        let mut seen = std::collections::HashMap::new();
        for _ in 0..5000 {
            let name = gen_name(&mut rng);
            let q = quote_ident(&name);
            let inner = &q[1..q.len() - 1];
            assert_eq!(inner.replace("\"\"", "\""), name, "quote_ident must round-trip");
            if let Some(prev) = seen.insert(q.clone(), name.clone()) {
                assert_eq!(prev, name, "two names quote to {q}");
            }
        }
        // Through the server: tables and columns with hostile names, created by the sink.
        let client = sql().await;
        for round in 0..6 {
            let table = format!("{}{round}", gen_name(&mut rng));
            let mut names: Vec<String> = Vec::new();
            while names.len() < 4 {
                let n = gen_name(&mut rng);
                if !names.contains(&n) {
                    names.push(n);
                }
            }
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
            let cols = rows(
                &client,
                &format!(
                    "SELECT attname FROM pg_attribute WHERE attrelid = '{}'::regclass AND attnum > 0 ORDER BY attnum",
                    fx.table(&table).replace('\'', "''")
                ),
            )
            .await;
            let want: Vec<Vec<Option<String>>> = names.iter().map(|n| vec![Some(n.clone())]).collect();
            assert_eq!(cols, want, "table {table:?}");
            let list: Vec<String> = names.iter().map(|n| quote_ident(n)).collect();
            let got = rows(&client, &format!("SELECT {} FROM {}", list.join(", "), fx.table(&table))).await;
            let expect: Vec<Option<String>> = updated
                .iter()
                .map(|v| match v {
                    Value::Text(s) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(got, vec![expect], "table {table:?}");
            // Each table's sink run used its own pipeline-wide position: reset it.
            client
                .execute("DELETE FROM _weir.positions WHERE pipeline = $1", &[&fx.pipeline])
                .await
                .expect("reset position");
        }
    })
    .await;
}

#[tokio::test]
async fn rejected_values_are_definite_errors_naming_table_and_column() {
    with_fx("reject", "postgres", |fx| async move {
        let s = id_and_smallint("strict");
        let mut log = Log::new();
        let mut sink = fx.sink().await;
        apply(
            &mut sink,
            &[
                log.schema(&s),
                log.insert(&s, Row(vec![Value::Int(1), Value::Int(1)])),
                log.commit(),
            ],
        )
        .await;
        let err = sink
            .apply(&[
                log.insert(&s, Row(vec![Value::Int(2), Value::Int(70_000)])),
                log.commit(),
            ])
            .await
            .expect_err("out of range");
        assert_out_of_range_named(&err, "strict");
        // The sink stays unusable; a new one resumes from the stored position.
        assert!(sink.apply(&[]).await.is_err());
        let mut sink = fx.sink().await;
        assert_eq!(sink.committed().await.expect("committed"), Some(3));
    })
    .await;
}

#[tokio::test]
async fn unreachable_target_is_transient_and_config_hides_the_password() {
    let fx = Fx {
        schema: "public".into(),
        pipeline: "p_unreach".into(),
        connector: "postgres",
    };
    let mut cfg = PostgresSinkConfig::new("postgres://weir:s3cret-pw@127.0.0.1:1/db");
    cfg.batch_rows = 5;
    let err = match PostgresSink::connect(cfg.clone(), fx.ctx()).await {
        Ok(_) => panic!("connected to port 1"),
        Err(e) => e,
    };
    assert!(matches!(err, ConnectorError::Transient { .. }), "{err:?}");
    let shown = format!("{err} {err:?} {cfg:?}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(format!("{cfg:?}").contains("<redacted>"));
    let findings = weir_postgres::sink::check(&cfg).await;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(findings[0].fatal && !findings[0].message.contains("s3cret-pw"));
    // A reachable target passes the preflight.
    let e = env();
    let ok = PostgresSinkConfig::new(format!(
        "postgres://{}:{}@{}:{}/{}",
        e.user, e.password, e.host, e.port, e.database
    ));
    assert_eq!(weir_postgres::sink::check(&ok).await, vec![]);
}

/// Throughput on pgbench-shaped and bulk backlogs (run with `--ignored --nocapture`); asserts
/// the final state so it cannot pass by doing nothing.
#[tokio::test]
#[ignore = "benchmark"]
async fn bench_apply_rates() {
    with_fx("bench", "postgres", |fx| async move {
        let filler = || ColumnType::Text { max_len: Some(84) };
        let accounts = schema(
            "accounts",
            1,
            vec![
                col("aid", int(), "integer"),
                col("bid", int(), "integer"),
                col("abalance", int(), "integer"),
                col("filler", filler(), "character(84)"),
            ],
            &[0],
        );
        let tellers = schema(
            "tellers",
            1,
            vec![
                col("tid", int(), "integer"),
                col("tbalance", int(), "integer"),
            ],
            &[0],
        );
        let history = schema(
            "history",
            1,
            vec![
                col("tid", int(), "integer"),
                col("aid", int(), "integer"),
                col("delta", int(), "integer"),
                col(
                    "mtime",
                    ColumnType::Timestamp,
                    "timestamp without time zone",
                ),
            ],
            &[],
        );
        let n_acc: i64 = 200_000;
        let mut log = Log::new();
        let mut sink = fx.sink().await;
        apply(
            &mut sink,
            &[
                log.schema(&accounts),
                log.schema(&tellers),
                log.schema(&history),
                log.commit(),
            ],
        )
        .await;
        // Snapshot.
        let start = std::time::Instant::now();
        let mut batch = Vec::with_capacity(16_384);
        for aid in 0..n_acc {
            batch.push(log.read(
                &accounts,
                Row(vec![
                    Value::Int(aid),
                    Value::Int(aid / 100_000),
                    Value::Int(0),
                    t(""),
                ]),
            ));
            if batch.len() == 16_383 {
                batch.push(log.commit());
                apply(&mut sink, &batch).await;
                batch.clear();
            }
        }
        batch.push(log.commit());
        apply(&mut sink, &batch).await;
        batch.clear();
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "snapshot: {n_acc} rows in {secs:.2}s = {:.0} rows/s",
            n_acc as f64 / secs
        );
        for tid in 0..10 {
            batch.push(log.insert(&tellers, Row(vec![Value::Int(tid), Value::Int(0)])));
        }
        batch.push(log.commit());
        apply(&mut sink, &batch).await;
        batch.clear();
        // pgbench-shaped: 3 changes + commit per transaction.
        let mut rng = Rng(42);
        let txns = 60_000;
        let mut entries = Vec::with_capacity(txns * 4);
        for i in 0..txns {
            let aid = (rng.next() % n_acc as u64) as i64;
            let tid = (rng.next() % 10) as i64;
            entries.push(log.update(
                &accounts,
                None,
                Row(vec![
                    Value::Int(aid),
                    Value::Int(0),
                    Value::Int(i as i64),
                    t(""),
                ]),
            ));
            entries.push(log.update(
                &tellers,
                None,
                Row(vec![Value::Int(tid), Value::Int(i as i64)]),
            ));
            entries.push(log.insert(
                &history,
                Row(vec![
                    Value::Int(tid),
                    Value::Int(aid),
                    Value::Int(1),
                    Value::Timestamp(ts(2024, 1, 1, 0, 0, 0, i as i64)),
                ]),
            ));
            entries.push(log.commit());
        }
        let events = txns * 3;
        let start = std::time::Instant::now();
        for chunk in entries.chunks(16_384) {
            apply(&mut sink, chunk).await;
        }
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "pgbench-shaped: {events} events in {secs:.2}s = {:.0} events/s",
            events as f64 / secs
        );
        // Bulk: 100-row transactions of updates.
        let mut entries = Vec::new();
        let bulk_txns = 2_000;
        for i in 0..bulk_txns {
            for j in 0..100 {
                let aid = (rng.next() % n_acc as u64) as i64;
                entries.push(log.update(
                    &accounts,
                    None,
                    Row(vec![
                        Value::Int(aid),
                        Value::Int(1),
                        Value::Int(i * 100 + j),
                        t("bulk"),
                    ]),
                ));
            }
            entries.push(log.commit());
        }
        let start = std::time::Instant::now();
        for chunk in entries.chunks(16_384) {
            apply(&mut sink, chunk).await;
        }
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "bulk: {} events in {secs:.2}s = {:.0} events/s",
            bulk_txns * 100,
            (bulk_txns * 100) as f64 / secs
        );
        let client = sql().await;
        assert_eq!(
            rows(
                &client,
                &format!("SELECT count(*)::text FROM {}", fx.table("history"))
            )
            .await,
            vec![r(&[Some(&txns.to_string())])]
        );
        assert_eq!(
            rows(
                &client,
                &format!("SELECT count(*)::text FROM {}", fx.table("accounts"))
            )
            .await,
            vec![r(&[Some(&n_acc.to_string())])]
        );
    })
    .await;
}

#[test]
fn config_keys_defaults_and_unknown_keys() {
    let cfg: PostgresSinkConfig = toml::from_str(
        "url = \"postgres://weir:pw@127.0.0.1/replica\"\nbatch_rows = 500\n[tables]\n\"public.a\" = \"b\"\n",
    )
    .expect("parses");
    assert_eq!(cfg.schema, "public");
    assert_eq!(cfg.batch_rows, 500);
    assert_eq!(cfg.batch_bytes, 32 << 20);
    assert_eq!(cfg.copy_streams, 2);
    assert_eq!(cfg.tables.get("public.a").map(String::as_str), Some("b"));
    let err = toml::from_str::<PostgresSinkConfig>("url = \"postgres://u@h/d\"\nbatchrows = 1\n")
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
        let client = sql().await;
        client
            .execute(
                "UPDATE _weir.positions SET seq = 99 WHERE pipeline = $1 AND sink = 'replica'",
                &[&fx.pipeline],
            )
            .await
            .expect("move the position");
        let err = sink
            .apply(&[log.insert(&s, row3(2, "b", Value::Null)), log.commit()])
            .await
            .expect_err("fenced");
        assert!(err.is_transient(), "{err}");
        assert!(err.to_string().contains("another weir process"), "{err}");
        drop(sink);
        let mut sink = fx.sink().await;
        assert_eq!(sink.committed().await.expect("committed"), Some(99));
        assert_eq!(
            rows(
                &client,
                &format!("SELECT id::text FROM {}", fx.table("fence"))
            )
            .await,
            vec![r(&[Some("1")])],
            "nothing of the fenced batch was written"
        );
    })
    .await;
}
