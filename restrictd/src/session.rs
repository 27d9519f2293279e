//! Sessions: which cgroup belongs to which session, what is known about the
//! login, and the per-session state that turns a kernel record into an audit
//! event (sid, user, `ei`).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use restrictd_common::IDENTITY_KEY;

use crate::{
    cgroup::Cgroup,
    events::{
        boot_ns_to_rfc3339, Body, ConnectionFields, Event, Losses, LostBody, SessionEndBody,
        SessionStartBody,
    },
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub sid: Uuid,
    pub cgroup: Cgroup,
    pub user: Option<String>,
    pub login: Option<String>,
    pub uid: Option<u32>,
    /// The process placed in the session (sshd's `[priv]`, or CMD for `run`).
    pub leader_pid: u32,
    pub remote_host: String,
    pub service: String,
    pub tty: String,
    /// The SSH connection (sshd's `SSH_CONNECTION`), when PAM told it.
    #[serde(default)]
    pub ssh: Option<SshConnection>,
    /// RFC 3339.
    pub started: String,
    /// restrictd made the cgroup and removes it; false for a logind scope
    /// that is restricted in place and belongs to logind.
    pub owned: bool,
    /// close_session was called; the session ends when its cgroup is empty.
    pub closed: bool,
    /// Its end is decided and `session.end` is on its way: not ended again.
    #[serde(default)]
    pub ending: bool,
    /// The user's systemd instance (`user@UID.service`), registered with the
    /// session so that units it starts (`systemd-run --user`) stay restricted
    /// and recorded; their events are attributed to the user's latest session.
    #[serde(default)]
    pub manager: Option<Cgroup>,
    /// Cgroups the session was in before its leader was moved out of them
    /// (by a PAM module after pam_restrict.so, such as pam_systemd): still
    /// registered, since processes and sockets made there keep them, and
    /// removed with the session (restrictd made them).
    #[serde(default)]
    pub followed_from: Vec<Cgroup>,
    pub next_ei: u64,
    /// Events of the session not recorded so far (reported as `session.lost`).
    #[serde(default)]
    pub lost: Losses,
    /// Who logged in, as policies match logins.
    #[serde(default)]
    pub who: Option<crate::policy::Who>,
    /// The per-login policy that binds the session (None: the host default).
    #[serde(default)]
    pub policy: Option<String>,
    /// Why restrictd ended it (a session control, a lock), for `session.end`.
    #[serde(default)]
    pub end_reason: Option<String>,
    /// What of its terminal is recorded (`output`, `input_output`); None:
    /// nothing, and no recording file.
    #[serde(default)]
    pub terminal: Option<String>,
}

/// Teleport's connection fields of a login: the SSH connection when known,
/// else PAM_RHOST (`session.start`, `session.end`, `session.rejected`).
pub fn connection_fields(ssh: Option<&SshConnection>, remote_host: &str) -> ConnectionFields {
    match ssh {
        Some(c) => ConnectionFields {
            remote_addr: c.remote.to_string(),
            local_addr: c.local.to_string(),
            proto: "ssh".into(),
            remote_host: remote_host.to_string(),
        },
        None => ConnectionFields {
            remote_addr: remote_host.to_string(),
            remote_host: remote_host.to_string(),
            ..Default::default()
        },
    }
}

impl Session {
    fn connection_fields(&self) -> ConnectionFields {
        connection_fields(self.ssh.as_ref(), &self.remote_host)
    }

    pub fn new(sid: Uuid, cgroup: Cgroup) -> Session {
        Session {
            sid,
            cgroup,
            user: None,
            login: None,
            uid: None,
            leader_pid: 0,
            remote_host: String::new(),
            service: String::new(),
            tty: String::new(),
            ssh: None,
            started: boot_ns_to_rfc3339(crate::events::now_boot_ns()),
            owned: true,
            closed: false,
            ending: false,
            manager: None,
            followed_from: Vec::new(),
            next_ei: 0,
            lost: Losses::default(),
            who: None,
            policy: None,
            end_reason: None,
            terminal: None,
        }
    }
}

/// An SSH connection's two ends, as sshd gives them in `SSH_CONNECTION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshConnection {
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

