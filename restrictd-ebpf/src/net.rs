//! Network enforcement in cgroup `sock_addr` hooks. A program returns 1 to
//! let the call proceed and 0 to fail it with EPERM before any packet is sent.

use core::mem::offset_of;

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::bpf_get_socket_cookie,
    macros::{cgroup_sock_addr, map, tracepoint},
    maps::{lpm_trie::Key, Array, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    programs::{SockAddrContext, TracePointContext},
};
use restrictd_common::{
    key, proto_class, Denial, DenialKey, NetworkEvent, RuleEntry, SockState, ACTION_DENIED,
    ACTION_OBSERVED, EVENT_NETWORK, MAX_DENIALS, MAX_RULES, OPERATION_CONNECT, OPERATION_SEND,
    POLICY_FOLLOW_ACTIVE, POLICY_NONE, PROTO_TCP, PROTO_UDP, SESSION_RECORD_NETWORK,
    SESSION_RESTRICT, SOCK_STATE_AT,
};

use crate::common::{count_lost, current_session, fill_header, tp_field, within_share, AF_INET6};

const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// `ACTIVE[0]`: id of the host-wide policy, or `POLICY_NONE`.
#[map]
static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);
/// The rules of every policy, keyed by policy id and prefix; one entry
/// answers for both lists (`RuleEntry`), so a verdict is one lookup.
#[map]
static RULES_V4: LpmTrie<key::V4KeyData, RuleEntry> = LpmTrie::with_max_entries(MAX_RULES, 0);
#[map]
static RULES_V6: LpmTrie<key::V6KeyData, RuleEntry> = LpmTrie::with_max_entries(MAX_RULES, 0);
/// Size set by the loader (`network_buffer_size`).
#[map]
pub static NETWORK_EVENTS: RingBuf = RingBuf::with_byte_size(4096, 0);
/// Unconnected UDP destinations already reported per socket: only the first
/// send from a socket to a destination is an event, not every datagram.
#[map]
static SENT: LruHashMap<SentKey, u8> = LruHashMap::with_max_entries(65_536, 0);

