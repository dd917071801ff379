//! A validator's deny cache (`deny_cache_secs`, `deny_cache_entries`):
//! the refusals it gave recently, so that a client retrying a refused
//! STORE does not run the validator again.
//!
//! Only refusals are remembered: in jnhpd a name is validated until it is
//! stored, so an allowed STORE does not come back, a refused one may, as
//! often as a client likes. The key is a SHA-256 digest of the name, the
//! value and the peer (the client's `ip:port` and TLS certificate
//! subject): every entry is the same small size whatever the STORE's
//! size, and the cache holds no value. The peer is in the key because a
//! validator may judge by it (`JNHP_PEER`): one client's refusal must
//! never be served to another, or a hostile client could block any
//! name and value it can guess for everyone.
//!
//! Bounded twice: by time (an entry older than the ttl is a miss, and is
//! removed when met) and by count (at `entries`, the oldest entry makes
//! room, whether it expired or not).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::Peer;
use super::spec::DenyCacheSpec;
use crate::metrics::ValidatorStats;

/// A STORE's digest: SHA-256 of the name, the value, the peer's address
/// and its certificate subject, each field preceded by its length (8
/// bytes, little endian; an absent field by `u64::MAX`). The lengths keep
/// `("ab", "c")` and `("a", "bc")` apart, and an absent subject apart
/// from an empty one.
pub type StoreDigest = [u8; 32];

/// The digest of a STORE of `value` under `name` sent by `peer`.
pub fn digest(name: &[u8], value: &[u8], peer: &Peer) -> StoreDigest {
    fn field(hasher: &mut Sha256, bytes: Option<&[u8]>) {
        match bytes {
            Some(bytes) => {
                hasher.update((bytes.len() as u64).to_le_bytes());
                hasher.update(bytes);
            }
            None => hasher.update(u64::MAX.to_le_bytes()),
        }
    }
    let mut hasher = Sha256::new();
    field(&mut hasher, Some(name));
    field(&mut hasher, Some(value));
    let addr = peer.addr.map(|a| a.to_string());
    field(&mut hasher, addr.as_deref().map(str::as_bytes));
    field(&mut hasher, peer.cert_subject.as_deref().map(str::as_bytes));
    hasher.finalize().into()
}

/// The refusals of one validator, remembered for a while.
#[derive(Debug)]
pub(crate) struct DenyCache {
    spec: DenyCacheSpec,
    inner: Mutex<Inner>,
    /// Where the entries gauge and hit counter live.
    stats: Arc<ValidatorStats>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Each remembered refusal, with when it was remembered.
    at: HashMap<StoreDigest, Instant>,
    /// The same entries, oldest first. An entry remembered again (after
    /// it expired) appears twice; the older copy no longer matches `at`
    /// and is skipped when met.
    order: VecDeque<(StoreDigest, Instant)>,
}

impl DenyCache {
    pub(crate) fn new(spec: DenyCacheSpec, stats: Arc<ValidatorStats>) -> DenyCache {
        DenyCache {
            spec,
            inner: Mutex::new(Inner::default()),
            stats,
        }
    }

