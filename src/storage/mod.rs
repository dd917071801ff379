//! The seam between the store actor and where acknowledged STOREs are
//! kept: nothing (memory only), the data file, or a namespace shared with
//! other front-ends in PostgreSQL.
//!
//! The actor hands a backend runs of [`Record`]s and learns each one's
//! outcome later, as an [`Event`] through the [`Sink`] the backend was
//! started with, so the actor never waits on a disk or a network. Only
//! once a record's outcome is in does the actor put the value in the map
//! and acknowledge the STORE. A new backend plugs in here; no connection
//! code changes.
//!
//! A local backend (the data file) is the whole truth: a name missing from
//! the actor's map is absent. A shared backend ([`SharedBackend`]) is not: other
//! front-ends store names too, so the map is only a cache of names seen,
//! a name it lacks must be looked up, and a name must be reserved in the
//! shared namespace before a validator runs on it.

pub mod datafile;
pub mod postgres;

use bytes::Bytes;

use crate::protocol::ServerFault;

/// One record to make durable, with the token that routes its outcome
/// back to the STORE that asked for it.
pub struct Record<T> {
    pub name: Box<[u8]>,
    pub value: Box<[u8]>,
    pub token: T,
    /// The shared namespace's reservation the STORE was validated under,
    /// if any: it is stored only while that reservation is still held.
    pub lease: Option<Lease>,
}

/// A reservation of one name in a shared namespace, held by this
/// front-end (an opaque number the backend knows it by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease(pub i64);

/// What became of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Durable, and the name now has this value.
    Stored,
    /// The name already had a value (stored by another front-end).
    Taken,
    /// Not stored, or not known to be: the client's `ERROR` reason. Never
    /// means the name is taken.
    Failed(ServerFault),
}

/// The outcome of one record, handed back with its name and value.
pub struct Written<T> {
    pub name: Box<[u8]>,
    pub value: Box<[u8]>,
    pub token: T,
    /// The record's lease, handed back: on [`Outcome::Failed`] it may still
    /// be held, and the actor decides who gets it next.
    pub lease: Option<Lease>,
    pub outcome: Outcome,
    /// A data file's length just after this record, when the record is
    /// synced as it is handed back (`fsync = "always"`). The store
    /// publishes it for listings (`GET /names`) after putting the name in
    /// its map and before answering the STORE: a listed name is found by
    /// a GET, and a name answered `W00T!` is listed.
    pub durable_end: Option<u64>,
}

/// What became of [`SharedBackend::reserve`].
#[derive(Debug)]
pub enum Reserved {
    /// The name is reserved for this front-end until released (renewed
    /// by the backend meanwhile).
    Held(Lease),
    /// The name already has a value.
    Taken,
    /// No answer from the shared namespace in time.
    Failed(ServerFault),
}

/// What a backend reports, from any thread.
pub enum Event<T> {
    Written(Written<T>),
    /// A name asked for with [`SharedBackend::reserve`].
    Reserved {
        name: Box<[u8]>,
        reserved: Reserved,
    },
    /// What a [`SharedBackend::look_up`] found, with its token.
    LookedUp {
        token: T,
        found: Found,
    },
}

/// Where a backend reports outcomes (called from any thread).
pub type Sink<T> = Box<dyn Fn(Event<T>) + Send + Sync>;

/// What looked-up names hold, in the order asked, or why the shared
/// namespace could not say.
pub type Found = Result<Vec<Looked>, ServerFault>;

/// What one looked-up name holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Looked {
    Absent,
    Value(Bytes),
    /// A value the protocol cannot carry (a row another tool wrote):
    /// EXISTS finds the name, GET answers
    /// [`ServerFault::UnservableValue`], never the bytes.
    Unservable,
}

/// A backend, owned by the store actor. `T` is the actor's token: handed
/// over with each request and handed back, untouched, with its outcome.
pub trait Backend<T>: Send {
    /// Takes a run of records (STOREs arriving together, which may share a
    /// write, a sync or a transaction). Returns them if the backend has
    /// stopped; their STOREs then fail.
    fn append(&mut self, run: Vec<Record<T>>) -> Result<(), Vec<Record<T>>>;

    /// Finishes what was handed over (the data file: its final sync) and
    /// stops. Blocking: called off the async threads.
    fn close(self: Box<Self>);
}

/// A namespace other front-ends store into as well.
pub trait SharedBackend<T>: Backend<T> {
    /// Reserves `name` for a STORE about to be validated; the answer comes
    /// as [`Event::Reserved`]. While another front-end holds the name, the
    /// answer waits for that reservation to end. Returns the name if the
    /// backend has stopped (no answer will come).
    fn reserve(&mut self, name: Box<[u8]>) -> Result<(), Box<[u8]>>;

    /// Ends a reservation without storing (the STORE was refused).
    fn release(&mut self, lease: Lease);

    /// Looks names up; the answer comes as [`Event::LookedUp`] with
    /// `token`. Returns the token if the backend has stopped (no answer
    /// will come).
    fn look_up(&mut self, names: Vec<Bytes>, token: T) -> Result<(), T>;

    /// Bytes the actor may spend on cached names and values.
    fn cache_bytes(&self) -> usize;
}

/// A started backend: the whole truth, or a namespace shared with other
/// front-ends (the actor's map is then only a cache of it).
pub enum Started<T> {
    Local(Box<dyn Backend<T>>),
    Shared(Box<dyn SharedBackend<T>>),
}

/// Starts a backend once the actor's [`Sink`] exists.
pub type Start<T> = Box<dyn FnOnce(Sink<T>) -> std::io::Result<Started<T>> + Send>;
