//! restrictd's BPF programs. Network enforcement runs in cgroup `sock_addr`
//! hooks (connect4/6, sendmsg4/6), which need no BPF LSM boot flag. A program
//! returns 1 to let the call proceed and 0 to fail it with EPERM before any
//! packet is sent.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{bpf_sock_addr, pt_regs, BPF_F_NO_PREALLOC},
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_comm,
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
        generated::{
            bpf_get_current_task_btf, bpf_probe_read_kernel, bpf_probe_read_kernel_str,
            bpf_probe_read_user, bpf_probe_read_user_str, bpf_task_pt_regs,
        },
    },
    macros::{cgroup_sock_addr, map, tracepoint},
    maps::{
        lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf,
    },
    programs::{SockAddrContext, TracePointContext},
    EbpfContext,
};
use restrictd_ebpf::*;

const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[map]
static SESSIONS: HashMap<u64, SessionEntry> = HashMap::with_max_entries(MAX_SESSIONS, 0);
/// `ACTIVE[0]`: id of the host-wide policy, or `POLICY_NONE`.
#[map]
static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
#[map]
static ALLOW_V4: LpmTrie<V4KeyData, RuleValue> = LpmTrie::with_max_entries(MAX_RULES, 0);
#[map]
static DENY_V4: LpmTrie<V4KeyData, RuleValue> = LpmTrie::with_max_entries(MAX_RULES, 0);
#[map]
static ALLOW_V6: LpmTrie<V6KeyData, RuleValue> = LpmTrie::with_max_entries(MAX_RULES, 0);
#[map]
static DENY_V6: LpmTrie<V6KeyData, RuleValue> = LpmTrie::with_max_entries(MAX_RULES, 0);
#[map]
static NETWORK_EVENTS: RingBuf = RingBuf::with_byte_size(NETWORK_BUFFER_PAGES * 4096, 0);
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);
#[map]
static CONFIG: Array<u64> = Array::with_max_entries(CONFIG_SLOTS, 0);
/// Unconnected UDP destinations already reported per socket: only the first
/// send from a socket to a destination is an event, not every datagram.
#[map]
static SENT: LruHashMap<SentKey, u8> = LruHashMap::with_max_entries(65_536, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct SentKey {
    cookie: u64,
    addr: [u8; 16],
    port: u32,
    _pad: u32,
}
#[map]
static COMMAND_EVENTS: RingBuf = RingBuf::with_byte_size(COMMAND_BUFFER_PAGES * 4096, 0);
#[map]
static SCRATCH: PerCpuArray<CommandScratch> = PerCpuArray::with_max_entries(1, 0);
/// Parent of each process forked in a session (tgid -> parent tgid).
#[map]
static PPIDS: LruHashMap<u32, u32> = LruHashMap::with_max_entries(65_536, 0);
/// execve(at) calls in flight in sessions (pid_tgid -> user pointers).
#[map]
static EXECS: LruHashMap<u64, ExecArgs> = LruHashMap::with_max_entries(16_384, 0);

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    check(&ctx, 4, OPERATION_CONNECT)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    check(&ctx, 4, OPERATION_SEND)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    check(&ctx, 6, OPERATION_CONNECT)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    check(&ctx, 6, OPERATION_SEND)
}

#[inline(always)]
fn check(ctx: &SockAddrContext, version: u8, operation: u8) -> i32 {
    let Some((cgroup_id, session)) = current_session() else {
        return ALLOW;
    };
    let (flags, policy_id) = (session.flags, session.policy_id);
    if flags & SESSION_RESTRICT != 0 && !policy_allows(ctx, version, policy_id) {
        return deny(ctx, cgroup_id, version, operation);
    }
    if flags & SESSION_RECORD_NETWORK != 0 && first_report(ctx, version, operation) {
        emit(ctx, cgroup_id, version, operation, ACTION_OBSERVED);
    }
    ALLOW
}

