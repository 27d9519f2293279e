//! The policy tries and the active policy id: the only writer of the rules.

use std::{collections::HashMap, net::Ipv6Addr};

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{lpm_trie::Key, Array, LpmTrie, MapData, MapError},
    Ebpf,
};
use ipnet::IpNet;
use restrictd_common::{
    key::{self, V4KeyData, V6KeyData},
    PathKeyData, PortRange, RuleEntry, POLICY_NONE, PORT_RANGES,
};

use super::{take, write_path_rules};
use crate::policy::{Policy, PolicySet, Rule};

/// How long old policy rules outlive a switch (see `set_all`).
const POLICY_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

type V4Trie = LpmTrie<MapData, V4KeyData, RuleEntry>;
type V6Trie = LpmTrie<MapData, V6KeyData, RuleEntry>;

/// The kernel ids of an applied set: the host default's (`POLICY_NONE`
/// without one) and each per-login policy's by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyIds {
    pub default: u32,
    pub by_name: HashMap<String, u32>,
}

/// Policies taken out of force by `PolicyMaps::replace`, whose rules are
/// still in the tries: a program that read an old id just before the
/// switch may still be looking it up, so they stay until such runs are
/// long over (`POLICY_GRACE`).
pub struct Retired {
    since: std::time::Instant,
    policies: Vec<(u32, Policy)>,
}

impl Retired {
    /// What is left of the grace period.
    pub fn grace_left(&self) -> std::time::Duration {
        POLICY_GRACE.saturating_sub(self.since.elapsed())
    }
}

pub struct PolicyMaps {
    active: Array<MapData, u32>,
    rules_v4: V4Trie,
    rules_v6: V6Trie,
    /// `PATH_RULES`: policies' own disk filters, under their ids (the
    /// host's filter, id 0, is `PathRules`'s).
    paths: LpmTrie<MapData, PathKeyData, u8>,
    /// The policies whose rules are in the tries, under their ids.
    current: Vec<(u32, Policy)>,
    next_id: u32,
}

impl PolicyMaps {
    /// `reused`: the maps are live from a previous run; keep enforcing what
    /// is there, and never reuse a policy id that may still be in the tries.
    pub(super) fn new(
        ebpf: &mut Ebpf,
        paths: LpmTrie<MapData, PathKeyData, u8>,
        reused: bool,
    ) -> Result<PolicyMaps> {
        let mut p = PolicyMaps {
            active: take(ebpf, "ACTIVE")?,
            rules_v4: take(ebpf, "RULES_V4")?,
            rules_v6: take(ebpf, "RULES_V6")?,
            paths,
            current: Vec::new(),
            next_id: 1,
        };
        if reused {
            let max = [
                p.active.get(&0, 0)?,
                max_id(&p.rules_v4),
                max_id(&p.rules_v6),
                max_id(&p.paths),
            ]
            .into_iter()
            .max()
            .unwrap_or(0);
            p.next_id = max.wrapping_add(1).max(1);
        } else {
            p.active.set(0, POLICY_NONE, 0)?;
        }
        Ok(p)
    }

    /// Makes `policy` the host-wide policy (`None`: allow everything), with
    /// no per-login policies.
    pub fn set(&mut self, policy: Option<&Policy>) -> Result<()> {
        let set = PolicySet {
            default: policy.cloned(),
            policies: Vec::new(),
        };
        self.set_all(&set, |_| Ok(())).map(|_| ())
    }

    /// Makes `set` the policies in force.
    ///
    /// Every policy's rules are written under a fresh id; then `retarget`
    /// points sessions and identities at their new policies' ids (one map
    /// write each), and `ACTIVE` is switched to the new host default in one
    /// map write: each connect() sees a whole old policy or a whole new
    /// one, never a mix. The old rules are removed `POLICY_GRACE` later (a
    /// program run takes well under a microsecond). If
    /// `retarget` fails, the new rules are removed and the old stay in force.
    /// Only this object is busy meanwhile: logins use `SessionMap`.
    pub fn set_all(
        &mut self,
        set: &PolicySet,
        retarget: impl FnOnce(&PolicyIds) -> Result<()>,
    ) -> Result<PolicyIds> {
        let (ids, retired) = self.replace(set, retarget)?;
        self.delete_retired(retired)?;
        Ok(ids)
    }

