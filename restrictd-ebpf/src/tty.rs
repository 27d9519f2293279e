//! Terminal recording (`terminal_recording`): the bytes sshd reads from a
//! session's pty master, which is everything the session's processes wrote
//! to the terminal whatever shell, program or syscall they used, and, with
//! input on, the bytes sshd writes there, which is what the user typed.
//!
//! Only reads and writes by a relay count: a process of a session whose
//! program (its `mm->exe_file`, which it cannot choose) is one the daemon
//! registered in `TTY_RELAYS` from its PAM caller, on a file that is the pty
//! multiplexer (`/dev/ptmx`, rdev 5:2). A pty a user opens inside the
//! session (tmux, script) is seen where its output reaches sshd's terminal,
//! once. The user's sshd process is not theirs to trace or rename: sshd
//! makes itself undumpable, and only a thread group renames itself.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_task_btf, bpf_probe_read_user},
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use restrictd_common::{
    TtyEvent, TtyRate, EVENT_TTY, EXIT_TTY_INPUT, EXIT_TTY_OUTPUT, MAX_SESSIONS,
    SESSION_RECORD_TTY, SESSION_RECORD_TTY_INPUT, TTY_CHUNK, TTY_CHUNKS_MAX, TTY_INPUT, TTY_OUTPUT,
};

use crate::{
    common::{
        btf_field, count_lost, count_tty_bytes, current_exe_id, current_session, fill_header,
        load_config, maybe_relay, opaque, read_kernel, read_ptr, tp_field, user_regs, wakeup_flags,
        REGS_DI, REGS_SI,
    },
    path::fd_file,
};

/// Size set by the loader (`terminal.buffer_size`).
#[map]
static TTY_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);
/// Programs that relay a session's terminal (sshd): exe inode -> device
/// (kernel `dev_t`). Filled by the daemon from each PAM caller.
#[map]
static TTY_RELAYS: HashMap<u64, u32> = HashMap::with_max_entries(64, 0);
/// Per record key: the rate window and the bytes not recorded since its
/// last record.
#[map]
static TTY_RATE: LruHashMap<u64, TtyRate> = LruHashMap::with_max_entries(MAX_SESSIONS, 0);
#[map]
static TTY_SCRATCH: PerCpuArray<TtyScratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct TtyScratch {
    ev: TtyEvent,
    data: [u8; TTY_CHUNK],
}

struct TtyCall {
    key: u64,
    buf: u64,
    tty: u32,
    rows: u16,
    cols: u16,
}

/// The pty multiplexer's device number (5:2, kernel `dev_t`): a pty master.
const PTMX_RDEV: u32 = (5 << 20) | 2;

/// The call to remember if the current process is a relay of a session
/// with `flag`, and `fd` a pty master.
#[inline(always)]
fn relay_call(fd: i32, buf: u64, flag: u32) -> Option<TtyCall> {
    let (key, s) = current_session()?;
    if s.flags & flag == 0 {
        return None;
    }
    let (ino, dev, _) = current_exe_id();
    if unsafe { TTY_RELAYS.get(ino) } != Some(&dev) {
        return None;
    }
    let o = load_config().kernel;
    if o.tty_winsize == 0 && o.tty_index == 0 {
        return None;
    }
    let file = fd_file(fd)?;
    let inode = read_ptr(file, o.file_f_inode);
    if inode == 0 {
        return None;
    }
    let rdev = unsafe { read_kernel((inode + o.inode_i_rdev as u64) as *const u32) }?;
    if rdev != PTMX_RDEV {
        return None;
    }
    let private = read_ptr(file, o.file_private_data);
    let tty = if private != 0 {
        read_ptr(private, o.tty_file_private_tty)
    } else {
        0
    };
    let (index, ws) = if tty != 0 {
        (
            unsafe { read_kernel((tty + o.tty_index as u64) as *const i32) }.unwrap_or(-1),
            unsafe { read_kernel((tty + o.tty_winsize as u64) as *const [u16; 2]) }
                .unwrap_or([0, 0]),
        )
    } else {
        (-1, [0, 0])
    };
    Some(TtyCall {
        key,
        buf,
        tty: index as u32,
        rows: ws[0],
        cols: ws[1],
    })
}

/// A relay's read: the bytes it returned are in the relay's buffer now,
/// which only the relay (single-threaded, undumpable) writes. On the
/// tracepoint where `exit_syscall` does not take it.
#[tracepoint(category = "syscalls", name = "sys_exit_read")]
pub fn tty_out_read(ctx: TracePointContext) -> u32 {
    exit(&ctx, SESSION_RECORD_TTY, TTY_OUTPUT)
}

/// A relay's write to the pty: what it took (the count it returns), read
/// from the relay's buffer, is what the user typed.
#[tracepoint(category = "syscalls", name = "sys_exit_write")]
pub fn ttyin_out_write(ctx: TracePointContext) -> u32 {
    exit(&ctx, SESSION_RECORD_TTY_INPUT, TTY_INPUT)
}

#[inline(always)]
fn exit(ctx: &TracePointContext, flag: u32, direction: u32) -> u32 {
    let task = unsafe { bpf_get_current_task_btf() };
    if !maybe_relay(task as *const u8) {
        return 0;
    }
    let ret = tp_field::<i64, 16>(ctx);
    if ret > 0 {
        relay_call_at_exit(user_regs(task), flag, ret as u64, direction);
    }
    0
}

