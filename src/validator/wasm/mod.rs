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
mod instance;
mod log_import;
pub(crate) mod module;

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

use wasmtime::Trap;

pub use module::CompiledModule;

use super::spec::WasmSpec;
use super::{Cause, Peer, Validator, Verdict, escape_controls};
use crate::metrics::ValidatorStats;
use instance::{Deadline, Failed, Instance, Parts, Stop, Template};

/// How long a check may run inline before it is moved to a thread of its
/// own: a few of these at most stall a connection's thread.
const INLINE_SLICE: Duration = Duration::from_millis(1);

/// After this many checks in a row overran their inline slice (a module
/// that is slow, not one preempted once on a busy machine), that
/// validator's STOREs go straight to threads of their own for
/// [`SLOW_FOR`].
const SLOW_AFTER: u32 = 3;
const SLOW_FOR: Duration = Duration::from_secs(1);

/// Slow checks running at once, across all wasm validators: twice the
/// cores, at least 4. A check is CPU-bound (a module can do nothing
/// else): more at once would only share the cores more thinly, and take
/// them from the threads that serve connections.
fn slow_runs() -> &'static Semaphore {
    static SLOW_RUNS: OnceLock<Semaphore> = OnceLock::new();
    SLOW_RUNS.get_or_init(|| Semaphore::new(slow_runs_max()))
}

fn slow_runs_max() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cores).max(4)
}

/// How much lower than the threads serving connections a slow check's
/// thread runs (its nice value): the scheduler gives those threads about
/// nine times its share of a core.
const SLOW_NICE: i32 = 10;

/// Past its deadline, how long a slow check's thread may take to notice
/// before the STORE is answered without it (a low-priority thread on a
/// busy machine may not run at once; it stops when it does).
const SLOW_GRACE: Duration = Duration::from_millis(100);

/// The first line of an error from wasmtime (its messages can span
/// lines; ours are one log line each).
pub(crate) fn one_line(err: &wasmtime::Error) -> String {
    let text = match err.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{err:#}"),
    };
    escape_controls(text.lines().next().unwrap_or_default())
}

/// The instant the validators' clocks count from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    base().elapsed().as_millis() as u64
}

/// What a wasm validator's clones (the validator, its blocking-pool
/// checks) share.
struct Shared {
    template: Template,
    timeout: Duration,
    /// Instances not judging a STORE now.
    idle: Mutex<Vec<Instance>>,
    /// One per instance: `max_concurrent`.
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    /// Until when (ms since [`base`]) STOREs skip the inline try.
    slow_until: AtomicU64,
    /// Inline checks in a row that overran their slice.
    overruns: AtomicU32,
    stats: Arc<ValidatorStats>,
}