/// Denials by kind (`DenialKey`): the first is written at once, later ones
/// only counted here; the daemon reads the counts every second and writes
/// one event per kind with `repeats`. A flood of denials to one place is
/// then one event a second, not one per call or packet.
#[map]
static DENIALS: LruHashMap<DenialKey, Denial> = LruHashMap::with_max_entries(MAX_DENIALS, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct SentKey {
    cookie: u64,
    addr: [u8; 16],
    port: u32,
    _pad: u32,
}

/// The four enforcing programs: one per hook, each judging its family and
/// operation.
macro_rules! sock_addr_programs {
    ($($hook:ident => $version:expr, $operation:expr);+ $(;)?) => {
        $(
            #[cgroup_sock_addr($hook)]
            pub fn $hook(ctx: SockAddrContext) -> i32 {
                check(&ctx, $version, $operation)
            }
        )+
    };
}

sock_addr_programs!(
    connect4 => 4, OPERATION_CONNECT;
    sendmsg4 => 4, OPERATION_SEND;
    connect6 => 6, OPERATION_CONNECT;
    sendmsg6 => 6, OPERATION_SEND;
);

#[inline(always)]
fn check(ctx: &SockAddrContext, version: u8, operation: u8) -> i32 {
    let Some((cgroup_id, session)) = current_session() else {
        return ALLOW;
    };
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    let mut dst = destination(sa, version, operation);
    // A send from an IPv6 socket to a v4-mapped address reaches the IPv4
    // hook with the IPv4 address; it is judged and reported as the
    // v4-mapped IPv6 destination the caller gave (Teleport's rule, and the
    // connect path's), so IPv6 rules such as `deny ::/0` cover it too.
    let mapped = version == 4 && socket_family(sa) == AF_INET6;
    let judged = if mapped {
        dst = key::v4_mapped([dst[0], dst[1], dst[2], dst[3]]);
        6
    } else {
        version
    };
    let (flags, policy_id) = (session.flags, session.policy_id);
    let proto = proto_class(sa.protocol);
    // Ports only where the protocol has them (a ping socket's is its id).
    let port = if proto & (PROTO_TCP | PROTO_UDP) != 0 {
        u16::from_be(sa.user_port as u16)
    } else {
        0
    };
    if flags & SESSION_RESTRICT != 0 && !policy_allows(judged, &dst, proto, port, policy_id) {
        emit(
            ctx,
            cgroup_id,
            version,
            mapped,
            operation,
            ACTION_DENIED,
            &dst,
        );
        return DENY;
    }
    // An allowed TCP (or MPTCP) connect is reported by `net_connected`,
    // once the kernel has chosen its source address.
    let tcp = operation == OPERATION_CONNECT
        && (sa.protocol == IPPROTO_TCP || sa.protocol == IPPROTO_MPTCP);
    if flags & SESSION_RECORD_NETWORK != 0 && !tcp && first_report(ctx, &dst, operation) {
        emit(
            ctx,
            cgroup_id,
            version,
            mapped,
            operation,
            ACTION_OBSERVED,
            &dst,
        );
    }
    ALLOW
}

const IPPROTO_TCP: u32 = 6;
const IPPROTO_MPTCP: u32 = 262;
const TCP_SYN_SENT: i32 = 2;
const TCP_CLOSE: i32 = 7;
const AF_INET: u16 = 2;

/// An allowed TCP connect of a recorded session, reported the way Teleport
/// does: when it starts (the socket goes from CLOSE to SYN_SENT, in the
/// connecting process, after the route lookup), so with the source address
/// the kernel chose. (The source port may still be 0 then: the kernel picks
/// it next.) A connect that fails before, for want of a route, is not a
/// connection and is not reported; a denied one was reported by the hook.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn net_connected(ctx: TracePointContext) -> u32 {
    // `oldstate` and `newstate` in one load from the context: every TCP
    // state change of every socket on the host comes here.
    let states = tp_field::<u64, { SOCK_STATE_AT as usize }>(&ctx);
    if states != (TCP_CLOSE as u32 as u64 | (TCP_SYN_SENT as u32 as u64) << 32) {
        return 0;
    }
    if tp_field::<u16, { at(offset_of!(SockState, protocol)) }>(&ctx) != IPPROTO_TCP as u16 {
        return 0;
    }
    let Some((cgroup_id, session)) = current_session() else {
        return 0;
    };
    if session.flags & SESSION_RECORD_NETWORK == 0 {
        return 0;
    }
    let Some(scratch) = DENIAL_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let ev = unsafe { &mut (*scratch).value.last };
    fill_header(&mut ev.header, EVENT_NETWORK, cgroup_id);
    // Each field loaded from the record where it is, and addresses stored
    // a word at a time: a helper copy of the record and byte-wise zeroing
    // cost more than the rest of the event.
    let saddr = tp_field::<u32, { at(offset_of!(SockState, saddr)) }>(&ctx);
    if tp_field::<u16, { at(offset_of!(SockState, family)) }>(&ctx) == AF_INET {
        ev.version = 4;
        set16(&mut ev.src_addr, saddr as u64, 0);
        let daddr = tp_field::<u32, { at(offset_of!(SockState, daddr)) }>(&ctx);
        set16(&mut ev.dst_addr, daddr as u64, 0);
    } else {
        ev.version = 6;
        const D6: usize = at(offset_of!(SockState, daddr_v6));
        let d = [tp_field::<u64, D6>(&ctx), tp_field::<u64, { D6 + 8 }>(&ctx)];
        set16(&mut ev.dst_addr, d[0], d[1]);
        // To a v4-mapped address the IPv6 socket connects through the IPv4
        // code, which has set only the IPv4 source so far.
        if d[0] == 0 && d[1] as u32 == MAPPED {
            let hi = if saddr == 0 {
                0
            } else {
                (MAPPED as u64) | (saddr as u64) << 32
            };
            set16(&mut ev.src_addr, 0, hi);
        } else {
            const S6: usize = at(offset_of!(SockState, saddr_v6));
            let (lo, hi) = (tp_field::<u64, S6>(&ctx), tp_field::<u64, { S6 + 8 }>(&ctx));
            set16(&mut ev.src_addr, lo, hi);
        }
    }
    ev.src_port = tp_field::<u16, { at(offset_of!(SockState, sport)) }>(&ctx);
    ev.dst_port = tp_field::<u16, { at(offset_of!(SockState, dport)) }>(&ctx);
    ev.operation = OPERATION_CONNECT;
    ev.action = ACTION_OBSERVED;
    ev.protocol = IPPROTO_TCP as u8;
    ev.repeats = 0;
    ev.reason = 0;
    write_record(ev);
    0
}

