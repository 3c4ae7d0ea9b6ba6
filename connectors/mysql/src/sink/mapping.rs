//! Type mapping (source column → MySQL column type), type comparison and widening, and the
//! exact SQL literal of every [`Value`].
//!
//! Values travel as SQL literals in text-protocol statements (the session runs with
//! `NO_BACKSLASH_ESCAPES`, so a quoted string only needs `'` doubled; a string holding a NUL
//! goes as a hex literal with a `_utf8mb4` introducer). Each literal is chosen so the server
//! converts it without rounding: decimals as exact decimal literals (checked against the
//! target scale first, since MySQL would round extra fractional digits with a mere note),
//! floats in their shortest round-trip form (an `f32` as the exact `f64` of its value), bytes
//! as `X'..'`, bits as `b'..'`, dates and times as quoted strings with microseconds.

use std::fmt::Write as _;
use weir_api::{Column, ColumnType, Date, TableSchema, Timestamp, Value};

/// InnoDB's limit on the bytes of one index key (DYNAMIC / COMPRESSED row formats).
pub(crate) const MAX_KEY_BYTES: u32 = 3072;
/// Bytes of VARCHAR/VARBINARY columns in one row beyond which further text columns become
/// LONGTEXT/LONGBLOB (MySQL limits a row's non-BLOB columns to 65,535 bytes).
const ROW_VARCHAR_BYTES: u32 = 40_000;

/// Quotes an identifier with backticks (a backtick inside is doubled).
pub fn quote_ident(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('`');
    for c in name.chars() {
        if c == '`' {
            s.push('`');
        }
        s.push(c);
    }
    s.push('`');
    s
}