impl SshConnection {
    /// The one established TCP connection process `pid` holds, as the
    /// kernel has it (sshd's `[priv]` process keeps the client's socket):
    /// what `SSH_CONNECTION` should say, read where the user cannot write.
    /// None if it holds none, or more than one.
    ///
    /// Each of its sockets is asked directly (a duplicate through
    /// pidfd_getfd): reading the netns's TCP table (/proc/PID/net/tcp)
    /// walks every bucket of the kernel's hash, 8 ms per file on a 24 GiB
    /// host, on every login. Where the duplicate is refused (a seccomp
    /// filter, Yama's ptrace_scope 3), the table is read instead.
    pub fn held_by(pid: u32) -> Option<SshConnection> {
        use procfs::process::FDTarget;
        // First, so that the descriptors listed next are this process's:
        // if the pid is reused meanwhile, the duplicates fail (ESRCH).
        let pidfd = crate::cgroup::Pidfd::open(pid).ok()?;
        let p = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
        let sockets: Vec<(i32, u64)> = p
            .fd()
            .ok()?
            .filter_map(|f| {
                let f = f.ok()?;
                match f.target {
                    FDTarget::Socket(inode) => Some((f.fd, inode)),
                    _ => None,
                }
            })
            .collect();
        let mut held = Vec::new();
        for &(fd, _) in &sockets {
            match pidfd.get_fd(fd) {
                Ok(dup) => held.extend(established_tcp(&dup)),
                // Closed since the listing: not a connection it holds.
                Err(e) if e.raw_os_error() == Some(libc::EBADF) => {}
                // The process is gone: nothing it holds can be told.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return None,
                Err(_) => return Self::held_in_table(&p, &sockets),
            }
            if held.len() > 1 {
                return None;
            }
        }
        held.pop()
    }

    /// `held_by` from the netns's TCP tables.
    fn held_in_table(
        p: &procfs::process::Process,
        sockets: &[(i32, u64)],
    ) -> Option<SshConnection> {
        use procfs::net::TcpState;
        let inodes: std::collections::HashSet<u64> = sockets.iter().map(|s| s.1).collect();
        let mut held = p
            .tcp()
            .unwrap_or_default()
            .into_iter()
            .chain(p.tcp6().unwrap_or_default())
            .filter(|e| e.state == TcpState::Established && inodes.contains(&e.inode))
            .map(|e| SshConnection {
                remote: unmapped(e.remote_address),
                local: unmapped(e.local_address),
            });
        let one = held.next()?;
        held.next().is_none().then_some(one)
    }

    /// "CLIENT_IP CLIENT_PORT SERVER_IP SERVER_PORT".
    pub fn parse(s: &str) -> Result<SshConnection, String> {
        let parts: Vec<&str> = s.split(' ').collect();
        let [rip, rport, lip, lport] = parts[..] else {
            return Err(format!(
                "{s:?} is not \"CLIENT_IP CLIENT_PORT SERVER_IP SERVER_PORT\""
            ));
        };
        let addr = |ip: &str, port: &str| -> Result<SocketAddr, String> {
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| format!("{ip:?} in {s:?} is not an IP address"))?;
            let port: u16 = port
                .parse()
                .map_err(|_| format!("{port:?} in {s:?} is not a port"))?;
            Ok(SocketAddr::new(ip, port))
        };
        Ok(SshConnection {
            remote: addr(rip, rport)?,
            local: addr(lip, lport)?,
        })
    }
}

/// An IPv4 address seen through an IPv6 socket as itself.
fn unmapped(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        _ => a,
    }
}

/// `sock`'s two ends if it is an established TCP connection.
fn established_tcp(sock: &std::os::fd::OwnedFd) -> Option<SshConnection> {
    use nix::sys::socket::{getpeername, getsockname, getsockopt, sockopt, SockaddrStorage};
    use std::os::fd::AsRawFd;
    if getsockopt(sock, sockopt::SockType).ok()? != nix::sys::socket::SockType::Stream {
        return None;
    }
    // SO_PROTOCOL: MPTCP, SCTP and others are stream sockets too.
    let proto: libc::c_int = raw_sockopt(sock, libc::SOL_SOCKET, libc::SO_PROTOCOL)?;
    let info: libc::tcp_info = raw_sockopt(sock, libc::IPPROTO_TCP, libc::TCP_INFO)?;
    // 1: TCP_ESTABLISHED.
    if proto != libc::IPPROTO_TCP || info.tcpi_state != 1 {
        return None;
    }
    let addr = |a: SockaddrStorage| -> Option<SocketAddr> {
        if let Some(v4) = a.as_sockaddr_in() {
            Some(SocketAddr::V4((*v4).into()))
        } else {
            a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
        }
    };
    Some(SshConnection {
        remote: unmapped(addr(
            getpeername::<SockaddrStorage>(sock.as_raw_fd()).ok()?,
        )?),
        local: unmapped(addr(
            getsockname::<SockaddrStorage>(sock.as_raw_fd()).ok()?,
        )?),
    })
}

