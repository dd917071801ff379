//! What the fuzz targets (`fuzz/fuzz_targets/`) reach, and nothing else.
//!
//! The parsers they test are crate-private: a library user has no use for
//! them. Rather than making their modules public, this module re-exports
//! just those pure functions, hidden from the documentation; it is not a
//! stable surface.

pub use crate::storage::datafile::{Replay, replay};
pub use crate::validator::helper::parse_reply;
pub use crate::validator::process::{VerdictScanner, parse_verdict};
