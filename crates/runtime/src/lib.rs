//! Zone launch and destroy on a backend (Xen, QEMU): launch specs, config blocks, consoles
