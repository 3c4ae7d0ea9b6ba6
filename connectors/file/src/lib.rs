//! The file sink: one `<schema>.<table>.jsonl` per table, one SPEC.md envelope per line.
//!
//! # Exactly-once on a filesystem
//!
//! Next to the data files the sink keeps a state file, `.weir-<sink>.state.json`, replaced
//! atomically (write, fsync, rename, fsync directory) after the data files are fsynced. It
//! holds the log sequence of the last applied source transaction and the length of every
//! data file at that point:
//!
//! ```text
//!  apply(batch) ─▶ append lines ─▶ at each Commit: remember file lengths
//!               └▶ end of batch: fsync files ─▶ write state {seq, lengths} atomically
//!  open()       ─▶ read state ─▶ truncate every file to its recorded length
//! ```
//!
//! After a crash, reopening cuts every file back to the last recorded transaction boundary,
//! and the engine re-sends everything after that sequence: no line is missing, duplicated or
//! partial. Lines of a transaction still in progress may reach the disk early (memory stays
//! bounded for huge transactions); they are cut on restart if their commit never came.
//!
//! A lock file keeps two sinks from writing into one directory.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use weir_api::{
    ConnectorError, Entry, LogEntry, Result, Sink, SinkContext, TableId, render_envelope,
};

/// `[[sinks]] type = "file"` settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// Directory for the `.jsonl` files (created if missing).
    pub path: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Sequence of the last applied commit.
    seq: Option<u64>,
    /// Data file name -> length in bytes at `seq`.
    files: BTreeMap<String, u64>,
}

struct DataFile {
    writer: BufWriter<File>,
    /// Bytes written so far (including lines of the transaction in progress).
    len: u64,
    /// Written since the last fsync.
    dirty: bool,
}

/// The JSON-lines file sink.
pub struct FileSink {
    ctx: SinkContext,
    dir: PathBuf,
    state_path: PathBuf,
    state: State,
    files: BTreeMap<String, DataFile>,
    /// Files touched since the last commit boundary.
    touched: Vec<String>,
    line: Vec<u8>,
    /// The last table written and its file name (consecutive events mostly share a table).
    last_name: Option<(std::sync::Arc<TableId>, String)>,
    _lock: File,
}

impl FileSink {
    /// Opens the directory, takes its lock and cuts every data file back to the last
    /// recorded transaction boundary.
    pub fn open(config: &FileSinkConfig, ctx: SinkContext) -> Result<Self> {
        let dir = config.path.clone();
        fs::create_dir_all(&dir).map_err(|e| {
            ConnectorError::io(
                format!("file sink {}: cannot create {}", ctx.sink, dir.display()),
                e,
            )
        })?;
        let lock_path = dir.join(".weir.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| {
                ConnectorError::io(
                    format!(
                        "file sink {}: cannot open {}",
                        ctx.sink,
                        lock_path.display()
                    ),
                    e,
                )
            })?;
        if lock.try_lock().is_err() {
            return Err(ConnectorError::definite(format!(
                "file sink {}: {} is in use by another weir process or sink; \
                 give each file sink its own directory",
                ctx.sink,
                dir.display()
            )));
        }
        let state_path = dir.join(format!(".weir-{}.state.json", ctx.sink));
        let state = match fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice::<State>(&bytes).map_err(|e| {
                ConnectorError::definite_from(
                    format!(
                        "file sink {}: state file {} is damaged; delete the directory's .jsonl files and \
                         the state file to rebuild the output from the staging log",
                        ctx.sink,
                        state_path.display()
                    ),
                    e,
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(existing) = data_files(&dir)?.into_iter().next() {
                    return Err(ConnectorError::definite(format!(
                        "file sink {}: {} already holds {existing} but no weir state; \
                         point the sink at an empty directory or remove the old files",
                        ctx.sink,
                        dir.display()
                    )));
                }
                State::default()
            }
            Err(e) => return Err(ConnectorError::io(format!("file sink {}: cannot read {}", ctx.sink, state_path.display()), e)),
        };
        let mut sink = FileSink {
            ctx,
            dir,
            state_path,
            state,
            files: BTreeMap::new(),
            touched: Vec::new(),
            line: Vec::with_capacity(1024),
            last_name: None,
            _lock: lock,
        };
        sink.recover()?;
        Ok(sink)
    }

