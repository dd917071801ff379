//! The backend the store actor holds: a queue into the engine's task.
//! Nothing here waits, except `close` (called off the async threads).

use bytes::Bytes;
use tokio::sync::mpsc;

use super::messages::Request;
use crate::storage::{Backend, Lease, Record, SharedBackend};

pub(super) struct PgBackend<T> {
    pub requests: mpsc::UnboundedSender<Request<T>>,
    pub engine: Option<tokio::task::JoinHandle<()>>,
    pub runtime: tokio::runtime::Handle,
    pub cache_bytes: usize,
}

impl<T: Send + 'static> Backend<T> for PgBackend<T> {
    fn append(&mut self, run: Vec<Record<T>>) -> Result<(), Vec<Record<T>>> {
        self.requests
            .send(Request::Append(run))
            .map_err(|returned| match returned.0 {
                Request::Append(run) => run,
                _ => Vec::new(),
            })
    }

    fn close(mut self: Box<Self>) {
        let _ = self.requests.send(Request::Close);
        if let Some(engine) = self.engine.take() {
            // Called on the blocking pool, never on a runtime thread.
            let _ = self.runtime.block_on(engine);
        }
    }
}

impl<T: Send + 'static> SharedBackend<T> for PgBackend<T> {
    fn reserve(&mut self, name: Box<[u8]>) -> Result<(), Box<[u8]>> {
        self.requests
            .send(Request::Reserve(name))
            .map_err(|returned| match returned.0 {
                Request::Reserve(name) => name,
                _ => Box::default(),
            })
    }

    fn release(&mut self, lease: Lease) {
        let _ = self.requests.send(Request::Release(lease));
    }

    fn look_up(&mut self, names: Vec<Bytes>, token: T) -> Result<(), T> {
        match self.requests.send(Request::LookUp(names, token)) {
            Ok(()) => Ok(()),
            Err(returned) => match returned.0 {
                Request::LookUp(_, token) => Err(token),
                // Not reached: the request sent is the one returned.
                _ => Ok(()),
            },
        }
    }

    fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }
}
