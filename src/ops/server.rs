//! The daemon as a library: bind, [`Server::start`], reload, shut down,
//! wait.
//!
//! Binding is separate from starting and synchronous, so the `jnhpd` binary
//! can bind its ports before it forks or drops privileges, and report a
//! busy port on the terminal that started it. Everything after that (the
//! store and its data file, the validator chain, accepting) is
//! [`Server::start`]; the binary only turns signals into
//! [`Control::reload`] and [`Control::shutdown`], and tests can run a
//! whole server in-process.

pub use crate::ops::builder::{Builder, ValidatorSetup};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use crate::base::shutdown::Shutdown;
use crate::metrics::{Metrics, StoreKind};
use crate::net::accept;
use crate::net::connection::ConnectionContext;
use crate::net::not_ready::NotReady;
use crate::net::tls::Acceptor;
use crate::ops::config::{Config, ListenAddr, Storage};
use crate::storage::datafile::DataFile;
use crate::store::{Entries, StoreHandle, StoreTask};
use crate::validator::decisions::DecisionLog;
use crate::validator::{Link, ValidatorChain};

/// A listen address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address as configured.
    pub addr: String,
    /// Why binding failed.
    pub source: io::Error,
}

/// Binds one socket per address a listen entry resolves to (IPv6
/// sockets are IPv6-only, so `[::]:8111` and `0.0.0.0:8111` can both be
/// listed, and `localhost:8111` can bind both 127.0.0.1 and ::1).
///
/// Bound, not yet listening: [`Server::start`] listens once it can serve,
/// so a client that connects earlier is refused at once rather than left
/// waiting for a reply (`crate::net::not_ready`). A busy port is still found
/// here, by `bind`.
pub fn bind(addrs: &[ListenAddr]) -> Result<Vec<std::net::TcpListener>, BindError> {
    let mut listeners = Vec::new();
    for listen in addrs {
        let resolved = listen.resolve().map_err(|reason| BindError {
            addr: listen.to_string(),
            source: io::Error::other(reason),
        })?;
        for addr in resolved {
            let listener = bind_one(addr).map_err(|source| BindError {
                addr: addr.to_string(),
                source,
            })?;
            listeners.push(listener);
        }
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The bound sockets a server serves on: plain JNHP/1, JNHP/1 over TLS,
/// and the admin HTTP listener.
#[derive(Debug, Default)]
pub struct Listeners {
    /// Sockets serving JNHP/1 in plain text.
    pub plain: Vec<std::net::TcpListener>,
    /// Sockets serving JNHP/1 over TLS.
    pub tls: Vec<std::net::TcpListener>,
    /// Sockets serving the HTTP admin listener.
    pub admin: Vec<std::net::TcpListener>,
}

impl Listeners {
    /// Binds `server.listen`, `tls.listen` and `admin.listen`.
    pub fn bind(config: &Config) -> Result<Listeners, BindError> {
        Ok(Listeners {
            plain: bind(&config.server.listen)?,
            tls: bind(config.tls_listen())?,
            admin: bind(&config.admin.listen)?,
        })
    }
}

/// Why a server could not start: each variant says which part failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A validator could not be built (a helper that does not start, a
    /// denylist that does not load).
    #[error("{0}")]
    Validators(String),
    /// The PostgreSQL namespace: its password, or reaching it.
    #[error("{0}")]
    Postgres(crate::storage::postgres::PgError),
    /// The task that runs the PostgreSQL engine could not be started.
    #[error("cannot start the PostgreSQL engine: {0}")]
    PostgresEngine(String),
    /// The data file could not be opened or replayed.
    #[error("{0}")]
    DataFile(crate::storage::datafile::StorageError),
    /// The replay itself failed (it panicked or was cancelled).
    #[error("{0}")]
    Replay(tokio::task::JoinError),
    /// The task that writes the data file could not be started.
    #[error("cannot start the data file writer: {0}")]
    DataFileWriter(String),
    /// A socket could not be listened on or served.
    #[error("cannot serve: {0}")]
    Serve(io::Error),
    /// The TLS certificate, key or CA file (docs/tls.md).
    #[error("tls.{key}: {0}", key = .0.key)]
    Tls(crate::net::tls::TlsError),
    /// TLS sockets were given, but the config names no certificate.
    #[error("tls.cert_file: {NO_CERTIFICATE}")]
    NoCertificate,
    /// The decision log (`validation.decision_log`) could not be opened.
    #[error("{0}")]
    DecisionLog(crate::ops::config::ConfigError),
}

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new validator chain could not be built.
    #[error("{0}")]
    Validators(String),
    /// The new certificate, key or CA file does not load.
    #[error("tls.{key}: {0}", key = .0.key)]
    Tls(crate::net::tls::TlsError),
    /// TLS is served, but the new config names no certificate.
    #[error("tls.cert_file: {NO_CERTIFICATE}")]
    NoCertificate,
    /// The new PostgreSQL password file does not load.
    #[error("{0}")]
    Postgres(crate::storage::postgres::PgError),
}

