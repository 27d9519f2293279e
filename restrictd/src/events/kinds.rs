//! The kinds of event, one section each: fields (the struct), name, code,
//! MESSAGE_ID and summary (its `Kind` impl), and for kernel records how the
//! record becomes the event (`from_record`). ARCHITECTURE.md: "Adding an
//! event kind".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use restrictd_common::{
    record::Record, CommandEvent, DiskEvent, Dropped, NetworkEvent, RecordHeader, ACTION_DENIED,
    DISK_IO_URING, DISK_PATH_FROM_CALLER, DISK_PATH_USER_MOUNT_NS, EVENT_COMMAND, EVENT_DISK,
    EVENT_NETWORK, EXE_UNLINKED, EXE_USER_MOUNT_NS, OPERATION_CONNECT, OPERATION_PACKET_IN,
    OPERATION_PACKET_OUT, OPERATION_SEND, PACKET_PEER_DENIED, PACKET_SOURCE_ROUTED,
};
use serde::Serialize;

use super::{comm_to_string, Body, Kind, KindInfo};

/// The event body of a kernel record; None for terminal bytes, which are
/// a recording, not an event.
pub fn from_record(r: &Record) -> Option<Body> {
    Some(match r {
        Record::Network(k) => Body::Network(NetworkBody::from_kernel(k)),
        Record::Command(h, path, exe, argv) => {
            Body::Command(CommandBody::from_kernel(h, path, exe, argv))
        }
        Record::Disk(h, path) => Body::Disk(DiskBody::from_kernel(h, path)),
        Record::Tty(..) => return None,
    })
}

/// The program a process runs, which it cannot choose (unlike `program`,
/// its self-chosen name).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Exe {
    /// Its real path (symlinks resolved); "" when it could not be named.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub exe: String,
    /// The file has no name left: deleted since it was started, or a memfd.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub exe_unlinked: bool,
    /// A memfd (`memfd_create`): a program that never was a file on disk;
    /// `exe` is then "/memfd:NAME", NAME chosen by its creator.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub exe_memfd: bool,
    /// `exe` is a path in a mount namespace its user made (`unshare -Urm`),
    /// where any file they can read may be bound over any path: it names
    /// where the program appeared there, not what it is.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub exe_user_mount_ns: bool,
}

impl Exe {
    pub fn new(path: String, flags: u32) -> Exe {
        let unlinked = flags & EXE_UNLINKED != 0;
        Exe {
            exe_memfd: unlinked && path.starts_with("/memfd:"),
            exe: path,
            exe_unlinked: unlinked,
            exe_user_mount_ns: flags & EXE_USER_MOUNT_NS != 0,
        }
    }

    /// " [/usr/bin/curl]" after a process name, when the program is known
    /// and its file name is not the process name (which the process sets).
    fn after(&self, program: &str) -> String {
        let base = self.exe.rsplit('/').next().unwrap_or("");
        if self.exe.is_empty()
            || base.starts_with(program) && !self.exe_memfd && !self.exe_user_mount_ns
        {
            return String::new();
        }
        self.label()
    }

    /// " [/usr/bin/x]", " [/usr/bin/x (deleted)]", " [/usr/bin/x (in the
    /// user's mount namespace)]".
    fn label(&self) -> String {
        let unlinked = if self.exe_unlinked && !self.exe_memfd {
            " (deleted)"
        } else {
            ""
        };
        let ns = if self.exe_user_mount_ns {
            " (in the user's mount namespace)"
        } else {
            ""
        };
        format!(" [{}{unlinked}{ns}]", self.exe)
    }
}

/// Teleport's `audit_session_id` (BPF metadata): the process's audit
/// session id, which pam_loginuid sets at login and the process cannot
/// change; 4294967295 when never set, 0 for a packet (no process) or a
/// kernel without audit.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct AuditSession {
    pub audit_session_id: u32,
}

impl AuditSession {
    pub fn of(h: &RecordHeader) -> AuditSession {
        AuditSession {
            audit_session_id: h.audit_sid,
        }
    }
}

// ---- session.command ---------------------------------------------------