    /// `set_all` up to the switch: the new policies are in force when it
    /// returns, and the old ones' rules are left for `delete_retired`
    /// (the daemon's apply returns without waiting out the grace period;
    /// rules a stop leaves behind are purged at the next start).
    pub fn replace(
        &mut self,
        set: &PolicySet,
        retarget: impl FnOnce(&PolicyIds) -> Result<()>,
    ) -> Result<(PolicyIds, Retired)> {
        let mut ids = PolicyIds::default();
        let mut written: Vec<(u32, Policy)> = Vec::new();
        // Every policy gets an id, an unrestricted one too: it may have a
        // disk filter, and its sessions skip the rule lookup anyway.
        for p in set.all() {
            let id = self.next_id;
            // Ids are never reused while in use; wrapping after 4 billion updates is fine.
            self.next_id = self.next_id.wrapping_add(1).max(1);
            written.push((id, p.clone()));
            if set.default.as_ref().is_some_and(|d| std::ptr::eq(d, p)) {
                ids.default = id;
            } else {
                ids.by_name.insert(p.name.clone(), id);
            }
        }
        if let Err(e) = self.write_policies(&written, true) {
            let _ = self.write_policies(&written, false);
            return Err(e);
        }
        if let Err(e) = retarget(&ids) {
            let _ = self.write_policies(&written, false);
            return Err(e);
        }
        self.active
            .set(0, ids.default, 0)
            .context("switching the active policy")?;
        let old = std::mem::replace(&mut self.current, written);
        Ok((
            ids,
            Retired {
                since: std::time::Instant::now(),
                policies: old,
            },
        ))
    }

    /// Removes the rules of policies that `replace` took out of force, once
    /// their grace period is over (sleeping out what is left of it).
    pub fn delete_retired(&mut self, retired: Retired) -> Result<()> {
        if retired.policies.is_empty() {
            return Ok(());
        }
        std::thread::sleep(retired.grace_left());
        self.write_policies(&retired.policies, false)
    }

    /// Removes every rule that does not belong to a policy in force (left
    /// over by a previous run that stopped before deleting them).
    pub fn purge_inactive(&mut self, keep: &[u32]) -> Result<()> {
        let mut keep = keep.to_vec();
        keep.push(self.active.get(&0, 0)?);
        purge(&mut self.rules_v4, &keep)?;
        purge(&mut self.rules_v6, &keep)?;
        keep.push(0); // the host's disk filter
        purge(&mut self.paths, &keep)
    }

    /// Inserts (or removes) the rules of each policy under its id. Every
    /// IPv4 CIDR is also entered as its v4-mapped IPv6 form
    /// (`::ffff:a.b.c.d/96+len`), so an AF_INET6 socket cannot bypass IPv4
    /// rules.
    ///
    /// All policies' entries go in together, in batches: the v4 and v6
    /// tries are independent maps, written by two threads.
    fn write_policies(&mut self, list: &[(u32, Policy)], insert: bool) -> Result<()> {
        let mut entries = PolicyEntries::default();
        for (i, (id, p)) in list.iter().enumerate() {
            entries
                .add(i, rule_entries(*id, &p.allow, &p.deny))
                .map_err(|e| anyhow!("policy {:?}, {e}", p.name))?;
        }
        let name = |i: usize| list[i].1.name.as_str();
        // Fault injection for the tests: the daemon dies with the new
        // policy NAME's IPv4 entries written and its IPv6 ones not (the old
        // policy is active).
        let fault = insert
            && std::env::var("RESTRICTD_FAULT").is_ok_and(|v| {
                v.strip_prefix("policy-mid-write:")
                    .is_some_and(|n| list.iter().any(|(_, p)| p.name == n))
            });
        entries.write(&mut self.rules_v4, &mut self.rules_v6, insert, fault, name)?;
        // Their own disk filters, under the same ids.
        for (id, p) in list {
            if let Some(d) = &p.record.disk_paths {
                write_path_rules(&mut self.paths, *id, &d.filter, insert).map_err(|e| {
                    anyhow!(
                        "policy {:?}, record.disk_include/disk_exclude: {e:#}",
                        p.name
                    )
                })?;
            }
        }
        Ok(())
    }
}

