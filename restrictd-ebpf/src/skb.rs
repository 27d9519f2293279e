//! The packet-level check: `cgroup_skb` programs on every IP packet a
//! socket sends or receives, whatever its protocol, options or the context
//! that sends it (kernel workers for MPTCP subflows, timers, softirq). They
//! judge by the socket — its cgroup, kept from its creation wherever the
//! socket is passed, and its owner's uid — not by the current task, and by
//! the addresses in the packet itself. The `sock_addr` hooks in `net` stay
//! in front for the immediate EPERM; this is the backstop for what they do
//! not see (UDP-Lite, ICMP, raw sockets, routing headers, inbound traffic).
//! A program returns 1 to pass the packet and 0 to drop it (a local sender
//! then gets EPERM).

use aya_ebpf::{
    bindings::BPF_SK_STORAGE_GET_F_CREATE,
    btf_maps::SkStorage,
    helpers::{
        bpf_get_socket_uid, bpf_ktime_get_boot_ns, bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id,
        generated::bpf_sk_storage_get,
    },
    macros::{btf_map, cgroup_skb},
    programs::SkBuffContext,
};
use restrictd_common::{
    key, proto_class, SessionEntry, ACTION_DENIED, EVENT_NETWORK, OPERATION_PACKET_IN,
    OPERATION_PACKET_OUT, PACKET_PEER_DENIED, PACKET_SOURCE_ROUTED, SESSION_RESTRICT,
};

use crate::{
    common::AF_INET6,
    common::{generation, session_of},
    net::{copy16, denial_scratch, policy_allows, report_denial},
};

const PASS: i32 = 1;
const DROP: i32 = 0;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_UDPLITE: u8 = 136;
/// Packets larger than this make a socket of no session cache that fact.
const CACHE_FROM_BYTES: u32 = 512;
/// Extension headers walked before the transport header; more than a
/// sender can put before a routing header in a well-formed packet.
const EXT_HEADERS_MAX: u32 = 8;

#[cgroup_skb(egress)]
pub fn packet_out(ctx: SkBuffContext) -> i32 {
    check(&ctx, OPERATION_PACKET_OUT)
}

#[cgroup_skb(ingress)]
pub fn packet_in(ctx: SkBuffContext) -> i32 {
    check(&ctx, OPERATION_PACKET_IN)
}

/// Per socket: `generation << 1 | 1` when the socket was found to belong to
/// no session in that generation (`common::generation`), so that the sockets of the rest
/// of the host pay one storage lookup per packet, not the session lookups.
/// One 8-byte word, written whole, so a reader never sees half an update.
#[btf_map]
static NO_SESSION: SkStorage<u64> = SkStorage::new();

/// What the packet says, as far as the check needs it.
#[derive(Default)]
struct Packet {
    version: u8,
    protocol: u8,
    src: [u8; 16],
    dst: [u8; 16],
    src_port: u16,
    dst_port: u16,
    source_routed: bool,
}

/// The session (or restricted identity) that owns the packet's socket: the
/// socket's cgroup, its ancestor at the user-manager level, or its owner.
#[inline(always)]
fn socket_session(ctx: &SkBuffContext) -> Option<(u64, SessionEntry)> {
    let skb = ctx.skb.skb;
    session_of::<true>(
        unsafe { bpf_skb_cgroup_id(skb) },
        |level| unsafe { bpf_skb_ancestor_cgroup_id(skb, level) },
        || unsafe { bpf_get_socket_uid(skb) },
    )
}

