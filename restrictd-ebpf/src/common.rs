//! What every program shares: the session lookup, the load-time
//! configuration, record headers, reads and loss counters.

use core::mem::offset_of;

use aya_ebpf::{
    bindings::{pt_regs, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_ktime_get_boot_ns,
        generated::{
            bpf_get_current_comm, bpf_get_current_task_btf, bpf_probe_read_kernel,
            bpf_probe_read_user, bpf_task_pt_regs,
        },
    },
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::TracePointContext,
    EbpfContext,
};
use restrictd_common::{
    presence_bit, slot_index, Dropped, KernelOffsets, LoadConfig, Presence, RecordHeader, Runtime,
    SessionEntry, SessionSlot, ShareWindow, EXE_UNLINKED, FS_EXCLUDE_MAX, IDENTITY_KEY, LOST_SLOTS,
    MAX_IDENTITIES, MAX_SESSIONS, PRESENCE_WORDS, SESSION_SLOTS as SLOT_COUNT, SHARE_PER_SECOND,
};

pub const AF_INET6: u32 = 10;

#[map]
pub static SESSIONS: HashMap<u64, SessionEntry> = HashMap::with_max_entries(MAX_SESSIONS, 0);
/// The fast path in front of `SESSIONS` (see `SessionSlot`); the daemon
/// writes it through a shared mapping.
#[map]
static SESSION_SLOTS: Array<SessionSlot> = Array::with_max_entries(SLOT_COUNT, BPF_F_MMAPABLE);
/// Which keys may be in `SESSIONS` and `IDENTITIES` (see `Presence`);
/// the daemon writes it through a shared mapping.
#[map]
static PRESENCE: Array<Presence> = Array::with_max_entries(1, BPF_F_MMAPABLE);
/// Restricted identities, by uid: what applies to a process of that user
/// (or with that audit login uid) outside every session.
#[map]
pub static IDENTITIES: HashMap<u32, SessionEntry> = HashMap::with_max_entries(MAX_IDENTITIES, 0);
/// Events the kernel could not deliver, per CPU, indexed by event kind.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOST_SLOTS, 0);
/// The same per record key (session, user manager or identity), with the
/// events a rate limit kept out: what the daemon reports per session.
#[map]
static DROPPED: PerCpuHashMap<u64, Dropped> =
    PerCpuHashMap::with_max_entries(MAX_SESSIONS + MAX_IDENTITIES, BPF_F_NO_PREALLOC);
/// Per record key: its records in the current second, counted while a
/// ring buffer is over half full (`within_share`).
#[map]
static SHARES: LruHashMap<u64, ShareWindow> =
    LruHashMap::with_max_entries(MAX_SESSIONS + MAX_IDENTITIES, 0);
/// `RUNTIME[0]`: what the daemon changes while programs run.
#[map]
static RUNTIME: Array<Runtime> = Array::with_max_entries(1, 0);
/// `KERNEL_GENERATION[0]`: raised by the programs only (`raise_generation`).
#[map]
static KERNEL_GENERATION: Array<u64> = Array::with_max_entries(1, 0);

/// Set by the loader (`EbpfLoader::override_global`); read-only here.
#[unsafe(no_mangle)]
static LOAD_CONFIG: LoadConfig = LoadConfig {
    exec_filename_offset: 0,
    argv_limit: 0,
    disk_rate: 0,
    attach_dst_root_offset: 0,
    attach_dst_id_offset: 0,
    attach_pid_offset: 0,
    kernel: KernelOffsets {
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
        mount_mnt_ns: 0,
        vfsmount_root: 0,
        dentry_parent: 0,
        dentry_name: 0,
        qstr_name: 0,
        task_loginuid: 0,
        file_f_inode: 0,
        inode_i_mode: 0,
        inode_i_sb: 0,
        sb_s_magic: 0,
        task_nsproxy: 0,
        nsproxy_mnt_ns: 0,
        mnt_ns_user_ns: 0,
        user_ns_level: 0,
        task_mm: 0,
        mm_exe_file: 0,
        inode_i_ino: 0,
        inode_i_nlink: 0,
        sb_s_dev: 0,
        task_real_parent: 0,
        task_tgid: 0,
        task_sessionid: 0,
        inode_i_rdev: 0,
        file_private_data: 0,
        tty_file_private_tty: 0,
        tty_index: 0,
        tty_winsize: 0,
        io_kiocb_opcode: 0,
        io_kiocb_cmd: 0,
        io_open_dfd: 0,
        io_open_filename: 0,
        io_open_how: 0,
        task_cgroups: 0,
        css_set_dfl_cgrp: 0,
        cgroup_kn: 0,
        kernfs_node_id: 0,
        task_cred: 0,
        cred_uid: 0,
        task_ti_status: 0,
        task_nr_migrations: 0,
        task_comm: 0,
    },
    tty_rate: 0,
    disk_exclude_devices: 0,
    exit_work: 0,
    disk_exclude_fs: [0; FS_EXCLUDE_MAX],
};