/// TLS is served (on `--tls-listen` or running ports) without `[tls]`
/// files.
const NO_CERTIFICATE: &str = "required to serve TLS (with listen, cert_file or key_file set)";

/// A running server. Dropping it does not stop it: call
/// [`shutdown`](Control::shutdown), then [`wait`](Server::wait).
#[derive(Debug)]
pub struct Server {
    addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    admin_addrs: Vec<SocketAddr>,
    /// Stops the admin listener once the drain is over (it answers
    /// `/readyz` with 503 meanwhile).
    admin_stop: crate::ops::admin::Stop,
    control: Control,
    serving: tokio::task::JoinHandle<io::Result<()>>,
    store: StoreTask,
}

/// What can be done to a running server from elsewhere (a signal task):
/// cheap to clone.
#[derive(Debug, Clone)]
pub struct Control {
    inner: Arc<ControlInner>,
}

#[derive(Debug)]
struct ControlInner {
    /// The configuration in force (sections other than the validators
    /// and the log level are those of the start).
    config: Mutex<Config>,
    chain: watch::Sender<Arc<ValidatorChain>>,
    shutdown: Shutdown,
    /// The TLS ports' acceptor, when there are any: SIGHUP rotates it.
    tls: Option<Arc<Acceptor>>,
    /// The PostgreSQL password, when the namespace is shared: SIGHUP
    /// re-reads `password_file`.
    credentials: Option<crate::storage::postgres::Credentials>,
    metrics: Arc<Metrics>,
    /// The library user's validators ([`Server::start_with`]), kept in
    /// front of the chain by every reload.
    own_validators: Vec<Link>,
    /// The decision log, if kept: opened at the start, reopened on SIGHUP.
    decision_log: Option<Arc<DecisionLog>>,
}

/// What [`Control::shutdown`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopping {
    /// The first call: draining for up to the grace period.
    Draining(std::time::Duration),
    /// A later call: requests in flight are abandoned now.
    Abandoning,
}

/// What a reload changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Validators in the new chain.
    pub validators: usize,
    /// Sections that changed but take effect only at a restart.
    pub need_restart: Vec<&'static str>,
}

impl Server {
    /// Opens the store (replaying the data file, if any), builds the
    /// validator chain and starts serving on `listeners`, on the current
    /// tokio runtime.
    pub async fn start(config: Config, listeners: Listeners) -> Result<Server, StartError> {
        Server::start_with(config, listeners, Vec::new()).await
    }

