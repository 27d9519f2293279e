//! Loading restrictd's BPF object, attaching its programs to a cgroup, and the
//! only code that writes its maps (sessions and policy rules).

use std::{
    fs::File,
    net::Ipv6Addr,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, Context, Result};
use aya::{
    maps::{
        lpm_trie::Key, Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap,
        RingBuf,
    },
    programs::{
        links::{CgroupAttachMode, FdLink, PinnedLink},
        CgroupSockAddr, TracePoint,
    },
    Ebpf, EbpfLoader,
};
use ipnet::IpNet;
use restrictd_ebpf::{
    CommandEvent, DiskEvent, DiskRate, NetworkEvent, PathKeyData, RuleValue, SessionEntry,
    V4KeyData, V6KeyData, ARGV_CAP, CONFIG_ARGV_LIMIT, CONFIG_DISK_RATE,
    CONFIG_EXEC_FILENAME_OFFSET, CONFIG_FORK_CHILD_PID_OFFSET, CONFIG_MANAGER_LEVEL, EVENT_COMMAND,
    EVENT_DISK, EVENT_NETWORK, LOST_COMMAND, LOST_DISK, LOST_NETWORK, PATH_PREFIX_MAX,
    POLICY_ID_BITS, POLICY_NONE, SESSION_RECORD_COMMANDS, SESSION_RECORD_DISK,
};

use crate::{pathfilter::PathFilter, policy::Policy};

/// The object built by build.rs from restrictd-ebpf.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/restrictd"));

const PROGRAMS: [&str; 4] = ["connect4", "connect6", "sendmsg4", "sendmsg6"];

/// How long old policy rules outlive a switch (see `set_policy`).
const POLICY_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// Command recording programs: (program, tracepoint category, tracepoint).
const COMMAND_TRACEPOINTS: [(&str, &str, &str); 6] = [
    ("sched_process_fork", "sched", "sched_process_fork"),
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sys_enter_execve", "syscalls", "sys_enter_execve"),
    ("sys_enter_execveat", "syscalls", "sys_enter_execveat"),
    ("sys_exit_execve", "syscalls", "sys_exit_execve"),
    ("sys_exit_execveat", "syscalls", "sys_exit_execveat"),
];

/// Disk recording programs. open(2) and creat(2) exist only on some
/// architectures (x86_64, not arm64); a missing tracepoint is skipped.
/// (An fexit on security_file_open would also see io_uring opens, but BPF
/// trampolines are not available everywhere; see README limitations.)
const DISK_TRACEPOINTS: [(&str, &str, &str); 8] = [
    ("sys_enter_openat", "syscalls", "sys_enter_openat"),
    ("sys_enter_openat2", "syscalls", "sys_enter_openat2"),
    ("sys_enter_open", "syscalls", "sys_enter_open"),
    ("sys_enter_creat", "syscalls", "sys_enter_creat"),
    ("sys_exit_open", "syscalls", "sys_exit_openat"),
    ("sys_exit_open", "syscalls", "sys_exit_openat2"),
    ("sys_exit_open", "syscalls", "sys_exit_creat"),
    ("sys_exit_open", "syscalls", "sys_exit_open"),
];

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Network event ring buffer size in pages (power of two).
    pub network_buffer_pages: u32,
    /// Command event ring buffer size in pages (power of two).
    pub command_buffer_pages: u32,
    /// Disk event ring buffer size in pages (power of two).
    pub disk_buffer_pages: u32,
    /// Which opens are recorded.
    pub disk_filter: PathFilter,
    /// Disk events per session per second; 0: unlimited.
    pub disk_rate_limit: u32,
    /// Bytes of argv a command event carries at most (≤ ARGV_CAP).
    pub argv_limit: u32,
    /// Pin maps (and, with `attach_pinned`, links) here in bpffs, so that
    /// they outlive this process and a restarted daemon finds them again.
    /// `None`: everything goes away with this process (`restrictd run`).
    pub pin_dir: Option<PathBuf>,
}

const MAPS: [&str; 19] = [
    "SESSIONS",
    "ACTIVE",
    "ALLOW_V4",
    "DENY_V4",
    "ALLOW_V6",
    "DENY_V6",
    "NETWORK_EVENTS",
    "LOST",
    "CONFIG",
    "COMMAND_EVENTS",
    "SCRATCH",
    "PPIDS",
    "EXECS",
    "DISK_EVENTS",
    "DISK_SCRATCH",
    "PATH_RULES",
    "DISK_RATE",
    "DISK_DROPPED",
    "OPENS",
];

