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
pub mod decisions;
pub(crate) mod deny_cache;
pub(crate) mod function;
pub(crate) mod helper;
mod limited;
pub(crate) mod process;
pub mod reaper;
pub mod spec;
pub(crate) mod wasm;

use std::fmt;
use std::sync::Arc;

use std::sync::atomic::Ordering::Relaxed;

use async_trait::async_trait;

pub use crate::metrics::Cause;
use crate::metrics::{ValidatorStats, VerdictKind};

pub use limited::Limits;
pub use spec::{Check, Mode, OnFailure, ValidatorSpec};

use decisions::{DecisionLog, Step};
use deny_cache::{DenyCache, StoreDigest};

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

    /// Judges the STORE synchronously, if this validator can do so now
    /// and cheaply: within microseconds, a millisecond at the very most,
    /// for it runs on the thread that serves connections (`None`: it
    /// cannot, and [`validate`](Self::validate) judges the STORE).
    /// Validators that can are run as the request is parsed, so a STORE
    /// that passes them all is stored in the same store-actor round trip
    /// as a STORE with no validators at all. The chain calls one of the
    /// two once per STORE; a `None` is not counted as a verdict.
    fn check_now(&self, _name: &[u8], _value: &[u8], _peer: &Peer) -> Option<Verdict> {
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
    /// Whether its refusals refuse.
    mode: Mode,
    /// The refusals it gave recently, if it has a deny cache.
    deny_cache: Option<Arc<DenyCache>>,
}

impl Link {
    /// The validator's synchronous verdict, if it gives one. A library
    /// user's `check_now` that panics is a failure of its STORE (decided
    /// by `on_failure`), as a panicking `validate` is: it runs on the
    /// connection's task while the request is parsed, and its unwinding
    /// closed the connection without a reply.
    fn check_now(&self, name: &[u8], value: &[u8], peer: &Peer) -> Option<Verdict> {
        let check = std::panic::AssertUnwindSafe(|| self.validator.check_now(name, value, peer));
        std::panic::catch_unwind(check).unwrap_or_else(|_| {
            Some(Verdict::Failure(
                Cause::NoVerdict,
                "its check_now panicked".into(),
            ))
        })
    }

    /// [`check_now`](Self::check_now) and the time it took.
    fn check_now_timed(
        &self,
        name: &[u8],
        value: &[u8],
        peer: &Peer,
    ) -> Option<(Verdict, std::time::Duration)> {
        let started = std::time::Instant::now();
        let verdict = self.check_now(name, value, peer)?;
        Some((verdict, started.elapsed()))
    }

    /// A link for a validator built outside the config (library users),
    /// called `name` in logs and metrics.
    pub fn new(name: &str, validator: Arc<dyn Validator>, on_failure: OnFailure) -> Link {
        Link {
            validator,
            on_failure,
            spec: None,
            stats: ValidatorStats::new(name.to_string(), "library"),
            mode: Mode::Enforce,
            deny_cache: None,
        }
    }
}

/// What the chain needs of one STORE beyond its bytes, worked out once
/// and only if needed: the digest the deny caches are keyed by (name,
/// value and peer), and the
/// steps the decision log records.
struct Judging<'a> {
    name: &'a [u8],
    value: &'a [u8],
    /// Who sent it: the deny caches key on it too.
    peer: &'a Peer,
    digest: Option<StoreDigest>,
    /// `Some` when a decision log is kept.
    steps: Option<Vec<Step>>,
}

impl Judging<'_> {
    fn digest(&mut self) -> StoreDigest {
        *self
            .digest
            .get_or_insert_with(|| deny_cache::digest(self.name, self.value, self.peer))
    }
}

impl Link {
    /// If the link's deny cache holds a refusal of this STORE, whether
    /// that lets the STORE go on (by the mode): it is counted as a denial
    /// and the validator is not run. `None`: the validator must run.
    fn cached_denial(&self, judging: &mut Judging) -> Option<bool> {
        let cache = self.deny_cache.as_ref()?;
        if !cache.refused(&judging.digest()) {
            return None;
        }
        self.stats.verdicts[VerdictKind::Deny].fetch_add(1, Relaxed);
        if let Some(steps) = &mut judging.steps {
            steps.push(Step::new(
                &self.stats.name,
                self.mode,
                "cached_deny",
                None,
                std::time::Duration::ZERO,
            ));
        }
        Some(self.enforce(judging.name, false))
    }

