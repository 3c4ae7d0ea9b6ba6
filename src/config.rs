//! The pipeline file: TOML with `${VAR}` expansion, validated with errors that name
//! `file:line`, the key, and what to do.
//!
//! Parsing is two passes over the same text: the first reads only the connector `type`s, the
//! second deserialises each section straight into the connector's own config struct (chosen
//! by that type), so every error keeps the exact span of the offending key or value.

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::path::{Path, PathBuf};

/// A validated pipeline file.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Where it was read from.
    pub file: PathBuf,
    /// `[a-z0-9_]+`: names the slot, publication, offsets and the staging log directory.
    pub name: String,
    /// The staging log lives in `<data_dir>/<name>`.
    pub data_dir: PathBuf,
    /// The one source.
    pub source: SourceConfig,
    /// One or more sinks, names unique.
    pub sinks: Vec<SinkConfig>,
    /// Staging log settings.
    pub log: LogConfig,
    /// The operations plane (`[admin]`).
    pub admin: AdminConfig,
}

impl PipelineConfig {
    /// The staging log's directory.
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join(&self.name)
    }
}

/// `[source]`, by `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// `type = "datagen"`.
    Datagen(DatagenConfig),
    /// `type = "postgres"`.
    Postgres(PostgresConfig),
    /// `type = "mysql"` (MySQL 8, MariaDB 10.5+).
    Mysql(MysqlConfig),
}

/// `[source] type = "mysql"`: the binlog.
#[derive(Debug, Clone, PartialEq)]
pub struct MysqlConfig {
    /// Connection, tables and replica server id.
    pub source: weir_mysql::MysqlSourceConfig,
    /// Whether to snapshot existing rows first.
    pub snapshot: SnapshotMode,
    /// Parallel snapshot readers (connections).
    pub snapshot_workers: u32,
    /// Rows per snapshot chunk.
    pub snapshot_chunk_rows: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MysqlSection {
    #[serde(rename = "type")]
    _type: String,
    url: Expanded,
    tables: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    server_id: Option<u32>,
    #[serde(default)]
    snapshot: SnapshotMode,
    #[serde(default = "default_snapshot_workers")]
    snapshot_workers: u32,
    #[serde(default = "default_snapshot_chunk_rows")]
    snapshot_chunk_rows: u64,
}

impl SourceConfig {
    /// The `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Datagen(_) => "datagen",
            SourceConfig::Postgres(_) => "postgres",
            SourceConfig::Mysql(_) => "mysql",
        }
    }
}

/// The source types this build has.
pub const SOURCE_TYPES: &[&str] = &["datagen", "postgres", "mysql"];
/// Source types SPEC.md names that land in later releases.
const PLANNED_SOURCE_TYPES: &[&str] = &[];
/// The sink types this build has.
pub const SINK_TYPES: &[&str] = &["file", "postgres", "mysql", "kafka"];
const PLANNED_SINK_TYPES: &[&str] = &[];

/// `[source] type = "datagen"`: deterministic synthetic changes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatagenConfig {
    #[serde(rename = "type")]
    _type: String,
    /// Tables `datagen.t0` .. `t{n-1}`.
    #[serde(default = "DatagenConfig::default_table_count")]
    pub table_count: PositiveU32,
    /// Total change events; then the source is caught up.
    #[serde(default = "DatagenConfig::default_events")]
    pub events: u64,
    /// Events per source transaction.
    #[serde(default = "DatagenConfig::default_txn_size")]
    pub txn_size: PositiveU64,
    /// Approximate payload bytes per row.
    #[serde(default = "DatagenConfig::default_row_bytes")]
    pub row_bytes: u32,
    /// Kind of changes.
    #[serde(default)]
    pub mix: Mix,
    /// Events per second, 0 = as fast as possible.
    #[serde(default)]
    pub rate: u64,
    /// Same seed, same events.
    #[serde(default = "DatagenConfig::default_seed")]
    pub seed: u64,
}

impl DatagenConfig {
    fn default_table_count() -> PositiveU32 {
        PositiveU32(2)
    }
    fn default_events() -> u64 {
        1_000_000
    }
    fn default_txn_size() -> PositiveU64 {
        PositiveU64(100)
    }
    fn default_row_bytes() -> u32 {
        200
    }
    fn default_seed() -> u64 {
        1
    }

