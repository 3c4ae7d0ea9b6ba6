//! PostgreSQL built-in types: engine column types from `(type oid, typmod)` and lossless
//! [`Value`]s from the TEXT output format that pgoutput sends.
//!
//! The replication connection is assumed to run with `DateStyle = ISO`,
//! `IntervalStyle = postgres`, `extra_float_digits = 3`, `TimeZone = UTC`,
//! `bytea_output = hex` and `client_encoding = UTF8`. Timestamps with an explicit offset are
//! converted to UTC all the same, and `bytea` in escape format is accepted too.
//!
//! # Invariants
//!
//! * **Pure**: no I/O, no global state.
//! * **Never panics** on any input: all indexing is checked and all date arithmetic is done
//!   on bounded values.
//! * **Lossless**: integers exact, numeric keeps its digits as text, times keep microseconds
//!   (more than six fractional digits is an error, never a rounding), `±infinity` and BC
//!   dates survive; types with no closer [`Value`] keep the server's text in
//!   [`Value::Other`].
//! * Unknown oids (enums, domains, user types) map to [`ColumnType::Other`] and
//!   [`Value::Other`]; the caller resolves them.

use thiserror::Error;
use weir_api::{ColumnType, Date, Time, Timestamp, Value};

/// How much of the offending text an error keeps, in characters.
const ERROR_TEXT_CHARS: usize = 64;
/// PostgreSQL's `MAXDIM`: arrays nest at most this deep.
const MAX_ARRAY_DIMS: usize = 6;
/// Largest year accepted in a date (PostgreSQL's is 5874897).
const MAX_YEAR: i32 = 9_999_999;
const DAY_MICROS: i64 = 86_400_000_000;

/// A column value whose text could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TypeError {
    /// The text is not a valid value of the type.
    #[error("invalid {what} value for type oid {type_oid}: {text:?}{}", if *truncated { " (truncated)" } else { "" })]
    Invalid {
        /// What was expected (`"integer"`, `"timestamp with time zone"`, ...).
        what: &'static str,
        /// The column's type oid (the element type oid inside arrays).
        type_oid: u32,
        /// The offending text, lossily decoded, at most 64 characters.
        text: String,
        /// Whether `text` was cut to 64 characters.
        truncated: bool,
    },
    /// The text is not valid UTF-8 (the connection must use `client_encoding = UTF8`).
    #[error("value for type oid {type_oid} is not valid UTF-8: {text:?}{}", if *truncated { " (truncated)" } else { "" })]
    NotUtf8 {
        /// The column's type oid.
        type_oid: u32,
        /// The offending text, lossily decoded, at most 64 characters.
        text: String,
        /// Whether `text` was cut to 64 characters.
        truncated: bool,
    },
}

fn snippet(text: &[u8]) -> (String, bool) {
    let lossy = String::from_utf8_lossy(text);
    let mut chars = lossy.chars();
    let cut: String = chars.by_ref().take(ERROR_TEXT_CHARS).collect();
    (cut, chars.next().is_some())
}

fn invalid(what: &'static str, type_oid: u32, text: &[u8]) -> TypeError {
    let (text, truncated) = snippet(text);
    TypeError::Invalid {
        what,
        type_oid,
        text,
        truncated,
    }
}

/// Built-in type oids.
pub mod oid {
    #![allow(missing_docs)]
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const MONEY: u32 = 790;
    pub const MACADDR: u32 = 829;
    pub const INET: u32 = 869;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const BIT: u32 = 1560;
    pub const VARBIT: u32 = 1562;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
    pub const INT4RANGE: u32 = 3904;
    pub const NUMRANGE: u32 = 3906;
    pub const TSRANGE: u32 = 3908;
    pub const TSTZRANGE: u32 = 3910;
    pub const DATERANGE: u32 = 3912;
    pub const INT8RANGE: u32 = 3926;
}

/// `(array oid, element oid)` for every supported scalar type.
const ARRAYS: &[(u32, u32)] = &[
    (1000, oid::BOOL),
    (1001, oid::BYTEA),
    (1002, oid::CHAR),
    (1003, oid::NAME),
    (1016, oid::INT8),
    (1005, oid::INT2),
    (1007, oid::INT4),
    (1009, oid::TEXT),
    (1028, oid::OID),
    (199, oid::JSON),
    (143, oid::XML),
    (1021, oid::FLOAT4),
    (1022, oid::FLOAT8),
    (791, oid::MONEY),
    (1014, oid::BPCHAR),
    (1015, oid::VARCHAR),
    (1182, oid::DATE),
    (1183, oid::TIME),
    (1115, oid::TIMESTAMP),
    (1185, oid::TIMESTAMPTZ),
    (1187, oid::INTERVAL),
    (1270, oid::TIMETZ),
    (1561, oid::BIT),
    (1563, oid::VARBIT),
    (1231, oid::NUMERIC),
    (2951, oid::UUID),
    (3807, oid::JSONB),
    (1041, oid::INET),
    (651, oid::CIDR),
    (1040, oid::MACADDR),
    (3905, oid::INT4RANGE),
    (3927, oid::INT8RANGE),
    (3907, oid::NUMRANGE),
    (3909, oid::TSRANGE),
    (3911, oid::TSTZRANGE),
    (3913, oid::DATERANGE),
];

/// The element type oid of a supported array type oid.
pub fn array_element(type_oid: u32) -> Option<u32> {
    ARRAYS
        .iter()
        .find(|(array, _)| *array == type_oid)
        .map(|(_, elem)| *elem)
}

/// Whether `type_oid` is one of the built-in types this module knows (arrays included).
pub fn is_known(type_oid: u32) -> bool {
    array_element(type_oid).is_some() || scalar_column_type(type_oid, -1).is_some()
}

/// `typmod` of a length-limited character type, as characters.
fn char_len(typmod: i32) -> Option<u32> {
    (typmod >= 4).then(|| (typmod - 4) as u32)
}

/// `typmod` of time/timestamp types: fractional-second precision.
fn time_precision(typmod: i32) -> String {
    if typmod >= 0 {
        format!("({typmod})")
    } else {
        String::new()
    }
}

