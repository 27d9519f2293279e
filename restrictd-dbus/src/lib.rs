//! The D-Bus interface between restrictd (the service), restrictctl and
//! pam_restrict (the clients). Version 1: `org.restrictd.Daemon1`.
//!
//! Only root may call it: the bus policy (packaging/dbus/org.restrictd.Daemon1.conf)
//! refuses everyone else, and the daemon checks the caller's uid again.

use serde::{Deserialize, Serialize};
use zbus::zvariant::Type;

pub const BUS_NAME: &str = "org.restrictd.Daemon1";
pub const OBJECT_PATH: &str = "/org/restrictd/Daemon1";
pub const INTERFACE: &str = "org.restrictd.Daemon1";

/// D-Bus error names the daemon returns besides the standard ones
/// (`org.freedesktop.DBus.Error.AccessDenied`, `.InvalidArgs`).
pub mod errors {
    pub const INVALID_POLICY: &str = "org.restrictd.Daemon1.Error.InvalidPolicy";
    pub const NO_SUCH_SESSION: &str = "org.restrictd.Daemon1.Error.NoSuchSession";
    pub const FAILED: &str = "org.restrictd.Daemon1.Error.Failed";
    /// A login refused on purpose (a session limit, a lock): the module
    /// denies it whatever its `fail=` mode, showing the user the message.
    pub const REFUSED: &str = "org.restrictd.Daemon1.Error.Refused";
}

/// The PAM environment variables `OpenSessionEnv` passes on:
/// `SSH_CONNECTION` ("CLIENT_IP CLIENT_PORT SERVER_IP SERVER_PORT") and
/// `SSH_AUTH_INFO_0` (the methods that authenticated the login, with the
/// key or certificate), both put there by sshd.
pub const PAM_ENV_KEYS: [&str; 2] = ["SSH_CONNECTION", "SSH_AUTH_INFO_0"];

/// What `OpenSession` needs besides the caller (whose pid, from the bus, is
/// the process put into the session).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct OpenRequest {
    /// PAM_USER: the account logging in.
    pub login: String,
    pub uid: u32,
    /// PAM_RHOST: the peer address (sshd passes the IP).
    pub remote_host: String,
    /// PAM_SERVICE, e.g. "sshd".
    pub service: String,
    /// PAM_TTY ("ssh" under sshd).
    pub tty: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct SessionInfo {
    pub sid: String,
    pub user: String,
    pub login: String,
    pub uid: u32,
    /// The process that was put in the session (sshd's `[priv]` process).
    pub leader_pid: u32,
    pub remote_host: String,
    pub service: String,
    pub tty: String,
    /// RFC 3339.
    pub started: String,
    pub cgroup: String,
    pub cgroup_id: u64,
    /// "open", or "closed" while processes that outlived the login remain
    /// (they stay restricted until the cgroup is empty).
    pub state: String,
    /// Processes in the session now.
    pub processes: u32,
    /// Events of the session not recorded so far, as its `session.lost`
    /// events reported them: records the kernel could not write (ring
    /// buffer full) per kind, records kept out by a limit (disk:
    /// `disk_rate_limit`; every kind: the session's share of a ring buffer
    /// over half full), and events no system log took.
    pub lost_network: u64,
    pub lost_command: u64,
    pub lost_disk: u64,
    pub disk_events_dropped: u64,
    pub command_events_dropped: u64,
    pub network_events_dropped: u64,
    pub unwritten: u64,
    /// The per-login policy that binds the session; "" for the host default.
    pub policy: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct Status {
    pub version: String,
    /// The pinned programs' and maps' version (see ARCHITECTURE.md).
    pub kernel_state: String,
    pub sessions: u32,
    /// Name of the active policy; empty when none (everything allowed).
    pub policy: String,
    /// Where events go: "journald", "syslog" or "none".
    pub system_log: String,
    /// Events the kernel could not deliver, since the maps were created.
    pub lost_network: u64,
    pub lost_command: u64,
    pub lost_disk: u64,
}

/// A lock in force (`restrictctl locks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct LockInfo {
    /// "user" or "group".
    pub target: String,
    pub name: String,
    pub reason: String,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339; "" for a lock without a TTL.
    pub expires: String,
}

#[zbus::proxy(
    interface = "org.restrictd.Daemon1",
    default_service = "org.restrictd.Daemon1",
    default_path = "/org/restrictd/Daemon1"
)]
pub trait Daemon1 {
    /// Puts the calling process into a new session; returns its id.
    fn open_session(&self, request: &OpenRequest) -> zbus::Result<String>;
    /// `open_session` with what the PAM environment tells about the login
    /// (`PAM_ENV_KEYS`; absent keys are unknown). pam_restrict calls this
    /// first and falls back to `open_session` for a daemon without it.
    fn open_session_env(
        &self,
        request: &OpenRequest,
        env: &std::collections::HashMap<String, String>,
    ) -> zbus::Result<String>;
    fn close_session(&self, sid: &str) -> zbus::Result<()>;
    fn list_sessions(&self) -> zbus::Result<Vec<SessionInfo>>;
    /// Kills every process of the session.
    fn terminate_session(&self, sid: &str) -> zbus::Result<()>;
    /// The active policy as (name, YAML text); ("", "") when there is none.
    fn get_policy(&self) -> zbus::Result<(String, String)>;
    /// Validates and applies a policy to all sessions, running ones included;
    /// `source` names it in errors. Returns a one-line summary.
    fn apply_policy(&self, yaml: &str, source: &str) -> zbus::Result<String>;
    /// Which policy binds a login and its verdict on a destination
    /// (`restrictctl policy explain`). `login` keys: `user` (required),
    /// `from` (source address), `service` (default `sshd`), `principal`,
    /// `auth_method`; `dest` is `ADDR[:PORT][/tcp|udp|icmp]`.
    fn explain_policy(
        &self,
        login: &std::collections::HashMap<String, String>,
        dest: &str,
    ) -> zbus::Result<String>;
    fn status(&self) -> zbus::Result<Status>;
    /// Locks a user or group (`target`: "user" | "group") out now: its
    /// sessions end, its processes elsewhere are killed, its logins are
    /// refused with `reason` until `ttl_secs` pass (0: until `unlock`).
    /// Returns what it did.
    fn lock(&self, target: &str, name: &str, ttl_secs: u64, reason: &str) -> zbus::Result<String>;
    fn unlock(&self, target: &str, name: &str) -> zbus::Result<String>;
    fn list_locks(&self) -> zbus::Result<Vec<LockInfo>>;
}
