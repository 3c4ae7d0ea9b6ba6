//! The change-event JSON envelope (SPEC.md), rendered in one place for every sink.
//!
//! ```json
//! {"op":"u","before":{..},"after":{..},
//!  "source":{"connector":"postgres","name":"shop","db":"shop","schema":"public","table":"orders",
//!            "lsn":"0/1A2B3C8","txid":"7731","ts_ms":1763700000123,"snapshot":false},
//!  "ts_ms":1763700000150}
//! ```
//!
//! Written straight into a byte buffer (no intermediate `serde_json::Value`): this is on the
//! hot path of every sink.

use crate::value::fmt_uuid;
use crate::{
    ChangeEvent, ConnectorError, Date, Row, SourceInfo, SourcePosition, TableSchema, Timestamp,
    Value,
};
use base64::Engine as _;
use std::io::Write as _;

/// Renders `event` (whose rows follow `schema`) as one envelope, appended to `out` without a
/// trailing newline. `ts_ms` is when weir staged the event (stable across re-deliveries).
pub fn render_envelope(
    out: &mut Vec<u8>,
    info: &SourceInfo,
    schema: &TableSchema,
    event: &ChangeEvent,
    ts_ms: i64,
) -> Result<(), ConnectorError> {
    out.extend_from_slice(b"{\"op\":\"");
    out.extend_from_slice(event.op.code().as_bytes());
    out.extend_from_slice(b"\",\"before\":");
    render_row(out, schema, event.before.as_ref(), event)?;
    out.extend_from_slice(b",\"after\":");
    render_row(out, schema, event.after.as_ref(), event)?;
    out.extend_from_slice(b",\"source\":{\"connector\":");
    json_str(out, &info.connector);
    out.extend_from_slice(b",\"name\":");
    json_str(out, &info.name);
    out.extend_from_slice(b",\"db\":");
    json_str(out, &info.db);
    out.extend_from_slice(b",\"schema\":");
    json_str(out, &event.table.schema);
    out.extend_from_slice(b",\"table\":");
    json_str(out, &event.table.name);
    match event.position.stream_position() {
        SourcePosition::Postgres(p) => {
            // Hex digits and a slash: nothing to escape.
            out.extend_from_slice(b",\"lsn\":\"");
            let _ = write!(out, "{}", p.lsn);
            out.push(b'"');
        }
        SourcePosition::Mysql(p) => {
            out.extend_from_slice(b",\"file\":");
            json_str(out, &p.file);
            out.extend_from_slice(b",\"pos\":");
            push_uint(out, p.pos);
            out.extend_from_slice(b",\"gtid\":");
            match &p.gtid {
                Some(g) => json_str(out, &g.to_string()),
                None => out.extend_from_slice(b"null"),
            }
            match p.server_id {
                Some(id) => {
                    out.extend_from_slice(b",\"server_id\":");
                    push_uint(out, u64::from(id));
                }
                None => out.extend_from_slice(b",\"server_id\":null"),
            }
        }
        SourcePosition::Datagen(p) => {
            out.extend_from_slice(b",\"event\":");
            push_uint(out, p.events);
        }
        // stream_position() never returns a snapshot position.
        SourcePosition::Snapshot(_) | SourcePosition::Backfill(_) => {}
    }
    match event.txid {
        Some(x) => {
            out.extend_from_slice(b",\"txid\":\"");
            push_uint(out, x);
            out.push(b'"');
        }
        None => out.extend_from_slice(b",\"txid\":null"),
    }
    out.extend_from_slice(b",\"ts_ms\":");
    push_int(out, event.ts_ms);
    out.extend_from_slice(if matches!(event.op, crate::Op::Read) {
        b",\"snapshot\":true},\"ts_ms\":"
    } else {
        b",\"snapshot\":false},\"ts_ms\":"
    });
    push_int(out, ts_ms);
    out.push(b'}');
    Ok(())
}

