//! Backfills while streaming: `weir snapshot PIPELINE TABLE...` and admin SQL's `SNAPSHOT
//! TABLE`.
//!
//! # Requests
//!
//! A request is a small JSON file in `<log dir>/backfill-requests/`, written atomically by
//! [`request`] (the CLI writes it whether or not the pipeline runs; admin SQL writes it from
//! inside the running pipeline). The source task polls the directory every second and queues
//! new requests. A file is removed only once the staging log durably records its job as
//! finished, so a request survives crashes until its table is done.
//!
//! # Method
//!
//! One job at a time, one table per job. The source's [`Backfill`] opens a consistent view of
//! the table whose position in the stream is exact ([`BackfillView::consistent`]: changes the
//! stream brings at or before it are in the view, later ones are not), then reads batches in
//! key order. From the moment it asks for the view, the source task records for every key of
//! that table the stream changes the position of its latest change. A batch is staged
//! between two stream transactions, once the stream has passed the view's position, without
//! the rows whose key the stream changed after that position (their newer state is already
//! staged, and staging the view's older row after it would move the key back). Every key
//! thus ends at its current state and per-key order holds, with no lock and no watermark.
//! A truncate after the view's position drops the whole batch. A schema change of the table
//! after the view opened restarts the job from its last staged key with a fresh view.
//!
//! Each batch is one log transaction at a [`SourcePosition::Backfill`] position (right after
//! the stream position before it) and carries the job's progress (the last staged key) in
//! the log's metadata, durable with it; after a restart the job continues after that key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};
use weir_api::{
    Backfill, BackfillRows, BackfillView, ChangeEvent, CommitInfo, ConnectorError, Op,
    SourcePosition, TableId, TableSchema,
};

use crate::log::{LogError, StagingLog, WriteOp, now_ms, record};
use crate::runtime::{SourceFactory, chain};

/// Metadata key of the [`BackfillState`].
pub const STATE_KEY: &[u8] = b"backfill";
/// Rows per backfill read.
const READ_ROWS: usize = 8192;
/// How often the request directory is read.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Finished jobs remembered (for status, and to recognise their request files).
const KEEP_FINISHED: usize = 64;

/// Backfill jobs: durable in the log's metadata with every backfill batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackfillState {
    /// Queued jobs; the first one runs.
    pub jobs: Vec<Job>,
    /// The latest finished (or failed) jobs, oldest first.
    pub finished: Vec<Finished>,
}

/// A queued or running backfill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The request's id (its file name).
    pub id: String,
    /// The table.
    pub table: TableId,
    /// The last staged key (connector encoding); `None`: nothing staged yet.
    pub after: Option<Vec<String>>,
    /// Rows staged so far.
    pub rows: u64,
    /// The source's estimate of the table's rows (0: unknown yet).
    pub estimated_rows: u64,
    /// When it was requested (ms since the epoch).
    pub requested_ms: i64,
}

/// A finished backfill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    /// The request's id.
    pub id: String,
    /// The table.
    pub table: TableId,
    /// Rows staged.
    pub rows: u64,
    /// When it finished (ms since the epoch).
    pub finished_ms: i64,
    /// Why it stopped without finishing, if it did.
    pub error: Option<String>,
}

/// A request file's contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Request {
    id: String,
    table: TableId,
    requested_ms: i64,
}

/// Where requests for the pipeline whose log lives in `log_dir` go.
pub fn requests_dir(log_dir: &Path) -> PathBuf {
    log_dir.join("backfill-requests")
}

/// Queues a backfill of `table` for the pipeline whose log lives in `log_dir`; returns the
/// request's id.
pub fn request(log_dir: &Path, table: &TableId) -> std::io::Result<String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = requests_dir(log_dir);
    std::fs::create_dir_all(&dir)?;
    let requested_ms = now_ms();
    let id = format!(
        "{requested_ms:013}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let body = serde_json::to_vec(&Request {
        id: id.clone(),
        table: table.clone(),
        requested_ms,
    })
    .map_err(std::io::Error::other)?;
    let tmp = dir.join(format!(".{id}.tmp"));
    std::fs::write(&tmp, body)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(format!("{id}.json")))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(id)
}

