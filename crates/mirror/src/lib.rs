//! Mirroring of rbdx images between two sites, as Ceph's `rbd mirror` and `rbd-mirror` do.
//!
//! A pool namespace's mirroring configuration lives in the omap of its `rbd_mirroring`
//! object ([`pool`]): the mode, the pool's mirror UUID, the peers, a record per mirrored
//! image, and the status the mirror daemons report. Each image's role (primary or not) and
//! history are in its header ([`rbdx_image::mirroring`]). Peers are other sites reached
//! through their gateway with a `mirror-peer` key, exchanged as bootstrap tokens
//! ([`token`]). The daemon ([`daemon`]) runs at a receiving site and keeps its non-primary
//! copies in step: journal mode replays the primary's journal; snapshot mode copies the
//! deltas between mirror snapshots.

#![warn(missing_docs, missing_debug_implementations)]

pub mod bootstrap;
pub mod daemon;
pub mod image;
pub mod omap;
pub mod peer;
pub mod pool;
pub mod resync;
pub mod schedule;
pub mod site;
pub mod status;
pub mod token;
pub mod verify;
pub mod view;
pub use daemon::lease;