/// The trie entries of several policies, and for each entry the index of
/// its policy.
#[derive(Default)]
struct PolicyEntries {
    v4: Entries<V4KeyData>,
    v6: Entries<V6KeyData>,
    owner4: Vec<usize>,
    owner6: Vec<usize>,
}

impl PolicyEntries {
    fn add(
        &mut self,
        owner: usize,
        entries: Result<(Entries<V4KeyData>, Entries<V6KeyData>), String>,
    ) -> Result<(), String> {
        let (v4, v6) = entries?;
        self.owner4.extend(std::iter::repeat_n(owner, v4.len()));
        self.owner6.extend(std::iter::repeat_n(owner, v6.len()));
        self.v4.extend(v4);
        self.v6.extend(v6);
        Ok(())
    }

    /// Updates the v4 and the v6 trie concurrently (with `fault`, the v4
    /// trie only, then the process aborts). An error names the policy
    /// (`name` of its index) and the rule.
    fn write<'a>(
        &self,
        t4: &mut V4Trie,
        t6: &mut V6Trie,
        insert: bool,
        fault: bool,
        name: impl Fn(usize) -> &'a str + Sync,
    ) -> Result<()> {
        if fault {
            let _ = update_all(t4, &self.v4, insert);
            std::process::abort();
        }
        std::thread::scope(|s| {
            let t = s.spawn(|| update_all(t4, &self.v4, insert));
            let r6 = update_all(t6, &self.v6, insert);
            let r4 = t.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            let named = |r: Result<(), (usize, anyhow::Error)>, owners: &[usize]| {
                r.map_err(|(i, e)| e.context(format!("policy {:?}", name(owners[i]))))
            };
            named(r4, &self.owner4).and(named(r6, &self.owner6))
        })
    }
}

/// Checks that every trie entry of `set` fits (at most `PORT_RANGES` port
/// ranges cover any one address of a list), as applying it would.
pub fn check_fits(set: &PolicySet) -> Result<(), String> {
    for p in set.all() {
        rule_entries(0, &p.allow, &p.deny).map_err(|e| format!("policy {:?}, {e}", p.name))?;
    }
    Ok(())
}

type Entries<K> = Vec<(Key<K>, RuleEntry, IpNet)>;

/// Which list a rule is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum List {
    Allow,
    Deny,
}

/// The trie entries of a policy's two lists: IPv4 ones, and IPv6 ones
/// (IPv6 rules plus every IPv4 rule in its v4-mapped form). One entry per
/// prefix of either list; each list's half of its value holds the port
/// ranges of every rule of that list whose CIDR covers the prefix, so that
/// the longest match alone decides.
fn rule_entries(
    id: u32,
    allow: &[Rule],
    deny: &[Rule],
) -> Result<(Entries<V4KeyData>, Entries<V6KeyData>), String> {
    let mut v4: Vec<Net> = Vec::new();
    let mut v6: Vec<Net> = Vec::new();
    let lists = [(List::Allow, allow), (List::Deny, deny)];
    for (list, r) in lists
        .iter()
        .flat_map(|(l, rules)| rules.iter().map(|r| (*l, r)))
    {
        match r.net {
            IpNet::V4(n) => {
                v4.push((
                    u32::from(n.network()) as u128,
                    n.prefix_len(),
                    r.net,
                    list,
                    r,
                ));
                let mapped: Ipv6Addr = key::v4_mapped(n.network().octets()).into();
                v6.push((
                    u128::from(mapped),
                    key::V4_MAPPED_PREFIX + n.prefix_len(),
                    r.net,
                    list,
                    r,
                ));
            }
            IpNet::V6(n) => v6.push((u128::from(n.network()), n.prefix_len(), r.net, list, r)),
        }
    }
    let v4 = merged(v4, 32)?
        .into_iter()
        .map(|(addr, len, net, value)| {
            let data = key::v4(id, (addr as u32).to_be_bytes());
            (Key::new(key::prefix_len(len), data), value, net)
        })
        .collect();
    let v6 = merged(v6, 128)?
        .into_iter()
        .map(|(addr, len, net, value)| {
            let data = key::v6(id, addr.to_be_bytes());
            (Key::new(key::prefix_len(len), data), value, net)
        })
        .collect();
    Ok((v4, v6))
}

