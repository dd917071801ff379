//! Where the shared namespace is: the URL (or keyword string), its
//! `sslmode`, and the password.
//!
//! tokio-postgres parses the URL but knows only `sslmode=disable|prefer|
//! require` and no `sslrootcert`, so those two are taken out here first and
//! turned into a rustls configuration (the private `tls` module). The password comes
//! from `password_file` (re-read on SIGHUP), the URL, or `PGPASSWORD`, in
//! that order; it lives only in [`Credentials`] and in the connection
//! config handed to tokio-postgres, and no message ever shows it.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode as WireSslMode, TargetSessionAttrs};

use super::PgError;
use super::tls::{MakeTls, SslMode};

/// Why no connection could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A host answered with an error (refused, authentication, not
    /// writable...): the last one tried.
    #[error("{}", super::describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// Every host of the URL was tried and none answered within its
    /// handshake limit ([`Target::limit_handshake`]).
    #[error("no host answered within {} ms", .limit.as_millis())]
    NoAnswer {
        /// Each host's limit.
        limit: Duration,
    },
}

/// A checked URL: the connection config without a password, and how TLS
/// is used.
#[derive(Clone)]
pub struct Target {
    /// One config per host of the URL, each tried on its own
    /// ([`Target::connect_raw`]).
    hosts: Arc<[Endpoint]>,
    /// Indexes into `hosts` in the order the next connection tries them:
    /// the host last connected to first, a host that just failed last.
    order: Arc<Mutex<Vec<usize>>>,
    /// What one host's connection attempt (TCP, TLS, start-up, the
    /// `target_session_attrs` check) may take when the URL lists several.
    handshake_limit: Option<Duration>,
    /// `host H port P`: where the last connection went, for logs.
    connected: Arc<Mutex<String>>,
    tls: MakeTls,
    /// `host H port P database D`, for messages.
    server: String,
    database: String,
}

/// One host of a multi-host URL.
struct Endpoint {
    config: tokio_postgres::Config,
    /// `host H port P`.
    name: String,
}

/// What one host's connection attempt may take, by default, when the
/// URL lists several hosts and sets no `connect_timeout`: a host that
/// accepts TCP connections but never answers (a frozen server) would
/// otherwise hold every connection attempt, and tokio-postgres's own
/// `connect_timeout` covers only the TCP connect.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);

/// The host of index `i` alone, with every other setting of `config`.
fn single_host(config: &tokio_postgres::Config, i: usize) -> tokio_postgres::Config {
    let mut one = tokio_postgres::Config::new();
    if let Some(user) = config.get_user() {
        one.user(user);
    }
    if let Some(password) = config.get_password() {
        one.password(password);
    }
    if let Some(dbname) = config.get_dbname() {
        one.dbname(dbname);
    }
    if let Some(options) = config.get_options() {
        one.options(options);
    }
    if let Some(name) = config.get_application_name() {
        one.application_name(name);
    }
    one.ssl_mode(config.get_ssl_mode())
        .ssl_negotiation(config.get_ssl_negotiation());
    match config.get_hosts().get(i) {
        Some(Host::Tcp(host)) => {
            one.host(host);
        }
        Some(Host::Unix(path)) => {
            one.host_path(path);
        }
        None => {}
    }
    if let Some(addr) = config.get_hostaddrs().get(i) {
        one.hostaddr(*addr);
    }
    let ports = config.get_ports();
    if let Some(port) = ports.get(i).or(ports.first()) {
        one.port(*port);
    }
    if let Some(timeout) = config.get_connect_timeout() {
        one.connect_timeout(*timeout);
    }
    if let Some(timeout) = config.get_tcp_user_timeout() {
        one.tcp_user_timeout(*timeout);
    }
    one.keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle());
    if let Some(interval) = config.get_keepalives_interval() {
        one.keepalives_interval(interval);
    }
    if let Some(retries) = config.get_keepalives_retries() {
        one.keepalives_retries(retries);
    }
    // Always a primary, whatever the URL says: jnhpd writes, and a standby
    // (the old primary behind a name the failover tool has not moved yet)
    // would serve reads it has not replayed. The connection is refused and
    // tried again (the next host, or the same name later).
    one.target_session_attrs(TargetSessionAttrs::ReadWrite)
        .channel_binding(config.get_channel_binding())
        .load_balance_hosts(config.get_load_balance_hosts());
    one
}

/// `host H port P` of the host of index `i`.
fn describe_host(config: &tokio_postgres::Config, i: usize) -> String {
    let host = match config.get_hosts().get(i) {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => config
            .get_hostaddrs()
            .get(i)
            .map(|a| a.to_string())
            .unwrap_or_else(|| "?".into()),
    };
    let ports = config.get_ports();
    let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    // A socket directory's path may hold any byte: escaped, since this
    // goes into log lines.
    format!(
        "host {} port {port}",
        crate::validator::escape_controls(&host)
    )
}

