//! restrictd's BPF programs, one module per concern:
//! - `net`: network enforcement in cgroup `sock_addr` hooks (connect4/6,
//!   sendmsg4/6), which need no BPF LSM boot flag, and network records;
//! - `skb`: the packet-level backstop (`cgroup_skb` egress and ingress),
//!   judging every packet of a restricted socket by the addresses in it;
//! - `exec`: command records from the exec and fork tracepoints;
//! - `disk`: file-open records from the open syscall tracepoints;
//! - `exit`: the one program on every syscall's exit (ia32 opens, and the
//!   terminal's reads and writes where opens are recorded);
//! - `follow`: a session leader moved by another PAM module keeps its
//!   restriction in its new cgroup;
//! - `tty`: terminal recording, the bytes sshd relays through a session's
//!   pty master;
//! - `path`: the walk that names a file or directory from kernel structs;
//! - `common`: what every program shares (the session lookup, record
//!   headers, the load-time configuration, reads, loss counters).
//!
//! Tracepoint programs are named `<group>_<what>` (`restrictd_common::
//! PROGRAM_GROUPS`) and carry their tracepoints in their section
//! (`tracepoint/<category>/<name>[,<name>...]`: one program verified once
//! and attached to several tracepoints of the same layout); userspace finds
//! both in the object, so adding a program needs no list elsewhere.
#![no_std]
#![no_main]
// `atomic_xadd`: the BPF target has atomic add (BPF_XADD) but no
// compare-and-swap, so `AtomicU64::fetch_add` is not offered.
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod common;
mod disk;
mod exec;
mod exit;
mod follow;
mod net;
mod path;
mod skb;
mod tty;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