    /// Whether a refusal (`allowed` false) refuses: in `warn` and
    /// `dryrun` mode it is counted (and, in `warn`, logged), not enforced.
    fn enforce(&self, name: &[u8], allowed: bool) -> bool {
        if allowed || self.mode == Mode::Enforce {
            return allowed;
        }
        self.stats.not_enforced.fetch_add(1, Relaxed);
        if self.mode == Mode::Warn {
            log::warn!(
                "validator {} (mode = \"warn\") would refuse the STORE of name {:?}",
                self.stats.name,
                String::from_utf8_lossy(name)
            );
        }
        true
    }

    /// Whether the verdict lets the STORE go on: failures are logged with
    /// the validator, the name and the cause, then decided by `on_failure`;
    /// refusals are decided by the mode. A denial goes to the deny cache.
    fn decide(&self, judging: &mut Judging, verdict: Verdict, took: std::time::Duration) -> bool {
        let name = judging.name;
        let counted = match &verdict {
            Verdict::Allow => VerdictKind::Allow,
            Verdict::Deny => VerdictKind::Deny,
            Verdict::Failure(cause, _) => {
                self.stats.failures[*cause].fetch_add(1, Relaxed);
                VerdictKind::Failure
            }
        };
        self.stats.verdicts[counted].fetch_add(1, Relaxed);
        if let Some(steps) = &mut judging.steps {
            let cause = match &verdict {
                Verdict::Failure(cause, _) => Some(crate::metrics::cause_label(*cause)),
                _ => None,
            };
            steps.push(Step::new(
                &self.stats.name,
                self.mode,
                counted.label(),
                cause,
                took,
            ));
        }
        let allowed = match verdict {
            Verdict::Allow => true,
            Verdict::Deny => {
                if let Some(cache) = &self.deny_cache {
                    cache.remember(judging.digest());
                }
                false
            }
            Verdict::Failure(_, cause) => {
                let open = self.on_failure == OnFailure::Allow;
                log::warn!(
                    "validator {} ({}) failed for name {:?}: {}; {}",
                    self.stats.name,
                    self.validator.describe(),
                    String::from_utf8_lossy(name),
                    escape_controls(&cause),
                    match (open, self.mode) {
                        (true, _) => "allowing the STORE (on_failure = \"allow\")",
                        (false, Mode::Enforce) => "rejecting the STORE",
                        (false, _) => "it would reject the STORE (not enforced)",
                    }
                );
                if open {
                    self.stats.failed_open.fetch_add(1, Relaxed);
                }
                open
            }
        };
        self.enforce(name, allowed)
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
        Check::Wasm(spec) => Arc::new(wasm::Wasm::new(spec, stats.clone())?),
    })
}

/// Validators run in order; the first "no" wins. An empty chain allows every
/// STORE (and lets the store actor answer STOREs without a round trip back
/// to the connection).
#[derive(Debug, Clone, Default)]
pub struct ValidatorChain {
    links: Vec<Link>,
    /// The most the whole chain may take for one STORE.
    deadline: Option<std::time::Duration>,
    /// Where each validated STORE is recorded, if anywhere.
    decision_log: Option<Arc<DecisionLog>>,
}

/// The outcome of the chain's synchronous prefix ([`ValidatorChain::check_inline`]).
#[derive(Debug)]
pub(crate) enum Inline {
    /// A validator said no: `RARGH!`.
    Denied,
    /// Every validator of the chain allowed it.
    Allowed,
    /// The leading validators allowed it; the rest go on from here.
    Pending(Resume),
}

impl ValidatorChain {
    /// A chain running `links` in order; the first denial decides.
    pub fn new(links: Vec<Link>) -> Self {
        ValidatorChain {
            links,
            ..Default::default()
        }
    }

    /// This chain with `first` run before its own links: a library
    /// user's validators, put in front of the configured ones.
    ///
    /// Fails, naming it, when a name is used twice: each validator's
    /// figures are one series in `/metrics`, and a scrape with two of the
    /// same labels is refused by Prometheus.
    pub(crate) fn after(mut self, first: &[Link]) -> Result<Self, String> {
        for (i, link) in first.iter().enumerate() {
            let name = &link.stats.name;
            if self.links.iter().any(|l| &l.stats.name == name) {
                return Err(format!(
                    "validator {name:?} is both a library validator and a configured one: give them different names"
                ));
            }
            if first[..i].iter().any(|l| &l.stats.name == name) {
                return Err(format!(
                    "validator {name:?}: two library validators have this name"
                ));
            }
        }
        self.links.splice(0..0, first.iter().cloned());
        Ok(self)
    }

