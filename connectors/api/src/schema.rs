//! Table identity and versioned table schemas.

use serde::{Deserialize, Serialize};
use std::fmt;

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