#[inline(always)]
fn check(ctx: &SkBuffContext, operation: u8) -> i32 {
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return PASS;
    }
    // Read before the lookups: a session added meanwhile raises it, and the
    // cache written below is then stale from the start.
    let none_now = generation() << 1 | 1;
    let cached = no_session_slot(sk, 0);
    if !cached.is_null() && unsafe { core::ptr::read_volatile(cached) } == none_now {
        return PASS;
    }
    let Some((key, session)) = socket_session(ctx) else {
        // Storage costs an allocation per socket, more than a lookup saves
        // on a short exchange (a connect, a DNS query): cache only for
        // sockets that carry bulk data.
        let slot = if cached.is_null() && ctx.len() > CACHE_FROM_BYTES {
            no_session_slot(sk, BPF_SK_STORAGE_GET_F_CREATE as u64)
        } else {
            cached
        };
        if !slot.is_null() {
            unsafe { core::ptr::write_volatile(slot, none_now) };
        }
        return PASS;
    };
    if session.flags & SESSION_RESTRICT == 0 {
        return PASS;
    }
    let Some(p) = parse(ctx) else {
        // Not IPv4 or IPv6, or too short to hold a header: nothing routable.
        return PASS;
    };
    let (peer, peer_port) = if operation == OPERATION_PACKET_OUT {
        (p.dst, p.dst_port)
    } else {
        (p.src, p.src_port)
    };
    let reason = if p.source_routed {
        PACKET_SOURCE_ROUTED
    } else {
        // An IPv4 packet of an IPv6 socket is judged as its v4-mapped peer,
        // as the connect6/sendmsg6 hooks judge it.
        // The peer's port: the destination's out, the source's in (the
        // reply of an allowed host:port comes from that port).
        let proto = proto_class(p.protocol as u32);
        let allowed = if p.version == 4 && ctx.skb.family() == AF_INET6 {
            policy_allows(
                6,
                &key::v4_mapped([peer[0], peer[1], peer[2], peer[3]]),
                proto,
                peer_port,
                session.policy_id,
            )
        } else {
            policy_allows(p.version, &peer, proto, peer_port, session.policy_id)
        };
        if allowed {
            return PASS;
        }
        PACKET_PEER_DENIED
    };
    report(ctx, key, operation, reason, &p, &peer, peer_port);
    DROP
}

/// The socket's `NO_SESSION` word (null if it has none and `flags` does not
/// create it, or if the socket cannot have storage).
#[inline(always)]
fn no_session_slot(sk: *mut aya_ebpf::bindings::bpf_sock, flags: u64) -> *mut u64 {
    let map = &NO_SESSION as *const SkStorage<u64> as *mut core::ffi::c_void;
    unsafe { bpf_sk_storage_get(map, sk.cast(), core::ptr::null_mut(), flags) }.cast()
}

/// The IP header (and the transport ports where there are any). In
/// `cgroup_skb` programs the packet starts at the network header.
#[inline(always)]
fn parse(ctx: &SkBuffContext) -> Option<Packet> {
    parse_linear(ctx).or_else(|| parse_any(ctx))
}

/// Bytes the common packet needs before its payload: an IPv4 header
/// without options and the ports, or an IPv6 header and the ports.
const LINEAR_V4: usize = 24;
const LINEAR_V6: usize = 44;

/// The common packet read in place, without a helper call: a TCP, UDP or
/// UDP-Lite packet whose IP header has no options or extension headers and
/// is not a fragment, with its headers up to the ports in the linear part
/// of the buffer (each segment, ACK and RST of a stream is one of these).
/// Anything else is `None`, for `parse_any`.
#[inline(always)]
fn parse_linear(ctx: &SkBuffContext) -> Option<Packet> {
    let skb = ctx.skb.skb;
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    if data + LINEAR_V4 > end {
        return None;
    }
    let mut p = Packet::default();
    let first = unsafe { *(data as *const u8) };
    if first == 0x45 {
        // Version 4, no options.
        let h = unsafe { &*(data as *const [u8; LINEAR_V4]) };
        // A fragment (offset or more-fragments set) goes the long way.
        if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
            return None;
        }
        p.version = 4;
        p.protocol = h[9];
        p.src[..4].copy_from_slice(&h[12..16]);
        p.dst[..4].copy_from_slice(&h[16..20]);
        p.src_port = u16::from_be_bytes([h[20], h[21]]);
        p.dst_port = u16::from_be_bytes([h[22], h[23]]);
    } else if first >> 4 == 6 {
        if data + LINEAR_V6 > end {
            return None;
        }
        let h = unsafe { &*(data as *const [u8; LINEAR_V6]) };
        p.version = 6;
        p.protocol = h[6];
        p.src.copy_from_slice(&h[8..24]);
        p.dst.copy_from_slice(&h[24..40]);
        p.src_port = u16::from_be_bytes([h[40], h[41]]);
        p.dst_port = u16::from_be_bytes([h[42], h[43]]);
    } else {
        return None;
    }
    matches!(p.protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE).then_some(p)
}

