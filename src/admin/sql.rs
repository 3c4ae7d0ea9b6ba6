//! Admin SQL over the PostgreSQL wire protocol (`[admin] listen`), with `pgwire`.
//!
//! - Authentication: SCRAM-SHA-256 against `[admin] password`, any user name
//!   ([`super::scram`]; no TLS, so listen on loopback or a trusted network).
//! - Simple and extended query protocol; results are typed (`text`, `int8`, `float8`,
//!   `bool`, in text or binary format as the client asks).
//! - What is understood (case-insensitive, optional trailing `;`):
//!   `SELECT * | col, .. FROM weir.{pipeline,sinks,stages,tables,changes} [WHERE col = 'v' [AND ..]]
//!   [LIMIT n]`, `PAUSE SINK name`, `RESUME SINK name`, and the probes clients send
//!   (`SELECT 1`, `SELECT version()`, `SHOW x`, `SET ..` as a no-op). Anything else is a SQL
//!   error naming what is supported; the connection stays open.
//!
//! Every figure comes from [`Context::status`] (the `weir status --json` report plus live
//! figures) or the staging log; no URL or password is part of any result.

use super::Context;
use async_trait::async_trait;
use pgwire::api::auth::DefaultServerParameterProvider;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::{ClientInfo, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use weir_api::{Entry, SourceInfo};

/// Default `LIMIT` of `weir.changes`.
const CHANGES_DEFAULT_LIMIT: usize = 100;

const SUPPORTED: &str = "supported: SELECT * FROM weir.pipeline | weir.sinks | weir.stages | weir.tables | weir.changes \
     [WHERE col = 'value' [AND ...]] [LIMIT n]; PAUSE SINK name; RESUME SINK name; \
     SNAPSHOT TABLE schema.table";

/// Accepts connections until aborted.
pub(crate) async fn serve(listener: TcpListener, ctx: Arc<Context>, password: String) {
    let handlers = Arc::new(Handlers {
        query: Arc::new(Queries {
            ctx,
            parser: Arc::new(Parser),
        }),
        auth: Arc::new(Secret(password)),
    });
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let handlers = Arc::clone(&handlers);
                tokio::spawn(async move {
                    if let Err(e) = pgwire::tokio::process_socket(stream, None, handlers).await {
                        tracing::debug!(error = %e, "admin SQL: connection ended with an error");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin SQL: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

struct Handlers {
    query: Arc<Queries>,
    auth: Arc<Secret>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.query)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.query)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        let mut params = DefaultServerParameterProvider::default();
        params.server_version = format!("16.0 (weir {})", env!("CARGO_PKG_VERSION"));
        Arc::new(super::scram::ScramStartup::new(
            Arc::clone(&self.auth),
            Arc::new(params),
        ))
    }
}

/// The admin password (never printed).
pub(crate) struct Secret(pub(crate) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// A SQL error for the client.
fn sql_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message.into(),
    )))
}

// ---------------------------------------------------------------------------------------
// Parsing

/// The views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Pipeline,
    Sinks,
    Stages,
    Tables,
    Changes,
}

impl View {
    fn columns(self) -> &'static [(&'static str, Kind)] {
        use Kind::*;
        match self {
            View::Pipeline => &[
                ("name", Text),
                ("source_type", Text),
                ("source_position", Text),
                ("state", Text),
                ("healthy", Bool),
                ("uptime_seconds", Int),
                ("staged_events", Int),
                ("staged_transactions", Int),
                ("events_per_sec", Float),
                ("log_head_seq", Int),
                ("log_first_seq", Int),
                ("log_backlog_bytes", Int),
                ("source_retries", Int),
                ("source_last_error", Text),
                ("source_retained_bytes", Int),
            ],
            View::Sinks => &[
                ("name", Text),
                ("type", Text),
                ("state", Text),
                ("paused", Bool),
                ("applied_seq", Int),
                ("lag_records", Int),
                ("lag_bytes", Int),
                ("lag_seconds", Float),
                ("events_applied", Int),
                ("events_per_sec", Float),
                ("retries", Int),
                ("stalled_seconds", Int),
                ("last_error", Text),
            ],
            View::Stages => &[
                ("stage", Text),
                ("events", Int),
                ("calls", Int),
                ("seconds", Float),
                ("p50_ms", Float),
                ("p99_ms", Float),
                ("share", Float),
            ],
            View::Tables => &[
                ("table", Text),
                ("snapshot_state", Text),
                ("chunks_done", Int),
                ("chunks", Int),
                ("rows_estimate", Int),
                ("rows_done_estimate", Int),
                ("schema_version", Int),
                ("backfill_state", Text),
                ("backfill_rows", Int),
                ("events_streamed", Int),
                ("last_change_ms", Int),
            ],
            View::Changes => &[
                ("seq", Int),
                ("table", Text),
                ("op", Text),
                ("before", Text),
                ("after", Text),
                ("position", Text),
                ("txid", Int),
                ("ts_ms", Int),
                ("staged_ms", Int),
            ],
        }
    }
}

