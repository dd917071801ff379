//! Store validators: every STORE of an absent name passes a chain of them.
//!
//! A validator is one object-safe async trait so that an inline check, a
//! blocking function on tokio's blocking pool and an external program all
//! look the same to the connection. Validation always runs in the
//! connection's task, never in the store actor, so a slow validator delays
//! only the connection that is waiting on it.
//!
//! A library user checks STOREs with code of their own by implementing
//! [`Validator`] and adding it with
//! [`Server::builder`](crate::server::Server::builder) (or wrapping it in
//! a [`Link`] for [`Server::start_with`](crate::server::Server::start_with)):
//! their links run before the configured ones and stay across reloads.

pub(crate) mod blocking;
mod coalesce;
pub(crate) mod function;
pub(crate) mod helper;
mod limited;
pub(crate) mod process;
pub mod reaper;
pub mod spec;

use std::fmt;
use std::sync::Arc;

use std::sync::atomic::Ordering::Relaxed;

use async_trait::async_trait;

pub use crate::metrics::Cause;
use crate::metrics::{ValidatorStats, VerdictKind};

pub use limited::Limits;
pub use spec::{Check, OnFailure, ValidatorSpec};

/// The environment variables jnhpd takes secrets from (`PGPASSWORD`, the
/// PostgreSQL password: see `postgres::target`). Validator programs get
/// jnhpd's environment without them: a validator has no business with the
/// database password, and a program's environment is easily leaked (`ps e`,
/// a core dump, a debug log of its own).
pub(crate) const WITHHELD_VARS: &[&str] = &["PGPASSWORD"];

/// Takes the secrets jnhpd consumed out of a validator program's
/// environment ([`WITHHELD_VARS`]); the rest of jnhpd's environment stays.
pub(crate) fn withhold_secrets(command: &mut tokio::process::Command) {
    for var in WITHHELD_VARS {
        command.env_remove(var);
    }
}

/// `text` with every control character (C0 including CR, LF, ESC and NUL,
/// DEL, C1) and the Unicode line and paragraph separators written as
/// `\x0a`-style escapes (`\u{2028}` beyond one byte). What a validator
/// program writes (its stderr, its bad replies) reaches the log through
/// this, so that it is always part of one log line and cannot forge
/// lines of its own or drive a terminal.
pub(crate) fn escape_controls(text: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            let code = u32::from(c);
            // Writing to a String cannot fail.
            let _ = if code < 0x100 {
                write!(out, "\\x{code:02x}")
            } else {
                write!(out, "\\u{{{code:x}}}")
            };
        } else {
            out.push(c);
        }
    }
    out
}

/// Who sent a STORE: the client's address and, on a mutual-TLS
/// connection, its certificate's subject (RFC 4514). Process validators
/// get them as `JNHP_PEER` and `JNHP_PEER_CERT_SUBJECT`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The client's address, if known.
    pub addr: Option<std::net::SocketAddr>,
    /// The subject of the client's TLS certificate (mutual TLS), in RFC
    /// 4514 form.
    pub cert_subject: Option<String>,
}

/// A validator's answer about one STORE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The STORE may go ahead.
    Allow,
    /// The STORE is refused (`RARGH!`).
    Deny,
    /// The validator could not decide (crash, timeout, malformed answer):
    /// why, and a message for the log. The link's [`OnFailure`] policy
    /// turns it into allow or deny.
    Failure(Cause, String),
}

/// `true` allows, `false` denies: a check that is a yes-or-no question
/// answers with `.into()`.
impl From<bool> for Verdict {
    fn from(allowed: bool) -> Verdict {
        if allowed {
            Verdict::Allow
        } else {
            Verdict::Deny
        }
    }
}

/// A check every STORE must pass. Library users may implement it.
#[async_trait]
pub trait Validator: Send + Sync + fmt::Debug {
    /// Judges a STORE of `value` under `name`, sent by `peer`.
    async fn validate(&self, name: &[u8], value: &[u8], peer: &Peer) -> Verdict;

    /// Judges the STORE synchronously, if this validator can do so cheaply
    /// and without side effects (`None`: it cannot). Validators that can are
    /// run as the request is parsed, so a STORE that passes them all is
    /// stored in the same store-actor round trip as a STORE with no
    /// validators at all.
    fn check_now(&self, _name: &[u8], _value: &[u8]) -> Option<Verdict> {
        None
    }