    /// The settings it was made with.
    pub(crate) fn spec(&self) -> DenyCacheSpec {
        self.spec
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every change below leaves the maps consistent at each step.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the validator refused this STORE less than the ttl ago
    /// (counted as a hit).
    pub(crate) fn refused(&self, key: &StoreDigest) -> bool {
        let mut inner = self.lock();
        let Some(&at) = inner.at.get(key) else {
            return false;
        };
        if at.elapsed() < self.spec.ttl {
            self.stats.deny_cache_hits.fetch_add(1, Relaxed);
            return true;
        }
        inner.at.remove(key);
        self.stats
            .deny_cache_entries
            .store(inner.at.len() as i64, Relaxed);
        false
    }

    /// Remembers a refusal, making room first if the cache is full.
    pub(crate) fn remember(&self, key: StoreDigest) {
        let now = Instant::now();
        let mut inner = self.lock();
        while inner.at.len() >= self.spec.entries && !inner.at.contains_key(&key) {
            let Some((old, at)) = inner.order.pop_front() else {
                break;
            };
            if inner.at.get(&old) == Some(&at) {
                inner.at.remove(&old);
            }
        }
        inner.at.insert(key, now);
        inner.order.push_back((key, now));
        // Copies left behind by expired entries remembered again: never
        // more than the live ones, so `order` stays within twice `entries`.
        if inner.order.len() > 2 * self.spec.entries {
            let Inner { at, order } = &mut *inner;
            order.retain(|(k, t)| at.get(k) == Some(t));
        }
        self.stats
            .deny_cache_entries
            .store(inner.at.len() as i64, Relaxed);
    }

    /// Refusals held now.
    pub(crate) fn len(&self) -> usize {
        self.lock().at.len()
    }

    /// Entries held now, and the length of the queue behind them (tests).
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.at.len(), inner.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cache(entries: usize, ttl: Duration) -> DenyCache {
        let stats = ValidatorStats::new("t".into(), "process");
        DenyCache::new(DenyCacheSpec { ttl, entries }, stats)
    }

    fn digest(name: &[u8], value: &[u8]) -> StoreDigest {
        super::digest(name, value, &Peer::default())
    }

    #[test]
    fn digests_keep_name_and_value_apart() {
        assert_ne!(digest(b"ab", b"c"), digest(b"a", b"bc"));
        assert_eq!(digest(b"a", b"b"), digest(b"a", b"b"));
    }

    #[test]
    fn digests_keep_peers_apart() {
        let at = |addr: &str, subject: Option<&str>| Peer {
            addr: Some(addr.parse().unwrap()),
            cert_subject: subject.map(str::to_owned),
        };
        let d = |peer: &Peer| super::digest(b"n", b"v", peer);
        let one = at("10.0.0.1:5000", None);
        assert_eq!(d(&one), d(&one.clone()));
        assert_ne!(d(&one), d(&at("10.0.0.2:5000", None)));
        assert_ne!(d(&one), d(&at("10.0.0.1:5001", None)));
        assert_ne!(d(&one), d(&at("10.0.0.1:5000", Some(""))));
        assert_ne!(
            d(&at("10.0.0.1:5000", Some("CN=a"))),
            d(&at("10.0.0.1:5000", Some("CN=b")))
        );
        assert_ne!(d(&one), d(&Peer::default()));
    }

    #[test]
    fn a_refusal_is_remembered_until_its_ttl() {
        let c = cache(10, Duration::from_secs(3600));
        let k = digest(b"n", b"v");
        assert!(!c.refused(&k));
        c.remember(k);
        assert!(c.refused(&k));
        assert!(!c.refused(&digest(b"n", b"w")));
        assert_eq!(c.stats.deny_cache_hits.load(Relaxed), 1);

        let c = cache(10, Duration::ZERO);
        c.remember(k);
        assert!(!c.refused(&k), "an expired refusal is a miss");
        assert_eq!(c.len(), 0, "and is removed");
    }

    #[test]
    fn a_flood_of_refusals_stays_within_entries() {
        let c = cache(100, Duration::from_secs(3600));
        for i in 0..10_000u32 {
            c.remember(digest(b"n", &i.to_le_bytes()));
            let (live, order) = c.sizes();
            assert!(live <= 100 && order <= 200, "{live} {order}");
        }
        assert_eq!(c.stats.deny_cache_entries.load(Relaxed), 100);
        // The newest are kept.
        assert!(c.refused(&digest(b"n", &9_999u32.to_le_bytes())));
        assert!(!c.refused(&digest(b"n", &0u32.to_le_bytes())));
        // Expired entries remembered again do not grow the queue.
        let c = cache(3, Duration::ZERO);
        for _ in 0..1000 {
            c.remember(digest(b"n", b"v"));
            assert!(c.sizes().1 <= 6);
        }
    }
}
