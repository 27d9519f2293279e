//! Audit events: their Teleport-compatible JSON form and where they are
//! written (a JSON-lines file, and the system log: journald's native protocol,
//! or syslog facility authpriv where there is no journal).

use std::{
    io::Write,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use serde::Serialize;

use restrictd_ebpf::{CommandEvent, DiskEvent, NetworkEvent, ACTION_DENIED, OPERATION_CONNECT};

pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
pub const SYSLOG_SOCKET: &str = "/dev/log";
pub const SYSLOG_IDENTIFIER: &str = "restrictd";

/// Fixed journald MESSAGE_IDs, one per event type (`journalctl MESSAGE_ID=...`).
pub mod message_id {
    pub const NETWORK: &str = "474795d78298490aad64291e119d42c4";
    pub const COMMAND: &str = "74fc7442d41a4b4fbf47b8b416832e84";
    pub const DISK: &str = "55a41e0c8721449d97b7e323e9b03f19";
    pub const SESSION_START: &str = "229cb4f00de640b8847cab4a624b1eee";
    pub const SESSION_END: &str = "e7598b7e69a44355ae16c9714d748802";
    pub const LOST: &str = "fcb5828396bb428c9a9d4021c5026427";
}

/// One audit event, serialized flat as Teleport does.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event: &'static str,
    pub code: &'static str,
    /// RFC 3339, UTC, nanoseconds.
    pub time: String,
    /// Per-session event index.
    pub ei: u64,
    pub sid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    pub server_hostname: String,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Body {
    Command(CommandBody),
    Disk(DiskBody),
    Network(NetworkBody),
    SessionStart(SessionStartBody),
    SessionEnd(SessionEndBody),
}

/// `session.command` (T4000I): one exec, successful or not.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CommandBody {
    /// The executed file, absolute: a relative name is joined, in the
    /// kernel, to the process's working directory.
    pub path: String,
    pub program: String,
    /// The complete argument vector, argv[0] included, up to `argv_limit` bytes.
    pub argv: Vec<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub argv_truncated: bool,
    /// Total size in bytes of the arguments in the process, when truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv_length: Option<u32>,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// 0, or the negative errno of a failed exec.
    pub return_code: i32,
    pub cgroup_id: u64,
}

impl CommandBody {
    pub fn from_kernel(h: &CommandEvent, path: &[u8], argv: &[u8]) -> CommandBody {
        let path = clean_path(path);
        let truncated = h.argv_total > h.argv_len;
        let argv = argv
            .strip_suffix(&[0])
            .unwrap_or(argv)
            .split(|&b| b == 0)
            .filter(|a| !(a.is_empty() && argv.is_empty()))
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        CommandBody {
            path,
            program: comm_to_string(&h.comm),
            argv,
            argv_truncated: truncated,
            argv_length: truncated.then_some(h.argv_total),
            pid: h.pid,
            ppid: h.ppid,
            uid: h.uid,
            return_code: h.return_code,
            cgroup_id: h.cgroup_id,
        }
    }
}

/// `session.disk` (T4001I): one file open, successful or not.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DiskBody {
    /// Absolute: for a successful open the opened file's real path; for a
    /// failed one the given path joined, in the kernel, to the directory it
    /// was opened against (the cwd, or openat's directory fd). Only when
    /// the kernel's walk is too long does the path stay as given.
    pub path: String,
    /// open(2) flags as passed (O_RDONLY 0, O_WRONLY 1, O_RDWR 2, O_CREAT 0o100, ...).
    pub flags: u32,
    /// 0, or the negative errno of a failed open.
    pub return_code: i32,
    pub pid: u32,
    pub uid: u32,
    pub program: String,
    pub cgroup_id: u64,
}

impl DiskBody {
    pub fn from_kernel(h: &DiskEvent, path: &[u8]) -> DiskBody {
        let path = clean_path(path);
        DiskBody {
            path,
            flags: h.flags,
            return_code: h.return_code,
            pid: h.pid,
            uid: h.uid,
            program: comm_to_string(&h.comm),
            cgroup_id: h.cgroup_id,
        }
    }

