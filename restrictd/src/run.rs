//! `restrictd run`: one restricted, recorded session around a command.
//!
//! This instance loads its own copy of the programs and maps, attaches them to
//! the session root cgroup, and detaches them when it exits (the links are
//! fd-based), so concurrent `run`s and the daemon do not interfere.

use std::{
    ffi::OsString,
    io::Write as _,
    os::{fd::AsRawFd, unix::process::ExitStatusExt},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use uuid::Uuid;

use crate::{
    binding::{groups_of, Binding},
    bpf::Kernel,
    cgroup::{self, Cgroup},
    config::{Config, DEFAULT_CONFIG_PATH},
    events::Output,
    lifecycle::Lifecycle,
    policy::{PolicySet, Who},
    recorder::Recorder,
    session::{Registry, Session},
};

/// Exit status when restrictd itself fails (as `env`, `chroot`, `timeout` do).
pub const EXIT_INTERNAL: i32 = 125;

pub struct RunArgs {
    pub config: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    pub events: Option<PathBuf>,
    pub command: Vec<OsString>,
}

/// Loads the config given, or the default file if it exists, or defaults.
pub fn load_config(path: Option<&std::path::Path>) -> Result<Config> {
    match path {
        Some(p) => Config::load(p),
        None if std::path::Path::new(DEFAULT_CONFIG_PATH).exists() => {
            Config::load(DEFAULT_CONFIG_PATH.as_ref())
        }
        None => Ok(Config::default()),
    }
}

/// Runs the session; returns the exit status restrictd should exit with.
pub fn run(args: RunArgs) -> Result<i32> {
    if args.command.is_empty() {
        bail!("no command given: restrictd run [OPTIONS] -- CMD [ARGS...]");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("restrictd run must be run as root (it loads BPF programs and creates cgroups)");
    }
    let config = load_config(args.config.as_deref())?;
    // The file's documents: its host default, and per-login policies
    // matched against the user who runs the command.
    let policies = match args.policy.as_deref() {
        Some(p) => PolicySet::load(p, None, config.policy_strictness())?,
        None => PolicySet::default(),
    };
    policies.log_warnings();
    crate::bpf::check_fits(&policies).map_err(anyhow::Error::msg)?;
    let output = Output::new(args.events.as_deref())?;

    let mount = match &config.cgroup_path {
        Some(p) => p.clone(),
        None => cgroup::find_cgroup2_mount()?,
    };
    let root = cgroup::session_root(Some(&mount), &config.root_path)?;
    let mut kernel = Kernel::load(config.load_options(None)?)?;
    let ids = kernel.policy.set_all(&policies, |_| Ok(()))?;
    kernel.programs.attach(&root.path)?;
    kernel.programs.attach_tracepoints()?;

    let registry = Arc::new(Mutex::new(Registry::new()));
    let recorder = Arc::new(Recorder::new(
        kernel.rings,
        kernel.counters,
        registry.clone(),
        output,
        None,
    )?);
    recorder.start()?;
    let lifecycle = Lifecycle::new(
        registry,
        kernel.sessions,
        None,
        recorder.clone(),
        mount,
        Binding::new(policies, ids, config.session_flags()),
    );

    let sid = Uuid::new_v4();
    let cg = root.create_child(&sid.to_string())?;
    // From here on the cgroup must be emptied and removed whatever happens.
    let guard = CgroupGuard(Some(cg.clone()));
    let mut session = Session::new(sid, cg.clone());
    // The session belongs to whoever ran restrictd (as sudo reports it, or the real uid).
    let uid = nix::unistd::getuid();
    let name = std::env::var("SUDO_USER").ok().or_else(|| {
        nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
    });
    session.who = Some(Who {
        user: name.clone().unwrap_or_default(),
        groups: groups_of(name.as_deref().unwrap_or_default()),
        service: Some("restrictd run".into()),
        ..Default::default()
    });
    session.user = name.clone();
    session.login = name;
    session.uid = Some(uid.as_raw());
    session.service = "restrictd run".into();
    session.leader_pid = std::process::id();
    // CMD enters the cgroup itself, before its exec (see `supervise`).
    lifecycle.open(session, || Ok(()), |_, _, _| Ok(()))?;
    log::info!(
        "session {sid} in cgroup {} (id {}), system log: {}",
        cg.path.display(),
        cg.id,
        recorder.system_log_name()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let status = rt.block_on(supervise(&cg, &args.command))?;

    // Empty the cgroup, then end the session (which removes it) and write
    // everything the session produced before restrictd exits.
    guard.finish()?;
    lifecycle.end(cg.id);
    recorder.stop();
    drop(kernel.programs);
    Ok(status)
}

async fn supervise(cg: &Cgroup, command: &[OsString]) -> Result<i32> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;

    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(cg.procs_path())
        .with_context(|| format!("opening {}", cg.procs_path().display()))?;
    let procs_fd = procs.as_raw_fd();
    // Search PATH here, not in the session: the search's failed execs are
    // restrictd's, and would otherwise be recorded as the user's.
    let program = resolve_program(&command[0]);
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg0(&command[0]);
    cmd.args(&command[1..]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Enter the session cgroup before exec, so CMD and everything it
            // starts is restricted from its first instruction.
            let zero = b"0";
            if libc::write(procs_fd, zero.as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            // If restrictd dies, so does CMD (its descendants are killed by cgroup cleanup).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let status = match cmd.spawn() {
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let _ = writeln!(
                std::io::stderr(),
                "restrictd: cannot run {:?}: {e}",
                command[0]
            );
            code
        }
        Ok(mut child) => {
            drop(procs);
            tokio::select! {
                st = child.wait() => {
                    let st = st.context("waiting for the command")?;
                    st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0))
                }
                _ = sigint.recv() => 130,
                _ = sigterm.recv() => 143,
            }
        }
    };

    Ok(status)
}

/// `name` as execvp would find it: a name with a slash is a path; otherwise
/// the first executable file of that name in PATH (the name itself when none
/// is, so that spawning reports "not found").
fn resolve_program(name: &std::ffi::OsStr) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    if name.as_bytes().contains(&b'/') {
        return name.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.is_file() && nix::unistd::access(p.as_path(), nix::unistd::AccessFlags::X_OK).is_ok()
        })
        .unwrap_or_else(|| name.into())
}

/// Kills whatever is left in a session cgroup and removes it, on success and
/// on every error path.
struct CgroupGuard(Option<Cgroup>);

impl CgroupGuard {
    /// Kills what is left (daemonized children die with the session); the
    /// lifecycle then removes the empty cgroup.
    fn finish(mut self) -> Result<()> {
        let cg = self.0.take().expect("finish once");
        cg.kill_all(Duration::from_secs(10))
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(cg) = self.0.take() {
            if let Err(e) = cg
                .kill_all(Duration::from_secs(10))
                .and_then(|_| cg.remove())
            {
                log::error!("cleaning up cgroup {}: {e:#}", cg.path.display());
            }
        }
    }
}
