//! Sessions: which cgroup belongs to which session, what is known about the
//! login, and the per-session state that turns a kernel record into an audit
//! event (sid, user, `ei`).

use std::collections::HashMap;

use restrictd_ebpf::{CommandEvent, DiskEvent, NetworkEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    cgroup::Cgroup,
    events::{
        boot_ns_to_rfc3339, now_rfc3339, Body, CommandBody, DiskBody, Event, NetworkBody,
        SessionEndBody, SessionStartBody,
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
    /// RFC 3339.
    pub started: String,
    /// restrictd made the cgroup and removes it; false for a logind scope
    /// that is restricted in place and belongs to logind.
    pub owned: bool,
    /// close_session was called; the session ends when its cgroup is empty.
    pub closed: bool,
    pub next_ei: u64,
}

impl Session {
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
            started: now_rfc3339(),
            owned: true,
            closed: false,
            next_ei: 0,
        }
    }
}

/// Sessions by cgroup id, the key the kernel reports.
pub struct Registry {
    sessions: HashMap<u64, Session>,
    hostname: String,
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
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    pub fn insert(&mut self, s: Session) {
        self.sessions.insert(s.cgroup.id, s);
    }

    pub fn remove(&mut self, cgroup_id: u64) -> Option<Session> {
        self.sessions.remove(&cgroup_id)
    }

    pub fn by_sid(&self, sid: &str) -> Option<&Session> {
        self.sessions.values().find(|s| s.sid.to_string() == sid)
    }

    pub fn by_sid_mut(&mut self, sid: &str) -> Option<&mut Session> {
        self.sessions
            .values_mut()
            .find(|s| s.sid.to_string() == sid)
    }

    pub fn all(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    fn event(
        &mut self,
        cgroup_id: u64,
        event: &'static str,
        code: &'static str,
        time: String,
        body: Body,
    ) -> Event {
        let (sid, ei, user, login) = match self.sessions.get_mut(&cgroup_id) {
            Some(s) => {
                let ei = s.next_ei;
                s.next_ei += 1;
                (s.sid.to_string(), ei, s.user.clone(), s.login.clone())
            }
            // A record whose session is gone is still reported, never dropped.
            None => (String::new(), 0, None, None),
        };
        Event {
            event,
            code,
            time,
            ei,
            sid,
            user,
            login,
            server_hostname: self.hostname.clone(),
            body,
        }
    }

    pub fn network_event(&mut self, k: &NetworkEvent) -> Event {
        let body = Body::Network(NetworkBody::from_kernel(k));
        self.event(
            k.cgroup_id,
            "session.network",
            "T4002I",
            boot_ns_to_rfc3339(k.boot_ns),
            body,
        )
    }

    pub fn command_event(&mut self, h: &CommandEvent, path: &[u8], argv: &[u8]) -> Event {
        let body = Body::Command(CommandBody::from_kernel(h, path, argv));
        self.event(
            h.cgroup_id,
            "session.command",
            "T4000I",
            boot_ns_to_rfc3339(h.boot_ns),
            body,
        )
    }

    pub fn disk_event(&mut self, h: &DiskEvent, body: DiskBody) -> Event {
        self.event(
            h.cgroup_id,
            "session.disk",
            "T4001I",
            boot_ns_to_rfc3339(h.boot_ns),
            Body::Disk(body),
        )
    }

    pub fn start_event(&mut self, cgroup_id: u64) -> Option<Event> {
        let s = self.sessions.get(&cgroup_id)?;
        let body = Body::SessionStart(SessionStartBody {
            remote_addr: s.remote_host.clone(),
            service: s.service.clone(),
            tty: s.tty.clone(),
            uid: s.uid.unwrap_or(u32::MAX),
            pid: s.leader_pid,
            cgroup_id,
            enhanced_recording: true,
        });
        Some(self.event(cgroup_id, "session.start", "T2000I", now_rfc3339(), body))
    }

    /// Removes the session and returns its `session.end` event.
    /// `disk_dropped`: its disk events the rate limit did not record.
    pub fn end(&mut self, cgroup_id: u64, disk_dropped: u64) -> Option<(Session, Event)> {
        let s = self.sessions.get(&cgroup_id)?;
        let stop = now_rfc3339();
        let body = Body::SessionEnd(SessionEndBody {
            remote_addr: s.remote_host.clone(),
            cgroup_id,
            enhanced_recording: true,
            interactive: s.tty != "ssh" && !s.tty.is_empty(),
            participants: s.user.iter().cloned().collect(),
            session_start: s.started.clone(),
            session_stop: stop.clone(),
            disk_events_dropped: disk_dropped,
        });
        let ev = self.event(cgroup_id, "session.end", "T2004I", stop, body);
        let s = self.sessions.remove(&cgroup_id)?;
        Some((s, ev))
    }
}
