//! PostgreSQL streaming-replication transport: enough of the frontend/backend protocol to
//! open a `replication=database` connection, run replication commands (`IDENTIFY_SYSTEM`,
//! `CREATE_REPLICATION_SLOT`, `DROP_REPLICATION_SLOT`, `START_REPLICATION`) and exchange
//! CopyBoth frames (XLogData, primary keepalive, standby status update).
//!
//! Message framing and authentication (cleartext, MD5, SCRAM-SHA-256) come from the
//! `postgres-protocol` crate; this module adds the socket handling, the replication
//! commands and the CopyBoth sub-protocol. No TLS yet.
//!
//! Reads are cancel-safe: bytes read from the socket are kept in an internal buffer until a
//! whole message has arrived, so dropping a pending [`ReplicationStream::next`] (e.g. in a
//! `select!`) loses nothing. Outgoing bytes are likewise buffered and flushed on the next
//! write call if a flush was interrupted.

use std::fmt;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pgoutput::{Lsn, PG_EPOCH_UNIX_MICROS};

/// Default cap on a single backend message (and so on one XLogData payload).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1 << 30;

/// A password that never shows up in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where and how to connect. `Debug` redacts the password.
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Password>,
    pub database: String,
    pub application_name: String,
    /// Extra startup parameters (e.g. `("options", "-c logical_decoding_work_mem=64kB")`).
    pub extra_params: Vec<(String, String)>,
    pub connect_timeout: Duration,
    /// Largest backend message accepted; larger ones fail with [`ReplicationError::FrameTooLarge`].
    pub max_frame_bytes: usize,
}

impl ReplicationConfig {
    pub fn new(host: impl Into<String>, port: u16, user: impl Into<String>) -> Self {
        let user = user.into();
        Self {
            host: host.into(),
            port,
            database: user.clone(),
            user,
            password: None,
            application_name: "weir".to_owned(),
            extra_params: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }

    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Password::new(password));
        self
    }

    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = database.into();
        self
    }

    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_params.push((name.into(), value.into()));
        self
    }
}

/// Everything that can go wrong on a replication connection.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("could not connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("timed out connecting to {addr}")]
    ConnectTimeout { addr: String },
    #[error("replication connection lost: {0}")]
    Io(#[from] io::Error),
    #[error("server closed the replication connection")]
    ConnectionClosed,
    /// An `ErrorResponse` from the server.
    #[error("server error {code} ({severity}): {message}")]
    Server {
        severity: String,
        code: String,
        message: String,
        detail: Option<String>,
    },
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("backend message of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { len: usize, max: usize },
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ReplicationError {
    /// True when the transport is gone (socket error or EOF): reconnecting may help.
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, Self::Io(_) | Self::ConnectionClosed)
    }

    /// The SQLSTATE of a server `ErrorResponse`.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            Self::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    fn protocol(what: impl Into<String>) -> Self {
        Self::Protocol(what.into())
    }
}

pub type Result<T, E = ReplicationError> = std::result::Result<T, E>;

/// Parses `X/Y` (hex) into an LSN.
pub fn parse_lsn(text: &str) -> Option<Lsn> {
    let (hi, lo) = text.split_once('/')?;
    if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
        return None;
    }
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// Formats an LSN the way PostgreSQL does (`16/B374D848`).
pub fn format_lsn(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Microseconds since 2000-01-01 (PostgreSQL's epoch) for now.
pub fn pg_now_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    unix.saturating_sub(PG_EPOCH_UNIX_MICROS)
}

/// Result of `IDENTIFY_SYSTEM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifySystem {
    pub system_id: String,
    pub timeline: u32,
    pub xlog_pos: Lsn,
    pub dbname: Option<String>,
}

/// What `CREATE_REPLICATION_SLOT` does with the snapshot it builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotAction {
    /// Export it (usable by `SET TRANSACTION SNAPSHOT` until the next command here).
    Export,
    NoExport,
    /// Use it in the current transaction of this connection.
    Use,
}

impl SnapshotAction {
    fn as_sql(self) -> &'static str {
        match self {
            Self::Export => "export",
            Self::NoExport => "nothing",
            Self::Use => "use",
        }
    }
}

/// Result of `CREATE_REPLICATION_SLOT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    pub slot_name: String,
    pub consistent_point: Lsn,
    pub snapshot_name: Option<String>,
    pub output_plugin: Option<String>,
}

/// Rows of a simple-protocol query, as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimpleQueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    pub command_tag: Option<String>,
}

impl SimpleQueryResult {
    fn get(&self, row: usize, column: &str) -> Option<&str> {
        let idx = self.columns.iter().position(|c| c == column)?;
        self.rows.get(row)?.get(idx)?.as_deref()
    }
}

enum Incoming {
    Message(backend::Message),
    CopyBothResponse,
}

/// The socket plus its read and write buffers.
struct Connection {
    socket: TcpStream,
    read_buf: BytesMut,
    write_buf: BytesMut,
    max_frame_bytes: usize,
}

