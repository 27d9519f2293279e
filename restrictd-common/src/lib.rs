//! restrictd's kernel ABI: everything the BPF programs (`restrictd-ebpf`) and
//! userspace (`restrictd`) exchange through maps, ring buffers and the
//! load-time global. Everything here is `#[repr(C)]` plain data, no_std; the
//! `user` feature adds `aya::Pod` and the record decoder (`record`).
//!
//! Changing a type here changes the layout of pinned maps: see ARCHITECTURE.md.
#![no_std]

#[cfg(feature = "user")]
extern crate std;

pub mod key;
#[cfg(feature = "user")]
pub mod record;

/// Upper bound on entries in each LPM trie. Tries are `BPF_F_NO_PREALLOC`, so
/// this costs nothing until used. It covers 100,000 CIDRs in each of the two
/// lists (one trie holds both), IPv4 rules doubled into the IPv6 trie as
/// v4-mapped entries, and two policies alive at once during an atomic swap.
pub const MAX_RULES: u32 = 1 << 20;
/// Upper bound on concurrently restricted cgroups.
pub const MAX_SESSIONS: u32 = 65_536;
/// Upper bound on session leaders followed across cgroup moves (`LEADERS`).
pub const MAX_LEADERS: u32 = 16_384;
/// Upper bound on restricted identities (uids) in `IDENTITIES`.
pub const MAX_IDENTITIES: u32 = 65_536;
/// `RecordHeader.cgroup_id` of a record from a process outside any session
/// that is restricted by its identity: this bit, and the uid in the low 32
/// bits (cgroup ids are inode numbers, far below it).
pub const IDENTITY_KEY: u64 = 1 << 63;

/// `SessionEntry.flags`: enforce the network policy in this cgroup.
pub const SESSION_RESTRICT: u32 = 1 << 0;
/// `SessionEntry.flags`: record every exec (`session.command`).
pub const SESSION_RECORD_COMMANDS: u32 = 1 << 1;
/// `SessionEntry.flags`: record allowed connects and sends (`action` 0).
pub const SESSION_RECORD_NETWORK: u32 = 1 << 2;
/// `SessionEntry.flags`: record file opens (`session.disk`).
pub const SESSION_RECORD_DISK: u32 = 1 << 3;
/// `SessionEntry.flags`: record what the session's terminal shows
/// (`terminal_recording: output`).
pub const SESSION_RECORD_TTY: u32 = 1 << 4;
/// `SessionEntry.flags`: record what the user types too
/// (`terminal_recording: input_output`).
pub const SESSION_RECORD_TTY_INPUT: u32 = 1 << 5;

/// `PROGRAM_GROUPS` flag of a group that is always loaded and attached.
pub const GROUP_ALWAYS: u32 = u32::MAX;

/// Tracepoint programs are grouped by the prefix of their name; a group is
/// loaded and attached when the configuration turns its recording on, or
/// always (`GROUP_ALWAYS`: `follow_` keeps a session's restriction on its
/// leader when another PAM module moves it). (cgroup programs are always
/// attached: they enforce.)
pub const PROGRAM_GROUPS: [(&str, u32); 7] = [
    ("cmd_", SESSION_RECORD_COMMANDS),
    ("disk_", SESSION_RECORD_DISK),
    ("net_", SESSION_RECORD_NETWORK),
    // Before "tty_": groups are found by prefix, first match.
    ("ttyin_", SESSION_RECORD_TTY_INPUT),
    ("tty_", SESSION_RECORD_TTY),
    // The program on every syscall's exit: attached where opens are
    // recorded; what else it does is `LoadConfig.exit_work`.
    ("exit_", SESSION_RECORD_DISK),
    ("follow_", GROUP_ALWAYS),
];

/// `SessionEntry.policy_id` value meaning "use the host-wide active policy".
pub const POLICY_FOLLOW_ACTIVE: u32 = 0;
/// `ACTIVE[0]` value meaning "no policy object: allow everything".
pub const POLICY_NONE: u32 = 0;