impl Target {
    /// Parses `url` (a `postgres://` URL or a keyword string). Errors never
    /// quote the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Target, PgError> {
        let (rest, ssl) = take_ssl_params(url).map_err(PgError::Url)?;
        let mode = match ssl.mode.as_deref() {
            None | Some("prefer") => SslMode::Prefer,
            Some("disable") => SslMode::Disable,
            Some("allow") => SslMode::Prefer,
            Some("require") => SslMode::Require,
            Some("verify-ca") => SslMode::VerifyCa,
            Some("verify-full") => SslMode::VerifyFull,
            Some(other) => {
                return Err(PgError::Url(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                )));
            }
        };
        let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
            PgError::Url(format!(
                "not a PostgreSQL URL or keyword string: {}",
                super::describe(&e)
            ))
        })?;
        config.ssl_mode(match mode {
            SslMode::Disable => WireSslMode::Disable,
            SslMode::Prefer => WireSslMode::Prefer,
            _ => WireSslMode::Require,
        });
        if config.get_hosts().is_empty() {
            // libpq's default: the local socket directory.
            config.host_path("/run/postgresql");
        }
        if config.get_user().is_none() {
            // libpq's default: the operating system user.
            if let Some(user) = nix::unistd::User::from_uid(nix::unistd::geteuid())
                .ok()
                .flatten()
            {
                config.user(user.name);
            }
        }
        let root = ssl.root_cert.map(PathBuf::from);
        let tls = super::tls::connector(mode, root.as_deref()).map_err(PgError::Url)?;
        let server = describe_server(&config);
        let count = config.get_hosts().len().max(config.get_hostaddrs().len());
        let hosts: Arc<[Endpoint]> = (0..count)
            .map(|i| Endpoint {
                config: single_host(&config, i),
                name: describe_host(&config, i),
            })
            .collect();
        // libpq's `connect_timeout` is per host and covers the whole
        // attempt: so is it here.
        let handshake_limit = match config.get_connect_timeout() {
            Some(timeout) => Some(*timeout),
            None if count > 1 => Some(HANDSHAKE_LIMIT),
            None => None,
        };
        Ok(Target {
            order: Arc::new(Mutex::new((0..count).collect())),
            connected: Arc::new(Mutex::new(describe_host(&config, 0))),
            hosts,
            handshake_limit,
            database: database(&config),
            tls,
            server,
        })
    }

    /// Bounds each host's connection attempt by `limit` as well (the
    /// engine passes a share of `request_timeout_ms`, so a host that never
    /// answers leaves time to try the next within one request).
    pub fn limit_handshake(&mut self, limit: Duration) {
        if self.hosts.len() > 1 {
            self.handshake_limit = Some(self.handshake_limit.map_or(limit, |l| l.min(limit)));
        }
    }

    /// `host H port P database D` of the host last connected to (of the
    /// first host before any connection): with several hosts, the one a
    /// front-end is on.
    pub fn connected(&self) -> String {
        let host = self
            .connected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        format!("{host} database {}", self.database)
    }

    /// `host H port P database D`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Opens one connection; its driver runs on a task of its own and
    /// ends with the client.
    pub async fn connect(
        &self,
        credentials: &Credentials,
    ) -> Result<tokio_postgres::Client, ConnectError> {
        let (client, connection) = self.connect_raw(credentials).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                log::debug!("postgres: connection ended: {}", super::describe(&err));
            }
        });
        Ok(client)
    }

    /// Opens one connection and hands back its driver, for a caller that
    /// wants its notifications.
    pub async fn connect_raw(
        &self,
        credentials: &Credentials,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, super::tls::TlsStream>,
        ),
        ConnectError,
    > {
        let password = credentials.password();
        let order = self.order.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut last_error = None;
        for i in order {
            let host = &self.hosts[i];
            let mut config = host.config.clone();
            if let Some(password) = &password {
                config.password(password);
            }
            let attempt = config.connect(self.tls.clone());
            let result = match self.handshake_limit {
                Some(limit) => match tokio::time::timeout(limit, attempt).await {
                    Ok(result) => result,
                    Err(_) => {
                        log::warn!(
                            "postgres: {} did not answer within {} ms; trying the next host",
                            host.name,
                            limit.as_millis()
                        );
                        self.tried(i, false);
                        continue;
                    }
                },
                None => attempt.await,
            };
            match result {
                Ok(connected) => {
                    self.tried(i, true);
                    *self.connected.lock().unwrap_or_else(|e| e.into_inner()) = host.name.clone();
                    return Ok(connected);
                }
                Err(err) => {
                    log::debug!("postgres: {}: {}", host.name, super::describe(&err));
                    self.tried(i, false);
                    last_error = Some(err);
                }
            }
        }
        // Every host was tried: the last one's error, or (every host
        // timed out) that none answered.
        Err(match (last_error, self.handshake_limit) {
            (Some(err), _) => ConnectError::Postgres(err),
            (None, limit) => ConnectError::NoAnswer {
                limit: limit.unwrap_or_default(),
            },
        })
    }

    /// Moves host `i` to the front of the order after a connection, or
    /// to the back after a failure.
    fn tried(&self, i: usize, ok: bool) {
        let mut order = self.order.lock().unwrap_or_else(|e| e.into_inner());
        order.retain(|&j| j != i);
        if ok {
            order.insert(0, i);
        } else {
            order.push(i);
        }
    }
}