/// The load-time configuration. The volatile read keeps the compiler from
/// folding the zeros written above into the code.
#[inline(always)]
pub fn load_config() -> LoadConfig {
    unsafe { core::ptr::read_volatile(&LOAD_CONFIG) }
}

/// Fields of `LOAD_CONFIG` read alone, for the code on every syscall of
/// the host (`exit_syscall`), where a copy of the whole configuration
/// would not do.
#[inline(always)]
pub fn exit_work() -> u32 {
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(LOAD_CONFIG.exit_work)) }
}

#[inline(always)]
pub fn ti_status_offset() -> u32 {
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(LOAD_CONFIG.kernel.task_ti_status)) }
}

#[inline(always)]
fn comm_offset() -> u32 {
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(LOAD_CONFIG.kernel.task_comm)) }
}

/// `thread_info.status`: the current syscall came through the ia32 entry.
pub const TS_COMPAT: u32 = 0x0002;
/// Where a syscall's number and arguments are in x86-64's `struct pt_regs`
/// (x86-64: di, si, dx; ia32: bx, cx, dx).
pub const REGS_BX: u32 = offset_of!(pt_regs, rbx) as u32;
pub const REGS_CX: u32 = offset_of!(pt_regs, rcx) as u32;
pub const REGS_DX: u32 = offset_of!(pt_regs, rdx) as u32;
pub const REGS_SI: u32 = offset_of!(pt_regs, rsi) as u32;
pub const REGS_DI: u32 = offset_of!(pt_regs, rdi) as u32;
pub const REGS_ORIG_AX: u32 = offset_of!(pt_regs, orig_rax) as u32;

/// The current task's saved user registers (its syscall's number and
/// arguments, which the kernel saved at entry and does not change; a
/// tracer can change them only at the entry stop, before the call runs).
#[inline(always)]
pub fn user_regs(task: *mut aya_ebpf::bindings::task_struct) -> *const u8 {
    unsafe { bpf_task_pt_regs(task) as *const u8 }
}

/// Whether `task` may be sshd: its name starts with "sshd" (OpenSSH's
/// programs are sshd and sshd-session; a process cannot rename another).
/// One load, first in every read and write exit of the host.
#[inline(always)]
pub fn maybe_relay(task: *const u8) -> bool {
    let at = comm_offset();
    at != 0 && unsafe { btf_field::<u32>(task, at) } == u32::from_le_bytes(*b"sshd")
}

/// The session the current process is in, and the key its records carry:
/// the process's own cgroup, or else its ancestor at the user-manager level
/// (the user's systemd instance, registered while the user has a restricted
/// session, so `systemd-run --user` does not leave it), or else its identity:
/// a restricted uid, as the process's uid or its audit login uid (key
/// `IDENTITY_KEY | uid`), so that cron jobs, other logins and anything a
/// session reaches through them stay restricted. Processes of other users
/// end at `PRESENCE` (see `session_of`), after a read of their login uid.
#[inline(always)]
pub fn current_session() -> Option<(u64, SessionEntry)> {
    current_session_in::<true>()
}

/// `current_session` without `PRESENCE`'s early answer, for a program on
/// a rare path that is near the verifier's limit (`disk_uring`): the
/// check's extra paths made the verifier walk its path walk past 1 million
/// instructions.
#[inline(always)]
pub fn current_session_exact() -> Option<(u64, SessionEntry)> {
    current_session_in::<false>()
}