/// Renders the Kafka key: the primary-key columns as a JSON object, or `None` for a keyless
/// table. Takes the key from `after`, else `before`.
pub fn render_key(
    schema: &TableSchema,
    event: &ChangeEvent,
) -> Result<Option<Vec<u8>>, ConnectorError> {
    if schema.primary_key.is_empty() {
        return Ok(None);
    }
    let Some(row) = event.after.as_ref().or(event.before.as_ref()) else {
        return Ok(None);
    };
    check_width(schema, row, event)?;
    let mut out = Vec::with_capacity(32);
    out.push(b'{');
    for (n, &i) in schema.primary_key.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        json_str(&mut out, &schema.columns[i].name);
        out.push(b':');
        render_value(&mut out, &row.0[i]);
    }
    out.push(b'}');
    Ok(Some(out))
}

fn check_width(schema: &TableSchema, row: &Row, event: &ChangeEvent) -> Result<(), ConnectorError> {
    if row.0.len() != schema.columns.len() || schema.primary_key.iter().any(|&i| i >= row.0.len()) {
        return Err(ConnectorError::definite(format!(
            "row of {} has {} values but schema version {} has {} columns (at {}); \
             this is a weir bug: please report it with the staged event (`weir log`)",
            event.table,
            row.0.len(),
            schema.version,
            schema.columns.len(),
            event.position
        )));
    }
    Ok(())
}

fn render_row(
    out: &mut Vec<u8>,
    schema: &TableSchema,
    row: Option<&Row>,
    event: &ChangeEvent,
) -> Result<(), ConnectorError> {
    let Some(row) = row else {
        out.extend_from_slice(b"null");
        return Ok(());
    };
    check_width(schema, row, event)?;
    out.push(b'{');
    let mut first = true;
    for (col, v) in schema.columns.iter().zip(&row.0) {
        if matches!(v, Value::Unchanged) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        json_str(out, &col.name);
        out.push(b':');
        render_value(out, v);
    }
    out.push(b'}');
    Ok(())
}

/// Renders one value as SPEC.md's type table says.
fn render_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null | Value::Unchanged => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => push_int(out, *i),
        Value::UInt(u) => push_uint(out, *u),
        Value::Float32(f) => float(out, f64::from(*f), |o| serde_json::to_writer(o, f)),
        Value::Float64(f) => float(out, *f, |o| serde_json::to_writer(o, f)),
        Value::Decimal(s) | Value::Text(s) | Value::Bits(s) | Value::Other(s) => json_str(out, s),
        Value::Bytes(b) => {
            out.push(b'"');
            let start = out.len();
            let len = base64::encoded_len(b.len(), true).unwrap_or(0);
            out.resize(start + len, 0);
            let n = base64::engine::general_purpose::STANDARD
                .encode_slice(b, &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + n);
            out.push(b'"');
        }
        // Digits, signs and separators (or `infinity`): nothing to escape.
        Value::Date(d) => {
            out.push(b'"');
            push_date(out, d);
            out.push(b'"');
        }
        Value::Time(t) => {
            out.push(b'"');
            push_time(out, t.micros);
            out.push(b'"');
        }
        Value::Timestamp(t) => {
            out.push(b'"');
            push_timestamp(out, t);
            out.push(b'"');
        }
        Value::TimestampTz(t) => {
            out.push(b'"');
            push_timestamp(out, t);
            if !t.date.is_infinite() {
                out.push(b'Z');
            }
            out.push(b'"');
        }
        Value::Json(text) => match serde_json::from_str::<&serde_json::value::RawValue>(text) {
            Ok(raw) => out.extend_from_slice(raw.get().as_bytes()),
            // Not valid JSON (a source bug or a server accepting junk): keep it, as text.
            Err(_) => json_str(out, text),
        },
        Value::Uuid(u) => json_str(out, &fmt_uuid(u)),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                render_value(out, item);
            }
            out.push(b']');
        }
    }
}

