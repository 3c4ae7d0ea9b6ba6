//! Integration tests of weir-kafka: `transactions` mode against librdkafka's in-process mock
//! cluster, `idempotent` mode against the tansu broker on 127.0.0.1:9092 (scripts/services.sh).

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_api::{
    ChangeEvent, Column, ColumnType, CommitInfo, ConnectorError, Entry, LogEntry, Lsn, Op,
    PgPosition, Row, Sink, SinkContext, SourceInfo, SourcePosition, TableId, TableSchema, Value,
    render_envelope,
};
use weir_kafka::murmur2::partition_for_key;
use weir_kafka::{Delivery, KafkaSink, KafkaSinkConfig};

const TANSU: &str = "127.0.0.1:9092";

// ---------------------------------------------------------------- helpers

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}_{}_{}", std::process::id(), n % 1_000_000_000)
}

fn ctx(pipeline: &str, sink: &str) -> SinkContext {
    SinkContext {
        pipeline: pipeline.into(),
        sink: sink.into(),
        source: SourceInfo {
            connector: "postgres".into(),
            name: pipeline.into(),
            db: "shop".into(),
        },
    }
}

fn col(name: &str, ty: ColumnType) -> Column {
    Column {
        name: name.into(),
        ty,
        source_type: "bigint".into(),
        nullable: false,
    }
}

fn orders() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        table: TableId::new("public", "orders"),
        version: 1,
        columns: vec![
            col(
                "id",
                ColumnType::Int {
                    bits: 64,
                    unsigned: false,
                },
            ),
            col(
                "qty",
                ColumnType::Int {
                    bits: 64,
                    unsigned: false,
                },
            ),
        ],
        primary_key: vec![0],
    })
}

fn keyless() -> Arc<TableSchema> {
    Arc::new(TableSchema {
        table: TableId::new("public", "audit"),
        version: 1,
        columns: vec![col("msg", ColumnType::Text { max_len: None })],
        primary_key: vec![],
    })
}

/// Builds a staged log: dense sequences, like the engine's.
struct Log {
    entries: Vec<LogEntry>,
    txid: u64,
}

impl Log {
    fn new() -> Self {
        Log {
            entries: Vec::new(),
            txid: 100,
        }
    }
    fn next_seq(&self) -> u64 {
        self.entries.len() as u64 + 1
    }
    fn push(&mut self, entry: Entry) {
        let seq = self.next_seq();
        self.entries.push(LogEntry {
            seq,
            staged_ms: 1_700_000_000_000 + seq as i64,
            entry,
        });
    }
    fn pos(&self) -> SourcePosition {
        let l = Lsn(0x1000 + self.next_seq());
        SourcePosition::Postgres(PgPosition {
            commit_lsn: l,
            lsn: l,
        })
    }
    fn change(&mut self, schema: &Arc<TableSchema>, op: Op, row: Vec<Value>) {
        let (before, after) = match op {
            Op::Delete => (Some(Row(row)), None),
            Op::Truncate => (None, None),
            _ => (None, Some(Row(row))),
        };
        let ev = ChangeEvent {
            table: schema.table.to_shared(),
            schema_version: schema.version,
            op,
            before,
            after,
            position: self.pos(),
            txid: Some(self.txid),
            ts_ms: 1_700_000_000_000,
        };
        self.push(Entry::Change(ev, schema.clone()));
    }
    fn commit(&mut self, events: u64) {
        let info = CommitInfo {
            position: self.pos(),
            txid: Some(self.txid),
            ts_ms: 1_700_000_000_000,
            events,
        };
        self.push(Entry::Commit(info));
        self.txid += 1;
    }
    /// A source transaction of `n` inserts/updates on orders, ids from `first`.
    fn txn(&mut self, first: i64, n: i64) {
        for i in 0..n {
            let op = if i % 3 == 2 { Op::Update } else { Op::Insert };
            self.change(&orders(), op, vec![Value::Int(first + i), Value::Int(i)]);
        }
        self.commit(n as u64);
    }
    /// Index in `entries` of the entry with log sequence `seq`.
    fn from(&self, committed: Option<u64>) -> usize {
        committed.map_or(0, |s| s as usize)
    }
}

#[derive(Debug, Clone)]
struct Msg {
    partition: i32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: BTreeMap<String, String>,
}

impl Msg {
    fn h(&self, k: &str) -> &str {
        self.headers.get(k).map(String::as_str).unwrap_or("")
    }
    fn seq(&self) -> u64 {
        self.h("weir.seq").parse().unwrap()
    }
}

