//! `jnhp stats`: a running jnhpd's `/status` from its admin listener, as a
//! table, as JSON, or as a line per interval (`--watch`, like
//! `redis-cli --stat`).

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

#[derive(clap::Args)]
pub struct StatsArgs {
    /// The admin listener's host:port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9111")]
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

/// Fetches `/status` over HTTP/1.1.
async fn fetch(admin: &str, timeout: Duration) -> Result<Value, String> {
    let get = async {
        let stream = tokio::net::TcpStream::connect(admin)
            .await
            .map_err(|e| format!("cannot connect to {admin}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{admin}: {e}"))?;
        tokio::spawn(conn);
        let request = hyper::Request::get("/status")
            .header(hyper::header::HOST, admin)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{admin}: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{admin}: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("{admin}/status answered {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{admin}/status is not JSON: {e}"))
    };
    tokio::time::timeout(timeout, get)
        .await
        .map_err(|_| format!("{admin}: no answer within {timeout:?}"))?
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

async fn stats(args: StatsArgs, timeout: Duration) -> Result<(), String> {
    let Some(every) = args.watch else {
        let status = fetch(&args.admin, timeout).await?;
        if args.json {
            println!("{status}");
        } else {
            print!("{}", table(&status));
        }
        return Ok(());
    };
    let mut last = fetch(&args.admin, timeout).await?;
    let mut last_at = std::time::Instant::now();
    let mut lines = 0;
    loop {
        tokio::time::sleep(every).await;
        let now = fetch(&args.admin, timeout).await?;
        let secs = last_at.elapsed().as_secs_f64();
        last_at = std::time::Instant::now();
        if lines % 20 == 0 {
            println!(
                "{:>10} {:>10} {:>10} {:>8} {:>10} {:>8} {:>8}",
                "store/s", "exists/s", "get/s", "conns", "names", "errors", "vfail"
            );
        }
        lines += 1;
        let rate = |cmd: &str| {
            let delta = u(&now["requests"][cmd]).saturating_sub(u(&last["requests"][cmd]));
            format!("{:.0}", delta as f64 / secs)
        };
        let names = now.get("names").map_or("-".to_string(), |n| n.to_string());
        println!(
            "{:>10} {:>10} {:>10} {:>8} {:>10} {:>8} {:>8}",
            rate("store"),
            rate("exists"),
            rate("get"),
            now["connections"].to_string(),
            names,
            u(&now["errors"]).saturating_sub(u(&last["errors"])),
            failures(&now).saturating_sub(failures(&last)),
        );
        last = now;
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn failures(status: &Value) -> u64 {
    status["validators"].as_array().map_or(0, |vs| {
        vs.iter().map(|v| u(&v["verdicts"]["failure"])).sum()
    })
}

/// The status as a table for a person.
pub fn table(s: &Value) -> String {
    let mut out = String::new();
    let listen: Vec<&str> = s["listen"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let ready = if s["ready"].as_bool().unwrap_or(false) {
        "ready"
    } else {
        "NOT READY"
    };
    let row = |out: &mut String, key: &str, value: String| {
        out.push_str(&format!("{key:<13}{value}\n"));
    };
    row(
        &mut out,
        "version",
        s["version"].as_str().unwrap_or("?").to_string(),
    );
    row(&mut out, "state", ready.to_string());
    row(&mut out, "uptime", format!("{} s", u(&s["uptime_seconds"])));
    row(&mut out, "listen", listen.join(", "));
    row(
        &mut out,
        "store",
        s["store"].as_str().unwrap_or("?").to_string(),
    );
    if let Some(names) = s.get("names") {
        row(&mut out, "names", names.to_string());
    }
    row(&mut out, "connections", s["connections"].to_string());
    row(
        &mut out,
        "requests",
        format!(
            "store {}  exists {}  get {}",
            s["requests"]["store"], s["requests"]["exists"], s["requests"]["get"]
        ),
    );
    row(&mut out, "errors", s["errors"].to_string());
    if let Some(validators) = s["validators"].as_array().filter(|v| !v.is_empty()) {
        out.push_str(&format!(
            "\n{:<20} {:<10} {:>10} {:>10} {:>10}\n",
            "validator", "kind", "allow", "deny", "failure"
        ));
        for v in validators {
            out.push_str(&format!(
                "{:<20} {:<10} {:>10} {:>10} {:>10}\n",
                v["name"].as_str().unwrap_or("?"),
                v["kind"].as_str().unwrap_or("?"),
                v["verdicts"]["allow"],
                v["verdicts"]["deny"],
                v["verdicts"]["failure"],
            ));
        }
    }
    out
}