impl Connection {
    /// Next whole backend message other than CopyBothResponse; cancel-safe.
    async fn read_message(&mut self) -> Result<backend::Message> {
        match self.read_incoming().await? {
            Incoming::Message(m) => Ok(m),
            Incoming::CopyBothResponse => Err(ReplicationError::protocol(
                "unexpected CopyBothResponse (use start_logical_replication)",
            )),
        }
    }

    /// Next whole backend message; cancel-safe.
    async fn read_incoming(&mut self) -> Result<Incoming> {
        loop {
            if let Some(message) = self.try_parse()? {
                return Ok(message);
            }
            let n = self.socket.read_buf(&mut self.read_buf).await?;
            if n == 0 {
                return Err(ReplicationError::ConnectionClosed);
            }
        }
    }

    fn try_parse(&mut self) -> Result<Option<Incoming>> {
        if self.read_buf.len() < 5 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([
            self.read_buf[1],
            self.read_buf[2],
            self.read_buf[3],
            self.read_buf[4],
        ]) as usize;
        if len < 4 {
            return Err(ReplicationError::protocol(format!(
                "backend message length {len} < 4"
            )));
        }
        if len > self.max_frame_bytes {
            return Err(ReplicationError::FrameTooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        if self.read_buf.len() < len + 1 {
            // Grow once to the frame size rather than in small steps.
            self.read_buf.reserve(len + 1 - self.read_buf.len());
            return Ok(None);
        }
        if self.read_buf[0] == b'W' {
            // CopyBothResponse, which postgres-protocol does not parse; its body (format
            // codes) carries nothing we need.
            self.read_buf.advance(len + 1);
            return Ok(Some(Incoming::CopyBothResponse));
        }
        match backend::Message::parse(&mut self.read_buf) {
            Ok(Some(message)) => Ok(Some(Incoming::Message(message))),
            Ok(None) => Err(ReplicationError::protocol(
                "incomplete message after length check",
            )),
            Err(e) => Err(ReplicationError::protocol(format!(
                "malformed backend message: {e}"
            ))),
        }
    }

    /// Writes all buffered outgoing bytes; an interrupted flush resumes on the next call.
    async fn flush(&mut self) -> Result<()> {
        while self.write_buf.has_remaining() {
            let n = self.socket.write_buf(&mut self.write_buf).await?;
            if n == 0 {
                return Err(ReplicationError::ConnectionClosed);
            }
        }
        self.socket.flush().await?;
        Ok(())
    }
}

fn server_error(body: &backend::ErrorResponseBody) -> ReplicationError {
    let mut severity = String::new();
    let mut code = String::new();
    let mut message = String::new();
    let mut detail = None;
    let mut fields = body.fields();
    while let Ok(Some(field)) = fields.next() {
        let value = || String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'V' => severity = value(),
            b'S' if severity.is_empty() => severity = value(),
            b'C' => code = value(),
            b'M' => message = value(),
            b'D' => detail = Some(value()),
            _ => {}
        }
    }
    ReplicationError::Server {
        severity,
        code,
        message,
        detail,
    }
}

fn encode_err(e: io::Error) -> ReplicationError {
    ReplicationError::InvalidArgument(e.to_string())
}

/// A replication connection in command mode.
pub struct ReplicationClient {
    conn: Connection,
    server_params: Vec<(String, String)>,
    backend_pid: Option<i32>,
}

impl fmt::Debug for ReplicationClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationClient")
            .field("backend_pid", &self.backend_pid)
            .finish_non_exhaustive()
    }
}

impl ReplicationClient {
    /// Connects, authenticates and waits for the server to be ready for commands.
    pub async fn connect(config: &ReplicationConfig) -> Result<Self> {
        let addr = format!("{}:{}", config.host, config.port);
        let socket = match tokio::time::timeout(
            config.connect_timeout,
            TcpStream::connect((config.host.as_str(), config.port)),
        )
        .await
        {
            Err(_) => return Err(ReplicationError::ConnectTimeout { addr }),
            Ok(Err(source)) => return Err(ReplicationError::Connect { addr, source }),
            Ok(Ok(socket)) => socket,
        };
        socket.set_nodelay(true)?;
        let mut client = Self {
            conn: Connection {
                socket,
                read_buf: BytesMut::with_capacity(8192),
                write_buf: BytesMut::with_capacity(1024),
                max_frame_bytes: config.max_frame_bytes,
            },
            server_params: Vec::new(),
            backend_pid: None,
        };
        client.startup(config).await?;
        Ok(client)
    }

