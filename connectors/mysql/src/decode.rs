//! Pure decoding of binlog row images into weir [`Value`]s, lossless per SPEC.md.
//!
//! `mysql_common` frames the events and parses TABLE_MAP; the row images themselves are
//! decoded here, from the column type byte and metadata of the TABLE_MAP, because weir needs
//! exact control (microseconds, unsigned 64-bit, exact decimals, charsets, zero dates) and
//! must never panic on bytes from the network: every read is bounds-checked and returns a
//! [`DecodeError`].

use std::fmt;

use weir_api::{ColumnType, Date, Time, Timestamp, Value};

/// A row image or value that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

/// MySQL column type codes (`enum_field_types`).
#[allow(missing_docs)]
pub mod ty {
    pub const DECIMAL: u8 = 0;
    pub const TINY: u8 = 1;
    pub const SHORT: u8 = 2;
    pub const LONG: u8 = 3;
    pub const FLOAT: u8 = 4;
    pub const DOUBLE: u8 = 5;
    pub const NULL: u8 = 6;
    pub const TIMESTAMP: u8 = 7;
    pub const LONGLONG: u8 = 8;
    pub const INT24: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const DATETIME: u8 = 12;
    pub const YEAR: u8 = 13;
    pub const NEWDATE: u8 = 14;
    pub const VARCHAR: u8 = 15;
    pub const BIT: u8 = 16;
    pub const TIMESTAMP2: u8 = 17;
    pub const DATETIME2: u8 = 18;
    pub const TIME2: u8 = 19;
    pub const JSON: u8 = 245;
    pub const NEWDECIMAL: u8 = 246;
    pub const ENUM: u8 = 247;
    pub const SET: u8 = 248;
    pub const TINY_BLOB: u8 = 249;
    pub const MEDIUM_BLOB: u8 = 250;
    pub const LONG_BLOB: u8 = 251;
    pub const BLOB: u8 = 252;
    pub const VAR_STRING: u8 = 253;
    pub const STRING: u8 = 254;
    pub const GEOMETRY: u8 = 255;
}

/// How the bytes of a text column are encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charset {
    /// `binary`: the value is bytes.
    Binary,
    /// `utf8mb3` (MySQL's and MariaDB's `utf8`): up to 3 bytes a character.
    Utf8mb3,
    /// `utf8mb4`: up to 4 bytes a character.
    Utf8mb4,
    /// MySQL `latin1` (which is Windows-1252).
    Latin1,
    /// `ascii`.
    Ascii,
    /// `ucs2` (2 bytes a character, big-endian; decoded as UTF-16).
    Ucs2,
    /// `utf16` (big-endian UTF-16).
    Utf16Be,
    /// `utf16le`.
    Utf16Le,
    /// `utf32` (big-endian).
    Utf32,
    /// A character set weir cannot decode (its name).
    Unsupported(String),
}

impl Charset {
    /// The charset of a character-set name as the server spells it.
    pub fn from_name(name: &str) -> Charset {
        match name.to_ascii_lowercase().as_str() {
            "binary" => Charset::Binary,
            "utf8" | "utf8mb3" => Charset::Utf8mb3,
            "utf8mb4" => Charset::Utf8mb4,
            "latin1" => Charset::Latin1,
            "ascii" => Charset::Ascii,
            "ucs2" => Charset::Ucs2,
            "utf16" => Charset::Utf16Be,
            "utf16le" => Charset::Utf16Le,
            "utf32" => Charset::Utf32,
            other => Charset::Unsupported(other.to_owned()),
        }
    }

    /// The most bytes one character takes (the server's `MAXLEN` of the character set):
    /// a column's declared length in characters is its length in bytes (what a TABLE_MAP
    /// and `CHARACTER_OCTET_LENGTH` give) divided by this. For a character set weir does not
    /// know it is 1, so the length is never understated.
    pub fn max_char_bytes(&self) -> u32 {
        match self {
            Charset::Binary | Charset::Latin1 | Charset::Ascii => 1,
            Charset::Ucs2 => 2,
            Charset::Utf8mb3 => 3,
            Charset::Utf8mb4 | Charset::Utf16Be | Charset::Utf16Le | Charset::Utf32 => 4,
            Charset::Unsupported(name) => match name.as_str() {
                "big5" | "sjis" | "cp932" | "gbk" | "gb2312" | "euckr" => 2,
                "ujis" | "eucjpms" => 3,
                "gb18030" => 4,
                _ => 1,
            },
        }
    }

    /// A declared length in characters from a length in bytes.
    pub fn chars(&self, bytes: u32) -> u32 {
        bytes.div_ceil(self.max_char_bytes())
    }

    /// Decodes `bytes` to text.
    pub fn decode(&self, bytes: &[u8]) -> Result<String, DecodeError> {
        match self {
            Charset::Utf8mb3 | Charset::Utf8mb4 => std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|e| DecodeError(format!("invalid UTF-8 in a utf8 column: {e}"))),
            Charset::Latin1 => Ok(bytes.iter().map(|&b| cp1252(b)).collect()),
            Charset::Ascii => {
                if let Some(b) = bytes.iter().find(|b| !b.is_ascii()) {
                    return err(format!("byte 0x{b:02x} in an ascii column"));
                }
                Ok(bytes.iter().map(|&b| char::from(b)).collect())
            }
            Charset::Ucs2 | Charset::Utf16Be | Charset::Utf16Le => {
                if !bytes.len().is_multiple_of(2) {
                    return err("odd number of bytes in a UTF-16 column");
                }
                let units = bytes.chunks_exact(2).map(|c| {
                    if *self != Charset::Utf16Le {
                        u16::from_be_bytes([c[0], c[1]])
                    } else {
                        u16::from_le_bytes([c[0], c[1]])
                    }
                });
                char::decode_utf16(units)
                    .collect::<Result<String, _>>()
                    .map_err(|e| DecodeError(format!("invalid UTF-16: {e}")))
            }
            Charset::Utf32 => {
                if !bytes.len().is_multiple_of(4) {
                    return err("byte count of a utf32 column is not a multiple of 4");
                }
                bytes
                    .chunks_exact(4)
                    .map(|c| {
                        let u = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                        char::from_u32(u).ok_or_else(|| DecodeError(format!("bad utf32 {u:#x}")))
                    })
                    .collect()
            }
            Charset::Binary => err("internal: binary column decoded as text"),
            Charset::Unsupported(name) => err(format!(
                "character set {name} is not supported by weir yet (supported: utf8mb4, \
                 utf8mb3, latin1, ascii, ucs2, utf16, utf16le, utf32, binary); convert the \
                 column, e.g. ALTER TABLE ... MODIFY ... CHARACTER SET utf8mb4"
            )),
        }
    }
}

