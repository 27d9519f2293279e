//! The policy tries' key layout: a policy id (big-endian, so it is matched
//! first as part of the prefix) followed by the address. A rule for a CIDR
//! of length `len` has prefix length `POLICY_ID_BITS + len`; a lookup uses
//! the full length. The BPF programs and the map writer both build keys here.

pub const POLICY_ID_BITS: u32 = 32;

/// `RULES_V4` key data.
pub type V4KeyData = [u8; 8];
/// `RULES_V6` key data.
pub type V6KeyData = [u8; 20];

#[inline(always)]
pub fn v4(policy_id: u32, addr: [u8; 4]) -> V4KeyData {
    let p = policy_id.to_be_bytes();
    [p[0], p[1], p[2], p[3], addr[0], addr[1], addr[2], addr[3]]
}

#[inline(always)]
pub fn v6(policy_id: u32, addr: [u8; 16]) -> V6KeyData {
    let p = policy_id.to_be_bytes();
    let mut d = [0u8; 20];
    d[0] = p[0];
    d[1] = p[1];
    d[2] = p[2];
    d[3] = p[3];
    let mut i = 0;
    while i < 16 {
        d[4 + i] = addr[i];
        i += 1;
    }
    d
}

/// The policy id a key (of either trie) belongs to.
#[inline(always)]
pub fn policy_id(data: &[u8]) -> u32 {
    match data {
        [a, b, c, d, ..] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

/// Prefix length of a rule for a CIDR of `cidr_len` bits.
#[inline(always)]
pub const fn prefix_len(cidr_len: u8) -> u32 {
    POLICY_ID_BITS + cidr_len as u32
}

/// An IPv4 address as the IPv6 trie holds it (`::ffff:a.b.c.d`), and the
/// prefix length of an IPv4 CIDR there.
#[inline(always)]
pub fn v4_mapped(addr: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3],
    ]
}

pub const V4_MAPPED_PREFIX: u8 = 96;
