//! Column values, lossless for every row of SPEC.md's type table.
//!
//! Nothing is converted to a lossy form on the way in: integers keep their width and sign
//! (`u64` up to 18446744073709551615), decimals keep their exact digits as text, times keep
//! microseconds, JSON keeps its exact text (no float rounding of big numbers), MySQL zero
//! dates and PostgreSQL ±infinity survive.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One column value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// The source did not send this value (PostgreSQL unchanged TOAST). Never rendered as null:
    /// left out of the JSON row, and SQL sinks leave the target column as it is.
    Unchanged,
    /// boolean.
    Bool(bool),
    /// Any signed integer up to 64 bits.
    Int(i64),
    /// Any unsigned integer up to 64 bits.
    UInt(u64),
    /// 32-bit float (rendered in its own shortest round-trip form).
    Float32(f32),
    /// 64-bit float.
    Float64(f64),
    /// numeric/decimal: the exact digits (`"-12345.6700"`), or `NaN`, `Infinity`, `-Infinity`.
    Decimal(String),
    /// Text of any kind: char, varchar, text, enum labels, MySQL SET (`"a,b"`).
    Text(String),
    /// Binary: bytea, blob, binary, varbinary.
    Bytes(Vec<u8>),
    /// bit / bit varying as a string of `0` and `1`.
    Bits(String),
    /// A calendar date.
    Date(Date),
    /// A time of day or (MySQL) a signed duration up to ±838 hours.
    Time(Time),
    /// A timestamp without time zone.
    Timestamp(Timestamp),
    /// A timestamp with time zone, normalised to UTC.
    TimestampTz(Timestamp),
    /// JSON document text, exactly as the source has it.
    Json(String),
    /// A UUID.
    Uuid([u8; 16]),
    /// An array (PostgreSQL arrays, any dimension as nested arrays).
    Array(Vec<Value>),
    /// The server's text form of a type with no closer match: interval, money, inet, ranges,
    /// geometry, time with time zone, ...
    Other(String),
}

/// A calendar date. `month` and `day` may be 0 (MySQL zero dates such as `0000-00-00`);
/// years are astronomical (0 = 1 BC). [`Date::INFINITY`] and [`Date::NEG_INFINITY`] stand for
/// PostgreSQL's `infinity` and `-infinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Date {
    /// Astronomical year.
    pub year: i32,
    /// 1..=12, or 0 in a MySQL zero date.
    pub month: u8,
    /// 1..=31, or 0 in a MySQL zero date.
    pub day: u8,
}

impl Date {
    /// PostgreSQL `infinity`.
    pub const INFINITY: Date = Date {
        year: i32::MAX,
        month: 12,
        day: 31,
    };
    /// PostgreSQL `-infinity`.
    pub const NEG_INFINITY: Date = Date {
        year: i32::MIN,
        month: 1,
        day: 1,
    };

    /// A date from its parts (not validated: sources pass what the server stored).
    pub const fn new(year: i32, month: u8, day: u8) -> Self {
        Date { year, month, day }
    }

    /// The date `days` after 1970-01-01 (negative: before).
    pub fn from_unix_days(days: i64) -> Self {
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Date {
            year: year as i32,
            month,
            day,
        }
    }

    /// Days since 1970-01-01 (meaningless for zero dates and infinities).
    pub fn to_unix_days(self) -> i64 {
        let (m, d) = (i64::from(self.month), i64::from(self.day));
        let y = i64::from(self.year) - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// Whether this is `infinity` or `-infinity`.
    pub fn is_infinite(self) -> bool {
        self == Self::INFINITY || self == Self::NEG_INFINITY
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::INFINITY {
            return f.write_str("infinity");
        }
        if *self == Self::NEG_INFINITY {
            return f.write_str("-infinity");
        }
        if self.year < 0 {
            write!(
                f,
                "-{:04}-{:02}-{:02}",
                -i64::from(self.year),
                self.month,
                self.day
            )
        } else {
            write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
        }
    }
}

/// A time of day, or a signed duration (MySQL TIME spans -838:59:59 to 838:59:59), in
/// microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Time {
    /// Microseconds since midnight (or of the duration; may be negative or over 24 hours).
    pub micros: i64,
}