/// The policy decision: allowed iff in the allow list and not in the deny
/// list of the session's policy (no policy: everything allowed).
#[inline(always)]
fn policy_allows(ctx: &SockAddrContext, version: u8, session_policy: u32) -> bool {
    let policy = if session_policy != POLICY_FOLLOW_ACTIVE {
        session_policy
    } else {
        match ACTIVE.get(0) {
            Some(p) => *p,
            // Cannot happen for an array map; fail closed if it ever does.
            None => return false,
        }
    };
    if policy == POLICY_NONE {
        return true;
    }
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    let id = policy.to_be_bytes();
    if version == 4 {
        let a = sa.user_ip4.to_ne_bytes();
        let key = Key::new(
            POLICY_ID_BITS + 32,
            [id[0], id[1], id[2], id[3], a[0], a[1], a[2], a[3]],
        );
        ALLOW_V4.get(&key).is_some() && DENY_V4.get(&key).is_none()
    } else {
        let mut data = [0u8; 20];
        data[..4].copy_from_slice(&id);
        let mut i = 0;
        while i < 4 {
            let w = sa.user_ip6[i].to_ne_bytes();
            data[4 + i * 4..8 + i * 4].copy_from_slice(&w);
            i += 1;
        }
        let key = Key::new(POLICY_ID_BITS + 128, data);
        ALLOW_V6.get(&key).is_some() && DENY_V6.get(&key).is_none()
    }
}

/// Connects are always reported; a send only the first time this socket
/// sends to this destination.
#[inline(always)]
fn first_report(ctx: &SockAddrContext, version: u8, operation: u8) -> bool {
    if operation != OPERATION_SEND {
        return true;
    }
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    let mut key = SentKey {
        cookie: unsafe { aya_ebpf::helpers::bpf_get_socket_cookie(ctx.sock_addr as *mut _) },
        addr: [0; 16],
        port: sa.user_port,
        _pad: 0,
    };
    if version == 4 {
        key.addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    } else {
        let mut i = 0;
        while i < 4 {
            key.addr[i * 4..i * 4 + 4].copy_from_slice(&sa.user_ip6[i].to_ne_bytes());
            i += 1;
        }
    }
    if SENT.get_ptr(&key).is_some() {
        return false;
    }
    let _ = SENT.insert(&key, &1, 0);
    true
}

#[inline(always)]
fn deny(ctx: &SockAddrContext, cgroup_id: u64, version: u8, operation: u8) -> i32 {
    emit(ctx, cgroup_id, version, operation, ACTION_DENIED);
    DENY
}

#[inline(always)]
fn emit(ctx: &SockAddrContext, cgroup_id: u64, version: u8, operation: u8, action: u8) {
    let Some(mut entry) = NETWORK_EVENTS.reserve::<NetworkEvent>(0) else {
        count_lost(LOST_NETWORK);
        return;
    };
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    let mut ev = NetworkEvent {
        kind: EVENT_NETWORK,
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        uid: bpf_get_current_uid_gid() as u32,
        _pad0: 0,
        cgroup_id,
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        src_addr: [0; 16],
        dst_addr: [0; 16],
        src_port: 0,
        dst_port: u16::from_be(sa.user_port as u16),
        version,
        operation,
        action,
        protocol: sa.protocol as u8,
    };
    // Source: the socket's bound address and port where it has them (an
    // unbound socket gets them only after this hook), or the sendmsg source.
    let sk = unsafe { sa.__bindgen_anon_1.sk };
    if !sk.is_null() {
        ev.src_port = unsafe { (*sk).src_port } as u16;
    }
    if version == 4 {
        ev.dst_addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
        // msg_src_* exist only in sendmsg programs (the verifier refuses them elsewhere).
        let mut src = if operation == OPERATION_SEND {
            sa.msg_src_ip4
        } else {
            0
        };
        if src == 0 && !sk.is_null() {
            src = unsafe { (*sk).src_ip4 };
        }
        ev.src_addr[..4].copy_from_slice(&src.to_ne_bytes());
    } else {
        let mut i = 0;
        while i < 4 {
            ev.dst_addr[i * 4..i * 4 + 4].copy_from_slice(&sa.user_ip6[i].to_ne_bytes());
            let w = if operation == OPERATION_SEND {
                sa.msg_src_ip6[i]
            } else if !sk.is_null() {
                unsafe { (*sk).src_ip6[i] }
            } else {
                0
            };
            ev.src_addr[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            i += 1;
        }
    }
    entry.write(ev);
    entry.submit(0);
}

#[inline(always)]
fn count_lost(slot: u32) {
    if let Some(p) = LOST.get_ptr_mut(slot) {
        // Per-CPU slot: no other writer on this CPU while we run.
        unsafe { *p += 1 };
    }
}

// ---- Command recording -------------------------------------------------

#[inline(always)]
fn config(slot: u32) -> u64 {
    CONFIG.get(slot).copied().unwrap_or(0)
}

/// The session the current process is in, and the cgroup id it is registered
/// under: the process's own cgroup, or else its ancestor at
/// `CONFIG_MANAGER_LEVEL`, the user's systemd instance, which the daemon
/// registers while the user has a restricted session (so `systemd-run
/// --user` does not leave it). Processes outside sessions cost a hash miss,
/// and on logind hosts one more.
#[inline(always)]
fn current_session() -> Option<(u64, &'static SessionEntry)> {
    let id = unsafe { bpf_get_current_cgroup_id() };
    if let Some(s) = unsafe { SESSIONS.get(&id) } {
        return Some((id, s));
    }
    let level = config(CONFIG_MANAGER_LEVEL);
    if level == 0 {
        return None;
    }
    let manager = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
    if manager == 0 || manager == id {
        return None;
    }
    unsafe { SESSIONS.get(&manager) }.map(|s| (manager, s))
}

/// Reads a field at an offset known only at run time (from tracefs). The
/// mask bounds it for the verifier; tracepoint records are far smaller.
#[inline(always)]
fn ctx_field<T: Copy>(ctx: &TracePointContext, offset: u64) -> Option<T> {
    let p = unsafe { (ctx.as_ptr() as *const u8).add((offset & 0x3ff) as usize) };
    unsafe { read_kernel(p as *const T) }
}

/// The current process's session cgroup id, if it is in a session whose
/// commands are recorded.
#[inline(always)]
fn recording_commands() -> Option<u64> {
    let (cgroup_id, s) = current_session()?;
    (s.flags & SESSION_RECORD_COMMANDS != 0).then_some(cgroup_id)
}

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    if recording_commands().is_none() {
        return 0;
    }
    if let Some(child) = ctx_field::<i32>(&ctx, config(CONFIG_FORK_CHILD_PID_OFFSET)) {
        let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
        let _ = PPIDS.insert(&(child as u32), &parent, 0);
    }
    0
}