#[inline(always)]
fn current_session_in<const PRESENT: bool>() -> Option<(u64, SessionEntry)> {
    // One helper call, then direct loads (`btf_field`): the cgroup id and
    // the uid are what `bpf_get_current_cgroup_id` and
    // `bpf_get_current_uid_gid` return, without their calls. Every
    // process on the host runs this on each connect, send and open.
    let o = load_config().kernel;
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let cgroup_id = unsafe {
        let css = btf_field::<*const u8>(task, o.task_cgroups);
        let cgroup = btf_field::<*const u8>(css, o.css_set_dfl_cgrp);
        let kn = btf_field::<*const u8>(cgroup, o.cgroup_kn);
        btf_field::<u64>(kn, o.kernfs_node_id)
    };
    let mut uid = 0;
    let found = session_of::<PRESENT>(
        cgroup_id,
        |level| unsafe { bpf_get_current_ancestor_cgroup_id(level) },
        || {
            uid =
                unsafe { btf_field::<u32>(btf_field::<*const u8>(task, o.task_cred), o.cred_uid) };
            uid
        },
    );
    if found.is_some() {
        return found;
    }
    // session_of has read `uid` on its way to None.
    if o.task_loginuid == 0 {
        return None;
    }
    let loginuid = unsafe { btf_field::<u32>(task, o.task_loginuid) };
    // u32::MAX: never set (daemons started at boot).
    if loginuid == uid || loginuid == u32::MAX {
        return None;
    }
    if PRESENT && presence().is_some_and(|p| !has_bit(&p.uids, loginuid as u64)) {
        return None;
    }
    identity(loginuid)
}

/// The one lookup order, for processes (`current_session`) and sockets
/// (`skb`): cgroup `id` in `SESSION_SLOTS`, then in `SESSIONS`, then its
/// ancestor at the user-manager level (`ancestor(level)`), then `uid()` in `IDENTITIES`.
/// A session's own calls find their cgroup in its slot first; everything
/// else reads the manager's id and the uid, then `PRESENCE`, which answers
/// for most of the host without the hash lookups.
#[inline(always)]
pub fn session_of<const PRESENT: bool>(
    id: u64,
    ancestor: impl Fn(i32) -> u64,
    mut uid: impl FnMut() -> u32,
) -> Option<(u64, SessionEntry)> {
    if let Some(s) = slot_session(id) {
        return Some((id, s));
    }
    // Most of the host is in no session and no identity: one early exit
    // for it, in front of the hash lookups; the paths after it are the
    // exact lookup's. Past it (rare: a session not in its slot, a manager
    // or an identity), the manager's id and the uid are read again.
    if PRESENT {
        if let Some(p) = presence() {
            let level = manager_level();
            let manager = if level != 0 {
                ancestor(level as i32)
            } else {
                0
            };
            if !has_bit(&p.cgroups, id)
                && (manager == 0 || !has_bit(&p.cgroups, manager))
                && !has_bit(&p.uids, uid() as u64)
            {
                return None;
            }
        }
    }
    if let Some(s) = unsafe { SESSIONS.get(id) } {
        return Some((id, *s));
    }
    let level = manager_level();
    if level != 0 {
        let manager = ancestor(level as i32);
        if manager != 0 && manager != id {
            if let Some(s) = unsafe { SESSIONS.get(manager) } {
                return Some((manager, *s));
            }
        }
    }
    identity(uid())
}

/// The cgroup level of user managers (`Runtime`); 0: none registered.
#[inline(always)]
fn manager_level() -> u32 {
    RUNTIME.get(0).map(|r| r.manager_level).unwrap_or(0)
}

/// `PRESENCE[0]` while it covers every key in the maps (no insertion by
/// the kernel since the daemon's last scan); None: look in the maps.
#[inline(always)]
fn presence() -> Option<&'static Presence> {
    let p = PRESENCE.get(0)?;
    let kernel = KERNEL_GENERATION.get(0).copied().unwrap_or(0);
    (unsafe { core::ptr::read_volatile(&p.kernel_generation) } == kernel).then_some(p)
}

/// Whether `key`'s bit is set in one of `Presence`'s bitmaps.
#[inline(always)]
fn has_bit(words: &[u64; PRESENCE_WORDS], key: u64) -> bool {
    let (word, bit) = presence_bit(key);
    // The index is masked below the array's length for the verifier.
    let w = unsafe { core::ptr::read_volatile(&words[word & (PRESENCE_WORDS - 1)]) };
    w & bit != 0
}

