//! The conformance cases, one public async function each.

mod concurrency;
mod locks;
mod objects;
mod omap;
mod pools;
mod snapshots;
mod watch;

pub use concurrency::*;
pub use locks::*;
pub use objects::*;
pub use omap::*;
pub use pools::*;
pub use snapshots::*;
pub use watch::*;