/// Request files in id order (unreadable ones are reported and skipped until fixed).
fn read_requests(dir: &Path) -> Vec<(PathBuf, Request)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Request>(&b).map_err(|e| e.to_string()))
        {
            Ok(r) => out.push((path, r)),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "unreadable backfill request; remove it")
            }
        }
    }
    out.sort_by(|a, b| a.1.id.cmp(&b.1.id));
    out
}

/// The durable state in `log`.
pub fn durable_state(log: &StagingLog) -> Result<BackfillState, LogError> {
    Ok(log.get_meta(STATE_KEY)?.unwrap_or_default())
}

enum Cmd {
    Open(TableId),
    Read(Option<Vec<String>>),
}

enum Reply {
    Opened(weir_api::Result<BackfillView>),
    Rows(weir_api::Result<BackfillRows>),
}

/// The reader's own task (its own connections), so the stream never waits for it.
struct Task {
    cmd: mpsc::Sender<Cmd>,
    reply: mpsc::Receiver<Reply>,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn spawn(mut reader: Box<dyn Backfill>) -> Task {
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Cmd>(1);
    let (reply_tx, reply_rx) = mpsc::channel(1);
    let handle = tokio::spawn(async move {
        while let Some(cmd) = cmd_rx.recv().await {
            let reply = match cmd {
                Cmd::Open(table) => Reply::Opened(reader.open(&table).await),
                Cmd::Read(after) => Reply::Rows(reader.read(after.as_deref(), READ_ROWS).await),
            };
            if reply_tx.send(reply).await.is_err() {
                break;
            }
        }
    });
    Task {
        cmd: cmd_tx,
        reply: reply_rx,
        handle,
    }
}

/// What the stream did to a key during a job.
enum Touch {
    /// Deleted (or moved away) last.
    Gone(SourcePosition),
    /// The stream staged a full image of the row since the job started: a sink has the row.
    Full(SourcePosition),
    /// Only updates with unchanged-TOAST cells so far (PostgreSQL): a sink that never had the
    /// row cannot apply them, so the batch stages the row with those cells folded in.
    Partial(SourcePosition, weir_api::Row),
}

impl Touch {
    fn position(&self) -> &SourcePosition {
        match self {
            Touch::Gone(p) | Touch::Full(p) | Touch::Partial(p, _) => p,
        }
    }
}

/// Keys tracked per job before the view is reopened (which starts the tracking afresh):
/// bounds the memory a long backfill of a busy table takes.
const MAX_TOUCHED: usize = 1_000_000;

fn has_unchanged(row: &weir_api::Row) -> bool {
    row.0
        .iter()
        .any(|v| matches!(v, weir_api::Value::Unchanged))
}

/// `row` with its unchanged cells taken from `from`.
fn fill(mut row: weir_api::Row, from: &weir_api::Row) -> weir_api::Row {
    for (c, old) in row.0.iter_mut().zip(&from.0) {
        if matches!(c, weir_api::Value::Unchanged) {
            *c = old.clone();
        }
    }
    row
}

/// Changes the stream made to the running job's table.
struct Tracking {
    /// Key column indices per the stream's latest schema of the table (this session).
    key: Option<Vec<usize>>,
    /// Encoded key → what the stream did to it last.
    touched: HashMap<Vec<u8>, Touch>,
    /// Position of the latest truncate.
    truncated: Option<SourcePosition>,
    /// A change came whose key could not be told (no schema yet): the view cannot be trusted.
    blind: bool,
    /// The view, once open.
    view: Option<BackfillView>,
    /// Rows read, waiting until the stream has passed the view's position.
    rows: Option<BackfillRows>,
}

/// The source task's backfill driver (one per source session).
pub(crate) struct Backfiller {
    dir: PathBuf,
    state: BackfillState,
    stats: Arc<std::sync::Mutex<BackfillState>>,
    task: Option<Task>,
    tracking: Option<Tracking>,
    /// The schema of each table the stream announced this session.
    schemas: HashMap<TableId, TableSchema>,
    /// The newest stream position handled (commits and heartbeats).
    seen: Option<SourcePosition>,
    next_poll: Instant,
    /// After a transient failure: when to try the running job again.
    retry_at: Option<Instant>,
    failures: u32,
    /// Views reopened in a row because the table changed shape.
    reopens: u32,
    /// The state changed outside a batch (a job failed): record it with an empty batch.
    dirty: bool,
}

fn encode_key(values: &[&weir_api::Value]) -> Vec<u8> {
    let mut out = Vec::new();
    // Values always encode; an error would only drop the tracking of one key.
    let _ = record::encode(&values, &mut out);
    out
}

fn key_of(row: &weir_api::Row, key: &[usize]) -> Option<Vec<u8>> {
    let values: Option<Vec<&weir_api::Value>> = key.iter().map(|&i| row.0.get(i)).collect();
    values.map(|v| encode_key(&v))
}

fn same_shape(a: &TableSchema, b: &TableSchema) -> bool {
    a.table == b.table && a.columns == b.columns && a.primary_key == b.primary_key
}

impl Backfiller {
    pub(crate) fn new(
        log: &StagingLog,
        stats: Arc<std::sync::Mutex<BackfillState>>,
    ) -> Result<Self, LogError> {
        let state = durable_state(log)?;
        *stats.lock().unwrap_or_else(|p| p.into_inner()) = state.clone();
        Ok(Backfiller {
            dir: requests_dir(log.path()),
            state,
            stats,
            task: None,
            tracking: None,
            schemas: HashMap::new(),
            seen: None,
            next_poll: Instant::now(),
            retry_at: None,
            failures: 0,
            reopens: 0,
            dirty: false,
        })
    }