    /// A config from its values (tests, benchmarks).
    pub fn new(
        table_count: u32,
        events: u64,
        txn_size: u64,
        row_bytes: u32,
        mix: Mix,
        seed: u64,
    ) -> Self {
        DatagenConfig {
            _type: "datagen".into(),
            table_count: PositiveU32(table_count.max(1)),
            events,
            txn_size: PositiveU64(txn_size.max(1)),
            row_bytes,
            mix,
            rate: 0,
            seed,
        }
    }
}

/// `[source] type = "postgres"`: logical replication with pgoutput.
#[derive(Clone, PartialEq)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/db` (password redacted in `Debug`).
    pub url: String,
    /// Globs over `schema.table`.
    pub tables: Vec<String>,
    /// Globs to leave out.
    pub exclude: Vec<String>,
    /// Replication slot (default `weir_<name>`).
    pub slot: String,
    /// Publication (default `weir_<name>`).
    pub publication: String,
    /// Whether to snapshot existing rows first.
    pub snapshot: SnapshotMode,
    /// Parallel snapshot readers (connections).
    pub snapshot_workers: u32,
    /// Rows per snapshot chunk.
    pub snapshot_chunk_rows: u64,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("tables", &self.tables)
            .field("exclude", &self.exclude)
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .field("snapshot", &self.snapshot)
            .field("snapshot_workers", &self.snapshot_workers)
            .field("snapshot_chunk_rows", &self.snapshot_chunk_rows)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostgresSection {
    #[serde(rename = "type")]
    _type: String,
    url: Expanded,
    tables: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    snapshot: SnapshotMode,
    slot: Option<Identifier>,
    publication: Option<Identifier>,
    #[serde(default = "default_snapshot_workers")]
    snapshot_workers: u32,
    #[serde(default = "default_snapshot_chunk_rows")]
    snapshot_chunk_rows: u64,
}

/// The snapshot keys every database source shares.
fn check_snapshot_settings(workers: u32, chunk_rows: u64) -> Result<(), String> {
    if !(1..=64).contains(&workers) {
        return Err(format!(
            "snapshot_workers = {workers} is out of range: use 1 to 64"
        ));
    }
    if chunk_rows == 0 {
        return Err("snapshot_chunk_rows must be at least 1 (default 50000)".into());
    }
    Ok(())
}

fn default_snapshot_workers() -> u32 {
    4
}

fn default_snapshot_chunk_rows() -> u64 {
    50_000
}

/// `snapshot = "initial" | "never" | "only"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotMode {
    /// Snapshot existing rows when the pipeline first starts, then stream.
    #[default]
    Initial,
    /// Stream only the changes committed from the first start on.
    Never,
    /// Snapshot, then stop (no streaming).
    Only,
}

/// A slot or publication name: `[a-z0-9_]{1,63}`.
struct Identifier(String);
impl<'de> Deserialize<'de> for Identifier {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty()
            || s.len() > 63
            || !s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(de::Error::custom(format!(
                "{s:?} is not a valid slot or publication name: use 1 to 63 characters from a-z, 0-9 and _"
            )));
        }
        Ok(Identifier(s))
    }
}

/// Datagen's change mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mix {
    /// Inserts only.
    #[default]
    Insert,
    /// Inserts, updates and deletes over existing ids.
    Mixed,
}

/// `[[sinks]]`.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Unique name.
    pub name: String,
    /// Type-specific settings.
    pub kind: SinkKind,
}

/// A sink's type-specific settings.
#[derive(Debug, Clone)]
pub enum SinkKind {
    /// `type = "file"`.
    File(weir_file::FileSinkConfig),
    /// `type = "postgres"`.
    Postgres(weir_postgres::sink::PostgresSinkConfig),
    /// `type = "mysql"`.
    Mysql(weir_mysql::sink::MysqlSinkConfig),
    /// `type = "kafka"`.
    Kafka(weir_kafka::KafkaSinkConfig),
}

impl SinkKind {
    /// The local directory the sink writes, for sinks that write files.
    pub fn directory(&self) -> Option<&Path> {
        match self {
            SinkKind::File(f) => Some(&f.path),
            SinkKind::Postgres(_) | SinkKind::Mysql(_) | SinkKind::Kafka(_) => None,
        }
    }