/// numeric's `(precision, scale)`; scale may be negative since PostgreSQL 15.
fn numeric_typmod(typmod: i32) -> Option<(i32, i32)> {
    if typmod < 4 {
        return None;
    }
    let t = typmod - 4;
    let precision = (t >> 16) & 0xffff;
    let scale = ((t & 0x7ff) ^ 1024) - 1024;
    Some((precision, scale))
}

/// The name of an interval typmod's fields and precision, as `format_type` spells them.
fn interval_typmod(typmod: i32) -> String {
    if typmod < 0 {
        return String::new();
    }
    const MONTH: i32 = 1 << 1;
    const YEAR: i32 = 1 << 2;
    const DAY: i32 = 1 << 3;
    const HOUR: i32 = 1 << 10;
    const MINUTE: i32 = 1 << 11;
    const SECOND: i32 = 1 << 12;
    let range = (typmod >> 16) & 0x7fff;
    let precision = typmod & 0xffff;
    let fields = match range {
        YEAR => " year",
        MONTH => " month",
        DAY => " day",
        HOUR => " hour",
        MINUTE => " minute",
        SECOND => " second",
        r if r == YEAR | MONTH => " year to month",
        r if r == DAY | HOUR => " day to hour",
        r if r == DAY | HOUR | MINUTE => " day to minute",
        r if r == DAY | HOUR | MINUTE | SECOND => " day to second",
        r if r == HOUR | MINUTE => " hour to minute",
        r if r == HOUR | MINUTE | SECOND => " hour to second",
        r if r == MINUTE | SECOND => " minute to second",
        _ => "",
    };
    if precision != 0xffff {
        format!("{fields}({precision})")
    } else {
        fields.to_string()
    }
}

fn scalar_column_type(type_oid: u32, typmod: i32) -> Option<(ColumnType, String)> {
    let int = |bits: u8| ColumnType::Int {
        bits,
        unsigned: false,
    };
    let simple = |ty: ColumnType, name: &str| Some((ty, name.to_string()));
    match type_oid {
        oid::BOOL => simple(ColumnType::Bool, "boolean"),
        oid::BYTEA => simple(ColumnType::Bytes, "bytea"),
        oid::CHAR => simple(ColumnType::Text { max_len: Some(1) }, "\"char\""),
        oid::NAME => simple(ColumnType::Text { max_len: Some(63) }, "name"),
        oid::INT8 => simple(int(64), "bigint"),
        oid::INT2 => simple(int(16), "smallint"),
        oid::INT4 => simple(int(32), "integer"),
        oid::OID => simple(
            ColumnType::Int {
                bits: 32,
                unsigned: true,
            },
            "oid",
        ),
        oid::TEXT => simple(ColumnType::Text { max_len: None }, "text"),
        oid::JSON => simple(ColumnType::Json, "json"),
        oid::JSONB => simple(ColumnType::Json, "jsonb"),
        oid::XML => simple(ColumnType::Other, "xml"),
        oid::FLOAT4 => simple(ColumnType::Float32, "real"),
        oid::FLOAT8 => simple(ColumnType::Float64, "double precision"),
        oid::MONEY => simple(ColumnType::Other, "money"),
        oid::BPCHAR => Some(match char_len(typmod) {
            Some(n) => (
                ColumnType::Text { max_len: Some(n) },
                format!("character({n})"),
            ),
            None => (ColumnType::Text { max_len: None }, "bpchar".to_string()),
        }),
        oid::VARCHAR => Some(match char_len(typmod) {
            Some(n) => (
                ColumnType::Text { max_len: Some(n) },
                format!("character varying({n})"),
            ),
            None => (
                ColumnType::Text { max_len: None },
                "character varying".to_string(),
            ),
        }),
        oid::DATE => simple(ColumnType::Date, "date"),
        oid::TIME => Some((
            ColumnType::Time,
            format!("time{} without time zone", time_precision(typmod)),
        )),
        oid::TIMESTAMP => Some((
            ColumnType::Timestamp,
            format!("timestamp{} without time zone", time_precision(typmod)),
        )),
        oid::TIMESTAMPTZ => Some((
            ColumnType::TimestampTz,
            format!("timestamp{} with time zone", time_precision(typmod)),
        )),
        oid::TIMETZ => Some((
            ColumnType::Other,
            format!("time{} with time zone", time_precision(typmod)),
        )),
        oid::INTERVAL => Some((
            ColumnType::Other,
            format!("interval{}", interval_typmod(typmod)),
        )),
        oid::BIT => Some(if typmod >= 0 {
            (
                ColumnType::Bits {
                    len: Some(typmod as u32),
                },
                format!("bit({typmod})"),
            )
        } else {
            (ColumnType::Bits { len: None }, "\"bit\"".to_string())
        }),
        // A varying bit string: a limit is not a fixed length, so `len` stays `None`.
        oid::VARBIT => Some((
            ColumnType::Bits { len: None },
            if typmod >= 0 {
                format!("bit varying({typmod})")
            } else {
                "bit varying".to_string()
            },
        )),
        oid::NUMERIC => Some(match numeric_typmod(typmod) {
            Some((p, s)) if s >= 0 => (
                ColumnType::Decimal {
                    precision: Some(p as u32),
                    scale: Some(s as u32),
                },
                format!("numeric({p},{s})"),
            ),
            // Negative scale: integers of up to p + |s| digits.
            Some((p, s)) => (
                ColumnType::Decimal {
                    precision: Some((p - s) as u32),
                    scale: Some(0),
                },
                format!("numeric({p},{s})"),
            ),
            None => (
                ColumnType::Decimal {
                    precision: None,
                    scale: None,
                },
                "numeric".to_string(),
            ),
        }),
        oid::UUID => simple(ColumnType::Uuid, "uuid"),
        oid::INET => simple(ColumnType::Other, "inet"),
        oid::CIDR => simple(ColumnType::Other, "cidr"),
        oid::MACADDR => simple(ColumnType::Other, "macaddr"),
        oid::INT4RANGE => simple(ColumnType::Other, "int4range"),
        oid::INT8RANGE => simple(ColumnType::Other, "int8range"),
        oid::NUMRANGE => simple(ColumnType::Other, "numrange"),
        oid::TSRANGE => simple(ColumnType::Other, "tsrange"),
        oid::TSTZRANGE => simple(ColumnType::Other, "tstzrange"),
        oid::DATERANGE => simple(ColumnType::Other, "daterange"),
        _ => None,
    }
}