/// Fills the record header for the current process.
#[inline(always)]
fn header(h: &mut CommandEvent, cgroup_id: u64, return_code: i32) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    h.kind = EVENT_COMMAND;
    h.pid = tgid;
    h.ppid = unsafe { PPIDS.get(&tgid) }.copied().unwrap_or(0);
    h.uid = bpf_get_current_uid_gid() as u32;
    h.cgroup_id = cgroup_id;
    h.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    h.return_code = return_code;
    h.path_len = 0;
    h.argv_len = 0;
    h.argv_total = 0;
}

/// Hides what LLVM knows of a value's range, so that a mask or check it would
/// drop as redundant reaches the verifier, which may not have derived the
/// same range (older verifiers, such as 6.1's, derive less).
#[inline(always)]
fn opaque(v: usize) -> usize {
    let x = v;
    unsafe { core::ptr::read_volatile(&x) }
}

#[inline(always)]
fn argv_limit() -> u64 {
    let l = config(CONFIG_ARGV_LIMIT);
    if l == 0 || l > ARGV_CAP as u64 {
        ARGV_CAP as u64
    } else {
        l
    }
}

/// Sends header + path + argv from the scratch area.
#[inline(always)]
fn submit(scratch: &CommandScratch, argv_off: usize, argv_len: usize) {
    let size = core::mem::size_of::<CommandEvent>()
        + (argv_off & (2 * PATH_CAP - 1))
        + (argv_len & (2 * ARGV_CAP - 1));
    let size = opaque(size);
    if size > core::mem::size_of::<CommandScratch>() {
        return;
    }
    let bytes =
        unsafe { core::slice::from_raw_parts(scratch as *const CommandScratch as *const u8, size) };
    if COMMAND_EVENTS.output::<[u8]>(bytes, 0).is_err() {
        count_lost(LOST_COMMAND);
    }
}

