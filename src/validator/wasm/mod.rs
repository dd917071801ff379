//! WebAssembly validators (`kind = "wasm"`): a site owner's check, in any
//! language that compiles to WebAssembly, run in-process by wasmtime in a
//! sandbox with no import but a log function. The interface is ours and
//! small (docs/wasm.md): jnhpd writes the STORE into the module's memory
//! and calls one export that answers allow or deny.
//!
//! Instances are pooled and reused, one STORE at a time each: a call
//! costs tens of nanoseconds, where making an instance costs microseconds
//! (measured: 28 ns against 3.6 µs). An instance that failed in any way is
//! dropped, so a broken state never judges a second STORE.
//!
//! Where a check runs: first inline, as the request is parsed (like the
//! `function` validators), within a short [`INLINE_SLICE`]; a check that
//! takes longer is interrupted there and run again from the start on the
//! blocking pool with its whole `timeout_ms`, so a slow or endless module
//! never holds up the threads that serve connections.

mod engine;
pub(crate) mod module;

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use wasmtime::{
    Caller, InstancePre, Linker, Memory, Store, StoreLimits, StoreLimitsBuilder, Trap, TypedFunc,
    UpdateDeadline,
};

pub use module::CompiledModule;

use super::spec::WasmSpec;
use super::{Cause, Peer, Validator, Verdict, escape_controls};
use crate::metrics::ValidatorStats;

/// How long a check may run inline before it is moved to the blocking
/// pool: a few of these at most stall a connection's thread.
const INLINE_SLICE: Duration = Duration::from_millis(1);

/// After a check overran its inline slice, how long that validator's
/// STOREs go straight to the blocking pool.
const SLOW_FOR: Duration = Duration::from_secs(1);

/// Checks running on the blocking pool at once, across all wasm
/// validators: well within tokio's 512 blocking threads, which file
/// reads and other validators need too. (A check is CPU-bound: more at
/// once than this only share the cores more thinly.)
const SLOW_RUNS_MAX: usize = 128;
static SLOW_RUNS: Semaphore = Semaphore::const_new(SLOW_RUNS_MAX);

/// Log lines one STORE's check may write, and one validator a second.
const LOG_LINES_PER_STORE: u32 = 10;
const LOG_LINES_PER_SECOND: u32 = 100;
/// A log line is cut here.
const LOG_LINE_BYTES: usize = 1024;

/// Table elements one instance may have (a table is a list of function
/// references; compilers emit one of a few entries).
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The first line of an error from wasmtime (its messages can span
/// lines; ours are one log line each).
pub(crate) fn one_line(err: &wasmtime::Error) -> String {
    let text = match err.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{err:#}"),
    };
    escape_controls(text.lines().next().unwrap_or_default())
}

/// Why a running check was stopped by the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Its inline slice ran out: it is run again on the blocking pool.
    Slice,
    /// Its `timeout_ms` ran out.
    Timeout,
    /// The chain no longer waits for it (its deadline, the connection
    /// gone).
    Cancelled,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stop::Slice => "its inline slice ran out",
            Stop::Timeout => "it ran past timeout_ms",
            Stop::Cancelled => "the STORE no longer waits for it",
        })
    }
}

impl std::error::Error for Stop {}

/// What one instance's store holds besides the instance.
struct Host {
    limits: StoreLimits,
    /// When the running check is stopped, and why then.
    deadline: Instant,
    at_deadline: Stop,
    /// Raised when the chain stops waiting for the running check.
    cancel: Option<Arc<AtomicBool>>,
    /// `jnhp.log` lines written during the running check.
    lines: u32,
    log: Arc<LogBudget>,
}

/// Log lines a validator may still write this second.
#[derive(Debug)]
struct LogBudget {
    name: String,
    /// The second (since [`base`]) the count is for, and the count.
    second: AtomicU64,
    lines: AtomicU32,
}

impl LogBudget {
    fn allows(&self) -> bool {
        let now = base().elapsed().as_secs();
        if self.second.swap(now, Relaxed) != now {
            self.lines.store(0, Relaxed);
        }
        self.lines.fetch_add(1, Relaxed) < LOG_LINES_PER_SECOND
    }
}

/// The instant the validators' clocks count from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// A ready instance: its store and the three exports.
struct Instance {
    store: Store<Host>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    check: TypedFunc<(i32, i32, i32, i32), i32>,
}

/// Why a check gave no verdict.
enum Failed {
    Stopped(Stop),
    Trapped(String),
    Malformed(String),
    /// No instance could be made.
    NoInstance(String),
}

