//! spore-init: the guest's PID 1
