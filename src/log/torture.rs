//! A deterministic append workload for crash tests of the staging log
//! (`weir __log-torture DIR`, hidden): transaction `i` always has the same changes, some of
//! them large enough to be written in several unsynced chunks before their commit.

use super::{LogOptions, StagingLog, WriteOp};
use std::io::Write as _;
use weir_api::{
    ChangeEvent, Column, ColumnType, CommitInfo, DatagenPosition, Op, Row, SourcePosition, TableId,
    TableSchema, Value,
};

/// The one table.
pub fn schema() -> TableSchema {
    let col = |name: &str, ty| Column {
        name: name.into(),
        ty,
        source_type: String::new(),
        nullable: false,
    };
    TableSchema {
        table: TableId::new("torture", "t"),
        version: 1,
        columns: vec![
            col(
                "txn",
                ColumnType::Int {
                    bits: 64,
                    unsigned: false,
                },
            ),
            col(
                "n",
                ColumnType::Int {
                    bits: 64,
                    unsigned: false,
                },
            ),
            col("payload", ColumnType::Text { max_len: None }),
        ],
        primary_key: vec![0, 1],
    }
}

/// Number of changes in transaction `i`: mostly small, every 41st one large (chunked).
pub fn txn_len(i: u64) -> u64 {
    if i % 41 == 7 {
        30_000
    } else {
        1 + (i * 7919) % 60
    }
}

/// Events before transaction `i`.
pub fn events_before(i: u64) -> u64 {
    (0..i).map(txn_len).sum()
}

/// Transaction `i`, given the events before it.
pub fn txn(i: u64, before: u64) -> (Vec<ChangeEvent>, CommitInfo) {
    let len = txn_len(i);
    let changes = (0..len)
        .map(|n| ChangeEvent {
            table: TableId::shared("torture", "t"),
            schema_version: 1,
            op: Op::Insert,
            before: None,
            after: Some(Row(vec![
                Value::Int(i as i64),
                Value::Int(n as i64),
                Value::Text(format!("{i}:{n}:{}", "x".repeat(64))),
            ])),
            position: SourcePosition::Datagen(DatagenPosition {
                events: before + n + 1,
            }),
            txid: Some(i),
            ts_ms: i as i64,
        })
        .collect();
    let commit = CommitInfo {
        position: SourcePosition::Datagen(DatagenPosition {
            events: before + len,
        }),
        txid: Some(i),
        ts_ms: i as i64,
        events: len,
    };
    (changes, commit)
}

/// Appends transactions forever (from where the log is), printing `acked <txns> <events>`
/// each time a commit is durable.
pub async fn run(dir: &std::path::Path) -> Result<(), super::LogError> {
    let log = StagingLog::open(
        dir,
        LogOptions {
            chunk_bytes: 256 << 10,
            ..LogOptions::default()
        },
    )?;
    let mut writer = log.writer(16)?;
    let mut heads = log.subscribe();
    let printer = tokio::spawn(async move {
        let mut out = std::io::stdout();
        loop {
            if heads.changed().await.is_err() {
                return;
            }
            let h = heads.borrow_and_update().clone();
            if let Some(SourcePosition::Datagen(p)) = h.position {
                let _ = writeln!(out, "acked {} {}", h.txns, p.events);
                let _ = out.flush();
            }
        }
    });
    let head = log.head();
    let mut i = head.txns;
    let mut before = match head.position {
        Some(SourcePosition::Datagen(p)) => p.events,
        _ => 0,
    };
    writer.send(WriteOp::Schema(schema())).await?;
    loop {
        let (changes, commit) = txn(i, before);
        for chunk in changes.chunks(1000) {
            writer.send(WriteOp::Changes(chunk.to_vec())).await?;
        }
        writer.send(WriteOp::Commit(commit)).await?;
        before += txn_len(i);
        i += 1;
        if printer.is_finished() {
            break;
        }
    }
    writer.finish()
}
