//! `jnhp.log`, the one import a module may have: a line of its memory to
//! jnhpd's log, within budgets, so that a module cannot flood the log or
//! forge lines in it.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};

use wasmtime::{Caller, Linker};

use super::instance::Host;
use super::{base, engine, module, one_line};
use crate::validator::escape_controls;

/// Log lines one STORE's check may write, and one validator a second.
pub(super) const LINES_PER_STORE: u32 = 10;
const LINES_PER_SECOND: u32 = 100;
/// A log line is cut here.
const LINE_BYTES: usize = 1024;

/// Log lines a validator may still write this second.
#[derive(Debug)]
pub(super) struct LogBudget {
    name: String,
    /// The second (since [`base`]) the count is for, and the count.
    second: AtomicU64,
    lines: AtomicU32,
}

impl LogBudget {
    pub(super) fn new(validator: &str) -> LogBudget {
        LogBudget {
            name: validator.to_string(),
            second: AtomicU64::new(0),
            lines: AtomicU32::new(0),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Counts a line; whether this second's budget still allows it.
    pub(super) fn allows(&self) -> bool {
        let now = base().elapsed().as_secs();
        if self.second.swap(now, Relaxed) != now {
            self.lines.store(0, Relaxed);
        }
        self.lines.fetch_add(1, Relaxed) < LINES_PER_SECOND
    }
}

/// The linker every instance is made with: `jnhp.log` and nothing else.
pub(super) fn linker() -> Result<Linker<Host>, String> {
    let mut linker = Linker::new(engine::engine()?);
    let (module, name) = module::LOG_IMPORT;
    linker
        .func_wrap(module, name, log)
        .map_err(|e| format!("wasmtime: {}", one_line(&e)))?;
    Ok(linker)
}

/// `jnhp.log(address, length)`: one line of the module's memory to the
/// log, cut and escaped, within the budgets. Bytes outside the memory
/// trap (a module's bug, made visible).
fn log(mut caller: Caller<'_, Host>, address: i32, length: i32) -> wasmtime::Result<()> {
    // Over budget: nothing is read or formatted (a module may call this
    // in a loop).
    let write = caller.data_mut().count_line();
    let Some(wasmtime::Extern::Memory(memory)) = caller.get_export(module::MEMORY) else {
        return Err(wasmtime::Error::msg("jnhp.log: the module has no memory"));
    };
    let data = memory.data(&caller);
    // Unsigned 32-bit offsets, as the module's own.
    let start = address as u32 as usize;
    let end = start + length as u32 as usize;
    let Some(bytes) = data.get(start..end) else {
        return Err(wasmtime::Error::msg(format!(
            "jnhp.log: address {start} length {} is outside the module's memory",
            length as u32
        )));
    };
    if write {
        let cut = &bytes[..bytes.len().min(LINE_BYTES)];
        let text = escape_controls(&String::from_utf8_lossy(cut));
        let more = if bytes.len() > LINE_BYTES {
            " [cut]"
        } else {
            ""
        };
        log::info!("validator {}: {text}{more}", caller.data().validator());
    }
    Ok(())
}