impl Failed {
    fn from_call(err: wasmtime::Error) -> Failed {
        match err.downcast_ref::<Stop>() {
            Some(stop) => Failed::Stopped(*stop),
            None => Failed::Trapped(one_line(&err)),
        }
    }

    fn verdict(self, timeout: Duration) -> Verdict {
        match self {
            Failed::Stopped(Stop::Timeout | Stop::Slice) => Verdict::Failure(
                Cause::Timeout,
                format!("stopped: no verdict within {} ms", timeout.as_millis()),
            ),
            Failed::Stopped(Stop::Cancelled) => Verdict::Failure(
                Cause::Timeout,
                "stopped: the STORE no longer waited for it".into(),
            ),
            Failed::Trapped(trap) => Verdict::Failure(Cause::NoVerdict, format!("trapped: {trap}")),
            Failed::Malformed(what) => Verdict::Failure(Cause::Malformed, what),
            Failed::NoInstance(why) => {
                Verdict::Failure(Cause::Spawn, format!("could not make an instance: {why}"))
            }
        }
    }
}

/// The parts of a STORE a module is given, in order.
struct Parts<'a> {
    name: &'a [u8],
    value: &'a [u8],
    peer: String,
    subject: &'a [u8],
}

impl<'a> Parts<'a> {
    fn of(name: &'a [u8], value: &'a [u8], peer: &'a Peer) -> Parts<'a> {
        Parts {
            name,
            value,
            peer: peer.addr.map(|a| a.to_string()).unwrap_or_default(),
            subject: peer.cert_subject.as_deref().unwrap_or_default().as_bytes(),
        }
    }

    fn all(&self) -> [&[u8]; 4] {
        [self.name, self.value, self.peer.as_bytes(), self.subject]
    }
}

impl Instance {
    /// Makes an instance, running the module's start function (if any)
    /// within `deadline`.
    fn new(shared: &Shared, deadline: Instant, at_deadline: Stop) -> Result<Instance, Failed> {
        let engine = engine::engine().map_err(Failed::NoInstance)?;
        let limits = StoreLimitsBuilder::new()
            .memory_size(shared.max_memory)
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(1)
            .memories(1)
            .tables(4)
            .build();
        let host = Host {
            limits,
            deadline,
            at_deadline,
            cancel: None,
            lines: 0,
            log: shared.log.clone(),
        };
        let mut store = Store::new(engine, host);
        store.limiter(|host| &mut host.limits);
        store.epoch_deadline_callback(|context| {
            let host = context.data();
            if host.cancel.as_ref().is_some_and(|c| c.load(Relaxed)) {
                return Err(Stop::Cancelled.into());
            }
            if Instant::now() >= host.deadline {
                return Err(host.at_deadline.into());
            }
            Ok(UpdateDeadline::Continue(1))
        });
        store.set_epoch_deadline(1);
        let _running = engine::Running::start().map_err(Failed::NoInstance)?;
        let instance =
            shared
                .pre
                .instantiate(&mut store)
                .map_err(|e| match e.downcast_ref::<Stop>() {
                    Some(stop) => Failed::Stopped(*stop),
                    None => Failed::NoInstance(one_line(&e)),
                })?;
        // The exports were checked when the module was loaded.
        let missing = |e: wasmtime::Error| Failed::NoInstance(one_line(&e));
        let memory = instance
            .get_memory(&mut store, module::MEMORY)
            .ok_or_else(|| Failed::NoInstance("no memory export".into()))?;
        let alloc = instance
            .get_typed_func(&mut store, module::ALLOC)
            .map_err(missing)?;
        let check = instance
            .get_typed_func(&mut store, module::CHECK)
            .map_err(missing)?;
        Ok(Instance {
            store,
            memory,
            alloc,
            check,
        })
    }

