//! The admin listener's `/status` document (docs/observability.md), as
//! one typed tree: jnhpd builds a [`Status`] and serializes it, `jnhp
//! stats` deserializes the same type. One definition keeps the writer and
//! the reader from drifting apart, which string keys on both sides
//! allowed.
//!
//! Pure data and serde derives: no I/O, no dependency beyond serde, so
//! the command does not compile the daemon and the daemon does not
//! compile the command.
//!
//! The JSON is an object with these keys (fields below, in the order they
//! are written):
//!
//! ```json
//! {"version":"0.1.0","uptime_seconds":3605,"listen":["127.0.0.1:8111"],
//!  "store":"datafile","names":1000000,"connections":12,
//!  "requests":{"store":1200311,"exists":88012,"get":9120833},"errors":3,
//!  "ready":true,
//!  "validators":[{"name":"gate","kind":"process",
//!                 "verdicts":{"allow":1200001,"deny":307,"failure":3},
//!                 "in_flight":0}]}
//! ```
//!
//! A front-end on PostgreSQL adds `"postgres":{"server":"host db1 port
//! 5432 database jnhp","reachable":true,"writable":true,"replication":
//! "sync","standbys":1,"sync_standbys":1,"timeline":3,"failovers":1}`.
//!
//! Reading is tolerant where a key is absent in some modes (`names`
//! without a local store), of absent keys `jnhp stats` does not show
//! (`validators`, `in_flight`), and of keys it does not know (a newer
//! jnhpd may add some): `jnhp stats` keeps working against it.

use serde::{Deserialize, Serialize};

/// A running jnhpd's figures at one moment: what `GET /status` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The jnhpd version (`CARGO_PKG_VERSION`), as `jnhpd --version` and
    /// the `jnhpd_build_info` metric give it.
    pub version: String,
    /// Whole seconds since jnhpd started.
    pub uptime_seconds: u64,
    /// The JNHP listen addresses, as configured; TLS ones prefixed with
    /// `tls ` (an admin address is never among them).
    pub listen: Vec<String>,
    /// The kind of store: `memory`, `datafile` or `postgres`. A string
    /// rather than an enum, so that a reader older than the daemon still
    /// reads a kind it does not know.
    pub store: String,
    /// Names in the local store; absent for a namespace shared on
    /// PostgreSQL (no front-end knows the count without asking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<u64>,
    /// Open client connections now. Signed as the gauge behind it is: a
    /// close counted just before its open is briefly below zero rather
    /// than wrapping.
    pub connections: i64,
    /// Requests answered so far, by command (every outcome, `ERROR`s
    /// included).
    pub requests: Requests,
    /// `ERROR` replies so far, every reason together.
    pub errors: u64,
    /// Whether `/readyz` answers 200: not draining, PostgreSQL reachable,
    /// the data file writable.
    pub ready: bool,
    /// The validators of the chain in force, in chain order; empty when
    /// there are none.
    #[serde(default)]
    pub validators: Vec<Validator>,
    /// What the PostgreSQL namespace does for this front-end; absent for
    /// a local store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<Postgres>,
}

/// A front-end's view of its PostgreSQL (docs/postgres.md, "Seeing
/// replication and failovers").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Postgres {
    /// `host H port P database D`: the server connected to (with several
    /// hosts in the URL, the one found writable).
    pub server: String,
    /// Whether statements are answered.
    pub reachable: bool,
    /// Whether writes commit durably (STOREs fail while they do not).
    pub writable: bool,
    /// The primary's replication state: `sync`, `waiting` (commits wait
    /// for standbys that are not there), `async`, `no_standby` or
    /// `unknown` (a string, as [`Status::store`] is).
    pub replication: String,
    /// Standbys streaming from the primary; absent when the role may not
    /// see them (grant it `pg_monitor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standbys: Option<i64>,
    /// Of them, those commits wait for; absent when the role may not see
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_standbys: Option<i64>,
    /// The primary's timeline (0 until read).
    pub timeline: i64,
    /// Rises of the timeline seen since jnhpd started: failovers and
    /// switchovers.
    pub failovers: u64,
}

/// Requests answered so far, by command.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requests {
    /// `STORE`s.
    pub store: u64,
    /// `EXISTS`es.
    pub exists: u64,
    /// `GET`s.
    pub get: u64,
}

/// One validator of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validator {
    /// Its name (`validators.NAME` in the configuration).
    pub name: String,
    /// Its kind: `function`, `blocking`, `process` or `helper` (a string
    /// for the reason [`Status::store`] is one).
    pub kind: String,
    /// Its verdicts so far.
    pub verdicts: Verdicts,
    /// Validations running in it now. Read as 0 when absent: `jnhp stats`
    /// does not show it, and need not refuse a document without it.
    #[serde(default)]
    pub in_flight: i64,
}

