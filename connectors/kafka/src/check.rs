//! Preflight checks of a Kafka sink (`weir check`): broker reachable, which delivery modes it
//! supports, topics that are missing while `create_topics = false`. Each finding says what is
//! wrong and how to fix it; messages never contain secret property values.

use crate::client::{self, REQUEST_TIMEOUT};
use crate::config::{Delivery, KafkaSinkConfig, render_topic};
use rdkafka::consumer::Consumer;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_api::TableId;

/// One problem (or notice) found by [`preflight`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Whether the sink cannot work until it is fixed (otherwise a warning or a notice).
    pub fatal: bool,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Finding {
    fn fatal(message: impl Into<String>) -> Self {
        Finding {
            fatal: true,
            message: message.into(),
        }
    }
    fn note(message: impl Into<String>) -> Self {
        Finding {
            fatal: false,
            message: message.into(),
        }
    }
}

/// Kafka API key of EndTxn (the transaction protocol's commit/abort).
const END_TXN: i16 = 26;
const API_VERSIONS: i16 = 18;

/// Asks the first reachable broker for its ApiVersions and says whether it has EndTxn.
/// `Ok(None)` when the listener needs TLS (`security.protocol` ssl / sasl_ssl), where a raw
/// probe is impossible; `Err` when no broker answers.
pub async fn probe_transactions(cfg: &KafkaSinkConfig) -> Result<Option<bool>, String> {
    let proto = cfg
        .properties
        .get("security.protocol")
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_else(|| "plaintext".into());
    if proto.contains("ssl") {
        return Ok(None);
    }
    let mut last_err = String::from("no broker listed");
    for b in cfg
        .brokers
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
    {
        let addr = b.rsplit_once("://").map_or(b, |(_, a)| a);
        match tokio::time::timeout(Duration::from_secs(10), api_versions(addr)).await {
            Ok(Ok(apis)) => return Ok(Some(apis.iter().any(|&(k, _, _)| k == END_TXN))),
            Ok(Err(e)) => last_err = format!("{addr}: {e}"),
            Err(_) => last_err = format!("{addr}: no answer within 10s"),
        }
    }
    Err(last_err)
}

/// ApiVersions v0: `(api_key, min_version, max_version)` of every API the broker serves.
async fn api_versions(addr: &str) -> std::io::Result<Vec<(i16, i16, i16)>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_owned());
    let mut s = TcpStream::connect(addr).await?;
    let client_id = b"weir-check";
    let mut req = Vec::with_capacity(32);
    req.extend_from_slice(&API_VERSIONS.to_be_bytes());
    req.extend_from_slice(&0i16.to_be_bytes()); // version
    req.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    req.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    req.extend_from_slice(client_id);
    let mut frame = (req.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&req);
    s.write_all(&frame).await?;
    let len = s.read_i32().await?;
    if !(6..=1 << 20).contains(&len) {
        return Err(bad("ApiVersions reply has an impossible size"));
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await?;
    let rd16 = |b: &[u8], at: usize| -> std::io::Result<i16> {
        b.get(at..at + 2)
            .map(|x| i16::from_be_bytes([x[0], x[1]]))
            .ok_or_else(|| bad("ApiVersions reply is truncated"))
    };
    let corr = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    if corr != 7 {
        return Err(bad("ApiVersions reply has the wrong correlation id"));
    }
    let err = rd16(&body, 4)?;
    // 35 (UNSUPPORTED_VERSION) still lists the APIs.
    if err != 0 && err != 35 {
        return Err(bad(&format!("ApiVersions error code {err}")));
    }
    let n = body
        .get(6..10)
        .map(|x| i32::from_be_bytes([x[0], x[1], x[2], x[3]]))
        .ok_or_else(|| bad("ApiVersions reply is truncated"))?;
    let mut out = Vec::new();
    for i in 0..n.max(0) as usize {
        let at = 10 + i * 6;
        out.push((rd16(&body, at)?, rd16(&body, at + 2)?, rd16(&body, at + 4)?));
    }
    Ok(out)
}

