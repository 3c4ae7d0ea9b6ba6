//! weir's Kafka sink: Debezium-compatible change streams, exactly-once, a topic per table.
//!
//! # Messages
//!
//! * value: SPEC.md's envelope ([`weir_api::render_envelope`]); key: the primary-key columns
//!   as a JSON object ([`weir_api::render_key`]), null for keyless tables;
//! * a tombstone (same key, null value) after every delete of a keyed row unless
//!   `tombstones = false`;
//! * headers (UTF-8): `op`, `table` (`schema.table`), `source.position`, `weir.seq` (log
//!   sequence), `weir.sink` (`pipeline/sink`), `weir.tombstone` on tombstones;
//! * topic: the `topic` template (`{pipeline}`, `{sink}`, `{schema}`, `{table}`; characters
//!   other than `A-Za-z0-9._-` become `_`);
//! * partition: computed by the sink, the Java client's way for keys
//!   (`murmur2(key) & 0x7fffffff % partitions`, librdkafka's `murmur2_random`); keyless
//!   events go to `seq % partitions` (deterministic, so a resend lands where the first send
//!   did). The `partitioner` property therefore has no effect.
//!
//! # Exactly-once
//!
//! The sink's position (the log sequence of the last source transaction written whole) is a
//! record in a compacted offsets topic (`offsets_topic`, default `_weir_offsets`, key
//! `pipeline/sink`, value `{"seq":N,...}`), read back on start with a read_committed consumer
//! scanning backwards from the end of the key's partition.
//!
//! **`delivery = "transactions"`** (default when the broker's ApiVersions lists EndTxn):
//! a transactional, idempotent producer with `transactional.id = weir-<pipeline>-<sink>`, so
//! a second weir on the same sink fences the first (→ definite error "fenced"). One Kafka
//! transaction holds whole source transactions: it begins at the first message and commits
//! at the *last Commit of an `apply` call*, together with the offset record (produced once
//! the transaction's messages are acknowledged, so it is never in the log without them, even
//! for a reader that sees aborted transactions, like librdkafka's mock cluster); the part of a
//! source transaction after that Commit stays in an open Kafka transaction across calls until
//! its own Commit arrives. Nothing is buffered in weir: messages go to the brokers as they
//! come (librdkafka's queue is bounded to 64 MiB), the broker holds the uncommitted data, so
//! memory does not grow with transaction size; the limit is time: a source transaction must
//! be written within `transaction.timeout.ms` (default here 900000 = the broker's default
//! maximum). Any commit error (ambiguous or not) aborts where possible and returns an error;
//! the engine rebuilds the sink, whose `init_transactions` fences or completes whatever the
//! old producer left, and the offsets record read_committed says which transactions made it.
//!
//! **`delivery = "idempotent"`** (brokers without transactions, e.g. tansu): an idempotent
//! producer with `enable.gapless.guarantee`. The first time the sink touches a topic it
//! reads the last message *this sink* wrote to each partition (`weir.sink`, `weir.seq`,
//! `weir.tombstone` headers) and skips every message at or below it, so re-applying after a
//! crash duplicates nothing; per-partition order plus the gapless guarantee make "at or
//! below the last one" exactly "already there".
//!
//! That read-back is only right once an earlier producer of the sink (a SIGKILLed process,
//! or the producer of a sink the engine dropped) has nothing left in flight: nothing fences
//! it without transactions, and a produce request the broker received but had not applied
//! yet would land after the read-back, duplicating what the new sink resends and putting a
//! key's older value after its newer one. So a new sink waits until `socket.timeout.ms`
//! (weir's default for this mode: 10 s) has passed since it started before it reads back a
//! data partition or writes anything. That is the bound: the sink assumes the broker applies
//! or drops a produce request within `socket.timeout.ms` of receiving it (the time after
//! which the producer itself gives up on the answer); a broker slower than that can still
//! reorder after a crash. Each (re)start of the sink therefore takes that long before its
//! first write (a sink with nothing to write does not wait); it overlaps with the source's
//! start-up. A sink that finds no offsets topic and creates it does not wait: every producer
//! of the sink reads its position from that topic (creating it if missing) before it writes
//! anything, so no earlier one exists (unless someone deleted the topic since).
//!
//! At the last Commit of a call the sink sends the offset record right behind the messages
//! and waits once for all acknowledgements. The record lists, per partition written since the
//! previous record, the last message sent there, and the position before it (`prev`); a
//! restarted sink takes the record's position only if each listed partition's last message
//! of this sink is at or past the listed one (per-partition order plus the gapless guarantee
//! make the rest of the batch present too), else `prev`, whose messages were all acknowledged
//! before the record was sent. A position the engine was told about (a call that returned)
//! always passes: its messages were acknowledged (unless Kafka's retention deleted all of a
//! listed partition's messages before the restart: then the sink falls back to `prev`, and
//! the engine reports the records in between gone if the staging log no longer has them).
//! Limits: consumers may see part of a source
//! transaction before the rest arrives (and, after a crash, before it is completed), and only
//! one weir may write a sink (nothing fences a second one).
//!
//! # Topics
//!
//! Missing topics are created through the admin API with `partitions` and
//! `replication_factor` (the offsets topic compacted, 1 partition; the transaction topic 1
//! partition); with `create_topics = false` a missing topic is a definite error naming it.
//!
//! # Transaction topic
//!
//! With `transaction_topic` set, each source transaction gets Debezium-style records keyed
//! `{"id":..}`: `{"status":"BEGIN","id":..,"ts_ms":..,"event_count":null,"data_collections":null}`
//! before its first event and `{"status":"END","id":..,"ts_ms":..,"event_count":N,
//! "data_collections":[{"data_collection":"schema.table","event_count":n},..]}` after it.
//! `id` is the source transaction id, or `weir-<seq of the first event>` without one.
//! Each change event then carries Debezium's `transaction` block as well:
//! `{"id":..,"total_order":n,"data_collection_order":m}` (its place in the transaction, and
//! among the transaction's events of its table, from 1).
//!
//! # Errors
//!
//! Broker unreachable, timeouts, a failed or ambiguous commit, a fatal producer error:
//! transient (the engine rebuilds the sink and resumes from [`weir_api::Sink::committed`]).
//! Fenced producer, authorization/authentication failures, oversize messages, a broker
//! without the protocol the delivery mode needs, bad properties, a missing topic with
//! `create_topics = false`: definite, with what to do. After any error the sink refuses
//! further calls until rebuilt. Secret property values (`*password*`, `*secret*`, `*.pem`,
//! `sasl.jaas.config`, ...) never appear in errors or in `Debug`.
//!
//! # Blocking
//!
//! librdkafka's calls block (flush, commit, metadata); `connect` and `apply` run them in
//! `tokio::task::block_in_place`, so the sink needs the multi-threaded runtime.
//!
//! # What the tests can and cannot show here
//!
//! `transactions` mode is tested against librdkafka's mock cluster, which serves the
//! transaction requests but neither fences an older producer (every InitProducerId gets a
//! new producer id) nor isolates read_committed readers (LSO = high watermark, no aborted
//! index). So the tests check the protocol flow, positions after crashes, that every change
//! arrives and that duplicates appear only in Kafka transactions a crash left uncommitted
//! (which a real broker hides), and the mapping of an injected PRODUCER_FENCED. A run
//! against Apache Kafka is still owed for the read_committed view and real fencing.
//!
//! # Build
//!
//! rdkafka with the vendored librdkafka (built with `make`), `ssl` (system OpenSSL:
//! `libssl-dev`; TLS and SASL PLAIN/SCRAM/OAUTHBEARER), `zstd`, `libz`; lz4 and snappy are
//! built in. No GSSAPI/Kerberos.

pub mod check;
mod client;
mod config;
pub mod murmur2;
mod sink;

pub use config::{Delivery, KafkaSinkConfig, is_secret, render_topic};
pub use sink::{KafkaSink, headers};
