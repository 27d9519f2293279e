//! File-open records (`session.disk`), built at the end of each open
//! syscall where the result is known, from its arguments in the saved
//! registers, then judged by the path filter and the session's rate.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
        generated::{bpf_get_current_task_btf, bpf_probe_read_kernel_str, bpf_probe_read_user_str},
    },
    macros::{kprobe, map, raw_tracepoint, tracepoint},
    maps::{lpm_trie::Key, HashMap, LpmTrie, PerCpuArray, RingBuf},
    programs::{ProbeContext, RawTracePointContext, TracePointContext},
};
use restrictd_common::{
    DiskEvent, DiskRate, FileId, PathKeyData, ALWAYS_FILES_MAX, DISK_IO_URING,
    DISK_PATH_FROM_CALLER, DISK_PATH_USER_MOUNT_NS, EVENT_DISK, MAX_SESSIONS, PATH_ALWAYS,
    PATH_CAP, PATH_INCLUDE, PATH_PREFIX_MAX, PATH_RULES_MAX, SESSION_RECORD_DISK,
};

use crate::{
    common::{
        btf_field, count_limited, count_lost, current_session, current_session_exact, fill_header,
        load_config, read_kernel, read_ptr, read_user_u64, read_user_u8, tp_field, user_regs,
        within_share, REGS_BX, REGS_CX, REGS_DI, REGS_DX, REGS_ORIG_AX, REGS_SI,
    },
    path::{dir_prefix, excluded_by_kind, fd_file, file_path, forget_walk, path_in_users_mount_ns},
};

/// Size set by the loader (`disk_buffer_size`).
#[map]
static DISK_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
static DISK_SCRATCH: PerCpuArray<DiskScratch> = PerCpuArray::with_max_entries(1, 0);
/// Include/exclude path prefixes per filter (the host's, and policies'
/// own); the longest match decides.
#[map]
static PATH_RULES: LpmTrie<PathKeyData, u8> = LpmTrie::with_max_entries(PATH_RULES_MAX, 0);
/// The files under the always recorded paths, by what they are (the
/// daemon fills it): a hard link elsewhere, or a renamed `~/.ssh`, reaches
/// the same file by a path the trie does not mark.
/// Not preallocated: most hosts fill a small part of it.
#[map]
static ALWAYS_FILES: HashMap<FileId, u8> =
    HashMap::with_max_entries(ALWAYS_FILES_MAX, BPF_F_NO_PREALLOC);
/// Per-session rate window, keyed by cgroup id.
#[map]
static DISK_RATE: HashMap<u64, DiskRate> = HashMap::with_max_entries(MAX_SESSIONS, 0);

#[repr(C)]
struct DiskScratch {
    header: DiskEvent,
    /// Doubled so that a masked offset plus one write stays inside (verifier).
    path: [u8; 2 * PATH_CAP],
    key: Key<PathKeyData>,
    /// The opened file, for a record named as given (`record_open`):
    /// through memory, so that the verifier does not explore the fallback
    /// once with and once without it.
    opened: FileId,
}

/// An open's arguments, as its exit read them from the saved registers.
#[repr(C)]
#[derive(Clone, Copy)]
struct OpenArgs {
    filename: u64,
    flags: u32,
    dirfd: i32,
    /// openat2's `struct open_how` (user memory, read at exit), or 0.
    how: u64,
    /// The session's disk filter.
    disk_filter: u32,
    _pad: u32,
    /// The `seq` of this open's copy of its path in `KNAME` (0: none).
    kname_seq: u64,
    cgroup_id: u64,
}

/// The kernel's own copy of the path of the open in progress on this CPU
/// (`disk_kname`). Per CPU rather than per thread: a per-thread copy would
/// cost a 4 KiB map insert per open. It is this open's if its thread made
/// it and has not moved to another CPU since (`owner`, `migrations`): a
/// thread that has may have left it there in an earlier open whose exit
/// ran elsewhere. An open that finds none falls back to the caller's
/// memory, flagged as such.
#[repr(C)]
struct KernelName {
    owner: u64,
    migrations: u64,
    seq: u64,
    name: [u8; PATH_CAP],
}