/// A quoted string literal (the session has `NO_BACKSLASH_ESCAPES`).
pub(crate) fn quote_str(s: &str) -> String {
    if s.contains('\0') {
        let mut out = String::with_capacity(12 + 2 * s.len());
        out.push_str("_utf8mb4 X'");
        push_hex(&mut out, s.as_bytes());
        out.push('\'');
        return out;
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// A MySQL column type, parsed into what comparison and widening need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ty {
    /// `tinyint(1)` / `boolean`.
    Bool,
    /// tinyint (1), smallint (2), mediumint (3), int (4), bigint (5).
    Int {
        rank: u8,
        unsigned: bool,
    },
    Year,
    Decimal {
        p: u32,
        s: u32,
        unsigned: bool,
    },
    Float {
        unsigned: bool,
    },
    Double {
        unsigned: bool,
    },
    Char(u32),
    VarChar(u32),
    /// tinytext (1), text (2), mediumtext (3), longtext (4).
    Text(u8),
    Binary(u32),
    VarBinary(u32),
    /// tinyblob (1) .. longblob (4).
    Blob(u8),
    Bit(u32),
    Date,
    Time(u32),
    DateTime(u32),
    Timestamp(u32),
    Json,
    Enum(Vec<String>),
    Set(Vec<String>),
    /// Anything else, by its spelling (geometry, ...): compared as text, never widened.
    Named(String),
}

impl Ty {
    /// The SQL spelling used in CREATE / ALTER.
    pub(crate) fn sql(&self) -> String {
        let uns = |u: &bool| if *u { " unsigned" } else { "" };
        match self {
            Ty::Bool => "tinyint(1)".into(),
            Ty::Int { rank, unsigned } => format!(
                "{}{}",
                ["tinyint", "smallint", "mediumint", "int", "bigint"]
                    [usize::from(rank.clamp(&1, &5) - 1)],
                uns(unsigned)
            ),
            Ty::Year => "year".into(),
            Ty::Decimal { p, s, unsigned } => format!("decimal({p},{s}){}", uns(unsigned)),
            Ty::Float { unsigned } => format!("float{}", uns(unsigned)),
            Ty::Double { unsigned } => format!("double{}", uns(unsigned)),
            Ty::Char(n) => format!("char({n})"),
            Ty::VarChar(n) => format!("varchar({n})"),
            Ty::Text(r) => ["tinytext", "text", "mediumtext", "longtext"]
                [usize::from(r.clamp(&1, &4) - 1)]
            .into(),
            Ty::Binary(n) => format!("binary({n})"),
            Ty::VarBinary(n) => format!("varbinary({n})"),
            Ty::Blob(r) => ["tinyblob", "blob", "mediumblob", "longblob"]
                [usize::from(r.clamp(&1, &4) - 1)]
            .into(),
            Ty::Bit(n) => format!("bit({n})"),
            Ty::Date => "date".into(),
            Ty::Time(p) => format!("time({p})"),
            Ty::DateTime(p) => format!("datetime({p})"),
            Ty::Timestamp(p) => format!("timestamp({p})"),
            Ty::Json => "json".into(),
            Ty::Enum(l) | Ty::Set(l) => {
                let quoted: Vec<String> = l.iter().map(|x| quote_str(x)).collect();
                format!(
                    "{}({})",
                    if matches!(self, Ty::Enum(_)) {
                        "enum"
                    } else {
                        "set"
                    },
                    quoted.join(",")
                )
            }
            Ty::Named(n) => n.clone(),
        }
    }

    /// Bytes this type takes in an index key (text counted at 4 bytes a character).
    fn key_bytes(&self) -> u32 {
        match self {
            Ty::Bool | Ty::Year => 1,
            Ty::Int { rank, .. } => match rank {
                1 => 1,
                2 => 2,
                3 => 3,
                4 => 4,
                _ => 8,
            },
            Ty::Decimal { p, .. } => p / 2 + 1,
            Ty::Float { .. } => 4,
            Ty::Double { .. } | Ty::Bit(_) | Ty::DateTime(_) | Ty::Timestamp(_) => 8,
            Ty::Date => 3,
            Ty::Time(_) => 6,
            Ty::Char(n) | Ty::VarChar(n) => n.saturating_mul(4) + 2,
            Ty::Binary(n) | Ty::VarBinary(n) => n + 2,
            Ty::Enum(_) => 2,
            Ty::Set(_) => 8,
            _ => u32::MAX,
        }
    }
}

/// Parses a MySQL column type (`COLUMN_TYPE` of information_schema or a source's spelling:
/// `int(11) unsigned`, `decimal(65,30)`, `enum('a','b')`, `varchar(20)`, ...).
pub(crate) fn parse_type(text: &str) -> Option<Ty> {
    let t = text.trim().to_ascii_lowercase();
    let (head, args) = match t.find('(') {
        Some(open) => {
            let close = t.rfind(')')?;
            if close < open {
                return None;
            }
            (
                format!("{}{}", &t[..open], &t[close + 1..]),
                Some(&text.trim()[open + 1..close]),
            )
        }
        None => (t.clone(), None),
    };
    let mut words: Vec<&str> = head.split_whitespace().collect();
    let unsigned = words.contains(&"unsigned");
    words.retain(|w| !matches!(*w, "unsigned" | "signed" | "zerofill"));
    let base = words.join(" ");
    let nums = || -> Option<Vec<u32>> {
        match args {
            None => Some(Vec::new()),
            Some(a) => a.split(',').map(|x| x.trim().parse().ok()).collect(),
        }
    };
    let one = |default: u32| -> Option<u32> {
        let n = nums()?;
        match n.as_slice() {
            [] => Some(default),
            [x] => Some(*x),
            _ => None,
        }
    };
    let frac = || -> Option<u32> { one(0).filter(|p| *p <= 6) };
    let int = |rank| Some(Ty::Int { rank, unsigned });
    match base.as_str() {
        "tinyint" if args.map(str::trim) == Some("1") && !unsigned => Some(Ty::Bool),
        "bool" | "boolean" => Some(Ty::Bool),
        "tinyint" | "int1" => int(1),
        "smallint" | "int2" => int(2),
        "mediumint" | "int3" | "middleint" => int(3),
        "int" | "integer" | "int4" => int(4),
        "bigint" | "int8" => int(5),
        "year" => Some(Ty::Year),
        "decimal" | "numeric" | "dec" | "fixed" => {
            let n = nums()?;
            let (p, s) = match n.as_slice() {
                [] => (10, 0),
                [p] => (*p, 0),
                [p, s] => (*p, *s),
                _ => return None,
            };
            ((1..=65).contains(&p) && s <= 30 && s <= p).then_some(Ty::Decimal { p, s, unsigned })
        }
        "float" | "float4" if nums()?.len() <= 1 => {
            // float(p) with p > 24 is a double.
            match nums()?.first() {
                Some(p) if *p > 24 => Some(Ty::Double { unsigned }),
                _ => Some(Ty::Float { unsigned }),
            }
        }
        "double" | "double precision" | "real" | "float8" => Some(Ty::Double { unsigned }),
        "char" | "character" => one(1).filter(|n| *n <= 255).map(Ty::Char),
        "varchar" | "character varying" => {
            let n = one(0)?;
            (args.is_some() && n <= 16383).then_some(Ty::VarChar(n))
        }
        "tinytext" => Some(Ty::Text(1)),
        "text" => Some(Ty::Text(2)),
        "mediumtext" | "long varchar" | "long" => Some(Ty::Text(3)),
        "longtext" => Some(Ty::Text(4)),
        "binary" => one(1).filter(|n| *n <= 255).map(Ty::Binary),
        "varbinary" => {
            let n = one(0)?;
            (args.is_some() && n <= 65_532).then_some(Ty::VarBinary(n))
        }
        "tinyblob" => Some(Ty::Blob(1)),
        "blob" => Some(Ty::Blob(2)),
        "mediumblob" | "long varbinary" => Some(Ty::Blob(3)),
        "longblob" => Some(Ty::Blob(4)),
        "bit" => one(1).filter(|n| (1..=64).contains(n)).map(Ty::Bit),
        "date" => Some(Ty::Date),
        "time" => frac().map(Ty::Time),
        "datetime" => frac().map(Ty::DateTime),
        "timestamp" => frac().map(Ty::Timestamp),
        "json" => Some(Ty::Json),
        "enum" | "set" => {
            let labels = parse_labels(args?)?;
            if labels.is_empty() || (base == "set" && labels.len() > 64) {
                return None;
            }
            Some(if base == "enum" {
                Ty::Enum(labels)
            } else {
                Ty::Set(labels)
            })
        }
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "inet4" | "inet6" | "uuid" | "vector" => {
            Some(Ty::Named(base))
        }
        _ => None,
    }
}

/// `'a','b''c'` → labels (a label may also be written with `\'` in some spellings).
fn parse_labels(body: &str) -> Option<Vec<String>> {
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        match chars.next() {
            None => return Some(labels),
            Some('\'') => {}
            Some(_) => return None,
        }
        let mut s = String::new();
        loop {
            match chars.next() {
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    s.push('\'');
                }
                Some('\'') => break,
                Some(c) => s.push(c),
                None => return None,
            }
        }
        labels.push(s);
    }
}