/// Value of the `SESSIONS` hash, keyed by cgroup id (the cgroup directory's
/// inode number, as `bpf_get_current_cgroup_id()` returns it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionEntry {
    /// Which policy applies; `POLICY_FOLLOW_ACTIVE` for the host-wide one.
    /// A per-user policy only needs a distinct id here and its rules in the tries.
    pub policy_id: u32,
    pub flags: u32,
    /// Which disk filter judges its opens after the host's: 0 none (the
    /// host's alone), else the id of the policy whose `record.disk_include`
    /// / `disk_exclude` entries are in `PATH_RULES` under it.
    pub disk_filter: u32,
}

/// `SESSION_SLOTS` entry: a direct-mapped copy of part of `SESSIONS`, read
/// without a hash lookup (on the reference machine a hash lookup costs
/// 60-70 ns per connect, an array slot nothing measurable). The cgroup with id `c` can only
/// be in slot `slot_index(c)`; a cgroup whose slot another holds is found
/// in `SESSIONS` only. `seq` is a sequence lock: the daemon (the only
/// writer, through a shared mapping) makes it odd, writes `cgroup_id` and
/// `entry`, and makes it even again; a reader that sees it odd or changed
/// falls back to `SESSIONS`. `SESSIONS` stays the truth: a slot is filled
/// after its session is in `SESSIONS` and emptied before it leaves.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionSlot {
    pub seq: u64,
    /// 0: empty (no cgroup has id 0).
    pub cgroup_id: u64,
    pub entry: SessionEntry,
    pub _pad: u32,
}

/// Number of `SESSION_SLOTS` (a power of two).
pub const SESSION_SLOTS: u32 = 65_536;

/// The one slot cgroup `cgroup_id` may have. Cgroup ids are allocated in
/// sequence, so live sessions' low bits rarely collide.
#[inline(always)]
pub fn slot_index(cgroup_id: u64) -> u32 {
    (cgroup_id & (SESSION_SLOTS as u64 - 1)) as u32
}

/// Bits in each of `Presence`'s bitmaps (a power of two).
pub const PRESENCE_BITS: u32 = 4096;
pub const PRESENCE_WORDS: usize = PRESENCE_BITS as usize / 64;

/// `PRESENCE[0]`: which keys may be in `SESSIONS` (by cgroup id) and in
/// `IDENTITIES` (by uid), one bit per key's low bits, so that the programs
/// of every process and socket in no session (most of the host) answer
/// "none" from two hot cache lines instead of missing in two hash tables
/// (about 100 ns a packet on the reference machine). The daemon alone
/// writes it, through a shared mapping: a key's bit is set before the key
/// is inserted and cleared only by `SessionMap::sync_presence`, from a scan
/// of both maps. The kernel's own insertions (`follow.rs`) raise
/// `KERNEL_GENERATION` instead; while it differs from `kernel_generation`
/// (the value the last scan covered), the programs look in the maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Presence {
    pub kernel_generation: u64,
    pub cgroups: [u64; PRESENCE_WORDS],
    pub uids: [u64; PRESENCE_WORDS],
}

/// The word and bit of `key` in a `Presence` bitmap.
#[inline(always)]
pub fn presence_bit(key: u64) -> (usize, u64) {
    let i = (key & (PRESENCE_BITS as u64 - 1)) as usize;
    (i / 64, 1 << (i % 64))
}

/// Protocol classes of a rule (`PortRange.protocols` bits) and of a call
/// or packet being judged. MPTCP counts as TCP, UDP-Lite as UDP (same port
/// fields); ICMP is ICMP and ICMPv6; anything else is `PROTO_OTHER`, judged
/// with port 0.
pub const PROTO_TCP: u32 = 1 << 0;
pub const PROTO_UDP: u32 = 1 << 1;
pub const PROTO_ICMP: u32 = 1 << 2;
pub const PROTO_OTHER: u32 = 1 << 3;
pub const PROTO_ANY: u32 = PROTO_TCP | PROTO_UDP | PROTO_ICMP | PROTO_OTHER;

