//! What to run: argv, environment, working directory and user, from the image config and the
//! launch overrides, by docker's rules. Pure functions, so the rules are unit-tested here.
//!
//! - argv: an overridden entrypoint replaces the image's and drops the image cmd; otherwise the
//!   image entrypoint stays and a non-empty cmd override replaces the image cmd
//!   (moby `daemon/commit.go: merge`). Empty argv is docker's "No command specified".
//! - env: `PATH` (default), `HOSTNAME`, `TERM=xterm` with a tty, then the image env, then the
//!   launch env, each replacing same-named entries (moby `CreateDaemonEnvironment`,
//!   `ReplaceOrAppendEnvValues`); `HOME` from /etc/passwd if still unset (runc).
//! - working dir: override, else image, else `/`.
//! - executable lookup: an argv[0] with a '/' is used as is (relative to the working dir);
//!   otherwise the first regular file with an execute bit in the workload's `PATH`.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use spore_idm::LaunchConfig;

use crate::passwd::{self, GroupEntry, PasswdEntry, User, UserError};

/// Docker's default PATH for Linux containers.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A fully resolved process to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: User,
    pub tty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    NoCommand,
    User { spec: String, error: UserError },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::NoCommand => f.write_str(
                "no command specified: the image has no Entrypoint or Cmd and the launch gave none",
            ),
            SpecError::User { spec, error } => write!(f, "user {spec:?}: {error}"),
        }
    }
}

impl std::error::Error for SpecError {}

/// The user database of the image (missing files are empty).
#[derive(Debug, Default, Clone)]
pub struct UserDb {
    pub passwd: Vec<PasswdEntry>,
    pub group: Vec<GroupEntry>,
}

impl UserDb {
    pub fn parse(passwd_text: &str, group_text: &str) -> Self {
        Self {
            passwd: passwd::parse_passwd(passwd_text),
            group: passwd::parse_group(group_text),
        }
    }

    pub fn resolve(&self, spec: &str) -> Result<User, SpecError> {
        passwd::resolve_user(spec, &self.passwd, &self.group).map_err(|error| SpecError::User {
            spec: spec.to_string(),
            error,
        })
    }
}

/// Docker's argv merge.
pub fn resolve_argv(
    image_entrypoint: &[String],
    image_cmd: &[String],
    entrypoint: Option<&[String]>,
    cmd: Option<&[String]>,
) -> Result<Vec<String>, SpecError> {
    let (entrypoint, cmd): (&[String], &[String]) = match entrypoint {
        Some(ep) => (ep, cmd.unwrap_or(&[])),
        None => match cmd {
            Some(c) if !c.is_empty() => (image_entrypoint, c),
            _ => (image_entrypoint, image_cmd),
        },
    };
    let argv: Vec<String> = entrypoint.iter().chain(cmd).cloned().collect();
    if argv.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(argv)
}

fn env_key(entry: &str) -> &str {
    entry.split_once('=').map_or(entry, |(k, _)| k)
}

/// Replaces entries with the same key, appends new ones (moby `ReplaceOrAppendEnvValues`).
pub fn replace_or_append(env: &mut Vec<String>, overrides: &[String]) {
    for entry in overrides {
        let key = env_key(entry);
        match env.iter_mut().find(|e| env_key(e) == key) {
            Some(slot) => slot.clone_from(entry),
            None => env.push(entry.clone()),
        }
    }
}

/// The value of `key` in a `KEY=VALUE` list.
pub fn env_get<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter()
        .find(|e| env_key(e) == key)
        .and_then(|e| e.split_once('=').map(|(_, v)| v))
}