/// Whether an existing column type already is what `want` asks for. On MariaDB `json` is a
/// LONGTEXT (with a `json_valid` check), so the two are the same there.
pub(crate) fn same_type(existing: &Ty, want: &Ty) -> bool {
    match (existing, want) {
        (
            Ty::Bool,
            Ty::Int {
                rank: 1,
                unsigned: false,
            },
        )
        | (
            Ty::Int {
                rank: 1,
                unsigned: false,
            },
            Ty::Bool,
        )
        | (Ty::Text(4), Ty::Json) => true,
        (a, b) => a == b,
    }
}

fn int_digits(rank: u8, unsigned: bool) -> u32 {
    match (rank, unsigned) {
        (1, _) => 3,
        (2, _) => 5,
        (3, false) => 7,
        (3, true) => 8,
        (4, _) => 10,
        (_, false) => 19,
        (_, true) => 20,
    }
}

fn text_capacity_bytes(rank: u8) -> u64 {
    match rank {
        1 => 255,
        2 => 65_535,
        3 => 16_777_215,
        _ => u64::from(u32::MAX),
    }
}

/// Whether changing a column from `old` to `new` loses nothing (so the sink applies it).
pub(crate) fn is_widening(old: &Ty, new: &Ty) -> bool {
    let old = if *old == Ty::Bool {
        &Ty::Int {
            rank: 1,
            unsigned: false,
        }
    } else {
        old
    };
    match (old, new) {
        (
            Ty::Int {
                rank: a,
                unsigned: ua,
            },
            Ty::Int {
                rank: b,
                unsigned: ub,
            },
        ) => b > a && (ua == ub || (*ua && !*ub)),
        (Ty::Int { rank, unsigned }, Ty::Decimal { p, s, unsigned: du }) => {
            (!du || *unsigned) && p.saturating_sub(*s) >= int_digits(*rank, *unsigned)
        }
        (
            Ty::Decimal {
                p: p1,
                s: s1,
                unsigned: u1,
            },
            Ty::Decimal {
                p: p2,
                s: s2,
                unsigned: u2,
            },
        ) => {
            (!u2 || *u1)
                && s2 >= s1
                && p2.saturating_sub(*s2) >= p1.saturating_sub(*s1)
                && (p1, s1, u1) != (p2, s2, u2)
        }
        (Ty::Float { .. }, Ty::Double { .. }) => true,
        (Ty::Char(a), Ty::VarChar(b)) => b >= a,
        (Ty::VarChar(a), Ty::VarChar(b)) => b > a,
        (Ty::Char(a) | Ty::VarChar(a), Ty::Text(r)) => u64::from(*a) * 4 <= text_capacity_bytes(*r),
        (Ty::Text(a), Ty::Text(b)) => b > a,
        (Ty::VarBinary(a), Ty::VarBinary(b)) => b > a,
        (Ty::VarBinary(a), Ty::Blob(r)) => u64::from(*a) <= text_capacity_bytes(*r),
        (Ty::Blob(a), Ty::Blob(b)) => b > a,
        (Ty::Bit(a), Ty::Bit(b)) => b > a,
        (Ty::Time(a), Ty::Time(b)) | (Ty::DateTime(a), Ty::DateTime(b)) => b > a,
        (Ty::Enum(a), Ty::Enum(b)) | (Ty::Set(a), Ty::Set(b)) => {
            b.len() > a.len() && b.starts_with(a)
        }
        _ => false,
    }
}

