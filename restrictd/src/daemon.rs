//! `restrictd serve`: the long-running daemon behind pam_restrict.
//!
//! It owns one pinned instance of the BPF maps and programs (so sessions stay
//! restricted while it is stopped, and a restarted daemon finds them again),
//! the session registry (mirrored to `state_dir` for the same reason), and
//! the policy. D-Bus (`service.rs`) calls into `Core`; a 1 s sweep ends
//! sessions whose cgroups have emptied.

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use restrictd_dbus::{OpenRequest, SessionInfo, Status};
use restrictd_ebpf::{SessionEntry, POLICY_FOLLOW_ACTIVE};
use uuid::Uuid;

use crate::{
    bpf::Enforcer,
    cgroup::{self, Cgroup},
    config::Config,
    events::Output,
    policy::Policy,
    recorder::Recorder,
    session::{Registry, Session},
};

/// Lost-event reports are rate-limited to one per this interval.
const LOST_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Errors a D-Bus caller sees (service.rs maps them to D-Bus error names).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    InvalidArgs(String),
    #[error("{0}")]
    InvalidPolicy(String),
    #[error("no session {0:?}")]
    NoSuchSession(String),
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for CallError {
    fn from(e: anyhow::Error) -> Self {
        CallError::Failed(e)
    }
}

pub struct Core {
    config: Config,
    mount: PathBuf,
    root: Cgroup,
    enforcer: Mutex<Enforcer>,
    pub recorder: Arc<Recorder>,
    /// The active policy and the text it was read from.
    policy: Mutex<Option<(Policy, String)>>,
    /// Cgroups the programs are attached to (pinned), besides `root`.
    attached: Mutex<HashSet<PathBuf>>,
}

/// What limits a login field may have; PAM items come from the network (rhost).
fn check_field(name: &str, v: &str, required: bool) -> Result<(), CallError> {
    if required && v.is_empty() {
        return Err(CallError::InvalidArgs(format!("{name} is empty")));
    }
    if v.len() > 256 || v.chars().any(|c| c.is_control()) {
        return Err(CallError::InvalidArgs(format!(
            "{name} is longer than 256 bytes or has control characters"
        )));
    }
    Ok(())
}

/// A logind session scope (`.../session-N.scope`) is restricted in place, so
/// that logind keeps tracking and terminating it.
fn is_logind_scope(rel: &str) -> bool {
    rel.rsplit('/')
        .next()
        .is_some_and(|leaf| leaf.starts_with("session-") && leaf.ends_with(".scope"))
}

/// The user's systemd instance next to a logind scope:
/// `/user.slice/user-1000.slice/session-3.scope` ->
/// `/user.slice/user-1000.slice/user@1000.service`. None if it is not
/// running (no logind user manager on this host).
fn user_manager(mount: &Path, scope_rel: &str, uid: u32) -> Option<Cgroup> {
    let slice = Path::new(scope_rel.trim_start_matches('/')).parent()?;
    Cgroup::open(&mount.join(slice).join(format!("user@{uid}.service"))).ok()
}

/// What the kernel gets for a new session: the active policy, the
/// configured recording.
fn session_entry(config: &Config) -> SessionEntry {
    SessionEntry {
        policy_id: POLICY_FOLLOW_ACTIVE,
        flags: config.enhanced_recording.session_flags(),
    }
}

/// Registers a user manager with the programs: its cgroup level (counted
/// from the cgroup2 root, as the kernel does), then its id with `entry`.
/// Idempotent: the user's other sessions register the same manager.
fn register_manager(
    enforcer: &mut Enforcer,
    mount: &Path,
    manager: &Cgroup,
    entry: SessionEntry,
) -> Result<()> {
    let level = manager
        .path
        .strip_prefix(mount)
        .ok()
        .and_then(|rel| u32::try_from(rel.components().count()).ok())
        .filter(|l| *l > 0)
        .ok_or_else(|| {
            anyhow!(
                "user manager {} is not below the cgroup2 mount {}",
                manager.path.display(),
                mount.display()
            )
        })?;
    enforcer.set_manager_level(level)?;
    enforcer.add_session(manager.id, entry)
}