    async fn startup(&mut self, config: &ReplicationConfig) -> Result<()> {
        let mut params: Vec<(&str, &str)> = vec![
            ("user", config.user.as_str()),
            ("database", config.database.as_str()),
            ("replication", "database"),
            ("application_name", config.application_name.as_str()),
            ("client_encoding", "UTF8"),
        ];
        params.extend(
            config
                .extra_params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        frontend::startup_message(params, &mut self.conn.write_buf).map_err(encode_err)?;
        self.conn.flush().await?;

        let password = || {
            config
                .password
                .as_ref()
                .map(Password::expose)
                .ok_or_else(|| {
                    ReplicationError::Auth("server asked for a password; none configured".into())
                })
        };
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            match self.conn.read_message().await? {
                backend::Message::AuthenticationOk => break,
                backend::Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password()?, &mut self.conn.write_buf)
                        .map_err(encode_err)?;
                    self.conn.flush().await?;
                }
                backend::Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(config.user.as_bytes(), password()?, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.conn.write_buf)
                        .map_err(encode_err)?;
                    self.conn.flush().await?;
                }
                backend::Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut offered = false;
                    while let Some(m) = mechanisms
                        .next()
                        .map_err(|e| ReplicationError::protocol(format!("SASL mechanisms: {e}")))?
                    {
                        offered |= m == sasl::SCRAM_SHA_256;
                    }
                    if !offered {
                        return Err(ReplicationError::Auth(
                            "server offers no SASL mechanism we support (need SCRAM-SHA-256)"
                                .into(),
                        ));
                    }
                    let s =
                        sasl::ScramSha256::new(password()?, sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        s.message(),
                        &mut self.conn.write_buf,
                    )
                    .map_err(encode_err)?;
                    scram = Some(s);
                    self.conn.flush().await?;
                }
                backend::Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        ReplicationError::protocol("SASL continue before SASL start")
                    })?;
                    s.update(body.data())
                        .map_err(|e| ReplicationError::Auth(format!("SCRAM: {e}")))?;
                    frontend::sasl_response(s.message(), &mut self.conn.write_buf)
                        .map_err(encode_err)?;
                    self.conn.flush().await?;
                }
                backend::Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().ok_or_else(|| {
                        ReplicationError::protocol("SASL final before SASL start")
                    })?;
                    s.finish(body.data())
                        .map_err(|e| ReplicationError::Auth(format!("SCRAM server proof: {e}")))?;
                }
                backend::Message::ErrorResponse(body) => return Err(server_error(&body)),
                backend::Message::NoticeResponse(_) => {}
                backend::Message::AuthenticationKerberosV5
                | backend::Message::AuthenticationScmCredential
                | backend::Message::AuthenticationGss
                | backend::Message::AuthenticationGssContinue(_)
                | backend::Message::AuthenticationSspi => {
                    return Err(ReplicationError::Auth(
                        "unsupported authentication method (only cleartext, MD5, SCRAM-SHA-256)"
                            .into(),
                    ));
                }
                _ => {
                    return Err(ReplicationError::protocol(
                        "unexpected message during authentication",
                    ));
                }
            }
        }
        loop {
            match self.conn.read_message().await? {
                backend::Message::ParameterStatus(body) => {
                    let name = body
                        .name()
                        .map_err(|e| ReplicationError::protocol(e.to_string()))?;
                    let value = body
                        .value()
                        .map_err(|e| ReplicationError::protocol(e.to_string()))?;
                    self.server_params.push((name.to_owned(), value.to_owned()));
                }
                backend::Message::BackendKeyData(body) => {
                    self.backend_pid = Some(body.process_id())
                }
                backend::Message::NoticeResponse(_) => {}
                backend::Message::ReadyForQuery(_) => return Ok(()),
                backend::Message::ErrorResponse(body) => return Err(server_error(&body)),
                _ => {
                    return Err(ReplicationError::protocol(
                        "unexpected message after authentication",
                    ));
                }
            }
        }
    }

    /// A server parameter reported at startup (e.g. `server_version`).
    pub fn server_param(&self, name: &str) -> Option<&str> {
        self.server_params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The walsender's process id.
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_pid
    }

    /// Runs one simple-protocol command and collects its rows as text.
    pub async fn simple_query(&mut self, sql: &str) -> Result<SimpleQueryResult> {
        frontend::query(sql, &mut self.conn.write_buf).map_err(encode_err)?;
        self.conn.flush().await?;
        let mut result = SimpleQueryResult::default();
        let mut error = None;
        loop {
            match self.conn.read_message().await? {
                backend::Message::RowDescription(body) => {
                    let mut fields = body.fields();
                    while let Some(field) = fields
                        .next()
                        .map_err(|e| ReplicationError::protocol(format!("row description: {e}")))?
                    {
                        result.columns.push(field.name().to_owned());
                    }
                }
                backend::Message::DataRow(body) => {
                    let mut row = Vec::with_capacity(result.columns.len());
                    let mut ranges = body.ranges();
                    while let Some(range) = ranges
                        .next()
                        .map_err(|e| ReplicationError::protocol(format!("data row: {e}")))?
                    {
                        row.push(match range {
                            None => None,
                            Some(r) => {
                                let bytes = body.buffer().get(r).ok_or_else(|| {
                                    ReplicationError::protocol("data row range out of bounds")
                                })?;
                                Some(String::from_utf8_lossy(bytes).into_owned())
                            }
                        });
                    }
                    result.rows.push(row);
                }
                backend::Message::CommandComplete(body) => {
                    result.command_tag = body.tag().ok().map(str::to_owned);
                }
                backend::Message::EmptyQueryResponse
                | backend::Message::NoticeResponse(_)
                | backend::Message::ParameterStatus(_) => {}
                backend::Message::ErrorResponse(body) => error = Some(server_error(&body)),
                backend::Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(e),
                        None => Ok(result),
                    };
                }
                backend::Message::CopyInResponse(_) | backend::Message::CopyOutResponse(_) => {
                    return Err(ReplicationError::protocol(
                        "command entered COPY mode; use start_replication",
                    ));
                }
                _ => {
                    return Err(ReplicationError::protocol(
                        "unexpected message in simple query",
                    ));
                }
            }
        }
    }

    /// `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<IdentifySystem> {
        let r = self.simple_query("IDENTIFY_SYSTEM").await?;
        let missing = |c: &str| ReplicationError::protocol(format!("IDENTIFY_SYSTEM: no {c}"));
        let system_id = r
            .get(0, "systemid")
            .ok_or_else(|| missing("systemid"))?
            .to_owned();
        let timeline = r
            .get(0, "timeline")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| missing("timeline"))?;
        let xlog_pos = r
            .get(0, "xlogpos")
            .and_then(parse_lsn)
            .ok_or_else(|| missing("xlogpos"))?;
        Ok(IdentifySystem {
            system_id,
            timeline,
            xlog_pos,
            dbname: r.get(0, "dbname").map(str::to_owned),
        })
    }

    /// `CREATE_REPLICATION_SLOT name [TEMPORARY] LOGICAL plugin (SNAPSHOT '...')`.
    pub async fn create_logical_slot(
        &mut self,
        slot: &str,
        plugin: &str,
        snapshot: SnapshotAction,
        temporary: bool,
    ) -> Result<CreatedSlot> {
        check_slot_name(slot)?;
        check_plugin_name(plugin)?;
        let sql = format!(
            "CREATE_REPLICATION_SLOT {slot}{} LOGICAL {plugin} (SNAPSHOT '{}')",
            if temporary { " TEMPORARY" } else { "" },
            snapshot.as_sql()
        );
        let r = self.simple_query(&sql).await?;
        let missing =
            |c: &str| ReplicationError::protocol(format!("CREATE_REPLICATION_SLOT: no {c}"));
        Ok(CreatedSlot {
            slot_name: r
                .get(0, "slot_name")
                .ok_or_else(|| missing("slot_name"))?
                .to_owned(),
            consistent_point: r
                .get(0, "consistent_point")
                .and_then(parse_lsn)
                .ok_or_else(|| missing("consistent_point"))?,
            snapshot_name: r.get(0, "snapshot_name").map(str::to_owned),
            output_plugin: r.get(0, "output_plugin").map(str::to_owned),
        })
    }

    /// `DROP_REPLICATION_SLOT name [WAIT]`.
    pub async fn drop_slot(&mut self, slot: &str, wait: bool) -> Result<()> {
        check_slot_name(slot)?;
        let sql = format!(
            "DROP_REPLICATION_SLOT {slot}{}",
            if wait { " WAIT" } else { "" }
        );
        self.simple_query(&sql).await.map(drop)
    }

    /// `START_REPLICATION SLOT name LOGICAL lsn (options)`; consumes the client since the
    /// connection stays in CopyBoth mode. Option values are quoted here; pass e.g.
    /// `("publication_names", "\"my_pub\"")`.
    pub async fn start_logical_replication(
        mut self,
        slot: &str,
        start_lsn: Lsn,
        options: &[(&str, &str)],
    ) -> Result<ReplicationStream> {
        check_slot_name(slot)?;
        let mut sql = format!(
            "START_REPLICATION SLOT {slot} LOGICAL {}",
            format_lsn(start_lsn)
        );
        if !options.is_empty() {
            let opts: Result<Vec<String>> = options
                .iter()
                .map(|(k, v)| {
                    check_option_name(k)?;
                    Ok(format!("{k} '{}'", v.replace('\'', "''")))
                })
                .collect();
            sql.push_str(&format!(" ({})", opts?.join(", ")));
        }
        if sql.contains('\0') {
            return Err(ReplicationError::InvalidArgument(
                "NUL byte in option".into(),
            ));
        }
        frontend::query(&sql, &mut self.conn.write_buf).map_err(encode_err)?;
        self.conn.flush().await?;
        let mut error = None;
        loop {
            let message = match self.conn.read_incoming().await? {
                Incoming::CopyBothResponse => {
                    return Ok(ReplicationStream {
                        conn: self.conn,
                        ended: false,
                    });
                }
                Incoming::Message(m) => m,
            };
            match message {
                backend::Message::NoticeResponse(_) | backend::Message::ParameterStatus(_) => {}
                backend::Message::ErrorResponse(body) => error = Some(server_error(&body)),
                backend::Message::ReadyForQuery(_) => {
                    return Err(error.unwrap_or_else(|| {
                        ReplicationError::protocol("START_REPLICATION ended without CopyBoth")
                    }));
                }
                _ => {
                    return Err(ReplicationError::protocol(
                        "unexpected message in reply to START_REPLICATION",
                    ));
                }
            }
        }
    }

    /// Sends Terminate and closes the socket.
    pub async fn close(mut self) -> Result<()> {
        frontend::terminate(&mut self.conn.write_buf);
        self.conn.flush().await?;
        self.conn.socket.shutdown().await?;
        Ok(())
    }
}