/// A successful exec, seen once the new program is in place: its argument
/// strings were just written by the kernel onto the new stack, so they are
/// present and readable (unlike at syscall entry).
#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    let Some(cgroup_id) = recording_commands() else {
        return 0;
    };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let scratch = unsafe { &mut *scratch };
    header(&mut scratch.header, cgroup_id, 0);

    // filename: a __data_loc field (offset in the low 16 bits).
    let loc = ctx_field::<u32>(&ctx, config(CONFIG_EXEC_FILENAME_OFFSET)).unwrap_or(0);
    let src = unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize) };
    let first = unsafe { read_kernel(src) }.unwrap_or(b'/');
    // A relative name (./tool) gets the cwd in front, resolved here while
    // the process surely exists.
    let dir = if first != b'/' {
        unsafe { cwd_prefix(scratch.data.as_mut_ptr()) }
    } else {
        0
    };
    let n = unsafe {
        bpf_probe_read_kernel_str(
            scratch.data.as_mut_ptr().add(dir & (PATH_CAP - 1)) as *mut _,
            PATH_CAP as u32,
            src as *const _,
        )
    };
    let path_len = if n > 0 {
        (dir & (PATH_CAP - 1)) + n as usize
    } else {
        0
    };
    scratch.header.path_len = path_len as u32;

    // The System V initial stack: argc, argv[argc], NULL, envp[], NULL.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
    let sp = unsafe { read_kernel(core::ptr::addr_of!((*regs).rsp)) }.unwrap_or(0);
    let argc = read_user_u64(sp).unwrap_or(0);
    let argv0 = read_user_u64(sp + 8).unwrap_or(0);
    let envp0 = read_user_u64(sp + 8 * (argc + 2)).unwrap_or(0);
    let argv_off = path_len & (2 * PATH_CAP - 1);
    let mut total = 0u64;
    if argc > 0 && argv0 != 0 {
        total = if envp0 > argv0 {
            envp0 - argv0
        } else {
            // No environment: the arguments end after the last one.
            let last = read_user_u64(sp + 8 * argc).unwrap_or(0);
            let tmp = unsafe { scratch.data.as_mut_ptr().add(argv_off) };
            let l = unsafe {
                bpf_probe_read_user_str(tmp as *mut _, ARGV_CAP as u32, last as *const _)
            };
            if last >= argv0 && l > 0 {
                last - argv0 + l as u64
            } else {
                0
            }
        };
    }
    let mut len = total;
    let limit = argv_limit();
    if len > limit {
        len = limit;
    }
    let len = (len as usize) & (2 * ARGV_CAP - 1);
    if len > 0 && len <= ARGV_CAP {
        // LLVM turns the check above into one on `len - 1`, which bounds
        // another register than the size passed below; older verifiers (6.1)
        // then see an unbounded size. The mask is on the register passed.
        let len = opaque(len) & (2 * ARGV_CAP - 1);
        let dst = unsafe { scratch.data.as_mut_ptr().add(argv_off) };
        if unsafe { bpf_probe_read_user(dst as *mut _, len as u32, argv0 as *const _) } != 0 {
            scratch.header.argv_len = 0;
        } else {
            scratch.header.argv_len = len as u32;
        }
    }
    scratch.header.argv_total = total as u32;
    submit(scratch, argv_off, scratch.header.argv_len as usize);
    0
}

/// The first byte of a user string (is it an absolute path?).
#[inline(always)]
fn read_user_u8(addr: u64) -> Option<u8> {
    let mut v = 0u8;
    let r = unsafe { bpf_probe_read_user(&mut v as *mut u8 as *mut _, 1, addr as *const _) };
    (r == 0).then_some(v)
}

#[inline(always)]
fn read_user_u64(addr: u64) -> Option<u64> {
    let mut v = 0u64;
    let r = unsafe { bpf_probe_read_user(&mut v as *mut u64 as *mut _, 8, addr as *const _) };
    (r == 0).then_some(v)
}

#[inline(always)]
unsafe fn read_kernel<T: Copy>(p: *const T) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    let r = bpf_probe_read_kernel(
        v.as_mut_ptr() as *mut _,
        core::mem::size_of::<T>() as u32,
        p as *const _,
    );
    (r == 0).then(|| v.assume_init())
}

/// sys_enter_execve(at): remember the pointers, in case the exec fails.
#[inline(always)]
fn stash_exec(ctx: &TracePointContext, filename_off: usize, argv_off: usize) -> u32 {
    if recording_commands().is_none() {
        return 0;
    }
    let (Ok(filename), Ok(argv)) = (unsafe { ctx.read_at::<u64>(filename_off) }, unsafe {
        ctx.read_at::<u64>(argv_off)
    }) else {
        return 0;
    };
    let _ = EXECS.insert(&bpf_get_current_pid_tgid(), &ExecArgs { filename, argv }, 0);
    0
}

// Syscall tracepoints: args start at offset 16 (common fields, syscall nr).
#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    stash_exec(&ctx, 16, 24)
}