/// `session.command` (T4000I): one exec, successful or not.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CommandBody {
    /// The executed file as the caller named it, absolute: a relative name
    /// is joined, in the kernel, to the process's working directory.
    pub path: String,
    /// What runs now, by its real path (`exe`): `path` through symlinks
    /// and /dev/fd/N, a memfd flagged as such; for a script, the
    /// interpreter. Absent for a failed exec.
    #[serde(flatten)]
    pub exe: Exe,
    pub program: String,
    /// The arguments after argv[0], as Teleport's `argv` (the program is
    /// `path`), up to `argv_limit` bytes in all with argv[0].
    pub argv: Vec<String>,
    /// argv[0] as the caller set it (it may name anything); absent when the
    /// argument vector was empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv0: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub argv_truncated: bool,
    /// Total size in bytes of the arguments in the process, when truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv_length: Option<u32>,
    pub pid: u32,
    #[serde(flatten)]
    pub audit: AuditSession,
    /// The parent process (its `real_parent` at the exec).
    pub ppid: u32,
    /// The Unix uid (Teleport's `uid` is the event's id).
    pub unix_uid: u32,
    /// 0, or the negative errno of a failed exec.
    pub return_code: i32,
    pub cgroup_id: u64,
}

impl CommandBody {
    pub fn from_kernel(h: &CommandEvent, path: &[u8], exe: &[u8], argv: &[u8]) -> CommandBody {
        let truncated = h.argv_total > h.argv_len;
        let mut argv = argv
            .strip_suffix(&[0])
            .unwrap_or(argv)
            .split(|&b| b == 0)
            .filter(|a| !(a.is_empty() && argv.is_empty()))
            .map(|a| String::from_utf8_lossy(a).into_owned());
        let argv0 = argv.next();
        let argv = argv.collect();
        CommandBody {
            path: clean_path(path),
            exe: Exe::new(clean_path(exe), h.header.exe_flags),
            program: comm_to_string(&h.header.comm),
            argv,
            argv0,
            argv_truncated: truncated,
            argv_length: truncated.then_some(h.argv_total),
            pid: h.header.pid,
            audit: AuditSession::of(&h.header),
            ppid: h.ppid,
            unix_uid: h.header.uid,
            return_code: h.return_code,
            cgroup_id: h.header.cgroup_id,
        }
    }
}

impl Kind for CommandBody {
    const INFO: KindInfo = KindInfo {
        event: "session.command",
        code: "T4000I",
        message_id: "74fc7442d41a4b4fbf47b8b416832e84",
        record: Some((EVENT_COMMAND, "command")),
    };

