//! spored: the spore daemon.
//!
//! The library holds the daemon's core so that tests can drive it directly; the `spored`
//! binary (`main.rs`) only parses flags and calls [`server::run`].

pub mod api;
pub mod auth;
pub mod authority;
pub mod backends;
pub mod config;
pub mod console;
pub mod daemon;
pub mod driver;
pub mod events;
pub mod guest;
pub mod host;
pub mod idm;
pub mod images;
pub mod launch;
pub mod limits;
pub mod network;
pub mod resources;
pub mod server;
pub mod shared;
pub mod state;
pub mod store;
pub mod validate;
pub mod zones;