/// Fractional-second digits in a source type's parentheses (`time(3) without time zone`).
fn paren_precision(source_type: &str) -> Option<u32> {
    let open = source_type.find('(')?;
    let close = source_type[open..].find(')')? + open;
    source_type[open + 1..close].trim().parse().ok()
}

/// The column type for a source column of any source, by its engine type.
fn generic_type(col: &Column) -> Ty {
    let st = col.source_type.to_ascii_lowercase();
    let frac = || paren_precision(&st).filter(|p| *p <= 6).unwrap_or(6);
    match &col.ty {
        ColumnType::Bool => Ty::Bool,
        ColumnType::Int { bits, unsigned } => Ty::Int {
            rank: match bits {
                0..=8 => 1,
                9..=16 => 2,
                17..=24 => 3,
                25..=32 => 4,
                _ => 5,
            },
            unsigned: *unsigned,
        },
        ColumnType::Float32 => Ty::Float { unsigned: false },
        ColumnType::Float64 => Ty::Double { unsigned: false },
        ColumnType::Decimal {
            precision: Some(p),
            scale,
        } if (1..=65).contains(p) && scale.unwrap_or(0) <= 30 && scale.unwrap_or(0) <= *p => {
            Ty::Decimal {
                p: *p,
                s: scale.unwrap_or(0),
                unsigned: false,
            }
        }
        ColumnType::Decimal { .. } => Ty::Decimal {
            p: 65,
            s: 30,
            unsigned: false,
        },
        ColumnType::Text { max_len: Some(n) } if (1..=16383).contains(n) => Ty::VarChar(*n),
        ColumnType::Text { .. } | ColumnType::Other => Ty::Text(4),
        ColumnType::Bytes => Ty::Blob(4),
        // A fixed-length bit string fits BIT(n); a varying one (PostgreSQL `bit varying`)
        // would be padded there, so it is kept as its 0/1 text.
        ColumnType::Bits { len: Some(n) } if (1..=64).contains(n) && !st.contains("varying") => {
            Ty::Bit(*n)
        }
        ColumnType::Bits { len: Some(n) } if *n <= 16383 => Ty::VarChar(*n),
        ColumnType::Bits { .. } => Ty::Text(4),
        ColumnType::Date => Ty::Date,
        ColumnType::Time => Ty::Time(frac()),
        ColumnType::Timestamp | ColumnType::TimestampTz => Ty::DateTime(frac()),
        ColumnType::Json | ColumnType::Array(_) => Ty::Json,
        ColumnType::Uuid => Ty::Char(36),
    }
}

/// The column type for a column of a MySQL source: its own type where weir can spell it
/// (`char(n)` / `varchar(n)` with the declared length in characters), except
/// `timestamp(p)` → `datetime(p)` (holding UTC). A bare `char` / `varchar` (a schema staged by
/// an older weir, whose MySQL source did not pass the length) → `longtext`, not `char(1)`.
fn mysql_type(col: &Column) -> Ty {
    let st = col.source_type.trim().to_ascii_lowercase();
    if matches!(col.ty, ColumnType::Text { max_len: None })
        && matches!(st.as_str(), "char" | "varchar")
    {
        return Ty::Text(4);
    }
    match parse_type(&col.source_type) {
        Some(Ty::Timestamp(p)) => Ty::DateTime(p),
        Some(Ty::Named(_)) | None => match col.ty {
            ColumnType::Text { max_len: None } => Ty::Text(4),
            _ => generic_type(col),
        },
        Some(ty) => ty,
    }
}

/// Whether values of this column may turn into NULL on the way (a value MySQL cannot hold).
fn may_null(col: &Column) -> bool {
    matches!(
        col.ty,
        ColumnType::Float32
            | ColumnType::Float64
            | ColumnType::Decimal { .. }
            | ColumnType::Date
            | ColumnType::Timestamp
            | ColumnType::TimestampTz
    )
}

