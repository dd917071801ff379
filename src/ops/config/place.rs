//! Where things are in the config file: byte offsets turned into lines,
//! and the lines of keys kept for the errors found after loading.
//!
//! Every error about the config names the file, the line and the key,
//! also the errors only a start can find (a certificate that does not
//! load, a listen name that does not resolve, a syslog socket that
//! refuses): [`Places`] keeps those keys' lines in the resolved config so
//! that the code that finds them, outside `config`, words them alike.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use super::ConfigError;

/// The file being resolved: its text, its name, its directory.
pub(super) struct Source<'a> {
    pub text: &'a str,
    pub path: &'a Path,
    /// Relative paths in the file are relative to this directory.
    pub base: &'a Path,
}

impl Source<'_> {
    /// 1-based line of byte offset `at`.
    pub fn line(&self, at: usize) -> usize {
        line_of(self.text, at)
    }

    /// The line of a section header (`[tls]`), or 1 when the file has none.
    pub fn section_line(&self, header: &str) -> usize {
        self.text
            .lines()
            .position(|l| l.trim() == header)
            .map_or(1, |i| i + 1)
    }

    /// The offset of the first line that sets `key` (`key =` at its
    /// start), in whichever section.
    pub fn key_offset(&self, key: &str) -> Option<usize> {
        let mut at = 0;
        for line in self.text.split_inclusive('\n') {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix(key)
                && rest.trim_start().starts_with('=')
            {
                return Some(at + line.len() - trimmed.len());
            }
            at += line.len();
        }
        None
    }

    /// The line of the first of `keys` the file sets, else of `section`.
    pub fn key_line(&self, keys: &[&str], section: &str) -> usize {
        keys.iter()
            .find_map(|key| self.key_offset(key))
            .map_or_else(|| self.section_line(section), |at| self.line(at))
    }

    /// `file:line: key: message`.
    pub fn invalid(&self, line: usize, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            key: format!("{key}: "),
            message: message.into(),
        }
    }
}

/// 1-based line number of byte offset `at` in `text`.
pub(super) fn line_of(text: &str, at: usize) -> usize {
    let at = at.min(text.len());
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The lines of the keys whose errors are found after loading (listen
/// names, TLS files, the PostgreSQL URL, the syslog socket, the log file).
/// Empty for the built-in defaults.
#[derive(Debug, Clone, Default)]
pub struct Places {
    file: PathBuf,
    lines: Vec<(&'static str, usize)>,
}

/// Where keys were written is not what the configuration says: a file
/// that only moved a line is the same configuration (a reload compares
/// sections with `==`, and must not report such a file as changed).
impl PartialEq for Places {
    fn eq(&self, _: &Places) -> bool {
        true
    }
}

impl Places {
    pub(super) fn new(file: &Path) -> Places {
        Places {
            file: file.to_path_buf(),
            lines: Vec::new(),
        }
    }

    pub(super) fn set(&mut self, key: &'static str, line: usize) {
        self.lines.push((key, line));
    }

    /// `file:line` of `key` (its dotted name, `tls.cert_file`), when the
    /// config came from a file that placed it.
    pub fn at(&self, key: &str) -> Option<String> {
        self.lines
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, line)| format!("{}:{line}", self.file.display()))
    }

    /// The config file these places are in.
    pub(crate) fn file(&self) -> &Path {
        &self.file
    }

    /// An error about `key` found after loading, worded like one found
    /// while loading: `file:line: key: message` (just `key: message` when
    /// the file did not place the key).
    pub fn error(&self, key: &str, message: impl Display) -> ConfigError {
        match self.lines.iter().find(|(k, _)| *k == key) {
            Some(&(_, line)) => ConfigError::Invalid {
                path: self.file.clone(),
                line,
                key: format!("{key}: "),
                message: message.to_string(),
            },
            None => ConfigError::Unplaced {
                key: key.to_string(),
                message: message.to_string(),
            },
        }
    }
}
