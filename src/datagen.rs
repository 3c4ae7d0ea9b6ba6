//! `datagen`: a deterministic synthetic source, for the demo and for benchmarking the engine
//! without a database.
//!
//! Tables `datagen.t0 .. t{n-1}` each have `id bigint primary key, k integer,
//! amount numeric(12,2), payload text, at timestamptz`. Event `i` (from 0) is a pure function
//! of the seed and of the choices before it, so the same config gives the same events, and a
//! restart can fast-forward to any commit without building the rows it skips.
//!
//! `mix = "insert"` only inserts. `mix = "mixed"` makes 60% inserts, 30% updates of a live id,
//! 10% deletes of the oldest live id (per table: live ids are the range `lo..hi`).

use crate::config::{DatagenConfig, Mix};
use async_trait::async_trait;
use std::time::{Duration, Instant};
use weir_api::{
    ChangeEvent, Column, ColumnType, CommitInfo, DatagenPosition, Op, Result, Row, Source,
    SourceInfo, SourceItem, SourcePosition, TableId, TableSchema, Timestamp, Transaction, Value,
};

/// Commit time of event 0; event `i` commits at `BASE_MS + i`.
const BASE_MS: i64 = 1_763_700_000_000;
/// Changes per [`SourceItem::Changes`] chunk of a large transaction.
const CHUNK: u64 = 1024;

/// The datagen source.
pub struct Datagen {
    cfg: DatagenConfig,
    pipeline: String,
    generator: Generator,
    schemas: Vec<TableSchema>,
    schemas_sent: usize,
    pending_commit: Option<CommitInfo>,
    started: Instant,
    /// Events emitted when `start` was called (rate limiting counts from there).
    start_events: u64,
    /// Events of the transaction in progress already emitted.
    in_txn: u64,
}

impl Datagen {
    /// A datagen source for `pipeline`.
    pub fn new(cfg: DatagenConfig, pipeline: &str) -> Self {
        Datagen {
            generator: Generator::new(&cfg),
            schemas: Self::schemas(&cfg),
            schemas_sent: 0,
            pending_commit: None,
            cfg,
            pipeline: pipeline.to_string(),
            started: Instant::now(),
            start_events: 0,
            in_txn: 0,
        }
    }

    /// The table schemas datagen produces.
    pub fn schemas(cfg: &DatagenConfig) -> Vec<TableSchema> {
        let col = |name: &str, ty, source_type: &str, nullable| Column {
            name: name.into(),
            ty,
            source_type: source_type.into(),
            nullable,
        };
        (0..cfg.table_count.0)
            .map(|t| TableSchema {
                table: TableId::new("datagen", format!("t{t}")),
                version: 1,
                columns: vec![
                    col(
                        "id",
                        ColumnType::Int {
                            bits: 64,
                            unsigned: false,
                        },
                        "bigint",
                        false,
                    ),
                    col(
                        "k",
                        ColumnType::Int {
                            bits: 32,
                            unsigned: false,
                        },
                        "integer",
                        false,
                    ),
                    col(
                        "amount",
                        ColumnType::Decimal {
                            precision: Some(12),
                            scale: Some(2),
                        },
                        "numeric(12,2)",
                        false,
                    ),
                    col("payload", ColumnType::Text { max_len: None }, "text", false),
                    col("at", ColumnType::TimestampTz, "timestamptz", false),
                ],
                primary_key: vec![0],
            })
            .collect()
    }

    fn txn_len(&self) -> u64 {
        self.cfg
            .txn_size
            .0
            .min(self.cfg.events - (self.generator.emitted - self.in_txn))
    }
}

#[async_trait]
impl Source for Datagen {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            connector: "datagen".into(),
            name: self.pipeline.clone(),
            db: "datagen".into(),
        }
    }

    async fn start(&mut self, resume: Option<SourcePosition>) -> Result<()> {
        let target = match resume {
            None => 0,
            Some(SourcePosition::Datagen(p)) => p.events,
            Some(other) => {
                return Err(weir_api::ConnectorError::definite(format!(
                    "the staging log was written by another kind of source (position {other}); \
                     use a new pipeline name or data_dir for the datagen source"
                )));
            }
        };
        if target > self.cfg.events {
            return Err(weir_api::ConnectorError::definite(format!(
                "the staging log is at event {target} but datagen is configured for {} events; \
                 raise `events` or use a new data_dir",
                self.cfg.events
            )));
        }
        self.generator = Generator::new(&self.cfg);
        self.generator.skip_to(target);
        self.in_txn = 0;
        self.schemas_sent = 0;
        self.pending_commit = None;
        self.started = Instant::now();
        self.start_events = target;
        Ok(())
    }

    async fn end_position(&mut self) -> Result<SourcePosition> {
        Ok(SourcePosition::Datagen(DatagenPosition {
            events: self.cfg.events,
        }))
    }

    async fn next(&mut self) -> Result<SourceItem> {
        // Announce every table before the first change.
        if let Some(schema) = self.schemas.get(self.schemas_sent) {
            self.schemas_sent += 1;
            return Ok(SourceItem::Schema(schema.clone()));
        }
        if let Some(commit) = self.pending_commit.take() {
            return Ok(SourceItem::Commit(commit));
        }
        let position = SourcePosition::Datagen(DatagenPosition {
            events: self.generator.emitted,
        });
        if self.generator.emitted >= self.cfg.events && self.in_txn == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Ok(SourceItem::Heartbeat(position));
        }
        if self.cfg.rate > 0 {
            let due = Duration::from_secs_f64(
                (self.generator.emitted - self.start_events) as f64 / self.cfg.rate as f64,
            );
            let elapsed = self.started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
        let txn_len = self.txn_len();
        let txn_index = (self.generator.emitted - self.in_txn) / self.cfg.txn_size.0;
        let n = (txn_len - self.in_txn).min(CHUNK);
        let mut changes = Vec::with_capacity(n as usize);
        for _ in 0..n {
            changes.push(self.generator.event(Some(txn_index + 1)));
        }
        self.in_txn += n;
        if self.in_txn < txn_len {
            return Ok(SourceItem::Changes(changes));
        }
        self.in_txn = 0;
        let commit = CommitInfo {
            position: SourcePosition::Datagen(DatagenPosition {
                events: self.generator.emitted,
            }),
            txid: Some(txn_index + 1),
            ts_ms: BASE_MS + self.generator.emitted as i64 - 1,
            events: txn_len,
        };
        if txn_len <= CHUNK {
            Ok(SourceItem::Transaction(Transaction { changes, commit }))
        } else {
            // The last chunk of a large transaction, then its commit on the next call.
            self.pending_commit = Some(commit);
            Ok(SourceItem::Changes(changes))
        }
    }

    async fn ack(&mut self, _position: &SourcePosition) -> Result<()> {
        Ok(())
    }
}

