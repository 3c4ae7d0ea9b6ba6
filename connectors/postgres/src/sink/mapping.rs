//! Type mapping (source column → target column type) and the exact PostgreSQL text form of
//! every [`Value`].
//!
//! Every value travels to the server in PostgreSQL's *text* form (as an element of a `text[]`
//! parameter, or a field of a text-format COPY) and is parsed there by the **target column's
//! own input function** (`text::<type>` casts are I/O conversions). So nothing is rounded on
//! the client: a 65-digit decimal, `NaN`, `±infinity`, microseconds, JSON with big numbers all
//! reach the column exactly as the source had them, and a value the column cannot hold is
//! rejected by the server (never silently changed).

use weir_api::{Column, ColumnType, Date, Timestamp, Value};

/// One value as the sink sends it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Cell {
    /// PostgreSQL unchanged TOAST: leave the target column as it is.
    Unchanged,
    /// SQL NULL.
    Null,
    /// A short PostgreSQL text form (numbers, booleans, dates, timestamps, short text), held
    /// inline: no allocation per value on the hot path.
    Short(ShortText),
    /// A longer PostgreSQL text form.
    Text(String),
}

/// Text of at most [`ShortText::CAP`] bytes, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ShortText {
    len: u8,
    buf: [u8; ShortText::CAP],
}

impl ShortText {
    /// Longest text held inline (a `timestamptz` with microseconds is 32 bytes).
    pub(crate) const CAP: usize = 38;

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        // Only ever filled from a whole `&str`, so this cannot fail.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The text's bytes (no UTF-8 check: for the COPY text, which is bytes anyway).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for ShortText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl weir_api::keyed::MaybeUnchanged for Cell {
    fn is_unchanged(&self) -> bool {
        *self == Cell::Unchanged
    }
}

impl Cell {
    /// The cell of a text form: inline when short. Equal texts always give equal cells.
    pub(crate) fn text(s: &str) -> Cell {
        if s.len() <= ShortText::CAP {
            let mut buf = [0u8; ShortText::CAP];
            buf[..s.len()].copy_from_slice(s.as_bytes());
            Cell::Short(ShortText {
                len: s.len() as u8,
                buf,
            })
        } else {
            Cell::Text(s.to_string())
        }
    }

    /// The text, `None` for NULL (and for `Unchanged`, which callers exclude first).
    pub(crate) fn as_param(&self) -> Option<&str> {
        match self {
            Cell::Short(s) => Some(s.as_str()),
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }

    /// Approximate heap size, for the sink's memory bound.
    pub(crate) fn size(&self) -> usize {
        match self {
            Cell::Text(s) => s.len() + 40,
            _ => 40,
        }
    }
}

/// What converting one value found.
#[derive(Debug, Default)]
pub(crate) struct Conversion {
    /// Values that PostgreSQL cannot hold (MySQL zero dates) and became NULL.
    pub zero_dates: u64,
}

/// The text form of `v`; MySQL zero dates become [`Cell::Null`] (counted in `conv`).
/// `scratch` is working space, reused across calls.
pub(crate) fn cell(v: &Value, conv: &mut Conversion, scratch: &mut String) -> Result<Cell, String> {
    Ok(match v {
        Value::Unchanged => Cell::Unchanged,
        Value::Null => Cell::Null,
        Value::Decimal(s) | Value::Text(s) | Value::Bits(s) | Value::Json(s) | Value::Other(s) => {
            check_nul(s)?;
            Cell::text(s)
        }
        other => {
            scratch.clear();
            if text(other, conv, scratch)? {
                Cell::text(scratch)
            } else {
                Cell::Null
            }
        }
    })
}

fn check_nul(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err("the text contains a NUL character, which PostgreSQL text cannot hold".into());
    }
    Ok(())
}

