//! The one wasmtime [`Engine`] of the process and the clock that
//! interrupts modules.
//!
//! A module is stopped by *epoch interruption*: compiled code checks a
//! counter at function entries and loop back-edges, and a thread of ours
//! advances it every [`TICK`]. That costs a load and a compare in the
//! module, where fuel metering would cost a counter update per block; the
//! price is that time is measured in ticks, so a deadline is kept within a
//! tick. The thread only ticks while modules run (and for a second after),
//! so an idle daemon with wasm validators does not wake a thousand times a
//! second.

use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::thread::Thread;
use std::time::Duration;

use wasmtime::{Config, Engine, OptLevel};

/// How often the epoch advances while modules run: the precision of every
/// wasm deadline.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Ticks without a running module before the clock thread parks.
const IDLE_TICKS: u32 = 1000;

/// The most wasm stack a call may use. A call runs on the thread that
/// serves the connection (2 MiB of stack) or on a blocking-pool thread:
/// a module that recurses past this traps (stack overflow), well before
/// the thread's own stack ends.
const MAX_WASM_STACK: usize = 512 << 10;

struct Clock {
    engine: Engine,
    /// Calls into modules running now.
    running: AtomicUsize,
    /// The clock thread is parked (or about to be): a call that starts
    /// must wake it.
    parked: AtomicBool,
    thread: Thread,
}

static CLOCK: OnceLock<Result<Clock, String>> = OnceLock::new();

/// The engine every wasm validator compiles with and runs on: modules are
/// compiled for one engine and cannot move to another.
pub(crate) fn engine() -> Result<&'static Engine, String> {
    clock().map(|c| &c.engine)
}

fn clock() -> Result<&'static Clock, String> {
    CLOCK.get_or_init(start).as_ref().map_err(Clone::clone)
}

fn start() -> Result<Clock, String> {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .cranelift_opt_level(OptLevel::Speed)
        .max_wasm_stack(MAX_WASM_STACK)
        // A trap's message is enough for the log; collecting a backtrace
        // makes every trap slower.
        .wasm_backtrace_max_frames(None);
    let engine = Engine::new(&config).map_err(|e| format!("wasmtime: {e}"))?;
    let thread = std::thread::Builder::new()
        .name("jnhpd-wasm-clock".into())
        .spawn(tick)
        .map_err(|e| format!("cannot start the wasm clock thread: {e}"))?
        .thread()
        .clone();
    Ok(Clock {
        engine,
        running: AtomicUsize::new(0),
        parked: AtomicBool::new(false),
        thread,
    })
}

/// The clock thread: advances the epoch every tick while modules run,
/// for the life of the process (the engine lives as long).
fn tick() {
    // The Clock is set once this thread's spawn returned.
    let clock = loop {
        match CLOCK.get() {
            Some(Ok(clock)) => break clock,
            Some(Err(_)) => return,
            None => std::thread::sleep(TICK),
        }
    };
    let mut idle = 0;
    loop {
        std::thread::sleep(TICK);
        clock.engine.increment_epoch();
        if clock.running.load(SeqCst) > 0 {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < IDLE_TICKS {
            continue;
        }
        // Park, unless a call started meanwhile: a call raises `running`
        // before it reads `parked`, and this reads `running` after raising
        // `parked`, so one of the two sees the other.
        clock.parked.store(true, SeqCst);
        if clock.running.load(SeqCst) == 0 {
            std::thread::park();
        }
        clock.parked.store(false, SeqCst);
        idle = 0;
    }
}

/// Held while a module runs: keeps the clock ticking.
pub(crate) struct Running(&'static Clock);

impl Running {
    pub(crate) fn start() -> Result<Running, String> {
        let clock = clock()?;
        clock.running.fetch_add(1, SeqCst);
        if clock.parked.load(SeqCst) {
            clock.thread.unpark();
        }
        Ok(Running(clock))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, SeqCst);
    }
}
