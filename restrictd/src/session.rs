//! Sessions: which cgroup belongs to which session, and the per-session
//! state that turns a kernel record into an audit event (sid, user, `ei`).

use std::collections::HashMap;

use restrictd_ebpf::NetworkEvent;
use uuid::Uuid;

use crate::{
    cgroup::Cgroup,
    events::{boot_ns_to_rfc3339, Body, Event, NetworkBody},
};

#[derive(Debug, Clone)]
pub struct Session {
    pub sid: Uuid,
    pub cgroup: Cgroup,
    pub user: Option<String>,
    pub login: Option<String>,
    next_ei: u64,
}

impl Session {
    pub fn new(sid: Uuid, cgroup: Cgroup) -> Session {
        Session {
            sid,
            cgroup,
            user: None,
            login: None,
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

    /// Builds the event for a kernel network record. A record whose cgroup is
    /// no longer registered is still reported (sid empty), never dropped.
    pub fn network_event(&mut self, k: &NetworkEvent) -> Event {
        let (sid, ei, user, login) = match self.sessions.get_mut(&k.cgroup_id) {
            Some(s) => {
                let ei = s.next_ei;
                s.next_ei += 1;
                (s.sid.to_string(), ei, s.user.clone(), s.login.clone())
            }
            None => (String::new(), 0, None, None),
        };
        Event {
            event: "session.network",
            code: "T4002I",
            time: boot_ns_to_rfc3339(k.boot_ns),
            ei,
            sid,
            user,
            login,
            server_hostname: self.hostname.clone(),
            body: Body::Network(NetworkBody::from_kernel(k)),
        }
    }
}