/// The protocol class of an IP protocol number (also the sockets'
/// `protocol`, where MPTCP is 262).
#[inline(always)]
pub fn proto_class(ipproto: u32) -> u32 {
    match ipproto {
        6 | 262 => PROTO_TCP,
        17 | 136 => PROTO_UDP,
        1 | 58 => PROTO_ICMP,
        _ => PROTO_OTHER,
    }
}

/// One port range of a rule and the protocols it applies to; `protocols ==
/// 0` is an unused slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
    pub protocols: u32,
}

/// Port ranges one trie entry can hold.
pub const PORT_RANGES: usize = 8;

/// LPM trie value: the port ranges of every rule of the list whose CIDR
/// covers this entry's prefix (its own and its ancestors'), so the longest
/// match alone decides. A CIDR rule without ports is one range 0-65535 for
/// `PROTO_ANY`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleValue {
    pub ranges: [PortRange; PORT_RANGES],
}

impl RuleValue {
    /// Whether a call or packet of protocol class `proto` to `port` is
    /// covered.
    #[inline(always)]
    pub fn covers(&self, proto: u32, port: u16) -> bool {
        let mut i = 0;
        while i < PORT_RANGES {
            let r = &self.ranges[i];
            if r.protocols & proto != 0 && r.lo <= port && port <= r.hi {
                return true;
            }
            i += 1;
        }
        false
    }
}

/// Value of the rule tries (`RULES_V4`, `RULES_V6`): one entry per prefix
/// of either list, holding what each list says about it. `allow` is the
/// `RuleValue` of the longest allow prefix containing this one (empty if
/// none), `deny` likewise, so one longest-prefix lookup answers for both
/// lists: any longer prefix of either list that contains the address
/// would itself be an entry, and the longer match.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleEntry {
    pub allow: RuleValue,
    pub deny: RuleValue,
}

impl RuleEntry {
    /// Deny overrides allow; what no allow covers is denied.
    #[inline(always)]
    pub fn allows(&self, proto: u32, port: u16) -> bool {
        self.allow.covers(proto, port) && !self.deny.covers(proto, port)
    }
}

/// Values the daemon may change while programs run (`RUNTIME[0]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Runtime {
    /// cgroup level of the user managers (`user@UID.service`) that the daemon
    /// registers for users with restricted sessions; 0: none registered.
    pub manager_level: u32,
    pub _pad: u32,
    /// Raised by the daemon after every change that can give a socket a
    /// session it did not have (a session, identity or manager level
    /// added): the packet programs cache "this socket has no session" per
    /// socket, valid only for the generation it was found in. The kernel's
    /// own registrations (`follow.rs`) raise `KERNEL_GENERATION` instead, a
    /// map the daemon never writes; the generation is the sum of both.
    pub generation: u64,
}

/// Values fixed when the object is loaded: the read-only global `LOAD_CONFIG`,
/// which the loader overrides (the verifier then knows them as constants).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadConfig {
    /// Tracepoint field offsets, from tracefs format files (they differ
    /// between kernels).
    pub exec_filename_offset: u32,
    /// Bytes of argv a command record carries at most (≤ `ARGV_CAP`).
    pub argv_limit: u32,
    /// Most disk events per session per second; 0: no limit.
    pub disk_rate: u32,
    /// `cgroup/cgroup_attach_task` field offsets (tracefs).
    pub attach_dst_root_offset: u32,
    pub attach_dst_id_offset: u32,
    pub attach_pid_offset: u32,
    /// Kernel struct layout, from the kernel's BTF.
    pub kernel: KernelOffsets,
    /// Terminal bytes per session per second (`terminal.rate_limit`); 0:
    /// no limit.
    pub tty_rate: u32,
    /// 1: opens of character devices are not recorded.
    pub disk_exclude_devices: u32,
    /// What `exit_syscall` does (`EXIT_*`); 0: it is not attached.
    pub exit_work: u32,
    /// Superblock magic numbers of the filesystems whose opens are not
    /// recorded (0: unused slot).
    pub disk_exclude_fs: [u64; FS_EXCLUDE_MAX],
}