#[map]
static KNAME: PerCpuArray<KernelName> = PerCpuArray::with_max_entries(1, 0);

/// x86-64 syscall numbers of the open family (syscall_64.tbl) and ia32
/// ones (syscall_32.tbl).
const NR_OPEN: u64 = 2;
const NR_CREAT: u64 = 85;
const NR_OPENAT: u64 = 257;
const NR_OPENAT2: u64 = 437;
const IA32_OPEN: u64 = 5;
const IA32_CREAT: u64 = 8;
const IA32_OPENAT: u64 = 295;
/// Whether syscall `nr` may be an open, x86-64 or ia32 (5, 8 and 295 are
/// x86-64's fstat, lseek and preadv, which open nothing).
#[inline(always)]
pub fn maybe_open(nr: u64) -> bool {
    matches!(
        nr,
        NR_OPEN | NR_CREAT | NR_OPENAT | NR_OPENAT2 | IA32_OPEN | IA32_CREAT | IA32_OPENAT
    )
}

/// The task's moves between CPUs so far: unchanged between two points, the
/// thread was on one CPU at both.
#[inline(always)]
fn migrations(task: *const u8) -> u64 {
    unsafe { btf_field::<u64>(task, load_config().kernel.task_nr_migrations) }
}

/// do_filp_open(dfd, struct filename *pathname, op), entered by every
/// open(2)-family call after the kernel copied the path from the caller:
/// for an open of a recorded session, keep that copy, which no other
/// thread can change, to name the open if it fails. Attached where the
/// kernel has kprobes; without them failed opens are named from the
/// caller's memory and flagged (`DISK_PATH_FROM_CALLER`).
#[kprobe(function = "do_filp_open")]
pub fn disk_kname(ctx: ProbeContext) -> u32 {
    let task = unsafe { bpf_get_current_task_btf() };
    let nr = unsafe { btf_field::<u64>(user_regs(task), REGS_ORIG_AX) };
    // Not an open syscall's (an exec's): its exit would not take the copy.
    if !maybe_open(nr) {
        return 0;
    }
    let Some((_, session)) = current_session() else {
        return 0;
    };
    if session.flags & SESSION_RECORD_DISK == 0 {
        return 0;
    }
    let Some(k) = KNAME.get_ptr_mut(0) else {
        return 0;
    };
    let k = unsafe { &mut *k };
    let id = bpf_get_current_pid_tgid();
    let now = migrations(task as *const u8);
    // The syscall's own call comes first; a nested one is not its path.
    // (An earlier syscall's copy is never taken for this one: its exit,
    // on this CPU since the thread has not moved, took it.)
    if k.owner == id && k.migrations == now {
        return 0;
    }
    let Some(filename) = ctx.arg::<u64>(1) else {
        return 0;
    };
    // struct filename starts with `const char *name` (the loader checks).
    let Some(name) = (unsafe { read_kernel(filename as *const u64) }) else {
        return 0;
    };
    // Invalidate before writing: an exit reading this copy re-checks `seq`.
    k.owner = 0;
    k.seq = k.seq.wrapping_add(1);
    let n = unsafe {
        bpf_probe_read_kernel_str(
            k.name.as_mut_ptr() as *mut _,
            PATH_CAP as u32,
            name as *const _,
        )
    };
    if n <= 0 {
        return 0;
    }
    k.owner = id;
    k.migrations = now;
    k.seq = k.seq.wrapping_add(1);
    0
}

/// Takes this thread's open's copy of its path from `KNAME`, if there is
/// one (`KernelName`): its `seq`, or 0.
#[inline(always)]
fn take_kernel_copy(task: *const u8) -> u64 {
    let Some(k) = KNAME.get_ptr_mut(0) else {
        return 0;
    };
    let k = unsafe { &mut *k };
    if k.owner != bpf_get_current_pid_tgid() {
        return 0;
    }
    k.owner = 0;
    if k.migrations != migrations(task) {
        return 0;
    }
    k.seq
}