fn check_slot_name(name: &str) -> Result<()> {
    // PostgreSQL's own rule for slot names.
    if name.is_empty()
        || name.len() > 63
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(ReplicationError::InvalidArgument(format!(
            "invalid replication slot name {name:?} (lower-case letters, digits, underscore)"
        )));
    }
    Ok(())
}

fn check_plugin_name(name: &str) -> Result<()> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(ReplicationError::InvalidArgument(format!(
            "invalid output plugin name {name:?}"
        )));
    }
    Ok(())
}

fn check_option_name(name: &str) -> Result<()> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(ReplicationError::InvalidArgument(format!(
            "invalid replication option name {name:?}"
        )));
    }
    Ok(())
}

/// One message of the CopyBoth stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationEvent {
    /// `w`: a chunk of decoded WAL (one pgoutput message).
    XLogData {
        start_lsn: Lsn,
        end_lsn: Lsn,
        /// Microseconds since 2000-01-01.
        server_time: i64,
        data: Bytes,
    },
    /// `k`: primary keepalive.
    Keepalive {
        wal_end: Lsn,
        server_time: i64,
        reply_requested: bool,
    },
    /// The server ended the copy (CopyDone); the stream yields nothing more.
    End,
}

/// A connection in CopyBoth mode after `START_REPLICATION`.
pub struct ReplicationStream {
    conn: Connection,
    ended: bool,
}