/// Any IP packet, each header read in one helper call: `bpf_skb_load_bytes`
/// also reads what is not in the linear part.
#[inline(always)]
fn parse_any(ctx: &SkBuffContext) -> Option<Packet> {
    let mut p = Packet::default();
    // Both headers are at least 20 bytes long; an IPv6 one is read whole
    // below.
    let h: [u8; 20] = ctx.load(0).ok()?;
    p.version = h[0] >> 4;
    let mut off: u32;
    if p.version == 4 {
        let ihl = ((h[0] & 0x0f) as u32) * 4;
        p.protocol = h[9];
        p.src[..4].copy_from_slice(&h[12..16]);
        p.dst[..4].copy_from_slice(&h[16..20]);
        // Options are where IPv4 source routing (LSRR/SSRR) lives; ordinary
        // traffic carries none.
        p.source_routed = ihl > 20;
        let frag = u16::from_be_bytes([h[6], h[7]]);
        if frag & 0x1fff != 0 {
            // A later fragment: no transport header.
            return Some(p);
        }
        off = ihl;
    } else if p.version == 6 {
        let h: [u8; 40] = ctx.load(0).ok()?;
        let mut next = h[6];
        p.src.copy_from_slice(&h[8..24]);
        p.dst.copy_from_slice(&h[24..40]);
        off = 40;
        let mut i = 0;
        while i < EXT_HEADERS_MAX {
            match next {
                IPPROTO_HOPOPTS | IPPROTO_DSTOPTS | IPPROTO_ROUTING => {
                    p.source_routed |= next == IPPROTO_ROUTING;
                    let ext: [u8; 2] = ctx.load(off as usize).ok()?;
                    next = ext[0];
                    off += (ext[1] as u32 + 1) * 8;
                }
                IPPROTO_FRAGMENT => {
                    let ext: [u8; 4] = ctx.load(off as usize).ok()?;
                    next = ext[0];
                    off += 8;
                    if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0 {
                        p.protocol = next;
                        return Some(p);
                    }
                }
                _ => break,
            }
            i += 1;
        }
        p.protocol = next;
    } else {
        return None;
    }
    if matches!(p.protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_UDPLITE) {
        let ports: [u8; 4] = ctx.load(off as usize).unwrap_or([0; 4]);
        p.src_port = u16::from_be_bytes([ports[0], ports[1]]);
        p.dst_port = u16::from_be_bytes([ports[2], ports[3]]);
    }
    Some(p)
}

/// A denial event: the first of its kind (session, direction, peer, port,
/// protocol, reason) at once, the rest counted for the daemon's report.
#[inline(always)]
fn report(
    ctx: &SkBuffContext,
    key: u64,
    operation: u8,
    reason: u32,
    p: &Packet,
    peer: &[u8; 16],
    peer_port: u16,
) {
    let Some(s) = denial_scratch() else {
        return;
    };
    let skb = ctx.skb.skb;
    let ev = &mut s.value.last;
    ev.src_addr = p.src;
    ev.dst_addr = p.dst;
    ev.src_port = p.src_port;
    ev.dst_port = p.dst_port;
    ev.version = p.version;
    ev.operation = operation;
    ev.action = ACTION_DENIED;
    ev.protocol = p.protocol;
    ev.repeats = 0;
    ev.reason = reason;
    // Packets are sent and received outside the owner's context (softirq,
    // timers, kernel workers): the record names the socket's owner, and no
    // process.
    // Field by field: a whole header assigned becomes a memset call.
    let h = &mut ev.header;
    h.kind = EVENT_NETWORK;
    h.pid = 0;
    h.uid = unsafe { bpf_get_socket_uid(skb) };
    h.audit_sid = 0;
    h.cgroup_id = key;
    h.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    copy16(&mut h.comm, &[0; 16]);
    h.exe_ino = 0;
    h.exe_dev = 0;
    h.exe_flags = 0;
    report_denial(s, peer, peer_port);
}