    /// "read", "write, create", ... for the human summary.
    fn mode(&self) -> String {
        let mut parts = vec![match self.flags & 0o3 {
            0 => "read",
            1 => "write",
            _ => "read/write",
        }];
        for (bit, name) in [(0o100, "create"), (0o1000, "truncate"), (0o2000, "append")] {
            if self.flags & bit != 0 {
                parts.push(name);
            }
        }
        parts.join(", ")
    }
}

/// `session.start` (T2000I).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionStartBody {
    /// The remote peer, as PAM_RHOST gives it (sshd: the client IP).
    #[serde(rename = "addr.remote")]
    pub remote_addr: String,
    pub service: String,
    pub tty: String,
    pub uid: u32,
    /// The process placed in the session (sshd's `[priv]` process).
    pub pid: u32,
    pub cgroup_id: u64,
    pub enhanced_recording: bool,
}

/// `session.end` (T2004I), written after the session's last events.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionEndBody {
    #[serde(rename = "addr.remote")]
    pub remote_addr: String,
    pub cgroup_id: u64,
    pub enhanced_recording: bool,
    pub interactive: bool,
    pub participants: Vec<String>,
    pub session_start: String,
    pub session_stop: String,
    /// Disk events the per-session rate limit (`disk_rate_limit`) dropped.
    pub disk_events_dropped: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NetworkBody {
    pub pid: u32,
    pub cgroup_id: u64,
    pub program: String,
    pub src_addr: String,
    /// 0 (omitted) when the socket had no local port yet.
    #[serde(skip_serializing_if = "is_zero")]
    pub src_port: u16,
    pub dst_addr: String,
    pub dst_port: u16,
    /// 4 or 6.
    pub version: u8,
    /// 0 connect, 1 send.
    pub operation: u8,
    /// 0 observed, 1 denied.
    pub action: u8,
}

impl NetworkBody {
    pub fn from_kernel(k: &NetworkEvent) -> NetworkBody {
        let addr = |b: &[u8; 16]| -> IpAddr {
            if k.version == 4 {
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            } else {
                IpAddr::V6(Ipv6Addr::from(*b))
            }
        };
        NetworkBody {
            pid: k.pid,
            cgroup_id: k.cgroup_id,
            program: comm_to_string(&k.comm),
            src_addr: addr(&k.src_addr).to_string(),
            src_port: k.src_port,
            dst_addr: addr(&k.dst_addr).to_string(),
            dst_port: k.dst_port,
            version: k.version,
            operation: k.operation,
            action: k.action,
        }
    }
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

/// A path from the kernel: the kernel prefixes a relative one with the
/// absolute directory, giving "/home/a/./x" for "./x". "." components go;
/// ".." stays (it may cross a symlink). Paths the kernel left relative
/// (its walk too long, see DIR_DEPTH_MAX) are kept as they are.
fn clean_path(raw: &[u8]) -> String {
    let path = String::from_utf8_lossy(raw).into_owned();
    if !path.starts_with('/') {
        return path;
    }
    let p: std::path::PathBuf = std::path::Path::new(&path).components().collect();
    p.display().to_string()
}

pub fn comm_to_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

impl Event {
    fn message_id(&self) -> &'static str {
        match self.body {
            Body::Command(_) => message_id::COMMAND,
            Body::Disk(_) => message_id::DISK,
            Body::Network(_) => message_id::NETWORK,
            Body::SessionStart(_) => message_id::SESSION_START,
            Body::SessionEnd(_) => message_id::SESSION_END,
        }
    }

    fn denied(&self) -> bool {
        match &self.body {
            Body::Network(n) => n.action == ACTION_DENIED,
            _ => false,
        }
    }

