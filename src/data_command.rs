//! `jnhpd data <verb>`: the command line of the data tools (the work is
//! in the library's `datatools`): parse, call, print, choose the exit
//! status.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use jnhpd::config::{Config, Storage};
use jnhpd::datatools::{self, Damage, DataToolError, End, Scan, import::InputKind};
use jnhpd::logging;
use jnhpd::protocol::Limits;

/// Exit status of `verify` for a damaged file (0: clean, 2: usage or I/O).
const DAMAGED: u8 = 1;
/// Exit status for usage and I/O errors (clap's own for usage).
const TROUBLE: u8 = 2;

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Check a data file: records, names, bytes, the first damage.
    ///
    /// Prints its records, distinct names and bytes, and its first damage
    /// with its byte offset and what is wrong. Exit status: 0 clean
    /// (a torn tail, the unfinished last write a crash leaves and the
    /// next start cuts, is reported but is not damage), 1 damaged,
    /// 2 usage or I/O error. Reads only; safe while jnhpd serves.
    #[command(after_help = "See /usr/share/doc/jnhpd/backup.md (\"Verify\").")]
    Verify {
        /// The data file.
        path: PathBuf,
        /// Hold records to this config's server.max_name_bytes and
        /// server.max_value_bytes (without it: the widest limits).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Cut a data file at its first damage, keeping what is cut.
    ///
    /// The way `redis-check-aof --fix` does: what is cut goes to a new side file PATH.cut-TIME
    /// (written and fsynced before the file is cut). Refused while a
    /// jnhpd holds the file. A clean file is left as it is. Exit status:
    /// 0 clean or repaired, 1 not repaired (locked, not a data file, I/O).
    #[command(after_help = "See /usr/share/doc/jnhpd/backup.md (\"Repair\").")]
    Repair {
        /// The data file.
        path: PathBuf,
        /// Hold records to this config's limits (without it: the widest).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Copy a data file consistently while jnhpd serves.
    ///
    /// Without pausing writes: the copy ends at the last whole record, every STORE
    /// acknowledged before the backup began is in it, and it is written
    /// to a temporary file, fsynced and renamed to DEST. Exit status:
    /// 0 done, 1 failed (nothing is left at DEST).
    #[command(after_help = "See /usr/share/doc/jnhpd/backup.md (\"Backup\").")]
    Backup {
        /// The config of the jnhpd to back up (its storage.path and limits).
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "datafile",
            required_unless_present = "datafile"
        )]
        config: Option<PathBuf>,
        /// The data file to back up.
        #[arg(long, value_name = "PATH")]
        datafile: Option<PathBuf>,
        /// Replace DEST if it exists (a regular file only).
        #[arg(long)]
        force: bool,
        /// Where the backup goes (any file system).
        dest: PathBuf,
    },
    /// Write a data file's records as JSON lines.
    ///
    /// One object a line: {"name":..,"value":..},
    /// with "name_base64"/"value_base64" (padded standard base64) for
    /// bytes that are not UTF-8. Exit status: 0 done, 1 failed.
    #[command(after_help = "See /usr/share/doc/jnhpd/backup.md (\"Export and import\").")]
    Export {
        /// The data file.
        path: PathBuf,
        /// Write to FILE (whole or not at all) instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace the output FILE if it exists (a regular file only).
        #[arg(long, requires = "output")]
        force: bool,
        /// Hold records to this config's limits (without it: the widest).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Import a data file or JSON lines into the config's storage.
    ///
    /// INPUT is a data file or a JSON-lines export (told apart by the
    /// data file's magic), imported into the storage of the config: its data file
    /// (refused while a jnhpd holds it) or its PostgreSQL namespace.
    /// Every record is checked first; nothing is imported if one is bad.
    /// Prints the counts: imported, already present, conflicts (a name
    /// stored with another value; the stored value stays). Exit status:
    /// 0 imported without conflicts, 1 conflicts or failed.
    #[command(after_help = "See /usr/share/doc/jnhpd/backup.md (\"Export and import\").")]
    Import {
        /// The config naming the storage to import into.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// A data file or JSON lines (a regular file: it is read twice).
        input: PathBuf,
    },
}