/// The deterministic event generator (no I/O; also used by tests to compute expected output).
pub struct Generator {
    seed: u64,
    rng: u64,
    tables: u32,
    txn_size: u64,
    row_bytes: usize,
    mix: Mix,
    live: Vec<(i64, i64)>,
    /// Events generated so far.
    pub emitted: u64,
}

impl Generator {
    /// A generator at event 0.
    pub fn new(cfg: &DatagenConfig) -> Self {
        Generator {
            seed: cfg.seed,
            rng: cfg.seed ^ 0x9E37_79B9_7F4A_7C15,
            tables: cfg.table_count.0,
            txn_size: cfg.txn_size.0,
            row_bytes: cfg.row_bytes as usize,
            mix: cfg.mix,
            live: vec![(1, 1); cfg.table_count.0 as usize],
            emitted: 0,
        }
    }

    fn next_u64(&mut self) -> u64 {
        splitmix(&mut self.rng)
    }

    /// Draws the next event's decisions: (table, op, id).
    fn decide(&mut self) -> (usize, Op, i64) {
        let table = (self.next_u64() % u64::from(self.tables)) as usize;
        let roll = self.next_u64() % 10;
        let pick = self.next_u64();
        let (lo, hi) = &mut self.live[table];
        let op = match self.mix {
            Mix::Insert => Op::Insert,
            Mix::Mixed if *lo == *hi || roll < 6 => Op::Insert,
            Mix::Mixed if roll < 9 => Op::Update,
            Mix::Mixed => Op::Delete,
        };
        let id = match op {
            Op::Insert => {
                *hi += 1;
                *hi - 1
            }
            Op::Update => *lo + (pick % (*hi - *lo) as u64) as i64,
            _ => {
                *lo += 1;
                *lo - 1
            }
        };
        (table, op, id)
    }

    /// Advances to just after event `events` without building rows.
    pub fn skip_to(&mut self, events: u64) {
        while self.emitted < events {
            self.decide();
            self.emitted += 1;
        }
    }

    /// The next event.
    pub fn event(&mut self, txid: Option<u64>) -> ChangeEvent {
        let index = self.emitted;
        let (table, op, id) = self.decide();
        self.emitted += 1;
        let key_only = || {
            let mut v = vec![Value::Unchanged; 5];
            v[0] = Value::Int(id);
            Row(v)
        };
        let (before, after) = match op {
            Op::Delete => (Some(key_only()), None),
            _ => (None, Some(self.row(id, index))),
        };
        ChangeEvent {
            table: TableId::shared("datagen", &format!("t{table}")),
            schema_version: 1,
            op,
            before,
            after,
            position: SourcePosition::Datagen(DatagenPosition { events: index + 1 }),
            txid: txid.or(Some(index / self.txn_size + 1)),
            ts_ms: BASE_MS + index as i64,
        }
    }

    fn row(&self, id: i64, index: u64) -> Row {
        let mut h = self.seed.wrapping_mul(0xD134_2543_DE82_EF95) ^ index;
        let k = (splitmix(&mut h) % 1_000_000) as i64;
        let cents = splitmix(&mut h) % 100_000_000;
        const ALPHABET: &[u8; 64] =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";
        let mut payload = String::with_capacity(self.row_bytes);
        while payload.len() < self.row_bytes {
            let mut r = splitmix(&mut h);
            for _ in 0..10 {
                if payload.len() == self.row_bytes {
                    break;
                }
                payload.push(ALPHABET[(r & 63) as usize] as char);
                r >>= 6;
            }
        }
        Row(vec![
            Value::Int(id),
            Value::Int(k),
            Value::Decimal(format!("{}.{:02}", cents / 100, cents % 100)),
            Value::Text(payload),
            Value::TimestampTz(Timestamp::from_unix_micros(
                (BASE_MS + index as i64) * 1000 + (index % 1000) as i64,
            )),
        ])
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
