//! The `jnhpd` binary: command line, configuration, signals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use jnhpd::config::{Config, LogLevel, LogTarget};
use jnhpd::connection::{Shared, Shutdown};
use jnhpd::daemon::{self, Pidfile, StartReport};
use jnhpd::datafile::{DataFile, WriterThread};
use jnhpd::store::{Entries, StoreHandle};
use jnhpd::validator::ValidatorChain;
use jnhpd::{logging, server};
use sd_notify::NotifyState;

/// jnhpd: a write-once key-value daemon speaking JNHP/1.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The TOML config file. Without it, built-in defaults: in-memory store,
    /// 127.0.0.1:8111, logs to stderr.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Listen on ADDR (host:port) instead of `server.listen`; repeatable.
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Fork to the background (forces `daemon.daemonize = true`).
    #[arg(long)]
    daemon: bool,
    /// Check the configuration, print what is wrong, and exit 0 or 1.
    #[arg(long)]
    check_config: bool,
    /// Replaces `log.level`.
    #[arg(long, value_enum, value_name = "LEVEL")]
    log_level: Option<LogLevel>,
}

impl Cli {
    /// The config file with the command line's overrides applied.
    fn load_config(&self) -> Result<Config, String> {
        let mut config = match &self.config {
            Some(path) => Config::load(path).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        if !self.listen.is_empty() {
            config.server.listen = self.listen.clone();
        }
        if let Some(level) = self.log_level {
            config.log.level = level;
        }
        if self.daemon {
            config.daemon.daemonize = true;
        }
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.load_config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("jnhpd: {err}");
            return ExitCode::FAILURE;
        }
    };
    if cli.check_config {
        let source = cli
            .config
            .as_ref()
            .map_or("built-in defaults".to_string(), |p| p.display().to_string());
        println!("jnhpd: {source}: configuration OK");
        return ExitCode::SUCCESS;
    }
    // Sockets come from systemd (socket activation) or are bound here,
    // before forking or dropping privileges, so a busy port is reported on
    // the terminal that started jnhpd.
    let listeners = match daemon::inherited_listeners() {
        Ok(inherited) if !inherited.is_empty() => inherited,
        Ok(_) => match server::bind(&config.server.listen) {
            Ok(listeners) => listeners,
            Err(err) => {
                eprintln!("jnhpd: {err}");
                return ExitCode::FAILURE;
            }
        },
        Err(err) => {
            eprintln!("jnhpd: sockets from systemd (LISTEN_FDS): {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = StartReport::default();
    if config.daemon.daemonize {
        match daemon::daemonize(config.daemon.umask, &config.daemon.workdir) {
            Ok(daemon) => report = daemon,
            Err(err) => {
                eprintln!("jnhpd: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    let target = match config.log.target {
        LogTarget::Stderr => logging::Target::Stderr,
        LogTarget::Syslog => logging::Target::Syslog {
            facility: &config.log.syslog_facility,
            socket: &config.log.syslog_socket,
        },
    };
    if let Err(err) = logging::init(target, config.log.level.filter()) {
        eprintln!("jnhpd: {err}");
        report.failed(&err);
        return ExitCode::FAILURE;
    }
    // A panic anywhere is a bug; make sure it reaches the log (stderr or
    // syslog) rather than only a terminal.
    std::panic::set_hook(Box::new(|info| log::error!("internal error: {info}")));
    // A write past RLIMIT_FSIZE must fail with EFBIG (and be reported to the
    // client) rather than kill the daemon.
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    match start_and_serve(cli, config, listeners, &mut report) {
        Ok(()) => {
            log::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            log::error!("{err}");
            report.failed(&err);
            ExitCode::FAILURE
        }
    }
}

/// Everything after the process is in place: pidfile, privileges, the
/// runtime, the store; then serving until a signal stops it.
fn start_and_serve(
    cli: Cli,
    config: Config,
    listeners: Vec<std::net::TcpListener>,
    report: &mut StartReport,
) -> Result<(), String> {
    let _pidfile = match config.daemon.pidfile.as_os_str().is_empty() {
        true => None,
        false => Some(Pidfile::create(&config.daemon.pidfile).map_err(|e| e.to_string())?),
    };
    daemon::drop_privileges(&config.daemon.user, &config.daemon.group)
        .map_err(|e| format!("cannot drop privileges: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let result = runtime.block_on(run(cli, config, listeners, report));
    // Dropping the runtime drops every task: the supervisors of validator
    // programs still running kill their process groups, and the store actor
    // lets go of the data file writer, which syncs and stops.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    if let Some(writer) = result? {
        writer.join();
    }
    Ok(())
}

/// Serves until shut down; returns the data file's writer (if any) so the
/// caller can wait for its final sync once the runtime has stopped.
async fn run(
    cli: Cli,
    config: Config,
    listeners: Vec<std::net::TcpListener>,
    report: &mut StartReport,
) -> Result<Option<WriterThread>, String> {
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map_or_else(|e| format!("?({e})"), |a| a.to_string())
        })
        .collect();
    let chain = ValidatorChain::from_specs(&config.validators)?;
    let (chain_tx, chain_rx) = watch::channel(Arc::new(chain));
    let shutdown = Shutdown::default();
    let (store, writer) = open_store(&config)?;
    let shared = Arc::new(Shared {
        store,
        limits: config.server.limits(),
        idle_timeout: config.server.idle_timeout(),
        validators: chain_rx,
        shutdown: shutdown.clone(),
    });
    let signals = SignalHandler {
        cli,
        config: config.clone(),
        chain: chain_tx,
        shutdown,
    };
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| format!("signal handler: {e}"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| format!("signal handler: {e}"))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| format!("signal handler: {e}"))?;
    tokio::spawn(async move {
        let mut signals = signals;
        loop {
            tokio::select! {
                _ = sigterm.recv() => signals.stop("SIGTERM"),
                _ = sigint.recv() => signals.stop("SIGINT"),
                _ = sighup.recv() => signals.reload(),
            }
        }
    });
    log::info!(
        "jnhpd {} listening on {}; store: {}; {} validators",
        env!("CARGO_PKG_VERSION"),
        addrs.join(", "),
        describe_store(&config),
        shared.validators.borrow().len(),
    );
    report.ready();
    daemon::notify(&[NotifyState::Ready]);
    let served = server::serve(listeners, shared, config.server.max_connections).await;
    served.map_err(|e| format!("cannot serve: {e}"))?;
    Ok(writer)
}

fn describe_store(config: &Config) -> String {
    if config.storage.path.as_os_str().is_empty() {
        "memory".into()
    } else {
        format!(
            "data file {} (fsync {:?})",
            config.storage.path.display(),
            config.storage.fsync
        )
        .to_lowercase()
    }
}

/// Starts the store actor, first replaying the data file if there is one.
fn open_store(config: &Config) -> Result<(StoreHandle, Option<WriterThread>), String> {
    let mut entries = Entries::default();
    let data = if config.storage.path.as_os_str().is_empty() {
        None
    } else {
        let started = std::time::Instant::now();
        let mut duplicates = 0usize;
        let (file, records) = DataFile::open(&config.storage.path, |name, value| {
            if !entries.insert_replayed(name, value) {
                duplicates += 1;
            }
        })
        .map_err(|e| e.to_string())?;
        if duplicates > 0 {
            log::warn!(
                "data file {}: {duplicates} records repeat a name stored before; the first value is kept",
                config.storage.path.display()
            );
        }
        log::info!(
            "data file {}: replayed {records} records ({} names) in {} ms",
            config.storage.path.display(),
            entries.len(),
            started.elapsed().as_millis()
        );
        Some((file, config.storage.fsync))
    };
    StoreHandle::spawn_with(entries, data)
        .map_err(|e| format!("cannot start the data file writer: {e}"))
}

struct SignalHandler {
    cli: Cli,
    config: Config,
    chain: watch::Sender<Arc<ValidatorChain>>,
    shutdown: Shutdown,
}

impl SignalHandler {
    /// First signal: drain for up to the grace period. Second: stop now.
    fn stop(&self, signal: &str) {
        if self.shutdown.draining.is_cancelled() {
            log::info!("{signal} again: abandoning requests in flight");
            self.shutdown.expired.cancel();
            return;
        }
        daemon::notify(&[NotifyState::Stopping]);
        let grace = self.config.server.shutdown_grace();
        log::info!("{signal}: shutting down (finishing requests in flight for up to {grace:?})");
        self.shutdown.draining.cancel();
        let expired = self.shutdown.expired.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            expired.cancel();
        });
    }

    /// SIGHUP: re-read the file; swap in the validator chain and log level.
    fn reload(&mut self) {
        if self.cli.config.is_none() {
            log::info!("SIGHUP: no config file to reload (running on built-in defaults)");
            return;
        }
        let mut reloading = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            reloading.push(now);
        }
        daemon::notify(&reloading);
        self.reload_config();
        daemon::notify(&[NotifyState::Ready]);
    }

    fn reload_config(&mut self) {
        let new = match self.cli.load_config() {
            Ok(new) => new,
            Err(err) => {
                log::error!("SIGHUP: keeping the running configuration: {err}");
                return;
            }
        };
        let chain = match ValidatorChain::from_specs(&new.validators) {
            Ok(chain) => chain,
            Err(err) => {
                log::error!("SIGHUP: keeping the running configuration: {err}");
                return;
            }
        };
        logging::set_level(new.log.level.filter());
        // STOREs in flight keep the chain they started with (they hold an
        // Arc of it); new ones get this one.
        self.chain.send_replace(Arc::new(chain));
        for (section, changed) in [
            ("[server]", new.server != self.config.server),
            ("[storage]", new.storage != self.config.storage),
            ("[daemon]", new.daemon != self.config.daemon),
            ("[log] (other than level)", {
                let mut log = new.log.clone();
                log.level = self.config.log.level;
                log != self.config.log
            }),
        ] {
            if changed {
                log::warn!("SIGHUP: changes to {section} need a restart; ignored");
            }
        }
        log::info!(
            "SIGHUP: configuration reloaded; log level {:?}; {} validators",
            new.log.level,
            self.chain.borrow().len()
        );
        self.config.log.level = new.log.level;
        self.config.validators = new.validators;
    }
}
