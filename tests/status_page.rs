//! The live status page (`/` on `[admin] metrics`) in headless Chromium, driven through
//! chromedriver's WebDriver HTTP API: while a pipeline runs, the charts are drawn from
//! `/status` and keep updating, and a screenshot is kept for people to look at.
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (scripts/deps.sh installs them).

use crate::common::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Events per second datagen produces.
const RATE: f64 = 2000.0;
/// The chart SVGs' size and left padding in page.html.
const W: f64 = 720.0;
const H: f64 = 160.0;
const PAD: f64 = 30.0;

/// One HTTP/1.1 request on loopback: (status, body), or None if the server is not there.
/// Reads by Content-Length (chromedriver keeps connections open), else chunks, else to EOF.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(120))).ok()?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let complete = |raw: &[u8]| -> bool {
        let text = String::from_utf8_lossy(raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            return false;
        };
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        if let Some(n) = header("content-length").and_then(|n| n.parse::<usize>().ok()) {
            body.len() >= n
        } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            body.ends_with("0\r\n\r\n")
        } else {
            false
        }
    };
    while !complete(&raw) {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.trim() == "chunked"
        })
    });
    Some((status, if chunked { dechunk(body)? } else { body.into() }))
}

fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n")?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        s = rest.get(n + 2..)?;
    }
}

/// A child process in its own process group, killed with the whole group on drop
/// (chromedriver's Chromium processes included).
struct Group(Child);
impl Group {
    fn spawn(cmd: &mut Command, what: &str) -> Self {
        cmd.process_group(0);
        Group(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start {what} ({e}); run scripts/deps.sh")),
        )
    }
    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
    }
}
impl Drop for Group {
    fn drop(&mut self) {
        self.signal("-KILL");
        let _ = self.0.wait();
    }
}

/// A WebDriver session on headless Chromium.
struct Browser {
    port: u16,
    session: String,
    _driver: Group,
    _profile: TempDir,
}