#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    stash_exec(&ctx, 24, 32)
}

#[tracepoint]
pub fn sys_exit_execve(ctx: TracePointContext) -> u32 {
    exec_failed(&ctx)
}

#[tracepoint]
pub fn sys_exit_execveat(ctx: TracePointContext) -> u32 {
    exec_failed(&ctx)
}

/// A failed exec: the caller's image is still the current one, and the
/// kernel has just read the arguments from it.
#[inline(always)]
fn exec_failed(ctx: &TracePointContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    let Some(args) = (unsafe { EXECS.get(&key) }).copied() else {
        return 0;
    };
    let _ = EXECS.remove(&key);
    let ret = unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0);
    if ret >= 0 {
        return 0; // success is reported by sched_process_exec
    }
    let Some(cgroup_id) = recording_commands() else {
        return 0;
    };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let scratch = unsafe { &mut *scratch };
    header(&mut scratch.header, cgroup_id, ret as i32);
    let first = read_user_u8(args.filename).unwrap_or(0);
    let dir = if first != b'/' {
        unsafe { cwd_prefix(scratch.data.as_mut_ptr()) }
    } else {
        0
    };
    let n = unsafe {
        bpf_probe_read_user_str(
            scratch.data.as_mut_ptr().add(dir & (PATH_CAP - 1)) as *mut _,
            PATH_CAP as u32,
            args.filename as *const _,
        )
    };
    let path_len = if n > 0 {
        (dir & (PATH_CAP - 1)) + n as usize
    } else {
        0
    };
    scratch.header.path_len = path_len as u32;
    let argv_off = path_len & (2 * PATH_CAP - 1);
    let limit = argv_limit() as usize;
    let mut pos = 0usize;
    let mut total = 0u64;
    let mut i = 0u32;
    while i < FAILED_ARGS_MAX {
        let Some(p) = read_user_u64(args.argv + 8 * i as u64) else {
            break;
        };
        if p == 0 {
            break;
        }
        let at = pos & (ARGV_CAP - 1);
        let room = ARGV_CAP - at;
        let dst = unsafe { scratch.data.as_mut_ptr().add(argv_off + at) };
        let l = unsafe { bpf_probe_read_user_str(dst as *mut _, room as u32, p as *const _) };
        if l <= 0 {
            break;
        }
        total += l as u64;
        if pos + (l as usize) > limit {
            break;
        }
        pos += l as usize;
        i += 1;
    }
    scratch.header.argv_len = pos as u32;
    scratch.header.argv_total = total as u32;
    submit(scratch, argv_off, pos);
    0
}

// ---- Disk recording ----------------------------------------------------

/// Kernel struct layout (set by the loader from the kernel's BTF).
#[no_mangle]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    task_fs: 0,
    task_files: 0,
    fs_pwd: 0,
    files_fdt: 0,
    fdtable_fd: 0,
    fdtable_max_fds: 0,
    file_f_path: 0,
    path_mnt: 0,
    path_dentry: 0,
    mount_mnt: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    vfsmount_root: 0,
    dentry_parent: 0,
    dentry_name: 0,
    qstr_name: 0,
};

#[map]
static DISK_EVENTS: RingBuf = RingBuf::with_byte_size(DISK_BUFFER_PAGES * 4096, 0);
#[map]
static DISK_SCRATCH: PerCpuArray<DiskScratch> = PerCpuArray::with_max_entries(1, 0);
/// Include/exclude path prefixes; the longest match decides.
#[map]
static PATH_RULES: LpmTrie<PathKeyData, u8> = LpmTrie::with_max_entries(4096, 0);
/// Per-session rate window, keyed by cgroup id.
#[map]
static DISK_RATE: HashMap<u64, DiskRate> = HashMap::with_max_entries(MAX_SESSIONS, 0);
/// Disk events not recorded because a session was over its rate, per CPU.
#[map]
static DISK_DROPPED: PerCpuHashMap<u64, u64> =
    PerCpuHashMap::with_max_entries(MAX_SESSIONS, BPF_F_NO_PREALLOC);
/// open(2)-family calls in flight in sessions (pid_tgid -> arguments).
#[map]
static OPENS: LruHashMap<u64, OpenArgs> = LruHashMap::with_max_entries(16_384, 0);

