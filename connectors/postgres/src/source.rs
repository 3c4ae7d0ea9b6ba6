//! The streaming PostgreSQL source: a logical replication slot read with `pgoutput`
//! (protocol 1), turned into [`SourceItem`]s.
//!
//! # Positions
//!
//! PostgreSQL resumes logical decoding at a start LSN `s` by skipping every transaction whose
//! commit record starts *before* `s`; a commit starting exactly at `s` is sent again. So the
//! LSN to confirm (and to resume from) after a transaction committed at `C` is `C + 1`, and
//! after a keepalive reporting `wal_end = W` (everything before `W` was sent) it is `W`.
//!
//! To keep one rule for every position, a boundary position `(p, p)` means "every
//! transaction whose commit starts at or before `p` has been delivered", and the LSN
//! confirmed to the server and used in `START_REPLICATION` for it is `p + 1`:
//!
//! * a commit at `C` is `(C, C)` (confirm `C + 1`);
//! * a keepalive with `wal_end = W` is the heartbeat `(W - 1, W - 1)` (confirm `W`);
//! * [`Source::end_position`] with the server's flush LSN `F` is `(F - 1, F - 1)`: reached by
//!   the last commit before `F` or a keepalive at or past `F`.
//!
//! A change inside a transaction is `(C, lsn)` with `lsn < C`; acknowledging it confirms `C`
//! (the transaction is sent again on resume).

use std::collections::{HashMap, VecDeque};

use async_trait::async_trait;
use weir_api::{
    ChangeEvent, Column, CommitInfo, ConnectorError, Lsn as ApiLsn, Op, PgPosition, Result, Row,
    Source, SourceInfo, SourceItem, SourcePosition, TableId, TableSchema, Transaction, Value,
};

use crate::pgoutput::{
    Decoder, Lsn, OldTuple, PgOutputMessage, Relation, TupleValue, pg_timestamp_to_unix_millis,
};
use crate::replication::{
    ReplicationClient, ReplicationConfig, ReplicationError, ReplicationEvent, ReplicationStream,
    SnapshotAction, format_lsn, parse_lsn,
};
use crate::types;

/// Changes buffered before a transaction is handed on in chunks.
const MAX_BUFFERED_CHANGES: usize = 4096;

/// Settings of the PostgreSQL source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSourceConfig {
    /// `postgres://user:pass@host:port/db`.
    pub url: String,
    /// Globs (`*`, `?`) over `schema.table`, e.g. `public.*`.
    pub tables: Vec<String>,
    /// Globs of tables to leave out.
    pub exclude: Vec<String>,
    /// Logical replication slot (created if missing).
    pub slot: String,
    /// Publication (created for the selected tables if missing).
    pub publication: String,
}

/// Connection settings parsed from a `postgres://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// Host name or address.
    pub host: String,
    /// Port (default 5432).
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password, if any.
    pub password: Option<String>,
    /// Database (default: the user name).
    pub database: String,
}

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .finish()
    }
}

fn percent_decode(s: &str) -> std::result::Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// Parses `postgres://user:pass@host:port/db` (also `postgresql://`); query parameters are
/// ignored; user, password and database are percent-decoded.
pub fn parse_url(url: &str) -> std::result::Result<PgUrl, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or("the URL must start with postgres:// or postgresql://")?;
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((u, p)) => (percent_decode(u)?, Some(percent_decode(p)?)),
            None => (percent_decode(u)?, None),
        },
        None => (String::new(), None),
    };
    if user.is_empty() {
        return Err("the URL names no user (postgres://user:password@host/db)".into());
    }
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        // [ipv6]:port
        let (h, after) = h.split_once(']').ok_or("unclosed [ in host")?;
        (h.to_owned(), after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("bad port {p:?}"))?,
        None => 5432,
    };
    let host = if host.is_empty() {
        "localhost".to_owned()
    } else {
        percent_decode(&host)?
    };
    let database = percent_decode(path)?;
    let database = if database.is_empty() {
        user.clone()
    } else {
        database
    };
    Ok(PgUrl {
        host,
        port,
        user,
        password,
        database,
    })
}

/// Whether `name` matches `glob` (`*`: any run of characters, `?`: one character).
pub fn glob_match(glob: &str, name: &str) -> bool {
    let g: Vec<char> = glob.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match g.get(gi) {
            Some('*') => {
                star = Some((gi, ni));
                gi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                gi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sg, sn)) => {
                    gi = sg + 1;
                    ni = sn + 1;
                    star = Some((sg, sn + 1));
                }
                None => return false,
            },
        }
    }
    g[gi.min(g.len())..].iter().all(|&c| c == '*')
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The settings of a normal SQL connection to `url`.
pub(crate) fn sql_config(url: &PgUrl) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&url.host)
        .port(url.port)
        .user(&url.user)
        .dbname(&url.database)
        .application_name("weir")
        .connect_timeout(std::time::Duration::from_secs(10));
    if let Some(p) = &url.password {
        cfg.password(p);
    }
    cfg
}

fn lsn_of(pos: &SourcePosition) -> Result<PgPosition> {
    match pos {
        SourcePosition::Postgres(p) => Ok(*p),
        other => Err(ConnectorError::definite(format!(
            "the staging log holds a position of another source ({other}); this pipeline's \
             source is postgres: reset the pipeline's staging log or use a new pipeline name"
        ))),
    }
}

/// The LSN to confirm and to resume from for a position (see the module docs).
fn confirm_lsn(p: PgPosition) -> Lsn {
    if p.lsn >= p.commit_lsn {
        p.commit_lsn.0.saturating_add(1)
    } else {
        p.commit_lsn.0
    }
}

/// Domain type oid → (base type oid, the domain's typmod).
pub(crate) type Domains = HashMap<u32, (u32, i32)>;

/// Every domain type of the database (domains decode as their base type).
pub(crate) async fn load_domains(client: &tokio_postgres::Client) -> Result<Domains> {
    let rows = client
        .query(
            "SELECT oid, typbasetype, typtypmod FROM pg_catalog.pg_type WHERE typtype = 'd'",
            &[],
        )
        .await
        .map_err(|e| sql_error("postgres source: reading domain types", e))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, u32>(0), (r.get::<_, u32>(1), r.get::<_, i32>(2))))
        .collect())
}

