//! GTID states: MariaDB `domain-server-seq` lists and MySQL `uuid:interval` sets, their
//! text forms, and the MariaDB GTID events `mysql_common` does not decode.

use std::collections::BTreeMap;

use weir_api::{MariaDbGtid, MariaDbGtidList, MysqlGtidSet};

use crate::decode::DecodeError;

/// Parses a MariaDB GTID list (`0-1-100,1-2-7`; empty text is the empty list).
pub fn parse_mariadb(text: &str) -> Result<MariaDbGtidList, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut it = part.split('-');
        let (Some(d), Some(s), Some(q), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(format!(
                "bad MariaDB GTID {part:?}: expected domain-server-seq"
            ));
        };
        let bad = || format!("bad MariaDB GTID {part:?}: expected numbers");
        out.push(MariaDbGtid {
            domain: d.parse().map_err(|_| bad())?,
            server: s.parse().map_err(|_| bad())?,
            seq: q.parse().map_err(|_| bad())?,
        });
    }
    Ok(MariaDbGtidList(out))
}

/// Records `gtid` as the newest of its domain (keeping domains sorted).
pub fn mariadb_apply(list: &mut MariaDbGtidList, gtid: MariaDbGtid) {
    match list.0.iter_mut().find(|g| g.domain == gtid.domain) {
        Some(g) => *g = gtid,
        None => {
            list.0.push(gtid);
            list.0.sort_by_key(|g| g.domain);
        }
    }
}

/// A MariaDB GTID_EVENT body: (seq, domain, flags).
pub fn parse_mariadb_gtid_event(data: &[u8]) -> Result<(u64, u32, u8), DecodeError> {
    if data.len() < 13 {
        return Err(DecodeError(format!(
            "MariaDB GTID event of {} bytes (expected at least 13)",
            data.len()
        )));
    }
    let seq = u64::from_le_bytes(data[0..8].try_into().unwrap_or([0; 8]));
    let domain = u32::from_le_bytes(data[8..12].try_into().unwrap_or([0; 4]));
    Ok((seq, domain, data[12]))
}

/// MariaDB GTID event flag: a statement outside BEGIN/COMMIT (DDL).
pub const FL_STANDALONE: u8 = 1;

/// A MariaDB GTID_LIST_EVENT body: the binlog state at the start of a file.
pub fn parse_mariadb_gtid_list(data: &[u8]) -> Result<MariaDbGtidList, DecodeError> {
    let head: [u8; 4] = data
        .get(0..4)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| DecodeError("GTID_LIST event shorter than 4 bytes".into()))?;
    let count = (u32::from_le_bytes(head) & 0x0FFF_FFFF) as usize;
    let body = &data[4..];
    if body.len() < count.saturating_mul(16) {
        return Err(DecodeError(format!(
            "GTID_LIST event claims {count} GTIDs in {} bytes",
            body.len()
        )));
    }
    let mut list = MariaDbGtidList::default();
    for c in body.chunks_exact(16).take(count) {
        let g = MariaDbGtid {
            domain: u32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            server: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            seq: u64::from_le_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]),
        };
        // A list may hold several servers of a domain; the last one is the newest.
        mariadb_apply(&mut list, g);
    }
    Ok(list)
}

/// A MySQL GTID set: per source UUID, sorted disjoint intervals `[start, end]` (inclusive).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MysqlGtids {
    sets: BTreeMap<String, Vec<(u64, u64)>>,
}