/// Target column types of every column of `schema` (see the module docs of `sink`), and
/// whether each is created NOT NULL.
pub(crate) fn target_types(schema: &TableSchema, mysql_source: bool) -> Vec<(Ty, bool)> {
    let mut out: Vec<(Ty, bool)> = schema
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let ty = if mysql_source {
                mysql_type(c)
            } else {
                generic_type(c)
            };
            let key = schema.primary_key.contains(&i);
            (ty, key || (!c.nullable && (!may_null(c) || mysql_source)))
        })
        .collect();
    // Key columns need a bounded length: text → varchar(n), bytes → varbinary(n), sharing
    // the 3072-byte key limit (what the fixed-size key columns leave) equally.
    let is_var = |t: &Ty| {
        matches!(
            t,
            Ty::VarChar(_)
                | Ty::Char(_)
                | Ty::Text(_)
                | Ty::Json
                | Ty::Binary(_)
                | Ty::VarBinary(_)
                | Ty::Blob(_)
                | Ty::Named(_)
        )
    };
    let fixed: u32 = schema
        .primary_key
        .iter()
        .filter_map(|&i| out.get(i))
        .filter(|(t, _)| !is_var(t))
        .map(|(t, _)| t.key_bytes())
        .sum();
    let n_var = schema
        .primary_key
        .iter()
        .filter_map(|&i| out.get(i))
        .filter(|(t, _)| is_var(t))
        .count() as u32;
    if let Some(share) = MAX_KEY_BYTES.saturating_sub(fixed).checked_div(n_var) {
        let share = share.max(16);
        for &i in &schema.primary_key {
            let Some((t, _)) = out.get_mut(i) else {
                continue;
            };
            if !is_var(t) || t.key_bytes() <= share {
                continue;
            }
            let chars = (share - 2) / 4;
            *t = match t {
                Ty::Binary(_) | Ty::VarBinary(_) | Ty::Blob(_) => Ty::VarBinary(share - 2),
                Ty::VarChar(n) | Ty::Char(n) => Ty::VarChar((*n).min(chars)),
                _ => Ty::VarChar(chars),
            };
        }
    }
    // Keep the row under MySQL's 65,535-byte limit for non-BLOB columns.
    let mut row = 0u32;
    for (i, (t, _)) in out.iter_mut().enumerate() {
        let key = schema.primary_key.contains(&i);
        let bytes = match t {
            Ty::VarChar(n) | Ty::Char(n) => *n * 4 + 2,
            Ty::VarBinary(n) | Ty::Binary(n) => *n + 2,
            _ => 0,
        };
        if !key && row + bytes > ROW_VARCHAR_BYTES {
            *t = match t {
                Ty::VarBinary(_) | Ty::Binary(_) => Ty::Blob(4),
                _ => Ty::Text(4),
            };
        } else {
            row += bytes;
        }
    }
    out
}

/// How the sink writes values into a target column (from its catalog type).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Int,
    /// decimal(p,s): values checked against the scale and sent as exact decimal literals.
    Decimal {
        p: u32,
        s: u32,
    },
    Float,
    Bit,
    Temporal,
    Text,
    Binary,
    /// MySQL's native JSON type (compared through `CAST(... AS JSON)`).
    Json,
    Other,
}

impl Kind {
    /// From information_schema's DATA_TYPE and COLUMN_TYPE.
    pub(crate) fn of(data_type: &str, column_type: &str) -> Kind {
        match data_type.to_ascii_lowercase().as_str() {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => {
                Kind::Int
            }
            "decimal" | "numeric" => match parse_type(column_type) {
                Some(Ty::Decimal { p, s, .. }) => Kind::Decimal { p, s },
                _ => Kind::Other,
            },
            "float" | "double" | "real" => Kind::Float,
            "bit" => Kind::Bit,
            "date" | "time" | "datetime" | "timestamp" => Kind::Temporal,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum"
            | "set" => Kind::Text,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                Kind::Binary
            }
            "json" => Kind::Json,
            _ => Kind::Other,
        }
    }

    fn is_text(&self) -> bool {
        matches!(self, Kind::Text | Kind::Json | Kind::Other)
    }
}

/// One value as the sink sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cell {
    /// PostgreSQL unchanged TOAST: leave the target column as it is.
    Unchanged,
    /// SQL NULL.
    Null,
    /// An SQL literal.
    Lit(String),
}

impl weir_api::keyed::MaybeUnchanged for Cell {
    fn is_unchanged(&self) -> bool {
        *self == Cell::Unchanged
    }
}

impl Cell {
    /// The literal (`NULL` for null; callers exclude `Unchanged` first).
    pub(crate) fn sql(&self) -> &str {
        match self {
            Cell::Lit(s) => s,
            _ => "NULL",
        }
    }

    /// Approximate heap size, for the sink's memory bound.
    pub(crate) fn size(&self) -> usize {
        match self {
            Cell::Lit(s) => s.len() + 24,
            _ => 24,
        }
    }
}

/// The cell of `v` for a column of kind `kind`. `Ok((Cell::Null, Some(reason)))`: the value
/// cannot be held by the column (NaN, ±infinity, a date outside years 0..9999) and becomes
/// NULL; `Err`: the value would be changed by the column (more fractional digits than its
/// scale) and is refused.
pub(crate) fn cell(v: &Value, kind: &Kind) -> Result<(Cell, Option<&'static str>), String> {
    Ok(match v {
        Value::Unchanged => (Cell::Unchanged, None),
        Value::Null => (Cell::Null, None),
        other => match literal(other, kind)? {
            Lit::Sql(s) => (Cell::Lit(s), None),
            Lit::Unrepresentable(why) => (Cell::Null, Some(why)),
        },
    })
}

