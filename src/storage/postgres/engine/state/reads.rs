//! What a read job's rows mean for the lookups it carried: values
//! answered and cached, absent names answered absent, values the
//! protocol cannot carry answered `ERROR`, and rows not known to be
//! durable answered only once a retry proves them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;
use tokio::time::Instant;

use super::{Item, LookUp, Output, ReadRows, State, UNSERVABLE, UNSERVABLE_LOG_EVERY};
use crate::storage::Looked;

impl<T> State<T> {
    pub(super) fn finish_read(
        &mut self,
        lookups: Vec<LookUp<T>>,
        result: Result<ReadRows, String>,
        now: Instant,
    ) {
        let ReadRows { found, unconfirmed } = match result {
            Ok(rows) => rows,
            Err(reason) => {
                self.note_reads(Err(&reason));
                for lookup in lookups {
                    self.retry(Item::LookUp(lookup), now);
                }
                return;
            }
        };
        self.note_reads(Ok(()));
        if unconfirmed {
            return self.unconfirmed_read(lookups, &found, now);
        }
        let mut by_name: HashMap<&[u8], Looked> = HashMap::with_capacity(found.len());
        for (name, value) in &found {
            let looked = match crate::protocol::check_value(value, &self.settings.limits) {
                // Only what may be served is cached (the actor caches each
                // value found): the cache answers as it is.
                Ok(_) => Looked::Value(value.clone()),
                Err(why) => {
                    self.unservable(name, value, why, now);
                    Looked::Unservable
                }
            };
            by_name.insert(&name[..], looked);
        }
        for lookup in lookups {
            let values = lookup
                .names
                .iter()
                .map(|name| by_name.get(&name[..]).cloned().unwrap_or(Looked::Absent))
                .collect();
            self.out.push(Output::Answer(lookup.token, Ok(values)));
        }
    }

    /// A read whose commit drew a warning: what it found is not known to
    /// be durable, so it is neither answered nor cached. Reads that found
    /// nothing are answered (an absent name promises nothing); the others
    /// are tried again, and get `ERROR storage unavailable` if that never
    /// succeeds in time.
    fn unconfirmed_read(
        &mut self,
        lookups: Vec<LookUp<T>>,
        found: &[(Bytes, Bytes)],
        now: Instant,
    ) {
        self.count_unconfirmed();
        let found: HashSet<&[u8]> = found.iter().map(|(name, _)| &name[..]).collect();
        for lookup in lookups {
            if lookup.names.iter().any(|name| found.contains(&name[..])) {
                self.retry(Item::LookUp(lookup), now);
            } else {
                let absent = vec![Looked::Absent; lookup.names.len()];
                self.out.push(Output::Answer(lookup.token, Ok(absent)));
            }
        }
    }

    /// Counts (and now and then logs) a row whose value the protocol
    /// cannot carry: sent as it is, it could end a reply line early or
    /// pass for another reply.
    fn unservable(
        &mut self,
        name: &[u8],
        value: &[u8],
        why: crate::protocol::ProtocolError,
        now: Instant,
    ) {
        if let Some(pg) = &self.metrics.postgres {
            pg.unservable.fetch_add(1, Relaxed);
        }
        if self
            .unservable_logged
            .is_none_or(|at| now.saturating_duration_since(at) >= UNSERVABLE_LOG_EVERY)
        {
            self.unservable_logged = Some(now);
            log::warn!(
                "postgres: {}: the value of name \"{}\" ({} bytes) cannot be served: {why}; \
                 GETs of it are answered \"ERROR {UNSERVABLE}\"",
                self.settings.table,
                name.escape_ascii(),
                value.len()
            );
        }
    }
}