    fn summary(&self, who: &str, _sid: &str) -> String {
        let mut args: String = self.argv.iter().fold(String::new(), |mut acc, a| {
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
        if self.return_code == 0 {
            // The same file by another name only through merged /usr
            // (/bin -> /usr/bin): not worth a word.
            let same = self.exe.exe == self.path
                || self.exe.exe.strip_prefix("/usr") == Some(self.path.as_str());
            let exe = if self.exe.exe.is_empty() || same {
                String::new()
            } else {
                self.exe.label()
            };
            format!("{who} ran {}{exe}{args}", self.path)
        } else {
            format!(
                "{who} failed to run {}{args} ({})",
                self.path,
                nix::errno::Errno::from_raw(-self.return_code)
            )
        }
    }
}

// ---- session.disk ------------------------------------------------------

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
    /// The new file descriptor, or the negative errno of a failed open;
    /// absent for an open submitted through io_uring (`io_uring`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_code: Option<i32>,
    /// An open submitted through io_uring (IORING_OP_OPENAT, _OPENAT2),
    /// recorded when it was submitted: `path` is the kernel's copy of the
    /// path given, joined to its directory as it was then; whether it
    /// succeeded is not recorded.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub io_uring: bool,
    /// A failed open's path as the caller's memory held it after the call
    /// (the kernel's own copy could not be read): another thread of the
    /// caller may have changed it, so it may not be the path the kernel
    /// tried. Absent (false) when the path is the kernel's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_from_caller: bool,
    /// `path` is one of a mount namespace the user made (`unshare -Urm`),
    /// the opener's or the file's (reached through `/proc/PID/root`), where
    /// any file they can read may be bound over any path: it says where the
    /// file appeared there, not what it is.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_user_mount_ns: bool,
    pub pid: u32,
    #[serde(flatten)]
    pub audit: AuditSession,
    pub unix_uid: u32,
    pub program: String,
    /// The program that opened it (named by the recorder, see `Exe`).
    #[serde(flatten)]
    pub exe: Exe,
    pub cgroup_id: u64,
}

impl DiskBody {
    pub fn from_kernel(h: &DiskEvent, path: &[u8]) -> DiskBody {
        DiskBody {
            path: clean_path(path),
            flags: h.flags,
            return_code: (h.path_flags & DISK_IO_URING == 0).then_some(h.return_code),
            io_uring: h.path_flags & DISK_IO_URING != 0,
            path_from_caller: h.path_flags & DISK_PATH_FROM_CALLER != 0,
            path_user_mount_ns: h.path_flags & DISK_PATH_USER_MOUNT_NS != 0,
            pid: h.header.pid,
            audit: AuditSession::of(&h.header),
            unix_uid: h.header.uid,
            program: comm_to_string(&h.header.comm),
            exe: Exe::default(),
            cgroup_id: h.header.cgroup_id,
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

impl Kind for DiskBody {
    const INFO: KindInfo = KindInfo {
        event: "session.disk",
        code: "T4001I",
        message_id: "55a41e0c8721449d97b7e323e9b03f19",
        record: Some((EVENT_DISK, "disk")),
    };

    fn summary(&self, who: &str, _sid: &str) -> String {
        let ns = if self.path_user_mount_ns {
            " [a path of the user's own mount namespace]"
        } else {
            ""
        };
        match self.return_code {
            None => format!(
                "{who} asked io_uring to open {} ({}) [result not recorded]",
                self.path,
                self.mode()
            ),
            Some(rc) if rc >= 0 => format!("{who} opened {} ({}){ns}", self.path, self.mode()),
            Some(rc) => format!(
                "{who} failed to open {} ({}): {}{}{ns}",
                self.path,
                self.mode(),
                failure(rc),
                if self.path_from_caller {
                    " [path as the caller's memory held it after the call]"
                } else {
                    ""
                }
            ),
        }
    }
}

/// A failed syscall's negative `rc` for people: the errno's name, or what
/// the kernel's own restart codes mean (the exit sees them before the
/// kernel restarts the call or turns them into EINTR, so the same open may
/// be recorded again with its final result).
fn failure(rc: i32) -> String {
    let restart = match -rc {
        512 => "ERESTARTSYS",
        513 => "ERESTARTNOINTR",
        514 => "ERESTARTNOHAND",
        516 => "ERESTART_RESTARTBLOCK",
        _ => return nix::errno::Errno::from_raw(-rc).to_string(),
    };
    format!("interrupted by a signal ({restart}: restarted, or EINTR)")
}

// ---- session.network ---------------------------------------------------

/// `session.network` (T4002I): a connect or send, denied or observed, or
/// a packet the packet-level check dropped.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NetworkBody {
    /// 0 for packets: they are sent and received outside the owner's
    /// process (softirq, timers, kernel workers).
    pub pid: u32,
    #[serde(flatten)]
    pub audit: AuditSession,
    /// The Unix uid of the caller (of the socket's owner for packets).
    pub unix_uid: u32,
    pub cgroup_id: u64,
    pub program: String,
    /// The program that made the call (named by the recorder, see `Exe`).
    #[serde(flatten)]
    pub exe: Exe,
    pub src_addr: String,
    /// 0 (omitted) when the socket had no local port yet.
    #[serde(skip_serializing_if = "is_zero")]
    pub src_port: u16,
    pub dst_addr: String,
    pub dst_port: u16,
    /// 4 or 6.
    pub version: u8,
    /// 0 connect, 1 send (Teleport's); 2 a packet out, 3 a packet in.
    pub operation: u8,
    /// 0 observed, 1 denied.
    pub action: u8,
    /// IP protocol number (6 TCP, 17 UDP, 136 UDP-Lite, 1 ICMP, ...).
    pub protocol: u8,
    /// Packets: why dropped, "peer_denied" or "source_routed".
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'static str,
    /// Denials: how many more of the same kind (session, operation,
    /// protocol, peer, port, reason) since the previous event for it, which
    /// had no event of their own; this event is the latest of them. The
    /// first of a kind is an event at once, repeats are written once a
    /// second.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub repeats: u32,
    /// Denials: the policy that decided ("network_restrictions" NAME for
    /// the host default) and its rule, or why none ("no allow rule covers
    /// it"), as the policy in force when the event is written decides.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
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
            pid: k.header.pid,
            audit: AuditSession::of(&k.header),
            unix_uid: k.header.uid,
            cgroup_id: k.header.cgroup_id,
            program: comm_to_string(&k.header.comm),
            exe: Exe::default(),
            src_addr: addr(&k.src_addr).to_string(),
            src_port: k.src_port,
            dst_addr: addr(&k.dst_addr).to_string(),
            dst_port: k.dst_port,
            version: k.version,
            operation: k.operation,
            action: k.action,
            protocol: k.protocol,
            reason: match k.reason {
                PACKET_PEER_DENIED => "peer_denied",
                PACKET_SOURCE_ROUTED => "source_routed",
                _ => "",
            },
            repeats: k.repeats,
            policy: None,
            rule: None,
        }
    }