/// MySQL's latin1 is Windows-1252 (0x81, 0x8D, 0x8F, 0x90, 0x9D map to C1 controls).
fn cp1252(b: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
        0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
    ];
    if (0x80..0xA0).contains(&b) {
        char::from_u32(u32::from(HIGH[usize::from(b - 0x80)])).unwrap_or('\u{FFFD}')
    } else {
        char::from(b)
    }
}

/// How one column's value is laid out in a row image.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// Integer of 1, 2, 3, 4 or 8 bytes.
    Int {
        /// Width in bytes.
        bytes: u8,
        /// UNSIGNED.
        unsigned: bool,
    },
    /// FLOAT.
    Float,
    /// DOUBLE.
    Double,
    /// DECIMAL(precision, scale), binary format.
    Decimal {
        /// Total digits.
        precision: u8,
        /// Digits after the point.
        scale: u8,
    },
    /// YEAR.
    Year,
    /// DATE.
    Date,
    /// TIME before MySQL 5.6 (no fraction).
    TimeOld,
    /// TIME(fsp).
    Time2(u8),
    /// DATETIME before MySQL 5.6.
    DateTimeOld,
    /// DATETIME(fsp).
    DateTime2(u8),
    /// TIMESTAMP before MySQL 5.6.
    TimestampOld,
    /// TIMESTAMP(fsp).
    Timestamp2(u8),
    /// BIT(bits).
    Bit(u32),
    /// CHAR/BINARY (`max_bytes` decides the length prefix; BINARY is padded back to it).
    Char {
        /// Maximum length in bytes.
        max_bytes: u32,
        /// Character set.
        charset: Charset,
    },
    /// VARCHAR/VARBINARY.
    VarChar {
        /// Maximum length in bytes.
        max_bytes: u32,
        /// Character set.
        charset: Charset,
    },
    /// BLOB/TEXT with a 1..=4-byte length; `json` for MariaDB JSON (a LONGTEXT).
    Blob {
        /// Bytes of the length prefix.
        len_bytes: u8,
        /// Character set.
        charset: Charset,
        /// A MariaDB JSON column.
        json: bool,
    },
    /// MySQL binary JSON.
    Json {
        /// Bytes of the length prefix.
        len_bytes: u8,
    },
    /// ENUM, by its labels.
    Enum {
        /// Bytes of the index (1 or 2).
        pack: u8,
        /// Labels in definition order.
        labels: Vec<String>,
    },
    /// SET, by its labels.
    Set {
        /// Bytes of the bitmask (1..=8).
        pack: u8,
        /// Labels in definition order.
        labels: Vec<String>,
    },
    /// GEOMETRY (SRID + WKB), rendered as WKT.
    Geometry {
        /// Bytes of the length prefix.
        len_bytes: u8,
    },
    /// The NULL type: always NULL.
    Null,
}

/// What the TABLE_MAP (and its optional metadata) says about one column.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawColumn {
    /// Column type byte.
    pub type_code: u8,
    /// Its metadata bytes.
    pub meta: Vec<u8>,
    /// UNSIGNED (numeric columns).
    pub unsigned: bool,
    /// Character set (character, ENUM and SET columns).
    pub charset: Option<Charset>,
    /// ENUM or SET labels.
    pub labels: Vec<String>,
    /// A MariaDB JSON column (LONGTEXT with a json_valid check).
    pub json: bool,
}

/// The real type of a column: `STRING` hides ENUM and SET, and long CHARs borrow bits of
/// the length. Returns (real type, max length for CHAR).
pub fn real_type(type_code: u8, meta: &[u8]) -> Result<(u8, u32), DecodeError> {
    if type_code != ty::STRING {
        return Ok((type_code, 0));
    }
    let (&b0, &b1) = match (meta.first(), meta.get(1)) {
        (Some(a), Some(b)) => (a, b),
        _ => return err("CHAR column without its 2 metadata bytes"),
    };
    if b0 == 0 {
        return Ok((ty::STRING, u32::from(b1)));
    }
    if (b0 & 0x30) != 0x30 {
        // A CHAR longer than 255 bytes: two high bits of the length live in byte 0.
        let len = u32::from(b1) | ((u32::from(b0 & 0x30) ^ 0x30) << 4);
        return Ok((b0 | 0x30, len));
    }
    Ok((b0, u32::from(b1)))
}

/// Whether a column of this real type carries a charset in the COLUMN/DEFAULT_CHARSET
/// optional metadata.
pub fn is_character(real: u8) -> bool {
    matches!(
        real,
        ty::STRING
            | ty::VAR_STRING
            | ty::VARCHAR
            | ty::BLOB
            | ty::TINY_BLOB
            | ty::MEDIUM_BLOB
            | ty::LONG_BLOB
    )
}

/// Whether a column of this real type carries a bit in the SIGNEDNESS optional metadata.
/// MariaDB counts YEAR (a TINYINT underneath) as numeric; MySQL does not.
pub fn is_numeric(real: u8, mariadb: bool) -> bool {
    (mariadb && real == ty::YEAR)
        || matches!(
            real,
            ty::TINY
                | ty::SHORT
                | ty::INT24
                | ty::LONG
                | ty::LONGLONG
                | ty::FLOAT
                | ty::DOUBLE
                | ty::NEWDECIMAL
                | ty::DECIMAL
        )
}

fn meta_byte(meta: &[u8], i: usize, what: &str) -> Result<u8, DecodeError> {
    meta.get(i)
        .copied()
        .ok_or_else(|| DecodeError(format!("{what} column without metadata byte {i}")))
}