fn cgroup_of_pid(pid: u32) -> Result<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("reading /proc/{pid}/cgroup"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("process {pid} has no cgroup v2 entry"))
}

fn uid_of(login: &str) -> Option<u32> {
    nix::unistd::User::from_name(login)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

impl Core {
    fn sessions_dir(&self) -> PathBuf {
        self.config.state_dir.join("sessions")
    }

    fn persist(&self, s: &Session) {
        let path = self.sessions_dir().join(format!("{}.json", s.sid));
        let res = serde_json::to_vec(s)
            .map_err(anyhow::Error::from)
            .and_then(|d| write_atomic(&path, &d));
        if let Err(e) = res {
            log::error!("saving session {}: {e:#}", s.sid);
        }
    }

    fn forget(&self, sid: &Uuid) {
        let _ = fs::remove_file(self.sessions_dir().join(format!("{sid}.json")));
    }

    fn session_entry(&self) -> SessionEntry {
        session_entry(&self.config)
    }

    fn ensure_attached(&self, cgroup_dir: &Path) -> Result<()> {
        let mut attached = self.attached.lock().unwrap();
        if !attached.contains(cgroup_dir) {
            self.enforcer
                .lock()
                .unwrap()
                .attach_pinned(cgroup_dir, &self.config.bpf_pin_path)?;
            attached.insert(cgroup_dir.to_path_buf());
        }
        Ok(())
    }

    /// Puts process `pid` (the caller) into a new session.
    pub fn open_session(&self, pid: u32, req: &OpenRequest) -> Result<String, CallError> {
        check_field("login", &req.login, true)?;
        check_field("remote_host", &req.remote_host, false)?;
        check_field("service", &req.service, false)?;
        check_field("tty", &req.tty, false)?;
        if uid_of(&req.login) != Some(req.uid) {
            return Err(CallError::InvalidArgs(format!(
                "uid {} is not the uid of user {:?}",
                req.uid, req.login
            )));
        }
        if pid <= 1 {
            return Err(CallError::InvalidArgs(format!("cannot restrict pid {pid}")));
        }
        let sid = Uuid::new_v4();
        let rel = cgroup_of_pid(pid)?;
        let mut manager = None;
        let (cg, owned) = if is_logind_scope(&rel) {
            let cg = Cgroup::open(&self.mount.join(rel.trim_start_matches('/')))?;
            manager = user_manager(&self.mount, &rel, req.uid);
            // Attach where logind keeps all sessions (e.g. /user.slice).
            let top = rel
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default();
            self.ensure_attached(&self.mount.join(top))?;
            (cg, false)
        } else {
            (self.root.create_child(&sid.to_string())?, true)
        };
        if self
            .recorder
            .registry
            .lock()
            .unwrap()
            .all()
            .any(|s| s.cgroup.id == cg.id)
        {
            return Err(CallError::InvalidArgs(format!(
                "process {pid} is already in a session ({})",
                cg.path.display()
            )));
        }
        let entry = self.session_entry();
        let placed = {
            let mut enforcer = self.enforcer.lock().unwrap();
            enforcer
                .add_session(cg.id, entry)
                .and_then(|_| match &manager {
                    Some(m) => register_manager(&mut enforcer, &self.mount, m, entry),
                    None => Ok(()),
                })
                .and_then(|_| if owned { cg.add_process(pid) } else { Ok(()) })
        };
        if let Err(e) = placed {
            let _ = self.enforcer.lock().unwrap().remove_session(cg.id);
            if let Some(m) = &manager {
                if !self.recorder.registry.lock().unwrap().manager_in_use(m.id) {
                    let _ = self.enforcer.lock().unwrap().remove_session(m.id);
                }
            }
            if owned {
                let _ = cg.remove();
            }
            return Err(e.into());
        }
        let mut s = Session::new(sid, cg.clone());
        s.user = Some(req.login.clone());
        s.login = Some(req.login.clone());
        s.uid = Some(req.uid);
        s.leader_pid = pid;
        s.remote_host = req.remote_host.clone();
        s.service = req.service.clone();
        s.tty = req.tty.clone();
        s.owned = owned;
        s.manager = manager;
        self.persist(&s);
        let start = {
            let mut reg = self.recorder.registry.lock().unwrap();
            reg.insert(s);
            reg.start_event(cg.id)
        };
        if let Some(ev) = start {
            self.recorder.emit(&ev);
        }
        log::info!(
            "session {sid} opened for {} from {:?} (pid {pid}, cgroup {})",
            req.login,
            req.remote_host,
            cg.path.display()
        );
        Ok(sid.to_string())
    }

    /// Marks the session closed; it ends (session.end, cleanup) as soon as
    /// no process is left in it. Processes that outlive the login stay
    /// restricted until then.
    pub fn close_session(&self, sid: &str) -> Result<(), CallError> {
        let snapshot = {
            let mut reg = self.recorder.registry.lock().unwrap();
            let s = reg
                .by_sid_mut(sid)
                .ok_or_else(|| CallError::NoSuchSession(sid.into()))?;
            s.closed = true;
            s.clone()
        };
        self.persist(&snapshot);
        Ok(())
    }

    /// Kills every process of the session (the login ends with them).
    pub fn terminate_session(&self, sid: &str) -> Result<(), CallError> {
        let cg = {
            let reg = self.recorder.registry.lock().unwrap();
            reg.by_sid(sid)
                .ok_or_else(|| CallError::NoSuchSession(sid.into()))?
                .cgroup
                .clone()
        };
        cg.kill_all(Duration::from_secs(5))?;
        self.sweep();
        Ok(())
    }

    pub fn list_sessions(&self) -> Vec<SessionInfo> {
        let reg = self.recorder.registry.lock().unwrap();
        let mut v: Vec<SessionInfo> = reg
            .all()
            .map(|s| SessionInfo {
                sid: s.sid.to_string(),
                user: s.user.clone().unwrap_or_default(),
                login: s.login.clone().unwrap_or_default(),
                uid: s.uid.unwrap_or(u32::MAX),
                leader_pid: s.leader_pid,
                remote_host: s.remote_host.clone(),
                service: s.service.clone(),
                tty: s.tty.clone(),
                started: s.started.clone(),
                cgroup: s.cgroup.path.display().to_string(),
                cgroup_id: s.cgroup.id,
                state: if s.closed { "closed" } else { "open" }.into(),
                processes: s.cgroup.pids().map(|p| p.len() as u32).unwrap_or(0),
            })
            .collect();
        v.sort_by(|a, b| a.started.cmp(&b.started));
        v
    }

    pub fn policy(&self) -> (String, String) {
        match &*self.policy.lock().unwrap() {
            Some((p, text)) => (p.name.clone(), text.clone()),
            None => (String::new(), String::new()),
        }
    }

    /// Validates `text` and makes it the policy of every session, running
    /// ones included; stores it in `policy_file` so a restart keeps it. An
    /// invalid policy changes nothing.
    pub fn apply_policy(&self, text: &str, source: &str) -> Result<String, CallError> {
        let policy =
            Policy::parse(text, source).map_err(|e| CallError::InvalidPolicy(e.to_string()))?;
        self.enforcer.lock().unwrap().set_policy(Some(&policy))?;
        write_atomic(&self.config.policy_file, text.as_bytes())?;
        let c = policy.counts();
        let summary = format!(
            "applied network_restrictions {:?}: allow {} IPv4 + {} IPv6, deny {} IPv4 + {} IPv6 CIDRs",
            policy.name, c.allow_v4, c.allow_v6, c.deny_v4, c.deny_v6
        );
        log::info!("{summary} (from {source})");
        *self.policy.lock().unwrap() = Some((policy, text.to_string()));
        Ok(summary)
    }

    /// Re-reads `policy_file` (SIGHUP). A missing or invalid file keeps the
    /// current policy: a typo must not open the network.
    pub fn reload_policy(&self) -> Result<()> {
        let path = &self.config.policy_file;
        let text = fs::read_to_string(path).with_context(|| {
            format!(
                "{}: cannot read policy; keeping the current one",
                path.display()
            )
        })?;
        self.apply_policy(&text, &path.display().to_string())
            .map_err(|e| anyhow!("{e}; keeping the current policy"))?;
        Ok(())
    }

    pub fn status(&self) -> Status {
        let lost = self.enforcer.lock().unwrap().lost().unwrap_or_default();
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            sessions: self.recorder.registry.lock().unwrap().len() as u32,
            policy: self.policy().0,
            system_log: self.recorder.system_log_name().into(),
            lost_network: lost.network,
            lost_command: lost.command,
            lost_disk: lost.disk,
        }
    }

    /// A user manager that was stopped and started again (by root, or by a
    /// login that restrictd does not see, such as the console) has a new
    /// cgroup: register it, so its units do not escape the user's sessions.
    fn refresh_managers(&self) {
        let moved: Vec<(Session, Cgroup)> = {
            let reg = self.recorder.registry.lock().unwrap();
            reg.all()
                .filter_map(|s| {
                    let m = s.manager.as_ref()?;
                    let now = Cgroup::open(&m.path).ok()?;
                    (now.id != m.id).then(|| (s.clone(), now))
                })
                .collect()
        };
        for (s, now) in moved {
            let old = s.manager.clone().expect("filtered on a manager");
            let registered = register_manager(
                &mut self.enforcer.lock().unwrap(),
                &self.mount,
                &now,
                self.session_entry(),
            );
            if let Err(e) = registered {
                log::error!(
                    "session {}: user manager {}: {e:#}",
                    s.sid,
                    now.path.display()
                );
                continue;
            }
            let updated = {
                let mut reg = self.recorder.registry.lock().unwrap();
                let updated = reg.set_manager(s.cgroup.id, now.clone());
                (updated, reg.manager_in_use(old.id))
            };
            if !updated.1 {
                let _ = self.enforcer.lock().unwrap().remove_session(old.id);
            }
            if let Some(s) = updated.0 {
                self.persist(&s);
            }
            log::info!(
                "session {}: user manager {} restarted, now cgroup {}",
                s.sid,
                now.path.display(),
                now.id
            );
        }
    }

    /// Ends every session whose cgroup is empty or gone: the kernel entry is
    /// removed, its last events are written, then `session.end`.
    pub fn sweep(&self) {
        self.refresh_managers();
        let done: Vec<Session> = {
            let reg = self.recorder.registry.lock().unwrap();
            reg.all()
                .filter(|s| !s.cgroup.path.exists() || !s.cgroup.populated().unwrap_or(true))
                .cloned()
                .collect()
        };
        if done.is_empty() {
            return;
        }
        // Nothing in these sessions can add events now: write what is queued.
        self.recorder.drain();
        for s in done {
            let mut dropped = match self.enforcer.lock().unwrap().remove_session(s.cgroup.id) {
                Ok(d) => d,
                Err(e) => {
                    log::error!("session {}: {e:#}", s.sid);
                    0
                }
            };
            // The user's last session: their systemd instance is free again.
            let last = self
                .recorder
                .registry
                .lock()
                .unwrap()
                .sole_user_of_manager(s.cgroup.id);
            if let Some(m) = last {
                match self.enforcer.lock().unwrap().remove_session(m.id) {
                    Ok(d) => dropped += d,
                    Err(e) => log::error!("session {}: user manager: {e:#}", s.sid),
                }
            }
            if s.owned {
                if let Err(e) = s.cgroup.remove() {
                    log::error!("session {}: {e:#}", s.sid);
                }
            }
            let end = self
                .recorder
                .registry
                .lock()
                .unwrap()
                .end(s.cgroup.id, dropped);
            if let Some((_, ev)) = end {
                self.recorder.emit(&ev);
            }
            self.forget(&s.sid);
            log::info!("session {} ended", s.sid);
        }
    }

    /// Reports newly lost events, at most once per `LOST_REPORT_EVERY`.
    pub fn report_lost(&self, last: &mut (crate::bpf::Lost, std::time::Instant)) {
        let Ok(now) = self.enforcer.lock().unwrap().lost() else {
            return;
        };
        if now.total() > last.0.total() && last.1.elapsed() >= LOST_REPORT_EVERY {
            self.recorder.report_lost(crate::bpf::Lost {
                network: now.network - last.0.network,
                command: now.command - last.0.command,
                disk: now.disk - last.0.disk,
            });
            *last = (now, std::time::Instant::now());
        }
    }

    /// Saves every session (their event counters) for the next start.
    pub fn persist_all(&self) {
        let all: Vec<Session> = self
            .recorder
            .registry
            .lock()
            .unwrap()
            .all()
            .cloned()
            .collect();
        for s in &all {
            self.persist(s);
        }
    }
}