/// Events the kernel could not deliver (ring buffer full), per event type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lost {
    pub network: u64,
    pub command: u64,
    pub disk: u64,
}

impl Lost {
    pub fn total(&self) -> u64 {
        self.network + self.command + self.disk
    }
}

/// One record from a ring buffer.
#[derive(Debug, Clone)]
pub enum Record {
    Network(NetworkEvent),
    /// Header, path (without its NUL) and the raw NUL-separated argv bytes.
    Command(CommandEvent, Vec<u8>, Vec<u8>),
    /// Header and path (without its NUL).
    Disk(DiskEvent, Vec<u8>),
}

type V4Trie = LpmTrie<MapData, V4KeyData, RuleValue>;
type V6Trie = LpmTrie<MapData, V6KeyData, RuleValue>;

/// A loaded instance of the programs and maps. Dropping it detaches every
/// program it attached (the links are fd-based) and frees its maps.
pub struct Enforcer {
    ebpf: Ebpf,
    config: Array<MapData, u64>,
    sessions: HashMap<MapData, u64, SessionEntry>,
    active: Array<MapData, u32>,
    allow_v4: V4Trie,
    deny_v4: V4Trie,
    allow_v6: V6Trie,
    deny_v6: V6Trie,
    lost: PerCpuArray<MapData, u64>,
    disk_rate: HashMap<MapData, u64, DiskRate>,
    disk_dropped: PerCpuHashMap<MapData, u64, u64>,
    rings: Vec<RingBuf<MapData>>,
    /// The policy whose rules are in the tries, under its id.
    current: Option<(u32, Policy)>,
    next_policy_id: u32,
    /// True when the maps were already pinned (a restart): their content is live.
    reused: bool,
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

/// The program `name` of the object, as its concrete type.
fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("BPF object has no program {name}"))?
        .try_into()
        .with_context(|| format!("BPF program {name}"))
}