    /// The `type` name.
    pub fn kind(&self) -> &'static str {
        match self {
            SinkKind::File(_) => "file",
            SinkKind::Postgres(_) => "postgres",
            SinkKind::Mysql(_) => "mysql",
            SinkKind::Kafka(_) => "kafka",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSinkSection {
    name: SinkName,
    #[serde(rename = "type")]
    _type: String,
    path: Expanded,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostgresSinkSection {
    name: SinkName,
    #[serde(rename = "type")]
    _type: String,
    url: Expanded,
    schema: Option<String>,
    #[serde(default)]
    tables: std::collections::BTreeMap<String, String>,
    batch_rows: Option<PositiveU64>,
    batch_bytes: Option<ByteSize>,
    copy_streams: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MysqlSinkSection {
    name: SinkName,
    #[serde(rename = "type")]
    _type: String,
    url: Expanded,
    schema: Option<String>,
    #[serde(default)]
    tables: std::collections::BTreeMap<String, String>,
    batch_rows: Option<PositiveU64>,
    batch_bytes: Option<ByteSize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaSinkSection {
    name: SinkName,
    #[serde(rename = "type")]
    _type: String,
    brokers: Expanded,
    topic: Option<String>,
    delivery: Option<weir_kafka::Delivery>,
    tombstones: Option<bool>,
    transaction_topic: Option<String>,
    partitions: Option<PositiveU32>,
    replication_factor: Option<PositiveU32>,
    create_topics: Option<bool>,
    offsets_topic: Option<String>,
    #[serde(default)]
    properties: std::collections::BTreeMap<String, PropertyValue>,
}

/// A librdkafka property value: a string (with `${VAR}` expanded), number or boolean.
#[derive(Deserialize)]
#[serde(untagged)]
enum PropertyValue {
    S(Expanded),
    I(i64),
    F(f64),
    B(bool),
}

impl PropertyValue {
    fn into_string(self) -> String {
        match self {
            PropertyValue::S(s) => s.0,
            PropertyValue::I(i) => i.to_string(),
            PropertyValue::F(f) => f.to_string(),
            PropertyValue::B(b) => b.to_string(),
        }
    }
}

/// `[log]`: the staging log (optional section).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// The source pauses (at a transaction boundary) while the log holds more than this
    /// many bytes not yet applied by every sink. Integer bytes or `"512MiB"`, `"4GiB"`.
    #[serde(default = "LogConfig::default_max_bytes")]
    pub max_bytes: ByteSize,
}

impl LogConfig {
    fn default_max_bytes() -> ByteSize {
        ByteSize(4 << 30)
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_bytes: Self::default_max_bytes(),
        }
    }
}

/// `[admin]`: the operations plane (optional section).
#[derive(Clone, PartialEq)]
pub struct AdminConfig {
    /// Admin SQL over the PostgreSQL wire protocol.
    pub listen: Option<std::net::SocketAddr>,
    /// The admin SQL password (`${VAR}` expanded; redacted in `Debug`). Set when `listen` is.
    pub password: Option<String>,
    /// HTTP: `/`, `/metrics`, `/healthz`, `/status`.
    pub metrics: Option<std::net::SocketAddr>,
    /// A sink with unapplied records and no progress for this long is unhealthy.
    pub stall_seconds: u64,
}

impl AdminConfig {
    /// The default `stall_seconds`.
    pub const DEFAULT_STALL_SECONDS: u64 = 300;
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            password: None,
            metrics: None,
            stall_seconds: Self::DEFAULT_STALL_SECONDS,
        }
    }
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("password", &self.password.as_ref().map(|_| "****"))
            .field("metrics", &self.metrics)
            .field("stall_seconds", &self.stall_seconds)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminSection {
    listen: Option<Address>,
    password: Option<Expanded>,
    metrics: Option<Address>,
    stall_seconds: Option<PositiveU64>,
}

impl<'de> Deserialize<'de> for AdminConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = AdminSection::deserialize(d)?;
        let password = s.password.map(|p| p.0);
        if s.listen.is_some() && password.as_deref().is_none_or(str::is_empty) {
            return Err(de::Error::custom(
                "`listen` is set but `password` is missing or empty: add password = \"${WEIR_ADMIN_PASSWORD}\" \
                 (admin SQL always requires a password)",
            ));
        }
        Ok(AdminConfig {
            listen: s.listen.map(|a| a.0),
            password,
            metrics: s.metrics.map(|a| a.0),
            stall_seconds: s
                .stall_seconds
                .map_or(AdminConfig::DEFAULT_STALL_SECONDS, |n| n.0),
        })
    }
}