    /// Runs the module on one STORE, stopped at `deadline` (for
    /// `at_deadline`) or when `cancel` is raised.
    fn judge(
        &mut self,
        parts: &Parts,
        deadline: Instant,
        at_deadline: Stop,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<bool, Failed> {
        let host = self.store.data_mut();
        host.deadline = deadline;
        host.at_deadline = at_deadline;
        host.cancel = cancel;
        host.lines = 0;
        self.store.set_epoch_deadline(1);
        let lengths = parts.all().map(|p| p.len());
        let too_long = || Failed::Malformed("the STORE is too long for a 32-bit module".into());
        let total = i32::try_from(lengths.iter().sum::<usize>()).map_err(|_| too_long())?;
        let _running = engine::Running::start().map_err(Failed::NoInstance)?;
        let address = self
            .alloc
            .call(&mut self.store, total)
            .map_err(Failed::from_call)?;
        let size = self.memory.data_size(&self.store);
        let start = usize::try_from(address).ok();
        let fits = start.is_some_and(|s| s.checked_add(total as usize).is_some_and(|e| e <= size));
        let Some(mut at) = start.filter(|_| fits) else {
            return Err(Failed::Malformed(format!(
                "{} answered address {address} for {total} bytes; its memory has {size}",
                module::ALLOC
            )));
        };
        for part in parts.all() {
            // In bounds: checked above.
            self.memory.data_mut(&mut self.store)[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        let [name, value, peer, subject] = lengths.map(|l| l as i32);
        let answer = self
            .check
            .call(&mut self.store, (name, value, peer, subject))
            .map_err(Failed::from_call)?;
        match answer {
            1 => Ok(true),
            0 => Ok(false),
            other => Err(Failed::Malformed(format!(
                "{} answered {other}, not 1 (allow) or 0 (deny)",
                module::CHECK
            ))),
        }
    }
}

/// What a wasm validator's clones (the validator, its blocking-pool
/// checks) share.
struct Shared {
    pre: InstancePre<Host>,
    max_memory: usize,
    timeout: Duration,
    /// Instances not judging a STORE now.
    idle: Mutex<Vec<Instance>>,
    /// One per instance: `max_concurrent`.
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    /// Until when (ms since [`base`]) STOREs skip the inline try.
    slow_until: AtomicU64,
    log: Arc<LogBudget>,
    stats: Arc<ValidatorStats>,
}

impl Shared {
    /// Judges one STORE on an idle instance (or a new one), putting the
    /// instance back unless it failed.
    fn judge(
        &self,
        parts: &Parts,
        deadline: Instant,
        at_deadline: Stop,
        cancel: Option<Arc<AtomicBool>>,
    ) -> Result<bool, Failed> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => Instance::new(self, deadline, at_deadline)?,
        };
        let verdict = instance.judge(parts, deadline, at_deadline, cancel)?;
        instance.store.data_mut().cancel = None;
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(instance);
        Ok(verdict)
    }
}

/// A `kind = "wasm"` validator.
pub struct Wasm {
    shared: Arc<Shared>,
    description: String,
}

impl fmt::Debug for Wasm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wasm")
            .field("description", &self.description)
            .finish()
    }
}

/// The linker every instance is made with: `jnhp.log` and nothing else.
fn linker() -> Result<Linker<Host>, String> {
    let mut linker = Linker::new(engine::engine()?);
    let (module, name) = module::LOG_IMPORT;
    linker
        .func_wrap(module, name, log)
        .map_err(|e| format!("wasmtime: {}", one_line(&e)))?;
    Ok(linker)
}

/// `jnhp.log(address, length)`: one line of the module's memory to the
/// log, cut and escaped, within the budgets.
fn log(mut caller: Caller<'_, Host>, address: i32, length: i32) -> wasmtime::Result<()> {
    let host = caller.data_mut();
    host.lines = host.lines.saturating_add(1);
    // Over budget: nothing is read or formatted (a module may call this
    // in a loop).
    let write = host.lines <= LOG_LINES_PER_STORE && host.log.allows();
    let Some(wasmtime::Extern::Memory(memory)) = caller.get_export(module::MEMORY) else {
        return Err(wasmtime::Error::msg("jnhp.log: the module has no memory"));
    };
    let data = memory.data(&caller);
    let start = usize::try_from(address).ok();
    let end = start
        .zip(usize::try_from(length).ok())
        .and_then(|(s, l)| s.checked_add(l));
    let Some(bytes) = start.zip(end).and_then(|(s, e)| data.get(s..e)) else {
        return Err(wasmtime::Error::msg(format!(
            "jnhp.log: address {address} length {length} is outside the module's memory"
        )));
    };
    if write {
        let cut = &bytes[..bytes.len().min(LOG_LINE_BYTES)];
        let text = escape_controls(&String::from_utf8_lossy(cut));
        let more = if bytes.len() > LOG_LINE_BYTES {
            " [cut]"
        } else {
            ""
        };
        log::info!("validator {}: {text}{more}", caller.data().log.name);
    }
    Ok(())
}

/// Whether `spec`'s module makes an instance within its limits (its
/// memory, its start function): the config's check, before any STORE.
pub(crate) fn check_instance(spec: &WasmSpec) -> Result<(), String> {
    let stats = ValidatorStats::new("check".into(), "wasm");
    Wasm::new(spec, stats).map(drop)
}