// `LoadConfig` is copied byte for byte into the object and hashed into the
// state version: padding would be bytes no field defines (in a debug build,
// stack garbage, so that each start made a new version). Every field
// before the array is a u32 (KernelOffsets too), so the one place a hole
// can open is right before the array; the array's end is the struct's.
// When a u32 added or removed above opens that hole, this fails to
// compile: add (or drop) a `_pad: u32` after `exit_work` and name the last
// u32 here.
const _: () = assert!(
    core::mem::offset_of!(LoadConfig, disk_exclude_fs)
        == core::mem::offset_of!(LoadConfig, exit_work) + 4
        && core::mem::size_of::<LoadConfig>()
            == core::mem::offset_of!(LoadConfig, disk_exclude_fs) + 8 * FS_EXCLUDE_MAX,
    "LoadConfig has padding before disk_exclude_fs: see the comment above"
);

/// `LoadConfig.exit_work`: record opens here (64-bit, and through the
/// ia32 syscall entry, which the per-syscall tracepoints never see), not
/// on the `sys_exit_open*` tracepoints.
pub const EXIT_OPENS: u32 = 1;
/// `LoadConfig.exit_work`: record a relay's reads of a session's terminal
/// here, not on `sys_exit_read` (terminal output).
pub const EXIT_TTY_OUTPUT: u32 = 2;
/// `LoadConfig.exit_work`: the same for a relay's writes (what the user
/// types).
pub const EXIT_TTY_INPUT: u32 = 4;
/// `LoadConfig.exit_work`: record failed execs here, not on the
/// `sys_exit_execve*` tracepoints.
pub const EXIT_EXECS: u32 = 8;

/// Most filesystems `disk_exclude_filesystems` can name.
pub const FS_EXCLUDE_MAX: usize = 32;

/// Byte offsets of the kernel struct members the programs follow to name
/// files and directories. They differ between kernels, so the loader reads
/// them from the kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_fs: u32,
    pub task_files: u32,
    pub fs_pwd: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_f_path: u32,
    pub path_mnt: u32,
    pub path_dentry: u32,
    /// Offset of `struct vfsmount mnt` inside `struct mount`.
    pub mount_mnt: u32,
    pub mount_parent: u32,
    pub mount_mountpoint: u32,
    /// `mount.mnt_ns`: the mount namespace a file's mount belongs to, whose
    /// owner says whether its paths are the host's (`path_in_users_mount_ns`).
    pub mount_mnt_ns: u32,
    pub vfsmount_root: u32,
    pub dentry_parent: u32,
    pub dentry_name: u32,
    /// `struct qstr`'s `name` pointer.
    pub qstr_name: u32,
    /// `task_struct.loginuid` (the audit login uid); 0 when the kernel has
    /// no audit support, and the programs then match by uid only.
    pub task_loginuid: u32,
    /// What a file is: `file.f_inode`, `inode.i_mode`, `inode.i_sb`,
    /// `super_block.s_magic`.
    pub file_f_inode: u32,
    pub inode_i_mode: u32,
    pub inode_i_sb: u32,
    pub sb_s_magic: u32,
    /// Whose mount namespace a task is in: `task_struct.nsproxy`,
    /// `nsproxy.mnt_ns`, `mnt_namespace.user_ns`, `user_namespace.level`.
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    pub mnt_ns_user_ns: u32,
    pub user_ns_level: u32,
    /// The running program: `task_struct.mm`, `mm_struct.exe_file`,
    /// `inode.i_ino`, `inode.i_nlink`, `super_block.s_dev`.
    pub task_mm: u32,
    pub mm_exe_file: u32,
    pub inode_i_ino: u32,
    pub inode_i_nlink: u32,
    pub sb_s_dev: u32,
    /// A process's parent as Teleport reports it: `task_struct.real_parent`,
    /// `task_struct.tgid`.
    pub task_real_parent: u32,
    pub task_tgid: u32,
    /// `task_struct.sessionid` (the audit session id); 0 without audit.
    pub task_sessionid: u32,
    /// A terminal: `inode.i_rdev` (is the file the pty multiplexer?),
    /// `file.private_data` → `tty_file_private.tty` → `tty_struct.index`
    /// and `.winsize`.
    pub inode_i_rdev: u32,
    pub file_private_data: u32,
    pub tty_file_private_tty: u32,
    pub tty_index: u32,
    pub tty_winsize: u32,
    /// io_uring's opens: `io_kiocb.opcode`, `io_kiocb.cmd` (where the op's
    /// data is), `io_open.dfd`, `.filename`, `.how`. `io_open_filename` 0:
    /// no io_uring in this kernel's BTF.
    pub io_kiocb_opcode: u32,
    pub io_kiocb_cmd: u32,
    pub io_open_dfd: u32,
    pub io_open_filename: u32,
    pub io_open_how: u32,
    /// Who the current task is, loaded along BTF pointers instead of two
    /// helper calls on every program's session lookup:
    /// `task_struct.cgroups` → `css_set.dfl_cgrp` → `cgroup.kn` →
    /// `kernfs_node.id` (the cgroup v2 id), and `task_struct.cred` →
    /// `cred.uid`.
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    pub task_cred: u32,
    pub cred_uid: u32,
    /// `task_struct.thread_info` + `thread_info.status` (x86: whether the
    /// current syscall is an ia32 one); 0 where the kernel has none.
    pub task_ti_status: u32,
    /// `task_struct.se.nr_migrations`: the task's moves between CPUs, which
    /// tell an open's exit whether the kernel's copy of its path on this CPU
    /// can be an earlier open's (`disk_kname`).
    pub task_nr_migrations: u32,
    /// `task_struct.comm`: whether a task may be sshd, read in place on
    /// every syscall's exit (`exit_syscall`).
    pub task_comm: u32,
}