/// A rule's prefix (address bits, length), its CIDR, list and rule.
type Net<'a> = (u128, u8, IpNet, List, &'a Rule);

/// A port range and its protocols: `(lo, hi, PROTO_* bits)`.
type Range = (u16, u16, u32);

/// One entry per distinct prefix of either list, each list's half the
/// ranges of that list's rules on this prefix and on every shorter prefix
/// that contains it.
fn merged(mut nets: Vec<Net>, bits: u8) -> Result<Vec<(u128, u8, IpNet, RuleEntry)>, String> {
    // Containing prefixes sort before what they contain.
    nets.sort_by_key(|&(addr, len, ..)| (addr, len));
    let contains = |(pa, pl): (u128, u8), (ca, cl): (u128, u8)| {
        pl <= cl && (pl == 0 || (pa ^ ca) >> (bits - pl) == 0)
    };
    let mut out: Vec<(u128, u8, IpNet, RuleEntry)> = Vec::new();
    // The chain of prefixes containing the current one, with each list's
    // ranges.
    let mut stack: Vec<(u128, u8, [Vec<Range>; 2])> = Vec::new();
    let mut i = 0;
    while i < nets.len() {
        let (addr, len, net, ..) = nets[i];
        let mut own: [Vec<Range>; 2] = Default::default();
        while i < nets.len() && (nets[i].0, nets[i].1) == (addr, len) {
            own[(nets[i].3 == List::Deny) as usize].extend(nets[i].4.ranges());
            i += 1;
        }
        while stack
            .last()
            .is_some_and(|&(pa, pl, _)| !contains((pa, pl), (addr, len)))
        {
            stack.pop();
        }
        let mut ranges: [Vec<Range>; 2] =
            stack.last().map(|(_, _, r)| r.clone()).unwrap_or_default();
        let mut entry = RuleEntry::default();
        for (k, (name, value)) in [("allow", &mut entry.allow), ("deny", &mut entry.deny)]
            .into_iter()
            .enumerate()
        {
            ranges[k].extend(std::mem::take(&mut own[k]));
            ranges[k] = simplify(std::mem::take(&mut ranges[k]));
            if ranges[k].len() > PORT_RANGES {
                return Err(format!(
                    "{name} list: {} port ranges apply to {net} (its own rules and those of the CIDRs containing it); at most {PORT_RANGES} can: merge ranges or split the CIDR",
                    ranges[k].len()
                ));
            }
            for (slot, &(lo, hi, protocols)) in value.ranges.iter_mut().zip(&ranges[k]) {
                *slot = PortRange { lo, hi, protocols };
            }
        }
        out.push((addr, len, net, entry));
        stack.push((addr, len, ranges));
    }
    Ok(out)
}

/// Fewest ranges with the same coverage: ranges of one protocol set that
/// overlap or touch are joined, and a range inside another whose protocols
/// include its own is dropped.
fn simplify(mut r: Vec<(u16, u16, u32)>) -> Vec<(u16, u16, u32)> {
    r.sort_by_key(|&(lo, hi, p)| (p, lo, hi));
    let mut joined: Vec<(u16, u16, u32)> = Vec::new();
    for (lo, hi, p) in r {
        match joined.last_mut() {
            Some(last) if last.2 == p && (lo as u32) <= last.1 as u32 + 1 => {
                last.1 = last.1.max(hi)
            }
            _ => joined.push((lo, hi, p)),
        }
    }
    let keep: Vec<bool> = joined
        .iter()
        .enumerate()
        .map(|(i, &(lo, hi, p))| {
            !joined.iter().enumerate().any(|(j, &(l2, h2, p2))| {
                j != i
                    && p2 & p == p
                    && l2 <= lo
                    && hi <= h2
                    && (p2 != p || (l2, h2) != (lo, hi) || j < i)
            })
        })
        .collect();
    joined
        .into_iter()
        .zip(keep)
        .filter_map(|(r, k)| k.then_some(r))
        .collect()
}