    /// Builds the chain a config describes. A table equal to one of
    /// `previous` (the chain a reload replaces) keeps that validator
    /// rather than starting a new one. Fails only if a file checked at
    /// load time has become unreadable since.
    ///
    /// A kept validator takes the new table's `mode` and `on_failure`; it
    /// keeps its deny cache (the refusals are its own, whatever its mode)
    /// unless the cache's settings changed. A changed table is a new
    /// validator, with an empty cache.
    pub fn from_specs(
        specs: &[ValidatorSpec],
        previous: Option<&ValidatorChain>,
    ) -> Result<Self, String> {
        let mut reusable: Vec<&Link> = previous.map_or(Vec::new(), |p| p.links.iter().collect());
        let links = specs
            .iter()
            .map(|spec| {
                let kept = reusable
                    .iter()
                    .position(|l| l.spec.as_ref().is_some_and(|s| s.same_validator(spec)));
                let mut link = match kept {
                    Some(i) => reusable.remove(i).clone(),
                    None => {
                        let stats = ValidatorStats::new(spec.name.clone(), spec.check.kind());
                        Link {
                            validator: build(&spec.check, &stats)?,
                            on_failure: spec.on_failure,
                            spec: None,
                            stats,
                            mode: spec.mode,
                            deny_cache: None,
                        }
                    }
                };
                // Only the link changes here: its figures, shared with the
                // chain in force, change once this chain is (`publish`).
                link.on_failure = spec.on_failure;
                link.mode = spec.mode;
                let same_cache = link.deny_cache.as_ref().map(|c| c.spec()) == spec.deny_cache;
                if !same_cache {
                    link.deny_cache = spec
                        .deny_cache
                        .map(|c| Arc::new(DenyCache::new(c, link.stats.clone())));
                }
                link.spec = Some(spec.clone());
                Ok(link)
            })
            .collect::<Result<_, String>>()?;
        Ok(ValidatorChain {
            links,
            deadline: None,
            decision_log: None,
        })
    }