/// Event kinds: `RecordHeader.kind`, and the index of their `LOST` counter.
pub const EVENT_COMMAND: u32 = 1;
pub const EVENT_DISK: u32 = 2;
pub const EVENT_NETWORK: u32 = 3;
/// Terminal bytes (`TtyEvent`): not events of the journal, a recording.
pub const EVENT_TTY: u32 = 4;
/// Size of the per-CPU `LOST` array (kinds are indices; slot 0 is unused;
/// a power of two, which the programs mask indices with).
pub const LOST_SLOTS: u32 = 8;

/// Largest argv a command event carries (the config limit is at most this).
pub const ARGV_CAP: usize = 8192;
/// Room for the executed path (PATH_MAX).
pub const PATH_CAP: usize = 4096;
/// Most arguments read for a failed exec (walked one by one in the old image).
pub const FAILED_ARGS_MAX: u32 = 64;
/// The kernel's path walk takes at most 2 × this many steps (a directory
/// level or a mount crossing each); a longer walk falls back to the path
/// as the caller gave it.
pub const DIR_DEPTH_MAX: usize = 32;

/// Longest path prefix a disk filter rule can have: the LPM trie's key
/// limit (256 bytes) less the filter id in front.
pub const PATH_PREFIX_MAX: usize = 252;
/// `PATH_RULES` trie key data: the filter's id, big-endian (0: the host's
/// filter, else a policy's, see `SessionEntry::disk_filter`), then the
/// first bytes of a path.
pub type PathKeyData = [u8; 4 + PATH_PREFIX_MAX];
/// Entries `PATH_RULES` holds: the host's filter and policies' own, the
/// old and new ones together while a policy set is replaced.
pub const PATH_RULES_MAX: u32 = 16_384;
/// Files `ALWAYS_FILES` holds: what is under the always recorded paths
/// (the host's when the daemon starts, `~/.ssh` of a home at each login of
/// its user).
pub const ALWAYS_FILES_MAX: u32 = 65_536;