/// Writes (or removes) `entries`; on failure, the index of the entry that
/// failed and why.
fn update_all<K: aya::Pod>(
    trie: &mut LpmTrie<MapData, K, RuleEntry>,
    entries: &[(Key<K>, RuleEntry, IpNet)],
    insert: bool,
) -> Result<(), (usize, anyhow::Error)> {
    use aya::maps::IterableMap;
    use std::os::fd::AsFd;
    // Batches of entries per syscall: a 100,000-rule set is otherwise as
    // many syscalls, each costing more than the trie insert it carries.
    for (c, chunk) in entries.chunks(BATCH).enumerate() {
        let base = c * BATCH;
        let keys: Vec<Key<K>> = chunk.iter().map(|(k, ..)| *k).collect();
        let done = if insert {
            let values: Vec<RuleEntry> = chunk.iter().map(|(_, v, _)| *v).collect();
            batch(
                trie.map().fd().as_fd(),
                BPF_MAP_UPDATE_BATCH,
                &keys,
                Some(&values),
            )
        } else {
            batch::<_, RuleEntry>(trie.map().fd().as_fd(), BPF_MAP_DELETE_BATCH, &keys, None)
        };
        // A batch stops at the entry it could not write (or remove: one
        // already gone), and a kernel without batch calls for LPM tries
        // refuses the first; either way, go on one entry at a time from
        // there, which names the entry that fails.
        let Err((n, _)) = done else {
            continue;
        };
        for (j, (key, value, net)) in chunk.iter().enumerate().skip(n) {
            let r = if insert {
                trie.insert(key, value, 0)
                    .map_err(|e| anyhow::Error::new(e).context(format!("rule {net}")))
            } else {
                match trie.remove(key) {
                    Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
                    Err(e) => Err(anyhow::Error::new(e).context(format!("removing rule {net}"))),
                }
            };
            r.map_err(|e| (base + j, e))?;
        }
    }
    Ok(())
}

