//! librdkafka plumbing: client configuration, the producer context, error mapping, topic
//! management and reading partitions backwards.

use crate::config::KafkaSinkConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use weir_api::{ConnectorError, Result};

/// How long one metadata, watermark or admin request may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The first failure the producer reported asynchronously (delivery report or fatal error).
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub code: Option<RDKafkaErrorCode>,
    pub message: String,
}

/// Producer context: forwards librdkafka's log to `tracing` and keeps the first failure.
#[derive(Default)]
pub(crate) struct SinkContext {
    failure: Mutex<Option<Failure>>,
}

impl SinkContext {
    fn record(&self, f: Failure) {
        let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(f);
        }
    }

    pub fn failure(&self) -> Option<Failure> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        log_line(level, fac, msg);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if matches!(code, Some(RDKafkaErrorCode::Fatal)) {
            self.record(Failure {
                code,
                message: format!("fatal producer error: {reason}"),
            });
        }
        tracing::warn!(target: "librdkafka", error = %error, "{reason}");
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            self.record(Failure {
                code: e.rdkafka_error_code(),
                message: format!(
                    "delivery to {} partition {} failed: {e}",
                    m.topic(),
                    m.partition()
                ),
            });
        }
    }
}

/// Context of the helper clients (consumer, admin): logs through `tracing`.
#[derive(Default)]
pub(crate) struct QuietContext;

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        log_line(level, fac, msg);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", error = %error, "{reason}");
    }
}
impl rdkafka::consumer::ConsumerContext for QuietContext {}

fn log_line(level: RDKafkaLogLevel, fac: &str, msg: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", "{fac} {msg}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", "{fac} {msg}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "{fac} {msg}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac} {msg}"),
    }
}

/// `bootstrap.servers` plus the user's properties (which win over `defaults`).
pub(crate) fn client_config(cfg: &KafkaSinkConfig, defaults: &[(&str, String)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", cfg.brokers.trim());
    for (k, v) in defaults {
        if !cfg.properties.contains_key(*k) {
            c.set(*k, v);
        }
    }
    for (k, v) in &cfg.properties {
        c.set(k, v);
    }
    c
}

/// A read_committed consumer for reading back positions (never commits offsets).
pub(crate) fn reader(
    cfg: &KafkaSinkConfig,
    client_id: &str,
    what: &str,
) -> Result<BaseConsumer<QuietContext>> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", cfg.brokers.trim());
    for (k, v) in &cfg.properties {
        // Producer-only settings only make the consumer warn.
        if !is_producer_only(k) {
            c.set(k, v);
        }
    }
    c.set("client.id", format!("{client_id}-reader"))
        .set("group.id", format!("{client_id}-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "false");
    c.create_with_context(QuietContext)
        .map_err(|e| config_error(cfg, what, e))
}

/// An admin client for creating topics.
pub(crate) fn admin(
    cfg: &KafkaSinkConfig,
    client_id: &str,
    what: &str,
) -> Result<AdminClient<DefaultClientContext>> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", cfg.brokers.trim());
    for (k, v) in &cfg.properties {
        if !is_producer_only(k) {
            c.set(k, v);
        }
    }
    c.set("client.id", format!("{client_id}-admin"));
    c.create().map_err(|e| config_error(cfg, what, e))
}

fn is_producer_only(k: &str) -> bool {
    matches!(
        k,
        "transactional.id"
            | "transaction.timeout.ms"
            | "enable.idempotence"
            | "enable.gapless.guarantee"
            | "queue.buffering.max.messages"
            | "queue.buffering.max.kbytes"
            | "queue.buffering.max.ms"
            | "linger.ms"
            | "message.send.max.retries"
            | "retries"
            | "retry.backoff.ms"
            | "compression.codec"
            | "compression.type"
            | "compression.level"
            | "batch.num.messages"
            | "batch.size"
            | "delivery.report.only.error"
            | "sticky.partitioning.linger.ms"
            | "partitioner"
            | "acks"
            | "request.required.acks"
            | "message.timeout.ms"
            | "delivery.timeout.ms"
            | "max.in.flight.requests.per.connection"
            | "max.in.flight"
            | "request.timeout.ms"
    )
}

/// A client could not be built from the configuration (a bad property): definite.
pub(crate) fn config_error(cfg: &KafkaSinkConfig, what: &str, e: KafkaError) -> ConnectorError {
    ConnectorError::definite(cfg.redact(&format!(
        "{what}: invalid Kafka client configuration: {e}; fix `[sinks.properties]` or the sink settings"
    )))
}

/// Maps a librdkafka error to transient or definite, with what to do.
pub(crate) fn map_error(
    cfg: &KafkaSinkConfig,
    what: &str,
    code: Option<RDKafkaErrorCode>,
    detail: &str,
    fatal: bool,
) -> ConnectorError {
    use RDKafkaErrorCode as C;
    let detail = cfg.redact(detail);
    let definite = |hint: &str| ConnectorError::definite(format!("{what}: {detail}; {hint}"));
    match code {
        Some(C::Fenced | C::ProducerFenced | C::InvalidProducerEpoch) => definite(
            "another producer with the same transactional.id fenced this one: a second weir \
             process is running this pipeline's sink; stop it (only one weir may run a pipeline)",
        ),
        Some(
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::GroupAuthorizationFailed,
        ) => definite("grant the sink's Kafka principal the missing ACL"),
        Some(C::SaslAuthenticationFailed | C::Authentication) => {
            definite("check the sasl.* / ssl.* properties")
        }
        Some(C::InvalidTransactionTimeout) => definite(
            "the broker's transaction.max.timeout.ms is lower than the producer's \
             transaction.timeout.ms; set `transaction.timeout.ms` under [sinks.properties]",
        ),
        Some(C::MessageSizeTooLarge) => definite(
            "a change event is larger than the broker or producer allows; raise the topic's \
             max.message.bytes and the `message.max.bytes` property",
        ),
        Some(C::UnsupportedVersion | C::UnsupportedFeature) => definite(
            "the broker does not support what this delivery mode needs; set \
             delivery = \"idempotent\" for brokers without transactions",
        ),
        Some(C::InvalidTopic | C::PolicyViolation) => {
            definite("fix the topic name or the topic settings")
        }
        Some(C::InvalidConfig) => definite("fix the sink settings"),
        _ if fatal => ConnectorError::transient(format!(
            "{what}: {detail}; the producer hit a fatal error and is rebuilt"
        )),
        _ => ConnectorError::transient(format!("{what}: {detail}")),
    }
}

pub(crate) fn kafka_error(cfg: &KafkaSinkConfig, what: &str, e: &KafkaError) -> ConnectorError {
    let fatal = match e {
        KafkaError::Transaction(t) => t.is_fatal(),
        _ => false,
    };
    match e {
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => {
            ConnectorError::definite(cfg.redact(&format!(
                "{what}: {e}; fix `[sinks.properties]` or the sink settings"
            )))
        }
        _ => map_error(cfg, what, e.rdkafka_error_code(), &e.to_string(), fatal),
    }
}

/// Partition count of `topic`, or `None` when it does not exist.
pub(crate) fn partition_count<C: ClientContext>(
    cfg: &KafkaSinkConfig,
    client: &rdkafka::client::Client<C>,
    topic: &str,
    what: &str,
) -> Result<Option<i32>> {
    let md = client
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| {
            ConnectorError::transient(cfg.redact(&format!(
                "{what}: cannot fetch metadata of topic {topic} from {}: {e}; is the broker up?",
                cfg.brokers
            )))
        })?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if let Some(err) = t.error() {
        let code = RDKafkaErrorCode::from(err);
        return match code {
            RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => Ok(None),
            _ => Err(map_error(
                cfg,
                what,
                Some(code),
                &format!("metadata of topic {topic}: {code}"),
                false,
            )),
        };
    }
    if t.partitions().is_empty() {
        return Ok(None);
    }
    Ok(Some(t.partitions().len() as i32))
}

