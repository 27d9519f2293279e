//! The policy tries and the active policy id: the only writer of the rules.

use std::net::Ipv6Addr;

use anyhow::{Context, Result};
use aya::{
    maps::{lpm_trie::Key, Array, LpmTrie, MapData, MapError},
    Ebpf,
};
use ipnet::IpNet;
use restrictd_common::{
    key::{self, V4KeyData, V6KeyData},
    RuleValue, POLICY_NONE,
};

use super::take;
use crate::policy::Policy;

/// How long old policy rules outlive a switch (see `set`).
const POLICY_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

type V4Trie = LpmTrie<MapData, V4KeyData, RuleValue>;
type V6Trie = LpmTrie<MapData, V6KeyData, RuleValue>;

pub struct PolicyMaps {
    active: Array<MapData, u32>,
    allow_v4: V4Trie,
    deny_v4: V4Trie,
    allow_v6: V6Trie,
    deny_v6: V6Trie,
    /// The policy whose rules are in the tries, under its id.
    current: Option<(u32, Policy)>,
    next_id: u32,
}

impl PolicyMaps {
    /// `reused`: the maps are live from a previous run; keep enforcing what
    /// is there, and never reuse a policy id that may still be in the tries.
    pub(super) fn new(ebpf: &mut Ebpf, reused: bool) -> Result<PolicyMaps> {
        let mut p = PolicyMaps {
            active: take(ebpf, "ACTIVE")?,
            allow_v4: take(ebpf, "ALLOW_V4")?,
            deny_v4: take(ebpf, "DENY_V4")?,
            allow_v6: take(ebpf, "ALLOW_V6")?,
            deny_v6: take(ebpf, "DENY_V6")?,
            current: None,
            next_id: 1,
        };
        if reused {
            let max = [
                p.active.get(&0, 0)?,
                max_id(&p.allow_v4),
                max_id(&p.deny_v4),
                max_id(&p.allow_v6),
                max_id(&p.deny_v6),
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

    /// Makes `policy` the host-wide policy (`None`: allow everything).
    ///
    /// The new rules are written under a fresh policy id, then `ACTIVE` is
    /// switched in one map write, so each connect() sees either the old policy
    /// or the new one, never a mix. The old rules are removed `POLICY_GRACE`
    /// later (a program run takes well under a microsecond), allow rules
    /// first, so even a program preempted mid-lookup could only be stricter.
    /// Only this object is busy meanwhile: logins use `SessionMap`.
    pub fn set(&mut self, policy: Option<&Policy>) -> Result<()> {
        let new_id = match policy {
            None => POLICY_NONE,
            Some(p) => {
                let id = self.next_id;
                // Ids are never reused while in use; wrapping after 4 billion updates is fine.
                self.next_id = self.next_id.wrapping_add(1).max(1);
                if let Err(e) = self.write_rules(id, p, true) {
                    let _ = self.write_rules(id, p, false);
                    return Err(e);
                }
                id
            }
        };
        self.active
            .set(0, new_id, 0)
            .context("switching the active policy")?;
        let old = std::mem::replace(&mut self.current, policy.map(|p| (new_id, p.clone())));
        if let Some((old_id, old_policy)) = old {
            // A program that read the old id just before the switch is still
            // looking it up; its rules stay until such runs are long over.
            std::thread::sleep(POLICY_GRACE);
            self.write_rules(old_id, &old_policy, false)?;
        }
        Ok(())
    }

    /// Removes every rule that does not belong to the active policy (left
    /// over by a previous run that stopped before deleting them).
    pub fn purge_inactive(&mut self) -> Result<()> {
        let active = self.active.get(&0, 0)?;
        purge(&mut self.allow_v4, active)?;
        purge(&mut self.allow_v6, active)?;
        purge(&mut self.deny_v4, active)?;
        purge(&mut self.deny_v6, active)
    }

    /// Inserts (or removes) the rules of `policy` under `id`. Every IPv4 CIDR
    /// is also entered as its v4-mapped IPv6 form (`::ffff:a.b.c.d/96+len`),
    /// so an AF_INET6 socket cannot bypass IPv4 rules.
    ///
    /// The v4 and v6 tries are independent maps, written by two threads (a
    /// 100,000-CIDR policy is hundreds of thousands of map syscalls). Allow
    /// entries are handled before deny entries, which makes removal safe.
    fn write_rules(&mut self, id: u32, policy: &Policy, insert: bool) -> Result<()> {
        let (allow4, allow6) = rule_keys(id, &policy.allow);
        let (deny4, deny6) = rule_keys(id, &policy.deny);
        both(
            &mut self.allow_v4,
            &allow4,
            &mut self.allow_v6,
            &allow6,
            insert,
        )?;
        // Fault injection for the tests: the daemon dies with the new allow
        // rules of policy NAME written and its deny rules not (the old
        // policy is active).
        if insert
            && std::env::var("RESTRICTD_FAULT")
                .is_ok_and(|v| v.strip_prefix("policy-mid-write:") == Some(policy.name.as_str()))
        {
            std::process::abort();
        }
        both(&mut self.deny_v4, &deny4, &mut self.deny_v6, &deny6, insert)
    }
}

type Keys<K> = Vec<(Key<K>, IpNet)>;

/// The trie keys of a list: IPv4 keys, and IPv6 keys (IPv6 rules plus every
/// IPv4 rule in its v4-mapped form), each with the CIDR it came from.
fn rule_keys(id: u32, list: &[IpNet]) -> (Keys<V4KeyData>, Keys<V6KeyData>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::with_capacity(list.len());
    for net in list {
        let (addr, len): (Ipv6Addr, u8) = match net {
            IpNet::V4(n) => {
                let data = key::v4(id, n.network().octets());
                v4.push((Key::new(key::prefix_len(n.prefix_len()), data), *net));
                (
                    key::v4_mapped(n.network().octets()).into(),
                    key::V4_MAPPED_PREFIX + n.prefix_len(),
                )
            }
            IpNet::V6(n) => (n.network(), n.prefix_len()),
        };
        let data = key::v6(id, addr.octets());
        v6.push((Key::new(key::prefix_len(len), data), *net));
    }
    (v4, v6)
}

fn update_all<K: aya::Pod>(
    trie: &mut LpmTrie<MapData, K, RuleValue>,
    keys: &[(Key<K>, IpNet)],
    insert: bool,
) -> Result<()> {
    for (key, net) in keys {
        if insert {
            trie.insert(key, RuleValue { ports: 0 }, 0)
                .with_context(|| format!("rule {net}"))?;
        } else {
            match trie.remove(key) {
                // A CIDR listed twice is removed once.
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e).with_context(|| format!("removing rule {net}")),
            }
        }
    }
    Ok(())
}

/// Updates a v4 and a v6 trie concurrently.
fn both(
    v4: &mut V4Trie,
    k4: &[(Key<V4KeyData>, IpNet)],
    v6: &mut V6Trie,
    k6: &[(Key<V6KeyData>, IpNet)],
    insert: bool,
) -> Result<()> {
    std::thread::scope(|s| {
        let t = s.spawn(|| update_all(v4, k4, insert));
        let r6 = update_all(v6, k6, insert);
        let r4 = t.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        r4.and(r6)
    })
}

fn max_id<K: aya::Pod + AsRef<[u8]>>(trie: &LpmTrie<MapData, K, RuleValue>) -> u32 {
    trie.keys()
        .filter_map(|k| k.ok())
        .map(|k| key::policy_id(k.data().as_ref()))
        .max()
        .unwrap_or(0)
}

fn purge<K: aya::Pod + AsRef<[u8]>>(
    trie: &mut LpmTrie<MapData, K, RuleValue>,
    keep: u32,
) -> Result<()> {
    let stale: Vec<Key<K>> = trie
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| key::policy_id(k.data().as_ref()) != keep)
        .collect();
    for k in &stale {
        match trie.remove(k) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e).context("removing a stale rule"),
        }
    }
    Ok(())
}
