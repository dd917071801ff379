//! The `jnhpd` binary: command line, configuration, signals.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{Parser, Subcommand};
use tokio::signal::unix::{Signal, SignalKind, signal};

use jnhpd::config::{Config, ListenAddr, LogLevel, LogTarget};
use jnhpd::daemon::{self, Pidfile, StartReport};
use jnhpd::logging;
use jnhpd::server::{self, Control, Listeners, Server, Stopping};
use jnhpd::validator::reaper;
use sd_notify::NotifyState;

mod data_command;
mod man_page;
mod man_roff;

/// jnhpd: a write-once key-value daemon speaking JNHP/1.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "Signals: SIGTERM/SIGINT drain and stop (a second one stops at once); \
                  SIGHUP re-reads the config file (validators and log level). \
                  See /usr/share/doc/jnhpd/ for the protocol and the configuration reference.",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Without a command, jnhpd serves.
    #[command(subcommand)]
    command: Option<Command>,
    /// The TOML config file. Without it, built-in defaults: in-memory store,
    /// 127.0.0.1:8111, logs to stderr.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Listen on ADDR (host:port) instead of `server.listen`; repeatable.
    #[arg(long = "listen", value_name = "ADDR", value_parser = ListenAddr::parse_and_resolve)]
    listen: Vec<ListenAddr>,
    /// Serve JNHP/1 over TLS on ADDR instead of `tls.listen`; repeatable
    /// (the certificate and key come from `[tls]` in the config file).
    #[arg(long = "tls-listen", value_name = "ADDR", value_parser = ListenAddr::parse_and_resolve)]
    tls_listen: Vec<ListenAddr>,
    /// Serve metrics, health and the status page over HTTP on ADDR instead
    /// of `admin.listen`; repeatable.
    #[arg(long = "admin-listen", value_name = "ADDR", value_parser = ListenAddr::parse_and_resolve)]
    admin_listen: Vec<ListenAddr>,
    /// Fork to the background (forces `daemon.daemonize = true`).
    #[arg(long)]
    daemon: bool,
    /// Check the configuration, print what is wrong, and exit 0 or 1.
    #[arg(long)]
    check_config: bool,
    /// Copy every record of the local data file PATH into the PostgreSQL
    /// namespace of the config (`storage.backend = "postgres"`), print the
    /// counts (imported, already present, conflicts) and exit.
    #[arg(long, value_name = "PATH")]
    import_datafile: Option<PathBuf>,
    /// Replaces `log.level`.
    #[arg(long, value_name = "LEVEL", value_parser = |s: &str| s.parse::<LogLevel>())]
    log_level: Option<LogLevel>,
    /// Packaging: write the man page jnhpd(8) and shell completions into
    /// DIR, then exit.
    #[arg(long, value_name = "DIR", hide = true)]
    write_man_pages: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Verify, repair, back up, export and import a data file
    /// (/usr/share/doc/jnhpd/backup.md).
    #[command(subcommand)]
    Data(data_command::DataCommand),
}

/// `--write-man-pages`: jnhpd.8 and completions for bash, zsh and fish,
/// all generated from the definitions above.
fn write_man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    std::fs::create_dir_all(dir)?;
    let command = Cli::command();
    let mut page = Vec::new();
    man_page::render(command.clone(), &mut page)?;
    std::fs::write(dir.join("jnhpd.8"), page)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command.clone(), "jnhpd", dir)?;
    }
    Ok(())
}

