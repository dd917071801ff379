//! The foundation: small pieces every layer above may use, using nothing
//! of the crate themselves.
//!
//! - [`files`]: reading the files the config names, bounded in kind, size
//!   and time;
//! - [`shutdown`]: the two flags connections watch while the server stops;
//! - [`timer`]: a deadline that can be pushed back;
//! - [`logging`]: the `log` backend (stderr, a file, or syslog).

pub mod files;
pub mod logging;
pub mod shutdown;
pub(crate) mod stderr;
pub mod timer;
