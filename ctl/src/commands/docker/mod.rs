//! The docker-style verbs at the top level (`sporectl run`, `ps`, `rm`, ...). Most are the
//! zone and image verbs under docker's names; these three take docker's flags.
pub mod ps;
pub mod rm;
pub mod run;