/// The copy `take_kernel_copy` took, if it is still there (`seq`).
#[inline(always)]
fn own_copy(args: &OpenArgs) -> Option<&'static KernelName> {
    if args.kname_seq == 0 {
        return None;
    }
    let k = unsafe { &*KNAME.get_ptr(0)? };
    (unsafe { core::ptr::read_volatile(&k.seq) } == args.kname_seq).then_some(k)
}

/// Copies this thread's open's path, as the kernel read it, to `dst` (at
/// most `PATH_CAP` bytes with the NUL); its length, or None if there is no
/// such copy (`own_copy`).
#[inline(always)]
fn kernel_name(args: &OpenArgs, dst: *mut u8) -> Option<usize> {
    let k = own_copy(args)?;
    let n = unsafe {
        bpf_probe_read_kernel_str(dst as *mut _, PATH_CAP as u32, k.name.as_ptr() as *const _)
    };
    // Overwritten while copied (a preempting open on this CPU)?
    if n <= 0 || unsafe { core::ptr::read_volatile(&k.seq) } != args.kname_seq {
        return None;
    }
    Some(n as usize)
}

const AT_FDCWD: i32 = -100;
/// creat(2) is open(O_CREAT | O_WRONLY | O_TRUNC).
const CREAT_FLAGS: u32 = 0o1101;

/// Every open(2)-family exit of a 64-bit process, where `exit_syscall`
/// does not take them (it is refused, or its layout unknown): one program
/// (verified once), attached to each tracepoint its section names.
#[tracepoint(
    category = "syscalls",
    name = "sys_exit_openat,sys_exit_openat2,sys_exit_open,sys_exit_creat"
)]
pub fn disk_out_open(ctx: TracePointContext) -> u32 {
    let task = unsafe { bpf_get_current_task_btf() };
    let regs = user_regs(task);
    let nr = unsafe { btf_field::<u64>(regs, REGS_ORIG_AX) };
    syscall_exit_open(task, regs, nr, false, tp_field::<i64, 16>(&ctx))
}

/// The exit of syscall `nr` of `task` (the current one), which returned
/// `ret`: recorded if it is an open and its session records opens.
/// `regs`: the task's saved registers, where an open's arguments still are
/// at its exit (no program runs at the entry). `compat`: the syscall came
/// through the 32-bit entry (`int $0x80`, which any 64-bit process can
/// execute too), whose numbers and registers differ, and which the kernel's
/// per-syscall tracepoints skip.
#[inline(always)]
pub fn syscall_exit_open(
    task: *mut aya_ebpf::bindings::task_struct,
    regs: *const u8,
    nr: u64,
    compat: bool,
    ret: i64,
) -> u32 {
    let reg = |off: u32| unsafe { btf_field::<u64>(regs, off) };
    // 32-bit pointers and ints, zero- or sign-extended as the kernel's
    // compat entry points take them.
    let ptr = |v: u64| v & 0xffff_ffff;
    let (filename, flags, dirfd, how) = if compat {
        match nr {
            IA32_OPEN => (ptr(reg(REGS_BX)), reg(REGS_CX) as u32, AT_FDCWD, 0),
            IA32_CREAT => (ptr(reg(REGS_BX)), CREAT_FLAGS, AT_FDCWD, 0),
            IA32_OPENAT => (
                ptr(reg(REGS_CX)),
                reg(REGS_DX) as u32,
                reg(REGS_BX) as i32,
                0,
            ),
            NR_OPENAT2 => (ptr(reg(REGS_CX)), 0, reg(REGS_BX) as i32, ptr(reg(REGS_DX))),
            _ => return 0,
        }
    } else {
        match nr {
            NR_OPEN => (reg(REGS_DI), reg(REGS_SI) as u32, AT_FDCWD, 0),
            NR_CREAT => (reg(REGS_DI), CREAT_FLAGS, AT_FDCWD, 0),
            NR_OPENAT => (reg(REGS_SI), reg(REGS_DX) as u32, reg(REGS_DI) as i32, 0),
            // The flags are in user memory (struct open_how); read at
            // exit, after the kernel has copied them.
            NR_OPENAT2 => (reg(REGS_SI), 0, reg(REGS_DI) as i32, reg(REGS_DX)),
            _ => return 0,
        }
    };
    open_exit(task as *const u8, filename, flags, dirfd, how, ret)
}