/// Loads saved sessions whose cgroups still exist with the same id and are
/// still registered in the kernel; the others ended while restrictd was away.
fn restore_sessions(config: &Config, live: &HashSet<u64>) -> (Vec<Session>, Vec<Session>) {
    let dir = config.state_dir.join("sessions");
    let (mut keep, mut gone) = (Vec::new(), Vec::new());
    let Ok(rd) = fs::read_dir(&dir) else {
        return (keep, gone);
    };
    for e in rd.filter_map(|e| e.ok()) {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let s: Session = match fs::read(&path)
            .map_err(anyhow::Error::from)
            .and_then(|d| serde_json::from_slice(&d).map_err(Into::into))
        {
            Ok(s) => s,
            Err(e) => {
                log::error!("{}: unreadable session state: {e:#}", path.display());
                continue;
            }
        };
        let same = Cgroup::open(&s.cgroup.path).is_ok_and(|c| c.id == s.cgroup.id);
        if same && live.contains(&s.cgroup.id) {
            keep.push(s);
        } else {
            gone.push(s);
        }
    }
    (keep, gone)
}

pub fn serve(config: Config, events: Option<&Path>) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("restrictd serve must run as root (it loads BPF programs and manages cgroups)");
    }
    let mount = match &config.cgroup_path {
        Some(p) => {
            cgroup::check_cgroup2(p)?;
            p.clone()
        }
        None => cgroup::find_cgroup2_mount()?,
    };
    let root = cgroup::session_root(Some(&mount), &config.root_path)?;
    // Maps and programs are guarded by bpf(2) needing privilege; say so when
    // the host lets unprivileged users call it.
    if fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .is_ok_and(|v| v.trim() == "0")
    {
        log::warn!(
            "kernel.unprivileged_bpf_disabled is 0: unprivileged users can use bpf(2); set it to 1 or 2"
        );
    }
    fs::create_dir_all(config.state_dir.join("sessions"))
        .with_context(|| format!("creating {}", config.state_dir.display()))?;

    // A policy that does not load stops the daemon: sessions already running
    // stay restricted by the pinned maps, new logins are refused (fail=closed).
    let policy = if config.policy_file.exists() {
        let text = fs::read_to_string(&config.policy_file)
            .with_context(|| format!("reading {}", config.policy_file.display()))?;
        let p = Policy::parse(&text, &config.policy_file.display().to_string())?;
        Some((p, text))
    } else {
        log::warn!(
            "{} does not exist: no network policy, all destinations allowed (sessions are still recorded)",
            config.policy_file.display()
        );
        None
    };

    let mut enforcer = Enforcer::load(config.load_options(Some(config.bpf_pin_path.clone()))?)?;
    enforcer.set_policy(policy.as_ref().map(|(p, _)| p))?;
    if enforcer.reused() {
        enforcer.purge_inactive_rules()?;
    }
    enforcer.attach_pinned(&root.path, &config.bpf_pin_path)?;
    enforcer.attach_recording(
        Some(&config.bpf_pin_path),
        config.enhanced_recording.session_flags(),
    )?;

    let live: HashSet<u64> = enforcer.session_ids()?.into_iter().collect();
    let (keep, gone) = restore_sessions(&config, &live);
    let output = Output::new(events)?;
    let mut registry = Registry::new();
    let mut attach_points = Vec::new();
    for s in &keep {
        // Pinned from before, unless it restarted meanwhile (the sweep's turn).
        if let Some(m) = &s.manager {
            register_manager(&mut enforcer, &mount, m, session_entry(&config))?;
        }
        if !s.owned {
            let rel = s.cgroup.path.strip_prefix(&mount).unwrap_or(&s.cgroup.path);
            if let Some(top) = rel.components().next() {
                attach_points.push(mount.join(top));
            }
        }
        log::info!(
            "session {} restored (cgroup {})",
            s.sid,
            s.cgroup.path.display()
        );
        registry.insert(s.clone());
    }
    for s in &gone {
        // Ended while restrictd was away: report the end, clean up.
        let _ = enforcer.remove_session(s.cgroup.id);
        registry.insert(s.clone());
    }
    let recorder = Recorder::new(enforcer.take_rings(), registry, output);
    let core = Arc::new(Core {
        config,
        mount,
        root,
        enforcer: Mutex::new(enforcer),
        recorder,
        policy: Mutex::new(policy),
        attached: Mutex::new(HashSet::new()),
    });
    for p in attach_points {
        core.ensure_attached(&p)?;
    }
    // The gone sessions have empty or missing cgroups: the sweep ends them.
    core.sweep();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run(core))
}