/// Where `SockState`'s field at `field` is in the tracepoint's record.
const fn at(field: usize) -> usize {
    SOCK_STATE_AT as usize + field
}

/// An address field written as two words (`lo` first in memory).
#[inline(always)]
fn set16(dst: &mut [u8; 16], lo: u64, hi: u64) {
    let d = dst.as_mut_ptr() as *mut u64;
    unsafe {
        core::ptr::write_unaligned(d, lo);
        core::ptr::write_unaligned(d.add(1), hi);
    }
}

/// The family of the calling socket (0 when the hook has none).
#[inline(always)]
fn socket_family(sa: &bpf_sock_addr) -> u32 {
    let sk = unsafe { sa.__bindgen_anon_1.sk };
    if sk.is_null() {
        return 0;
    }
    unsafe { (*sk).family }
}

/// The destination address, network byte order; IPv4 in the first 4 bytes.
/// An unspecified one is the local address the kernel will send to, and is
/// judged and reported as that. The kernel's route lookup sends IPv4
/// `0.0.0.0` (and `::ffff:0.0.0.0`, which takes the IPv4 path) to the
/// call's source — the sendmsg source address, else the bound one, as
/// `source` finds it — and to 127.0.0.1 when there is none; `::` goes to
/// ::1, or to `::ffff:127.0.0.1` from a v4-mapped source. The source is
/// only read for these addresses.
#[inline(always)]
fn destination(sa: &bpf_sock_addr, version: u8, operation: u8) -> [u8; 16] {
    if version == 4 {
        if sa.user_ip4 != 0 {
            return ip4_bytes(sa.user_ip4);
        }
        let (src, _) = source(sa, 4, operation);
        return if word(&src, 0) == 0 {
            ip4_bytes(u32::from_ne_bytes(LOOPBACK4))
        } else {
            src
        };
    }
    let w = sa.user_ip6;
    let unspecified = w[0] == 0 && w[1] == 0 && w[2] == 0 && w[3] == 0;
    let mapped_any = w[0] == 0 && w[1] == 0 && w[2] == MAPPED && w[3] == 0;
    if !unspecified && !mapped_any {
        return ip6_bytes(&w);
    }
    let (src, _) = source(sa, 6, operation);
    let src_mapped = word(&src, 0) == 0 && word(&src, 1) == 0 && word(&src, 2) == MAPPED;
    if unspecified {
        return if src_mapped {
            key::v4_mapped(LOOPBACK4)
        } else {
            LOOPBACK6
        };
    }
    if src_mapped && word(&src, 3) != 0 {
        src
    } else {
        key::v4_mapped(LOOPBACK4)
    }
}

/// Word `i` (of four) of an address, as the kernel's u32 fields hold it.
#[inline(always)]
fn word(a: &[u8; 16], i: usize) -> u32 {
    let i = i & 3;
    u32::from_ne_bytes([a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]])
}

const LOOPBACK4: [u8; 4] = [127, 0, 0, 1];
const LOOPBACK6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// The third word of a v4-mapped address (`::ffff:0:0/96`).
const MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

#[inline(always)]
fn ip4_bytes(a: u32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&a.to_ne_bytes());
    out
}

#[inline(always)]
fn ip6_bytes(words: &[u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        out[i * 4..i * 4 + 4].copy_from_slice(&words[i].to_ne_bytes());
        i += 1;
    }
    out
}

