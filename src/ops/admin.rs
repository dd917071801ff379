//! The admin listener: `/metrics`, `/healthz`, `/readyz`, `/status` and a
//! status page at `/`, over HTTP/1.1 (docs/observability.md), and, when
//! `admin.list_names` is on, the stored names at `/names` (src/listing.rs).
//!
//! hyper does the HTTP; this module only routes and renders. It is
//! read-only and kept away from the JNHP listeners: at most
//! [`MAX_CONNECTIONS`] admin connections at once (more are closed at
//! once), each idle one closed after [`IDLE`], so nothing on the admin port
//! can take connection slots, memory or time from clients.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    ACCEPT, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use jnhp_status::Status;

use crate::base::shutdown::Flag;
use crate::metrics::{Command, Metrics, PerCommand, Slot, StoreKind, VerdictKind};
use crate::storage::postgres::replication::ReplicationState;

/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// An admin connection that sends no request for this long is closed.
pub const IDLE: Duration = Duration::from_secs(30);
/// Request heads larger than this get 400.
pub const MAX_HEAD: usize = 8 * 1024;
/// Header lines a request head may have: as many as the smallest ones
/// (`a:` and a line end, three bytes) fill [`MAX_HEAD`] with. hyper sizes
/// its header table by this (about 64 bytes a line, for each parse).
pub const MAX_HEADERS: usize = MAX_HEAD / 3 + 1;
/// Seconds of history the status page's chart shows.
pub const HISTORY: usize = 300;

/// What the admin endpoints read.
pub struct AdminState {
    /// Raised when the server begins to stop: `/readyz` answers 503 and
    /// long polls end. The admin listener sees the server only through
    /// this flag and the metrics, never its `Control` (which would make
    /// the server and its admin listener use each other).
    draining: Flag,
    metrics: Arc<Metrics>,
    store: StoreKind,
    listen: Vec<String>,
    /// Requests per second by command, one entry a second, newest last.
    history: Mutex<VecDeque<PerCommand<u64>>>,
    /// `/names` (src/listing.rs).
    lister: crate::ops::listing::Lister,
}

impl AdminState {
    pub fn new(
        draining: Flag,
        metrics: Arc<Metrics>,
        store: StoreKind,
        listen: Vec<String>,
        lister: crate::ops::listing::Lister,
    ) -> Arc<AdminState> {
        Arc::new(AdminState {
            lister,
            metrics,
            draining,
            store,
            listen,
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
        })
    }

    fn history(&self) -> Vec<PerCommand<u64>> {
        lock(&self.history).iter().copied().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Samples requests per second by command into the history, once a second.
async fn sample(state: Arc<AdminState>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = state.metrics.requests_by_command();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = state.metrics.requests_by_command();
        let rates = PerCommand::from_fn(|command| now[command].saturating_sub(last[command]));
        last = now;
        let mut history = lock(&state.history);
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(rates);
    }
}

/// How long [`Stop::stop`] lets open connections finish the answers they
/// are writing.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Stops the admin listener once the drain is over. Connections still
/// open finish the answer they are on (a long poll answered at SIGTERM
/// gets its last page, docs/observability.md) before the process exits,
/// for up to 2 s (`CLOSE_GRACE`): dropped at once, they were closed with
/// their answers unwritten.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    token: CancellationToken,
    connections: tokio_util::task::TaskTracker,
}

impl Stop {
    pub async fn stop(&self) {
        self.token.cancel();
        self.connections.close();
        let _ = tokio::time::timeout(CLOSE_GRACE, self.connections.wait()).await;
    }
}

/// Serves the admin endpoints on `listeners` until `stop`.
pub async fn serve(
    listeners: Vec<std::net::TcpListener>,
    state: Arc<AdminState>,
    stop: Stop,
) -> std::io::Result<()> {
    let Stop {
        token: stop,
        connections,
    } = stop;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(sample(state.clone(), stop.clone()));
    for listener in listeners {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let (state, slots, stop) = (state.clone(), slots.clone(), stop.clone());
        let connections = connections.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = stop.cancelled() => return,
                };
                let Ok((stream, _)) = accepted else {
                    // EMFILE and the like: the JNHP listeners matter more.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                // Over the limit: closed at once, never queued.
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                connections.spawn(connection(stream, state.clone(), stop.clone(), slot));
            }
        });
    }
    Ok(())
}

