//! One program at the exit of every syscall of the host (the BTF-typed
//! `sys_exit` tracepoint), attached where opens are recorded, for what
//! `LoadConfig.exit_work` says:
//! - opens (`disk::syscall_exit_open`), 64-bit and through the ia32 entry,
//!   which the per-syscall tracepoints never see;
//! - a relay's reads and writes of a session's terminal (`tty`);
//! - failed execs (`exec::failed_exec`).
//!
//! One program here costs every syscall of the host what one raw
//! tracepoint program costs. The per-syscall tracepoints it replaces cost
//! their calls the kernel's formatting of an event besides their program,
//! and while any is enabled, every syscall of the host passes the
//! kernel's check of whether it has one, at its entry and its exit. Being BTF-typed, it reads the
//! syscall's number and arguments from the registers it is given, without
//! a helper call: every syscall but these leaves after two loads.
//! Without opens recorded, the terminal keeps its own tracepoints: this
//! program alone would cost every syscall more.

use aya_ebpf::{
    helpers::generated::bpf_get_current_task_btf, macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use restrictd_common::{EXIT_EXECS, EXIT_OPENS, EXIT_TTY_INPUT, EXIT_TTY_OUTPUT};

use crate::{
    common::{btf_field, exit_work, maybe_relay, ti_status_offset, REGS_ORIG_AX, TS_COMPAT},
    disk::{maybe_open, syscall_exit_open},
    exec::{failed_exec, NR_EXECVE, NR_EXECVEAT},
    tty::{relay_exit, NR_READ, NR_WRITE},
};

#[btf_tracepoint(function = "sys_exit")]
pub fn exit_syscall(ctx: BtfTracePointContext) -> u32 {
    let work = exit_work();
    let status_at = ti_status_offset();
    // The loader attaches this program only with both set.
    if work == 0 || status_at == 0 {
        return 0;
    }
    // The tracepoint's `struct pt_regs *`: the task's saved registers.
    let regs: *const u8 = ctx.arg(0);
    let nr = unsafe { btf_field::<u64>(regs, REGS_ORIG_AX) };
    let terminal = nr == NR_READ || nr == NR_WRITE;
    let exec = nr == NR_EXECVE || nr == NR_EXECVEAT;
    if !terminal && !exec && !maybe_open(nr) {
        return 0;
    }
    // Not recorded here (terminal or commands off): 0, 1, 59 and 322 are
    // no ia32 opens either, so nothing is left to look at.
    if (terminal && work & (EXIT_TTY_OUTPUT | EXIT_TTY_INPUT) == 0)
        || (exec && work & EXIT_EXECS == 0)
    {
        return 0;
    }
    let ret: i64 = ctx.arg(1);
    // A successful exec is recorded by `cmd_exec`, as the new program.
    if exec && ret >= 0 {
        return 0;
    }
    let task = unsafe { bpf_get_current_task_btf() };
    // ia32 numbers differ: 0, 1, 59 and 322 are not read, write and the
    // execs there.
    let compat = unsafe { btf_field::<u32>(task as *const u8, status_at) } & TS_COMPAT != 0;
    if terminal && !compat {
        if maybe_relay(task as *const u8) {
            relay_exit(regs, nr, ret, work);
        }
        return 0;
    }
    if exec && !compat {
        return failed_exec(regs, nr, ret);
    }
    if work & EXIT_OPENS != 0 {
        return syscall_exit_open(task, regs, nr, compat, ret);
    }
    0
}