/// The workload of a zone.
pub fn resolve_workload(cfg: &LaunchConfig, users: &UserDb) -> Result<ProcessSpec, SpecError> {
    let image = &cfg.image;
    let o = &cfg.overrides;
    let argv = resolve_argv(
        &image.entrypoint,
        &image.cmd,
        o.entrypoint.as_deref(),
        o.cmd.as_deref(),
    )?;
    let user_spec = o.user.as_deref().unwrap_or(&image.user);
    let user = users.resolve(user_spec)?;
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={}", cfg.hostname),
    ];
    if o.tty {
        env.push("TERM=xterm".into());
    }
    replace_or_append(&mut env, &image.env);
    replace_or_append(&mut env, &o.env);
    if env_get(&env, "HOME").is_none() {
        env.push(format!("HOME={}", user.home));
    }
    let cwd = match o.working_dir.as_deref().filter(|d| !d.is_empty()) {
        Some(dir) => dir.to_string(),
        None if !image.working_dir.is_empty() => image.working_dir.clone(),
        None => "/".to_string(),
    };
    Ok(ProcessSpec {
        argv,
        env,
        cwd,
        user,
        tty: o.tty,
    })
}

/// An exec session's process: the workload's environment, cwd and user unless overridden.
pub fn resolve_exec(
    base: &ProcessSpec,
    argv: &[String],
    env: &[String],
    working_dir: &str,
    user: &str,
    tty: bool,
    users: &UserDb,
) -> Result<ProcessSpec, SpecError> {
    if argv.is_empty() || argv[0].is_empty() {
        return Err(SpecError::NoCommand);
    }
    let resolved_user = if user.is_empty() {
        base.user.clone()
    } else {
        users.resolve(user)?
    };
    let mut full_env = base.env.clone();
    if tty && env_get(&full_env, "TERM").is_none() {
        full_env.push("TERM=xterm".into());
    }
    replace_or_append(&mut full_env, env);
    if !user.is_empty() && env.iter().all(|e| env_key(e) != "HOME") {
        replace_or_append(&mut full_env, &[format!("HOME={}", resolved_user.home)]);
    }
    Ok(ProcessSpec {
        argv: argv.to_vec(),
        env: full_env,
        cwd: if working_dir.is_empty() {
            base.cwd.clone()
        } else {
            working_dir.to_string()
        },
        user: resolved_user,
        tty,
    })
}

/// Why the executable cannot be run; decides docker's exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// No such file in any PATH directory.
    NotInPath { name: String, path: String },
    /// Found, but not executable (every candidate lacked an execute bit, or was a directory).
    NotExecutable { path: String },
}

impl LookupError {
    /// docker: 127 for "not found", 126 for "cannot execute".
    pub fn exit_code(&self) -> i32 {
        match self {
            LookupError::NotInPath { .. } => 127,
            LookupError::NotExecutable { .. } => 126,
        }
    }
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::NotInPath { name, path } => write!(
                f,
                "exec: \"{name}\": executable file not found in $PATH (PATH={path})"
            ),
            LookupError::NotExecutable { path } => {
                write!(f, "exec: \"{path}\": permission denied")
            }
        }
    }
}