enum Lit {
    Sql(String),
    Unrepresentable(&'static str),
}

fn literal(v: &Value, kind: &Kind) -> Result<Lit, String> {
    let text_or = |text: String, why: &'static str| {
        if kind.is_text() {
            Lit::Sql(quote_str(&text))
        } else {
            Lit::Unrepresentable(why)
        }
    };
    Ok(match v {
        Value::Null | Value::Unchanged => Lit::Sql("NULL".into()),
        Value::Bool(b) => Lit::Sql(if *b { "1" } else { "0" }.into()),
        Value::Int(i) => Lit::Sql(i.to_string()),
        Value::UInt(u) => Lit::Sql(u.to_string()),
        Value::Float32(f) => float_lit(f64::from(*f), kind),
        Value::Float64(f) => float_lit(*f, kind),
        Value::Decimal(s) => {
            if !is_plain_decimal(s) {
                return Ok(text_or(s.clone(), "NaN or infinity"));
            }
            match kind {
                Kind::Decimal { p, s: scale } => Lit::Sql(decimal_lit(s, *p, *scale)?),
                Kind::Int | Kind::Float => Lit::Sql(s.clone()),
                _ => Lit::Sql(quote_str(s)),
            }
        }
        Value::Text(s) | Value::Json(s) | Value::Other(s) => Lit::Sql(quote_str(s)),
        Value::Bytes(b) => {
            let mut s = String::with_capacity(3 + 2 * b.len());
            s.push_str("X'");
            push_hex(&mut s, b);
            s.push('\'');
            Lit::Sql(s)
        }
        Value::Bits(s) => {
            let bits = !s.is_empty() && s.bytes().all(|b| b == b'0' || b == b'1');
            match kind {
                Kind::Bit if bits => Lit::Sql(format!("b'{s}'")),
                Kind::Int if bits && s.len() <= 64 => {
                    Lit::Sql(u64::from_str_radix(s, 2).unwrap_or(0).to_string())
                }
                _ => Lit::Sql(quote_str(s)),
            }
        }
        Value::Date(d) => match date_text(*d) {
            Some(t) => Lit::Sql(quote_str(&t)),
            None => text_or(d.to_string(), "a date outside years 0000..9999"),
        },
        Value::Time(t) => Lit::Sql(quote_str(&t.to_string())),
        Value::Timestamp(ts) | Value::TimestampTz(ts) => match timestamp_text(*ts) {
            Some(t) => Lit::Sql(quote_str(&t)),
            None => text_or(ts.to_string(), "a timestamp outside years 0000..9999"),
        },
        Value::Uuid(b) => {
            let mut s = String::with_capacity(38);
            s.push('\'');
            for (i, byte) in b.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    s.push('-');
                }
                let _ = write!(s, "{byte:02x}");
            }
            s.push('\'');
            Lit::Sql(s)
        }
        Value::Array(items) => {
            let mut s = String::new();
            json_array(items, &mut s);
            Lit::Sql(quote_str(&s))
        }
    })
}

fn float_lit(f: f64, kind: &Kind) -> Lit {
    if f.is_finite() {
        // `{:?}` is the shortest text that parses back to the same f64 (`0.1`, `1e300`).
        return Lit::Sql(format!("{f:?}"));
    }
    let text = if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    };
    if kind.is_text() {
        Lit::Sql(quote_str(text))
    } else {
        Lit::Unrepresentable("NaN or infinity")
    }
}

