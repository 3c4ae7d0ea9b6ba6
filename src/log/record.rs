//! How records are stored: a format version byte, then bincode 2 (serde) of [`Stored`]; or,
//! for the changes of one transaction, a *pack* of consecutive records in one value.
//!
//! ```text
//!  one record:  [FORMAT_VERSION] bincode(Stored)
//!  a pack:      [PACK_VERSION] count:u32le { len:u32le bincode(Stored) } * count
//! ```
//!
//! A pack is stored under the sequence of its first record; its records have the following
//! sequences, so sequences stay dense. RocksDB keeps one key per pack instead of one per
//! change (fewer memtable inserts, index entries and iterator steps per row).

use serde::{Deserialize, Serialize};
use weir_api::{ChangeEvent, CommitInfo, SourcePosition, TableSchema};

/// Bumped whenever [`Stored`] or [`Head`] change shape; old readers refuse new records
/// instead of misreading them.
pub const FORMAT_VERSION: u8 = 1;

/// First byte of a pack of records (each record's body as after [`FORMAT_VERSION`]).
pub const PACK_VERSION: u8 = 2;

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
        "record format version {0}, but this weir reads versions {FORMAT_VERSION} and {PACK_VERSION}; run the weir version that wrote the log, or a newer one"
    )]
    Version(u8),
    /// A pack ends before its records do.
    #[error("truncated pack of records")]
    Truncated,
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
    decode_body(body)
}

/// Decodes one record's body (without its version byte), as [`Records`] yields them.
pub fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let (value, _) = bincode::serde::decode_from_slice(body, config())?;
    Ok(value)
}

/// Builds a pack at the end of a buffer: [`PackWriter::begin`], then [`PackWriter::push`]
/// per record.
#[derive(Debug)]
pub struct PackWriter {
    start: usize,
    count: u32,
}

impl PackWriter {
    /// Starts a pack at the end of `out`.
    pub fn begin(out: &mut Vec<u8>) -> Self {
        let start = out.len();
        out.push(PACK_VERSION);
        out.extend_from_slice(&0u32.to_le_bytes());
        PackWriter { start, count: 0 }
    }

    /// Appends one record to the pack (which must be the last thing in `out`).
    pub fn push<T: Serialize>(
        &mut self,
        value: &T,
        out: &mut Vec<u8>,
    ) -> Result<(), bincode::error::EncodeError> {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        bincode::serde::encode_into_std_write(value, out, config())?;
        let len = u32::try_from(out.len() - at - 4).map_err(|_| {
            bincode::error::EncodeError::Other("a record of 4 GiB or more cannot be staged")
        })?;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
        out[self.start + 1..self.start + 5].copy_from_slice(&self.count.to_le_bytes());
        Ok(())
    }

    /// Records pushed so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes of the pack so far, in `out`.
    pub fn len(&self, out: &[u8]) -> usize {
        out.len() - self.start
    }
}

/// The records of one stored value (a single record or a pack), as bodies to
/// [`decode_body`]. Checks lengths; never reads past the value.
#[derive(Debug)]
pub struct Records<'a> {
    rest: &'a [u8],
    left: u32,
    packed: bool,
}

impl<'a> Records<'a> {
    /// Reads the value's header.
    pub fn new(value: &'a [u8]) -> Result<Self, DecodeError> {
        let (&version, body) = value.split_first().ok_or(DecodeError::Empty)?;
        match version {
            FORMAT_VERSION => Ok(Records {
                rest: body,
                left: 1,
                packed: false,
            }),
            PACK_VERSION => {
                let (count, rest) = body
                    .split_first_chunk::<4>()
                    .ok_or(DecodeError::Truncated)?;
                Ok(Records {
                    rest,
                    left: u32::from_le_bytes(*count),
                    packed: true,
                })
            }
            other => Err(DecodeError::Version(other)),
        }
    }

    /// Records not yet taken.
    pub fn remaining(&self) -> u32 {
        self.left
    }

    /// The next record's body, `None` after the last.
    pub fn next_body(&mut self) -> Result<Option<&'a [u8]>, DecodeError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        if !self.packed {
            return Ok(Some(std::mem::take(&mut self.rest)));
        }
        let (len, rest) = self
            .rest
            .split_first_chunk::<4>()
            .ok_or(DecodeError::Truncated)?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(DecodeError::Truncated);
        }
        let (body, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(Some(body))
    }
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

    /// Every record body of a stored value, decoded.
    fn all_records(value: &[u8]) -> Result<Vec<Stored>, DecodeError> {
        let mut records = Records::new(value)?;
        let mut out = Vec::new();
        while let Some(body) = records.next_body()? {
            out.push(decode_body(body)?);
        }
        Ok(out)
    }

    #[test]
    fn packs_round_trip_and_cut_or_corrupt_ones_are_errors_not_panics() {
        let stored: Vec<Stored> = (0..3)
            .map(|n| Stored::Change {
                staged_ms: n,
                event: crate::log::tests::change(n, 1 + n as usize),
            })
            .collect();
        let mut value = Vec::new();
        let mut pack = PackWriter::begin(&mut value);
        for s in &stored {
            pack.push(s, &mut value).expect("encodes");
        }
        assert_eq!(pack.count(), 3);
        assert_eq!(pack.len(&value), value.len());
        assert_eq!(all_records(&value).expect("decodes"), stored);
        // A single record reads the same way.
        let mut one = Vec::new();
        encode(&stored[1], &mut one).expect("encodes");
        assert_eq!(all_records(&one).expect("decodes"), &stored[1..2]);
        // Every cut of the pack, and every single-byte corruption, fails cleanly.
        for cut in 0..value.len() {
            assert!(all_records(&value[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..value.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = value.clone();
                bad[at] ^= flip;
                let _ = all_records(&bad);
            }
        }
        let mut future = value.clone();
        future[0] = 3;
        assert!(matches!(
            Records::new(&future),
            Err(DecodeError::Version(3))
        ));
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