/// Checks a Kafka sink before running: configuration, broker reachable, delivery modes the
/// broker supports, and (with `create_topics = false`) that the topics exist. `tables` are
/// the tables the source will send, when known (empty: table topics are not checked).
pub async fn preflight(
    cfg: &KafkaSinkConfig,
    pipeline: &str,
    sink: &str,
    tables: &[TableId],
) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Err(e) = cfg.validate(sink) {
        out.push(Finding::fatal(e.to_string()));
        return out;
    }
    let what = format!("kafka sink {sink}");
    match probe_transactions(cfg).await {
        Err(e) => {
            out.push(Finding::fatal(format!(
                "{what}: cannot reach Kafka at {} ({e}); start the broker or fix `brokers`",
                cfg.brokers
            )));
            return out;
        }
        Ok(Some(true)) => out.push(Finding::note(format!(
            "{what}: broker supports delivery modes transactions and idempotent; using {}",
            cfg.delivery.unwrap_or(Delivery::Transactions).as_str()
        ))),
        Ok(Some(false)) => {
            if cfg.delivery == Some(Delivery::Transactions) {
                out.push(Finding::fatal(format!(
                    "{what}: delivery = \"transactions\" but the broker has no transaction protocol \
                     (EndTxn missing from ApiVersions); set delivery = \"idempotent\""
                )));
            } else {
                out.push(Finding::note(format!(
                    "{what}: broker supports delivery mode idempotent only (no EndTxn in \
                     ApiVersions): consumers may see part of a source transaction before the rest"
                )));
            }
        }
        Ok(None) => out.push(Finding::note(format!(
            "{what}: TLS listener, delivery modes not probed; using {} (set `delivery` to choose)",
            cfg.delivery.unwrap_or(Delivery::Transactions).as_str()
        ))),
    }
    let cfg2 = cfg.clone();
    let pipeline = pipeline.to_owned();
    let sink = sink.to_owned();
    let tables = tables.to_vec();
    let res = tokio::task::spawn_blocking(move || topics_check(&cfg2, &pipeline, &sink, &tables))
        .await
        .unwrap_or_else(|e| vec![Finding::fatal(format!("kafka sink check failed: {e}"))]);
    out.extend(res);
    for f in &mut out {
        f.message = cfg.redact(&f.message);
    }
    out
}

fn topics_check(
    cfg: &KafkaSinkConfig,
    pipeline: &str,
    sink: &str,
    tables: &[TableId],
) -> Vec<Finding> {
    let what = format!("kafka sink {sink}");
    let mut out = Vec::new();
    let consumer = match client::reader(cfg, &format!("weir-{pipeline}-{sink}-check"), &what) {
        Ok(c) => c,
        Err(e) => return vec![Finding::fatal(e.to_string())],
    };
    let md = match consumer.fetch_metadata(None, REQUEST_TIMEOUT) {
        Ok(md) => md,
        Err(e) => {
            return vec![Finding::fatal(format!(
                "{what}: cannot read cluster metadata from {} ({e}); check `brokers` and the \
                 security properties",
                cfg.brokers
            ))];
        }
    };
    let exists = |t: &str| {
        md.topics()
            .iter()
            .any(|x| x.name() == t && x.error().is_none())
    };
    let mut wanted = vec![render_topic(&cfg.offsets_topic, pipeline, sink, "", "")];
    if let Some(t) = &cfg.transaction_topic {
        wanted.push(render_topic(t, pipeline, sink, "", ""));
    }
    for t in tables {
        wanted.push(render_topic(&cfg.topic, pipeline, sink, &t.schema, &t.name));
    }
    wanted.dedup();
    let missing: Vec<_> = wanted.iter().filter(|t| !exists(t)).cloned().collect();
    if !missing.is_empty() && !cfg.create_topics {
        for t in &missing {
            out.push(Finding::fatal(format!(
                "{what}: topic {t} does not exist and create_topics = false; create it or set \
                 create_topics = true"
            )));
        }
    }
    if md.brokers().len() < cfg.replication_factor.max(1) as usize && cfg.create_topics {
        out.push(Finding::fatal(format!(
            "{what}: replication_factor = {} but the cluster has {} broker(s); lower it",
            cfg.replication_factor,
            md.brokers().len()
        )));
    }
    out
}
