//! Raw ABI: every ioctl number, hypercall number and C struct the crate passes to the kernel
//! or the hypervisor, each with the header it comes from. Nothing else in the crate declares
//! a `repr(C)` ABI type.

pub mod hyper;
pub mod ioctl;
pub mod pv;
