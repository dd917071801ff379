//! Batches the actor keeps while one of their requests waits, and the
//! tickets that find them again.
//!
//! A request that cannot be answered in the actor's turn (a STORE being
//! validated, written, or waiting for its name; reads looked up in a
//! shared namespace) parks its whole batch here: the requests after it
//! must see its outcome, and replies leave in order. Whatever finishes the
//! wait (a validation task, the data file's writer, the PostgreSQL engine)
//! reports to the actor with the batch's [`Ticket`], and the actor goes on
//! with the batch where it stopped. The connection meanwhile only waits
//! for its replies.

use std::collections::HashMap;

use bytes::BytesMut;

use super::batch::Batch;
use crate::protocol::ServerFault;
use crate::storage::Lease;
use crate::store::handback::{Giver, SlotId};

/// What the actor hands a connection: replies ready while its batch waits,
/// then the batch itself, answered (or stopped at the high-water mark).
#[derive(Debug)]
pub enum Handback {
    /// Replies to write now, sent when the batch starts to wait (empty if
    /// none is ready: the connection then watches its client until the
    /// batch comes back). At most one part waits unreceived: while one
    /// does, later replies stay in the batch, whose high-water mark bounds
    /// them.
    Part(BytesMut),
    Batch(Box<Batch>),
}

/// Routes an outcome back to its parked batch: which one, and which of
/// the requests it waits for (a run of STOREs written together). Opaque
/// to whoever carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    park: u32,
    index: u32,
}

impl Ticket {
    pub(crate) fn index(self) -> usize {
        self.index as usize
    }

    /// The ticket of request `index` of the same wait.
    pub(crate) fn with_index(self, index: usize) -> Ticket {
        Ticket {
            park: self.park,
            index: index as u32,
        }
    }
}

/// What a parked batch waits for: its request at `next` (and, for a run,
/// those right after it).
#[derive(Debug)]
pub(crate) enum Wait {
    /// The name of the STORE at `next` is held by another STORE (or being
    /// reserved in the shared namespace for this one): its turn comes with
    /// that outcome.
    Turn,
    /// The STORE at `next` holds its name (and the shared namespace's
    /// lease, with one) while its validators run.
    Validating { lease: Option<Lease> },
    /// A run of STOREs from `next` is being written: each one's outcome
    /// by position, `left` of them still unknown.
    Commits {
        outcomes: Vec<Option<Result<bool, ServerFault>>>,
        left: usize,
    },
    /// The `count` reads from `next` are being looked up.
    Reads { count: usize },
}

/// The way back to a batch's connection: `None` once its client left (what
/// had started for it finishes, and the batch is dropped after).
pub(crate) type Back = Option<Giver<Handback>>;

/// A batch at rest in the actor, with the way back to its connection.
#[derive(Debug)]
pub(crate) struct Parked {
    pub batch: Box<Batch>,
    pub giver: Back,
    pub wait: Wait,
}

/// The parked batches, by ticket. A slot is reused once its batch moves
/// on: every ticket is redeemed exactly once before that (one outcome per
/// request waited for), so no stale ticket can reach a new tenant.
#[derive(Debug, Default)]
pub(crate) struct ParkedBatches {
    slots: Vec<Option<Parked>>,
    free: Vec<u32>,
    /// Which slot each parked batch's connection has (a connection has one
    /// batch at the actor at most): a client that left is found at once,
    /// however many batches are parked.
    by_connection: HashMap<SlotId, u32>,
}

impl ParkedBatches {
    /// A ticket for a batch about to be parked with [`fill`](Self::fill)
    /// (its outcomes may be asked for before it is parked).
    pub fn vacant(&mut self) -> Ticket {
        let park = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            (self.slots.len() - 1) as u32
        });
        Ticket { park, index: 0 }
    }

    pub fn fill(&mut self, ticket: Ticket, parked: Parked) {
        if let Some(giver) = &parked.giver {
            self.by_connection.insert(giver.slot_id(), ticket.park);
        }
        self.slots[ticket.park as usize] = Some(parked);
    }

    pub fn get_mut(&mut self, ticket: Ticket) -> Option<&mut Parked> {
        self.slots.get_mut(ticket.park as usize)?.as_mut()
    }

    /// Takes the batch out to go on with it; its slot is free again.
    pub fn take(&mut self, ticket: Ticket) -> Option<Parked> {
        let parked = self.slots.get_mut(ticket.park as usize)?.take()?;
        self.free.push(ticket.park);
        if let Some(giver) = &parked.giver {
            self.by_connection.remove(&giver.slot_id());
        }
        Some(parked)
    }

    /// The ticket of the batch parked for the connection of `slot`, if any.
    pub fn find(&self, slot: SlotId) -> Option<Ticket> {
        let park = *self.by_connection.get(&slot)?;
        Some(Ticket { park, index: 0 })
    }

    /// Lets the connection of a parked batch go (its client left): the
    /// batch goes on without it, and is dropped when it moves on.
    pub fn let_go(&mut self, ticket: Ticket) {
        if let Some(parked) = self.get_mut(ticket)
            && let Some(giver) = parked.giver.take()
        {
            self.by_connection.remove(&giver.slot_id());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.free.len() == self.slots.len()
    }

    /// Every batch still parked (the store is stopping).
    pub fn drain(&mut self) -> impl Iterator<Item = Parked> + '_ {
        self.free.clear();
        self.by_connection.clear();
        self.slots.drain(..).flatten()
    }
}