impl Browser {
    fn start() -> Self {
        let port = free_port();
        let profile = TempDir::new("chromium-profile");
        let driver = Group::spawn(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            "chromedriver",
        );
        wait_for("chromedriver", 60, || {
            let (_, body) = http(port, "GET", "/status", None)?;
            let v: Value = serde_json::from_str(&body).ok()?;
            (v["value"]["ready"] == true).then_some(())
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--hide-scrollbars",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let (status, body) =
            http(port, "POST", "/session", Some(&caps)).expect("chromedriver: no answer");
        assert_eq!(status, 200, "cannot start headless Chromium: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let session = v["value"]["sessionId"].as_str().expect(&body).to_string();
        Browser {
            port,
            session,
            _driver: driver,
            _profile: profile,
        }
    }

    /// A WebDriver command of this session; returns its `value`.
    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}/{what}", self.session);
        let (status, text) = http(self.port, method, &path, body.as_ref())
            .unwrap_or_else(|| panic!("chromedriver: no answer to {method} {what}"));
        assert_eq!(status, 200, "WebDriver {method} {what}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        v["value"].clone()
    }

    fn script(&self, js: &str) -> Value {
        self.cmd(
            "POST",
            "execute/sync",
            Some(json!({"script": js, "args": []})),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

/// What the page shows: the two charts (axis maximum, samples, polylines) and the sinks table.
const READ_PAGE: &str = r##"
const chart = id => {
  const svg = document.getElementById(id);
  return {
    max: Number(svg.dataset.max || -1),
    points: Number(svg.dataset.points || -1),
    axis: (svg.querySelector("text") || {}).textContent || "",
    lines: [...svg.querySelectorAll("polyline")].map(l => ({
      name: l.dataset.series, last: Number(l.dataset.last), points: l.getAttribute("points"),
    })),
  };
};
return {
  state: document.getElementById("state").textContent,
  summary: document.getElementById("summary").textContent,
  problems: document.getElementById("problems").textContent,
  rate: chart("rate"),
  lag: chart("lag"),
  sinks: [...document.querySelectorAll("#sinks tbody tr")].map(tr => [...tr.children].map(td => td.textContent)),
};
"##;

/// One polyline of a chart, its `points` parsed.
struct Line {
    last: f64,
    xy: Vec<(f64, f64)>,
}

fn line(chart: &Value, name: &str) -> Line {
    let l = chart["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap_or_else(|| panic!("no series {name} in {chart}"));
    let xy = l["points"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(|p| {
            let (x, y) = p.split_once(',').unwrap();
            (x.parse().unwrap(), y.parse().unwrap())
        })
        .collect();
    Line {
        last: l["last"].as_f64().unwrap(),
        xy,
    }
}

fn names(chart: &Value) -> Vec<&str> {
    chart["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap_or(""))
        .collect()
}

/// Checks one chart is drawn consistently: every series has one point per sample, inside
/// the SVG, left to right, and the newest point sits where its value puts it on the axis.
fn check_chart(chart: &Value, series: &[&str]) {
    assert_eq!(names(chart), series, "{chart}");
    let max = chart["max"].as_f64().unwrap();
    let n = chart["points"].as_u64().unwrap() as usize;
    assert!(max >= 1.0 && n >= 1, "{chart}");
    // The label is the rounded maximum with the locale's digit grouping.
    let label = chart["axis"].as_str().unwrap();
    let digits: String = label.chars().filter(char::is_ascii_digit).collect();
    let shown: f64 = digits
        .parse()
        .unwrap_or_else(|_| panic!("axis label {label:?}"));
    assert!(
        (shown - max).abs() <= 1.0,
        "axis label {shown} vs max {max}"
    );
    for name in series {
        let l = line(chart, name);
        assert_eq!(l.xy.len(), n, "{name}: {chart}");
        assert!(l.last >= 0.0 && l.last <= max, "{name}: {chart}");
        for w in l.xy.windows(2) {
            assert!(w[1].0 > w[0].0, "{name}: x not increasing: {chart}");
        }
        for &(x, y) in &l.xy {
            assert!(
                (0.0..=W).contains(&x) && (0.0..=H).contains(&y),
                "{name}: ({x},{y}) outside"
            );
        }
        let y = l.xy.last().unwrap().1;
        let v = (H - 4.0 - y) * max / (H - 18.0);
        assert!(
            (v - l.last).abs() <= max * 0.01 + 0.01,
            "{name}: newest point at y={y} means {v}, not {}",
            l.last
        );
        assert!(l.xy[0].0 >= PAD - 0.01, "{name}: starts left of the axis");
    }
}

/// The sinks table row of `name`: sink, type, state, applied seq, events/s, lag records, ...
fn row<'a>(page: &'a Value, name: &str) -> Vec<&'a str> {
    page["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect::<Vec<_>>()
        })
        .find(|r| r[0] == name)
        .unwrap_or_else(|| panic!("no row {name}: {page}"))
}

fn num(s: &str) -> f64 {
    s.parse().unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

/// `staged N events` in the summary line.
fn staged(page: &Value) -> u64 {
    let s = page["summary"].as_str().unwrap();
    let n = s
        .split_once("staged ")
        .and_then(|(_, r)| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("summary {s:?}"));
    n.parse().unwrap()
}

fn status(port: u16) -> Value {
    let (code, body) = http(port, "GET", "/status", None).expect("/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn sink<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

/// Where the screenshot goes: `$WEIR_TEST_ARTIFACTS`, else the cargo target directory (it
/// outlives the test), else the temporary directory.
fn screenshot_path() -> PathBuf {
    let dir = std::env::var_os("WEIR_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .or_else(|| {
            Path::new(env!("CARGO_BIN_EXE_weir"))
                .parent()?
                .parent()
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("weir-status-page.png")
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c}"),
        }
    };
    let bytes: Vec<u8> = s
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk.iter().fold(0u32, |acc, &c| acc << 6 | val(c)) << (6 * (4 - chunk.len()));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// Checks a PNG: signature, an IHDR of at least `min_w` x `min_h`, an IEND, a sane size.
fn check_png(png: &[u8], min_w: u32, min_h: u32) {
    assert!(png.len() > 20_000, "screenshot only {} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&png[12..16], b"IHDR");
    let w = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(w >= min_w && h >= min_h, "screenshot {w}x{h}");
    assert_eq!(&png[png.len() - 8..png.len() - 4], b"IEND", "PNG truncated");
}

#[test]
fn status_page_charts_update_in_headless_chromium() {
    let dir = TempDir::new("status-page");
    let (http_port, sql_port) = (free_port(), free_port());
    let pipeline = write_pipeline(
        dir.path(),
        &format!(
            "name = \"page\"\ndata_dir = \"data\"\n\n[source]\ntype = \"datagen\"\ntable_count = 2\nevents = 1000000000\ntxn_size = 10\nrow_bytes = 40\nrate = {RATE}\n\n\
             [[sinks]]\nname = \"files\"\ntype = \"file\"\npath = \"out\"\n\n[[sinks]]\nname = \"held\"\ntype = \"file\"\npath = \"held\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{sql_port}\"\npassword = \"${{ADMIN_PW}}\"\nmetrics = \"127.0.0.1:{http_port}\"\n"
        ),
    );
    let mut weir = Group::spawn(
        weir()
            .arg("run")
            .arg(&pipeline)
            .env("ADMIN_PW", "pagepw")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        "weir",
    );
    wait_for("/status", 60, || http(http_port, "GET", "/status", None));
    // Hold one sink so its lag grows: the lag chart then has something to draw.
    wait_for("PAUSE SINK held over admin SQL", 60, || {
        Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &sql_port.to_string(),
                "-U",
                "weir",
                "-d",
                "weir",
            ])
            .args(["-XtAq", "-c", "PAUSE SINK held"])
            .env("PGPASSWORD", "pagepw")
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .ok()
            .filter(|o| o.status.success())
    });

    let browser = Browser::start();
    browser.cmd(
        "POST",
        "url",
        Some(json!({"url": format!("http://127.0.0.1:{http_port}/")})),
    );
    // The page polls every 2 s; wait for a few samples with the held sink's lag in them.
    let read = || browser.script(READ_PAGE);
    let first = wait_for("the charts to draw 3 samples", 120, || {
        let p = read();
        (p["rate"]["points"].as_u64() >= Some(3) && line(&p["lag"], "held").last > 0.0).then_some(p)
    });
    let st1 = status(http_port);
    std::thread::sleep(Duration::from_secs(8));
    let second = read();
    let st2 = status(http_port);

    for (p, st) in [(&first, &st1), (&second, &st2)] {
        assert_eq!(p["state"], "(running, healthy)", "{p}");
        assert_eq!(p["problems"], "", "{p}");
        check_chart(&p["rate"], &["source", "files", "held"]);
        check_chart(&p["lag"], &["files", "held"]);
        // The table and the charts come from the same /status sample.
        let (files, held) = (row(p, "files"), row(p, "held"));
        assert_eq!((files[2], held[2]), ("running", "paused"), "{p}");
        assert_eq!(num(held[5]), line(&p["lag"], "held").last, "{p}");
        assert_eq!(num(files[5]), line(&p["lag"], "files").last, "{p}");
        assert_eq!(num(files[4]), line(&p["rate"], "files").last, "{p}");
        // ...a sample at most a poll or two older than /status read just after.
        let head = st["log"]["head_seq"].as_u64().unwrap();
        let lag = sink(st, "held")["lag_records"].as_u64().unwrap() as f64;
        let shown = line(&p["lag"], "held").last;
        assert!(
            shown > 0.0 && shown <= lag,
            "page lag {shown}, /status {lag}"
        );
        assert!(
            shown >= lag - 30.0 * RATE,
            "page lag {shown} far behind /status {lag}"
        );
        assert!(num(files[3]) > 0.0 && num(files[3]) <= head as f64, "{p}");
        let staged_now = st["source"]["staged_events"].as_u64().unwrap();
        assert!(
            staged(p) <= staged_now && staged(p) as f64 >= staged_now as f64 - 30.0 * RATE,
            "page staged {}, /status {staged_now}",
            staged(p)
        );
        let src = line(&p["rate"], "source").last;
        assert!(src > 0.0 && src < 10.0 * RATE, "source rate {src}");
    }

    // Between the two moments the charts moved: more samples, a higher lag axis, other lines.
    let n1 = first["rate"]["points"].as_u64().unwrap();
    let n2 = second["rate"]["points"].as_u64().unwrap();
    assert!(n2 >= n1 + 2, "samples {n1} -> {n2}");
    assert!(
        second["lag"]["max"].as_f64() > first["lag"]["max"].as_f64(),
        "lag axis did not grow: {} -> {}",
        first["lag"]["max"],
        second["lag"]["max"]
    );
    assert!(line(&second["lag"], "held").last > line(&first["lag"], "held").last);
    assert_ne!(
        line(&first["lag"], "held").xy,
        line(&second["lag"], "held").xy
    );
    assert_ne!(
        line(&first["rate"], "source").xy,
        line(&second["rate"], "source").xy
    );
    assert!(staged(&second) > staged(&first));
    // Applied seq, "-" before the first apply.
    let applied = |p: &Value, s: &str| match row(p, s)[3] {
        "-" => 0.0,
        v => num(v),
    };
    assert!(applied(&second, "files") > applied(&first, "files"));
    assert_eq!(
        applied(&second, "held"),
        applied(&first, "held"),
        "held sink applied"
    );
    assert_eq!(
        line(&second["rate"], "held").last,
        0.0,
        "a paused sink applies nothing"
    );

    // A screenshot of the page as it is now, kept after the test.
    let png = base64_decode(browser.cmd("GET", "screenshot", None).as_str().unwrap());
    let path = screenshot_path();
    std::fs::write(&path, &png).unwrap();
    println!("status page screenshot: {}", path.display());
    check_png(&png, 1000, 600);
    drop(browser);

    weir.signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    while weir.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut err = String::new();
    if let Some(mut s) = weir.0.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    assert!(!err.contains("panicked"), "{err}");
}