/// `host H port P database D`; with several hosts, each `host H port P`
/// separated by `, `.
fn describe_server(config: &tokio_postgres::Config) -> String {
    let count = config
        .get_hosts()
        .len()
        .max(config.get_hostaddrs().len())
        .max(1);
    let hosts: Vec<String> = (0..count).map(|i| describe_host(config, i)).collect();
    format!("{} database {}", hosts.join(", "), database(config))
}

/// The database's name, as log lines show it (control characters
/// escaped).
fn database(config: &tokio_postgres::Config) -> String {
    crate::validator::escape_controls(config.get_dbname().or(config.get_user()).unwrap_or("?"))
}

/// The password, shared by every connection made: SIGHUP re-reads
/// `password_file` into it, and new connections use the new one.
#[derive(Clone, Default)]
pub struct Credentials {
    password: Arc<RwLock<Option<Vec<u8>>>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<not shown>)")
    }
}

impl Credentials {
    /// The password of `password_file` if set, else of the URL (kept in
    /// the parsed config), else `PGPASSWORD`.
    pub fn load(password_file: &Path, url: &str) -> Result<Credentials, PgError> {
        let credentials = Credentials::default();
        credentials.reload(password_file, url)?;
        Ok(credentials)
    }

    /// Reads the password again (SIGHUP). On error the old one stays.
    pub fn reload(&self, password_file: &Path, url: &str) -> Result<(), PgError> {
        let password = if password_file.as_os_str().is_empty() {
            let in_url = take_ssl_params(url)
                .ok()
                .and_then(|(rest, _)| tokio_postgres::Config::from_str(&rest).ok())
                .and_then(|c| c.get_password().map(<[u8]>::to_vec));
            in_url.or_else(|| std::env::var_os("PGPASSWORD").map(|p| p.into_encoded_bytes()))
        } else {
            Some(read_password(password_file)?)
        };
        *self.password.write().unwrap_or_else(|e| e.into_inner()) = password;
        Ok(())
    }

    fn password(&self) -> Option<Vec<u8>> {
        self.password
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The first line of `path` (a trailing newline is not part of it).
pub fn read_password(path: &Path) -> Result<Vec<u8>, PgError> {
    let bytes = crate::base::files::read(path, crate::base::files::PASSWORD)
        .map_err(|e| PgError::Password(e.to_string()))?;
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(PgError::Password(format!(
            "{}: the first line is empty",
            path.display()
        )));
    }
    Ok(line.to_vec())
}

/// `sslmode` and `sslrootcert` as given.
#[derive(Debug, Default, PartialEq)]
pub struct SslParams {
    pub mode: Option<String>,
    pub root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query or a keyword
/// string, returning the rest unchanged otherwise.
pub fn take_ssl_params(url: &str) -> Result<(String, SslParams), String> {
    let mut ssl = SslParams::default();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), ssl));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => ssl.mode = Some(percent_decode(value)?),
                "sslrootcert" => ssl.root_cert = Some(percent_decode(value)?),
                _ => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, ssl));
    }
    let mut rest = String::new();
    for (key, value, raw) in keywords(url)? {
        match key.as_str() {
            "sslmode" => ssl.mode = Some(value),
            "sslrootcert" => ssl.root_cert = Some(value),
            _ => {
                rest.push_str(raw);
                rest.push(' ');
            }
        }
    }
    Ok((rest.trim_end().to_string(), ssl))
}

/// `url` with a relative `sslrootcert` joined to `base` (the config file's
/// directory, as every relative path in the config is), so it names the
/// same file whatever the working directory (`/` under `--daemon`). An
/// absolute or absent `sslrootcert` leaves `url` as it is.
pub fn root_cert_relative_to(url: &str, base: &Path) -> Result<String, String> {
    let (_, ssl) = take_ssl_params(url)?;
    let Some(root) = ssl.root_cert else {
        return Ok(url.to_string());
    };
    if root.is_empty() || Path::new(&root).is_absolute() {
        return Ok(url.to_string());
    }
    let joined = base.join(&root);
    let joined = joined
        .to_str()
        .ok_or("the config file's directory is not UTF-8: cannot resolve sslrootcert")?;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((start, query)) = url.split_once('?') else {
            return Ok(url.to_string());
        };
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some(("sslrootcert", _)) => format!("sslrootcert={}", percent_encode(joined)),
                _ => pair.to_string(),
            })
            .collect();
        return Ok(format!("{start}?{}", query.join("&")));
    }
    let quoted = joined.replace('\\', "\\\\").replace('\'', "\\'");
    Ok(keywords(url)?
        .into_iter()
        .map(|(key, _, raw)| match key.as_str() {
            "sslrootcert" => format!("sslrootcert='{quoted}'"),
            _ => raw.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" "))
}

