//! Table identity and versioned table schemas.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

/// A table, as `schema.table` (MySQL: `database.table`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableId {
    /// PostgreSQL schema or MySQL database.
    pub schema: String,
    /// Table name.
    pub name: String,
}

impl TableId {
    /// A table id from its parts.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableId {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl TableId {
    /// This id, shared ([`TableId::shared`]).
    pub fn to_shared(&self) -> Arc<TableId> {
        TableId::shared(&self.schema, &self.name)
    }

    /// The shared id of `schema.name`: the same allocation as the last few asked for on this
    /// thread, so the per-row path (a source building changes, the log decoding them) clones a
    /// pointer instead of two strings.
    pub fn shared(schema: &str, name: &str) -> Arc<TableId> {
        /// Ids remembered per thread (most recent last).
        const KEEP: usize = 64;
        thread_local! {
            static RECENT: RefCell<Vec<Arc<TableId>>> = const { RefCell::new(Vec::new()) };
        }
        RECENT.with(|recent| {
            let mut recent = recent.borrow_mut();
            if let Some(t) = recent
                .iter()
                .rev()
                .find(|t| t.name == name && t.schema == schema)
            {
                return t.clone();
            }
            let t = Arc::new(TableId::new(schema, name));
            if recent.len() >= KEEP {
                recent.remove(0);
            }
            recent.push(t.clone());
            t
        })
    }
}

/// Serde for an `Arc<TableId>` field: the same form as a plain [`TableId`]; decoding borrows
/// the names where the format allows and shares the id ([`TableId::shared`]).
pub(crate) mod shared_table {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(t: &Arc<TableId>, s: S) -> Result<S::Ok, S::Error> {
        t.as_ref().serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<TableId>, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "TableId")]
        struct Parts<'a> {
            #[serde(borrow)]
            schema: Cow<'a, str>,
            #[serde(borrow)]
            name: Cow<'a, str>,
        }
        let p = Parts::deserialize(d)?;
        Ok(TableId::shared(&p.schema, &p.name))
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// The engine's view of a column type: enough for sinks to create a lossless target column.
/// The source's own spelling is kept in [`Column::source_type`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ColumnType {
    /// boolean
    Bool,
    /// Integer of `bits` width (8, 16, 24, 32, 64), signed or unsigned.
    Int {
        /// Width in bits.
        bits: u8,
        /// Whether unsigned.
        unsigned: bool,
    },
    /// 32-bit float.
    Float32,
    /// 64-bit float.
    Float64,
    /// Exact decimal; `None` for unconstrained PostgreSQL numeric.
    Decimal {
        /// Total digits.
        precision: Option<u32>,
        /// Digits after the point.
        scale: Option<u32>,
    },
    /// Text; `max_len` in characters where the source limits it.
    Text {
        /// Maximum length in characters.
        max_len: Option<u32>,
    },
    /// Binary.
    Bytes,
    /// Bit string of `len` bits (`None`: varying without limit).
    Bits {
        /// Length in bits.
        len: Option<u32>,
    },
    /// Date.
    Date,
    /// Time (or MySQL duration).
    Time,
    /// Timestamp without zone.
    Timestamp,
    /// Timestamp with zone (UTC).
    TimestampTz,
    /// JSON.
    Json,
    /// UUID.
    Uuid,
    /// Array of the element type.
    Array(Box<ColumnType>),
    /// Anything else, carried as the server's text form.
    Other,
}

/// One column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Engine type.
    pub ty: ColumnType,
    /// The source's own type name (`numeric(10,2)`, `bigint unsigned`, ...).
    pub source_type: String,
    /// Whether NULL is allowed.
    pub nullable: bool,
}

/// A table's columns and key at one point in the source's history. Every change to the
/// table gives a new `version`; rows always travel with the version they were decoded with.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TableSchema {
    /// The table.
    pub table: TableId,
    /// Increases by one with every change to the table's columns or key.
    pub version: u32,
    /// Columns in source order; rows are positional over this list.
    pub columns: Vec<Column>,
    /// Indices into `columns` of the primary key (empty: keyless table).
    pub primary_key: Vec<usize>,
}

impl TableSchema {
    /// The primary-key column names.
    pub fn key_names(&self) -> impl Iterator<Item = &str> {
        self.primary_key
            .iter()
            .filter_map(|&i| self.columns.get(i))
            .map(|c| c.name.as_str())
    }

    /// Whether the columns and key equal `other`'s (the version aside).
    pub fn same_shape(&self, other: &TableSchema) -> bool {
        self.table == other.table
            && self.columns == other.columns
            && self.primary_key == other.primary_key
    }
}