    /// Names the policy and rule that deny this call or packet.
    pub fn name_decision(&mut self, policy: &crate::policy::Policy) {
        use restrictd_common::proto_class;
        // The peer: the source of a packet in, else the destination.
        let (addr, port) = if self.operation == restrictd_common::OPERATION_PACKET_IN {
            (&self.src_addr, self.src_port)
        } else {
            (&self.dst_addr, self.dst_port)
        };
        let Ok(addr) = addr.parse::<IpAddr>() else {
            return;
        };
        let proto = proto_class(u32::from(self.protocol));
        let port = if proto & (restrictd_common::PROTO_TCP | restrictd_common::PROTO_UDP) != 0 {
            port
        } else {
            0
        };
        let d = policy.decide(addr, proto, port);
        self.policy = Some(policy.name.clone());
        self.rule = Some(if self.reason == "source_routed" {
            "source routed (dropped whatever the policy)".into()
        } else {
            policy.explain_decision(&d)
        });
    }

    fn protocol_name(&self) -> String {
        match self.protocol {
            1 | 58 => "icmp".into(),
            6 => "tcp".into(),
            17 => "udp".into(),
            132 => "sctp".into(),
            136 => "udplite".into(),
            255 => "raw".into(),
            p => format!("protocol {p}"),
        }
    }
}

impl Kind for NetworkBody {
    const INFO: KindInfo = KindInfo {
        event: "session.network",
        code: "T4002I",
        message_id: "474795d78298490aad64291e119d42c4",
        record: Some((EVENT_NETWORK, "network")),
    };

    fn summary(&self, who: &str, _sid: &str) -> String {
        let verdict = if self.denied() { "denied" } else { "allowed" };
        let at = |addr: &str, port: u16| match (self.version, port) {
            (_, 0) => addr.to_string(),
            (6, p) => format!("[{addr}]:{p}"),
            (_, p) => format!("{addr}:{p}"),
        };
        let dst = at(&self.dst_addr, self.dst_port);
        let (op, peer) = match self.operation {
            OPERATION_CONNECT => ("connect to", dst),
            OPERATION_SEND => ("send to", dst),
            OPERATION_PACKET_OUT => ("packet to", dst),
            OPERATION_PACKET_IN => ("packet from", at(&self.src_addr, self.src_port)),
            _ => ("network operation to", dst),
        };
        if self.operation >= OPERATION_PACKET_OUT {
            let why = if self.reason == "source_routed" {
                ", source-routed"
            } else {
                ""
            };
            let repeats = match self.repeats {
                0 => String::new(),
                n => format!(", and {n} more since the last report"),
            };
            return format!(
                "{who}: {verdict} {} {op} {peer}{why}{repeats}",
                self.protocol_name()
            );
        }
        let repeats = match self.repeats {
            0 => String::new(),
            n => format!(", and {n} more since the last report"),
        };
        format!(
            "{who}: {verdict} {op} {peer} by {}{} (pid {}){repeats}",
            self.program,
            self.exe.after(&self.program),
            self.pid
        )
    }

    fn denied(&self) -> bool {
        self.action == ACTION_DENIED
    }
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

// ---- session.start / session.end --------------------------------------

/// Teleport's connection metadata of `session.start` and `session.end`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ConnectionFields {
    /// The client, "IP:PORT" ("[IPv6]:PORT") from sshd's `SSH_CONNECTION`;
    /// without it, PAM_RHOST.
    #[serde(rename = "addr.remote")]
    pub remote_addr: String,
    /// The server end of the SSH connection, "IP:PORT".
    #[serde(rename = "addr.local", skip_serializing_if = "String::is_empty")]
    pub local_addr: String,
    /// "ssh" for an SSH login.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub proto: String,
    /// PAM_RHOST as PAM gave it (a host name with sshd's `UseDNS yes`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub remote_host: String,
}

/// `session.start` (T2000I).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionStartBody {
    #[serde(flatten)]
    pub connection: ConnectionFields,
    pub service: String,
    pub tty: String,
    pub unix_uid: u32,
    /// The process placed in the session (sshd's `[priv]` process).
    pub pid: u32,
    pub cgroup_id: u64,
    pub enhanced_recording: bool,
    /// The policy that binds the session: a per-login policy's name, else
    /// the host default's; omitted when no policy restricts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl Kind for SessionStartBody {
    const INFO: KindInfo = KindInfo {
        event: "session.start",
        code: "T2000I",
        message_id: "229cb4f00de640b8847cab4a624b1eee",
        record: None,
    };