/// Cgroup `id`'s entry in its slot, if the slot holds it and no write
/// was under way while it was read (`SessionSlot`). Volatile reads keep the
/// order seq, id, entry, seq; x86-64 does not reorder loads with loads.
#[inline(always)]
fn slot_session(id: u64) -> Option<SessionEntry> {
    let slot = SESSION_SLOTS.get_ptr(slot_index(id))?;
    unsafe {
        let seq = core::ptr::read_volatile(&(*slot).seq);
        if id == 0 || seq & 1 != 0 || core::ptr::read_volatile(&(*slot).cgroup_id) != id {
            return None;
        }
        let entry = core::ptr::read_volatile(&(*slot).entry);
        (core::ptr::read_volatile(&(*slot).seq) == seq).then_some(entry)
    }
}

/// The generation a socket's "no session" is valid for (see `Runtime`):
/// the daemon's raises plus the kernel's. Each is only ever raised, so any
/// raise changes the sum.
#[inline(always)]
pub fn generation() -> u64 {
    let daemon = RUNTIME.get(0).map(|r| r.generation).unwrap_or(0);
    let kernel = KERNEL_GENERATION.get(0).copied().unwrap_or(0);
    daemon.wrapping_add(kernel)
}

/// Raises the generation after a session was added here in the kernel.
/// In a map of its own: the daemon rewrites `RUNTIME[0]` whole, which
/// would undo a raise made between its read and its write.
#[inline(always)]
pub fn raise_generation() {
    if let Some(g) = KERNEL_GENERATION.get_ptr_mut(0) {
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                g, 1,
            )
        };
    }
}

/// The entry of a restricted identity, with its record key.
#[inline(always)]
fn identity(uid: u32) -> Option<(u64, SessionEntry)> {
    unsafe { IDENTITIES.get(uid) }.map(|s| (IDENTITY_KEY | uid as u64, *s))
}

/// The session's cgroup id, if the current process is in a session with
/// all of `flags`.
#[inline(always)]
pub fn session_with(flags: u32) -> Option<u64> {
    let (cgroup_id, s) = current_session()?;
    (s.flags & flags == flags).then_some(cgroup_id)
}

/// The header every record starts with, for the current process. Loads
/// along the task (one helper call) in place of the pid and uid helpers:
/// every record of every session pays this.
#[inline(always)]
pub fn fill_header(h: &mut RecordHeader, kind: u32, cgroup_id: u64) {
    let o = load_config().kernel;
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    h.kind = kind;
    unsafe {
        // What `bpf_get_current_pid_tgid() >> 32` and `bpf_get_current_uid_gid`
        // return: the ids as the initial namespaces see them.
        h.pid = btf_field::<u32>(task, o.task_tgid);
        h.uid = btf_field::<u32>(btf_field::<*const u8>(task, o.task_cred), o.cred_uid);
        // The helper itself, straight into the record: aya's wrapper zeroes
        // a stack copy byte by byte first. (Loading the name along the task
        // instead made disk_uring too complex for the verifier.)
        bpf_get_current_comm(h.comm.as_mut_ptr() as *mut _, h.comm.len() as u32);
    }
    h.cgroup_id = cgroup_id;
    h.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    h.audit_sid = 0;
    if o.task_sessionid != 0 {
        h.audit_sid = unsafe { btf_field::<u32>(task, o.task_sessionid) };
    }
    let (ino, dev, flags) = exe_id(task);
    h.exe_ino = ino;
    h.exe_dev = dev;
    h.exe_flags = flags;
}

/// The current program's inode number, device (kernel `dev_t`) and
/// `EXE_*` flags; zeros for a kernel thread.
#[inline(always)]
pub fn current_exe_id() -> (u64, u32, u32) {
    exe_id(unsafe { bpf_get_current_task_btf() } as *const u8)
}