/// Column types served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Int4,
    Float,
    Bool,
}

impl Kind {
    fn pg(self) -> Type {
        match self {
            Kind::Text => Type::TEXT,
            Kind::Int => Type::INT8,
            Kind::Int4 => Type::INT4,
            Kind::Float => Type::FLOAT8,
            Kind::Bool => Type::BOOL,
        }
    }
}

/// One value.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Val {
    /// The text form, for `WHERE` comparisons (`None` for NULL).
    fn text(&self) -> Option<String> {
        match self {
            Val::Null => None,
            Val::Text(s) => Some(s.clone()),
            Val::Int(i) => Some(i.to_string()),
            Val::Float(f) => Some(f.to_string()),
            Val::Bool(b) => Some(if *b { "true" } else { "false" }.to_string()),
        }
    }
}

/// A parsed statement.
#[derive(Debug, Clone)]
enum Stmt {
    Select {
        view: View,
        /// Indices into the view's columns (`*`: all).
        columns: Vec<usize>,
        /// `col = 'value'`: (column index, value).
        filters: Vec<(usize, String)>,
        limit: Option<usize>,
    },
    /// A constant row (probes: `SELECT 1`, `SELECT version()`, `SHOW x`).
    Constant {
        columns: Vec<(String, Kind)>,
        row: Vec<Val>,
    },
    /// Accepted and ignored (`SET ...`): the command tag.
    NoOp(&'static str),
    Pause(String),
    Resume(String),
    /// `SNAPSHOT TABLE name`: the table as `weir snapshot` takes it.
    Snapshot(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Unquoted word (identifier, keyword, number; may contain `.`).
    Word(String),
    /// `"quoted identifier"`.
    Ident(String),
    /// `'string literal'`.
    Str(String),
    Sym(char),
}

fn lex(sql: &str) -> PgWireResult<Vec<Tok>> {
    let mut out = Vec::new();
    let mut it = sql.chars().peekable();
    while let Some(&c) = it.peek() {
        if c.is_whitespace() {
            it.next();
        } else if c == '-' {
            // A comment to the end of the line (psql may send them).
            it.next();
            if it.peek() == Some(&'-') {
                for c in it.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            } else {
                out.push(Tok::Sym('-'));
            }
        } else if c == '\'' || c == '"' {
            it.next();
            let mut s = String::new();
            loop {
                match it.next() {
                    Some(q) if q == c => {
                        if it.peek() == Some(&c) {
                            it.next();
                            s.push(c);
                        } else {
                            break;
                        }
                    }
                    Some(x) => s.push(x),
                    None => return Err(sql_error("42601", "unterminated quoted string")),
                }
            }
            out.push(if c == '\'' {
                Tok::Str(s)
            } else {
                Tok::Ident(s)
            });
        } else if c.is_alphanumeric() || c == '_' || c == '.' || c == '$' {
            let mut s = String::new();
            while let Some(&x) = it.peek() {
                if x.is_alphanumeric() || x == '_' || x == '.' || x == '$' {
                    s.push(x);
                    it.next();
                } else {
                    break;
                }
            }
            out.push(Tok::Word(s));
        } else {
            out.push(Tok::Sym(c));
            it.next();
        }
    }
    while out.last() == Some(&Tok::Sym(';')) {
        out.pop();
    }
    Ok(out)
}

fn is_kw(t: Option<&Tok>, kw: &str) -> bool {
    matches!(t, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
}

/// A name: a word (lowercased, as PostgreSQL folds it), a quoted identifier or a string.
fn name_of(t: Option<&Tok>) -> Option<String> {
    match t {
        Some(Tok::Word(w)) => Some(w.to_lowercase()),
        Some(Tok::Ident(s)) | Some(Tok::Str(s)) => Some(s.clone()),
        _ => None,
    }
}

fn unsupported(what: &str) -> PgWireError {
    sql_error(
        "0A000",
        format!("{what} is not supported by weir admin SQL; {SUPPORTED}"),
    )
}

fn syntax(what: &str) -> PgWireError {
    sql_error("42601", format!("syntax error: {what}; {SUPPORTED}"))
}

/// Parses one statement (`Ok(None)`: empty).
fn parse(sql: &str) -> PgWireResult<Option<Stmt>> {
    let toks = lex(sql)?;
    if toks.is_empty() {
        return Ok(None);
    }
    if toks.contains(&Tok::Sym(';')) {
        return Err(unsupported("more than one statement per query"));
    }
    let first = match &toks[0] {
        Tok::Word(w) => w.to_uppercase(),
        _ => return Err(syntax("a statement starts with a keyword")),
    };
    let stmt = match first.as_str() {
        "SELECT" => parse_select(&toks[1..])?,
        "SHOW" => {
            let Some(name) = name_of(toks.get(1)).filter(|_| toks.len() == 2) else {
                return Err(syntax("SHOW takes one setting name"));
            };
            let value = match name.as_str() {
                "server_version" => format!("16.0 (weir {})", env!("CARGO_PKG_VERSION")),
                "server_encoding" | "client_encoding" => "UTF8".to_string(),
                "standard_conforming_strings" => "on".to_string(),
                "transaction_isolation" | "default_transaction_isolation" => {
                    "read committed".to_string()
                }
                "transaction_read_only" | "default_transaction_read_only" => "on".to_string(),
                "datestyle" => "ISO, MDY".to_string(),
                "timezone" => "UTC".to_string(),
                "search_path" => "weir".to_string(),
                "integer_datetimes" => "on".to_string(),
                "max_identifier_length" => "63".to_string(),
                _ => {
                    return Err(sql_error(
                        "42704",
                        format!("unrecognized configuration parameter \"{name}\""),
                    ));
                }
            };
            Stmt::Constant {
                columns: vec![(name, Kind::Text)],
                row: vec![Val::Text(value)],
            }
        }
        "SET" | "RESET" => Stmt::NoOp(if first == "SET" { "SET" } else { "RESET" }),
        "BEGIN" | "START" | "COMMIT" | "END" | "ROLLBACK" | "DISCARD" | "DEALLOCATE" | "CLOSE"
        | "UNLISTEN" => Stmt::NoOp(match first.as_str() {
            "START" => "START TRANSACTION",
            "END" => "COMMIT",
            "BEGIN" => "BEGIN",
            "COMMIT" => "COMMIT",
            "ROLLBACK" => "ROLLBACK",
            "DISCARD" => "DISCARD ALL",
            "DEALLOCATE" => "DEALLOCATE",
            "CLOSE" => "CLOSE CURSOR",
            _ => "UNLISTEN",
        }),
        "PAUSE" | "RESUME" => {
            let name = name_of(toks.get(2))
                .filter(|_| is_kw(toks.get(1), "SINK") && toks.len() == 3)
                .ok_or_else(|| syntax(&format!("write {first} SINK name")))?;
            if first == "PAUSE" {
                Stmt::Pause(name)
            } else {
                Stmt::Resume(name)
            }
        }
        "SNAPSHOT" => {
            if !is_kw(toks.get(1), "TABLE") || toks.len() < 3 {
                return Err(syntax("write SNAPSHOT TABLE schema.table"));
            }
            // `public.orders`, `"public"."Orders"`, or `'public.Orders'` (as the catalog
            // spells it): back to one name for `weir snapshot`'s parser.
            let mut name = String::new();
            for t in &toks[2..] {
                match t {
                    Tok::Word(w) => name.push_str(&w.to_lowercase()),
                    Tok::Ident(i) => {
                        name.push('"');
                        name.push_str(&i.replace('"', "\"\""));
                        name.push('"');
                    }
                    Tok::Str(s) if toks.len() == 3 => name.push_str(s),
                    _ => return Err(syntax("write SNAPSHOT TABLE schema.table")),
                }
            }
            Stmt::Snapshot(name)
        }
        other => return Err(unsupported(&format!("{other} statement"))),
    };
    Ok(Some(stmt))
}

fn parse_select(toks: &[Tok]) -> PgWireResult<Stmt> {
    // Probes without FROM.
    if !toks.iter().any(|t| is_kw(Some(t), "FROM")) {
        return match toks {
            [Tok::Word(n)] if n.parse::<i32>().is_ok() => Ok(Stmt::Constant {
                columns: vec![("?column?".to_string(), Kind::Int4)],
                row: vec![Val::Int(n.parse().unwrap_or_default())],
            }),
            [Tok::Word(f), Tok::Sym('('), Tok::Sym(')')] => {
                let f = f.to_lowercase();
                let v = match f.as_str() {
                    "version" => format!(
                        "PostgreSQL 16.0 (weir {} admin SQL)",
                        env!("CARGO_PKG_VERSION")
                    ),
                    "current_database" => "weir".to_string(),
                    "current_schema" => "weir".to_string(),
                    "current_user" | "session_user" => "weir".to_string(),
                    _ => return Err(unsupported(&format!("function {f}()"))),
                };
                Ok(Stmt::Constant {
                    columns: vec![(f, Kind::Text)],
                    row: vec![Val::Text(v)],
                })
            }
            _ => Err(unsupported("this SELECT")),
        };
    }
    let from = toks
        .iter()
        .position(|t| is_kw(Some(t), "FROM"))
        .unwrap_or_default();
    let table = name_of(toks.get(from + 1)).ok_or_else(|| syntax("FROM needs a view name"))?;
    let view = match table.strip_prefix("weir.").unwrap_or(&table) {
        "pipeline" => View::Pipeline,
        "sinks" => View::Sinks,
        "stages" => View::Stages,
        "tables" => View::Tables,
        "changes" => View::Changes,
        _ => {
            return Err(sql_error(
                "42P01",
                format!(
                    "relation \"{table}\" does not exist; views: weir.pipeline, weir.sinks, weir.stages, weir.tables, weir.changes"
                ),
            ));
        }
    };
    let cols = view.columns();
    let col_index = |name: &str| {
        cols.iter().position(|(c, _)| *c == name).ok_or_else(|| {
            sql_error(
                "42703",
                format!(
                    "column \"{name}\" does not exist in weir.{}; columns: {}",
                    table.strip_prefix("weir.").unwrap_or(&table),
                    cols.iter().map(|c| c.0).collect::<Vec<_>>().join(", ")
                ),
            )
        })
    };
    // Projection.
    let columns = match &toks[..from] {
        [Tok::Sym('*')] => (0..cols.len()).collect(),
        [] => return Err(syntax("SELECT needs * or column names")),
        list => {
            let mut out = Vec::new();
            for (i, t) in list.iter().enumerate() {
                if i % 2 == 1 {
                    if *t != Tok::Sym(',') {
                        return Err(unsupported("expressions in the select list"));
                    }
                    continue;
                }
                let name = match t {
                    Tok::Word(w) => w.to_lowercase(),
                    Tok::Ident(s) => s.clone(),
                    _ => return Err(unsupported("expressions in the select list")),
                };
                out.push(col_index(&name)?);
            }
            out
        }
    };
    let mut rest = &toks[from + 2..];
    let mut filters = Vec::new();
    if is_kw(rest.first(), "WHERE") {
        rest = &rest[1..];
        loop {
            let (col, val) = match rest {
                [c @ (Tok::Word(_) | Tok::Ident(_)), Tok::Sym('='), v, ..] => (c, v),
                _ => {
                    return Err(unsupported(
                        "this WHERE clause (only col = 'value' [AND ...])",
                    ));
                }
            };
            let col = name_of(Some(col)).unwrap_or_default();
            let val = match val {
                Tok::Str(s) => s.clone(),
                Tok::Word(w) => w.clone(),
                _ => return Err(unsupported("this WHERE value")),
            };
            filters.push((col_index(&col)?, val));
            rest = &rest[3..];
            if is_kw(rest.first(), "AND") {
                rest = &rest[1..];
            } else {
                break;
            }
        }
    }
    let mut limit = None;
    if is_kw(rest.first(), "LIMIT") {
        match rest.get(1) {
            Some(Tok::Word(n)) if n.parse::<usize>().is_ok() => {
                limit = n.parse().ok();
                rest = &rest[2..];
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("ALL") => rest = &rest[2..],
            _ => return Err(syntax("LIMIT takes a number")),
        }
    }
    if !rest.is_empty() {
        return Err(unsupported(&format!(
            "what follows {}",
            if limit.is_some() {
                "LIMIT"
            } else {
                "the view name"
            }
        )));
    }
    Ok(Stmt::Select {
        view,
        columns,
        filters,
        limit,
    })
}

/// The columns a statement returns (empty: a command).
fn result_columns(stmt: &Stmt) -> Vec<(String, Kind)> {
    match stmt {
        Stmt::Select { view, columns, .. } => {
            let cols = view.columns();
            columns
                .iter()
                .map(|&i| (cols[i].0.to_string(), cols[i].1))
                .collect()
        }
        Stmt::Constant { columns, .. } => columns.clone(),
        _ => Vec::new(),
    }
}

fn fields(stmt: &Stmt, format: Option<&Format>) -> Vec<FieldInfo> {
    result_columns(stmt)
        .into_iter()
        .enumerate()
        .map(|(i, (name, kind))| {
            let f = format.map_or(FieldFormat::Text, |f| f.format_for(i));
            FieldInfo::new(name, None, None, kind.pg(), f)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Execution

struct Parser;

#[async_trait]
impl QueryParser for Parser {
    type Statement = Stmt;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        parse(sql)
    }

    fn get_parameter_types(&self, _stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(Vec::new())
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(fields(stmt, column_format))
    }
}

struct Queries {
    ctx: Arc<Context>,
    parser: Arc<Parser>,
}

impl Queries {
    async fn run(&self, stmt: Option<Stmt>, format: &Format) -> PgWireResult<Response> {
        let Some(stmt) = stmt else {
            return Ok(Response::EmptyQuery);
        };
        let ctx = Arc::clone(&self.ctx);
        match &stmt {
            Stmt::NoOp(tag) => return Ok(Response::Execution(Tag::new(tag))),
            Stmt::Snapshot(name) => {
                let table = crate::backfill::check_table(&ctx.cfg, name).map_err(|e| {
                    // A source without backfills: not supported; else an unknown table.
                    let code = match ctx.cfg.source {
                        crate::config::SourceConfig::Postgres(_) => "42P01",
                        _ => "0A000",
                    };
                    sql_error(code, e)
                })?;
                let id = crate::backfill::request(&ctx.cfg.log_dir(), &table).map_err(|e| {
                    sql_error("58030", format!("cannot write the backfill request: {e}"))
                })?;
                tracing::info!(table = %table, id = %id, "admin SQL: backfill requested");
                return Ok(Response::Execution(Tag::new("SNAPSHOT TABLE")));
            }
            Stmt::Pause(name) | Stmt::Resume(name) => {
                let pause = matches!(stmt, Stmt::Pause(_));
                let Some(st) = ctx.stats.sinks.get(name) else {
                    return Err(sql_error(
                        "42704",
                        format!(
                            "no sink named \"{name}\"; sinks: {}",
                            ctx.stats
                                .sinks
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                };
                st.set_paused(pause);
                tracing::info!(sink = %name, "admin SQL: sink {}", if pause { "paused" } else { "resumed" });
                return Ok(Response::Execution(Tag::new(if pause {
                    "PAUSE SINK"
                } else {
                    "RESUME SINK"
                })));
            }
            _ => {}
        }
        let fields = Arc::new(fields(&stmt, Some(format)));
        let rows = tokio::task::spawn_blocking(move || rows(&ctx, &stmt))
            .await
            .map_err(|e| sql_error("XX000", format!("internal error: {e}")))??;
        let mut out = Vec::with_capacity(rows.len());
        let mut enc = DataRowEncoder::new(Arc::clone(&fields));
        for row in rows {
            for (col, v) in row.into_iter().enumerate() {
                match v {
                    Val::Null => enc.encode_field(&None::<String>)?,
                    Val::Text(s) => enc.encode_field(&s)?,
                    // Only `SELECT 1` has an `int4` column (as in PostgreSQL).
                    Val::Int(i)
                        if fields.get(col).map(FieldInfo::datatype) == Some(&Type::INT4) =>
                    {
                        enc.encode_field(&i32::try_from(i).unwrap_or_default())?
                    }
                    Val::Int(i) => enc.encode_field(&i)?,
                    Val::Float(f) => enc.encode_field(&f)?,
                    Val::Bool(b) => enc.encode_field(&b)?,
                }
            }
            out.push(Ok(enc.take_row()));
        }
        Ok(Response::Query(QueryResponse::new(
            fields,
            futures_util::stream::iter(out),
        )))
    }
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo
            + pgwire::api::ClientPortalStore
            + futures_util::Sink<pgwire::messages::PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: pgwire::api::store::PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures_util::Sink<pgwire::messages::PgWireBackendMessage>>::Error>,
    {
        let stmt = parse(query)?;
        Ok(vec![self.run(stmt, &Format::UnifiedText).await?])
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = Stmt;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo
            + pgwire::api::ClientPortalStore
            + futures_util::Sink<pgwire::messages::PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: pgwire::api::store::PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as futures_util::Sink<pgwire::messages::PgWireBackendMessage>>::Error>,
    {
        self.run(
            Some(portal.statement.statement.clone()),
            &portal.result_column_format,
        )
        .await
    }
}

/// The rows of a query (blocking: reads the staging log).
fn rows(ctx: &Context, stmt: &Stmt) -> PgWireResult<Vec<Vec<Val>>> {
    let (view, columns, filters, limit) = match stmt {
        Stmt::Constant { row, .. } => return Ok(vec![row.clone()]),
        Stmt::Select {
            view,
            columns,
            filters,
            limit,
        } => (*view, columns, filters, *limit),
        _ => return Ok(Vec::new()),
    };
    let keep = |row: &[Val]| {
        filters
            .iter()
            .all(|(i, v)| row[*i].text().as_deref() == Some(v.as_str()))
    };
    let internal = |e: &dyn std::fmt::Display| sql_error("XX000", e.to_string());
    let all: Vec<Vec<Val>> = match view {
        View::Changes => changes(ctx, filters, limit.unwrap_or(CHANGES_DEFAULT_LIMIT))?,
        View::Stages => stage_rows(ctx)
            .into_iter()
            .filter(|r| keep(r))
            .take(limit.unwrap_or(usize::MAX))
            .collect(),
        other => {
            let status = ctx
                .status()
                .map_err(|e| internal(&crate::runtime::chain(e.as_ref())))?;
            let rows = match other {
                View::Pipeline => vec![pipeline_row(&status)],
                View::Sinks => sink_rows(ctx, &status),
                _ => table_rows(ctx, &status).map_err(|e| internal(&e))?,
            };
            rows.into_iter()
                .filter(|r| keep(r))
                .take(limit.unwrap_or(usize::MAX))
                .collect()
        }
    };
    Ok(all
        .into_iter()
        .map(|r| columns.iter().map(|&i| r[i].clone()).collect())
        .collect())
}

fn text(v: &serde_json::Value) -> Val {
    match v {
        serde_json::Value::Null => Val::Null,
        serde_json::Value::String(s) => Val::Text(s.clone()),
        other => Val::Text(other.to_string()),
    }
}

fn int(v: &serde_json::Value) -> Val {
    v.as_u64()
        .map(|n| Val::Int(n.min(i64::MAX as u64) as i64))
        .or_else(|| v.as_i64().map(Val::Int))
        .unwrap_or(Val::Null)
}

fn float(v: &serde_json::Value) -> Val {
    v.as_f64().map_or(Val::Null, Val::Float)
}

fn pipeline_row(s: &serde_json::Value) -> Vec<Val> {
    vec![
        text(&s["pipeline"]),
        text(&s["source"]["type"]),
        text(&s["source"]["position"]),
        text(&s["state"]),
        s["healthy"].as_bool().map_or(Val::Null, Val::Bool),
        int(&s["uptime_seconds"]),
        int(&s["source"]["staged_events"]),
        int(&s["source"]["staged_transactions"]),
        float(&s["source"]["events_per_sec"]),
        int(&s["log"]["head_seq"]),
        int(&s["log"]["first_seq"]),
        int(&s["log"]["backlog_bytes"]),
        int(&s["source"]["retries"]),
        // Connector errors are redacted where they are made; redact again, to be sure.
        match &s["source"]["last_error"] {
            serde_json::Value::String(e) => Val::Text(redact_text(e)),
            _ => Val::Null,
        },
        int(&s["source"]["retained_bytes"]),
    ]
}

/// Redacts anything URL-like in free text (errors).
fn redact_text(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            if w.contains("://") {
                crate::config::redact_url(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn sink_rows(ctx: &Context, s: &serde_json::Value) -> Vec<Vec<Val>> {
    let empty = Vec::new();
    s["sinks"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|j| {
            let name = j["name"].as_str().unwrap_or_default();
            let paused = ctx.stats.sinks.get(name).is_some_and(|st| st.is_paused());
            vec![
                text(&j["name"]),
                text(&j["type"]),
                text(&j["state"]),
                Val::Bool(paused),
                int(&j["applied_seq"]),
                int(&j["lag_records"]),
                int(&j["lag_bytes"]),
                float(&j["lag_seconds"]),
                int(&j["applied_events"]),
                float(&j["events_per_sec"]),
                int(&j["retries"]),
                int(&j["stalled_seconds"]),
                match &j["last_error"] {
                    serde_json::Value::String(e) => Val::Text(redact_text(e)),
                    _ => Val::Null,
                },
            ]
        })
        .collect()
}

/// `weir.stages`: straight from the live figures (not rounded like `/status`).
fn stage_rows(ctx: &Context) -> Vec<Vec<Val>> {
    let ms = |s: Option<f64>| s.map_or(Val::Null, |s| Val::Float(s * 1000.0));
    ctx.view()
        .stages
        .into_iter()
        .map(|s| {
            vec![
                Val::Text(s.name),
                Val::Int(i64::try_from(s.events).unwrap_or(i64::MAX)),
                Val::Int(i64::try_from(s.calls).unwrap_or(i64::MAX)),
                Val::Float(s.seconds),
                ms(s.p50_seconds),
                ms(s.p99_seconds),
                Val::Float(s.share),
            ]
        })
        .collect()
}

fn table_rows(ctx: &Context, s: &serde_json::Value) -> Result<Vec<Vec<Val>>, String> {
    let schemas = ctx.log.latest_schemas().map_err(|e| e.to_string())?;
    let mut names: std::collections::BTreeMap<String, Option<u32>> = schemas
        .iter()
        .map(|(t, s)| (t.to_string(), Some(s.version)))
        .collect();
    let empty = Vec::new();
    let planned = s["snapshot"]["tables"].as_array().unwrap_or(&empty);
    let backfills = s["backfills"].as_array().unwrap_or(&empty);
    let counters: std::collections::BTreeMap<String, (u64, i64)> = ctx
        .stats
        .tables
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(t, c)| (t.to_string(), *c))
        .collect();
    for t in planned.iter().chain(backfills) {
        names
            .entry(t["table"].as_str().unwrap_or_default().to_string())
            .or_insert(None);
    }
    for t in counters.keys() {
        names.entry(t.clone()).or_insert(None);
    }
    Ok(names
        .into_iter()
        .map(|(table, version)| {
            let p = planned.iter().find(|t| t["table"] == table.as_str());
            let (state, done, chunks, est, rows_done) = match p {
                Some(p) => {
                    let done = p["chunks_done"].as_u64().unwrap_or(0);
                    let chunks = p["chunks"].as_u64().unwrap_or(0);
                    let state = if done >= chunks {
                        "done"
                    } else if done > 0 {
                        "in progress"
                    } else {
                        "pending"
                    };
                    (
                        Val::Text(state.to_string()),
                        int(&p["chunks_done"]),
                        int(&p["chunks"]),
                        int(&p["estimated_rows"]),
                        int(&p["rows_done_estimate"]),
                    )
                }
                None => (
                    Val::Text("none".to_string()),
                    Val::Null,
                    Val::Null,
                    Val::Null,
                    Val::Null,
                ),
            };
            // The latest backfill of the table (ids sort by request time).
            let b = backfills
                .iter()
                .filter(|b| b["table"] == table.as_str())
                .max_by_key(|b| b["id"].as_str().map(str::to_string));
            let c = counters.get(&table).copied();
            let (backfill_state, backfill_rows) = b.map_or((Val::Null, Val::Null), |b| {
                (text(&b["state"]), int(&b["rows"]))
            });
            vec![
                Val::Text(table),
                state,
                done,
                chunks,
                est,
                rows_done,
                version.map_or(Val::Null, |v| Val::Int(v.into())),
                backfill_state,
                backfill_rows,
                Val::Int(c.map_or(0, |c| c.0 as i64)),
                c.map_or(Val::Null, |c| Val::Int(c.1)),
            ]
        })
        .collect())
}

/// Staged changes, oldest retained first, read in batches (never the whole log at once).
fn changes(
    ctx: &Context,
    filters: &[(usize, String)],
    limit: usize,
) -> PgWireResult<Vec<Vec<Val>>> {
    let cols = View::Changes.columns();
    let table_col = cols.iter().position(|c| c.0 == "table");
    let table_filter: Vec<&str> = filters
        .iter()
        .filter(|(i, _)| Some(*i) == table_col)
        .map(|(_, v)| v.as_str())
        .collect();
    let info = SourceInfo {
        connector: ctx.cfg.source.kind().to_string(),
        name: ctx.cfg.name.clone(),
        db: String::new(),
    };
    let mut out = Vec::new();
    let mut attempts = 0;
    'again: loop {
        out.clear();
        let mut reader = ctx.log.reader();
        let head = ctx.log.head().seq;
        let mut next = ctx.log.first_seq().max(1);
        let mut buf = Vec::new();
        while out.len() < limit && next <= head {
            let batch = match reader.read(next, head, 1024) {
                Ok(b) => b,
                // Retention deleted what we were about to read: start again from the new first.
                Err(_) if attempts < 3 => {
                    attempts += 1;
                    continue 'again;
                }
                Err(e) => return Err(sql_error("XX000", e.to_string())),
            };
            let Some(last) = batch.entries.last() else {
                break;
            };
            next = last.seq + 1;
            for e in &batch.entries {
                let Entry::Change(ev, schema) = &e.entry else {
                    continue;
                };
                let table = ev.table.to_string();
                if table_filter.iter().any(|t| *t != table) {
                    continue;
                }
                buf.clear();
                weir_api::render_envelope(&mut buf, &info, schema, ev, e.staged_ms)
                    .map_err(|e| sql_error("XX000", e.to_string()))?;
                let env: serde_json::Value =
                    serde_json::from_slice(&buf).map_err(|e| sql_error("XX000", e.to_string()))?;
                let json = |v: &serde_json::Value| {
                    if v.is_null() {
                        Val::Null
                    } else {
                        Val::Text(v.to_string())
                    }
                };
                let row = vec![
                    Val::Int(e.seq as i64),
                    Val::Text(table),
                    Val::Text(ev.op.code().to_string()),
                    json(&env["before"]),
                    json(&env["after"]),
                    Val::Text(ev.position.to_string()),
                    ev.txid.map_or(Val::Null, |x| Val::Int(x as i64)),
                    Val::Int(ev.ts_ms),
                    Val::Int(e.staged_ms),
                ];
                if filters
                    .iter()
                    .all(|(i, v)| row[*i].text().as_deref() == Some(v.as_str()))
                {
                    out.push(row);
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        return Ok(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_supported_shapes() {
        let s = parse("select * from WEIR.SINKS ;").unwrap().unwrap();
        assert!(
            matches!(s, Stmt::Select { view: View::Sinks, ref filters, limit: None, .. } if filters.is_empty())
        );
        let s = parse(
            "SELECT * FROM weir.changes WHERE \"table\" = 'public.t''x' AND op = 'c' LIMIT 3",
        )
        .unwrap()
        .unwrap();
        let Stmt::Select {
            view,
            filters,
            limit,
            ..
        } = s
        else {
            panic!()
        };
        assert_eq!(view, View::Changes);
        assert_eq!(
            filters,
            vec![(1, "public.t'x".to_string()), (2, "c".to_string())]
        );
        assert_eq!(limit, Some(3));
        let s = parse("select name, applied_seq from weir.sinks")
            .unwrap()
            .unwrap();
        assert!(matches!(s, Stmt::Select { ref columns, .. } if *columns == vec![0, 4]));
        assert!(matches!(parse("PAUSE SINK files").unwrap(), Some(Stmt::Pause(n)) if n == "files"));
        assert!(
            matches!(parse("resume sink \"Files\";").unwrap(), Some(Stmt::Resume(n)) if n == "Files")
        );
        assert!(matches!(
            parse("SET extra_float_digits = 3").unwrap(),
            Some(Stmt::NoOp("SET"))
        ));
        assert!(matches!(
            parse("select 1").unwrap(),
            Some(Stmt::Constant { .. })
        ));
        assert!(matches!(
            parse("SELECT version();").unwrap(),
            Some(Stmt::Constant { .. })
        ));
        assert!(parse(" ; ").unwrap().is_none());
        let code = |sql: &str| match parse(sql) {
            Err(PgWireError::UserError(e)) => e.code.clone(),
            other => panic!("{sql}: {other:?}"),
        };
        assert_eq!(code("DELETE FROM weir.sinks"), "0A000");
        assert_eq!(code("SELECT * FROM weir.nope"), "42P01");
        let s = parse("select stage, share from weir.stages where stage = 'source'")
            .unwrap()
            .unwrap();
        assert!(
            matches!(s, Stmt::Select { view: View::Stages, ref columns, ref filters, .. }
                if *columns == vec![0, 6] && *filters == vec![(0, "source".to_string())])
        );
        assert_eq!(code("SELECT nope FROM weir.sinks"), "42703");
        assert_eq!(
            code("SELECT * FROM weir.sinks WHERE lag_records > 3"),
            "0A000"
        );
        assert_eq!(code("SELECT * FROM weir.sinks LIMIT x"), "42601");
        assert_eq!(code("SNAPSHOT TABLES x"), "42601");
        assert!(
            matches!(parse("snapshot table Public.Orders").unwrap(), Some(Stmt::Snapshot(n)) if n == "public.orders")
        );
        assert!(
            matches!(parse("SNAPSHOT TABLE \"public\".\"Or\"\"d\"").unwrap(), Some(Stmt::Snapshot(n)) if n == "\"public\".\"Or\"\"d\"")
        );
        assert!(
            matches!(parse("SNAPSHOT TABLE 'public.Orders'").unwrap(), Some(Stmt::Snapshot(n)) if n == "public.Orders")
        );
        assert_eq!(code("SELECT 1; SELECT 2"), "0A000");
    }
}
