//! Command records (`session.command`): every exec in a session, failed
//! ones included, with its absolute path, argv and parent.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_task,
        generated::{
            bpf_get_current_task_btf, bpf_probe_read_kernel_str, bpf_probe_read_user,
            bpf_probe_read_user_str, bpf_task_pt_regs,
        },
    },
    macros::{map, tracepoint},
    maps::{PerCpuArray, RingBuf},
    programs::TracePointContext,
    EbpfContext,
};
use restrictd_common::{
    CommandEvent, ARGV_CAP, ARGV_LIMIT_MAX, EVENT_COMMAND, EXE_USER_MOUNT_NS, FAILED_ARGS_MAX,
    PATH_CAP, SESSION_RECORD_COMMANDS,
};

use crate::{
    common::{
        btf_field, count_lost, ctx_field, fill_header, load_config, opaque, read_kernel,
        read_user_u64, session_with, tp_field, user_regs, within_share, REGS_DI, REGS_DX,
        REGS_ORIG_AX, REGS_SI,
    },
    path::{dir_prefix, exe_path, forget_walk, walked_in_users_mount_ns},
};

/// Size set by the loader (`command_buffer_size`).
#[map]
static COMMAND_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);
#[map]
static SCRATCH: PerCpuArray<CommandScratch> = PerCpuArray::with_max_entries(1, 0);
/// Per-CPU staging area for a command record: header, then path at
/// `data[..PATH_CAP]` and argv right after the path (offsets are masked so
/// the verifier can bound them, hence the doubled sizes).
#[repr(C)]
struct CommandScratch {
    header: CommandEvent,
    /// Path (< 2 × PATH_CAP after the mask), then the program's real path
    /// (< PATH_CAP; a walk needs PATH_CAP + NAME_MAX of room), then argv.
    /// A per-CPU value may not exceed 32 KiB.
    data: [u8; 3 * PATH_CAP + 2 * ARGV_CAP],
}

#[inline(always)]
fn recording() -> Option<u64> {
    session_with(SESSION_RECORD_COMMANDS)
}

/// The tgid of the current process's parent (`real_parent`, as Teleport
/// reads it at exec); 0 if unreadable.
#[inline(always)]
fn parent_tgid() -> u32 {
    let o = load_config().kernel;
    let task = unsafe { bpf_get_current_task() };
    let Some(parent) = (unsafe { read_kernel((task + o.task_real_parent as u64) as *const u64) })
    else {
        return 0;
    };
    unsafe { read_kernel((parent + o.task_tgid as u64) as *const i32) }.unwrap_or(0) as u32
}

/// Starts a record in the scratch area for the current process.
#[inline(always)]
fn start(scratch: &mut CommandScratch, cgroup_id: u64, return_code: i32) {
    let h = &mut scratch.header;
    fill_header(&mut h.header, EVENT_COMMAND, cgroup_id);
    h.ppid = parent_tgid();
    h.return_code = return_code;
    h.path_len = 0;
    h.argv_len = 0;
    h.argv_total = 0;
    h.exe_len = 0;
    h.part = 0;
    h.parts = 1;
}

/// Bytes of argv recorded at most (`argv_limit`), over all parts.
#[inline(always)]
fn argv_limit() -> u64 {
    let l = load_config().argv_limit as u64;
    if l == 0 || l > ARGV_LIMIT_MAX as u64 {
        ARGV_LIMIT_MAX as u64
    } else {
        l
    }
}

/// Writes the executed path at the start of `data`: a relative name gets
/// the cwd in front, resolved here while the process surely exists.
/// `read` copies the name (kernel or user memory) to a destination with a
/// limit, returning the bytes copied with the NUL, or < 0. Returns the
/// path's length with its NUL (0 when none could be read).
#[inline(always)]
fn write_path(scratch: &mut CommandScratch, first: u8, read: impl Fn(*mut u8) -> i64) -> usize {
    let dir = if first != b'/' {
        unsafe { dir_prefix(scratch.data.as_mut_ptr(), None) }
    } else {
        0
    };
    let n = read(unsafe { scratch.data.as_mut_ptr().add(dir & (PATH_CAP - 1)) });
    let len = if n > 0 {
        (dir & (PATH_CAP - 1)) + n as usize
    } else {
        0
    };
    scratch.header.path_len = len as u32;
    len
}