/// Socket option `name` at `level` of `sock`, as the kernel's struct `T`
/// (plain data: all-zero is a valid value).
fn raw_sockopt<T>(sock: &std::os::fd::OwnedFd, level: i32, name: i32) -> Option<T> {
    use std::os::fd::AsRawFd;
    // SAFETY: T is plain data (c_int, tcp_info) for which zeroes are valid.
    let mut v: T = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `v`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&mut v as *mut T).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(v)
}

/// `sid` as a UUID if it is one in restrictd's own form (no other
/// spelling names a session).
fn parse_sid(sid: &str) -> Option<Uuid> {
    Uuid::parse_str(sid)
        .ok()
        .filter(|u| u.hyphenated().to_string() == sid)
}

/// Sessions by cgroup id, the key the kernel reports.
pub struct Registry {
    sessions: HashMap<u64, Session>,
    /// User manager cgroup id -> the session its events are attributed to.
    managers: HashMap<u64, u64>,
    /// Cgroup a session was followed out of -> the session's cgroup now.
    aliases: HashMap<u64, u64>,
    /// Shared with every event (`Arc`): a clone per event cost an
    /// allocation each.
    hostname: std::sync::Arc<str>,
    server_id: std::sync::Arc<str>,
    /// The policies in force, to name the policy and rule of a denial
    /// (the lifecycle keeps it current).
    policies: std::sync::Arc<crate::policy::PolicySet>,
    /// Groups of users restricted outside sessions, by uid.
    groups: HashMap<u32, Vec<String>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    pub fn new() -> Registry {
        Registry {
            sessions: HashMap::new(),
            managers: HashMap::new(),
            aliases: HashMap::new(),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default()
                .into(),
            server_id: server_id().into(),
            policies: Default::default(),
            groups: HashMap::new(),
        }
    }

    /// The policies denial events are named by from now on.
    pub fn set_policies(&mut self, set: std::sync::Arc<crate::policy::PolicySet>) {
        self.policies = set;
        self.groups.clear();
    }