    /// [`start`](Server::start), with validators of the caller's own run
    /// before the configured ones, in the order given. They stay in front
    /// of the chain across reloads (a reload replaces only the
    /// configured validators) and are shut down with the server.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    ///
    /// use jnhpd::config::{Config, ListenAddr};
    /// use jnhpd::server::{self, Listeners, Server};
    /// use jnhpd::validator::{Link, OnFailure, Peer, Validator, Verdict};
    ///
    /// /// Refuses names that do not begin with `user:`.
    /// #[derive(Debug)]
    /// struct UserNames;
    ///
    /// #[async_trait::async_trait]
    /// impl Validator for UserNames {
    ///     async fn validate(&self, name: &[u8], _value: &[u8], _peer: &Peer) -> Verdict {
    ///         self.check_now(name, b"", _peer).unwrap_or(Verdict::Allow)
    ///     }
    ///
    ///     // Cheap and pure: checked as the request is parsed.
    ///     fn check_now(&self, name: &[u8], _value: &[u8], _peer: &Peer) -> Option<Verdict> {
    ///         Some(if name.starts_with(b"user:") { Verdict::Allow } else { Verdict::Deny })
    ///     }
    ///
    ///     fn describe(&self) -> String {
    ///         "names begin with user:".into()
    ///     }
    /// }
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = Config::parse("", std::path::Path::new("jnhp.toml"))?;
    /// let listeners = Listeners {
    ///     plain: server::bind(&[ListenAddr::parse("127.0.0.1:7777")?])?,
    ///     tls: Vec::new(),
    ///     admin: Vec::new(),
    /// };
    /// let own = vec![Link::new("user-names", Arc::new(UserNames), OnFailure::Reject)];
    /// let server = Server::start_with(config, listeners, own).await?;
    /// server.control().shutdown();
    /// server.wait().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_with(
        config: Config,
        listeners: Listeners,
        own_validators: Vec<Link>,
    ) -> Result<Server, StartError> {
        crate::net::inflight::tune_allocator();
        let local = |sockets: &[std::net::TcpListener]| {
            sockets
                .iter()
                .map(|l| l.local_addr())
                .collect::<io::Result<Vec<SocketAddr>>>()
                .map_err(StartError::Serve)
        };
        let (addrs, tls_addrs) = (local(&listeners.plain)?, local(&listeners.tls)?);
        let admin_addrs = local(&listeners.admin)?;
        let tls = match &config.tls {
            _ if listeners.tls.is_empty() => None,
            None => return Err(StartError::NoCertificate),
            Some(settings) => {
                let server_config = settings.server_config().map_err(StartError::Tls)?;
                Some(Arc::new(Acceptor::new(
                    server_config,
                    settings.handshake_timeout,
                )))
            }
        };
        let metrics = Metrics::new(store_kind(&config));
        let decision_log =
            DecisionLog::start(&config.validation, metrics.clone(), config.own_files()).map_err(
                |e| StartError::DecisionLog(config.places.error("validation.decision_log", e)),
            )?;
        let chain = ValidatorChain::from_specs(&config.validators, None)
            .map_err(StartError::Validators)?
            .after(&own_validators)
            .map_err(StartError::Validators)?
            .with_validation(config.validation.deadline, decision_log.clone());
        let validators = chain.len();
        chain.publish();
        metrics.set_validators(chain.stats());
        let (chain_tx, chain_rx) = watch::channel(Arc::new(chain));
        // Until the store is open, no client waits unanswered on a port.
        let not_ready = NotReady::answer(listeners.plain).map_err(StartError::Serve)?;
        let shutdown = Shutdown::default();
        let (store, store_task, credentials) = open_store(&config, &metrics, &shutdown).await?;
        let plain = not_ready.ready().await.map_err(StartError::Serve)?;
        for socket in listeners.tls.iter().chain(&listeners.admin) {
            crate::net::not_ready::listen(socket).map_err(StartError::Serve)?;
        }
        let shared = Arc::new(ConnectionContext {
            store,
            limits: config.server.limits(),
            idle_timeout: config.server.idle_timeout(),
            validators: chain_rx,
            shutdown: shutdown.clone(),
            metrics: metrics.clone(),
            inflight: crate::net::inflight::InflightBudget::new(config.server.max_inflight_bytes),
        });
        let mut sockets = Vec::new();
        for (listener, tls) in plain
            .into_iter()
            .map(|l| (l, None))
            .chain(listeners.tls.into_iter().map(|l| (l, tls.clone())))
        {
            let socket = tokio::net::TcpListener::from_std(listener).map_err(StartError::Serve)?;
            sockets.push(accept::Listener { socket, tls });
        }
        let serving = tokio::spawn(accept::serve(
            sockets,
            shared,
            config.server.max_connections,
        ));
        let store_kind = store_kind(&config);
        let list = |addrs: &[SocketAddr], prefix: &str| {
            addrs
                .iter()
                .map(|a| format!("{prefix}{a}"))
                .collect::<Vec<_>>()
        };
        log::info!(
            "jnhpd {} listening on {}; store: {}; {validators} validators",
            env!("CARGO_PKG_VERSION"),
            [list(&addrs, ""), list(&tls_addrs, "tls ")]
                .concat()
                .join(", "),
            describe_store(&config),
        );
        let listen = [list(&addrs, ""), list(&tls_addrs, "tls ")].concat();
        let lister = crate::ops::listing::Lister::new(&config, &metrics, credentials.clone());
        let control = Control {
            inner: Arc::new(ControlInner {
                config: Mutex::new(config),
                chain: chain_tx,
                shutdown,
                tls,
                credentials,
                metrics,
                own_validators,
                decision_log,
            }),
        };
        let admin_stop = crate::ops::admin::Stop::default();
        if !listeners.admin.is_empty() {
            let state = crate::ops::admin::AdminState::new(
                control.draining().clone(),
                control.metrics().clone(),
                store_kind,
                listen,
                lister,
            );
            crate::ops::admin::serve(listeners.admin, state, admin_stop.clone())
                .await
                .map_err(StartError::Serve)?;
            log::info!(
                "admin (metrics, health, status page) on {}",
                list(&admin_addrs, "http://").join(", ")
            );
        }
        Ok(Server {
            addrs,
            tls_addrs,
            admin_addrs,
            admin_stop,
            control,
            serving,
            store: store_task,
        })
    }

    /// The admin listener's addresses (none when `admin.listen` is empty).
    pub fn admin_addrs(&self) -> &[SocketAddr] {
        &self.admin_addrs
    }

    /// The addresses it listens on (with the ports the system chose).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The addresses it serves TLS on.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// A handle for reloading and shutting down from another task.
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Waits until the server has drained (after
    /// [`shutdown`](Control::shutdown)), then stops the validators (helpers
    /// get their 2 s) and the store, whose data file is synced and closed
    /// when this returns.
    pub async fn wait(self) -> Result<(), StartError> {
        let served = match self.serving.await {
            Ok(served) => served.map_err(StartError::Serve),
            Err(e) => Err(StartError::Serve(io::Error::other(e))),
        };
        let chain = self.control.inner.chain.borrow().clone();
        chain.shutdown().await;
        if let Some(log) = self.control.inner.decision_log.clone() {
            // The writer may be stuck (a FIFO's reader gone): 2 s at most.
            let within = std::time::Duration::from_secs(2);
            let flushed = tokio::task::spawn_blocking(move || log.flush(within)).await;
            if !matches!(flushed, Ok(true)) {
                log::warn!("the decision log's last lines may be lost (its writer is behind)");
            }
        }
        self.store.close().await;
        self.admin_stop.stop().await;
        served
    }
}