/// Entries per batch syscall.
const BATCH: usize = 4096;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `bpf_attr` for the `BPF_MAP_*_BATCH` commands (linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// One `BPF_MAP_UPDATE_BATCH` (`values` given) or `BPF_MAP_DELETE_BATCH`
/// of map `fd` (aya has no batch calls). On failure: how many entries were
/// done before the one that failed, and the error.
fn batch<K: Copy, V: Copy>(
    fd: std::os::fd::BorrowedFd,
    cmd: libc::c_long,
    keys: &[K],
    values: Option<&[V]>,
) -> std::result::Result<(), (usize, std::io::Error)> {
    use std::os::fd::AsRawFd;
    if keys.is_empty() {
        return Ok(());
    }
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.map_or(0, |v| v.as_ptr() as u64),
        count: keys.len() as u32,
        map_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: attr points at arrays of `count` keys (and values) of the
    // map's key (and value) size, alive for the call; the kernel writes
    // only `count` back.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as u32,
        )
    };
    if r < 0 {
        return Err((attr.count as usize, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The largest policy id among `trie`'s keys (a rule trie's, or a disk
/// filter's: both start with the id).
fn max_id<K: aya::Pod + AsRef<[u8]>, V: aya::Pod>(trie: &LpmTrie<MapData, K, V>) -> u32 {
    trie.keys()
        .filter_map(|k| k.ok())
        .map(|k| key::policy_id(k.data().as_ref()))
        .max()
        .unwrap_or(0)
}

/// Removes `trie`'s keys whose policy id is not in `keep`.
fn purge<K: aya::Pod + AsRef<[u8]>, V: aya::Pod>(
    trie: &mut LpmTrie<MapData, K, V>,
    keep: &[u32],
) -> Result<()> {
    let stale: Vec<Key<K>> = trie
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| !keep.contains(&key::policy_id(k.data().as_ref())))
        .collect();
    for k in &stale {
        match trie.remove(k) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e).context("removing a stale rule"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use restrictd_common::{PROTO_ANY, PROTO_TCP, PROTO_UDP};

    fn rule(net: &str, protocols: u32, ports: &[(u16, u16)]) -> Rule {
        Rule {
            net: net.parse().unwrap(),
            protocols,
            ports: ports.to_vec(),
            at: String::new(),
        }
    }

    /// The entry the kernel's longest-prefix match finds for `addr`.
    fn lookup(entries: &Entries<V4KeyData>, addr: [u8; 4]) -> Option<RuleEntry> {
        entries
            .iter()
            .filter(|(_, _, net)| net.contains(&std::net::IpAddr::from(addr)))
            .max_by_key(|(_, _, net)| net.prefix_len())
            .map(|(_, v, _)| *v)
    }

    #[test]
    fn nested_prefixes_carry_their_ancestors_ports() {
        let rules = [
            rule("10.0.0.0/8", PROTO_TCP, &[(443, 443)]),
            rule("10.1.0.0/16", PROTO_UDP, &[(53, 53)]),
            rule("10.1.2.0/24", PROTO_ANY, &[]),
            rule("11.0.0.0/8", PROTO_TCP, &[(22, 22)]),
        ];
        let (v4, v6) = rule_entries(7, &rules, &[]).unwrap();
        assert_eq!(v4.len(), 4);
        assert_eq!(v6.len(), 4);
        let at = |a| lookup(&v4, a).unwrap().allow;
        assert!(at([10, 1, 9, 9]).covers(PROTO_TCP, 443));
        assert!(at([10, 1, 9, 9]).covers(PROTO_UDP, 53));
        assert!(!at([10, 1, 9, 9]).covers(PROTO_TCP, 53));
        assert!(at([10, 1, 2, 3]).covers(PROTO_TCP, 9));
        assert!(!at([10, 2, 0, 1]).covers(PROTO_UDP, 53));
        // A sibling prefix inherits nothing from its neighbour.
        assert!(!at([11, 0, 0, 1]).covers(PROTO_TCP, 443));
    }

    /// One entry per prefix of either list answers for both: a deny prefix
    /// inside an allow prefix carries the allow, an allow prefix inside a
    /// deny prefix carries the deny, and deny overrides allow per port.
    #[test]
    fn one_entry_answers_for_both_lists() {
        let allow = [
            rule("10.0.0.0/8", PROTO_ANY, &[]),
            rule("12.1.0.0/16", PROTO_TCP, &[(443, 443)]),
        ];
        let deny = [
            rule("10.1.0.0/16", PROTO_TCP, &[(22, 22)]),
            rule("12.0.0.0/8", PROTO_TCP, &[(443, 443)]),
        ];
        let (v4, _) = rule_entries(1, &allow, &deny).unwrap();
        assert_eq!(v4.len(), 4);
        let at = |a| lookup(&v4, a).unwrap();
        assert!(at([10, 1, 0, 1]).allows(PROTO_TCP, 443));
        assert!(!at([10, 1, 0, 1]).allows(PROTO_TCP, 22));
        assert!(at([10, 2, 0, 1]).allows(PROTO_TCP, 22));
        // The deny of 12/8 reaches into the allow of 12.1/16.
        assert!(!at([12, 1, 0, 1]).allows(PROTO_TCP, 443));
        assert!(!at([12, 2, 0, 1]).allows(PROTO_UDP, 53));
        assert!(lookup(&v4, [11, 0, 0, 1]).is_none());
    }

    #[test]
    fn too_many_ranges_on_one_address_is_an_error_naming_it() {
        let rules: Vec<Rule> = (0..9)
            .map(|i| rule("10.0.0.0/8", PROTO_TCP, &[(i * 10, i * 10)]))
            .collect();
        let Err(e) = rule_entries(1, &[], &rules) else {
            panic!("nine ranges on one prefix must not fit")
        };
        assert!(
            e.contains("deny list") && e.contains("10.0.0.0/8") && e.contains("at most 8"),
            "{e}"
        );
        // Adjacent ranges of one protocol join.
        let rules: Vec<Rule> = (0..20)
            .map(|i| rule("10.0.0.0/8", PROTO_TCP, &[(i, i)]))
            .collect();
        let (v4, _) = rule_entries(1, &rules, &[]).unwrap();
        assert_eq!(
            v4[0].1.allow.ranges[0],
            PortRange {
                lo: 0,
                hi: 19,
                protocols: PROTO_TCP
            }
        );
        assert_eq!(v4[0].1.allow.ranges[1].protocols, 0);
    }
}
