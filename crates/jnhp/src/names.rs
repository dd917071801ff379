//! `jnhp names`: the stored names, read page by page from the admin
//! listener's `/names` (docs/observability.md, "Listing names"), one a
//! line as raw bytes; `--follow` then long-polls for new ones, like
//! `tail -f`. The cursor to go on from is printed on stderr at the end,
//! also after an error or an interrupt, so a listing can always resume.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use base64::Engine as _;
use hyper::StatusCode;
use serde_json::Value;

/// Names per request (the endpoint's most).
const PAGE: u64 = 1000;
/// Seconds one long poll waits (the endpoint's most).
const WAIT_SECS: u64 = 60;

#[derive(clap::Args)]
pub struct NamesArgs {
    /// The admin listener's host:port, as for `jnhp stats` (jnhpd needs
    /// `admin.list_names = true`).
    #[arg(
        long,
        value_name = "ADDR",
        env = "JNHP_ADMIN_ADDR",
        default_value = "127.0.0.1:9111"
    )]
    admin: String,
    /// Only names that begin with these bytes.
    #[arg(long, value_name = "P")]
    prefix: Option<OsString>,
    /// Go on after CURSOR (as printed on stderr at the end of a listing).
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
    /// Print at most N names (default: every one).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// After the last name, wait for new ones and print each as it is
    /// stored, until interrupted (needs a data file).
    #[arg(long)]
    follow: bool,
}

pub async fn run(args: NamesArgs, timeout: Duration) -> u8 {
    let mut cursor = args.after.clone().unwrap_or_default();
    let result = tokio::select! {
        result = names(&args, &mut cursor, timeout) => result,
        // Interrupted (a follow's usual end): a page is printed whole
        // before the cursor moves, so the cursor covers what was printed.
        _ = tokio::signal::ctrl_c(), if args.follow => Ok(()),
    };
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("jnhp: {e}");
            2
        }
    };
    if !cursor.is_empty() {
        eprintln!("jnhp: to go on: --after {cursor}");
    }
    code
}

/// Bytes as a query parameter: every byte but the unreserved ones
/// percent-encoded.
fn encode(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, &b| {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(b as char);
        } else {
            let _ = write!(s, "%{b:02X}");
        }
        s
    })
}

/// A write to stdout failed: a closed pipe (`| head`) means the reader
/// has enough, a normal end; anything else (a full disk) is an error, so
/// a script never takes a cut listing for a whole one.
fn written(e: std::io::Error) -> Result<(), String> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(format!("writing to standard output: {e}"))
    }
}

async fn names(args: &NamesArgs, cursor: &mut String, timeout: Duration) -> Result<(), String> {
    let prefix = args.prefix.as_ref().map(|p| encode(p.as_bytes()));
    let mut left = args.limit;
    let mut at_end = false;
    let mut out = std::io::stdout().lock();
    loop {
        let wait = if args.follow && at_end { WAIT_SECS } else { 0 };
        let mut path = format!(
            "/names?after={}&limit={}&wait={wait}",
            encode(cursor.as_bytes()),
            left.unwrap_or(PAGE).min(PAGE)
        );
        if let Some(prefix) = &prefix {
            path.push_str("&prefix=");
            path.push_str(prefix);
        }
        let (status, body) =
            crate::stats::get(&args.admin, &path, timeout + Duration::from_secs(wait)).await?;
        let text = String::from_utf8_lossy(&body);
        if status == StatusCode::SERVICE_UNAVAILABLE && args.follow {
            // Too many long polls, or storage busy: try again shortly.
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        if status != StatusCode::OK {
            return Err(format!(
                "{}/names answered {status}: {}",
                args.admin,
                text.trim_end()
            ));
        }
        // The page is printed whole, then the cursor moves (no await in
        // between: an interrupt cannot split them).
        let mut next = None;
        let mut printed = 0u64;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let object: Value = serde_json::from_str(line)
                .map_err(|e| format!("{}/names: not a JSON line ({e}): {line}", args.admin))?;
            if let Some(n) = object.get("next").and_then(Value::as_str) {
                next = Some((n.to_string(), object["end"].as_bool().unwrap_or(false)));
                continue;
            }
            let name = if let Some(name) = object.get("name").and_then(Value::as_str) {
                name.as_bytes().to_vec()
            } else if let Some(b64) = object.get("name_base64").and_then(Value::as_str) {
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| format!("{}/names: bad base64 ({e}): {line}", args.admin))?
            } else {
                return Err(format!("{}/names: unexpected line: {line}", args.admin));
            };
            if let Err(e) = out.write_all(&name).and_then(|()| out.write_all(b"\n")) {
                return written(e);
            }
            printed += 1;
        }
        let Some((next, end)) = next else {
            return Err(format!(
                "{}/names: the page has no cursor line (cut short?)",
                args.admin
            ));
        };
        if let Err(e) = out.flush() {
            return written(e);
        }
        *cursor = next;
        if let Some(left) = left.as_mut() {
            *left = left.saturating_sub(printed);
            if *left == 0 {
                return Ok(());
            }
        }
        if end && !args.follow {
            return Ok(());
        }
        at_end = end;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parameters_are_percent_encoded() {
        assert_eq!(super::encode(b"a-b_c.~"), "a-b_c.~");
        assert_eq!(super::encode(b"a&b=c d%\xff+"), "a%26b%3Dc%20d%25%FF%2B");
    }
}