/// Runs a data command to its exit status.
pub fn run(command: DataCommand) -> ExitCode {
    match command {
        DataCommand::Verify { path, config } => verify(&path, config.as_deref()),
        DataCommand::Repair { path, config } => repair(&path, config.as_deref()),
        DataCommand::Backup {
            config,
            datafile,
            force,
            dest,
        } => backup(config.as_deref(), datafile.as_deref(), &dest, force),
        DataCommand::Export {
            path,
            output,
            force,
            config,
        } => export(&path, output.as_deref(), force, config.as_deref()),
        DataCommand::Import { config, input } => import(&config, &input),
    }
}

fn fail(verb: &str, err: impl std::fmt::Display, status: u8) -> ExitCode {
    // Not eprintln!: it panics when stderr cannot be written (2>/dev/full),
    // and the status must still be this one.
    let _ = writeln!(std::io::stderr(), "jnhpd: data {verb}: {err}");
    ExitCode::from(status)
}

/// A command's report on standard output. Not `println!`: it panics when
/// standard output cannot be written (a closed pipe, `>/dev/full`); here
/// that is an I/O error, said on stderr, and the exit status says it too
/// ([`Report::finish`]), even though the work was done.
struct Report {
    verb: &'static str,
    failed: Option<std::io::Error>,
}

impl Report {
    fn new(verb: &'static str) -> Report {
        Report { verb, failed: None }
    }

    fn line(&mut self, text: std::fmt::Arguments) {
        if self.failed.is_none() {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_fmt(text).and_then(|()| out.write_all(b"\n")) {
                self.failed = Some(e);
            }
        }
    }

    /// `status`, unless the report could not be written (line-buffered
    /// standard output is flushed here): then `io_status`.
    fn finish(mut self, status: ExitCode, io_status: u8) -> ExitCode {
        if self.failed.is_none()
            && let Err(e) = std::io::stdout().lock().flush()
        {
            self.failed = Some(e);
        }
        match self.failed {
            None => status,
            Some(e) => fail(
                self.verb,
                format!("standard output: cannot write the report: {e}"),
                io_status,
            ),
        }
    }
}

/// `println!` into a [`Report`].
macro_rules! say {
    ($report:expr, $($arg:tt)*) => {
        $report.line(format_args!($($arg)*))
    };
}

/// The config, refused on whatever the start would refuse it for (as
/// `jnhpd --check-config` does, short of connecting).
fn load(config: &Path) -> Result<Config, String> {
    let loaded = Config::load(config).map_err(|e| e.to_string())?;
    jnhpd::preflight::check(&loaded).map_err(|e| e.to_string())?;
    Ok(loaded)
}

/// The limits of `config`, or the widest without one.
fn limits(config: Option<&Path>) -> Result<Limits, String> {
    match config {
        Some(path) => Ok(load(path)?.server.limits()),
        None => Ok(Limits::WIDEST),
    }
}

fn names(scan: &Scan) -> String {
    match scan.names {
        Some(names) => format!(", {names} names"),
        None => String::new(),
    }
}