async fn connection(
    stream: tokio::net::TcpStream,
    state: Arc<AdminState>,
    stop: CancellationToken,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |request| {
        let state = state.clone();
        async move {
            if request.uri().path() == "/names"
                && head_size(&request) <= MAX_HEAD
                && (request.method() == Method::GET || request.method() == Method::HEAD)
            {
                return Ok::<_, Infallible>(names(&state, &request).await);
            }
            Ok::<_, Infallible>(respond(&state, &request))
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(IDLE)
        // Heads up to here reach `respond`, which refuses those over
        // MAX_HEAD with 400; beyond it hyper answers 431 (max_header_size
        // counts the parsed head exactly; the buffer limit alone let a
        // head that arrived whole past it).
        .max_buf_size(8 * MAX_HEAD)
        .max_header_size(8 * MAX_HEAD)
        // By bytes, not by count: as many header lines as the smallest
        // ones ("a:" and a line end) fill MAX_HEAD with, so every head
        // within MAX_HEAD is served, whatever its headers.
        .max_headers(MAX_HEADERS);
    let conn = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    // An answer being written is finished (bounded by Stop::stop).
    let _ = conn.await;
}

type Reply = Response<Full<Bytes>>;

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

const TEXT: &str = "text/plain; charset=utf-8";

/// The size of a request head as HTTP spells it: `METHOD URI HTTP/1.1`,
/// each header as `name: value` (`name:` when the value is empty), CRLF
/// line ends, and the blank line that ends the head. hyper keeps no raw
/// size, and this is the exact size of a head written that way: counting
/// `: ` for an empty value (`a:`) made a head of many one-byte headers
/// count a fifth more than it is, and refused heads well under 8 KiB.
fn head_size(request: &Request<Incoming>) -> usize {
    let line = request.method().as_str().len() + request.uri().to_string().len() + 12;
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + 1 + usize::from(!v.is_empty()) + v.len() + 2)
        .sum::<usize>();
    line + headers + 2
}

/// Routes one request.
fn respond(state: &AdminState, request: &Request<Incoming>) -> Reply {
    if head_size(request) > MAX_HEAD {
        let mut refused = reply(StatusCode::BAD_REQUEST, TEXT, "request head over 8 KiB\n");
        refused
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return refused;
    }
    let path = request.uri().path();
    let known = matches!(
        path,
        "/" | "/metrics" | "/healthz" | "/readyz" | "/status" | "/names"
    );
    if !known {
        return reply(StatusCode::NOT_FOUND, TEXT, "not found\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut refused = reply(StatusCode::METHOD_NOT_ALLOWED, TEXT, "only GET\n");
        refused
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return refused;
    }
    match path {
        "/metrics" => {
            let openmetrics = request
                .headers()
                .get(ACCEPT)
                .and_then(|a| a.to_str().ok())
                .is_some_and(|a| a.contains("application/openmetrics-text"));
            let content_type = if openmetrics {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                "text/plain; version=0.0.4; charset=utf-8"
            };
            reply(
                StatusCode::OK,
                content_type,
                state.metrics.render(openmetrics),
            )
        }
        "/healthz" => reply(StatusCode::OK, TEXT, "ok\n"),
        "/readyz" => match not_ready(state) {
            None => reply(StatusCode::OK, TEXT, "ready\n"),
            Some(why) => reply(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
        },
        "/status" => {
            // Plain data (strings and integers): serializing cannot fail.
            let mut body = serde_json::to_vec(&status(state)).unwrap_or_default();
            body.push(b'\n');
            reply(StatusCode::OK, "application/json", body)
        }
        _ => reply(StatusCode::OK, "text/html; charset=utf-8", page(state)),
    }
}

/// `GET /names`: a page of stored names as JSON lines, or why not.
async fn names(state: &AdminState, request: &Request<Incoming>) -> Reply {
    let (status, body) = state
        .lister
        .answer(request.uri().query(), &state.draining)
        .await;
    let content_type = if status == StatusCode::OK {
        "application/x-ndjson"
    } else {
        TEXT
    };
    let mut response = reply(status, content_type, body);
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Why jnhpd does not serve requests now, if it does not.
fn not_ready(state: &AdminState) -> Option<&'static str> {
    if state.draining.is_raised() {
        return Some("draining (shutting down)");
    }
    let down = state
        .metrics
        .postgres
        .as_ref()
        .is_some_and(|pg| pg.up.load(std::sync::atomic::Ordering::Relaxed) == 0);
    if down {
        return Some("postgres unreachable");
    }
    let unwritable = state
        .metrics
        .postgres
        .as_ref()
        .is_some_and(|pg| pg.writable.load(std::sync::atomic::Ordering::Relaxed) == 0);
    if unwritable {
        return Some("postgres writes do not commit (STOREs fail until they do)");
    }
    let given_up = state
        .metrics
        .datafile
        .as_ref()
        .is_some_and(|d| d.writable.load(std::sync::atomic::Ordering::Relaxed) == 0);
    given_up.then_some("data file in an unknown state (STOREs refused until a restart)")
}

/// The `/status` document (the `jnhp-status` crate's [`Status`]: the type
/// `jnhp stats` reads back).
pub fn status(state: &AdminState) -> Status {
    use std::sync::atomic::Ordering::Relaxed;
    let m = &state.metrics;
    let requests = m.requests_by_command();
    let validators = m
        .validators()
        .iter()
        .map(|v| jnhp_status::Validator {
            name: v.name.clone(),
            kind: v.kind.to_string(),
            verdicts: jnhp_status::Verdicts {
                allow: v.verdicts[VerdictKind::Allow].load(Relaxed),
                deny: v.verdicts[VerdictKind::Deny].load(Relaxed),
                failure: v.verdicts[VerdictKind::Failure].load(Relaxed),
            },
            in_flight: v.in_flight.load(Relaxed),
        })
        .collect();
    Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: m.uptime().as_secs(),
        listen: state.listen.clone(),
        store: state.store.name().to_string(),
        names: m.names.as_ref().map(|names| names.load(Relaxed)),
        connections: m.connections.load(Relaxed),
        requests: jnhp_status::Requests {
            store: requests[Command::Store],
            exists: requests[Command::Exists],
            get: requests[Command::Get],
        },
        errors: m.errors_total(),
        ready: not_ready(state).is_none(),
        validators,
        postgres: m.postgres.as_ref().map(|pg| {
            let state = ReplicationState::ALL
                .get(pg.replication.load(Relaxed))
                .copied()
                .unwrap_or(ReplicationState::Unknown);
            let known = |n: i64| (n >= 0).then_some(n);
            jnhp_status::Postgres {
                server: pg.server.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                reachable: pg.up.load(Relaxed) == 1,
                writable: pg.writable.load(Relaxed) == 1,
                replication: state.label().to_string(),
                standbys: known(pg.standbys.load(Relaxed)),
                sync_standbys: known(pg.sync_standbys.load(Relaxed)),
                timeline: pg.timeline.load(Relaxed),
                failovers: pg.failovers.load(Relaxed),
            }
        }),
    }
}

/// The status page: figures, and a chart of the history drawn as inline
/// SVG; refreshes itself every 5 s. No script, no external asset.
fn page(state: &AdminState) -> String {
    let doc = status(state);
    let history = state.history();
    let mut html = String::with_capacity(16 * 1024);
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\">\
         <title>jnhpd {version}</title><style>\
         body{{font:15px/1.4 system-ui,sans-serif;margin:2em;color:#222;background:#fafafa}}\
         h1{{font-size:1.4em;margin:0 0 .2em}} .sub{{color:#666;margin-bottom:1.2em}}\
         .figures{{display:flex;flex-wrap:wrap;gap:1em;margin-bottom:1.5em}}\
         .figure{{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:8em}}\
         .figure b{{display:block;font-size:1.6em}} table{{border-collapse:collapse;background:#fff}}\
         td,th{{border:1px solid #ddd;padding:.3em .8em;text-align:right}} th{{background:#f0f0f0}}\
         td:first-child,th:first-child{{text-align:left}}\
         .ready{{color:#1a7f37}} .notready{{color:#c62828}}</style></head><body>\n",
        version = doc.version
    );
    let ready = doc.ready;
    let _ = writeln!(
        html,
        "<h1>jnhpd {version}</h1><div class=\"sub\">{listen} · store: {store} · up {uptime} · \
         <span id=\"ready\" class=\"{class}\">{ready}</span></div>",
        version = doc.version,
        listen = escape(&doc.listen.join(", ")),
        store = match &doc.postgres {
            Some(pg) => format!("postgres on {}", escape(&pg.server)),
            None => doc.store.clone(),
        },
        uptime = human_duration(doc.uptime_seconds),
        class = if ready { "ready" } else { "notready" },
        ready = if ready { "ready" } else { "not ready" },
    );
    html.push_str("<div class=\"figures\">\n");
    let mut figure = |id: &str, label: &str, value: String| {
        let _ = writeln!(
            html,
            "<div class=\"figure\"><span>{label}</span><b id=\"{id}\">{value}</b></div>"
        );
    };
    figure("connections", "connections", doc.connections.to_string());
    if let Some(names) = doc.names {
        figure("names", "names", names.to_string());
    }
    for &command in Command::ALL {
        let requests = &doc.requests;
        let n = match command {
            Command::Store => requests.store,
            Command::Exists => requests.exists,
            Command::Get => requests.get,
        };
        figure(
            command.label(),
            &format!("{} requests", command.label().to_uppercase()),
            n.to_string(),
        );
    }
    figure("errors", "ERROR replies", doc.errors.to_string());
    if let Some(pg) = &doc.postgres {
        let writes = if pg.writable { "commit" } else { "FAIL" };
        figure("pg-writes", "PostgreSQL writes", writes.to_string());
        figure("pg-replication", "replication", pg.replication.clone());
        figure("pg-failovers", "failovers seen", pg.failovers.to_string());
    }
    html.push_str("</div>\n<h2>Requests per second, last 5 minutes</h2>\n");
    html.push_str(&chart(&history));
    if !doc.validators.is_empty() {
        html.push_str(
            "<h2>Validators</h2><table><tr><th>name</th><th>kind</th><th>allow</th>\
             <th>deny</th><th>failure</th><th>running</th></tr>\n",
        );
        for v in &doc.validators {
            let _ = writeln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&v.name),
                v.kind,
                v.verdicts.allow,
                v.verdicts.deny,
                v.verdicts.failure,
                v.in_flight,
            );
        }
        html.push_str("</table>\n");
    }
    html.push_str(
        "<p class=\"sub\">Machine-readable: <a href=\"/status\">/status</a> · \
         <a href=\"/metrics\">/metrics</a> · <a href=\"/readyz\">/readyz</a></p></body></html>\n",
    );
    html
}

