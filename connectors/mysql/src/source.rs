//! The streaming MySQL / MariaDB source: a replica connection reading the binlog with
//! `mysql_async` (feature `binlog`), turned into [`SourceItem`]s by a background task.
//!
//! See the crate docs for positions, GTIDs, schema tracking and the decisions behind them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use mysql_async::binlog::events::{
    Event, GtidEvent, OptionalMetaExtractor, OptionalMetadataField, RotateEvent, TableMapEvent,
    XidEvent,
};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, GnoInterval, Sid};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use weir_api::{
    ChangeEvent, Column, CommitInfo, ConnectorError, GtidSet, MariaDbGtid, MariaDbGtidList,
    MysqlPosition, Op, Result, Row, Source, SourceInfo, SourceItem, SourcePosition, TableId,
    TableSchema, Transaction, Value,
};

use crate::config::{MysqlSourceConfig, opts, redact_text, redact_url};
use crate::decode::{self, Charset, DecodeError, Kind, RawColumn, Reader, ty};
use crate::gtid::{self, MysqlGtids};
use crate::snapshot;

/// Changes buffered before a transaction is handed on in chunks.
pub const CHUNK_ROWS: usize = 1024;
/// Items the reader task may run ahead of the engine (bounded memory: at most this many
/// chunks of [`CHUNK_ROWS`] changes in flight).
const CHANNEL_ITEMS: usize = 8;
/// How often an idle server sends a heartbeat event.
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);
/// How long `start` waits for the server to accept the binlog request.
const START_TIMEOUT: Duration = Duration::from_secs(30);

// Binlog event type codes.
const QUERY: u8 = 2;
const ROTATE: u8 = 4;
const FORMAT_DESCRIPTION: u8 = 15;
const XID: u8 = 16;
const TABLE_MAP: u8 = 19;
const WRITE_V1: u8 = 23;
const UPDATE_V1: u8 = 24;
const DELETE_V1: u8 = 25;
const INCIDENT: u8 = 26;
const HEARTBEAT: u8 = 27;
const WRITE_V2: u8 = 30;
const UPDATE_V2: u8 = 31;
const DELETE_V2: u8 = 32;
const MYSQL_GTID: u8 = 33;
const MYSQL_GTID_TAGGED: u8 = 42;
const PARTIAL_UPDATE: u8 = 39;
const TRANSACTION_PAYLOAD: u8 = 40;
const MARIADB_GTID: u8 = 162;
const MARIADB_GTID_LIST: u8 = 163;
const MARIADB_QUERY_COMPRESSED: u8 = 165;
const MARIADB_ROWS_COMPRESSED_LAST: u8 = 171;

/// Facts about the server, read once per `start`.
#[derive(Debug, Clone)]
struct ServerFacts {
    mariadb: bool,
    /// Collation id → character set.
    collations: Arc<HashMap<u16, Charset>>,
    /// MySQL `gtid_mode` is ON.
    mysql_gtids: bool,
    /// `binlog_checksum` is not NONE (events carry a 4-byte CRC32).
    checksum: bool,
}

/// The GTID state the stream is at.
#[derive(Debug, Clone, PartialEq)]
enum GtidState {
    Unknown,
    MariaDb(MariaDbGtidList),
    Mysql(MysqlGtids),
}

impl GtidState {
    fn api(&self) -> Option<GtidSet> {
        match self {
            GtidState::Unknown => None,
            GtidState::MariaDb(l) => Some(GtidSet::MariaDb(l.clone())),
            GtidState::Mysql(s) => Some(GtidSet::Mysql(s.to_api())),
        }
    }
}

/// Where the binlog request starts.
#[derive(Debug, Clone)]
enum StartAt {
    File { file: String, pos: u64 },
    MariaDbGtid(MariaDbGtidList),
    MysqlGtid(MysqlGtids),
}

impl std::fmt::Display for StartAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartAt::File { file, pos } => write!(f, "binlog {file} at position {pos}"),
            StartAt::MariaDbGtid(l) => write!(f, "GTID position {l}"),
            StartAt::MysqlGtid(s) => write!(f, "GTID set {s}"),
        }
    }
}

/// Streams changes from a MySQL or MariaDB binlog.
pub struct MysqlSource {
    cfg: MysqlSourceConfig,
    pipeline: String,
    server_id: u32,
    rx: Option<mpsc::Receiver<Result<SourceItem>>>,
    task: Option<JoinHandle<()>>,
    sql: Option<Conn>,
    facts: Option<ServerFacts>,
    /// Nanoseconds the binlog reader spent decoding (not waiting to hand items on).
    decode_nanos: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for MysqlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlSource")
            .field("pipeline", &self.pipeline)
            .field("server_id", &self.server_id)
            .field("url", &redact_url(&self.cfg.url))
            .finish_non_exhaustive()
    }
}

impl Drop for MysqlSource {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Maps a driver error to a connector error (transient unless retrying cannot help).
pub(crate) fn my_error(context: &str, url: &str, e: mysql_async::Error) -> ConnectorError {
    let text = redact_text(&e.to_string(), url);
    let message = format!("mysql source: {context}: {text}");
    match &e {
        mysql_async::Error::Server(s) => {
            // Access denied, unknown database, bad syntax and the like cannot heal.
            const TRANSIENT: &[u16] = &[
                1040, 1053, 1077, 1078, 1079, 1080, 1152, 1153, 1154, 1155, 1156, 1157, 1158, 1159,
                1160, 1161, 1184, 1205, 1213, 1317, 1927, 2006, 2013, 4031,
                // Another replica registered with our server_id (often weir's own stale
                // connection after a network failure): retry.
                4052,
            ];
            if TRANSIENT.contains(&s.code) {
                ConnectorError::transient(message)
            } else {
                ConnectorError::definite(message)
            }
        }
        mysql_async::Error::Url(_) => ConnectorError::definite(message),
        _ => ConnectorError::transient(message),
    }
}

fn position_of(pos: &SourcePosition) -> Result<&MysqlPosition> {
    match pos {
        SourcePosition::Mysql(p) => Ok(p),
        other => Err(ConnectorError::definite(format!(
            "the staging log holds a position of another source ({other}); this pipeline's \
             source is mysql: reset the pipeline's staging log or use a new pipeline name"
        ))),
    }
}

impl MysqlSource {
    /// A source for `pipeline_name`; nothing connects before [`Source::start`]. The replica
    /// server id is `cfg.server_id` or [`crate::default_server_id`] of the pipeline name.
    pub fn new(cfg: MysqlSourceConfig, pipeline_name: &str) -> Self {
        let server_id = cfg.effective_server_id(pipeline_name);
        MysqlSource {
            cfg,
            pipeline: pipeline_name.to_owned(),
            server_id,
            rx: None,
            task: None,
            sql: None,
            facts: None,
            decode_nanos: Arc::default(),
        }
    }

