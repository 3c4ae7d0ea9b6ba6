//! Pure decoder for PostgreSQL `pgoutput` logical replication messages.
//!
//! This module turns the payload of one XLogData (`'w'`) message, as produced
//! by the built-in `pgoutput` output plugin, into a typed [`PgOutputMessage`].
//! It covers protocol versions 1 to 4, including streaming of in-progress
//! transactions (v2+), two-phase commit messages (v3+) and the parallel
//! streaming abort fields (v4 with `streaming = parallel`).
//!
//! Wire format reference: PostgreSQL documentation, "Logical Replication
//! Message Formats",
//! <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>.
//!
//! # Invariants
//!
//! * **Pure**: bytes in, typed message out. No I/O, no async, no global state.
//! * **Never panics** on any input: all reads are bounds-checked (`slice::get`),
//!   all offset arithmetic is checked, and there is no `unwrap`/indexing that
//!   can fail. Malformed input always yields a [`DecodeError`] carrying the
//!   byte offset (from the start of the message, i.e. the tag byte is offset 0)
//!   of the field that could not be decoded.
//! * **Bounded allocation**: the whole message must fit in
//!   [`DecodeLimits::max_message_bytes`]; column counts are capped by
//!   [`DecodeLimits::max_columns`]; each column value by
//!   [`DecodeLimits::max_value_bytes`]. In addition every length or count is
//!   checked against the bytes actually remaining *before* anything is
//!   allocated, so a corrupt length field (e.g. `0x7fffffff`) is rejected
//!   without allocating.
//! * **Strict**: trailing bytes after a fully decoded message are an error, as
//!   are unknown message tags, unknown tuple kinds and messages not valid for
//!   the negotiated protocol version.
//! * Unchanged TOASTed values (`'u'`) are kept distinct from SQL `NULL` (`'n'`).
//! * Timestamps are kept as PostgreSQL microseconds since 2000-01-01 (`i64`);
//!   see [`pg_timestamp_to_unix_millis`]. LSNs are `u64`, xids and oids `u32`.
//! * Names (namespaces, relation/column/type names, origin, gid, message
//!   prefix) are decoded as UTF-8 and rejected otherwise: the replication
//!   connection is expected to use `client_encoding = UTF8`.

use thiserror::Error;

/// Log sequence number.
pub type Lsn = u64;
/// Transaction id.
pub type Xid = u32;
/// Object id (relation or type).
pub type Oid = u32;

/// Microseconds between the Unix epoch and the PostgreSQL epoch (2000-01-01).
pub const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
const PG_EPOCH_UNIX_MILLIS: i64 = 946_684_800_000;

/// Converts a pgoutput timestamp (microseconds since 2000-01-01 UTC) to
/// milliseconds since the Unix epoch, rounding towards negative infinity.
/// Never overflows (saturates at the `i64` range).
pub fn pg_timestamp_to_unix_millis(pg_micros: i64) -> i64 {
    pg_micros
        .div_euclid(1000)
        .saturating_add(PG_EPOCH_UNIX_MILLIS)
}

/// Allocation caps applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Maximum number of columns in a Relation message or a TupleData.
    pub max_columns: u16,
    /// Maximum length of a single column value (or logical message content).
    pub max_value_bytes: usize,
    /// Maximum length of a whole message (including the tag byte).
    pub max_message_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            // PostgreSQL's MaxTupleAttributeNumber.
            max_columns: 1664,
            // Largest varlena is 1 GiB; default to something saner.
            max_value_bytes: 256 * 1024 * 1024,
            max_message_bytes: 512 * 1024 * 1024,
        }
    }
}

/// Decoder configuration: negotiated protocol version, streaming mode and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    protocol_version: u32,
    parallel_streaming: bool,
    limits: DecodeLimits,
}

impl Decoder {
    /// Lowest supported `proto_version`.
    pub const MIN_PROTOCOL_VERSION: u32 = 1;
    /// Highest supported `proto_version`.
    pub const MAX_PROTOCOL_VERSION: u32 = 4;

    /// Creates a decoder for the given `proto_version` with default limits
    /// and `streaming` not set to `parallel`.
    pub fn new(protocol_version: u32) -> Result<Self, DecodeError> {
        if !(Self::MIN_PROTOCOL_VERSION..=Self::MAX_PROTOCOL_VERSION).contains(&protocol_version) {
            return Err(DecodeError::UnsupportedProtocolVersion(protocol_version));
        }
        Ok(Self {
            protocol_version,
            parallel_streaming: false,
            limits: DecodeLimits::default(),
        })
    }

    /// Declares that the slot was started with `streaming = parallel`, in
    /// which case Stream Abort messages carry the abort LSN and timestamp.
    /// Requires protocol version 4.
    pub fn with_parallel_streaming(mut self, parallel: bool) -> Result<Self, DecodeError> {
        if parallel && self.protocol_version < 4 {
            return Err(DecodeError::ParallelStreamingRequiresV4(
                self.protocol_version,
            ));
        }
        self.parallel_streaming = parallel;
        Ok(self)
    }

    /// Replaces the allocation limits.
    pub fn with_limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The negotiated protocol version.
    pub fn protocol_version(&self) -> u32 {
        self.protocol_version
    }

    /// The allocation limits in force.
    pub fn limits(&self) -> DecodeLimits {
        self.limits
    }

    /// Decodes one pgoutput message.
    ///
    /// `in_stream` must be true between a Stream Start and the matching
    /// Stream Stop: Relation, Type, Insert, Update, Delete, Truncate and
    /// Message then carry a leading xid.
    pub fn decode(&self, buf: &[u8], in_stream: bool) -> Result<PgOutputMessage, DecodeError> {
        if buf.len() > self.limits.max_message_bytes {
            return Err(DecodeError::MessageTooLarge {
                len: buf.len(),
                max: self.limits.max_message_bytes,
            });
        }
        if in_stream && self.protocol_version < 2 {
            return Err(DecodeError::StreamingRequiresV2(self.protocol_version));
        }
        let mut r = Reader { buf, pos: 0 };
        let tag = r.u8("message tag")?;
        let msg = self.decode_body(tag, &mut r, in_stream)?;
        if r.pos < buf.len() {
            return Err(DecodeError::TrailingBytes {
                tag: tag as char,
                offset: r.pos,
                remaining: buf.len().saturating_sub(r.pos),
            });
        }
        Ok(msg)
    }

    fn require(&self, tag: u8, min: u32) -> Result<(), DecodeError> {
        if self.protocol_version < min {
            Err(DecodeError::RequiresProtocol {
                tag: tag as char,
                required: min,
                version: self.protocol_version,
            })
        } else {
            Ok(())
        }
    }

    fn stream_xid(&self, r: &mut Reader<'_>, in_stream: bool) -> Result<Option<Xid>, DecodeError> {
        if in_stream {
            Ok(Some(r.u32("stream xid")?))
        } else {
            Ok(None)
        }
    }