    fn summary(&self, who: &str, sid: &str) -> String {
        let from = &self.connection.remote_addr;
        if from.is_empty() {
            format!("{who}: session {sid} started ({})", self.service)
        } else {
            format!(
                "{who}: session {sid} started from {from} ({})",
                self.service
            )
        }
    }
}

/// `session.end` (T2004I), written after the session's last events.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionEndBody {
    #[serde(flatten)]
    pub connection: ConnectionFields,
    pub cgroup_id: u64,
    pub enhanced_recording: bool,
    pub interactive: bool,
    pub participants: Vec<String>,
    pub session_start: String,
    pub session_stop: String,
    /// Everything the session lost, in total (each part was also reported
    /// in a `session.lost` while the session ran).
    #[serde(flatten)]
    pub lost: Losses,
    /// Why restrictd ended the session (`idle_timeout`, `max_duration`,
    /// `lock`, `terminated`); omitted when it ended by itself (a logout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Kind for SessionEndBody {
    const INFO: KindInfo = KindInfo {
        event: "session.end",
        code: "T2004I",
        message_id: "e7598b7e69a44355ae16c9714d748802",
        record: None,
    };

    fn summary(&self, who: &str, sid: &str) -> String {
        let by = match &self.reason {
            Some(r) => format!(" by restrictd ({r})"),
            None => String::new(),
        };
        match self.lost.describe() {
            Some(lost) => format!("{who}: session {sid} ended{by}; events not recorded: {lost}"),
            None => format!("{who}: session {sid} ended{by}"),
        }
    }
}

// ---- session.rejected, lock.created, lock.deleted -----------------------

/// `session.rejected` (Teleport's T1006W): a login refused by a session
/// control or a lock, before any session existed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SessionRejectedBody {
    #[serde(flatten)]
    pub connection: ConnectionFields,
    pub service: String,
    /// What refused it: "max_sessions" or "lock".
    pub reason: String,
    /// The limit that was reached (`max_sessions`), as Teleport's `max`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    /// What the user was told.
    pub message: String,
    /// The policy whose limit it was; omitted for the host default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

impl Kind for SessionRejectedBody {
    const INFO: KindInfo = KindInfo {
        event: "session.rejected",
        code: "T1006W",
        message_id: "a4848d110806400491284b9e213388f6",
        record: None,
    };

    fn summary(&self, who: &str, _sid: &str) -> String {
        format!("{who}: login refused ({}): {}", self.reason, self.message)
    }

    fn denied(&self) -> bool {
        true
    }
}

/// Teleport's lock target: who a lock applies to (`group` is restrictd's).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LockTarget {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// `lock.created` (TLK00I) and `lock.deleted` (TLK01I).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LockBody {
    /// "user/alice", "group/contractors".
    pub name: String,
    pub target: LockTarget,
    /// The reason given, shown to refused logins.
    pub message: String,
    /// RFC 3339; omitted for a lock without a TTL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Who set or lifted it ("root" over D-Bus, with the caller's pid).
    pub updated_by: String,
    /// Sessions ended and other processes killed when it was set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions_ended: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes_killed: Option<u32>,
    /// A lock that was lifted because its TTL ran out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct LockCreatedBody(pub LockBody);

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct LockDeletedBody(pub LockBody);

impl Kind for LockCreatedBody {
    const INFO: KindInfo = KindInfo {
        event: "lock.created",
        code: "TLK00I",
        message_id: "f9d40d727e794bc8ae78244c85d08cc8",
        record: None,
    };