impl Wasm {
    /// The validator `spec` describes. Makes one instance at once, so
    /// that a module whose start function fails, or that needs more
    /// memory than allowed, is refused with the config rather than failing
    /// every STORE.
    pub(crate) fn new(spec: &WasmSpec, stats: Arc<ValidatorStats>) -> Result<Wasm, String> {
        let pre = linker()?
            .instantiate_pre(spec.module.module())
            .map_err(|e| one_line(&e))?;
        let log = Arc::new(LogBudget {
            name: stats.name.clone(),
            second: AtomicU64::new(0),
            lines: AtomicU32::new(0),
        });
        let shared = Shared {
            pre,
            max_memory: spec.max_memory,
            timeout: spec.timeout,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(spec.max_concurrent)),
            max_concurrent: spec.max_concurrent,
            slow_until: AtomicU64::new(0),
            log,
            stats,
        };
        let first = Instance::new(&shared, Instant::now() + spec.timeout, Stop::Timeout).map_err(
            |failed| match failed {
                Failed::Stopped(_) => format!(
                    "its start function ran past timeout_ms ({} ms)",
                    spec.timeout.as_millis()
                ),
                Failed::Trapped(why) | Failed::Malformed(why) | Failed::NoInstance(why) => {
                    format!("cannot make an instance: {why}")
                }
            },
        )?;
        shared
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(first);
        Ok(Wasm {
            shared: Arc::new(shared),
            description: format!("wasm {}", spec.path.display()),
        })
    }

    fn now_ms() -> u64 {
        base().elapsed().as_millis() as u64
    }
}

/// Raises its flag when dropped: the chain stopped waiting for a check
/// running on the blocking pool (dropped its future), which then stops
/// at the next tick instead of running on to its timeout.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

#[async_trait]
impl Validator for Wasm {
    async fn validate(&self, name: &[u8], value: &[u8], peer: &Peer) -> Verdict {
        let shared = &self.shared;
        let started = Instant::now();
        let permits = match (
            shared.permits.clone().try_acquire_owned(),
            SLOW_RUNS.try_acquire(),
        ) {
            (Ok(instance), Ok(run)) => (instance, run),
            (instance, run) => {
                // Queued until the wait ends, however it ends: the
                // chain's deadline drops this future mid-wait.
                let waiting = super::process::Waiting::new(&shared.stats);
                let both = async {
                    let instance = match instance {
                        Ok(permit) => permit,
                        Err(_) => shared.permits.clone().acquire_owned().await.ok()?,
                    };
                    let run = match run {
                        Ok(permit) => permit,
                        Err(_) => SLOW_RUNS.acquire().await.ok()?,
                    };
                    Some((instance, run))
                };
                let permits = tokio::time::timeout(shared.timeout, both).await;
                drop(waiting);
                match permits {
                    Ok(Some(permits)) => permits,
                    // The semaphores are never closed.
                    _ => {
                        return Verdict::Failure(
                            Cause::Timeout,
                            format!(
                                "no instance free for timeout_ms ({} ms): {} of this validator's, {SLOW_RUNS_MAX} slow checks of all wasm validators",
                                shared.timeout.as_millis(),
                                shared.max_concurrent,
                            ),
                        );
                    }
                }
            }
        };
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let flag = cancel.0.clone();
        let shared = self.shared.clone();
        let (name, value, peer) = (name.to_vec(), value.to_vec(), peer.clone());
        let run = tokio::task::spawn_blocking(move || {
            let _permits = permits;
            let parts = Parts::of(&name, &value, &peer);
            let deadline = started + shared.timeout;
            shared
                .judge(&parts, deadline, Stop::Timeout, Some(flag))
                .map_err(|f| f.verdict(shared.timeout))
        });
        let verdict = match run.await {
            Ok(Ok(allowed)) => allowed.into(),
            Ok(Err(verdict)) => verdict,
            Err(err) => Verdict::Failure(Cause::NoVerdict, format!("its check ended: {err}")),
        };
        drop(cancel);
        verdict
    }

    fn check_now(&self, name: &[u8], value: &[u8], peer: &Peer) -> Option<Verdict> {
        let shared = &self.shared;
        if Self::now_ms() < shared.slow_until.load(Relaxed) {
            return None;
        }
        let _permit = shared.permits.try_acquire().ok()?;
        let slice = INLINE_SLICE.min(shared.timeout);
        let at_deadline = if slice == shared.timeout {
            Stop::Timeout
        } else {
            Stop::Slice
        };
        let parts = Parts::of(name, value, peer);
        match shared.judge(&parts, Instant::now() + slice, at_deadline, None) {
            Ok(allowed) => Some(allowed.into()),
            Err(Failed::Stopped(Stop::Slice)) => {
                let until = Self::now_ms() + SLOW_FOR.as_millis() as u64;
                shared.slow_until.store(until, Relaxed);
                None
            }
            Err(failed) => Some(failed.verdict(shared.timeout)),
        }
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