/// The engine column type and the source type name (as PostgreSQL's `format_type` spells
/// it, e.g. `numeric(10,2)`, `character varying(20)[]`) of a column. Array typmods apply
/// to the element. Unknown oids give [`ColumnType::Other`] and `oid <n>`.
pub fn column_type(type_oid: u32, typmod: i32) -> (ColumnType, String) {
    if let Some(elem) = array_element(type_oid)
        && let Some((ty, name)) = scalar_column_type(elem, typmod)
    {
        return (ColumnType::Array(Box::new(ty)), format!("{name}[]"));
    }
    scalar_column_type(type_oid, typmod)
        .unwrap_or_else(|| (ColumnType::Other, format!("oid {type_oid}")))
}

/// Converts one column value in PostgreSQL's TEXT output format to a lossless [`Value`].
pub fn parse_text(type_oid: u32, text: &[u8]) -> Result<Value, TypeError> {
    match array_element(type_oid) {
        Some(elem) => parse_array(elem, text),
        None => parse_scalar(type_oid, text),
    }
}

fn utf8(type_oid: u32, text: &[u8]) -> Result<&str, TypeError> {
    std::str::from_utf8(text).map_err(|_| {
        let (text, truncated) = snippet(text);
        TypeError::NotUtf8 {
            type_oid,
            text,
            truncated,
        }
    })
}

fn parse_scalar(type_oid: u32, text: &[u8]) -> Result<Value, TypeError> {
    let s = utf8(type_oid, text)?;
    let bad = |what| invalid(what, type_oid, text);
    match type_oid {
        oid::BOOL => match s {
            "t" => Ok(Value::Bool(true)),
            "f" => Ok(Value::Bool(false)),
            _ => Err(bad("boolean")),
        },
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => {
            let (what, min, max) = match type_oid {
                oid::INT2 => ("smallint", i64::from(i16::MIN), i64::from(i16::MAX)),
                oid::INT4 => ("integer", i64::from(i32::MIN), i64::from(i32::MAX)),
                oid::OID => ("oid", 0, i64::from(u32::MAX)),
                _ => ("bigint", i64::MIN, i64::MAX),
            };
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(what));
            }
            match s.parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Value::Int(n)),
                _ => Err(bad(what)),
            }
        }
        oid::FLOAT4 => match special_float(s) {
            Some(f) => Ok(Value::Float32(f as f32)),
            None if is_float_syntax(s) => s
                .parse::<f32>()
                .map(Value::Float32)
                .map_err(|_| bad("real")),
            None => Err(bad("real")),
        },
        oid::FLOAT8 => match special_float(s) {
            Some(f) => Ok(Value::Float64(f)),
            None if is_float_syntax(s) => s
                .parse::<f64>()
                .map(Value::Float64)
                .map_err(|_| bad("double precision")),
            None => Err(bad("double precision")),
        },
        oid::NUMERIC => {
            if matches!(s, "NaN" | "Infinity" | "-Infinity") || is_decimal_syntax(s) {
                Ok(Value::Decimal(s.to_string()))
            } else {
                Err(bad("numeric"))
            }
        }
        oid::BYTEA => parse_bytea(s.as_bytes())
            .map(Value::Bytes)
            .ok_or_else(|| bad("bytea")),
        oid::CHAR | oid::NAME | oid::TEXT | oid::BPCHAR | oid::VARCHAR => {
            Ok(Value::Text(s.to_string()))
        }
        oid::JSON | oid::JSONB => Ok(Value::Json(s.to_string())),
        oid::UUID => parse_uuid(s.as_bytes())
            .map(Value::Uuid)
            .ok_or_else(|| bad("uuid")),
        oid::BIT | oid::VARBIT => {
            if s.bytes().all(|b| b == b'0' || b == b'1') {
                Ok(Value::Bits(s.to_string()))
            } else {
                Err(bad("bit string"))
            }
        }
        oid::DATE => parse_date(s)
            .map(|(date, bc)| Value::Date(date_with_era(date, bc)))
            .ok_or_else(|| bad("date")),
        oid::TIME => parse_time_only(s)
            .map(|micros| Value::Time(Time { micros }))
            .ok_or_else(|| bad("time")),
        oid::TIMESTAMP => parse_timestamp(s, false)
            .map(Value::Timestamp)
            .ok_or_else(|| bad("timestamp")),
        oid::TIMESTAMPTZ => parse_timestamp(s, true)
            .map(Value::TimestampTz)
            .ok_or_else(|| bad("timestamp with time zone")),
        _ => Ok(Value::Other(s.to_string())),
    }
}