    /// Tables that joined the source's selection: their existing rows are backfilled when
    /// the pipeline snapshots (`enabled`), through request files like any other.
    pub(crate) fn added(&mut self, log: &StagingLog, tables: Vec<TableId>, enabled: bool) {
        for table in tables {
            if !enabled {
                info!(table = %table, "new table streamed; its existing rows are not copied (snapshot = \"never\")");
                continue;
            }
            match request(log.path(), &table) {
                Ok(id) => {
                    info!(table = %table, id = %id, "new table: backfilling its existing rows")
                }
                Err(e) => tracing::error!(
                    table = %table,
                    error = %e,
                    "new table: cannot write its backfill request; run `weir snapshot` for it"
                ),
            }
            self.next_poll = Instant::now();
        }
    }

    /// Whether a job is queued or running (`run --once` waits for them).
    pub(crate) fn busy(&self) -> bool {
        !self.state.jobs.is_empty()
    }

    fn publish(&self) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = self.state.clone();
    }

    /// When the request directory is due to be read.
    pub(crate) fn poll_at(&self) -> tokio::time::Instant {
        let at = match self.retry_at {
            Some(r) if r < self.next_poll => r,
            _ => self.next_poll,
        };
        tokio::time::Instant::from_std(at)
    }

    /// Reads new requests, removes the files of durably finished jobs, and starts the next
    /// job when none runs.
    pub(crate) async fn poll(
        &mut self,
        log: &StagingLog,
        factory: &dyn SourceFactory,
    ) -> Result<(), LogError> {
        let now = Instant::now();
        if self.retry_at.is_some_and(|r| now >= r) {
            self.retry_at = None;
        }
        if now >= self.next_poll {
            self.next_poll = now + POLL_EVERY;
            let requests = read_requests(&self.dir);
            if !requests.is_empty() {
                let durable = durable_state(log)?;
                for (path, req) in requests {
                    if durable.finished.iter().any(|f| f.id == req.id) {
                        let _ = std::fs::remove_file(&path);
                    } else if !self.state.jobs.iter().any(|j| j.id == req.id)
                        && !self.state.finished.iter().any(|f| f.id == req.id)
                    {
                        info!(table = %req.table, id = %req.id, "backfill queued");
                        self.state.jobs.push(Job {
                            id: req.id,
                            table: req.table,
                            after: None,
                            rows: 0,
                            estimated_rows: 0,
                            requested_ms: req.requested_ms,
                        });
                        self.publish();
                    }
                }
            }
        }
        if self.task.is_none()
            && self.retry_at.is_none()
            && let Some(job) = self.state.jobs.first()
        {
            let table = job.table.clone();
            let reader = match factory.backfill().await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    let connector = factory.info().connector;
                    self.fail(format!("the {connector} source cannot backfill tables"));
                    return Ok(());
                }
                Err(e) => {
                    self.failed(e);
                    return Ok(());
                }
            };
            info!(table = %table, after = ?job.after, "backfill: opening a consistent view");
            let task = spawn(reader);
            // Track from before the view exists: its position is at or after this point.
            self.tracking = Some(Tracking {
                key: self.schemas.get(&table).map(|s| s.primary_key.clone()),
                touched: HashMap::new(),
                truncated: None,
                blind: false,
                view: None,
                rows: None,
            });
            if task.cmd.send(Cmd::Open(table)).await.is_err() {
                self.tracking = None;
                return Ok(());
            }
            self.task = Some(task);
        }
        Ok(())
    }

    /// The next reply of the reader task (cancel-safe); pending forever without a task.
    pub(crate) async fn reply(&mut self) -> Option<ReplyOf> {
        match &mut self.task {
            Some(t) => t.reply.recv().await.map(ReplyOf),
            None => std::future::pending().await,
        }
    }

    /// Handles a reply of the reader task.
    pub(crate) async fn handle(&mut self, reply: Option<ReplyOf>) {
        let Some(ReplyOf(reply)) = reply else {
            // The task ended (it never does on its own): start over.
            self.stop_task();
            return;
        };
        match reply {
            Reply::Opened(Ok(view)) => {
                if let Some(job) = self.state.jobs.first_mut() {
                    job.estimated_rows = view.estimated_rows;
                }
                self.publish();
                info!(
                    table = %view.schema.table,
                    consistent = %view.consistent,
                    "backfill: view open; reading"
                );
                let after = self.state.jobs.first().and_then(|j| j.after.clone());
                if let Some(t) = self.tracking.as_mut() {
                    t.view = Some(view);
                }
                self.read(after).await;
            }
            Reply::Rows(Ok(rows)) => {
                if let Some(t) = self.tracking.as_mut() {
                    t.rows = Some(rows);
                }
            }
            Reply::Opened(Err(e)) | Reply::Rows(Err(e)) => self.failed(e),
        }
    }

    async fn read(&mut self, after: Option<Vec<String>>) {
        if let Some(task) = &self.task
            && task.cmd.send(Cmd::Read(after)).await.is_err()
        {
            self.stop_task();
        }
    }

    fn stop_task(&mut self) {
        self.task = None;
        self.tracking = None;
    }

    /// A reader error: transient ones retry the job with backoff, definite ones fail it.
    fn failed(&mut self, e: ConnectorError) {
        self.stop_task();
        if e.is_transient() {
            self.failures += 1;
            let delay = Duration::from_millis(500u64 << self.failures.min(6));
            warn!(error = %chain(&e), retry_in = ?delay, "backfill: reader failed; retrying");
            self.retry_at = Some(Instant::now() + delay);
        } else {
            self.fail(chain(&e));
        }
    }

    /// Ends the running job without finishing it (recorded with the next batch or job).
    fn fail(&mut self, error: String) {
        self.stop_task();
        if self.state.jobs.is_empty() {
            return;
        }
        let job = self.state.jobs.remove(0);
        tracing::error!(table = %job.table, error = %error, "backfill failed; the pipeline goes on");
        self.finish(job, Some(error));
    }

    fn finish(&mut self, job: Job, error: Option<String>) {
        self.state.finished.push(Finished {
            id: job.id,
            table: job.table,
            rows: job.rows,
            finished_ms: now_ms(),
            error,
        });
        let excess = self.state.finished.len().saturating_sub(KEEP_FINISHED);
        self.state.finished.drain(..excess);
        self.failures = 0;
        self.reopens = 0;
        self.dirty = true;
        self.publish();
    }

    /// A schema the stream announced.
    pub(crate) fn schema(&mut self, s: &TableSchema) {
        self.schemas.insert(s.table.clone(), s.clone());
        if let Some(t) = self.tracking.as_mut()
            && self.state.jobs.first().is_some_and(|j| j.table == s.table)
        {
            t.key = Some(s.primary_key.clone());
        }
    }

    /// Changes the stream staged: remember the keys of the running job's table.
    pub(crate) fn changes(&mut self, changes: &[ChangeEvent]) {
        let (Some(t), Some(job)) = (self.tracking.as_mut(), self.state.jobs.first()) else {
            return;
        };
        for c in changes.iter().filter(|c| *c.table == job.table) {
            if c.op == Op::Truncate {
                t.truncated = Some(c.position.clone());
                continue;
            }
            let Some(key) = &t.key else {
                t.blind = true;
                continue;
            };
            let p = &c.position;
            let old = c.before.as_ref().map(|r| key_of(r, key));
            let new = c.after.as_ref().map(|r| key_of(r, key));
            if matches!(old, Some(None)) || matches!(new, Some(None)) {
                t.blind = true;
                continue;
            }
            let (old, new) = (old.flatten(), new.flatten());
            // The row's previous state: its own key's, or the old key's when the key moved.
            let moved = old.is_some() && new.is_some() && old != new;
            let prev = match (&old, &new) {
                (Some(o), Some(_)) if moved => t.touched.remove(o),
                (_, Some(n)) => t.touched.remove(n),
                (Some(o), None) => t.touched.remove(o),
                (None, None) => None,
            };
            if moved && let Some(o) = old.clone() {
                t.touched.insert(o, Touch::Gone(p.clone()));
            }
            match (new, &c.after) {
                (Some(n), Some(after)) => {
                    let touch = if !has_unchanged(after) {
                        Touch::Full(p.clone())
                    } else {
                        match prev {
                            Some(Touch::Full(_)) if !moved => Touch::Full(p.clone()),
                            Some(Touch::Partial(_, img)) => {
                                Touch::Partial(p.clone(), fill(after.clone(), &img))
                            }
                            _ => Touch::Partial(p.clone(), after.clone()),
                        }
                    };
                    t.touched.insert(n, touch);
                }
                _ => {
                    if let Some(o) = old {
                        t.touched.insert(o, Touch::Gone(p.clone()));
                    }
                }
            }
            if t.touched.len() > MAX_TOUCHED {
                t.blind = true;
            }
        }
    }

    /// The stream reached `p` (a commit or heartbeat).
    pub(crate) fn reached(&mut self, p: &SourcePosition) {
        if self.seen.as_ref().is_none_or(|s| p > s) {
            self.seen = Some(p.clone());
        }
    }

    /// Whether a batch can be staged now (between stream transactions).
    pub(crate) fn ready(&self) -> bool {
        let Some(t) = &self.tracking else {
            return self.dirty;
        };
        let (Some(view), Some(_)) = (&t.view, &t.rows) else {
            return false;
        };
        self.seen.as_ref().is_some_and(|s| s >= &view.consistent)
    }

    /// Stages the batch in hand (call when [`Backfiller::ready`] and between transactions);
    /// returns the commit position sent and the rows staged, if it sent one.
    pub(crate) async fn stage(
        &mut self,
        writer: &mut crate::log::LogWriter,
        head: Option<SourcePosition>,
    ) -> Result<Option<(SourcePosition, u64)>, LogError> {
        let mut kept = Vec::new();
        let mut schema = None;
        let mut last_key = None;
        let batch_ready = self
            .tracking
            .as_ref()
            .is_some_and(|t| t.view.is_some() && t.rows.is_some())
            && !self.state.jobs.is_empty();
        if batch_ready
            && let Some(mut t) = self.tracking.take()
            && let (Some(view), Some(rows)) = (t.view.take(), t.rows.take())
        {
            let table = self.state.jobs[0].table.clone();
            // The view no longer matches the stream's table: a fresh one, from the last key.
            let stale = self
                .schemas
                .get(&table)
                .is_some_and(|s| !same_shape(s, &view.schema));
            if stale || t.blind {
                self.reopens += 1;
                self.stop_task();
                if self.reopens > 3 {
                    self.fail(format!(
                        "the view of {table} kept differing from the table the stream shows \
                         (schema changes in a row, or changes without their schema)"
                    ));
                } else {
                    info!(
                        table = %table,
                        "backfill: the table changed shape since the view opened (or the job \
                         tracked too many changed keys); reopening from the last staged key"
                    );
                }
                return Ok(None);
            }
            let newer = |p: &SourcePosition| p > &view.consistent;
            let truncated = t.truncated.as_ref().is_some_and(newer);
            let key = &view.schema.primary_key;
            for mut e in rows.events {
                let Some(k) = e.after.as_ref().and_then(|r| key_of(r, key)) else {
                    continue;
                };
                if truncated {
                    continue;
                }
                match t.touched.remove(&k) {
                    Some(Touch::Partial(p, img)) if newer(&p) => {
                        // Its current state: the stream's cells, the view's for the rest.
                        e.after = e.after.take().map(|view_row| fill(img, &view_row));
                        kept.push(e);
                    }
                    Some(touch) if newer(touch.position()) => {}
                    _ => kept.push(e),
                }
            }
            let job = &mut self.state.jobs[0];
            job.rows += kept.len() as u64;
            if let Some(last) = &rows.last_key {
                job.after = Some(last.clone());
            }
            schema = Some(view.schema.clone());
            last_key = rows.last_key;
            self.reopens = 0;
            if last_key.is_none() {
                let job = self.state.jobs.remove(0);
                info!(table = %job.table, rows = job.rows, "backfill finished");
                self.stop_task();
                self.finish(job, None);
            } else {
                t.view = Some(view);
                self.tracking = Some(t);
            }
        }
        if schema.is_none() && !self.dirty {
            return Ok(None);
        }
        self.dirty = false;
        self.publish();
        let Some(base) = head.or_else(|| self.seen.clone()) else {
            // Nothing staged or streamed yet: the state is recorded with the first batch.
            return Ok(None);
        };
        let position = base.next_backfill();
        let events = kept.len() as u64;
        let mut meta = Vec::new();
        record::encode(&self.state, &mut meta)?;
        if let Some(schema) = schema {
            writer.send(WriteOp::Schema(schema)).await?;
        }
        if !kept.is_empty() {
            writer.send(WriteOp::Changes(kept)).await?;
        }
        writer.send(WriteOp::Meta(STATE_KEY.to_vec(), meta)).await?;
        writer
            .send(WriteOp::Commit(CommitInfo {
                position: position.clone(),
                txid: None,
                ts_ms: now_ms(),
                events,
            }))
            .await?;
        if let Some(last) = last_key {
            self.read(Some(last)).await;
        }
        Ok(Some((position, events)))
    }
}

