//! A minimal HTTP/1.1 server for `[admin] metrics`: GET only, one request per connection.

use super::{Context, View};
use crate::runtime::HISTOGRAM_BOUNDS;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PAGE: &str = include_str!("page.html");

/// Accepts connections until aborted.
pub(super) async fn serve(listener: TcpListener, ctx: Arc<Context>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let ctx = Arc::clone(&ctx);
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(10), handle(stream, ctx)).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin HTTP: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: String) -> Self {
        Response {
            status,
            content_type,
            body,
        }
    }
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body.into())
    }
}

async fn handle(mut stream: TcpStream, ctx: Arc<Context>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 16 * 1024 {
            return write(
                &mut stream,
                Response::text(431, "request too large\n"),
                false,
            )
            .await;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("/").to_string();
    let is_head = method == "HEAD";
    let resp = if method != "GET" && !is_head {
        Response::text(405, "only GET is supported\n")
    } else {
        tokio::task::spawn_blocking(move || route(&ctx, &path))
            .await
            .unwrap_or_else(|e| Response::text(500, format!("internal error: {e}\n")))
    };
    write(&mut stream, resp, is_head).await
}

async fn write(stream: &mut TcpStream, r: Response, head_only: bool) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(r.body.as_bytes());
    }
    stream.write_all(&out).await?;
    stream.shutdown().await
}