/// An open of `task` (the current one) that returned `ret`, with its
/// arguments: recorded if its session records opens.
#[inline(always)]
fn open_exit(task: *const u8, filename: u64, flags: u32, dirfd: i32, how: u64, ret: i64) -> u32 {
    let Some((cgroup_id, session)) = current_session() else {
        return 0;
    };
    // Taken whether or not it is used, so that no later open can.
    let kname_seq = take_kernel_copy(task);
    if session.flags & SESSION_RECORD_DISK == 0 {
        return 0;
    }
    // Through a map: the verifier then goes on with unknown values, not
    // once per syscall's constants (several times the rest of the program,
    // past its limit).
    let Some(slot) = OPEN_ARGS.get_ptr_mut(0) else {
        return 0;
    };
    let args = unsafe { &mut *slot };
    args.filename = filename;
    args.flags = flags;
    args.dirfd = dirfd;
    args.how = how;
    args.disk_filter = session.disk_filter;
    args.kname_seq = kname_seq;
    args.cgroup_id = cgroup_id;
    record_open(unsafe { &*slot }, ret)
}

/// `open_exit`'s arguments for `record_open` (see there).
#[map]
static OPEN_ARGS: PerCpuArray<OpenArgs> = PerCpuArray::with_max_entries(1, 0);

/// Builds, judges and sends the record of an open that returned `ret`.
#[inline(always)]
fn record_open(args: &OpenArgs, ret: i64) -> u32 {
    let (cgroup_id, filter) = (args.cgroup_id, args.disk_filter);
    let Some(scratch) = DISK_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let scratch = unsafe { &mut *scratch };
    // struct open_how starts with the u64 flags.
    let flags = if args.how != 0 {
        read_user_u64(args.how).unwrap_or(0) as u32
    } else {
        args.flags
    };
    // The record header is filled in `submit`, once the open is known to
    // be recorded: most opens are left out by the filters or the rate.
    let h = &mut scratch.header;
    h.flags = flags;
    forget_walk();
    // The new fd, or the negative errno (Teleport's meaning).
    h.return_code = ret as i32;
    h.path_len = 0;
    h.path_flags = 0;

    // A successful open names the file by its real path: the new fd's
    // f_path, walked like a directory (symlinks and ".." resolved, so a
    // link to /etc/shadow is reported as /etc/shadow). Devices and
    // pseudo-filesystems are left out first, by what the file is.
    let file = if ret >= 0 { fd_file(ret as i32) } else { None };
    // An opened file whose path cannot be walked (deeper than the walk
    // goes) is named as given below, but is still known by what it is.
    scratch.opened = FileId::default();
    if let Some(file) = file {
        let Some(id) = excluded_by_kind(file) else {
            return 0;
        };
        scratch.opened = id;
        if let Some(p) = unsafe { file_path(scratch.path.as_mut_ptr(), file) } {
            let len = if p == 0 {
                scratch.path[0] = b'/';
                scratch.path[1] = 0;
                2
            } else {
                // The last component was written with its NUL.
                p + 1
            };
            submit(scratch, cgroup_id, filter, len, false, id, true);
            return 0;
        }
    }
    // Failed (or unresolvable): directory part first (none for an absolute
    // path), then the path the kernel tried: its own copy where
    // `disk_kname` kept one, else the caller's memory, flagged.
    let first = match own_copy(args) {
        Some(k) => k.name[0],
        None => read_user_u8(args.filename).unwrap_or(0),
    };
    let dir = if first != b'/' {
        let fd = (args.dirfd != AT_FDCWD).then_some(args.dirfd);
        unsafe { dir_prefix(scratch.path.as_mut_ptr(), fd) }
    } else {
        0
    };
    let at = dir & (PATH_CAP - 1);
    let dst = unsafe { scratch.path.as_mut_ptr().add(at) };
    let n = match kernel_name(args, dst) {
        Some(n) => n as i64,
        None => {
            scratch.header.path_flags = DISK_PATH_FROM_CALLER;
            unsafe {
                bpf_probe_read_user_str(dst as *mut _, PATH_CAP as u32, args.filename as *const _)
            }
        }
    };
    if n <= 0 {
        // No path to report (unreadable, or the walk failed and the string
        // did too): counted as lost rather than dropped silently.
        count_lost(EVENT_DISK, cgroup_id);
        return 0;
    }
    let len = at + n as usize;
    // The trie judges paths by prefix; one the kernel did not resolve may
    // reach elsewhere through `..` (`/usr/lib/locale/../../../etc/shadow`
    // is /etc/shadow, not a locale file), so such a path is not judged.
    let unresolved = dot_component(&scratch.path, len);
    let opened = unsafe { core::ptr::read_volatile(&scratch.opened) };
    submit(scratch, cgroup_id, filter, len, unresolved, opened, true);
    0
}