    fn decode_body(
        &self,
        tag: u8,
        r: &mut Reader<'_>,
        in_stream: bool,
    ) -> Result<PgOutputMessage, DecodeError> {
        let l = &self.limits;
        Ok(match tag {
            b'B' => PgOutputMessage::Begin(Begin {
                final_lsn: r.u64("begin final lsn")?,
                commit_timestamp: r.i64("begin commit timestamp")?,
                xid: r.u32("begin xid")?,
            }),
            b'C' => PgOutputMessage::Commit(Commit {
                flags: r.u8("commit flags")?,
                commit_lsn: r.u64("commit lsn")?,
                end_lsn: r.u64("commit end lsn")?,
                commit_timestamp: r.i64("commit timestamp")?,
            }),
            b'O' => PgOutputMessage::Origin(Origin {
                commit_lsn: r.u64("origin commit lsn")?,
                name: r.string("origin name")?,
            }),
            b'R' => {
                let xid = self.stream_xid(r, in_stream)?;
                let oid = r.u32("relation oid")?;
                let namespace = r.string("relation namespace")?;
                let name = r.string("relation name")?;
                let ri_off = r.pos;
                let ri = r.u8("replica identity")?;
                let replica_identity =
                    ReplicaIdentity::from_byte(ri).ok_or(DecodeError::InvalidReplicaIdentity {
                        offset: ri_off,
                        byte: ri,
                    })?;
                let count_off = r.pos;
                let ncols = r.u16("relation column count")?;
                // flags(1) + name NUL(1) + type oid(4) + typmod(4)
                let cap = check_count(r, ncols, l.max_columns, 10, "relation columns", count_off)?;
                let mut columns = Vec::with_capacity(cap);
                for _ in 0..ncols {
                    columns.push(RelationColumn {
                        flags: r.u8("column flags")?,
                        name: r.string("column name")?,
                        type_oid: r.u32("column type oid")?,
                        type_modifier: r.i32("column type modifier")?,
                    });
                }
                PgOutputMessage::Relation(Relation {
                    xid,
                    oid,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                })
            }
            b'Y' => PgOutputMessage::Type(TypeMessage {
                xid: self.stream_xid(r, in_stream)?,
                oid: r.u32("type oid")?,
                namespace: r.string("type namespace")?,
                name: r.string("type name")?,
            }),
            b'I' => {
                let xid = self.stream_xid(r, in_stream)?;
                let relation_oid = r.u32("insert relation oid")?;
                r.expect(b'N', "insert new tuple marker", "'N'")?;
                let new = read_tuple(r, l)?;
                PgOutputMessage::Insert(Insert {
                    xid,
                    relation_oid,
                    new,
                })
            }
            b'U' => {
                let xid = self.stream_xid(r, in_stream)?;
                let relation_oid = r.u32("update relation oid")?;
                let marker_off = r.pos;
                let marker = r.u8("update tuple marker")?;
                let (old, new) = match marker {
                    b'K' | b'O' => {
                        let t = read_tuple(r, l)?;
                        let old = if marker == b'K' {
                            OldTuple::Key(t)
                        } else {
                            OldTuple::Full(t)
                        };
                        r.expect(b'N', "update new tuple marker", "'N'")?;
                        (Some(old), read_tuple(r, l)?)
                    }
                    b'N' => (None, read_tuple(r, l)?),
                    other => {
                        return Err(DecodeError::UnexpectedByte {
                            what: "update tuple marker",
                            offset: marker_off,
                            expected: "'K', 'O' or 'N'",
                            found: other,
                        });
                    }
                };
                PgOutputMessage::Update(Update {
                    xid,
                    relation_oid,
                    old,
                    new,
                })
            }
            b'D' => {
                let xid = self.stream_xid(r, in_stream)?;
                let relation_oid = r.u32("delete relation oid")?;
                let marker_off = r.pos;
                let marker = r.u8("delete tuple marker")?;
                let old = match marker {
                    b'K' => OldTuple::Key(read_tuple(r, l)?),
                    b'O' => OldTuple::Full(read_tuple(r, l)?),
                    other => {
                        return Err(DecodeError::UnexpectedByte {
                            what: "delete tuple marker",
                            offset: marker_off,
                            expected: "'K' or 'O'",
                            found: other,
                        });
                    }
                };
                PgOutputMessage::Delete(Delete {
                    xid,
                    relation_oid,
                    old,
                })
            }
            b'T' => {
                let xid = self.stream_xid(r, in_stream)?;
                let count_off = r.pos;
                let n = r.i32("truncate relation count")?;
                let n = usize::try_from(n).map_err(|_| DecodeError::NegativeLength {
                    what: "truncate relation count",
                    offset: count_off,
                    len: n,
                })?;
                let options = r.u8("truncate options")?;
                let needed = n.checked_mul(4).ok_or(DecodeError::CountTooLarge {
                    what: "truncate relations",
                    offset: count_off,
                    count: n,
                    max: r.remaining() / 4,
                })?;
                if needed > r.remaining() {
                    return Err(DecodeError::CountTooLarge {
                        what: "truncate relations",
                        offset: count_off,
                        count: n,
                        max: r.remaining() / 4,
                    });
                }
                let mut relation_oids = Vec::with_capacity(n);
                for _ in 0..n {
                    relation_oids.push(r.u32("truncate relation oid")?);
                }
                PgOutputMessage::Truncate(Truncate {
                    xid,
                    options,
                    relation_oids,
                })
            }
            b'M' => {
                let xid = self.stream_xid(r, in_stream)?;
                let flags = r.u8("message flags")?;
                let lsn = r.u64("message lsn")?;
                let prefix = r.string("message prefix")?;
                let content = r.len_prefixed("message content", l.max_value_bytes)?;
                PgOutputMessage::Message(LogicalMessage {
                    xid,
                    flags,
                    lsn,
                    prefix,
                    content,
                })
            }
            b'S' => {
                self.require(tag, 2)?;
                PgOutputMessage::StreamStart(StreamStart {
                    xid: r.u32("stream start xid")?,
                    first_segment: r.u8("stream start first segment")?,
                })
            }
            b'E' => {
                self.require(tag, 2)?;
                PgOutputMessage::StreamStop
            }
            b'c' => {
                self.require(tag, 2)?;
                PgOutputMessage::StreamCommit(StreamCommit {
                    xid: r.u32("stream commit xid")?,
                    flags: r.u8("stream commit flags")?,
                    commit_lsn: r.u64("stream commit lsn")?,
                    end_lsn: r.u64("stream commit end lsn")?,
                    commit_timestamp: r.i64("stream commit timestamp")?,
                })
            }
            b'A' => {
                self.require(tag, 2)?;
                let xid = r.u32("stream abort xid")?;
                let subxid = r.u32("stream abort subxid")?;
                let abort = if self.parallel_streaming {
                    Some(AbortInfo {
                        abort_lsn: r.u64("stream abort lsn")?,
                        abort_timestamp: r.i64("stream abort timestamp")?,
                    })
                } else {
                    None
                };
                PgOutputMessage::StreamAbort(StreamAbort { xid, subxid, abort })
            }
            b'b' => {
                self.require(tag, 3)?;
                PgOutputMessage::BeginPrepare(BeginPrepare {
                    prepare_lsn: r.u64("begin prepare lsn")?,
                    end_lsn: r.u64("begin prepare end lsn")?,
                    prepare_timestamp: r.i64("begin prepare timestamp")?,
                    xid: r.u32("begin prepare xid")?,
                    gid: r.string("begin prepare gid")?,
                })
            }
            b'P' => {
                self.require(tag, 3)?;
                PgOutputMessage::Prepare(read_prepare(r)?)
            }
            b'p' => {
                self.require(tag, 3)?;
                PgOutputMessage::StreamPrepare(read_prepare(r)?)
            }
            b'K' => {
                self.require(tag, 3)?;
                PgOutputMessage::CommitPrepared(CommitPrepared {
                    flags: r.u8("commit prepared flags")?,
                    commit_lsn: r.u64("commit prepared lsn")?,
                    end_lsn: r.u64("commit prepared end lsn")?,
                    commit_timestamp: r.i64("commit prepared timestamp")?,
                    xid: r.u32("commit prepared xid")?,
                    gid: r.string("commit prepared gid")?,
                })
            }
            b'r' => {
                self.require(tag, 3)?;
                PgOutputMessage::RollbackPrepared(RollbackPrepared {
                    flags: r.u8("rollback prepared flags")?,
                    prepare_end_lsn: r.u64("rollback prepared prepare end lsn")?,
                    rollback_end_lsn: r.u64("rollback prepared end lsn")?,
                    prepare_timestamp: r.i64("rollback prepared prepare timestamp")?,
                    rollback_timestamp: r.i64("rollback prepared timestamp")?,
                    xid: r.u32("rollback prepared xid")?,
                    gid: r.string("rollback prepared gid")?,
                })
            }
            other => return Err(DecodeError::UnknownMessageType { tag: other }),
        })
    }
}