/// Every committed message of `topic`, per partition in offset order (read_committed).
fn read_topic(brokers: &str, topic: &str) -> Vec<Msg> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts = md.topics()[0].partitions().len();
    assert!(parts > 0, "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..parts {
        tpl.add_partition_offset(topic, p as i32, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut eof = std::collections::HashSet::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while eof.len() < parts {
        assert!(Instant::now() < deadline, "timed out reading {topic}");
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                let mut headers = BTreeMap::new();
                if let Some(hs) = m.headers() {
                    for h in hs.iter() {
                        headers.insert(
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        );
                    }
                }
                out.push(Msg {
                    partition: m.partition(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
        }
    }
    out
}

fn mock_cluster(topics: &[(&str, i32)]) -> MockCluster<'static, DefaultProducerContext> {
    let mock = MockCluster::new(3).expect("librdkafka mock cluster");
    for (t, n) in topics {
        mock.create_topic(t, *n, 1).unwrap();
    }
    mock
}

fn mock_config(
    mock: &MockCluster<'static, DefaultProducerContext>,
    pipeline: &str,
) -> KafkaSinkConfig {
    let mut cfg = KafkaSinkConfig::new(mock.bootstrap_servers());
    cfg.delivery = Some(Delivery::Transactions);
    cfg.topic = format!("{pipeline}.{{schema}}.{{table}}");
    cfg.offsets_topic = format!("{pipeline}_offsets");
    // The mock cluster has no CreateTopics: tests create topics through the mock API.
    cfg.create_topics = false;
    cfg
}

/// Fails loudly when tansu is not up.
fn tansu_config(pipeline: &str) -> KafkaSinkConfig {
    if std::net::TcpStream::connect_timeout(&TANSU.parse().unwrap(), Duration::from_secs(3))
        .is_err()
    {
        panic!(
            "no Kafka broker at {TANSU}: the idempotent-mode tests need tansu; start it with \
             scripts/services.sh"
        );
    }
    let mut cfg = KafkaSinkConfig::new(TANSU);
    cfg.topic = format!("{pipeline}.{{schema}}.{{table}}");
    cfg.offsets_topic = format!("{pipeline}_offsets");
    cfg
}

fn rendered(log: &Log, seq: u64, pipeline: &str) -> Vec<u8> {
    let e = &log.entries[seq as usize - 1];
    let Entry::Change(ev, schema) = &e.entry else {
        panic!("seq {seq} is not a change")
    };
    let mut v = Vec::new();
    render_envelope(&mut v, &ctx(pipeline, "ev").source, schema, ev, e.staged_ms).unwrap();
    v
}

/// Changes of `log`, by seq, each exactly once in `msgs` (tombstones aside), no others.
fn assert_exactly_once(log: &Log, msgs: &[Msg], pipeline: &str) {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for m in msgs.iter().filter(|m| m.value.is_some()) {
        *seen.entry(m.seq()).or_default() += 1;
        assert_eq!(
            m.value.as_deref().unwrap(),
            rendered(log, m.seq(), pipeline).as_slice()
        );
    }
    let changes: Vec<u64> = log
        .entries
        .iter()
        .filter(|e| matches!(e.entry, Entry::Change(..)))
        .map(|e| e.seq)
        .collect();
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "duplicated seqs: {dups:?}");
    let missing: Vec<_> = changes.iter().filter(|s| !seen.contains_key(s)).collect();
    assert!(missing.is_empty(), "missing seqs: {missing:?}");
    assert_eq!(seen.len(), changes.len());
}

// ---------------------------------------------------------------- partitioner

#[test]
fn partitioner_matches_librdkafka_murmur2_random() {
    let mock = mock_cluster(&[("parts", 7)]);
    let p: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let keys: Vec<String> = (0..50).map(|i| format!("{{\"id\":{i}}}")).collect();
    for k in &keys {
        p.send(
            rdkafka::producer::BaseRecord::<str, str>::to("parts")
                .key(k)
                .payload("x"),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
    let msgs = read_topic(&mock.bootstrap_servers(), "parts");
    assert_eq!(msgs.len(), 50);
    let mut used = std::collections::HashSet::new();
    for m in &msgs {
        let key = m.key.as_deref().unwrap();
        assert_eq!(
            m.partition,
            partition_for_key(key, 7),
            "key {}",
            String::from_utf8_lossy(key)
        );
        used.insert(m.partition);
    }
    assert!(
        used.len() > 3,
        "50 keys should spread over partitions: {used:?}"
    );
}

// ---------------------------------------------------------------- transactions mode (mock)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_messages_keys_headers_tombstones() {
    let pipeline = unique("msgs");
    let (orders_t, audit_t) = (
        format!("{pipeline}.public.orders"),
        format!("{pipeline}.public.audit"),
    );
    let mock = mock_cluster(&[
        (&orders_t, 4),
        (&audit_t, 2),
        (&format!("{pipeline}_offsets"), 1),
    ]);
    let cfg = mock_config(&mock, &pipeline);
    let mut sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    assert_eq!(sink.delivery(), Delivery::Transactions);
    assert_eq!(sink.committed().await.unwrap(), None);

    let mut log = Log::new();
    log.push(Entry::Schema(orders()));
    log.change(&orders(), Op::Insert, vec![Value::Int(7), Value::Int(1)]); // 2
    log.change(&orders(), Op::Update, vec![Value::Int(7), Value::Int(2)]); // 3
    log.change(&orders(), Op::Delete, vec![Value::Int(7), Value::Int(2)]); // 4
    log.change(&keyless(), Op::Insert, vec![Value::Text("hello".into())]); // 5
    log.change(&orders(), Op::Insert, vec![Value::Int(8), Value::Int(5)]); // 6
    log.commit(5); // 7
    sink.apply(&log.entries).await.unwrap();
    assert_eq!(sink.committed().await.unwrap(), Some(7));

    let msgs = read_topic(&mock.bootstrap_servers(), &orders_t);
    // insert, update, delete, tombstone for id 7 (same partition, in order), insert id 8.
    assert_eq!(msgs.len(), 5, "{msgs:?}");
    let k7 = br#"{"id":7}"#.to_vec();
    let p7 = partition_for_key(&k7, 4);
    let of7: Vec<&Msg> = msgs
        .iter()
        .filter(|m| m.key.as_deref() == Some(&k7[..]))
        .collect();
    assert_eq!(of7.len(), 4);
    for m in &of7 {
        assert_eq!(m.partition, p7);
    }
    assert_eq!(
        of7[0].value.as_deref().unwrap(),
        rendered(&log, 2, &pipeline).as_slice()
    );
    assert_eq!(
        of7[1].value.as_deref().unwrap(),
        rendered(&log, 3, &pipeline).as_slice()
    );
    assert_eq!(
        of7[2].value.as_deref().unwrap(),
        rendered(&log, 4, &pipeline).as_slice()
    );
    let v: serde_json::Value = serde_json::from_slice(of7[2].value.as_deref().unwrap()).unwrap();
    assert_eq!(v["op"], "d");
    assert_eq!(v["before"]["id"], 7);
    assert_eq!(v["source"]["table"], "orders");
    assert_eq!(of7[3].value, None, "a tombstone follows the delete");
    assert_eq!(of7[3].h("weir.tombstone"), "true");
    assert_eq!(of7[3].h("op"), "d");
    assert_eq!(of7[0].h("op"), "c");
    assert_eq!(of7[1].h("op"), "u");
    assert_eq!(of7[0].h("table"), "public.orders");
    assert_eq!(of7[0].h("weir.seq"), "2");
    assert_eq!(of7[0].h("weir.sink"), format!("{pipeline}/ev"));
    assert_eq!(of7[0].h("source.position"), "commit_lsn=0/1002 lsn=0/1002");
    let m8 = msgs
        .iter()
        .find(|m| m.key.as_deref() == Some(br#"{"id":8}"#))
        .unwrap();
    assert_eq!(m8.partition, partition_for_key(br#"{"id":8}"#, 4));

    let audit = read_topic(&mock.bootstrap_servers(), &audit_t);
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].key, None, "keyless table: null key");
    assert_eq!(
        audit[0].value.as_deref().unwrap(),
        rendered(&log, 5, &pipeline).as_slice()
    );
    assert_eq!(audit[0].partition, 5 % 2, "keyless: seq % partitions");

    // A new sink reads its position back.
    drop(sink);
    let mut again = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    assert_eq!(again.committed().await.unwrap(), Some(7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_tombstones_when_disabled() {
    let pipeline = unique("notomb");
    let t = format!("{pipeline}.public.orders");
    let mock = mock_cluster(&[(&t, 2), (&format!("{pipeline}_offsets"), 1)]);
    let mut cfg = mock_config(&mock, &pipeline);
    cfg.tombstones = false;
    let mut sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    let mut log = Log::new();
    log.change(&orders(), Op::Insert, vec![Value::Int(1), Value::Int(1)]);
    log.change(&orders(), Op::Delete, vec![Value::Int(1), Value::Int(1)]);
    log.commit(2);
    sink.apply(&log.entries).await.unwrap();
    let msgs = read_topic(&mock.bootstrap_servers(), &t);
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    assert!(msgs.iter().all(|m| m.value.is_some()));
    assert_eq!(msgs[1].h("op"), "d");
}

/// What a crash left behind: the sink's position then, and the highest log sequence handed
/// to the sink before it (messages in `(committed, sent]` may have reached the brokers
/// without being committed).
#[derive(Debug)]
struct Crash {
    committed: Option<u64>,
    sent: u64,
}

/// Applies `log` in batches of `batch` entries (batches end anywhere, also inside source
/// transactions), dropping the sink ("crash") after every `crash_every` calls once its
/// position moved since the last crash, and rebuilding it from `committed()` each time.
async fn run_with_crashes(
    cfg: &KafkaSinkConfig,
    pipeline: &str,
    log: &Log,
    batch: usize,
    crash_every: usize,
) -> (Vec<Crash>, Option<u64>) {
    let mut crashes = Vec::new();
    let mut sink = KafkaSink::connect(cfg, ctx(pipeline, "ev")).await.unwrap();
    let mut expect_committed = sink.committed().await.unwrap();
    let mut from = log.from(expect_committed);
    let mut calls = 0;
    let mut at_last_crash = expect_committed;
    while from < log.entries.len() {
        let end = (from + batch).min(log.entries.len());
        let chunk = &log.entries[from..end];
        sink.apply(chunk).await.unwrap();
        if let Some(c) = chunk
            .iter()
            .rev()
            .find(|e| matches!(e.entry, Entry::Commit(_)))
        {
            expect_committed = Some(c.seq);
        }
        assert_eq!(sink.committed().await.unwrap(), expect_committed);
        from = end;
        calls += 1;
        if calls % crash_every == 0 && expect_committed != at_last_crash && from < log.entries.len()
        {
            // Let the open transaction's messages reach the brokers, then crash.
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(sink);
            crashes.push(Crash {
                committed: expect_committed,
                sent: end as u64,
            });
            at_last_crash = expect_committed;
            sink = KafkaSink::connect(cfg, ctx(pipeline, "ev")).await.unwrap();
            let c = sink.committed().await.unwrap();
            assert_eq!(
                c,
                expect_committed,
                "committed() after crash {}",
                crashes.len()
            );
            from = log.from(c);
        }
    }
    (crashes, sink.committed().await.unwrap())
}

fn test_log(sizes: &[i64]) -> Log {
    let mut log = Log::new();
    log.push(Entry::Schema(orders()));
    let mut id = 0;
    for &n in sizes {
        log.txn(id, n);
        id += n;
    }
    log
}

/// The mock cluster implements the transaction protocol's requests but not read_committed
/// isolation (its LSO is the high watermark and it keeps no aborted-transaction index), so
/// messages of a Kafka transaction that a crash left open stay visible there. A real broker
/// hides them. So: every change must be there; a change may appear more than once only if a
/// crash left it in an uncommitted Kafka transaction, and then at most once per such crash.
fn assert_exactly_once_modulo_mock_aborts(
    log: &Log,
    msgs: &[Msg],
    crashes: &[Crash],
    pipeline: &str,
) {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for m in msgs.iter().filter(|m| m.value.is_some()) {
        *seen.entry(m.seq()).or_default() += 1;
        assert_eq!(
            m.value.as_deref().unwrap(),
            rendered(log, m.seq(), pipeline).as_slice()
        );
    }
    for e in &log.entries {
        if !matches!(e.entry, Entry::Change(..)) {
            continue;
        }
        let n = seen.get(&e.seq).copied().unwrap_or(0);
        let open_at_crash = crashes
            .iter()
            .filter(|c| c.committed.unwrap_or(0) < e.seq && e.seq <= c.sent)
            .count();
        assert!(n >= 1, "seq {} is missing", e.seq);
        assert!(
            n <= 1 + open_at_crash,
            "seq {} appears {n} times, {open_at_crash} crash(es) left it uncommitted",
            e.seq
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_exactly_once_across_crashes() {
    let pipeline = unique("eos");
    let t = format!("{pipeline}.public.orders");
    let offsets = format!("{pipeline}_offsets");
    let mock = mock_cluster(&[(&t, 3), (&offsets, 1)]);
    let cfg = mock_config(&mock, &pipeline);
    let log = test_log(&[1, 5, 40, 2, 3, 120, 7, 1, 1, 60, 9, 4, 33, 2]);
    let (crashes, committed) = run_with_crashes(&cfg, &pipeline, &log, 17, 3).await;
    assert!(crashes.len() >= 4, "crashes: {crashes:?}");
    assert_eq!(committed, Some(log.entries.len() as u64));
    let msgs = read_topic(&mock.bootstrap_servers(), &t);
    assert_exactly_once_modulo_mock_aborts(&log, &msgs, &crashes, &pipeline);
    // Per partition, log order (a resend after a crash starts over from a commit).
    let commits: Vec<u64> = log
        .entries
        .iter()
        .filter(|e| matches!(e.entry, Entry::Commit(_)))
        .map(|e| e.seq)
        .collect();
    // Every offset record the sink ever committed names a Commit: a source transaction is
    // never cut by a Kafka commit.
    let recs = read_topic(&mock.bootstrap_servers(), &offsets);
    assert!(recs.len() >= 8, "{}", recs.len());
    for r in &recs {
        let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        let seq = v["seq"].as_u64().unwrap();
        assert!(
            commits.contains(&seq),
            "offset record {seq} is not at a commit"
        );
        assert_eq!(r.key.as_deref(), Some(format!("{pipeline}/ev").as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_resume_after_a_crash_inside_a_source_transaction() {
    let pipeline = unique("split");
    let t = format!("{pipeline}.public.orders");
    let mock = mock_cluster(&[(&t, 2), (&format!("{pipeline}_offsets"), 1)]);
    let cfg = mock_config(&mock, &pipeline);
    let mut log = Log::new();
    log.txn(0, 3); // seqs 1..=4
    log.txn(10, 6); // seqs 5..=11
    let mut sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    sink.apply(&log.entries[..7]).await.unwrap(); // first txn + 3 events of the second
    assert_eq!(sink.committed().await.unwrap(), Some(4));
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(sink);
    let mut sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    assert_eq!(sink.committed().await.unwrap(), Some(4));
    sink.apply(&log.entries[4..9]).await.unwrap(); // still inside the second transaction
    assert_eq!(sink.committed().await.unwrap(), Some(4));
    sink.apply(&log.entries[9..]).await.unwrap();
    assert_eq!(sink.committed().await.unwrap(), Some(11));
    drop(sink);
    let crashes = [Crash {
        committed: Some(4),
        sent: 7,
    }];
    assert_exactly_once_modulo_mock_aborts(
        &log,
        &read_topic(&mock.bootstrap_servers(), &t),
        &crashes,
        &pipeline,
    );
    let sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    let mut sink = sink;
    assert_eq!(sink.committed().await.unwrap(), Some(11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_producer_is_a_definite_error() {
    // Both sinks derive the same transactional.id; a real broker bumps the epoch on the
    // second init_transactions and answers the first producer PRODUCER_FENCED. The mock
    // cluster hands out a new producer id instead of fencing, so the broker's answer is
    // injected here.
    let pipeline = unique("fence");
    let t = format!("{pipeline}.public.orders");
    let mock = mock_cluster(&[(&t, 1), (&format!("{pipeline}_offsets"), 1)]);
    let cfg = mock_config(&mock, &pipeline);
    let mut log = Log::new();
    log.txn(0, 2);
    log.txn(5, 2);
    let mut first = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    first.apply(&log.entries[..3]).await.unwrap();
    let mut second = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    assert_eq!(second.committed().await.unwrap(), Some(3));
    mock.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    let err = first.apply(&log.entries[3..]).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Definite { .. }), "{err:?}");
    assert!(err.to_string().contains("fenced"), "{err}");
    assert!(err.to_string().contains("a second weir process"), "{err}");
    // The failed sink stays failed until rebuilt.
    assert!(first.apply(&log.entries[3..]).await.is_err());
    second.apply(&log.entries[3..]).await.unwrap();
    assert_eq!(second.committed().await.unwrap(), Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commit_is_transient_and_resumes_from_committed() {
    let pipeline = unique("ambig");
    let t = format!("{pipeline}.public.orders");
    let mock = mock_cluster(&[(&t, 2), (&format!("{pipeline}_offsets"), 1)]);
    let cfg = mock_config(&mock, &pipeline);
    let log = test_log(&[2, 3, 4]); // commits at 4, 8, 13
    let mut sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    sink.apply(&log.entries[..4]).await.unwrap();
    // The coordinator refuses to add the transaction's partitions: the Kafka transaction
    // fails and cannot commit. (Failing EndTxn itself would not do here: the mock shows the
    // aborted offset record to read_committed readers, a real broker does not.)
    mock.request_errors(
        RDKafkaApiKey::AddPartitionsToTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_TXN_STATE; 3],
    );
    let err = sink.apply(&log.entries[4..8]).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("up to log sequence 8"), "{err}");
    drop(sink);
    mock.clear_request_errors(RDKafkaApiKey::AddPartitionsToTxn);
    let mut sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    assert_eq!(
        sink.committed().await.unwrap(),
        Some(4),
        "the failed transaction is not counted"
    );
    sink.apply(&log.entries[4..]).await.unwrap();
    assert_eq!(sink.committed().await.unwrap(), Some(13));
    let crashes = [Crash {
        committed: Some(4),
        sent: 8,
    }];
    assert_exactly_once_modulo_mock_aborts(
        &log,
        &read_topic(&mock.bootstrap_servers(), &t),
        &crashes,
        &pipeline,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_topic_has_begin_and_end_with_counts() {
    let pipeline = unique("txtopic");
    let tt = format!("{pipeline}.transactions");
    let mock = mock_cluster(&[
        (&format!("{pipeline}.public.orders"), 2),
        (&format!("{pipeline}.public.audit"), 1),
        (&format!("{pipeline}_offsets"), 1),
        (&tt, 1),
    ]);
    let mut cfg = mock_config(&mock, &pipeline);
    cfg.transaction_topic = Some("{pipeline}.transactions".into());
    let mut sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    let mut log = Log::new();
    log.change(&orders(), Op::Insert, vec![Value::Int(1), Value::Int(1)]);
    log.change(&keyless(), Op::Insert, vec![Value::Text("a".into())]);
    log.change(&orders(), Op::Insert, vec![Value::Int(2), Value::Int(1)]);
    log.commit(3); // txid 100
    log.commit(0); // an empty transaction: no records
    log.change(&orders(), Op::Update, vec![Value::Int(2), Value::Int(9)]);
    log.commit(1); // txid 102
    sink.apply(&log.entries).await.unwrap();
    let msgs = read_topic(&mock.bootstrap_servers(), &tt);
    let vals: Vec<serde_json::Value> = msgs
        .iter()
        .map(|m| serde_json::from_slice(m.value.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(vals.len(), 4, "{vals:?}");
    assert_eq!(vals[0]["status"], "BEGIN");
    assert_eq!(vals[0]["id"], "100");
    assert_eq!(vals[1]["status"], "END");
    assert_eq!(vals[1]["id"], "100");
    assert_eq!(vals[1]["event_count"], 3);
    assert_eq!(
        vals[1]["data_collections"],
        serde_json::json!([
            {"data_collection": "public.audit", "event_count": 1},
            {"data_collection": "public.orders", "event_count": 2},
        ])
    );
    assert_eq!(msgs[1].key.as_deref(), Some(br#"{"id":"100"}"#.as_slice()));
    assert_eq!(vals[2]["status"], "BEGIN");
    assert_eq!(vals[3]["id"], "102");
    assert_eq!(vals[3]["event_count"], 1);
    // Each event carries Debezium's transaction block, ordered within the transaction.
    let blocks = |topic: &str| -> Vec<serde_json::Value> {
        read_topic(&mock.bootstrap_servers(), topic)
            .iter()
            .filter_map(|m| m.value.as_deref())
            .map(|v| serde_json::from_slice::<serde_json::Value>(v).unwrap()["transaction"].clone())
            .collect()
    };
    let mut orders_blocks = blocks(&format!("{pipeline}.public.orders"));
    orders_blocks.sort_by_key(|b| {
        (
            b["id"].as_str().unwrap().to_string(),
            b["total_order"].as_u64(),
        )
    });
    assert_eq!(
        orders_blocks,
        [
            serde_json::json!({"id": "100", "total_order": 1, "data_collection_order": 1}),
            serde_json::json!({"id": "100", "total_order": 3, "data_collection_order": 2}),
            serde_json::json!({"id": "102", "total_order": 1, "data_collection_order": 1}),
        ]
    );
    assert_eq!(
        blocks(&format!("{pipeline}.public.audit")),
        [serde_json::json!({"id": "100", "total_order": 2, "data_collection_order": 1})]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_reports_transactions_on_the_mock_cluster() {
    let pipeline = unique("check");
    let mock = mock_cluster(&[]);
    let cfg = mock_config(&mock, &pipeline);
    let f =
        weir_kafka::check::preflight(&cfg, &pipeline, "ev", &[TableId::new("public", "x")]).await;
    let text: Vec<&str> = f.iter().map(|f| f.message.as_str()).collect();
    assert!(
        text.iter()
            .any(|m| m.contains("supports delivery modes transactions and idempotent")),
        "{text:?}"
    );
    // create_topics = false and nothing exists: the offsets topic and the table topic are named.
    assert!(
        f.iter().any(|f| f.fatal
            && f.message
                .contains(&format!("{pipeline}_offsets does not exist"))),
        "{text:?}"
    );
    assert!(
        f.iter().any(|f| f.fatal
            && f.message
                .contains(&format!("{pipeline}.public.x does not exist"))),
        "{text:?}"
    );

    let mut down = cfg.clone();
    down.brokers = "127.0.0.1:1".into();
    let f = weir_kafka::check::preflight(&down, &pipeline, "ev", &[]).await;
    assert!(
        f.iter()
            .any(|f| f.fatal && f.message.contains("cannot reach Kafka at 127.0.0.1:1")),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_topic_with_creation_disabled_is_a_clear_error() {
    let pipeline = unique("nocreate");
    let mock = mock_cluster(&[]);
    let cfg = mock_config(&mock, &pipeline);
    let err = match KafkaSink::connect(&cfg, ctx(&pipeline, "ev")).await {
        Ok(_) => panic!("connect must fail without the offsets topic"),
        Err(e) => e,
    };
    assert!(matches!(err, ConnectorError::Definite { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!(
            "topic {pipeline}_offsets does not exist and create_topics = false"
        )),
        "{err}"
    );
    mock.create_topic(&format!("{pipeline}_offsets"), 1, 1)
        .unwrap();
    let mut sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    let mut log = Log::new();
    log.txn(0, 1);
    let err = sink.apply(&log.entries).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "topic {pipeline}.public.orders does not exist and create_topics = false"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_is_transient() {
    let mut cfg = KafkaSinkConfig::new("127.0.0.1:1");
    cfg.offsets_topic = unique("down");
    let err = match KafkaSink::connect(&cfg, ctx("down", "ev")).await {
        Ok(_) => panic!("nothing listens on 127.0.0.1:1"),
        Err(e) => e,
    };
    assert!(err.is_transient(), "{err:?}");
    assert!(
        err.to_string()
            .contains("cannot reach Kafka at 127.0.0.1:1"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_property_is_definite_and_hides_secrets() {
    let mock = mock_cluster(&[]);
    let mut cfg = mock_config(&mock, "badprop");
    cfg.properties
        .insert("sasl.password".into(), "hunter2-secret".into());
    cfg.properties
        .insert("linger.ms".into(), "not-a-number".into());
    let err = match KafkaSink::connect(&cfg, ctx("badprop", "ev")).await {
        Ok(_) => panic!("linger.ms is invalid"),
        Err(e) => e,
    };
    assert!(!err.is_transient(), "{err:?}");
    assert!(err.to_string().contains("linger.ms"), "{err}");
    assert!(!err.to_string().contains("hunter2-secret"), "{err}");
    assert!(!format!("{cfg:?}").contains("hunter2-secret"));
}

// ---------------------------------------------------------------- idempotent mode (tansu)

/// Idempotent mode: crashes while batches end inside source transactions (their messages
/// already in Kafka), rebuilds, re-applies overlapping entries: each change exactly once.
async fn idempotent_crash_case(cfg: &KafkaSinkConfig, brokers: &str, pipeline: &str) {
    let t = format!("{pipeline}.public.orders");
    let mut log = test_log(&[3, 30, 1, 50, 2, 8, 25, 4]);
    log.change(&orders(), Op::Delete, vec![Value::Int(0), Value::Int(0)]);
    log.change(&keyless(), Op::Insert, vec![Value::Text("x".into())]);
    log.commit(2);
    let (crashes, committed) = run_with_crashes(cfg, pipeline, &log, 13, 2).await;
    assert!(crashes.len() >= 4, "crashes: {crashes:?}");
    // Some crash left part of a source transaction in Kafka, so the skip was exercised.
    assert!(
        crashes
            .iter()
            .any(|c| c.sent > c.committed.unwrap_or(0) + 1),
        "{crashes:?}"
    );
    assert_eq!(committed, Some(log.entries.len() as u64));
    let audit = read_topic(brokers, &format!("{pipeline}.public.audit"));
    assert_eq!(audit.len(), 1);
    let msgs = read_topic(brokers, &t);
    let all: Vec<Msg> = msgs.iter().chain(&audit).cloned().collect();
    assert_exactly_once(&log, &all, pipeline);
    assert_eq!(
        msgs.iter().filter(|m| m.value.is_none()).count(),
        1,
        "one tombstone"
    );
    // Per partition, log order.
    let mut last: HashMap<i32, u64> = HashMap::new();
    for m in msgs.iter().filter(|m| m.value.is_some()) {
        let prev = last.insert(m.partition, m.seq()).unwrap_or(0);
        assert!(m.seq() > prev, "partition {} out of order", m.partition);
    }
    // A sink that has to re-send from an older point (its offset record lost) skips what
    // each partition already holds: drop the offset by using a new offsets topic.
    let mut cfg2 = cfg.clone();
    cfg2.offsets_topic = format!("{pipeline}_offsets2");
    let mut sink = KafkaSink::connect(&cfg2, ctx(pipeline, "ev"))
        .await
        .unwrap();
    assert_eq!(sink.committed().await.unwrap(), None);
    sink.apply(&log.entries).await.unwrap();
    drop(sink);
    assert_eq!(
        read_topic(brokers, &t).len(),
        msgs.len(),
        "re-sending everything added nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_restart_duplicates_nothing_on_mock() {
    let pipeline = unique("idemmock");
    let mock = mock_cluster(&[
        (&format!("{pipeline}.public.orders"), 3),
        (&format!("{pipeline}.public.audit"), 2),
        (&format!("{pipeline}_offsets"), 1),
        (&format!("{pipeline}_offsets2"), 1),
    ]);
    let mut cfg = mock_config(&mock, &pipeline);
    cfg.delivery = Some(Delivery::Idempotent);
    idempotent_crash_case(&cfg, &mock.bootstrap_servers(), &pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_idempotent_restart_duplicates_nothing() {
    let pipeline = unique("idem");
    let cfg = tansu_config(&pipeline);
    let sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    assert_eq!(sink.delivery(), Delivery::Idempotent, "tansu has no EndTxn");
    drop(sink);
    idempotent_crash_case(&cfg, TANSU, &pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_creates_missing_topics() {
    let pipeline = unique("create");
    let mut cfg = tansu_config(&pipeline);
    cfg.partitions = 5;
    let mut sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    let mut log = Log::new();
    log.txn(0, 20);
    sink.apply(&log.entries).await.unwrap();
    let t = format!("{pipeline}.public.orders");
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", TANSU)
        .create()
        .unwrap();
    let md = c.fetch_metadata(Some(&t), Duration::from_secs(10)).unwrap();
    assert_eq!(md.topics()[0].partitions().len(), 5);
    let msgs = read_topic(TANSU, &t);
    assert_exactly_once(&log, &msgs, &pipeline);
    for m in &msgs {
        assert_eq!(m.partition, partition_for_key(m.key.as_deref().unwrap(), 5));
    }
    // Creation disabled: a topic that does not exist is a clear, definite error.
    let mut cfg2 = cfg.clone();
    cfg2.create_topics = false;
    cfg2.topic = format!("{pipeline}.none.{{table}}");
    let mut sink = KafkaSink::connect(&cfg2, ctx(&pipeline, "ev2"))
        .await
        .unwrap();
    let err = sink.apply(&log.entries).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Definite { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!(
            "topic {pipeline}.none.orders does not exist and create_topics = false"
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_preflight_reports_idempotent_only() {
    let pipeline = unique("tcheck");
    let mut cfg = tansu_config(&pipeline);
    let f = weir_kafka::check::preflight(&cfg, &pipeline, "ev", &[]).await;
    assert!(
        f.iter()
            .any(|f| !f.fatal && f.message.contains("idempotent only")),
        "{f:?}"
    );
    assert!(f.iter().all(|f| !f.fatal), "{f:?}");
    cfg.delivery = Some(Delivery::Transactions);
    let f = weir_kafka::check::preflight(&cfg, &pipeline, "ev", &[]).await;
    assert!(
        f.iter()
            .any(|f| f.fatal && f.message.contains("set delivery = \"idempotent\"")),
        "{f:?}"
    );
}

/// Idempotent mode writes the offset record right behind a batch's messages: a restarted
/// sink takes the record's position only when every message it lists is in its partition,
/// else the position before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_offset_record_holds_only_with_its_messages() {
    let pipeline = unique("idemrec");
    let t = format!("{pipeline}.public.orders");
    let offsets = format!("{pipeline}_offsets");
    let mock = mock_cluster(&[(&t, 3), (&offsets, 1)]);
    let mut cfg = mock_config(&mock, &pipeline);
    cfg.delivery = Some(Delivery::Idempotent);
    let log = test_log(&[3, 4]);
    let mut sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    sink.apply(&log.entries).await.unwrap();
    let committed = sink.committed().await.unwrap();
    assert_eq!(committed, Some(log.entries.len() as u64));
    drop(sink);
    // The record the sink wrote lists the last message of each partition it wrote.
    let recs = read_topic(&mock.bootstrap_servers(), &offsets);
    let last: serde_json::Value =
        serde_json::from_slice(recs.last().unwrap().value.as_ref().unwrap()).unwrap();
    let expect = last["expect"].as_array().expect("an expect list");
    let msgs = read_topic(&mock.bootstrap_servers(), &t);
    let mut per_partition: BTreeMap<i32, u64> = BTreeMap::new();
    for m in &msgs {
        let s = per_partition.entry(m.partition).or_default();
        *s = (*s).max(m.seq());
    }
    let listed: BTreeMap<i32, u64> = expect
        .iter()
        .map(|x| {
            (
                x["partition"].as_i64().unwrap() as i32,
                x["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, per_partition, "{last}");

    // Records as a crashed sink could leave them: one whose messages are in (past the end
    // of the log: its position is taken), then one listing a message that never arrived.
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .create()
        .unwrap();
    let key = format!("{pipeline}/ev");
    let (p, s) = per_partition.iter().next().map(|(p, s)| (*p, *s)).unwrap();
    let record = |seq: u64, prev: u64, expected: u64| {
        serde_json::json!({
            "seq": seq, "pipeline": pipeline, "sink": "ev", "ts_ms": 0, "prev": prev,
            "expect": [{"topic": t, "partition": p, "seq": expected}],
        })
        .to_string()
    };
    let write = |v: String| {
        producer
            .send(
                rdkafka::producer::BaseRecord::to(&offsets)
                    .key(&key)
                    .payload(&v),
            )
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    };
    let committed = committed.unwrap();
    write(record(committed + 10, committed, s));
    let mut sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    assert_eq!(
        sink.committed().await.unwrap(),
        Some(committed + 10),
        "the listed message is there"
    );
    drop(sink);
    write(record(committed + 20, committed + 10, s + 1_000));
    let mut sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    assert_eq!(
        sink.committed().await.unwrap(),
        Some(committed + 10),
        "a listed message is missing: the position before the record"
    );
}

/// A produce request of an earlier producer of the sink (a SIGKILLed weir's last one) that
/// the broker applies only after the new sink started, here a second after: it lands before
/// the sink reads the partitions back (the sink waits `socket.timeout.ms` first), so the sink
/// skips what it holds: each change once, per partition in log order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_late_request_of_an_earlier_producer_is_not_duplicated() {
    let pipeline = unique("idemlate");
    let t = format!("{pipeline}.public.orders");
    let mock = mock_cluster(&[(&t, 3), (&format!("{pipeline}_offsets"), 1)]);
    let mut cfg = mock_config(&mock, &pipeline);
    cfg.delivery = Some(Delivery::Idempotent);
    let log = test_log(&[5, 4]);
    // The late request: the first source transaction's messages as the earlier sink sent them.
    let late: Vec<(Vec<u8>, Vec<u8>, u64)> = log
        .entries
        .iter()
        .take_while(|e| !matches!(e.entry, Entry::Commit(_)))
        .filter_map(|e| match &e.entry {
            Entry::Change(ev, schema) => Some((
                weir_api::render_key(schema, ev).unwrap().unwrap(),
                rendered(&log, e.seq, &pipeline),
                e.seq,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(late.len(), 5);
    let mut sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    let brokers = mock.bootstrap_servers();
    let (writer, topic) = (format!("{pipeline}/ev"), t.clone());
    let earlier = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        for (key, value, seq) in &late {
            let seq = seq.to_string();
            let hs = rdkafka::message::OwnedHeaders::new()
                .insert(rdkafka::message::Header {
                    key: "weir.seq",
                    value: Some(seq.as_str()),
                })
                .insert(rdkafka::message::Header {
                    key: "weir.sink",
                    value: Some(writer.as_str()),
                });
            producer
                .send(
                    rdkafka::producer::BaseRecord::to(&topic)
                        .partition(partition_for_key(key, 3))
                        .key(key)
                        .payload(value)
                        .headers(hs),
                )
                .unwrap();
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    });
    sink.apply(&log.entries).await.unwrap();
    earlier.join().unwrap();
    let msgs = read_topic(&mock.bootstrap_servers(), &t);
    assert_exactly_once(&log, &msgs, &pipeline);
    let mut last: HashMap<i32, u64> = HashMap::new();
    for m in &msgs {
        let prev = last.insert(m.partition, m.seq()).unwrap_or(0);
        assert!(
            m.seq() > prev,
            "partition {} out of order: {msgs:?}",
            m.partition
        );
    }
}

/// Transactions mode: the offset record must never reach the log before the transaction's
/// messages do. librdkafka sends each partition's batches on the connection to its leader, so
/// without waiting for the messages' acknowledgements the record (another partition, maybe
/// another broker) can land first; a crash then leaves a record whose messages never arrive.
/// A real broker aborts that transaction and hides the record with it, but a broker that
/// shows aborted messages (librdkafka's mock: the SIGKILL acceptance test) would hand the next
/// sink a position past lost messages. Here the data partition's leader is down while the
/// sink commits: its offset record must not appear until the messages are in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_offset_record_never_lands_before_its_messages() {
    let pipeline = unique("recfirst");
    let t = format!("{pipeline}.public.orders");
    let offsets = format!("{pipeline}_offsets");
    let mock = mock_cluster(&[(&t, 1), (&offsets, 1)]);
    mock.partition_leader(&t, 0, Some(2)).unwrap();
    mock.partition_leader(&offsets, 0, Some(1)).unwrap();
    mock.coordinator(
        rdkafka::mocking::MockCoordinator::Transaction(format!("weir-{pipeline}-ev")),
        3,
    )
    .unwrap();
    let cfg = mock_config(&mock, &pipeline);
    let log = test_log(&[3, 4]);
    let first_commit = log
        .entries
        .iter()
        .find(|e| matches!(e.entry, Entry::Commit(_)))
        .unwrap()
        .seq;
    let split = log.from(Some(first_commit));
    let mut sink = KafkaSink::connect(&cfg, ctx(&pipeline, "ev"))
        .await
        .unwrap();
    sink.apply(&log.entries[..split]).await.unwrap();
    assert_eq!(sink.committed().await.unwrap(), Some(first_commit));

    // The data partition's leader goes away; the second transaction's commit cannot finish.
    mock.broker_down(2).unwrap();
    let rest = log.entries[split..].to_vec();
    let stuck = tokio::spawn(async move {
        let r = sink.apply(&rest).await;
        drop(sink);
        r
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    // (Watermarks from the offsets partition's leader: a full read would trip over the
    // broker that is down.)
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .create()
        .unwrap();
    let (_, high) = c
        .fetch_watermarks(&offsets, 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        high, 1,
        "an offset record reached the log while its transaction's messages could not"
    );
    // Once the leader is back, the commit completes, record last.
    mock.broker_up(2).unwrap();
    tokio::time::timeout(Duration::from_secs(100), stuck)
        .await
        .expect("the commit did not complete once the broker was back")
        .unwrap()
        .unwrap();
    let msgs = read_topic(&mock.bootstrap_servers(), &t);
    assert_eq!(msgs.len(), 7, "{msgs:?}");
    assert_eq!(read_topic(&mock.bootstrap_servers(), &offsets).len(), 2);
}