/// The base type (and typmod) of a possibly nested domain; other types map to themselves.
pub(crate) fn resolve_domain(domains: &Domains, mut oid: u32, mut typmod: i32) -> (u32, i32) {
    for _ in 0..32 {
        match domains.get(&oid) {
            Some(&(base, base_typmod)) => {
                oid = base;
                if typmod == -1 {
                    typmod = base_typmod;
                }
            }
            None => break,
        }
    }
    (oid, typmod)
}

pub(crate) fn boundary(p: Lsn) -> PgPosition {
    PgPosition {
        commit_lsn: ApiLsn(p),
        lsn: ApiLsn(p),
    }
}

fn is_transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || code.starts_with("40")
        || code == "55006"
}

pub(crate) fn sql_error(context: &str, err: tokio_postgres::Error) -> ConnectorError {
    match err.code() {
        Some(code) if !is_transient_sqlstate(code.code()) => {
            ConnectorError::definite_from(format!("{context}: {err}"), err)
        }
        _ => ConnectorError::transient_from(format!("{context}: {err}"), err),
    }
}

struct Rel {
    schema: TableSchema,
    type_oids: Vec<u32>,
    key: Vec<bool>,
}

struct Txn {
    commit_lsn: Lsn,
    xid: u32,
    ts_ms: i64,
    buffer: Vec<ChangeEvent>,
    chunked: bool,
    events: u64,
}

/// Streams changes from a PostgreSQL logical replication slot.
pub struct PostgresSource {
    cfg: PostgresSourceConfig,
    pipeline: String,
    url: Option<PgUrl>,
    sql: Option<tokio_postgres::Client>,
    stream: Option<ReplicationStream>,
    decoder: Decoder,
    nullable: HashMap<(String, String, String), bool>,
    /// `tables` entries already reported as matching no table.
    unmatched_warned: std::collections::HashSet<String>,
    /// Domain type oid → (base type oid, base typmod), to decode domains as their base type.
    domains: Domains,
    relations: HashMap<u32, Rel>,
    txn: Option<Txn>,
    queue: VecDeque<SourceItem>,
    reply_pending: bool,
    /// Last LSN confirmed to the server (never moves back: PostgreSQL 15 would follow).
    confirmed: Lsn,
    /// Last boundary position handed out, to keep heartbeats from going backwards.
    last_boundary: Lsn,
    /// The pgoutput protocol version in use (highest the server has).
    proto: u32,
    /// Inside a Stream Start .. Stream Stop segment: its transaction.
    in_stream: Option<u32>,
    /// In-progress streamed transactions, spilled to disk until their Stream Commit.
    streams: HashMap<u32, Spill>,
    /// A committed streamed transaction being handed on from its spill file.
    replay: Option<Replay>,
    /// When a standby status update was last sent.
    last_status: std::time::Instant,
    /// The tables resolved at start (checked to still be published while streaming).
    watched: Vec<TableId>,
    /// When to check next that the publication and the watched tables still exist.
    next_check: std::time::Instant,
    /// A table or the publication is gone: the message, and the WAL position to reach first
    /// (so every change from before the drop is delivered before the pipeline stops).
    gone: Option<(String, Lsn)>,
    /// The furthest WAL position the stream has shown (message starts, keepalive ends).
    wal_seen: Lsn,
    /// Tables added to the publication since [`Source::added_tables`] was last called.
    added: Vec<TableId>,
    /// Time spent decoding since [`Source::decode_time`] was last called.
    decode: std::time::Duration,
    /// WAL the slot holds (`pg_current_wal_lsn() - restart_lsn`), from the last check.
    retained: Option<u64>,
}

/// How often a status update goes out while the stream is not being read (paused by
/// backpressure, or replaying a spilled transaction), so `wal_sender_timeout` (60 s by
/// default, but servers set it as low as a few seconds) never cuts the connection.
const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How often a streaming source checks that its publication and tables still exist (and
/// for new matching tables, and measures the WAL its slot holds).
const TABLE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The first check after start: soon, so the retained WAL is known early.
const FIRST_CHECK_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// The raw messages of one in-progress streamed transaction: `[lsn u64][len u32][bytes]`.
struct Spill {
    path: std::path::PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    /// Aborted subtransactions: their changes are skipped at replay.
    aborted: std::collections::HashSet<u32>,
}

struct Replay {
    path: std::path::PathBuf,
    file: std::io::BufReader<std::fs::File>,
    aborted: std::collections::HashSet<u32>,
    commit: crate::pgoutput::Commit,
}

/// Messages replayed per `next()` call, so memory stays bounded.
const REPLAY_STEP: usize = 1024;

fn spill_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("weir-pg-stream-{}", std::process::id()))
}

fn spill_error(what: &str, e: std::io::Error) -> ConnectorError {
    ConnectorError::definite_from(
        format!(
            "postgres source: {what} a streamed transaction's spill file in {}: {e}; check \
             free space and permissions of the temporary directory (TMPDIR)",
            spill_dir().display()
        ),
        e,
    )
}

/// The pgoutput protocol for a server version (`server_version` parameter): the highest the
/// server speaks (v2 brings streaming of in-progress transactions).
pub fn proto_for_server(version: &str) -> u32 {
    let major: u32 = version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    match major {
        16.. => 4,
        15 => 3,
        14 => 2,
        _ => 1,
    }
}

impl std::fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSource")
            .field("pipeline", &self.pipeline)
            .field("slot", &self.cfg.slot)
            .field("publication", &self.cfg.publication)
            .field("confirmed", &format_lsn(self.confirmed))
            .finish_non_exhaustive()
    }
}

