//! Starting a process: fork, then in the child session, terminal, stdio, rlimits, user,
//! working directory and exec. A close-on-exec pipe tells the parent whether exec happened
//! (it closes) or which step failed and why (the child writes the step and errno), so failures
//! get docker's exit codes and a precise message: 127 when the program does not exist, 126 when
//! it cannot be run.

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};

use spore_idm::launch::{Rlimit, RlimitResource};

use crate::spec::{self, DEFAULT_PATH, ProcessSpec};
use crate::sys::{self, child, pid_t};

/// The zone console device.
pub const CONSOLE: &str = "/dev/hvc0";

/// Where the new process's stdin/stdout/stderr come from.
#[derive(Debug)]
pub enum Stdio {
    /// hvc0 for all three; with `spec.tty` it is also the controlling terminal.
    Console,
    /// The slave of a pseudo-terminal (exec with tty): all three, controlling terminal.
    Pty(String),
    /// Given fds (pipe ends) for 0, 1, 2.
    Fds([RawFd; 3]),
}

/// A process that could not be started: docker's exit code and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnError {
    pub exit_code: i32,
    pub message: String,
}

/// The step of the child that failed, as written to the status pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Step {
    Signals = 1,
    Session = 2,
    Terminal = 3,
    Stdio = 4,
    Rlimit = 5,
    Groups = 6,
    Gid = 7,
    Uid = 8,
    Chdir = 9,
    Exec = 10,
}

impl Step {
    fn from_u8(v: u8) -> Option<Step> {
        use Step::*;
        [
            Signals, Session, Terminal, Stdio, Rlimit, Groups, Gid, Uid, Chdir, Exec,
        ]
        .into_iter()
        .find(|s| *s as u8 == v)
    }
}

// glibc types the constants as u32, musl as i32: the cast is needed on one of them.
#[allow(clippy::unnecessary_cast)]
fn rlimit_number(resource: RlimitResource) -> u32 {
    use RlimitResource::*;
    (match resource {
        As => libc::RLIMIT_AS,
        Core => libc::RLIMIT_CORE,
        Cpu => libc::RLIMIT_CPU,
        Data => libc::RLIMIT_DATA,
        Fsize => libc::RLIMIT_FSIZE,
        Locks => libc::RLIMIT_LOCKS,
        Memlock => libc::RLIMIT_MEMLOCK,
        Msgqueue => libc::RLIMIT_MSGQUEUE,
        Nice => libc::RLIMIT_NICE,
        Nofile => libc::RLIMIT_NOFILE,
        Nproc => libc::RLIMIT_NPROC,
        Rss => libc::RLIMIT_RSS,
        Rtprio => libc::RLIMIT_RTPRIO,
        Rttime => libc::RLIMIT_RTTIME,
        Sigpending => libc::RLIMIT_SIGPENDING,
        Stack => libc::RLIMIT_STACK,
    }) as u32
}

/// docker's exit code for an exec failure (moby `daemon/start.go`): "no such file or directory"
/// and "not a directory" are 127, everything else ("permission denied", "exec format error")
/// 126.
pub fn exit_code_for(errno: i32) -> i32 {
    match errno {
        libc::ENOENT | libc::ENOTDIR => 127,
        _ => 126,
    }
}

fn message_for(step: Step, errno: i32, program: &str, spec: &ProcessSpec) -> String {
    let err = std::io::Error::from_raw_os_error(errno);
    let reason = match errno {
        libc::ENOENT => "no such file or directory".to_string(),
        libc::EACCES => "permission denied".to_string(),
        libc::ENOEXEC => "exec format error".to_string(),
        _ => err.to_string(),
    };
    match step {
        Step::Exec if program == spec.argv[0] => format!("exec: \"{program}\": {reason}"),
        Step::Exec => format!("exec: \"{}\" ({program}): {reason}", spec.argv[0]),
        Step::Chdir => format!(
            "cannot enter working directory \"{}\" as uid {}: {reason}",
            spec.cwd, spec.user.uid
        ),
        Step::Uid | Step::Gid | Step::Groups => format!(
            "cannot switch to uid {} gid {} groups {:?}: {reason}",
            spec.user.uid, spec.user.gid, spec.user.groups
        ),
        Step::Rlimit => format!("cannot apply a resource limit: {reason}"),
        Step::Terminal => format!("cannot make the terminal the controlling terminal: {reason}"),
        Step::Stdio => format!("cannot set up stdin/stdout/stderr: {reason}"),
        Step::Session | Step::Signals => format!("cannot prepare the process: {reason}"),
    }
}

fn cstring(what: &str, s: &str) -> Result<CString, SpawnError> {
    CString::new(s).map_err(|_| SpawnError {
        exit_code: 126,
        message: format!("{what} {s:?} contains a NUL byte"),
    })
}

/// Creates the working directory if it is missing (docker does the same).
pub fn ensure_working_dir(cwd: &str) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::metadata(cwd) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(cwd),
        Err(e) => Err(e),
    }
}