/// A listen address `host:port` (an IP address; `localhost` is read as 127.0.0.1).
struct Address(std::net::SocketAddr);
impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Expanded::deserialize(d)?.0;
        let s = raw.trim();
        let parsed = match s.strip_prefix("localhost:") {
            Some(port) => format!("127.0.0.1:{port}").parse(),
            None => s.parse::<std::net::SocketAddr>(),
        };
        parsed.map(Address).map_err(|_| {
            de::Error::custom(format!(
                "{s:?} is not a listen address: write IP:PORT, e.g. \"127.0.0.1:9187\" \
                 (or \"[::1]:9187\"; use 0.0.0.0 only to listen on every interface)"
            ))
        })
    }
}

/// A byte count, from an integer or a string with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        let parse = |s: &str| -> Option<u64> {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (n, unit) = s.split_at(split);
            let n: u64 = n.parse().ok()?;
            let mult: u64 = match unit.trim() {
                "" | "B" => 1,
                "KB" => 1000,
                "KiB" => 1 << 10,
                "MB" => 1_000_000,
                "MiB" => 1 << 20,
                "GB" => 1_000_000_000,
                "GiB" => 1 << 30,
                "TB" => 1_000_000_000_000,
                "TiB" => 1 << 40,
                _ => return None,
            };
            n.checked_mul(mult)
        };
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse(&s).map(ByteSize).ok_or_else(|| {
                de::Error::custom(format!(
                    "{s:?} is not a size; write bytes as an integer or e.g. \"512MiB\", \"4GiB\""
                ))
            }),
        }
    }
}

/// An integer of at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositiveU64(pub u64);
impl<'de> Deserialize<'de> for PositiveU64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u64::deserialize(d)? {
            0 => Err(de::Error::custom("must be at least 1")),
            n => Ok(PositiveU64(n)),
        }
    }
}

/// An integer of at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositiveU32(pub u32);
impl<'de> Deserialize<'de> for PositiveU32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u32::deserialize(d)? {
            0 => Err(de::Error::custom("must be at least 1")),
            n => Ok(PositiveU32(n)),
        }
    }
}

/// A string with `${VAR}` taken from the environment (`$$` is a literal `$`).
struct Expanded(String);

impl<'de> Deserialize<'de> for Expanded {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        expand_env(&raw, |k| std::env::var(k).ok())
            .map(Expanded)
            .map_err(de::Error::custom)
    }
}