/// Sends header + path + argv from the scratch area.
#[inline(always)]
/// `kind`: what a loss of this record counts as (`EVENT_COMMAND`, or 0 for
/// a later part of argv, which is not an event: its command shows the cut).
fn submit(scratch: &CommandScratch, argv_off: usize, argv_len: usize, kind: u32) -> bool {
    let size = core::mem::size_of::<CommandEvent>()
        + (argv_off & (4 * PATH_CAP - 1))
        + (argv_len & (2 * ARGV_CAP - 1));
    let size = opaque(size);
    if size > core::mem::size_of::<CommandScratch>() {
        return false;
    }
    let bytes =
        unsafe { core::slice::from_raw_parts(scratch as *const CommandScratch as *const u8, size) };
    let key = scratch.header.header.cgroup_id;
    let Some(wake) = within_share(&COMMAND_EVENTS, kind, EVENT_COMMAND, key, size as u64) else {
        return false;
    };
    if COMMAND_EVENTS.output::<[u8]>(bytes, wake).is_err() {
        count_lost(kind, key);
        return false;
    }
    true
}

/// A successful exec, seen once the new program is in place: its argument
/// strings were just written by the kernel onto the new stack, so they are
/// present and readable (unlike at syscall entry).
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn cmd_exec(ctx: TracePointContext) -> u32 {
    let Some(cgroup_id) = recording() else {
        return 0;
    };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let scratch = unsafe { &mut *scratch };
    start(scratch, cgroup_id, 0);

    // filename: a __data_loc field (offset in the low 16 bits).
    let loc = ctx_field::<u32>(&ctx, load_config().exec_filename_offset).unwrap_or(0);
    let src = unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize) };
    let first = unsafe { read_kernel(src) }.unwrap_or(b'/');
    let path_len = write_path(scratch, first, |dst| unsafe {
        bpf_probe_read_kernel_str(dst as *mut _, PATH_CAP as u32, src as *const _)
    });
    // The program now running, by its real path: the name given may be a
    // symlink, /dev/fd/N or a memfd's.
    let exe_off = path_len & (2 * PATH_CAP - 1);
    forget_walk();
    let exe_len = match unsafe { exe_path(scratch.data.as_mut_ptr().add(exe_off)) } {
        // The last component was written with its NUL.
        Some(p) if p > 0 => p + 1,
        _ => 0,
    };
    // A path of a user's own mount namespace names what they bound there
    // (`~/x` bound over `/usr/bin/ls` walks up to /usr/bin/ls).
    if exe_len != 0 && walked_in_users_mount_ns() {
        scratch.header.header.exe_flags |= EXE_USER_MOUNT_NS;
    }
    scratch.header.exe_len = exe_len as u32;
    let path_len = exe_off + (exe_len & (PATH_CAP - 1));

    // The System V initial stack: argc, argv[argc], NULL, envp[], NULL.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const pt_regs;
    let sp = unsafe { read_kernel(core::ptr::addr_of!((*regs).rsp)) }.unwrap_or(0);
    let argc = read_user_u64(sp).unwrap_or(0);
    let argv0 = read_user_u64(sp + 8).unwrap_or(0);
    let envp0 = read_user_u64(sp + 8 * (argc + 2)).unwrap_or(0);
    let argv_off = path_len & (4 * PATH_CAP - 1);
    if argv_off >= 3 * PATH_CAP {
        return 0;
    }
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
    let want = total.min(argv_limit());
    let len = (want.min(ARGV_CAP as u64) as usize) & (2 * ARGV_CAP - 1);
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
    let parts = want.div_ceil(ARGV_CAP as u64).max(1) as u32;
    scratch.header.parts = parts;
    if !submit(
        scratch,
        argv_off,
        scratch.header.argv_len as usize,
        EVENT_COMMAND,
    ) {
        return 0;
    }
    // The rest of argv, ARGV_CAP bytes a record, from the start of the
    // scratch area (the first record is already in the ring).
    let mut part = 1u32;
    while part < (ARGV_LIMIT_MAX / ARGV_CAP) as u32 {
        if part >= parts {
            break;
        }
        let off = part as u64 * ARGV_CAP as u64;
        let len = (want - off).min(ARGV_CAP as u64) as usize;
        let len = opaque(len) & (2 * ARGV_CAP - 1);
        if len == 0 || len > ARGV_CAP {
            break;
        }
        let dst = scratch.data.as_mut_ptr();
        if unsafe { bpf_probe_read_user(dst as *mut _, len as u32, (argv0 + off) as *const _) } != 0
        {
            break;
        }
        let h = &mut scratch.header;
        h.part = part;
        h.path_len = 0;
        h.exe_len = 0;
        h.argv_len = len as u32;
        // A part lost is not an event lost (kind 0): the command shows
        // the cut instead.
        if !submit(scratch, 0, len, 0) {
            break;
        }
        part += 1;
    }
    0
}

