//! Reads the cache of a shared namespace cannot answer: looked up in the
//! namespace, a run at a time, and answered when the lookup reports back.

use bytes::Bytes;

use super::{
    Actor, Answer, Batch, Command, Found, Giver, Handback, Looked, Mode, Op, Parked, ServerFault,
    Ticket, Wait,
};
use crate::store::READ_RUN;

impl<M: Mode> Actor<M> {
    /// Starts one lookup for the GET/EXISTS at `batch.next` and those right
    /// after it that the cache cannot answer either (a cached one ends the
    /// run: it is answered next, in order).
    pub(super) fn look_up(&mut self, mut batch: Box<Batch>, giver: Giver<Handback>) {
        let input = &batch.input;
        let names: Vec<Bytes> = batch.ops[batch.next..]
            .iter()
            .map_while(|op| match op {
                Op::Get(name) | Op::Exists(name) if !self.entries.contains(name.of(input)) => {
                    Some(name.to_bytes(input))
                }
                _ => None,
            })
            .take(READ_RUN)
            .collect();
        let count = names.len();
        batch.tally.cache_misses += count as u64;
        let Some(ticket) = self.park(batch, giver, Wait::Reads { count }) else {
            return;
        };
        let refused = match self.mode.shared() {
            Some(shared) => shared.look_up(names, ticket).err(),
            None => Some(ticket),
        };
        // Stopped: no answer would ever come.
        if let Some(ticket) = refused {
            self.looked_up(ticket, Err(ServerFault::StorageStopped));
        }
    }

    /// Answers a lookup's reads with what it found (each value found also
    /// goes into the cache).
    pub(super) fn looked_up(&mut self, ticket: Ticket, found: Found) {
        if !self.waits_for(ticket, |wait| matches!(wait, Wait::Reads { .. })) {
            return;
        }
        let Some(Parked {
            mut batch,
            giver,
            wait: Wait::Reads { count },
        }) = self.parked.take(ticket)
        else {
            return;
        };
        for i in 0..count {
            let (command, name) = match batch.ops[batch.next] {
                Op::Get(name) => (Command::Get, name),
                Op::Exists(name) => (Command::Exists, name),
                _ => break,
            };
            let looked = match &found {
                Err(fault) => {
                    batch.answer(Answer::Fault(command, fault));
                    continue;
                }
                Ok(values) => values.get(i).unwrap_or(&Looked::Absent),
            };
            if let Looked::Value(value) = looked {
                self.entries.insert(name.of(&batch.input), value);
            }
            batch.answer(match (command, looked) {
                (Command::Get, Looked::Value(value)) => Answer::Value(value),
                (Command::Get, Looked::Unservable) => {
                    Answer::Fault(Command::Get, &ServerFault::UnservableValue)
                }
                (Command::Get, _) => Answer::Missing,
                (_, Looked::Value(_) | Looked::Unservable) => Answer::Exists(true),
                (_, Looked::Absent) => Answer::Exists(false),
            });
        }
        self.serve(batch, giver);
    }
}