/// A possible relay's read or write (`nr`), from `exit_syscall`
/// (`work`: which of the two it records, `EXIT_TTY_*`).
#[inline(always)]
pub fn relay_exit(regs: *const u8, nr: u64, ret: i64, work: u32) {
    if ret <= 0 {
        return;
    }
    let (flag, direction) = match nr {
        NR_READ if work & EXIT_TTY_OUTPUT != 0 => (SESSION_RECORD_TTY, TTY_OUTPUT),
        NR_WRITE if work & EXIT_TTY_INPUT != 0 => (SESSION_RECORD_TTY_INPUT, TTY_INPUT),
        _ => return,
    };
    relay_call_at_exit(regs, flag, ret as u64, direction);
}

/// x86-64 syscall numbers (syscall_64.tbl).
pub const NR_READ: u64 = 0;
pub const NR_WRITE: u64 = 1;

/// Records the `n` bytes a read or write of the current task moved, if it
/// is a relay of a session with `flag` and its fd a pty master. The fd
/// and buffer are the syscall's first two arguments, in the saved
/// registers.
#[inline(always)]
fn relay_call_at_exit(regs: *const u8, flag: u32, n: u64, direction: u32) {
    let fd = unsafe { btf_field::<u64>(regs, REGS_DI) } as i32;
    let buf = unsafe { btf_field::<u64>(regs, REGS_SI) };
    if let Some(c) = relay_call(fd, buf, flag) {
        record(&c, n, direction);
    }
}

static ZERO_RATE: TtyRate = TtyRate {
    window_start: 0,
    bytes: 0,
    dropped: 0,
};

/// Writes `n` bytes at `c.buf` as records of `TTY_CHUNK` bytes at most, as
/// far as the session's rate allows; counts the rest as not recorded, and
/// tells the next record of the session how many bytes it follows on from.
#[inline(always)]
fn record(c: &TtyCall, n: u64, direction: u32) {
    if TTY_RATE.get_ptr_mut(c.key).is_none() {
        // By reference: the map reads the static itself, no stack copy.
        #[allow(clippy::needless_borrows_for_generic_args)]
        let _ = TTY_RATE.insert(c.key, &ZERO_RATE, 0);
    }
    let Some(rate) = TTY_RATE.get_ptr_mut(c.key) else {
        count_tty_bytes(c.key, n);
        return;
    };
    let rate = unsafe { &mut *rate };
    let mut take = n;
    let limit = load_config().tty_rate as u64;
    if limit != 0 {
        let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_boot_ns() };
        if now.wrapping_sub(rate.window_start) >= 1_000_000_000 {
            rate.window_start = now;
            rate.bytes = 0;
        }
        let room = limit.saturating_sub(rate.bytes);
        if take > room {
            take = room;
        }
        rate.bytes += take;
    }
    let most = (TTY_CHUNKS_MAX as u64) * TTY_CHUNK as u64;
    if take > most {
        take = most;
    }
    // What is kept is the head of the read: the rest is left out after it.
    let left_out = n - take;
    if left_out > 0 {
        count_tty_bytes(c.key, left_out);
    }
    if take == 0 {
        rate.dropped += left_out;
        return;
    }
    let Some(scratch) = TTY_SCRATCH.get_ptr_mut(0) else {
        count_lost(EVENT_TTY, c.key);
        count_tty_bytes(c.key, take);
        rate.dropped += take;
        return;
    };
    let scratch = unsafe { &mut *scratch };
    fill_header(&mut scratch.ev.header, EVENT_TTY, c.key);
    scratch.ev.tty = c.tty;
    scratch.ev.direction = direction;
    scratch.ev.rows = c.rows;
    scratch.ev.cols = c.cols;
    // Once per write, not per chunk: the chunks follow at once.
    let wake = wakeup_flags(&TTY_EVENTS, take);
    let mut i = 0u32;
    while i < TTY_CHUNKS_MAX {
        let off = i as u64 * TTY_CHUNK as u64;
        if off >= take {
            break;
        }
        let left = take - off;
        let len = opaque(if left > TTY_CHUNK as u64 {
            TTY_CHUNK
        } else {
            left as usize
        });
        if len > TTY_CHUNK {
            break;
        }
        let r = unsafe {
            bpf_probe_read_user(
                scratch.data.as_mut_ptr() as *mut _,
                len as u32,
                (c.buf + off) as *const _,
            )
        };
        let sent = r == 0 && {
            scratch.ev.len = len as u32;
            scratch.ev.dropped_before = rate.dropped;
            let size = opaque(core::mem::size_of::<TtyEvent>() + len);
            size <= core::mem::size_of::<TtyScratch>() && {
                let bytes = unsafe {
                    core::slice::from_raw_parts(scratch as *const TtyScratch as *const u8, size)
                };
                TTY_EVENTS.output::<[u8]>(bytes, wake).is_ok()
            }
        };
        if sent {
            rate.dropped = 0;
        } else {
            count_lost(EVENT_TTY, c.key);
            count_tty_bytes(c.key, len as u64);
            rate.dropped += len as u64;
        }
        i += 1;
    }
    rate.dropped += left_out;
}
