//! How records are stored: a format version byte, then bincode 2 (serde) of [`Stored`].

use serde::{Deserialize, Serialize};
use weir_api::{ChangeEvent, CommitInfo, SourcePosition, TableSchema};

/// Bumped whenever [`Stored`] or [`Head`] change shape; old readers refuse new records
/// instead of misreading them.
pub const FORMAT_VERSION: u8 = 1;

/// One record of the `events` column family, keyed by its big-endian log sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Stored {
    /// A new schema version (also kept in the metadata column family).
    Schema(TableSchema),
    /// A change.
    Change {
        /// When weir staged it.
        staged_ms: i64,
        /// The change.
        event: ChangeEvent,
    },
    /// The end of a source transaction; what makes the records before it visible.
    Commit {
        /// When weir staged it.
        staged_ms: i64,
        /// The source's commit.
        info: CommitInfo,
        /// Encoded bytes appended to the log up to and including this transaction.
        bytes_total: u64,
    },
}

/// The metadata record `head`: the last visible commit. Written in the same atomic batch as
/// that commit, so the log and its source position can never disagree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    /// Sequence of the last visible commit (0: empty log).
    pub seq: u64,
    /// Source position of that commit.
    pub position: Option<SourcePosition>,
    /// Encoded bytes appended up to that commit.
    pub bytes_total: u64,
    /// Transactions appended.
    pub txns: u64,
}

/// A sink's progress, as the engine last saw it (the sink's own target is the truth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Cursor {
    /// Sequence of the last commit the sink applied.
    pub seq: u64,
    /// `bytes_total` of that commit.
    pub bytes_total: u64,
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes with the version byte in front.
pub fn encode<T: Serialize>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), bincode::error::EncodeError> {
    out.clear();
    encode_append(value, out)
}

/// Appends the encoding (version byte in front) to `out`, keeping what is there.
pub fn encode_append<T: Serialize>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), bincode::error::EncodeError> {
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(value, out, config())?;
    Ok(())
}

/// Why a stored record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Empty value.
    #[error("empty record")]
    Empty,
    /// Written by a newer weir.
    #[error(
        "record format version {0}, but this weir reads version {FORMAT_VERSION}; run the weir version that wrote the log, or a newer one"
    )]
    Version(u8),
    /// Corrupt bytes.
    #[error("undecodable record")]
    Bincode(#[from] bincode::error::DecodeError),
}

/// Decodes a value written by [`encode`].
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(DecodeError::Version(version));
    }
    let (value, _) = bincode::serde::decode_from_slice(body, config())?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use weir_api::{Op, Row, TableId, Value};

    /// `ChangeEvent` as it was before its table became a shared `Arc<TableId>`.
    #[derive(Serialize)]
    struct PlainEvent {
        table: TableId,
        schema_version: u32,
        op: Op,
        before: Option<Row>,
        after: Option<Row>,
        position: SourcePosition,
        txid: Option<u64>,
        ts_ms: i64,
    }

    #[test]
    fn a_shared_table_id_is_stored_as_a_plain_one_and_decodes_shared() {
        let event = crate::log::tests::change(7, 3);
        let plain = PlainEvent {
            table: TableId::new("s", "t"),
            schema_version: event.schema_version,
            op: event.op,
            before: event.before.clone(),
            after: event.after.clone(),
            position: event.position.clone(),
            txid: event.txid,
            ts_ms: event.ts_ms,
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode(&event, &mut a).expect("encodes");
        encode(&plain, &mut b).expect("encodes");
        assert_eq!(a, b, "the stored bytes changed");
        let back: ChangeEvent = decode(&a).expect("decodes");
        assert_eq!(back, event);
        assert!(Arc::ptr_eq(&back.table, &TableId::shared("s", "t")));
        assert_eq!(back.after, Some(Row(vec![Value::Int(7); 3])));
    }

    #[test]
    fn shared_ids_are_reused_and_told_apart() {
        let a = TableId::shared("public", "orders");
        assert!(Arc::ptr_eq(&a, &TableId::shared("public", "orders")));
        assert!(Arc::ptr_eq(
            &a,
            &TableId::new("public", "orders").to_shared()
        ));
        let other = TableId::shared("public", "order");
        assert_eq!(*other, TableId::new("public", "order"));
        assert_ne!(a, other);
        assert_ne!(*TableId::shared("publicorders", ""), *a);
        // More ids than the cache keeps: still right, only no longer the same allocation.
        for i in 0..200 {
            assert_eq!(
                *TableId::shared("s", &format!("t{i}")),
                TableId::new("s", format!("t{i}"))
            );
        }
        assert_eq!(*TableId::shared("public", "orders"), *a);
    }
}
