//! `[[validator]]` tables, resolved into [`ValidatorSpec`]s: which keys
//! each kind takes, their ranges, the programs and denylists they name.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::ConfigError;
use super::place::Source;
use super::raw::{Kind, RawValidation, RawValidator, out_of_range};
use crate::validator::spec::{
    Check, DecisionLogTarget, DenyCacheSpec, Field, HelperSpec, ProcessSpec, ValidationSpec,
    ValidatorSpec, WasmSpec,
};

/// Resolves the tables in order and refuses a name given twice.
pub(super) fn resolve(
    raw: Vec<RawValidator>,
    src: &Source,
) -> Result<Vec<ValidatorSpec>, ConfigError> {
    let name_spans: Vec<Option<usize>> = raw
        .iter()
        .map(|raw| raw.name.as_ref().map(|n| n.span().start))
        .collect();
    let validators = raw
        .into_iter()
        .enumerate()
        .map(|(i, raw)| raw.resolve(i, src.base))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            src.invalid(
                src.line(e.at),
                &format!("validator[{}].{}", e.index, e.key),
                e.message,
            )
        })?;
    for (i, spec) in validators.iter().enumerate() {
        if let Some(first) = validators[..i].iter().position(|v| v.name == spec.name) {
            return Err(src.invalid(
                name_spans[i].map_or(1, |at| src.line(at)),
                &format!("validator[{i}].name"),
                format!("{:?} is already the name of validator[{first}]", spec.name),
            ));
        }
    }
    Ok(validators)
}

/// Resolves `[validation]`. A decision log file must not be one of
/// jnhpd's own files (`own_files`: each file, if set, and what it is:
/// config, data file, pidfile, log file, denylists); `places` gets its
/// line.
pub(super) fn resolve_validation(
    raw: RawValidation,
    src: &Source,
    own_files: &[(Option<&Path>, &str)],
    places: &mut super::Places,
) -> Result<ValidationSpec, ConfigError> {
    let RawValidation {
        deadline_ms,
        decision_log,
        decision_log_values,
        decision_log_buffer,
    } = raw;
    let line = src.key_line(&["decision_log"], "[validation]");
    let decision_log = match decision_log.get_ref().as_str() {
        "" => DecisionLogTarget::Off,
        "stderr" => DecisionLogTarget::Stderr,
        file => {
            let path = src.base.join(file);
            let clash = own_files.iter().find(|(other, _)| {
                other.is_some_and(|other| super::daemon::same_file(&path, other))
            });
            if let Some((_, what)) = clash {
                let message = format!(
                    "{} is {what}: decisions appended there would damage it",
                    path.display()
                );
                return Err(src.invalid(line, "validation.decision_log", message));
            }
            // Whether it can be appended to is checked by `--check-config`
            // and the start (naming this line), not here: a reload must
            // not be refused over a file it does not open (SIGHUP only
            // reopens it, keeping the old file if that fails).
            places.set("validation.decision_log", line);
            DecisionLogTarget::File(path)
        }
    };
    Ok(ValidationSpec {
        deadline: (deadline_ms > 0).then(|| Duration::from_millis(deadline_ms)),
        decision_log,
        log_values: decision_log_values,
        log_buffer: decision_log_buffer,
    })
}

/// A problem with one `[[validator]]` table, located by byte offset.
struct ValidatorError {
    index: usize,
    at: usize,
    key: &'static str,
    message: String,
}

/// Where a key was written (its span's start), if it was.
fn at<T>(key: &Option<Spanned<T>>) -> Option<usize> {
    key.as_ref().map(|k| k.span().start)
}

/// Resolves one `[[validator]]` table. Each kind's arm names every key of
/// the table, as used or as foreign, and the table is destructured whole:
/// a key added to [`RawValidator`] and forgotten here fails to compile
/// (unused variable), instead of being silently without effect.
struct Resolver<'a> {
    index: usize,
    base: &'a Path,
    kind: Kind,
    kind_at: usize,
}