impl PostgresSource {
    /// A source for `pipeline_name`; nothing connects before [`Source::start`].
    pub fn new(cfg: PostgresSourceConfig, pipeline_name: &str) -> Self {
        let url = parse_url(&cfg.url).ok();
        PostgresSource {
            cfg,
            pipeline: pipeline_name.to_owned(),
            url,
            sql: None,
            stream: None,
            decoder: Decoder::new(1).expect("protocol 1 is supported"),
            nullable: HashMap::new(),
            unmatched_warned: Default::default(),
            domains: HashMap::new(),
            relations: HashMap::new(),
            txn: None,
            queue: VecDeque::new(),
            reply_pending: false,
            confirmed: 0,
            last_boundary: 0,
            proto: 1,
            in_stream: None,
            streams: HashMap::new(),
            replay: None,
            last_status: std::time::Instant::now(),
            watched: Vec::new(),
            next_check: std::time::Instant::now(),
            gone: None,
            wal_seen: 0,
            added: Vec::new(),
            decode: std::time::Duration::ZERO,
            retained: None,
        }
    }

    /// Checks that the publication exists and still publishes every table resolved at start.
    /// A dropped table or publication is remembered with the current WAL position, which the
    /// stream reaches once it has delivered every change from before the drop.
    async fn check_tables(&mut self) -> Result<()> {
        let publication = self.cfg.publication.clone();
        let slot = self.cfg.slot.clone();
        let client = self.connect_sql().await?;
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1), \
                 COALESCE((SELECT array_agg(schemaname::text || '.' || tablename::text) \
                   FROM pg_catalog.pg_publication_tables WHERE pubname = $1), '{}'), \
                 pg_catalog.pg_current_wal_lsn()::text, \
                 COALESCE((SELECT array_agg(schemaname::text || '.' || tablename::text) \
                   FROM pg_catalog.pg_tables \
                   WHERE schemaname NOT IN ('pg_catalog', 'information_schema')), '{}'), \
                 (SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), \
                   restart_lsn)::int8 FROM pg_catalog.pg_replication_slots WHERE slot_name = $2)",
                &[&publication, &slot],
            )
            .await
            .map_err(|e| sql_error("postgres source: checking the publication's tables", e))?;
        let exists: bool = row.get(0);
        let published: Vec<String> = row.get(1);
        self.retained = row.get::<_, Option<i64>>(4).map(|b| b.max(0) as u64);
        let lsn_text: String = row.get(2);
        let at = parse_lsn(&lsn_text).ok_or_else(|| {
            ConnectorError::definite(format!("postgres source: bad LSN {lsn_text:?} from server"))
        })?;
        let message = if !exists {
            Some(format!(
                "postgres source: publication {publication:?} was dropped while weir was \
                 replicating; every change before that is delivered. Restart weir to recreate it \
                 (changes made to the tables while it was missing are not replicated: \
                 re-snapshot the tables if that matters)"
            ))
        } else {
            let published: std::collections::HashSet<String> = published.into_iter().collect();
            let missing: Vec<String> = self
                .watched
                .iter()
                .filter(|t| !published.contains(&format!("{}.{}", t.schema, t.name)))
                .map(|t| t.to_string())
                .collect();
            (!missing.is_empty()).then(|| {
                format!(
                    "postgres source: table(s) {} dropped (or removed from publication \
                     {publication:?}) while weir was replicating them; every change before that \
                     is delivered. To go on without them, restart weir (the `tables` globs are \
                     resolved again at start); if they were recreated, restart weir to publish \
                     them again and re-snapshot them for the rows they had",
                    missing.join(", ")
                )
            })
        };
        if let Some(message) = message {
            self.gone = Some((message, at));
            return Ok(());
        }
        // Tables that started matching `tables`: published from now on (and backfilled).
        let all: Vec<String> = row.get(3);
        let watched: std::collections::HashSet<String> =
            self.watched.iter().map(|t| t.to_string()).collect();
        let new = all.iter().any(|full| {
            !watched.contains(full)
                && self.cfg.tables.iter().any(|g| glob_match(g, full))
                && !self.cfg.exclude.iter().any(|g| glob_match(g, full))
        });
        if new {
            let tables = self.resolve_tables().await?;
            self.ensure_publication(&tables).await?;
            self.watched = tables;
        }
        Ok(())
    }

    fn drop_streams(&mut self) {
        for (_, spill) in self.streams.drain() {
            drop(spill.file);
            let _ = std::fs::remove_file(&spill.path);
        }
        if let Some(r) = self.replay.take() {
            let _ = std::fs::remove_file(&r.path);
        }
        self.in_stream = None;
    }

    /// Keeps a message of the open stream segment for its transaction's commit.
    fn spill(&mut self, xid: u32, lsn: Lsn, data: &[u8]) -> Result<()> {
        use std::io::Write;
        let spill = match self.streams.get_mut(&xid) {
            Some(s) => s,
            None => {
                let dir = spill_dir();
                std::fs::create_dir_all(&dir).map_err(|e| spill_error("creating", e))?;
                let path = dir.join(format!("xid-{xid}"));
                let file = std::fs::File::create(&path).map_err(|e| spill_error("creating", e))?;
                self.streams.entry(xid).or_insert(Spill {
                    path,
                    file: std::io::BufWriter::with_capacity(1 << 20, file),
                    aborted: Default::default(),
                })
            }
        };
        let len = u32::try_from(data.len()).map_err(|_| {
            ConnectorError::definite("postgres source: a pgoutput message over 4 GiB")
        })?;
        spill
            .file
            .write_all(&lsn.to_be_bytes())
            .and_then(|()| spill.file.write_all(&len.to_be_bytes()))
            .and_then(|()| spill.file.write_all(data))
            .map_err(|e| spill_error("writing", e))
    }

    /// Starts handing on a committed streamed transaction.
    fn stream_commit(&mut self, c: crate::pgoutput::StreamCommit) -> Result<()> {
        let commit = crate::pgoutput::Commit {
            flags: c.flags,
            commit_lsn: c.commit_lsn,
            end_lsn: c.end_lsn,
            commit_timestamp: c.commit_timestamp,
        };
        self.txn = Some(Txn {
            commit_lsn: c.commit_lsn,
            xid: c.xid,
            ts_ms: pg_timestamp_to_unix_millis(c.commit_timestamp),
            buffer: Vec::new(),
            chunked: false,
            events: 0,
        });
        let Some(spill) = self.streams.remove(&c.xid) else {
            // Nothing of it reached us (no selected table): an empty transaction.
            return self.message(PgOutputMessage::Commit(commit), c.commit_lsn);
        };
        let file = spill
            .file
            .into_inner()
            .map_err(|e| spill_error("writing", e.into_error()))?;
        drop(file);
        let file = std::fs::File::open(&spill.path).map_err(|e| spill_error("reading", e))?;
        self.replay = Some(Replay {
            path: spill.path,
            file: std::io::BufReader::with_capacity(1 << 20, file),
            aborted: spill.aborted,
            commit,
        });
        Ok(())
    }

    /// Hands on up to [`REPLAY_STEP`] messages of the transaction being replayed.
    fn replay_step(&mut self) -> Result<()> {
        use std::io::Read;
        let Some(mut replay) = self.replay.take() else {
            return Ok(());
        };
        for _ in 0..REPLAY_STEP {
            let mut head = [0u8; 12];
            match replay.file.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    let _ = std::fs::remove_file(&replay.path);
                    let lsn = replay.commit.commit_lsn;
                    return self.message(PgOutputMessage::Commit(replay.commit), lsn);
                }
                Err(e) => return Err(spill_error("reading", e)),
            }
            let lsn = u64::from_be_bytes(head[..8].try_into().expect("8 bytes"));
            let len = u32::from_be_bytes(head[8..].try_into().expect("4 bytes")) as usize;
            let mut data = vec![0u8; len];
            replay
                .file
                .read_exact(&mut data)
                .map_err(|e| spill_error("reading", e))?;
            let message = self.decoder.decode(&data, true).map_err(|e| {
                ConnectorError::definite_from(
                    format!(
                        "postgres source: undecodable streamed pgoutput message at {}",
                        format_lsn(lsn)
                    ),
                    e,
                )
            })?;
            let change_xid = match &message {
                PgOutputMessage::Insert(m) => m.xid,
                PgOutputMessage::Update(m) => m.xid,
                PgOutputMessage::Delete(m) => m.xid,
                PgOutputMessage::Truncate(m) => m.xid,
                _ => None,
            };
            if change_xid.is_some_and(|x| replay.aborted.contains(&x)) {
                continue; // a rolled-back subtransaction's change
            }
            self.message(message, lsn)?;
        }
        self.replay = Some(replay);
        Ok(())
    }

    pub(crate) fn url(&self) -> Result<PgUrl> {
        parse_url(&self.cfg.url).map_err(|e| {
            ConnectorError::definite(format!(
                "postgres source: bad url: {e}; expected postgres://user:password@host:port/db"
            ))
        })
    }

    pub(crate) fn repl_config(url: &PgUrl) -> ReplicationConfig {
        let mut c = ReplicationConfig::new(url.host.clone(), url.port, url.user.clone())
            .database(url.database.clone())
            // The text forms types::parse_text expects.
            .param("DateStyle", "ISO")
            .param("IntervalStyle", "postgres")
            .param("TimeZone", "UTC")
            .param("extra_float_digits", "3")
            .param("bytea_output", "hex");
        if let Some(p) = &url.password {
            c = c.password(p.clone());
        }
        c
    }

    pub(crate) async fn connect_sql(&mut self) -> Result<&tokio_postgres::Client> {
        if self.sql.as_ref().is_some_and(|c| c.is_closed()) {
            self.sql = None;
        }
        if self.sql.is_none() {
            let url = self.url()?;
            let cfg = sql_config(&url);
            let (client, connection) = cfg.connect(tokio_postgres::NoTls).await.map_err(|e| {
                sql_error(
                    &format!("postgres source: connecting to {}:{}", url.host, url.port),
                    e,
                )
            })?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sql = Some(client);
        }
        Ok(self.sql.as_ref().expect("connected above"))
    }

    pub(crate) fn repl_error(&self, context: &str, err: ReplicationError) -> ConnectorError {
        let slot = &self.cfg.slot;
        let publication = &self.cfg.publication;
        match &err {
            e if e.is_connection_lost() => ConnectorError::transient_from(
                format!("postgres source: {context}: connection lost"),
                err,
            ),
            ReplicationError::Connect { .. } | ReplicationError::ConnectTimeout { .. } => {
                ConnectorError::transient_from(format!("postgres source: {context}: {err}"), err)
            }
            ReplicationError::Server { code, message, .. } if code == "42704" => {
                let what = if message.contains("publication") {
                    format!(
                        "publication {publication:?} does not exist: it was dropped; recreate it \
                         (CREATE PUBLICATION ... FOR TABLE ...) or restart weir, which creates it"
                    )
                } else {
                    format!(
                        "replication slot {slot:?} does not exist: it was dropped, so the changes \
                         since the last acknowledged position are lost; take a new snapshot \
                         (weir recreates the slot on start)"
                    )
                };
                ConnectorError::definite_from(format!("postgres source: {context}: {what}"), err)
            }
            ReplicationError::Server { code, .. } if is_transient_sqlstate(code) => {
                ConnectorError::transient_from(format!("postgres source: {context}: {err}"), err)
            }
            _ => ConnectorError::definite_from(format!("postgres source: {context}: {err}"), err),
        }
    }

    pub(crate) async fn resolve_tables(&mut self) -> Result<Vec<TableId>> {
        let tables = self.cfg.tables.clone();
        let exclude = self.cfg.exclude.clone();
        let client = self.connect_sql().await?;
        let rows = client
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_catalog.pg_tables \
                 WHERE schemaname NOT IN ('pg_catalog', 'information_schema') \
                 ORDER BY 1, 2",
                &[],
            )
            .await
            .map_err(|e| sql_error("postgres source: listing tables", e))?;
        let selected: Vec<TableId> = rows
            .iter()
            .map(|r| TableId::new(r.get::<_, String>(0), r.get::<_, String>(1)))
            .filter(|t| {
                let full = t.to_string();
                tables.iter().any(|g| glob_match(g, &full))
                    && !exclude.iter().any(|g| glob_match(g, &full))
            })
            .collect();
        if selected.is_empty() {
            return Err(ConnectorError::definite(format!(
                "postgres source: no table matches {:?} (excluding {:?}); check `tables`",
                tables, exclude
            )));
        }
        let unmatched: Vec<String> = tables
            .iter()
            .filter(|entry| {
                !rows.iter().any(|r| {
                    glob_match(
                        entry,
                        &format!("{}.{}", r.get::<_, &str>(0), r.get::<_, &str>(1)),
                    )
                })
            })
            .cloned()
            .collect();
        let rows = client
            .query(
                "SELECT table_schema::text, table_name::text, column_name::text, \
                 is_nullable = 'YES' FROM information_schema.columns",
                &[],
            )
            .await
            .map_err(|e| sql_error("postgres source: reading column nullability", e))?;
        let domains = load_domains(client).await?;
        self.nullable = rows
            .iter()
            .map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3)))
            .collect();
        self.domains = domains;
        for entry in unmatched {
            if self.unmatched_warned.insert(entry.clone()) {
                tracing::warn!(
                    "postgres source: the `tables` entry {entry:?} matches no table (names are \
                     schema.table, case-sensitive); such a table is replicated once it exists \
                     (looked for at every start and every 10 s while streaming); fix the entry \
                     if it is a typo"
                );
            }
        }
        Ok(selected)
    }

    pub(crate) async fn ensure_publication(&mut self, tables: &[TableId]) -> Result<()> {
        let publication = self.cfg.publication.clone();
        let client = self.connect_sql().await?;
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1",
                &[&publication],
            )
            .await
            .map_err(|e| sql_error("postgres source: looking up the publication", e))?
            .is_some();
        if !exists {
            let list: Vec<String> = tables
                .iter()
                .map(|t| format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name)))
                .collect();
            let sql = format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                quote_ident(&publication),
                list.join(", ")
            );
            client.batch_execute(&sql).await.map_err(|e| {
                sql_error(
                    &format!("postgres source: creating publication {publication:?}"),
                    e,
                )
            })?;
            return Ok(());
        }
        // Tables that started matching `tables` since the publication was made join it.
        let rows = client
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_catalog.pg_publication_tables \
                 WHERE pubname = $1",
                &[&publication],
            )
            .await
            .map_err(|e| sql_error("postgres source: listing the publication's tables", e))?;
        let current: std::collections::HashSet<TableId> = rows
            .iter()
            .map(|r| TableId::new(r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect();
        let all_tables: bool = client
            .query_one(
                "SELECT puballtables FROM pg_catalog.pg_publication WHERE pubname = $1",
                &[&publication],
            )
            .await
            .map(|r| r.get(0))
            .map_err(|e| sql_error("postgres source: looking up the publication", e))?;
        let missing: Vec<&TableId> = tables.iter().filter(|t| !current.contains(t)).collect();
        if all_tables || missing.is_empty() {
            return Ok(());
        }
        for t in &missing {
            tracing::info!(
                table = %t,
                publication = %publication,
                "table now matches `tables`: adding it to the publication; its changes are \
                 captured from now on, and its existing rows backfilled (unless snapshot = \
                 \"never\")"
            );
        }
        let list: Vec<String> = missing
            .iter()
            .map(|t| format!("{}.{}", quote_ident(&t.schema), quote_ident(&t.name)))
            .collect();
        let sql = format!(
            "ALTER PUBLICATION {} ADD TABLE {}",
            quote_ident(&publication),
            list.join(", ")
        );
        client.batch_execute(&sql).await.map_err(|e| {
            sql_error(
                &format!("postgres source: adding tables to publication {publication:?}"),
                e,
            )
        })?;
        self.added.extend(missing.into_iter().cloned());
        Ok(())
    }

    async fn slot_exists(&mut self) -> Result<bool> {
        let slot = self.cfg.slot.clone();
        let client = self.connect_sql().await?;
        let row = client
            .query_opt(
                "SELECT wal_status::text FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| sql_error("postgres source: looking up the replication slot", e))?;
        match row {
            None => Ok(false),
            Some(r) if r.get::<_, Option<String>>(0).as_deref() == Some("lost") => {
                Err(ConnectorError::definite(format!(
                    "postgres source: replication slot {slot:?} is invalidated (wal_status = \
                     lost: PostgreSQL removed WAL it still needed, see max_slot_wal_keep_size); \
                     changes since the last acknowledged position are gone. Drop the slot, \
                     remove the pipeline's staging log directory and run again to re-snapshot"
                )))
            }
            Some(_) => Ok(true),
        }
    }

    /// The slot's confirmed position, creating the slot when missing.
    async fn ensure_slot(&mut self, url: &PgUrl) -> Result<Lsn> {
        let slot = self.cfg.slot.clone();
        let client = self.connect_sql().await?;
        let row = client
            .query_opt(
                "SELECT plugin::text, database::text, confirmed_flush_lsn::text \
                 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(|e| sql_error("postgres source: looking up the replication slot", e))?;
        if let Some(row) = row {
            let plugin: Option<String> = row.get(0);
            let database: Option<String> = row.get(1);
            if plugin.as_deref() != Some("pgoutput") || database.as_deref() != Some(&url.database) {
                return Err(ConnectorError::definite(format!(
                    "postgres source: replication slot {slot:?} exists but is not a pgoutput slot \
                     of database {:?} (plugin {plugin:?}, database {database:?}); choose another \
                     slot name or drop it",
                    url.database
                )));
            }
            let confirmed: Option<String> = row.get(2);
            return Ok(confirmed.as_deref().and_then(parse_lsn).unwrap_or(0));
        }
        let config = Self::repl_config(url);
        let mut repl = ReplicationClient::connect(&config)
            .await
            .map_err(|e| self.repl_error("connecting for replication", e))?;
        let created = repl
            .create_logical_slot(&slot, "pgoutput", SnapshotAction::NoExport, false)
            .await
            .map_err(|e| self.repl_error(&format!("creating replication slot {slot:?}"), e))?;
        let _ = repl.close().await;
        Ok(created.consistent_point)
    }

    fn stream_mut(&mut self) -> Result<&mut ReplicationStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| ConnectorError::definite("postgres source: next() before start()"))
    }

    fn relation(&mut self, rel: Relation) -> TableSchema {
        let table = TableId::new(rel.namespace.clone(), rel.name.clone());
        let columns = rel
            .columns
            .iter()
            .map(|c| {
                let (oid, typmod) = resolve_domain(&self.domains, c.type_oid, c.type_modifier);
                let (ty, source_type) = types::column_type(oid, typmod);
                let nullable = self
                    .nullable
                    .get(&(rel.namespace.clone(), rel.name.clone(), c.name.clone()))
                    .copied()
                    .unwrap_or(!c.is_key());
                Column {
                    name: c.name.clone(),
                    ty,
                    source_type,
                    nullable,
                }
            })
            .collect();
        let schema = TableSchema {
            table,
            version: 0,
            columns,
            primary_key: (0..rel.columns.len())
                .filter(|&i| rel.columns[i].is_key())
                .collect(),
        };
        self.relations.insert(
            rel.oid,
            Rel {
                schema: schema.clone(),
                type_oids: rel
                    .columns
                    .iter()
                    .map(|c| resolve_domain(&self.domains, c.type_oid, c.type_modifier).0)
                    .collect(),
                key: rel.columns.iter().map(|c| c.is_key()).collect(),
            },
        );
        schema
    }

    fn row(rel: &Rel, tuple: &[TupleValue], key_only: bool) -> Result<Row> {
        if tuple.len() != rel.type_oids.len() {
            return Err(ConnectorError::definite(format!(
                "postgres source: {} row has {} values for {} columns",
                rel.schema.table,
                tuple.len(),
                rel.type_oids.len()
            )));
        }
        tuple
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if key_only && !rel.key[i] {
                    return Ok(Value::Unchanged);
                }
                match v {
                    TupleValue::Null => Ok(Value::Null),
                    TupleValue::UnchangedToast => Ok(Value::Unchanged),
                    TupleValue::Text(t) => types::parse_text(rel.type_oids[i], t).map_err(|e| {
                        ConnectorError::definite_from(
                            format!(
                                "postgres source: {} column {}: {e}",
                                rel.schema.table, rel.schema.columns[i].name
                            ),
                            e,
                        )
                    }),
                    TupleValue::Binary(_) => Err(ConnectorError::definite(
                        "postgres source: binary tuple value on a text-mode stream",
                    )),
                }
            })
            .collect::<Result<Vec<_>>>()
            .map(Row)
    }

    fn old_row(rel: &Rel, old: &OldTuple) -> Result<Row> {
        match old {
            OldTuple::Key(t) => Self::row(rel, t, true),
            OldTuple::Full(t) => Self::row(rel, t, false),
        }
    }

    fn push_change(&mut self, event: ChangeEvent) {
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        txn.buffer.push(event);
        txn.events += 1;
        if txn.buffer.len() >= MAX_BUFFERED_CHANGES {
            txn.chunked = true;
            self.queue
                .push_back(SourceItem::Changes(std::mem::take(&mut txn.buffer)));
        }
    }

    fn change(
        &mut self,
        oid: u32,
        op: Op,
        before: Option<&OldTuple>,
        after: Option<&[TupleValue]>,
        lsn: Lsn,
    ) -> Result<()> {
        let Some(txn) = self.txn.as_ref() else {
            return Err(ConnectorError::definite(
                "postgres source: change outside a transaction",
            ));
        };
        let Some(rel) = self.relations.get(&oid) else {
            return Err(ConnectorError::definite(format!(
                "postgres source: change for relation {oid} before its Relation message"
            )));
        };
        let event = ChangeEvent {
            table: rel.schema.table.to_shared(),
            schema_version: 0,
            op,
            before: before.map(|o| Self::old_row(rel, o)).transpose()?,
            after: after.map(|t| Self::row(rel, t, false)).transpose()?,
            position: SourcePosition::Postgres(PgPosition {
                commit_lsn: ApiLsn(txn.commit_lsn),
                lsn: ApiLsn(lsn),
            }),
            txid: Some(u64::from(txn.xid)),
            ts_ms: txn.ts_ms,
        };
        self.push_change(event);
        Ok(())
    }

    fn handle(&mut self, event: ReplicationEvent) -> Result<()> {
        match event {
            ReplicationEvent::XLogData {
                start_lsn, data, ..
            } => {
                self.wal_seen = self.wal_seen.max(start_lsn);
                if let Some(xid) = self.in_stream {
                    // Inside a stream segment: keep everything but Stream Stop ('E') for the
                    // transaction's commit (decoded then, in commit order).
                    if data.first() == Some(&b'E') {
                        self.in_stream = None;
                        return Ok(());
                    }
                    return self.spill(xid, start_lsn, &data);
                }
                let message = self.decoder.decode(&data, false).map_err(|e| {
                    ConnectorError::definite_from(
                        format!(
                            "postgres source: undecodable pgoutput message at {}",
                            format_lsn(start_lsn)
                        ),
                        e,
                    )
                })?;
                match message {
                    PgOutputMessage::StreamStart(st) => {
                        self.in_stream = Some(st.xid);
                        Ok(())
                    }
                    PgOutputMessage::StreamCommit(c) => self.stream_commit(c),
                    PgOutputMessage::StreamAbort(a) => {
                        if a.subxid == a.xid {
                            if let Some(spill) = self.streams.remove(&a.xid) {
                                drop(spill.file);
                                let _ = std::fs::remove_file(&spill.path);
                            }
                        } else if let Some(spill) = self.streams.get_mut(&a.xid) {
                            spill.aborted.insert(a.subxid);
                        }
                        Ok(())
                    }
                    other => self.message(other, start_lsn),
                }
            }
            ReplicationEvent::Keepalive {
                wal_end,
                reply_requested,
                ..
            } => {
                if reply_requested {
                    self.reply_pending = true;
                }
                self.wal_seen = self.wal_seen.max(wal_end);
                let p = wal_end.saturating_sub(1);
                if self.txn.is_none() && wal_end > 0 && p >= self.last_boundary {
                    self.last_boundary = p;
                    self.queue
                        .push_back(SourceItem::Heartbeat(SourcePosition::Postgres(boundary(p))));
                }
                Ok(())
            }
            ReplicationEvent::End => {
                self.stream = None;
                Err(ConnectorError::transient(
                    "postgres source: the server ended the replication stream",
                ))
            }
        }
    }

    fn message(&mut self, message: PgOutputMessage, lsn: Lsn) -> Result<()> {
        match message {
            PgOutputMessage::Begin(b) => {
                self.txn = Some(Txn {
                    commit_lsn: b.final_lsn,
                    xid: b.xid,
                    ts_ms: pg_timestamp_to_unix_millis(b.commit_timestamp),
                    buffer: Vec::new(),
                    chunked: false,
                    events: 0,
                });
            }
            PgOutputMessage::Relation(rel) => {
                let known = self.relations.get(&rel.oid).map(|r| r.schema.clone());
                let schema = self.relation(rel);
                // Sent again after any cache invalidation; announce only real changes.
                if known.as_ref() == Some(&schema) {
                    return Ok(());
                }
                // Keep order with changes already buffered.
                if let Some(txn) = self.txn.as_mut()
                    && !txn.buffer.is_empty()
                {
                    txn.chunked = true;
                    self.queue
                        .push_back(SourceItem::Changes(std::mem::take(&mut txn.buffer)));
                }
                self.queue.push_back(SourceItem::Schema(schema));
            }
            PgOutputMessage::Insert(i) => {
                self.change(i.relation_oid, Op::Insert, None, Some(&i.new), lsn)?;
            }
            PgOutputMessage::Update(u) => {
                self.change(
                    u.relation_oid,
                    Op::Update,
                    u.old.as_ref(),
                    Some(&u.new),
                    lsn,
                )?;
            }
            PgOutputMessage::Delete(d) => {
                self.change(d.relation_oid, Op::Delete, Some(&d.old), None, lsn)?;
            }
            PgOutputMessage::Truncate(t) => {
                for oid in t.relation_oids {
                    self.change(oid, Op::Truncate, None, None, lsn)?;
                }
            }
            PgOutputMessage::Commit(c) => {
                let Some(mut txn) = self.txn.take() else {
                    return Err(ConnectorError::definite(
                        "postgres source: Commit without Begin",
                    ));
                };
                let position = SourcePosition::Postgres(boundary(c.commit_lsn));
                self.last_boundary = self.last_boundary.max(c.commit_lsn);
                if txn.events == 0 {
                    self.queue.push_back(SourceItem::Heartbeat(position));
                    return Ok(());
                }
                let commit = CommitInfo {
                    position,
                    txid: Some(u64::from(txn.xid)),
                    ts_ms: pg_timestamp_to_unix_millis(c.commit_timestamp),
                    events: txn.events,
                };
                if txn.chunked {
                    if !txn.buffer.is_empty() {
                        self.queue
                            .push_back(SourceItem::Changes(std::mem::take(&mut txn.buffer)));
                    }
                    self.queue.push_back(SourceItem::Commit(commit));
                } else {
                    self.queue.push_back(SourceItem::Transaction(Transaction {
                        changes: txn.buffer,
                        commit,
                    }));
                }
            }
            // Origins, types (unknown oids stay Value::Other) and logical messages: nothing
            // to stage.
            PgOutputMessage::Origin(_) | PgOutputMessage::Type(_) | PgOutputMessage::Message(_) => {
            }
            other => {
                return Err(ConnectorError::definite(format!(
                    "postgres source: unexpected pgoutput message (two-phase and parallel \
                     streaming are not requested): {other:?}"
                )));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Source for PostgresSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            connector: "postgres".into(),
            name: self.pipeline.clone(),
            db: self
                .url
                .as_ref()
                .map(|u| u.database.clone())
                .unwrap_or_default(),
        }
    }

    async fn start(&mut self, resume: Option<SourcePosition>) -> Result<()> {
        let resume_lsn = resume.as_ref().map(lsn_of).transpose()?.map(confirm_lsn);
        let url = self.url()?;
        if let Some(old) = self.stream.take() {
            let _ = old.close().await;
        }
        self.txn = None;
        self.queue.clear();
        self.relations.clear();
        self.reply_pending = false;
        self.drop_streams();
        remove_stale_spill_dirs();
        let tables = self.resolve_tables().await?;
        self.ensure_publication(&tables).await?;
        self.watched = tables;
        self.gone = None;
        self.wal_seen = 0;
        self.next_check = std::time::Instant::now() + FIRST_CHECK_AFTER;
        if resume_lsn.is_some() && !self.slot_exists().await? {
            return Err(ConnectorError::definite(format!(
                "postgres source: replication slot {:?} does not exist any more (dropped, or \
                 invalidated and removed), so the changes committed since the last \
                 acknowledged position are lost to it; to start over with a fresh snapshot, \
                 stop weir, remove the pipeline's staging log directory and the sinks' targets \
                 (or point them elsewhere), and run again",
                self.cfg.slot
            )));
        }
        let slot_confirmed = self.ensure_slot(&url).await?;
        let start = resume_lsn.unwrap_or(0);
        let config = Self::repl_config(&url);
        let client = ReplicationClient::connect(&config)
            .await
            .map_err(|e| self.repl_error("connecting for replication", e))?;
        let publications = quote_ident(&self.cfg.publication);
        self.proto = proto_for_server(client.server_param("server_version").unwrap_or(""));
        self.decoder = Decoder::new(self.proto)
            .map_err(|e| ConnectorError::definite_from("postgres source: pgoutput protocol", e))?;
        let proto = self.proto.to_string();
        let mut options = vec![
            ("proto_version", proto.as_str()),
            ("publication_names", publications.as_str()),
        ];
        if self.proto >= 2 {
            // Large transactions arrive while still in progress (spilled here, not on the
            // server) instead of after PostgreSQL decoded them whole.
            options.push(("streaming", "on"));
            // Logical messages (PostgreSQL 14+): a backfill writes one so the stream shows
            // promptly that it passed the backfill's consistent point.
            options.push(("messages", "true"));
        }
        let stream = client
            .start_logical_replication(&self.cfg.slot, start, &options)
            .await
            .map_err(|e| self.repl_error("START_REPLICATION", e))?;
        self.stream = Some(stream);
        // Never confirm less than the slot already has (PostgreSQL 15 would move back).
        self.confirmed = start.max(slot_confirmed);
        self.last_boundary = self.confirmed.saturating_sub(1);
        Ok(())
    }

    async fn end_position(&mut self) -> Result<SourcePosition> {
        let client = self.connect_sql().await?;
        let row = client
            .query_one("SELECT pg_catalog.pg_current_wal_flush_lsn()::text", &[])
            .await
            .map_err(|e| sql_error("postgres source: reading the WAL flush position", e))?;
        let text: String = row.get(0);
        let lsn = parse_lsn(&text).ok_or_else(|| {
            ConnectorError::definite(format!("postgres source: bad LSN {text:?} from server"))
        })?;
        Ok(SourcePosition::Postgres(boundary(lsn.saturating_sub(1))))
    }

    async fn next(&mut self) -> Result<SourceItem> {
        loop {
            if self.reply_pending {
                let confirmed = self.confirmed;
                let stream = self.stream_mut()?;
                let sent = stream.send_status(confirmed, false).await;
                sent.map_err(|e| self.repl_error("answering a keepalive", e))?;
                self.reply_pending = false;
            }
            if let Some(item) = self.queue.pop_front() {
                return Ok(item);
            }
            if let Some((message, at)) = &self.gone
                && self.wal_seen >= *at
                && self.txn.is_none()
                && self.replay.is_none()
            {
                return Err(ConnectorError::definite(message.clone()));
            }
            if self.replay.is_some() {
                // A long replay reads no network: keep the server from timing us out.
                if self.last_status.elapsed() >= STATUS_EVERY {
                    self.reply_pending = true;
                    self.last_status = std::time::Instant::now();
                }
                let t = std::time::Instant::now();
                self.replay_step()?;
                self.decode += t.elapsed();
                continue;
            }
            if self.gone.is_none() && std::time::Instant::now() >= self.next_check {
                // Cancel-safe: nothing changes until the check has its answer.
                self.check_tables().await?;
                self.next_check = std::time::Instant::now() + TABLE_CHECK_EVERY;
                continue;
            }
            let check_at = tokio::time::Instant::from_std(self.next_check);
            let checking = self.gone.is_none();
            let event = tokio::select! {
                event = self.stream_mut()?.next() => event,
                () = tokio::time::sleep_until(check_at), if checking => continue,
            };
            let event = event.map_err(|e| self.repl_error("reading the replication stream", e))?;
            let t = std::time::Instant::now();
            self.handle(event)?;
            self.decode += t.elapsed();
        }
    }

    fn added_tables(&mut self) -> Vec<TableId> {
        std::mem::take(&mut self.added)
    }

    fn decode_time(&mut self) -> std::time::Duration {
        std::mem::take(&mut self.decode)
    }

    fn retained_bytes(&self) -> Option<u64> {
        self.retained
    }

    async fn keepalive(&mut self) -> Result<()> {
        if self.last_status.elapsed() < STATUS_EVERY {
            return Ok(());
        }
        self.last_status = std::time::Instant::now();
        let confirmed = self.confirmed;
        let stream = self.stream_mut()?;
        let sent = stream.send_status(confirmed, false).await;
        sent.map_err(|e| self.repl_error("sending a status update while paused", e))
    }

    async fn ack(&mut self, position: &SourcePosition) -> Result<()> {
        let lsn = confirm_lsn(lsn_of(position)?);
        if lsn <= self.confirmed {
            return Ok(());
        }
        let stream = self.stream_mut()?;
        let sent = stream.send_status(lsn, false).await;
        sent.map_err(|e| self.repl_error("acknowledging", e))?;
        self.confirmed = lsn;
        self.last_status = std::time::Instant::now();
        Ok(())
    }
}