/// Appends the text of a non-null value to `out`; `false` (nothing appended) for a zero date.
fn text(v: &Value, conv: &mut Conversion, out: &mut String) -> Result<bool, String> {
    let zero_date = |conv: &mut Conversion| {
        conv.zero_dates += 1;
        Ok(false)
    };
    match v {
        Value::Null => return Ok(false),
        Value::Unchanged => {
            return Err("an unchanged (TOAST) value inside an array or key".into());
        }
        Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
        Value::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
        Value::UInt(u) => out.push_str(itoa::Buffer::new().format(*u)),
        Value::Float32(f) => push_float(out, f64::from(*f), |out| {
            use std::fmt::Write;
            let _ = write!(out, "{f:?}");
        }),
        Value::Float64(f) => push_float(out, *f, |out| {
            use std::fmt::Write;
            let _ = write!(out, "{f:?}");
        }),
        Value::Decimal(s) | Value::Text(s) | Value::Bits(s) | Value::Json(s) | Value::Other(s) => {
            check_nul(s)?;
            out.push_str(s);
        }
        Value::Bytes(b) => {
            out.reserve(2 + 2 * b.len());
            out.push_str("\\x");
            for byte in b {
                out.push(hex_digit(byte >> 4));
                out.push(hex_digit(byte & 0xf));
            }
        }
        Value::Date(d) => match push_date(out, *d) {
            Some(bc) => {
                if bc {
                    out.push_str(" BC");
                }
            }
            None => return zero_date(conv),
        },
        Value::Time(t) => push_time(out, t.micros),
        Value::Timestamp(ts) => {
            if !push_timestamp(out, *ts, false) {
                return zero_date(conv);
            }
        }
        Value::TimestampTz(ts) => {
            if !push_timestamp(out, *ts, true) {
                return zero_date(conv);
            }
        }
        Value::Uuid(b) => {
            for (i, byte) in b.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    out.push('-');
                }
                out.push(hex_digit(byte >> 4));
                out.push(hex_digit(byte & 0xf));
            }
        }
        Value::Array(items) => array_text(items, conv, out)?,
    }
    Ok(true)
}

fn hex_digit(n: u8) -> char {
    char::from_digit(u32::from(n & 0xf), 16).unwrap_or('0')
}

/// Rust's `Debug` form (written by `debug`) is the shortest that round-trips (`0.1`,
/// `1e300`); PostgreSQL's `float4in`/`float8in` parse it to the same value.
fn push_float(out: &mut String, f: f64, debug: impl FnOnce(&mut String)) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f == f64::INFINITY {
        out.push_str("Infinity");
    } else if f == f64::NEG_INFINITY {
        out.push_str("-Infinity");
    } else {
        debug(out);
    }
}

/// An array literal: `{"a","b",NULL}`, nested for more dimensions. Every element is
/// double-quoted with `\` and `"` escaped, so any text survives.
fn array_text(items: &[Value], conv: &mut Conversion, out: &mut String) -> Result<(), String> {
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            Value::Array(inner) => array_text(inner, conv, out)?,
            v => {
                let mut s = String::new();
                if text(v, conv, &mut s)? {
                    out.push('"');
                    for c in s.chars() {
                        if c == '"' || c == '\\' {
                            out.push('\\');
                        }
                        out.push(c);
                    }
                    out.push('"');
                } else {
                    out.push_str("NULL");
                }
            }
        }
    }
    out.push('}');
    Ok(())
}

/// Appends `v` in decimal, zero-padded to at least `width` digits (no formatting machinery:
/// dates and times are on the hot path of every row).
fn push_padded(out: &mut String, v: u64, width: usize) {
    let mut digits = [0u8; 20];
    let (mut n, mut i) = (v, digits.len());
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for _ in digits.len() - i..width {
        out.push('0');
    }
    out.extend(digits[i..].iter().map(|&d| char::from(d)));
}

/// Appends `YYYY-MM-DD` (the year of a BC date counted PostgreSQL's way), `infinity` or
/// `-infinity`; says whether ` BC` must follow, or `None` for a zero date.
fn push_date(out: &mut String, d: Date) -> Option<bool> {
    if d == Date::INFINITY {
        out.push_str("infinity");
        return Some(false);
    }
    if d == Date::NEG_INFINITY {
        out.push_str("-infinity");
        return Some(false);
    }
    if d.month == 0 || d.day == 0 {
        return None;
    }
    let bc = d.year <= 0;
    let year = if bc {
        1 - i64::from(d.year)
    } else {
        i64::from(d.year)
    };
    push_padded(out, year.unsigned_abs(), 4);
    out.push('-');
    push_padded(out, u64::from(d.month), 2);
    out.push('-');
    push_padded(out, u64::from(d.day), 2);
    Some(bc)
}