    /// The one-line human summary (journald MESSAGE).
    pub fn summary(&self) -> String {
        let who = self
            .user
            .clone()
            .unwrap_or_else(|| format!("session {}", self.sid));
        match &self.body {
            Body::Command(c) => {
                let mut args: String = c.argv.iter().skip(1).fold(String::new(), |mut acc, a| {
                    acc.push(' ');
                    acc.push_str(a);
                    acc
                });
                if args.len() > 200 {
                    let mut cut = 200;
                    while !args.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    args.truncate(cut);
                    args.push('…');
                }
                if c.return_code == 0 {
                    format!("{who} ran {}{args}", c.path)
                } else {
                    format!(
                        "{who} failed to run {}{args} ({})",
                        c.path,
                        nix::errno::Errno::from_raw(-c.return_code)
                    )
                }
            }
            Body::Disk(d) => {
                if d.return_code == 0 {
                    format!("{who} opened {} ({})", d.path, d.mode())
                } else {
                    format!(
                        "{who} failed to open {} ({}): {}",
                        d.path,
                        d.mode(),
                        nix::errno::Errno::from_raw(-d.return_code)
                    )
                }
            }
            Body::Network(n) => {
                let op = if n.operation == OPERATION_CONNECT {
                    "connect"
                } else {
                    "send"
                };
                let verdict = if n.action == ACTION_DENIED {
                    "denied"
                } else {
                    "allowed"
                };
                let dst = if n.version == 6 {
                    format!("[{}]:{}", n.dst_addr, n.dst_port)
                } else {
                    format!("{}:{}", n.dst_addr, n.dst_port)
                };
                format!(
                    "{who}: {verdict} {op} to {dst} by {} (pid {})",
                    n.program, n.pid
                )
            }
            Body::SessionStart(b) if b.remote_addr.is_empty() => {
                format!("{who}: session {} started ({})", self.sid, b.service)
            }
            Body::SessionStart(b) => format!(
                "{who}: session {} started from {} ({})",
                self.sid, b.remote_addr, b.service
            ),
            Body::SessionEnd(b) if b.disk_events_dropped > 0 => format!(
                "{who}: session {} ended ({} disk events over disk_rate_limit not recorded)",
                self.sid, b.disk_events_dropped
            ),
            Body::SessionEnd(_) => format!("{who}: session {} ended", self.sid),
        }
    }

    /// journald fields: every event field, UPPERCASE (`sid` as `SESSION_ID`),
    /// plus MESSAGE_ID, SYSLOG_IDENTIFIER and the whole event as EVENT_JSON.
    pub fn journal_fields(&self) -> Vec<(String, String)> {
        let json = serde_json::to_value(self).expect("events serialize");
        let mut out = vec![
            ("MESSAGE_ID".to_string(), self.message_id().to_string()),
            (
                "SYSLOG_IDENTIFIER".to_string(),
                SYSLOG_IDENTIFIER.to_string(),
            ),
            ("SYSLOG_FACILITY".to_string(), "10".to_string()), // authpriv
        ];
        if let serde_json::Value::Object(map) = &json {
            for (k, v) in map {
                let key = match k.as_str() {
                    "sid" => "SESSION_ID".to_string(),
                    "time" => "EVENT_TIME".to_string(),
                    // journald field names: A-Z, 0-9 and _ only ("addr.remote" -> ADDR_REMOTE).
                    k => k
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() {
                                c.to_ascii_uppercase()
                            } else {
                                '_'
                            }
                        })
                        .collect(),
                };
                let val = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.push((key, val));
            }
        }
        out.push(("EVENT_JSON".to_string(), json.to_string()));
        out
    }
}

/// Where events go. Each event goes to the JSON file (if any) and to the
/// system log. A failed write is reported on stderr with the event itself, so
/// an event is never silently dropped.
pub struct Output {
    json: Option<Box<dyn Write + Send>>,
    system: SystemLog,
}

enum SystemLog {
    Journal,
    Syslog(Box<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>),
    None,
}

