//! Source positions: one newtype per source, compared only within the same source.
//!
//! Positions never move backwards; comparing positions of different sources gives `None`.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// Where a source is in its change log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SourcePosition {
    /// PostgreSQL WAL.
    Postgres(PgPosition),
    /// MySQL / MariaDB binlog.
    Mysql(MysqlPosition),
    /// The synthetic datagen source.
    Datagen(DatagenPosition),
    /// Inside an initial snapshot: staged right after `stream_from`, before anything the
    /// stream brings after it.
    Snapshot(SnapshotPosition),
    /// A backfill batch staged between stream transactions: right after `after` (and after
    /// any snapshot batch at that point), before anything the stream brings later.
    Backfill(BackfillPosition),
}

/// Where a backfill batch sits: after the stream position `after`, the `batch`-th one there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BackfillPosition {
    /// The stream position the batch follows (never itself a snapshot or backfill position).
    pub after: Box<SourcePosition>,
    /// Orders batches staged at the same stream position.
    pub batch: u64,
}

impl SourcePosition {
    /// Where the source's stream continues from: the position itself, or a snapshot's
    /// `stream_from`.
    pub fn stream_position(&self) -> &SourcePosition {
        match self {
            Self::Snapshot(s) => s.stream_from.stream_position(),
            Self::Backfill(b) => b.after.stream_position(),
            other => other,
        }
    }

    /// The position of a backfill batch staged right after `self` (the log's head).
    pub fn next_backfill(&self) -> SourcePosition {
        match self {
            Self::Backfill(b) => Self::Backfill(BackfillPosition {
                after: b.after.clone(),
                batch: b.batch + 1,
            }),
            other => Self::Backfill(BackfillPosition {
                after: Box::new(other.stream_position().clone()),
                batch: 1,
            }),
        }
    }

    /// (stream position, tier, batch): snapshot batches (tier 1) and then backfill batches
    /// (tier 2) sit right after their stream position (tier 0).
    fn sort_key(&self) -> (&SourcePosition, u8, u64) {
        match self {
            Self::Snapshot(s) => (s.stream_from.stream_position(), 1, s.batch),
            Self::Backfill(b) => (b.after.stream_position(), 2, b.batch),
            other => (other, 0, 0),
        }
    }
}

impl PartialOrd for SourcePosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let (a, ta, ba) = self.sort_key();
        let (b, tb, bb) = other.sort_key();
        let base = match (a, b) {
            (Self::Postgres(a), Self::Postgres(b)) => a.partial_cmp(b),
            (Self::Mysql(a), Self::Mysql(b)) => a.partial_cmp(b),
            (Self::Datagen(a), Self::Datagen(b)) => a.partial_cmp(b),
            _ => None,
        }?;
        Some(base.then((ta, ba).cmp(&(tb, bb))))
    }
}

impl fmt::Display for SourcePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Postgres(p) => write!(f, "commit_lsn={} lsn={}", p.commit_lsn, p.lsn),
            Self::Mysql(p) => {
                write!(f, "{}:{}", p.file, p.pos)?;
                if let Some(g) = &p.gtid {
                    write!(f, " gtid={g}")?;
                }
                Ok(())
            }
            Self::Datagen(p) => write!(f, "event={}", p.events),
            Self::Backfill(b) => write!(f, "backfill batch {} after {}", b.batch, b.after),
            Self::Snapshot(p) => write!(
                f,
                "snapshot chunks={}/{} then stream after {}",
                p.done_count(),
                p.total,
                p.stream_from
            ),
        }
    }
}

/// Progress of an initial snapshot, committed with every staged snapshot batch.
///
/// Chunks finish out of order (several workers), so the finished set is every index below
/// `done_below` plus the indices in `done`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotPosition {
    /// The consistent point: streaming continues right after it.
    pub stream_from: Box<SourcePosition>,
    /// Staged snapshot batches so far (orders positions within the snapshot).
    pub batch: u64,
    /// Number of chunks in the plan.
    pub total: u32,
    /// Every chunk below this index is finished.
    pub done_below: u32,
    /// Finished chunks at or above `done_below`, ascending.
    pub done: Vec<u32>,
}

impl SnapshotPosition {
    /// A snapshot of `total` chunks with nothing read yet.
    pub fn start(stream_from: SourcePosition, total: u32) -> Self {
        SnapshotPosition {
            stream_from: Box::new(stream_from),
            batch: 0,
            total,
            done_below: 0,
            done: Vec::new(),
        }
    }

    /// Whether chunk `index` is finished.
    pub fn is_done(&self, index: u32) -> bool {
        index < self.done_below || self.done.binary_search(&index).is_ok()
    }

    /// Marks chunk `index` finished.
    pub fn mark_done(&mut self, index: u32) {
        if self.is_done(index) {
            return;
        }
        if let Err(at) = self.done.binary_search(&index) {
            self.done.insert(at, index);
        }
        while self.done.first() == Some(&self.done_below) {
            self.done.remove(0);
            self.done_below += 1;
        }
    }

    /// Finished chunks.
    pub fn done_count(&self) -> u32 {
        self.done_below + self.done.len() as u32
    }

    /// Whether every chunk is finished.
    pub fn complete(&self) -> bool {
        self.done_count() >= self.total
    }
}

/// A PostgreSQL log sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl std::str::FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("bad LSN {s:?}: expected X/Y"))?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| format!("bad LSN {s:?}"))?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| format!("bad LSN {s:?}"))?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// PostgreSQL position: only commit LSNs are monotonic across transactions, so the position
/// is (commit LSN, LSN within it), compared in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PgPosition {
    /// LSN of the commit of the transaction.
    pub commit_lsn: Lsn,
    /// LSN of the change itself (equal to `commit_lsn` at a commit).
    pub lsn: Lsn,
}