/// Appends `[-]HH:MM:SS.ffffff` (hours may exceed 24): what `Time`'s `Display` writes.
fn push_time(out: &mut String, micros: i64) {
    if micros < 0 {
        out.push('-');
    }
    let t = micros.unsigned_abs();
    let secs = t / 1_000_000;
    push_padded(out, secs / 3600, 2);
    out.push(':');
    push_padded(out, secs / 60 % 60, 2);
    out.push(':');
    push_padded(out, secs % 60, 2);
    out.push('.');
    push_padded(out, t % 1_000_000, 6);
}

/// Appends a timestamp (`YYYY-MM-DD HH:MM:SS.ffffff[+00][ BC]`, or `infinity`/`-infinity`);
/// `false` (nothing appended) for a zero date.
fn push_timestamp(out: &mut String, ts: Timestamp, tz: bool) -> bool {
    let Some(bc) = push_date(out, ts.date) else {
        return false;
    };
    if ts.date.is_infinite() {
        return true;
    }
    out.push(' ');
    push_time(out, ts.micros as i64);
    if tz {
        out.push_str("+00");
    }
    if bc {
        out.push_str(" BC");
    }
    true
}

/// Escapes a text value for a text-format COPY field.
pub(crate) fn copy_escape(s: &[u8], out: &mut Vec<u8>) {
    // Most values have nothing to escape: copied in one go.
    if !s.iter().any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r')) {
        out.extend_from_slice(s);
        return;
    }
    for &b in s {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// The target column type for a source column (see the module docs of `sink` for the table).
///
/// `pg_source`: the source is PostgreSQL, whose `source_type` is `format_type`'s spelling of
/// a built-in type and is used as it is (`numeric(10,2)`, `timestamp(3) with time zone`,
/// `character varying(20)[]`, `interval`, `inet`, ...). Types the source could not name
/// (`oid <n>`: enums, domains, extension types) become `text`.
pub(crate) fn target_type(col: &Column, pg_source: bool) -> String {
    if pg_source {
        let st = col.source_type.as_str();
        let safe = !st.is_empty()
            && !st.starts_with("oid ")
            && st.chars().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, ' ' | '(' | ')' | ',' | '"' | '[' | ']' | '_')
            });
        if safe {
            return st.to_string();
        }
        if matches!(col.ty, ColumnType::Other) {
            return "text".into();
        }
    }
    generic_type(&col.ty, &col.source_type.to_ascii_lowercase())
}

/// Precision in parentheses after the type name in a MySQL-style source type
/// (`datetime(6)` → `Some(6)`).
fn paren_precision(source_type: &str) -> Option<u32> {
    let open = source_type.find('(')?;
    let close = source_type[open..].find(')')? + open;
    source_type[open + 1..close].trim().parse().ok()
}

fn generic_type(ty: &ColumnType, source_type: &str) -> String {
    let frac = |base: &str, suffix: &str| match paren_precision(source_type) {
        Some(p) if p <= 6 => format!("{base}({p}){suffix}"),
        _ => format!("{base}{suffix}"),
    };
    match ty {
        ColumnType::Bool => "boolean".into(),
        ColumnType::Int { bits, unsigned } => match (bits, unsigned) {
            (0..=16, false) | (0..=8, true) => "smallint",
            (17..=32, false) | (9..=24, true) => "integer",
            (33..=64, false) | (25..=32, true) => "bigint",
            _ => "numeric(20,0)",
        }
        .into(),
        ColumnType::Float32 => "real".into(),
        ColumnType::Float64 => "double precision".into(),
        ColumnType::Decimal {
            precision: Some(p),
            scale,
        } if (1..=1000).contains(p) => format!("numeric({p},{})", scale.unwrap_or(0).min(*p)),
        ColumnType::Decimal { .. } => "numeric".into(),
        ColumnType::Text { max_len: Some(n) } if (1..=10_485_760).contains(n) => {
            format!("character varying({n})")
        }
        ColumnType::Text { .. } => "text".into(),
        ColumnType::Bytes => "bytea".into(),
        ColumnType::Bits { len: Some(n) } if (1..=83_886_080).contains(n) => {
            format!("bit varying({n})")
        }
        ColumnType::Bits { .. } => "bit varying".into(),
        ColumnType::Date => "date".into(),
        ColumnType::Time => frac("time", " without time zone"),
        ColumnType::Timestamp => frac("timestamp", " without time zone"),
        ColumnType::TimestampTz => frac("timestamp", " with time zone"),
        ColumnType::Json => "jsonb".into(),
        ColumnType::Uuid => "uuid".into(),
        ColumnType::Array(inner) => {
            let elem = generic_type(inner, "");
            if elem.ends_with("[]") {
                elem
            } else {
                format!("{elem}[]")
            }
        }
        ColumnType::Other => "text".into(),
    }
}

