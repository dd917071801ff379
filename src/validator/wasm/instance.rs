//! One instance of a module and what it takes to judge a STORE with it:
//! the store's limits and clock, the STORE written into the module's
//! memory, the two calls, and every way they can fail.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use wasmtime::{
    InstancePre, Memory, Store, StoreLimits, StoreLimitsBuilder, TypedFunc, UpdateDeadline,
};

use super::log_import::LogBudget;
use super::{engine, module, one_line};
use crate::validator::{Cause, Peer, Verdict};

/// Table elements one instance may have (a table is a list of function
/// references; compilers emit one of a few entries), and tables.
const MAX_TABLE_ELEMENTS: usize = 100_000;
const MAX_TABLES: usize = 4;

/// Why a running check was stopped by the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Its inline slice ran out: it is run again on the blocking pool.
    Slice,
    /// Its `timeout_ms` ran out.
    Timeout,
    /// The chain no longer waits for it (its deadline).
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

/// When a check (or a start function) is stopped: at `at`, for `why`, or
/// when `cancel` is raised; or, with `cpu`, once the thread has spent
/// that much CPU time on it.
#[derive(Debug, Clone)]
pub(super) struct Deadline {
    pub at: Instant,
    pub why: Stop,
    pub cancel: Option<Arc<AtomicBool>>,
    /// An inline check's slice of the connection thread's CPU, not of the
    /// clock: a check preempted on a busy machine has not taken the
    /// thread's time.
    pub cpu: Option<CpuSlice>,
}

/// A slice of the thread's CPU time. It is counted from the clock's
/// first tick during the check, not from the check's start: reading the
/// thread's CPU clock is a system call, and most checks end before any
/// tick (so a check may use its slice plus up to one tick).
#[derive(Debug, Clone, Copy)]
pub(super) struct CpuSlice {
    slice: Duration,
    /// The thread's CPU time at the first tick, once there was one.
    from: Option<Duration>,
}

impl Deadline {
    pub(super) fn new(at: Instant, why: Stop) -> Deadline {
        Deadline {
            at,
            why,
            cancel: None,
            cpu: None,
        }
    }

    /// Stopped once this thread has spent `slice` of CPU time on the
    /// check (it runs on this thread), for `why`.
    pub(super) fn thread_cpu(slice: Duration, why: Stop) -> Deadline {
        Deadline {
            // Never reached first: the CPU limit is.
            at: Instant::now() + Duration::from_secs(3600),
            why,
            cancel: None,
            cpu: Some(CpuSlice { slice, from: None }),
        }
    }

    /// Whether the deadline has passed (called at each tick).
    fn passed(&mut self) -> bool {
        match &mut self.cpu {
            Some(cpu) => {
                let now = thread_cpu_time();
                let from = *cpu.from.get_or_insert(now);
                now.saturating_sub(from) >= cpu.slice
            }
            None => Instant::now() >= self.at,
        }
    }
}

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_time() -> Duration {
    let mut ts = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill; this
    // clock exists on every Linux jnhpd runs on (and on failure `ts`
    // stays zero: the check then runs on to its wall-clock deadline).
    unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// What one instance's store holds besides the instance.
pub(super) struct Host {
    limits: StoreLimits,
    /// The running call's deadline.
    deadline: Deadline,
    /// `jnhp.log` lines written during the running call.
    lines: u32,
    log: Arc<LogBudget>,
}

impl Host {
    /// Counts a `jnhp.log` line; whether it may be written (within the
    /// STORE's and the second's budgets).
    pub(super) fn count_line(&mut self) -> bool {
        self.lines = self.lines.saturating_add(1);
        self.lines <= super::log_import::LINES_PER_STORE && self.log.allows()
    }

    /// The validator's name, for its log lines.
    pub(super) fn validator(&self) -> &str {
        self.log.name()
    }
}

/// What every instance of one validator is made from.
pub(super) struct Template {
    pub pre: InstancePre<Host>,
    pub max_memory: usize,
    pub log: Arc<LogBudget>,
}

/// Why a check gave no verdict.
pub(super) enum Failed {
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

    pub(super) fn verdict(self, timeout: Duration) -> Verdict {
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
pub(super) struct Parts<'a> {
    name: &'a [u8],
    value: &'a [u8],
    peer: String,
    subject: &'a [u8],
}

impl<'a> Parts<'a> {
    pub(super) fn of(name: &'a [u8], value: &'a [u8], peer: &'a Peer) -> Parts<'a> {
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

/// A ready instance: its store and the three exports.
pub(super) struct Instance {
    store: Store<Host>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    check: TypedFunc<(i32, i32, i32, i32), i32>,
}

impl Template {
    /// Makes an instance, running the module's start function (if any)
    /// within `deadline`.
    pub(super) fn instantiate(&self, deadline: Deadline) -> Result<Instance, Failed> {
        let engine = engine::engine().map_err(Failed::NoInstance)?;
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.max_memory)
            .table_elements(MAX_TABLE_ELEMENTS)
            .instances(1)
            .memories(1)
            .tables(MAX_TABLES)
            .build();
        let host = Host {
            limits,
            deadline,
            lines: 0,
            log: self.log.clone(),
        };
        let mut store = Store::new(engine, host);
        store.limiter(|host| &mut host.limits);
        store.epoch_deadline_callback(|mut context| {
            let deadline = &mut context.data_mut().deadline;
            if deadline.cancel.as_ref().is_some_and(|c| c.load(Relaxed)) {
                return Err(Stop::Cancelled.into());
            }
            if deadline.passed() {
                return Err(deadline.why.into());
            }
            Ok(UpdateDeadline::Continue(1))
        });
        store.set_epoch_deadline(1);
        let _running = engine::Running::start().map_err(Failed::NoInstance)?;
        let instance =
            self.pre
                .instantiate(&mut store)
                .map_err(|e| match Failed::from_call(e) {
                    Failed::Trapped(why) => Failed::NoInstance(why),
                    other => other,
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
}

impl Instance {
    /// Runs the module on one STORE, stopped at `deadline`. The deadline
    /// is dropped afterwards (its cancel flag is the caller's).
    pub(super) fn judge(&mut self, parts: &Parts, deadline: Deadline) -> Result<bool, Failed> {
        let host = self.store.data_mut();
        host.deadline = deadline;
        host.lines = 0;
        self.store.set_epoch_deadline(1);
        let verdict = self.call(parts);
        self.store.data_mut().deadline.cancel = None;
        verdict
    }

    fn call(&mut self, parts: &Parts) -> Result<bool, Failed> {
        let lengths = parts.all().map(|p| p.len());
        let total = u32::try_from(lengths.iter().sum::<usize>())
            .ok()
            .filter(|&t| t <= i32::MAX as u32)
            .ok_or_else(|| Failed::Malformed("the STORE is too long for a 32-bit module".into()))?;
        let _running = engine::Running::start().map_err(Failed::NoInstance)?;
        let address = self
            .alloc
            .call(&mut self.store, total as i32)
            .map_err(Failed::from_call)?;
        // An address is an unsigned 32-bit offset (a memory may reach
        // 4 GiB).
        let start = address as u32 as usize;
        let size = self.memory.data_size(&self.store);
        if start + total as usize > size {
            return Err(Failed::Malformed(format!(
                "{} answered address {start} for {total} bytes; its memory has {size}",
                module::ALLOC
            )));
        }
        let mut at = start;
        for part in parts.all() {
            // In bounds: checked above (and below 2^33: no overflow).
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