    /// The replica server id this source registers with.
    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    async fn connect(&self) -> Result<Conn> {
        let o = opts(&self.cfg.url)
            .map_err(|e| ConnectorError::definite(format!("mysql source: {e}")))?;
        let what = format!("connecting to {}:{}", o.ip_or_hostname(), o.tcp_port());
        match tokio::time::timeout(Duration::from_secs(15), Conn::new(o)).await {
            Ok(r) => r.map_err(|e| my_error(&what, &self.cfg.url, e)),
            Err(_) => Err(ConnectorError::transient(format!(
                "mysql source: {what}: timed out after 15 s"
            ))),
        }
    }

    async fn sql(&mut self) -> Result<&mut Conn> {
        if self.sql.is_none() {
            self.sql = Some(self.connect().await?);
        }
        Ok(self.sql.as_mut().expect("connected above"))
    }

    async fn facts(&mut self) -> Result<ServerFacts> {
        if let Some(f) = &self.facts {
            return Ok(f.clone());
        }
        let url = self.cfg.url.clone();
        let conn = self.sql().await?;
        let version: Option<String> = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| my_error("reading the server version", &url, e))?;
        let mariadb = version
            .unwrap_or_default()
            .to_ascii_lowercase()
            .contains("mariadb");
        let rows: Vec<(Option<u64>, Option<String>)> = conn
            .query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS")
            .await
            .map_err(|e| my_error("reading the collations", &url, e))?;
        let mut collations = HashMap::new();
        for (id, cs) in rows {
            if let (Some(id), Some(cs)) = (id, cs)
                && let Ok(id) = u16::try_from(id)
            {
                collations.insert(id, Charset::from_name(&cs));
            }
        }
        let mysql_gtids = if mariadb {
            false
        } else {
            let mode: Option<String> = conn
                .query_first("SELECT @@GLOBAL.gtid_mode")
                .await
                .map_err(|e| my_error("reading gtid_mode", &url, e))?;
            mode.is_some_and(|m| m.eq_ignore_ascii_case("ON"))
        };
        let checksum: Option<String> = conn
            .query_first("SELECT @@GLOBAL.binlog_checksum")
            .await
            .map_err(|e| my_error("reading binlog_checksum", &url, e))?;
        let checksum = checksum.is_some_and(|c| !c.eq_ignore_ascii_case("NONE"));
        let f = ServerFacts {
            checksum,
            mariadb,
            collations: Arc::new(collations),
            mysql_gtids,
        };
        self.facts = Some(f.clone());
        Ok(f)
    }

    /// The server's current binlog file and position and its GTID state.
    async fn current(&mut self) -> Result<(String, u64, GtidState)> {
        let facts = self.facts().await?;
        let url = self.cfg.url.clone();
        let conn = self.sql().await?;
        let row: Option<mysql_async::Row> = match conn.query_first("SHOW MASTER STATUS").await {
            Ok(r) => r,
            // MySQL 8.4 renamed it.
            Err(mysql_async::Error::Server(_)) if !facts.mariadb => conn
                .query_first("SHOW BINARY LOG STATUS")
                .await
                .map_err(|e| my_error("SHOW BINARY LOG STATUS", &url, e))?,
            Err(e) => return Err(my_error("SHOW MASTER STATUS", &url, e)),
        };
        let Some(row) = row else {
            return Err(ConnectorError::definite(
                "mysql source: SHOW MASTER STATUS returned nothing: the binary log is off; \
                 enable it (log_bin, binlog_format=ROW) and restart the server",
            ));
        };
        let file: Option<String> = row.get(0);
        let pos: Option<u64> = row.get(1);
        let (Some(file), Some(pos)) = (file, pos) else {
            return Err(ConnectorError::definite(
                "mysql source: SHOW MASTER STATUS has no File/Position",
            ));
        };
        let gtid = if facts.mariadb {
            let text: Option<String> = conn
                .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
                .await
                .map_err(|e| my_error("reading gtid_binlog_pos", &url, e))?;
            GtidState::MariaDb(
                gtid::parse_mariadb(&text.unwrap_or_default())
                    .map_err(|e| ConnectorError::definite(format!("mysql source: {e}")))?,
            )
        } else if facts.mysql_gtids {
            let text: Option<String> = row.get(4);
            GtidState::Mysql(
                MysqlGtids::parse(&text.unwrap_or_default())
                    .map_err(|e| ConnectorError::definite(format!("mysql source: {e}")))?,
            )
        } else {
            GtidState::Unknown
        };
        Ok((file, pos, gtid))
    }
}

#[async_trait]
impl Source for MysqlSource {
    fn info(&self) -> SourceInfo {
        let db = opts(&self.cfg.url)
            .ok()
            .and_then(|o| o.db_name().map(str::to_owned))
            .unwrap_or_default();
        SourceInfo {
            connector: "mysql".into(),
            name: self.pipeline.clone(),
            db,
        }
    }