#[repr(C)]
struct DiskScratch {
    header: DiskEvent,
    /// Doubled so that a masked offset plus one write stays inside (verifier).
    path: [u8; 2 * PATH_CAP],
    key: Key<PathKeyData>,
}

/// Directory entries from a path's leaf up to its root (0: a mount crossing).
#[repr(C)]
struct Walk {
    comps: [u64; WALK_STEPS],
    n: u64,
}

#[map]
static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

const AT_FDCWD: i32 = -100;
/// creat(2) is open(O_CREAT | O_WRONLY | O_TRUNC).
const CREAT_FLAGS: u32 = 0o1101;
/// Longest name of one path component, with its NUL.
const NAME_MAX: u32 = 256;
/// Steps of the walk up to the root: one per directory or mount crossing.
const WALK_STEPS: usize = 2 * DIR_DEPTH_MAX;

#[inline(always)]
fn recording_disk() -> Option<u64> {
    let (cgroup_id, s) = current_session()?;
    (s.flags & SESSION_RECORD_DISK != 0).then_some(cgroup_id)
}

/// sys_enter_open*: remember the arguments for the exit, where the result is known.
#[inline(always)]
fn stash_open(filename: u64, flags: u32, dirfd: i32, how: u64) -> u32 {
    if recording_disk().is_none() {
        return 0;
    }
    let args = OpenArgs {
        filename,
        flags,
        dirfd,
        how,
    };
    let _ = OPENS.insert(&bpf_get_current_pid_tgid(), &args, 0);
    0
}

#[tracepoint]
pub fn sys_enter_openat(ctx: TracePointContext) -> u32 {
    let dirfd = unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0) as i32;
    let filename = unsafe { ctx.read_at::<u64>(24) }.unwrap_or(0);
    let flags = unsafe { ctx.read_at::<u64>(32) }.unwrap_or(0) as u32;
    stash_open(filename, flags, dirfd, 0)
}

#[tracepoint]
pub fn sys_enter_openat2(ctx: TracePointContext) -> u32 {
    let dirfd = unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0) as i32;
    let filename = unsafe { ctx.read_at::<u64>(24) }.unwrap_or(0);
    // The flags are in user memory (struct open_how); read at exit, after
    // the kernel has copied them.
    let how = unsafe { ctx.read_at::<u64>(32) }.unwrap_or(0);
    stash_open(filename, 0, dirfd, how)
}

#[tracepoint]
pub fn sys_enter_open(ctx: TracePointContext) -> u32 {
    let filename = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0);
    let flags = unsafe { ctx.read_at::<u64>(24) }.unwrap_or(0) as u32;
    stash_open(filename, flags, AT_FDCWD, 0)
}

#[tracepoint]
pub fn sys_enter_creat(ctx: TracePointContext) -> u32 {
    let filename = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0);
    stash_open(filename, CREAT_FLAGS, AT_FDCWD, 0)
}

/// Attached to sys_exit_open, _openat, _openat2 and _creat.
#[tracepoint]
pub fn sys_exit_open(ctx: TracePointContext) -> u32 {
    open_exit(&ctx)
}

/// One open, successful or not, seen at syscall exit where the result is
/// known. A successful open is named by the file it opened; a failed one by
/// the path as given, read here because the kernel has just copied the same
/// string itself, so its page is present (at syscall entry it may not be),
/// and made absolute from the directory it was resolved against.
#[inline(always)]
fn open_exit(ctx: &TracePointContext) -> u32 {
    let key = bpf_get_current_pid_tgid();
    let Some(args) = (unsafe { OPENS.get(&key) }).copied() else {
        return 0;
    };
    let _ = OPENS.remove(&key);
    let Some(cgroup_id) = recording_disk() else {
        return 0;
    };
    let ret = unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0);
    let Some(scratch) = DISK_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let scratch = unsafe { &mut *scratch };
    let return_code = if ret < 0 { ret as i32 } else { 0 };
    // struct open_how starts with the u64 flags.
    let flags = if args.how != 0 {
        read_user_u64(args.how).unwrap_or(0) as u32
    } else {
        args.flags
    };
    disk_header(&mut scratch.header, cgroup_id, flags, return_code);

    // A successful open names the file by its real path: the new fd's
    // f_path, walked like a directory (symlinks and ".." resolved, so a
    // link to /etc/shadow is reported as /etc/shadow).
    if ret >= 0 {
        if let Some(p) = unsafe { directory_of(scratch.path.as_mut_ptr(), ret as i32) } {
            let len = if p == 0 {
                scratch.path[0] = b'/';
                scratch.path[1] = 0;
                2
            } else {
                // The last component was written with its NUL.
                p + 1
            };
            disk_submit(scratch, cgroup_id, len);
            return 0;
        }
    }
    let first = read_user_u8(args.filename).unwrap_or(0);
    // Failed (or unresolvable): directory part first (empty for an absolute path), then the path as given.
    let mut pos = 0usize;
    if first != b'/' {
        if let Some(p) = unsafe { directory_of(scratch.path.as_mut_ptr(), args.dirfd) } {
            pos = p;
            scratch.path[pos & (PATH_CAP - 1)] = b'/';
            pos += 1;
        }
    }
    let at = pos & (PATH_CAP - 1);
    let n = unsafe {
        bpf_probe_read_user_str(
            scratch.path.as_mut_ptr().add(at) as *mut _,
            PATH_CAP as u32,
            args.filename as *const _,
        )
    };
    if n <= 0 {
        // No path to report (unreadable, or the walk failed and the string
        // did too): counted as lost rather than dropped silently.
        count_lost(LOST_DISK);
        return 0;
    }
    disk_submit(scratch, cgroup_id, at + n as usize);
    0
}