impl fmt::Debug for ReplicationStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicationStream")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// A backend message's name, for errors.
fn message_name(m: &backend::Message) -> &'static str {
    match m {
        backend::Message::AuthenticationOk => "AuthenticationOk",
        backend::Message::BackendKeyData(_) => "BackendKeyData",
        backend::Message::BindComplete => "BindComplete",
        backend::Message::CloseComplete => "CloseComplete",
        backend::Message::CommandComplete(_) => "CommandComplete",
        backend::Message::CopyInResponse(_) => "CopyInResponse",
        backend::Message::CopyOutResponse(_) => "CopyOutResponse",
        backend::Message::DataRow(_) => "DataRow",
        backend::Message::EmptyQueryResponse => "EmptyQueryResponse",
        backend::Message::NoData => "NoData",
        backend::Message::NotificationResponse(_) => "NotificationResponse",
        backend::Message::ParseComplete => "ParseComplete",
        backend::Message::ReadyForQuery(_) => "ReadyForQuery",
        backend::Message::RowDescription(_) => "RowDescription",
        _ => "another message",
    }
}

impl ReplicationStream {
    /// Next event. Cancel-safe.
    pub async fn next(&mut self) -> Result<ReplicationEvent> {
        if self.ended {
            return Ok(ReplicationEvent::End);
        }
        loop {
            match self.conn.read_message().await? {
                backend::Message::CopyData(body) => return parse_copy_data(body.into_bytes()),
                // A walsender shutting down (server stop or restart) with everything sent and
                // confirmed ends with CommandComplete, without CopyDone (WalSndDone).
                backend::Message::CopyDone | backend::Message::CommandComplete(_) => {
                    self.ended = true;
                    return Ok(ReplicationEvent::End);
                }
                backend::Message::NoticeResponse(_) | backend::Message::ParameterStatus(_) => {}
                backend::Message::ErrorResponse(body) => return Err(server_error(&body)),
                other => {
                    return Err(ReplicationError::protocol(format!(
                        "unexpected message in CopyBoth: {}",
                        message_name(&other)
                    )));
                }
            }
        }
    }

    /// Standby status update reporting `flushed` as written, flushed and applied.
    pub async fn send_status(&mut self, flushed: Lsn, reply_requested: bool) -> Result<()> {
        self.send_status_update(flushed, flushed, flushed, reply_requested)
            .await
    }

    /// Standby status update (`r`) with separate positions.
    pub async fn send_status_update(
        &mut self,
        written: Lsn,
        flushed: Lsn,
        applied: Lsn,
        reply_requested: bool,
    ) -> Result<()> {
        let mut msg = BytesMut::with_capacity(34);
        msg.put_u8(b'r');
        msg.put_u64(written);
        msg.put_u64(flushed);
        msg.put_u64(applied);
        msg.put_i64(pg_now_micros());
        msg.put_u8(u8::from(reply_requested));
        frontend::CopyData::new(msg.freeze())
            .map_err(encode_err)?
            .write(&mut self.conn.write_buf);
        self.conn.flush().await
    }

    /// Sends CopyDone and Terminate, then closes the socket.
    pub async fn close(mut self) -> Result<()> {
        if !self.ended {
            frontend::copy_done(&mut self.conn.write_buf);
        }
        frontend::terminate(&mut self.conn.write_buf);
        self.conn.flush().await?;
        self.conn.socket.shutdown().await?;
        Ok(())
    }
}