    fn summary(&self, _who: &str, _sid: &str) -> String {
        let l = &self.0;
        format!(
            "lock {} set by {}{}: {} session(s) ended, {} other process(es) killed; reason: {}",
            l.name,
            l.updated_by,
            l.expires
                .as_ref()
                .map(|e| format!(" until {e}"))
                .unwrap_or_default(),
            l.sessions_ended.unwrap_or(0),
            l.processes_killed.unwrap_or(0),
            if l.message.is_empty() {
                "(none)"
            } else {
                &l.message
            }
        )
    }

    fn denied(&self) -> bool {
        true
    }
}

impl Kind for LockDeletedBody {
    const INFO: KindInfo = KindInfo {
        event: "lock.deleted",
        code: "TLK01I",
        message_id: "2d9481f7a08943a68b7ef092c726783e",
        record: None,
    };

    fn summary(&self, _who: &str, _sid: &str) -> String {
        let l = &self.0;
        if l.expired {
            format!("lock {} expired", l.name)
        } else {
            format!("lock {} lifted by {}", l.name, l.updated_by)
        }
    }
}

// ---- session.lost -----------------------------------------------------

/// Events of one session that were not written, by cause and kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Losses {
    /// Records the kernel could not write: their ring buffer was full.
    pub lost_network: u64,
    pub lost_command: u64,
    pub lost_disk: u64,
    /// Disk events over the session's `disk_rate_limit`, or over its share
    /// of a ring buffer more than half full.
    pub disk_events_dropped: u64,
    /// Command and network events over the session's share of a ring
    /// buffer more than half full (a flood from that session).
    #[serde(default)]
    pub command_events_dropped: u64,
    #[serde(default)]
    pub network_events_dropped: u64,
    /// Events given an `ei` that no system log took (they went to stderr).
    #[serde(default)]
    pub unwritten: u64,
    /// Bytes of the terminal not recorded (over `terminal.rate_limit` or
    /// `max_session_size`, or its buffer was full); the recording marks
    /// where. Not events: no `ei` is skipped for them.
    #[serde(default)]
    pub terminal_bytes_dropped: u64,
}

impl Losses {
    /// The kernel's counts for one record key.
    pub fn from_kernel(d: &Dropped) -> Losses {
        Losses {
            lost_network: d.full[EVENT_NETWORK as usize],
            lost_command: d.full[EVENT_COMMAND as usize],
            lost_disk: d.full[EVENT_DISK as usize],
            disk_events_dropped: d.limited[EVENT_DISK as usize],
            command_events_dropped: d.limited[EVENT_COMMAND as usize],
            network_events_dropped: d.limited[EVENT_NETWORK as usize],
            unwritten: 0,
            terminal_bytes_dropped: d.tty_bytes,
        }
    }

    /// What was counted since `before` (counters only grow).
    pub fn since(&self, before: &Losses) -> Losses {
        Losses {
            lost_network: self.lost_network.saturating_sub(before.lost_network),
            lost_command: self.lost_command.saturating_sub(before.lost_command),
            lost_disk: self.lost_disk.saturating_sub(before.lost_disk),
            disk_events_dropped: self
                .disk_events_dropped
                .saturating_sub(before.disk_events_dropped),
            command_events_dropped: self
                .command_events_dropped
                .saturating_sub(before.command_events_dropped),
            network_events_dropped: self
                .network_events_dropped
                .saturating_sub(before.network_events_dropped),
            unwritten: self.unwritten.saturating_sub(before.unwritten),
            terminal_bytes_dropped: self
                .terminal_bytes_dropped
                .saturating_sub(before.terminal_bytes_dropped),
        }
    }

    pub fn add(&mut self, o: &Losses) {
        self.lost_network += o.lost_network;
        self.lost_command += o.lost_command;
        self.lost_disk += o.lost_disk;
        self.disk_events_dropped += o.disk_events_dropped;
        self.command_events_dropped += o.command_events_dropped;
        self.network_events_dropped += o.network_events_dropped;
        self.unwritten += o.unwritten;
        self.terminal_bytes_dropped += o.terminal_bytes_dropped;
    }

    /// Events that never got an `ei` (all but `unwritten`).
    pub fn unnumbered(&self) -> u64 {
        self.lost_network
            + self.lost_command
            + self.lost_disk
            + self.disk_events_dropped
            + self.command_events_dropped
            + self.network_events_dropped
    }

    pub fn total(&self) -> u64 {
        self.unnumbered() + self.unwritten + self.terminal_bytes_dropped
    }