/// Writes "<cwd>/" at `buf` (see `directory_of`); returns its length, 0 if
/// the cwd cannot be resolved (the path then stays relative).
#[inline(always)]
unsafe fn cwd_prefix(buf: *mut u8) -> usize {
    match directory_of(buf, AT_FDCWD) {
        Some(p) => {
            *buf.add(p & (PATH_CAP - 1)) = b'/';
            p + 1
        }
        None => 0,
    }
}

#[inline(always)]
unsafe fn read_ptr(base: u64, off: u32) -> u64 {
    read_kernel((base + off as u64) as *const u64).unwrap_or(0)
}

/// Writes the absolute path of the directory a relative path is resolved
/// against (the cwd for AT_FDCWD, else the file open as `dirfd`) at `buf`,
/// without a trailing slash; returns its length (at most PATH_CAP - NAME_MAX).
///
/// # Safety
/// `buf` points into a map value with at least PATH_CAP + NAME_MAX bytes.
#[inline(always)]
unsafe fn directory_of(buf: *mut u8, dirfd: i32) -> Option<usize> {
    let walk = &mut *WALK.get_ptr_mut(0)?;
    let o = unsafe { core::ptr::read_volatile(&KERNEL_OFFSETS) };
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    // &task->fs->pwd, or &task->files->fdt->fd[dirfd]->f_path
    let path = unsafe {
        if dirfd == AT_FDCWD {
            let fs = read_ptr(task, o.task_fs);
            if fs == 0 {
                return None;
            }
            fs + o.fs_pwd as u64
        } else {
            let files = read_ptr(task, o.task_files);
            let fdt = if files != 0 {
                read_ptr(files, o.files_fdt)
            } else {
                0
            };
            if fdt == 0 || dirfd < 0 {
                return None;
            }
            let max = read_kernel((fdt + o.fdtable_max_fds as u64) as *const u32).unwrap_or(0);
            if dirfd as u32 >= max {
                return None;
            }
            let fds = read_ptr(fdt, o.fdtable_fd);
            let file = read_ptr(fds + 8 * dirfd as u64, 0);
            if file == 0 {
                return None;
            }
            file + o.file_f_path as u64
        }
    };
    let mut vfsmnt = unsafe { read_ptr(path, o.path_mnt) };
    let mut dentry = unsafe { read_ptr(path, o.path_dentry) };
    if vfsmnt == 0 || dentry == 0 {
        return None;
    }
    let mut mount = vfsmnt - o.mount_mnt as u64;
    // Up to the root, leaf first; a mount crossing leaves a 0 slot. One
    // loop counter only, so the verifier's states merge at the loop head.
    let mut i = 0usize;
    let mut done = false;
    while i < WALK_STEPS {
        let root = unsafe { read_ptr(vfsmnt, o.vfsmount_root) };
        let mut comp = 0u64;
        if dentry == root {
            let parent = unsafe { read_ptr(mount, o.mount_parent) };
            if parent == mount || parent == 0 {
                done = true;
                break;
            }
            dentry = unsafe { read_ptr(mount, o.mount_mountpoint) };
            mount = parent;
            vfsmnt = parent + o.mount_mnt as u64;
        } else {
            let parent = unsafe { read_ptr(dentry, o.dentry_parent) };
            if parent == dentry || parent == 0 {
                done = true;
                break;
            }
            comp = dentry;
            dentry = parent;
        }
        walk.comps[i & (WALK_STEPS - 1)] = comp;
        i += 1;
    }
    if !done {
        return None;
    }
    // Through memory: the verifier then treats the count as unknown instead
    // of exploring the loop below once per possible value.
    walk.n = i as u64;
    let n = core::ptr::read_volatile(&walk.n) as usize;
    // Root first: "/name" per component.
    let mut pos = 0usize;
    let mut j = 0usize;
    while j < WALK_STEPS {
        if j >= n {
            break;
        }
        let d = walk.comps[(n - 1 - j) & (WALK_STEPS - 1)];
        j += 1;
        if d == 0 {
            continue;
        }
        let name = unsafe { read_ptr(d, o.dentry_name + o.qstr_name) };
        if pos >= PATH_CAP - NAME_MAX as usize {
            return None;
        }
        *buf.add(pos & (PATH_CAP - 1)) = b'/';
        pos += 1;
        let l = bpf_probe_read_kernel_str(
            buf.add(pos & (PATH_CAP - 1)) as *mut _,
            NAME_MAX,
            name as *const _,
        );
        if l <= 1 {
            return None;
        }
        pos += l as usize - 1;
    }
    Some(pos)
}