    /// A short description for logs (`regex name ^[a-z]+$`, a program path).
    fn describe(&self) -> String;

    /// Stops what the validator keeps running (helper processes), waiting
    /// for it to be gone. Called once when jnhpd shuts down; validators
    /// that keep nothing running need not implement it.
    async fn shutdown(&self) {}
}

/// One validator of a chain with its failure policy.
#[derive(Debug, Clone)]
pub struct Link {
    /// The check.
    pub validator: Arc<dyn Validator>,
    /// What a failure to decide (not a denial) makes of the STORE.
    pub on_failure: OnFailure,
    /// The table it was built from, if it came from the config: a reload
    /// that leaves the table unchanged keeps this very validator (and so
    /// its `max_concurrent` slots, its running count and its helpers).
    spec: Option<ValidatorSpec>,
    /// Its name (for logs and metrics) and figures, kept with it.
    pub(crate) stats: Arc<ValidatorStats>,
}

impl Link {
    /// A link for a validator built outside the config (library users),
    /// called `name` in logs and metrics.
    pub fn new(name: &str, validator: Arc<dyn Validator>, on_failure: OnFailure) -> Link {
        Link {
            validator,
            on_failure,
            spec: None,
            stats: ValidatorStats::new(name.to_string(), "library"),
        }
    }
}

impl Link {
    /// Whether a verdict already counted and logged lets the STORE go on.
    fn decide_quietly(&self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Allow => true,
            Verdict::Deny => false,
            Verdict::Failure(..) => self.on_failure == OnFailure::Allow,
        }
    }

    /// Whether the verdict lets the STORE go on: failures are logged with
    /// the validator, the name and the cause, then decided by `on_failure`.
    fn decide(&self, name: &[u8], verdict: Verdict) -> bool {
        let counted = match &verdict {
            Verdict::Allow => VerdictKind::Allow,
            Verdict::Deny => VerdictKind::Deny,
            Verdict::Failure(cause, _) => {
                self.stats.failures[*cause].fetch_add(1, Relaxed);
                VerdictKind::Failure
            }
        };
        self.stats.verdicts[counted].fetch_add(1, Relaxed);
        match verdict {
            Verdict::Allow => true,
            Verdict::Deny => false,
            Verdict::Failure(_, cause) => {
                log::warn!(
                    "validator {} ({}) failed for name {:?}: {}; {}",
                    self.stats.name,
                    self.validator.describe(),
                    String::from_utf8_lossy(name),
                    escape_controls(&cause),
                    match self.on_failure {
                        OnFailure::Reject => "rejecting the STORE",
                        OnFailure::Allow => "allowing the STORE (on_failure = \"allow\")",
                    }
                );
                self.on_failure == OnFailure::Allow
            }
        }
    }
}

/// The validator a config table describes; `stats` gets its queue and
/// helper figures.
fn build(check: &Check, stats: &Arc<ValidatorStats>) -> Result<Arc<dyn Validator>, String> {
    Ok(match check {
        Check::MaxBytes { max } => Arc::new(function::MaxBytes { max: *max }),
        Check::Regex { field, pattern } => Arc::new(
            function::RegexMatch::new(*field, pattern)
                .map_err(|e| format!("regex {pattern:?}: {e}"))?,
        ),
        Check::Denylist { path } => {
            let list = blocking::Denylist::open(path)
                .map_err(|e| format!("denylist {}: {e}", path.display()))?;
            Arc::new(blocking::Blocking::new(
                format!("denylist {}", path.display()),
                move |_name, value| list.judge(value),
            ))
        }
        Check::Process(spec) => Arc::new(process::Process::new(spec.clone(), stats.clone())),
        Check::Helper(spec) => Arc::new(helper::HelperPool::new(spec.clone(), stats.clone())),
    })
}

/// Validators run in order; the first "no" wins. An empty chain allows every
/// STORE (and lets the store actor answer STOREs without a round trip back
/// to the connection).
#[derive(Debug, Clone, Default)]
pub struct ValidatorChain {
    links: Vec<Link>,
}

