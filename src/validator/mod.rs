//! Store validators: every STORE of an absent name passes a chain of them.
//!
//! A validator is one object-safe async trait so that an inline check, a
//! blocking function on tokio's blocking pool and an external program all
//! look the same to the connection. Validation always runs in the
//! connection's task, never in the store actor, so a slow validator delays
//! only the connection that is waiting on it.

pub mod blocking;
pub mod function;
pub mod process;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{Check, ValidatorSpec};

/// A validator's answer about one STORE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    /// The validator could not decide (crash, timeout, malformed answer).
    /// The link's [`OnFailure`] policy turns it into allow or deny.
    Failure(String),
}

/// What a failed validation counts as (`on_failure` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    #[default]
    Reject,
    Allow,
}

/// A check every STORE must pass. Library users may implement it.
#[async_trait]
pub trait Validator: Send + Sync + fmt::Debug {
    /// Judges a STORE of `value` under `name`.
    async fn validate(&self, name: &[u8], value: &[u8]) -> Verdict;

    /// A short description for logs (`regex name ^[a-z]+$`, a program path).
    fn describe(&self) -> String;
}

/// One validator of a chain with its failure policy.
#[derive(Debug, Clone)]
pub struct Link {
    pub validator: Arc<dyn Validator>,
    pub on_failure: OnFailure,
}

/// Validators run in order; the first "no" wins. An empty chain allows every
/// STORE (and lets the store actor answer STOREs without a round trip back
/// to the connection).
#[derive(Debug, Clone, Default)]
pub struct ValidatorChain {
    links: Vec<Link>,
}

impl ValidatorChain {
    pub fn new(links: Vec<Link>) -> Self {
        ValidatorChain { links }
    }

    /// Builds the chain a config describes. Fails only if a file checked
    /// at load time has become unreadable since.
    pub fn from_specs(specs: &[ValidatorSpec]) -> Result<Self, String> {
        let links = specs
            .iter()
            .map(|spec| {
                let validator: Arc<dyn Validator> = match &spec.check {
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
                };
                Ok(Link {
                    validator,
                    on_failure: spec.on_failure,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(ValidatorChain { links })
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Whether every validator allows the STORE. Failures are logged with
    /// the validator, the name and the cause, then decided by `on_failure`.
    pub async fn allows(&self, name: &[u8], value: &[u8]) -> bool {
        for link in &self.links {
            let allowed = match link.validator.validate(name, value).await {
                Verdict::Allow => true,
                Verdict::Deny => false,
                Verdict::Failure(cause) => {
                    log::warn!(
                        "validator {} failed for name {:?}: {cause}; {}",
                        link.validator.describe(),
                        String::from_utf8_lossy(name),
                        match link.on_failure {
                            OnFailure::Reject => "rejecting the STORE",
                            OnFailure::Allow => "allowing the STORE (on_failure = \"allow\")",
                        }
                    );
                    link.on_failure == OnFailure::Allow
                }
            };
            if !allowed {
                return false;
            }
        }
        true
    }
}
