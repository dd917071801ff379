//! Validators that block (`kind = "blocking"`): run on tokio's blocking
//! thread pool with `spawn_blocking`, so file reads or heavy CPU work never
//! stall the threads that serve connections.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{Cause, Peer, Validator, Verdict};

type CheckFn = dyn Fn(&[u8], &[u8]) -> Verdict + Send + Sync;

/// Any blocking function `(name, value) -> Verdict` as a validator. A panic
/// in the function is a failure of that STORE, never a crash.
pub struct Blocking {
    description: String,
    check: Arc<CheckFn>,
}

impl Blocking {
    pub fn new(
        description: impl Into<String>,
        check: impl Fn(&[u8], &[u8]) -> Verdict + Send + Sync + 'static,
    ) -> Blocking {
        Blocking {
            description: description.into(),
            check: Arc::new(check),
        }
    }
}

impl fmt::Debug for Blocking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blocking")
            .field("description", &self.description)
            .finish()
    }
}

#[async_trait]
impl Validator for Blocking {
    async fn validate(&self, name: &[u8], value: &[u8], _peer: &Peer) -> Verdict {
        let check = self.check.clone();
        let (name, value) = (name.to_vec(), value.to_vec());
        match tokio::task::spawn_blocking(move || check(&name, &value)).await {
            Ok(verdict) => verdict,
            Err(err) if err.is_panic() => {
                let panic = err.into_panic();
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".into());
                Verdict::Failure(Cause::NoVerdict, format!("panicked: {message}"))
            }
            Err(err) => Verdict::Failure(Cause::Spawn, format!("did not run: {err}")),
        }
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// How often the denylist file is looked at for changes: changes take
/// effect within 2 s, as config.md promises, without a stat per STORE.
const RECHECK: Duration = Duration::from_secs(1);

/// `function = "denylist"`: refuses values whose SHA-256 hex digest, or
/// whose exact bytes, are listed in a file.
#[derive(Debug)]
pub struct Denylist {
    path: PathBuf,
    state: Mutex<DenyState>,
}

#[derive(Debug)]
struct DenyState {
    list: Arc<DenySet>,
    stamp: Option<FileStamp>,
    checked: Instant,
    missing: bool,
    /// A STORE is re-reading the file: the others use `list` meanwhile.
    refreshing: bool,
}

/// What identifies a version of the file without reading it.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// Reads the list: a regular file within [`crate::base::files::DENYLIST`], in
/// bounded time (a FIFO or `/dev/zero` put in its place is refused).
fn read_list(path: &Path) -> std::io::Result<DenySet> {
    let text = crate::base::files::read(path, crate::base::files::DENYLIST)
        .map_err(|e| std::io::Error::other(e.detail()))?;
    Ok(DenySet::parse(&text))
}

/// The parsed list: one entry per line; blank lines and lines starting with
/// `#` skipped; 64 hex digits (any case) are a digest, anything else an
/// exact value.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DenySet {
    digests: HashSet<[u8; 32]>,
    exact: HashSet<Vec<u8>>,
}

impl DenySet {
    pub fn parse(text: &[u8]) -> DenySet {
        let mut set = DenySet::default();
        for line in text.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) || line.starts_with(b"#") {
                continue;
            }
            match hex_digest(line) {
                Some(digest) => set.digests.insert(digest),
                None => set.exact.insert(line.to_vec()),
            };
        }
        set
    }

    pub fn denies(&self, value: &[u8]) -> bool {
        self.exact.contains(value)
            || (!self.digests.is_empty()
                && self
                    .digests
                    .contains(&<[u8; 32]>::from(Sha256::digest(value))))
    }

    pub fn len(&self) -> usize {
        self.digests.len() + self.exact.len()
    }
}