impl Enforcer {
    /// Loads the object and runs the verifier on every program; nothing is
    /// attached yet.
    pub fn load(opts: LoadOptions) -> Result<Enforcer> {
        let mut loader = EbpfLoader::new();
        loader.map_max_entries("NETWORK_EVENTS", opts.network_buffer_pages * page_size());
        loader.map_max_entries("COMMAND_EVENTS", opts.command_buffer_pages * page_size());
        loader.map_max_entries("DISK_EVENTS", opts.disk_buffer_pages * page_size());
        let offsets = crate::btf::Btf::from_sys_fs()?.kernel_offsets()?;
        loader.override_global("KERNEL_OFFSETS", &offsets, true);
        let mut reused = false;
        let pins: Vec<(&str, PathBuf)> = match &opts.pin_dir {
            None => vec![],
            Some(dir) => {
                check_bpffs(dir)?;
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                reused = dir.join("ACTIVE").exists();
                MAPS.iter().map(|m| (*m, dir.join(m))).collect()
            }
        };
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(OBJECT).context(
            "loading restrictd's BPF object (needs root, and a kernel with BPF and cgroup v2)",
        )?;
        let refused = |name: &str| format!("the kernel refused BPF program {name}");
        for name in PROGRAMS {
            program::<CgroupSockAddr>(&mut ebpf, name)?
                .load()
                .with_context(|| refused(name))?;
        }
        for (name, _, _) in COMMAND_TRACEPOINTS {
            program::<TracePoint>(&mut ebpf, name)?
                .load()
                .with_context(|| refused(name))?;
        }
        for (i, (name, _, _)) in DISK_TRACEPOINTS.iter().enumerate() {
            // A program attached to several tracepoints is listed (and loaded) once.
            if DISK_TRACEPOINTS[..i].iter().any(|(n, _, _)| n == name) {
                continue;
            }
            program::<TracePoint>(&mut ebpf, name)?
                .load()
                .with_context(|| refused(name))?;
        }

        // Field offsets of the tracepoints used, as this kernel lays them out.
        let mut config: Array<MapData, u64> = map(&mut ebpf, "CONFIG")?;
        crate::tracefs::check_syscall_layout()?;
        config.set(
            CONFIG_FORK_CHILD_PID_OFFSET,
            crate::tracefs::field_offset("sched", "sched_process_fork", "child_pid")?,
            0,
        )?;
        config.set(
            CONFIG_EXEC_FILENAME_OFFSET,
            crate::tracefs::field_offset("sched", "sched_process_exec", "filename")?,
            0,
        )?;
        config.set(
            CONFIG_ARGV_LIMIT,
            u64::from(opts.argv_limit.min(ARGV_CAP as u32)),
            0,
        )?;
        config.set(CONFIG_DISK_RATE, u64::from(opts.disk_rate_limit), 0)?;
        let mut rules: LpmTrie<MapData, PathKeyData, u8> = map(&mut ebpf, "PATH_RULES")?;
        set_path_rules(&mut rules, &opts.disk_filter)?;
        let mut e = Enforcer {
            config,
            sessions: map(&mut ebpf, "SESSIONS")?,
            active: map(&mut ebpf, "ACTIVE")?,
            allow_v4: map(&mut ebpf, "ALLOW_V4")?,
            deny_v4: map(&mut ebpf, "DENY_V4")?,
            allow_v6: map(&mut ebpf, "ALLOW_V6")?,
            deny_v6: map(&mut ebpf, "DENY_V6")?,
            lost: map(&mut ebpf, "LOST")?,
            disk_rate: map(&mut ebpf, "DISK_RATE")?,
            disk_dropped: map(&mut ebpf, "DISK_DROPPED")?,
            rings: vec![
                map(&mut ebpf, "NETWORK_EVENTS")?,
                map(&mut ebpf, "COMMAND_EVENTS")?,
                map(&mut ebpf, "DISK_EVENTS")?,
            ],
            ebpf,
            current: None,
            next_policy_id: 1,
            reused,
        };
        if reused {
            // Live maps from a previous run: keep enforcing what is there, and
            // never reuse a policy id that may still be in the tries.
            let mut max = e.active.get(&0, 0)?;
            max = max.max(max_id(&e.allow_v4)).max(max_id(&e.deny_v4));
            max = max.max(max_id(&e.allow_v6)).max(max_id(&e.deny_v6));
            e.next_policy_id = max.wrapping_add(1).max(1);
        } else {
            e.active.set(0, POLICY_NONE, 0)?;
        }
        Ok(e)
    }

    /// True when the maps came from a previous run (restart).
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Like `attach`, but the links are pinned under `pin_dir` so they stay
    /// attached when this process exits. Programs already pinned there for
    /// this cgroup (by a previous run) are left in place: they use the same
    /// pinned maps, so there is no moment without enforcement.
    pub fn attach_pinned(&mut self, cgroup_dir: &Path, pin_dir: &Path) -> Result<()> {
        let dir = File::open(cgroup_dir)
            .with_context(|| format!("opening cgroup {}", cgroup_dir.display()))?;
        let cgroup_id = std::os::unix::fs::MetadataExt::ino(&dir.metadata()?);
        for name in PROGRAMS {
            let pin = pin_dir.join(format!("link-{cgroup_id}-{name}"));
            if pin.exists() {
                continue;
            }
            let prog: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            // See `attach` for why Single.
            let id = prog
                .attach(&dir, CgroupAttachMode::Single)
                .with_context(|| format!("attaching {name} to cgroup {}", cgroup_dir.display()))?;
            let link = FdLink::try_from(prog.take_link(id)?)?;
            link.pin(&pin)
                .with_context(|| format!("pinning link {}", pin.display()))?;
        }
        Ok(())
    }