/// The policy decision: allowed iff an allow rule and no deny rule of the
/// session's policy covers the destination, its protocol class and port
/// (no policy: everything allowed). Each list is one longest-prefix lookup:
/// the entry found holds the port ranges of every rule covering it.
#[inline(always)]
pub fn policy_allows(
    version: u8,
    dst: &[u8; 16],
    proto: u32,
    port: u16,
    session_policy: u32,
) -> bool {
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
    if version == 4 {
        let k = Key::new(
            key::prefix_len(32),
            key::v4(policy, [dst[0], dst[1], dst[2], dst[3]]),
        );
        allows(RULES_V4.get(&k), proto, port)
    } else {
        let k = Key::new(key::prefix_len(128), key::v6(policy, *dst));
        allows(RULES_V6.get(&k), proto, port)
    }
}

/// No entry: no rule of either list covers the address, so it is denied.
#[inline(always)]
fn allows(e: Option<&RuleEntry>, proto: u32, port: u16) -> bool {
    // A match, not `is_some_and`, whose closure the compiler left as a
    // BPF-to-BPF call.
    match e {
        Some(e) => e.allows(proto, port),
        None => false,
    }
}

/// Connects are always reported; a send only the first time this socket
/// sends to this destination.
#[inline(always)]
fn first_report(ctx: &SockAddrContext, dst: &[u8; 16], operation: u8) -> bool {
    if operation != OPERATION_SEND {
        return true;
    }
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    let key = SentKey {
        cookie: unsafe { bpf_get_socket_cookie(ctx.sock_addr as *mut _) },
        addr: *dst,
        port: sa.user_port,
        _pad: 0,
    };
    if SENT.get_ptr(key).is_some() {
        return false;
    }
    let _ = SENT.insert(key, 1, 0);
    true
}

/// The source of the call: the sendmsg source address where the caller gave
/// one, else the socket's bound address (an unbound socket gets one only
/// after this hook: then all zeros). One rule for both families.
#[inline(always)]
fn source(sa: &bpf_sock_addr, version: u8, operation: u8) -> ([u8; 16], u16) {
    let sk = unsafe { sa.__bindgen_anon_1.sk };
    let mut addr = [0u8; 16];
    // msg_src_* exist only in sendmsg programs (the verifier refuses them elsewhere).
    if operation == OPERATION_SEND {
        addr = if version == 4 {
            ip4_bytes(sa.msg_src_ip4)
        } else {
            ip6_bytes(&sa.msg_src_ip6)
        };
    }
    if sk.is_null() {
        return (addr, 0);
    }
    let port = unsafe { (*sk).src_port } as u16;
    if addr == [0u8; 16] {
        addr = if version == 4 {
            ip4_bytes(unsafe { (*sk).src_ip4 })
        } else {
            ip6_bytes(&unsafe { (*sk).src_ip6 })
        };
    }
    (addr, port)
}

#[inline(always)]
/// `version` is the hook's family; `mapped`: an IPv4 hook called for an
/// IPv6 socket, whose addresses are reported v4-mapped (version 6).
fn emit(
    ctx: &SockAddrContext,
    cgroup_id: u64,
    version: u8,
    mapped: bool,
    operation: u8,
    action: u8,
    dst: &[u8; 16],
) {
    let Some(scratch) = DENIAL_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let scratch = unsafe { &mut *scratch };
    let sa: &bpf_sock_addr = unsafe { &*ctx.sock_addr };
    let (mut src_addr, src_port) = source(sa, version, operation);
    if mapped && word(&src_addr, 0) != 0 {
        src_addr = key::v4_mapped([src_addr[0], src_addr[1], src_addr[2], src_addr[3]]);
    }
    let ev = &mut scratch.value.last;
    fill_header(&mut ev.header, EVENT_NETWORK, cgroup_id);
    ev.src_addr = src_addr;
    ev.dst_addr = *dst;
    ev.src_port = src_port;
    ev.dst_port = u16::from_be(sa.user_port as u16);
    ev.version = if mapped { 6 } else { version };
    ev.operation = operation;
    ev.action = action;
    ev.protocol = sa.protocol as u8;
    ev.repeats = 0;
    ev.reason = 0;
    if action == ACTION_DENIED {
        let port = ev.dst_port;
        report_denial(scratch, dst, port);
    } else {
        write_record(&scratch.value.last);
    }
}