/// A type as `format_type` spells it, split into what widening needs.
#[derive(Debug, PartialEq)]
enum Width {
    /// smallint (1), integer (2), bigint (3).
    Int(u8),
    /// numeric(p,s); `None` unconstrained.
    Numeric(Option<(u32, u32)>),
    /// real (1), double precision (2).
    Float(u8),
    /// character varying(n) / text (`None`).
    VarChar(Option<u32>),
    /// bit varying(n); `None` unlimited.
    VarBit(Option<u32>),
    /// time / timestamp / timestamptz kind (0, 1, 2) and fractional digits.
    Time(u8, u32),
}

fn width(ty: &str) -> Option<Width> {
    let args = |prefix: &str| -> Option<Vec<u32>> {
        let rest = ty.strip_prefix(prefix)?.strip_prefix('(')?;
        let inner = rest.split(')').next()?;
        inner.split(',').map(|p| p.trim().parse().ok()).collect()
    };
    Some(match ty {
        "smallint" => Width::Int(1),
        "integer" => Width::Int(2),
        "bigint" => Width::Int(3),
        "numeric" => Width::Numeric(None),
        "real" => Width::Float(1),
        "double precision" => Width::Float(2),
        "text" | "character varying" => Width::VarChar(None),
        "bit varying" => Width::VarBit(None),
        _ if ty.starts_with("numeric(") => match args("numeric")?.as_slice() {
            [p, s] => Width::Numeric(Some((*p, *s))),
            [p] => Width::Numeric(Some((*p, 0))),
            _ => return None,
        },
        _ if ty.starts_with("character varying(") => {
            Width::VarChar(Some(*args("character varying")?.first()?))
        }
        _ if ty.starts_with("bit varying(") => Width::VarBit(Some(*args("bit varying")?.first()?)),
        _ => {
            for (kind, base, suffix) in [
                (0u8, "time", " without time zone"),
                (1, "timestamp", " without time zone"),
                (2, "timestamp", " with time zone"),
            ] {
                if let Some(head) = ty.strip_suffix(suffix) {
                    if head == base {
                        return Some(Width::Time(kind, 6));
                    }
                    if head.strip_prefix(base).is_some_and(|r| r.starts_with('(')) {
                        let p = args(base)?;
                        return Some(Width::Time(kind, *p.first()?));
                    }
                }
            }
            return None;
        }
    })
}