impl Control {
    /// First call: stop accepting, close idle connections, finish requests
    /// in flight for up to `shutdown_grace_secs`. A second call abandons
    /// them at once.
    pub fn shutdown(&self) -> Stopping {
        let shutdown = &self.inner.shutdown;
        if shutdown.draining.is_raised() {
            shutdown.expired.raise();
            return Stopping::Abandoning;
        }
        let grace = lock(&self.inner.config).server.shutdown_grace();
        shutdown.draining.raise();
        let expired = shutdown.expired.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            expired.raise();
        });
        Stopping::Draining(grace)
    }

    /// Swaps in the validator chain of `new` (STOREs in flight keep the
    /// chain they started with; an unchanged `[[validator]]` table keeps
    /// its running validator). Other sections are compared and reported,
    /// not applied.
    pub fn reload(&self, new: Config) -> Result<Reloaded, ReloadError> {
        let reloaded = self.apply(new);
        let result = crate::metrics::ReloadResult::of(reloaded.is_ok());
        self.inner.metrics.reloads[result].fetch_add(1, Relaxed);
        reloaded
    }

    /// SIGHUP: opens the decision log's file again (logrotate's way),
    /// whether or not the configuration reloads.
    pub fn reopen_decision_log(&self) {
        if let Some(log) = &self.inner.decision_log {
            log.reopen();
        }
    }

    /// Counts a reload refused before it reached [`reload`](Self::reload)
    /// (the file did not parse, or the reload panicked).
    pub fn reload_rejected(&self) {
        let rejected = crate::metrics::ReloadResult::Rejected;
        self.inner.metrics.reloads[rejected].fetch_add(1, Relaxed);
    }

    /// Everything the server counts.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Raised when the drain begins (long polls on `/names` end then).
    pub(crate) fn draining(&self) -> &crate::base::shutdown::Flag {
        &self.inner.shutdown.draining
    }

    /// Whether a shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.inner.shutdown.draining.is_raised()
    }

    fn apply(&self, new: Config) -> Result<Reloaded, ReloadError> {
        let mut config = lock(&self.inner.config);
        let old_chain = self.inner.chain.borrow().clone();
        let chain = ValidatorChain::from_specs(&new.validators, Some(&old_chain))
            .map_err(ReloadError::Validators)?
            .after(&self.inner.own_validators)
            .map_err(ReloadError::Validators)?
            .with_validation(new.validation.deadline, self.inner.decision_log.clone());
        // Certificate rotation: new handshakes use the new files.
        let rotated = match (&self.inner.tls, &new.tls) {
            (None, _) => None,
            (Some(_), None) => return Err(ReloadError::NoCertificate),
            (Some(_), Some(settings)) => Some(settings.server_config().map_err(ReloadError::Tls)?),
        };
        if let (Some(credentials), Some(pg)) = (&self.inner.credentials, new.storage.postgres()) {
            credentials
                .reload(&pg.password_file, &pg.url)
                .map_err(ReloadError::Postgres)?;
        }
        if let (Some(acceptor), Some(rotated)) = (&self.inner.tls, rotated) {
            acceptor.replace(rotated);
        }
        let validators = chain.len();
        chain.publish();
        self.inner.metrics.set_validators(chain.stats());
        self.inner.chain.send_replace(Arc::new(chain));
        let mut need_restart = Vec::new();
        for (section, changed) in [
            ("[server]", new.server != config.server),
            ("[storage]", new.storage != config.storage),
            ("[admin]", new.admin != config.admin),
            ("[daemon]", new.daemon != config.daemon),
            ("[validation] (other than deadline_ms)", {
                let mut validation = new.validation.clone();
                validation.deadline = config.validation.deadline;
                validation != config.validation
            }),
            ("[tls] (other than its files and min_version)", {
                let served = |tls: &Option<crate::ops::config::TlsSettings>| {
                    tls.as_ref()
                        .map(|t| (t.listen.clone(), t.handshake_timeout))
                };
                served(&new.tls) != served(&config.tls)
            }),
            ("[log] (other than level)", {
                let mut log = new.log.clone();
                log.level = config.log.level;
                log != config.log
            }),
        ] {
            if changed {
                need_restart.push(section);
            }
        }
        config.log.level = new.log.level;
        config.validators = new.validators;
        config.validation.deadline = new.validation.deadline;
        // The files and min_version in force are the new ones; where TLS
        // is served and for how long a handshake may take, the start's.
        if let (Some(_), Some(running), Some(mut new)) = (&self.inner.tls, &mut config.tls, new.tls)
        {
            new.listen = std::mem::take(&mut running.listen);
            new.handshake_timeout = running.handshake_timeout;
            *running = new;
        }
        Ok(Reloaded {
            validators,
            need_restart,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The config is replaced field by field under the lock; a panic while
    // holding it (a bug) leaves a config that is still whole.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn store_kind(config: &Config) -> StoreKind {
    match config.storage {
        Storage::Memory => StoreKind::Memory,
        Storage::DataFile { .. } => StoreKind::Datafile,
        Storage::Postgres(_) => StoreKind::Postgres,
    }
}

fn describe_store(config: &Config) -> String {
    match &config.storage {
        Storage::Memory => "memory".into(),
        Storage::DataFile { path, fsync } => {
            format!("data file {} (fsync {fsync:?})", path.display()).to_lowercase()
        }
        // The server itself was named when it was connected to.
        Storage::Postgres(pg) => format!(
            "postgres, tables {}_*, pool {}, cache {} bytes",
            pg.table_prefix, pg.pool_size, pg.cache_bytes
        ),
    }
}

/// Starts the store actor, first replaying the data file if there is one
/// (on the blocking pool: a large file takes a while, and signals must
/// still be heard meanwhile), or connecting to the shared namespace.
async fn open_store(
    config: &Config,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
) -> Result<
    (
        StoreHandle,
        StoreTask,
        Option<crate::storage::postgres::Credentials>,
    ),
    StartError,
> {
    if let Storage::Postgres(pg) = &config.storage {
        let credentials = crate::storage::postgres::Credentials::load(&pg.password_file, &pg.url)
            .map_err(StartError::Postgres)?;
        let namespace = crate::storage::postgres::Namespace::connect(pg, credentials.clone())
            .await
            .map_err(StartError::Postgres)?;
        log::info!(
            "postgres: connected to {} as {}",
            namespace.connected(),
            namespace.owner()
        );
        let backend = namespace.into_backend(
            metrics.clone(),
            config.server.limits(),
            shutdown.expired.clone(),
        );
        let (store, task) = StoreHandle::spawn_with(
            Entries::default(),
            Some(backend),
            metrics.clone(),
            shutdown.expired.clone(),
        )
        .map_err(|e| StartError::PostgresEngine(e.to_string()))?;
        return Ok((store, task, Some(credentials)));
    }
    let data = match &config.storage {
        Storage::DataFile { path, fsync } => {
            let (path, limits) = (path.clone(), config.server.limits());
            let replayed = tokio::task::spawn_blocking(move || replay(&path, limits))
                .await
                .map_err(StartError::Replay)??;
            Some((replayed, *fsync))
        }
        _ => None,
    };
    let (entries, backend) = match data {
        Some(((entries, file), fsync)) => {
            (entries, Some(file.into_backend(fsync, metrics.clone())))
        }
        None => (Entries::default(), None),
    };
    let (store, task) =
        StoreHandle::spawn_with(entries, backend, metrics.clone(), shutdown.expired.clone())
            .map_err(|e| StartError::DataFileWriter(e.to_string()))?;
    Ok((store, task, None))
}

fn replay(
    path: &std::path::Path,
    limits: crate::protocol::Limits,
) -> Result<(Entries, DataFile), StartError> {
    log::info!("data file {}: replaying", path.display());
    let started = std::time::Instant::now();
    let mut entries = Entries::default();
    let mut duplicates = 0usize;
    let (file, records) = DataFile::open(path, limits, |name, value| {
        if !entries.insert_replayed(name, value) {
            duplicates += 1;
        }
    })
    .map_err(StartError::DataFile)?;
    if duplicates > 0 {
        log::warn!(
            "data file {}: {duplicates} records repeat a name stored before; the first value is kept",
            path.display()
        );
    }
    log::info!(
        "data file {}: replayed {records} records ({} names) in {} ms",
        path.display(),
        entries.len(),
        started.elapsed().as_millis()
    );
    Ok((entries, file))
}
