//! `sporectl image ...`
pub mod import;
pub mod list;
pub mod progress;
pub mod prune;
pub mod pull;
pub mod rm;
