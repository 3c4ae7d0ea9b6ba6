//! The Kafka sink itself (see the crate docs for the design).

use crate::client::{self, Failure, QuietContext, REQUEST_TIMEOUT};
use crate::config::{Delivery, KafkaSinkConfig, render_topic};
use crate::murmur2::partition_for_key;
use async_trait::async_trait;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::BaseConsumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_api::{
    ChangeEvent, ConnectorError, Entry, LogEntry, Op, Result, Sink, SinkContext, TableId,
    render_envelope, render_key,
};

/// Header names (values are UTF-8 text).
pub mod headers {
    /// Debezium op code: `c`, `u`, `d`, `r`, `t` (a tombstone carries `d`).
    pub const OP: &str = "op";
    /// `schema.table`.
    pub const TABLE: &str = "table";
    /// The change's source position (`commit_lsn=0/1A lsn=0/18`, `binlog.000003:4711 gtid=..`).
    pub const SOURCE_POSITION: &str = "source.position";
    /// weir's log sequence of the change (for BEGIN/END records: of the first change / the commit).
    pub const SEQ: &str = "weir.seq";
    /// `pipeline/sink` of the writer.
    pub const SINK: &str = "weir.sink";
    /// Present (`true`) on tombstones.
    pub const TOMBSTONE: &str = "weir.tombstone";
}

/// How long a blocked producer queue, a flush or a commit may take before the sink gives up
/// with a transient error (the engine then rebuilds the sink and resumes).
const STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Idempotent mode: weir's default `socket.timeout.ms` (librdkafka's is 60 s), which is also
/// how long a restarted sink waits before it reads back and writes (see [`KafkaSink::settle`]).
const IDEMPOTENT_SOCKET_TIMEOUT_MS: u64 = 10_000;

/// What the offsets topic holds for one sink (key `pipeline/sink`).
#[derive(Debug, Serialize, Deserialize)]
struct OffsetRecord {
    /// Log sequence of the last source transaction written whole.
    seq: u64,
    pipeline: String,
    sink: String,
    /// When it was written (milliseconds since the Unix epoch).
    ts_ms: i64,
    /// Idempotent mode: the record is sent together with the batch's messages, not after
    /// their acknowledgements, so `seq` holds only once every message listed here is in its
    /// partition; until then the position is `prev`, whose messages were all acknowledged
    /// before this record was sent. Empty (and absent from older records, and in
    /// transactions mode): `seq` holds as it is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    expect: Vec<Expected>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prev: Option<u64>,
}

/// The last message the sink sent to a partition before writing an offset record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Expected {
    topic: String,
    partition: i32,
    seq: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    tombstone: bool,
}

struct TopicState {
    partitions: i32,
    /// Idempotent mode: the last (seq, tombstone) this sink wrote to each partition before
    /// this instance started; messages at or below it are already there and are skipped.
    last: Vec<Option<(u64, u8)>>,
}

/// The source transaction being written.
struct OpenTxn {
    /// Id in the transaction topic.
    id: String,
    /// Events per `schema.table`.
    counts: BTreeMap<String, u64>,
    events: u64,
}

/// The Kafka sink.
pub struct KafkaSink {
    cfg: KafkaSinkConfig,
    ctx: SinkContext,
    mode: Delivery,
    /// `pipeline/sink`: offsets key and `weir.sink` header.
    writer: String,
    /// `kafka sink <name>`, to start error messages.
    what: String,
    client_id: String,
    producer: ThreadedProducer<client::SinkContext>,
    reader: BaseConsumer<QuietContext>,
    admin: Option<AdminClient<DefaultClientContext>>,
    topics: HashMap<Arc<str>, TopicState>,
    table_topics: weir_api::FastMap<TableId, Arc<str>>,
    transaction_topic: Option<Arc<str>>,
    offsets_topic: Arc<str>,
    committed: Option<u64>,
    kafka_txn_open: bool,
    source_txn: Option<OpenTxn>,
    broken: Option<String>,
    value: Vec<u8>,
    /// Idempotent mode: until when the sink must neither read back a data partition nor
    /// write anything (`None` once waited for; see [`KafkaSink::settle`]).
    settle_until: Option<Instant>,
    /// Idempotent mode: the last (seq, tombstone) sent to each partition since the last
    /// acknowledged flush.
    unflushed: BTreeMap<(Arc<str>, i32), (u64, u8)>,
}

