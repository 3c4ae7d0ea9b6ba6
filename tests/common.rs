//! Helpers shared by the tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use weir::config::{DatagenConfig, Mix};
use weir::datagen::{Datagen, Generator};
use weir_api::{SourceInfo, render_envelope};

/// The weir binary under test.
pub fn weir() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.env("RUST_LOG", "warn");
    c
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let base = std::env::var_os("WEIR_TEST_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = base.join(format!("weir-test-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 100 ms until it returns a value; panics after `secs` seconds.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out ({secs} s) waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Writes a pipeline file `pipeline.toml` into `dir`.
pub fn write_pipeline(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// A datagen → file pipeline file.
pub fn datagen_pipeline(dir: &Path, cfg: &DatagenConfig, extra_source: &str) -> PathBuf {
    let mix = match cfg.mix {
        Mix::Insert => "insert",
        Mix::Mixed => "mixed",
    };
    write_pipeline(
        dir,
        &format!(
            "name = \"t\"\ndata_dir = \"data\"\n\n[source]\ntype = \"datagen\"\ntable_count = {}\nevents = {}\ntxn_size = {}\nrow_bytes = {}\nmix = \"{mix}\"\nseed = {}\n{extra_source}\n\n[[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n",
            cfg.table_count.0, cfg.events, cfg.txn_size.0, cfg.row_bytes, cfg.seed
        ),
    )
}

/// Runs `weir run --once PIPELINE` and asserts it succeeded.
pub fn run_once_ok(pipeline: &Path) -> String {
    let out = run(weir().args(["run", "--once"]).arg(pipeline));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "weir run --once failed: {stderr}");
    stderr
}

/// Builds plain file sinks.
pub struct FileFactory(pub weir_file::FileSinkConfig);

#[async_trait::async_trait]
impl weir::runtime::SinkFactory for FileFactory {
    async fn build(&self, ctx: weir_api::SinkContext) -> weir_api::Result<Box<dyn weir_api::Sink>> {
        Ok(Box::new(weir_file::FileSink::open(&self.0, ctx)?))
    }
}

/// Runs a command, returning its output; panics with stderr if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("cannot start weir")
}

/// Cuts the envelope's trailing processing time (`,"ts_ms":N}`), which is when weir staged
/// the event and so differs between runs.
pub fn without_staged_ts(line: &str) -> &str {
    match line.rfind(",\"ts_ms\":") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Checks that the file sink's output in `out` is exactly what datagen generates for `cfg`:
/// every event once, in order per table, nothing partial. Returns the number of lines.
pub fn assert_output_matches_datagen(out: &Path, cfg: &DatagenConfig, pipeline: &str) -> u64 {
    let info = SourceInfo {
        connector: "datagen".into(),
        name: pipeline.into(),
        db: "datagen".into(),
    };
    let schemas = Datagen::schemas(cfg);
    let mut readers: Vec<_> = schemas
        .iter()
        .map(|s| {
            let path = out.join(weir_file::file_name(&s.table.schema, &s.table.name));
            let file = std::fs::File::open(&path).map(BufReader::new);
            (path, file.ok())
        })
        .collect();
    let mut generator = Generator::new(cfg);
    let mut expected = Vec::new();
    let mut line = String::new();
    for i in 0..cfg.events {
        let event = generator.event(None);
        let t: usize = event.table.name[1..].parse().unwrap();
        expected.clear();
        render_envelope(&mut expected, &info, &schemas[t], &event, 0).unwrap();
        let expected = std::str::from_utf8(&expected).unwrap();
        let (path, reader) = &mut readers[t];
        let reader = reader
            .as_mut()
            .unwrap_or_else(|| panic!("{} is missing (event {i})", path.display()));
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(
            line.ends_with('\n'),
            "{}: event {i} missing or partial: {line:?}",
            path.display()
        );
        assert_eq!(
            without_staged_ts(line.trim_end()),
            without_staged_ts(expected),
            "{}: event {i} differs",
            path.display()
        );
    }
    for (path, reader) in &mut readers {
        if let Some(r) = reader {
            line.clear();
            assert_eq!(
                r.read_line(&mut line).unwrap(),
                0,
                "{}: extra line after all events: {line:?}",
                path.display()
            );
        }
    }
    cfg.events
}

/// Peak resident memory (VmHWM) of a running process, in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A small deterministic PRNG for test schedules.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// `psql` connected to database `db` of the test PostgreSQL, stopping at the first error,
/// unaligned output without headers.
pub fn psql_command(db: &str) -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        db,
        "-v",
        "ON_ERROR_STOP=1",
        "-XtAq",
    ])
    .env("PGPASSWORD", "postgres");
    c
}

/// Runs `sql` in database `db` and returns its trimmed output; panics with psql's error.
pub fn psql_in(db: &str, sql: &str) -> String {
    psql_checked(psql_command(db).args(["-c", sql]), sql)
}

/// Runs a prepared `psql` command; panics with psql's error (`what` names it).
pub fn psql_checked(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .expect("psql is missing: run scripts/services.sh (it installs postgresql-client)");
    assert!(
        out.status.success(),
        "psql failed (is PostgreSQL up with wal_level=logical? run scripts/services.sh): {}\n{what}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