/// The outcome of the chain's synchronous prefix ([`ValidatorChain::check_inline`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inline {
    /// A validator said no: `RARGH!`.
    Denied,
    /// Every validator of the chain allowed it.
    Allowed,
    /// The synchronous validators allowed it; asynchronous ones remain.
    Pending,
}

impl ValidatorChain {
    /// A chain running `links` in order; the first denial decides.
    pub fn new(links: Vec<Link>) -> Self {
        ValidatorChain { links }
    }

    /// This chain with `first` run before its own links: a library
    /// user's validators, put in front of the configured ones.
    pub(crate) fn after(mut self, first: &[Link]) -> Self {
        self.links.splice(0..0, first.iter().cloned());
        self
    }

    /// Builds the chain a config describes. A table equal to one of
    /// `previous` (the chain a reload replaces) keeps that validator
    /// rather than starting a new one. Fails only if a file checked at
    /// load time has become unreadable since.
    pub fn from_specs(
        specs: &[ValidatorSpec],
        previous: Option<&ValidatorChain>,
    ) -> Result<Self, String> {
        let mut reusable: Vec<&Link> = previous.map_or(Vec::new(), |p| p.links.iter().collect());
        let links = specs
            .iter()
            .map(|spec| {
                if let Some(i) = reusable.iter().position(|l| l.spec.as_ref() == Some(spec)) {
                    return Ok(reusable.remove(i).clone());
                }
                let stats = ValidatorStats::new(spec.name.clone(), spec.check.kind());
                Ok(Link {
                    validator: build(&spec.check, &stats)?,
                    on_failure: spec.on_failure,
                    spec: Some(spec.clone()),
                    stats,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(ValidatorChain { links })
    }

    /// Shuts every validator of the chain down (helpers: stdin closed,
    /// up to 2 s, then killed), all at once: the futures are polled side
    /// by side on the current task, so every helper gets its stdin closed
    /// at once and the 2 s run concurrently.
    pub async fn shutdown(&self) {
        let all = self.links.iter().map(|l| l.validator.shutdown());
        futures_util::future::join_all(all).await;
    }

    /// Whether the chain has no validators.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// How many validators the chain has.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Every validator's figures, in chain order.
    pub fn stats(&self) -> Vec<Arc<ValidatorStats>> {
        self.links.iter().map(|l| l.stats.clone()).collect()
    }

    /// Whether every validator allows the STORE, running the chain in
    /// order (the first "no" wins). Failures are logged with the validator,
    /// the name and the cause, then decided by `on_failure`.
    pub async fn allows(&self, name: &[u8], value: &[u8], peer: &Peer) -> bool {
        for link in &self.links {
            let allowed = match link.validator.check_now(name, value) {
                // Counted when the request was parsed (check_inline).
                Some(verdict) => link.decide_quietly(verdict),
                None => {
                    let stats = &link.stats;
                    stats.in_flight.fetch_add(1, Relaxed);
                    let started = std::time::Instant::now();
                    let verdict = link.validator.validate(name, value, peer).await;
                    stats.duration.observe_duration(started.elapsed(), 1);
                    stats.in_flight.fetch_sub(1, Relaxed);
                    link.decide(name, verdict)
                }
            };
            if !allowed {
                return false;
            }
        }
        true
    }

    /// Runs the chain's leading validators that answer synchronously, in
    /// order, as a request is parsed. `Pending` means asynchronous
    /// validators remain: the STORE then goes through [`allows`](Self::allows)
    /// (which runs the cheap, side-effect-free prefix again), so the chain's
    /// order, and which validators run after a "no", never change.
    pub(crate) fn check_inline(&self, name: &[u8], value: &[u8]) -> Inline {
        for link in &self.links {
            match link.validator.check_now(name, value) {
                None => return Inline::Pending,
                Some(verdict) => {
                    if !link.decide(name, verdict) {
                        return Inline::Denied;
                    }
                }
            }
        }
        Inline::Allowed
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            super::escape_controls("a\r\nb\x1b[31m\0c\u{85}d\u{2028}\\é"),
            "a\\x0d\\x0ab\\x1b[31m\\x00c\\x85d\\u{2028}\\é"
        );
    }
}
