//! What the config describes for each validator: plain data, checked by
//! the config loader and turned into running validators by
//! [`ValidatorChain::from_specs`](super::ValidatorChain::from_specs). The
//! validators own these types; the config depends on them, not the other
//! way round.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// What a validator looks at (`field`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    /// The STORE's name.
    Name,
    /// The STORE's value.
    #[default]
    Value,
}

/// How a process validator receives the value (`input`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Input {
    /// The value is the program's last argument.
    #[default]
    Argv,
    /// The value, then `\n`, on the program's stdin.
    Stdin,
}

/// What a failed validation counts as (`on_failure` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// The STORE is refused (`RARGH!`).
    #[default]
    Reject,
    /// The STORE goes ahead as if allowed.
    Allow,
}

/// Whether a validator's refusals are enforced (`mode` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Its refusals (and failures under `on_failure = "reject"`) refuse
    /// the STORE.
    #[default]
    Enforce,
    /// It runs and its verdicts are counted and logged in the decision
    /// log, but it never refuses; each would-be refusal is also logged
    /// (`warn`).
    Warn,
    /// Like `warn`, without the log line per would-be refusal.
    Dryrun,
}

impl Mode {
    /// Every mode, indexed by `mode as usize`.
    pub(crate) const ALL: [Mode; 3] = [Mode::Enforce, Mode::Warn, Mode::Dryrun];

    /// The config's spelling (the `mode` label of metrics).
    pub fn label(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Dryrun => "dryrun",
        }
    }
}

/// A validator's deny cache (`deny_cache_secs`, `deny_cache_entries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenyCacheSpec {
    /// How long a refusal is remembered.
    pub ttl: Duration,
    /// Refusals remembered at most.
    pub entries: usize,
}

/// One checked validator of the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatorSpec {
    /// How metrics and logs call it: the table's `name`, or
    /// `<kind>-<index>`.
    pub name: String,
    /// What it checks.
    pub check: Check,
    /// What a failure to decide makes of the STORE.
    pub on_failure: OnFailure,
    /// Whether its refusals refuse.
    pub mode: Mode,
    /// Its deny cache, if it has one.
    pub deny_cache: Option<DenyCacheSpec>,
}

impl ValidatorSpec {
    /// Whether `other` describes the same running validator: the same
    /// name and check. Its mode, failure policy and deny cache may
    /// differ: a reload changes those on the running validator.
    pub(crate) fn same_validator(&self, other: &ValidatorSpec) -> bool {
        self.name == other.name && self.check == other.check
    }
}

/// Where the decision log goes (`validation.decision_log`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DecisionLogTarget {
    /// No decision log (the default).
    #[default]
    Off,
    /// One line per decision on standard error (the journal, under
    /// systemd).
    Stderr,
    /// Appended to this file, reopened on SIGHUP.
    File(PathBuf),
}

/// `[validation]`: what concerns the chain as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationSpec {
    /// The most a STORE's whole chain may take.
    pub deadline: Option<Duration>,
    /// Where decisions are logged.
    pub decision_log: DecisionLogTarget,
    /// Whether the decision log holds the values themselves.
    pub log_values: bool,
    /// Lines waiting to be written at most (more are dropped, counted).
    pub log_buffer: usize,
}

impl Default for ValidationSpec {
    fn default() -> Self {
        ValidationSpec {
            deadline: None,
            decision_log: DecisionLogTarget::Off,
            log_values: false,
            log_buffer: 10_000,
        }
    }
}

impl Check {
    /// The config's `kind` of this check.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::MaxBytes { .. } | Check::Regex { .. } => "function",
            Check::Denylist { .. } => "blocking",
            Check::Process(_) => "process",
            Check::Helper(_) => "helper",
            Check::Wasm(_) => "wasm",
        }
    }
}

/// What a validator runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// `kind = "function"`, `function = "max_bytes"`: value at most `max` bytes.
    MaxBytes {
        /// The largest value allowed, in bytes.
        max: u64,
    },
    /// `kind = "function"`, `function = "regex"`: `field` must match.
    Regex {
        /// What is matched.
        field: Field,
        /// The regular expression (the `regex` crate's syntax).
        pattern: String,
    },
    /// `kind = "blocking"`, `function = "denylist"`: refuse listed values.
    Denylist {
        /// The file of refused values, one a line.
        path: PathBuf,
    },
    /// `kind = "process"`: one program run per STORE.
    Process(ProcessSpec),
    /// `kind = "helper"`: long-running programs answering many STOREs.
    Helper(HelperSpec),
    /// `kind = "wasm"`: a WebAssembly module run in-process.
    Wasm(WasmSpec),
}

/// A `kind = "wasm"` validator, checked: its module is compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct WasmSpec {
    /// The module's file (resolved against the config's directory).
    pub path: PathBuf,
    /// The module, compiled; equal to another when the file's bytes are.
    pub module: super::wasm::CompiledModule,
    /// How long one STORE's check may run.
    pub timeout: Duration,
    /// The most linear memory one instance may have, in bytes.
    pub max_memory: usize,
    /// Instances (so STOREs checked at once) at most.
    pub max_concurrent: usize,
}

/// A `kind = "helper"` validator, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct HelperSpec {
    /// The program, resolved as for `process`.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Helper processes at most (started as needed).
    pub children: usize,
    /// Requests in flight per helper at most.
    pub concurrency: usize,
    /// Per request, from when it is written.
    pub timeout: Duration,
    /// Retire a helper after this many requests; 0 = never.
    pub max_requests: u64,
}

/// A `kind = "process"` validator, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    /// The program, resolved (relative to the config file, or from PATH).
    pub program: PathBuf,
    /// Its arguments (the value follows them with `input = "argv"`).
    pub args: Vec<String>,
    /// How the value reaches the program.
    pub input: Input,
    /// How long one run may take.
    pub timeout: Duration,
    /// Runs at once at most.
    pub max_concurrent: usize,
}
