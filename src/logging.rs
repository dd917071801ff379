//! The `log` backend: one line per record on stderr.
//!
//! Everything logs through the `log` facade, so switching the target (syslog
//! comes with the daemon work) changes no call site. The level lives in the
//! facade's global max level, so a SIGHUP reload can change it at run time.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

struct StderrLogger {
    /// Under systemd the journal stamps each line itself.
    timestamps: bool,
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = String::with_capacity(128);
        if self.timestamps {
            line.push_str(
                &humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            );
            line.push(' ');
        }
        line.push_str(&format!(
            "jnhpd[{}]: {}: {}\n",
            std::process::id(),
            record.level(),
            record.args()
        ));
        // One write per line, so lines from several threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the stderr logger at `level`. Later calls only change the level.
pub fn init(level: LevelFilter) {
    let logger = StderrLogger {
        timestamps: std::env::var_os("JOURNAL_STREAM").is_none(),
    };
    // Fails only if a logger is already installed (tests, or a second call):
    // keep that one.
    let _ = log::set_boxed_logger(Box::new(logger));
    set_level(level);
}

/// Changes the level of every later record.
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}