impl Output {
    /// `events`: `None`, `-` (stderr) or a file to append to.
    pub fn new(events: Option<&Path>) -> anyhow::Result<Output> {
        let json: Option<Box<dyn Write + Send>> = match events {
            None => None,
            Some(p) if p == Path::new("-") => Some(Box::new(std::io::stderr())),
            Some(p) => Some(Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| anyhow::anyhow!("--events {}: {e}", p.display()))?,
            )),
        };
        Ok(Output {
            json,
            system: SystemLog::detect(),
        })
    }

    pub fn system_log_name(&self) -> &'static str {
        match self.system {
            SystemLog::Journal => "journald",
            SystemLog::Syslog(_) => "syslog",
            SystemLog::None => "none",
        }
    }

    /// Reports events the kernel could not deliver since the last report
    /// (journald: MESSAGE_ID message_id::LOST, fields LOST_NETWORK,
    /// LOST_COMMAND and LOST_DISK; syslog: the same as text).
    pub fn report_lost(&mut self, lost: crate::bpf::Lost) {
        let crate::bpf::Lost {
            network,
            command,
            disk,
        } = lost;
        let msg = format!(
            "restrictd: events lost because a ring buffer was full: {network} network, {command} command, {disk} disk (raise enhanced_recording.*_buffer_size)"
        );
        log::warn!("{msg}");
        let res = match &mut self.system {
            SystemLog::Journal => libsystemd::logging::journal_send(
                libsystemd::logging::Priority::Warning,
                &msg,
                [
                    ("MESSAGE_ID", message_id::LOST.to_string()),
                    ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER.to_string()),
                    ("SYSLOG_FACILITY", "10".to_string()),
                    ("LOST_NETWORK", network.to_string()),
                    ("LOST_COMMAND", command.to_string()),
                    ("LOST_DISK", disk.to_string()),
                ]
                .into_iter(),
            )
            .map_err(|e| anyhow::anyhow!("{e}")),
            SystemLog::Syslog(l) => l.warning(&msg).map_err(|e| anyhow::anyhow!("{e}")),
            SystemLog::None => Ok(()),
        };
        if let Err(e) = res {
            log::error!("system log write failed ({e}): {msg}");
        }
    }

    pub fn emit(&mut self, ev: &Event) {
        if let Some(w) = &mut self.json {
            let mut line = serde_json::to_vec(ev).expect("events serialize");
            line.push(b'\n');
            if let Err(e) = w.write_all(&line).and_then(|_| w.flush()) {
                log::error!("writing event to --events file failed: {e}");
            }
        }
        let res = match &mut self.system {
            SystemLog::Journal => send_journal(ev).or_else(|e| {
                // journald may have gone away: try syslog before giving up.
                log::warn!("journald write failed ({e}); trying syslog");
                SystemLog::detect_syslog().map_or(Err(e), |mut l| send_syslog(&mut l, ev))
            }),
            SystemLog::Syslog(l) => send_syslog(l, ev),
            SystemLog::None => Ok(()),
        };
        if let Err(e) = res {
            log::error!(
                "system log write failed ({e}); event: {}",
                serde_json::to_string(ev).unwrap_or_default()
            );
        }
    }
}

impl SystemLog {
    fn detect() -> SystemLog {
        if Path::new(JOURNAL_SOCKET).exists() {
            return SystemLog::Journal;
        }
        if let Some(l) = SystemLog::detect_syslog() {
            return SystemLog::Syslog(Box::new(l));
        }
        log::warn!(
            "neither {JOURNAL_SOCKET} nor {SYSLOG_SOCKET} exists: events go only to --events"
        );
        SystemLog::None
    }

    fn detect_syslog() -> Option<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>> {
        if !Path::new(SYSLOG_SOCKET).exists() {
            return None;
        }
        let formatter = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_AUTHPRIV,
            hostname: None,
            process: SYSLOG_IDENTIFIER.into(),
            pid: std::process::id(),
        };
        syslog::unix(formatter).ok()
    }
}

