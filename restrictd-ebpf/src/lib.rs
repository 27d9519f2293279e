//! Types shared by the BPF programs (`main.rs`, built for `bpfel-unknown-none`)
//! and restrictd's userspace. Everything here is `#[repr(C)]` and plain data:
//! the two sides exchange these bytes through maps and ring buffers.
#![no_std]

/// Upper bound on entries in each LPM trie. Tries are `BPF_F_NO_PREALLOC`, so
/// this costs nothing until used. It covers 100,000 CIDRs per list, IPv4 rules
/// doubled into the IPv6 trie as v4-mapped entries, and two policies alive at
/// once during an atomic swap.
pub const MAX_RULES: u32 = 1 << 20;
/// Upper bound on concurrently restricted cgroups.
pub const MAX_SESSIONS: u32 = 65_536;
/// Default size of the network event ring buffer: Teleport's 8 pages.
pub const NETWORK_BUFFER_PAGES: u32 = 8;
/// Default size of the command event ring buffer, in pages. Teleport uses 8;
/// more here so that an exec storm with long argv loses nothing (BENCHMARKS.md).
pub const COMMAND_BUFFER_PAGES: u32 = 64;
/// Default size of the disk event ring buffer: Teleport's 128 pages.
pub const DISK_BUFFER_PAGES: u32 = 128;

/// `SessionEntry.flags`: enforce the network policy in this cgroup.
pub const SESSION_RESTRICT: u32 = 1 << 0;
/// `SessionEntry.flags`: record every exec (`session.command`).
pub const SESSION_RECORD_COMMANDS: u32 = 1 << 1;
/// `SessionEntry.flags`: record allowed connects and sends (`action` 0).
pub const SESSION_RECORD_NETWORK: u32 = 1 << 2;
/// `SessionEntry.flags`: record file opens (`session.disk`).
pub const SESSION_RECORD_DISK: u32 = 1 << 3;

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
}

/// LPM trie key data: a policy id (big-endian, so it is matched first as part
/// of the prefix) followed by the address. The prefix length of a rule is
/// `32 + cidr_len`.
pub type V4KeyData = [u8; 8];
pub type V6KeyData = [u8; 20];
pub const POLICY_ID_BITS: u32 = 32;

/// LPM trie value. `ports == 0` means all ports; other values are reserved for
/// per-rule port sets (a later map indexed by this id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleValue {
    pub ports: u32,
}

/// Event kinds, first field of every record in a ring buffer.
pub const EVENT_COMMAND: u32 = 1;
pub const EVENT_DISK: u32 = 2;
pub const EVENT_NETWORK: u32 = 3;

/// Indices of the per-CPU `LOST` counters: events the kernel could not deliver
/// because a ring buffer was full.
pub const LOST_NETWORK: u32 = 0;
pub const LOST_COMMAND: u32 = 1;
pub const LOST_DISK: u32 = 2;
pub const LOST_SLOTS: u32 = 4;

/// Indices of the `CONFIG` array, filled by userspace before attaching.
/// Tracepoint field offsets come from tracefs format files (they differ
/// between kernels); the argv limit from the config.
pub const CONFIG_FORK_CHILD_PID_OFFSET: u32 = 0;
pub const CONFIG_EXEC_FILENAME_OFFSET: u32 = 1;
pub const CONFIG_ARGV_LIMIT: u32 = 2;
/// Most disk events per session per second; 0: no limit.
pub const CONFIG_DISK_RATE: u32 = 3;
/// cgroup level of the user managers (`user@UID.service`) that the daemon
/// registers for users with restricted sessions; 0: none registered.
pub const CONFIG_MANAGER_LEVEL: u32 = 4;
pub const CONFIG_SLOTS: u32 = 8;

/// Largest argv a command event carries (the config limit is at most this).
pub const ARGV_CAP: usize = 8192;
/// Room for the executed path (PATH_MAX).
pub const PATH_CAP: usize = 4096;
/// Most arguments read for a failed exec (walked one by one in the old image).
pub const FAILED_ARGS_MAX: u32 = 64;