/// `current_exe_id` of `task`, a BTF pointer.
#[inline(always)]
fn exe_id(task: *const u8) -> (u64, u32, u32) {
    let o = load_config().kernel;
    // Direct loads (`btf_field`) along BTF pointers.
    let exe = exe_of(task) as *const u8;
    let inode = unsafe { btf_field::<*const u8>(exe, o.file_f_inode) };
    if inode.is_null() {
        return (0, 0, 0);
    }
    let ino = unsafe { btf_field::<u64>(inode, o.inode_i_ino) };
    let sb = unsafe { btf_field::<*const u8>(inode, o.inode_i_sb) };
    let dev = unsafe { btf_field::<u32>(sb, o.sb_s_dev) };
    let nlink = unsafe { btf_field::<u32>(inode, o.inode_i_nlink) };
    let flags = if nlink == 0 { EXE_UNLINKED } else { 0 };
    (ino, dev, flags)
}

/// The current task's running program (`task->mm->exe_file`, a BTF
/// pointer), or 0 (a kernel thread has no mm).
#[inline(always)]
pub fn current_exe() -> u64 {
    exe_of(unsafe { bpf_get_current_task_btf() } as *const u8)
}

#[inline(always)]
fn exe_of(task: *const u8) -> u64 {
    let o = load_config().kernel;
    let mm = unsafe { btf_field::<*const u8>(task, o.task_mm) };
    unsafe { btf_field::<u64>(mm, o.mm_exe_file) }
}

/// The tracepoint record's field at the compile-time offset `OFF`, loaded
/// directly from the context: the kernel checks the program's context
/// reads against the record's size when it is attached. `read_at` is a
/// helper call (tens of ns here), and the open programs read their
/// arguments on every open of every process, before the session lookup.
#[inline(always)]
pub fn tp_field<T: Copy, const OFF: usize>(ctx: &TracePointContext) -> T {
    unsafe { core::ptr::read_volatile((ctx.as_ptr() as *const u8).add(OFF) as *const T) }
}

/// Reads a tracepoint record field at an offset known only at run time
/// (from tracefs). The mask bounds it for the verifier; tracepoint records
/// are far smaller.
#[inline(always)]
pub fn ctx_field<T: Copy>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    let p = unsafe { (ctx.as_ptr() as *const u8).add((offset & 0x3ff) as usize) };
    unsafe { read_kernel(p as *const T) }
}

/// Counts a record of `kind` for record key `key` that could not be
/// written: host-wide, and for its session.
#[inline(always)]
pub fn count_lost(kind: u32, key: u64) {
    if let Some(p) = LOST.get_ptr_mut(kind) {
        // Per-CPU slot: no other writer on this CPU while we run.
        unsafe { *p += 1 };
    }
    count_dropped(key, |d| {
        &mut d.full[kind as usize & (LOST_SLOTS as usize - 1)]
    });
}

/// Whether a record of `kind` for `key` may go into `ring`, and if so the
/// flags to submit it with (`wake_when`). While the ring is at most half
/// full, always: the writer keeps up. Over half, a key
/// gets `SHARE_PER_SECOND` records of a kind per second, so that one
/// session's flood cannot fill the ring and starve the others, whose
/// records go into the half it leaves; the excess is counted as kept out
/// (`count_limited`) and reported as the flooding session's loss. `slot`
/// is the counter used: the kind's, or 0 for always recorded paths, so
/// that a flood of other opens does not use up their share. Without
/// atomic compare-and-swap, CPUs writing at the same instant may both pass
/// on one count: the share can be exceeded slightly.
#[inline(always)]
pub fn within_share(ring: &RingBuf, kind: u32, slot: u32, key: u64, len: u64) -> Option<u64> {
    let used = ring.query(BPF_RB_AVAIL_DATA as u64);
    let size = ring.query(BPF_RB_RING_SIZE as u64);
    let flags = wake_when(used, len, size);
    if used.saturating_mul(2) <= size {
        return Some(flags);
    }
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let slot = slot as usize & (LOST_SLOTS as usize - 1);
    if SHARES.get_ptr_mut(key).is_none() {
        // By reference: the map reads the static itself, no stack copy.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let _ = SHARES.insert(key, &ZERO_SHARE, 0);
    }
    let Some(w) = SHARES.get_ptr_mut(key) else {
        return Some(flags);
    };
    let w = unsafe { &mut *w };
    if now.wrapping_sub(w.window_start) >= 1_000_000_000 {
        w.window_start = now;
        // One store each: a loop or array assignment becomes a memset call.
        for c in w.count.iter_mut() {
            unsafe { core::ptr::write_volatile(c, 0) };
        }
    }
    if w.count[slot] < SHARE_PER_SECOND {
        w.count[slot] += 1;
        return Some(flags);
    }
    count_limited(kind, key);
    None
}