/// A file as the kernel knows it, whatever path reaches it: `ALWAYS_FILES`'s key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FileId {
    pub ino: u64,
    /// The superblock's `s_dev` (the kernel's major << 20 | minor).
    pub dev: u32,
    pub _pad: u32,
}

/// `PATH_RULES` values: what the longest matching prefix says.
pub const PATH_INCLUDE: u8 = 1;
pub const PATH_EXCLUDE: u8 = 2;
/// Recorded, and never counted against the session's disk rate limit.
pub const PATH_ALWAYS: u8 = 3;

/// First field of every ring-buffer record: who, where and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// `EVENT_*`.
    pub kind: u32,
    /// Thread-group id (what userspace calls the pid).
    pub pid: u32,
    pub uid: u32,
    /// The process's audit session id (`task_struct.sessionid`, set by
    /// pam_loginuid; u32::MAX unset; 0 for packets or without audit).
    pub audit_sid: u32,
    /// The session's cgroup id (for a user manager's process, the manager's).
    pub cgroup_id: u64,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME. Records of all rings are
    /// written in this order, and converted to wall time in userspace.
    pub boot_ns: u64,
    /// The process's name, which it chooses itself.
    pub comm: [u8; 16],
    /// The program the process runs (`mm->exe_file`), which it cannot
    /// choose: its inode and device (kernel `dev_t`, major << 20 | minor);
    /// 0 for packets, sent without a process.
    pub exe_ino: u64,
    pub exe_dev: u32,
    /// `EXE_*` bits.
    pub exe_flags: u32,
}

/// `RecordHeader.exe_flags`: the program's file has no name left (deleted,
/// or a memfd).
pub const EXE_UNLINKED: u32 = 1;
/// `RecordHeader.exe_flags`, set in command records only: the program's
/// path was composed in a mount namespace its user could have made (or on
/// a detached mount), where any file can be bound to any path.
pub const EXE_USER_MOUNT_NS: u32 = 2;

/// A `session.command` record. It is followed, in the same record, by
/// `path_len` bytes of path (NUL-terminated) and `argv_len` bytes of
/// NUL-separated arguments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommandEvent {
    pub header: RecordHeader,
    pub ppid: u32,
    /// 0, or the negative errno of a failed exec.
    pub return_code: i32,
    pub path_len: u32,
    pub argv_len: u32,
    /// Size of the whole argument area in the process; larger than
    /// `argv_len` when the arguments were cut at the limit.
    pub argv_total: u32,
    /// Bytes of the real path of the program now running (NUL-terminated,
    /// between the path and argv); 0 for a failed exec.
    pub exe_len: u32,
    /// Arguments longer than `ARGV_CAP` come in `parts` records: this one
    /// (part 0) with the path, then parts 1.. with the same header and only
    /// the next `ARGV_CAP` bytes of argv each. The recorder joins them.
    pub part: u32,
    pub parts: u32,
}

/// Most bytes of argv a command event can carry (`argv_limit`), in
/// `ARGV_CAP` parts.
pub const ARGV_LIMIT_MAX: usize = 16 * ARGV_CAP;

/// A `session.disk` record, followed in the same record by `path_len` bytes
/// of path (NUL-terminated).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskEvent {
    pub header: RecordHeader,
    /// Open flags (O_RDONLY, O_CREAT, ...), as the caller passed them.
    pub flags: u32,
    /// The new file descriptor, or the negative errno of a failed open.
    pub return_code: i32,
    pub path_len: u32,
    /// `DISK_PATH_*` bits.
    pub path_flags: u32,
}

/// The path of a failed open as the caller's memory held it after the
/// call, not the kernel's own copy: another thread of the caller could
/// have changed it since the kernel read it.
pub const DISK_PATH_FROM_CALLER: u32 = 1;
/// An open submitted through io_uring (IORING_OP_OPENAT, _OPENAT2),
/// recorded at submission, named by the kernel's copy of its path; its
/// result is not known then (`return_code` 0).
pub const DISK_IO_URING: u32 = 2;
/// The path was composed in a mount namespace the user could have made
/// (the opener's, or the one the file's mount is in), where any file can be
/// bound over any path: it says where the file appeared, not what it is.
pub const DISK_PATH_USER_MOUNT_NS: u32 = 4;