    /// "3 command (buffer full), 900 disk (over disk_rate_limit)", or None.
    pub fn describe(&self) -> Option<String> {
        let parts: Vec<String> = [
            (self.lost_command, "command (buffer full)"),
            (self.lost_network, "network (buffer full)"),
            (self.lost_disk, "disk (buffer full)"),
            (
                self.disk_events_dropped,
                "disk (over disk_rate_limit or its share)",
            ),
            (self.command_events_dropped, "command (over its share)"),
            (self.network_events_dropped, "network (over its share)"),
            (self.unwritten, "not taken by the system log"),
            (
                self.terminal_bytes_dropped,
                "terminal bytes (over terminal.rate_limit or max_session_size, or buffer full)",
            ),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// `session.lost` (R1000W): events of the session that were not recorded
/// since its previous report, written within about a second of the loss.
/// The events the kernel counted are given the session's next `ei` numbers
/// (`lost_ei_first`..=`lost_ei_last`), so a gap in `ei` always means
/// missing events and this event says which.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LostBody {
    /// The record key the kernel counted under (the session's cgroup, the
    /// user manager's, or an identity's `1<<63 | uid`).
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub lost: Losses,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_ei_first: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost_ei_last: Option<u64>,
    /// The losses happened between this time and the event's `time`.
    pub since: String,
}

impl Kind for LostBody {
    const INFO: KindInfo = KindInfo {
        event: "session.lost",
        code: "R1000W",
        message_id: "7bbc5664d4824989b16b490836ed06e2",
        record: None,
    };

    fn summary(&self, who: &str, sid: &str) -> String {
        let what = self.lost.describe().unwrap_or_default();
        let place = if sid.is_empty() {
            String::new()
        } else {
            format!(" session {sid}")
        };
        match (self.lost_ei_first, self.lost_ei_last) {
            (Some(a), Some(b)) => format!("{who}:{place} events not recorded: {what} (ei {a}-{b})"),
            _ => format!("{who}:{place} events not recorded: {what}"),
        }
    }

    fn denied(&self) -> bool {
        true
    }
}

/// A path from the kernel: the kernel prefixes a relative one with the
/// absolute directory, giving "/home/a/./x" for "./x". "." components go;
/// ".." stays (it may cross a symlink). Paths the kernel left relative
/// (its walk too long, see DIR_DEPTH_MAX) are kept as they are.
fn clean_path(raw: &[u8]) -> String {
    let path = String::from_utf8_lossy(raw).into_owned();
    if !path.starts_with('/') || !needs_cleaning(&path) {
        return path;
    }
    let p: std::path::PathBuf = std::path::Path::new(&path).components().collect();
    p.display().to_string()
}

/// Whether rebuilding `path` (absolute) from its components would change
/// it: most paths are clean, and the rebuild costs two more allocations
/// on every event.
fn needs_cleaning(path: &str) -> bool {
    path.contains("//")
        || path.contains("/./")
        || path.ends_with("/.")
        || (path.len() > 1 && path.ends_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths_are_kept_and_others_rebuilt_as_before() {
        let rebuilt = |p: &str| -> String {
            let p: std::path::PathBuf = std::path::Path::new(p).components().collect();
            p.display().to_string()
        };
        for p in [
            "/", "/a", "/a/b", "/a/./b", "/a//b", "//a", "/a/", "/a/.", "/./a", "/a/../b", "/a/..",
            "/.a/b.", "/a/.b/", "/a/b/./", "/a.//b", "/...", "/a/...",
        ] {
            assert_eq!(clean_path(p.as_bytes()), rebuilt(p), "{p:?}");
        }
        assert_eq!(clean_path(b"/home/a/./x"), "/home/a/x");
        assert_eq!(clean_path(b"rel/./x"), "rel/./x");
    }

    /// An open interrupted by a signal is seen at its exit with the
    /// kernel's restart code (a FIFO open, `vm-tests/kname-switch.c`), which
    /// no errno name covers.
    #[test]
    fn a_failed_open_says_why_in_words() {
        assert_eq!(failure(-2), "ENOENT: No such file or directory");
        assert_eq!(
            failure(-512),
            "interrupted by a signal (ERESTARTSYS: restarted, or EINTR)"
        );
        assert_eq!(
            failure(-516),
            "interrupted by a signal (ERESTART_RESTARTBLOCK: restarted, or EINTR)"
        );
        assert_eq!(failure(-600), "UnknownErrno: Unknown errno");
    }
}