    /// This chain with `[validation]`'s deadline and the decision log.
    pub(crate) fn with_validation(
        mut self,
        deadline: Option<std::time::Duration>,
        decision_log: Option<Arc<DecisionLog>>,
    ) -> Self {
        self.deadline = deadline;
        self.decision_log = decision_log;
        self
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

    /// Shows this chain's modes and deny caches in its validators'
    /// figures: called once it is the chain in force (a reload refused
    /// after the chain was built must leave the figures of the running
    /// one).
    pub(crate) fn publish(&self) {
        for link in &self.links {
            link.stats.mode.store(link.mode as u8, Relaxed);
            let entries = link.deny_cache.as_ref().map_or(0, |c| c.len());
            link.stats.deny_cache_entries.store(entries as i64, Relaxed);
        }
    }

    /// Every validator's figures, in chain order.
    pub fn stats(&self) -> Vec<Arc<ValidatorStats>> {
        self.links.iter().map(|l| l.stats.clone()).collect()
    }

    fn judging<'a>(&self, name: &'a [u8], value: &'a [u8], peer: &'a Peer) -> Judging<'a> {
        Judging {
            name,
            value,
            peer,
            digest: None,
            steps: self.decision_log.as_ref().map(|_| Vec::new()),
        }
    }

    /// Writes the decision log's line for a STORE the chain has decided.
    fn record(&self, judging: Judging, peer: &Peer, allowed: bool) {
        if let (Some(log), Some(steps)) = (&self.decision_log, &judging.steps) {
            log.record(judging.name, judging.value, peer, steps, allowed);
        }
    }

    /// Whether every validator allows the STORE, running the chain in
    /// order (the first "no" wins). Failures are logged with the validator,
    /// the name and the cause, then decided by `on_failure`. With a
    /// deadline (`validation.deadline_ms`), each validator gets what is
    /// left of it (its own timeout still applies); one that runs out of it,
    /// or is reached after it, fails (`timeout`) and its `on_failure`
    /// decides.
    pub async fn allows(&self, name: &[u8], value: &[u8], peer: &Peer) -> bool {
        self.allows_from(name, value, peer, None).await
    }

    /// [`allows`](Self::allows), going on from where
    /// [`check_inline`](Self::check_inline) stopped (`resume`): the
    /// validators it judged are neither run nor counted again, and their
    /// steps are the decision log's first.
    pub(crate) async fn allows_from(
        &self,
        name: &[u8],
        value: &[u8],
        peer: &Peer,
        resume: Option<Resume>,
    ) -> bool {
        let deadline = self.deadline.map(|d| tokio::time::Instant::now() + d);
        let mut judging = self.judging(name, value, peer);
        let (from, resumed) = match resume {
            Some(resume) => {
                if let (Some(steps), Some(earlier)) = (&mut judging.steps, resume.steps) {
                    *steps = earlier;
                }
                (resume.from, true)
            }
            None => (0, false),
        };
        let Some(links) = self.links.get(from..) else {
            // Not reached: a Resume comes from check_inline on this very
            // chain, and points inside it. Refused, never stored unchecked.
            log::error!("a STORE's validation resumed past its chain's end: refused");
            return false;
        };
        let mut allowed = true;
        for (i, link) in links.iter().enumerate() {
            // The validator check_inline stopped at said "not now"
            // already: asking again would run it twice.
            let inline = |link: &Link| match resumed && i == 0 {
                true => None,
                false => link.check_now_timed(name, value, peer),
            };
            let passes = match link.cached_denial(&mut judging) {
                Some(passes) => passes,
                // Reached after the deadline: not started at all.
                None if deadline.is_some_and(|at| tokio::time::Instant::now() >= at) => {
                    let verdict = past_deadline(self.deadline);
                    link.decide(&mut judging, verdict, Default::default())
                }
                None => match inline(link) {
                    Some((verdict, took)) => link.decide(&mut judging, verdict, took),
                    None => {
                        let stats = &link.stats;
                        stats.in_flight.fetch_add(1, Relaxed);
                        let started = std::time::Instant::now();
                        let run = link.validator.validate(name, value, peer);
                        let verdict = match deadline {
                            None => run.await,
                            Some(at) => tokio::time::timeout_at(at, run)
                                .await
                                .unwrap_or_else(|_| past_deadline(self.deadline)),
                        };
                        let took = started.elapsed();
                        stats.duration.observe_duration(took, 1);
                        stats.in_flight.fetch_sub(1, Relaxed);
                        link.decide(&mut judging, verdict, took)
                    }
                },
            };
            if !passes {
                allowed = false;
                break;
            }
        }
        self.record(judging, peer, allowed);
        allowed
    }

    /// Runs the chain's leading validators that answer synchronously, in
    /// order, as a request is parsed (a deny cache that holds the STORE
    /// answers for its validator, which is not run). `Pending` means a
    /// validator could not answer now: the STORE then goes through
    /// [`allows_from`](Self::allows_from), from that validator on, so the
    /// chain's order, and which validators run after a "no", never
    /// change, and each validator judges (and counts) the STORE once.
    pub(crate) fn check_inline(&self, name: &[u8], value: &[u8], peer: &Peer) -> Inline {
        let mut judging = self.judging(name, value, peer);
        for (i, link) in self.links.iter().enumerate() {
            let passes = match link.cached_denial(&mut judging) {
                Some(passes) => passes,
                None => {
                    let Some((verdict, took)) = link.check_now_timed(name, value, peer) else {
                        return Inline::Pending(Resume {
                            from: i,
                            steps: judging.steps,
                        });
                    };
                    link.decide(&mut judging, verdict, took)
                }
            };
            if !passes {
                self.record(judging, peer, false);
                return Inline::Denied;
            }
        }
        if !self.links.is_empty() {
            self.record(judging, peer, true);
        }
        Inline::Allowed
    }
}

/// Where a STORE's chain goes on after [`ValidatorChain::check_inline`]
/// stopped at a validator that could not answer at once: that
/// validator's index, and the decision log's steps so far.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resume {
    from: usize,
    steps: Option<Vec<Step>>,
}

impl Resume {
    /// The whole chain is still to run (a STORE validated without the
    /// inline pass).
    #[cfg(test)]
    pub(crate) fn from_start() -> Resume {
        Resume::default()
    }
}

/// The verdict of a validator the chain's deadline cut short or never
/// reached.
fn past_deadline(deadline: Option<std::time::Duration>) -> Verdict {
    let ms = deadline.map_or(0, |d| d.as_millis());
    Verdict::Failure(
        Cause::Timeout,
        format!("the chain's deadline (validation.deadline_ms = {ms}) ran out"),
    )
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
