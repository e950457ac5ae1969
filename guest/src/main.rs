//! spore-init: PID 1 of every spore zone.
//!
//! It mounts the kernel filesystems, loads the initrd's modules, finds the config and image
//! disks by content, mounts the image read-only under a tmpfs overlay and switches into it,
//! applies `launch.json` (hostname, /etc files, network, user, environment, rlimits), starts
//! the workload, and then stays in a poll loop: reaping every zombie, forwarding termination
//! signals, answering IDM requests on hvc1 (ping, metrics, shutdown, exec). When the workload
//! ends it reports the exit code or signal, kills what is left, syncs and powers off.
//!
//! It never panics (panic = abort in the guest profile, and no code path unwraps guest-visible
//! data): every error becomes a console message, an IDM Error and a power-off.

mod boot;
mod console;
mod disks;
mod etc;
mod exec;
mod idm_port;
mod metrics;
mod modules;
mod mounts;
mod net;
mod netlink;
mod passwd;
mod spawn;
mod spec;
mod supervisor;
mod sys;

fn main() {
    let init_start = sys::boottime_ns();
    if std::process::id() != 1 {
        eprintln!(
            "spore-init is the init of a spore zone and only runs as PID 1 inside one \
             (kernel/build-bundle.sh puts it in the guest initrd)"
        );
        std::process::exit(2);
    }
    boot::Boot::new(init_start).run_to_power_off()
}