fn hex_digest(line: &[u8]) -> Option<[u8; 32]> {
    if line.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut digest = [0u8; 32];
    for (i, pair) in line.chunks(2).enumerate() {
        digest[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(digest)
}

impl Denylist {
    /// Reads the list now; fails if the file cannot be read.
    pub fn open(path: &Path) -> std::io::Result<Denylist> {
        let stamp = stamp(path)?;
        let list = read_list(path)?;
        Ok(Denylist {
            path: path.to_path_buf(),
            state: Mutex::new(DenyState {
                list: Arc::new(list),
                stamp: Some(stamp),
                checked: Instant::now(),
                missing: false,
                refreshing: false,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DenyState> {
        // A poisoned lock only means a panic elsewhere mid-refresh; the
        // state is still a whole list.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the value is allowed, re-reading the file if it changed.
    /// Blocking (file I/O): run it on the blocking pool. The file is read
    /// without the lock held: one STORE re-reads it while the others go
    /// on with the list read before.
    pub fn judge(&self, value: &[u8]) -> Verdict {
        let (list, refresh) = {
            let mut state = self.state();
            let due = state.checked.elapsed() >= RECHECK && !state.refreshing;
            if due {
                state.checked = Instant::now();
                state.refreshing = true;
            }
            (state.list.clone(), due.then_some(state.stamp))
        };
        let list = match refresh {
            Some(known) => self.refresh(known).unwrap_or(list),
            None => list,
        };
        if list.denies(value) {
            Verdict::Deny
        } else {
            Verdict::Allow
        }
    }

    /// Re-reads the file if its stamp is not `known`; returns the new
    /// list, if there is one.
    fn refresh(&self, known: Option<FileStamp>) -> Option<Arc<DenySet>> {
        let result = stamp(&self.path).and_then(|now| {
            if known == Some(now) {
                return Ok(None);
            }
            Ok(Some((now, read_list(&self.path)?)))
        });
        let mut state = self.state();
        state.refreshing = false;
        match result {
            Ok(None) => None,
            Ok(Some((now, list))) => {
                log::info!("denylist {}: {} entries", self.path.display(), list.len());
                state.list = Arc::new(list);
                state.stamp = Some(now);
                state.missing = false;
                Some(state.list.clone())
            }
            Err(err) => {
                if !state.missing {
                    log::warn!(
                        "denylist {}: {err}; keeping the {} entries read before",
                        self.path.display(),
                        state.list.len()
                    );
                    state.missing = true;
                }
                state.stamp = None;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_digests_values_comments_and_blanks() {
        let digest_of_abc = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        let text = format!(
            "# comment\n\n   \r\nexact value \r\n{digest_of_abc}\nnot-a-digest-{digest_of_abc}\n"
        );
        let set = DenySet::parse(text.as_bytes());
        assert_eq!(set.len(), 3);
        assert!(set.denies(b"abc"), "digest entries match any case");
        assert!(
            set.denies(b"exact value "),
            "exact values are byte for byte"
        );
        assert!(!set.denies(b"exact value"));
        assert!(!set.denies(b"# comment"));
        assert!(set.denies(format!("not-a-digest-{digest_of_abc}").as_bytes()));
    }

    #[test]
    fn hex_digest_needs_64_hex_digits() {
        assert!(hex_digest(&[b'a'; 64]).is_some());
        assert!(hex_digest(&[b'a'; 63]).is_none());
        assert!(hex_digest(&[b'g'; 64]).is_none());
    }

    #[tokio::test]
    async fn a_panic_is_a_failure_not_a_crash() {
        let v = Blocking::new("panics", |_, _| panic!("boom"));
        assert_eq!(
            v.validate(b"n", b"v", &Peer::default()).await,
            Verdict::Failure(Cause::NoVerdict, "panicked: boom".into())
        );
        let v = Blocking::new("allows", |_, value| {
            if value == b"ok" {
                Verdict::Allow
            } else {
                Verdict::Deny
            }
        });
        assert_eq!(
            v.validate(b"n", b"ok", &Peer::default()).await,
            Verdict::Allow
        );
        assert_eq!(
            v.validate(b"n", b"no", &Peer::default()).await,
            Verdict::Deny
        );
    }
}