/// Makes `d` the latest denial of its kind: what differs between two
/// denials of one kind (who, when, from where). Field by field: a whole
/// record copy becomes a memmove call (a BPF subprogram).
#[inline(always)]
fn latest(d: &mut NetworkEvent, ev: &NetworkEvent) {
    let (h, n) = (&mut d.header, &ev.header);
    h.pid = n.pid;
    h.uid = n.uid;
    h.boot_ns = n.boot_ns;
    h.exe_ino = n.exe_ino;
    h.exe_dev = n.exe_dev;
    h.exe_flags = n.exe_flags;
    copy16(&mut h.comm, &n.comm);
    copy16(&mut d.src_addr, &ev.src_addr);
    d.src_port = ev.src_port;
}

/// 16 bytes as two 8-byte moves.
#[inline(always)]
pub fn copy16(dst: &mut [u8; 16], src: &[u8; 16]) {
    let (d, s) = (dst.as_mut_ptr() as *mut u64, src.as_ptr() as *const u64);
    unsafe {
        core::ptr::write_unaligned(d, core::ptr::read_unaligned(s));
        core::ptr::write_unaligned(d.add(1), core::ptr::read_unaligned(s.add(1)));
    }
}

/// Where a network record is built (the stack is too small for it and a
/// `DENIALS` entry).
#[repr(C)]
pub struct DenialScratch {
    key: DenialKey,
    pub value: Denial,
}

#[map]
static DENIAL_SCRATCH: PerCpuArray<DenialScratch> = PerCpuArray::with_max_entries(1, 0);

/// The per-CPU area to build a network record in (`value.last`).
#[inline(always)]
pub fn denial_scratch() -> Option<&'static mut DenialScratch> {
    DENIAL_SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// The denial in `s.value.last` (with its peer and the peer's port):
/// written at once if it is the first of its kind, else counted in
/// `DENIALS` for the daemon's once-a-second report.
#[inline(always)]
// The key is borrowed from the scratch area: by value it would be copied
// onto the stack, which has no room for it.
#[allow(clippy::needless_borrows_for_generic_args)]
pub fn report_denial(s: &mut DenialScratch, peer: &[u8; 16], peer_port: u16) {
    let ev = &s.value.last;
    s.key = DenialKey {
        key: ev.header.cgroup_id,
        peer: *peer,
        reason: ev.reason,
        port: peer_port,
        operation: ev.operation,
        protocol: ev.protocol,
        version: ev.version,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    };
    if let Some(d) = DENIALS.get_ptr_mut(&s.key) {
        let d = unsafe { &mut *d };
        // Other CPUs may count the same kind at once: the count is added
        // atomically; the latest record may mix two of them.
        latest(&mut d.last, &s.value.last);
        unsafe {
            core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
                &mut d.repeats,
                1,
            )
        };
        return;
    }
    s.value.repeats = 0;
    s.value.first_ns = s.value.last.header.boot_ns;
    let _ = DENIALS.insert(&s.key, &s.value, 0);
    write_record(&s.value.last);
}

/// Writes a network record to its ring, within its key's share; a record
/// the ring cannot take is counted as lost.
#[inline(always)]
pub fn write_record(ev: &NetworkEvent) {
    let key = ev.header.cgroup_id;
    if let Some(wake) = within_share(
        &NETWORK_EVENTS,
        EVENT_NETWORK,
        EVENT_NETWORK,
        key,
        core::mem::size_of::<NetworkEvent>() as u64,
    ) {
        if NETWORK_EVENTS.output::<NetworkEvent>(ev, wake).is_err() {
            count_lost(EVENT_NETWORK, key);
        }
    }
}