    /// The policy of the session under `key`, or of the user `uid` outside
    /// sessions.
    fn policy_of<'s>(
        &mut self,
        set: &'s crate::policy::PolicySet,
        key: u64,
        outside: Option<u32>,
    ) -> Option<&'s crate::policy::Policy> {
        match outside {
            Some(uid) => {
                let user = user_name(uid);
                let groups = self
                    .groups
                    .entry(uid)
                    .or_insert_with(|| crate::binding::groups_of(&user))
                    .clone();
                set.for_login(&crate::policy::Who {
                    user,
                    groups,
                    ..Default::default()
                })
            }
            None => match self.sessions.get(&key)?.policy.as_deref() {
                Some(name) => set.policies.iter().find(|p| p.name == name),
                None => set.default.as_ref(),
            },
        }
    }

    pub fn insert(&mut self, s: Session) {
        if let Some(m) = &s.manager {
            self.managers.insert(m.id, s.cgroup.id);
        }
        for old in &s.followed_from {
            self.aliases.insert(old.id, s.cgroup.id);
        }
        self.sessions.insert(s.cgroup.id, s);
    }

    /// The session key a record key stands for: a cgroup the session was
    /// followed out of, or a user manager's (the user's latest session).
    fn resolve(&self, id: u64) -> u64 {
        self.aliases
            .get(&id)
            .or_else(|| self.managers.get(&id))
            .copied()
            .unwrap_or(id)
    }

    /// The session of record key `key` if its terminal is recorded, as
    /// its recording's header names it.
    pub fn terminal_of(&self, key: u64) -> Option<crate::terminal::Meta> {
        let s = self.sessions.get(&self.resolve(key))?;
        let mode = match s.terminal.as_deref()? {
            "input_output" => "input_output",
            _ => "output",
        };
        Some(crate::terminal::Meta {
            sid: s.sid.to_string(),
            user: s.user.clone(),
            login: s.login.clone(),
            remote: s.connection_fields().remote_addr,
            hostname: self.hostname.to_string(),
            mode,
        })
    }

    /// The sid of record key `key`'s session if its terminal is recorded.
    pub fn terminal_sid(&self, key: u64) -> Option<String> {
        let s = self.sessions.get(&self.resolve(key))?;
        s.terminal.as_ref().map(|_| s.sid.to_string())
    }

    /// Terminal bytes of session `sid` its recording left out.
    pub fn note_terminal_dropped(&mut self, sid: &str, bytes: u64) {
        if let Some(s) = self.by_sid_mut(sid) {
            s.lost.terminal_bytes_dropped += bytes;
        }
    }

    /// Moves session `cgroup_id` to cgroup `to` (its leader was moved
    /// there), with `manager` if `to` is a logind scope; records of the old
    /// cgroup still count as the session's. Returns the updated session.
    pub fn follow(
        &mut self,
        cgroup_id: u64,
        to: Cgroup,
        manager: Option<Cgroup>,
    ) -> Option<Session> {
        let mut s = self.remove(cgroup_id)?;
        let from = std::mem::replace(&mut s.cgroup, to);
        s.followed_from.push(from);
        s.owned = false;
        if manager.is_some() {
            s.manager = manager;
        }
        self.insert(s.clone());
        Some(s)
    }

    pub fn remove(&mut self, cgroup_id: u64) -> Option<Session> {
        let s = self.sessions.remove(&cgroup_id)?;
        self.aliases.retain(|_, to| *to != cgroup_id);
        if let Some(m) = &s.manager {
            if self.managers.get(&m.id) == Some(&cgroup_id) {
                // Hand the manager to another session of the user, if any.
                match self
                    .sessions
                    .values()
                    .find(|o| o.manager.as_ref() == Some(m))
                {
                    Some(o) => self.managers.insert(m.id, o.cgroup.id),
                    None => self.managers.remove(&m.id),
                };
            }
        }
        Some(s)
    }

    /// Gives session `cgroup_id` a new user manager cgroup (the old one
    /// restarted); returns the updated session.
    pub fn set_manager(&mut self, cgroup_id: u64, manager: Cgroup) -> Option<Session> {
        let mut s = self.remove(cgroup_id)?;
        s.manager = Some(manager);
        self.insert(s.clone());
        Some(s)
    }

    /// The user manager of session `cgroup_id` if no other session has it.
    pub fn sole_user_of_manager(&self, cgroup_id: u64) -> Option<Cgroup> {
        let m = self.sessions.get(&cgroup_id)?.manager.as_ref()?;
        let shared = self
            .sessions
            .values()
            .any(|o| o.cgroup.id != cgroup_id && o.manager.as_ref() == Some(m));
        (!shared).then(|| m.clone())
    }

    /// Record keys (session cgroups, and the user managers only they use)
    /// of sessions whose end is decided: their last reports come with
    /// their `session.end`, not before it from a periodic check that could
    /// be written after it.
    pub fn ending_keys(&self) -> std::collections::HashSet<u64> {
        let mut out = std::collections::HashSet::new();
        for s in self.sessions.values().filter(|s| s.ending) {
            out.insert(s.cgroup.id);
            out.extend(s.followed_from.iter().map(|c| c.id));
            if let Some(m) = self.sole_user_of_manager(s.cgroup.id) {
                out.insert(m.id);
            }
        }
        out
    }

    /// True while some session has this user manager.
    pub fn manager_in_use(&self, manager_id: u64) -> bool {
        self.managers.contains_key(&manager_id)
    }

    /// The session whose sid is `sid` (as restrictd writes it: lowercase,
    /// hyphenated). Compared as UUIDs: formatting every session's sid to
    /// compare made each lookup allocate once per session.
    pub fn by_sid(&self, sid: &str) -> Option<&Session> {
        let sid = parse_sid(sid)?;
        self.sessions.values().find(|s| s.sid == sid)
    }

    pub fn get_mut(&mut self, cgroup_id: u64) -> Option<&mut Session> {
        self.sessions.get_mut(&cgroup_id)
    }

    pub fn by_sid_mut(&mut self, sid: &str) -> Option<&mut Session> {
        let sid = parse_sid(sid)?;
        self.sessions.values_mut().find(|s| s.sid == sid)
    }

    pub fn all(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    pub fn all_mut(&mut self) -> impl Iterator<Item = &mut Session> {
        self.sessions.values_mut()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Stamps a body with its session: sid, user, login and the session's
    /// next `ei`. Bodies are stamped in time order (the recorder merges
    /// them), so `ei` increases with time. A body from a user manager's
    /// cgroup goes to the user's latest session; one whose session is gone
    /// is still written, with an empty sid, never dropped.
    pub fn stamp(&mut self, cgroup_id: u64, boot_ns: u64, mut body: Body) -> Event {
        let key = self.resolve(cgroup_id);
        let outside_session = cgroup_id & IDENTITY_KEY != 0;
        if let Body::Network(n) = &mut body {
            if n.action == restrictd_common::ACTION_DENIED {
                let outside = outside_session.then_some(cgroup_id as u32);
                let set = self.policies.clone();
                if let Some(p) = self.policy_of(&set, key, outside) {
                    n.name_decision(p);
                }
            }
        }
        let (sid, ei, user, login) = match self.sessions.get_mut(&key) {
            // A restricted identity's process outside every session: the
            // user, and no session.
            _ if outside_session => {
                let name = user_name(cgroup_id as u32);
                (String::new(), 0, Some(name.clone()), Some(name))
            }
            Some(s) => {
                let ei = s.next_ei;
                s.next_ei += 1;
                (s.sid.to_string(), ei, s.user.clone(), s.login.clone())
            }
            None => (String::new(), 0, None, None),
        };
        let info = body.info();
        Event {
            event: info.event,
            code: info.code,
            time: boot_ns_to_rfc3339(boot_ns),
            ei,
            uid: Uuid::new_v4(),
            sid,
            user,
            login,
            namespace: NAMESPACE,
            server_id: self.server_id.clone(),
            server_hostname: self.hostname.clone(),
            outside_session,
            body,
        }
    }

    /// An event of the daemon's own (a refused login, a lock) about
    /// `user` ("" for none), in no session.
    pub fn user_event(&self, user: &str, boot_ns: u64, body: Body) -> Event {
        let user = Some(user.to_string()).filter(|u| !u.is_empty());
        let info = body.info();
        Event {
            event: info.event,
            code: info.code,
            time: boot_ns_to_rfc3339(boot_ns),
            ei: 0,
            uid: Uuid::new_v4(),
            sid: String::new(),
            login: user.clone(),
            user,
            namespace: NAMESPACE,
            server_id: self.server_id.clone(),
            server_hostname: self.hostname.clone(),
            outside_session: false,
            body,
        }
    }

    pub fn start_event(&mut self, cgroup_id: u64, boot_ns: u64) -> Option<Event> {
        let s = self.sessions.get(&self.resolve(cgroup_id))?;
        let policy = match &s.policy {
            Some(p) => Some(p.clone()),
            None => self.policies.default.as_ref().map(|d| d.name.clone()),
        };
        let body = Body::SessionStart(SessionStartBody {
            connection: s.connection_fields(),
            service: s.service.clone(),
            tty: s.tty.clone(),
            unix_uid: s.uid.unwrap_or(u32::MAX),
            pid: s.leader_pid,
            cgroup_id,
            enhanced_recording: true,
            policy,
        });
        Some(self.stamp(cgroup_id, boot_ns, body))
    }

    /// The `session.lost` event for what record key `key` lost between
    /// `since_ns` and `boot_ns`. The session (the key's, or for a user
    /// manager the user's latest) counts it, and the events the kernel
    /// dropped take its next `ei` numbers, so that the gap they leave in
    /// `ei` is exactly theirs.
    pub fn lost_event(&mut self, key: u64, boot_ns: u64, since_ns: u64, lost: Losses) -> Event {
        let skey = self.resolve(key);
        let n = lost.unnumbered();
        let mut range = None;
        if key & IDENTITY_KEY == 0 {
            if let Some(s) = self.sessions.get_mut(&skey) {
                s.lost.add(&lost);
                if n > 0 {
                    range = Some((s.next_ei, s.next_ei + n - 1));
                    s.next_ei += n;
                }
            }
        }
        let body = Body::Lost(LostBody {
            cgroup_id: key,
            lost,
            lost_ei_first: range.map(|r| r.0),
            lost_ei_last: range.map(|r| r.1),
            since: boot_ns_to_rfc3339(since_ns),
        });
        self.stamp(key, boot_ns, body)
    }

    /// An event of session `sid` that no system log took.
    pub fn note_unwritten(&mut self, sid: &str) {
        if let Some(s) = self.by_sid_mut(sid) {
            s.lost.unwritten += 1;
        }
    }

    /// Removes the session and returns its `session.end` event, with the
    /// session's losses in total.
    pub fn end(&mut self, cgroup_id: u64, boot_ns: u64) -> Option<(Session, Event)> {
        let s = self.sessions.get(&cgroup_id)?;
        let body = Body::SessionEnd(SessionEndBody {
            connection: s.connection_fields(),
            cgroup_id,
            enhanced_recording: true,
            interactive: s.tty != "ssh" && !s.tty.is_empty(),
            participants: s.user.iter().cloned().collect(),
            session_start: s.started.clone(),
            session_stop: boot_ns_to_rfc3339(boot_ns),
            lost: s.lost,
            reason: s.end_reason.clone(),
        });
        let ev = self.stamp(cgroup_id, boot_ns, body);
        let s = self.remove(cgroup_id)?;
        Some((s, ev))
    }
}

/// Teleport's server namespace, the same on every event.
pub const NAMESPACE: &str = "default";

/// This host's id for `server_id`: its machine id (systemd's
/// /etc/machine-id, or D-Bus's copy) written as a UUID, as Teleport gives
/// a node's host UUID; a random one for this run of the daemon when the
/// host has neither.
pub fn server_id() -> String {
    ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|s| Uuid::try_parse(s.trim()).ok())
        .unwrap_or_else(|| {
            log::warn!("no machine id in /etc/machine-id: server_id is random for this run");
            Uuid::new_v4()
        })
        .hyphenated()
        .to_string()
}