#[inline(always)]
fn disk_header(h: &mut DiskEvent, cgroup_id: u64, flags: u32, return_code: i32) {
    h.kind = EVENT_DISK;
    h.pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    h.uid = bpf_get_current_uid_gid() as u32;
    h.flags = flags;
    h.cgroup_id = cgroup_id;
    h.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    h.return_code = return_code;
    h.path_len = 0;
    h._pad = 0;
}

/// Applies the path filter (to absolute paths; one the kernel could not
/// resolve goes to userspace unjudged) and the session's rate limit, then
/// sends header + path.
#[inline(always)]
fn disk_submit(scratch: &mut DiskScratch, cgroup_id: u64, path_len: usize) {
    let path_len = path_len & (2 * PATH_CAP - 1);
    if path_len == 0 {
        return;
    }
    if scratch.path[0] == b'/' {
        let n = if path_len > PATH_PREFIX_MAX {
            PATH_PREFIX_MAX
        } else {
            path_len
        };
        scratch.key.prefix_len = 8 * n as u32;
        unsafe {
            bpf_probe_read_kernel(
                core::ptr::addr_of_mut!(scratch.key.data) as *mut _,
                PATH_PREFIX_MAX as u32,
                scratch.path.as_ptr() as *const _,
            )
        };
        match PATH_RULES.get(&scratch.key) {
            Some(&PATH_INCLUDE) => {}
            _ => return,
        }
    }
    if !within_rate(cgroup_id) {
        return;
    }
    scratch.header.path_len = path_len as u32;
    let size = core::mem::size_of::<DiskEvent>() + path_len;
    if size > core::mem::size_of::<DiskEvent>() + 2 * PATH_CAP {
        return;
    }
    let bytes =
        unsafe { core::slice::from_raw_parts(scratch as *const DiskScratch as *const u8, size) };
    if DISK_EVENTS.output::<[u8]>(bytes, 0).is_err() {
        count_lost(LOST_DISK);
    }
}

/// At most `CONFIG_DISK_RATE` events per session per one-second window.
/// BPF in Rust has no atomic read-modify-write (the target has no CAS), so
/// CPUs opening at the same instant may both pass with one count: the limit
/// can be exceeded slightly under contention. Drops are counted per CPU,
/// which is exact.
#[inline(always)]
fn within_rate(cgroup_id: u64) -> bool {
    let limit = config(CONFIG_DISK_RATE);
    if limit == 0 {
        return true;
    }
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let Some(st) = DISK_RATE.get_ptr_mut(&cgroup_id) else {
        let fresh = DiskRate {
            window_start: now,
            count: 1,
        };
        let _ = DISK_RATE.insert(&cgroup_id, &fresh, 0);
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
    match DISK_DROPPED.get_ptr_mut(&cgroup_id) {
        Some(d) => unsafe { *d += 1 },
        None => {
            let _ = DISK_DROPPED.insert(&cgroup_id, &1, 0);
        }
    }
    false
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