/// `%`-escapes all but the bytes a URL query and a path may hold as they are.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the URL's query")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL's query is not UTF-8".to_string())
}

/// The `key = value` pairs of a keyword string (values may be quoted with
/// `'…'` and `\` escapes), each with the text it was written as.
fn keywords(text: &str) -> Result<Vec<(String, String, &str)>, String> {
    let mut pairs = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == bytes.len() {
            return Ok(pairs);
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = text[start..i].to_string();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes.get(i) != Some(&b'=') {
            return Err(format!("keyword {key:?} has no value"));
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = Vec::new();
        if bytes.get(i) == Some(&b'\'') {
            i += 1;
            loop {
                match bytes.get(i) {
                    None => return Err(format!("the value of {key:?} has no closing quote")),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < bytes.len() => {
                        value.push(bytes[i + 1]);
                        i += 2;
                    }
                    Some(&b) => {
                        value.push(b);
                        i += 1;
                    }
                }
            }
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                value.push(bytes[i]);
                i += 1;
            }
        }
        let value = String::from_utf8(value).map_err(|_| format!("{key:?} is not UTF-8"))?;
        pairs.push((key, value, &text[start..i]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_sslrootcert_is_joined_to_the_config_directory() {
        let base = Path::new("/etc/jnhp dir");
        assert_eq!(
            root_cert_relative_to(
                "postgres://u@h/d?sslmode=verify-ca&sslrootcert=ca.pem&x=1",
                base
            )
            .unwrap(),
            "postgres://u@h/d?sslmode=verify-ca&sslrootcert=/etc/jnhp%20dir/ca.pem&x=1"
        );
        assert_eq!(
            root_cert_relative_to("host=h sslrootcert=ca.pem user=u", base).unwrap(),
            "host=h sslrootcert='/etc/jnhp dir/ca.pem' user=u"
        );
        for unchanged in ["postgres://u@h/d?sslrootcert=/abs/ca.pem", "host=h user=u"] {
            assert_eq!(root_cert_relative_to(unchanged, base).unwrap(), unchanged);
        }
        // A quote or a backslash in the directory survives the quoting.
        let url = root_cert_relative_to("host=h sslrootcert=ca.pem", Path::new("/a'b\\c")).unwrap();
        let (_, ssl) = take_ssl_params(&url).unwrap();
        assert_eq!(ssl.root_cert.as_deref(), Some("/a'b\\c/ca.pem"));
    }

    #[test]
    fn ssl_params_leave_urls_and_keyword_strings() {
        let (rest, ssl) = take_ssl_params(
            "postgres://u:pw@db:5433/names?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:pw@db:5433/names?application_name=x");
        assert_eq!(ssl.mode.as_deref(), Some("verify-full"));
        assert_eq!(ssl.root_cert.as_deref(), Some("/etc/ca.pem"));

        let (rest, ssl) =
            take_ssl_params("host=/run/postgresql sslmode = require password='a b\\'c' dbname=j")
                .unwrap();
        assert_eq!(rest, "host=/run/postgresql password='a b\\'c' dbname=j");
        assert_eq!(ssl.mode.as_deref(), Some("require"));
        assert!(take_ssl_params("host='unterminated").is_err());
    }

    #[test]
    fn errors_never_quote_the_url() {
        for url in [
            "postgres://u:s3cret@db/x?sslmode=bogus",
            "host=db password=s3cret bogus_key=1",
            "postgres://u:s3cret@db:notaport/x",
        ] {
            let Err(err) = Target::parse(url) else {
                panic!("{url} parsed");
            };
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn servers_are_described_without_passwords() {
        let target = Target::parse("postgres://u:s3cret@db.example:5433/names").unwrap();
        assert_eq!(target.server(), "host db.example port 5433 database names");
        let target = Target::parse("host=/tmp/pg port=6000 user=jn").unwrap();
        assert_eq!(target.server(), "host /tmp/pg port 6000 database jn");
        let target = Target::parse("postgres://u@a:1,b:2/names").unwrap();
        assert_eq!(
            target.server(),
            "host a port 1, host b port 2 database names"
        );
        assert_eq!(target.connected(), "host a port 1 database names");
    }
}