/// The flags to submit a record of `len` bytes with, given the bytes
/// `used` in a ring of `size` (a power of two): the record that fills the
/// ring past an eighth, a quarter, ... wakes the writer; the others do not,
/// and the writer collects them on its own tick (recorder.rs). So a steady
/// stream costs neither the submitting process a wakeup per batch nor the
/// writer a pass per few records, and a flood wakes it once per eighth
/// filled, long before the half where shares start. Forcing a wakeup on
/// every record past the mark instead cost a self-interrupt per record
/// while the writer drained (the connect storm ran at 0.889 over three rounds).
#[inline(always)]
pub fn wake_when(used: u64, len: u64, size: u64) -> u64 {
    // Power-of-two steps: a multiple of the step lies in (used, used+len]
    // exactly when the two differ in a bit at or above the step's.
    if (used ^ used.wrapping_add(len)) >= size / 8 {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// `wake_when` for a ring whose fill is not known yet.
#[inline(always)]
pub fn wakeup_flags(ring: &RingBuf, len: u64) -> u64 {
    wake_when(
        ring.query(BPF_RB_AVAIL_DATA as u64),
        len,
        ring.query(BPF_RB_RING_SIZE as u64),
    )
}

/// Counts a record of `kind` for `key` that a rate limit kept out.
#[inline(always)]
pub fn count_limited(kind: u32, key: u64) {
    count_dropped(key, |d| {
        &mut d.limited[kind as usize & (LOST_SLOTS as usize - 1)]
    });
}

/// Counts `n` terminal bytes of `key` that were not recorded.
#[inline(always)]
pub fn count_tty_bytes(key: u64, n: u64) {
    count_dropped_by(key, n, |d| &mut d.tty_bytes);
}

#[inline(always)]
fn count_dropped(key: u64, slot: impl Fn(&mut Dropped) -> &mut u64) {
    count_dropped_by(key, 1, slot);
}

#[inline(always)]
fn count_dropped_by(key: u64, n: u64, slot: impl Fn(&mut Dropped) -> &mut u64) {
    // Per-CPU value: no other writer on this CPU while we run. A full map
    // (more keys than sessions and identities together cannot be) leaves
    // the host-wide count as the only trace. One lookup once the key
    // exists (every drop of a flood after its first).
    let d = match DROPPED.get_ptr_mut(key) {
        Some(d) => d,
        None => {
            // From a static: a zeroed value built on the stack is a memset call.
            #[allow(clippy::needless_borrows_for_generic_args)]
            let _ = DROPPED.insert(key, &ZERO_DROPPED, 0);
            let Some(d) = DROPPED.get_ptr_mut(key) else {
                return;
            };
            d
        }
    };
    *slot(unsafe { &mut *d }) += n;
}

static ZERO_DROPPED: Dropped = Dropped {
    full: [0; LOST_SLOTS as usize],
    limited: [0; LOST_SLOTS as usize],
    tty_bytes: 0,
};
static ZERO_SHARE: ShareWindow = ShareWindow {
    window_start: 0,
    count: [0; LOST_SLOTS as usize],
};

/// Hides what LLVM knows of a value's range, so that a mask or check it would
/// drop as redundant reaches the verifier, which may not have derived the
/// same range (older verifiers, such as 6.1's, derive less).
#[inline(always)]
pub fn opaque(v: usize) -> usize {
    let x = v;
    unsafe { core::ptr::read_volatile(&x) }
}

/// The first byte of a user string (is it an absolute path?).
#[inline(always)]
pub fn read_user_u8(addr: u64) -> Option<u8> {
    let mut v = 0u8;
    let r = unsafe { bpf_probe_read_user(&mut v as *mut u8 as *mut _, 1, addr as *const _) };
    (r == 0).then_some(v)
}

#[inline(always)]
pub fn read_user_u64(addr: u64) -> Option<u64> {
    let mut v = 0u64;
    let r = unsafe { bpf_probe_read_user(&mut v as *mut u64 as *mut _, 8, addr as *const _) };
    (r == 0).then_some(v)
}

/// # Safety
/// `p` is a kernel address (the read itself is checked by the helper).
#[inline(always)]
pub unsafe fn read_kernel<T: Copy>(p: *const T) -> Option<T> {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    let r = unsafe {
        bpf_probe_read_kernel(
            v.as_mut_ptr() as *mut _,
            core::mem::size_of::<T>() as u32,
            p as *const _,
        )
    };
    (r == 0).then(|| unsafe { v.assume_init() })
}

/// The field at `off` of the kernel struct at `base`, loaded directly: the
/// verifier knows `base`'s type from BTF (a chain of struct pointers from
/// `bpf_get_current_task_btf`) and `off` as a constant (the loader's
/// read-only `LOAD_CONFIG`), checks the access against the kernel's BTF,
/// and makes it a load that reads 0 where the address faults, as
/// `bpf_probe_read_kernel` would, without a helper call's cost (tens of ns
/// each on these paths).
///
/// # Safety
/// `base` is such a BTF pointer (or NULL) and `off` a field of its struct
/// of type T.
#[inline(always)]
pub unsafe fn btf_field<T: Copy>(base: *const u8, off: u32) -> T {
    unsafe { core::ptr::read_volatile(base.add(off as usize) as *const T) }
}

/// A pointer-sized kernel field at `base + off` (0 if unreadable).
#[inline(always)]
pub fn read_ptr(base: u64, off: u32) -> u64 {
    unsafe { read_kernel((base + off as u64) as *const u64) }.unwrap_or(0)
}

/// `read_fields`'s window.
#[map]
static FIELDS: PerCpuArray<[u64; 12]> = PerCpuArray::with_max_entries(1, 0);

/// The fields at `base + offs[i]` (the loader's offsets, constants to the
/// verifier), each as the 8 bytes there (the caller keeps the low bytes of
/// a smaller field; 0s if unreadable): with one helper call when they lie
/// 8-aligned to each other within 96 bytes, as in `struct inode` (mode,
/// sb, ino) and `struct super_block` (dev, magic), else one call each. The
/// window read stays inside those structs.
#[inline(always)]
pub fn read_fields<const N: usize>(base: u64, offs: [u32; N]) -> [u64; N] {
    const WORDS: usize = 12;
    let mut lo = offs[0];
    let mut hi = offs[0];
    for &off in &offs {
        lo = lo.min(off);
        hi = hi.max(off);
    }
    let mut out = [0u64; N];
    let aligned = offs.iter().all(|&off| (off - lo).is_multiple_of(8));
    // The window in a map: on the stack it took the programs past 512 bytes.
    if let (true, Some(w)) = (
        aligned && hi - lo < (8 * WORDS) as u32,
        FIELDS.get_ptr_mut(0),
    ) {
        let w = unsafe { &mut *w };
        let r = unsafe {
            bpf_probe_read_kernel(
                w.as_mut_ptr() as *mut _,
                (8 * WORDS) as u32,
                (base + lo as u64) as *const _,
            )
        };
        if r == 0 {
            for (v, &off) in out.iter_mut().zip(&offs) {
                *v = w[((off - lo) / 8) as usize % WORDS];
            }
        }
        return out;
    }
    for (v, &off) in out.iter_mut().zip(&offs) {
        *v = read_ptr(base, off);
    }
    out
}

/// The pointer-sized fields at `base + a` and `base + b` (0s if
/// unreadable), with one helper call where b is 8 to 24 bytes after a, as
/// in `struct path`, `struct mount`, `struct dentry` and `struct fdtable`
/// (else two calls, as on a kernel with randomized struct layouts): each
/// call costs tens of ns, more than the bytes. The 32 bytes read from `a`
/// stay inside those structs.
#[inline(always)]
pub fn read_pair(base: u64, a: u32, b: u32) -> (u64, u64) {
    let d = b.wrapping_sub(a);
    if d == 0 || d > 24 || !d.is_multiple_of(8) {
        return (read_ptr(base, a), read_ptr(base, b));
    }
    let Some(w) = (unsafe { read_kernel((base + a as u64) as *const [u64; 4]) }) else {
        return (0, 0);
    };
    let second = match d {
        8 => w[1],
        16 => w[2],
        _ => w[3],
    };
    (w[0], second)
}
