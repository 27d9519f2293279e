//! restrictd's BPF programs. Network enforcement runs in cgroup `sock_addr`
//! hooks (connect4/6, sendmsg4/6), which need no BPF LSM boot flag. A program
//! returns 1 to let the call proceed and 0 to fail it with EPERM before any
//! packet is sent.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
    },
    macros::{cgroup_sock_addr, map},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray, RingBuf},
    programs::SockAddrContext,
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
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // Processes outside restricted sessions cost one hash miss.
    let Some(session) = (unsafe { SESSIONS.get(&cgroup_id) }) else {
        return ALLOW;
    };
    if session.flags & SESSION_RESTRICT == 0 {
        return ALLOW;
    }
    let policy = if session.policy_id != POLICY_FOLLOW_ACTIVE {
        session.policy_id
    } else {
        match ACTIVE.get(0) {
            Some(p) => *p,
            // Cannot happen for an array map; fail closed if it ever does.
            None => return deny(ctx, cgroup_id, version, operation),
        }
    };
    if policy == POLICY_NONE {
        return ALLOW;
    }
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    let id = policy.to_be_bytes();
    let allowed = if version == 4 {
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
    };
    if allowed {
        ALLOW
    } else {
        deny(ctx, cgroup_id, version, operation)
    }
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
    if version == 4 {
        ev.dst_addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
        if operation == OPERATION_SEND {
            ev.src_addr[..4].copy_from_slice(&sa.msg_src_ip4.to_ne_bytes());
        }
    } else {
        let mut i = 0;
        while i < 4 {
            ev.dst_addr[i * 4..i * 4 + 4].copy_from_slice(&sa.user_ip6[i].to_ne_bytes());
            if operation == OPERATION_SEND {
                ev.src_addr[i * 4..i * 4 + 4].copy_from_slice(&sa.msg_src_ip6[i].to_ne_bytes());
            }
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