fn is_executable_file(path: &Path) -> Option<bool> {
    let meta = std::fs::metadata(path).ok()?;
    Some(meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Finds the program to exec for `argv0` (Go's `exec.LookPath`, as runc uses it): names with a
/// '/' are returned unchanged (execve reports their errors); others are searched in `path`,
/// relative entries against `cwd`.
pub fn find_executable(argv0: &str, path: &str, cwd: &str) -> Result<String, LookupError> {
    if argv0.contains('/') {
        return Ok(argv0.to_string());
    }
    let mut denied = None;
    for dir in path.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = if dir.starts_with('/') {
            format!("{}/{argv0}", dir.trim_end_matches('/'))
        } else {
            format!("{}/{dir}/{argv0}", cwd.trim_end_matches('/'))
        };
        match is_executable_file(Path::new(&candidate)) {
            Some(true) => return Ok(candidate),
            Some(false) => {
                denied.get_or_insert(candidate);
            }
            None => {}
        }
    }
    Err(match denied {
        Some(path) => LookupError::NotExecutable { path },
        None => LookupError::NotInPath {
            name: argv0.to_string(),
            path: path.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use spore_idm::launch::{ImageConfig, LAUNCH_CONFIG_VERSION, Overrides, RootFormat, RootImage};

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argv_follows_docker() {
        // (image entrypoint, image cmd, --entrypoint, CMD args, expected)
        type Case<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            Option<&'a [&'a str]>,
            Option<&'a [&'a str]>,
            Result<&'a [&'a str], SpecError>,
        );
        let cases: &[Case] = &[
            (&[], &["sh"], None, None, Ok(&["sh"])),
            (&["/ep"], &["a", "b"], None, None, Ok(&["/ep", "a", "b"])),
            (&["/ep"], &["a"], None, Some(&["x"]), Ok(&["/ep", "x"])),
            (&[], &["sh"], None, Some(&["ls", "-l"]), Ok(&["ls", "-l"])),
            // An empty CMD override keeps the image cmd (len(Cmd) == 0).
            (&["/ep"], &["a"], None, Some(&[]), Ok(&["/ep", "a"])),
            // An entrypoint override drops the image cmd.
            (&["/ep"], &["a"], Some(&["/new"]), None, Ok(&["/new"])),
            (
                &["/ep"],
                &["a"],
                Some(&["/new"]),
                Some(&["x"]),
                Ok(&["/new", "x"]),
            ),
            // --entrypoint "" clears it; the command is then the given cmd alone.
            (&["/ep"], &["a"], Some(&[]), Some(&["ls"]), Ok(&["ls"])),
            (&["/ep"], &["a"], Some(&[]), None, Err(SpecError::NoCommand)),
            (&[], &[], None, None, Err(SpecError::NoCommand)),
        ];
        for (ep, cmd, o_ep, o_cmd, want) in cases {
            let o_ep = o_ep.map(v);
            let o_cmd = o_cmd.map(v);
            let got = resolve_argv(&v(ep), &v(cmd), o_ep.as_deref(), o_cmd.as_deref());
            assert_eq!(
                got,
                want.clone().map(v),
                "{ep:?} {cmd:?} {o_ep:?} {o_cmd:?}"
            );
        }
    }

    fn config(image: ImageConfig, overrides: Overrides) -> LaunchConfig {
        LaunchConfig {
            version: LAUNCH_CONFIG_VERSION,
            zone_id: "z".into(),
            hostname: "box".into(),
            root: RootImage {
                format: RootFormat::Squashfs,
                size_bytes: 4096,
            },
            overlay_size_mib: 16,
            image,
            overrides,
            network: None,
            hosts: vec![],
            rlimits: vec![],
            verbose: false,
        }
    }

    fn users() -> UserDb {
        UserDb::parse(
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            "app:x:1000:\nextra:x:2000:app\n",
        )
    }

    #[test]
    fn env_cwd_and_user() {
        let image = ImageConfig {
            cmd: v(&["run"]),
            env: v(&["PATH=/app/bin:/bin", "LANG=C.UTF-8", "MODE=image"]),
            working_dir: "/app".into(),
            user: "app".into(),
            ..Default::default()
        };
        let spec =
            resolve_workload(&config(image.clone(), Overrides::default()), &users()).unwrap();
        assert_eq!(
            spec.env,
            v(&[
                "PATH=/app/bin:/bin",
                "HOSTNAME=box",
                "LANG=C.UTF-8",
                "MODE=image",
                "HOME=/home/app"
            ])
        );
        assert_eq!(spec.cwd, "/app");
        assert_eq!(
            (spec.user.uid, spec.user.gid, spec.user.groups.clone()),
            (1000, 1000, vec![2000])
        );
        assert!(!spec.tty);

        let overrides = Overrides {
            env: v(&["MODE=launch", "NEW=1", "HOME=/tmp", "BARE"]),
            working_dir: Some("/srv".into()),
            user: Some("0:0".into()),
            tty: true,
            ..Default::default()
        };
        let spec = resolve_workload(&config(image, overrides), &users()).unwrap();
        assert_eq!(
            spec.env,
            v(&[
                "PATH=/app/bin:/bin",
                "HOSTNAME=box",
                "TERM=xterm",
                "LANG=C.UTF-8",
                "MODE=launch",
                "NEW=1",
                "HOME=/tmp",
                "BARE"
            ])
        );
        assert_eq!(spec.cwd, "/srv");
        assert_eq!((spec.user.uid, spec.user.gid), (0, 0));
        assert!(spec.tty);
    }

    #[test]
    fn defaults_without_image_config() {
        let spec = resolve_workload(
            &config(
                ImageConfig::default(),
                Overrides {
                    cmd: Some(v(&["sh"])),
                    ..Default::default()
                },
            ),
            &UserDb::default(),
        )
        .unwrap();
        assert_eq!(
            spec.env,
            v(&[&format!("PATH={DEFAULT_PATH}"), "HOSTNAME=box", "HOME=/"])
        );
        assert_eq!(spec.cwd, "/");
        assert_eq!(spec.user.uid, 0);
    }

    #[test]
    fn unknown_user_is_an_error() {
        let image = ImageConfig {
            cmd: v(&["x"]),
            user: "ghost".into(),
            ..Default::default()
        };
        assert_eq!(
            resolve_workload(&config(image, Overrides::default()), &users())
                .unwrap_err()
                .to_string(),
            "user \"ghost\": unable to find user ghost: no matching entries in the image's /etc/passwd"
        );
    }

    #[test]
    fn exec_inherits_and_overrides() {
        let image = ImageConfig {
            cmd: v(&["run"]),
            env: v(&["A=1"]),
            user: "app".into(),
            working_dir: "/app".into(),
            ..Default::default()
        };
        let base = resolve_workload(&config(image, Overrides::default()), &users()).unwrap();
        let e = resolve_exec(&base, &v(&["ps"]), &v(&["A=2"]), "", "", false, &users()).unwrap();
        assert_eq!(e.cwd, "/app");
        assert_eq!(e.user, base.user);
        assert_eq!(env_get(&e.env, "A"), Some("2"));
        let e = resolve_exec(&base, &v(&["id"]), &[], "/tmp", "root", true, &users()).unwrap();
        assert_eq!((e.user.uid, e.cwd.as_str()), (0, "/tmp"));
        assert_eq!(env_get(&e.env, "HOME"), Some("/root"));
        assert_eq!(env_get(&e.env, "TERM"), Some("xterm"));
        assert_eq!(
            resolve_exec(&base, &[], &[], "", "", false, &users()),
            Err(SpecError::NoCommand)
        );
    }

    #[test]
    fn executable_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let mk = |rel: &str, mode: u32| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        mk("a/tool", 0o644);
        mk("b/tool", 0o755);
        mk("a/onlyread", 0o600);
        std::fs::create_dir_all(dir.path().join("b/adir")).unwrap();
        mk("rel/local", 0o755);
        let path = format!("{root}/a:{root}/b");

        assert_eq!(
            find_executable("tool", &path, "/"),
            Ok(format!("{root}/b/tool"))
        );
        assert_eq!(
            find_executable("onlyread", &path, "/"),
            Err(LookupError::NotExecutable {
                path: format!("{root}/a/onlyread")
            })
        );
        let err = find_executable("adir", &path, "/").unwrap_err();
        assert_eq!(err.exit_code(), 126);
        let err = find_executable("nope", &path, "/").unwrap_err();
        assert_eq!(err.exit_code(), 127);
        assert_eq!(
            err.to_string(),
            format!("exec: \"nope\": executable file not found in $PATH (PATH={path})")
        );
        assert_eq!(find_executable("./x", &path, "/"), Ok("./x".into()));
        assert_eq!(
            find_executable("/bin/true", "", "/"),
            Ok("/bin/true".into())
        );
        assert_eq!(
            find_executable("local", "rel", root),
            Ok(format!("{root}/rel/local"))
        );
    }
}