/// Expands `${VAR}` from `lookup`; `$$` is a literal `$`.
pub fn expand_env(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| {
                "unclosed `${`: write `${NAME}`, or `$$` for a literal `$`".to_string()
            })?;
            let name = &body[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{name}}}` is not a valid environment variable reference"
                ));
            }
            let value = lookup(name).ok_or_else(|| {
                format!("environment variable {name} is not set; export it before running weir")
            })?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A name matching `[a-z0-9_]+`.
struct PipelineName(String);
impl<'de> Deserialize<'de> for PipelineName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty()
            || s.len() > 48
            || !s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(de::Error::custom(format!(
                "{s:?} is not a valid pipeline name: use 1 to 48 characters from a-z, 0-9 and _ \
                 (it names replication slots and directories)"
            )));
        }
        Ok(PipelineName(s))
    }
}

/// A sink name: `[a-z0-9_-]+`.
struct SinkName(String);
impl<'de> Deserialize<'de> for SinkName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty()
            || s.len() > 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(de::Error::custom(format!(
                "{s:?} is not a valid sink name: use 1 to 64 characters from a-z, 0-9, _ and -"
            )));
        }
        Ok(SinkName(s))
    }
}

/// A configuration error, located in the file.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The pipeline file.
    pub file: String,
    /// 1-based line, where known.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

/// Reads and validates a pipeline file.
pub fn load(path: &Path) -> Result<PipelineConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        line: None,
        message: format!("cannot read the pipeline file: {e}"),
    })?;
    parse(path, &text)
}

/// Validates pipeline-file text (`path` is used for messages and to resolve relative paths).
pub fn parse(path: &Path, text: &str) -> Result<PipelineConfig, ConfigError> {
    let file = path.display().to_string();
    let err_at = |span: Option<std::ops::Range<usize>>, message: String| ConfigError {
        file: file.clone(),
        line: span.map(|s| line_of(text, s.start)),
        message,
    };
    let toml_err = |e: toml::de::Error| {
        let span = e.span();
        let message = describe(text, span.clone(), e.message());
        err_at(span, message)
    };

    // Pass 1: connector types only.
    #[derive(Deserialize)]
    struct Pass1 {
        source: Option<toml::Spanned<TypeOnly>>,
        sinks: Option<toml::Spanned<Vec<toml::Spanned<TypeOnly>>>>,
    }
    let pass1: Pass1 = toml::from_str(text).map_err(toml_err)?;
    let source = pass1.source.ok_or_else(|| {
        err_at(
            None,
            "missing the [source] section; see SPEC.md for an example".into(),
        )
    })?;
    let source_type = check_type(&source, "[source]", SOURCE_TYPES, PLANNED_SOURCE_TYPES)
        .map_err(|(s, m)| err_at(s, m))?;
    let sinks = pass1
        .sinks
        .ok_or_else(|| err_at(None, "no [[sinks]]: add at least one sink, e.g. [[sinks]] name = \"files\" type = \"file\" path = \"./out\"".into()))?;
    if sinks.get_ref().is_empty() {
        return Err(err_at(
            Some(sinks.span()),
            "`sinks` is empty: add at least one [[sinks]] table".into(),
        ));
    }
    let mut sink_types = Vec::new();
    for s in sinks.get_ref() {
        sink_types.push(
            check_type(s, "[[sinks]]", SINK_TYPES, PLANNED_SINK_TYPES)
                .map_err(|(s, m)| err_at(s, m))?,
        );
    }

    // Pass 2: everything, typed.
    let de = toml::Deserializer::parse(text).map_err(toml_err)?;
    let doc = DocSeed {
        source_type: &source_type,
        sink_types: &sink_types,
    }
    .deserialize(de)
    .map_err(toml_err)?;

    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let resolve = |p: PathBuf| {
        if p.is_absolute() {
            p
        } else {
            normalize(&base.join(p))
        }
    };
    let name = doc.name.ok_or_else(|| {
        err_at(
            Some(0..0),
            "missing key `name` at the top of the file (e.g. name = \"shop\")".into(),
        )
    })?;
    let mut source = doc.source.expect("pass 1 found [source]");
    if let SourceConfig::Postgres(pg) = &mut source {
        if pg.slot.is_empty() {
            pg.slot = format!("weir_{name}");
        }
        if pg.publication.is_empty() {
            pg.publication = format!("weir_{name}");
        }
    }
    let mut sinks = doc.sinks;
    for s in &mut sinks {
        if let SinkKind::File(f) = &mut s.kind {
            f.path = resolve(std::mem::take(&mut f.path));
        }
    }
    for (i, s) in sinks.iter().enumerate() {
        if sinks[..i].iter().any(|o| o.name == s.name) {
            let span = sinks_span(text, i);
            return Err(err_at(
                span,
                format!(
                    "two sinks are named {:?}; sink names must be unique",
                    s.name
                ),
            ));
        }
    }
    let files: Vec<_> = sinks
        .iter()
        .filter_map(|s| s.kind.directory().map(|p| (&s.name, p)))
        .collect();
    for (i, (n, p)) in files.iter().enumerate() {
        if let Some((o, _)) = files[..i].iter().find(|(_, q)| q == p) {
            return Err(err_at(
                sinks_span(text, i),
                format!(
                    "sinks {o:?} and {n:?} write to the same path {}; give each file sink its own directory",
                    p.display()
                ),
            ));
        }
    }
    Ok(PipelineConfig {
        file: path.to_path_buf(),
        name,
        data_dir: resolve(doc.data_dir.unwrap_or_else(|| PathBuf::from("./weir-data"))),
        source,
        sinks,
        log: doc.log.unwrap_or_default(),
        admin: doc.admin.unwrap_or_default(),
    })
}

type Span = Option<std::ops::Range<usize>>;

/// Removes `.` and `name/..` pairs without touching the filesystem (`examples/../out` is `out`).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        out
    }
}

#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: Option<toml::Spanned<String>>,
}

fn check_type(
    section: &toml::Spanned<TypeOnly>,
    what: &str,
    known: &[&str],
    planned: &[&str],
) -> Result<String, (Span, String)> {
    let Some(kind) = &section.get_ref().kind else {
        return Err((
            Some(section.span()),
            format!("{what} has no `type`; add type = one of {}", quoted(known)),
        ));
    };
    let (name, span) = (kind.get_ref().clone(), kind.span());
    if known.contains(&name.as_str()) {
        return Ok(name);
    }
    if planned.contains(&name.as_str()) {
        return Err((
            Some(span),
            format!(
                "{what} type {name:?} is not available in this weir build yet; available: {}",
                quoted(known)
            ),
        ));
    }
    let hint = closest(&name, known)
        .map(|c| format!(" (did you mean {c:?}?)"))
        .unwrap_or_default();
    Err((
        Some(span),
        format!(
            "unknown {what} type {name:?}{hint}; available: {}",
            quoted(known)
        ),
    ))
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// The span of the `i`-th `[[sinks]]` header.
fn sinks_span(text: &str, i: usize) -> Span {
    let mut seen = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with("[[sinks]]") {
            if seen == i {
                return Some(offset..offset);
            }
            seen += 1;
        }
        offset += line.len();
    }
    None
}

/// Turns a toml/serde message into one that names the section and key, and suggests the
/// closest known key for a typo.
fn describe(text: &str, span: Span, message: &str) -> String {
    let mut section = String::from("the top level");
    let mut key = None;
    if let Some(span) = &span {
        let start = span.start.min(text.len());
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line = text[line_start..].lines().next().unwrap_or("");
        if let Some((k, _)) = line.split_once('=') {
            key = Some(k.trim().trim_matches('"').to_string());
        }
        for l in text[..line_start].lines().rev() {
            let t = l.trim();
            if t.starts_with('[') {
                section = t.split('#').next().unwrap_or(t).trim().to_string();
                break;
            }
        }
        if line.trim_start().starts_with('[') {
            section = line
                .trim()
                .split('#')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            key = None;
        }
    }
    let message = message.trim();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
        let hint = closest(field, &expected)
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        return format!(
            "unknown key `{field}` in {section}{hint}; known keys: {}",
            expected.join(", ")
        );
    }
    match key {
        Some(k) => format!("in {section}, key `{k}`: {message}"),
        None => format!("in {section}: {message}"),
    }
}

/// The candidate closest to `word` by edit distance, if close enough to be a typo.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let dist = |a: &str, b: &str| {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1; b.len() + 1];
            for (j, cb) in b.iter().enumerate() {
                cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1);
            }
            prev = cur;
        }
        prev[b.len()]
    };
    candidates
        .iter()
        .map(|c| (dist(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

struct Doc {
    name: Option<String>,
    data_dir: Option<PathBuf>,
    source: Option<SourceConfig>,
    sinks: Vec<SinkConfig>,
    log: Option<LogConfig>,
    admin: Option<AdminConfig>,
}

const TOP_KEYS: &[&str] = &["name", "data_dir", "source", "sinks", "log", "admin"];

struct DocSeed<'a> {
    source_type: &'a str,
    sink_types: &'a [String],
}

impl<'de> DeserializeSeed<'de> for DocSeed<'_> {
    type Value = Doc;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Doc, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocSeed<'_> {
    type Value = Doc;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a pipeline file")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc, A::Error> {
        let mut doc = Doc {
            name: None,
            data_dir: None,
            source: None,
            sinks: Vec::new(),
            log: None,
            admin: None,
        };
        while let Some(key) = map.next_key_seed(KeySeed(TOP_KEYS))? {
            match key {
                "name" => doc.name = Some(map.next_value::<PipelineName>()?.0),
                "data_dir" => doc.data_dir = Some(PathBuf::from(map.next_value::<Expanded>()?.0)),
                "source" => {
                    doc.source = Some(match self.source_type {
                        "datagen" => SourceConfig::Datagen(map.next_value::<DatagenConfig>()?),
                        "postgres" => {
                            let s = map.next_value::<PostgresSection>()?;
                            check_snapshot_settings(s.snapshot_workers, s.snapshot_chunk_rows)
                                .map_err(de::Error::custom)?;
                            if s.tables.is_empty() {
                                return Err(de::Error::custom(
                                    "`tables` is empty: list the tables to capture, e.g. tables = [\"public.*\"]",
                                ));
                            }
                            // Names default to weir_<pipeline>, filled in once the name is known.
                            SourceConfig::Postgres(PostgresConfig {
                                url: s.url.0,
                                tables: s.tables,
                                exclude: s.exclude,
                                slot: s.slot.map(|i| i.0).unwrap_or_default(),
                                publication: s.publication.map(|i| i.0).unwrap_or_default(),
                                snapshot: s.snapshot,
                                snapshot_workers: s.snapshot_workers,
                                snapshot_chunk_rows: s.snapshot_chunk_rows,
                            })
                        }
                        "mysql" => {
                            let s = map.next_value::<MysqlSection>()?;
                            check_snapshot_settings(s.snapshot_workers, s.snapshot_chunk_rows)
                                .map_err(de::Error::custom)?;
                            if s.tables.is_empty() {
                                return Err(de::Error::custom(
                                    "`tables` is empty: list the tables to capture, e.g. tables = [\"shop.*\"]",
                                ));
                            }
                            if s.server_id == Some(0) {
                                return Err(de::Error::custom(
                                    "server_id = 0 is not allowed: a replica needs a non-zero id unique among the source's servers and replicas",
                                ));
                            }
                            SourceConfig::Mysql(MysqlConfig {
                                source: weir_mysql::MysqlSourceConfig {
                                    url: s.url.0,
                                    tables: s.tables,
                                    exclude: s.exclude,
                                    server_id: s.server_id,
                                },
                                snapshot: s.snapshot,
                                snapshot_workers: s.snapshot_workers,
                                snapshot_chunk_rows: s.snapshot_chunk_rows,
                            })
                        }
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown source type {other:?}"
                            )));
                        }
                    })
                }
                "sinks" => doc.sinks = map.next_value_seed(SinksSeed(self.sink_types))?,
                "log" => doc.log = Some(map.next_value::<LogConfig>()?),
                "admin" => doc.admin = Some(map.next_value::<AdminConfig>()?),
                _ => unreachable!("KeySeed admits only TOP_KEYS"),
            }
        }
        Ok(doc)
    }
}

/// Deserialises a key, admitting only `known` (so an unknown key's error carries its span).
struct KeySeed(&'static [&'static str]);
impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = &'static str;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'static str, D::Error> {
        let key = String::deserialize(d)?;
        self.0
            .iter()
            .find(|k| **k == key)
            .copied()
            .ok_or_else(|| de::Error::unknown_field(&key, self.0))
    }
}

struct SinksSeed<'a>(&'a [String]);
impl<'de> DeserializeSeed<'de> for SinksSeed<'_> {
    type Value = Vec<SinkConfig>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<SinkConfig>, D::Error> {
        d.deserialize_seq(self)
    }
}
impl<'de> Visitor<'de> for SinksSeed<'_> {
    type Value = Vec<SinkConfig>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of [[sinks]] tables")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<SinkConfig>, A::Error> {
        let mut out = Vec::new();
        for kind in self.0 {
            let sink = match kind.as_str() {
                "file" => seq.next_element::<FileSinkSection>()?.map(|s| SinkConfig {
                    name: s.name.0,
                    kind: SinkKind::File(weir_file::FileSinkConfig {
                        path: PathBuf::from(s.path.0),
                    }),
                }),
                "postgres" => seq.next_element::<PostgresSinkSection>()?.map(|s| {
                    let mut cfg = weir_postgres::sink::PostgresSinkConfig::new(s.url.0);
                    if let Some(schema) = s.schema {
                        cfg.schema = schema;
                    }
                    cfg.tables = s.tables;
                    if let Some(n) = s.batch_rows {
                        cfg.batch_rows = n.0 as usize;
                    }
                    if let Some(n) = s.batch_bytes {
                        cfg.batch_bytes = n.0 as usize;
                    }
                    if let Some(n) = s.copy_streams {
                        cfg.copy_streams = n as usize;
                    }
                    SinkConfig {
                        name: s.name.0,
                        kind: SinkKind::Postgres(cfg),
                    }
                }),
                "mysql" => seq.next_element::<MysqlSinkSection>()?.map(|s| {
                    let mut cfg = weir_mysql::sink::MysqlSinkConfig::new(s.url.0);
                    cfg.schema = s.schema;
                    cfg.tables = s.tables;
                    if let Some(n) = s.batch_rows {
                        cfg.batch_rows = n.0 as usize;
                    }
                    if let Some(n) = s.batch_bytes {
                        cfg.batch_bytes = n.0 as usize;
                    }
                    SinkConfig {
                        name: s.name.0,
                        kind: SinkKind::Mysql(cfg),
                    }
                }),
                "kafka" => seq.next_element::<KafkaSinkSection>()?.map(|s| {
                    let mut cfg = weir_kafka::KafkaSinkConfig::new(s.brokers.0);
                    if let Some(t) = s.topic {
                        cfg.topic = t;
                    }
                    cfg.delivery = s.delivery;
                    if let Some(t) = s.tombstones {
                        cfg.tombstones = t;
                    }
                    cfg.transaction_topic = s.transaction_topic;
                    if let Some(n) = s.partitions {
                        cfg.partitions = n.0.min(i32::MAX as u32) as i32;
                    }
                    if let Some(n) = s.replication_factor {
                        cfg.replication_factor = n.0.min(i32::MAX as u32) as i32;
                    }
                    if let Some(c) = s.create_topics {
                        cfg.create_topics = c;
                    }
                    if let Some(t) = s.offsets_topic {
                        cfg.offsets_topic = t;
                    }
                    cfg.properties = s
                        .properties
                        .into_iter()
                        .map(|(k, v)| (k, v.into_string()))
                        .collect();
                    SinkConfig {
                        name: s.name.0,
                        kind: SinkKind::Kafka(cfg),
                    }
                }),
                other => return Err(de::Error::custom(format!("unknown sink type {other:?}"))),
            };
            out.extend(sink);
        }
        Ok(out)
    }
}

/// A connection URL with its password replaced by `****`, for logs and messages: the
/// `user:password@` part and `password=` / `sslpassword=` query parameters.
pub fn redact_url(url: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (url, None),
    };
    let mut out = match main.find("://") {
        Some(scheme_end) => {
            let rest = &main[scheme_end + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            match authority.rfind('@') {
                Some(at) => match authority[..at].split_once(':') {
                    Some((user, _)) => {
                        format!("{}{user}:****{}", &main[..scheme_end + 3], &rest[at..])
                    }
                    None => main.to_string(),
                },
                None => main.to_string(),
            }
        }
        None => main.to_string(),
    };
    if let Some(q) = query {
        out.push('?');
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _))
                    if k.eq_ignore_ascii_case("password")
                        || k.eq_ignore_ascii_case("sslpassword") =>
                {
                    format!("{k}=****")
                }
                _ => kv.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        let env = |k: &str| (k == "PW").then(|| "s3cr$t".to_string());
        assert_eq!(expand_env("a${PW}b", env).unwrap(), "as3cr$tb");
        assert_eq!(expand_env("cost $$5 $x", env).unwrap(), "cost $5 $x");
        assert!(
            expand_env("${NOPE}", env)
                .unwrap_err()
                .contains("NOPE is not set")
        );
        assert!(expand_env("${PW", env).is_err());
    }

    #[test]
    fn postgres_sink_settings_reach_the_sink() {
        let text = "name = \"p\"\n[source]\ntype = \"datagen\"\n[[sinks]]\nname = \"r\"\n\
                    type = \"postgres\"\nurl = \"postgres://u@h/d\"\nbatch_rows = 500\n\
                    copy_streams = 0\n";
        let cfg = parse(Path::new("p.toml"), text).expect("parses");
        let SinkKind::Postgres(pg) = &cfg.sinks[0].kind else {
            panic!("not a postgres sink");
        };
        assert_eq!((pg.batch_rows, pg.copy_streams), (500, 0));
        let text = text.replace("copy_streams = 0\n", "");
        let cfg = parse(Path::new("p.toml"), &text).expect("parses");
        let SinkKind::Postgres(pg) = &cfg.sinks[0].kind else {
            panic!("not a postgres sink");
        };
        assert_eq!(pg.copy_streams, 2);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://weir:hunter2@127.0.0.1:5432/shop"),
            "postgres://weir:****@127.0.0.1:5432/shop"
        );
        assert_eq!(redact_url("postgres://weir@h/db"), "postgres://weir@h/db");
        assert_eq!(redact_url("mysql://u:p@ss:w@h/db"), "mysql://u:****@h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=x&sslmode=require"),
            "postgres://h/db?user=u&password=****&sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?application_name=a@b"),
            "postgres://u@h/db?application_name=a@b"
        );
    }

    #[test]
    fn relative_paths_are_normalised() {
        assert_eq!(
            normalize(Path::new("examples/../weir-data")),
            Path::new("weir-data")
        );
        assert_eq!(normalize(Path::new("./a/./b")), Path::new("a/b"));
        assert_eq!(normalize(Path::new("../x")), Path::new("../x"));
        assert_eq!(normalize(Path::new("a/..")), Path::new("."));
        assert_eq!(normalize(Path::new("/a/../b")), Path::new("/b"));
    }

    #[test]
    fn typo_suggestions() {
        assert_eq!(closest("tabels", &["tables", "exclude"]), Some("tables"));
        assert_eq!(closest("zzz", &["tables"]), None);
    }
}