fn float(out: &mut Vec<u8>, f: f64, finite: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>) {
    if f.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if f.is_infinite() {
        out.extend_from_slice(if f > 0.0 {
            b"\"Infinity\""
        } else {
            b"\"-Infinity\""
        });
    } else {
        let _ = finite(out);
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Most strings need no escaping (serde_json escapes only `"`, `\\` and control
    // characters): copied as they are.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

fn push_int(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

fn push_uint(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// `v` in decimal, zero-padded to at least `width` digits (like `{:0width$}`).
fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(v);
    for _ in digits.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(digits.as_bytes());
}

/// What `Date`'s `Display` writes, without the formatting machinery (hot path).
fn push_date(out: &mut Vec<u8>, d: &Date) {
    if d.is_infinite() {
        let _ = write!(out, "{d}");
        return;
    }
    if d.year < 0 {
        out.push(b'-');
    }
    push_padded(out, i64::from(d.year).unsigned_abs(), 4);
    out.push(b'-');
    push_padded(out, u64::from(d.month), 2);
    out.push(b'-');
    push_padded(out, u64::from(d.day), 2);
}

/// What `Time`'s `Display` writes: `[-]HH:MM:SS.ffffff` (hours may exceed 24).
fn push_time(out: &mut Vec<u8>, micros: i64) {
    if micros < 0 {
        out.push(b'-');
    }
    let t = micros.unsigned_abs();
    let s = t / 1_000_000;
    push_padded(out, s / 3600, 2);
    out.push(b':');
    push_padded(out, s / 60 % 60, 2);
    out.push(b':');
    push_padded(out, s % 60, 2);
    out.push(b'.');
    push_padded(out, t % 1_000_000, 6);
}

/// What `Timestamp`'s `Display` writes.
fn push_timestamp(out: &mut Vec<u8>, t: &Timestamp) {
    push_date(out, &t.date);
    if !t.date.is_infinite() {
        out.push(b'T');
        push_time(out, t.micros as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;

    fn schema() -> TableSchema {
        let col = |name: &str, ty| Column {
            name: name.into(),
            ty,
            source_type: String::new(),
            nullable: true,
        };
        TableSchema {
            table: TableId::new("public", "orders"),
            version: 1,
            columns: vec![
                col(
                    "id",
                    ColumnType::Int {
                        bits: 64,
                        unsigned: true,
                    },
                ),
                col("qty", ColumnType::Float32),
                col("note", ColumnType::Text { max_len: None }),
                col("doc", ColumnType::Json),
                col("blob", ColumnType::Bytes),
                col("at", ColumnType::TimestampTz),
                col(
                    "big",
                    ColumnType::Decimal {
                        precision: Some(65),
                        scale: Some(30),
                    },
                ),
                col("f", ColumnType::Float64),
                col("d", ColumnType::Date),
            ],
            primary_key: vec![0],
        }
    }

    fn event(after: Vec<Value>) -> ChangeEvent {
        ChangeEvent {
            table: TableId::shared("public", "orders"),
            schema_version: 1,
            op: Op::Update,
            before: None,
            after: Some(Row(after)),
            position: SourcePosition::Postgres(PgPosition {
                commit_lsn: Lsn(0x1A2B3C8),
                lsn: Lsn(0x1A2B3C8),
            }),
            txid: Some(7731),
            ts_ms: 1_763_700_000_123,
        }
    }

    #[test]
    fn renders_spec_envelope_losslessly() {
        let info = SourceInfo {
            connector: "postgres".into(),
            name: "shop".into(),
            db: "shop".into(),
        };
        let big = "12345678901234567890123456789012345.678901234567890123456789012345";
        let ev = event(vec![
            Value::UInt(u64::MAX),
            Value::Float32(0.1),
            Value::Text("😀 \"q\"\n".into()),
            Value::Json(r#"{"n":123456789012345678901234567890}"#.into()),
            Value::Bytes(vec![0, 255, 1]),
            Value::TimestampTz(Timestamp::from_unix_micros(1_709_214_301_250_000)),
            Value::Decimal(big.into()),
            Value::Float64(f64::NAN),
            Value::Date(Date::new(0, 0, 0)),
        ]);
        let mut out = Vec::new();
        render_envelope(&mut out, &info, &schema(), &ev, 1_763_700_000_150).unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected = format!(
            concat!(
                r#"{{"op":"u","before":null,"after":{{"id":18446744073709551615,"qty":0.1,"note":"😀 \"q\"\n","#,
                r#""doc":{{"n":123456789012345678901234567890}},"blob":"AP8B","at":"2024-02-29T13:45:01.250000Z","#,
                r#""big":"{}","f":"NaN","d":"0000-00-00"}},"#,
                r#""source":{{"connector":"postgres","name":"shop","db":"shop","schema":"public","table":"orders","#,
                r#""lsn":"0/1A2B3C8","txid":"7731","ts_ms":1763700000123,"snapshot":false}},"ts_ms":1763700000150}}"#
            ),
            big
        );
        assert_eq!(text, expected);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["after"]["id"].as_u64(), Some(u64::MAX));
    }

    #[test]
    fn unchanged_values_are_left_out_not_nulled() {
        let mut values = vec![Value::Null; 9];
        values[0] = Value::Int(7);
        values[2] = Value::Unchanged;
        let mut out = Vec::new();
        let info = SourceInfo {
            connector: "postgres".into(),
            name: "n".into(),
            db: "d".into(),
        };
        render_envelope(&mut out, &info, &schema(), &event(values), 0).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["after"].get("note").is_none());
        assert!(v["after"].get("qty").unwrap().is_null());
    }

    #[test]
    fn row_width_mismatch_is_an_error_not_a_silent_skip() {
        let mut out = Vec::new();
        let info = SourceInfo {
            connector: "x".into(),
            name: "n".into(),
            db: "d".into(),
        };
        let err = render_envelope(&mut out, &info, &schema(), &event(vec![Value::Int(1)]), 0)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("has 1 values but schema version 1 has 9 columns")
        );
    }

    #[test]
    fn key_is_primary_key_object() {
        let mut values = vec![Value::Null; 9];
        values[0] = Value::Int(7);
        let key = render_key(&schema(), &event(values)).unwrap().unwrap();
        assert_eq!(key, br#"{"id":7}"#);
    }

    #[test]
    fn fast_date_and_time_writers_equal_display() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut dates = vec![
            Date::INFINITY,
            Date::NEG_INFINITY,
            Date {
                year: 0,
                month: 0,
                day: 0,
            },
            Date {
                year: -4713,
                month: 11,
                day: 24,
            },
            Date {
                year: 294276,
                month: 12,
                day: 31,
            },
            Date {
                year: 9999,
                month: 1,
                day: 1,
            },
        ];
        let mut micros = vec![
            0i64,
            -1,
            86_399_999_999,
            -3_020_399_000_000,
            3_020_399_000_000,
        ];
        for _ in 0..2000 {
            let r = next();
            dates.push(Date {
                year: (r % 20_000) as i32 - 5_000,
                month: (r >> 20) as u8 % 13,
                day: (r >> 28) as u8 % 32,
            });
            micros.push((next() % 7_000_000_000_000) as i64 - 3_500_000_000_000);
        }
        for d in &dates {
            let mut out = Vec::new();
            push_date(&mut out, d);
            assert_eq!(String::from_utf8(out).unwrap(), d.to_string());
            for &m in micros.iter().take(50) {
                let t = Timestamp {
                    date: *d,
                    micros: m.unsigned_abs() % 86_400_000_000,
                };
                let mut out = Vec::new();
                push_timestamp(&mut out, &t);
                assert_eq!(String::from_utf8(out).unwrap(), t.to_string());
            }
        }
        for &m in &micros {
            let mut out = Vec::new();
            push_time(&mut out, m);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                Time { micros: m }.to_string()
            );
        }
        for s in [
            "",
            "plain",
            "quote\"",
            "back\\slash",
            "tab\t",
            "\u{1}",
            "\u{7f}",
            "😀 é",
        ] {
            let mut out = Vec::new();
            json_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }
}
