//! `jnhp`: a command-line client for jnhpd.
//!
//! Exit codes are for scripts: 0 = stored / present / found, 1 = RARGH! /
//! absent, 2 = an error (the message is on stderr).

use std::ffi::OsString;
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use jnhp_client::Client;

mod bench;
mod man_page;
/// Shared with jnhpd, which jnhp does not depend on: see the file's head.
#[path = "../../../src/man_roff.rs"]
mod man_roff;
mod names;
mod stats;
mod stdin_value;
mod tls;

#[derive(Parser)]
#[command(version, about = "A client for jnhpd (JNHP/1)")]
struct Cli {
    /// The server's host:port: a host name (each of its addresses is
    /// tried in turn, with an equal share of the time left), an IPv4 address, or an IPv6 address in brackets
    /// (`[::1]:8111`). The flag wins over the environment.
    #[arg(
        long,
        env = "JNHP_ADDR",
        default_value = "127.0.0.1:8111",
        global = true
    )]
    addr: String,
    /// Seconds to wait for the connection and for each reply (more than 0,
    /// at most 86400).
    #[arg(long, default_value = "10", global = true, value_parser = parse_timeout)]
    timeout: Duration,
    #[command(flatten)]
    tls: tls::TlsArgs,
    #[command(subcommand)]
    command: Command,
}

/// The CLI only to print man pages: `jnhp --write-man-pages DIR` is
/// packaging's, hidden from users, and needs no subcommand.
#[derive(Parser)]
#[command(
    ignore_errors = true,
    disable_help_flag = true,
    disable_version_flag = true
)]
struct ManPages {
    #[arg(long, value_name = "DIR")]
    write_man_pages: Option<std::path::PathBuf>,
}

/// Writes jnhp.1 and completions for bash, zsh and fish into `dir`.
fn write_man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let mut page = Vec::new();
    man_page::render(Cli::command(), &mut page)?;
    std::fs::write(dir.join("jnhp.1"), page)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut Cli::command(), "jnhp", dir)?;
    }
    Ok(())
}

#[derive(Subcommand)]
enum Command {
    /// Store VALUE under NAME (exit 0 stored, 1 not stored).
    Store {
        /// The name (no blanks).
        name: OsString,
        /// The value (one line), or `-` to read it from standard input to
        /// its end (at most 16 MiB; exactly one trailing newline, "\n" or
        /// "\r\n", is removed, as `echo` adds one; a line break anywhere
        /// else is refused, exit 2).
        value: OsString,
    },
    /// Is NAME stored? (exit 0 yes, 1 no)
    Exists {
        /// The name.
        name: OsString,
    },
    /// Print NAME's value (exit 0 found, 1 absent).
    Get {
        /// The name.
        name: OsString,
    },
    /// Send request lines from stdin (pipelined), print the replies.
    Batch,
    /// Load generator: JNHP, Redis (RESP) or memcached, same workload.
    Bench(bench::BenchArgs),
    /// A running jnhpd's status from its admin listener (`--watch SECS`:
    /// a line per interval). Exit 0, or 2 if it cannot be had.
    Stats(stats::StatsArgs),
    /// List stored names from the admin listener, in order of storing
    /// (`--follow`: then wait for new ones). Exit 0, or 2 on an error.
    Names(names::NamesArgs),
}

/// `--timeout`: a finite number of seconds in (0, 86400]. Anything else
/// (`nan`, `-1`, `1e300`) is a usage error, never a panic.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "{text:?} is not between 0 (excluded) and 86400 seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    if let Ok(ManPages {
        write_man_pages: Some(dir),
    }) = ManPages::try_parse()
    {
        return match write_man_pages(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("jnhp: {}: {e}", dir.display());
                ExitCode::from(2)
            }
        };
    }
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("jnhp: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(run(cli));
    ExitCode::from(code)
}

async fn run(cli: Cli) -> u8 {
    let timeout = cli.timeout;
    let tls = match cli.tls.target(&cli.addr) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("jnhp: {e}");
            return 2;
        }
    };
    let request = match cli.command {
        Command::Batch => return batch(&cli.addr, tls.as_ref(), timeout).await,
        Command::Bench(args) => return bench::run(&cli.addr, args, tls).await,
        Command::Stats(args) => return stats::run(args, timeout).await,
        Command::Names(args) => return names::run(args, timeout).await,
        Command::Store { name, value } if value == "-" => {
            match stdin_value::read(tokio::io::stdin()).await {
                Ok(value) => Request::Store(name, value),
                Err(e) => {
                    eprintln!("jnhp: {e}");
                    return 2;
                }
            }
        }
        Command::Store { name, value } => Request::Store(name, value.as_bytes().to_vec()),
        Command::Exists { name } => Request::Exists(name),
        Command::Get { name } => Request::Get(name),
    };
    match one_request(&cli.addr, tls.as_ref(), timeout, request).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jnhp: {e}");
            2
        }
    }
}

/// The commands that send one request and exit with its answer.
enum Request {
    Store(OsString, Vec<u8>),
    Exists(OsString),
    Get(OsString),
}

