//! The cluster: an embedded master that knows what every node holds and how
//! loaded it is, and sends each player to the best node.
//!
//! The decisions are plain functions over the master's view, without
//! sockets or clocks of their own, so they are tested alone:
//! [`membership`] keeps who is up and how loaded, [`content`] who holds
//! what, [`placement`] chooses the node for a player, [`copies`] keeps the
//! node-to-node copies (sources, progress, failures) and [`schedule`]
//! shares the bandwidth between them. [`protocol`] is
//! the control protocol's messages (gRPC, `proto/cluster.proto`) and the
//! checks on them. See `docs/design/cluster.md`.

pub mod content;
pub mod copies;
pub mod membership;
pub mod placement;
pub mod protocol;
pub mod schedule;