/// Header of a `session.command` record. It is followed, in the same record,
/// by `path_len` bytes of path (NUL-terminated) and `argv_len` bytes of
/// NUL-separated arguments.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CommandEvent {
    pub kind: u32,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
    pub boot_ns: u64,
    pub comm: [u8; 16],
    /// 0, or the negative errno of a failed exec.
    pub return_code: i32,
    pub path_len: u32,
    pub argv_len: u32,
    /// Size of the whole argument area in the process; larger than
    /// `argv_len` when the arguments were cut at the limit.
    pub argv_total: u32,
}

/// Per-CPU staging area for a command record: header, then path at
/// `data[..PATH_CAP]` and argv right after the path (offsets are masked so
/// the verifier can bound them, hence the doubled sizes).
#[repr(C)]
pub struct CommandScratch {
    pub header: CommandEvent,
    pub data: [u8; 2 * PATH_CAP + 2 * ARGV_CAP],
}

/// What sys_enter_execve(at) leaves for sys_exit_*: the user pointers, to
/// describe the exec if it fails.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecArgs {
    pub filename: u64,
    pub argv: u64,
}

/// Longest path prefix a disk filter rule can have (the LPM trie key limit).
pub const PATH_PREFIX_MAX: usize = 256;
/// `PATH_RULES` trie key data: the first bytes of a path.
pub type PathKeyData = [u8; PATH_PREFIX_MAX];
/// `PATH_RULES` values: what the longest matching prefix says.
pub const PATH_INCLUDE: u8 = 1;
pub const PATH_EXCLUDE: u8 = 2;

/// Header of a `session.disk` record, followed in the same record by
/// `path_len` bytes of path (NUL-terminated).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DiskEvent {
    pub kind: u32,
    pub pid: u32,
    pub uid: u32,
    /// Open flags (O_RDONLY, O_CREAT, ...), as the caller passed them.
    pub flags: u32,
    pub cgroup_id: u64,
    pub boot_ns: u64,
    pub comm: [u8; 16],
    /// 0, or the negative errno of a failed open.
    pub return_code: i32,
    pub path_len: u32,
    pub _pad: u64,
}

/// Byte offsets of the kernel struct members the disk programs follow to
/// turn a relative path into an absolute one (the directory the path was
/// relative to: the cwd, or the `dirfd` of openat). They differ between
/// kernels, so the loader reads them from the kernel's BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
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
    pub vfsmount_root: u32,
    pub dentry_parent: u32,
    pub dentry_name: u32,
    /// `struct qstr`'s `name` pointer.
    pub qstr_name: u32,
}

/// The kernel's path walk takes at most 2 × this many steps (a directory
/// level or a mount crossing each); a longer walk falls back to the path
/// as the caller gave it.
pub const DIR_DEPTH_MAX: usize = 32;

/// What sys_enter_open* leaves for sys_exit_open*, which builds the event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OpenArgs {
    pub filename: u64,
    pub flags: u32,
    pub dirfd: i32,
    /// openat2's `struct open_how` (user memory, read at exit), or 0.
    pub how: u64,
}

/// Per-session disk event rate window (`DISK_RATE`, keyed by cgroup id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DiskRate {
    /// Start of the current one-second window (CLOCK_BOOTTIME ns).
    pub window_start: u64,
    /// Events counted in the current window.
    pub count: u64,
}

pub const OPERATION_CONNECT: u8 = 0;
pub const OPERATION_SEND: u8 = 1;
pub const ACTION_OBSERVED: u8 = 0;
pub const ACTION_DENIED: u8 = 1;

/// A network event (`session.network`). Addresses are in network byte order;
/// an IPv4 address occupies the first four bytes. Ports are host order.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetworkEvent {
    pub kind: u32,
    /// Thread-group id (what userspace calls the pid).
    pub pid: u32,
    pub uid: u32,
    pub _pad0: u32,
    pub cgroup_id: u64,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME, converted to wall time in userspace.
    pub boot_ns: u64,
    pub comm: [u8; 16],
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
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain #[repr(C)] data without padding-dependent invariants.
    unsafe impl aya::Pod for super::SessionEntry {}
    unsafe impl aya::Pod for super::RuleValue {}
    unsafe impl aya::Pod for super::DiskRate {}
    unsafe impl aya::Pod for super::KernelOffsets {}
}
