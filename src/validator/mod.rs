//! Store validators: every STORE of an absent name passes a chain of them.
//!
//! A validator is one object-safe async trait so that an inline check, a
//! blocking function on tokio's blocking pool and an external program all
//! look the same to the connection. Validation always runs in the
//! connection's task, never in the store actor, so a slow validator delays
//! only the connection that is waiting on it.

pub mod blocking;
pub mod function;
pub mod helper;
pub mod process;
pub mod reaper;
pub mod spec;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

pub use spec::{Check, OnFailure, ValidatorSpec};

/// Who sent a STORE: the client's address and, on a mutual-TLS
/// connection, its certificate's subject (RFC 4514). Process validators
/// get them as `JNHP_PEER` and `JNHP_PEER_CERT_SUBJECT`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    pub addr: Option<std::net::SocketAddr>,
    pub cert_subject: Option<String>,
}

/// A validator's answer about one STORE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    /// The validator could not decide (crash, timeout, malformed answer).
    /// The link's [`OnFailure`] policy turns it into allow or deny.
    Failure(String),
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
    pub validator: Arc<dyn Validator>,
    pub on_failure: OnFailure,
    /// The table it was built from, if it came from the config: a reload
    /// that leaves the table unchanged keeps this very validator (and so
    /// its `max_concurrent` slots, its running count and its helpers).
    spec: Option<ValidatorSpec>,
}

impl Link {
    /// A link for a validator built outside the config (library users).
    pub fn new(validator: Arc<dyn Validator>, on_failure: OnFailure) -> Link {
        Link {
            validator,
            on_failure,
            spec: None,
        }
    }
}

impl Link {
    /// Whether the verdict lets the STORE go on: failures are logged with
    /// the validator, the name and the cause, then decided by `on_failure`.
    fn decide(&self, name: &[u8], verdict: Verdict) -> bool {
        match verdict {
            Verdict::Allow => true,
            Verdict::Deny => false,
            Verdict::Failure(cause) => {
                log::warn!(
                    "validator {} failed for name {:?}: {cause}; {}",
                    self.validator.describe(),
                    String::from_utf8_lossy(name),
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

/// The validator a config table describes.
fn build(check: &Check) -> Result<Arc<dyn Validator>, String> {
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
        Check::Process(spec) => Arc::new(process::Process::new(spec.clone())),
        Check::Helper(spec) => Arc::new(helper::HelperPool::new(spec.clone())),
    })
}

/// Awaits every future concurrently on the current task (so that all
/// helpers get their stdin closed at once, and the 2 s run side by side).
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut pending: Vec<_> = futures.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
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
pub enum Inline {
    /// A validator said no: `RARGH!`.
    Denied,
    /// Every validator of the chain allowed it.
    Allowed,
    /// The synchronous validators allowed it; asynchronous ones remain.
    Pending,
}

impl ValidatorChain {
    pub fn new(links: Vec<Link>) -> Self {
        ValidatorChain { links }
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
                Ok(Link {
                    validator: build(&spec.check)?,
                    on_failure: spec.on_failure,
                    spec: Some(spec.clone()),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(ValidatorChain { links })
    }

    /// Shuts every validator of the chain down (helpers: stdin closed,
    /// up to 2 s, then killed), all at once.
    pub async fn shutdown(&self) {
        let all = self.links.iter().map(|l| l.validator.shutdown());
        futures_join_all(all).await;
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether every validator allows the STORE, running the chain in
    /// order (the first "no" wins). Failures are logged with the validator,
    /// the name and the cause, then decided by `on_failure`.
    pub async fn allows(&self, name: &[u8], value: &[u8], peer: &Peer) -> bool {
        for link in &self.links {
            let verdict = match link.validator.check_now(name, value) {
                Some(verdict) => verdict,
                None => link.validator.validate(name, value, peer).await,
            };
            if !link.decide(name, verdict) {
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
    pub fn check_inline(&self, name: &[u8], value: &[u8]) -> Inline {
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