/// Creates `topic` (a concurrent creation by someone else is fine). True when this call
/// created it, false when it already existed.
pub(crate) fn create_topic(
    cfg: &KafkaSinkConfig,
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    partitions: i32,
    compact: bool,
    what: &str,
) -> Result<bool> {
    let mut nt = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(cfg.replication_factor),
    );
    if compact {
        nt = nt.set("cleanup.policy", "compact");
    }
    let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let fut = admin.create_topics([&nt], &opts);
    let res = tokio::runtime::Handle::current()
        .block_on(fut)
        .map_err(|e| kafka_error(cfg, &format!("{what}: cannot create topic {topic}"), &e))?;
    for r in res {
        match r {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => return Ok(false),
            Err((name, code)) => {
                return Err(map_error(
                    cfg,
                    &format!("{what}: cannot create topic {name}"),
                    Some(code),
                    &code.to_string(),
                    false,
                ));
            }
        }
    }
    tracing::info!(
        topic,
        partitions,
        replication_factor = cfg.replication_factor,
        "created Kafka topic"
    );
    Ok(true)
}

/// Reads `topic`/`partition` backwards from its end in growing windows and calls `visit` on
/// each message, in offset order within a window, until a window in which `visit` returned
/// true at least once has been read whole, or the partition's start is reached.
/// read_committed: aborted messages and transaction markers are never visited.
pub(crate) fn scan_back(
    cfg: &KafkaSinkConfig,
    consumer: &BaseConsumer<QuietContext>,
    topic: &str,
    partition: i32,
    what: &str,
    mut visit: impl FnMut(&BorrowedMessage<'_>) -> Result<bool>,
) -> Result<()> {
    let transient = |msg: String| ConnectorError::transient(cfg.redact(&msg));
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
        .map_err(|e| {
            transient(format!(
                "{what}: cannot read the offsets of {topic} partition {partition}: {e}; is the broker up?"
            ))
        })?;
    let mut end = high;
    let mut window = 64i64;
    while end > low {
        let start = (end - window).max(low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(start))
            .map_err(|e| transient(format!("{what}: {e}")))?;
        consumer
            .assign(&tpl)
            .map_err(|e| transient(format!("{what}: cannot read {topic}: {e}")))?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut matched = false;
        loop {
            if Instant::now() > deadline {
                return Err(transient(format!(
                    "{what}: timed out reading {topic} partition {partition} (offsets {start}..{end}); \
                     is the broker up, or is another producer holding a transaction open on it?"
                )));
            }
            match consumer.poll(Duration::from_millis(200)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => {
                    return Err(transient(format!(
                        "{what}: cannot read {topic} partition {partition}: {e}"
                    )));
                }
                Some(Ok(m)) => {
                    if m.topic() != topic || m.partition() != partition {
                        continue;
                    }
                    if m.offset() >= end {
                        break;
                    }
                    if visit(&m)? {
                        matched = true;
                    }
                    if m.offset() + 1 >= end {
                        break;
                    }
                }
            }
        }
        if matched {
            break;
        }
        end = start;
        window = window.saturating_mul(8);
    }
    let _ = consumer.unassign();
    Ok(())
}

/// The value of header `key` of `m`, as text.
pub(crate) fn header<'a>(m: &'a BorrowedMessage<'_>, key: &str) -> Option<&'a str> {
    let hs = m.headers()?;
    hs.iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}
