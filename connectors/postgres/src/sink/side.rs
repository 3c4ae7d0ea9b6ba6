//! Copy streams: extra connections that load large batches of snapshot rows (`op = r`) in
//! parallel with the sink's own connection (see the module docs of the sink, "Copy streams").
//!
//! A stream runs one [`Job`] at a time in its own task, inside a transaction of its own that
//! stays open across jobs until the sink settles the streams ([`Streams::join`] then
//! [`Streams::commit`]), which it does before its own connection touches any table and
//! before it writes its position. Each job runs under a savepoint, so a job that must be
//! redone does not undo the stream's earlier jobs.

use super::mapping::Cell;
use super::{TargetCol, copy_rows};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, NoTls};
use weir_api::TableId;

/// One bulk load of snapshot rows into one table.
pub(super) struct Job {
    pub table: TableId,
    /// Target name for messages.
    pub display: String,
    pub cols: Vec<TargetCol>,
    /// COPY straight into the table (it was empty when this session first looked); a
    /// duplicate key rolls back to the job's savepoint and takes the merge path.
    pub direct: bool,
    /// `COPY <table> (...) FROM STDIN`.
    pub copy_sql: String,
    /// `CREATE TEMP TABLE IF NOT EXISTS <stage> ...`.
    pub stage_sql: String,
    /// `COPY <stage> (...) FROM STDIN`.
    pub stage_copy_sql: String,
    /// `INSERT INTO <table> ... SELECT ... FROM <stage> ON CONFLICT ...; TRUNCATE <stage>`.
    pub merge_sql: String,
    pub rows: Vec<Vec<Cell>>,
}

/// How a job ended.
pub(super) enum Outcome {
    /// Copied straight into the table.
    Copied,
    /// Copied into the stage and merged (a key was already there).
    Merged,
    /// A lock wait timed out (another stream's uncommitted rows hold the same key, or another
    /// session locks the table): rolled back to the job's savepoint; run it again after the
    /// other streams commit.
    LockTimeout,
    /// Any other error; the stream's transaction is unusable.
    Failed(tokio_postgres::Error),
}

/// A finished job, its rows kept for error messages and retries.
pub(super) struct Done {
    pub job: Job,
    pub outcome: Outcome,
}

struct Stream {
    /// `None` while a job runs (the task owns the client).
    client: Option<Client>,
    connection: JoinHandle<()>,
    task: Option<JoinHandle<(Client, Done)>>,
    in_txn: bool,
}

/// Up to `limit` copy streams, connected when first needed.
pub(super) struct Streams {
    config: Config,
    /// Session settings, run once per new connection.
    setup_sql: String,
    limit: usize,
    streams: Vec<Stream>,
    /// Round-robin position for waiting when every stream is busy.
    next: usize,
}

/// The error of a stream's connection or task.
pub(super) enum StreamError {
    Pg(tokio_postgres::Error),
    /// The job's task panicked or was cancelled.
    Task(String),
}

impl From<tokio_postgres::Error> for StreamError {
    fn from(e: tokio_postgres::Error) -> Self {
        StreamError::Pg(e)
    }
}

impl Streams {
    pub(super) fn new(config: Config, setup_sql: String, limit: usize) -> Self {
        Streams {
            config,
            setup_sql,
            limit,
            streams: Vec::new(),
            next: 0,
        }
    }

    /// Whether jobs may go to streams at all.
    pub(super) fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Whether a stream runs a job or holds an open transaction.
    pub(super) fn active(&self) -> bool {
        self.streams.iter().any(|s| s.task.is_some() || s.in_txn)
    }

