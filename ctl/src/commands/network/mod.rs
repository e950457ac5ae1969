//! `sporectl network ...`
pub mod reservations;