fn route(ctx: &Context, path: &str) -> Response {
    match path {
        "/" | "/index.html" => Response::new(200, "text/html; charset=utf-8", PAGE.to_string()),
        "/metrics" => Response::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(ctx),
        ),
        "/healthz" => {
            let problems = ctx.view().problems();
            if problems.is_empty() {
                Response::text(200, "ok\n")
            } else {
                Response::text(503, format!("{}\n", problems.join("\n")))
            }
        }
        "/status" => match ctx.status() {
            Ok(v) => Response::new(
                200,
                "application/json",
                serde_json::to_string_pretty(&v).unwrap_or_default(),
            ),
            Err(e) => Response::text(500, format!("{}\n", crate::runtime::chain(e.as_ref()))),
        },
        _ => Response::text(
            404,
            "not found; try / /metrics /healthz /status\n".to_string(),
        ),
    }
}

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metrics(ctx: &Context) -> String {
    let v: View = ctx.view();
    let mut o = String::with_capacity(4096);
    let gauge = |o: &mut String, name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            o,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    gauge(
        &mut o,
        "weir_up",
        "gauge",
        "1 while the pipeline runs",
        u8::from(v.running).to_string(),
    );
    gauge(
        &mut o,
        "weir_source_events_total",
        "counter",
        "Change events staged in this run",
        v.staged_events.to_string(),
    );
    gauge(
        &mut o,
        "weir_source_transactions_total",
        "counter",
        "Transactions staged in this run",
        v.staged_txns.to_string(),
    );
    gauge(
        &mut o,
        "weir_source_retries_total",
        "counter",
        "Source reconnects after transient failures",
        v.source_retries.to_string(),
    );
    gauge(
        &mut o,
        "weir_log_head_seq",
        "gauge",
        "Last visible staging log sequence",
        v.head_seq.to_string(),
    );
    if let Some(b) = v.source_retained_bytes {
        gauge(
            &mut o,
            "weir_source_retained_bytes",
            "gauge",
            "Change log the source database keeps for this pipeline (PostgreSQL: WAL held by the \
             replication slot), as last measured",
            b.to_string(),
        );
    }
    gauge(
        &mut o,
        "weir_log_bytes",
        "gauge",
        "Staging log bytes not yet applied by every sink",
        v.backlog_bytes.to_string(),
    );
    let (done, total) = snapshot_chunks(ctx);
    gauge(
        &mut o,
        "weir_snapshot_chunks_done",
        "gauge",
        "Snapshot chunks finished",
        done.to_string(),
    );
    gauge(
        &mut o,
        "weir_snapshot_chunks_total",
        "gauge",
        "Snapshot chunks planned",
        total.to_string(),
    );
    type Field = fn(&super::SinkView) -> String;
    let per_sink: [(&str, &str, &str, Field); 7] = [
        (
            "weir_sink_applied_seq",
            "gauge",
            "Last staging log sequence the sink applied",
            |s| s.applied_seq.to_string(),
        ),
        (
            "weir_sink_applied_events_total",
            "counter",
            "Change events the sink applied in this run",
            |s| s.applied_events.to_string(),
        ),
        (
            "weir_sink_lag_records",
            "gauge",
            "Staging log records not yet applied by the sink",
            |s| s.lag_records.to_string(),
        ),
        (
            "weir_sink_lag_bytes",
            "gauge",
            "Staging log bytes not yet applied by the sink",
            |s| s.lag_bytes.to_string(),
        ),
        (
            "weir_sink_lag_seconds",
            "gauge",
            "Age of the oldest staged record the sink has not applied (0 when caught up)",
            |s| format!("{:.3}", s.lag_seconds),
        ),
        (
            "weir_sink_retries_total",
            "counter",
            "Sink restarts after transient failures",
            |s| s.retries.to_string(),
        ),
        (
            "weir_sink_healthy",
            "gauge",
            "1 unless the sink is retrying, failed or stalled (a paused sink is healthy)",
            |s| {
                u8::from(
                    matches!(
                        s.state,
                        crate::runtime::SinkState::Running
                            | crate::runtime::SinkState::Starting
                            | crate::runtime::SinkState::Paused
                    ) && s.stalled_for.is_none(),
                )
                .to_string()
            },
        ),
    ];
    for (name, kind, help, f) in per_sink {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in &v.sinks {
            let _ = writeln!(o, "{name}{{sink=\"{}\"}} {}", label(&s.name), f(s));
        }
    }
    let name = "weir_sink_apply_seconds";
    let _ = writeln!(
        o,
        "# HELP {name} Time per sink apply call (one batch)\n# TYPE {name} histogram"
    );
    for s in &v.sinks {
        let l = label(&s.name);
        for (i, c) in s.apply.cumulative.iter().enumerate() {
            let le = HISTOGRAM_BOUNDS
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(o, "{name}_bucket{{sink=\"{l}\",le=\"{le}\"}} {c}");
        }
        let _ = writeln!(
            o,
            "{name}_sum{{sink=\"{l}\"}} {:.6}\n{name}_count{{sink=\"{l}\"}} {}",
            s.apply.sum_seconds, s.apply.count
        );
    }
    let name = "weir_stage_seconds";
    let _ = writeln!(
        o,
        "# HELP {name} Time per call of each pipeline stage: source (awaiting the source's next item), \
         snapshot read (one chunk batch), log append (encode + one group write), sink NAME (one apply)\n\
         # TYPE {name} histogram"
    );
    for s in &v.stages {
        let l = label(&s.name);
        for (i, c) in s.histogram.cumulative.iter().enumerate() {
            let le = HISTOGRAM_BOUNDS
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(o, "{name}_bucket{{stage=\"{l}\",le=\"{le}\"}} {c}");
        }
        let _ = writeln!(
            o,
            "{name}_sum{{stage=\"{l}\"}} {:.6}\n{name}_count{{stage=\"{l}\"}} {}",
            s.histogram.sum_seconds, s.histogram.count
        );
    }
    let name = "weir_stage_events_total";
    let _ = writeln!(
        o,
        "# HELP {name} Change events (snapshot rows) each pipeline stage handled in this run\n# TYPE {name} counter"
    );
    for s in &v.stages {
        let _ = writeln!(o, "{name}{{stage=\"{}\"}} {}", label(&s.name), s.events);
    }
    o
}

/// Snapshot chunks (done, total), from the plan and the head position.
fn snapshot_chunks(ctx: &Context) -> (u64, u64) {
    let Ok(Some(plan)) = ctx.log.snapshot_plan() else {
        return (0, 0);
    };
    let total = plan.chunks.len() as u64;
    let done = match ctx.log.head().position {
        Some(weir_api::SourcePosition::Snapshot(s)) => u64::from(s.done_count()),
        Some(_) => total,
        None => 0,
    };
    (done, total)
}