    /// Starts `job` on an idle stream, connecting a new one while fewer than `limit` exist;
    /// when all are busy, waits for one and returns the job it finished.
    pub(super) async fn submit(&mut self, job: Job) -> Result<Option<Done>, StreamError> {
        let mut finished = None;
        let idx = match self.streams.iter().position(|s| s.task.is_none()) {
            Some(i) => i,
            None if self.streams.len() < self.limit => {
                self.streams.push(self.connect().await?);
                self.streams.len() - 1
            }
            None => {
                let i = self.next % self.streams.len();
                self.next = i + 1;
                finished = Some(self.wait(i).await?);
                i
            }
        };
        let stream = &mut self.streams[idx];
        let client = stream
            .client
            .take()
            .ok_or_else(|| StreamError::Task("a copy stream has no connection".into()))?;
        let begin = !stream.in_txn;
        stream.in_txn = true;
        stream.task = Some(tokio::spawn(run(client, begin, job)));
        Ok(finished)
    }

    /// Waits for every running job.
    pub(super) async fn join(&mut self) -> Result<Vec<Done>, StreamError> {
        let mut out = Vec::new();
        for i in 0..self.streams.len() {
            if self.streams[i].task.is_some() {
                out.push(self.wait(i).await?);
            }
        }
        Ok(out)
    }

    /// Commits every stream's transaction (after [`Streams::join`]).
    pub(super) async fn commit(&mut self) -> Result<(), StreamError> {
        for s in &mut self.streams {
            if !s.in_txn {
                continue;
            }
            let client = s
                .client
                .as_ref()
                .ok_or_else(|| StreamError::Task("a copy stream is still running".into()))?;
            client.batch_execute("COMMIT").await?;
            s.in_txn = false;
        }
        Ok(())
    }

    /// Drops every stream: their open transactions roll back at the server.
    pub(super) fn abort(&mut self) {
        for s in self.streams.drain(..) {
            if let Some(t) = s.task {
                t.abort();
            }
            s.connection.abort();
        }
    }

    async fn wait(&mut self, i: usize) -> Result<Done, StreamError> {
        let stream = &mut self.streams[i];
        let Some(task) = stream.task.take() else {
            return Err(StreamError::Task("no job to wait for".into()));
        };
        let (client, done) = task.await.map_err(|e| StreamError::Task(e.to_string()))?;
        stream.client = Some(client);
        Ok(done)
    }

    async fn connect(&self) -> Result<Stream, StreamError> {
        let (client, connection) = self.config.connect(NoTls).await?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "copy stream connection ended");
            }
        });
        if let Err(e) = client.batch_execute(&self.setup_sql).await {
            connection.abort();
            return Err(e.into());
        }
        Ok(Stream {
            client: Some(client),
            connection,
            task: None,
            in_txn: false,
        })
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.abort();
    }
}

async fn run(client: Client, begin: bool, job: Job) -> (Client, Done) {
    let outcome = match load(&client, begin, &job).await {
        Ok(o) => o,
        Err(e) if e.code().map(|c| c.code()) == Some("55P03") => {
            match client
                .batch_execute("ROLLBACK TO SAVEPOINT weir_side; RELEASE SAVEPOINT weir_side")
                .await
            {
                Ok(()) => Outcome::LockTimeout,
                Err(e) => Outcome::Failed(e),
            }
        }
        Err(e) => Outcome::Failed(e),
    };
    (client, Done { job, outcome })
}

async fn load(client: &Client, begin: bool, job: &Job) -> Result<Outcome, tokio_postgres::Error> {
    client
        .batch_execute(if begin {
            "BEGIN; SAVEPOINT weir_side"
        } else {
            "SAVEPOINT weir_side"
        })
        .await?;
    let rows = || job.rows.iter().map(Vec::as_slice);
    if job.direct {
        match copy_rows(client, &job.copy_sql, rows()).await {
            Ok(_) => {
                client.batch_execute("RELEASE SAVEPOINT weir_side").await?;
                return Ok(Outcome::Copied);
            }
            Err(e) if e.code().map(|c| c.code()) == Some("23505") => {
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT weir_side")
                    .await?;
            }
            Err(e) => return Err(e),
        }
    }
    client.batch_execute(&job.stage_sql).await?;
    copy_rows(client, &job.stage_copy_sql, rows()).await?;
    client.batch_execute(&job.merge_sql).await?;
    client.batch_execute("RELEASE SAVEPOINT weir_side").await?;
    Ok(Outcome::Merged)
}