/// Starts `spec`. Returns the pid once the program has been exec'd.
pub fn spawn(spec: &ProcessSpec, rlimits: &[Rlimit], stdio: &Stdio) -> Result<pid_t, SpawnError> {
    let path = spec::env_get(&spec.env, "PATH").unwrap_or(DEFAULT_PATH);
    let program =
        spec::find_executable(&spec.argv[0], path, &spec.cwd).map_err(|e| SpawnError {
            exit_code: e.exit_code(),
            message: e.to_string(),
        })?;

    // Everything the child needs, prepared before fork.
    let c_program = cstring("program", &program)?;
    let c_argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| cstring("argument", a))
        .collect::<Result<_, _>>()?;
    let c_env: Vec<CString> = spec
        .env
        .iter()
        .map(|e| cstring("environment entry", e))
        .collect::<Result<_, _>>()?;
    let mut argv_ptrs: Vec<*const libc::c_char> = c_argv.iter().map(|c| c.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = c_env.iter().map(|c| c.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    let c_cwd = cstring("working directory", &spec.cwd)?;
    let c_terminal = match stdio {
        Stdio::Console => Some(cstring("console", CONSOLE)?),
        Stdio::Pty(path) => Some(cstring("terminal", path)?),
        Stdio::Fds(_) => None,
    };
    let limits: Vec<(u32, u64, u64)> = rlimits
        .iter()
        .map(|l| (rlimit_number(l.resource), l.soft, l.hard))
        .collect();
    let groups: Vec<libc::gid_t> = spec.user.groups.clone();
    // How the child relates to its terminal. The console workload with a tty joins init's
    // session (init holds hvc0 as its controlling terminal, see `sys::own_terminal`) in a
    // foreground group of its own: it gets job control and ^C, and its exit hangs nothing up.
    // Everything else leads a new session; only a pty becomes a controlling terminal there, so
    // a console workload without a tty never holds hvc0 as one.
    let foreground = matches!(stdio, Stdio::Console) && spec.tty;
    let controlling = matches!(stdio, Stdio::Pty(_));

    let (status_read, status_write) = sys::pipe().map_err(|e| SpawnError {
        exit_code: 126,
        message: format!("cannot create the exec status pipe: {e}"),
    })?;
    let pid = child::fork().map_err(|e| SpawnError {
        exit_code: 126,
        message: format!("cannot fork: {e}"),
    })?;
    if pid == 0 {
        let report = status_write.as_raw_fd();
        let fail = |step: Step, err: std::io::Error| -> ! {
            let errno = err.raw_os_error().unwrap_or(libc::EINVAL);
            let mut msg = [0u8; 5];
            msg[0] = step as u8;
            msg[1..].copy_from_slice(&errno.to_le_bytes());
            child::write_all(report, &msg);
            child::exit(exit_code_for(errno));
        };
        if foreground {
            child::own_process_group().unwrap_or_else(|e| fail(Step::Session, e));
        } else {
            child::setsid().unwrap_or_else(|e| fail(Step::Session, e));
        }
        let fds = match (stdio, &c_terminal) {
            (Stdio::Fds(fds), _) => *fds,
            (_, Some(term)) => {
                // O_NOCTTY: a session leader opening a terminal would otherwise acquire it.
                let fd = child::open(term, libc::O_RDWR | libc::O_NOCTTY)
                    .unwrap_or_else(|e| fail(Step::Stdio, e));
                if foreground {
                    // Still with init's dispositions: SIGTTOU ignored.
                    child::take_foreground(fd).unwrap_or_else(|e| fail(Step::Terminal, e));
                } else if controlling {
                    child::set_controlling_tty(fd).unwrap_or_else(|e| fail(Step::Terminal, e));
                }
                [fd, fd, fd]
            }
            (_, None) => fail(Step::Stdio, std::io::Error::from_raw_os_error(libc::EINVAL)),
        };
        child::reset_signals().unwrap_or_else(|e| fail(Step::Signals, e));
        for (target, fd) in fds.into_iter().enumerate() {
            let target = target as RawFd;
            if fd == target {
                child::clear_cloexec(fd).unwrap_or_else(|e| fail(Step::Stdio, e));
            } else {
                child::dup2(fd, target).unwrap_or_else(|e| fail(Step::Stdio, e));
            }
        }
        for (resource, soft, hard) in &limits {
            child::setrlimit(*resource, *soft, *hard).unwrap_or_else(|e| fail(Step::Rlimit, e));
        }
        child::setgroups(&groups).unwrap_or_else(|e| fail(Step::Groups, e));
        child::setgid(spec.user.gid).unwrap_or_else(|e| fail(Step::Gid, e));
        child::setuid(spec.user.uid).unwrap_or_else(|e| fail(Step::Uid, e));
        child::chdir(&c_cwd).unwrap_or_else(|e| fail(Step::Chdir, e));
        let err = child::execve(&c_program, &argv_ptrs, &env_ptrs);
        fail(Step::Exec, err);
    }

    drop(status_write);
    let mut status = Vec::new();
    let read = File::from(status_read).read_to_end(&mut status);
    if read.is_ok() && status.is_empty() {
        return Ok(pid);
    }
    // The child failed before exec and is exiting: collect it here so it never looks like a
    // workload exit to the reaper.
    let _ = sys::wait_for(pid);
    let (step, errno) = match (
        status.first().and_then(|s| Step::from_u8(*s)),
        status.get(1..5),
    ) {
        (Some(step), Some(e)) => (step, i32::from_le_bytes([e[0], e[1], e[2], e[3]])),
        _ => {
            return Err(SpawnError {
                exit_code: 126,
                message: "the process failed before exec without saying why".into(),
            });
        }
    };
    Err(SpawnError {
        exit_code: exit_code_for(errno),
        message: message_for(step, errno, &program, spec),
    })
}