/// MySQL / MariaDB position: binlog file and offset, plus the GTID state where enabled.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MysqlPosition {
    /// Binlog file name (`mariadb-bin.000003`).
    pub file: String,
    /// Byte offset in the file.
    pub pos: u64,
    /// GTID state after this position, where the server uses GTIDs.
    pub gtid: Option<GtidSet>,
    /// Server id of the originating server.
    pub server_id: Option<u32>,
}

impl MysqlPosition {
    fn file_key(&self) -> (&str, u64) {
        // mysql-bin.000012: compare the numeric suffix, so .1000000 follows .999999.
        match self.file.rsplit_once('.') {
            Some((base, n)) => (base, n.parse().unwrap_or(0)),
            None => (self.file.as_str(), 0),
        }
    }
}

impl PartialOrd for MysqlPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let (ab, an) = self.file_key();
        let (bb, bn) = other.file_key();
        if ab != bb {
            return None;
        }
        Some(an.cmp(&bn).then(self.pos.cmp(&other.pos)))
    }
}

/// A GTID state: MariaDB and MySQL GTIDs are different things.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GtidSet {
    /// MariaDB `domain-server-seq` list.
    MariaDb(MariaDbGtidList),
    /// MySQL `uuid:interval` set.
    Mysql(MysqlGtidSet),
}

impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MariaDb(l) => l.fmt(f),
            Self::Mysql(s) => f.write_str(&s.0),
        }
    }
}

/// One MariaDB GTID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MariaDbGtid {
    /// Replication domain.
    pub domain: u32,
    /// Originating server id.
    pub server: u32,
    /// Sequence number within the domain.
    pub seq: u64,
}

/// A MariaDB GTID position: the last GTID per domain (`0-1-100,1-2-7`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct MariaDbGtidList(pub Vec<MariaDbGtid>);

impl fmt::Display for MariaDbGtidList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, g) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}-{}-{}", g.domain, g.server, g.seq)?;
        }
        Ok(())
    }
}

/// A MySQL GTID set in its text form (`3E11FA47-71CA-11E1-9E33-C80AA9429562:1-77`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct MysqlGtidSet(pub String);

/// Datagen position: number of events emitted up to and including a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DatagenPosition {
    /// Events emitted.
    pub events: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_different_sources_do_not_compare() {
        let a = SourcePosition::Datagen(DatagenPosition { events: 1 });
        let b = SourcePosition::Postgres(PgPosition {
            commit_lsn: Lsn(1),
            lsn: Lsn(1),
        });
        assert_eq!(a.partial_cmp(&b), None);
        let c = SourcePosition::Datagen(DatagenPosition { events: 2 });
        assert!(a < c);
    }

    #[test]
    fn snapshot_positions_sit_right_after_their_stream_point() {
        let pg = |l| {
            SourcePosition::Postgres(PgPosition {
                commit_lsn: Lsn(l),
                lsn: Lsn(l),
            })
        };
        let mut s = SnapshotPosition::start(pg(100), 3);
        let a = SourcePosition::Snapshot(s.clone());
        s.batch += 1;
        s.mark_done(2);
        assert!(!s.complete() && s.is_done(2) && !s.is_done(0));
        s.mark_done(0);
        s.mark_done(1);
        assert!(s.complete());
        assert_eq!((s.done_below, s.done.len()), (3, 0));
        let b = SourcePosition::Snapshot(s);
        assert!(a < b);
        assert!(pg(100) < a && pg(99) < b);
        assert!(b < pg(101) && a < pg(101));
        assert_eq!(b.stream_position(), &pg(100));
        let dg = SourcePosition::Datagen(DatagenPosition { events: 1 });
        assert_eq!(a.partial_cmp(&dg), None);
    }

    #[test]
    fn backfill_positions_sit_after_their_stream_point_and_its_snapshot() {
        let pg = |l| {
            SourcePosition::Postgres(PgPosition {
                commit_lsn: Lsn(l),
                lsn: Lsn(l),
            })
        };
        let snap = SourcePosition::Snapshot(SnapshotPosition::start(pg(100), 3));
        let b1 = snap.next_backfill();
        let b2 = b1.next_backfill();
        assert_eq!(b2.stream_position(), &pg(100));
        assert!(pg(100) < snap && snap < b1 && b1 < b2 && b2 < pg(101));
        assert!(pg(99) < b1);
        let c1 = pg(101).next_backfill();
        assert!(b2 < c1 && pg(101) < c1 && c1 < pg(102));
        assert_eq!(c1.next_backfill().stream_position(), &pg(101));
        let dg = SourcePosition::Datagen(DatagenPosition { events: 1 });
        assert_eq!(b1.partial_cmp(&dg.next_backfill()), None);
    }

    #[test]
    fn lsn_text_round_trip() {
        let l: Lsn = "0/1A2B3C8".parse().unwrap();
        assert_eq!(l, Lsn(0x1A2B3C8));
        assert_eq!(l.to_string(), "0/1A2B3C8");
        assert_eq!(Lsn(0x1_0000_0010).to_string(), "1/10");
    }

    #[test]
    fn binlog_files_compare_numerically() {
        let p = |f: &str, pos| MysqlPosition {
            file: f.into(),
            pos,
            gtid: None,
            server_id: None,
        };
        assert!(p("bin.999999", 900) < p("bin.1000000", 4));
        assert!(p("bin.000003", 4) < p("bin.000003", 5));
        assert_eq!(p("a.1", 1).partial_cmp(&p("b.1", 1)), None);
    }
}
