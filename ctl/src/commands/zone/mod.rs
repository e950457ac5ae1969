//! `sporectl zone ...`
pub mod attach;
pub mod destroy;
pub mod exec;
pub mod get;
pub mod launch;
pub mod list;
pub mod logs;
pub mod resources;
pub mod stats;
pub mod top;
pub mod watch;