/// Bytes of `x` equal to `c`: 0x80 in each such byte, 0 in the others
/// (exact, unlike the usual has-zero test).
#[inline(always)]
fn bytes_eq(x: u64, c: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let t = x ^ (0x0101_0101_0101_0101 * c as u64);
    !(((t & LOW7) + LOW7) | t | LOW7)
}

/// Whether the first `len` bytes of `path` have an empty, `.` or `..`
/// component ("//", "/./", "/../", or "/." or "/.." at the end), or are
/// longer than the trie judges (a `..` past that could lead anywhere).
/// Eight bytes a step, as few as the verifier allows: it explores the loop
/// once for each way into it.
#[inline(always)]
fn dot_component(path: &[u8; 2 * PATH_CAP], len: usize) -> bool {
    const WORDS: usize = PATH_PREFIX_MAX / 8 + 1;
    if len > WORDS * 8 {
        return true;
    }
    let words = path.as_ptr() as *const u64;
    let mut i = 0;
    while i < WORDS {
        if i * 8 >= len {
            break;
        }
        // Aligned loads (the buffer is 8-aligned and twice PATH_CAP long);
        // the bytes 1, 2 and 3 further on are shifted in from the next word.
        let a = unsafe { core::ptr::read_volatile(words.add(i)) };
        let next = unsafe { core::ptr::read_volatile(words.add(i + 1)) };
        let (b, c, d) = (
            (a >> 8) | (next << 56),
            (a >> 16) | (next << 48),
            (a >> 24) | (next << 40),
        );
        let end_or_slash = |x: u64| bytes_eq(x, b'/') | bytes_eq(x, 0);
        let dots = bytes_eq(b, b'.') & (end_or_slash(c) | (bytes_eq(c, b'.') & end_or_slash(d)));
        let mut hit = bytes_eq(a, b'/') & (bytes_eq(b, b'/') | dots);
        // Bytes past the path's end are an earlier path's.
        let left = len - i * 8;
        if left < 8 {
            hit &= (1u64 << (8 * left)) - 1;
        }
        if hit != 0 {
            return true;
        }
        i += 1;
    }
    false
}

/// io_uring's open operations (uapi `IORING_OP_OPENAT`, `_OPENAT2`).
const IORING_OP_OPENAT: u8 = 18;
const IORING_OP_OPENAT2: u8 = 28;
const OPEN_OPS: u64 = (1 << IORING_OP_OPENAT) | (1 << IORING_OP_OPENAT2);