async fn run(core: Arc<Core>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let pump = tokio::spawn(core.recorder.clone().run(stop_rx));
    // zbus runs the connection on its own runtime; awaiting it here is fine.
    let _conn = zbus::connection::Builder::system()
        .name(restrictd_dbus::BUS_NAME)
        .serve_at(
            restrictd_dbus::OBJECT_PATH,
            crate::service::Service::new(core.clone()),
        )
        .build()
        .await
        .map_err(|e| {
            anyhow!(
                "connecting to the D-Bus system bus as {}: {e} (is another restrictd running?)",
                restrictd_dbus::BUS_NAME
            )
        })?;
    log::info!(
        "restrictd {} serving {} on the system bus; system log: {}",
        env!("CARGO_PKG_VERSION"),
        restrictd_dbus::BUS_NAME,
        core.recorder.system_log_name()
    );
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Losses counted before this start were reported by the previous run.
    let initial = core.enforcer.lock().unwrap().lost().unwrap_or_default();
    let lost = Arc::new(Mutex::new((
        initial,
        std::time::Instant::now() - LOST_REPORT_EVERY,
    )));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let (c, l) = (core.clone(), lost.clone());
                tokio::task::spawn_blocking(move || {
                    c.sweep();
                    c.report_lost(&mut l.lock().unwrap());
                })
                .await?;
            }
            _ = hup.recv() => {
                let c = core.clone();
                match tokio::task::spawn_blocking(move || c.reload_policy()).await? {
                    Ok(()) => log::info!("policy reloaded"),
                    Err(e) => log::error!("{e:#}"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // Sessions, maps and links stay: they are pinned, and the next start
    // picks them up. Only this process's view ends here.
    let _ = stop_tx.send(());
    pump.await??;
    core.persist_all();
    log::info!("restrictd stopping; sessions stay restricted");
    Ok(())
}
