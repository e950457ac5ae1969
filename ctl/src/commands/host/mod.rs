//! `sporectl host ...`
pub mod status;