/// An open submitted through io_uring, which makes no open(2)-family call
/// (the tracepoints above never see it): recorded when it is submitted, in
/// the submitter's context (its task, or its ring's submission thread),
/// after the kernel has copied the path (the op's prep), so the name is
/// the kernel's. The open itself may run later, on a worker; its result is
/// not recorded (`DISK_IO_URING`). A relative path is joined to the
/// directory (`dfd` or the cwd) as it is now. A raw tracepoint (the
/// request is its first argument): a classic one would have the kernel
/// format a record, its opcode's name included, for every request of every
/// ring on the host.
#[raw_tracepoint(tracepoint = "io_uring_submit_req")]
pub fn disk_uring(ctx: RawTracePointContext) -> u32 {
    let o = load_config().kernel;
    if o.io_open_filename == 0 {
        return 0;
    }
    let req: u64 = ctx.arg(0);
    let opcode = unsafe { read_kernel((req + o.io_kiocb_opcode as u64) as *const u8) }.unwrap_or(0);
    // One branch, not one per opcode: two paths with the opcode known to
    // differ would double what the verifier explores below (6.1's then
    // hits its limit).
    if (1u64 << (opcode & 63)) & OPEN_OPS == 0 {
        return 0;
    }
    let Some((cgroup_id, session)) = current_session_exact() else {
        return 0;
    };
    if session.flags & SESSION_RECORD_DISK == 0 {
        return 0;
    }
    let open = req + o.io_kiocb_cmd as u64;
    let dfd = unsafe { read_kernel((open + o.io_open_dfd as u64) as *const i32) }.unwrap_or(0);
    // struct filename starts with `const char *name` (the loader checks).
    let name = read_ptr(read_ptr(open, o.io_open_filename), 0);
    // struct open_how starts with the u64 flags.
    let flags = read_ptr(open, o.io_open_how) as u32;
    let Some(scratch) = DISK_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let scratch = unsafe { &mut *scratch };
    let h = &mut scratch.header;
    h.flags = flags;
    h.return_code = 0;
    h.path_len = 0;
    h.path_flags = DISK_IO_URING;
    let first = unsafe { read_kernel(name as *const u8) }.unwrap_or(0);
    let dir = if first != b'/' {
        let fd = (dfd != AT_FDCWD).then_some(dfd);
        unsafe { dir_prefix(scratch.path.as_mut_ptr(), fd) }
    } else {
        0
    };
    let at = dir & (PATH_CAP - 1);
    let n = unsafe {
        bpf_probe_read_kernel_str(
            scratch.path.as_mut_ptr().add(at) as *mut _,
            PATH_CAP as u32,
            name as *const _,
        )
    };
    if n <= 0 {
        count_lost(EVENT_DISK, cgroup_id);
        return 0;
    }
    // Always recorded, without the path filter or the rate limit: the path
    // is as given, and a symlink or `..` in it can lead anywhere (the
    // filter judges a path by prefix). Opens through io_uring are rare.
    submit(
        scratch,
        cgroup_id,
        session.disk_filter,
        at + n as usize,
        true,
        FileId::default(),
        false,
    );
    0
}

/// Applies the path filters (to absolute paths; one the kernel could not
/// resolve goes to userspace unjudged): the host's, then the session
/// policy's `filter` (0: none), which can only narrow what the host's
/// includes and never hides an always recorded path. Then the session's
/// rate limit (not for always recorded paths, so that a flood of other
/// opens cannot hide them), then fills the record header and sends the
/// header and path. `always`: record it as an always recorded path,
/// unjudged (a path the kernel did not resolve, which can lead anywhere).
/// `file`: the opened file (all 0: none); one in `ALWAYS_FILES` is
/// always recorded whatever its path (looked up only when it would be
/// left out). `walked`: the path was walked since `forget_walk`, and a
/// recorded one is flagged if it lies in a user's mount namespace
/// (io_uring's are not: its program is at the verifier's limit).
#[inline(always)]
fn submit(
    scratch: &mut DiskScratch,
    cgroup_id: u64,
    filter: u32,
    path_len: usize,
    always: bool,
    file: FileId,
    walked: bool,
) {
    let path_len = path_len & (2 * PATH_CAP - 1);
    if path_len == 0 {
        return;
    }
    let mut always = always;
    if !always && scratch.path[0] == b'/' {
        let n = path_len.min(PATH_PREFIX_MAX);
        scratch.key.prefix_len = 32 + 8 * n as u32;
        scratch.key.data[..4].copy_from_slice(&[0; 4]);
        copy_prefix(scratch);
        let mut verdict = PATH_RULES.get(&scratch.key).copied();
        if filter != 0 && verdict == Some(PATH_INCLUDE) {
            scratch.key.data[..4].copy_from_slice(&filter.to_be_bytes());
            verdict = PATH_RULES.get(&scratch.key).copied();
        }
        match verdict {
            Some(PATH_INCLUDE) => {}
            Some(PATH_ALWAYS) => always = true,
            // In a mount namespace the user made, any file can be bound to
            // any path: no path is left out there, nor for a path composed
            // in one (reached from outside it).
            _ if path_in_users_mount_ns() => {}
            _ if always_file(file) => always = true,
            _ => return,
        }
    }
    if !always && !within_rate(cgroup_id) {
        if !always_file(file) {
            count_limited(EVENT_DISK, cgroup_id);
            return;
        }
        always = true;
    }
    if walked && path_in_users_mount_ns() {
        scratch.header.path_flags |= DISK_PATH_USER_MOUNT_NS;
    }
    scratch.header.path_len = path_len as u32;
    let size = core::mem::size_of::<DiskEvent>() + path_len;
    if size > core::mem::size_of::<DiskEvent>() + 2 * PATH_CAP {
        return;
    }
    let bytes =
        unsafe { core::slice::from_raw_parts(scratch as *const DiskScratch as *const u8, size) };
    let Some(wake) = within_share(
        &DISK_EVENTS,
        EVENT_DISK,
        if always { 0 } else { EVENT_DISK },
        cgroup_id,
        size as u64,
    ) else {
        return;
    };
    fill_header(&mut scratch.header.header, EVENT_DISK, cgroup_id);
    if DISK_EVENTS.output::<[u8]>(bytes, wake).is_err() {
        count_lost(EVENT_DISK, cgroup_id);
    }
}

