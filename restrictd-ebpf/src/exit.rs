//! One program at the exit of every syscall of the host (the raw
//! `sys_exit` tracepoint), attached only where opens are recorded, for two
//! jobs (`LoadConfig.exit_work`):
//! - opens made through the ia32 entry, which the per-syscall tracepoints
//!   never see (`disk::compat_exit`);
//! - a relay's reads and writes of a session's terminal (`tty`). Here they
//!   cost every other read(2) and write(2) on the host one load more than
//!   any syscall, where the `sys_exit_read`/`sys_exit_write` tracepoints
//!   make each one pay the kernel's per-syscall event besides this
//!   program. Without opens recorded, the terminal keeps those
//!   tracepoints: this program alone would cost every syscall more.
//!
//! Every syscall leaves after at most two loads from the task, and no
//! helper call but the task's.

use aya_ebpf::{
    helpers::generated::bpf_get_current_task_btf, macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use restrictd_common::{EXIT_COMPAT_OPENS, EXIT_TTY_INPUT, EXIT_TTY_OUTPUT};

use crate::{
    common::{btf_field, exit_work, maybe_relay, ti_status_offset, TS_COMPAT},
    disk::compat_exit,
    tty::relay_exit,
};

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn exit_syscall(ctx: RawTracePointContext) -> u32 {
    let work = exit_work();
    let status_at = ti_status_offset();
    // The loader attaches this program only with both set.
    if work == 0 || status_at == 0 {
        return 0;
    }
    let task = unsafe { bpf_get_current_task_btf() };
    let ret: i64 = ctx.arg(1);
    if unsafe { btf_field::<u32>(task as *const u8, status_at) } & TS_COMPAT != 0 {
        // The terminal's relay is a 64-bit sshd: ia32 syscall numbers are
        // never its reads or writes.
        return if work & EXIT_COMPAT_OPENS != 0 {
            compat_exit(task, ret)
        } else {
            0
        };
    }
    if work & (EXIT_TTY_OUTPUT | EXIT_TTY_INPUT) != 0 && maybe_relay(task as *const u8) {
        relay_exit(task, ret, work);
    }
    0
}
