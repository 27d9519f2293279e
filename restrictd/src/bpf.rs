//! Loading restrictd's BPF object, attaching its programs to a cgroup, and the
//! only code that writes its maps (sessions and policy rules).

use std::{fs::File, net::Ipv6Addr, path::Path};

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, RingBuf},
    programs::{links::CgroupAttachMode, CgroupSockAddr},
    Ebpf, EbpfLoader,
};
use ipnet::IpNet;
use restrictd_ebpf::{
    NetworkEvent, RuleValue, SessionEntry, V4KeyData, V6KeyData, LOST_NETWORK, POLICY_ID_BITS,
    POLICY_NONE,
};

use crate::policy::Policy;

/// The object built by build.rs from restrictd-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/restrictd"));

const PROGRAMS: [&str; 4] = ["connect4", "connect6", "sendmsg4", "sendmsg6"];

#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Network event ring buffer size in pages (power of two).
    pub network_buffer_pages: u32,
}

/// Events the kernel could not deliver (ring buffer full), per event type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lost {
    pub network: u64,
}

type V4Trie = LpmTrie<MapData, V4KeyData, RuleValue>;
type V6Trie = LpmTrie<MapData, V6KeyData, RuleValue>;

/// A loaded instance of the programs and maps. Dropping it detaches every
/// program it attached (the links are fd-based) and frees its maps.
pub struct Enforcer {
    ebpf: Ebpf,
    sessions: HashMap<MapData, u64, SessionEntry>,
    active: Array<MapData, u32>,
    allow_v4: V4Trie,
    deny_v4: V4Trie,
    allow_v6: V6Trie,
    deny_v6: V6Trie,
    lost: PerCpuArray<MapData, u64>,
    network_events: Option<RingBuf<MapData>>,
    /// The policy whose rules are in the tries, under its id.
    current: Option<(u32, Policy)>,
    next_policy_id: u32,
}

fn map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let m = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("BPF object has no map {name}"))?;
    T::try_from(m).with_context(|| format!("BPF map {name}"))
}

