//! Nothing a validator program starts outlives it, not even processes that
//! left its process group (`setsid`, a double fork).
//!
//! Killing a program's process group reaches everything that stayed in it.
//! A process that called `setsid` did not; when its parent dies it is
//! re-parented, and because jnhpd makes itself a *child subreaper*
//! ([`become_subreaper`]) it comes back to jnhpd rather than to init. Such
//! an orphan is then a child of jnhpd that jnhpd never spawned.
//!
//! To tell whose orphan it is, every program jnhpd runs gets
//! `JNHP_RUN=<tag>` in its environment, which its descendants inherit. The
//! tag is 128 random bits, not a counter: a program cannot name another
//! run's tag (a helper's that lives for ever, say) to keep what it leaves
//! behind alive past its own end. When
//! a run ends (its program exited or was killed; the [`Run`] is dropped),
//! the orphans carrying its id are killed; orphans without a live run's id (the
//! environment cleared, or their run already over) are killed as soon as a
//! sweep sees them, and all of them when jnhpd stops ([`kill_orphans`]).
//! Nothing tells jnhpd that an orphan has arrived, so it sweeps when a run
//! ends, again after each orphan it kills (whose children arrive as it
//! dies), and every second while runs are live (a watcher task). Every
//! orphan killed is reaped here by its pid; jnhpd never waits on "any
//! child", which would steal the exit status of a program tokio is
//! watching.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use tokio::sync::Notify;

/// The environment variable naming the run a process descends from.
pub const RUN_VAR: &str = "JNHP_RUN";

/// What jnhpd spawned itself, and which runs are still going.
struct Registry {
    /// Pids of the programs jnhpd started (not orphans), while they live.
    spawned: BTreeSet<i32>,
    live_runs: BTreeSet<u128>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    spawned: BTreeSet::new(),
    live_runs: BTreeSet::new(),
});

/// Set by [`become_subreaper`]. Without it nothing is swept: in a process
/// that is not jnhpd (a test harness, a library user's program) other
/// children are none of the validators' business.
static SUBREAPER: AtomicBool = AtomicBool::new(false);

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // Every change is a single insert or remove: a panic elsewhere cannot
    // leave the sets half-updated.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Makes this process the subreaper of its descendants (Linux), so that
/// validator programs' orphans come back to it. Called once by the daemon.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and
    // changes only this process's own attribute.
    let rc = unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        SUBREAPER.store(true, Ordering::Relaxed);
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One run of a validator program: its id is in the program's environment.
/// Dropping it ends the run: its orphans are killed.
#[derive(Debug)]
pub struct Run {
    id: u128,
    pid: Option<i32>,
}

impl Run {
    /// Spawns `command` as a new run, without jnhpd's secrets in its
    /// environment. The registry lock is held across the spawn, so a sweep
    /// can never take the new program for an orphan.
    pub fn spawn(
        command: &mut tokio::process::Command,
    ) -> std::io::Result<(Run, tokio::process::Child)> {
        let id = random_tag()?;
        command.env(RUN_VAR, format!("{id:032x}"));
        // Every validator program starts here: the one place to keep
        // jnhpd's secrets from them.
        super::withhold_secrets(command);
        let mut registry = registry();
        let child = command.spawn()?;
        let pid = child.id().map(|p| p as i32);
        registry.live_runs.insert(id);
        if let Some(pid) = pid {
            registry.spawned.insert(pid);
        }
        drop(registry);
        RUN_STARTED.notify_one();
        start_watching();
        Ok((Run { id, pid }, child))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        {
            let mut registry = registry();
            registry.live_runs.remove(&self.id);
            if let Some(pid) = self.pid {
                registry.spawned.remove(&pid);
            }
        }
        sweep(false);
    }
}

/// How often jnhpd looks for orphans while programs run. Nothing tells
/// jnhpd when one arrives: the exit that re-parents it is signalled to its
/// parent (a validator's descendant), not to jnhpd.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Whether the watcher task runs (started by the first run, in jnhpd).
static WATCHING: AtomicBool = AtomicBool::new(false);