/// Events of one record key (a session's cgroup id, a user manager's, or
/// `IDENTITY_KEY | uid`) that were not written, per event kind (`EVENT_*`
/// indexes both arrays): `DROPPED`, a per-CPU hash the daemon reads every
/// second and reports as that session's `session.lost`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// The ring buffer was full (or the record could not be built).
    pub full: [u64; LOST_SLOTS as usize],
    /// Over the session's rate limit (`disk_rate_limit`).
    pub limited: [u64; LOST_SLOTS as usize],
    /// Terminal bytes not recorded (over `terminal.rate_limit`, or the
    /// ring was full).
    pub tty_bytes: u64,
}

/// A record key's records of each kind in the current one-second window,
/// counted while their ring buffer is over half full (`SHARES`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ShareWindow {
    pub window_start: u64,
    pub count: [u64; LOST_SLOTS as usize],
}

/// Records of one kind a record key may write per second while the ring
/// buffer is over half full: a flood is cut to this, while every quieter
/// session keeps writing into the half left free.
pub const SHARE_PER_SECOND: u64 = 64;

/// Per-session disk event rate window (`DISK_RATE`, keyed by cgroup id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskRate {
    /// Start of the current one-second window (CLOCK_BOOTTIME ns).
    pub window_start: u64,
    /// Events counted in the current window.
    pub count: u64,
}

/// A session's terminal bytes in the current one-second window
/// (`TTY_RATE`, keyed by record key), and those not recorded since its last
/// record, which that record's `dropped_before` reports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TtyRate {
    pub window_start: u64,
    pub bytes: u64,
    pub dropped: u64,
}

/// Bytes of terminal data one `TtyEvent` record carries at most; a larger
/// read is split.
pub const TTY_CHUNK: usize = 4096;
/// Records one read is split into at most (64 KiB, more than sshd reads
/// from a pty at once); the rest is counted as not recorded.
pub const TTY_CHUNKS_MAX: u32 = 16;
/// `TtyEvent.direction`.
pub const TTY_OUTPUT: u32 = 0;
pub const TTY_INPUT: u32 = 1;

/// A piece of a session's terminal: bytes sshd read from the pty's master
/// (what the terminal shows) or wrote to it (what the user typed), followed
/// in the same record by `len` bytes of data.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TtyEvent {
    pub header: RecordHeader,
    /// The pty's index (`/dev/pts/N`).
    pub tty: u32,
    /// `TTY_OUTPUT` or `TTY_INPUT`.
    pub direction: u32,
    pub len: u32,
    /// The terminal's size when the bytes passed (0: unknown).
    pub rows: u16,
    pub cols: u16,
    /// Bytes of this session's terminal not recorded since its previous
    /// record: a gap the replay marks.
    pub dropped_before: u64,
}

pub const OPERATION_CONNECT: u8 = 0;
pub const OPERATION_SEND: u8 = 1;
/// A packet leaving a restricted socket (the packet-level check).
pub const OPERATION_PACKET_OUT: u8 = 2;
/// A packet arriving for a restricted socket.
pub const OPERATION_PACKET_IN: u8 = 3;
pub const ACTION_OBSERVED: u8 = 0;
pub const ACTION_DENIED: u8 = 1;

/// A `session.network` record. Addresses are in network byte order; an IPv4
/// address occupies the first four bytes. Ports are host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkEvent {
    pub header: RecordHeader,
    pub src_addr: [u8; 16],
    pub dst_addr: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    /// 4 or 6: the socket's family.
    pub version: u8,
    pub operation: u8,
    pub action: u8,
    /// IPPROTO_TCP / IPPROTO_UDP / ...
    pub protocol: u8,
    /// Denials: how many more of the same kind (`DenialKey`) this record
    /// stands for. The first of a kind is written at once (0); later ones
    /// are counted in `DENIALS` and the daemon writes the latest of them
    /// once a second with the rest as `repeats`: a kind's denials are the
    /// sum of 1 + `repeats` over its records.
    pub repeats: u32,
    /// Packet-level denials: why (`PACKET_*`); 0 for the socket hooks.
    pub reason: u32,
}

