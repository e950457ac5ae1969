//! Xen userspace: privcmd hypercalls, event channels, grants, xenstore, the x86_64 PV domain builder