/// Both exec exits, where `exit_syscall` does not take them: one program,
/// attached to each tracepoint it names.
#[tracepoint(category = "syscalls", name = "sys_exit_execve,sys_exit_execveat")]
pub fn cmd_out_exec(ctx: TracePointContext) -> u32 {
    let ret = tp_field::<i64, 16>(&ctx);
    if ret >= 0 {
        return 0; // success is reported by cmd_exec
    }
    let regs = user_regs(unsafe { bpf_get_current_task_btf() });
    let nr = unsafe { btf_field::<u64>(regs, REGS_ORIG_AX) };
    failed_exec(regs, nr, ret)
}

/// x86-64 syscall numbers (syscall_64.tbl).
pub const NR_EXECVE: u64 = 59;
pub const NR_EXECVEAT: u64 = 322;

/// The exit of exec syscall `nr` of the current task, which returned
/// `ret`: recorded if it failed and its session records commands. The
/// caller's image is still the current one, and its arguments are where
/// the kernel took them from: the saved registers `regs` (so no program
/// runs at the entry) and the memory they point to.
#[inline(always)]
pub fn failed_exec(regs: *const u8, nr: u64, ret: i64) -> u32 {
    if ret >= 0 {
        return 0; // success is reported by cmd_exec
    }
    let reg = |off: u32| unsafe { btf_field::<u64>(regs, off) };
    let (filename, argv) = match nr {
        NR_EXECVE => (reg(REGS_DI), reg(REGS_SI)),
        NR_EXECVEAT => (reg(REGS_SI), reg(REGS_DX)),
        _ => return 0,
    };
    let Some(cgroup_id) = recording() else {
        return 0;
    };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let scratch = unsafe { &mut *scratch };
    start(scratch, cgroup_id, ret as i32);
    let first = crate::common::read_user_u8(filename).unwrap_or(0);
    let path_len = write_path(scratch, first, |dst| unsafe {
        bpf_probe_read_user_str(dst as *mut _, PATH_CAP as u32, filename as *const _)
    });
    let argv_off = path_len & (2 * PATH_CAP - 1);
    // One record: the arguments of a failed exec are read one by one.
    let limit = argv_limit().min(ARGV_CAP as u64) as usize;
    let mut pos = 0usize;
    let mut total = 0u64;
    let mut i = 0u32;
    while i < FAILED_ARGS_MAX {
        let Some(p) = read_user_u64(argv + 8 * i as u64) else {
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
    submit(scratch, argv_off, pos, EVENT_COMMAND);
    0
}