/// `-?digits(.digits)?`.
fn is_plain_decimal(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

/// The exact decimal literal of `s` for a `decimal(p, scale)` column, or why the column
/// cannot hold it unchanged.
fn decimal_lit(s: &str, p: u32, scale: u32) -> Result<String, String> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    if frac.len() > scale as usize {
        return Err(format!(
            "{s} has {} fractional digits but the column is decimal({p},{scale}) and would \
             round it",
            frac.len()
        ));
    }
    if int.len() > p.saturating_sub(scale) as usize {
        return Err(format!(
            "{s} has {} integer digits but the column is decimal({p},{scale})",
            int.len()
        ));
    }
    let mut out = String::with_capacity(s.len() + 2);
    if neg && !(int.is_empty() && frac.is_empty()) {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    Ok(out)
}

/// `YYYY-MM-DD` (zero months/days kept); `None` outside years 0..=9999 or for ±infinity.
fn date_text(d: Date) -> Option<String> {
    if d.is_infinite() || !(0..=9999).contains(&d.year) {
        return None;
    }
    Some(format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
}

fn timestamp_text(ts: Timestamp) -> Option<String> {
    let date = date_text(ts.date)?;
    let us = ts.micros % 1_000_000;
    let s = ts.micros / 1_000_000;
    Some(format!(
        "{date} {:02}:{:02}:{:02}.{us:06}",
        s / 3600,
        s / 60 % 60,
        s % 60
    ))
}

/// An array as JSON, each element as SPEC.md's change events render it.
fn json_array(items: &[Value], out: &mut String) {
    out.push('[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        json_value(item, out);
    }
    out.push(']');
}

fn json_str(s: &str, out: &mut String) {
    out.push_str(&serde_json::Value::String(s.to_owned()).to_string());
}

fn json_value(v: &Value, out: &mut String) {
    match v {
        Value::Null | Value::Unchanged => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::UInt(u) => {
            let _ = write!(out, "{u}");
        }
        Value::Float32(f) => json_float(f64::from(*f), out),
        Value::Float64(f) => json_float(*f, out),
        Value::Decimal(s) | Value::Text(s) | Value::Bits(s) | Value::Other(s) => json_str(s, out),
        Value::Json(s) => out.push_str(s),
        Value::Bytes(b) => json_str(&base64(b), out),
        Value::Date(d) => json_str(&d.to_string(), out),
        Value::Time(t) => json_str(&t.to_string(), out),
        Value::Timestamp(ts) => json_str(&ts.to_string(), out),
        Value::TimestampTz(ts) => {
            let mut s = ts.to_string();
            if !ts.date.is_infinite() {
                s.push('Z');
            }
            json_str(&s, out)
        }
        Value::Uuid(b) => {
            let mut s = String::with_capacity(36);
            for (i, byte) in b.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    s.push('-');
                }
                let _ = write!(s, "{byte:02x}");
            }
            json_str(&s, out)
        }
        Value::Array(items) => json_array(items, out),
    }
}