/// The name of `uid`, or the number when it has none.
pub fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// sshd's `SSH_CONNECTION`, and what a misconfigured PAM stack might put
    /// there instead: refused, naming the part that is wrong.
    #[test]
    fn ssh_connection_parses_sshds_form_only() {
        let c = SshConnection::parse("192.0.2.7 51234 10.0.0.1 22").unwrap();
        assert_eq!(c.remote.to_string(), "192.0.2.7:51234");
        assert_eq!(c.local.to_string(), "10.0.0.1:22");
        let c = SshConnection::parse("2001:db8::7 51234 ::1 2222").unwrap();
        assert_eq!(c.remote.to_string(), "[2001:db8::7]:51234");
        assert_eq!(c.local.to_string(), "[::1]:2222");
        for (bad, names) in [
            ("", "CLIENT_IP"),
            ("192.0.2.7 51234 10.0.0.1", "CLIENT_IP"),
            ("192.0.2.7 51234 10.0.0.1 22 extra", "CLIENT_IP"),
            ("192.0.2.7  51234 10.0.0.1 22", "CLIENT_IP"),
            ("host.example 51234 10.0.0.1 22", "host.example"),
            ("192.0.2.7 70000 10.0.0.1 22", "70000"),
            ("192.0.2.7 51234 10.0.0.1 -1", "-1"),
        ] {
            let e = SshConnection::parse(bad).expect_err(bad);
            assert!(e.contains(names), "{bad:?}: {e}");
        }
    }

    fn cg(id: u64) -> Cgroup {
        Cgroup {
            path: PathBuf::from(format!("/cg/{id}")),
            id,
        }
    }

    fn session(id: u64, manager: Option<u64>) -> Session {
        let mut s = Session::new(Uuid::new_v4(), cg(id));
        s.user = Some("alice".into());
        s.manager = manager.map(cg);
        s
    }

    /// A record from the user manager's cgroup, as the kernel reports it.
    fn manager_record(reg: &mut Registry, manager: u64) -> String {
        let mut k = restrictd_common::NetworkEvent::default();
        k.header.cgroup_id = manager;
        k.version = 4;
        let body =
            crate::events::from_record(&restrictd_common::record::Record::Network(k)).unwrap();
        reg.stamp(manager, 0, body).sid
    }

    #[test]
    fn user_manager_events_go_to_the_users_latest_session_until_the_last_ends() {
        let mut reg = Registry::new();
        let (a, b) = (session(10, Some(99)), session(11, Some(99)));
        let (sid_a, sid_b) = (a.sid.to_string(), b.sid.to_string());
        reg.insert(a);
        assert_eq!(manager_record(&mut reg, 99), sid_a);
        reg.insert(b);
        assert_eq!(manager_record(&mut reg, 99), sid_b);
        assert_eq!(reg.sole_user_of_manager(11), None);
        reg.end(11, 0).unwrap();
        assert!(reg.manager_in_use(99));
        assert_eq!(reg.sole_user_of_manager(10), Some(cg(99)));
        assert_eq!(manager_record(&mut reg, 99), sid_a);
        reg.end(10, 0).unwrap();
        assert!(!reg.manager_in_use(99));
        assert_eq!(manager_record(&mut reg, 99), "");
    }

    #[test]
    fn a_session_is_found_by_its_sid_as_restrictd_writes_it_only() {
        let mut reg = Registry::new();
        let (a, b) = (session(10, None), session(11, None));
        let sid = b.sid.to_string();
        reg.insert(a);
        reg.insert(b);
        assert_eq!(reg.by_sid(&sid).map(|s| s.cgroup.id), Some(11));
        assert_eq!(reg.by_sid_mut(&sid).map(|s| s.cgroup.id), Some(11));
        for other in [
            sid.to_uppercase(),
            sid.replace('-', ""),
            format!("{{{sid}}}"),
        ] {
            assert!(reg.by_sid(&other).is_none(), "{other}");
        }
        assert!(reg.by_sid("").is_none());
    }

    #[test]
    fn a_restarted_manager_takes_over_the_attribution() {
        let mut reg = Registry::new();
        let a = session(10, Some(99));
        let sid = a.sid.to_string();
        reg.insert(a);
        reg.set_manager(10, cg(100)).unwrap();
        assert!(!reg.manager_in_use(99));
        assert_eq!(manager_record(&mut reg, 100), sid);
    }

    #[test]
    fn lost_events_take_ei_numbers_of_the_session_they_are_charged_to() {
        let mut reg = Registry::new();
        let a = session(10, Some(99));
        let sid = a.sid.to_string();
        reg.insert(a);
        assert_eq!(manager_record(&mut reg, 10), sid); // ei 0
        let lost = Losses {
            lost_command: 2,
            disk_events_dropped: 3,
            ..Losses::default()
        };
        // Counted under the user manager: charged to the user's session.
        let ev = reg.lost_event(99, 0, 0, lost);
        assert_eq!((ev.sid.as_str(), ev.ei), (sid.as_str(), 6));
        let Body::Lost(b) = &ev.body else {
            panic!("{ev:?}")
        };
        assert_eq!((b.lost_ei_first, b.lost_ei_last), (Some(1), Some(5)));
        assert_eq!(reg.get_mut(10).unwrap().lost.total(), 5);
        // Outside every session: the user's, with no ei to give.
        let ev = reg.lost_event(IDENTITY_KEY | 1000, 0, 0, lost);
        assert!(ev.outside_session && ev.sid.is_empty());
        let Body::Lost(b) = &ev.body else {
            panic!("{ev:?}")
        };
        assert_eq!(b.lost_ei_first, None);
        let (_, end) = reg.end(10, 0).unwrap();
        assert_eq!(end.ei, 7);
        let Body::SessionEnd(b) = &end.body else {
            panic!("{end:?}")
        };
        assert_eq!((b.lost.lost_command, b.lost.disk_events_dropped), (2, 3));
    }

    #[test]
    fn a_followed_session_keeps_the_records_of_the_cgroup_it_left() {
        let mut reg = Registry::new();
        let a = session(10, None);
        let sid = a.sid.to_string();
        reg.insert(a);
        let s = reg.follow(10, cg(30), Some(cg(99))).unwrap();
        assert_eq!((s.cgroup.id, s.owned), (30, false));
        // session.start was queued under the old cgroup id.
        assert_eq!(reg.start_event(10, 0).unwrap().sid, sid);
        assert_eq!(manager_record(&mut reg, 10), sid);
        assert_eq!(manager_record(&mut reg, 30), sid);
        assert_eq!(manager_record(&mut reg, 99), sid);
        reg.get_mut(30).unwrap().ending = true;
        assert!(reg.ending_keys().contains(&10));
        reg.end(30, 0).unwrap();
        assert_eq!(manager_record(&mut reg, 10), "");
    }

    #[test]
    fn sessions_without_a_manager_are_unaffected() {
        let mut reg = Registry::new();
        let s = session(20, None);
        let sid = s.sid.to_string();
        reg.insert(s);
        assert!(!reg.manager_in_use(20));
        assert_eq!(manager_record(&mut reg, 20), sid);
    }
}