impl MysqlGtids {
    /// Parses `uuid:1-5:7,uuid2:3` (whitespace and newlines allowed, as the server prints).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = MysqlGtids::default();
        let cleaned: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        for part in cleaned.split(',').filter(|p| !p.is_empty()) {
            let mut it = part.split(':');
            let uuid = it.next().unwrap_or_default().to_ascii_lowercase();
            if uuid.len() != 36 || uuid.chars().filter(|&c| c == '-').count() != 4 {
                return Err(format!(
                    "bad MySQL GTID set {part:?}: expected uuid:interval"
                ));
            }
            for iv in it {
                let bad = || format!("bad MySQL GTID interval {iv:?} in {part:?}");
                let (a, b) = match iv.split_once('-') {
                    Some((a, b)) => (
                        a.parse::<u64>().map_err(|_| bad())?,
                        b.parse::<u64>().map_err(|_| bad())?,
                    ),
                    None => {
                        let a = iv.parse::<u64>().map_err(|_| bad())?;
                        (a, a)
                    }
                };
                if a == 0 || b < a {
                    return Err(bad());
                }
                out.add_range(&uuid, a, b);
            }
        }
        Ok(out)
    }

    /// Adds one transaction `uuid:gno`.
    pub fn add(&mut self, uuid: &str, gno: u64) {
        self.add_range(uuid, gno, gno);
    }

    fn add_range(&mut self, uuid: &str, a: u64, b: u64) {
        let ivs = self.sets.entry(uuid.to_ascii_lowercase()).or_default();
        ivs.push((a, b));
        ivs.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ivs.len());
        for &(s, e) in ivs.iter() {
            match merged.last_mut() {
                Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        *ivs = merged;
    }

    /// The per-UUID intervals (inclusive), for COM_BINLOG_DUMP_GTID.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[(u64, u64)])> {
        self.sets.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The weir API form.
    pub fn to_api(&self) -> MysqlGtidSet {
        MysqlGtidSet(self.to_string())
    }
}

impl std::fmt::Display for MysqlGtids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (uuid, ivs)) in self.sets.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(uuid)?;
            for (a, b) in ivs {
                if a == b {
                    write!(f, ":{a}")?;
                } else {
                    write!(f, ":{a}-{b}")?;
                }
            }
        }
        Ok(())
    }
}

/// Formats a 16-byte server UUID.
pub fn uuid_text(b: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

/// Parses a textual UUID into 16 bytes.
pub fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_lists() {
        let mut l = parse_mariadb("1-2-7, 0-1-100").unwrap();
        assert_eq!(l.to_string(), "1-2-7,0-1-100");
        mariadb_apply(
            &mut l,
            MariaDbGtid {
                domain: 0,
                server: 3,
                seq: 101,
            },
        );
        assert_eq!(l.to_string(), "1-2-7,0-3-101");
        assert!(parse_mariadb("").unwrap().0.is_empty());
        assert!(parse_mariadb("0-1").is_err());
        assert!(parse_mariadb("0-1-x").is_err());
        assert!(parse_mariadb("0-1-2-3").is_err());
    }

    #[test]
    fn mariadb_events() {
        let mut ev = 42u64.to_le_bytes().to_vec();
        ev.extend_from_slice(&3u32.to_le_bytes());
        ev.push(FL_STANDALONE);
        assert_eq!(parse_mariadb_gtid_event(&ev).unwrap(), (42, 3, 1));
        assert!(parse_mariadb_gtid_event(&ev[..12]).is_err());
        let mut list = 1u32.to_le_bytes().to_vec();
        list.extend_from_slice(&0u32.to_le_bytes());
        list.extend_from_slice(&1u32.to_le_bytes());
        list.extend_from_slice(&9u64.to_le_bytes());
        assert_eq!(parse_mariadb_gtid_list(&list).unwrap().to_string(), "0-1-9");
        assert!(parse_mariadb_gtid_list(&list[..10]).is_err());
        assert!(parse_mariadb_gtid_list(&[0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(parse_mariadb_gtid_list(&[1]).is_err());
    }

    #[test]
    fn mysql_sets() {
        let u = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let mut s = MysqlGtids::parse(&format!("{}:1-5:7,\n", u.to_uppercase())).unwrap();
        assert_eq!(s.to_string(), format!("{u}:1-5:7"));
        s.add(u, 6);
        assert_eq!(s.to_string(), format!("{u}:1-7"));
        s.add(u, 9);
        s.add("00000000-0000-0000-0000-000000000001", 1);
        assert_eq!(
            s.to_string(),
            format!("00000000-0000-0000-0000-000000000001:1,{u}:1-7:9")
        );
        assert!(MysqlGtids::parse("nope:1").is_err());
        assert!(MysqlGtids::parse(&format!("{u}:5-3")).is_err());
        assert!(MysqlGtids::parse(&format!("{u}:0")).is_err());
        assert!(MysqlGtids::parse("").unwrap().is_empty());
        let b = uuid_bytes(u).unwrap();
        assert_eq!(uuid_text(&b), u);
        assert!(uuid_bytes("xyz").is_none());
    }
}