fn read_prepare(r: &mut Reader<'_>) -> Result<Prepare, DecodeError> {
    Ok(Prepare {
        flags: r.u8("prepare flags")?,
        prepare_lsn: r.u64("prepare lsn")?,
        end_lsn: r.u64("prepare end lsn")?,
        prepare_timestamp: r.i64("prepare timestamp")?,
        xid: r.u32("prepare xid")?,
        gid: r.string("prepare gid")?,
    })
}

/// Validates a count against the configured maximum and against the bytes
/// remaining (each element needs at least `min_elem_bytes`); returns a safe
/// capacity to pre-allocate.
fn check_count(
    r: &Reader<'_>,
    count: u16,
    max: u16,
    min_elem_bytes: usize,
    what: &'static str,
    offset: usize,
) -> Result<usize, DecodeError> {
    if count > max {
        return Err(DecodeError::TooManyColumns {
            what,
            offset,
            count,
            max,
        });
    }
    let count = usize::from(count);
    let fit = r.remaining() / min_elem_bytes.max(1);
    if count > fit {
        return Err(DecodeError::CountTooLarge {
            what,
            offset,
            count,
            max: fit,
        });
    }
    Ok(count)
}

fn read_tuple(r: &mut Reader<'_>, l: &DecodeLimits) -> Result<TupleData, DecodeError> {
    let count_off = r.pos;
    let ncols = r.u16("tuple column count")?;
    // Each column needs at least its kind byte.
    let cap = check_count(r, ncols, l.max_columns, 1, "tuple columns", count_off)?;
    let mut values = Vec::with_capacity(cap);
    for _ in 0..ncols {
        let kind_off = r.pos;
        let kind = r.u8("tuple column kind")?;
        values.push(match kind {
            b'n' => TupleValue::Null,
            b'u' => TupleValue::UnchangedToast,
            b't' => TupleValue::Text(r.len_prefixed("text column value", l.max_value_bytes)?),
            b'b' => TupleValue::Binary(r.len_prefixed("binary column value", l.max_value_bytes)?),
            other => {
                return Err(DecodeError::UnexpectedByte {
                    what: "tuple column kind",
                    offset: kind_off,
                    expected: "'n', 'u', 't' or 'b'",
                    found: other,
                });
            }
        });
    }
    Ok(values)
}

/// Bounds-checked big-endian cursor over a message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let eof = || DecodeError::UnexpectedEof {
            what,
            offset: self.pos,
            needed: n,
            available: self.remaining(),
        };
        let end = self.pos.checked_add(n).ok_or_else(eof)?;
        let s = self.buf.get(self.pos..end).ok_or_else(eof)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let offset = self.pos;
        let s = self.take(N, what)?;
        <[u8; N]>::try_from(s).map_err(|_| DecodeError::UnexpectedEof {
            what,
            offset,
            needed: N,
            available: s.len(),
        })
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(u8::from_be_bytes(self.array(what)?))
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn expect(
        &mut self,
        byte: u8,
        what: &'static str,
        expected: &'static str,
    ) -> Result<(), DecodeError> {
        let offset = self.pos;
        let found = self.u8(what)?;
        if found == byte {
            Ok(())
        } else {
            Err(DecodeError::UnexpectedByte {
                what,
                offset,
                expected,
                found,
            })
        }
    }

    /// NUL-terminated UTF-8 string.
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let offset = self.pos;
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::UnterminatedString { what, offset })?;
        let bytes = self.take(nul, what)?;
        self.take(1, what)?;
        let s = std::str::from_utf8(bytes).map_err(|e| DecodeError::InvalidUtf8 {
            what,
            offset: offset.saturating_add(e.valid_up_to()),
        })?;
        Ok(s.to_owned())
    }

    /// Int32 length followed by that many bytes.
    fn len_prefixed(&mut self, what: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        let offset = self.pos;
        let len = self.i32(what)?;
        let n =
            usize::try_from(len).map_err(|_| DecodeError::NegativeLength { what, offset, len })?;
        if n > max {
            return Err(DecodeError::ValueTooLarge {
                what,
                offset,
                len: n,
                max,
            });
        }
        // `take` checks availability before we allocate the copy.
        Ok(self.take(n, what)?.to_vec())
    }
}