impl Cli {
    /// The config file with the command line's overrides applied.
    fn load_config(&self) -> Result<Config, String> {
        let mut config = match &self.config {
            Some(path) => {
                let config = Config::load(path).map_err(|e| e.to_string())?;
                // The file's listen names, certificates and PostgreSQL TLS
                // settings, checked as the start would use them.
                jnhpd::preflight::check(&config).map_err(|e| e.to_string())?;
                config
            }
            None => Config::default(),
        };
        if !self.listen.is_empty() {
            config.server.listen = self.listen.clone();
        }
        if !self.admin_listen.is_empty() {
            config.admin.listen = self.admin_listen.clone();
        }
        if !self.tls_listen.is_empty() {
            let Some(tls) = &mut config.tls else {
                return Err(
                    "--tls-listen needs tls.cert_file and tls.key_file in the config file".into(),
                );
            };
            tls.listen = self.tls_listen.clone();
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
    // Until the handlers exist, SIGTERM, SIGINT and SIGHUP wait: none of
    // them may kill jnhpd with the default action during start-up.
    daemon::hold_signals();
    let mut cli = Cli::parse();
    if let Some(Command::Data(command)) = cli.command.take() {
        // A data tool runs to completion: SIGTERM and SIGINT end it.
        daemon::release_signals();
        return data_command::run(command);
    }
    if cli.check_config || cli.import_datafile.is_some() {
        // These run to completion without signal handlers: SIGTERM and
        // SIGINT must end them the usual way (an import waiting on an
        // unreachable server, a check waiting out its connect timeout).
        daemon::release_signals();
    }
    // SIGHUP re-reads the file after `--daemon` has changed directory to
    // `daemon.workdir`: a relative path must mean what it meant at start.
    if let Some(path) = &mut cli.config
        && let Ok(absolute) = std::path::absolute(&*path)
    {
        *path = absolute;
    }
    if let Some(dir) = &cli.write_man_pages {
        return match write_man_pages(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("jnhpd: {}: {err}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    let config = match cli.load_config() {
        Ok(config) => config,
        Err(err) => {
            logging::early_error(&err.to_string());
            return ExitCode::FAILURE;
        }
    };
    if cli.check_config {
        let source = cli
            .config
            .as_ref()
            .map_or("built-in defaults".to_string(), |p| p.display().to_string());
        match &config.log.target {
            LogTarget::Stderr => {}
            LogTarget::Syslog { facility, socket } => {
                // The start connects to syslog before anything else: a
                // socket it would refuse is refused here too.
                let socket = socket.as_deref().unwrap_or(std::path::Path::new(""));
                if let Err(err) = logging::probe_syslog(facility, socket) {
                    logging::early_error(&format!("{}: {err}", log_key(&config)));
                    return ExitCode::FAILURE;
                }
            }
            LogTarget::File { path } => {
                if let Err(err) = logging::check_log_file(path) {
                    logging::early_error(&format!("{}: {err}", log_key(&config)));
                    return ExitCode::FAILURE;
                }
            }
        }
        if let jnhpd::config::DecisionLogTarget::File(path) = &config.validation.decision_log
            && let Err(err) = logging::check_log_file(path)
        {
            let err = config.places.error("validation.decision_log", err);
            logging::early_error(&err.to_string());
            return ExitCode::FAILURE;
        }
        if let Some(pg) = config.storage.postgres() {
            // A namespace that cannot be reached is as wrong as a bad key.
            match with_namespace(pg, |namespace| async move {
                Ok(format!("connected to {}", namespace.connected()))
            }) {
                Ok(connected) => println!("jnhpd: {source}: PostgreSQL: {connected}"),
                Err(err) => {
                    logging::early_error(&format!("{source}: {err}"));
                    return ExitCode::FAILURE;
                }
            }
        }
        println!("jnhpd: {source}: configuration OK");
        return ExitCode::SUCCESS;
    }
    if let Some(path) = &cli.import_datafile {
        return import_datafile(&config, path);
    }
    // Sockets come from systemd (socket activation) or are bound here,
    // before forking or dropping privileges, so a busy port is reported on
    // the terminal that started jnhpd.
    let listeners = match daemon::inherited_listeners() {
        Ok(inherited) if !inherited.is_empty() => match server::bind(config.tls_listen())
            .and_then(|tls| Ok((tls, server::bind(&config.admin.listen)?)))
        {
            Ok((tls, admin)) => Listeners {
                plain: inherited,
                tls,
                admin,
            },
            Err(err) => {
                logging::early_error(&err.to_string());
                return ExitCode::FAILURE;
            }
        },
        Ok(_) => match Listeners::bind(&config) {
            Ok(listeners) => listeners,
            Err(err) => {
                logging::early_error(&err.to_string());
                return ExitCode::FAILURE;
            }
        },
        Err(err) => {
            logging::early_error(&format!("sockets from systemd (LISTEN_FDS): {err}"));
            return ExitCode::FAILURE;
        }
    };
    let mut report = StartReport::default();
    if config.daemon.daemonize {
        match daemon::daemonize(config.daemon.umask, &config.daemon.workdir) {
            Ok(daemon) => report = daemon,
            Err(err) => {
                logging::early_error(&err.to_string());
                return ExitCode::FAILURE;
            }
        }
    }
    let target = match &config.log.target {
        LogTarget::Stderr => logging::Target::Stderr,
        LogTarget::Syslog { facility, socket } => logging::Target::Syslog {
            facility,
            socket: socket.as_deref().unwrap_or(std::path::Path::new("")),
        },
        LogTarget::File { path } => logging::Target::File { path },
    };
    if let Err(err) = logging::init(target, config.log.level.filter()) {
        let err = format!("{}: {err}", log_key(&config));
        logging::early_error(&err.to_string());
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
    if let Err(err) = reaper::become_subreaper() {
        log::warn!(
            "cannot become a child subreaper ({err}): processes that validator programs detach may outlive them"
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

/// `file:line: log.syslog_socket` or `file:line: log.file` (just the key
/// without a file), to begin an error connecting to syslog or opening the
/// log file with.
fn log_key(config: &Config) -> String {
    let key = match config.log.target {
        LogTarget::File { .. } => "log.file",
        _ => "log.syslog_socket",
    };
    match config.places.at(key) {
        Some(at) => format!("{at}: {key}"),
        None => key.to_string(),
    }
}

/// Connects to the configured namespace on a runtime of its own and runs
/// `work` on it (`--check-config`, `--import-datafile`).
fn with_namespace<F, Fut>(pg: &jnhpd::postgres::PostgresSettings, work: F) -> Result<String, String>
where
    F: FnOnce(jnhpd::postgres::Namespace) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let credentials = jnhpd::postgres::Credentials::load(&pg.password_file, &pg.url)
            .map_err(|e| e.to_string())?;
        let namespace = jnhpd::postgres::Namespace::connect(pg, credentials)
            .await
            .map_err(|e| e.to_string())?;
        work(namespace).await
    })
}

/// `--import-datafile`: exit 0 with the counts, or 1 if anything failed.
fn import_datafile(config: &Config, path: &std::path::Path) -> ExitCode {
    let Some(pg) = config.storage.postgres() else {
        eprintln!(
            "jnhpd: --import-datafile needs storage.backend = \"postgres\" in the config file"
        );
        return ExitCode::FAILURE;
    };
    if let Err(err) = logging::init(logging::Target::Stderr, config.log.level.filter()) {
        eprintln!("jnhpd: {err}");
        return ExitCode::FAILURE;
    }
    // The whole file is checked before anything is connected to or
    // imported: a FIFO, a device, a bad header or a record no STORE could
    // have made stops the import here, with nothing of it in the namespace.
    let limits = config.server.limits();
    if let Err(err) = jnhpd::postgres::import::check_datafile(path, limits) {
        eprintln!("jnhpd: import: {err}");
        return ExitCode::FAILURE;
    }
    let path = path.to_path_buf();
    let imported = with_namespace(pg, |namespace| async move {
        jnhpd::postgres::import::import_datafile(&namespace, &path, limits)
            .await
            .map(|counts| format!("{}: {counts}", path.display()))
            .map_err(|e| format!("{}: {e}", path.display()))
    });
    match imported {
        Ok(counts) => {
            println!("jnhpd: import: {counts}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("jnhpd: import: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Everything after the process is in place: pidfile, privileges, the
/// runtime, the server; then serving until a signal stops it.
fn start_and_serve(
    cli: Cli,
    config: Config,
    listeners: Listeners,
    report: &mut StartReport,
) -> Result<(), String> {
    let _pidfile = match &config.daemon.pidfile {
        None => None,
        Some(path) => Some(Pidfile::create(path).map_err(|e| e.to_string())?),
    };
    let name = |name: &Option<String>| name.as_deref().unwrap_or("").to_string();
    daemon::drop_privileges(&name(&config.daemon.user), &name(&config.daemon.group))
        .map_err(|e| format!("cannot drop privileges: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let result = runtime.block_on(run(cli, config, listeners, report));
    // Dropping the runtime drops every task: the supervisors of validator
    // programs still running kill their process groups. Then whatever those
    // programs left outside their groups goes too.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    reaper::kill_orphans();
    result
}

/// Starts the server and serves until shut down. Signals are heard from
/// the first moment: during the start (a large data file replays for a
/// while) a SIGTERM or SIGINT ends it cleanly and a SIGHUP is applied once
/// serving.
async fn run(
    cli: Cli,
    config: Config,
    listeners: Listeners,
    report: &mut StartReport,
) -> Result<(), String> {
    let mut signals = Signals::install().map_err(|e| format!("signal handler: {e}"))?;
    // Signals that arrived before the handlers existed were held pending;
    // they are delivered to the handlers now.
    daemon::release_signals();
    let start = Server::start(config, listeners);
    tokio::pin!(start);
    let mut reload_pending = false;
    let server = loop {
        tokio::select! {
            started = &mut start => break started.map_err(|e| e.to_string())?,
            signal = signals.recv() => match signal {
                Received::Stop(name) => {
                    log::info!("{name} during start-up: stopping before serving");
                    return Ok(());
                }
                Received::Reload => {
                    log::info!("SIGHUP during start-up: the configuration is re-read once serving");
                    reload_pending = true;
                }
            },
        }
    };
    report.ready();
    daemon::notify(&[NotifyState::Ready]);
    let handler = SignalHandler {
        cli,
        control: server.control(),
        reloading: Mutex::new(()),
    };
    let handler = Arc::new(handler);
    if reload_pending {
        handler.reload_in_background();
    }
    tokio::spawn(async move {
        loop {
            match signals.recv().await {
                Received::Stop(name) => handler.stop(name),
                Received::Reload => handler.reload_in_background(),
            }
        }
    });
    server.wait().await.map_err(|e| e.to_string())
}

/// The signals jnhpd acts on.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

enum Received {
    Stop(&'static str),
    Reload,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> Received {
        tokio::select! {
            _ = self.term.recv() => Received::Stop("SIGTERM"),
            _ = self.int.recv() => Received::Stop("SIGINT"),
            _ = self.hup.recv() => Received::Reload,
        }
    }
}

/// Turns signals into calls on the running server.
struct SignalHandler {
    cli: Cli,
    control: Control,
    /// Held by the reload running: SIGHUPs in quick succession are applied
    /// one after the other, the file as it is last.
    reloading: Mutex<()>,
}

impl SignalHandler {
    /// First signal: drain for up to the grace period. Second: stop now.
    fn stop(&self, signal: &str) {
        match self.control.shutdown() {
            Stopping::Draining(grace) => {
                daemon::notify(&[NotifyState::Stopping]);
                log::info!(
                    "{signal}: shutting down (finishing requests in flight for up to {grace:?})"
                );
            }
            Stopping::Abandoning => log::info!("{signal} again: abandoning requests in flight"),
        }
    }

    /// SIGHUP, on the blocking pool: a reload reads files (the config, the
    /// certificates, denylists), and no file read may hold up the workers
    /// that serve connections, `/healthz` and the signals themselves.
    fn reload_in_background(self: &Arc<Self>) {
        let handler = self.clone();
        tokio::task::spawn_blocking(move || {
            let _one_at_a_time = handler.reloading.lock().unwrap_or_else(|e| e.into_inner());
            handler.reload();
        });
    }

    /// SIGHUP: re-read the file; swap in the validator chain and log level.
    /// Whatever goes wrong, a panic included, the running configuration
    /// stays and signals are still heard.
    fn reload(&self) {
        // First, so what the reload logs lands in the new file.
        logging::reopen();
        self.control.reopen_decision_log();
        if self.cli.config.is_none() {
            log::info!("SIGHUP: no config file to reload (running on built-in defaults)");
            return;
        }
        let mut reloading = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            reloading.push(now);
        }
        daemon::notify(&reloading);
        let reloaded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.reload_config()));
        if reloaded.is_err() {
            self.control.reload_rejected();
            log::error!(
                "SIGHUP: internal error while reloading; keeping the running configuration"
            );
        }
        daemon::notify(&[NotifyState::Ready]);
    }

    fn reload_config(&self) {
        let reloaded = self
            .cli
            .load_config()
            .inspect_err(|_| self.control.reload_rejected())
            .and_then(|new| {
                let level = new.log.level;
                self.control
                    .reload(new)
                    .map(|r| (r, level))
                    .map_err(|e| e.to_string())
            });
        let (reloaded, level) = match reloaded {
            Ok(done) => done,
            Err(err) => {
                log::error!("SIGHUP: keeping the running configuration: {err}");
                return;
            }
        };
        logging::set_level(level.filter());
        for section in &reloaded.need_restart {
            log::warn!("SIGHUP: changes to {section} need a restart; ignored");
        }
        log::info!(
            "SIGHUP: configuration reloaded; log level {level:?}; {} validators",
            reloaded.validators
        );
    }
}