impl KafkaSink {
    /// Connects to the brokers, fences any earlier producer of this sink (transactions
    /// mode), makes sure the offsets topic exists and reads the sink's position back.
    /// Needs the multi-threaded tokio runtime (blocking librdkafka calls run in
    /// `block_in_place`).
    pub async fn connect(cfg: &KafkaSinkConfig, ctx: SinkContext) -> Result<KafkaSink> {
        // Any earlier producer of this sink is gone by now (a killed process, or a sink the
        // engine dropped before rebuilding it): the settle time counts from here.
        let started = Instant::now();
        let what = format!("kafka sink {}", ctx.sink);
        cfg.validate(&ctx.sink)?;
        let mode = match cfg.delivery {
            Some(d) => d,
            None => match crate::check::probe_transactions(cfg).await {
                Ok(Some(true)) | Ok(None) => Delivery::Transactions,
                Ok(Some(false)) => {
                    tracing::info!(sink = %ctx.sink, "broker has no transaction protocol (no EndTxn in ApiVersions): using delivery = \"idempotent\"");
                    Delivery::Idempotent
                }
                Err(e) => {
                    return Err(ConnectorError::transient(format!(
                        "{what}: cannot reach Kafka at {}: {e}; is the broker up?",
                        cfg.brokers
                    )));
                }
            },
        };
        let cfg = cfg.clone();
        tokio::task::block_in_place(|| Self::connect_blocking(cfg, ctx, mode, what, started))
    }

    fn connect_blocking(
        cfg: KafkaSinkConfig,
        ctx: SinkContext,
        mode: Delivery,
        what: String,
        started: Instant,
    ) -> Result<KafkaSink> {
        let client_id = format!("weir-{}-{}", ctx.pipeline, ctx.sink);
        let mut defaults: Vec<(&str, String)> = vec![
            ("client.id", client_id.clone()),
            ("enable.idempotence", "true".into()),
            ("acks", "all".into()),
            ("linger.ms", "10".into()),
            ("batch.size", "1000000".into()),
            ("batch.num.messages", "10000".into()),
            ("compression.type", "lz4".into()),
            ("queue.buffering.max.kbytes", "65536".into()),
            ("partitioner", "murmur2_random".into()),
            ("allow.auto.create.topics", "false".into()),
        ];
        match mode {
            Delivery::Transactions => {
                defaults.push(("transactional.id", client_id.clone()));
                defaults.push(("transaction.timeout.ms", "900000".into()));
            }
            Delivery::Idempotent => {
                defaults.push(("enable.gapless.guarantee", "true".into()));
                defaults.push(("message.timeout.ms", "120000".into()));
                defaults.push((
                    "socket.timeout.ms",
                    IDEMPOTENT_SOCKET_TIMEOUT_MS.to_string(),
                ));
            }
        }
        let pc = client::client_config(&cfg, &defaults);
        let producer: ThreadedProducer<client::SinkContext> = pc
            .create_with_context(client::SinkContext::default())
            .map_err(|e| client::config_error(&cfg, &what, e))?;
        let settle_until = match mode {
            Delivery::Transactions => None,
            Delivery::Idempotent => Some(started + settle_time(&cfg)),
        };
        if mode == Delivery::Transactions {
            producer
                .init_transactions(REQUEST_TIMEOUT * 2)
                .map_err(|e| {
                    client::kafka_error(
                        &cfg,
                        &format!("{what}: cannot start the transactional producer"),
                        &e,
                    )
                })?;
        }
        let reader = client::reader(&cfg, &client_id, &what)?;
        let offsets_topic: Arc<str> =
            render_topic(&cfg.offsets_topic, &ctx.pipeline, &ctx.sink, "", "").into();
        let transaction_topic: Option<Arc<str>> = cfg
            .transaction_topic
            .as_ref()
            .map(|t| render_topic(t, &ctx.pipeline, &ctx.sink, "", "").into());
        let mut sink = KafkaSink {
            writer: format!("{}/{}", ctx.pipeline, ctx.sink),
            cfg,
            ctx,
            mode,
            what,
            client_id,
            producer,
            reader,
            admin: None,
            topics: HashMap::new(),
            table_topics: weir_api::FastMap::new(),
            transaction_topic,
            offsets_topic,
            committed: None,
            kafka_txn_open: false,
            source_txn: None,
            broken: None,
            value: Vec::with_capacity(1024),
            settle_until,
            unflushed: BTreeMap::new(),
        };
        sink.committed = sink.read_committed()?;
        tracing::info!(sink = %sink.ctx.sink, delivery = mode.as_str(), committed = ?sink.committed, "kafka sink ready");
        Ok(sink)
    }