impl Shared {
    fn idle(&self) -> MutexGuard<'_, Vec<Instance>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Judges one STORE on an idle instance (or a new one), putting the
    /// instance back unless it failed: a broken state never judges a
    /// second STORE.
    fn judge(&self, parts: &Parts, deadline: Deadline) -> Result<bool, Failed> {
        let idle = self.idle().pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => self.template.instantiate(deadline.clone())?,
        };
        let verdict = instance.judge(parts, deadline)?;
        self.idle().push(instance);
        Ok(verdict)
    }

    /// An instance permit, then a blocking-pool slot, waiting up to the
    /// validator's timeout for both (a slot is never held while waiting
    /// for an instance: it would keep other validators' checks out).
    async fn acquire(&self) -> Result<(OwnedSemaphorePermit, SemaphorePermit<'static>), Verdict> {
        let ready = self
            .permits
            .clone()
            .try_acquire_owned()
            .ok()
            .and_then(|instance| Some((instance, slow_runs().try_acquire().ok()?)));
        if let Some(permits) = ready {
            return Ok(permits);
        }
        // Queued until the wait ends, however it ends: the chain's
        // deadline drops this future mid-wait.
        let _waiting = super::process::Waiting::new(&self.stats);
        let both = async {
            let instance = self.permits.clone().acquire_owned().await.ok()?;
            let run = slow_runs().acquire().await.ok()?;
            Some((instance, run))
        };
        match tokio::time::timeout(self.timeout, both).await {
            Ok(Some(permits)) => Ok(permits),
            // The semaphores are never closed.
            _ => Err(Verdict::Failure(
                Cause::Timeout,
                format!(
                    "no instance free within timeout_ms ({} ms): {} for this validator, {} slow checks for all wasm validators",
                    self.timeout.as_millis(),
                    self.max_concurrent,
                    slow_runs_max(),
                ),
            )),
        }
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

/// Whether `spec`'s module makes an instance within its limits (its
/// memory, its start function): the config's check, before any STORE.
/// `name` is the validator's (the start function may log).
pub(crate) fn check_instance(spec: &WasmSpec, name: &str) -> Result<(), String> {
    let stats = ValidatorStats::new(name.into(), "wasm");
    Wasm::new(spec, stats).map(drop)
}

impl Wasm {
    /// The validator `spec` describes. Makes one instance at once, so
    /// that a module whose start function fails, or that needs more
    /// memory than allowed, is refused with the config rather than failing
    /// every STORE.
    pub(crate) fn new(spec: &WasmSpec, stats: Arc<ValidatorStats>) -> Result<Wasm, String> {
        let pre = log_import::linker()?
            .instantiate_pre(spec.module.module())
            .map_err(|e| one_line(&e))?;
        let template = Template {
            pre,
            max_memory: spec.max_memory,
            log: Arc::new(log_import::LogBudget::new(&stats.name)),
        };
        let first = template
            .instantiate(Deadline::new(Instant::now() + spec.timeout, Stop::Timeout))
            .map_err(|failed| match failed {
                Failed::Stopped(_) => format!(
                    "its start function ran past timeout_ms ({} ms)",
                    spec.timeout.as_millis()
                ),
                Failed::Trapped(why) | Failed::Malformed(why) | Failed::NoInstance(why) => {
                    format!("cannot make an instance: {why}")
                }
            })?;
        let shared = Shared {
            template,
            timeout: spec.timeout,
            idle: Mutex::new(vec![first]),
            permits: Arc::new(Semaphore::new(spec.max_concurrent)),
            max_concurrent: spec.max_concurrent,
            slow_until: AtomicU64::new(0),
            overruns: AtomicU32::new(0),
            stats,
        };
        Ok(Wasm {
            shared: Arc::new(shared),
            description: format!("wasm {}", spec.path.display()),
        })
    }
}

/// Makes the calling thread (a slow check's own) run at [`SLOW_NICE`].
/// Best effort: without it the check runs at normal priority.
fn lower_priority() {
    let tid = nix::unistd::gettid().as_raw();
    // SAFETY: setpriority has no memory effects; `tid` is this thread's.
    let failed = unsafe {
        nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid as nix::libc::id_t, SLOW_NICE)
    } != 0;
    if failed {
        log::debug!(
            "a wasm check runs at normal priority: setpriority: {}",
            std::io::Error::last_os_error()
        );
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
        let started = Instant::now();
        let permits = match self.shared.acquire().await {
            Ok(permits) => permits,
            Err(verdict) => return verdict,
        };
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let deadline = Deadline {
            cancel: Some(cancel.0.clone()),
            ..Deadline::new(started + self.shared.timeout, Stop::Timeout)
        };
        let shared = self.shared.clone();
        let (name, value, peer) = (name.to_vec(), value.to_vec(), peer.clone());
        let (answer, verdict) = tokio::sync::oneshot::channel();
        let until = deadline.at;
        let check = move || {
            let _permits = permits;
            lower_priority();
            let parts = Parts::of(&name, &value, &peer);
            let verdict = shared
                .judge(&parts, deadline)
                .map_err(|f| f.verdict(shared.timeout));
            let _ = answer.send(verdict);
        };
        // A thread of its own, of lower priority: a slow check has taken a
        // millisecond already, so starting a thread costs little, and a
        // module that loops takes CPU from connections only at a tenth of
        // their priority.
        let spawned = std::thread::Builder::new()
            .name("jnhpd-wasm-check".into())
            .spawn(check);
        if let Err(err) = spawned {
            return Verdict::Failure(Cause::Spawn, format!("cannot start a thread: {err}"));
        }
        let give_up = tokio::time::Instant::from_std(until + SLOW_GRACE);
        let verdict = match tokio::time::timeout_at(give_up, verdict).await {
            Ok(Ok(Ok(allowed))) => allowed.into(),
            Ok(Ok(Err(verdict))) => verdict,
            Ok(Err(_)) => {
                Verdict::Failure(Cause::NoVerdict, "its check ended without a verdict".into())
            }
            Err(_) => Failed::Stopped(Stop::Timeout).verdict(self.shared.timeout),
        };
        drop(cancel);
        verdict
    }

    fn check_now(&self, name: &[u8], value: &[u8], peer: &Peer) -> Option<Verdict> {
        let shared = &self.shared;
        if now_ms() < shared.slow_until.load(Relaxed) {
            return None;
        }
        let _permit = shared.permits.try_acquire().ok()?;
        let slice = INLINE_SLICE.min(shared.timeout);
        let why = if slice == shared.timeout {
            Stop::Timeout
        } else {
            Stop::Slice
        };
        let parts = Parts::of(name, value, peer);
        let judged = shared.judge(&parts, Deadline::thread_cpu(slice, why));
        if !matches!(judged, Err(Failed::Stopped(Stop::Slice))) {
            shared.overruns.store(0, Relaxed);
        }
        match judged {
            Ok(allowed) => Some(allowed.into()),
            Err(Failed::Stopped(Stop::Slice)) => {
                if shared.overruns.fetch_add(1, Relaxed) + 1 >= SLOW_AFTER {
                    shared.overruns.store(0, Relaxed);
                    let until = now_ms() + SLOW_FOR.as_millis() as u64;
                    shared.slow_until.store(until, Relaxed);
                }
                None
            }
            Err(failed) => Some(failed.verdict(shared.timeout)),
        }
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