impl Drop for PostgresSource {
    fn drop(&mut self) {
        self.drop_streams();
        // Only when empty: another source in this process may still spill there.
        let _ = std::fs::remove_dir(spill_dir());
    }
}

/// Removes spill directories left by weir processes that no longer run (killed ones).
fn remove_stale_spill_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("weir-pg-stream-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u =
            parse_url("postgres://us%40er:p%3Ass@db.example:6543/my%20db?sslmode=disable").unwrap();
        assert_eq!(
            (u.user.as_str(), u.password.as_deref(), u.host.as_str()),
            ("us@er", Some("p:ss"), "db.example")
        );
        assert_eq!((u.port, u.database.as_str()), (6543, "my db"));
        let u = parse_url("postgresql://bob@[::1]/").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.database.as_str()),
            ("::1", 5432, "bob")
        );
        assert!(parse_url("mysql://a@b/c").is_err());
        assert!(parse_url("postgres://host/db").is_err());
        assert!(parse_url("postgres://a:%zz@h/d").is_err());
        assert!(!format!("{:?}", parse_url("postgres://a:secret@h/d").unwrap()).contains("secret"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("public.*", "public.orders"));
        assert!(!glob_match("public.*", "sales.orders"));
        assert!(glob_match("*.ord?rs", "x.orders"));
        assert!(!glob_match("*.ord?rs", "x.ordrs"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYbc"));
        assert!(!glob_match("a*b", "aXbY"));
    }

    #[test]
    fn quoting_and_confirm_lsns() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(confirm_lsn(boundary(100)), 101);
        let mid = PgPosition {
            commit_lsn: ApiLsn(100),
            lsn: ApiLsn(40),
        };
        assert_eq!(confirm_lsn(mid), 100);
    }
}