    /// Truncates each data file to its recorded length; files the state does not know were
    /// created by a transaction that never committed and are emptied.
    fn recover(&mut self) -> Result<()> {
        for name in data_files(&self.dir)? {
            let keep = self.state.files.get(&name).copied().unwrap_or(0);
            let path = self.dir.join(&name);
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| self.io("cannot open", &path, e))?;
            let len = file
                .metadata()
                .map_err(|e| self.io("cannot stat", &path, e))?
                .len();
            if len < keep {
                return Err(ConnectorError::definite(format!(
                    "file sink {}: {} has {len} bytes but weir wrote {keep}; it was changed by \
                     something else. Remove the directory's files to rebuild them from the staging log",
                    self.ctx.sink,
                    path.display()
                )));
            }
            if len > keep {
                tracing::info!(sink = %self.ctx.sink, file = %name, cut = len - keep, "removing lines of an unfinished transaction");
                file.set_len(keep)
                    .map_err(|e| self.io("cannot truncate", &path, e))?;
                file.sync_all()
                    .map_err(|e| self.io("cannot fsync", &path, e))?;
            }
        }
        // Record that we are here before the first write, so a crash before the first
        // commit still finds a state and may cut the files.
        if !self.state_path.exists() {
            self.write_state()?;
        }
        Ok(())
    }

    fn io(&self, what: &str, path: &Path, e: std::io::Error) -> ConnectorError {
        ConnectorError::io(
            format!("file sink {}: {what} {}", self.ctx.sink, path.display()),
            e,
        )
    }

    fn file(&mut self, name: &str) -> Result<&mut DataFile> {
        if !self.files.contains_key(name) {
            let path = self.dir.join(name);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| self.io("cannot open", &path, e))?;
            let len = file
                .metadata()
                .map_err(|e| self.io("cannot stat", &path, e))?
                .len();
            self.files.insert(
                name.to_owned(),
                DataFile {
                    writer: BufWriter::with_capacity(256 * 1024, file),
                    len,
                    dirty: false,
                },
            );
        }
        Ok(self.files.get_mut(name).expect("inserted above"))
    }

    fn apply_blocking(&mut self, entries: &[LogEntry]) -> Result<()> {
        let mut commit_seq = None;
        for entry in entries {
            match &entry.entry {
                Entry::Schema(_) => {}
                Entry::Change(event, schema) => {
                    let name = match &self.last_name {
                        Some((table, name)) if *table == event.table => name.clone(),
                        _ => {
                            let name = file_name(&event.table.schema, &event.table.name);
                            self.last_name = Some((event.table.clone(), name.clone()));
                            name
                        }
                    };
                    let mut line = std::mem::take(&mut self.line);
                    line.clear();
                    let rendered = render_envelope(
                        &mut line,
                        &self.ctx.source,
                        schema,
                        event,
                        entry.staged_ms,
                    );
                    line.push(b'\n');
                    let result = rendered.and_then(|()| {
                        let sink = self.ctx.sink.clone();
                        let f = self.file(&name)?;
                        f.writer.write_all(&line).map_err(|e| {
                            ConnectorError::io(format!("file sink {sink}: cannot write {name}"), e)
                        })?;
                        f.len += line.len() as u64;
                        f.dirty = true;
                        Ok(())
                    });
                    self.line = line;
                    result?;
                    if !self.touched.contains(&name) {
                        self.touched.push(name);
                    }
                }
                Entry::Commit(_) => {
                    for name in self.touched.drain(..) {
                        let len = self.files[&name].len;
                        self.state.files.insert(name, len);
                    }
                    commit_seq = Some(entry.seq);
                }
            }
        }
        let Some(seq) = commit_seq else { return Ok(()) };
        for (name, f) in &mut self.files {
            if f.dirty {
                let sink = &self.ctx.sink;
                f.writer
                    .flush()
                    .and_then(|()| f.writer.get_ref().sync_data())
                    .map_err(|e| {
                        ConnectorError::io(format!("file sink {sink}: cannot write {name}"), e)
                    })?;
                f.dirty = false;
            }
        }
        self.state.seq = Some(seq);
        self.write_state()
    }

    fn write_state(&self) -> Result<()> {
        let tmp = self.state_path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(&self.state)
            .map_err(|e| ConnectorError::definite_from("cannot encode file sink state", e))?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.state_path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| self.io("cannot write state", &self.state_path, e))
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn committed(&mut self) -> Result<Option<u64>> {
        Ok(self.state.seq)
    }

    async fn apply(&mut self, entries: &[LogEntry]) -> Result<()> {
        // File I/O and fsync block; the engine runs sinks on the multi-threaded runtime.
        tokio::task::block_in_place(|| self.apply_blocking(entries))
    }
}

/// `<schema>.<table>.jsonl`, with `/`, `%`, control characters, and `.` in the schema name
/// percent-encoded, so any table name is a safe file name and different tables never share
/// one (`"a.b"."c"` is `a%2Eb.c.jsonl`, `"a"."b.c"` is `a.b.c.jsonl`).
pub fn file_name(schema: &str, table: &str) -> String {
    let mut s = String::with_capacity(schema.len() + table.len() + 7);
    for (i, part) in [schema, table].into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        for (j, c) in part.chars().enumerate() {
            if c == '/'
                || c == '%'
                || c.is_control()
                || (i == 0 && c == '.')
                || (j == 0 && c == '.')
            {
                let mut buf = [0; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    s.push_str(&format!("%{b:02X}"));
                }
            } else {
                s.push(c);
            }
        }
    }
    s.push_str(".jsonl");
    s
}

fn data_files(dir: &Path) -> Result<Vec<String>> {
    let rd = fs::read_dir(dir)
        .map_err(|e| ConnectorError::io(format!("cannot list {}", dir.display()), e))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry =
            entry.map_err(|e| ConnectorError::io(format!("cannot list {}", dir.display()), e))?;
        if let Some(name) = entry.file_name().to_str()
            && name.ends_with(".jsonl")
            && !name.starts_with('.')
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_name("public", "orders"), "public.orders.jsonl");
        assert_eq!(file_name("a/b", "c%d"), "a%2Fb.c%25d.jsonl");
        assert_eq!(file_name(".x", "ü"), "%2Ex.ü.jsonl");
        assert_ne!(file_name("a.b", "c"), file_name("a", "b.c"));
        assert_eq!(file_name("a", ".."), "a.%2E..jsonl");
    }
}
