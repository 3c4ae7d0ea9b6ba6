//! `[[sinks]] type = "kafka"` settings.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use weir_api::{ConnectorError, Result};

/// How the sink makes delivery exactly-once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Delivery {
    /// Transactional producer: one Kafka transaction per batch of whole source transactions,
    /// the sink's position committed in the same transaction. Needs a broker with the
    /// transaction protocol (Apache Kafka, Redpanda, ...).
    Transactions,
    /// Idempotent producer without transactions (brokers such as tansu): duplicates are
    /// avoided by reading back what is already in each partition on start, after waiting out
    /// `socket.timeout.ms` (default here 10 s) for an earlier producer's requests to land;
    /// consumers may see part of a source transaction before the rest arrives.
    Idempotent,
}

impl Delivery {
    /// The name used in the pipeline file.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Transactions => "transactions",
            Delivery::Idempotent => "idempotent",
        }
    }
}

/// `[[sinks]] type = "kafka"` settings (the section without `name` and `type`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// Topic name template: `{pipeline}`, `{sink}`, `{schema}`, `{table}`. Characters Kafka
    /// does not allow in topic names (anything but `A-Za-z0-9._-`) become `_`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// `transactions` or `idempotent`; when unset, `transactions` if the broker supports the
    /// transaction protocol (ApiVersions lists EndTxn), else `idempotent`.
    #[serde(default)]
    pub delivery: Option<Delivery>,
    /// Write a tombstone (null value, same key) after each delete. Default true.
    #[serde(default = "yes")]
    pub tombstones: bool,
    /// Topic for BEGIN/END transaction records (Debezium's `provide.transaction.metadata`);
    /// none when unset. Same placeholders as `topic` (except `{schema}`/`{table}`).
    #[serde(default)]
    pub transaction_topic: Option<String>,
    /// Partitions of topics the sink creates. Default 3.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of topics the sink creates. Default 1 (set 3 on a production cluster).
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// Create missing topics through the admin API. Default true.
    #[serde(default = "yes")]
    pub create_topics: bool,
    /// Compacted topic holding each sink's log position. Default `_weir_offsets`.
    #[serde(default = "default_offsets_topic")]
    pub offsets_topic: String,
    /// Any librdkafka property (`compression.type`, `security.protocol`, `sasl.*`, `ssl.*`,
    /// `linger.ms`, ...); these override weir's defaults.
    #[serde(default, deserialize_with = "scalar_map")]
    pub properties: BTreeMap<String, String>,
}

fn default_topic() -> String {
    "{pipeline}.{schema}.{table}".to_owned()
}
fn default_offsets_topic() -> String {
    "_weir_offsets".to_owned()
}
fn yes() -> bool {
    true
}
fn default_partitions() -> i32 {
    3
}
fn default_replication() -> i32 {
    1
}

/// Property values may be written as TOML strings, integers, floats or booleans.
fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        F(f64),
        B(bool),
    }
    let m = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::S(s) => s,
                Scalar::I(i) => i.to_string(),
                Scalar::F(f) => f.to_string(),
                Scalar::B(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

/// Whether a librdkafka property holds a secret (its value is never printed).
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "token",
        "credential",
        ".pem",
        "key",
    ]
    .iter()
    .any(|s| k.contains(s))
        && k != "ssl.key.location"
}

impl fmt::Debug for KafkaSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let v = if is_secret(k) {
                    "<redacted>"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("KafkaSinkConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("delivery", &self.delivery)
            .field("tombstones", &self.tombstones)
            .field("transaction_topic", &self.transaction_topic)
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("create_topics", &self.create_topics)
            .field("offsets_topic", &self.offsets_topic)
            .field("properties", &props)
            .finish()
    }
}