    async fn start(&mut self, resume: Option<SourcePosition>) -> Result<()> {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.rx = None;
        self.sql = None;
        self.facts = None;
        let facts = self.facts().await?;
        let (start, gtid, floor) = match &resume {
            Some(p) => {
                let p = position_of(p)?;
                let floor = Some((p.file.clone(), p.pos));
                match &p.gtid {
                    Some(GtidSet::MariaDb(l)) if facts.mariadb && !l.0.is_empty() => (
                        StartAt::MariaDbGtid(l.clone()),
                        GtidState::MariaDb(l.clone()),
                        floor,
                    ),
                    Some(GtidSet::Mysql(s)) if !facts.mariadb && facts.mysql_gtids => {
                        let set = MysqlGtids::parse(&s.0).map_err(|e| {
                            ConnectorError::definite(format!(
                                "mysql source: the resume position has a bad GTID set: {e}"
                            ))
                        })?;
                        if set.is_empty() {
                            (
                                StartAt::File {
                                    file: p.file.clone(),
                                    pos: p.pos,
                                },
                                GtidState::Mysql(set),
                                floor,
                            )
                        } else {
                            (
                                StartAt::MysqlGtid(set.clone()),
                                GtidState::Mysql(set),
                                floor,
                            )
                        }
                    }
                    other => (
                        StartAt::File {
                            file: p.file.clone(),
                            pos: p.pos,
                        },
                        match other {
                            Some(GtidSet::MariaDb(l)) if facts.mariadb => {
                                GtidState::MariaDb(l.clone())
                            }
                            _ => GtidState::Unknown,
                        },
                        floor,
                    ),
                }
            }
            None => {
                let (file, pos, gtid) = self.current().await?;
                let start = match &gtid {
                    GtidState::MariaDb(l) if !l.0.is_empty() => StartAt::MariaDbGtid(l.clone()),
                    GtidState::Mysql(s) if !s.is_empty() => StartAt::MysqlGtid(s.clone()),
                    _ => StartAt::File {
                        file: file.clone(),
                        pos,
                    },
                };
                (start, gtid, Some((file, pos)))
            }
        };

        let mut conn = self.connect().await?;
        let url = self.cfg.url.clone();
        let mut setup = vec![format!(
            "SET @master_heartbeat_period = {}",
            HEARTBEAT_PERIOD.as_nanos()
        )];
        if facts.mariadb {
            // Without the capability MariaDB sends its GTID events as dummy events.
            setup.push("SET @mariadb_slave_capability = 4".into());
            if let StartAt::MariaDbGtid(l) = &start {
                setup.push(format!("SET @slave_connect_state = '{l}'"));
                setup.push("SET @slave_gtid_strict_mode = 1".into());
                setup.push("SET @slave_gtid_ignore_duplicates = 0".into());
            }
        }
        for q in &setup {
            conn.query_drop(q.as_str())
                .await
                .map_err(|e| my_error(&format!("preparing the replica session ({q})"), &url, e))?;
        }
        let hostname = format!("weir-{}", self.pipeline);
        let mut request =
            BinlogStreamRequest::new(self.server_id).with_hostname(hostname.as_bytes());
        let file_bytes;
        let sids: Vec<Sid<'static>>;
        match &start {
            StartAt::File { file, pos } => {
                file_bytes = file.clone().into_bytes();
                request = request.with_filename(&file_bytes).with_pos(*pos);
            }
            StartAt::MariaDbGtid(_) => {
                // MariaDB takes the position from @slave_connect_state.
                request = request.with_pos(4);
            }
            StartAt::MysqlGtid(set) => {
                sids = set
                    .iter()
                    .filter_map(|(uuid, ivs)| {
                        let b = gtid::uuid_bytes(uuid)?;
                        Some(
                            Sid::new(b).with_intervals(
                                ivs.iter()
                                    .map(|&(a, e)| GnoInterval::new(a, e.saturating_add(1)))
                                    .collect(),
                            ),
                        )
                    })
                    .collect();
                request = request.with_gtid().with_gtid_set(sids.iter().cloned());
            }
        }
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| start_error(&start, &url, e))?;

