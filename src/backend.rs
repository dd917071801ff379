//! The seam between the store actor and where acknowledged STOREs are
//! kept durably: nothing (memory only), the data file, and later a shared
//! database.
//!
//! The actor hands a backend runs of [`Record`]s and learns each one's
//! outcome later, as a [`Written`] through the [`Sink`] the backend was
//! started with, so the actor never waits on a disk or a network. Only
//! once a record's outcome is in does the actor put the value in the map
//! and acknowledge the STORE. A new backend plugs in here; no connection
//! code changes.

/// One record to make durable, with the token that routes its outcome
/// back to the STORE that asked for it.
pub struct Record<T> {
    pub name: Box<[u8]>,
    pub value: Box<[u8]>,
    pub token: T,
}

/// The outcome of one record, handed back with its name and value.
pub struct Written<T> {
    pub name: Box<[u8]>,
    pub value: Box<[u8]>,
    pub token: T,
    /// On failure, a short reason for the client's `ERROR` line.
    pub result: Result<(), String>,
}

/// Where a backend reports outcomes (called from any thread).
pub type Sink<T> = Box<dyn Fn(Written<T>) + Send + Sync>;

/// A durable backend, owned by the store actor.
pub trait Backend<T>: Send {
    /// Takes a run of records (one connection's pipelined STOREs, which
    /// may share a write and a sync). Returns them if the backend has
    /// stopped; their STOREs then fail.
    fn append(&mut self, run: Vec<Record<T>>) -> Result<(), Vec<Record<T>>>;

    /// Finishes what was handed over (the data file: its final sync) and
    /// stops. Blocking: called off the async threads.
    fn close(self: Box<Self>);
}

/// Starts a backend once the actor's [`Sink`] exists.
pub type Start<T> = Box<dyn FnOnce(Sink<T>) -> std::io::Result<Box<dyn Backend<T>>> + Send>;