fn verify(path: &Path, config: Option<&Path>) -> ExitCode {
    let limits = match limits(config) {
        Ok(limits) => limits,
        Err(err) => return fail("verify", err, TROUBLE),
    };
    let scan = match datatools::verify::verify(path, limits) {
        Ok(scan) => scan,
        Err(err) => return fail("verify", err, TROUBLE),
    };
    let p = path.display();
    let mut report = Report::new("verify");
    let damaged = datatools::verify::is_damaged(&scan);
    match &scan.end {
        End::Damaged { .. } => say!(
            report,
            "{p}: {} bytes; before the damage: {} records{}, {} bytes",
            scan.bytes,
            scan.records,
            names(&scan),
            scan.good_len
        ),
        _ => say!(
            report,
            "{p}: {} records{}, {} bytes",
            scan.records,
            names(&scan),
            scan.bytes
        ),
    }
    if scan.duplicates > 0
        && let Some((offset, first)) = scan.first_duplicate
    {
        say!(
            report,
            "{p}: damaged: {} records repeat a name; the first at byte offset {offset}: {} \
             (jnhpd keeps the first value and starts; repair does not cut there)",
            scan.duplicates,
            Damage::Duplicate { first }
        );
    }
    match &scan.end {
        End::Clean if scan.bytes == 0 => {
            say!(
                report,
                "{p}: empty (a new data file: jnhpd writes its header when it starts)"
            )
        }
        End::Clean if !damaged => say!(report, "{p}: clean"),
        End::Clean => {}
        End::TornTail {
            offset,
            bytes,
            damage,
        } => say!(
            report,
            "{p}: {}, then {bytes} torn bytes at the end (byte offset {offset}: {damage}): \
             an unfinished last write, as a crash leaves; no acknowledged STORE is in it, \
             and the next start of jnhpd cuts it (as does `jnhpd data repair`)",
            if damaged { "otherwise clean" } else { "clean" }
        ),
        End::Damaged {
            offset,
            damage,
            next_valid,
        } => {
            let after = match next_valid {
                Some(next) => format!("; a valid record follows at byte offset {next}"),
                None => String::new(),
            };
            // A bad header is not repaired (the file may be another
            // program's): promising a cut there would send the operator to
            // a command that refuses.
            let what_next = match damage {
                Damage::BadHeader(_) => {
                    "not a data file jnhpd reads; `jnhpd data repair` \
                                         does not change it"
                }
                _ => "`jnhpd data repair` cuts there, keeping the rest in a side file",
            };
            say!(
                report,
                "{p}: damaged at byte offset {offset}: {damage}{after}; {} good records before it \
                 ({what_next})",
                scan.records
            );
        }
    }
    let status = match damaged {
        true => ExitCode::from(DAMAGED),
        false => ExitCode::SUCCESS,
    };
    report.finish(status, TROUBLE)
}

fn repair(path: &Path, config: Option<&Path>) -> ExitCode {
    let limits = match limits(config) {
        Ok(limits) => limits,
        Err(err) => return fail("repair", err, 1),
    };
    let repaired = match datatools::repair::repair(path, limits) {
        Ok(repaired) => repaired,
        Err(err) => return fail("repair", err, 1),
    };
    let p = path.display();
    let mut report = Report::new("repair");
    let scan = &repaired.scan;
    match &repaired.cut {
        None => say!(
            report,
            "{p}: clean ({} records{}, {} bytes); nothing changed",
            scan.records,
            names(scan),
            scan.bytes
        ),
        Some(cut) => say!(
            report,
            "{p}: cut at byte offset {}: {}; kept {} records{}, {} bytes; cut {} bytes, \
             kept in {}",
            cut.offset,
            cut.damage,
            scan.records,
            names(scan),
            cut.offset,
            cut.bytes,
            cut.side_file.display()
        ),
    }
    if scan.duplicates > 0 {
        say!(
            report,
            "{p}: {} records repeat a name stored before: not cut (jnhpd keeps the first value)",
            scan.duplicates
        );
    }
    report.finish(ExitCode::SUCCESS, 1)
}

fn backup(config: Option<&Path>, datafile: Option<&Path>, dest: &Path, force: bool) -> ExitCode {
    let (source, limits) = match (config, datafile) {
        (Some(config), _) => match load(config) {
            Ok(Config {
                storage: Storage::Postgres(_),
                ..
            }) => {
                return fail(
                    "backup",
                    format!(
                        "{}: the storage is PostgreSQL: back it up with PostgreSQL's own tools \
                         (pg_dump; see /usr/share/doc/jnhpd/backup.md)",
                        config.display()
                    ),
                    1,
                );
            }
            Ok(Config {
                storage: Storage::Memory,
                ..
            }) => {
                return fail(
                    "backup",
                    format!(
                        "{}: storage.path is empty: the names are in memory only, there is no \
                         file to back up",
                        config.display()
                    ),
                    1,
                );
            }
            Ok(Config {
                storage: Storage::DataFile { path, .. },
                server,
                ..
            }) => (path, server.limits()),
            Err(err) => return fail("backup", err, 1),
        },
        (None, Some(path)) => (path.to_path_buf(), Limits::WIDEST),
        // clap requires one of the two.
        (None, None) => return fail("backup", "--config or --datafile is needed", TROUBLE),
    };
    match datatools::backup::backup(&source, dest, force, limits) {
        Ok(done) => {
            let mut report = Report::new("backup");
            say!(
                report,
                "{}: backed up {} records, {} bytes, to {}; stopped at byte offset {} \
                 (the file had {} bytes{})",
                source.display(),
                done.records,
                done.bytes,
                dest.display(),
                done.bytes,
                done.source_len,
                match done.left_out {
                    0 => String::new(),
                    n => format!("; the last {n}, a group being written, were left out"),
                }
            );
            report.finish(ExitCode::SUCCESS, 1)
        }
        Err(err) => fail("backup", err, 1),
    }
}