fn json_float(f: f64, out: &mut String) {
    if f.is_finite() {
        let _ = write!(out, "{f:?}");
    } else if f.is_nan() {
        out.push_str("\"NaN\"");
    } else if f > 0.0 {
        out.push_str("\"Infinity\"");
    } else {
        out.push_str("\"-Infinity\"");
    }
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::{TableId, Time};

    fn lit(v: Value, kind: Kind) -> String {
        match cell(&v, &kind).expect("converts").0 {
            Cell::Lit(s) => s,
            Cell::Null => "NULL".into(),
            Cell::Unchanged => "<unchanged>".into(),
        }
    }

    #[test]
    fn literals_are_exact() {
        assert_eq!(lit(Value::Float64(0.1), Kind::Float), "0.1");
        assert_eq!(lit(Value::Float64(1e300), Kind::Float), "1e300");
        assert_eq!(lit(Value::Float32(0.1), Kind::Float), "0.10000000149011612");
        assert_eq!(lit(Value::Float64(f64::NAN), Kind::Float), "NULL");
        assert_eq!(lit(Value::Float64(f64::NAN), Kind::Text), "'NaN'");
        assert_eq!(
            lit(Value::UInt(u64::MAX), Kind::Int),
            "18446744073709551615"
        );
        assert_eq!(lit(Value::Text("it's".into()), Kind::Text), "'it''s'");
        assert_eq!(lit(Value::Text("a\\b".into()), Kind::Text), "'a\\b'");
        assert_eq!(
            lit(Value::Text("a\0".into()), Kind::Text),
            "_utf8mb4 X'6100'"
        );
        assert_eq!(lit(Value::Bytes(vec![0, 0xff]), Kind::Binary), "X'00FF'");
        assert_eq!(lit(Value::Bits("0101".into()), Kind::Bit), "b'0101'");
        assert_eq!(lit(Value::Bits("0101".into()), Kind::Text), "'0101'");
        let d = |s: &str| lit(Value::Decimal(s.into()), Kind::Decimal { p: 65, s: 30 });
        assert_eq!(d("-0012.5000"), "-12.5");
        assert_eq!(d("-0.000"), "0");
        assert!(
            cell(
                &Value::Decimal("1.0000000000000000000000000000001".into()),
                &Kind::Decimal { p: 65, s: 30 }
            )
            .is_err()
        );
        assert_eq!(
            lit(Value::Decimal("NaN".into()), Kind::Decimal { p: 65, s: 30 }),
            "NULL"
        );
        assert_eq!(
            lit(Value::Date(Date::new(0, 0, 0)), Kind::Temporal),
            "'0000-00-00'"
        );
        assert_eq!(lit(Value::Date(Date::INFINITY), Kind::Temporal), "NULL");
        assert_eq!(
            lit(Value::Time(Time::hms(-838, -59, -59, 0)), Kind::Temporal),
            "'-838:59:59.000000'"
        );
        assert_eq!(
            lit(
                Value::Timestamp(Timestamp {
                    date: Date::new(2024, 2, 29),
                    micros: Time::hms(13, 45, 1, 1).micros as u64
                }),
                Kind::Temporal
            ),
            "'2024-02-29 13:45:01.000001'"
        );
        assert_eq!(
            lit(
                Value::Array(vec![
                    Value::Array(vec![Value::Text("q\"".into()), Value::Null]),
                    Value::Array(vec![
                        Value::Bytes(b"hi!".to_vec()),
                        Value::Float64(f64::NAN)
                    ]),
                ]),
                Kind::Json
            ),
            "'[[\"q\\\"\", null], [\"aGkh\", \"NaN\"]]'"
        );
    }

    #[test]
    fn types_parse_compare_and_widen() {
        let p = |s: &str| parse_type(s).unwrap_or_else(|| panic!("parses {s}"));
        assert_eq!(p("bigint(20) unsigned").sql(), "bigint unsigned");
        assert_eq!(p("decimal(65,30)").sql(), "decimal(65,30)");
        assert_eq!(p("enum('a','b''c')").sql(), "enum('a','b''c')");
        assert_eq!(p("tinyint(1)"), Ty::Bool);
        assert!(parse_type("varchar").is_none());
        assert!(parse_type("decimal(66,2)").is_none());
        assert!(same_type(&p("int(11)"), &p("int")));
        assert!(same_type(&p("longtext"), &Ty::Json));
        assert!(is_widening(&p("int"), &p("bigint")));
        assert!(is_widening(&p("int unsigned"), &p("bigint")));
        assert!(!is_widening(&p("bigint unsigned"), &p("bigint")));
        assert!(is_widening(&p("int"), &p("decimal(12,2)")));
        assert!(is_widening(&p("decimal(10,2)"), &p("decimal(12,4)")));
        assert!(!is_widening(&p("decimal(10,2)"), &p("decimal(10,4)")));
        assert!(is_widening(&p("varchar(10)"), &p("varchar(20)")));
        assert!(is_widening(&p("varchar(10)"), &p("text")));
        assert!(!is_widening(&p("text"), &p("varchar(10)")));
        assert!(is_widening(&p("enum('a')"), &p("enum('a','b')")));
        assert!(!is_widening(&p("enum('a','b')"), &p("enum('b','a','c')")));
        assert!(is_widening(&p("datetime(3)"), &p("datetime(6)")));
        assert!(is_widening(&p("float"), &p("double")));
    }

    #[test]
    fn mapping_bounds_keys_and_keeps_mysql_types() {
        let col = |name: &str, ty: ColumnType, st: &str| Column {
            name: name.into(),
            ty,
            source_type: st.into(),
            nullable: true,
        };
        let s = TableSchema {
            table: TableId::new("s", "t"),
            version: 1,
            columns: vec![
                col("k1", ColumnType::Text { max_len: None }, "text"),
                col("k2", ColumnType::Bytes, "bytea"),
                col(
                    "k3",
                    ColumnType::Int {
                        bits: 64,
                        unsigned: false,
                    },
                    "bigint",
                ),
                col(
                    "n",
                    ColumnType::Decimal {
                        precision: None,
                        scale: None,
                    },
                    "numeric",
                ),
                col("ts", ColumnType::TimestampTz, "timestamp(3) with time zone"),
                col(
                    "a",
                    ColumnType::Array(Box::new(ColumnType::Bool)),
                    "boolean[]",
                ),
                col("u", ColumnType::Uuid, "uuid"),
                col("vb", ColumnType::Bits { len: Some(5) }, "bit varying(5)"),
            ],
            primary_key: vec![0, 1, 2],
        };
        let got: Vec<String> = target_types(&s, false)
            .iter()
            .map(|(t, _)| t.sql())
            .collect();
        assert_eq!(
            got,
            [
                "varchar(382)",
                "varbinary(1530)",
                "bigint",
                "decimal(65,30)",
                "datetime(3)",
                "json",
                "char(36)",
                "varchar(5)"
            ]
        );
        let m = TableSchema {
            table: TableId::new("s", "t"),
            version: 1,
            columns: vec![
                col(
                    "u",
                    ColumnType::Int {
                        bits: 64,
                        unsigned: true,
                    },
                    "bigint unsigned",
                ),
                col("v", ColumnType::Text { max_len: None }, "varchar"),
                col("e", ColumnType::Text { max_len: None }, "enum('a','b')"),
                col("t", ColumnType::TimestampTz, "timestamp(6)"),
                col("g", ColumnType::Other, "geometry"),
            ],
            primary_key: vec![1],
        };
        let got: Vec<String> = target_types(&m, true)
            .iter()
            .map(|(t, _)| t.sql())
            .collect();
        assert_eq!(
            got,
            [
                "bigint unsigned",
                "varchar(767)",
                "enum('a','b')",
                "datetime(6)",
                "longtext"
            ]
        );
    }
}