impl KafkaSinkConfig {
    /// A config with defaults for everything but the brokers.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaSinkConfig {
            brokers: brokers.into(),
            topic: default_topic(),
            delivery: None,
            tombstones: true,
            transaction_topic: None,
            partitions: default_partitions(),
            replication_factor: default_replication(),
            create_topics: true,
            offsets_topic: default_offsets_topic(),
            properties: BTreeMap::new(),
        }
    }

    /// Removes every secret property value from `text` (librdkafka errors may quote them).
    pub fn redact(&self, text: &str) -> String {
        let mut s = text.to_owned();
        for (k, v) in &self.properties {
            if is_secret(k) && !v.is_empty() {
                s = s.replace(v.as_str(), "<redacted>");
            }
        }
        s
    }

    /// Checks what can be checked without a broker.
    pub fn validate(&self, sink: &str) -> Result<()> {
        let bad = |what: String| {
            Err(ConnectorError::definite(format!(
                "kafka sink {sink}: {what}"
            )))
        };
        if self.brokers.trim().is_empty() {
            return bad(
                "`brokers` is empty; set it to host:port of one or more Kafka brokers".into(),
            );
        }
        check_template(&self.topic, true).or_else(|e| bad(format!("`topic`: {e}")))?;
        if let Some(t) = &self.transaction_topic {
            check_template(t, false).or_else(|e| bad(format!("`transaction_topic`: {e}")))?;
        }
        check_template(&self.offsets_topic, false)
            .or_else(|e| bad(format!("`offsets_topic`: {e}")))?;
        if self.partitions < 1 {
            return bad(format!(
                "`partitions` is {}; it must be at least 1",
                self.partitions
            ));
        }
        if self.replication_factor < 1 && self.replication_factor != -1 {
            return bad(format!(
                "`replication_factor` is {}; use 1 or more (or -1 for the broker's default)",
                self.replication_factor
            ));
        }
        if let Some(v) = self.properties.get("enable.idempotence")
            && v != "true"
        {
            return bad("property `enable.idempotence` must stay true: exactly-once delivery needs the idempotent producer".into());
        }
        Ok(())
    }
}

/// Placeholders a template may use.
fn check_template(t: &str, table: bool) -> std::result::Result<(), String> {
    let mut rest = t;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else {
            return Err(format!("{t:?} has an unclosed `{{`"));
        };
        let name = &rest[i + 1..i + j];
        let ok =
            matches!(name, "pipeline" | "sink") || (table && matches!(name, "schema" | "table"));
        if !ok {
            return Err(format!(
                "{t:?} uses {{{name}}}; known placeholders are {}",
                if table {
                    "{pipeline}, {sink}, {schema}, {table}"
                } else {
                    "{pipeline}, {sink}"
                }
            ));
        }
        rest = &rest[i + j + 1..];
    }
    if t.is_empty() {
        return Err("is empty".into());
    }
    Ok(())
}

/// Fills a topic template and replaces characters Kafka does not allow with `_`.
pub fn render_topic(
    template: &str,
    pipeline: &str,
    sink: &str,
    schema: &str,
    table: &str,
) -> String {
    let s = template
        .replace("{pipeline}", pipeline)
        .replace("{sink}", sink)
        .replace("{schema}", schema)
        .replace("{table}", table);
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert_eq!(
            render_topic(
                "{pipeline}.{schema}.{table}",
                "shop",
                "ev",
                "public",
                "order lines"
            ),
            "shop.public.order_lines"
        );
        assert_eq!(render_topic("x-{sink}", "p", "s", "a", "b"), "x-s");
        assert!(check_template("{pipeline}.{schema}.{table}", true).is_ok());
        assert!(
            check_template("{schema}", false)
                .unwrap_err()
                .contains("{schema}")
        );
        assert!(
            check_template("{db}.x", true)
                .unwrap_err()
                .contains("known placeholders")
        );
        assert!(check_template("a{b", true).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let mut c = KafkaSinkConfig::new("b:9092");
        c.properties
            .insert("sasl.password".into(), "hunter2".into());
        c.properties.insert("sasl.username".into(), "alice".into());
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("alice"), "{s}");
        assert_eq!(
            c.redact("bad value hunter2 for x"),
            "bad value <redacted> for x"
        );
    }

    #[test]
    fn rejects_disabling_idempotence() {
        let mut c = KafkaSinkConfig::new("b:9092");
        c.properties
            .insert("enable.idempotence".into(), "false".into());
        assert!(
            c.validate("s")
                .unwrap_err()
                .to_string()
                .contains("enable.idempotence")
        );
    }
}