/// A command's line on the chart.
fn colour(command: Command) -> &'static str {
    match command {
        Command::Store => "#d62728",
        Command::Exists => "#1f77b4",
        Command::Get => "#2ca02c",
    }
}

/// A line chart of `history` (newest on the right), one line per command.
fn chart(history: &[PerCommand<u64>]) -> String {
    let (width, height, left, bottom, top) = (760.0, 260.0, 64.0, 28.0, 12.0);
    let plot_w = width - left - 12.0;
    let plot_h = height - bottom - top;
    let peak = history
        .iter()
        .flat_map(|s| s.values().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = nice_ceiling(peak);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"requests per second by command\" \
         style=\"background:#fff;border:1px solid #ddd;border-radius:6px\">"
    );
    for i in 0..=4 {
        let y = top + plot_h * (1.0 - i as f64 / 4.0);
        let label = scale * i / 4;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{x2}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
             <text x=\"{tx}\" y=\"{ty:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#666\">{label}</text>",
            x2 = left + plot_w,
            tx = left - 6.0,
            ty = y + 4.0,
        );
    }
    for minutes in 0..=5 {
        let x = left + plot_w * (1.0 - minutes as f64 / 5.0);
        let label = if minutes == 0 {
            "now".to_string()
        } else {
            format!("-{minutes} min")
        };
        let _ = writeln!(
            svg,
            "<text x=\"{x}\" y=\"{y}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#666\">{label}</text>",
            y = height - 8.0
        );
    }
    let start = HISTORY.saturating_sub(history.len());
    // The legend's entries, left to right.
    for (place, &command) in Command::ALL.iter().enumerate() {
        let colour = colour(command);
        let points: Vec<String> = history
            .iter()
            .enumerate()
            .map(|(i, sample)| {
                let x = left + plot_w * (start + i) as f64 / (HISTORY - 1) as f64;
                let y = top + plot_h * (1.0 - sample[command] as f64 / scale as f64);
                format!("{x:.1},{y:.1}")
            })
            .collect();
        if !points.is_empty() {
            let _ = writeln!(
                svg,
                "<polyline class=\"series\" data-command=\"{}\" fill=\"none\" stroke=\"{colour}\" \
                 stroke-width=\"2\" points=\"{}\"/>",
                command.label(),
                points.join(" ")
            );
        }
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{top}\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{tx}\" y=\"{ty}\" font-size=\"12\">{}</text>",
            command.label().to_uppercase(),
            x = left + 12.0 + 90.0 * place as f64,
            tx = left + 26.0 + 90.0 * place as f64,
            ty = top + 10.0,
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The smallest of 1, 2, 5 × 10^k at or above `n`.
fn nice_ceiling(n: u64) -> u64 {
    let mut magnitude = 1u64;
    loop {
        for step in [1, 2, 5] {
            if step * magnitude >= n {
                return step * magnitude;
            }
        }
        magnitude = magnitude.saturating_mul(10);
    }
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86400 => format!("{} h {} min", s / 3600, s / 60 % 60),
        s => format!("{} d {} h", s / 86400, s / 3600 % 24),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_scales_are_round() {
        assert_eq!(nice_ceiling(1), 1);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(70_001), 100_000);
    }

    #[test]
    fn the_chart_has_a_line_per_command() {
        let history: Vec<PerCommand<u64>> = (0..10)
            .map(|i| {
                PerCommand::from_fn(|command| match command {
                    Command::Store => i,
                    Command::Exists => 2 * i,
                    Command::Get => 3 * i,
                })
            })
            .collect();
        let svg = chart(&history);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("data-command=\"get\""));
        assert!(svg.contains(">50<"), "the top label is the scale: {svg}");
    }
}