impl Resolver<'_> {
    fn err(&self, at: usize, key: &'static str, message: String) -> ValidatorError {
        ValidatorError {
            index: self.index,
            at,
            key,
            message,
        }
    }

    fn required(&self, key: &'static str) -> ValidatorError {
        let kind = kind_name(self.kind);
        self.err(self.kind_at, key, format!("required by kind = \"{kind}\""))
    }

    /// Keys set in the table that `what` (a kind or a function) does not
    /// take are errors, like unknown keys.
    fn refuse(
        &self,
        foreign: &[(&'static str, Option<usize>)],
        what: &str,
    ) -> Result<(), ValidatorError> {
        match foreign.iter().find_map(|(key, at)| at.map(|at| (key, at))) {
            Some((key, at)) => Err(self.err(at, key, format!("not used by {what}"))),
            None => Ok(()),
        }
    }

    fn refuse_for_kind(
        &self,
        foreign: &[(&'static str, Option<usize>)],
    ) -> Result<(), ValidatorError> {
        self.refuse(foreign, &format!("kind = \"{}\"", kind_name(self.kind)))
    }

    /// An integer key within `min..=max`, or `default` when absent.
    fn ranged(
        &self,
        value: Option<Spanned<i64>>,
        key: &'static str,
        (min, max): (u64, u64),
        default: u64,
    ) -> Result<u64, ValidatorError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let n = *value.get_ref();
        u64::try_from(n)
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| self.err(value.span().start, key, out_of_range(n, min, max)))
    }

    /// `ranged` for keys that size something in memory.
    fn ranged_usize(
        &self,
        value: Option<Spanned<i64>>,
        key: &'static str,
        range: (u64, u64),
        default: u64,
    ) -> Result<usize, ValidatorError> {
        // The ranges read this way end far below 2^32.
        let n = self.ranged(value, key, range, default)?;
        Ok(n as usize)
    }

    fn function(
        &self,
        function: Option<Spanned<String>>,
        max: Option<Spanned<i64>>,
        field: Option<Spanned<Field>>,
        pattern: Option<Spanned<String>>,
    ) -> Result<Check, ValidatorError> {
        let function = function.ok_or_else(|| self.required("function"))?;
        match function.get_ref().as_str() {
            "max_bytes" => {
                self.refuse(&[("field", at(&field)), ("pattern", at(&pattern))], "function = \"max_bytes\"")?;
                if max.is_none() {
                    return Err(self.required("max"));
                }
                let max = self.ranged(max, "max", RANGE_MAX_BYTES, 0)?;
                Ok(Check::MaxBytes { max })
            }
            "regex" => {
                self.refuse(&[("max", at(&max))], "function = \"regex\"")?;
                let pattern = pattern.ok_or_else(|| self.required("pattern"))?;
                if let Err(e) = regex::bytes::Regex::new(pattern.get_ref()) {
                    return Err(self.err(pattern.span().start, "pattern", format!("invalid regex: {e}")));
                }
                Ok(Check::Regex {
                    field: field.map(|f| f.into_inner()).unwrap_or_default(),
                    pattern: pattern.into_inner(),
                })
            }
            other => Err(self.err(
                function.span().start,
                "function",
                format!("unknown function {other:?} for kind = \"function\", expected \"max_bytes\" or \"regex\""),
            )),
        }
    }

    fn blocking(
        &self,
        function: Option<Spanned<String>>,
        path: Option<Spanned<PathBuf>>,
    ) -> Result<Check, ValidatorError> {
        let function = function.ok_or_else(|| self.required("function"))?;
        if function.get_ref() != "denylist" {
            return Err(self.err(
                function.span().start,
                "function",
                format!(
                    "unknown function {:?} for kind = \"blocking\", expected \"denylist\"",
                    function.get_ref()
                ),
            ));
        }
        let path = path.ok_or_else(|| self.required("path"))?;
        let at = path.span().start;
        let path = self.base.join(path.into_inner());
        if let Err(e) = crate::base::files::check(&path, crate::base::files::DENYLIST) {
            let message = format!("cannot read {}: {}", path.display(), e.detail());
            return Err(self.err(at, "path", message));
        }
        Ok(Check::Denylist { path })
    }

    /// `command`, resolved: the program and its arguments.
    fn command(
        &self,
        command: Option<Spanned<Vec<String>>>,
    ) -> Result<(PathBuf, Vec<String>), ValidatorError> {
        let command = command.ok_or_else(|| self.required("command"))?;
        let at = command.span().start;
        let mut command = command.into_inner().into_iter();
        let Some(program) = command.next() else {
            return Err(self.err(at, "command", "must name a program".into()));
        };
        let program = find_program(&program, self.base)
            .map_err(|message| self.err(at, "command", message))?;
        Ok((program, command.collect()))
    }

    /// `deny_cache_secs` turns the cache on; `deny_cache_entries` alone
    /// would be a cache that is never used: refused, so that an
    /// operator who meant to turn it on learns that it is not.
    fn deny_cache(
        &self,
        secs: Option<Spanned<i64>>,
        entries: Option<Spanned<i64>>,
    ) -> Result<Option<DenyCacheSpec>, ValidatorError> {
        if secs.is_none() {
            return match entries {
                Some(entries) => Err(self.err(
                    entries.span().start,
                    "deny_cache_entries",
                    "has no effect without deny_cache_secs (the cache is off)".into(),
                )),
                None => Ok(None),
            };
        }
        let secs = self.ranged(secs, "deny_cache_secs", RANGE_DENY_CACHE_SECS, 0)?;
        let entries = self.ranged_usize(
            entries,
            "deny_cache_entries",
            RANGE_DENY_CACHE_ENTRIES,
            10_000,
        )?;
        Ok(Some(DenyCacheSpec {
            ttl: Duration::from_secs(secs),
            entries,
        }))
    }

    /// `kind = "wasm"`: the module is read, compiled, checked against
    /// the interface and instantiated once here, so that every mistake
    /// in it is an error of this table's `module` line.
    fn wasm(
        &self,
        name: &str,
        module: Option<Spanned<PathBuf>>,
        timeout_ms: Option<Spanned<i64>>,
        max_memory_mib: Option<Spanned<i64>>,
        max_concurrent: Option<Spanned<i64>>,
    ) -> Result<Check, ValidatorError> {
        let module = module.ok_or_else(|| self.required("module"))?;
        let at = module.span().start;
        let path = self.base.join(module.into_inner());
        let timeout_ms = self.ranged(timeout_ms, "timeout_ms", RANGE_TIMEOUT_MS, 100)?;
        let mib = self.ranged(max_memory_mib, "max_memory_mib", RANGE_MAX_MEMORY_MIB, 16)?;
        let max_concurrent =
            self.ranged_usize(max_concurrent, "max_concurrent", RANGE_WASM_CONCURRENT, 8)?;
        let compiled = crate::validator::wasm::module::load(&path)
            .map_err(|e| self.err(at, "module", format!("{}: {e}", path.display())))?;
        let spec = WasmSpec {
            path,
            module: compiled,
            timeout: Duration::from_millis(timeout_ms),
            // At most 4 GiB: fits a usize on the 64-bit targets jnhpd runs on.
            max_memory: (mib << 20) as usize,
            max_concurrent,
        };
        crate::validator::wasm::check_instance(&spec, name)
            .map_err(|e| self.err(at, "module", format!("{}: {e}", spec.path.display())))?;
        Ok(Check::Wasm(spec))
    }

    fn timeout(&self, timeout_ms: Option<Spanned<i64>>) -> Result<Duration, ValidatorError> {
        let ms = self.ranged(timeout_ms, "timeout_ms", RANGE_TIMEOUT_MS, 5000)?;
        Ok(Duration::from_millis(ms))
    }
}

const RANGE_MAX_BYTES: (u64, u64) = (1, 16_777_216);
const RANGE_TIMEOUT_MS: (u64, u64) = (1, 3_600_000);
const RANGE_MAX_CONCURRENT: (u64, u64) = (1, 10_000);
const RANGE_CHILDREN: (u64, u64) = (1, 1_000);
const RANGE_CONCURRENCY: (u64, u64) = (1, 10_000);
const RANGE_MAX_REQUESTS: (u64, u64) = (0, 4_294_967_295);
/// A 32-bit module's memory ends at 4 GiB.
const RANGE_MAX_MEMORY_MIB: (u64, u64) = (1, 4096);
const RANGE_WASM_CONCURRENT: (u64, u64) = (1, 1024);
/// Up to 30 days: a refusal remembered longer is a denylist.
const RANGE_DENY_CACHE_SECS: (u64, u64) = (1, 2_592_000);
/// About 100 bytes each: 1 000 000 entries is ~100 MB at most.
const RANGE_DENY_CACHE_ENTRIES: (u64, u64) = (1, 1_000_000);

impl RawValidator {
    fn resolve(self, index: usize, base: &Path) -> Result<ValidatorSpec, ValidatorError> {
        let RawValidator {
            kind,
            name,
            function,
            max,
            field,
            pattern,
            path,
            command,
            input,
            timeout_ms,
            max_concurrent,
            children,
            concurrency,
            max_requests,
            module,
            max_memory_mib,
            on_failure,
            mode,
            deny_cache_secs,
            deny_cache_entries,
        } = self;
        let r = Resolver {
            index,
            base,
            kind: *kind.get_ref(),
            kind_at: kind.span().start,
        };
        // Which kinds take each key: one table, so that a key of another
        // kind is refused like an unknown one, for every kind.
        use Kind::{Blocking, Function, Helper, Process, Wasm};
        let keys: [(&'static str, Option<usize>, &[Kind]); 15] = [
            ("function", at(&function), &[Function, Blocking]),
            ("max", at(&max), &[Function]),
            ("field", at(&field), &[Function]),
            ("pattern", at(&pattern), &[Function]),
            ("path", at(&path), &[Blocking]),
            ("command", at(&command), &[Process, Helper]),
            ("input", at(&input), &[Process]),
            ("timeout_ms", at(&timeout_ms), &[Process, Helper, Wasm]),
            ("max_concurrent", at(&max_concurrent), &[Process, Wasm]),
            ("children", at(&children), &[Helper]),
            ("concurrency", at(&concurrency), &[Helper]),
            ("max_requests", at(&max_requests), &[Helper]),
            ("module", at(&module), &[Wasm]),
            ("max_memory_mib", at(&max_memory_mib), &[Wasm]),
            (
                "on_failure",
                at(&on_failure),
                &[Function, Blocking, Process, Helper, Wasm],
            ),
        ];
        let foreign: Vec<_> = keys
            .iter()
            .filter(|(_, _, kinds)| !kinds.contains(&r.kind))
            .map(|&(key, at, _)| (key, at))
            .collect();
        r.refuse_for_kind(&foreign)?;
        let on_failure = on_failure.map(|s| s.into_inner()).unwrap_or_default();
        let mode = mode.map(|s| s.into_inner()).unwrap_or_default();
        let deny_cache = r.deny_cache(deny_cache_secs, deny_cache_entries)?;
        let name = match name {
            None => format!("{}-{index}", kind_name(r.kind)),
            Some(name) => {
                let ok = !name.get_ref().is_empty()
                    && name.get_ref().len() <= 64
                    && name.get_ref().bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    });
                if !ok {
                    return Err(r.err(
                        name.span().start,
                        "name",
                        format!(
                            "{:?} is not [a-z0-9_-]+ of at most 64 bytes",
                            name.get_ref()
                        ),
                    ));
                }
                name.into_inner()
            }
        };
        let check = match r.kind {
            Function => r.function(function, max, field, pattern)?,
            Blocking => r.blocking(function, path)?,
            Process => {
                let (program, args) = r.command(command)?;
                Check::Process(ProcessSpec {
                    program,
                    args,
                    input: input.map(|i| i.into_inner()).unwrap_or_default(),
                    timeout: r.timeout(timeout_ms)?,
                    max_concurrent: r.ranged_usize(
                        max_concurrent,
                        "max_concurrent",
                        RANGE_MAX_CONCURRENT,
                        16,
                    )?,
                })
            }
            Helper => {
                let (program, args) = r.command(command)?;
                Check::Helper(HelperSpec {
                    program,
                    args,
                    children: r.ranged_usize(children, "children", RANGE_CHILDREN, 4)?,
                    concurrency: r.ranged_usize(
                        concurrency,
                        "concurrency",
                        RANGE_CONCURRENCY,
                        32,
                    )?,
                    timeout: r.timeout(timeout_ms)?,
                    max_requests: r.ranged(max_requests, "max_requests", RANGE_MAX_REQUESTS, 0)?,
                })
            }
            Wasm => r.wasm(&name, module, timeout_ms, max_memory_mib, max_concurrent)?,
        };
        Ok(ValidatorSpec {
            name,
            check,
            on_failure,
            mode,
            deny_cache,
        })
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Function => "function",
        Kind::Blocking => "blocking",
        Kind::Process => "process",
        Kind::Helper => "helper",
        Kind::Wasm => "wasm",
    }
}

/// Resolves a program the way an operator expects: a name with a `/` is a
/// path (relative to the config file's directory), a bare name is looked up
/// in PATH. The result must be an executable file.
fn find_program(program: &str, base: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let path = base.join(program);
        return match std::fs::metadata(&path) {
            Err(e) => Err(format!("program {}: {e}", path.display())),
            Ok(_) if !executable(&path) => Err(format!(
                "program {} is not an executable file",
                path.display()
            )),
            Ok(_) => Ok(path),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| format!("program {program:?} not found in PATH"))
}