/// Errors produced by [`Decoder::decode`]. Offsets are byte offsets from the
/// start of the message (the tag byte is offset 0).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("unsupported pgoutput protocol version {0} (supported: 1 to 4)")]
    UnsupportedProtocolVersion(u32),
    #[error("streaming = parallel requires pgoutput protocol version 4, negotiated {0}")]
    ParallelStreamingRequiresV4(u32),
    #[error("in-stream decoding requires pgoutput protocol version 2, negotiated {0}")]
    StreamingRequiresV2(u32),
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    MessageTooLarge { len: usize, max: usize },
    #[error(
        "unexpected end of message reading {what} at byte {offset}: needed {needed} bytes, {available} available"
    )]
    UnexpectedEof {
        what: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("unknown pgoutput message type {tag:#04x}")]
    UnknownMessageType { tag: u8 },
    #[error(
        "message type '{tag}' requires pgoutput protocol version {required}, negotiated {version}"
    )]
    RequiresProtocol {
        tag: char,
        required: u32,
        version: u32,
    },
    #[error("unexpected byte {found:#04x} for {what} at byte {offset}, expected {expected}")]
    UnexpectedByte {
        what: &'static str,
        offset: usize,
        expected: &'static str,
        found: u8,
    },
    #[error("invalid replica identity {byte:#04x} at byte {offset}")]
    InvalidReplicaIdentity { offset: usize, byte: u8 },
    #[error("{what} at byte {offset} is not NUL-terminated")]
    UnterminatedString { what: &'static str, offset: usize },
    #[error("{what} contains invalid UTF-8 at byte {offset}")]
    InvalidUtf8 { what: &'static str, offset: usize },
    #[error("negative length {len} for {what} at byte {offset}")]
    NegativeLength {
        what: &'static str,
        offset: usize,
        len: i32,
    },
    #[error("{what} at byte {offset} has length {len}, exceeding the maximum of {max}")]
    ValueTooLarge {
        what: &'static str,
        offset: usize,
        len: usize,
        max: usize,
    },
    #[error("{what} at byte {offset}: {count} columns exceed the maximum of {max}")]
    TooManyColumns {
        what: &'static str,
        offset: usize,
        count: u16,
        max: u16,
    },
    #[error(
        "{what} at byte {offset}: count {count} cannot fit in the rest of the message (at most {max})"
    )]
    CountTooLarge {
        what: &'static str,
        offset: usize,
        count: usize,
        max: usize,
    },
    #[error("{remaining} trailing bytes after message '{tag}' at byte {offset}")]
    TrailingBytes {
        tag: char,
        offset: usize,
        remaining: usize,
    },
}

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutputMessage {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Relation),
    Type(TypeMessage),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    Message(LogicalMessage),
    StreamStart(StreamStart),
    StreamStop,
    StreamCommit(StreamCommit),
    StreamAbort(StreamAbort),
    BeginPrepare(BeginPrepare),
    Prepare(Prepare),
    CommitPrepared(CommitPrepared),
    RollbackPrepared(RollbackPrepared),
    StreamPrepare(Prepare),
}

/// `B`: start of a (non-streamed) transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    pub final_lsn: Lsn,
    /// Microseconds since 2000-01-01.
    pub commit_timestamp: i64,
    pub xid: Xid,
}

/// `C`: transaction commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Currently unused by PostgreSQL (0).
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    /// Microseconds since 2000-01-01.
    pub commit_timestamp: i64,
}

/// `O`: replication origin of the current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub commit_lsn: Lsn,
    pub name: String,
}

/// Replica identity setting of a relation (`relreplident`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    /// `d`: primary key.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: a specific index.
    Index,
}

impl ReplicaIdentity {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'd' => Some(Self::Default),
            b'n' => Some(Self::Nothing),
            b'f' => Some(Self::Full),
            b'i' => Some(Self::Index),
            _ => None,
        }
    }

    /// The wire byte.
    pub fn as_byte(self) -> u8 {
        match self {
            Self::Default => b'd',
            Self::Nothing => b'n',
            Self::Full => b'f',
            Self::Index => b'i',
        }
    }
}

/// One column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Bit 0 set: column is part of the replica identity key.
    pub flags: u8,
    pub name: String,
    pub type_oid: Oid,
    pub type_modifier: i32,
}

impl RelationColumn {
    /// Whether the column is part of the key.
    pub fn is_key(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// `R`: relation (table) description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Present only inside a stream block.
    pub xid: Option<Xid>,
    pub oid: Oid,
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<RelationColumn>,
}

/// `Y`: data type description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMessage {
    /// Present only inside a stream block.
    pub xid: Option<Xid>,
    pub oid: Oid,
    pub namespace: String,
    pub name: String,
}

/// One column value of a TupleData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// `n`: SQL NULL.
    Null,
    /// `u`: unchanged TOASTed value; the actual value is not sent.
    UnchangedToast,
    /// `t`: text-format value.
    Text(Vec<u8>),
    /// `b`: binary-format value.
    Binary(Vec<u8>),
}

/// Column values of a row, in relation column order.
pub type TupleData = Vec<TupleValue>;

/// Old row image in Update/Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `K`: only replica identity key columns (others are null).
    Key(TupleData),
    /// `O`: full old row (replica identity full).
    Full(TupleData),
}

impl OldTuple {
    /// The column values regardless of kind.
    pub fn values(&self) -> &TupleData {
        match self {
            Self::Key(t) | Self::Full(t) => t,
        }
    }
}

/// `I`: inserted row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    pub xid: Option<Xid>,
    pub relation_oid: Oid,
    pub new: TupleData,
}

/// `U`: updated row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub xid: Option<Xid>,
    pub relation_oid: Oid,
    /// Present when the key changed or replica identity is full.
    pub old: Option<OldTuple>,
    pub new: TupleData,
}

/// `D`: deleted row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub xid: Option<Xid>,
    pub relation_oid: Oid,
    pub old: OldTuple,
}

/// `T`: truncated relations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    pub xid: Option<Xid>,
    /// Bit 0: CASCADE, bit 1: RESTART IDENTITY.
    pub options: u8,
    pub relation_oids: Vec<Oid>,
}

impl Truncate {
    /// `TRUNCATE ... CASCADE`.
    pub fn cascade(&self) -> bool {
        self.options & 1 != 0
    }
    /// `TRUNCATE ... RESTART IDENTITY`.
    pub fn restart_identity(&self) -> bool {
        self.options & 2 != 0
    }
}

/// `M`: logical decoding message (`pg_logical_emit_message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalMessage {
    pub xid: Option<Xid>,
    /// Bit 0: transactional.
    pub flags: u8,
    pub lsn: Lsn,
    pub prefix: String,
    pub content: Vec<u8>,
}

impl LogicalMessage {
    /// Whether the message was emitted transactionally.
    pub fn transactional(&self) -> bool {
        self.flags & 1 != 0
    }
}

/// `S`: start of a stream block (v2+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStart {
    pub xid: Xid,
    /// 1 if this is the first stream segment for this xid.
    pub first_segment: u8,
}

/// `c`: commit of a streamed transaction (v2+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCommit {
    pub xid: Xid,
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_timestamp: i64,
}

/// Extra Stream Abort fields sent with `streaming = parallel` (v4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbortInfo {
    pub abort_lsn: Lsn,
    pub abort_timestamp: i64,
}

/// `A`: abort of a streamed (sub)transaction (v2+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAbort {
    pub xid: Xid,
    /// Equal to `xid` when the top-level transaction aborts.
    pub subxid: Xid,
    /// Present only with protocol 4 and `streaming = parallel`.
    pub abort: Option<AbortInfo>,
}

/// `b`: begin of a prepared transaction (v3+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeginPrepare {
    pub prepare_lsn: Lsn,
    pub end_lsn: Lsn,
    pub prepare_timestamp: i64,
    pub xid: Xid,
    pub gid: String,
}

/// `P` (Prepare) and `p` (Stream Prepare), v3+.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepare {
    pub flags: u8,
    pub prepare_lsn: Lsn,
    pub end_lsn: Lsn,
    pub prepare_timestamp: i64,
    pub xid: Xid,
    pub gid: String,
}

