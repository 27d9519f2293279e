//! The session lifecycle, for `restrictd serve` and `restrictd run` alike:
//! open (register in the kernel, place the process, save, `session.start`),
//! close, and end (unregister, clean up, `session.end` after the session's
//! last records). It is the one owner of the session registry, the state
//! store and the kernel's session map.
//!
//! Locks: `registry`, then `kernel` (the session map), each held only for
//! map writes and bookkeeping, never across a policy write, a sleep or a
//! log write (the recorder writes; submitting to it is a channel send).

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

use anyhow::{anyhow, Result};
use restrictd_common::SessionEntry;
use uuid::Uuid;

use crate::{
    binding::{Binding, GroupCache},
    bpf::SessionMap,
    cgroup::{Cgroup, CgroupWatch, Pidfd},
    error::Error,
    events::now_boot_ns,
    policy::Who,
    recorder::Recorder,
    session::{Registry, Session},
};

/// Sessions saved as `<dir>/<sid>.json`, so that a restarted daemon finds
/// them again.
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// None (logged) when the directory cannot be made: sessions are then
    /// not saved, and a restarted daemon does not find them (they stay
    /// restricted by the pinned maps), but logins go on.
    pub fn new(dir: PathBuf) -> Option<StateStore> {
        match fs::create_dir_all(&dir) {
            Ok(()) => Some(StateStore { dir }),
            Err(e) => {
                log::error!("creating {}: {e}; sessions are not saved", dir.display());
                None
            }
        }
    }

    fn save(&self, s: &Session) {
        let path = self.dir.join(format!("{}.json", s.sid));
        let res = serde_json::to_vec(s)
            .map_err(anyhow::Error::from)
            .and_then(|d| write_atomic(&path, &d));
        if let Err(e) = res {
            log::error!("saving session {}: {e:#}", s.sid);
        }
    }

    fn forget(&self, sid: &Uuid) {
        let _ = fs::remove_file(self.dir.join(format!("{sid}.json")));
    }

    /// Every saved session (unreadable files are reported and skipped).
    pub fn load_all(&self) -> Vec<Session> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return vec![];
        };
        let mut out = Vec::new();
        for path in rd.filter_map(|e| e.ok()).map(|e| e.path()) {
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|d| serde_json::from_slice(&d).map_err(Into::into))
            {
                Ok(s) => out.push(s),
                Err(e) => log::error!("{}: unreadable session state: {e:#}", path.display()),
            }
        }
        out
    }
}

pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(|e| anyhow!("creating {}: {e}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, data).map_err(|e| anyhow!("writing {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| anyhow!("replacing {}: {e}", path.display()))
}

pub struct Lifecycle {
    registry: Arc<Mutex<Registry>>,
    kernel: Mutex<SessionMap>,
    store: Option<StateStore>,
    recorder: Arc<Recorder>,
    /// The cgroup2 mount (user manager levels are counted from it).
    mount: PathBuf,
    /// The policies in force: what the kernel gets for each session and
    /// identity. Lock order: binding, then registry, then kernel.
    binding: RwLock<Binding>,
    /// Leaders of sessions in restrictd's own cgroups, by sid, followed
    /// until logout in case a later PAM module moves them (`follow`).
    leaders: Mutex<HashMap<Uuid, Arc<Pidfd>>>,
    /// One `follow` at a time (the sweep and the cgroup watch both run it).
    following: Mutex<()>,
    /// Session cgroups' `cgroup.events`, so that ends are noticed at once.
    watch: Option<Arc<CgroupWatch>>,
    watches: Mutex<HashMap<Uuid, nix::sys::inotify::WatchDescriptor>>,
}

impl Lifecycle {
    pub fn new(
        registry: Arc<Mutex<Registry>>,
        kernel: SessionMap,
        store: Option<StateStore>,
        recorder: Arc<Recorder>,
        mount: PathBuf,
        binding: Binding,
    ) -> Lifecycle {
        registry
            .lock()
            .unwrap()
            .set_policies(Arc::clone(&binding.set));
        Lifecycle {
            registry,
            kernel: Mutex::new(kernel),
            store,
            recorder,
            mount,
            binding: RwLock::new(binding),
            leaders: Mutex::new(HashMap::new()),
            following: Mutex::new(()),
            watch: None,
            watches: Mutex::new(HashMap::new()),
        }
    }

    /// Session cgroups are watched with `watch` (the caller waits on it and
    /// then calls `follow` and `end_finished`).
    pub fn with_watch(mut self, watch: Arc<CgroupWatch>) -> Lifecycle {
        self.watch = Some(watch);
        self
    }

    fn watch_session(&self, s: &Session) {
        let Some(w) = &self.watch else { return };
        match w.add(&s.cgroup) {
            Ok(wd) => {
                if let Some(old) = self.watches.lock().unwrap().insert(s.sid, wd) {
                    w.remove(old);
                }
            }
            // The sweep still finds its end, within a second.
            Err(e) => log::warn!("session {}: {e:#}", s.sid),
        }
    }

    fn unwatch_session(&self, sid: &Uuid) {
        if let (Some(w), Some(wd)) = (&self.watch, self.watches.lock().unwrap().remove(sid)) {
            w.remove(wd);
        }
    }

    /// Stops following the leader of session `sid`.
    fn unfollow(&self, sid: &Uuid) {
        if let Some(p) = self.leaders.lock().unwrap().remove(sid) {
            self.kernel.lock().unwrap().unfollow_leader(p.pid);
        }
    }

    /// The kernel entry of a session: its policy's.
    fn session_entry(b: &Binding, s: &Session) -> SessionEntry {
        b.entry_named(s.policy.as_deref())
    }

    /// The kernel entry of `uid`'s processes outside sessions (and of its
    /// user manager): the policy that binds the user by name and groups.
    fn user_entry(b: &Binding, uid: u32, groups: &mut GroupCache) -> SessionEntry {
        let user = crate::session::user_name(uid);
        let g = groups.get(&user);
        b.for_user(&user, &g).1
    }

    /// The policies in force.
    pub fn binding(&self) -> std::sync::RwLockReadGuard<'_, Binding> {
        self.binding.read().unwrap()
    }

    /// Makes `b` the policies in force: every running session (by its
    /// login) and identity is evaluated again and its kernel entries
    /// rewritten, each in one map write (old policy or new, never a mix).
    /// On an error the previous policies are put back as far as possible.
    pub fn rebind(&self, b: Binding) -> Result<()> {
        let mut binding = self.binding.write().unwrap();
        let mut old = std::mem::replace(&mut *binding, b);
        let result = self.apply_binding(&binding);
        if result.is_err() {
            std::mem::swap(&mut *binding, &mut old);
            if let Err(e) = self.apply_binding(&binding) {
                log::error!("putting the previous policies back: {e:#}");
            }
        }
        drop(binding);
        // The set not kept is freed after the lock that logins wait on:
        // 100,000 CIDRs take milliseconds to free.
        drop(old);
        result
    }

    fn apply_binding(&self, b: &Binding) -> Result<()> {
        let mut groups = GroupCache::default();
        let mut changed = Vec::new();
        {
            let mut reg = self.registry.lock().unwrap();
            reg.set_policies(Arc::clone(&b.set));
            let mut kernel = self.kernel.lock().unwrap();
            for s in reg.all_mut().filter(|s| !s.ending) {
                let who = s.who.clone().unwrap_or_else(|| Who {
                    user: s.user.clone().unwrap_or_default(),
                    groups: groups.get(s.user.as_deref().unwrap_or_default()),
                    ..Default::default()
                });
                let (name, entry) = b.for_login(&who);
                for c in std::iter::once(&s.cgroup).chain(&s.followed_from) {
                    kernel.add(c.id, entry)?;
                }
                if let (Some(m), Some(uid)) = (&s.manager, s.uid) {
                    kernel.add(m.id, Lifecycle::user_entry(b, uid, &mut groups))?;
                }
                if name != s.policy {
                    log::info!(
                        "session {}: policy {} (was {})",
                        s.sid,
                        name.as_deref().unwrap_or("host default"),
                        s.policy.as_deref().unwrap_or("host default")
                    );
                    s.policy = name;
                    changed.push(s.clone());
                }
            }
            for uid in kernel.identities()? {
                kernel.add_identity(uid, Lifecycle::user_entry(b, uid, &mut groups))?;
            }
        }
        for s in &changed {
            self.save(s);
        }
        Ok(())
    }

    /// Makes the kernel's restricted identities exactly `uids`, each with
    /// the entry of the policy that binds the user outside sessions.
    pub fn set_identities(&self, uids: &[u32]) -> Result<()> {
        let b = self.binding.read().unwrap();
        let mut groups = GroupCache::default();
        let mut kernel = self.kernel.lock().unwrap();
        for uid in kernel.identities()? {
            if !uids.contains(&uid) {
                kernel.remove_identity(uid)?;
            }
        }
        for &uid in uids {
            kernel.add_identity(uid, Lifecycle::user_entry(&b, uid, &mut groups))?;
        }
        Ok(())
    }

    /// Brings the programs' presence bitmaps up to date (see
    /// `SessionMap::sync_presence`); part of the daemon's sweep.
    pub fn sync_presence(&self) {
        if let Err(e) = self.kernel.lock().unwrap().sync_presence_if_stale() {
            log::error!("updating PRESENCE: {e:#}");
        }
    }

    /// The uids the kernel restricts by identity now.
    pub fn kernel_identities(&self) -> Result<Vec<u32>> {
        self.kernel.lock().unwrap().identities()
    }

    /// Restricts `uid` outside its sessions too.
    pub fn add_identity(&self, uid: u32) -> Result<()> {
        let b = self.binding.read().unwrap();
        let entry = Lifecycle::user_entry(&b, uid, &mut GroupCache::default());
        self.kernel.lock().unwrap().add_identity(uid, entry)
    }

    fn save(&self, s: &Session) {
        if let Some(store) = &self.store {
            store.save(s);
        }
    }

    /// Opens session `s` (its cgroup, user and login fields filled in):
    /// registers its cgroup (and user manager) in the kernel, then runs
    /// `place`, which puts the session's process into the cgroup, so that
    /// it is restricted from its first instruction there. On any error the
    /// kernel entries are removed again. The session's policy is chosen
    /// here, from `s.who`, under the policies in force; `admit` then
    /// decides, given the policy and the user's open sessions, whether the
    /// login may have a session at all (a session control), before
    /// anything is registered. The check and the insert are under one lock,
    /// so concurrent logins cannot both take the last place.
    pub fn open(
        &self,
        mut s: Session,
        place: impl FnOnce() -> Result<()>,
        admit: impl FnOnce(&Binding, Option<&str>, usize) -> Result<(), Error>,
    ) -> Result<Uuid, Error> {
        let boot_ns = now_boot_ns();
        let cg = s.cgroup.clone();
        // A leader in restrictd's own cgroup may be moved on by a later PAM
        // module; the kernel follows it by pid, this pidfd tells the pid's
        // process from a later one.
        let leader = match s.owned && s.leader_pid > 1 {
            true => Some(Pidfd::open(s.leader_pid)?),
            false => None,
        };
        // Held until the session is in the registry, so that a policy
        // change either sees it or comes after its entry is written.
        let b = self.binding.read().unwrap();
        let who = s.who.clone().unwrap_or_else(|| Who {
            user: s.user.clone().unwrap_or_default(),
            ..Default::default()
        });
        let (policy, entry) = b.for_login(&who);
        s.policy = policy;
        s.terminal = terminal_mode(entry.flags);
        let manager_entry = match (&s.manager, s.uid) {
            (Some(_), Some(uid)) => {
                Some(Lifecycle::user_entry(&b, uid, &mut GroupCache::default()))
            }
            _ => None,
        };
        let mut reg = self.registry.lock().unwrap();
        if reg.all().any(|o| o.cgroup.id == cg.id) {
            return Err(Error::InvalidArgs(format!(
                "process {} is already in a session ({})",
                s.leader_pid,
                cg.path.display()
            )));
        }
        let open_sessions = reg
            .all()
            .filter(|o| o.uid == s.uid && !o.closed && !o.ending)
            .count();
        admit(&b, s.policy.as_deref(), open_sessions)?;
        let registered = {
            let mut kernel = self.kernel.lock().unwrap();
            kernel
                .add(cg.id, entry)
                .and_then(|_| match (&s.manager, manager_entry) {
                    (Some(m), Some(e)) => register_manager(&mut kernel, &self.mount, m, e),
                    _ => Ok(()),
                })
                .and_then(|_| match &leader {
                    Some(p) => kernel.follow_leader(p.pid, cg.id),
                    None => Ok(()),
                })
        };
        let placed = registered.and_then(|_| place());
        // Fault injection for the tests: the daemon dies between placing
        // the login and saving it (`remove_orphans` cleans up after it).
        if placed.is_ok()
            && std::env::var_os("RESTRICTD_FAULT").is_some_and(|v| v == "open-after-place")
        {
            std::process::abort();
        }
        if let Err(e) = placed {
            let mut kernel = self.kernel.lock().unwrap();
            let _ = kernel.remove(cg.id);
            if let Some(p) = &leader {
                kernel.unfollow_leader(p.pid);
            }
            if let Some(m) = &s.manager {
                if !reg.manager_in_use(m.id) {
                    let _ = kernel.remove(m.id);
                }
            }
            return Err(e.into());
        }
        let sid = s.sid;
        reg.insert(s.clone());
        drop(reg);
        drop(b);
        if let Some(p) = leader {
            self.leaders.lock().unwrap().insert(sid, Arc::new(p));
        }
        self.watch_session(&s);
        self.save(&s);
        self.recorder.session_started(cg.id, boot_ns);
        Ok(sid)
    }

    /// Marks the session closed; it ends as soon as no process is left in
    /// it. Processes that outlive the login stay restricted until then.
    pub fn close(&self, sid: &str) -> Result<(), Error> {
        let snapshot = {
            let mut reg = self.registry.lock().unwrap();
            let s = reg
                .by_sid_mut(sid)
                .ok_or_else(|| Error::NoSuchSession(sid.into()))?;
            s.closed = true;
            s.clone()
        };
        // The login's PAM stack is done with the leader.
        self.unfollow(&snapshot.sid);
        self.save(&snapshot);
        Ok(())
    }

    /// Sessions whose leader a later PAM module moved to another cgroup
    /// (pam_systemd's logind scope, when the PAM line comes before it) go
    /// with it: the new cgroup becomes the session's (the kernel
    /// registered it at the move, `follow.rs`; registered here if that was
    /// missed), with its user manager if it is a logind scope; the old one
    /// stays registered until the session ends. Leaders that exited are
    /// no longer followed.
    pub fn follow(&self) {
        let _one = self.following.lock().unwrap();
        // The leaders' cgroups are read from /proc without the registry
        // lock, which every login takes: with it held, 1,000 sessions made
        // each sweep hold up logins for 100 ms.
        let leaders: Vec<(Uuid, Arc<Pidfd>)> = self
            .leaders
            .lock()
            .unwrap()
            .iter()
            .map(|(sid, p)| (*sid, Arc::clone(p)))
            .collect();
        // sid -> (session key, its cgroup's path)
        let sessions: HashMap<Uuid, (u64, PathBuf)> = {
            let reg = self.registry.lock().unwrap();
            reg.all()
                .filter(|s| !s.ending)
                .map(|s| (s.sid, (s.cgroup.id, s.cgroup.path.clone())))
                .collect()
        };
        // (sid, session key, leader pid, the leader's cgroup now)
        let mut moved: Vec<(Uuid, u64, u32, String)> = Vec::new();
        let mut gone = Vec::new();
        for (sid, p) in &leaders {
            let Some((key, path)) = sessions.get(sid) else {
                gone.push(*sid);
                continue;
            };
            match p.cgroup() {
                None => gone.push(*sid),
                Some(rel) => {
                    if self.mount.join(rel.trim_start_matches('/')) != *path {
                        moved.push((*sid, *key, p.pid, rel));
                    }
                }
            }
        }
        for sid in gone {
            self.unfollow(&sid);
        }
        for (sid, from, pid, rel) in moved {
            self.follow_one(sid, from, pid, &rel);
        }
    }

    fn follow_one(&self, sid: Uuid, from: u64, pid: u32, rel: &str) {
        let path = self.mount.join(rel.trim_start_matches('/'));
        let to = match Cgroup::open(&path) {
            Ok(c) => c,
            Err(e) => {
                log::error!(
                    "session {sid}: its leader {pid} moved to {}: {e:#}",
                    path.display()
                );
                return;
            }
        };
        let b = self.binding.read().unwrap();
        let mut reg = self.registry.lock().unwrap();
        let Some(s) = reg.get_mut(from).filter(|s| !s.ending) else {
            return;
        };
        let entry = Lifecycle::session_entry(&b, s);
        let manager_entry = s
            .uid
            .map(|uid| Lifecycle::user_entry(&b, uid, &mut GroupCache::default()));
        let manager = if crate::daemon::is_logind_scope(rel) {
            s.uid
                .and_then(|uid| crate::daemon::user_manager(&self.mount, rel, uid))
        } else {
            None
        };
        let registered = {
            let mut kernel = self.kernel.lock().unwrap();
            // Also when the kernel has registered it already (follow.rs):
            // this fills its `SESSION_SLOTS` slot, the programs' fast path.
            kernel
                .add(to.id, entry)
                .and_then(|_| match (&manager, manager_entry) {
                    (Some(m), Some(e)) => register_manager(&mut kernel, &self.mount, m, e),
                    _ => Ok(()),
                })
                .and_then(|_| kernel.follow_leader(pid, to.id))
        };
        if let Err(e) = registered {
            // The user's identity still restricts the new cgroup's
            // processes; the session's own cgroup ends with the sweep.
            log::error!(
                "session {sid}: following its leader {pid} to {}: {e:#}",
                path.display()
            );
            return;
        }
        let Some(s) = reg.follow(from, to.clone(), manager) else {
            return;
        };
        drop(reg);
        self.watch_session(&s);
        self.save(&s);
        log::warn!(
            "session {sid}: its leader (pid {pid}) was moved to cgroup {} by a PAM module after \
             pam_restrict.so; the session follows it (put pam_restrict.so after pam_systemd: \
             restrictctl pam-check)",
            to.path.display()
        );
    }

    /// Records why restrictd is ending session `sid` (for `session.end`).
    pub fn set_end_reason(&self, sid: &Uuid, reason: &str) {
        if let Some(s) = self.registry.lock().unwrap().by_sid_mut(&sid.to_string()) {
            s.end_reason = Some(reason.to_string());
        }
    }

    /// Registers the program of `pid` (the PAM caller, sshd) as the relay
    /// of session terminals (`tty.rs`).
    pub fn add_tty_relay(&self, pid: u32) -> Result<bool> {
        self.kernel.lock().unwrap().add_tty_relay(pid)
    }

    pub fn find(&self, sid: &str) -> Option<Session> {
        self.registry.lock().unwrap().by_sid(sid).cloned()
    }

    pub fn all(&self) -> Vec<Session> {
        self.registry.lock().unwrap().all().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.registry.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ends every session whose cgroup is empty or gone, unless its leader
    /// lives on elsewhere (moved by a later PAM module: `follow` takes the
    /// session there).
    pub fn end_finished(&self) {
        self.follow();
        let leaders: HashSet<Uuid> = {
            let l = self.leaders.lock().unwrap();
            l.iter()
                .filter(|(_, p)| p.alive())
                .map(|(sid, _)| *sid)
                .collect()
        };
        // Read without the registry lock (as in `follow`); `end` skips a
        // session that ended meanwhile.
        let candidates: Vec<Cgroup> = self
            .registry
            .lock()
            .unwrap()
            .all()
            .filter(|s| !s.ending && !leaders.contains(&s.sid))
            .map(|s| s.cgroup.clone())
            .collect();
        for cg in candidates {
            if !cg.path.exists() || !cg.populated().unwrap_or(true) {
                self.end(cg.id);
            }
        }
    }

    /// Ends the session registered under `cgroup_id`: the kernel entry goes
    /// (and the user manager's, with the user's last session), restrictd's
    /// own cgroup is removed, the saved state forgotten, and `session.end`
    /// is queued; the recorder writes it after the session's last records
    /// and then drops the session from the registry.
    pub fn end(&self, cgroup_id: u64) {
        let (s, manager) = {
            let mut reg = self.registry.lock().unwrap();
            let Some(s) = reg.get_mut(cgroup_id) else {
                return;
            };
            if s.ending {
                return;
            }
            s.ending = true;
            let s = s.clone();
            (s, reg.sole_user_of_manager(cgroup_id))
        };
        self.unfollow(&s.sid);
        self.unwatch_session(&s.sid);
        // Keys whose loss counts end with the session: its own (and those
        // of the cgroups it was followed out of), and its user manager's
        // when this is the user's last session.
        let mut keys = vec![cgroup_id];
        keys.extend(s.followed_from.iter().map(|c| c.id));
        {
            let mut kernel = self.kernel.lock().unwrap();
            for id in &keys {
                if let Err(e) = kernel.remove(*id) {
                    log::error!("session {}: {e:#}", s.sid);
                }
            }
            // The user's last session: their systemd instance is free again.
            if let Some(m) = &manager {
                match kernel.remove(m.id) {
                    Ok(()) => keys.push(m.id),
                    Err(e) => log::error!("session {}: user manager: {e:#}", s.sid),
                }
            }
        }
        let boot_ns = now_boot_ns();
        let own = s.owned.then_some(&s.cgroup);
        for c in own.into_iter().chain(&s.followed_from) {
            if let Err(e) = c.remove() {
                log::error!("session {}: {e:#}", s.sid);
            }
        }
        if let Some(store) = &self.store {
            store.forget(&s.sid);
        }
        self.recorder.session_ended(cgroup_id, boot_ns, keys);
        log::info!("session {} ended", s.sid);
    }

    /// Keeps each session's user manager registered as it is now: one that
    /// was stopped and started again (by root, or by a login restrictd does
    /// not see, such as the console) has a new cgroup; one that did not run
    /// yet when a session in a logind scope began (a first login, or a
    /// session that followed its leader into the scope) runs now. Either is
    /// registered, so its units (`systemd-run --user`) stay in the session.
    pub fn refresh_managers(&self) {
        let changed: Vec<(Session, Cgroup)> = self
            .registry
            .lock()
            .unwrap()
            .all()
            .filter(|s| !s.ending)
            .filter_map(|s| {
                let now = match &s.manager {
                    Some(m) => Cgroup::open(&m.path).ok()?,
                    None if !s.owned => {
                        let rel = s.cgroup.path.strip_prefix(&self.mount).ok()?.to_str()?;
                        if !crate::daemon::is_logind_scope(rel) {
                            return None;
                        }
                        crate::daemon::user_manager(&self.mount, rel, s.uid?)?
                    }
                    None => return None,
                };
                (s.manager.as_ref().map(|m| m.id) != Some(now.id)).then(|| (s.clone(), now))
            })
            .collect();
        for (s, now) in changed {
            let b = self.binding.read().unwrap();
            let entry =
                Lifecycle::user_entry(&b, s.uid.unwrap_or(u32::MAX), &mut GroupCache::default());
            let mut reg = self.registry.lock().unwrap();
            let registered =
                register_manager(&mut self.kernel.lock().unwrap(), &self.mount, &now, entry);
            if let Err(e) = registered {
                log::error!(
                    "session {}: user manager {}: {e:#}",
                    s.sid,
                    now.path.display()
                );
                continue;
            }
            let updated = reg.set_manager(s.cgroup.id, now.clone());
            if let Some(old) = &s.manager {
                if !reg.manager_in_use(old.id) {
                    let _ = self.kernel.lock().unwrap().remove(old.id);
                }
            }
            drop(reg);
            if let Some(s) = updated {
                self.save(&s);
            }
            let what = if s.manager.is_some() {
                "restarted"
            } else {
                "started"
            };
            log::info!(
                "session {}: user manager {} {what}, now cgroup {}",
                s.sid,
                now.path.display(),
                now.id
            );
        }
    }

    /// At daemon start: takes back the saved sessions whose cgroups still
    /// exist with the same id and are still registered in the kernel (or,
    /// with `fresh_maps`, the maps of another version, which this start
    /// replaces: registered again); the others ended while restrictd was
    /// away and are ended now. Returns the sessions taken back.
    pub fn restore(&self, fresh_maps: bool) -> Result<Vec<Session>> {
        let Some(store) = &self.store else {
            return Ok(vec![]);
        };
        let live: std::collections::HashSet<u64> =
            self.kernel.lock().unwrap().ids()?.into_iter().collect();
        let mut kept = Vec::new();
        let mut gone = Vec::new();
        let b = self.binding.read().unwrap();
        let mut groups = GroupCache::default();
        for mut s in store.load_all() {
            s.ending = false;
            let same = Cgroup::open(&s.cgroup.path).is_ok_and(|c| c.id == s.cgroup.id);
            if same && (fresh_maps || live.contains(&s.cgroup.id)) {
                // The policies may have changed while restrictd was away:
                // the session gets what binds its login now (and its kernel
                // entries are rewritten, since the policy ids are new).
                let who = s.who.clone().unwrap_or_else(|| Who {
                    user: s.user.clone().unwrap_or_default(),
                    groups: groups.get(s.user.as_deref().unwrap_or_default()),
                    ..Default::default()
                });
                let (policy, entry) = b.for_login(&who);
                s.policy = policy;
                let mut kernel = self.kernel.lock().unwrap();
                let again = std::iter::once(&s.cgroup).chain(&s.followed_from);
                for c in again.filter(|c| Cgroup::open(&c.path).is_ok_and(|o| o.id == c.id)) {
                    kernel.add(c.id, entry)?;
                }
                drop(kernel);
                // Pinned from before, unless it restarted meanwhile (refresh_managers' turn).
                if let (Some(m), Some(uid)) = (&s.manager, s.uid) {
                    let e = Lifecycle::user_entry(&b, uid, &mut groups);
                    register_manager(&mut self.kernel.lock().unwrap(), &self.mount, m, e)?;
                }
                log::info!(
                    "session {} restored (cgroup {})",
                    s.sid,
                    s.cgroup.path.display()
                );
                self.watch_session(&s);
                kept.push(s.clone());
            } else {
                gone.push(s.cgroup.id);
            }
            self.registry.lock().unwrap().insert(s);
        }
        for id in gone {
            self.end(id);
        }
        Ok(kept)
    }

    /// At daemon start, after `restore`: session cgroups under `root` that
    /// no saved session names were left by a daemon that died during a
    /// login (after making the cgroup, before saving the session; the login
    /// was refused). An empty one is unregistered and removed; one with
    /// processes stays registered, so they stay restricted, and is
    /// reported.
    pub fn remove_orphans(&self, root: &Cgroup) {
        let Ok(rd) = fs::read_dir(&root.path) else {
            return;
        };
        let known: std::collections::HashSet<PathBuf> = self
            .registry
            .lock()
            .unwrap()
            .all()
            .flat_map(|s| {
                std::iter::once(s.cgroup.path.clone())
                    .chain(s.followed_from.iter().map(|c| c.path.clone()))
            })
            .collect();
        for path in rd.filter_map(|e| e.ok()).map(|e| e.path()) {
            let is_session = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| Uuid::parse_str(n).is_ok());
            if !is_session || !path.is_dir() || known.contains(&path) {
                continue;
            }
            let Ok(cg) = Cgroup::open(&path) else {
                continue;
            };
            if cg.populated().unwrap_or(true) {
                log::warn!(
                    "{}: a session cgroup no saved session names, with processes; left registered (restricted)",
                    path.display()
                );
                continue;
            }
            let _ = self.kernel.lock().unwrap().remove(cg.id);
            match cg.remove() {
                Ok(()) => log::info!(
                    "{}: removed (left by a daemon stopped during a login)",
                    path.display()
                ),
                Err(e) => log::error!("{e:#}"),
            }
        }
    }

    /// Saves every session (their event counters) for the next start.
    pub fn save_all(&self) {
        for s in self.all() {
            self.save(&s);
        }
    }
}

/// Registers a user manager with the programs: its cgroup level (counted
/// from the cgroup2 root, as the kernel does), then its id with `entry`.
/// Idempotent: the user's other sessions register the same manager.
fn register_manager(
    kernel: &mut SessionMap,
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
    kernel.set_manager_level(level)?;
    kernel.add(manager.id, entry)
}

/// The terminal recording mode session flags ask for.
fn terminal_mode(flags: u32) -> Option<String> {
    use restrictd_common::{SESSION_RECORD_TTY, SESSION_RECORD_TTY_INPUT};
    match (
        flags & SESSION_RECORD_TTY != 0,
        flags & SESSION_RECORD_TTY_INPUT != 0,
    ) {
        (true, true) => Some("input_output".into()),
        (true, false) => Some("output".into()),
        _ => None,
    }
}