fn export(path: &Path, output: Option<&Path>, force: bool, config: Option<&Path>) -> ExitCode {
    let limits = match limits(config) {
        Ok(limits) => limits,
        Err(err) => return fail("export", err, 1),
    };
    let exported = match output {
        Some(file) => {
            let meta = match std::fs::metadata(path) {
                Ok(meta) => meta,
                Err(err) => return fail("export", DataToolError::io(path, "read")(err), 1),
            };
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
            datatools::output::Output::create(file, force, mode, &meta).and_then(|mut out| {
                let done = datatools::export::export(path, limits, |line| out.write_all(line))?;
                out.finish()?;
                Ok(done)
            })
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
            let stdout_path = Path::new("standard output");
            datatools::export::export(path, limits, |line| {
                out.write_all(line)
                    .map_err(DataToolError::io(stdout_path, "write"))
            })
            .and_then(|done| {
                out.flush()
                    .map_err(DataToolError::io(stdout_path, "write"))?;
                Ok(done)
            })
        }
    };
    match exported {
        Ok(done) => {
            let torn = match done.torn {
                0 => String::new(),
                n => format!(" ({n} torn bytes at the end left out)"),
            };
            let _ = writeln!(
                std::io::stderr(),
                "jnhpd: data export: {}: {} records exported{torn}",
                path.display(),
                done.records
            );
            ExitCode::SUCCESS
        }
        Err(err) => fail("export", err, 1),
    }
}

fn import(config_path: &Path, input: &Path) -> ExitCode {
    let config = match load(config_path) {
        Ok(config) => config,
        Err(err) => return fail("import", err, 1),
    };
    if let Err(err) = logging::init(logging::Target::Stderr, config.log.level.filter()) {
        return fail("import", err, 1);
    }
    let limits = config.server.limits();
    // The whole input is checked before anything is imported.
    let checked = datatools::import::input_kind(input).and_then(|kind| {
        datatools::import::read_input(input, kind, limits, |_, _| Ok(())).map(|n| (kind, n))
    });
    let kind = match checked {
        Ok((kind, _)) => kind,
        Err(err) => return fail("import", err, 1),
    };
    let what = match kind {
        InputKind::DataFile => "data file",
        InputKind::JsonLines => "JSON lines",
    };
    let counts = if let Storage::Postgres(pg) = &config.storage {
        let source = datatools::import::source(input, kind, limits);
        let done = std::sync::Arc::new(std::sync::Mutex::new(None));
        let report = done.clone();
        super::with_namespace(pg, |namespace| async move {
            let counts = jnhpd::postgres::import::import_records(&namespace, source)
                .await
                .map_err(|e| e.to_string())?;
            let text = counts.to_string();
            *report.lock().unwrap_or_else(|e| e.into_inner()) = Some(counts);
            Ok(text)
        })
        .map(|_| {
            done.lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_default()
        })
    } else if let Storage::DataFile { path, .. } = &config.storage {
        datatools::import::into_datafile(input, kind, path, limits).map_err(|e| e.to_string())
    } else {
        return fail(
            "import",
            format!(
                "{}: storage.path is empty (memory only): nothing to import into",
                config_path.display()
            ),
            1,
        );
    };
    match counts {
        Ok(counts) => {
            let mut report = Report::new("import");
            say!(
                report,
                "jnhpd: data import: {} ({what}): {counts}",
                input.display()
            );
            let status = match counts.conflicts {
                0 => ExitCode::SUCCESS,
                _ => ExitCode::from(1),
            };
            report.finish(status, 1)
        }
        Err(err) => fail("import", format!("{} ({what}): {err}", input.display()), 1),
    }
}