/// Decides the layout, engine type and source type name of a column.
pub fn classify(c: &RawColumn) -> Result<(Kind, ColumnType, String), DecodeError> {
    let (real, char_len) = real_type(c.type_code, &c.meta)?;
    let u = c.unsigned;
    let uns = |s: &str| {
        if u {
            format!("{s} unsigned")
        } else {
            s.to_owned()
        }
    };
    let int = |bytes: u8, bits: u8, name: &str| {
        (
            Kind::Int { bytes, unsigned: u },
            ColumnType::Int { bits, unsigned: u },
            uns(name),
        )
    };
    let charset = || c.charset.clone().unwrap_or(Charset::Binary);
    let fsp = |what: &str| -> Result<u8, DecodeError> {
        let f = meta_byte(&c.meta, 0, what)?;
        if f > 6 {
            return err(format!("{what} with fractional precision {f} (max 6)"));
        }
        Ok(f)
    };
    let len_bytes = |what: &str| -> Result<u8, DecodeError> {
        let n = meta_byte(&c.meta, 0, what)?;
        if !(1..=4).contains(&n) {
            return err(format!("{what} with a {n}-byte length (expected 1 to 4)"));
        }
        Ok(n)
    };
    Ok(match real {
        ty::TINY => int(1, 8, "tinyint"),
        ty::SHORT => int(2, 16, "smallint"),
        ty::INT24 => int(3, 24, "mediumint"),
        ty::LONG => int(4, 32, "int"),
        ty::LONGLONG => int(8, 64, "bigint"),
        ty::FLOAT => (Kind::Float, ColumnType::Float32, uns("float")),
        ty::DOUBLE => (Kind::Double, ColumnType::Float64, uns("double")),
        ty::NEWDECIMAL => {
            let p = meta_byte(&c.meta, 0, "DECIMAL")?;
            let s = meta_byte(&c.meta, 1, "DECIMAL")?;
            if p == 0 || p > 65 || s > 30 || s > p {
                return err(format!("DECIMAL({p},{s}) is out of range"));
            }
            (
                Kind::Decimal {
                    precision: p,
                    scale: s,
                },
                ColumnType::Decimal {
                    precision: Some(u32::from(p)),
                    scale: Some(u32::from(s)),
                },
                uns(&format!("decimal({p},{s})")),
            )
        }
        ty::YEAR => (
            Kind::Year,
            ColumnType::Int {
                bits: 16,
                unsigned: false,
            },
            "year".into(),
        ),
        ty::DATE | ty::NEWDATE => (Kind::Date, ColumnType::Date, "date".into()),
        ty::TIME => (Kind::TimeOld, ColumnType::Time, "time".into()),
        ty::TIME2 => {
            let f = fsp("TIME")?;
            (Kind::Time2(f), ColumnType::Time, format!("time({f})"))
        }
        ty::DATETIME => (Kind::DateTimeOld, ColumnType::Timestamp, "datetime".into()),
        ty::DATETIME2 => {
            let f = fsp("DATETIME")?;
            (
                Kind::DateTime2(f),
                ColumnType::Timestamp,
                format!("datetime({f})"),
            )
        }
        ty::TIMESTAMP => (
            Kind::TimestampOld,
            ColumnType::TimestampTz,
            "timestamp".into(),
        ),
        ty::TIMESTAMP2 => {
            let f = fsp("TIMESTAMP")?;
            (
                Kind::Timestamp2(f),
                ColumnType::TimestampTz,
                format!("timestamp({f})"),
            )
        }
        ty::BIT => {
            let bits = u32::from(meta_byte(&c.meta, 1, "BIT")?) * 8
                + u32::from(meta_byte(&c.meta, 0, "BIT")?);
            if bits == 0 || bits > 64 {
                return err(format!("BIT({bits}) is out of range"));
            }
            (
                Kind::Bit(bits),
                ColumnType::Bits { len: Some(bits) },
                format!("bit({bits})"),
            )
        }
        ty::STRING => {
            let cs = charset();
            let (ct, name) = if cs == Charset::Binary {
                (ColumnType::Bytes, format!("binary({char_len})"))
            } else {
                let n = cs.chars(char_len);
                (ColumnType::Text { max_len: Some(n) }, format!("char({n})"))
            };
            (
                Kind::Char {
                    max_bytes: char_len,
                    charset: cs,
                },
                ct,
                name,
            )
        }
        ty::VARCHAR | ty::VAR_STRING => {
            let lo = meta_byte(&c.meta, 0, "VARCHAR")?;
            let hi = meta_byte(&c.meta, 1, "VARCHAR")?;
            let max = u32::from(u16::from_le_bytes([lo, hi]));
            let cs = charset();
            let (ct, name) = if cs == Charset::Binary {
                (ColumnType::Bytes, format!("varbinary({max})"))
            } else {
                let n = cs.chars(max);
                (
                    ColumnType::Text { max_len: Some(n) },
                    format!("varchar({n})"),
                )
            };
            (
                Kind::VarChar {
                    max_bytes: max,
                    charset: cs,
                },
                ct,
                name,
            )
        }
        ty::BLOB | ty::TINY_BLOB | ty::MEDIUM_BLOB | ty::LONG_BLOB => {
            let n = len_bytes("BLOB")?;
            let cs = charset();
            let size = ["tiny", "", "medium", "long"][usize::from(n - 1)];
            let (ct, name) = if c.json {
                (ColumnType::Json, "json".to_owned())
            } else if cs == Charset::Binary {
                (ColumnType::Bytes, format!("{size}blob"))
            } else {
                (ColumnType::Text { max_len: None }, format!("{size}text"))
            };
            (
                Kind::Blob {
                    len_bytes: n,
                    charset: cs,
                    json: c.json,
                },
                ct,
                name,
            )
        }
        ty::JSON => (
            Kind::Json {
                len_bytes: len_bytes("JSON")?,
            },
            ColumnType::Json,
            "json".into(),
        ),
        ty::ENUM | ty::SET => {
            let pack = meta_byte(&c.meta, 1, "ENUM/SET")?;
            let is_enum = real == ty::ENUM;
            if (is_enum && !(1..=2).contains(&pack)) || (!is_enum && !(1..=8).contains(&pack)) {
                return err(format!("ENUM/SET with a {pack}-byte value"));
            }
            if c.labels.is_empty() {
                return err(
                    "ENUM/SET column without its labels (the TABLE_MAP has no ENUM_STR_VALUE / \
                     SET_STR_VALUE metadata and information_schema gave none)",
                );
            }
            let labels = c.labels.clone();
            let quoted: Vec<String> = labels
                .iter()
                .map(|l| format!("'{}'", l.replace('\'', "''")))
                .collect();
            let name = format!(
                "{}({})",
                if is_enum { "enum" } else { "set" },
                quoted.join(",")
            );
            let kind = if is_enum {
                Kind::Enum { pack, labels }
            } else {
                Kind::Set { pack, labels }
            };
            (kind, ColumnType::Text { max_len: None }, name)
        }
        ty::GEOMETRY => (
            Kind::Geometry {
                len_bytes: len_bytes("GEOMETRY")?,
            },
            ColumnType::Other,
            "geometry".into(),
        ),
        ty::NULL => (Kind::Null, ColumnType::Other, "null".into()),
        other => {
            return err(format!(
                "column type {other} is not supported by weir (vector, typed array or \
                 pre-5.0 DECIMAL); leave the table out with `exclude` or change the column"
            ));
        }
    })
}