async fn one_request(
    addr: &str,
    tls: Option<&tls::TlsTarget>,
    timeout: Duration,
    request: Request,
) -> Result<u8, jnhp_client::ClientError> {
    let client = match tls {
        None => Client::connect(addr, timeout).await?,
        Some(tls) => {
            Client::connect_tls(addr, &tls.server_name, tls.config.clone(), timeout).await?
        }
    };
    let (yes, name, miss) = match request {
        Request::Store(name, value) => (
            client.store(name.as_bytes(), &value).await?,
            name,
            "not stored (RARGH!: the name is taken, or a validator said no)",
        ),
        Request::Exists(name) => (client.exists(name.as_bytes()).await?, name, "absent"),
        Request::Get(name) => match client.get(name.as_bytes()).await? {
            Some(value) => {
                let mut out = tokio::io::stdout();
                let wrote = async {
                    out.write_all(&value).await?;
                    out.write_all(b"\n").await?;
                    out.flush().await
                };
                // A value that could not be written out (a full disk) is
                // no success: a script would take the cut file for it.
                if let Err(e) = wrote.await {
                    eprintln!("jnhp: writing the value to standard output: {e}");
                    return Ok(2);
                }
                (true, name, "")
            }
            None => (false, name, "absent"),
        },
    };
    // A person at a terminal sees why nothing happened; a script (stderr
    // not a terminal) gets the exit status alone, as before.
    if !yes && std::io::stderr().is_terminal() {
        let name = String::from_utf8_lossy(name.as_bytes());
        eprintln!("jnhp: {}: {miss}", name.escape_debug());
    }
    Ok(if yes { 0 } else { 1 })
}

/// Copies stdin to the server and the replies to stdout. After stdin ends
/// the connection is half-closed: the server answers everything it got,
/// then closes, which ends the copy of replies. Every request must get its
/// reply: if the server closes first, or any reply is an `ERROR` line, the
/// exit status is 2 and stderr says why.
async fn batch(addr: &str, tls: Option<&tls::TlsTarget>, timeout: Duration) -> u8 {
    let stream = match tls::connect(addr, tls, timeout).await {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("jnhp: {e}");
            return 2;
        }
    };
    let (mut read, mut write) = tokio::io::split(stream);
    let requests = async {
        let mut stdin = tokio::io::stdin();
        let mut counter = LineCounter::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stdin.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            counter.requests(&buf[..n]);
            // The server may be gone: what was sent is still accounted for.
            if write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
        Ok::<_, std::io::Error>(counter.finish())
    };
    let replies = async {
        let mut out = tokio::io::stdout();
        let mut counter = ReplyCounter::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // A reset after the last reply is the server closing.
            let n = read.read(&mut buf).await.unwrap_or_default();
            if n == 0 {
                break;
            }
            counter.replies(&buf[..n]);
            out.write_all(&buf[..n]).await?;
        }
        out.flush().await?;
        Ok::<_, std::io::Error>(counter)
    };
    match tokio::try_join!(requests, replies) {
        Ok((sent, got)) => {
            let mut code = 0;
            if got.lines < sent {
                eprintln!(
                    "jnhp: the connection closed with {} of {sent} requests without a reply",
                    sent - got.lines
                );
                code = 2;
            }
            if got.errors > 0 {
                eprintln!("jnhp: {} replies were errors", got.errors);
                code = 2;
            }
            code
        }
        Err(e) => {
            eprintln!("jnhp: {e}");
            2
        }
    }
}

/// Counts the requests in a stream of request lines: every line with
/// something other than blanks gets exactly one reply (a trailing line
/// without a line end included).
#[derive(Default)]
struct LineCounter {
    count: usize,
    /// The current line has a byte other than a blank or CR.
    filled: bool,
}

impl LineCounter {
    fn requests(&mut self, chunk: &[u8]) {
        for &b in chunk {
            match b {
                b'\n' => {
                    self.count += usize::from(self.filled);
                    self.filled = false;
                }
                b' ' | b'\t' | b'\r' => {}
                _ => self.filled = true,
            }
        }
    }

    fn finish(self) -> usize {
        self.count + usize::from(self.filled)
    }
}

/// Counts reply lines, and those that are `ERROR` lines.
#[derive(Default)]
struct ReplyCounter {
    lines: usize,
    errors: usize,
    /// Bytes of the current line seen so far, up to the prefix's length.
    head: Vec<u8>,
}

impl ReplyCounter {
    fn replies(&mut self, chunk: &[u8]) {
        let prefix = jnhp_wire::ERROR_PREFIX;
        for &b in chunk {
            if b == b'\n' {
                self.lines += 1;
                if self.head == prefix {
                    self.errors += 1;
                }
                self.head.clear();
            } else if self.head.len() < prefix.len() {
                self.head.push(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every subcommand and every option or argument a user can see says
    /// what it is for (`jnhp --help`, `jnhp bench --help`, the man page).
    #[test]
    fn every_option_and_subcommand_has_help_text() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_name() != "help" && sub.get_about().is_none() {
                    missing.push(name.clone());
                }
                walk(sub, &name, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "jnhp", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }
}