fn send_journal(ev: &Event) -> anyhow::Result<()> {
    let prio = if ev.denied() {
        libsystemd::logging::Priority::Warning
    } else {
        libsystemd::logging::Priority::Info
    };
    libsystemd::logging::journal_send(prio, &ev.summary(), ev.journal_fields().into_iter())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn send_syslog(
    l: &mut syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>,
    ev: &Event,
) -> anyhow::Result<()> {
    let json = serde_json::to_string(ev).expect("events serialize");
    if ev.denied() {
        l.warning(json)
    } else {
        l.info(json)
    }
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Converts a kernel CLOCK_BOOTTIME timestamp to RFC 3339 wall-clock time.
pub fn boot_ns_to_rfc3339(boot_ns: u64) -> String {
    use nix::time::{clock_gettime, ClockId};
    let ns = |c| {
        clock_gettime(c)
            .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
            .unwrap_or(0)
    };
    let offset = ns(ClockId::CLOCK_REALTIME) - ns(ClockId::CLOCK_BOOTTIME);
    let wall = boot_ns as i128 + offset;
    let dt = chrono::DateTime::from_timestamp(
        wall.div_euclid(1_000_000_000) as i64,
        wall.rem_euclid(1_000_000_000) as u32,
    )
    .unwrap_or_default();
    dt.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            event: "session.network",
            code: "T4002I",
            time: "2026-01-01T00:00:00.000000001Z".into(),
            ei: 3,
            sid: "s-1".into(),
            user: Some("alice".into()),
            login: Some("alice".into()),
            server_hostname: "h".into(),
            body: Body::Network(NetworkBody {
                pid: 42,
                cgroup_id: 7,
                program: "curl".into(),
                src_addr: "0.0.0.0".into(),
                src_port: 0,
                dst_addr: "10.1.2.4".into(),
                dst_port: 443,
                version: 4,
                operation: 0,
                action: 1,
            }),
        }
    }

    #[test]
    fn json_is_flat_teleport_shape() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["event"], "session.network");
        assert_eq!(v["code"], "T4002I");
        assert_eq!(v["dst_addr"], "10.1.2.4");
        assert_eq!(v["dst_port"], 443);
        assert_eq!(v["action"], 1);
        assert_eq!(v["sid"], "s-1");
    }

    #[test]
    fn journal_fields_are_uppercase_and_complete() {
        let f: std::collections::HashMap<_, _> = sample().journal_fields().into_iter().collect();
        assert_eq!(f["SESSION_ID"], "s-1");
        assert_eq!(f["DST_PORT"], "443");
        assert_eq!(f["MESSAGE_ID"], message_id::NETWORK);
        assert_eq!(f["SYSLOG_IDENTIFIER"], "restrictd");
        for k in f.keys() {
            assert!(
                k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    && !k.starts_with('_'),
                "bad journald field name {k}"
            );
        }
        let back: serde_json::Value = serde_json::from_str(&f["EVENT_JSON"]).unwrap();
        assert_eq!(back["dst_addr"], "10.1.2.4");
        assert_eq!(
            sample().summary(),
            "alice: denied connect to 10.1.2.4:443 by curl (pid 42)"
        );
    }

    #[test]
    fn boot_time_converts_to_now() {
        use nix::time::{clock_gettime, ClockId};
        let t = clock_gettime(ClockId::CLOCK_BOOTTIME).unwrap();
        let s = boot_ns_to_rfc3339(t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64);
        let parsed = chrono::DateTime::parse_from_rfc3339(&s).unwrap();
        let skew = (chrono::Utc::now() - parsed.with_timezone(&chrono::Utc)).num_seconds();
        assert!(skew.abs() < 5, "{s}");
        assert!(s.ends_with('Z') && s.len() == "2026-01-01T00:00:00.000000000Z".len());
    }
}