    /// The delivery mode in use.
    pub fn delivery(&self) -> Delivery {
        self.mode
    }

    /// Idempotent mode: waits until `socket.timeout.ms` has passed since this sink started,
    /// once, before the sink first reads back a data partition or writes anything.
    ///
    /// Without transactions nothing fences an earlier producer of this sink (a SIGKILLed
    /// process, or the producer of a sink the engine dropped): the produce requests it had
    /// sent but the broker had not yet applied still land when the broker gets to them. Had
    /// the sink read a partition's last message before such a request landed, it would send
    /// again what the request holds, and the late request would put a key's older values
    /// after its newer ones. The earlier producer was gone before this sink started, so its
    /// requests had reached the broker by then; the sink assumes a broker applies (or drops)
    /// a produce request within `socket.timeout.ms` of receiving it, the time after which the
    /// producer itself gives up waiting for the answer. A broker slower than that can still
    /// reorder after a crash; nothing but transactions can rule it out.
    ///
    /// A sink that creates the offsets topic itself does not wait: every producer of the sink
    /// makes sure of that topic (reading its position) before it writes anything, so there
    /// was none before (unless the topic was deleted since).
    fn settle(&mut self) {
        let Some(until) = self.settle_until.take() else {
            return;
        };
        let wait = until.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            tracing::info!(
                sink = %self.ctx.sink,
                wait_ms = wait.as_millis() as u64,
                "idempotent delivery: waiting out socket.timeout.ms since start-up for produce \
                 requests of an earlier producer of this sink to land before reading back \
                 partitions"
            );
            std::thread::sleep(wait);
        }
    }

    /// The sink's position from the offsets topic (read_committed).
    fn read_committed(&mut self) -> Result<Option<u64>> {
        let topic = self.offsets_topic.clone();
        let n = self.topic(&topic, true)?.partitions;
        let p = partition_for_key(self.writer.as_bytes(), n);
        let mut found: Option<OffsetRecord> = None;
        let (cfg, writer, what) = (&self.cfg, self.writer.as_bytes(), &self.what);
        client::scan_back(cfg, &self.reader, &topic, p, what, |m| {
            if m.key() != Some(writer) {
                return Ok(false);
            }
            let Some(payload) = m.payload() else {
                return Ok(false);
            };
            let rec: OffsetRecord = serde_json::from_slice(payload).map_err(|e| {
                ConnectorError::definite_from(
                    format!(
                        "{what}: the record at {topic} partition {p} offset {} is not a weir offset \
                         record; `offsets_topic` must be reserved for weir",
                        m.offset()
                    ),
                    e,
                )
            })?;
            found = Some(rec);
            Ok(true)
        })?;
        let Some(rec) = found else { return Ok(None) };
        // Idempotent mode: the record holds once the messages sent with it are all in.
        for x in &rec.expect {
            let last = self.last_written(&x.topic, x.partition)?;
            if last < Some((x.seq, u8::from(x.tombstone))) {
                tracing::info!(
                    sink = %self.ctx.sink,
                    seq = rec.seq,
                    prev = ?rec.prev,
                    topic = %x.topic,
                    partition = x.partition,
                    expected = x.seq,
                    ?last,
                    "the last offset record's messages did not all reach Kafka: resuming from the \
                     position before it"
                );
                return Ok(rec.prev);
            }
        }
        Ok(Some(rec.seq))
    }

    /// The last (seq, tombstone) this sink wrote to a partition, read back from its end.
    fn last_written(&self, topic: &str, partition: i32) -> Result<Option<(u64, u8)>> {
        let writer = self.writer.as_str();
        let mut last = None;
        client::scan_back(&self.cfg, &self.reader, topic, partition, &self.what, |m| {
            if client::header(m, headers::SINK) != Some(writer) {
                return Ok(false);
            }
            let seq = client::header(m, headers::SEQ).and_then(|s| s.parse::<u64>().ok());
            let Some(seq) = seq else { return Ok(false) };
            let idx = u8::from(client::header(m, headers::TOMBSTONE).is_some());
            last = last.max(Some((seq, idx)));
            Ok(true)
        })?;
        Ok(last)
    }

    /// The topic's state, creating the topic (or failing clearly) when it is missing.
    fn topic(&mut self, name: &Arc<str>, offsets: bool) -> Result<&TopicState> {
        if !self.topics.contains_key(name) {
            let state = self.open_topic(name, offsets)?;
            self.topics.insert(name.clone(), state);
        }
        Ok(&self.topics[name])
    }

    fn open_topic(&mut self, name: &str, offsets: bool) -> Result<TopicState> {
        let what = self.what.clone();
        let mut partitions =
            client::partition_count(&self.cfg, self.producer.client(), name, &what)?;
        if partitions.is_none() {
            if !self.cfg.create_topics {
                return Err(ConnectorError::definite(format!(
                    "{what}: topic {name} does not exist and create_topics = false; create it \
                     (e.g. kafka-topics.sh --create --topic {name}{}) or set create_topics = true",
                    if offsets {
                        " --config cleanup.policy=compact"
                    } else {
                        ""
                    }
                )));
            }
            if self.admin.is_none() {
                self.admin = Some(client::admin(&self.cfg, &self.client_id, &what)?);
            }
            let admin = self.admin.as_ref().expect("set above");
            let single = offsets || self.transaction_topic.as_deref() == Some(name);
            let n = if single { 1 } else { self.cfg.partitions };
            let created = client::create_topic(&self.cfg, admin, name, n, offsets, &what)?;
            if offsets && created && self.settle_until.take().is_some() {
                // No earlier producer of this sink exists: each one made sure of the offsets
                // topic before writing anything, and this sink has just created it.
                tracing::info!(
                    sink = %self.ctx.sink,
                    topic = name,
                    "idempotent delivery: created the offsets topic, so no earlier producer of \
                     this sink can have requests in flight: no settle wait"
                );
            }
            let deadline = Instant::now() + REQUEST_TIMEOUT;
            while partitions.is_none() {
                if Instant::now() > deadline {
                    return Err(ConnectorError::transient(format!(
                        "{what}: topic {name} was created but the brokers do not show it yet"
                    )));
                }
                std::thread::sleep(Duration::from_millis(100));
                partitions =
                    client::partition_count(&self.cfg, self.producer.client(), name, &what)?;
            }
        }
        let partitions = partitions.unwrap_or(1);
        let mut last = Vec::new();
        if self.mode == Delivery::Idempotent && !offsets {
            self.settle();
            for p in 0..partitions {
                last.push(self.last_written(name, p)?);
            }
            tracing::debug!(topic = name, ?last, "positions already written");
        }
        Ok(TopicState { partitions, last })
    }

    fn table_topic(&mut self, table: &TableId) -> Arc<str> {
        if let Some(t) = self.table_topics.get(table) {
            return t.clone();
        }
        let t: Arc<str> = render_topic(
            &self.cfg.topic,
            &self.ctx.pipeline,
            &self.ctx.sink,
            &table.schema,
            &table.name,
        )
        .into();
        self.table_topics.insert(table.clone(), t.clone());
        t
    }

    fn begin_kafka_txn(&mut self) -> Result<()> {
        if self.mode == Delivery::Transactions && !self.kafka_txn_open {
            self.producer.begin_transaction().map_err(|e| {
                client::kafka_error(
                    &self.cfg,
                    &format!("{}: cannot begin a Kafka transaction", self.what),
                    &e,
                )
            })?;
            self.kafka_txn_open = true;
        }
        Ok(())
    }

    fn failure_error(&self, f: Failure) -> ConnectorError {
        client::map_error(&self.cfg, &self.what, f.code, &f.message, false)
    }

    /// Sends one message (skipping it in idempotent mode when it is already in Kafka).
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        topic: &Arc<str>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        hdrs: OwnedHeaders,
        seq: u64,
        tombstone: bool,
    ) -> Result<()> {
        let offsets = Arc::ptr_eq(topic, &self.offsets_topic);
        // Before the first write (also of an offset record, which could otherwise land
        // before an earlier producer's late one).
        self.settle();
        let state = self.topic(topic, offsets)?;
        let n = state.partitions;
        let partition = match key {
            Some(k) => partition_for_key(k, n),
            // Keyless: spread by sequence, deterministically, so a resend lands where the
            // first send did (idempotent mode's skip relies on it).
            None => (seq % n as u64) as i32,
        };
        if let Some(Some(last)) = state.last.get(partition as usize)
            && (seq, u8::from(tombstone)) <= *last
        {
            return Ok(());
        }
        let mut rec = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .headers(hdrs);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        if let Some(v) = value {
            rec = rec.payload(v);
        }
        let mut since: Option<Instant> = None;
        loop {
            match self.producer.send(rec) {
                Ok(()) => {
                    if self.mode == Delivery::Idempotent && !offsets {
                        let at = (seq, u8::from(tombstone));
                        let slot = self
                            .unflushed
                            .entry((topic.clone(), partition))
                            .or_insert(at);
                        *slot = (*slot).max(at);
                    }
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    if let Some(f) = self.producer.context().failure() {
                        return Err(self.failure_error(f));
                    }
                    let start = *since.get_or_insert_with(Instant::now);
                    if start.elapsed() > STALL_TIMEOUT {
                        return Err(ConnectorError::transient(format!(
                            "{}: the producer queue stayed full for {}s: the brokers at {} do not \
                             accept messages; is the broker up?",
                            self.what,
                            STALL_TIMEOUT.as_secs(),
                            self.cfg.brokers
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => {
                    return Err(client::kafka_error(
                        &self.cfg,
                        &format!("{}: cannot send to {topic}", self.what),
                        &e,
                    ));
                }
            }
        }
    }

    fn headers(
        &self,
        op: &str,
        table: &str,
        position: &str,
        seq: u64,
        tombstone: bool,
    ) -> OwnedHeaders {
        let seq = seq.to_string();
        let mut h = OwnedHeaders::new_with_capacity(6)
            .insert(Header {
                key: headers::OP,
                value: Some(op),
            })
            .insert(Header {
                key: headers::TABLE,
                value: Some(table),
            })
            .insert(Header {
                key: headers::SOURCE_POSITION,
                value: Some(position),
            })
            .insert(Header {
                key: headers::SEQ,
                value: Some(seq.as_str()),
            })
            .insert(Header {
                key: headers::SINK,
                value: Some(self.writer.as_str()),
            });
        if tombstone {
            h = h.insert(Header {
                key: headers::TOMBSTONE,
                value: Some("true"),
            });
        }
        h
    }

    fn write_change(
        &mut self,
        e: &LogEntry,
        event: &ChangeEvent,
        schema: &weir_api::TableSchema,
    ) -> Result<()> {
        self.begin_kafka_txn()?;
        let table = event.table.to_string();
        if self.source_txn.is_none() {
            let id = match event.txid {
                Some(x) => x.to_string(),
                None => format!("weir-{}", e.seq),
            };
            if let Some(tt) = self.transaction_topic.clone() {
                let v = serde_json::json!({
                    "status": "BEGIN", "id": id, "ts_ms": event.ts_ms,
                    "event_count": null, "data_collections": null,
                });
                let key = serde_json::json!({ "id": id }).to_string();
                let h = self.headers("BEGIN", "", &event.position.to_string(), e.seq, false);
                self.send(
                    &tt,
                    Some(key.as_bytes()),
                    Some(v.to_string().as_bytes()),
                    h,
                    e.seq,
                    false,
                )?;
            }
            self.source_txn = Some(OpenTxn {
                id,
                counts: BTreeMap::new(),
                events: 0,
            });
        }
        let mut order = None;
        if let Some(t) = self.source_txn.as_mut() {
            let in_table = t.counts.entry(table.clone()).or_default();
            *in_table += 1;
            t.events += 1;
            order = Some((t.events, *in_table));
        }
        let topic = self.table_topic(&event.table);
        let key = render_key(schema, event)?;
        let mut value = std::mem::take(&mut self.value);
        value.clear();
        let mut rendered =
            render_envelope(&mut value, &self.ctx.source, schema, event, e.staged_ms);
        // With a transaction topic, Debezium's `transaction` block ties each event to its
        // BEGIN/END records: {"id", "total_order", "data_collection_order"}.
        if rendered.is_ok()
            && self.transaction_topic.is_some()
            && let (Some(t), Some((total, in_table))) = (&self.source_txn, order)
            && value.last() == Some(&b'}')
        {
            value.pop();
            let block = serde_json::json!({
                "id": t.id, "total_order": total, "data_collection_order": in_table,
            });
            value.extend_from_slice(b",\"transaction\":");
            rendered = serde_json::to_writer(&mut value, &block)
                .map_err(|e| ConnectorError::definite_from("kafka sink: rendering", e));
            value.push(b'}');
        }
        let position = event.position.to_string();
        let result = rendered.and_then(|()| {
            let h = self.headers(event.op.code(), &table, &position, e.seq, false);
            self.send(&topic, key.as_deref(), Some(&value), h, e.seq, false)
        });
        self.value = value;
        result?;
        if event.op == Op::Delete && self.cfg.tombstones && key.is_some() {
            let h = self.headers("d", &table, &position, e.seq, true);
            self.send(&topic, key.as_deref(), None, h, e.seq, true)?;
        }
        Ok(())
    }

    fn write_commit(&mut self, e: &LogEntry, info: &weir_api::CommitInfo) -> Result<()> {
        let Some(txn) = self.source_txn.take() else {
            return Ok(());
        };
        if let Some(tt) = self.transaction_topic.clone() {
            self.begin_kafka_txn()?;
            let collections: Vec<_> = txn
                .counts
                .iter()
                .map(|(t, n)| serde_json::json!({ "data_collection": t, "event_count": n }))
                .collect();
            let v = serde_json::json!({
                "status": "END", "id": txn.id, "ts_ms": info.ts_ms,
                "event_count": txn.events, "data_collections": collections,
            });
            let key = serde_json::json!({ "id": txn.id }).to_string();
            let h = self.headers("END", "", &info.position.to_string(), e.seq, false);
            self.send(
                &tt,
                Some(key.as_bytes()),
                Some(v.to_string().as_bytes()),
                h,
                e.seq,
                false,
            )?;
        }
        Ok(())
    }

    /// Makes everything up to the commit at `seq` durable together with `seq`.
    fn finish(&mut self, seq: u64) -> Result<()> {
        // Idempotent mode: the record goes out right behind the messages, and one flush waits
        // for both; until all the messages it lists are in, a reader takes `prev`.
        let (expect, prev) = match self.mode {
            Delivery::Transactions => (Vec::new(), None),
            Delivery::Idempotent => {
                let expect: Vec<Expected> = self
                    .unflushed
                    .iter()
                    .map(|((t, p), (s, tomb))| Expected {
                        topic: t.to_string(),
                        partition: *p,
                        seq: *s,
                        tombstone: *tomb != 0,
                    })
                    .collect();
                (expect, self.committed)
            }
        };
        let rec = OffsetRecord {
            seq,
            pipeline: self.ctx.pipeline.clone(),
            sink: self.ctx.sink.clone(),
            ts_ms: now_ms(),
            expect,
            prev,
        };
        let value = serde_json::to_vec(&rec)
            .map_err(|e| ConnectorError::definite_from("cannot encode the offset record", e))?;
        let key = self.writer.clone();
        let topic = self.offsets_topic.clone();
        match self.mode {
            Delivery::Transactions => {
                self.begin_kafka_txn()?;
                // The transaction's messages are acknowledged before its offset record is
                // produced, so the record is never in the log without them: a reader that
                // sees aborted messages (read_uncommitted, or librdkafka's mock cluster, which
                // hides nothing) and takes the record as the position loses nothing. Costs
                // one produce round trip per Kafka commit.
                if let Err(e) = self.flush(seq) {
                    let what = format!(
                        "{}: cannot commit the Kafka transaction up to log sequence {seq}: {e}",
                        self.what
                    );
                    return Err(if e.is_transient() {
                        ConnectorError::transient(what)
                    } else {
                        ConnectorError::definite(what)
                    });
                }
                let h = OwnedHeaders::new();
                self.send(&topic, Some(key.as_bytes()), Some(&value), h, seq, false)?;
                self.kafka_txn_open = false;
                if let Err(e) = self.producer.commit_transaction(STALL_TIMEOUT) {
                    if let KafkaError::Transaction(t) = &e
                        && t.txn_requires_abort()
                    {
                        let _ = self.producer.abort_transaction(REQUEST_TIMEOUT);
                    }
                    let what = format!(
                        "{}: cannot commit the Kafka transaction up to log sequence {seq}",
                        self.what
                    );
                    let mut err = client::kafka_error(&self.cfg, &what, &e);
                    // A definite cause behind a failed message (fenced, ACL, size) wins.
                    if let Some(f) = self.producer.context().failure() {
                        let cause = client::map_error(&self.cfg, &what, f.code, &f.message, false);
                        if !cause.is_transient() {
                            err = cause;
                        }
                    }
                    return Err(err);
                }
            }
            Delivery::Idempotent => {
                let h = OwnedHeaders::new();
                self.send(&topic, Some(key.as_bytes()), Some(&value), h, seq, false)?;
                self.flush(seq)?;
                self.unflushed.clear();
            }
        }
        self.committed = Some(seq);
        Ok(())
    }

    fn flush(&self, seq: u64) -> Result<()> {
        let res = self.producer.flush(STALL_TIMEOUT);
        if let Some(f) = self.producer.context().failure() {
            return Err(self.failure_error(f));
        }
        res.map_err(|e| {
            ConnectorError::transient(format!(
                "{}: messages up to log sequence {seq} were not acknowledged within {}s ({e}); \
                 is the broker at {} up?",
                self.what,
                STALL_TIMEOUT.as_secs(),
                self.cfg.brokers
            ))
        })
    }

    fn apply_blocking(&mut self, entries: &[LogEntry]) -> Result<()> {
        if let Some(b) = &self.broken {
            return Err(ConnectorError::transient(format!(
                "{}: an earlier error ({b}) left the sink unusable; it must be rebuilt",
                self.what
            )));
        }
        let last_commit = entries
            .iter()
            .rposition(|e| matches!(e.entry, Entry::Commit(_)));
        for (i, e) in entries.iter().enumerate() {
            // Already in Kafka (an engine resuming from an older cursor).
            if self.committed.is_some_and(|c| e.seq <= c) {
                continue;
            }
            match &e.entry {
                Entry::Schema(_) => {}
                Entry::Change(event, schema) => self.write_change(e, event, schema)?,
                Entry::Commit(info) => {
                    self.write_commit(e, info)?;
                    if Some(i) == last_commit {
                        self.finish(e.seq)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn committed(&mut self) -> Result<Option<u64>> {
        Ok(self.committed)
    }

    async fn apply(&mut self, entries: &[LogEntry]) -> Result<()> {
        tokio::task::block_in_place(|| {
            let res = self.apply_blocking(entries);
            if let Err(e) = &res {
                if self.broken.is_none() {
                    self.broken = Some(e.to_string());
                }
                if self.kafka_txn_open {
                    self.kafka_txn_open = false;
                    let _ = self.producer.abort_transaction(REQUEST_TIMEOUT);
                }
            }
            res
        })
    }
}

/// Idempotent mode's settle time: the producer's `socket.timeout.ms` (librdkafka has
/// checked the value by the time this runs).
fn settle_time(cfg: &KafkaSinkConfig) -> Duration {
    let ms = cfg
        .properties
        .get("socket.timeout.ms")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(IDEMPOTENT_SOCKET_TIMEOUT_MS);
    Duration::from_millis(ms)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