impl Time {
    /// A time from hours, minutes, seconds and microseconds.
    pub const fn hms(h: i64, m: i64, s: i64, us: i64) -> Self {
        Time {
            micros: ((h * 60 + m) * 60 + s) * 1_000_000 + us,
        }
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.micros < 0 { "-" } else { "" };
        let t = self.micros.unsigned_abs();
        let us = t % 1_000_000;
        let s = t / 1_000_000;
        write!(
            f,
            "{sign}{:02}:{:02}:{:02}.{us:06}",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

/// A date and a time of day, microsecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// The date (may be a zero date or ±infinity).
    pub date: Date,
    /// Microseconds since midnight, below 86,400,000,000.
    pub micros: u64,
}

impl Timestamp {
    /// PostgreSQL `infinity`.
    pub const INFINITY: Timestamp = Timestamp {
        date: Date::INFINITY,
        micros: 0,
    };
    /// PostgreSQL `-infinity`.
    pub const NEG_INFINITY: Timestamp = Timestamp {
        date: Date::NEG_INFINITY,
        micros: 0,
    };

    /// The timestamp `micros` microseconds after 1970-01-01 00:00:00.
    pub fn from_unix_micros(micros: i64) -> Self {
        const DAY: i64 = 86_400_000_000;
        Timestamp {
            date: Date::from_unix_days(micros.div_euclid(DAY)),
            micros: micros.rem_euclid(DAY) as u64,
        }
    }

    /// Microseconds since 1970-01-01 00:00:00 (meaningless for zero dates and infinities).
    pub fn to_unix_micros(self) -> i64 {
        self.date.to_unix_days() * 86_400_000_000 + self.micros as i64
    }
}

impl fmt::Display for Timestamp {
    /// ISO 8601 without zone: `2024-02-29T13:45:01.250000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.date.is_infinite() {
            return self.date.fmt(f);
        }
        write!(
            f,
            "{}T{}",
            self.date,
            Time {
                micros: self.micros as i64
            }
        )
    }
}

/// Formats 16 bytes as a lowercase hyphenated UUID.
pub(crate) fn fmt_uuid(b: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        s.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_through_unix_days() {
        for days in [-719_528_i64, -1, 0, 1, 11_016, 19_782, 2_932_896] {
            assert_eq!(Date::from_unix_days(days).to_unix_days(), days);
        }
        assert_eq!(Date::from_unix_days(19_782).to_string(), "2024-02-29");
        assert_eq!(Date::from_unix_days(-719_528).to_string(), "0000-01-01");
    }

    #[test]
    fn times_keep_microseconds_sign_and_long_hours() {
        assert_eq!(Time::hms(13, 45, 1, 250_000).to_string(), "13:45:01.250000");
        assert_eq!(
            Time {
                micros: -(Time::hms(838, 59, 59, 0).micros)
            }
            .to_string(),
            "-838:59:59.000000"
        );
        assert_eq!(Time { micros: -1 }.to_string(), "-00:00:00.000001");
    }

    #[test]
    fn timestamps_render_iso_and_specials() {
        let t = Timestamp::from_unix_micros(1_709_214_301_250_000);
        assert_eq!(t.to_string(), "2024-02-29T13:45:01.250000");
        assert_eq!(t.to_unix_micros(), 1_709_214_301_250_000);
        assert_eq!(Timestamp::INFINITY.to_string(), "infinity");
        assert_eq!(
            Timestamp {
                date: Date::new(0, 0, 0),
                micros: 0
            }
            .to_string(),
            "0000-00-00T00:00:00.000000"
        );
        assert_eq!(Date::new(-43, 3, 15).to_string(), "-0043-03-15");
    }

    #[test]
    fn uuid_format() {
        let b = [
            0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17,
            0x40, 0x00,
        ];
        assert_eq!(fmt_uuid(&b), "123e4567-e89b-12d3-a456-426614174000");
    }
}
