//! Where the actor's map stands to the truth: the whole truth (memory, a
//! data file) or a cache of a namespace other front-ends share. Two types,
//! chosen once at start, so the actor's branches for each are settled
//! when it is built, not tested per request.

use super::parked::Ticket;
use crate::storage::{Backend, SharedBackend};

/// Where the map stands to the truth. A type, not a flag: each mode's
/// branches are chosen when the actor is built, not tested per request.
pub(crate) trait Mode: Send + 'static {
    /// The map is a cache of a namespace other front-ends write too.
    const SHARED: bool;
    /// Where commits are made durable, when anywhere.
    fn backend(&mut self) -> Option<&mut dyn Backend<Ticket>>;
    /// The shared namespace (only called when [`Mode::SHARED`]).
    fn shared(&mut self) -> Option<&mut dyn SharedBackend<Ticket>>;
    /// Finishes what was handed over (the data file: its final sync).
    /// Blocking: called off the async threads.
    fn close(self);
}

/// The map is the whole truth: memory only, or a data file.
pub(crate) struct Local(pub Option<Box<dyn Backend<Ticket>>>);

impl Mode for Local {
    const SHARED: bool = false;

    fn backend(&mut self) -> Option<&mut dyn Backend<Ticket>> {
        match &mut self.0 {
            Some(backend) => Some(backend.as_mut()),
            None => None,
        }
    }

    fn shared(&mut self) -> Option<&mut dyn SharedBackend<Ticket>> {
        None
    }

    fn close(self) {
        if let Some(backend) = self.0 {
            backend.close();
        }
    }
}

/// The map caches a namespace shared with other front-ends.
pub(crate) struct SharedNamespace(pub Box<dyn SharedBackend<Ticket>>);

impl Mode for SharedNamespace {
    const SHARED: bool = true;

    fn backend(&mut self) -> Option<&mut dyn Backend<Ticket>> {
        Some(self.0.as_mut() as &mut dyn Backend<Ticket>)
    }

    fn shared(&mut self) -> Option<&mut dyn SharedBackend<Ticket>> {
        Some(self.0.as_mut())
    }

    fn close(self) {
        self.0.close();
    }
}
