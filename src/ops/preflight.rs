//! The checks of a loaded config that need the network or TLS: every
//! listen name resolves, the TLS certificate and key load (and match),
//! the PostgreSQL URL's TLS settings load. `config` does no such work
//! (it describes; it does not connect); the binary runs these checks
//! wherever it loads a config — `--check-config`, the start, SIGHUP —
//! so a file they refuse is refused there as before, and each error
//! names the file, the line and the key like any config error.

use crate::ops::config::{Config, ConfigError, ListenAddr};

/// Runs every check, in the order the keys' sections are listed in
/// docs/configuration.md; the first failure is the error.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    let lists: [(&str, &[ListenAddr]); 3] = [
        ("server.listen", &config.server.listen),
        ("tls.listen", config.tls_listen()),
        ("admin.listen", &config.admin.listen),
    ];
    for (key, list) in lists {
        for addr in list {
            addr.resolve()
                .map_err(|reason| config.places.error(key, reason))?;
        }
    }
    if let Some(pg) = config.storage.postgres() {
        crate::storage::postgres::Target::parse(&pg.url).map_err(|e| {
            let reason = match e {
                crate::storage::postgres::PgError::Url(reason) => reason,
                other => other.to_string(),
            };
            config.places.error("storage.postgres.url", reason)
        })?;
    }
    if let Some(tls) = &config.tls {
        tls.server_config()
            .map_err(|e| config.places.error(&format!("tls.{}", e.key), &e))?;
    }
    Ok(())
}