/// Wakes the watcher when a run starts: it sleeps while none is live.
static RUN_STARTED: Notify = Notify::const_new();

/// Starts the watcher on the current runtime if it is not running yet.
fn start_watching() {
    if !SUBREAPER.load(Ordering::Relaxed) || WATCHING.swap(true, Ordering::Relaxed) {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(watch())),
        Err(_) => WATCHING.store(false, Ordering::Relaxed),
    }
}

/// Sweeps every [`WATCH_EVERY`] while some run is live, so that an orphan
/// that arrives while its run goes on (its environment cleared, it is no
/// run's) is killed within about a second, not when some run ends. With
/// no run live no orphan can arrive (the last run's end swept them all),
/// so an idle jnhpd is not woken.
async fn watch() {
    loop {
        let live = !registry().live_runs.is_empty();
        if live {
            tokio::time::sleep(WATCH_EVERY).await;
        } else {
            RUN_STARTED.notified().await;
        }
        // /proc reads and waits for the killed: not on a runtime worker.
        let _ = tokio::task::spawn_blocking(|| sweep(false)).await;
    }
}

/// A fresh run tag: 128 bits from the kernel's random source, so that no
/// program can guess the tag of a run it did not start.
fn random_tag() -> std::io::Result<u128> {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        let rest = &mut bytes[filled..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`,
        // a live, writable buffer of that length.
        let n = unsafe { nix::libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        filled += n as usize;
    }
    Ok(u128::from_ne_bytes(bytes))
}

/// Sweeps now for orphans of runs that are over (a process validator whose
/// program exited looks once more before it stops reading its pipes).
pub(super) fn sweep_now() {
    sweep(false);
}

/// Kills and reaps every orphan, whatever run it belongs to (shutdown).
pub fn kill_orphans() {
    sweep(true);
}

/// Passes of one sweep at most; a tree deeper than this (it would take a
/// process forking as fast as it is killed) is finished by the next sweep.
const SWEEP_PASSES: usize = 64;

/// Kills and reaps the orphans that belong to no live run (all of them
/// when `all`). Killing an orphan re-parents its own children to jnhpd
/// (they arrive during the sweep), so it looks again until a look finds
/// nothing to kill. Cheap when there are none: one read of /proc's task
/// list.
fn sweep(all: bool) {
    if !SUBREAPER.load(Ordering::Relaxed) {
        return;
    }
    for _ in 0..SWEEP_PASSES {
        if sweep_once(all) == 0 {
            return;
        }
    }
}

/// One look at jnhpd's children: kills and reaps the orphans among them;
/// returns how many.
fn sweep_once(all: bool) -> usize {
    let me = std::process::id() as i32;
    // /proc is read without the registry's lock, which every spawn takes.
    // The lock is taken after the listing: a program listed here was
    // forked before, under the lock, and is in `spawned` once we hold it.
    let candidates: Vec<(i32, Option<u128>)> = children_of(me)
        .into_iter()
        .map(|pid| (pid, if all { None } else { run_of(pid) }))
        .collect();
    let victims: Vec<i32> = {
        let registry = registry();
        candidates
            .into_iter()
            .filter(|(pid, _)| !registry.spawned.contains(pid))
            .filter(|(_, run)| all || !run.is_some_and(|run| registry.live_runs.contains(&run)))
            .map(|(pid, _)| pid)
            .collect()
    };
    let killed = victims.len();
    for pid in victims {
        let pid = Pid::from_raw(pid);
        log::debug!("killing {pid}, left behind by a validator program");
        // An orphan that already exited is a zombie: the kill does nothing
        // and the wait reaps it. SIGKILL cannot be caught, so the wait is
        // short. Only this pid is waited for, never "any child".
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
    killed
}

/// This process's children, from /proc/self/task/*/children.
fn children_of(me: i32) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) else {
        return pids;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The run a process descends from, from its environment.
fn run_of(pid: i32) -> Option<u128> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{RUN_VAR}=");
    environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(prefix.as_bytes()))
        .and_then(|id| u128::from_str_radix(std::str::from_utf8(id).ok()?, 16).ok())
}
