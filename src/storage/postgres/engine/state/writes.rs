//! What a write job's rows mean for the STOREs and reservations it
//! carried: stored, taken, held, parked behind another front-end's
//! reservation, or tried again when the outcome is not known.

use tokio::time::Instant;

use super::{
    Acquire, AcquireRow, Insert, InsertRow, Item, Output, State, UNCONFIRMED, Witness, WriteRows,
    refused_for_its_data,
};
use crate::storage::{Event, Lease, Outcome, Record, Reserved, Written};

impl<T> State<T> {
    pub(super) fn finish_write(
        &mut self,
        inserts: Vec<Insert<T>>,
        acquires: Vec<Acquire>,
        releases: (Vec<i64>, Instant),
        result: Result<WriteRows, String>,
        now: Instant,
    ) {
        let mut rows = match result {
            Ok(rows) if rows.unconfirmed => {
                // PostgreSQL answered, but a commit is maybe on the
                // primary only: as unknown as a lost answer. The retry
                // finds this job's own rows, and proves them durable
                // before they count (jobs.rs `write`).
                self.count_unconfirmed();
                self.note_writes(Err(UNCONFIRMED), Witness::Job, now);
                log::debug!("postgres: {UNCONFIRMED}; trying the job's requests again");
                return self.write_failed(inserts, acquires, releases, now);
            }
            Ok(rows) => rows,
            Err(reason) => {
                self.note_writes(Err(&reason), Witness::Job, now);
                if refused_for_its_data(&reason) && inserts.len() > 1 {
                    // One row refused fails the whole statement: each
                    // STORE is tried again in a statement of its own, so
                    // the others are not held back by the one refused.
                    let mut inserts = inserts;
                    for insert in &mut inserts {
                        insert.alone = true;
                    }
                    return self.write_failed(inserts, acquires, releases, now);
                }
                return self.write_failed(inserts, acquires, releases, now);
            }
        };
        self.note_writes(Ok(()), Witness::Job, now);
        for insert in inserts {
            let row = rows.inserts.remove(&insert.record.name[..]);
            self.inserted(insert, row, now);
        }
        for acquire in acquires {
            let row = rows.acquires.remove(&acquire.name[..]);
            self.acquired(acquire, row, now);
        }
    }

    /// A write job whose outcome is not known: each of its requests is
    /// tried again (a STORE as a retry: it may meet its own row).
    fn write_failed(
        &mut self,
        inserts: Vec<Insert<T>>,
        acquires: Vec<Acquire>,
        (releases, release_deadline): (Vec<i64>, Instant),
        now: Instant,
    ) {
        for mut insert in inserts {
            insert.retried = true;
            self.retry(Item::Insert(insert), now);
        }
        for acquire in acquires {
            self.retry(Item::Acquire(acquire), now);
        }
        if !releases.is_empty() {
            self.retry(Item::Release(releases, release_deadline), now);
        }
    }

    fn inserted(&mut self, mut insert: Insert<T>, row: Option<InsertRow>, now: Instant) {
        let Some(row) = row else {
            // Not reached with a sound statement; try again rather than guess.
            return self.retry(Item::Insert(insert), now);
        };
        if let Some(lease) = insert.record.lease {
            // Used, or lost: this front-end's reservation ended either way.
            self.held.remove(&lease.0);
        }
        if row.stored {
            return self.written(insert, Outcome::Stored);
        }
        if row.free {
            // The name has a row; the job already checked whether a
            // retried STORE's own (it then counts as stored).
            return self.written(insert, Outcome::Taken);
        }
        // Not allowed: another front-end holds the name, or this STORE's
        // reservation lapsed. Without a reservation it competes again.
        insert.record.lease = None;
        match row.wait_secs {
            Some(secs) => self.park(Item::Insert(insert), secs, now),
            None => self.inserts.push_front(insert),
        }
    }

    pub(super) fn written(&mut self, insert: Insert<T>, outcome: Outcome) {
        let Record {
            name,
            value,
            token,
            lease,
        } = insert.record;
        self.out.push(Output::Report(Event::Written(Written {
            name,
            value,
            token,
            lease,
            outcome,
            durable_end: None,
        })));
    }

    fn acquired(&mut self, acquire: Acquire, row: Option<AcquireRow>, now: Instant) {
        let Some(row) = row else {
            return self.retry(Item::Acquire(acquire), now);
        };
        if row.held {
            self.held.insert(acquire.lease);
            let reserved = Reserved::Held(Lease(acquire.lease));
            return self.reserved(acquire.name, reserved);
        }
        if row.taken {
            return self.reserved(acquire.name, Reserved::Taken);
        }
        // The name's reservation row was being changed as we looked: look
        // again shortly.
        self.park(Item::Acquire(acquire), row.wait_secs.unwrap_or(0.01), now);
    }

    pub(super) fn reserved(&mut self, name: Box<[u8]>, reserved: Reserved) {
        self.out
            .push(Output::Report(Event::Reserved { name, reserved }));
    }
}