/// Whether changing a column from `old` to `new` (both as `format_type` spells them) loses
/// nothing, so the sink may apply it (`ALTER COLUMN ... TYPE`).
pub(crate) fn is_widening(old: &str, new: &str) -> bool {
    let (Some(o), Some(n)) = (width(old), width(new)) else {
        return false;
    };
    let int_digits = |rank: u8| match rank {
        1 => 5,
        2 => 10,
        _ => 19,
    };
    match (o, n) {
        (Width::Int(a), Width::Int(b)) => b > a,
        (Width::Int(_), Width::Numeric(None)) => true,
        (Width::Int(a), Width::Numeric(Some((p, s)))) => p.saturating_sub(s) >= int_digits(a),
        (Width::Numeric(Some(_)), Width::Numeric(None)) => true,
        (Width::Numeric(Some((p1, s1))), Width::Numeric(Some((p2, s2)))) => {
            s2 >= s1 && p2.saturating_sub(s2) >= p1.saturating_sub(s1) && (p2, s2) != (p1, s1)
        }
        (Width::Float(a), Width::Float(b)) => b > a,
        (Width::VarChar(Some(_)), Width::VarChar(None)) => true,
        (Width::VarChar(Some(a)), Width::VarChar(Some(b))) => b > a,
        (Width::VarBit(Some(_)), Width::VarBit(None)) => true,
        (Width::VarBit(Some(a)), Width::VarBit(Some(b))) => b > a,
        (Width::Time(k1, p1), Width::Time(k2, p2)) => k1 == k2 && p2 > p1,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_api::{Date, Time, Timestamp};

    fn t(v: Value) -> Option<String> {
        match cell(&v, &mut Conversion::default(), &mut String::new()).expect("converts") {
            Cell::Short(s) => Some(s.as_str().to_string()),
            Cell::Text(s) => Some(s),
            Cell::Null => None,
            Cell::Unchanged => Some("<unchanged>".into()),
        }
    }

    #[test]
    fn fast_date_and_time_forms_equal_formatted_ones() {
        for (y, m, d) in [
            (2024, 2, 29),
            (1, 1, 1),
            (0, 12, 31),
            (-43, 3, 15),
            (12345, 6, 7),
        ] {
            let date = Date::new(y, m, d);
            let (year, bc) = if y <= 0 {
                (1 - i64::from(y), true)
            } else {
                (i64::from(y), false)
            };
            let expect = format!("{year:04}-{m:02}-{d:02}{}", if bc { " BC" } else { "" });
            assert_eq!(t(Value::Date(date)).as_deref(), Some(expect.as_str()));
            for micros in [0u64, 1, 999_999, 45_296_000_001, 86_399_999_999] {
                let time = Time {
                    micros: micros as i64,
                };
                let expect = format!(
                    "{year:04}-{m:02}-{d:02} {time}+00{}",
                    if bc { " BC" } else { "" }
                );
                let ts = Timestamp { date, micros };
                assert_eq!(t(Value::TimestampTz(ts)).as_deref(), Some(expect.as_str()));
            }
        }
        for micros in [
            0i64,
            1,
            -1,
            3_020_399_000_000,
            -3_020_399_999_999,
            86_400_000_000,
        ] {
            let tm = Time { micros };
            assert_eq!(t(Value::Time(tm)), Some(tm.to_string()));
        }
        assert_eq!(t(Value::Date(Date::INFINITY)).as_deref(), Some("infinity"));
        assert_eq!(
            t(Value::Timestamp(Timestamp {
                date: Date::NEG_INFINITY,
                micros: 0
            }))
            .as_deref(),
            Some("-infinity")
        );
    }

    #[test]
    fn short_and_long_texts_round_trip_and_compare_by_text() {
        let mut scratch = String::new();
        for len in [
            0,
            1,
            ShortText::CAP - 1,
            ShortText::CAP,
            ShortText::CAP + 1,
            200,
        ] {
            // 4-byte characters too: the inline buffer holds whole UTF-8 sequences.
            for unit in ["x", "😀"] {
                let text: String = unit.repeat(len / unit.len());
                let c = cell(
                    &Value::Text(text.clone()),
                    &mut Conversion::default(),
                    &mut scratch,
                )
                .expect("converts");
                assert_eq!(c.as_param(), Some(text.as_str()));
                assert_eq!(matches!(c, Cell::Short(_)), text.len() <= ShortText::CAP);
                assert_eq!(c, Cell::text(&text));
                assert_ne!(c, Cell::text(&format!("{text}y")));
            }
        }
        for (v, text) in [
            (Value::Int(i64::MIN), "-9223372036854775808"),
            (Value::UInt(u64::MAX), "18446744073709551615"),
        ] {
            let c = cell(&v, &mut Conversion::default(), &mut scratch).expect("converts");
            assert_eq!(c.as_param(), Some(text));
        }
    }

    #[test]
    fn text_forms_are_exact() {
        assert_eq!(t(Value::Float64(0.1)).as_deref(), Some("0.1"));
        assert_eq!(t(Value::Float64(1e300)).as_deref(), Some("1e300"));
        assert_eq!(t(Value::Float64(f64::NAN)).as_deref(), Some("NaN"));
        assert_eq!(
            t(Value::Float32(f32::NEG_INFINITY)).as_deref(),
            Some("-Infinity")
        );
        assert_eq!(t(Value::Bytes(vec![0, 0xff])).as_deref(), Some("\\x00ff"));
        assert_eq!(
            t(Value::Date(Date::new(-43, 3, 15))).as_deref(),
            Some("0044-03-15 BC")
        );
        assert_eq!(t(Value::Date(Date::new(2024, 0, 0))), None);
        assert_eq!(
            t(Value::TimestampTz(Timestamp {
                date: Date::new(2024, 2, 29),
                micros: Time::hms(13, 45, 1, 250_000).micros as u64
            }))
            .as_deref(),
            Some("2024-02-29 13:45:01.250000+00")
        );
        assert_eq!(
            t(Value::Timestamp(Timestamp::NEG_INFINITY)).as_deref(),
            Some("-infinity")
        );
        assert_eq!(
            t(Value::Array(vec![
                Value::Array(vec![Value::Text("a\"b\\".into()), Value::Null]),
                Value::Array(vec![Value::Text("{,}".into()), Value::Int(1)]),
            ]))
            .as_deref(),
            Some(r#"{{"a\"b\\",NULL},{"{,}","1"}}"#)
        );
        assert!(
            cell(
                &Value::Text("a\0b".into()),
                &mut Conversion::default(),
                &mut String::new()
            )
            .is_err()
        );
    }

    #[test]
    fn widening_rules() {
        assert!(is_widening("integer", "bigint"));
        assert!(!is_widening("bigint", "integer"));
        assert!(is_widening("integer", "numeric(20,0)"));
        assert!(!is_widening("bigint", "numeric(10,0)"));
        assert!(is_widening("numeric(10,2)", "numeric(12,4)"));
        assert!(!is_widening("numeric(10,2)", "numeric(10,4)"));
        assert!(is_widening(
            "character varying(10)",
            "character varying(20)"
        ));
        assert!(is_widening("character varying(10)", "text"));
        assert!(!is_widening("text", "character varying(10)"));
        assert!(is_widening(
            "timestamp(3) without time zone",
            "timestamp without time zone"
        ));
        assert!(!is_widening(
            "timestamp without time zone",
            "timestamp with time zone"
        ));
        assert!(is_widening("real", "double precision"));
        assert!(!is_widening("text", "bytea"));
    }

    #[test]
    fn generic_mapping_keeps_values() {
        let col = |ty: ColumnType, st: &str| Column {
            name: "c".into(),
            ty,
            source_type: st.into(),
            nullable: true,
        };
        let g = |c: &Column| target_type(c, false);
        assert_eq!(
            g(&col(
                ColumnType::Int {
                    bits: 64,
                    unsigned: true
                },
                "bigint unsigned"
            )),
            "numeric(20,0)"
        );
        assert_eq!(
            g(&col(
                ColumnType::Int {
                    bits: 8,
                    unsigned: false
                },
                "tinyint(1)"
            )),
            "smallint"
        );
        assert_eq!(
            g(&col(ColumnType::Timestamp, "datetime(6)")),
            "timestamp(6) without time zone"
        );
        assert_eq!(
            g(&col(ColumnType::TimestampTz, "timestamp")),
            "timestamp with time zone"
        );
        assert_eq!(
            g(&col(
                ColumnType::Decimal {
                    precision: Some(65),
                    scale: Some(30)
                },
                "decimal(65,30)"
            )),
            "numeric(65,30)"
        );
        let pg = col(ColumnType::Other, "oid 16390");
        assert_eq!(target_type(&pg, true), "text");
        let pg = col(
            ColumnType::Decimal {
                precision: Some(10),
                scale: Some(2),
            },
            "numeric(10,2)",
        );
        assert_eq!(target_type(&pg, true), "numeric(10,2)");
    }
}
