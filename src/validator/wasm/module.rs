//! A validator's module, read, compiled and checked against jnhpd's
//! interface (docs/wasm.md) once, when the config is loaded: every error
//! an operator can make shows then, with the config's file, line and key,
//! and never as a failed STORE.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use wasmtime::{ExternType, FuncType, Module, ValType};

/// The largest module file read: a check compiled with a whole language
/// runtime fits; a file larger is not a validator.
pub(crate) const MODULE_FILE: crate::base::files::Limit = crate::base::files::Limit {
    what: "a WebAssembly module",
    max_bytes: 32 << 20,
};

/// The import a module may have: `jnhp.log(address, length)`.
pub(crate) const LOG_IMPORT: (&str, &str) = ("jnhp", "log");
/// The exports a module must have.
pub(crate) const MEMORY: &str = "memory";
pub(crate) const ALLOC: &str = "jnhp_alloc";
pub(crate) const CHECK: &str = "jnhp_check";

/// A compiled module and the SHA-256 of its file. Two are equal when
/// their files are: a reload that finds the same bytes keeps the running
/// validator.
#[derive(Clone)]
pub struct CompiledModule {
    digest: [u8; 32],
    module: Module,
}

impl CompiledModule {
    pub(crate) fn module(&self) -> &Module {
        &self.module
    }
}

impl PartialEq for CompiledModule {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
    }
}

impl fmt::Debug for CompiledModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: String = self.digest[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        write!(f, "CompiledModule(sha256 {hex}…)")
    }
}

/// Modules compiled lately, by digest: a reload (or `--check-config`
/// followed by the start) of an unchanged file does not compile it again.
/// Bounded: a few files, replaced a few times.
static COMPILED: Mutex<Option<HashMap<[u8; 32], Module>>> = Mutex::new(None);
const COMPILED_KEPT: usize = 16;

/// Reads `path`, compiles it and checks its imports and exports.
pub(crate) fn load(path: &Path) -> Result<CompiledModule, String> {
    let bytes = crate::base::files::read(path, MODULE_FILE).map_err(|e| e.detail())?;
    let digest: [u8; 32] = Sha256::digest(&bytes).into();
    let cached = lock().as_ref().and_then(|m| m.get(&digest).cloned());
    let module = match cached {
        Some(module) => module,
        None => {
            let engine = super::engine::engine()?;
            let module = compile(engine, &bytes)?;
            check_interface(&module)?;
            let mut compiled = lock();
            let kept = compiled.get_or_insert_with(HashMap::new);
            if kept.len() >= COMPILED_KEPT {
                kept.clear();
            }
            kept.insert(digest, module.clone());
            module
        }
    };
    Ok(CompiledModule { digest, module })
}

/// The module in `bytes` (binary or text form, told apart by content),
/// validated, then compiled: each step's error said as what it is.
fn compile(engine: &wasmtime::Engine, bytes: &[u8]) -> Result<Module, String> {
    let binary = if bytes.starts_with(b"\0asm") {
        std::borrow::Cow::Borrowed(bytes)
    } else {
        let text = wat::parse_bytes(bytes).map_err(|e| {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or_default().to_string();
            format!(
                "neither a WebAssembly module nor its text form: {}",
                escape(&first)
            )
        })?;
        std::borrow::Cow::Owned(text.into_owned())
    };
    Module::validate(engine, &binary)
        .map_err(|e| format!("not a valid WebAssembly module: {}", super::one_line(&e)))?;
    Module::new(engine, &binary).map_err(|e| {
        let why = super::one_line(&e);
        if why.contains("executable") {
            format!(
                "cannot compile it: the system refuses executable memory \
                 (under systemd, MemoryDenyWriteExecute=yes; see docs/security.md): {why}"
            )
        } else {
            format!("cannot compile it: {why}")
        }
    })
}

fn escape(text: &str) -> String {
    crate::validator::escape_controls(text)
}

fn lock() -> std::sync::MutexGuard<'static, Option<HashMap<[u8; 32], Module>>> {
    COMPILED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `ty` is `(func (param i32 ×params) (result i32 ×results))`.
fn is_i32_func(ty: &FuncType, params: usize, results: usize) -> bool {
    ty.params().len() == params
        && ty.results().len() == results
        && ty
            .params()
            .chain(ty.results())
            .all(|t| matches!(t, ValType::I32))
}

/// The module has jnhpd's interface: no import but `jnhp.log`, and the
/// three exports, each of its type.
fn check_interface(module: &Module) -> Result<(), String> {
    for import in module.imports() {
        let ok = (import.module(), import.name()) == LOG_IMPORT
            && matches!(import.ty(), ExternType::Func(ty) if is_i32_func(&ty, 2, 0));
        if !ok {
            return Err(format!(
                "imports {}.{} ({}): a wasm validator may import only jnhp.log, of type (func (param i32 i32))",
                import.module(),
                import.name(),
                describe(&import.ty())
            ));
        }
    }
    let export = |name: &str| module.get_export(name);
    match export(MEMORY) {
        Some(ExternType::Memory(_)) => {}
        Some(other) => {
            return Err(format!(
                "exports {MEMORY} as {}, not a memory",
                describe(&other)
            ));
        }
        None => return Err(format!("does not export its memory as {MEMORY:?}")),
    }
    for (name, params, wanted) in [
        (ALLOC, 1, "(func (param i32) (result i32))"),
        (CHECK, 4, "(func (param i32 i32 i32 i32) (result i32))"),
    ] {
        match export(name) {
            Some(ExternType::Func(ty)) if is_i32_func(&ty, params, 1) => {}
            Some(other) => {
                return Err(format!(
                    "exports {name} as {}, not {wanted}",
                    describe(&other)
                ));
            }
            None => return Err(format!("does not export {name} {wanted}")),
        }
    }
    Ok(())
}

/// A short description of an import's or export's type.
fn describe(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => {
            let list = |it: &mut dyn Iterator<Item = ValType>| {
                it.map(|t| t.to_string()).collect::<Vec<_>>().join(" ")
            };
            format!(
                "a function ({}) -> ({})",
                list(&mut f.params()),
                list(&mut f.results())
            )
        }
        ExternType::Memory(_) => "a memory".into(),
        ExternType::Table(_) => "a table".into(),
        ExternType::Global(_) => "a global".into(),
        _ => "another kind of item".into(),
    }
}