/// `K`: commit of a prepared transaction (v3+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPrepared {
    pub flags: u8,
    pub commit_lsn: Lsn,
    pub end_lsn: Lsn,
    pub commit_timestamp: i64,
    pub xid: Xid,
    pub gid: String,
}

/// `r`: rollback of a prepared transaction (v3+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPrepared {
    pub flags: u8,
    pub prepare_end_lsn: Lsn,
    pub rollback_end_lsn: Lsn,
    pub prepare_timestamp: i64,
    pub rollback_timestamp: i64,
    pub xid: Xid,
    pub gid: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal big-endian encoder used to build messages byte by byte.
    #[derive(Default)]
    struct Enc(Vec<u8>);

    impl Enc {
        fn u8(&mut self, v: u8) -> &mut Self {
            self.0.push(v);
            self
        }
        fn u16(&mut self, v: u16) -> &mut Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u32(&mut self, v: u32) -> &mut Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(&mut self, v: i32) -> &mut Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u64(&mut self, v: u64) -> &mut Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i64(&mut self, v: i64) -> &mut Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn str(&mut self, s: &str) -> &mut Self {
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
            self
        }
        fn bytes(&mut self, b: &[u8]) -> &mut Self {
            self.i32(i32::try_from(b.len()).expect("test value fits i32"));
            self.0.extend_from_slice(b);
            self
        }
        fn xid(&mut self, xid: Option<Xid>) -> &mut Self {
            if let Some(x) = xid {
                self.u32(x);
            }
            self
        }
        fn tuple(&mut self, t: &TupleData) -> &mut Self {
            self.u16(u16::try_from(t.len()).expect("test tuple fits u16"));
            for v in t {
                match v {
                    TupleValue::Null => self.u8(b'n'),
                    TupleValue::UnchangedToast => self.u8(b'u'),
                    TupleValue::Text(b) => self.u8(b't').bytes(b),
                    TupleValue::Binary(b) => self.u8(b'b').bytes(b),
                };
            }
            self
        }
        fn old(&mut self, o: &OldTuple) -> &mut Self {
            match o {
                OldTuple::Key(t) => self.u8(b'K').tuple(t),
                OldTuple::Full(t) => self.u8(b'O').tuple(t),
            }
        }
        fn prepare(&mut self, tag: u8, p: &Prepare) -> &mut Self {
            self.u8(tag)
                .u8(p.flags)
                .u64(p.prepare_lsn)
                .u64(p.end_lsn)
                .i64(p.prepare_timestamp)
                .u32(p.xid)
                .str(&p.gid)
        }
    }

    /// Encodes a message the way pgoutput would put it on the wire.
    fn encode(msg: &PgOutputMessage) -> Vec<u8> {
        let mut e = Enc::default();
        match msg {
            PgOutputMessage::Begin(m) => {
                e.u8(b'B')
                    .u64(m.final_lsn)
                    .i64(m.commit_timestamp)
                    .u32(m.xid);
            }
            PgOutputMessage::Commit(m) => {
                e.u8(b'C')
                    .u8(m.flags)
                    .u64(m.commit_lsn)
                    .u64(m.end_lsn)
                    .i64(m.commit_timestamp);
            }
            PgOutputMessage::Origin(m) => {
                e.u8(b'O').u64(m.commit_lsn).str(&m.name);
            }
            PgOutputMessage::Relation(m) => {
                e.u8(b'R')
                    .xid(m.xid)
                    .u32(m.oid)
                    .str(&m.namespace)
                    .str(&m.name)
                    .u8(m.replica_identity.as_byte())
                    .u16(u16::try_from(m.columns.len()).expect("fits"));
                for c in &m.columns {
                    e.u8(c.flags)
                        .str(&c.name)
                        .u32(c.type_oid)
                        .i32(c.type_modifier);
                }
            }
            PgOutputMessage::Type(m) => {
                e.u8(b'Y')
                    .xid(m.xid)
                    .u32(m.oid)
                    .str(&m.namespace)
                    .str(&m.name);
            }
            PgOutputMessage::Insert(m) => {
                e.u8(b'I')
                    .xid(m.xid)
                    .u32(m.relation_oid)
                    .u8(b'N')
                    .tuple(&m.new);
            }
            PgOutputMessage::Update(m) => {
                e.u8(b'U').xid(m.xid).u32(m.relation_oid);
                if let Some(o) = &m.old {
                    e.old(o);
                }
                e.u8(b'N').tuple(&m.new);
            }
            PgOutputMessage::Delete(m) => {
                e.u8(b'D').xid(m.xid).u32(m.relation_oid).old(&m.old);
            }
            PgOutputMessage::Truncate(m) => {
                e.u8(b'T')
                    .xid(m.xid)
                    .i32(i32::try_from(m.relation_oids.len()).expect("fits"))
                    .u8(m.options);
                for o in &m.relation_oids {
                    e.u32(*o);
                }
            }
            PgOutputMessage::Message(m) => {
                e.u8(b'M')
                    .xid(m.xid)
                    .u8(m.flags)
                    .u64(m.lsn)
                    .str(&m.prefix)
                    .bytes(&m.content);
            }
            PgOutputMessage::StreamStart(m) => {
                e.u8(b'S').u32(m.xid).u8(m.first_segment);
            }
            PgOutputMessage::StreamStop => {
                e.u8(b'E');
            }
            PgOutputMessage::StreamCommit(m) => {
                e.u8(b'c')
                    .u32(m.xid)
                    .u8(m.flags)
                    .u64(m.commit_lsn)
                    .u64(m.end_lsn)
                    .i64(m.commit_timestamp);
            }
            PgOutputMessage::StreamAbort(m) => {
                e.u8(b'A').u32(m.xid).u32(m.subxid);
                if let Some(a) = &m.abort {
                    e.u64(a.abort_lsn).i64(a.abort_timestamp);
                }
            }
            PgOutputMessage::BeginPrepare(m) => {
                e.u8(b'b')
                    .u64(m.prepare_lsn)
                    .u64(m.end_lsn)
                    .i64(m.prepare_timestamp)
                    .u32(m.xid)
                    .str(&m.gid);
            }
            PgOutputMessage::Prepare(p) => {
                e.prepare(b'P', p);
            }
            PgOutputMessage::StreamPrepare(p) => {
                e.prepare(b'p', p);
            }
            PgOutputMessage::CommitPrepared(m) => {
                e.u8(b'K')
                    .u8(m.flags)
                    .u64(m.commit_lsn)
                    .u64(m.end_lsn)
                    .i64(m.commit_timestamp)
                    .u32(m.xid)
                    .str(&m.gid);
            }
            PgOutputMessage::RollbackPrepared(m) => {
                e.u8(b'r')
                    .u8(m.flags)
                    .u64(m.prepare_end_lsn)
                    .u64(m.rollback_end_lsn)
                    .i64(m.prepare_timestamp)
                    .i64(m.rollback_timestamp)
                    .u32(m.xid)
                    .str(&m.gid);
            }
        }
        e.0
    }

    fn row() -> TupleData {
        vec![
            TupleValue::Text(b"42".to_vec()),
            TupleValue::Null,
            TupleValue::UnchangedToast,
            TupleValue::Binary(vec![0, 1, 2, 0xff]),
            TupleValue::Text(Vec::new()),
        ]
    }

    struct Sample {
        /// Minimum protocol version for this message.
        min_proto: u32,
        /// Needs a decoder with `streaming = parallel`.
        parallel: bool,
        msg: PgOutputMessage,
    }

    impl Sample {
        fn in_stream(&self) -> bool {
            use PgOutputMessage as M;
            match &self.msg {
                M::Relation(m) => m.xid.is_some(),
                M::Type(m) => m.xid.is_some(),
                M::Insert(m) => m.xid.is_some(),
                M::Update(m) => m.xid.is_some(),
                M::Delete(m) => m.xid.is_some(),
                M::Truncate(m) => m.xid.is_some(),
                M::Message(m) => m.xid.is_some(),
                _ => false,
            }
        }

        fn decoder(&self) -> Decoder {
            Decoder::new(4)
                .and_then(|d| d.with_parallel_streaming(self.parallel))
                .expect("valid decoder")
        }
    }

    fn samples() -> Vec<Sample> {
        use PgOutputMessage as M;
        let s = |min_proto, msg| Sample {
            min_proto,
            parallel: false,
            msg,
        };
        let mut v = Vec::new();
        for xid in [None, Some(7777)] {
            let p = if xid.is_some() { 2 } else { 1 };
            v.push(s(
                p,
                M::Relation(Relation {
                    xid,
                    oid: 16384,
                    namespace: "public".into(),
                    name: "users".into(),
                    replica_identity: ReplicaIdentity::Default,
                    columns: vec![
                        RelationColumn {
                            flags: 1,
                            name: "id".into(),
                            type_oid: 23,
                            type_modifier: -1,
                        },
                        RelationColumn {
                            flags: 0,
                            name: "naïve".into(),
                            type_oid: 1043,
                            type_modifier: 68,
                        },
                    ],
                }),
            ));
            v.push(s(
                p,
                M::Relation(Relation {
                    xid,
                    oid: 1,
                    namespace: String::new(),
                    name: "empty".into(),
                    replica_identity: ReplicaIdentity::Full,
                    columns: vec![],
                }),
            ));
            v.push(s(
                p,
                M::Type(TypeMessage {
                    xid,
                    oid: 99999,
                    namespace: "public".into(),
                    name: "mood".into(),
                }),
            ));
            v.push(s(
                p,
                M::Insert(Insert {
                    xid,
                    relation_oid: 16384,
                    new: row(),
                }),
            ));
            v.push(s(
                p,
                M::Insert(Insert {
                    xid,
                    relation_oid: 16384,
                    new: vec![],
                }),
            ));
            v.push(s(
                p,
                M::Update(Update {
                    xid,
                    relation_oid: 16384,
                    old: None,
                    new: row(),
                }),
            ));
            v.push(s(
                p,
                M::Update(Update {
                    xid,
                    relation_oid: 16384,
                    old: Some(OldTuple::Key(vec![TupleValue::Text(b"41".to_vec())])),
                    new: row(),
                }),
            ));
            v.push(s(
                p,
                M::Update(Update {
                    xid,
                    relation_oid: 16384,
                    old: Some(OldTuple::Full(row())),
                    new: row(),
                }),
            ));
            v.push(s(
                p,
                M::Delete(Delete {
                    xid,
                    relation_oid: 16384,
                    old: OldTuple::Key(vec![TupleValue::Text(b"1".to_vec()), TupleValue::Null]),
                }),
            ));
            v.push(s(
                p,
                M::Delete(Delete {
                    xid,
                    relation_oid: 16384,
                    old: OldTuple::Full(row()),
                }),
            ));
            v.push(s(
                p,
                M::Truncate(Truncate {
                    xid,
                    options: 3,
                    relation_oids: vec![16384, 16390, u32::MAX],
                }),
            ));
            v.push(s(
                p,
                M::Message(LogicalMessage {
                    xid,
                    flags: 1,
                    lsn: 0x0000_0001_0000_0abc,
                    prefix: "weir".into(),
                    content: b"hello\0world".to_vec(),
                }),
            ));
        }
        v.push(s(
            1,
            M::Message(LogicalMessage {
                xid: None,
                flags: 0,
                lsn: 5,
                prefix: String::new(),
                content: vec![],
            }),
        ));
        v.push(s(
            1,
            M::Begin(Begin {
                final_lsn: 0x16_b374_d848,
                commit_timestamp: 774_000_000_123_456,
                xid: 734,
            }),
        ));
        v.push(s(
            1,
            M::Commit(Commit {
                flags: 0,
                commit_lsn: 0x16_b374_d848,
                end_lsn: 0x16_b374_d878,
                commit_timestamp: -1,
            }),
        ));
        v.push(s(
            1,
            M::Origin(Origin {
                commit_lsn: u64::MAX,
                name: "pg_16395".into(),
            }),
        ));
        v.push(s(
            2,
            M::StreamStart(StreamStart {
                xid: 7777,
                first_segment: 1,
            }),
        ));
        v.push(s(2, M::StreamStop));
        v.push(s(
            2,
            M::StreamCommit(StreamCommit {
                xid: 7777,
                flags: 0,
                commit_lsn: 100,
                end_lsn: 200,
                commit_timestamp: 300,
            }),
        ));
        v.push(s(
            2,
            M::StreamAbort(StreamAbort {
                xid: 7777,
                subxid: 7778,
                abort: None,
            }),
        ));
        v.push(Sample {
            min_proto: 4,
            parallel: true,
            msg: M::StreamAbort(StreamAbort {
                xid: 7777,
                subxid: 7777,
                abort: Some(AbortInfo {
                    abort_lsn: 0xdead_beef,
                    abort_timestamp: i64::MIN,
                }),
            }),
        });
        v.push(s(
            3,
            M::BeginPrepare(BeginPrepare {
                prepare_lsn: 1,
                end_lsn: 2,
                prepare_timestamp: 3,
                xid: 4,
                gid: "gid-1".into(),
            }),
        ));
        let prep = Prepare {
            flags: 0,
            prepare_lsn: 10,
            end_lsn: 20,
            prepare_timestamp: 30,
            xid: 40,
            gid: "gid-2".into(),
        };
        v.push(s(3, M::Prepare(prep.clone())));
        v.push(s(3, M::StreamPrepare(prep)));
        v.push(s(
            3,
            M::CommitPrepared(CommitPrepared {
                flags: 0,
                commit_lsn: 11,
                end_lsn: 12,
                commit_timestamp: 13,
                xid: 14,
                gid: "gid-3".into(),
            }),
        ));
        v.push(s(
            3,
            M::RollbackPrepared(RollbackPrepared {
                flags: 0,
                prepare_end_lsn: 21,
                rollback_end_lsn: 22,
                prepare_timestamp: 23,
                rollback_timestamp: 24,
                xid: 25,
                gid: String::new(),
            }),
        ));
        v
    }

    #[test]
    fn round_trips_every_message_kind() {
        let all = samples();
        let mut tags: Vec<u8> = all.iter().map(|s| encode(&s.msg)[0]).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), 19, "every message kind is covered");
        for s in &all {
            let bytes = encode(&s.msg);
            let got = s.decoder().decode(&bytes, s.in_stream());
            assert_eq!(got.as_ref(), Ok(&s.msg), "bytes {bytes:?}");
        }
    }

    #[test]
    fn messages_rejected_below_their_protocol_version() {
        for s in samples() {
            let bytes = encode(&s.msg);
            for proto in 1..s.min_proto {
                let d = Decoder::new(proto).expect("valid");
                assert!(
                    d.decode(&bytes, s.in_stream()).is_err(),
                    "{:?} accepted on v{proto}",
                    s.msg
                );
            }
        }
    }

    #[test]
    fn hand_written_bytes_decode() {
        // Insert into relation 16384: (1, NULL, unchanged toast).
        let bytes = [
            b'I', 0, 0, 0x40, 0, b'N', 0, 3, b't', 0, 0, 0, 1, b'1', b'n', b'u',
        ];
        let d = Decoder::new(1).expect("v1");
        assert_eq!(
            d.decode(&bytes, false),
            Ok(PgOutputMessage::Insert(Insert {
                xid: None,
                relation_oid: 16384,
                new: vec![
                    TupleValue::Text(b"1".to_vec()),
                    TupleValue::Null,
                    TupleValue::UnchangedToast
                ],
            }))
        );
    }

    #[test]
    fn unchanged_toast_is_not_null() {
        let d = Decoder::new(1).expect("v1");
        let mut e = Enc::default();
        e.u8(b'U').u32(5).u8(b'N').u16(2).u8(b'u').u8(b'n');
        let Ok(PgOutputMessage::Update(u)) = d.decode(&e.0, false) else {
            panic!("expected update");
        };
        assert_eq!(u.new, vec![TupleValue::UnchangedToast, TupleValue::Null]);
        assert_ne!(TupleValue::UnchangedToast, TupleValue::Null);
    }

    #[test]
    fn update_with_and_without_old_tuple() {
        let d = Decoder::new(1).expect("v1");
        let mut without = Enc::default();
        without.u8(b'U').u32(9).u8(b'N').u16(1).u8(b't').bytes(b"x");
        let Ok(PgOutputMessage::Update(u)) = d.decode(&without.0, false) else {
            panic!("expected update");
        };
        assert_eq!(u.old, None);
        assert_eq!(u.new, vec![TupleValue::Text(b"x".to_vec())]);

        for (marker, full) in [(b'K', false), (b'O', true)] {
            let mut with = Enc::default();
            with.u8(b'U')
                .u32(9)
                .u8(marker)
                .u16(1)
                .u8(b't')
                .bytes(b"old");
            with.u8(b'N').u16(1).u8(b't').bytes(b"new");
            let Ok(PgOutputMessage::Update(u)) = d.decode(&with.0, false) else {
                panic!("expected update");
            };
            let old = u.old.expect("old tuple");
            assert_eq!(matches!(old, OldTuple::Full(_)), full);
            assert_eq!(old.values(), &vec![TupleValue::Text(b"old".to_vec())]);
            assert_eq!(u.new, vec![TupleValue::Text(b"new".to_vec())]);
        }

        // Old tuple must be followed by 'N'.
        let mut bad = Enc::default();
        bad.u8(b'U').u32(9).u8(b'K').u16(0).u8(b'K').u16(0);
        assert!(matches!(
            d.decode(&bad.0, false),
            Err(DecodeError::UnexpectedByte { offset: 8, .. })
        ));
    }

    #[test]
    fn streaming_xid_prefix() {
        let d = Decoder::new(2).expect("v2");
        let mut e = Enc::default();
        e.u8(b'D').u32(0xabcd).u32(16384).u8(b'K').u16(1).u8(b'n');
        let Ok(PgOutputMessage::Delete(del)) = d.decode(&e.0, true) else {
            panic!("expected delete");
        };
        assert_eq!(del.xid, Some(0xabcd));
        assert_eq!(del.relation_oid, 16384);
        // The same bytes outside a stream are misparsed as oid 0xabcd and
        // then fail on the tuple marker.
        assert!(d.decode(&e.0, false).is_err());
        // Streaming needs v2.
        assert_eq!(
            Decoder::new(1).expect("v1").decode(&e.0, true),
            Err(DecodeError::StreamingRequiresV2(1))
        );
        // Transaction-control messages never carry the prefix.
        let mut b = Enc::default();
        b.u8(b'E');
        assert_eq!(d.decode(&b.0, true), Ok(PgOutputMessage::StreamStop));
    }

    #[test]
    fn stream_abort_fields_depend_on_parallel_mode() {
        let mut e = Enc::default();
        e.u8(b'A').u32(1).u32(2);
        let v4 = Decoder::new(4).expect("v4");
        assert!(v4.decode(&e.0, false).is_ok());
        let par = v4.with_parallel_streaming(true).expect("v4 parallel");
        assert!(matches!(
            par.decode(&e.0, false),
            Err(DecodeError::UnexpectedEof { offset: 9, .. })
        ));
        assert_eq!(
            Decoder::new(3).and_then(|d| d.with_parallel_streaming(true)),
            Err(DecodeError::ParallelStreamingRequiresV4(3))
        );
    }

    #[test]
    fn truncation_at_every_offset_is_an_error() {
        for s in samples() {
            let bytes = encode(&s.msg);
            let d = s.decoder();
            for cut in 0..bytes.len() {
                let prefix = bytes.get(..cut).expect("in range");
                assert!(
                    d.decode(prefix, s.in_stream()).is_err(),
                    "prefix of {cut} bytes of {:?} decoded",
                    s.msg
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_rejected() {
        let d = Decoder::new(1).expect("v1");
        assert_eq!(
            d.decode(b"E", false),
            Err(DecodeError::RequiresProtocol {
                tag: 'E',
                required: 2,
                version: 1
            })
        );
        let mut e = Enc::default();
        e.u8(b'B').u64(1).i64(2).u32(3).u8(0);
        assert_eq!(
            d.decode(&e.0, false),
            Err(DecodeError::TrailingBytes {
                tag: 'B',
                offset: 21,
                remaining: 1
            })
        );
    }

    #[test]
    fn huge_lengths_rejected_without_allocating() {
        // Even with no value cap, a 0x7fffffff length is checked against the
        // bytes actually present before any allocation.
        let unlimited = Decoder::new(1).expect("v1").with_limits(DecodeLimits {
            max_columns: u16::MAX,
            max_value_bytes: usize::MAX,
            max_message_bytes: usize::MAX,
        });
        let default = Decoder::new(1).expect("v1");

        let mut text = Enc::default();
        text.u8(b'I')
            .u32(1)
            .u8(b'N')
            .u16(1)
            .u8(b't')
            .i32(0x7fff_ffff)
            .u8(b'x');
        assert!(matches!(
            unlimited.decode(&text.0, false),
            Err(DecodeError::UnexpectedEof {
                offset: 13,
                needed: 0x7fff_ffff,
                ..
            })
        ));
        assert!(matches!(
            default.decode(&text.0, false),
            Err(DecodeError::ValueTooLarge { offset: 9, .. })
        ));

        let mut msg = Enc::default();
        msg.u8(b'M').u8(1).u64(0).str("p").i32(0x7fff_ffff);
        assert!(unlimited.decode(&msg.0, false).is_err());

        let mut neg = Enc::default();
        neg.u8(b'I').u32(1).u8(b'N').u16(1).u8(b'b').i32(-1);
        assert!(matches!(
            unlimited.decode(&neg.0, false),
            Err(DecodeError::NegativeLength { len: -1, .. })
        ));

        let mut trunc = Enc::default();
        trunc.u8(b'T').i32(0x7fff_ffff).u8(0).u32(1);
        assert!(matches!(
            unlimited.decode(&trunc.0, false),
            Err(DecodeError::CountTooLarge { offset: 1, .. })
        ));

        let mut cols = Enc::default();
        cols.u8(b'I').u32(1).u8(b'N').u16(0xffff);
        assert!(matches!(
            default.decode(&cols.0, false),
            Err(DecodeError::TooManyColumns { count: 0xffff, .. })
        ));
        assert!(matches!(
            unlimited.decode(&cols.0, false),
            Err(DecodeError::CountTooLarge { .. })
        ));

        let mut rel = Enc::default();
        rel.u8(b'R').u32(1).str("a").str("b").u8(b'd').u16(0xffff);
        assert!(unlimited.decode(&rel.0, false).is_err());

        let small = default.with_limits(DecodeLimits {
            max_message_bytes: 4,
            ..DecodeLimits::default()
        });
        assert_eq!(
            small.decode(&text.0, false),
            Err(DecodeError::MessageTooLarge {
                len: text.0.len(),
                max: 4
            })
        );
    }

    #[test]
    fn errors_name_field_and_offset() {
        let d = Decoder::new(1).expect("v1");
        let err = d.decode(&[b'B', 0, 0], false).expect_err("short");
        let text = err.to_string();
        assert!(text.contains("begin final lsn"), "{text}");
        assert!(text.contains("byte 1"), "{text}");
        let mut bad = Enc::default();
        bad.u8(b'O').u64(0).u8(0xff).u8(0);
        assert_eq!(
            d.decode(&bad.0, false),
            Err(DecodeError::InvalidUtf8 {
                what: "origin name",
                offset: 9
            })
        );
        let mut ri = Enc::default();
        ri.u8(b'R').u32(1).str("a").str("b").u8(b'x').u16(0);
        assert_eq!(
            d.decode(&ri.0, false),
            Err(DecodeError::InvalidReplicaIdentity {
                offset: 9,
                byte: b'x'
            })
        );
        assert_eq!(
            d.decode(b"Z", false),
            Err(DecodeError::UnknownMessageType { tag: b'Z' })
        );
        assert!(matches!(
            d.decode(&[], false),
            Err(DecodeError::UnexpectedEof { offset: 0, .. })
        ));
        assert_eq!(
            Decoder::new(0),
            Err(DecodeError::UnsupportedProtocolVersion(0))
        );
        assert_eq!(
            Decoder::new(5),
            Err(DecodeError::UnsupportedProtocolVersion(5))
        );
    }

    #[test]
    fn timestamp_conversion() {
        assert_eq!(pg_timestamp_to_unix_millis(0), 946_684_800_000);
        assert_eq!(pg_timestamp_to_unix_millis(1_999), 946_684_800_001);
        assert_eq!(pg_timestamp_to_unix_millis(-1), 946_684_799_999);
        assert_eq!(
            pg_timestamp_to_unix_millis(-PG_EPOCH_UNIX_MICROS),
            0,
            "unix epoch"
        );
        // Extremes (infinity encodings) do not overflow.
        let _ = pg_timestamp_to_unix_millis(i64::MAX);
        let _ = pg_timestamp_to_unix_millis(i64::MIN);
    }

    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            // n is small; modulo bias is irrelevant here.
            usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
        }
        fn byte(&mut self) -> u8 {
            self.next().to_le_bytes()[0]
        }
    }

    fn fuzz_decoders() -> Vec<Decoder> {
        let tight = DecodeLimits {
            max_columns: 8,
            max_value_bytes: 16,
            max_message_bytes: 256,
        };
        vec![
            Decoder::new(1).expect("v1"),
            Decoder::new(3).expect("v3").with_limits(tight),
            Decoder::new(4)
                .and_then(|d| d.with_parallel_streaming(true))
                .expect("v4 parallel"),
        ]
    }

    #[test]
    fn fuzz_random_bytes_never_panic() {
        const TAGS: &[u8] = b"BCORYIUDTMSEcAbPKrp";
        let decoders = fuzz_decoders();
        let mut rng = SplitMix64(0x5eed_0001);
        let mut ok = 0usize;
        for i in 0..200_000 {
            let len = rng.below(48);
            let mut buf: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            // Half of the inputs start with a valid tag to get past dispatch.
            if let Some(first) = buf.first_mut()
                && i % 2 == 0
            {
                *first = TAGS.get(rng.below(TAGS.len())).copied().unwrap_or(b'B');
            }
            let d = decoders.get(i % decoders.len()).expect("decoder");
            if d.decode(&buf, i % 4 < 2 && d.protocol_version() >= 2)
                .is_ok()
            {
                ok += 1;
            }
        }
        // Fixed-size messages (Begin, Stream Stop, ...) do decode sometimes.
        assert!(ok > 0);
    }

    #[test]
    fn fuzz_mutated_valid_messages_never_panic() {
        let decoders = fuzz_decoders();
        let mut rng = SplitMix64(0x5eed_0002);
        let samples = samples();
        for round in 0..100_000usize {
            let s = samples.get(round % samples.len()).expect("sample");
            let mut buf = encode(&s.msg);
            for _ in 0..=rng.below(4) {
                let at = rng.below(buf.len());
                match rng.below(6) {
                    0 => {
                        if let Some(b) = buf.get_mut(at) {
                            *b ^= 1 << rng.below(8);
                        }
                    }
                    1 => {
                        if let Some(b) = buf.get_mut(at) {
                            *b = rng.byte();
                        }
                    }
                    2 => {
                        if at < buf.len() {
                            buf.remove(at);
                        }
                    }
                    3 => buf.insert(at, rng.byte()),
                    4 => buf.truncate(at),
                    _ => {
                        // Overwrite four bytes with an extreme length.
                        let v: [u8; 4] = match rng.below(3) {
                            0 => 0x7fff_ffff_i32.to_be_bytes(),
                            1 => (-1_i32).to_be_bytes(),
                            _ => 0xffff_0000_u32.to_be_bytes(),
                        };
                        for (k, b) in v.iter().enumerate() {
                            if let Some(slot) = buf.get_mut(at.saturating_add(k)) {
                                *slot = *b;
                            }
                        }
                    }
                }
            }
            let _ = s.decoder().decode(&buf, s.in_stream());
            for d in &decoders {
                let _ = d.decode(&buf, d.protocol_version() >= 2 && round % 2 == 0);
            }
        }
    }
}