    /// Attaches the recording programs that `session_flags` needs (they see
    /// every exec or open on the host and return at once for processes
    /// outside sessions). With `pin_dir`, the links are pinned so recording
    /// goes on while the daemon restarts.
    pub fn attach_recording(&mut self, pin_dir: Option<&Path>, session_flags: u32) -> Result<()> {
        let mut tracepoints: Vec<(&str, &str, &str)> = Vec::new();
        if session_flags & SESSION_RECORD_COMMANDS != 0 {
            tracepoints.extend(COMMAND_TRACEPOINTS);
        }
        if session_flags & SESSION_RECORD_DISK != 0 {
            let events = crate::tracefs::root()?.join("events");
            tracepoints.extend(
                DISK_TRACEPOINTS
                    .into_iter()
                    .filter(|(_, c, t)| events.join(c).join(t).is_dir()),
            );
        }
        for (name, category, tracepoint) in tracepoints {
            let pin = pin_dir.map(|d| d.join(format!("link-tp-{tracepoint}")));
            if pin.as_ref().is_some_and(|p| p.exists()) {
                continue;
            }
            let prog: &mut TracePoint = program(&mut self.ebpf, name)?;
            let id = prog.attach(category, tracepoint).with_context(|| {
                format!("attaching {name} to tracepoint {category}/{tracepoint}")
            })?;
            if let Some(pin) = pin {
                let link = FdLink::try_from(prog.take_link(id)?)
                    .with_context(|| format!("{name}: this kernel cannot pin tracepoint links"))?;
                link.pin(&pin)
                    .with_context(|| format!("pinning link {}", pin.display()))?;
            }
        }
        Ok(())
    }

    /// Cgroup ids currently registered in the kernel.
    pub fn session_ids(&self) -> Result<Vec<u64>> {
        Ok(self.sessions.keys().collect::<Result<Vec<_>, _>>()?)
    }

    /// Removes every rule that does not belong to the active policy (left
    /// over by a previous run that stopped before deleting them).
    pub fn purge_inactive_rules(&mut self) -> Result<()> {
        let active = self.active.get(&0, 0)?;
        purge(&mut self.allow_v4, active)?;
        purge(&mut self.allow_v6, active)?;
        purge(&mut self.deny_v4, active)?;
        purge(&mut self.deny_v6, active)
    }