/// A validator's verdicts so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdicts {
    /// STOREs it let through.
    pub allow: u64,
    /// STOREs it refused.
    pub deny: u64,
    /// Times it gave no verdict (timeout, crash, malformed answer...):
    /// its `on_failure` decided.
    pub failure: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            version: "0.1.0".into(),
            uptime_seconds: 3605,
            listen: vec!["127.0.0.1:8111".into(), "tls [::1]:8112".into()],
            store: "datafile".into(),
            names: Some(1_000_000),
            connections: 12,
            requests: Requests {
                store: 1_200_311,
                exists: 88_012,
                get: 9_120_833,
            },
            errors: 3,
            ready: true,
            validators: vec![Validator {
                name: "gate".into(),
                kind: "process".into(),
                verdicts: Verdicts {
                    allow: 1_200_001,
                    deny: 307,
                    failure: 3,
                },
                in_flight: 2,
            }],
            postgres: None,
        }
    }

    /// What is written reads back as the same value, with `names` and
    /// without, with `postgres` and without.
    #[test]
    fn a_status_round_trips() {
        for names in [Some(7), None] {
            let status = Status { names, ..sample() };
            let text = serde_json::to_string(&status).unwrap();
            assert_eq!(text.contains("\"names\""), names.is_some(), "{text}");
            assert!(!text.contains("postgres"), "{text}");
            let back: Status = serde_json::from_str(&text).unwrap();
            assert_eq!(back, status);
        }
        for sync_standbys in [Some(1), None] {
            let postgres = Postgres {
                server: "host db1 port 5432 database jnhp".into(),
                reachable: true,
                writable: false,
                replication: "waiting".into(),
                standbys: sync_standbys,
                sync_standbys,
                timeline: 3,
                failovers: 1,
            };
            let status = Status {
                names: None,
                store: "postgres".into(),
                postgres: Some(postgres),
                ..sample()
            };
            let text = serde_json::to_string(&status).unwrap();
            assert_eq!(text.contains("sync_standbys"), sync_standbys.is_some());
            let back: Status = serde_json::from_str(&text).unwrap();
            assert_eq!(back, status);
        }
    }

    /// A document as jnhpd wrote it before this type existed (built with
    /// `serde_json::json!`: keys sorted) parses, and the type writes the
    /// same keys, nesting and value types back.
    #[test]
    fn the_documents_of_the_untyped_writer_parse() {
        let old = r#"{"connections":1,"errors":0,"listen":["127.0.0.1:40123"],"names":1,"ready":true,"requests":{"exists":0,"get":0,"store":1},"store":"memory","uptime_seconds":0,"validators":[{"in_flight":0,"kind":"process","name":"process-0","verdicts":{"allow":1,"deny":0,"failure":0}}],"version":"0.1.0"}"#;
        let status: Status = serde_json::from_str(old).unwrap();
        assert_eq!(status.names, Some(1));
        assert_eq!(status.requests.store, 1);
        assert_eq!(status.validators[0].name, "process-0");
        assert_eq!(status.validators[0].verdicts.allow, 1);
        let again: serde_json::Value = serde_json::to_value(&status).unwrap();
        let old: serde_json::Value = serde_json::from_str(old).unwrap();
        assert_eq!(again, old);
        // A shared namespace (no `names`) with no validators.
        let shared = r#"{"connections":0,"errors":2,"listen":["tls 0.0.0.0:8111"],"ready":false,"requests":{"exists":5,"get":6,"store":7},"store":"postgres","uptime_seconds":99,"validators":[],"version":"0.1.0"}"#;
        let status: Status = serde_json::from_str(shared).unwrap();
        assert_eq!(status.names, None);
        assert!(!status.ready && status.validators.is_empty());
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            serde_json::from_str::<serde_json::Value>(shared).unwrap()
        );
    }

    /// A key a newer jnhpd adds is ignored; `validators` may be absent.
    #[test]
    fn unknown_keys_are_ignored_and_absent_lists_are_empty() {
        let newer = r#"{"version":"9.9.9","uptime_seconds":1,"listen":[],"store":"elsewhere","connections":0,"requests":{"store":0,"exists":0,"get":0,"put":4},"errors":0,"ready":true,"shiny":{"new":1}}"#;
        let status: Status = serde_json::from_str(newer).unwrap();
        assert_eq!(status.store, "elsewhere");
        assert!(status.validators.is_empty());
    }

    /// A document missing a key every jnhpd writes is not a status.
    #[test]
    fn a_document_without_the_figures_is_refused() {
        assert!(serde_json::from_str::<Status>(r#"{"version":"1"}"#).is_err());
        assert!(serde_json::from_str::<Status>("[]").is_err());
    }
}