/// Parses the payload of one CopyData message of the replication stream.
pub fn parse_copy_data(mut data: Bytes) -> Result<ReplicationEvent> {
    let short = |what: &str, len: usize| {
        ReplicationError::protocol(format!("{what} message too short ({len} bytes)"))
    };
    let Some(&tag) = data.first() else {
        return Err(ReplicationError::protocol("empty CopyData"));
    };
    match tag {
        b'w' => {
            if data.len() < 25 {
                return Err(short("XLogData", data.len()));
            }
            data.advance(1);
            let start_lsn = data.get_u64();
            let end_lsn = data.get_u64();
            let server_time = data.get_i64();
            Ok(ReplicationEvent::XLogData {
                start_lsn,
                end_lsn,
                server_time,
                data,
            })
        }
        b'k' => {
            if data.len() != 18 {
                return Err(ReplicationError::protocol(format!(
                    "primary keepalive of {} bytes (expected 18)",
                    data.len()
                )));
            }
            data.advance(1);
            let wal_end = data.get_u64();
            let server_time = data.get_i64();
            let reply_requested = data.get_u8() != 0;
            Ok(ReplicationEvent::Keepalive {
                wal_end,
                server_time,
                reply_requested,
            })
        }
        other => Err(ReplicationError::protocol(format!(
            "unknown replication message tag 0x{other:02x}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    //! The client against a scripted in-process server: authentication methods, framing
    //! limits, malformed bytes and cancel-safety.
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::{Digest, Sha256};
    use tokio::net::TcpListener;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn auth(code: u32, rest: &[u8]) -> Vec<u8> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(rest);
        msg(b'R', &body)
    }

    fn ready_sequence() -> Vec<u8> {
        let mut out = auth(0, b"");
        out.extend(msg(b'S', b"server_version\x0015.0\x00"));
        out.extend(msg(b'K', &[0, 0, 0, 42, 0, 0, 0, 7]));
        out.extend(msg(b'Z', b"I"));
        out
    }

    fn error_response(code: &str, message: &str) -> Vec<u8> {
        let body = format!("SFATAL\0VFATAL\0C{code}\0M{message}\0\0");
        msg(b'E', body.as_bytes())
    }

    async fn read_startup(s: &mut TcpStream) -> Vec<u8> {
        let len = s.read_u32().await.expect("startup length") as usize;
        let mut body = vec![0; len - 4];
        s.read_exact(&mut body).await.expect("startup body");
        body
    }

    async fn read_msg(s: &mut TcpStream) -> (u8, Vec<u8>) {
        let tag = s.read_u8().await.expect("tag");
        let len = s.read_u32().await.expect("length") as usize;
        let mut body = vec![0; len - 4];
        s.read_exact(&mut body).await.expect("body");
        (tag, body)
    }

    /// Binds a listener, runs `server` on the first connection, returns the config.
    async fn fake_server<F, Fut>(server: F) -> (ReplicationConfig, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handle = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("accept");
            server(socket).await;
        });
        let config = ReplicationConfig::new("127.0.0.1", port, "alice")
            .password("s3cret pass")
            .database("db");
        (config, handle)
    }

    #[tokio::test]
    async fn startup_sends_replication_database() {
        let (config, server) = fake_server(|mut s| async move {
            let startup = read_startup(&mut s).await;
            let text = String::from_utf8_lossy(&startup).into_owned();
            assert!(text.contains("replication\0database\0"), "{text:?}");
            assert!(text.contains("user\0alice\0") && text.contains("database\0db\0"));
            s.write_all(&ready_sequence()).await.expect("write");
        })
        .await;
        let client = ReplicationClient::connect(&config).await.expect("connect");
        assert_eq!(client.server_param("server_version"), Some("15.0"));
        assert_eq!(client.backend_pid(), Some(42));
        server.await.expect("server");
    }

    #[tokio::test]
    async fn cleartext_password() {
        let (config, server) = fake_server(|mut s| async move {
            read_startup(&mut s).await;
            s.write_all(&auth(3, b"")).await.expect("write");
            let (tag, body) = read_msg(&mut s).await;
            assert_eq!((tag, body.as_slice()), (b'p', &b"s3cret pass\0"[..]));
            s.write_all(&ready_sequence()).await.expect("write");
        })
        .await;
        ReplicationClient::connect(&config).await.expect("connect");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn md5_password() {
        let (config, server) = fake_server(|mut s| async move {
            read_startup(&mut s).await;
            s.write_all(&auth(5, &[1, 2, 3, 4])).await.expect("write");
            let (tag, body) = read_msg(&mut s).await;
            let expected = md5_hash(b"alice", b"s3cret pass", [1, 2, 3, 4]);
            assert_eq!(tag, b'p');
            assert_eq!(body, format!("{expected}\0").into_bytes());
            s.write_all(&ready_sequence()).await.expect("write");
        })
        .await;
        ReplicationClient::connect(&config).await.expect("connect");
        server.await.expect("server");
    }

    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("hmac key");
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut first = salt.to_vec();
        first.extend_from_slice(&[0, 0, 0, 1]);
        let mut u = hmac(password, &first);
        let mut out = u.clone();
        for _ in 1..iterations {
            u = hmac(password, &u);
            out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
        }
        out
    }

    /// A server-side SCRAM-SHA-256 exchange (RFC 5802/7677) that checks the client proof;
    /// `server_password` lets it disagree with the client.
    async fn scram_server(mut s: TcpStream, server_password: &str, tamper_signature: bool) {
        read_startup(&mut s).await;
        s.write_all(&auth(10, b"SCRAM-SHA-256\0\0"))
            .await
            .expect("write");
        let (tag, body) = read_msg(&mut s).await;
        assert_eq!(tag, b'p');
        let nul = body.iter().position(|&b| b == 0).expect("mechanism");
        assert_eq!(&body[..nul], b"SCRAM-SHA-256");
        let client_first = String::from_utf8(body[nul + 5..].to_vec()).expect("utf8");
        let bare = client_first
            .strip_prefix("n,,")
            .expect("gs2 header (no binding)");
        let client_nonce = bare.split(",r=").nth(1).expect("client nonce");
        let salt = b"weir-salt-123456";
        let nonce = format!("{client_nonce}serverpart");
        let server_first = format!("r={nonce},s={},i=4096", B64.encode(salt));
        s.write_all(&auth(11, server_first.as_bytes()))
            .await
            .expect("write");
        let (tag, body) = read_msg(&mut s).await;
        assert_eq!(tag, b'p');
        let client_final = String::from_utf8(body).expect("utf8");
        let (without_proof, proof) = client_final.rsplit_once(",p=").expect("proof");
        assert_eq!(without_proof, format!("c=biws,r={nonce}"));
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let salted = salted_password(server_password.as_bytes(), salt, 4096);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(&client_key);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let expected: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        if B64.decode(proof).expect("b64 proof") != expected {
            s.write_all(&error_response("28P01", "password authentication failed"))
                .await
                .expect("write");
            return;
        }
        let server_key = hmac(&salted, b"Server Key");
        let mut server_signature = hmac(&server_key, auth_message.as_bytes());
        if tamper_signature {
            server_signature[0] ^= 1;
        }
        let server_final = format!("v={}", B64.encode(server_signature));
        s.write_all(&auth(12, server_final.as_bytes()))
            .await
            .expect("write");
        s.write_all(&ready_sequence()).await.expect("write");
    }

    #[tokio::test]
    async fn scram_sha_256() {
        let (config, server) =
            fake_server(|s| async move { scram_server(s, "s3cret pass", false).await }).await;
        ReplicationClient::connect(&config).await.expect("connect");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn scram_wrong_password_is_server_error() {
        let (config, server) =
            fake_server(|s| async move { scram_server(s, "other", false).await }).await;
        let err = ReplicationClient::connect(&config)
            .await
            .expect_err("bad password");
        assert_eq!(err.sqlstate(), Some("28P01"), "{err}");
        assert!(!err.is_connection_lost());
        server.await.expect("server");
    }

    #[tokio::test]
    async fn scram_bad_server_signature_is_rejected() {
        let (config, server) =
            fake_server(|s| async move { scram_server(s, "s3cret pass", true).await }).await;
        let err = ReplicationClient::connect(&config)
            .await
            .expect_err("forged server");
        assert!(matches!(err, ReplicationError::Auth(_)), "{err:?}");
        server.await.expect("server");
    }

    #[tokio::test]
    async fn password_required_but_missing() {
        let (mut config, server) = fake_server(|mut s| async move {
            read_startup(&mut s).await;
            s.write_all(&auth(3, b"")).await.expect("write");
        })
        .await;
        config.password = None;
        let err = ReplicationClient::connect(&config)
            .await
            .expect_err("no password");
        assert!(matches!(err, ReplicationError::Auth(_)), "{err:?}");
        server.await.expect("server");
    }

    #[test]
    fn password_is_redacted() {
        let config = ReplicationConfig::new("h", 1, "u").password("hunter2");
        let shown = format!(
            "{config:?} {} {:?}",
            config.password.as_ref().expect("pw"),
            config.password
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[tokio::test]
    async fn oversized_frame_is_refused() {
        let (mut config, server) = fake_server(|mut s| async move {
            read_startup(&mut s).await;
            let mut huge = vec![b'R'];
            huge.extend_from_slice(&0x7FFF_FFF0u32.to_be_bytes());
            s.write_all(&huge).await.expect("write");
            // Keep the socket open so only the cap can end the read.
            let _ = s.read_u8().await;
        })
        .await;
        config.max_frame_bytes = 1 << 20;
        let err = ReplicationClient::connect(&config)
            .await
            .expect_err("too large");
        assert!(
            matches!(err, ReplicationError::FrameTooLarge { .. }),
            "{err:?}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn garbage_and_truncation_never_panic() {
        for bytes in [
            b"R\0\0\0\x02".to_vec(),           // length < 4
            b"\x01\0\0\0\x04".to_vec(),        // unknown tag
            b"R\0\0\0\x08\0\0\0\x05".to_vec(), // MD5 request without salt
            b"R\0\0\0\x0c\0\0\0".to_vec(),     // EOF mid-frame
            b"E\0\0\0\x06SX".to_vec(),         // unterminated error fields
        ] {
            let (config, server) = fake_server(move |mut s| async move {
                read_startup(&mut s).await;
                s.write_all(&bytes).await.expect("write");
            })
            .await;
            let err = ReplicationClient::connect(&config)
                .await
                .expect_err("garbage");
            assert!(
                matches!(
                    err,
                    ReplicationError::Protocol(_)
                        | ReplicationError::ConnectionClosed
                        | ReplicationError::Server { .. }
                ),
                "{err:?}"
            );
            server.await.expect("server");
        }
    }

    #[test]
    fn copy_data_parsing() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&1u64.to_be_bytes());
        w.extend_from_slice(&2u64.to_be_bytes());
        w.extend_from_slice(&3i64.to_be_bytes());
        w.extend_from_slice(b"payload");
        assert_eq!(
            parse_copy_data(Bytes::from(w.clone())).expect("w"),
            ReplicationEvent::XLogData {
                start_lsn: 1,
                end_lsn: 2,
                server_time: 3,
                data: Bytes::from_static(b"payload")
            }
        );
        let mut k = vec![b'k'];
        k.extend_from_slice(&9u64.to_be_bytes());
        k.extend_from_slice(&8i64.to_be_bytes());
        k.push(1);
        assert_eq!(
            parse_copy_data(Bytes::from(k.clone())).expect("k"),
            ReplicationEvent::Keepalive {
                wal_end: 9,
                server_time: 8,
                reply_requested: true
            }
        );
        // Every truncation of both, and unknown tags, are errors rather than panics.
        for msg in [&w[..], &k[..]] {
            for len in 0..msg.len() {
                if msg[0] == b'w' && len >= 25 {
                    continue;
                }
                assert!(parse_copy_data(Bytes::copy_from_slice(&msg[..len])).is_err());
            }
        }
        assert!(parse_copy_data(Bytes::from_static(b"x123")).is_err());
    }

    #[test]
    fn lsn_text() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("0/0"), Some(0));
        for bad in ["", "/", "1/", "/1", "x/1", "123456789/0", "1/2/3"] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn stream_next_is_cancel_safe_and_status_is_well_formed() {
        let (config, server) = fake_server(|mut s| async move {
            read_startup(&mut s).await;
            s.write_all(&ready_sequence()).await.expect("write");
            let (tag, body) = read_msg(&mut s).await;
            assert_eq!(tag, b'Q');
            let sql = String::from_utf8(body).expect("utf8");
            assert_eq!(
                sql,
                "START_REPLICATION SLOT s1 LOGICAL 0/10 (proto_version '1', publication_names '\"p''x\"')\0"
            );
            s.write_all(&msg(b'W', &[0, 0, 0])).await.expect("write");
            // Two XLogData frames dribbled out a few bytes at a time.
            let mut frames = Vec::new();
            for i in 0..2u64 {
                let mut w = vec![b'w'];
                w.extend_from_slice(&(100 + i).to_be_bytes());
                w.extend_from_slice(&(200 + i).to_be_bytes());
                w.extend_from_slice(&0i64.to_be_bytes());
                w.extend_from_slice(&[i as u8; 100]);
                frames.extend(msg(b'd', &w));
            }
            for chunk in frames.chunks(7) {
                s.write_all(chunk).await.expect("write");
                s.flush().await.expect("flush");
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            let (tag, body) = read_msg(&mut s).await;
            assert_eq!((tag, body.len(), body[0]), (b'd', 34, b'r'));
            assert_eq!(&body[1..9], &201u64.to_be_bytes());
            assert_eq!(&body[9..17], &201u64.to_be_bytes());
            assert_eq!(&body[17..25], &201u64.to_be_bytes());
            assert_eq!(body[33], 1);
            s.write_all(&msg(b'c', b"")).await.expect("write");
        })
        .await;
        let client = ReplicationClient::connect(&config).await.expect("connect");
        let mut stream = client
            .start_logical_replication(
                "s1",
                0x10,
                &[("proto_version", "1"), ("publication_names", "\"p'x\"")],
            )
            .await
            .expect("start");
        let mut got = Vec::new();
        let mut cancelled = 0;
        while got.len() < 2 {
            match tokio::time::timeout(Duration::from_millis(1), stream.next()).await {
                Ok(event) => got.push(event.expect("event")),
                Err(_) => cancelled += 1,
            }
        }
        assert!(cancelled > 0, "the test did not exercise cancellation");
        for (i, event) in got.iter().enumerate() {
            let ReplicationEvent::XLogData {
                start_lsn, data, ..
            } = event
            else {
                panic!("{event:?}")
            };
            assert_eq!(*start_lsn, 100 + i as u64);
            assert_eq!(data.as_ref(), &[i as u8; 100][..]);
        }
        stream.send_status(201, true).await.expect("status");
        assert_eq!(stream.next().await.expect("end"), ReplicationEvent::End);
        assert_eq!(stream.next().await.expect("end"), ReplicationEvent::End);
        server.await.expect("server");
    }

    #[test]
    fn names_are_validated() {
        assert!(check_slot_name("ok_slot_1").is_ok());
        for bad in ["", "Upper", "semi;colon", "sp ace", &"x".repeat(64)] {
            assert!(check_slot_name(bad).is_err(), "{bad}");
        }
        assert!(check_option_name("proto_version").is_ok());
        assert!(check_option_name("a'b").is_err());
    }
}