fn special_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// `-?digits[.digits][e[+-]digits]` (with at least one mantissa digit).
fn is_float_syntax(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    if !is_unsigned_decimal(mantissa) {
        return false;
    }
    match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

/// `-?digits[.digits]`, as numeric_out writes it.
fn is_decimal_syntax(s: &str) -> bool {
    is_unsigned_decimal(s.strip_prefix('-').unwrap_or(s))
}

fn is_unsigned_decimal(s: &str) -> bool {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    !(int.is_empty() && frac.is_empty())
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// bytea in hex format (`\x0aff`), or escape format (`a\\b\001`) as a fallback.
fn parse_bytea(s: &[u8]) -> Option<Vec<u8>> {
    if let Some(hex) = s.strip_prefix(b"\\x") {
        if hex.len() % 2 != 0 {
            return None;
        }
        return hex
            .chunks_exact(2)
            .map(|pair| Some(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?))
            .collect();
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        match s.get(i + 1..i + 4) {
            Some([b'\\', ..]) => {
                out.push(b'\\');
                i += 2;
            }
            Some(&[a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7']) => {
                out.push((a - b'0') << 6 | (b - b'0') << 3 | (c - b'0'));
                i += 4;
            }
            _ if s.get(i + 1) == Some(&b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A UUID as PostgreSQL writes it (`a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11`).
fn parse_uuid(s: &[u8]) -> Option<[u8; 16]> {
    if s.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < s.len() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if s.get(i) != Some(&b'-') {
                return None;
            }
            i += 1;
            continue;
        }
        let hi = hex_digit(*s.get(i)?)?;
        let lo = hex_digit(*s.get(i + 1)?)?;
        *out.get_mut(n)? = hi << 4 | lo;
        n += 1;
        i += 2;
    }
    (n == 16).then_some(out)
}

fn is_leap(year: i32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Only ASCII digits, 1..=`max` of them.
fn digits(s: &str, max: usize) -> Option<u32> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// With `bc`, turns a year as written into an astronomical one (1 BC is year 0).
fn date_with_era(date: Date, bc: bool) -> Date {
    if bc && !date.is_infinite() {
        Date::new(1 - date.year, date.month, date.day)
    } else {
        date
    }
}

/// A date, `infinity`/`-infinity`, with an optional ` BC` suffix. Returns the date (year as
/// written) and whether it is BC.
fn parse_date(s: &str) -> Option<(Date, bool)> {
    match s {
        "infinity" => return Some((Date::INFINITY, false)),
        "-infinity" => return Some((Date::NEG_INFINITY, false)),
        _ => {}
    }
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    Some((parse_ymd(s)?, bc))
}

fn parse_ymd(s: &str) -> Option<Date> {
    let mut parts = s.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() < 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let year = i32::try_from(digits(y, 7)?).ok()?;
    let month = u8::try_from(digits(m, 2)?).ok()?;
    let day = u8::try_from(digits(d, 2)?).ok()?;
    if year == 0
        || year > MAX_YEAR
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
    {
        return None;
    }
    Some(Date::new(year, month, day))
}

/// `HH:MM:SS[.ffffff]` as microseconds; `24:00:00` is allowed, as in PostgreSQL.
fn parse_time_only(s: &str) -> Option<i64> {
    let (hms, frac) = match s.split_once('.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (s, None),
    };
    let mut parts = hms.split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || h.len() != 2 || m.len() != 2 || sec.len() != 2 {
        return None;
    }
    let (h, m, sec) = (
        i64::from(digits(h, 2)?),
        i64::from(digits(m, 2)?),
        i64::from(digits(sec, 2)?),
    );
    let us = match frac {
        None => 0,
        Some(f) => {
            let v = i64::from(digits(f, 6)?);
            v * 10_i64.pow(6 - f.len() as u32)
        }
    };
    let micros = Time::hms(h, m, sec, us).micros;
    if m > 59 || sec > 59 || micros > DAY_MICROS {
        return None;
    }
    Some(micros)
}

/// A UTC offset `+HH`, `-HH:MM`, `+HH:MM:SS` in seconds (east positive).
fn parse_offset(s: &str) -> Option<i64> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, s.get(1..)?),
        b'-' => (-1, s.get(1..)?),
        _ => return None,
    };
    let mut secs = 0_i64;
    let mut n = 0;
    for (i, part) in rest.split(':').enumerate() {
        if i > 2 || part.len() != 2 {
            return None;
        }
        let v = i64::from(digits(part, 2)?);
        if i > 0 && v > 59 {
            return None;
        }
        secs += v * [3600, 60, 1][i];
        n += 1;
    }
    (n > 0).then_some(sign * secs)
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][offset][ BC]` or `±infinity`; with `tz`, the offset is
/// required and the result is in UTC.
fn parse_timestamp(s: &str, tz: bool) -> Option<Timestamp> {
    match s {
        "infinity" => return Some(Timestamp::INFINITY),
        "-infinity" => return Some(Timestamp::NEG_INFINITY),
        _ => {}
    }
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let (date, time) = s.split_once(' ')?;
    let date = date_with_era(parse_ymd(date)?, bc);
    let (time, offset) = if tz {
        let at = time.find(['+', '-'])?;
        (time.get(..at)?, parse_offset(time.get(at..)?)?)
    } else {
        (time, 0)
    };
    let micros = parse_time_only(time)?;
    if micros >= DAY_MICROS {
        return None;
    }
    let utc = micros - offset * 1_000_000;
    let shift = utc.div_euclid(DAY_MICROS);
    let date = if shift == 0 {
        date
    } else {
        Date::from_unix_days(date.to_unix_days() + shift)
    };
    Some(Timestamp {
        date,
        micros: utc.rem_euclid(DAY_MICROS) as u64,
    })
}

/// A PostgreSQL array literal: `{1,2,NULL}`, `{"a,b","c\"d"}`, `{{1,2},{3,4}}`,
/// `[0:1]={1,2}` (bounds are dropped). Elements are parsed with `elem_oid`.
fn parse_array(elem_oid: u32, text: &[u8]) -> Result<Value, TypeError> {
    let array_oid = ARRAYS
        .iter()
        .find(|(_, e)| *e == elem_oid)
        .map_or(elem_oid, |(a, _)| *a);
    let bad = || invalid("array", array_oid, text);
    let mut rest = text;
    if rest.first() == Some(&b'[') {
        let eq = rest.iter().position(|&b| b == b'=').ok_or_else(bad)?;
        if !is_dimensions(rest.get(..eq).unwrap_or_default()) {
            return Err(bad());
        }
        rest = rest.get(eq + 1..).unwrap_or_default();
    }
    let mut parser = ArrayParser {
        text: rest,
        pos: 0,
        elem_oid,
        array_oid,
    };
    parser.skip_ws();
    let value = parser.array(1)?.ok_or_else(bad)?;
    parser.skip_ws();
    if parser.pos != parser.text.len() {
        return Err(bad());
    }
    Ok(value)
}

/// `[lo:hi]` repeated, bounds being optionally signed integers.
fn is_dimensions(s: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(s) else {
        return false;
    };
    let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return false;
    };
    let int = |p: &str| {
        let p = p.strip_prefix('-').unwrap_or(p);
        !p.is_empty() && p.len() <= 10 && p.bytes().all(|b| b.is_ascii_digit())
    };
    inner.split("][").all(|dim| match dim.split_once(':') {
        Some((lo, hi)) => int(lo) && int(hi),
        None => int(dim),
    })
}

struct ArrayParser<'a> {
    text: &'a [u8],
    pos: usize,
    elem_oid: u32,
    array_oid: u32,
}

impl ArrayParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn error(&self) -> TypeError {
        invalid("array", self.array_oid, self.text)
    }

    /// `{...}` at the current position. `Ok(None)` if it does not start with `{`.
    fn array(&mut self, depth: usize) -> Result<Option<Value>, TypeError> {
        if self.peek() != Some(b'{') {
            return Ok(None);
        }
        if depth > MAX_ARRAY_DIMS {
            return Err(self.error());
        }
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Some(Value::Array(items)));
        }
        loop {
            self.skip_ws();
            let item = match self.array(depth + 1)? {
                Some(sub) => sub,
                None => self.element()?,
            };
            items.push(item);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Some(Value::Array(items)));
                }
                _ => return Err(self.error()),
            }
        }
    }

    /// One scalar element, quoted or not.
    fn element(&mut self) -> Result<Value, TypeError> {
        let mut raw = Vec::new();
        if self.peek() == Some(b'"') {
            self.pos += 1;
            loop {
                match self.peek() {
                    None => return Err(self.error()),
                    Some(b'"') => {
                        self.pos += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let b = self.text.get(self.pos + 1).ok_or_else(|| self.error())?;
                        raw.push(*b);
                        self.pos += 2;
                    }
                    Some(b) => {
                        raw.push(b);
                        self.pos += 1;
                    }
                }
            }
            return parse_scalar(self.elem_oid, &raw);
        }
        // Unquoted: up to `,` or `}`; trailing whitespace is not part of the element.
        let mut kept = 0;
        let mut escaped = false;
        loop {
            match self.peek() {
                None | Some(b'{' | b'"') => return Err(self.error()),
                Some(b',' | b'}') => break,
                Some(b'\\') => {
                    let b = self.text.get(self.pos + 1).ok_or_else(|| self.error())?;
                    raw.push(*b);
                    kept = raw.len();
                    escaped = true;
                    self.pos += 2;
                }
                Some(b) => {
                    raw.push(b);
                    if !b.is_ascii_whitespace() {
                        kept = raw.len();
                    }
                    self.pos += 1;
                }
            }
        }
        raw.truncate(kept);
        if raw.is_empty() {
            return Err(self.error());
        }
        if !escaped && raw.eq_ignore_ascii_case(b"NULL") {
            return Ok(Value::Null);
        }
        parse_scalar(self.elem_oid, &raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(type_oid: u32, text: &str) -> Value {
        parse_text(type_oid, text.as_bytes()).unwrap_or_else(|e| panic!("{type_oid} {text:?}: {e}"))
    }

    fn err(type_oid: u32, text: &str) -> TypeError {
        match parse_text(type_oid, text.as_bytes()) {
            Ok(v) => panic!("{type_oid} {text:?} parsed as {v:?}"),
            Err(e) => e,
        }
    }

    fn ts(y: i32, mo: u8, d: u8, h: i64, mi: i64, s: i64, us: i64) -> Timestamp {
        Timestamp {
            date: Date::new(y, mo, d),
            micros: Time::hms(h, mi, s, us).micros as u64,
        }
    }

    fn text_array(items: &[Option<&str>]) -> Value {
        Value::Array(
            items
                .iter()
                .map(|i| i.map_or(Value::Null, |s| Value::Text(s.to_string())))
                .collect(),
        )
    }

    #[test]
    fn column_types_and_names() {
        let int = |bits| ColumnType::Int {
            bits,
            unsigned: false,
        };
        let cases: Vec<(u32, i32, ColumnType, &str)> = vec![
            (16, -1, ColumnType::Bool, "boolean"),
            (17, -1, ColumnType::Bytes, "bytea"),
            (18, -1, ColumnType::Text { max_len: Some(1) }, "\"char\""),
            (19, -1, ColumnType::Text { max_len: Some(63) }, "name"),
            (20, -1, int(64), "bigint"),
            (21, -1, int(16), "smallint"),
            (23, -1, int(32), "integer"),
            (25, -1, ColumnType::Text { max_len: None }, "text"),
            (
                26,
                -1,
                ColumnType::Int {
                    bits: 32,
                    unsigned: true,
                },
                "oid",
            ),
            (114, -1, ColumnType::Json, "json"),
            (142, -1, ColumnType::Other, "xml"),
            (700, -1, ColumnType::Float32, "real"),
            (701, -1, ColumnType::Float64, "double precision"),
            (790, -1, ColumnType::Other, "money"),
            (
                1042,
                14,
                ColumnType::Text { max_len: Some(10) },
                "character(10)",
            ),
            (1042, -1, ColumnType::Text { max_len: None }, "bpchar"),
            (
                1043,
                24,
                ColumnType::Text { max_len: Some(20) },
                "character varying(20)",
            ),
            (
                1043,
                -1,
                ColumnType::Text { max_len: None },
                "character varying",
            ),
            (1082, -1, ColumnType::Date, "date"),
            (1083, -1, ColumnType::Time, "time without time zone"),
            (1083, 3, ColumnType::Time, "time(3) without time zone"),
            (
                1114,
                -1,
                ColumnType::Timestamp,
                "timestamp without time zone",
            ),
            (
                1114,
                3,
                ColumnType::Timestamp,
                "timestamp(3) without time zone",
            ),
            (
                1184,
                -1,
                ColumnType::TimestampTz,
                "timestamp with time zone",
            ),
            (1186, -1, ColumnType::Other, "interval"),
            (1186, (0x7fff << 16) | 3, ColumnType::Other, "interval(3)"),
            (1186, (4 << 16) | 0xffff, ColumnType::Other, "interval year"),
            (
                1186,
                (6 << 16) | 0xffff,
                ColumnType::Other,
                "interval year to month",
            ),
            (1266, 2, ColumnType::Other, "time(2) with time zone"),
            (1560, 5, ColumnType::Bits { len: Some(5) }, "bit(5)"),
            (1562, 5, ColumnType::Bits { len: None }, "bit varying(5)"),
            (1562, -1, ColumnType::Bits { len: None }, "bit varying"),
            (
                1700,
                ((10 << 16) | 2) + 4,
                ColumnType::Decimal {
                    precision: Some(10),
                    scale: Some(2),
                },
                "numeric(10,2)",
            ),
            (
                1700,
                ((5 << 16) | (2047 & -2)) + 4,
                ColumnType::Decimal {
                    precision: Some(7),
                    scale: Some(0),
                },
                "numeric(5,-2)",
            ),
            (
                1700,
                -1,
                ColumnType::Decimal {
                    precision: None,
                    scale: None,
                },
                "numeric",
            ),
            (2950, -1, ColumnType::Uuid, "uuid"),
            (3802, -1, ColumnType::Json, "jsonb"),
            (869, -1, ColumnType::Other, "inet"),
            (650, -1, ColumnType::Other, "cidr"),
            (829, -1, ColumnType::Other, "macaddr"),
            (3904, -1, ColumnType::Other, "int4range"),
            (3926, -1, ColumnType::Other, "int8range"),
            (3906, -1, ColumnType::Other, "numrange"),
            (3908, -1, ColumnType::Other, "tsrange"),
            (3910, -1, ColumnType::Other, "tstzrange"),
            (3912, -1, ColumnType::Other, "daterange"),
            (1007, -1, ColumnType::Array(Box::new(int(32))), "integer[]"),
            (
                1015,
                14,
                ColumnType::Array(Box::new(ColumnType::Text { max_len: Some(10) })),
                "character varying(10)[]",
            ),
            (
                1231,
                ((10 << 16) | 2) + 4,
                ColumnType::Array(Box::new(ColumnType::Decimal {
                    precision: Some(10),
                    scale: Some(2),
                })),
                "numeric(10,2)[]",
            ),
            (
                1185,
                -1,
                ColumnType::Array(Box::new(ColumnType::TimestampTz)),
                "timestamp with time zone[]",
            ),
            (99_999, -1, ColumnType::Other, "oid 99999"),
        ];
        for (oid, typmod, ty, name) in cases {
            assert_eq!(column_type(oid, typmod), (ty, name.to_string()), "{oid}");
        }
    }

    #[test]
    fn every_scalar_has_an_array() {
        for (array, elem) in ARRAYS {
            assert!(scalar_column_type(*elem, -1).is_some(), "{elem}");
            assert!(matches!(column_type(*array, -1).0, ColumnType::Array(_)));
        }
        assert_eq!(ARRAYS.len(), 36);
        for (array, elem) in [
            (1007, 23),
            (1009, 25),
            (1016, 20),
            (1022, 701),
            (1231, 1700),
            (1000, 16),
            (1015, 1043),
            (1185, 1184),
            (2951, 2950),
            (3807, 3802),
            (1182, 1082),
            (1001, 17),
        ] {
            assert_eq!(array_element(array), Some(elem));
        }
        assert!(is_known(23) && is_known(1007) && !is_known(16_384));
    }

    #[test]
    fn integers() {
        assert_eq!(p(20, "-9223372036854775808"), Value::Int(i64::MIN));
        assert_eq!(p(20, "9223372036854775807"), Value::Int(i64::MAX));
        assert_eq!(p(21, "-32768"), Value::Int(-32768));
        assert_eq!(p(23, "2147483647"), Value::Int(2_147_483_647));
        assert_eq!(p(26, "4294967295"), Value::Int(4_294_967_295));
        assert_eq!(p(23, "0"), Value::Int(0));
        for (oid, text) in [
            (20, "9223372036854775808"),
            (21, "32768"),
            (23, "2147483648"),
            (26, "-1"),
            (23, "+1"),
            (23, " 1"),
            (23, ""),
            (23, "-"),
            (23, "1.0"),
        ] {
            err(oid, text);
        }
    }

    #[test]
    fn floats() {
        assert_eq!(p(700, "1.1"), Value::Float32(1.1));
        assert_eq!(p(700, "1e-07"), Value::Float32(1e-7));
        assert_eq!(p(701, "1e+30"), Value::Float64(1e30));
        assert_eq!(p(701, "-0.1"), Value::Float64(-0.1));
        assert_eq!(p(701, "-0"), Value::Float64(-0.0));
        assert_eq!(p(701, "1.7976931348623157e+308"), Value::Float64(f64::MAX));
        assert_eq!(p(701, "Infinity"), Value::Float64(f64::INFINITY));
        assert_eq!(p(700, "-Infinity"), Value::Float32(f32::NEG_INFINITY));
        assert!(matches!(p(701, "NaN"), Value::Float64(f) if f.is_nan()));
        assert!(matches!(p(700, "NaN"), Value::Float32(f) if f.is_nan()));
        for text in ["inf", "nan", "", "1e", "e5", "1.2.3", "0x10", " 1"] {
            err(701, text);
        }
    }

    #[test]
    fn numerics_keep_exact_digits() {
        let long = format!("{}.{}", "9".repeat(70), "1234567890".repeat(3));
        assert_eq!(p(1700, &long), Value::Decimal(long.clone()));
        for text in [
            "-12345.6700",
            "0",
            "NaN",
            "Infinity",
            "-Infinity",
            ".5",
            "5.",
        ] {
            assert_eq!(p(1700, text), Value::Decimal(text.to_string()));
        }
        for text in ["", "-", ".", "1e5", "nan", "1,0", "+1"] {
            err(1700, text);
        }
    }

    #[test]
    fn booleans_bytes_bits_uuid() {
        assert_eq!(p(16, "t"), Value::Bool(true));
        assert_eq!(p(16, "f"), Value::Bool(false));
        err(16, "true");
        assert_eq!(
            p(17, "\\xdeadBEEF"),
            Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef])
        );
        assert_eq!(p(17, "\\x"), Value::Bytes(vec![]));
        assert_eq!(
            p(17, "a\\\\b\\001\\377"),
            Value::Bytes(vec![b'a', b'\\', b'b', 1, 255])
        );
        err(17, "\\x0");
        err(17, "\\xzz");
        err(17, "\\q");
        assert_eq!(p(1560, "101"), Value::Bits("101".into()));
        assert_eq!(p(1562, ""), Value::Bits(String::new()));
        err(1562, "102");
        assert_eq!(
            p(2950, "123e4567-e89b-12d3-a456-426614174000"),
            Value::Uuid([
                0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17,
                0x40, 0x00
            ])
        );
        err(2950, "123e4567e89b12d3a456426614174000");
        err(2950, "123e4567-e89b-12d3-a456-42661417400g");
        err(2950, "123e4567-e89b-12d3-a456+426614174000");
    }

    #[test]
    fn texts_and_json_as_is() {
        for oid in [18, 19, 25, 1042, 1043] {
            assert_eq!(p(oid, "héllo 😀"), Value::Text("héllo 😀".into()));
        }
        assert_eq!(p(18, "\\303"), Value::Text("\\303".into()));
        assert_eq!(p(25, ""), Value::Text(String::new()));
        let json = r#"{"a": 12345678901234567890123, "b": [1.0e400]}"#;
        assert_eq!(p(114, json), Value::Json(json.into()));
        assert_eq!(p(3802, json), Value::Json(json.into()));
        assert!(matches!(
            parse_text(25, b"\xff\xfe"),
            Err(TypeError::NotUtf8 { type_oid: 25, .. })
        ));
    }

    #[test]
    fn others_keep_server_text() {
        for (oid, text) in [
            (1186, "1 year 2 mons 3 days 04:05:06.5"),
            (790, "$1,234.56"),
            (869, "192.168.0.1/24"),
            (650, "10.0.0.0/8"),
            (829, "08:00:2b:01:02:03"),
            (1266, "12:00:00+05:30"),
            (142, "<a>x</a>"),
            (3904, "[1,3)"),
            (3926, "empty"),
            (3906, "(1.5,2.5]"),
            (3908, "[\"2024-01-01 00:00:00\",)"),
            (3910, "[\"2024-01-01 00:00:00+00\",infinity)"),
            (3912, "[2024-01-01,2024-02-01)"),
            (16_384, "happy"),
        ] {
            assert_eq!(p(oid, text), Value::Other(text.into()));
        }
        assert!(matches!(
            parse_text(16_384, b"\xc3"),
            Err(TypeError::NotUtf8 {
                type_oid: 16_384,
                ..
            })
        ));
    }

    #[test]
    fn dates() {
        assert_eq!(p(1082, "2024-02-29"), Value::Date(Date::new(2024, 2, 29)));
        assert_eq!(p(1082, "0044-03-15 BC"), Value::Date(Date::new(-43, 3, 15)));
        assert_eq!(p(1082, "0001-01-01 BC"), Value::Date(Date::new(0, 1, 1)));
        assert_eq!(
            p(1082, "4713-01-01 BC"),
            Value::Date(Date::new(-4712, 1, 1))
        );
        assert_eq!(
            p(1082, "5874897-12-31"),
            Value::Date(Date::new(5_874_897, 12, 31))
        );
        assert_eq!(p(1082, "infinity"), Value::Date(Date::INFINITY));
        assert_eq!(p(1082, "-infinity"), Value::Date(Date::NEG_INFINITY));
        for text in [
            "2023-02-29",
            "2024-13-01",
            "2024-00-10",
            "0000-01-01",
            "24-01-01",
            "2024-1-01",
            "2024-01-01 AD",
            "infinity BC",
            "",
        ] {
            err(1082, text);
        }
    }

    #[test]
    fn times() {
        assert_eq!(
            p(1083, "13:45:01.25"),
            Value::Time(Time::hms(13, 45, 1, 250_000))
        );
        assert_eq!(
            p(1083, "23:59:59.999999"),
            Value::Time(Time::hms(23, 59, 59, 999_999))
        );
        assert_eq!(p(1083, "00:00:00"), Value::Time(Time { micros: 0 }));
        assert_eq!(p(1083, "24:00:00"), Value::Time(Time::hms(24, 0, 0, 0)));
        for text in [
            "24:00:00.000001",
            "12:60:00",
            "12:00",
            "12:00:00.",
            "12:00:00.1234567",
            "1:00:00",
        ] {
            err(1083, text);
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            p(1114, "2024-02-29 13:45:01.25"),
            Value::Timestamp(ts(2024, 2, 29, 13, 45, 1, 250_000))
        );
        assert_eq!(
            p(1114, "2024-02-29 13:45:01.000001"),
            Value::Timestamp(ts(2024, 2, 29, 13, 45, 1, 1))
        );
        assert_eq!(
            p(1114, "0044-03-15 13:00:01.5 BC"),
            Value::Timestamp(ts(-43, 3, 15, 13, 0, 1, 500_000))
        );
        assert_eq!(
            p(1114, "294276-12-31 23:59:59.999999"),
            Value::Timestamp(ts(294_276, 12, 31, 23, 59, 59, 999_999))
        );
        assert_eq!(p(1114, "infinity"), Value::Timestamp(Timestamp::INFINITY));
        assert_eq!(
            p(1114, "-infinity"),
            Value::Timestamp(Timestamp::NEG_INFINITY)
        );
        for text in ["2024-02-29", "2024-02-29T13:45:01", "2024-02-29 24:00:00"] {
            err(1114, text);
        }
        err(1114, "2024-02-29 13:45:01+00");
    }

    #[test]
    fn timestamps_with_zone_become_utc() {
        assert_eq!(
            p(1184, "2024-02-29 12:45:01.25+00"),
            Value::TimestampTz(ts(2024, 2, 29, 12, 45, 1, 250_000))
        );
        assert_eq!(
            p(1184, "2024-02-29 18:15:01.25+05:30"),
            Value::TimestampTz(ts(2024, 2, 29, 12, 45, 1, 250_000))
        );
        assert_eq!(
            p(1184, "2024-03-01 01:00:00.000001+05"),
            Value::TimestampTz(ts(2024, 2, 29, 20, 0, 0, 1))
        );
        assert_eq!(
            p(1184, "2023-12-31 20:00:00-08"),
            Value::TimestampTz(ts(2024, 1, 1, 4, 0, 0, 0))
        );
        assert_eq!(
            p(1184, "1800-01-01 00:00:00+05:53:28"),
            Value::TimestampTz(ts(1799, 12, 31, 18, 6, 32, 0))
        );
        assert_eq!(
            p(1184, "0044-03-15 07:30:01.5+00 BC"),
            Value::TimestampTz(ts(-43, 3, 15, 7, 30, 1, 500_000))
        );
        assert_eq!(
            p(1184, "0001-01-01 01:00:00+02"),
            Value::TimestampTz(ts(0, 12, 31, 23, 0, 0, 0))
        );
        assert_eq!(p(1184, "infinity"), Value::TimestampTz(Timestamp::INFINITY));
        assert_eq!(
            p(1184, "-infinity"),
            Value::TimestampTz(Timestamp::NEG_INFINITY)
        );
        for text in [
            "2024-02-29 12:45:01.25",
            "2024-02-29 12:45:01+5",
            "2024-02-29 12:45:01+05:60",
            "2024-02-29 12:45:01+05:30:00:00",
            "2024-02-29 12:45:01Z",
        ] {
            err(1184, text);
        }
    }

    #[test]
    fn arrays() {
        assert_eq!(
            p(1007, "{1,2,NULL}"),
            Value::Array(vec![Value::Int(1), Value::Int(2), Value::Null])
        );
        assert_eq!(p(1007, "{}"), Value::Array(vec![]));
        assert_eq!(
            p(1009, r#"{"a,b","c\"d",NULL,"NULL",""," x","x\\y","{}",😀}"#),
            text_array(&[
                Some("a,b"),
                Some("c\"d"),
                None,
                Some("NULL"),
                Some(""),
                Some(" x"),
                Some("x\\y"),
                Some("{}"),
                Some("😀"),
            ])
        );
        assert_eq!(
            p(1007, "{{1,2},{3,4}}"),
            Value::Array(vec![
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
                Value::Array(vec![Value::Int(3), Value::Int(4)]),
            ])
        );
        assert_eq!(
            p(1007, "[0:1]={1,2}"),
            Value::Array(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(
            p(1007, "[-2:-1][1:1]={{1},{2}}"),
            Value::Array(vec![
                Value::Array(vec![Value::Int(1)]),
                Value::Array(vec![Value::Int(2)]),
            ])
        );
        assert_eq!(
            p(1001, r#"{"\\x01ff"}"#),
            Value::Array(vec![Value::Bytes(vec![1, 0xff])])
        );
        assert_eq!(
            p(
                1185,
                r#"{"2023-12-31 19:00:00+00","2024-01-01 05:00:00+05",infinity}"#
            ),
            Value::Array(vec![
                Value::TimestampTz(ts(2023, 12, 31, 19, 0, 0, 0)),
                Value::TimestampTz(ts(2024, 1, 1, 0, 0, 0, 0)),
                Value::TimestampTz(Timestamp::INFINITY),
            ])
        );
        assert_eq!(
            p(1231, "{1.5,NaN,-Infinity}"),
            Value::Array(vec![
                Value::Decimal("1.5".into()),
                Value::Decimal("NaN".into()),
                Value::Decimal("-Infinity".into()),
            ])
        );
        assert_eq!(
            p(1000, "{t,f}"),
            Value::Array(vec![Value::Bool(true), Value::Bool(false)])
        );
        assert_eq!(
            p(3905, r#"{"[1,3)",empty}"#),
            Value::Array(vec![
                Value::Other("[1,3)".into()),
                Value::Other("empty".into())
            ])
        );
        assert_eq!(
            p(3807, r#"{"{\"a\": 1}",null}"#),
            Value::Array(vec![Value::Json(r#"{"a": 1}"#.into()), Value::Null])
        );
        assert_eq!(
            p(1182, r#"{2024-02-29,"0044-03-15 BC"}"#),
            Value::Array(vec![
                Value::Date(Date::new(2024, 2, 29)),
                Value::Date(Date::new(-43, 3, 15)),
            ])
        );
        assert_eq!(
            p(1009, "{ a , b c }"),
            text_array(&[Some("a"), Some("b c")])
        );
        for text in [
            "",
            "{",
            "{1,2",
            "{1,,2}",
            "{1,}",
            "{,}",
            "1,2",
            "{1}x",
            "{{1},2",
            "[0:1]{1,2}",
            "[a:b]={1}",
            "{\"1}",
            "{1\"2\"}",
            "{{{{{{{1}}}}}}}",
            "{x}",
        ] {
            assert!(
                matches!(err(1007, text), TypeError::Invalid { .. }),
                "{text}"
            );
        }
        for text in ["{", "{1,2", "{1,}", "[0:1]{1,2}"] {
            assert!(
                matches!(
                    err(1007, text),
                    TypeError::Invalid {
                        what: "array",
                        type_oid: 1007,
                        ..
                    }
                ),
                "{text}"
            );
        }
        assert_eq!(
            p(1007, "{{{{{{1}}}}}}"),
            (0..5).fold(Value::Array(vec![Value::Int(1)]), |v, _| Value::Array(
                vec![v]
            ))
        );
        // An element error names the element type.
        assert!(matches!(
            err(1007, "{1,x}"),
            TypeError::Invalid { type_oid: 23, .. }
        ));
    }

    #[test]
    fn errors_are_clear_and_truncated() {
        let long = "x".repeat(100);
        let e = err(23, &long);
        assert_eq!(
            e,
            TypeError::Invalid {
                what: "integer",
                type_oid: 23,
                text: "x".repeat(64),
                truncated: true
            }
        );
        assert_eq!(
            e.to_string(),
            format!(
                "invalid integer value for type oid 23: \"{}\" (truncated)",
                "x".repeat(64)
            )
        );
        assert_eq!(
            err(1082, "2024-02-30").to_string(),
            "invalid date value for type oid 1082: \"2024-02-30\""
        );
    }

    #[test]
    fn never_panics_on_random_bytes() {
        // xorshift64*: deterministic, no dependency.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let alphabet = b"0123456789-+:. {}[]=\",\\NULLxBCinfityaefZT\x00\xff\xc3\xa9";
        let mut oids: Vec<u32> = ARRAYS.iter().flat_map(|(a, e)| [*a, *e]).collect();
        oids.push(16_384);
        for oid in oids {
            for _ in 0..400 {
                let len = (next() % 40) as usize;
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        let r = next();
                        if r % 4 == 0 {
                            (r >> 8) as u8
                        } else {
                            alphabet[(r >> 8) as usize % alphabet.len()]
                        }
                    })
                    .collect();
                let _ = parse_text(oid, &bytes);
            }
            for typmod in [-1, 0, 4, 5, i32::MAX, i32::MIN, -5, 0x7fff_ffff - 3] {
                let _ = column_type(oid, typmod);
            }
            // Deep nesting and odd syntax stay errors, not stack overflows.
            let deep = format!("{}{}", "{".repeat(10_000), "}".repeat(10_000));
            let _ = parse_text(oid, deep.as_bytes());
        }
    }
}