        let meta = self.connect().await?;
        let (tx, rx) = mpsc::channel(CHANNEL_ITEMS);
        let (started_tx, started_rx) = oneshot::channel();
        let mut reader = StreamReader {
            decode_nanos: self.decode_nanos.clone(),
            send_wait: std::time::Duration::ZERO,
            cfg: self.cfg.clone(),
            facts,
            tx,
            meta,
            file: match &start {
                StartAt::File { file, .. } => file.clone(),
                _ => String::new(),
            },
            gtid,
            tables: HashMap::new(),
            info_cache: HashMap::new(),
            announced: HashMap::new(),
            txn: None,
            pending_gtid: None,
            floor,
            start: start.clone(),
            fde_seen: false,
            at_file_start: false,
        };
        self.task = Some(tokio::spawn(async move {
            reader.run(stream, started_tx).await;
        }));
        self.rx = Some(rx);
        match tokio::time::timeout(START_TIMEOUT, started_rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(ConnectorError::transient(
                "mysql source: the binlog reader stopped while starting",
            )),
            Err(_) => Err(ConnectorError::transient(format!(
                "mysql source: the server sent nothing within {} s of the binlog request",
                START_TIMEOUT.as_secs()
            ))),
        }
    }

    async fn end_position(&mut self) -> Result<SourcePosition> {
        let (file, pos, gtid) = self.current().await?;
        Ok(SourcePosition::Mysql(MysqlPosition {
            file,
            pos,
            gtid: gtid.api(),
            server_id: None,
        }))
    }

    async fn next(&mut self) -> Result<SourceItem> {
        let Some(rx) = self.rx.as_mut() else {
            return Err(ConnectorError::transient(
                "mysql source: next() before start()",
            ));
        };
        // Cancel-safe: recv() loses nothing when dropped.
        match rx.recv().await {
            Some(item) => item,
            None => {
                self.rx = None;
                Err(ConnectorError::transient(
                    "mysql source: the binlog reader stopped",
                ))
            }
        }
    }

    fn decode_time(&mut self) -> std::time::Duration {
        std::time::Duration::from_nanos(
            self.decode_nanos
                .swap(0, std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// MySQL and MariaDB keep binlogs by time or size (`binlog_expire_logs_seconds`,
    /// `expire_logs_days`, `max_binlog_total_size`), not by replica progress, so there is
    /// nothing to release: a no-op.
    async fn ack(&mut self, _position: &SourcePosition) -> Result<()> {
        Ok(())
    }
}

fn start_error(start: &StartAt, url: &str, e: mysql_async::Error) -> ConnectorError {
    if let mysql_async::Error::Server(s) = &e
        && s.code == 1236
    {
        return purged_error(start, &s.message);
    }
    my_error(&format!("requesting the binlog from {start}"), url, e)
}

fn purged_error(start: &StartAt, server_message: &str) -> ConnectorError {
    let what = match start {
        StartAt::File { file, pos } => format!(
            "binlog {file} (position {pos}) is not on the server any more (purged, or the \
             server's binlogs were reset)"
        ),
        StartAt::MariaDbGtid(l) => format!(
            "the binlog holding GTID position {l} is not on the server any more (purged), \
             or the server never had it (GTID gap)"
        ),
        StartAt::MysqlGtid(s) => format!(
            "the binlog with the transactions after GTID set {s} is not on the server any \
             more (purged), or the server never had them (GTID gap)"
        ),
    };
    ConnectorError::definite(format!(
        "mysql source: {what}, so the changes after weir's last staged position are lost \
         (server: error 1236: {server_message}); recover by re-snapshotting: remove the \
         pipeline's staging log (<data_dir>/<name>) and run again with snapshot = \"initial\""
    ))
}

/// One table's decoder, built from a TABLE_MAP.
#[derive(Debug)]
struct TableDecoder {
    schema: TableSchema,
    kinds: Vec<Kind>,
}

/// What information_schema says about a table's columns (current definition).
#[derive(Debug, Clone, Default)]
struct InfoColumns {
    names: Vec<String>,
    unsigned: Vec<bool>,
    charsets: Vec<Option<Charset>>,
    labels: Vec<Vec<String>>,
    key: Vec<usize>,
    json: Vec<bool>,
}

struct Txn {
    ts_ms: i64,
    buffer: Vec<ChangeEvent>,
    chunked: bool,
    events: u64,
    txid: Option<u64>,
    /// Inside BEGIN ... COMMIT.
    begun: bool,
}

enum Pending {
    MariaDb(MariaDbGtid),
    Mysql(String, u64),
}

struct StreamReader {
    cfg: MysqlSourceConfig,
    facts: ServerFacts,
    tx: mpsc::Sender<Result<SourceItem>>,
    meta: Conn,
    file: String,
    gtid: GtidState,
    /// table id → (raw TABLE_MAP bytes, decoder; None when the table is not selected).
    tables: HashMap<u64, (Vec<u8>, Option<Arc<TableDecoder>>)>,
    info_cache: HashMap<(String, String), Arc<InfoColumns>>,
    announced: HashMap<TableId, TableSchema>,
    txn: Option<Txn>,
    pending_gtid: Option<Pending>,
    /// The last boundary position handed out (heartbeats never go below it).
    floor: Option<(String, u64)>,
    start: StartAt,
    fde_seen: bool,
    /// The stream is at the start of a binlog file (its GTID_LIST is the state here).
    at_file_start: bool,
    /// Decoding time, shared with the source (the `decode` stage).
    decode_nanos: Arc<std::sync::atomic::AtomicU64>,
    /// Time the current event spent waiting to hand items on (not decoding).
    send_wait: std::time::Duration,
}

/// The reader stops: the receiver is gone.
struct Closed;

impl StreamReader {
    async fn run(
        &mut self,
        mut stream: mysql_async::BinlogStream,
        started: oneshot::Sender<Result<()>>,
    ) {
        let mut started = Some(started);
        loop {
            let next = stream.next().await;
            let result = match next {
                Some(Ok(event)) => {
                    if let Some(s) = started.take() {
                        let _ = s.send(Ok(()));
                    }
                    let t = std::time::Instant::now();
                    self.send_wait = std::time::Duration::ZERO;
                    let result = self.event(&event).await;
                    let spent = t.elapsed().saturating_sub(self.send_wait);
                    self.decode_nanos.fetch_add(
                        spent.as_nanos() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    match result {
                        Ok(()) => continue,
                        Err(Ok(Closed)) => return,
                        Err(Err(e)) => e,
                    }
                }
                Some(Err(e)) => match &e {
                    mysql_async::Error::Server(s) if s.code == 1236 => {
                        purged_error(&self.start, &s.message)
                    }
                    _ => my_error("reading the binlog stream", &self.cfg.url, e),
                },
                None => ConnectorError::transient(
                    "mysql source: the server ended the binlog stream (restart or shutdown)",
                ),
            };
            match started.take() {
                Some(s) => {
                    let _ = s.send(Err(result));
                }
                None => {
                    let _ = self.tx.send(Err(result)).await;
                }
            }
            return;
        }
    }

    async fn send(&mut self, item: SourceItem) -> std::result::Result<(), Closed> {
        let t = std::time::Instant::now();
        let sent = self.tx.send(Ok(item)).await.map_err(|_| Closed);
        self.send_wait += t.elapsed();
        sent
    }

    fn position(&self, pos: u64, server_id: Option<u32>) -> MysqlPosition {
        MysqlPosition {
            file: self.file.clone(),
            pos,
            gtid: self.gtid.api(),
            server_id,
        }
    }

    fn bad(&self, what: impl std::fmt::Display, log_pos: u64) -> ConnectorError {
        ConnectorError::definite(format!(
            "mysql source: {what} (binlog {} before position {log_pos}); this is a bug or an \
             unsupported server feature: please report it with the binlog (mysqlbinlog -vv)",
            self.file
        ))
    }

    async fn event(
        &mut self,
        event: &Event,
    ) -> std::result::Result<(), std::result::Result<Closed, ConnectorError>> {
        let h = event.header();
        let t = h.event_type_raw();
        let log_pos = u64::from(h.log_pos());
        let server_id = h.server_id();
        let ts_ms = i64::from(h.timestamp()) * 1000;
        let e = |x: ConnectorError| -> std::result::Result<(), std::result::Result<Closed, ConnectorError>> {
            Err(Err(x))
        };
        match t {
            ROTATE => {
                let r: RotateEvent<'_> = event
                    .read_event()
                    .map_err(|x| Err(self.bad(format!("bad ROTATE event: {x}"), log_pos)))?;
                let mut name = r.name_raw().to_vec();
                // The rotate that opens a stream comes before the FORMAT_DESCRIPTION that
                // tells the reader about checksums, so its CRC32 is still in the name.
                if !self.fde_seen && self.facts.checksum && name.len() > 4 {
                    name.truncate(name.len() - 4);
                }
                // A real rotate (log_pos != 0) leads to the start of the next file; the
                // fake one opening the stream points where the stream starts.
                self.at_file_start = log_pos != 0 || r.position() <= 4;
                self.file = String::from_utf8(name).map_err(|_| {
                    Err(self.bad(
                        "a ROTATE event with a binlog name that is not UTF-8",
                        log_pos,
                    ))
                })?;
            }
            // The body names the binlog file, but may carry the checksum too; the file is
            // known from the ROTATE that starts every stream. Inside a transaction a
            // heartbeat is not a boundary.
            HEARTBEAT if self.txn.is_none() && log_pos > 0 && !self.file.is_empty() => {
                self.heartbeat(log_pos, server_id).await.map_err(Ok)?;
            }
            MARIADB_GTID => {
                let (seq, domain, flags) = gtid::parse_mariadb_gtid_event(event.data())
                    .map_err(|x| Err(self.bad(x, log_pos)))?;
                self.pending_gtid = Some(Pending::MariaDb(MariaDbGtid {
                    domain,
                    server: server_id,
                    seq,
                }));
                self.txn = Some(Txn {
                    ts_ms,
                    buffer: Vec::new(),
                    chunked: false,
                    events: 0,
                    txid: Some(seq),
                    begun: flags & gtid::FL_STANDALONE == 0,
                });
            }
            // The binlog state at the start of a file: where the state is not known yet
            // (resumed by file and position), it is from here on — but only at a file's
            // start, never when the stream began in the middle of the file.
            MARIADB_GTID_LIST
                if self.gtid == GtidState::Unknown && self.facts.mariadb && self.at_file_start =>
            {
                let l = gtid::parse_mariadb_gtid_list(event.data())
                    .map_err(|x| Err(self.bad(x, log_pos)))?;
                self.gtid = GtidState::MariaDb(l);
            }
            MARIADB_QUERY_COMPRESSED..=MARIADB_ROWS_COMPRESSED_LAST => {
                return e(ConnectorError::definite(
                    "mysql source: the server writes compressed binlog events \
                     (log_bin_compress=ON), which weir cannot read yet; set \
                     log_bin_compress=OFF (SET GLOBAL log_bin_compress=OFF) and re-snapshot",
                ));
            }
            MYSQL_GTID | MYSQL_GTID_TAGGED => {
                let g: GtidEvent = event
                    .read_event()
                    .map_err(|x| Err(self.bad(format!("bad GTID event: {x}"), log_pos)))?;
                let uuid = gtid::uuid_text(&g.sid());
                self.pending_gtid = Some(Pending::Mysql(uuid, g.gno()));
                self.txn = Some(Txn {
                    ts_ms,
                    buffer: Vec::new(),
                    chunked: false,
                    events: 0,
                    txid: Some(g.gno()),
                    begun: false,
                });
            }
            QUERY => {
                let q: mysql_async::binlog::events::QueryEvent<'_> = event
                    .read_event()
                    .map_err(|x| Err(self.bad(format!("bad QUERY event: {x}"), log_pos)))?;
                let query = q.query().trim().to_owned();
                let schema = q.schema().into_owned();
                let upper = query
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                match upper.as_str() {
                    "BEGIN" => {
                        let txn = self.txn.get_or_insert_with(|| Txn {
                            ts_ms,
                            buffer: Vec::new(),
                            chunked: false,
                            events: 0,
                            txid: None,
                            begun: true,
                        });
                        txn.begun = true;
                    }
                    "COMMIT" | "ROLLBACK" if query.len() <= 8 => {
                        // ROLLBACK ends a transaction whose non-transactional changes stay.
                        self.commit(log_pos, server_id, None).await?;
                    }
                    _ => {
                        let in_txn = self.txn.as_ref().is_some_and(|t| t.begun);
                        // Any DDL may change a table: forget what information_schema said.
                        self.info_cache.clear();
                        if self.txn.is_none() {
                            self.txn = Some(Txn {
                                ts_ms,
                                buffer: Vec::new(),
                                chunked: false,
                                events: 0,
                                txid: None,
                                begun: false,
                            });
                        }
                        if let Some(table) = truncated_table(&query, &schema)
                            && self.cfg.selects(&table.schema, &table.name)
                        {
                            self.truncate(table, log_pos, server_id).await?;
                        }
                        if !in_txn {
                            self.commit(log_pos, server_id, None).await?;
                        }
                    }
                }
            }
            XID => {
                let x: XidEvent = event
                    .read_event()
                    .map_err(|x| Err(self.bad(format!("bad XID event: {x}"), log_pos)))?;
                self.commit(log_pos, server_id, Some(x.xid)).await?;
            }
            TABLE_MAP => {
                let tme: TableMapEvent<'_> = event
                    .read_event()
                    .map_err(|x| Err(self.bad(format!("bad TABLE_MAP event: {x}"), log_pos)))?;
                self.table_map(&tme, event.data(), log_pos)
                    .await
                    .map_err(Err)?;
            }
            WRITE_V1 | UPDATE_V1 | DELETE_V1 | WRITE_V2 | UPDATE_V2 | DELETE_V2 => {
                self.rows(event, t, log_pos, server_id).await?;
            }
            PARTIAL_UPDATE => {
                return e(ConnectorError::definite(
                    "mysql source: the server logs partial JSON updates \
                     (binlog_row_value_options=PARTIAL_JSON), which lose the full after image; \
                     set binlog_row_value_options='' (SET GLOBAL binlog_row_value_options='') \
                     and re-snapshot",
                ));
            }
            TRANSACTION_PAYLOAD => {
                // mysql_async unpacks the compressed payload and yields its events next.
            }
            INCIDENT => {
                return e(ConnectorError::definite(format!(
                    "mysql source: the server logged an INCIDENT event in {} before position \
                     {log_pos}: changes may be missing from the binlog; re-snapshot",
                    self.file
                )));
            }
            FORMAT_DESCRIPTION => self.fde_seen = true,
            // PREVIOUS_GTIDS, ANONYMOUS_GTID, INTVAR, RAND, USER_VAR,
            // ROWS_QUERY, MariaDB ANNOTATE_ROWS, BINLOG_CHECKPOINT, START_ENCRYPTION, STOP:
            // nothing to stage.
            _ => {}
        }
        Ok(())
    }

    async fn heartbeat(&mut self, log_pos: u64, server_id: u32) -> std::result::Result<(), Closed> {
        if let Some((f, p)) = &self.floor {
            let cur = self.position(log_pos, None);
            let floor = MysqlPosition {
                file: f.clone(),
                pos: *p,
                gtid: None,
                server_id: None,
            };
            if cur
                .partial_cmp(&floor)
                .is_none_or(|o| o == std::cmp::Ordering::Less)
            {
                return Ok(());
            }
        }
        self.floor = Some((self.file.clone(), log_pos));
        let p = self.position(log_pos, Some(server_id));
        self.send(SourceItem::Heartbeat(SourcePosition::Mysql(p)))
            .await
    }

    async fn commit(
        &mut self,
        log_pos: u64,
        server_id: u32,
        xid: Option<u64>,
    ) -> std::result::Result<(), std::result::Result<Closed, ConnectorError>> {
        match self.pending_gtid.take() {
            Some(Pending::MariaDb(g)) => {
                let mut l = match &self.gtid {
                    GtidState::MariaDb(l) => l.clone(),
                    _ => MariaDbGtidList::default(),
                };
                gtid::mariadb_apply(&mut l, g);
                self.gtid = GtidState::MariaDb(l);
            }
            Some(Pending::Mysql(uuid, gno)) => {
                if let GtidState::Mysql(s) = &mut self.gtid {
                    s.add(&uuid, gno);
                }
            }
            None => {}
        }
        let Some(mut txn) = self.txn.take() else {
            // A COMMIT without a transaction (the stream started mid-transaction): nothing
            // of it was read, so there is nothing to stage.
            return Ok(());
        };
        if log_pos == 0 {
            return Err(Err(self.bad("a commit event without a position", log_pos)));
        }
        let position = self.position(log_pos, Some(server_id));
        if let Some((f, p)) = &self.floor {
            let floor = MysqlPosition {
                file: f.clone(),
                pos: *p,
                gtid: None,
                server_id: None,
            };
            if position.partial_cmp(&floor) == Some(std::cmp::Ordering::Less) {
                return Err(Err(self.bad(
                    format!("commit position {}:{log_pos} is before {f}:{p}", self.file),
                    log_pos,
                )));
            }
        }
        self.floor = Some((self.file.clone(), log_pos));
        let position = SourcePosition::Mysql(position);
        if txn.events == 0 {
            return self.send(SourceItem::Heartbeat(position)).await.map_err(Ok);
        }
        let commit = CommitInfo {
            position,
            txid: txn.txid.or(xid),
            ts_ms: txn.ts_ms,
            events: txn.events,
        };
        let item = if txn.chunked {
            if !txn.buffer.is_empty() {
                self.send(SourceItem::Changes(std::mem::take(&mut txn.buffer)))
                    .await
                    .map_err(Ok)?;
            }
            SourceItem::Commit(commit)
        } else {
            SourceItem::Transaction(Transaction {
                changes: txn.buffer,
                commit,
            })
        };
        self.send(item).await.map_err(Ok)
    }

    /// Announces `schema` if it differs from what was announced for its table, keeping
    /// order with the changes already buffered.
    async fn announce(&mut self, schema: &TableSchema) -> std::result::Result<(), Closed> {
        if self.announced.get(&schema.table) == Some(schema) {
            return Ok(());
        }
        if let Some(txn) = self.txn.as_mut()
            && !txn.buffer.is_empty()
        {
            txn.chunked = true;
            let chunk = std::mem::take(&mut txn.buffer);
            self.send(SourceItem::Changes(chunk)).await?;
        }
        self.announced.insert(schema.table.clone(), schema.clone());
        self.send(SourceItem::Schema(schema.clone())).await
    }

    async fn push(&mut self, event: ChangeEvent) -> std::result::Result<(), Closed> {
        let Some(txn) = self.txn.as_mut() else {
            return Ok(());
        };
        txn.buffer.push(event);
        txn.events += 1;
        if txn.buffer.len() >= CHUNK_ROWS {
            txn.chunked = true;
            let chunk = std::mem::take(&mut txn.buffer);
            self.send(SourceItem::Changes(chunk)).await?;
        }
        Ok(())
    }

    async fn truncate(
        &mut self,
        table: TableId,
        log_pos: u64,
        server_id: u32,
    ) -> std::result::Result<(), std::result::Result<Closed, ConnectorError>> {
        let schema = match self.announced.get(&table) {
            Some(s) => s.clone(),
            None => {
                let info = self.info(&table.schema, &table.name).await.map_err(Err)?;
                if info.names.is_empty() {
                    // The table is gone already (dropped right after): nothing to truncate.
                    return Ok(());
                }
                // The schema the snapshot reads (information_schema through the same
                // `classify` a TABLE_MAP goes through), so the first row event after it finds
                // the same shape and makes no new schema version.
                let facts = snapshot::server_facts(&mut self.meta, &self.cfg.url)
                    .await
                    .map_err(Err)?;
                snapshot::table_meta(&mut self.meta, &self.cfg.url, facts, &table)
                    .await
                    .map_err(Err)?
                    .schema
            }
        };
        self.announce(&schema).await.map_err(Ok)?;
        let ts_ms = self.txn.as_ref().map(|t| t.ts_ms).unwrap_or(0);
        let txid = self.txn.as_ref().and_then(|t| t.txid);
        let event = ChangeEvent {
            table: table.to_shared(),
            schema_version: 0,
            op: Op::Truncate,
            before: None,
            after: None,
            position: SourcePosition::Mysql(self.position(log_pos, Some(server_id))),
            txid,
            ts_ms,
        };
        self.push(event).await.map_err(Ok)
    }

    async fn info(&mut self, db: &str, table: &str) -> Result<Arc<InfoColumns>> {
        let key = (db.to_owned(), table.to_owned());
        if let Some(i) = self.info_cache.get(&key) {
            return Ok(i.clone());
        }
        let info =
            Arc::new(query_info(&mut self.meta, &self.cfg.url, db, table, &self.facts).await?);
        self.info_cache.insert(key, info.clone());
        Ok(info)
    }

    async fn table_map(&mut self, tme: &TableMapEvent<'_>, raw: &[u8], log_pos: u64) -> Result<()> {
        let id = tme.table_id();
        if let Some((bytes, _)) = self.tables.get(&id)
            && bytes.as_slice() == raw
        {
            return Ok(());
        }
        let db = tme.database_name().into_owned();
        let name = tme.table_name().into_owned();
        if !self.cfg.selects(&db, &name) {
            self.tables.insert(id, (raw.to_vec(), None));
            return Ok(());
        }
        let dec = self.build_decoder(tme, &db, &name).await.map_err(|e| {
            ConnectorError::definite(format!(
                "mysql source: cannot decode table {db}.{name} (binlog {} before position \
                 {log_pos}): {e}",
                self.file
            ))
        })?;
        self.tables.insert(id, (raw.to_vec(), Some(Arc::new(dec))));
        Ok(())
    }

    async fn build_decoder(
        &mut self,
        tme: &TableMapEvent<'_>,
        db: &str,
        name: &str,
    ) -> std::result::Result<TableDecoder, String> {
        let n = tme.columns_count() as usize;
        let mut raw: Vec<RawColumn> = Vec::with_capacity(n);
        let mut reals = Vec::with_capacity(n);
        for i in 0..n {
            let t = match tme.get_raw_column_type(i) {
                Ok(Some(t)) => t as u8,
                Ok(None) => return Err(format!("column {i} has no type")),
                Err(e) => return Err(format!("column {i}: {e}")),
            };
            let meta = tme.get_column_metadata(i).unwrap_or(&[]).to_vec();
            let (real, _) = decode::real_type(t, &meta).map_err(|e| e.0)?;
            reals.push(real);
            raw.push(RawColumn {
                type_code: t,
                meta,
                ..Default::default()
            });
        }
        // Optional metadata (binlog_row_metadata = MINIMAL or FULL).
        let ex = OptionalMetaExtractor::new(tme.iter_optional_meta())
            .map_err(|e| format!("bad optional metadata: {e}"))?;
        let names: Vec<String> = ex
            .iter_column_name()
            .map(|r| r.map(|c| c.name().into_owned()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("bad column names: {e}"))?;
        let signedness: Vec<bool> = ex.iter_signedness().collect();
        let char_count = reals.iter().filter(|&&r| decode::is_character(r)).count();
        let charsets: Vec<u16> = ex
            .iter_charset()
            .take(char_count)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("bad charsets: {e}"))?;
        let enum_set_count = reals
            .iter()
            .filter(|&&r| r == ty::ENUM || r == ty::SET)
            .count();
        let es_charsets: Vec<u16> = ex
            .iter_enum_and_set_charset()
            .take(enum_set_count)
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("bad enum/set charsets: {e}"))?;
        let pk: Vec<usize> = ex
            .iter_primary_key()
            .map(|r| r.map(|i| i as usize))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("bad primary key metadata: {e}"))?;
        let mut enum_labels: Vec<Vec<Vec<u8>>> = Vec::new();
        let mut set_labels: Vec<Vec<Vec<u8>>> = Vec::new();
        for f in tme.iter_optional_meta() {
            match f.map_err(|e| format!("bad optional metadata: {e}"))? {
                OptionalMetadataField::EnumStrValue(v) => {
                    for vals in v.iter_values() {
                        let vals = vals.map_err(|e| format!("bad ENUM labels: {e}"))?;
                        enum_labels.push(
                            vals.values()
                                .iter()
                                .map(|x| x.value_raw().to_vec())
                                .collect(),
                        );
                    }
                }
                OptionalMetadataField::SetStrValue(v) => {
                    for vals in v.iter_values() {
                        let vals = vals.map_err(|e| format!("bad SET labels: {e}"))?;
                        set_labels.push(
                            vals.values()
                                .iter()
                                .map(|x| x.value_raw().to_vec())
                                .collect(),
                        );
                    }
                }
                _ => {}
            }
        }
        let full = names.len() == n;
        let has_long_text = reals
            .iter()
            .zip(&raw)
            .any(|(&r, c)| matches!(r, ty::BLOB | ty::LONG_BLOB) && c.meta.first() == Some(&4));
        // information_schema: always without FULL metadata; for MariaDB JSON (a LONGTEXT
        // with a json_valid check) also with it.
        let info = if !full || (self.facts.mariadb && has_long_text) {
            let info = self.info(db, name).await.map_err(|e| e.to_string())?;
            if info.names.len() != n {
                return Err(format!(
                    "the binlog row has {n} columns but information_schema lists {} now (the \
                     table changed since); without binlog_row_metadata=FULL weir can only \
                     decode rows of the current definition: set binlog_row_metadata=FULL \
                     and re-snapshot",
                    info.names.len()
                ));
            }
            Some(info)
        } else {
            None
        };
        let cs = |id: u16| -> Charset {
            self.facts
                .collations
                .get(&id)
                .cloned()
                .unwrap_or_else(|| match id {
                    63 => Charset::Binary,
                    8 | 47 | 48 | 49 => Charset::Latin1,
                    33 | 83 => Charset::Utf8mb3,
                    45 | 46 | 255 => Charset::Utf8mb4,
                    _ => Charset::Unsupported(format!("collation id {id}")),
                })
        };
        let (mut ni, mut ci, mut ei, mut si, mut esi) = (0, 0, 0, 0, 0);
        let mut columns = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        for (i, (c, &real)) in raw.iter_mut().zip(&reals).enumerate() {
            if full {
                if decode::is_numeric(real, self.facts.mariadb) {
                    c.unsigned = signedness.get(ni).copied().unwrap_or(false);
                    ni += 1;
                }
                if decode::is_character(real) {
                    c.charset = charsets.get(ci).map(|&id| cs(id));
                    ci += 1;
                }
                if real == ty::ENUM || real == ty::SET {
                    c.charset = es_charsets.get(esi).map(|&id| cs(id));
                    esi += 1;
                    let raw_labels = if real == ty::ENUM {
                        ei += 1;
                        enum_labels.get(ei - 1)
                    } else {
                        si += 1;
                        set_labels.get(si - 1)
                    };
                    let label_cs = c.charset.clone().unwrap_or(Charset::Utf8mb4);
                    c.labels = raw_labels
                        .map(|ls| {
                            ls.iter()
                                .map(|l| {
                                    if label_cs == Charset::Binary {
                                        Ok(String::from_utf8_lossy(l).into_owned())
                                    } else {
                                        label_cs.decode(l)
                                    }
                                })
                                .collect::<std::result::Result<Vec<_>, DecodeError>>()
                        })
                        .transpose()
                        .map_err(|e| e.0)?
                        .unwrap_or_default();
                }
            }
            if let Some(info) = &info {
                if !full {
                    c.unsigned = info.unsigned[i];
                    c.charset = info.charsets[i].clone();
                    c.labels = info.labels[i].clone();
                }
                c.json = info.json[i];
            }
            let col_name = if full {
                names[i].clone()
            } else {
                info.as_ref()
                    .map(|x| x.names[i].clone())
                    .unwrap_or_default()
            };
            let (kind, ct, source_type) =
                decode::classify(c).map_err(|e| format!("column {col_name}: {e}"))?;
            let nullable = tme.null_bitmask().get(i).map(|b| *b).unwrap_or(true);
            columns.push(Column {
                name: col_name,
                ty: ct,
                source_type,
                nullable,
            });
            kinds.push(kind);
        }
        let primary_key = if full {
            pk
        } else {
            info.as_ref().map(|x| x.key.clone()).unwrap_or_default()
        };
        if primary_key.iter().any(|&k| k >= n) {
            return Err("primary key metadata names a column that does not exist".into());
        }
        Ok(TableDecoder {
            schema: TableSchema {
                table: TableId::new(db, name),
                version: 0,
                columns,
                primary_key,
            },
            kinds,
        })
    }

    async fn rows(
        &mut self,
        event: &Event,
        t: u8,
        log_pos: u64,
        server_id: u32,
    ) -> std::result::Result<(), std::result::Result<Closed, ConnectorError>> {
        let data = event
            .read_data()
            .map_err(|x| Err(self.bad(format!("bad rows event: {x}"), log_pos)))?;
        let Some(mysql_async::binlog::events::EventData::RowsEvent(rows)) = data else {
            return Err(Err(self.bad("a rows event that is not one", log_pos)));
        };
        let table_id = rows.table_id();
        let Some((_, dec)) = self.tables.get(&table_id) else {
            return Err(Err(self.bad(
                format!("rows for table id {table_id} without its TABLE_MAP"),
                log_pos,
            )));
        };
        let Some(dec) = dec.clone() else {
            // Not a selected table.
            return Ok(());
        };
        if self.txn.is_none() {
            return Err(Err(self.bad("rows outside a transaction", log_pos)));
        }
        let n = dec.kinds.len();
        if rows.num_columns() as usize != n {
            return Err(Err(self.bad(
                format!(
                    "rows of {} have {} columns but its TABLE_MAP has {n}",
                    dec.schema.table,
                    rows.num_columns()
                ),
                log_pos,
            )));
        }
        macro_rules! bits {
            ($b:expr) => {
                match $b {
                    Some(b) => (0..n)
                        .map(|i| b.get(i).map(|x| *x).unwrap_or(false))
                        .collect::<Vec<bool>>(),
                    None => vec![false; n],
                }
            };
        }
        let before_bits = bits!(rows.columns_before_image());
        let after_bits = bits!(rows.columns_after_image());
        let op = match t {
            WRITE_V1 | WRITE_V2 => Op::Insert,
            UPDATE_V1 | UPDATE_V2 => Op::Update,
            _ => Op::Delete,
        };
        self.announce(&dec.schema).await.map_err(Ok)?;
        let position = SourcePosition::Mysql(self.position(log_pos, Some(server_id)));
        let (ts_ms, txid) = self
            .txn
            .as_ref()
            .map(|t| (t.ts_ms, t.txid))
            .unwrap_or((0, None));
        let mut r = Reader::new(rows.rows_data());
        while !r.is_empty() {
            let ctx = |e: DecodeError| {
                Err(self.bad(
                    format!("undecodable row of {}: {e}", dec.schema.table),
                    log_pos,
                ))
            };
            let (before, after) = match op {
                Op::Insert => (None, Some(image(&dec, &after_bits, &mut r).map_err(ctx)?)),
                Op::Delete => (Some(image(&dec, &before_bits, &mut r).map_err(ctx)?), None),
                _ => {
                    let b = image(&dec, &before_bits, &mut r).map_err(ctx)?;
                    let a = image(&dec, &after_bits, &mut r).map_err(ctx)?;
                    (Some(b), Some(a))
                }
            };
            let ev = ChangeEvent {
                table: dec.schema.table.to_shared(),
                schema_version: 0,
                op,
                before,
                after,
                position: position.clone(),
                txid,
                ts_ms,
            };
            self.push(ev).await.map_err(Ok)?;
        }
        Ok(())
    }
}

/// Decodes one row image: a NULL bitmap over the present columns, then their values.
fn image(
    dec: &TableDecoder,
    present: &[bool],
    r: &mut Reader<'_>,
) -> std::result::Result<Row, DecodeError> {
    let count = present.iter().filter(|&&p| p).count();
    let nulls = r.take(count.div_ceil(8))?;
    let mut values = Vec::with_capacity(present.len());
    let mut j = 0;
    for (i, &p) in present.iter().enumerate() {
        if !p {
            values.push(Value::Unchanged);
            continue;
        }
        let is_null = (nulls[j / 8] >> (j % 8)) & 1 == 1;
        j += 1;
        if is_null {
            values.push(Value::Null);
            continue;
        }
        let v = decode::decode_value(&dec.kinds[i], r).map_err(|e| {
            DecodeError(format!(
                "column {} ({}): {e}",
                dec.schema.columns[i].name, dec.schema.columns[i].source_type
            ))
        })?;
        values.push(v);
    }
    Ok(Row(values))
}

/// The table a `TRUNCATE [TABLE] [db.]name` statement empties.
pub(crate) fn truncated_table(query: &str, default_db: &str) -> Option<TableId> {
    let q = strip_comments(query);
    let mut words = q.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("truncate") {
        return None;
    }
    let mut name = words.next()?;
    if name.eq_ignore_ascii_case("table") {
        name = words.next()?;
    }
    let name = name.trim_end_matches(';');
    let parts = split_qualified(name);
    match parts.as_slice() {
        [t] => Some(TableId::new(default_db, t.clone())),
        [d, t] => Some(TableId::new(d.clone(), t.clone())),
        _ => None,
    }
}

fn strip_comments(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    let mut rest = q;
    while let Some(start) = rest.find("/*") {
        out.push_str(&rest[..start]);
        match rest[start..].find("*/") {
            Some(end) => rest = &rest[start + end + 2..],
            None => {
                rest = "";
                break;
            }
        }
        out.push(' ');
    }
    out.push_str(rest);
    out
}

fn split_qualified(name: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' if quoted && chars.peek() == Some(&'`') => {
                chars.next();
                cur.push('`');
            }
            '`' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

/// Parses `enum('a','b''c')` / `set(...)` labels.
pub(crate) fn parse_labels(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let body = &column_type[open + 1..];
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut s = String::new();
        loop {
            match chars.next() {
                Some('\'') if chars.peek() == Some(&'\'') => {
                    chars.next();
                    s.push('\'');
                }
                Some('\'') | None => break,
                Some('\\') => {
                    if let Some(n) = chars.next() {
                        s.push(n);
                    }
                }
                Some(ch) => s.push(ch),
            }
        }
        labels.push(s);
    }
    labels
}