/// Copies the path's first `PATH_PREFIX_MAX` bytes into the trie key after
/// its filter id, in 8-byte words: on every open of a session, a helper
/// call for the same copy cost more than the loads and stores.
#[inline(always)]
fn copy_prefix(scratch: &mut DiskScratch) {
    // Both ends are 8-byte aligned (checked below at compile time), so
    // these are plain aligned loads and stores.
    let src = scratch.path.as_ptr() as *const u64;
    let dst = unsafe { (core::ptr::addr_of_mut!(scratch.key.data) as *mut u8).add(4) };
    let dst = dst as *mut u64;
    for i in 0..PATH_PREFIX_MAX / 8 {
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
    }
    let tail = PATH_PREFIX_MAX / 8 * 8;
    unsafe {
        core::ptr::write_volatile(
            (dst as *mut u8).add(tail) as *mut u32,
            core::ptr::read_volatile((src as *const u8).add(tail) as *const u32),
        )
    };
}

const _: () = {
    assert!(core::mem::offset_of!(DiskScratch, path) % 8 == 0);
    assert!((core::mem::offset_of!(DiskScratch, key) + 4 + 4) % 8 == 0);
    assert!(PATH_PREFIX_MAX % 8 == 4);
};

/// At most `disk_rate` events per session per one-second window (the
/// caller counts what it then leaves out).
/// BPF in Rust has no atomic read-modify-write (the target has no CAS), so
/// CPUs opening at the same instant may both pass with one count: the limit
/// can be exceeded slightly under contention. Drops are counted per CPU,
/// which is exact.
#[inline(always)]
fn within_rate(cgroup_id: u64) -> bool {
    let limit = load_config().disk_rate as u64;
    if limit == 0 {
        return true;
    }
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let Some(st) = DISK_RATE.get_ptr_mut(cgroup_id) else {
        let fresh = DiskRate {
            window_start: now,
            count: 1,
        };
        let _ = DISK_RATE.insert(cgroup_id, fresh, 0);
        return true;
    };
    let st = unsafe { &mut *st };
    if now.wrapping_sub(st.window_start) >= 1_000_000_000 {
        st.window_start = now;
        st.count = 0;
    }
    if st.count < limit {
        st.count += 1;
        return true;
    }
    false
}

/// Whether `file` (all 0: unknown) is one of `ALWAYS_FILES`.
#[inline(always)]
fn always_file(file: FileId) -> bool {
    if file.ino == 0 || file.dev == 0 {
        return false;
    }
    unsafe { ALWAYS_FILES.get(file) }.is_some()
}
