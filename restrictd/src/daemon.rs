//! `restrictd serve`'s core: one pinned instance of the BPF maps and
//! programs (so sessions stay restricted while the daemon is stopped, and a
//! restarted daemon finds them again), the session lifecycle, and the
//! policy. It knows nothing of D-Bus: `service.rs` is its front end.
//!
//! Locks (each held alone unless said): `lifecycle` has its own (registry,
//! then session map); `identities` is held while a login's identity is
//! added, and takes the lifecycle's session map inside; `policy_maps` is
//! held across a policy write and its grace sleep, which no login needs;
//! `policy` only for a copy.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use uuid::Uuid;

use crate::{
    binding::{groups_of, Binding},
    bpf::{Kernel, Lost, PathRules, PolicyMaps, Programs},
    cgroup::{self, Cgroup, CgroupWatch},
    config::Config,
    controls::{self, idle},
    error::Error,
    events::Output,
    events::{Body, LockBody, LockCreatedBody, LockDeletedBody, LockTarget, SessionRejectedBody},
    identity::Identities,
    lifecycle::{write_atomic, Lifecycle, StateStore},
    locks::{self, Lock, Locks, Target},
    pamconf,
    policy::{AuthInfo, PolicyError, PolicySet, Who},
    recorder::Recorder,
    session::{Registry, Session},
    terminate,
};

/// Fault injection for the tests: dies here when `RESTRICTD_FAULT` names
/// this point.
fn fault(point: &str) {
    if std::env::var_os("RESTRICTD_FAULT").is_some_and(|v| v == point) {
        log::error!("RESTRICTD_FAULT={point}: dying here");
        std::process::abort();
    }
}

/// A login asking to become a session (from PAM).
#[derive(Debug, Clone, Default)]
pub struct Login {
    pub login: String,
    pub uid: u32,
    pub remote_host: String,
    pub service: String,
    pub tty: String,
    /// The SSH connection, from sshd's `SSH_CONNECTION` in the PAM environment.
    pub ssh: Option<crate::session::SshConnection>,
    /// sshd's `SSH_AUTH_INFO_0` from the PAM environment, as given.
    pub auth_info: Option<String>,
}

/// What `status` reports.
#[derive(Debug, Clone)]
pub struct Status {
    /// The version of the pinned programs and maps.
    pub kernel_state: String,
    pub sessions: usize,
    pub policy: String,
    pub system_log: &'static str,
    pub lost: Lost,
}

pub struct Core {
    config: Config,
    mount: PathBuf,
    root: Cgroup,
    pub lifecycle: Lifecycle,
    recorder: Arc<Recorder>,
    /// Kept so that the pinned links' programs stay loaded with it.
    programs: Programs,
    identities: Mutex<Identities>,
    policy_maps: Mutex<PolicyMaps>,
    /// The disk filter, and the homes whose `~/` always recorded paths it
    /// has (the ones in /etc/passwd at start are there from the load).
    path_rules: Mutex<(PathRules, std::collections::HashSet<String>)>,
    /// The policy file's text in force ("" without one). The policies
    /// themselves are the lifecycle's `binding`. Also serializes applies.
    policy_text: Mutex<String>,
    /// Users and groups locked out (`locks_file`).
    locks: Mutex<Locks>,
    /// What the idle and duration controls know of each session.
    watched: Mutex<std::collections::HashMap<Uuid, Watched>>,
}

/// A session under an idle or duration limit, as the sweep follows it.
#[derive(Debug, Clone, Copy)]
struct Watched {
    /// Unix seconds: when idleness is counted from without input since
    /// (the first sweep that saw a terminal of the session).
    baseline: i64,
    /// The latest terminal input seen (unix seconds).
    last_input: Option<i64>,
    warned_idle: bool,
    warned_age: bool,
}

/// How long the terminal gets to carry the last message to the client
/// before the session's processes are killed.
const LAST_WORDS: Duration = Duration::from_millis(200);

/// "root (login alice, pid 4242)": who called, as far as the kernel says
/// (the audit login uid of the caller, which `sudo` keeps).
fn caller_name(pid: u32) -> String {
    let login = fs::read_to_string(format!("/proc/{pid}/loginuid"))
        .ok()
        .and_then(|l| l.trim().parse::<u32>().ok())
        .filter(|u| *u != u32::MAX)
        .map(crate::session::user_name);
    match login {
        Some(l) => format!("root (login {l}, pid {pid})"),
        None => format!("root (pid {pid})"),
    }
}

/// Unix seconds of an RFC 3339 time (a session's `started`).
fn unix_of(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|d| d.timestamp())
}

/// Hands the heap's free pages back to the kernel. glibc keeps what a
/// burst freed mapped for reuse: the BPF object and the kernel's BTF read
/// at start left 17 MB of the daemon's 50 MB RSS (1,000 sessions) free but
/// resident; a large policy's parse leaves more. Called after those bursts
/// only, not periodically: it takes 0.2 to 2 ms and holds each arena's
/// lock meanwhile.
fn release_free_memory() {
    // SAFETY: malloc_trim only returns whole free pages of free chunks.
    unsafe { libc::malloc_trim(0) };
}

