//! The command line's subcommands other than `serve` (see [`crate::daemon`]).

pub mod cache;
pub mod export;
