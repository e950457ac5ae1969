//! spored: the spore daemon.
//!
//! The library holds the daemon's core so that tests can drive it directly; the `spored`
//! binary (`main.rs`) only parses flags and calls [`server::run`].

pub mod config;
pub mod console;
pub mod events;
pub mod idm;
pub mod state;
pub mod store;
pub mod zones;
