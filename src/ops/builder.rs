//! [`Server::builder`]: a server with validators of the library user's own
//! in its chain, each with a name, a failure policy and limits like a
//! configured validator's, in front of the configured ones.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::server::{Listeners, Server, StartError};
use crate::validator::{Limits, Link, OnFailure, Validator};

/// Builds a [`Server`]: `Server::builder(config)`, then `.validator(..)`
/// for each check of your own (each followed by its options), then
/// `.start().await`.
///
/// ```no_run
/// # use jnhpd::config::Config;
/// # use jnhpd::server::Server;
/// # use jnhpd::validator::{OnFailure, Peer, Validator, Verdict};
/// # #[derive(Debug)] struct Mine;
/// # #[async_trait::async_trait] impl Validator for Mine {
/// #     async fn validate(&self, _: &[u8], _: &[u8], _: &Peer) -> Verdict { Verdict::Allow }
/// #     fn describe(&self) -> String { "mine".into() } }
/// # async fn run(config: Config) -> Result<(), jnhpd::server::StartError> {
/// let server = Server::builder(config)
///     .validator("mine", Mine)
///     .on_failure(OnFailure::Allow)
///     .timeout(std::time::Duration::from_millis(200))
///     .max_concurrent(8)
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Builder {
    config: Config,
    listeners: Option<Listeners>,
    links: Vec<Own>,
}

/// A validator added to a [`Builder`], with its options.
#[derive(Debug)]
struct Own {
    name: String,
    validator: Arc<dyn Validator>,
    on_failure: OnFailure,
    limits: Limits,
}

/// The builder right after [`Builder::validator`]: the options set here
/// (`on_failure`, `timeout`, `max_concurrent`) apply to that validator.
#[derive(Debug)]
pub struct ValidatorSetup {
    builder: Builder,
}

impl Server {
    /// A server for `config`, with validators of your own to add: see
    /// [`Builder`]. It listens where the config says unless given
    /// [`Builder::listeners`].
    pub fn builder(config: Config) -> Builder {
        Builder {
            config,
            listeners: None,
            links: Vec::new(),
        }
    }
}

impl Builder {
    /// Serves on sockets bound beforehand (e.g. port 0 in tests) instead
    /// of binding the config's `listen` addresses at `start`.
    pub fn listeners(mut self, listeners: Listeners) -> Builder {
        self.listeners = Some(listeners);
        self
    }

    /// Adds `validator` to the chain, called `name` in logs and metrics
    /// (kind `library`). Validators added here run in the order added,
    /// before the configured ones, and stay across reloads. Defaults:
    /// `on_failure` reject, no timeout, no concurrency limit.
    pub fn validator(self, name: &str, validator: impl Validator + 'static) -> ValidatorSetup {
        self.validator_arc(name, Arc::new(validator))
    }

    /// [`validator`](Self::validator) for a validator already shared.
    pub fn validator_arc(mut self, name: &str, validator: Arc<dyn Validator>) -> ValidatorSetup {
        self.links.push(Own {
            name: name.to_string(),
            validator,
            on_failure: OnFailure::Reject,
            limits: Limits::default(),
        });
        ValidatorSetup { builder: self }
    }

    /// Builds the chain and starts serving, as
    /// [`Server::start_with`]. Fails, naming the validator, on an empty
    /// or repeated name, a zero timeout or a zero `max_concurrent`.
    pub async fn start(self) -> Result<Server, StartError> {
        let mut links = Vec::with_capacity(self.links.len());
        for (i, own) in self.links.iter().enumerate() {
            let bad =
                |why: &str| StartError::Validators(format!("validator {:?}: {why}", own.name));
            if own.name.is_empty() {
                return Err(bad("the name is empty"));
            }
            if self.links[..i].iter().any(|o| o.name == own.name) {
                return Err(bad("another validator has this name"));
            }
            if own.limits.timeout == Some(Duration::ZERO) {
                return Err(bad("the timeout must be more than 0"));
            }
            if own.limits.max_concurrent == Some(0) {
                return Err(bad("max_concurrent must be at least 1"));
            }
            links.push(Link::with_limits(
                &own.name,
                own.validator.clone(),
                own.on_failure,
                own.limits,
            ));
        }
        let listeners = match self.listeners {
            Some(listeners) => listeners,
            None => Listeners::bind(&self.config)
                .map_err(|e| StartError::Serve(io::Error::new(e.source.kind(), e.to_string())))?,
        };
        let server = Server::start_with(self.config, listeners, links).await?;
        for own in &self.links {
            log::info!(
                "validator {} (library: {}): before the configured ones; on_failure {}, timeout {}, max_concurrent {}",
                own.name,
                own.validator.describe(),
                match own.on_failure {
                    OnFailure::Reject => "reject",
                    OnFailure::Allow => "allow",
                },
                own.limits
                    .timeout
                    .map_or("none".to_string(), |t| format!("{} ms", t.as_millis())),
                own.limits
                    .max_concurrent
                    .map_or("none".to_string(), |n| n.to_string()),
            );
        }
        Ok(server)
    }
}

impl ValidatorSetup {
    fn last(&mut self) -> &mut Own {
        // A ValidatorSetup is only made right after a push.
        let last = self.builder.links.len() - 1;
        &mut self.builder.links[last]
    }

    /// What a failure to decide (a timeout, or [`Verdict::Failure`](crate::validator::Verdict::Failure))
    /// makes of the STORE, as the config's `on_failure`.
    pub fn on_failure(mut self, policy: OnFailure) -> ValidatorSetup {
        self.last().on_failure = policy;
        self
    }

    /// As the config's `timeout_ms`: a check not done this long after it
    /// started is abandoned (its future dropped), a `timeout` failure.
    pub fn timeout(mut self, limit: Duration) -> ValidatorSetup {
        self.last().limits.timeout = Some(limit);
        self
    }

    /// As the config's `max_concurrent`: at most this many checks at once;
    /// more STOREs wait for a slot.
    pub fn max_concurrent(mut self, limit: usize) -> ValidatorSetup {
        self.last().limits.max_concurrent = Some(limit);
        self
    }

    /// Adds another validator (see [`Builder::validator`]).
    pub fn validator(self, name: &str, validator: impl Validator + 'static) -> ValidatorSetup {
        self.builder.validator(name, validator)
    }

    /// See [`Builder::validator_arc`].
    pub fn validator_arc(self, name: &str, validator: Arc<dyn Validator>) -> ValidatorSetup {
        self.builder.validator_arc(name, validator)
    }

    /// See [`Builder::listeners`].
    pub fn listeners(self, listeners: Listeners) -> Builder {
        self.builder.listeners(listeners)
    }

    /// See [`Builder::start`].
    pub async fn start(self) -> Result<Server, StartError> {
        self.builder.start().await
    }

    /// The builder, to go on with.
    pub fn done(self) -> Builder {
        self.builder
    }
}
