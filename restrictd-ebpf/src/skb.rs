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
    helpers::{
        bpf_get_socket_cookie, bpf_get_socket_uid, bpf_ktime_get_boot_ns,
        bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id,
    },
    macros::{cgroup_skb, map},
    maps::LruHashMap,
    programs::SkBuffContext,
};
use restrictd_common::{
    key, NetworkEvent, SessionEntry, ACTION_DENIED, EVENT_NETWORK, OPERATION_PACKET_IN,
    OPERATION_PACKET_OUT, PACKET_PEER_DENIED, PACKET_SOURCE_ROUTED, SESSION_RESTRICT,
};

use crate::{
    common::{count_lost, session_of},
    net::{policy_allows, NETWORK_EVENTS},
};

const PASS: i32 = 1;
const DROP: i32 = 0;

const AF_INET6: u32 = 10;
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_UDPLITE: u8 = 136;
/// Extension headers walked before the transport header; more than a
/// sender can put before a routing header in a well-formed packet.
const EXT_HEADERS_MAX: u32 = 8;
/// One packet-level event per socket, direction, peer and port per second;
/// the drops in between are counted in the next one (`repeats`).
const REPORT_INTERVAL_NS: u64 = 1_000_000_000;

#[cgroup_skb(egress)]
pub fn packet_out(ctx: SkBuffContext) -> i32 {
    check(&ctx, OPERATION_PACKET_OUT)
}

#[cgroup_skb(ingress)]
pub fn packet_in(ctx: SkBuffContext) -> i32 {
    check(&ctx, OPERATION_PACKET_IN)
}

#[repr(C)]
#[derive(Clone, Copy)]
struct ReportKey {
    cookie: u64,
    peer: [u8; 16],
    port: u16,
    protocol: u8,
    operation: u8,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Report {
    last_ns: u64,
    suppressed: u32,
    _pad: u32,
}

#[map]
static PACKET_REPORTS: LruHashMap<ReportKey, Report> = LruHashMap::with_max_entries(16_384, 0);

/// What the packet says, as far as the check needs it.
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
fn socket_session(ctx: &SkBuffContext) -> Option<(u64, &'static SessionEntry)> {
    let skb = ctx.skb.skb;
    session_of(
        unsafe { bpf_skb_cgroup_id(skb) },
        |level| unsafe { bpf_skb_ancestor_cgroup_id(skb, level) },
        unsafe { bpf_get_socket_uid(skb) },
    )
}

#[inline(always)]
fn check(ctx: &SkBuffContext, operation: u8) -> i32 {
    let Some((key, session)) = socket_session(ctx) else {
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
        let allowed = if p.version == 4 && ctx.skb.family() == AF_INET6 {
            policy_allows(
                6,
                &key::v4_mapped([peer[0], peer[1], peer[2], peer[3]]),
                session.policy_id,
            )
        } else {
            policy_allows(p.version, &peer, session.policy_id)
        };
        if allowed {
            return PASS;
        }
        PACKET_PEER_DENIED
    };
    report(ctx, key, operation, reason, &p, &peer, peer_port);
    DROP
}

/// The IP header (and the transport ports where there are any). In
/// `cgroup_skb` programs the packet starts at the network header.
#[inline(always)]
fn parse(ctx: &SkBuffContext) -> Option<Packet> {
    let first: u8 = ctx.load(0).ok()?;
    let mut p = Packet {
        version: first >> 4,
        protocol: 0,
        src: [0; 16],
        dst: [0; 16],
        src_port: 0,
        dst_port: 0,
        source_routed: false,
    };
    let mut off: u32;
    if p.version == 4 {
        let ihl = ((first & 0x0f) as u32) * 4;
        p.protocol = ctx.load(9).ok()?;
        let src: [u8; 4] = ctx.load(12).ok()?;
        let dst: [u8; 4] = ctx.load(16).ok()?;
        p.src[..4].copy_from_slice(&src);
        p.dst[..4].copy_from_slice(&dst);
        // Options are where IPv4 source routing (LSRR/SSRR) lives; ordinary
        // traffic carries none.
        p.source_routed = ihl > 20;
        let frag: u16 = u16::from_be(ctx.load(6).ok()?);
        if frag & 0x1fff != 0 {
            // A later fragment: no transport header.
            return Some(p);
        }
        off = ihl;
    } else if p.version == 6 {
        let mut next: u8 = ctx.load(6).ok()?;
        p.src = ctx.load(8).ok()?;
        p.dst = ctx.load(24).ok()?;
        off = 40;
        let mut i = 0;
        while i < EXT_HEADERS_MAX {
            match next {
                IPPROTO_HOPOPTS | IPPROTO_DSTOPTS | IPPROTO_ROUTING => {
                    p.source_routed |= next == IPPROTO_ROUTING;
                    let len: u8 = ctx.load(off as usize + 1).ok()?;
                    next = ctx.load(off as usize).ok()?;
                    off += (len as u32 + 1) * 8;
                }
                IPPROTO_FRAGMENT => {
                    let frag: u16 = u16::from_be(ctx.load(off as usize + 2).ok()?);
                    next = ctx.load(off as usize).ok()?;
                    off += 8;
                    if frag & 0xfff8 != 0 {
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

/// A denial event, at most one per socket, direction, peer and port per
/// `REPORT_INTERVAL_NS`, carrying the count of the drops it stands for.
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
    let skb = ctx.skb.skb;
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let rk = ReportKey {
        cookie: unsafe { bpf_get_socket_cookie(skb as *mut _) },
        peer: *peer,
        port: peer_port,
        protocol: p.protocol,
        operation,
        _pad: 0,
    };
    let repeats = match PACKET_REPORTS.get_ptr_mut(rk) {
        Some(r) => {
            let r = unsafe { &mut *r };
            if now.wrapping_sub(r.last_ns) < REPORT_INTERVAL_NS {
                r.suppressed = r.suppressed.saturating_add(1);
                return;
            }
            let n = r.suppressed;
            r.last_ns = now;
            r.suppressed = 0;
            n
        }
        None => {
            let r = Report {
                last_ns: now,
                suppressed: 0,
                _pad: 0,
            };
            let _ = PACKET_REPORTS.insert(rk, r, 0);
            0
        }
    };
    let Some(mut entry) = NETWORK_EVENTS.reserve::<NetworkEvent>(0) else {
        count_lost(EVENT_NETWORK);
        return;
    };
    let mut ev = NetworkEvent {
        header: Default::default(),
        src_addr: p.src,
        dst_addr: p.dst,
        src_port: p.src_port,
        dst_port: p.dst_port,
        version: p.version,
        operation,
        action: ACTION_DENIED,
        protocol: p.protocol,
        repeats,
        reason,
    };
    // Packets are sent and received outside the owner's context (softirq,
    // timers, kernel workers): the record names the socket's owner, and no
    // process.
    ev.header.kind = EVENT_NETWORK;
    ev.header.uid = unsafe { bpf_get_socket_uid(skb) };
    ev.header.cgroup_id = key;
    ev.header.boot_ns = now;
    entry.write(ev);
    entry.submit(0);
}