/// What limits a login field may have; PAM items come from the network (rhost).
fn check_field(name: &str, v: &str, required: bool) -> Result<(), Error> {
    if required && v.is_empty() {
        return Err(Error::InvalidArgs(format!("{name} is empty")));
    }
    if v.len() > 256 || v.chars().any(|c| c.is_control()) {
        return Err(Error::InvalidArgs(format!(
            "{name} is longer than 256 bytes or has control characters"
        )));
    }
    Ok(())
}

/// A logind session scope (`.../session-N.scope`) is restricted in place, so
/// that logind keeps tracking and terminating it.
pub(crate) fn is_logind_scope(rel: &str) -> bool {
    rel.rsplit('/')
        .next()
        .is_some_and(|leaf| leaf.starts_with("session-") && leaf.ends_with(".scope"))
}

/// The user's systemd instance next to a logind scope:
/// `/user.slice/user-1000.slice/session-3.scope` ->
/// `/user.slice/user-1000.slice/user@1000.service`. None if it is not
/// running (no logind user manager on this host).
pub(crate) fn user_manager(mount: &Path, scope_rel: &str, uid: u32) -> Option<Cgroup> {
    let slice = Path::new(scope_rel.trim_start_matches('/')).parent()?;
    Cgroup::open(&mount.join(slice).join(format!("user@{uid}.service"))).ok()
}

fn cgroup_of_pid(pid: u32) -> Result<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("reading /proc/{pid}/cgroup"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("process {pid} has no cgroup v2 entry"))
}

/// A v4-mapped address as its IPv4 address.
fn canonical(a: std::net::IpAddr) -> std::net::IpAddr {
    match a {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(a),
        a => a,
    }
}

/// The policy file and directory's policies; a missing file has none.
fn load_policies(config: &Config) -> Result<(PolicySet, String)> {
    let text = match fs::read_to_string(&config.policy_file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).with_context(|| format!("reading {}", config.policy_file.display()))
        }
    };
    let set = policies_with(
        config,
        text.as_deref(),
        &config.policy_file.display().to_string(),
    )?;
    Ok((set, text.unwrap_or_default()))
}

/// `text` as the policy file (None: there is none; an empty one is an
/// error, as a mistake must not open the network), then the policy
/// directory's documents; checked to fit the kernel's tries.
fn policies_with(
    config: &Config,
    text: Option<&str>,
    source: &str,
) -> Result<PolicySet, PolicyError> {
    let strictness = config.policy_strictness();
    let mut set = match text {
        None => PolicySet::default(),
        Some(text) => PolicySet::parse_with(text, source, strictness)?,
    };
    let dir = PolicySet::load_dir(&config.policy_dir, strictness)?;
    for p in dir.default.into_iter().chain(dir.policies) {
        set.add(p)?;
    }
    crate::bpf::check_fits(&set).map_err(|m| PolicyError {
        source: source.to_string(),
        line: 0,
        column: 0,
        message: m,
    })?;
    Ok(set)
}

