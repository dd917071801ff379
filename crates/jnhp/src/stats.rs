//! `jnhp stats`: a running jnhpd's `/status` from its admin listener, as a
//! table, as JSON, or as a line per interval (`--watch`, like
//! `redis-cli --stat`).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jnhp_status::Status;

#[derive(clap::Args)]
pub struct StatsArgs {
    /// The admin listener's host:port (a host name, an IPv4 address, or an
    /// IPv6 address in brackets: `[::1]:9111`).
    #[arg(
        long,
        value_name = "ADDR",
        env = "JNHP_ADMIN_ADDR",
        default_value = "127.0.0.1:9111"
    )]
    admin: String,
    /// Print the `/status` document as it is.
    #[arg(long, conflicts_with = "watch")]
    json: bool,
    /// Print a line every SECS seconds: requests per second by command,
    /// connections, names, errors and validator failures per interval.
    #[arg(long, value_name = "SECS", value_parser = parse_interval)]
    watch: Option<Duration>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(0.1..=86_400.0).contains(&secs) {
        return Err(format!("{text:?} is not between 0.1 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `GET path` from the admin listener over HTTP/1.1: the status and the
/// body (`jnhp stats`, `jnhp names`).
pub async fn get(
    admin: &str,
    path: &str,
    timeout: Duration,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let get = async {
        // The same address rules as the JNHP port's: host names, [v6]:port.
        let stream = jnhp_client::connect_tcp(admin, timeout)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{admin}: {e}"))?;
        tokio::spawn(conn);
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, admin)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| {
            if e.is_canceled() || e.is_incomplete_message() {
                // hyper says "operation was canceled": say what happened.
                format!("{admin}: the connection closed before an answer (jnhpd stopping?)")
            } else {
                format!("{admin}: {e}")
            }
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{admin}: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, get)
        .await
        .map_err(|_| format!("{admin}: no answer within {timeout:?}"))?
}

/// Fetches `/status`: the document read as the type jnhpd wrote it with,
/// and its text as it came (what `--json` prints: keys this `jnhp` does
/// not know, from a newer jnhpd, included).
async fn fetch(admin: &str, timeout: Duration) -> Result<(Status, Bytes), String> {
    let (status, body) = get(admin, "/status", timeout).await?;
    if !status.is_success() {
        return Err(format!("{admin}/status answered {status}"));
    }
    let parsed = serde_json::from_slice(&body)
        .map_err(|e| format!("{admin}/status is not a jnhpd status document: {e}"))?;
    Ok((parsed, body))
}

pub async fn run(args: StatsArgs, timeout: Duration) -> u8 {
    match stats(args, timeout).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("jnhp: {e}");
            2
        }
    }
}

/// Writes `text` to stdout: a failed write (a full disk, a closed pipe)
/// is an error (exit 2), never a panic as `println!` would make it.
fn emit(text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing to standard output: {e}"))
}

async fn stats(args: StatsArgs, timeout: Duration) -> Result<(), String> {
    let Some(every) = args.watch else {
        let (status, text) = fetch(&args.admin, timeout).await?;
        if args.json {
            let text = String::from_utf8_lossy(&text);
            emit(&format!("{}\n", text.trim_end()))?;
        } else {
            emit(&table(&status))?;
        }
        return Ok(());
    };
    let (mut last, _) = fetch(&args.admin, timeout).await?;
    let mut last_at = std::time::Instant::now();
    let mut lines = 0;
    loop {
        tokio::time::sleep(every).await;
        let (now, _) = fetch(&args.admin, timeout).await?;
        let secs = last_at.elapsed().as_secs_f64();
        last_at = std::time::Instant::now();
        if lines % 20 == 0 {
            emit(&format!(
                "{:>10} {:>10} {:>10} {:>8} {:>10} {:>8} {:>8}\n",
                "store/s", "exists/s", "get/s", "conns", "names", "errors", "vfail"
            ))?;
        }
        lines += 1;
        let rate = |now: u64, last: u64| format!("{:.0}", now.saturating_sub(last) as f64 / secs);
        let names = now.names.map_or("-".to_string(), |n| n.to_string());
        emit(&format!(
            "{:>10} {:>10} {:>10} {:>8} {:>10} {:>8} {:>8}\n",
            rate(now.requests.store, last.requests.store),
            rate(now.requests.exists, last.requests.exists),
            rate(now.requests.get, last.requests.get),
            now.connections,
            names,
            now.errors.saturating_sub(last.errors),
            failures(&now).saturating_sub(failures(&last)),
        ))?;
        last = now;
    }
}

/// Validator failures so far, every validator together.
fn failures(status: &Status) -> u64 {
    status
        .validators
        .iter()
        .map(|v| v.verdicts.failure)
        .fold(0, u64::saturating_add)
}

/// The status as a table for a person.
pub fn table(s: &Status) -> String {
    let mut out = String::new();
    let ready = if s.ready { "ready" } else { "NOT READY" };
    let row = |out: &mut String, key: &str, value: String| {
        out.push_str(&format!("{key:<13}{value}\n"));
    };
    row(&mut out, "version", s.version.clone());
    row(&mut out, "state", ready.to_string());
    row(&mut out, "uptime", format!("{} s", s.uptime_seconds));
    row(&mut out, "listen", s.listen.join(", "));
    row(&mut out, "store", s.store.clone());
    if let Some(names) = s.names {
        row(&mut out, "names", names.to_string());
    }
    row(&mut out, "connections", s.connections.to_string());
    let requests = &s.requests;
    row(
        &mut out,
        "requests",
        format!(
            "store {}  exists {}  get {}",
            requests.store, requests.exists, requests.get
        ),
    );
    row(&mut out, "errors", s.errors.to_string());
    if let Some(pg) = &s.postgres {
        row(&mut out, "postgres", pg.server.clone());
        let writes = match (pg.reachable, pg.writable) {
            (false, _) => "UNREACHABLE",
            (true, false) => "writes FAIL (reads work)",
            (true, true) => "writes commit",
        };
        row(&mut out, "pg state", writes.to_string());
        let standbys = match (pg.standbys, pg.sync_standbys) {
            (Some(all), Some(sync)) => format!("{all} standbys, {sync} synchronous"),
            _ => "standbys not visible: grant pg_monitor".to_string(),
        };
        row(
            &mut out,
            "replication",
            format!("{}  ({standbys})", pg.replication),
        );
        row(
            &mut out,
            "failovers",
            format!("{} seen (timeline {})", pg.failovers, pg.timeline),
        );
    }
    if !s.validators.is_empty() {
        let header = ["validator", "kind", "allow", "deny", "failure"].map(String::from);
        let mut rows = vec![header.to_vec()];
        for v in &s.validators {
            rows.push(vec![
                v.name.clone(),
                v.kind.clone(),
                v.verdicts.allow.to_string(),
                v.verdicts.deny.to_string(),
                v.verdicts.failure.to_string(),
            ]);
        }
        out.push('\n');
        out.push_str(&aligned(&rows, 2));
    }
    out
}

/// `rows` as a table: each column as wide as its widest cell (in
/// characters, so names beyond ASCII line up too), the first `left`
/// columns aligned left, the others (numbers) right, two spaces between.
///
/// Widths come from the cells rather than being fixed: a validator name
/// longer than a fixed width would push its row's numbers out of line.
fn aligned(rows: &[Vec<String>], left: usize) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(widths[i] - cell.chars().count());
            if i < left {
                line.push_str(cell);
                line.push_str(&pad);
            } else {
                line.push_str(&pad);
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where each column of `line` ends (the end of each run of
    /// non-blanks), in characters.
    fn column_ends(line: &str) -> Vec<usize> {
        let chars: Vec<char> = line.chars().collect();
        (0..chars.len())
            .filter(|&i| chars[i] != ' ' && chars.get(i + 1).is_none_or(|&c| c == ' '))
            .map(|i| i + 1)
            .collect()
    }

    /// Validator rows line up under their header whatever the lengths of
    /// names and numbers (issue 21, item 16).
    #[test]
    fn validator_rows_line_up_under_the_header() {
        let status: Status = serde_json::from_value(serde_json::json!({
            "version": "1", "ready": true, "uptime_seconds": 5,
            "listen": ["127.0.0.1:8111"], "store": "memory",
            "connections": 1, "requests": {"store": 1, "exists": 0, "get": 0},
            "errors": 0,
            "validators": [
                {"name": "a-validator-with-a-rather-long-name", "kind": "helper",
                 "verdicts": {"allow": 1234567890123u64, "deny": 0, "failure": 7}},
                {"name": "re", "kind": "function",
                 "verdicts": {"allow": 1, "deny": 22, "failure": 333}},
                {"name": "dénylist-é", "kind": "blocking",
                 "verdicts": {"allow": 0, "deny": 0, "failure": 0}},
            ],
        }))
        .unwrap();
        let text = table(&status);
        let lines: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("validator"))
            .collect();
        assert_eq!(lines.len(), 4, "{text}");
        // The numbers are right-aligned: their columns end where the
        // header's do; names and kinds start where theirs do.
        let header = column_ends(lines[0]);
        assert_eq!(header.len(), 5, "{text}");
        for line in &lines[1..] {
            let ends = column_ends(line);
            assert_eq!(ends[ends.len() - 3..], header[2..], "{text}");
            let starts: Vec<usize> = ["helper", "function", "blocking"]
                .iter()
                .filter_map(|kind| line.find(kind).map(|b| line[..b].chars().count()))
                .collect();
            let kind_at = lines[0][..lines[0].find("kind").unwrap()].chars().count();
            assert_eq!(starts, [kind_at], "{text}");
        }
        assert!(text.contains("1234567890123"), "{text}");
    }
}