/// A reply of the reader task (opaque outside this module).
pub(crate) struct ReplyOf(Reply);

/// Parses a table name as `schema.table`; either part may be double-quoted (`"a.b"."c"`,
/// with `""` for a quote), otherwise the name splits at its first dot (as `tables` globs
/// match `schema.table`). Names are as the
/// catalog spells them (no case folding).
pub fn parse_table(name: &str) -> Result<TableId, String> {
    fn part(s: &str, last: bool) -> Result<(String, &str), String> {
        if let Some(rest) = s.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = rest.char_indices();
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if rest[i + 1..].starts_with('"') {
                        out.push('"');
                        chars.next();
                    } else {
                        return Ok((out, &rest[i + 1..]));
                    }
                } else {
                    out.push(c);
                }
            }
            Err("unterminated quoted name".into())
        } else {
            let end = if last {
                s.len()
            } else {
                s.find('.').unwrap_or(s.len())
            };
            Ok((s[..end].to_string(), &s[end..]))
        }
    }
    let bad = |why: &str| format!("bad table name {name:?}: {why}; write it as schema.table");
    let (schema, rest) = part(name, false).map_err(|e| bad(&e))?;
    let rest = rest.strip_prefix('.').ok_or_else(|| bad("no schema"))?;
    let (table, rest) = part(rest, true).map_err(|e| bad(&e))?;
    if schema.is_empty() || table.is_empty() || !rest.is_empty() {
        return Err(bad("expected exactly two parts"));
    }
    Ok(TableId::new(schema, table))
}