impl Core {
    /// Loads the programs (reusing pinned maps and links), applies the
    /// policy file, takes back the sessions a previous run left, and starts
    /// the recorder.
    pub fn start(config: Config, events: Option<&Path>) -> Result<Arc<Core>> {
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
        if cgroup::moves_wait_for_grace_period(&mount) {
            log::info!(
                "a login outside a logind scope waits while the kernel moves sshd into its session's cgroup (an RCU grace period, several ms on an idle host); the cgroup2 mount option favordynmods, or the boot option cgroup_favordynmods=true, removes that wait at a small cost to forks and exits (README, Login latency)"
            );
        }
        let store = StateStore::new(config.state_dir.join("sessions"));

        // A policy that does not load stops the daemon: sessions already running
        // stay restricted by the pinned maps, new logins are refused (fail=closed).
        let (set, text) = load_policies(&config)?;
        set.log_warnings();
        if set.default.is_none() {
            log::warn!(
                "{} has no network_restrictions: no host default, logins no policy binds reach every destination (and are still recorded)",
                config.policy_file.display()
            );
        }

        let mut kernel = Kernel::load(config.load_options(Some(config.bpf_pin_path.clone()))?)?;
        let ids = kernel.policy.set_all(&set, |_| Ok(()))?;
        let binding = Binding::new(set, ids.clone(), config.session_flags());
        for w in binding.recording_warnings() {
            log::warn!("{w}");
        }

        let registry = Arc::new(Mutex::new(Registry::new()));
        let recorder = Arc::new(Recorder::new(
            kernel.rings,
            kernel.counters,
            registry.clone(),
            Output::new(events)?,
            Some(config.terminal.clone()),
        )?);
        let watch = Arc::new(CgroupWatch::new()?);
        let lifecycle = Lifecycle::new(
            registry,
            kernel.sessions,
            store,
            recorder.clone(),
            mount.clone(),
            binding,
        )
        .with_watch(watch.clone());
        // Identities and sessions go into the maps before this version's
        // programs attach: with new maps (another version ran before), the
        // old programs keep enforcing until the new ones do, with the same
        // sessions.
        let locks = Locks::load(&config.locks_file)?;
        if !config.session_controls.is_empty()
            && fs::read_to_string("/proc/sys/dev/tty/legacy_tiocsti").is_ok_and(|v| v.trim() == "1")
        {
            log::warn!(
                "dev.tty.legacy_tiocsti is 1: a user can push input into their own terminal (TIOCSTI), which idle_timeout counts as input; set it to 0"
            );
        }
        let mut identities = Identities::load(&config.identities)?;
        if identities.lost_state() {
            identities.adopt(&lifecycle.kernel_identities()?);
        }
        lifecycle.set_identities(&identities.uids())?;
        lifecycle.restore(!kernel.reused)?;
        if kernel.reused {
            // Sessions now point at this start's policy ids.
            let keep: Vec<u32> = ids.by_name.values().copied().collect();
            kernel.policy.purge_inactive(&keep)?;
        }
        lifecycle.remove_orphans(&root);
        fault("upgrade-before-attach");
        let mut programs = kernel.programs;
        // At the cgroup2 root: a restricted identity's processes and
        // sockets are anywhere on the host, not only in sessions.
        programs.attach(&mount)?;
        programs.attach_tracepoints()?;
        if programs.kernel_names() {
            log::info!("failed opens are named by the kernel's copy of their path (kprobe on do_filp_open)");
        }
        if programs.uring_opens() {
            log::info!(
                "opens made through io_uring are recorded (io_uring's submission tracepoint)"
            );
        }
        fault("upgrade-before-retire");
        let version = programs.version().unwrap_or_default();
        match programs.retire_others() {
            Ok(old) if !old.is_empty() => log::info!(
                "kernel state {version} replaces {} (programs and maps of another restrictd version or configuration)",
                old.join(", ")
            ),
            Ok(_) => log::info!(
                "kernel state {version} ({})",
                if kernel.reused { "reused" } else { "new" }
            ),
            // Both versions enforce (every attached program must allow).
            Err(e) => log::error!("retiring other kernel state versions: {e:#}"),
        }
        let core = Arc::new(Core {
            config,
            mount,
            root,
            lifecycle,
            recorder,
            programs,
            identities: Mutex::new(identities),
            policy_maps: Mutex::new(kernel.policy),
            path_rules: Mutex::new((kernel.path_rules, std::collections::HashSet::new())),
            policy_text: Mutex::new(text),
            locks: Mutex::new(locks),
            watched: Mutex::new(std::collections::HashMap::new()),
        });
        // A new kernel state (an upgrade, a changed buffer size) starts
        // with no terminal relays: restored sessions' sshd goes in again.
        for s in core.lifecycle.all() {
            if s.terminal.is_some() {
                core.terminal_relay(s.leader_pid);
            }
        }
        // Sessions were restored above: records queued while restrictd
        // was away belong to them.
        core.recorder.start()?;
        // Session ends (and leaders moved on) as they happen; the sweep
        // stays as a backstop.
        let c = Arc::downgrade(&core);
        std::thread::Builder::new()
            .name("cgroup-watch".into())
            .spawn(move || loop {
                if let Err(e) = watch.wait() {
                    log::error!("{e:#}; session ends are found by the 1 s sweep only");
                    return;
                }
                match c.upgrade() {
                    Some(core) => core.lifecycle.end_finished(),
                    None => return,
                }
            })
            .context("starting the cgroup watch thread")?;
        release_free_memory();
        Ok(core)
    }

    /// Makes `~/` always recorded paths (`~/.ssh`) cover `home` (of a user
    /// logging in) from this login on: a user added after the daemon
    /// started, or known only through NSS (LDAP, SSSD), is not in what
    /// /etc/passwd listed then. A failure is logged; the login goes on.
    /// The files there are marked again at every login (`mark`), so
    /// that keys added since are covered under any name too.
    fn cover_home(&self, home: &str) {
        let home = home.to_string();
        let Some(filter) = self.config.enhanced_recording.always_in_home(&home) else {
            return;
        };
        // Read before the lock: logins do not wait on each other's homes.
        let files = crate::pathfilter::always_files(&filter.always_paths());
        let mut rules = self.path_rules.lock().unwrap();
        rules.0.mark(&files);
        if rules.1.contains(&home) {
            return;
        }
        match rules.0.add(&filter) {
            Ok(()) => {
                rules.1.insert(home);
            }
            Err(e) => log::error!("always recorded paths in {home}: {e:#}"),
        }
    }