    /// Attaches the programs to `cgroup_dir`; they then see every process in
    /// it and in every cgroup below it. Other programs attached there (systemd's,
    /// another restrictd's) keep running: all must allow a call.
    pub fn attach(&mut self, cgroup_dir: &Path) -> Result<()> {
        let dir = File::open(cgroup_dir)
            .with_context(|| format!("opening cgroup {}", cgroup_dir.display()))?;
        for name in PROGRAMS {
            let prog: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
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

    /// Tells the programs at which cgroup level user managers sit, so that a
    /// process under a registered manager counts as in that manager's session.
    pub fn set_manager_level(&mut self, level: u32) -> Result<()> {
        self.config
            .set(CONFIG_MANAGER_LEVEL, u64::from(level), 0)
            .context("setting the user manager level")
    }

    /// Unregisters the cgroup; returns how many of its disk events the rate
    /// limit dropped.
    pub fn remove_session(&mut self, cgroup_id: u64) -> Result<u64> {
        match self.sessions.remove(&cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e).with_context(|| format!("unregistering cgroup {cgroup_id}")),
        }
        let dropped = match self.disk_dropped.get(&cgroup_id, 0) {
            Ok(per_cpu) => per_cpu.iter().sum(),
            Err(_) => 0,
        };
        let _ = self.disk_dropped.remove(&cgroup_id);
        let _ = self.disk_rate.remove(&cgroup_id);
        Ok(dropped)
    }

    /// Makes `policy` the host-wide policy (`None`: allow everything).
    ///
    /// The new rules are written under a fresh policy id, then `ACTIVE` is
    /// switched in one map write, so each connect() sees either the old policy
    /// or the new one, never a mix. The old rules are removed `POLICY_GRACE`
    /// later (a program run takes well under a microsecond), allow rules
    /// first, so even a program preempted mid-lookup could only be stricter.
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
            // A program that read the old id just before the switch is still
            // looking it up; its rules stay until such runs are long over.
            std::thread::sleep(POLICY_GRACE);
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

    /// The event ring buffers; taken once, by the event reader.
    pub fn take_rings(&mut self) -> Vec<RingBuf<MapData>> {
        std::mem::take(&mut self.rings)
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
        let sum = |slot| -> Result<u64> { Ok(self.lost.get(&slot, 0)?.iter().sum()) };
        Ok(Lost {
            network: sum(LOST_NETWORK)?,
            command: sum(LOST_COMMAND)?,
            disk: sum(LOST_DISK)?,
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

fn key_policy_id<K: aya::Pod + AsRef<[u8]>>(key: &Key<K>) -> u32 {
    let d = key.data();
    let b = d.as_ref();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn max_id<K: aya::Pod + AsRef<[u8]>>(trie: &LpmTrie<MapData, K, RuleValue>) -> u32 {
    trie.keys()
        .filter_map(|k| k.ok())
        .map(|k| key_policy_id(&k))
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
        .filter(|k| key_policy_id(k) != keep)
        .collect();
    for k in &stale {
        match trie.remove(k) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e).context("removing a stale rule"),
        }
    }
    Ok(())
}

/// Replaces the disk filter rules in the kernel trie. The trie is small
/// (a few entries per prefix), so clearing and refilling is cheap; opens in
/// between are judged by a partial rule set for microseconds.
fn set_path_rules(trie: &mut LpmTrie<MapData, PathKeyData, u8>, filter: &PathFilter) -> Result<()> {
    let old: Vec<Key<PathKeyData>> = trie.keys().filter_map(|k| k.ok()).collect();
    for k in &old {
        let _ = trie.remove(k);
    }
    for (prefix, action) in filter.trie_entries() {
        let mut data = [0u8; PATH_PREFIX_MAX];
        data[..prefix.len()].copy_from_slice(prefix);
        trie.insert(&Key::new(8 * prefix.len() as u32, data), action, 0)
            .with_context(|| format!("disk filter rule {:?}", String::from_utf8_lossy(prefix)))?;
    }
    Ok(())
}

/// Pinning needs a bpf filesystem. systemd mounts one at /sys/fs/bpf; on a
/// host without systemd restrictd mounts it there itself. Anywhere else, say
/// so plainly.
fn check_bpffs(dir: &Path) -> Result<()> {
    use nix::sys::statfs::{statfs, BPF_FS_MAGIC};
    let is_bpffs = |p: &Path| statfs(p).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC);
    let mut probe = dir.to_path_buf();
    while !probe.exists() && probe.pop() {}
    if is_bpffs(&probe) {
        return Ok(());
    }
    let default = Path::new("/sys/fs/bpf");
    if dir.starts_with(default) && default.is_dir() && !is_bpffs(default) {
        nix::mount::mount(
            Some("bpf"),
            default,
            Some("bpf"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some("mode=0700"),
        )
        .context("mounting the bpf filesystem at /sys/fs/bpf")?;
        log::info!("mounted the bpf filesystem at /sys/fs/bpf");
        return Ok(());
    }
    anyhow::bail!(
        "bpf_pin_path {} is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)",
        dir.display()
    )
}

/// Detaches everything a daemon pinned under `pin_dir` and deletes its maps:
/// links are unpinned (the kernel detaches a link when its last reference
/// goes), then the map pins are removed.
pub fn remove_pins(pin_dir: &Path) -> Result<()> {
    let Ok(rd) = std::fs::read_dir(pin_dir) else {
        return Ok(());
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    // Links first, so nothing uses the maps while they go.
    entries.sort_by_key(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("link-"))
    });
    for p in entries {
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("link-"))
        {
            if let Ok(link) = PinnedLink::from_pin(&p) {
                drop(link.unpin());
                continue;
            }
        }
        std::fs::remove_file(&p).with_context(|| format!("removing pin {}", p.display()))?;
    }
    std::fs::remove_dir(pin_dir).with_context(|| format!("removing {}", pin_dir.display()))
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) as u32
}

fn read_struct<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; T is plain #[repr(C)] data, any bit pattern is valid.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record (its first u32 says what it is).
pub fn decode(bytes: &[u8]) -> Option<Record> {
    match read_struct::<u32>(bytes)? {
        EVENT_NETWORK => read_struct(bytes).map(Record::Network),
        EVENT_COMMAND => {
            let h: CommandEvent = read_struct(bytes)?;
            let rest = &bytes[std::mem::size_of::<CommandEvent>()..];
            let path_len = h.path_len as usize;
            let argv_len = h.argv_len as usize;
            let path = rest.get(..path_len)?;
            let argv = rest.get(path_len..path_len + argv_len)?;
            let path = path.strip_suffix(&[0]).unwrap_or(path);
            Some(Record::Command(h, path.to_vec(), argv.to_vec()))
        }
        EVENT_DISK => {
            let h: DiskEvent = read_struct(bytes)?;
            let path = bytes[std::mem::size_of::<DiskEvent>()..].get(..h.path_len as usize)?;
            let path = path.strip_suffix(&[0]).unwrap_or(path);
            Some(Record::Disk(h, path.to_vec()))
        }
        _ => None,
    }
}
