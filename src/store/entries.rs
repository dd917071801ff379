//! The stored names and values: all of them (memory, the data file), or a
//! bounded cache of a shared namespace (PostgreSQL).
//!
//! Only the store actor touches them; they live here so that the actor's
//! module is about requests and their waiting, not about memory layout.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use hashbrown::HashTable;

pub(crate) type Hasher_ = foldhash::fast::RandomState;

/// A stored name and its value in one allocation:
/// `name_len (u32 LE) | name | value | \r\n`. One allocation per entry
/// instead of two keeps a million small entries close to the bytes they
/// hold; the line end kept after the value makes a GET's reply one copy.
struct Entry(Box<[u8]>);

impl Entry {
    fn new(name: &[u8], value: &[u8]) -> Entry {
        let mut bytes = Vec::with_capacity(4 + name.len() + value.len() + 2);
        bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        bytes.extend_from_slice(b"\r\n");
        Entry(bytes.into_boxed_slice())
    }

    fn name_len(&self) -> usize {
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.0[..4]);
        u32::from_le_bytes(len) as usize
    }

    fn name(&self) -> &[u8] {
        &self.0[4..4 + self.name_len()]
    }

    fn value(&self) -> &[u8] {
        let line = self.value_line();
        &line[..line.len() - 2]
    }

    /// The value and its line end: the reply to a GET of the name.
    fn value_line(&self) -> &[u8] {
        &self.0[4 + self.name_len()..]
    }
}

/// The stored names and values: all of them (memory, the data file), or
/// a bounded cache of a shared namespace.
///
/// A `HashTable` searched by the name inside each entry, rather than a
/// `HashSet` of entries: each lookup's comparison is a closure of its own,
/// so each call site gets its own small copy of the probe, inlined into
/// the actor's loop (the set's one shared lookup was not, at ~10
/// instructions a GET).
#[derive(Default)]
pub struct Entries {
    set: HashTable<Entry>,
    hasher: Hasher_,
    /// Set for a cache: what it may hold, and which entry goes first.
    budget: Option<Budget>,
}

/// A cache's memory: entries leave oldest first once `used` would pass
/// `limit`. Names are write-once, so an entry is never stale; eviction
/// only costs a lookup later.
struct Budget {
    limit: usize,
    used: usize,
    order: VecDeque<Box<[u8]>>,
}

/// What an entry costs a cache beyond its bytes: the set's slot, the
/// allocation and the name's place in the eviction order.
const ENTRY_OVERHEAD: usize = 64;

impl Entries {
    /// An empty cache that holds at most `limit` bytes.
    pub fn cache(limit: usize) -> Entries {
        Entries {
            set: HashTable::new(),
            hasher: Hasher_::default(),
            budget: Some(Budget {
                limit,
                used: 0,
                order: VecDeque::new(),
            }),
        }
    }

    /// Adds a replayed entry; a name seen before keeps its first value
    /// (write-once). Returns whether it was added.
    pub fn insert_replayed(&mut self, name: &[u8], value: &[u8]) -> bool {
        if self.contains(name) {
            return false;
        }
        self.add(name, value);
        true
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    #[inline]
    pub(crate) fn contains(&self, name: &[u8]) -> bool {
        let hash = self.hasher.hash_one(name);
        self.set.find(hash, |entry| entry.name() == name).is_some()
    }

    /// The value of `name` with its line end, if stored.
    #[inline]
    pub(crate) fn value_line(&self, name: &[u8]) -> Option<&[u8]> {
        let hash = self.hasher.hash_one(name);
        self.set
            .find(hash, |entry| entry.name() == name)
            .map(Entry::value_line)
    }

    /// Adds an entry for a name known to be absent.
    fn add(&mut self, name: &[u8], value: &[u8]) {
        let hash = self.hasher.hash_one(name);
        let hasher = &self.hasher;
        self.set
            .insert_unique(hash, Entry::new(name, value), |entry| {
                hasher.hash_one(entry.name())
            });
    }

    /// Takes `name`'s entry out (a cache making room).
    fn remove(&mut self, name: &[u8]) -> Option<Entry> {
        let hash = self.hasher.hash_one(name);
        let found = self.set.find_entry(hash, |entry| entry.name() == name);
        found.ok().map(|found| found.remove().0)
    }

    /// Adds a stored name (once: names are write-once). A cache makes room
    /// first, and skips an entry larger than all of it.
    pub(crate) fn insert(&mut self, name: &[u8], value: &[u8]) {
        if self.contains(name) {
            return;
        }
        let Some(mut budget) = self.budget.take() else {
            return self.add(name, value);
        };
        let cost = cost_of(name.len(), value.len());
        if cost <= budget.limit {
            while budget.used + cost > budget.limit
                && let Some(oldest) = budget.order.pop_front()
            {
                if let Some(entry) = self.remove(&oldest) {
                    budget.used -= cost_of(entry.name_len(), entry.value().len());
                }
            }
            budget.used += cost;
            budget.order.push_back(name.into());
            self.add(name, value);
        }
        self.budget = Some(budget);
    }
}

/// What an entry of a name and value of these lengths costs a cache: the
/// name twice (the entry, the eviction order), the value, the overhead.
fn cost_of(name_len: usize, value_len: usize) -> usize {
    2 * name_len + value_len + ENTRY_OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_find_what_was_added_and_keep_the_first_value() {
        let mut entries = Entries::default();
        let name = |i: usize| format!("{}{i}", "n".repeat(i % 40)).into_bytes();
        for i in 0..2_000 {
            assert!(entries.insert_replayed(&name(i), format!("v{i}").as_bytes()));
        }
        assert!(!entries.insert_replayed(&name(7), b"other"));
        entries.insert(&name(8), b"other");
        assert_eq!(entries.len(), 2_000);
        for i in 0..2_000 {
            let line = entries.value_line(&name(i)).expect("added");
            assert_eq!(line, format!("v{i}\r\n").as_bytes());
        }
        assert!(!entries.contains(b"n"));
        assert!(!entries.contains(&name(2_000)));
    }

    #[test]
    fn a_cache_lets_its_oldest_entries_go_first() {
        // Room for about three entries of this size.
        let cost = 2 * 4 + 4 + ENTRY_OVERHEAD;
        let mut cache = Entries::cache(3 * cost + cost / 2);
        for name in [b"name1", b"name2", b"name3", b"name4"] {
            cache.insert(&name[1..], b"vvvv");
        }
        assert!(!cache.contains(b"ame1"));
        for kept in [b"ame2", b"ame3", b"ame4"] {
            assert_eq!(cache.value_line(kept), Some(&b"vvvv\r\n"[..]));
        }
        assert_eq!(cache.len(), 3);
    }
}