/// `sock/inet_sock_set_state` from its `oldstate` field on: the layout
/// since Linux 4.16. The loader checks each field's offset in tracefs
/// against this (`SOCK_STATE_FIELDS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockState {
    pub oldstate: i32,
    pub newstate: i32,
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u16,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub saddr_v6: [u8; 16],
    pub daddr_v6: [u8; 16],
}

/// Where `SockState` starts in the tracepoint's record (the layout since
/// 4.16): a constant, so that the program loads `oldstate` and `newstate`
/// from the context without a helper call on every TCP state change of
/// the host. The loader refuses a kernel that has them elsewhere.
pub const SOCK_STATE_AT: u32 = 16;

/// `SockState`'s fields and their distance from `oldstate`.
pub const SOCK_STATE_FIELDS: [(&str, u32); 10] = [
    ("oldstate", 0),
    ("newstate", 4),
    ("sport", 8),
    ("dport", 10),
    ("family", 12),
    ("protocol", 14),
    ("saddr", 16),
    ("daddr", 20),
    ("saddr_v6", 24),
    ("daddr_v6", 40),
];

/// One kind of denial, aggregated (`DENIALS` key): the same record key,
/// operation, protocol, peer, port and reason. The first is an event at
/// once; the repeats are counted and reported by the daemon, once a second.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DenialKey {
    pub key: u64,
    pub peer: [u8; 16],
    pub reason: u32,
    pub port: u16,
    pub operation: u8,
    pub protocol: u8,
    pub version: u8,
    // Scalar padding: a byte array would be zeroed with a memset call,
    // a BPF subprogram older verifiers charge stack and time for.
    pub _pad0: u8,
    pub _pad1: u16,
    pub _pad2: u32,
}

/// `DENIALS` value: the latest denial of its kind, and how many came after
/// the first (only ever added to, atomically, by the programs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Denial {
    pub last: NetworkEvent,
    pub repeats: u64,
    /// When the entry was made: a new entry for the same key (the old one
    /// evicted) starts counting again.
    pub first_ns: u64,
}

/// Entries of `DENIALS`: distinct kinds of denial remembered at once.
pub const MAX_DENIALS: u32 = 16_384;

/// `NetworkEvent.reason` of a packet-level denial.
pub const PACKET_PEER_DENIED: u32 = 1;
/// An IPv6 routing header (or IPv4 options, where source routing lives):
/// the packet would be forwarded past the address it is sent to.
pub const PACKET_SOURCE_ROUTED: u32 = 2;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] structs of integers and byte arrays, with explicit
    // padding fields: every bit pattern is a valid value.
    unsafe impl aya::Pod for super::SessionEntry {}
    unsafe impl aya::Pod for super::SessionSlot {}
    unsafe impl aya::Pod for super::Presence {}
    unsafe impl aya::Pod for super::RuleValue {}
    unsafe impl aya::Pod for super::RuleEntry {}
    unsafe impl aya::Pod for super::Runtime {}
    unsafe impl aya::Pod for super::LoadConfig {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::DiskRate {}
    unsafe impl aya::Pod for super::FileId {}
    unsafe impl aya::Pod for super::Dropped {}
    unsafe impl aya::Pod for super::RecordHeader {}
    unsafe impl aya::Pod for super::CommandEvent {}
    unsafe impl aya::Pod for super::DiskEvent {}
    unsafe impl aya::Pod for super::TtyEvent {}
    unsafe impl aya::Pod for super::TtyRate {}
    unsafe impl aya::Pod for super::NetworkEvent {}
    unsafe impl aya::Pod for super::DenialKey {}
    unsafe impl aya::Pod for super::Denial {}
}