async fn query_info(
    conn: &mut Conn,
    url: &str,
    db: &str,
    table: &str,
    facts: &ServerFacts,
) -> Result<InfoColumns> {
    type ColRow = (String, String, Option<String>, String, String);
    let rows: Vec<ColRow> = conn
        .exec(
            "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME, COLUMN_KEY, DATA_TYPE \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        .await
        .map_err(|e| my_error(&format!("reading the columns of {db}.{table}"), url, e))?;
    let checks: Vec<String> = if facts.mariadb {
        conn.exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE \
             CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (db, table),
        )
        .await
        .map_err(|e| my_error(&format!("reading the checks of {db}.{table}"), url, e))?
    } else {
        Vec::new()
    };
    let mut info = InfoColumns::default();
    for (i, (name, ct, cs, key, data_type)) in rows.into_iter().enumerate() {
        let lower = ct.to_ascii_lowercase();
        info.unsigned.push(lower.contains("unsigned"));
        info.charsets
            .push(cs.as_deref().map(Charset::from_name).or_else(|| {
                // Binary string types have no CHARACTER_SET_NAME.
                matches!(
                    data_type.as_str(),
                    "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
                )
                .then_some(Charset::Binary)
            }));
        info.labels
            .push(if data_type == "enum" || data_type == "set" {
                parse_labels(&ct)
            } else {
                Vec::new()
            });
        if key == "PRI" {
            info.key.push(i);
        }
        let json_check = format!("json_valid(`{}`)", name.replace('`', "``"));
        info.json.push(
            data_type == "json"
                || checks
                    .iter()
                    .any(|c| c.replace(' ', "").eq_ignore_ascii_case(&json_check)),
        );
        info.names.push(name);
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_statements() {
        assert_eq!(
            truncated_table("TRUNCATE TABLE `shop`.`or``ders`", "x"),
            Some(TableId::new("shop", "or`ders"))
        );
        assert_eq!(
            truncated_table("truncate t1", "db"),
            Some(TableId::new("db", "t1"))
        );
        assert_eq!(
            truncated_table("/* c */ TRUNCATE db2.t;", "db"),
            Some(TableId::new("db2", "t"))
        );
        assert_eq!(truncated_table("ALTER TABLE t ADD c INT", "db"), None);
        assert_eq!(truncated_table("TRUNCATE", "db"), None);
        assert_eq!(truncated_table("TRUNCATE a.b.c", "db"), None);
    }

    #[test]
    fn enum_labels() {
        assert_eq!(
            parse_labels("enum('a','b''c','d,e')"),
            vec!["a", "b'c", "d,e"]
        );
        assert_eq!(parse_labels("set('x')"), vec!["x"]);
        assert!(parse_labels("int(11)").is_empty());
        assert_eq!(parse_labels("enum('unterminated"), vec!["unterminated"]);
    }

    #[test]
    fn purge_messages_name_the_binlog_and_the_fix() {
        let e = purged_error(
            &StartAt::File {
                file: "mariadb-bin.000003".into(),
                pos: 4,
            },
            "Could not find first log file name in binary log index file",
        );
        assert!(!e.is_transient());
        let m = e.to_string();
        assert!(
            m.contains("mariadb-bin.000003") && m.contains("re-snapshot"),
            "{m}"
        );
    }
}