impl Enforcer {
    /// Loads the object and runs the verifier on every program; nothing is
    /// attached yet.
    pub fn load(opts: LoadOptions) -> Result<Enforcer> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("NETWORK_EVENTS", opts.network_buffer_pages * page_size())
            .load(OBJECT)
            .context(
                "loading restrictd's BPF object (needs root, and a kernel with BPF and cgroup v2)",
            )?;
        for name in PROGRAMS {
            let prog: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("BPF object has no program {name}"))?
                .try_into()
                .with_context(|| format!("BPF program {name}"))?;
            prog.load()
                .with_context(|| format!("the kernel refused BPF program {name}"))?;
        }
        let mut e = Enforcer {
            sessions: map(&mut ebpf, "SESSIONS")?,
            active: map(&mut ebpf, "ACTIVE")?,
            allow_v4: map(&mut ebpf, "ALLOW_V4")?,
            deny_v4: map(&mut ebpf, "DENY_V4")?,
            allow_v6: map(&mut ebpf, "ALLOW_V6")?,
            deny_v6: map(&mut ebpf, "DENY_V6")?,
            lost: map(&mut ebpf, "LOST")?,
            network_events: Some(map(&mut ebpf, "NETWORK_EVENTS")?),
            ebpf,
            current: None,
            next_policy_id: 1,
        };
        e.active.set(0, POLICY_NONE, 0)?;
        Ok(e)
    }

    /// Attaches the programs to `cgroup_dir`; they then see every process in
    /// it and in every cgroup below it. Other programs attached there (systemd's,
    /// another restrictd's) keep running: all must allow a call.
    pub fn attach(&mut self, cgroup_dir: &Path) -> Result<()> {
        let dir = File::open(cgroup_dir)
            .with_context(|| format!("opening cgroup {}", cgroup_dir.display()))?;
        for name in PROGRAMS {
            let prog: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .expect("checked at load")
                .try_into()
                .expect("checked at load");
            // On 5.7+ aya attaches with a BPF link, which the kernel always
            // adds in multi mode and which refuses explicit flags (EINVAL),
            // so the "Single" (no flags) mode is what yields ALLOW_MULTI here.
            prog.attach(&dir, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {name} to cgroup {}", cgroup_dir.display()))?;
        }
        Ok(())
    }

    pub fn add_session(&mut self, cgroup_id: u64, entry: SessionEntry) -> Result<()> {
        self.sessions
            .insert(cgroup_id, entry, 0)
            .with_context(|| format!("registering cgroup {cgroup_id} (too many sessions?)"))
    }

    pub fn remove_session(&mut self, cgroup_id: u64) -> Result<()> {
        match self.sessions.remove(&cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("unregistering cgroup {cgroup_id}")),
        }
    }

    /// Makes `policy` the host-wide policy (`None`: allow everything).
    ///
    /// The new rules are written under a fresh policy id, then `ACTIVE` is
    /// switched in one map write, so each connect() sees either the old policy
    /// or the new one, never a mix. The old rules are removed afterwards, allow
    /// rules first: a program that read the old id just before the switch can
    /// then only be stricter, never more permissive.
    pub fn set_policy(&mut self, policy: Option<&Policy>) -> Result<()> {
        let new_id = match policy {
            None => POLICY_NONE,
            Some(p) => {
                let id = self.next_policy_id;
                // Ids are never reused while in use; wrapping after 4 billion updates is fine.
                self.next_policy_id = self.next_policy_id.wrapping_add(1).max(1);
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
            self.write_rules(old_id, &old_policy, false)?;
        }
        Ok(())
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
        both(&mut self.deny_v4, &deny4, &mut self.deny_v6, &deny6, insert)
    }

    /// The network event ring buffer; can be taken once (by the event reader).
    pub fn take_network_events(&mut self) -> Option<RingBuf<MapData>> {
        self.network_events.take()
    }

    /// Per program: (name, runs, total run time) as the kernel counts them
    /// while BPF statistics are enabled (`aya::sys::enable_stats`).
    pub fn program_stats(&self) -> Result<Vec<(&'static str, u64, std::time::Duration)>> {
        PROGRAMS
            .iter()
            .map(|&name| {
                let prog: &CgroupSockAddr = self
                    .ebpf
                    .program(name)
                    .expect("checked at load")
                    .try_into()
                    .expect("checked at load");
                let info = prog.info()?;
                Ok((name, info.run_count(), info.run_time()))
            })
            .collect()
    }

    pub fn lost(&self) -> Result<Lost> {
        let per_cpu = self.lost.get(&LOST_NETWORK, 0)?;
        Ok(Lost {
            network: per_cpu.iter().sum(),
        })
    }
}

/// The trie keys of a list: IPv4 keys, and IPv6 keys (IPv6 rules plus every
/// IPv4 rule in its v4-mapped form), each with the CIDR it came from.
#[allow(clippy::type_complexity)]
fn rule_keys(
    id: u32,
    list: &[IpNet],
) -> (Vec<(Key<V4KeyData>, IpNet)>, Vec<(Key<V6KeyData>, IpNet)>) {
    let idb = id.to_be_bytes();
    let mut v4 = Vec::new();
    let mut v6 = Vec::with_capacity(list.len());
    for net in list {
        let (addr, len): (Ipv6Addr, u8) = match net {
            IpNet::V4(n) => {
                let mut data: V4KeyData = [0; 8];
                data[..4].copy_from_slice(&idb);
                data[4..].copy_from_slice(&n.network().octets());
                v4.push((
                    Key::new(POLICY_ID_BITS + u32::from(n.prefix_len()), data),
                    *net,
                ));
                (n.network().to_ipv6_mapped(), 96 + n.prefix_len())
            }
            IpNet::V6(n) => (n.network(), n.prefix_len()),
        };
        let mut data: V6KeyData = [0; 20];
        data[..4].copy_from_slice(&idb);
        data[4..].copy_from_slice(&addr.octets());
        v6.push((Key::new(POLICY_ID_BITS + u32::from(len), data), *net));
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

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) as u32
}

/// Decodes one ring-buffer record.
pub fn decode_network_event(bytes: &[u8]) -> Option<NetworkEvent> {
    if bytes.len() < std::mem::size_of::<NetworkEvent>() {
        return None;
    }
    // SAFETY: length checked; NetworkEvent is plain #[repr(C)] data, any bit pattern is valid.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<NetworkEvent>()) })
}