/// Checks that the pipeline can backfill `name` (its source can, and its `tables` select
/// it); returns the table.
pub fn check_table(cfg: &crate::config::PipelineConfig, name: &str) -> Result<TableId, String> {
    let table = parse_table(name)?;
    match &cfg.source {
        crate::config::SourceConfig::Postgres(pg) => {
            let full = table.to_string();
            let glob = weir_postgres::source::glob_match;
            if !pg.tables.iter().any(|g| glob(g, &full))
                || pg.exclude.iter().any(|g| glob(g, &full))
            {
                return Err(format!(
                    "table {full} is not selected by the pipeline's tables {:?} (exclude {:?}); \
                     weir backfills only tables it streams: add it to `tables` and restart weir \
                     first",
                    pg.tables, pg.exclude
                ));
            }
            Ok(table)
        }
        crate::config::SourceConfig::Mysql(my) => {
            if !my.source.selects(&table.schema, &table.name) {
                return Err(format!(
                    "table {table} is not selected by the pipeline's tables {:?} (exclude \
                     {:?}); weir backfills only tables it streams: add it to `tables` and \
                     restart weir first",
                    my.source.tables, my.source.exclude
                ));
            }
            Ok(table)
        }
        other => Err(format!(
            "the {} source cannot backfill tables while streaming yet (the postgres and \
             mysql sources can); to re-read this source's tables, start the pipeline over with a new \
             data_dir and snapshot = \"initial\"",
            other.kind()
        )),
    }
}