/// A bounds-checked reader over a row image.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                DecodeError(format!(
                    "row image truncated: need {n} bytes at offset {} of {}",
                    self.pos,
                    self.buf.len()
                ))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn uint_le(&mut self, n: usize) -> Result<u64, DecodeError> {
        let b = self.take(n)?;
        Ok(b.iter()
            .rev()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    fn uint_be(&mut self, n: usize) -> Result<u64, DecodeError> {
        let b = self.take(n)?;
        Ok(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// A length-encoded integer (the row count of columns in a rows event).
    pub fn lenenc(&mut self) -> Result<u64, DecodeError> {
        let first = self.take(1)?[0];
        match first {
            0..=0xfa => Ok(u64::from(first)),
            0xfc => self.uint_le(2),
            0xfd => self.uint_le(3),
            0xfe => self.uint_le(8),
            _ => err(format!("bad length-encoded integer prefix 0x{first:02x}")),
        }
    }
}

/// Decodes one non-NULL value of a column laid out as `kind`.
pub fn decode_value(kind: &Kind, r: &mut Reader<'_>) -> Result<Value, DecodeError> {
    Ok(match kind {
        Kind::Int { bytes, unsigned } => {
            let n = usize::from(*bytes);
            let raw = r.uint_le(n)?;
            if *unsigned {
                Value::UInt(raw)
            } else {
                let shift = 64 - 8 * n as u32;
                Value::Int(((raw << shift) as i64) >> shift)
            }
        }
        Kind::Float => {
            let b = r.take(4)?;
            Value::Float32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
        Kind::Double => Value::Float64(f64::from_bits(r.uint_le(8)?)),
        Kind::Decimal { precision, scale } => {
            Value::Decimal(decode_decimal(r, *precision, *scale)?)
        }
        Kind::Year => {
            let y = r.take(1)?[0];
            Value::Int(if y == 0 { 0 } else { 1900 + i64::from(y) })
        }
        Kind::Date => {
            let v = r.uint_le(3)?;
            Value::Date(Date::new(
                (v >> 9) as i32,
                ((v >> 5) & 15) as u8,
                (v & 31) as u8,
            ))
        }
        Kind::TimeOld => {
            let raw = r.uint_le(3)?;
            let v = ((raw << 40) as i64) >> 40;
            let a = v.unsigned_abs() as i64;
            let micros = ((a / 10000 * 60 + a / 100 % 100) * 60 + a % 100) * 1_000_000;
            Value::Time(Time {
                micros: if v < 0 { -micros } else { micros },
            })
        }
        Kind::Time2(fsp) => Value::Time(Time {
            micros: decode_time2(r, *fsp)?,
        }),
        Kind::DateTimeOld => {
            let v = r.uint_le(8)?;
            let (d, t) = (v / 1_000_000, v % 1_000_000);
            datetime(
                (d / 10000) as i32,
                (d / 100 % 100) as u8,
                (d % 100) as u8,
                t / 10000,
                t / 100 % 100,
                t % 100,
                0,
            )?
        }
        Kind::DateTime2(fsp) => {
            let packed = r.uint_be(5)?;
            let frac = read_frac(r, *fsp)?;
            let int = packed as i64 - 0x80_0000_0000;
            if int < 0 {
                return err("negative DATETIME in a row image");
            }
            let int = int as u64;
            let ymd = int >> 17;
            let ym = ymd >> 5;
            let hms = int & 0x1_FFFF;
            datetime(
                (ym / 13) as i32,
                (ym % 13) as u8,
                (ymd & 31) as u8,
                hms >> 12,
                (hms >> 6) & 63,
                hms & 63,
                frac,
            )?
        }
        Kind::TimestampOld => timestamp(r.uint_le(4)?, 0),
        Kind::Timestamp2(fsp) => {
            let secs = r.uint_be(4)?;
            let frac = read_frac(r, *fsp)?;
            timestamp(secs, frac)
        }
        Kind::Bit(bits) => {
            let n = bits.div_ceil(8) as usize;
            let v = r.uint_be(n)?;
            let s: String = (0..*bits)
                .rev()
                .map(|i| if (v >> i) & 1 == 1 { '1' } else { '0' })
                .collect();
            Value::Bits(s)
        }
        Kind::Char { max_bytes, charset } => {
            let len = if *max_bytes < 256 { 1 } else { 2 };
            let n = r.uint_le(len)? as usize;
            let b = r.take(n)?;
            if *charset == Charset::Binary {
                // The binlog strips BINARY's trailing 0x00 padding; put it back.
                let mut v = b.to_vec();
                if v.len() < *max_bytes as usize {
                    v.resize(*max_bytes as usize, 0);
                }
                Value::Bytes(v)
            } else {
                Value::Text(charset.decode(b)?)
            }
        }
        Kind::VarChar { max_bytes, charset } => {
            let len = if *max_bytes < 256 { 1 } else { 2 };
            let n = r.uint_le(len)? as usize;
            text_or_bytes(charset, r.take(n)?)?
        }
        Kind::Blob {
            len_bytes,
            charset,
            json,
        } => {
            let n = r.uint_le(usize::from(*len_bytes))? as usize;
            let b = r.take(n)?;
            if *json {
                Value::Json(charset.decode(b)?)
            } else {
                text_or_bytes(charset, b)?
            }
        }
        Kind::Json { len_bytes } => {
            let n = r.uint_le(usize::from(*len_bytes))? as usize;
            Value::Json(jsonb_to_text(r.take(n)?)?)
        }
        Kind::Enum { pack, labels } => {
            let i = r.uint_le(usize::from(*pack))? as usize;
            if i == 0 {
                // The "invalid value" index of a non-strict insert: MySQL shows ''.
                Value::Text(String::new())
            } else {
                let label = labels.get(i - 1).ok_or_else(|| {
                    DecodeError(format!("ENUM index {i} but only {} labels", labels.len()))
                })?;
                Value::Text(label.clone())
            }
        }
        Kind::Set { pack, labels } => {
            let mask = r.uint_le(usize::from(*pack))?;
            let mut parts = Vec::new();
            for bit in 0..64 {
                if (mask >> bit) & 1 == 1 {
                    let label = labels.get(bit).ok_or_else(|| {
                        DecodeError(format!(
                            "SET bit {bit} is set but only {} labels",
                            labels.len()
                        ))
                    })?;
                    parts.push(label.as_str());
                }
            }
            Value::Text(parts.join(","))
        }
        Kind::Geometry { len_bytes } => {
            let n = r.uint_le(usize::from(*len_bytes))? as usize;
            Value::Other(geometry_to_wkt(r.take(n)?)?)
        }
        Kind::Null => Value::Null,
    })
}

fn text_or_bytes(charset: &Charset, b: &[u8]) -> Result<Value, DecodeError> {
    Ok(if *charset == Charset::Binary {
        Value::Bytes(b.to_vec())
    } else {
        Value::Text(charset.decode(b)?)
    })
}

/// The fractional-seconds part of TIME2/DATETIME2/TIMESTAMP2, in microseconds.
fn read_frac(r: &mut Reader<'_>, fsp: u8) -> Result<u64, DecodeError> {
    Ok(match fsp {
        0 => 0,
        1 | 2 => r.uint_be(1)? * 10_000,
        3 | 4 => r.uint_be(2)? * 100,
        5 | 6 => r.uint_be(3)?,
        _ => return err(format!("fractional precision {fsp}")),
    })
}

fn datetime(
    year: i32,
    month: u8,
    day: u8,
    h: u64,
    m: u64,
    s: u64,
    us: u64,
) -> Result<Value, DecodeError> {
    if month > 12 || day > 31 || h > 23 || m > 59 || s > 59 || us > 999_999 {
        return err(format!(
            "invalid DATETIME {year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{us:06}"
        ));
    }
    Ok(Value::Timestamp(Timestamp {
        date: Date::new(year, month, day),
        micros: ((h * 60 + m) * 60 + s) * 1_000_000 + us,
    }))
}

fn timestamp(secs: u64, us: u64) -> Value {
    if secs == 0 && us == 0 {
        // The zero TIMESTAMP '0000-00-00 00:00:00'.
        return Value::TimestampTz(Timestamp {
            date: Date::new(0, 0, 0),
            micros: 0,
        });
    }
    Value::TimestampTz(Timestamp::from_unix_micros(
        secs as i64 * 1_000_000 + (us.min(999_999) as i64),
    ))
}

/// TIME2: 3 bytes of sign-offset hh:mm:ss plus the fraction, in signed microseconds.
fn decode_time2(r: &mut Reader<'_>, fsp: u8) -> Result<i64, DecodeError> {
    const INT_OFS: i64 = 0x80_0000;
    let packed: i64 = match fsp {
        0 => (r.uint_be(3)? as i64 - INT_OFS) << 24,
        1 | 2 => {
            let mut int = r.uint_be(3)? as i64 - INT_OFS;
            let mut frac = r.uint_be(1)? as i64;
            if int < 0 && frac != 0 {
                int += 1;
                frac -= 0x100;
            }
            (int << 24) + frac * 10_000
        }
        3 | 4 => {
            let mut int = r.uint_be(3)? as i64 - INT_OFS;
            let mut frac = r.uint_be(2)? as i64;
            if int < 0 && frac != 0 {
                int += 1;
                frac -= 0x10000;
            }
            (int << 24) + frac * 100
        }
        5 | 6 => r.uint_be(6)? as i64 - 0x8000_0000_0000,
        _ => return err(format!("TIME fractional precision {fsp}")),
    };
    let neg = packed < 0;
    let a = packed.unsigned_abs();
    let hms = a >> 24;
    let us = (a % (1 << 24)) as i64;
    let h = ((hms >> 12) % (1 << 10)) as i64;
    let m = ((hms >> 6) % (1 << 6)) as i64;
    let s = (hms % (1 << 6)) as i64;
    if m > 59 || s > 59 || us > 999_999 {
        return err(format!("invalid TIME {h}:{m}:{s}.{us}"));
    }
    let micros = ((h * 60 + m) * 60 + s) * 1_000_000 + us;
    Ok(if neg { -micros } else { micros })
}

/// DECIMAL binary format: groups of 9 digits in 4 bytes, big-endian, sign in the top bit
/// (inverted), negative numbers with every byte inverted.
pub fn decode_decimal(r: &mut Reader<'_>, precision: u8, scale: u8) -> Result<String, DecodeError> {
    const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    if scale > precision || precision > 65 {
        return err(format!("DECIMAL({precision},{scale})"));
    }
    let intg = usize::from(precision - scale);
    let frac = usize::from(scale);
    let (intg0, intg0x) = (intg / 9, intg % 9);
    let (frac0, frac0x) = (frac / 9, frac % 9);
    let size = intg0 * 4 + DIG2BYTES[intg0x] + frac0 * 4 + DIG2BYTES[frac0x];
    let raw = r.take(size)?;
    if raw.is_empty() {
        return err("DECIMAL of zero bytes");
    }
    let mut b = raw.to_vec();
    let negative = b[0] & 0x80 == 0;
    b[0] ^= 0x80;
    if negative {
        for x in &mut b {
            *x = !*x;
        }
    }
    let mut pos = 0;
    let mut take = |n: usize| -> u64 {
        let v = b[pos..pos + n]
            .iter()
            .fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
        pos += n;
        v
    };
    let mut int_part = String::new();
    if intg0x > 0 {
        let v = take(DIG2BYTES[intg0x]);
        if v >= 10u64.pow(intg0x as u32) {
            return err(format!("DECIMAL digit group {v} too large"));
        }
        int_part.push_str(&v.to_string());
    }
    for _ in 0..intg0 {
        let v = take(4);
        if v > 999_999_999 {
            return err(format!("DECIMAL digit group {v} too large"));
        }
        if int_part.is_empty() {
            int_part.push_str(&v.to_string());
        } else {
            int_part.push_str(&format!("{v:09}"));
        }
    }
    let int_part = int_part.trim_start_matches('0');
    let mut s = String::new();
    if negative {
        s.push('-');
    }
    s.push_str(if int_part.is_empty() { "0" } else { int_part });
    if frac > 0 {
        s.push('.');
        for _ in 0..frac0 {
            let v = take(4);
            if v > 999_999_999 {
                return err(format!("DECIMAL digit group {v} too large"));
            }
            s.push_str(&format!("{v:09}"));
        }
        if frac0x > 0 {
            let v = take(DIG2BYTES[frac0x]);
            if v >= 10u64.pow(frac0x as u32) {
                return err(format!("DECIMAL digit group {v} too large"));
            }
            s.push_str(&format!("{v:0w$}", w = frac0x));
        }
    }
    if s == "-0" || (s.starts_with("-0.") && s[3..].bytes().all(|c| c == b'0')) {
        // Negative zero does not exist in MySQL; keep the digits, drop the sign.
        s.remove(0);
    }
    Ok(s)
}

/// MySQL binary JSON to JSON text.
pub fn jsonb_to_text(bytes: &[u8]) -> Result<String, DecodeError> {
    if bytes.is_empty() {
        // An empty JSON value is what MySQL stores for JSON null in some paths.
        return Ok("null".into());
    }
    let mut buf = mysql_common::io::ParseBuf(bytes);
    let v: mysql_common::binlog::jsonb::Value<'_> = buf
        .parse(())
        .map_err(|e| DecodeError(format!("bad binary JSON: {e}")))?;
    let j = serde_json::Value::try_from(v)
        .map_err(|e| DecodeError(format!("binary JSON not convertible to text: {e}")))?;
    Ok(j.to_string())
}

/// MySQL's internal geometry (4-byte SRID, then WKB) as WKT (MariaDB's ST_AsText spelling);
/// a non-zero SRID is kept as an `SRID=n;` prefix.
pub fn geometry_to_wkt(bytes: &[u8]) -> Result<String, DecodeError> {
    let mut r = Reader::new(bytes);
    let srid = r.uint_le(4)?;
    let mut out = String::new();
    if srid != 0 {
        out.push_str(&format!("SRID={srid};"));
    }
    wkb(&mut r, &mut out, 0)?;
    if !r.is_empty() {
        return err("trailing bytes after a geometry");
    }
    Ok(out)
}

fn wkb(r: &mut Reader<'_>, out: &mut String, depth: u32) -> Result<(), DecodeError> {
    if depth > 32 {
        return err("geometry nested too deeply");
    }
    let le = match r.take(1)?[0] {
        0 => false,
        1 => true,
        b => return err(format!("bad WKB byte order {b}")),
    };
    let u32_ = |r: &mut Reader<'_>| -> Result<u32, DecodeError> {
        Ok(if le { r.uint_le(4)? } else { r.uint_be(4)? } as u32)
    };
    let f64_ = |r: &mut Reader<'_>| -> Result<f64, DecodeError> {
        Ok(f64::from_bits(if le {
            r.uint_le(8)?
        } else {
            r.uint_be(8)?
        }))
    };
    let point = |r: &mut Reader<'_>, out: &mut String| -> Result<(), DecodeError> {
        let x = f64_(r)?;
        let y = f64_(r)?;
        out.push_str(&format!("{x} {y}"));
        Ok(())
    };
    // Each count is bounded by the bytes left, so garbage cannot make us allocate.
    let count = |r: &mut Reader<'_>, min_bytes: usize| -> Result<u32, DecodeError> {
        let n = u32_(r)?;
        if (n as usize).saturating_mul(min_bytes) > r.buf.len() - r.pos {
            return err(format!("geometry count {n} exceeds its bytes"));
        }
        Ok(n)
    };
    let points = |r: &mut Reader<'_>, out: &mut String| -> Result<(), DecodeError> {
        let n = count(r, 16)?;
        out.push('(');
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            point(r, out)?;
        }
        out.push(')');
        Ok(())
    };
    let kind = u32_(r)?;
    match kind {
        1 => {
            out.push_str("POINT(");
            point(r, out)?;
            out.push(')');
        }
        2 => {
            out.push_str("LINESTRING");
            points(r, out)?;
        }
        3 => {
            out.push_str("POLYGON(");
            let n = count(r, 4)?;
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                points(r, out)?;
            }
            out.push(')');
        }
        4..=7 => {
            let name = [
                "MULTIPOINT",
                "MULTILINESTRING",
                "MULTIPOLYGON",
                "GEOMETRYCOLLECTION",
            ][(kind - 4) as usize];
            out.push_str(name);
            out.push('(');
            let n = count(r, 5)?;
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                let mut inner = String::new();
                wkb(r, &mut inner, depth + 1)?;
                // MariaDB writes the members of MULTI* without their type name.
                let body = if kind == 7 {
                    inner.as_str()
                } else {
                    inner
                        .find('(')
                        .map(|p| &inner[p..])
                        .unwrap_or(inner.as_str())
                };
                if kind == 4 {
                    out.push_str(body.trim_start_matches('(').trim_end_matches(')'));
                } else {
                    out.push_str(body);
                }
            }
            out.push(')');
        }
        other => return err(format!("unknown WKB geometry type {other}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8], p: u8, s: u8) -> Result<String, DecodeError> {
        decode_decimal(&mut Reader::new(bytes), p, s)
    }

    #[test]
    fn decimals() {
        // DECIMAL(10,4) 1234.5678 and -1234.5678 (from MySQL's documentation example shape).
        // intg=6 -> 3 bytes for 6 digits; frac=4 -> 2 bytes.
        let pos = [0x80, 0x04, 0xD2, 0x16, 0x2E];
        assert_eq!(dec(&pos, 10, 4).unwrap(), "1234.5678");
        // Negative: the digit bytes inverted, then the sign bit flipped.
        let neg = [0x7F, 0xFB, 0x2D, 0xE9, 0xD1];
        assert_eq!(dec(&neg, 10, 4).unwrap(), "-1234.5678");
        assert_eq!(dec(&[0x80, 0, 0, 0, 0], 10, 4).unwrap(), "0.0000");
        // Truncated and garbage input: errors, no panic.
        assert!(dec(&pos[..3], 10, 4).is_err());
        assert!(dec(&[0xFF; 5], 10, 4).is_err());
        assert!(dec(&[], 0, 0).is_err());
        assert!(dec(&[0x80; 40], 66, 0).is_err());
    }

    #[test]
    fn times() {
        // TIME(6) -838:59:59.000000 and 25:00:00.5 round-trip through the packed form.
        let enc = |micros: i64| {
            let neg = micros < 0;
            let a = micros.unsigned_abs();
            let (secs, us) = (a / 1_000_000, a % 1_000_000);
            let hms = ((secs / 3600) << 12) | ((secs / 60 % 60) << 6) | (secs % 60);
            let packed = ((hms << 24) | us) as i64;
            let v = (if neg { -packed } else { packed }) + 0x8000_0000_0000;
            v.to_be_bytes()[2..].to_vec()
        };
        for micros in [
            -Time::hms(838, 59, 59, 0).micros,
            Time::hms(25, 0, 0, 500_000).micros,
            -1,
            0,
            Time::hms(13, 45, 1, 250_000).micros,
        ] {
            let b = enc(micros);
            let v = decode_value(&Kind::Time2(6), &mut Reader::new(&b)).unwrap();
            assert_eq!(v, Value::Time(Time { micros }));
        }
        assert!(decode_value(&Kind::Time2(6), &mut Reader::new(&[0x80, 0])).is_err());
        assert!(decode_value(&Kind::Time2(6), &mut Reader::new(&[0xff; 6])).is_err());
    }

    #[test]
    fn datetimes_and_dates() {
        // DATETIME(6) 2024-02-29 13:45:01.250000.
        let ym = 2024u64 * 13 + 2;
        let ymd = (ym << 5) | 29;
        let hms = (13u64 << 12) | (45 << 6) | 1;
        let int = (ymd << 17) | hms;
        let packed = int + 0x80_0000_0000;
        let mut b = packed.to_be_bytes()[3..].to_vec();
        b.extend_from_slice(&250_000u32.to_be_bytes()[1..]);
        let v = decode_value(&Kind::DateTime2(6), &mut Reader::new(&b)).unwrap();
        let Value::Timestamp(t) = v else { panic!() };
        assert_eq!(t.to_string(), "2024-02-29T13:45:01.250000");
        // Zero datetime.
        let zero = 0x80_0000_0000u64.to_be_bytes()[3..].to_vec();
        let v = decode_value(&Kind::DateTime2(0), &mut Reader::new(&zero)).unwrap();
        let Value::Timestamp(t) = v else { panic!() };
        assert_eq!(t.to_string(), "0000-00-00T00:00:00.000000");
        // Zero date and a real one.
        let v = decode_value(&Kind::Date, &mut Reader::new(&[0, 0, 0])).unwrap();
        assert_eq!(v, Value::Date(Date::new(0, 0, 0)));
        let d = (2024u32 << 9) | (2 << 5) | 29;
        let v = decode_value(&Kind::Date, &mut Reader::new(&d.to_le_bytes()[..3])).unwrap();
        assert_eq!(v, Value::Date(Date::new(2024, 2, 29)));
        // TIMESTAMP(3) 1 second and 5 ms after the epoch.
        let mut b = 1u32.to_be_bytes().to_vec();
        b.extend_from_slice(&50u16.to_be_bytes());
        let v = decode_value(&Kind::Timestamp2(3), &mut Reader::new(&b)).unwrap();
        assert_eq!(
            v,
            Value::TimestampTz(Timestamp::from_unix_micros(1_005_000))
        );
        // Garbage: hour 25.
        let bad = ((ymd << 17) | (25 << 12)) + 0x80_0000_0000;
        let bad = bad.to_be_bytes()[3..].to_vec();
        assert!(decode_value(&Kind::DateTime2(0), &mut Reader::new(&bad)).is_err());
        assert!(decode_value(&Kind::DateTime2(6), &mut Reader::new(&b[..4])).is_err());
    }

    #[test]
    fn integers_bits_enums_sets() {
        let k = |bytes, unsigned| Kind::Int { bytes, unsigned };
        let one = |kind: &Kind, b: &[u8]| decode_value(kind, &mut Reader::new(b));
        assert_eq!(one(&k(8, true), &[0xff; 8]).unwrap(), Value::UInt(u64::MAX));
        assert_eq!(one(&k(8, false), &[0xff; 8]).unwrap(), Value::Int(-1));
        assert_eq!(
            one(&k(3, false), &[0, 0, 0x80]).unwrap(),
            Value::Int(-8_388_608)
        );
        assert_eq!(one(&k(1, false), &[0x80]).unwrap(), Value::Int(-128));
        assert_eq!(one(&k(1, true), &[0x80]).unwrap(), Value::UInt(128));
        assert!(one(&k(4, false), &[1, 2]).is_err());
        assert_eq!(
            one(&Kind::Bit(10), &[0b10, 0b0000_0101]).unwrap(),
            Value::Bits("1000000101".into())
        );
        assert_eq!(
            one(&Kind::Bit(64), &[0xff; 8]).unwrap(),
            Value::Bits("1".repeat(64))
        );
        let labels = vec!["a".to_string(), "b".into(), "c".into()];
        let e = Kind::Enum {
            pack: 1,
            labels: labels.clone(),
        };
        assert_eq!(one(&e, &[2]).unwrap(), Value::Text("b".into()));
        assert_eq!(one(&e, &[0]).unwrap(), Value::Text(String::new()));
        assert!(one(&e, &[9]).is_err());
        let s = Kind::Set { pack: 1, labels };
        assert_eq!(one(&s, &[0b101]).unwrap(), Value::Text("a,c".into()));
        assert!(one(&s, &[0b1000]).is_err());
        assert_eq!(one(&s, &[0]).unwrap(), Value::Text(String::new()));
    }

    #[test]
    fn strings_by_charset() {
        let one = |kind: &Kind, b: &[u8]| decode_value(kind, &mut Reader::new(b));
        let v = Kind::VarChar {
            max_bytes: 1020,
            charset: Charset::Utf8mb4,
        };
        let mut b = vec![4, 0];
        b.extend_from_slice("😀".as_bytes());
        assert_eq!(one(&v, &b).unwrap(), Value::Text("😀".into()));
        assert!(one(&v, &[4, 0, 0xf0, 0x9f]).is_err());
        assert!(one(&v, &[2, 0, 0xff, 0xfe]).is_err());
        let l = Kind::VarChar {
            max_bytes: 10,
            charset: Charset::Latin1,
        };
        assert_eq!(
            one(&l, &[3, b'c', 0xe9, 0x80]).unwrap(),
            Value::Text("cé€".into())
        );
        let bin = Kind::Char {
            max_bytes: 4,
            charset: Charset::Binary,
        };
        assert_eq!(
            one(&bin, &[2, 1, 2]).unwrap(),
            Value::Bytes(vec![1, 2, 0, 0])
        );
        let blob = Kind::Blob {
            len_bytes: 4,
            charset: Charset::Binary,
            json: false,
        };
        assert!(one(&blob, &[0xff, 0xff, 0xff, 0xff, 1]).is_err());
        let unsupported = Kind::VarChar {
            max_bytes: 10,
            charset: Charset::Unsupported("sjis".into()),
        };
        let e = one(&unsupported, &[1, b'a']).unwrap_err();
        assert!(e.0.contains("sjis"), "{e}");
        assert_eq!(Charset::Utf16Be.decode(&[0, b'h', 0, b'i']).unwrap(), "hi");
    }

    #[test]
    fn geometry_and_json() {
        let mut b = 0u32.to_le_bytes().to_vec();
        b.push(1);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&1.5f64.to_le_bytes());
        b.extend_from_slice(&(-2.0f64).to_le_bytes());
        assert_eq!(geometry_to_wkt(&b).unwrap(), "POINT(1.5 -2)");
        assert!(geometry_to_wkt(&b[..10]).is_err());
        // A polygon claiming 2^32-1 rings in a few bytes: error, no huge allocation.
        let mut p = 0u32.to_le_bytes().to_vec();
        p.push(1);
        p.extend_from_slice(&3u32.to_le_bytes());
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(geometry_to_wkt(&p).is_err());
        assert!(geometry_to_wkt(&[0, 0, 0, 0, 7]).is_err());
        // Binary JSON: a literal true is type 4, value 1.
        assert_eq!(jsonb_to_text(&[0x04, 0x01]).unwrap(), "true");
        assert!(jsonb_to_text(&[0x0c, 0xff]).is_err());
        assert!(jsonb_to_text(&[0x00, 0xff, 0xff]).is_err());
    }

    #[test]
    fn text_lengths_in_characters_from_bytes_and_charset() {
        let col = |t: u8, meta: &[u8], cs: Option<Charset>| {
            let (_, ct, name) = classify(&RawColumn {
                type_code: t,
                meta: meta.to_vec(),
                charset: cs,
                ..Default::default()
            })
            .unwrap();
            (ct, name)
        };
        let text = |n| ColumnType::Text { max_len: Some(n) };
        // CHAR(10) utf8mb4: 40 bytes.
        let utf8mb4 = Some(Charset::from_name("utf8mb4"));
        assert_eq!(
            col(ty::STRING, &[0xfe, 40], utf8mb4.clone()),
            (text(10), "char(10)".into())
        );
        // CHAR(255) utf8mb4 = 1020 bytes (high length bits in byte 0).
        assert_eq!(
            col(ty::STRING, &[0xce, 0xfc], utf8mb4.clone()),
            (text(255), "char(255)".into())
        );
        // VARCHAR(64) utf8mb4 = 256 bytes; utf8mb3 (`utf8`) 3 bytes a character.
        assert_eq!(
            col(ty::VARCHAR, &256u16.to_le_bytes(), utf8mb4),
            (text(64), "varchar(64)".into())
        );
        for name in ["utf8", "utf8mb3"] {
            assert_eq!(
                col(
                    ty::VARCHAR,
                    &60u16.to_le_bytes(),
                    Some(Charset::from_name(name))
                ),
                (text(20), "varchar(20)".into())
            );
        }
        // latin1 and ascii: a byte a character; ucs2 2, utf16/utf32 4.
        assert_eq!(
            col(ty::VARCHAR, &20u16.to_le_bytes(), Some(Charset::Latin1)),
            (text(20), "varchar(20)".into())
        );
        assert_eq!(
            col(ty::STRING, &[0xfe, 5], Some(Charset::Ascii)),
            (text(5), "char(5)".into())
        );
        for (name, bytes) in [("ucs2", 20), ("utf16", 40), ("utf16le", 40), ("utf32", 40)] {
            assert_eq!(
                col(ty::STRING, &[0xfe, bytes], Some(Charset::from_name(name))),
                (text(10), "char(10)".into()),
                "{name}"
            );
        }
        // A multi-byte charset weir cannot decode still gets its length right; an unknown
        // one is never understated.
        assert_eq!(Charset::from_name("sjis").chars(20), 10);
        assert_eq!(
            Charset::Unsupported("collation id 999".into()).chars(40),
            40
        );
        // BINARY / VARBINARY: bytes, their length in the source type.
        assert_eq!(
            col(ty::STRING, &[0xfe, 4], Some(Charset::Binary)),
            (ColumnType::Bytes, "binary(4)".into())
        );
        assert_eq!(
            col(ty::VARCHAR, &16u16.to_le_bytes(), Some(Charset::Binary)),
            (ColumnType::Bytes, "varbinary(16)".into())
        );
    }

    #[test]
    fn classify_rejects_bad_metadata() {
        let c = |t: u8, meta: &[u8]| RawColumn {
            type_code: t,
            meta: meta.to_vec(),
            ..Default::default()
        };
        assert!(classify(&c(ty::NEWDECIMAL, &[])).is_err());
        assert!(classify(&c(ty::NEWDECIMAL, &[70, 2])).is_err());
        assert!(classify(&c(ty::TIME2, &[7])).is_err());
        assert!(classify(&c(ty::STRING, &[0xf7])).is_err());
        assert!(
            classify(&c(ty::STRING, &[0xf7, 1])).is_err(),
            "enum without labels"
        );
        assert!(classify(&c(ty::BLOB, &[9])).is_err());
        assert!(classify(&c(20, &[])).is_err());
        let (k, _, _) = classify(&c(ty::STRING, &[0xfe, 40])).unwrap();
        assert_eq!(
            k,
            Kind::Char {
                max_bytes: 40,
                charset: Charset::Binary
            }
        );
        // CHAR(255) in utf8mb4 = 1020 bytes: the high length bits live in byte 0.
        let (real, len) = real_type(ty::STRING, &[0xce, 0xfc]).unwrap();
        assert_eq!((real, len), (ty::STRING, 1020));
    }
}