    /// Puts process `pid` (the caller) into a new session.
    pub fn open_session(&self, pid: u32, req: &Login) -> Result<String, Error> {
        check_field("login", &req.login, true)?;
        check_field("remote_host", &req.remote_host, false)?;
        check_field("service", &req.service, false)?;
        check_field("tty", &req.tty, false)?;
        // One lookup (NSS may ask a directory server) for the uid check and
        // the home directory.
        let user = nix::unistd::User::from_name(&req.login).ok().flatten();
        let Some(user) = user.filter(|u| u.uid.as_raw() == req.uid) else {
            return Err(Error::InvalidArgs(format!(
                "uid {} is not the uid of user {:?}",
                req.uid, req.login
            )));
        };
        if pid <= 1 {
            return Err(Error::InvalidArgs(format!("cannot restrict pid {pid}")));
        }
        let who = self.who(req);
        let locked = self
            .locks
            .lock()
            .unwrap()
            .binding(&req.login, &who.groups)
            .cloned();
        if let Some(lock) = locked {
            let message = format!("login refused: {}", lock.describe());
            self.rejected(req, "lock", None, &message, None);
            return Err(Error::Refused(message));
        }
        // The identity first: once the login proceeds, the user's processes
        // outside the session must already be restricted.
        {
            let mut ids = self.identities.lock().unwrap();
            if ids.admit(req.uid, &req.login)? {
                self.lifecycle.add_identity(req.uid)?;
                log::info!(
                    "user {} (uid {}) is now restricted by identity, outside sessions too",
                    req.login,
                    req.uid
                );
            }
        }
        self.cover_home(&user.dir.display().to_string());
        let sid = Uuid::new_v4();
        let rel = cgroup_of_pid(pid)?;
        let mut manager = None;
        let (cg, owned) = if is_logind_scope(&rel) {
            let cg = Cgroup::open(&self.mount.join(rel.trim_start_matches('/')))?;
            manager = user_manager(&self.mount, &rel, req.uid);
            (cg, false)
        } else {
            (self.root.create_child(&sid.to_string())?, true)
        };
        let mut s = Session::new(sid, cg.clone());
        s.user = Some(req.login.clone());
        s.login = Some(req.login.clone());
        s.uid = Some(req.uid);
        s.leader_pid = pid;
        s.remote_host = req.remote_host.clone();
        s.service = req.service.clone();
        s.tty = req.tty.clone();
        // pam_env with user_readenv=1 before this module lets the user set
        // SSH_CONNECTION: the connection sshd holds is the record, where
        // it can be read; else a value whose client is not PAM_RHOST is
        // not recorded.
        let held = req
            .ssh
            .and_then(|_| crate::session::SshConnection::held_by(pid));
        if let (Some(h), Some(given)) = (held, req.ssh) {
            if h != given {
                log::warn!(
                    "login of {}: SSH_CONNECTION {} {} is not the connection sshd holds ({} {}): that is recorded",
                    req.login,
                    given.remote,
                    given.local,
                    h.remote,
                    h.local
                );
            }
        }
        s.ssh = held.or(req.ssh).filter(|c| {
            let same = req
                .remote_host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|r| canonical(r) == canonical(c.remote.ip()));
            if !same {
                log::warn!(
                    "login of {}: SSH_CONNECTION ignored: its client {} is not PAM_RHOST {:?}",
                    req.login,
                    c.remote.ip(),
                    req.remote_host
                );
            }
            same
        });
        s.who = Some(who);
        s.owned = owned;
        s.manager = manager;
        let host = self.config.session_controls;
        let mut refusal = None;
        let opened = self.lifecycle.open(
            s,
            || if owned { cg.add_process(pid) } else { Ok(()) },
            |b, policy, open| match b.controls(policy, &host).max_sessions {
                Some(max) if open >= max as usize => {
                    let message = format!(
                        "login refused: {} has {open} open session(s), the most {} allows (max_sessions {max})",
                        req.login,
                        policy.map_or("the host default".to_string(), |p| format!("policy {p:?}"))
                    );
                    refusal = Some((max, message.clone(), policy.map(str::to_string)));
                    Err(Error::Refused(message))
                }
                _ => Ok(()),
            },
        );
        if opened.is_err() && owned {
            let _ = cg.remove();
        }
        if let Some((max, message, policy)) = refusal {
            self.rejected(req, "max_sessions", Some(max), &message, policy);
        }
        opened?;
        let opened = self.lifecycle.find(&sid.to_string());
        if opened.as_ref().is_some_and(|s| s.terminal.is_some()) {
            self.terminal_relay(pid);
        }
        let policy = opened
            .and_then(|s| s.policy)
            .unwrap_or_else(|| "host default".into());
        log::info!(
            "session {sid} opened for {} from {:?} (pid {pid}, cgroup {}, policy {policy})",
            req.login,
            req.remote_host,
            cg.path.display()
        );
        Ok(sid.to_string())
    }

    /// Registers the login's PAM caller as the program whose pty reads are
    /// session terminals, before it forks the user's side: sshd's. Another
    /// caller (login, su) relays no SSH terminal: said once.
    fn terminal_relay(&self, pid: u32) {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if !comm.starts_with("sshd") {
            log::debug!(
                "PAM caller {pid} ({}) is not sshd: its terminal is not recorded",
                comm.trim()
            );
            return;
        }
        match self.lifecycle.add_tty_relay(pid) {
            Ok(true) => log::info!(
                "terminal recording: {} relays session terminals",
                std::fs::read_link(format!("/proc/{pid}/exe"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| format!("process {pid}'s program"))
            ),
            Ok(false) => {}
            Err(e) => log::error!("terminal recording: {e:#}"),
        }
    }

    /// Records a refused login (`session.rejected`) and logs it.
    fn rejected(
        &self,
        req: &Login,
        reason: &str,
        max: Option<u32>,
        message: &str,
        policy: Option<String>,
    ) {
        log::warn!(
            "login of {} from {:?} refused ({reason}): {message}",
            req.login,
            req.remote_host
        );
        self.recorder.daemon_event(
            &req.login,
            Body::SessionRejected(SessionRejectedBody {
                connection: crate::session::connection_fields(req.ssh.as_ref(), &req.remote_host),
                service: req.service.clone(),
                reason: reason.into(),
                max,
                message: message.into(),
                policy,
            }),
        );
    }

    /// The login as policies match it. The source is `PAM_RHOST` (an item
    /// sshd sets, which the user cannot); a host name there (sshd's
    /// `UseDNS yes`) matches no `sources`.
    fn who(&self, req: &Login) -> Who {
        // What the user may have written into the PAM environment is not
        // evidence of how they authenticated.
        let user_env = req
            .auth_info
            .as_ref()
            .and_then(|_| pamconf::user_env_before(Path::new("/etc/pam.d"), &req.service));
        if let Some((file, line)) = &user_env {
            log::warn!(
                "login of {}: SSH_AUTH_INFO_0 ignored, no `auth` criterion binds it: {}:{line} runs pam_env.so user_readenv=1 before pam_restrict.so, so the user's ~/.pam_environment can set it",
                req.login,
                file.display()
            );
        }
        let auth = req
            .auth_info
            .as_deref()
            .filter(|_| user_env.is_none())
            .map(|text| {
                let (auth, errors) = AuthInfo::parse(text);
                for e in errors {
                    log::warn!("login of {}: SSH_AUTH_INFO_0: {e}", req.login);
                }
                auth
            });
        let source = req
            .remote_host
            .parse::<std::net::IpAddr>()
            .ok()
            .map(canonical);
        Who {
            user: req.login.clone(),
            groups: groups_of(&req.login),
            source,
            service: Some(req.service.clone()).filter(|s| !s.is_empty()),
            auth,
        }
    }

    pub fn close_session(&self, sid: &str) -> Result<(), Error> {
        self.lifecycle.close(sid)
    }

    /// Kills every process of the session (the login ends with them).
    pub fn terminate_session(&self, sid: &str) -> Result<(), Error> {
        let s = self
            .lifecycle
            .find(sid)
            .ok_or_else(|| Error::NoSuchSession(sid.into()))?;
        self.lifecycle.set_end_reason(&s.sid, "terminated");
        s.cgroup.kill_all(Duration::from_secs(5))?;
        self.lifecycle.end(s.cgroup.id);
        Ok(())
    }

    /// The sessions, oldest first.
    pub fn sessions(&self) -> Vec<Session> {
        let mut v = self.lifecycle.all();
        v.sort_by(|a, b| a.started.cmp(&b.started));
        v
    }

    /// The policies' summary and the policy file's text ("" when there is
    /// none).
    pub fn policy(&self) -> (String, String) {
        let text = self.policy_text.lock().unwrap().clone();
        let b = self.lifecycle.binding();
        let name = match b.set.all().next() {
            None => String::new(),
            Some(_) => b.set.summary(),
        };
        (name, text)
    }

    /// Validates `text` as the policy file (its documents, then the policy
    /// directory's) and makes it the policies of every session and
    /// identity, running ones included, each evaluated again; stores it in
    /// `policy_file` so a restart keeps it. An invalid policy changes
    /// nothing.
    pub fn apply_policy(self: &Arc<Self>, text: &str, source: &str) -> Result<String, Error> {
        let mut current = self.policy_text.lock().unwrap();
        let set = Arc::new(
            policies_with(&self.config, Some(text), source)
                .map_err(|e| Error::InvalidPolicy(e.to_string()))?,
        );
        let flags = self.config.session_flags();
        let (_, retired) = {
            let mut maps = self.policy_maps.lock().unwrap();
            maps.replace(&set, |ids| {
                self.lifecycle
                    .rebind(Binding::new(Arc::clone(&set), ids.clone(), flags))
            })?
        };
        // The new policies are in force; the old rules go after their
        // grace period, without the caller waiting for it.
        let core = Arc::clone(self);
        std::thread::spawn(move || {
            std::thread::sleep(retired.grace_left());
            let deleted = core.policy_maps.lock().unwrap().delete_retired(retired);
            if let Err(e) = deleted {
                log::warn!("removing the replaced policies' rules: {e:#} (a restart purges them)");
            }
            release_free_memory();
        });
        write_atomic(&self.config.policy_file, text.as_bytes())?;
        *current = text.to_string();
        let mut summary = format!("applied {}", set.summary());
        if let Some(d) = &set.default {
            let c = d.counts();
            summary.push_str(&format!(
                "; host default network_restrictions {:?}: allow {} IPv4 + {} IPv6, deny {} IPv4 + {} IPv6 CIDRs",
                d.name, c.allow_v4, c.allow_v6, c.deny_v4, c.deny_v6
            ));
        }
        log::info!("{summary} (from {source})");
        set.log_warnings();
        // The caller sees them too (restrictctl prints the summary).
        let binding = self.lifecycle.binding();
        for w in set.warnings() {
            summary.push_str(&format!("\nwarning: {w}"));
        }
        for w in set
            .shadowed()
            .into_iter()
            .chain(binding.recording_warnings())
        {
            summary.push_str(&format!("\nwarning: {w}"));
        }
        Ok(summary)
    }

    /// `restrictctl policy explain`: the policy that binds the login
    /// described by `login` (see `Daemon1::explain_policy`) and its verdict
    /// on `dest`.
    pub fn explain_login(
        &self,
        login: &std::collections::HashMap<String, String>,
        dest: &str,
    ) -> Result<String, Error> {
        let user = login
            .get("user")
            .filter(|u| !u.is_empty())
            .ok_or_else(|| Error::InvalidArgs("user is required".into()))?;
        check_field("user", user, true)?;
        let source = match login.get("from").filter(|f| !f.is_empty()) {
            Some(f) => Some(
                f.parse::<std::net::IpAddr>()
                    .map_err(|_| Error::InvalidArgs(format!("from {f:?} is not an IP address")))?,
            ),
            None => None,
        };
        let mut auth = AuthInfo::default();
        if let Some(m) = login.get("auth_method").filter(|m| !m.is_empty()) {
            auth.methods.push(m.clone());
        }
        if let Some(p) = login.get("principal").filter(|p| !p.is_empty()) {
            if auth.methods.is_empty() {
                auth.methods.push("publickey".into());
            }
            auth.principals.push(p.clone());
        }
        let who = Who {
            user: user.clone(),
            groups: groups_of(user),
            source,
            service: Some(
                login
                    .get("service")
                    .cloned()
                    .unwrap_or_else(|| "sshd".into()),
            ),
            auth: (!auth.methods.is_empty()).then_some(auth),
        };
        let (addr, proto, port) =
            crate::policy::parse_destination(dest).map_err(Error::InvalidArgs)?;
        let groups = if who.groups.is_empty() {
            format!("user {user}: unknown to NSS, no groups")
        } else {
            format!("user {user}, groups {}", who.groups.join(", "))
        };
        Ok(format!(
            "{groups}\n{}",
            crate::policy::explain(&self.lifecycle.binding().set, &who, addr, proto, port)
        ))
    }

    /// Re-reads `policy_file` (SIGHUP). A missing or invalid file keeps the
    /// current policy: a typo must not open the network.
    pub fn reload_policy(self: &Arc<Self>) -> Result<()> {
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
        Status {
            kernel_state: self.programs.version().unwrap_or_default(),
            sessions: self.lifecycle.len(),
            policy: self.policy().0,
            system_log: self.recorder.system_log_name(),
            lost: self.recorder.lost(),
        }
    }

    /// Once a second: user managers that restarted, sessions that ended
    /// (and leaders moved on) that the cgroup watch did not report.
    pub fn sweep(&self) {
        self.lifecycle.refresh_managers();
        self.lifecycle.end_finished();
        self.lifecycle.sync_presence();
        self.enforce_controls();
        self.enforce_locks();
    }

    /// Ends session `s` for `reason` (a session control or a lock), after
    /// telling its terminals `message`: every process but its leader is
    /// killed, and the leader (sshd) closes the login as at a logout.
    fn end_for(&self, s: &Session, reason: &str, message: &str, ptys: &[PathBuf]) {
        self.lifecycle.set_end_reason(&s.sid, reason);
        if !ptys.is_empty() {
            terminate::tell(ptys, message);
            std::thread::sleep(LAST_WORDS);
        }
        for c in std::iter::once(&s.cgroup).chain(&s.followed_from) {
            if let Err(e) = terminate::end_session(c, s.leader_pid, Duration::from_secs(5)) {
                log::error!("ending session {} ({reason}): {e:#}", s.sid);
            }
        }
        log::info!(
            "session {} of {} ended ({reason}): {message}",
            s.sid,
            s.user.as_deref().unwrap_or("?")
        );
    }

    /// Idle timeouts and maximum durations: warns a session's terminals
    /// `controls::warn_before` the limit, and ends the session at it.
    /// Idleness is counted only while the login has a terminal: the ptys
    /// whose masters its sshd `[priv]` process holds.
    fn enforce_controls(&self) {
        let now = locks::now_unix();
        let sessions: Vec<Session> = self
            .lifecycle
            .all()
            .into_iter()
            .filter(|s| !s.ending && s.end_reason.is_none())
            .collect();
        let plan: Vec<(Session, controls::Effective)> = {
            let b = self.lifecycle.binding();
            sessions
                .iter()
                .map(|s| {
                    (
                        s.clone(),
                        b.controls(s.policy.as_deref(), &self.config.session_controls),
                    )
                })
                .filter(|(_, c)| c.idle_timeout.is_some() || c.max_duration.is_some())
                .collect()
        };
        let mut ends = Vec::new();
        {
            let mut watched = self.watched.lock().unwrap();
            watched.retain(|sid, _| sessions.iter().any(|s| s.sid == *sid));
            for (s, c) in plan {
                let w = watched.entry(s.sid).or_insert(Watched {
                    baseline: now,
                    last_input: None,
                    warned_idle: false,
                    warned_age: false,
                });
                let ptys = if s.closed {
                    Vec::new()
                } else {
                    idle::ptys_of(s.leader_pid)
                };
                if let (Some(max), Some(started)) = (c.max_duration, unix_of(&s.started)) {
                    let age = (now - started).max(0) as u64;
                    let max_s = max.as_secs();
                    if age >= max_s {
                        let m = format!(
                            "this session has reached its maximum duration ({}) and is ended",
                            controls::show(max)
                        );
                        ends.push((s, "max_duration", m, ptys));
                        continue;
                    }
                    if age + controls::warn_before(max).as_secs() >= max_s && !w.warned_age {
                        w.warned_age = true;
                        terminate::tell(
                            &ptys,
                            &format!(
                                "this session reaches its maximum duration ({}) and ends in {}",
                                controls::show(max),
                                controls::show(Duration::from_secs(max_s - age))
                            ),
                        );
                    }
                }
                let Some(limit) = c.idle_timeout else {
                    continue;
                };
                if ptys.is_empty() {
                    // No terminal (a command, scp, sftp, forwarding): not
                    // idle-timed; idleness counts from its first terminal.
                    w.baseline = now;
                    w.warned_idle = false;
                    continue;
                }
                if let Some(input) = ptys.iter().filter_map(|p| idle::last_input(p)).max() {
                    if w.last_input.is_none_or(|l| input > l) {
                        w.last_input = Some(input);
                        w.warned_idle = false;
                    }
                }
                let since = w.baseline.max(w.last_input.unwrap_or(0));
                let idle_for = (now - since).max(0) as u64;
                let limit_s = limit.as_secs();
                if idle_for >= limit_s {
                    let m = format!(
                        "no input for {} (idle_timeout {}): this session is ended",
                        controls::show(Duration::from_secs(idle_for)),
                        controls::show(limit)
                    );
                    ends.push((s, "idle_timeout", m, ptys));
                } else if idle_for + controls::warn_before(limit).as_secs() >= limit_s
                    && !w.warned_idle
                {
                    w.warned_idle = true;
                    terminate::tell(
                        &ptys,
                        &format!(
                            "no input for {}: this session ends in {} unless you type (idle_timeout {})",
                            controls::show(Duration::from_secs(idle_for)),
                            controls::show(Duration::from_secs(limit_s - idle_for)),
                            controls::show(limit)
                        ),
                    );
                }
            }
        }
        for (s, reason, message, ptys) in ends {
            self.watched.lock().unwrap().remove(&s.sid);
            self.end_for(&s, reason, &message, &ptys);
        }
    }

    /// The uids a lock covers outside sessions: the user's; for a group,
    /// its members as NSS lists them, the users whose primary group it is
    /// in /etc/passwd, and the restricted identities and session users in
    /// it. Never root or a system account (those are not killed).
    fn lock_uids(&self, lock: &Lock) -> Vec<u32> {
        let mut names: Vec<String> = Vec::new();
        match lock.target {
            Target::User => names.push(lock.name.clone()),
            Target::Group => {
                if let Ok(Some(g)) = nix::unistd::Group::from_name(&lock.name) {
                    names.extend(g.mem.iter().cloned());
                    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
                    for l in passwd.lines() {
                        let f: Vec<&str> = l.split(':').collect();
                        if f.get(3).and_then(|g| g.parse::<u32>().ok()) == Some(g.gid.as_raw()) {
                            names.push(f[0].to_string());
                        }
                    }
                }
                let ids = self.identities.lock().unwrap().uids();
                for uid in ids {
                    let n = crate::session::user_name(uid);
                    if groups_of(&n).contains(&lock.name) {
                        names.push(n);
                    }
                }
                for s in self.lifecycle.all() {
                    if let (Some(u), Some(w)) = (&s.user, &s.who) {
                        if w.groups.contains(&lock.name) {
                            names.push(u.clone());
                        }
                    }
                }
            }
        }
        let (min, max) = crate::identity::uid_range(Path::new("/etc/login.defs"));
        let mut uids: Vec<u32> = names
            .iter()
            .filter_map(|n| nix::unistd::User::from_name(n).ok().flatten())
            .map(|u| u.uid.as_raw())
            .filter(|u| *u != 0 && (min..=max).contains(u))
            .collect();
        uids.sort();
        uids.dedup();
        uids
    }

    /// Ends the sessions `lock` binds and kills the processes of the
    /// identities it covers elsewhere; returns (sessions, processes).
    fn enforce_lock(&self, lock: &Lock, tell: bool) -> (u32, u32) {
        let all = self.lifecycle.all();
        let bound: Vec<Session> = all
            .iter()
            .filter(|s| !s.ending)
            .filter(|s| {
                let user = s.user.as_deref().unwrap_or_default();
                let groups = s.who.as_ref().map(|w| w.groups.clone()).unwrap_or_default();
                lock.binds(user, &groups)
            })
            .cloned()
            .collect();
        let message = format!("this session is ended: {}", lock.describe());
        for s in &bound {
            let ptys = if tell && !s.closed && s.end_reason.is_none() {
                idle::ptys_of(s.leader_pid)
            } else {
                Vec::new()
            };
            self.end_for(s, "lock", &message, &ptys);
        }
        // Session leaders end their logins themselves once their children
        // are gone (they carry the user's login uid).
        let spare: std::collections::HashSet<u32> = all.iter().map(|s| s.leader_pid).collect();
        let mut killed = 0;
        for uid in self.lock_uids(lock) {
            killed += terminate::kill_user(uid, &spare);
        }
        (bound.len() as u32, killed as u32)
    }

    /// Once a second: expired locks are lifted (`lock.deleted`), and every
    /// lock is enforced again, so that a locked identity's cron job, at
    /// job or user service dies as it starts.
    fn enforce_locks(&self) {
        let (expired, active) = {
            let mut l = self.locks.lock().unwrap();
            (l.expire(), l.all().to_vec())
        };
        for lock in expired {
            log::info!("{} no more: its TTL ran out", lock.describe());
            self.lock_event(&lock, false, "restrictd (ttl)", None, true);
        }
        for lock in active {
            let (sessions, processes) = self.enforce_lock(&lock, true);
            if sessions + processes > 0 {
                log::warn!(
                    "{}: ended {sessions} session(s), killed {processes} other process(es)",
                    lock.describe()
                );
            }
        }
    }

    fn lock_event(
        &self,
        lock: &Lock,
        created: bool,
        by: &str,
        ended: Option<(u32, u32)>,
        expired: bool,
    ) {
        let body = LockBody {
            name: format!("{}/{}", lock.target.as_str(), lock.name),
            target: match lock.target {
                Target::User => LockTarget {
                    user: Some(lock.name.clone()),
                    group: None,
                },
                Target::Group => LockTarget {
                    user: None,
                    group: Some(lock.name.clone()),
                },
            },
            message: lock.reason.clone(),
            expires: lock.expires.map(locks::rfc3339),
            updated_by: by.into(),
            sessions_ended: ended.map(|e| e.0),
            processes_killed: ended.map(|e| e.1),
            expired,
        };
        let user = match lock.target {
            Target::User => lock.name.as_str(),
            Target::Group => "",
        };
        self.recorder.daemon_event(
            user,
            if created {
                Body::LockCreated(LockCreatedBody(body))
            } else {
                Body::LockDeleted(LockDeletedBody(body))
            },
        );
    }

    /// `restrictctl lock`: locks `name` out now (see `locks`); returns
    /// what it did.
    pub fn lock(
        &self,
        target: &str,
        name: &str,
        ttl: Option<Duration>,
        reason: &str,
        caller: u32,
    ) -> Result<String, Error> {
        let target = Target::parse(target).map_err(Error::InvalidArgs)?;
        let refuse = |m: String| Err(Error::InvalidArgs(m));
        match target {
            Target::User => match nix::unistd::User::from_name(name).ok().flatten() {
                Some(u) if u.uid.is_root() => {
                    return refuse(
                        "root cannot be locked: that would end every root process".into(),
                    )
                }
                Some(_) => {}
                None => return refuse(format!("no user {name:?} on this host (NSS)")),
            },
            Target::Group => match nix::unistd::Group::from_name(name).ok().flatten() {
                Some(g) if g.gid.as_raw() == 0 => {
                    return refuse("group root cannot be locked".into())
                }
                Some(_) => {}
                None => return refuse(format!("no group {name:?} on this host (NSS)")),
            },
        }
        let lock = self
            .locks
            .lock()
            .unwrap()
            .add(target, name, ttl, reason)
            .map_err(Error::InvalidArgs)?;
        let by = caller_name(caller);
        let (sessions, processes) = self.enforce_lock(&lock, true);
        log::warn!(
            "{} (set by {by}): ended {sessions} session(s), killed {processes} other process(es)",
            lock.describe()
        );
        self.lock_event(&lock, true, &by, Some((sessions, processes)), false);
        Ok(format!(
            "{}; ended {sessions} session(s) and {processes} other process(es)",
            lock.describe()
        ))
    }

    /// `restrictctl unlock`.
    pub fn unlock(&self, target: &str, name: &str, caller: u32) -> Result<String, Error> {
        let target = Target::parse(target).map_err(Error::InvalidArgs)?;
        let removed = self
            .locks
            .lock()
            .unwrap()
            .remove(target, name)
            .map_err(|e| Error::Failed(anyhow!(e)))?;
        let Some(lock) = removed else {
            return Err(Error::InvalidArgs(format!(
                "{} {name} is not locked",
                target.as_str()
            )));
        };
        let by = caller_name(caller);
        log::warn!("{} {name} unlocked by {by}", target.as_str());
        self.lock_event(&lock, false, &by, None, false);
        Ok(format!("{} {name} unlocked", target.as_str()))
    }

    /// The locks in force.
    pub fn locks(&self) -> Vec<Lock> {
        let now = locks::now_unix();
        self.locks
            .lock()
            .unwrap()
            .all()
            .iter()
            .filter(|l| !l.expired(now))
            .cloned()
            .collect()
    }

    /// The daemon's main loop (on a tokio runtime, with the front end
    /// serving beside it): the sweep every second, SIGHUP reloads the
    /// policy, SIGTERM/SIGINT stop. Sessions, maps and links stay: they are
    /// pinned, and the next start picks them up.
    pub async fn run(self: Arc<Self>) -> Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let c = self.clone();
                    tokio::task::spawn_blocking(move || c.sweep()).await?;
                }
                _ = hup.recv() => {
                    let c = self.clone();
                    match tokio::task::spawn_blocking(move || c.reload_policy()).await? {
                        Ok(()) => log::info!("policy reloaded"),
                        Err(e) => log::error!("{e:#}"),
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        self.recorder.stop();
        self.lifecycle.save_all();
        log::info!("restrictd stopping; sessions stay restricted");
        Ok(())
    }

    pub fn system_log_name(&self) -> &'static str {
        self.recorder.system_log_name()
    }
}