/// The backfills for `weir status` and `/status`: `state` (the source task's, or the
/// durable one) plus requests no pipeline has picked up yet.
pub fn report(state: &BackfillState, log_dir: &Path) -> serde_json::Value {
    let mut out = Vec::new();
    for f in &state.finished {
        out.push(serde_json::json!({
            "id": f.id,
            "table": f.table.to_string(),
            "state": if f.error.is_some() { "failed" } else { "done" },
            "rows": f.rows,
            "estimated_rows": serde_json::Value::Null,
            "error": f.error,
        }));
    }
    for (i, j) in state.jobs.iter().enumerate() {
        out.push(serde_json::json!({
            "id": j.id,
            "table": j.table.to_string(),
            "state": if i == 0 { "running" } else { "queued" },
            "rows": j.rows,
            "estimated_rows": j.estimated_rows,
            "error": serde_json::Value::Null,
        }));
    }
    for (_, r) in read_requests(&requests_dir(log_dir)) {
        let known =
            state.jobs.iter().any(|j| j.id == r.id) || state.finished.iter().any(|f| f.id == r.id);
        if !known {
            out.push(serde_json::json!({
                "id": r.id,
                "table": r.table.to_string(),
                "state": "requested",
                "rows": 0,
                "estimated_rows": serde_json::Value::Null,
                "error": serde_json::Value::Null,
            }));
        }
    }
    serde_json::Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_parse_with_quotes_and_dots() {
        let t = |s, n| TableId::new(s, n);
        assert_eq!(parse_table("public.orders").unwrap(), t("public", "orders"));
        assert_eq!(parse_table("public.a.b").unwrap(), t("public", "a.b"));
        assert_eq!(
            parse_table("\"my.schema\".\"Or\"\"ders\"").unwrap(),
            t("my.schema", "Or\"ders")
        );
        for bad in ["orders", ".x", "x.", "\"a.b", "\"a\"x.y", "a.\"b\"c"] {
            assert!(parse_table(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_are_written_and_read_in_order() {
        let dir = std::env::temp_dir().join(format!("weir-bf-req-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = request(&dir, &TableId::new("public", "a")).unwrap();
        let b = request(&dir, &TableId::new("public", "b")).unwrap();
        let got = read_requests(&requests_dir(&dir));
        let ids: Vec<&str> = got.iter().map(|(_, r)| r.id.as_str()).collect();
        assert_eq!(ids, [a.as_str(), b.as_str()]);
        assert_eq!(got[1].1.table, TableId::new("public", "b"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
