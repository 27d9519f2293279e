//! The kernel side as userspace sees it: loading restrictd's BPF object,
//! attaching its programs, and the only code that writes its maps. After
//! loading, the parts are separate values so that each can be locked on its
//! own: a login (`SessionMap`) never waits for a policy write (`PolicyMaps`).
//!
//! Program and map names come from the object (`object`): every cgroup
//! `sock_addr` program enforces; a tracepoint program belongs to the group
//! its name starts with (`restrictd_common::PROGRAM_GROUPS`) and attaches to
//! the tracepoint its section names; every map is pinned under its own name;
//! every ring buffer is read by the recorder.

pub mod object;
mod policy_maps;
mod slots;

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf},
    programs::{
        links::{CgroupAttachMode, FdLink, PinnedLink},
        BtfTracePoint, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr, KProbe, Program,
        RawTracePoint, TracePoint,
    },
    Ebpf, EbpfLoader,
};
use restrictd_common::{
    Denial, DenialKey, DiskRate, Dropped, FileId, LoadConfig, PathKeyData, Runtime, SessionEntry,
    ARGV_LIMIT_MAX, GROUP_ALWAYS, LOST_SLOTS, PATH_PREFIX_MAX, PROGRAM_GROUPS,
};

use self::object::ObjectInfo;
pub use self::policy_maps::{check_fits, PolicyIds, PolicyMaps};
use crate::pathfilter::PathFilter;

/// The object built by build.rs from restrictd-ebpf.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/restrictd"));

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Ring buffer map name -> size in pages (a power of two). Every ring
    /// buffer of the object must be here.
    pub ring_pages: Vec<(&'static str, u32)>,
    /// Which opens are recorded.
    pub disk_filter: PathFilter,
    /// Always recorded paths whose files are marked at load (`ALWAYS_FILES`).
    pub always_at_start: Vec<PathBuf>,
    /// Disk events per session per second; 0: unlimited.
    pub disk_rate_limit: u32,
    /// Superblock magic numbers of filesystems whose opens are not recorded.
    pub disk_exclude_fs: Vec<u64>,
    /// Opens of character devices are not recorded.
    pub disk_exclude_devices: bool,
    /// Bytes of argv a command event carries at most (≤ ARGV_LIMIT_MAX).
    pub argv_limit: u32,
    /// Session flags whose program groups are loaded and attached.
    pub recording: u32,
    /// Terminal bytes per session per second; 0: unlimited.
    pub terminal_rate_limit: u32,
    /// Pin maps (and, with `attach_pinned`, links) here in bpffs, so that
    /// they outlive this process and a restarted daemon finds them again.
    /// `None`: everything goes away with this process (`restrictd run`).
    pub pin_dir: Option<PathBuf>,
}

/// A loaded instance of the programs and maps. Dropping its parts detaches
/// every program they attached without pinning (the links are fd-based) and
/// frees unpinned maps.
pub struct Kernel {
    pub programs: Programs,
    pub sessions: SessionMap,
    pub policy: PolicyMaps,
    /// (map name, ring) for each ring buffer in the object.
    pub rings: Vec<(String, RingBuf<MapData>)>,
    /// What the recorder reads besides the rings.
    pub counters: Counters,
    /// The disk filter, for always recorded paths added at run time.
    pub path_rules: PathRules,
    /// True when the maps were already pinned (a restart): their content is live.
    pub reused: bool,
}

/// A second handle on map `name` (its fd duplicated), for a second owner.
fn reopen<T>(ebpf: &Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = MapError>,
{
    use std::os::fd::AsFd;
    let Some(Map::LpmTrie(data)) = ebpf.map(name) else {
        bail!("BPF object has no LPM trie {name}");
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .with_context(|| format!("duplicating BPF map {name}"))?;
    let data = MapData::from_fd(fd).with_context(|| format!("BPF map {name}"))?;
    T::try_from(Map::LpmTrie(data)).with_context(|| format!("BPF map {name}"))
}

fn take<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = MapError>,
{
    let m = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("BPF object has no map {name}"))?;
    T::try_from(m).with_context(|| format!("BPF map {name}"))
}

/// A field's offset in a tracepoint record, as this kernel lays it out.
fn field_offset(category: &str, tracepoint: &str, field: &str) -> Result<u32> {
    let off = crate::tracefs::field_offset(category, tracepoint, field)?;
    u32::try_from(off)
        .with_context(|| format!("{category}/{tracepoint} field {field} at offset {off}"))
}

/// The program that records io_uring's opens (optional: see
/// `attach_uring`).
const URING_PROGRAM: &str = "disk_uring";
/// The program on every syscall's exit (`attach_exit`).
const EXIT_PROGRAM: &str = "exit_syscall";

/// What `exit_syscall` does, given what is recorded and whether the
/// kernel's BTF has `thread_info.status` (x86-64). It runs where opens are
/// recorded, and takes them from their tracepoints; failed execs and the
/// terminal's reads and writes then ride on it too. Each per-syscall
/// tracepoint it replaces costs its calls the kernel's formatting of an
/// event besides its program, and while any is enabled every syscall of
/// the host passes the kernel's check for one. Where opens are not
/// recorded it is not attached: a program on every syscall would cost all
/// syscalls more than the terminal's and the execs' tracepoints cost
/// their calls.
fn exit_work(recording: u32, ti_status: u32) -> u32 {
    use restrictd_common::{
        EXIT_EXECS, EXIT_OPENS, EXIT_TTY_INPUT, EXIT_TTY_OUTPUT, SESSION_RECORD_COMMANDS,
        SESSION_RECORD_DISK, SESSION_RECORD_TTY, SESSION_RECORD_TTY_INPUT,
    };
    if recording & SESSION_RECORD_DISK == 0 || ti_status == 0 {
        return 0;
    }
    let mut work = EXIT_OPENS;
    if recording & SESSION_RECORD_TTY != 0 {
        work |= EXIT_TTY_OUTPUT;
    }
    if recording & SESSION_RECORD_TTY_INPUT != 0 {
        work |= EXIT_TTY_INPUT;
    }
    if recording & SESSION_RECORD_COMMANDS != 0 {
        work |= EXIT_EXECS;
    }
    work
}

/// `RESTRICTD_FAULT=refuse-<name>` (tests): the attach of optional program
/// `name` fails, as on a kernel that refuses it.
fn fault_refuses(name: &str) -> Result<()> {
    let fault = format!("refuse-{name}");
    if std::env::var_os("RESTRICTD_FAULT").is_some_and(|v| *v == *fault) {
        bail!("{name}: refused (RESTRICTD_FAULT={fault})");
    }
    Ok(())
}

/// The tracepoint programs `exit_syscall` replaces where it is attached:
/// the opens', the failed execs' and the terminal's.
fn replaced_by_exit(name: &str) -> bool {
    matches!(name, "disk_out_open" | "cmd_out_exec")
        || name.starts_with("tty_")
        || name.starts_with("ttyin_")
}

/// The io_uring tracepoints a request's submission fires, newest name first
/// (`io_uring_submit_sqe` before 6.2); the request is the first argument
/// of both.
const URING_SUBMIT: [&str; 2] = ["io_uring_submit_req", "io_uring_submit_sqe"];

/// Checks that `sock/inet_sock_set_state` has every field the program reads
/// where `SockState` at `SOCK_STATE_AT` has it.
fn check_sock_state() -> Result<()> {
    let (category, tracepoint) = ("sock", "inet_sock_set_state");
    let base = restrictd_common::SOCK_STATE_AT;
    for (field, distance) in restrictd_common::SOCK_STATE_FIELDS {
        let at = field_offset(category, tracepoint, field)?;
        if at != base + distance {
            bail!(
                "{category}/{tracepoint}: field {field} is at offset {at}, not {} as restrictd's program reads it",
                base + distance
            );
        }
    }
    Ok(())
}

/// Whether the group a tracepoint program belongs to is wanted with the
/// recording flags `recording`.
fn group_wanted(program: &str, recording: u32) -> Result<bool> {
    PROGRAM_GROUPS
        .iter()
        .find(|(prefix, _)| program.starts_with(prefix))
        .map(|(_, flag)| *flag == GROUP_ALWAYS || flag & recording != 0)
        .ok_or_else(|| anyhow!("BPF program {program} has no group prefix (PROGRAM_GROUPS)"))
}

impl Kernel {
    /// Loads the object and runs the verifier on every program that the
    /// options need; nothing is attached yet.
    pub fn load(opts: LoadOptions) -> Result<Kernel> {
        check_kernel()?;
        raise_memlock();
        let info = ObjectInfo::parse(OBJECT)?;
        let mut loader = EbpfLoader::new();
        // The object has no CO-RE relocations (Rust BPF has none): skip
        // aya's parse of the kernel's whole BTF, a good part of the start
        // time on slow hosts (struct offsets come from `btf` below).
        loader.btf(None);
        let page = page_size();
        for (ring, pages) in &opts.ring_pages {
            loader.map_max_entries(ring, pages * page);
        }
        check_sock_state()?;
        let kernel = crate::btf::Btf::from_sys_fs()?.kernel_offsets()?;
        let config = LoadConfig {
            exec_filename_offset: field_offset("sched", "sched_process_exec", "filename")?,
            attach_dst_root_offset: field_offset("cgroup", "cgroup_attach_task", "dst_root")?,
            attach_dst_id_offset: field_offset("cgroup", "cgroup_attach_task", "dst_id")?,
            attach_pid_offset: field_offset("cgroup", "cgroup_attach_task", "pid")?,
            argv_limit: opts.argv_limit.min(ARGV_LIMIT_MAX as u32),
            disk_rate: opts.disk_rate_limit,
            tty_rate: opts.terminal_rate_limit,
            kernel,
            disk_exclude_devices: opts.disk_exclude_devices as u32,
            exit_work: exit_work(opts.recording, kernel.task_ti_status),
            disk_exclude_fs: {
                let mut a = [0u64; restrictd_common::FS_EXCLUDE_MAX];
                for (slot, m) in a.iter_mut().zip(&opts.disk_exclude_fs) {
                    *slot = *m;
                }
                a
            },
        };
        if opts.recording & restrictd_common::SESSION_RECORD_TTY != 0
            && config.kernel.tty_index == 0
            && config.kernel.tty_winsize == 0
        {
            log::warn!(
                "this kernel's BTF has no tty_struct: terminal_recording records nothing here"
            );
        }
        crate::tracefs::check_syscall_layout()?;
        loader.override_global("LOAD_CONFIG", &config, true);
        let mut reused = false;
        let mut pin = None;
        if let Some(root) = &opts.pin_dir {
            check_bpffs(root)?;
            let dir = root.join(state_version(&opts, &config));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            reused = dir.join("SESSIONS").exists();
            for name in &info.maps {
                loader.map_pin_path(name, dir.join(name));
            }
            pin = Some(dir);
        }
        let mut ebpf = loader.load(OBJECT).context(
            "loading restrictd's BPF object (needs root, and a kernel with BPF and cgroup v2)",
        )?;
        // Programs are verified when attached, and only if not already
        // attached by this same version (a restart skips the verifier).
        for (name, prog) in ebpf.programs() {
            if !matches!(
                prog,
                Program::CgroupSockAddr(_)
                    | Program::CgroupSkb(_)
                    | Program::TracePoint(_)
                    | Program::RawTracePoint(_)
                    | Program::BtfTracePoint(_)
                    | Program::KProbe(_)
            ) {
                bail!("BPF program {name}: a program type restrictd does not attach");
            }
        }

        let rings = info
            .maps
            .iter()
            .filter(|m| matches!(ebpf.map(m), Some(Map::RingBuf(_))))
            .cloned()
            .collect::<Vec<_>>();
        for r in &rings {
            if !opts.ring_pages.iter().any(|(n, _)| n == r) {
                bail!("BPF ring buffer {r} has no configured size");
            }
        }
        let rings = rings
            .into_iter()
            .map(|r| Ok((r.clone(), take(&mut ebpf, &r)?)))
            .collect::<Result<Vec<_>>>()?;
        // The policy maps write policies' own disk filters into the same
        // trie, through a second handle.
        let policy_paths = reopen(&ebpf, "PATH_RULES")?;
        let mut path_rules: LpmTrie<MapData, PathKeyData, u8> = take(&mut ebpf, "PATH_RULES")?;
        set_path_rules(&mut path_rules, &opts.disk_filter)?;
        let mut path_rules = PathRules {
            trie: path_rules,
            files: take(&mut ebpf, "ALWAYS_FILES")?,
        };
        path_rules.mark(&crate::pathfilter::always_files(&opts.always_at_start));
        let slots = ebpf
            .take_map("SESSION_SLOTS")
            .ok_or_else(|| anyhow!("BPF object has no map SESSION_SLOTS"))?;
        let presence = ebpf
            .take_map("PRESENCE")
            .ok_or_else(|| anyhow!("BPF object has no map PRESENCE"))?;
        let mut sessions = SessionMap {
            slots: slots::SessionSlots::new(slots)?,
            presence: slots::PresenceBits::new(presence)?,
            kernel_generation: take(&mut ebpf, "KERNEL_GENERATION")?,
            presence_stale: false,
            sessions: take(&mut ebpf, "SESSIONS")?,
            leaders: take(&mut ebpf, "LEADERS")?,
            identities: take(&mut ebpf, "IDENTITIES")?,
            runtime: take(&mut ebpf, "RUNTIME")?,
            disk_rate: take(&mut ebpf, "DISK_RATE")?,
            tty_relays: take(&mut ebpf, "TTY_RELAYS")?,
        };
        sessions.rebuild_slots();
        sessions.sync_presence()?;
        let policy = PolicyMaps::new(&mut ebpf, policy_paths, reused)?;
        Ok(Kernel {
            path_rules,
            counters: Counters {
                lost: LostCounters(take(&mut ebpf, "LOST")?),
                dropped: DropCounters(take(&mut ebpf, "DROPPED")?),
                denials: DenialCounts(take(&mut ebpf, "DENIALS")?),
            },
            programs: Programs {
                ebpf,
                info,
                recording: opts.recording,
                pin,
                kernel_names: false,
                uring_layout: config.kernel.io_open_filename != 0,
                exit_work: config.exit_work,
                uring_opens: false,
            },
            sessions,
            policy,
            rings,
            reused,
        })
    }
}

/// The programs: verifying and attaching them.
pub struct Programs {
    ebpf: Ebpf,
    info: ObjectInfo,
    recording: u32,
    /// This version's pin directory (`pin_dir/<state version>`).
    pin: Option<PathBuf>,
    /// `disk_kname` is attached (`kernel_names`).
    kernel_names: bool,
    /// The kernel's BTF gave `disk_uring` the layout it reads.
    uring_layout: bool,
    /// What `exit_syscall` does (`LoadConfig::exit_work`); 0: it is not
    /// attached.
    exit_work: u32,
    /// `disk_uring` is attached (`uring_opens`).
    uring_opens: bool,
}

/// What a kprobe program reads of its function's arguments is where it
/// reads it in this kernel (BTF).
fn kprobe_layout_ok(function: &str) -> Result<()> {
    match function {
        "do_filp_open" => {
            let off = crate::btf::Btf::from_sys_fs()?.member_offset("filename", "name")?;
            if off != 0 {
                bail!("struct filename's name is at offset {off} here, not 0");
            }
            Ok(())
        }
        other => bail!("no layout check for kprobe {other}"),
    }
}

/// The version of the kernel state this build makes with these options:
/// the object (programs and map layouts) and what the loader fixes in it
/// (ring sizes, `LOAD_CONFIG`). Pins live under `pin_dir/<version>`, so a
/// restart of the same version reuses its maps and links, and any other
/// version (an upgrade, a downgrade, a changed buffer size) gets new ones
/// that the daemon fills from its own state (`Kernel::retire_others`).
fn state_version(opts: &LoadOptions, config: &LoadConfig) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    OBJECT.hash(&mut h);
    opts.ring_pages.hash(&mut h);
    // SAFETY: LoadConfig is plain #[repr(C)] data with no padding
    // (a compile-time assertion after the struct checks it).
    let bytes = unsafe {
        std::slice::from_raw_parts(
            config as *const LoadConfig as *const u8,
            std::mem::size_of::<LoadConfig>(),
        )
    };
    bytes.hash(&mut h);
    format!("v{:016x}", h.finish())
}

impl Programs {
    /// The cgroup programs: the `sock_addr` hooks, and the packet-level
    /// `cgroup_skb` ones with the direction their section names.
    fn cgroup_programs(&self) -> Result<Vec<(String, Option<CgroupSkbAttachType>)>> {
        let mut out = Vec::new();
        for (name, p) in self.ebpf.programs() {
            match p {
                Program::CgroupSockAddr(_) => out.push((name.to_string(), None)),
                Program::CgroupSkb(_) => {
                    let section = self.info.sections.get(name).map(String::as_str);
                    let direction = match section {
                        Some("cgroup_skb/egress") => CgroupSkbAttachType::Egress,
                        Some("cgroup_skb/ingress") => CgroupSkbAttachType::Ingress,
                        other => bail!("BPF program {name}: section {other:?} names no direction"),
                    };
                    out.push((name.to_string(), Some(direction)));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Attaches the enforcing programs to `cgroup_dir`; they then see every
    /// process and socket in it and in every cgroup below it (`serve`
    /// attaches at the cgroup2 root, so that a restricted identity is
    /// restricted everywhere). Other programs attached there (systemd's,
    /// another restrictd's) keep running: all must allow a call or packet.
    /// With `pin_dir`, the links are pinned so they stay attached when this
    /// process exits; programs already pinned there for this cgroup (by a
    /// previous run) are left in place: they use the same pinned maps, so
    /// there is no moment without enforcement.
    pub fn attach(&mut self, cgroup_dir: &Path) -> Result<()> {
        let dir = File::open(cgroup_dir)
            .with_context(|| format!("opening cgroup {}", cgroup_dir.display()))?;
        let cgroup_id = std::os::unix::fs::MetadataExt::ino(&dir.metadata()?);
        for (name, direction) in self.cgroup_programs()? {
            let pin = self
                .pin
                .as_ref()
                .map(|d| d.join(format!("link-{cgroup_id}-{name}")));
            let what = || format!("attaching {name} to cgroup {}", cgroup_dir.display());
            // On 5.7+ aya attaches with a BPF link, which the kernel always
            // adds in multi mode and which refuses explicit flags (EINVAL),
            // so the "Single" (no flags) mode is what yields ALLOW_MULTI here.
            let mode = CgroupAttachMode::Single;
            match direction {
                None => self.attach_one(&name, pin, |prog: &mut CgroupSockAddr, keep| {
                    let id = prog.attach(&dir, mode).with_context(what)?;
                    Ok(if keep {
                        Some(prog.take_link(id)?.try_into()?)
                    } else {
                        None
                    })
                })?,
                Some(direction) => self.attach_one(&name, pin, |prog: &mut CgroupSkb, keep| {
                    let id = prog.attach(&dir, direction, mode).with_context(what)?;
                    Ok(if keep {
                        Some(prog.take_link(id)?.try_into()?)
                    } else {
                        None
                    })
                })?,
            }
        }
        Ok(())
    }

    /// Attaches program `name` (of type `P`) with `attach`, unless `pin`
    /// already holds its link from a previous run (it uses the same pinned
    /// maps, so there is no moment without the program). With `pin`,
    /// `attach` is asked to keep the link, and it is pinned there, so that
    /// it outlives this process.
    fn attach_one<P>(
        &mut self,
        name: &str,
        pin: Option<PathBuf>,
        attach: impl FnOnce(&mut P, bool) -> Result<Option<FdLink>>,
    ) -> Result<()>
    where
        for<'p> &'p mut P: TryFrom<&'p mut Program, Error = aya::programs::ProgramError>,
    {
        if pin.as_ref().is_some_and(|p| p.exists()) {
            return Ok(());
        }
        self.verify(name)?;
        let prog: &mut P = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("BPF object has no program {name}"))?
            .try_into()
            .with_context(|| format!("BPF program {name}"))?;
        let link = attach(prog, pin.is_some())?;
        if let (Some(pin), Some(link)) = (pin, link) {
            link.pin(&pin)
                .with_context(|| format!("pinning link {}", pin.display()))?;
        }
        Ok(())
    }

    /// Attaches the loaded tracepoint programs: recording (they see every
    /// exec or open on the host and return at once for processes outside
    /// sessions) and following session leaders. A tracepoint this kernel
    /// lacks is skipped. With `pin_dir`, the links are pinned so they go
    /// on while the daemon restarts.
    pub fn attach_tracepoints(&mut self) -> Result<()> {
        let events = crate::tracefs::root()?.join("events");
        // `disk_out_open` reads an open's arguments from the saved x86-64
        // registers.
        if std::env::consts::ARCH != "x86_64" && group_wanted("disk_", self.recording)? {
            bail!(
                "recording opens reads x86-64 syscall registers, and this build is for {}: set enhanced_recording.disk_events to false",
                std::env::consts::ARCH
            );
        }
        // First: where it is attached, the tracepoints it replaces are
        // left out.
        let exit_attached = self.attach_exit(&events);
        let mut wanted = Vec::new();
        for (name, prog) in self.ebpf.programs() {
            if !matches!(prog, Program::TracePoint(_))
                || !group_wanted(name, self.recording)?
                || (exit_attached && replaced_by_exit(name))
            {
                continue;
            }
            let tracepoints = self.info.tracepoints(name);
            if tracepoints.is_empty() {
                bail!("BPF program {name} names no tracepoint in its section");
            }
            for (category, tracepoint) in tracepoints {
                if events.join(category).join(tracepoint).is_dir() {
                    wanted.push((
                        name.to_string(),
                        category.to_string(),
                        tracepoint.to_string(),
                    ));
                }
            }
        }
        for (name, category, tracepoint) in wanted {
            let pin = self
                .pin
                .as_ref()
                .map(|d| d.join(format!("link-tp-{tracepoint}")));
            self.attach_one(&name, pin, |prog: &mut TracePoint, keep| {
                let id = prog.attach(&category, &tracepoint).with_context(|| {
                    format!("attaching {name} to tracepoint {category}/{tracepoint}")
                })?;
                Ok(if keep {
                    let link = FdLink::try_from(prog.take_link(id)?).with_context(|| {
                        format!("{name}: this kernel cannot pin tracepoint links")
                    })?;
                    Some(link)
                } else {
                    None
                })
            })?;
        }
        self.attach_uring(&events);
        self.attach_kprobes();
        Ok(())
    }

    /// Attaches `exit_syscall` (opens, 64-bit and through the ia32 syscall
    /// entry, which the per-syscall tracepoints never see, and the
    /// terminal's reads and writes: `exit_work`) to the BTF-typed tracepoint
    /// of every syscall's exit. Optional: where it cannot run, the daemon
    /// says that ia32 opens are not recorded, and the tracepoints it would
    /// replace are attached instead. Returns whether it is attached.
    fn attach_exit(&mut self, events: &std::path::Path) -> bool {
        use restrictd_common::SESSION_RECORD_DISK;
        const NOT_RECORDED: &str =
            "opens made through the 32-bit syscall entry (int 0x80) are not recorded on this kernel";
        if self.exit_work == 0 {
            // Not x86-64 (`btf` leaves the offset 0), or a layout restrictd
            // does not know.
            if self.recording & SESSION_RECORD_DISK != 0 && std::env::consts::ARCH == "x86_64" {
                log::warn!("this kernel's BTF has no thread_info.status: {NOT_RECORDED}");
            }
            return false;
        }
        if !events.join("raw_syscalls").join("sys_exit").is_dir() {
            log::warn!("this kernel has no raw_syscalls/sys_exit tracepoint: {NOT_RECORDED}");
            return false;
        }
        let pin = self.pin.as_ref().map(|d| d.join("link-btf-sys_exit"));
        let attached = self.attach_one(EXIT_PROGRAM, pin, |prog: &mut BtfTracePoint, keep| {
            fault_refuses(EXIT_PROGRAM)?;
            let id = prog
                .attach()
                .with_context(|| format!("attaching {EXIT_PROGRAM} to sys_exit"))?;
            Ok(if keep {
                Some(FdLink::from(prog.take_link(id)?))
            } else {
                None
            })
        });
        if let Err(e) = attached {
            log::warn!("{e:#}: {NOT_RECORDED}");
            return false;
        }
        true
    }

    /// Attaches `disk_uring` (io_uring's opens) to the raw tracepoint of
    /// io_uring's submissions. Optional: a kernel that refuses it (its
    /// verifier, its tracepoint) keeps every other record and all
    /// enforcement, and the daemon says that io_uring opens are not
    /// recorded there.
    fn attach_uring(&mut self, events: &std::path::Path) {
        if !group_wanted(URING_PROGRAM, self.recording).unwrap_or(false) {
            return;
        }
        let Some(tracepoint) = URING_SUBMIT
            .iter()
            .find(|tp| events.join("io_uring").join(tp).is_dir())
        else {
            // No io_uring here: nothing to record.
            return;
        };
        if !self.uring_layout {
            log::warn!("this kernel's BTF has no io_kiocb/io_open layout restrictd reads: opens made through io_uring are not recorded on this kernel");
            return;
        }
        match self.attach_raw(URING_PROGRAM, tracepoint) {
            Ok(()) => self.uring_opens = true,
            Err(e) => {
                log::warn!("{e:#}: opens made through io_uring are not recorded on this kernel")
            }
        }
    }

    /// Attaches raw tracepoint program `name` to `tracepoint`, its link
    /// pinned as `link-rtp-<tracepoint>`. `RESTRICTD_FAULT=refuse-<name>`
    /// makes it fail, as a kernel that refuses the program would (tests).
    fn attach_raw(&mut self, name: &str, tracepoint: &str) -> Result<()> {
        let pin = self
            .pin
            .as_ref()
            .map(|d| d.join(format!("link-rtp-{tracepoint}")));
        self.attach_one(name, pin, |prog: &mut RawTracePoint, keep| {
            fault_refuses(name)?;
            let id = prog
                .attach(tracepoint)
                .with_context(|| format!("attaching {name} to raw tracepoint {tracepoint}"))?;
            Ok(if keep {
                Some(FdLink::from(prog.take_link(id)?))
            } else {
                None
            })
        })
    }

    /// Attaches the kprobe programs, which only make records more exact
    /// (`disk_kname`: a failed open named by the kernel's copy of its
    /// path): where they cannot be attached (a kernel without kprobes, a
    /// function renamed), the daemon goes on without them and says so, and
    /// the records say where their data came from instead.
    fn attach_kprobes(&mut self) {
        let wanted: Vec<(String, String)> = self
            .ebpf
            .programs()
            .filter(|(name, prog)| {
                matches!(prog, Program::KProbe(_))
                    && group_wanted(name, self.recording).unwrap_or(false)
            })
            .filter_map(|(name, _)| {
                let f = self.info.kprobe_function(name)?;
                Some((name.to_string(), f.to_string()))
            })
            .collect();
        for (name, function) in wanted {
            if let Err(e) = kprobe_layout_ok(&function) {
                log::warn!("not attaching {name}: {e:#}; failed opens are named from the caller's memory, flagged path_from_caller");
                continue;
            }
            let pin = self
                .pin
                .as_ref()
                .map(|d| d.join(format!("link-kp-{function}")));
            let attached = self.attach_one(&name, pin, |prog: &mut KProbe, keep| {
                let id = prog
                    .attach(&function, 0)
                    .with_context(|| format!("attaching {name} to kprobe {function}"))?;
                Ok(if keep {
                    let link = FdLink::try_from(prog.take_link(id)?)
                        .with_context(|| format!("{name}: this kernel cannot pin kprobe links"))?;
                    Some(link)
                } else {
                    None
                })
            });
            match attached {
                Ok(()) => self.kernel_names = true,
                Err(e) => log::warn!(
                    "{e:#} (does this kernel have kprobes?): failed opens are named from the caller's memory, flagged path_from_caller"
                ),
            }
        }
    }

    /// Whether failed opens are named by the kernel's copy of their path
    /// (`disk_kname` attached).
    pub fn kernel_names(&self) -> bool {
        self.kernel_names
    }

    /// Whether opens made through io_uring are recorded (`disk_uring`
    /// attached).
    pub fn uring_opens(&self) -> bool {
        self.uring_opens
    }

    /// This version's programs are attached (`attach`, `attach_tracepoints`):
    /// detaches what other versions (or the unversioned layout of earlier
    /// releases) left pinned and frees their maps. Returns the versions
    /// removed.
    pub fn retire_others(&self) -> Result<Vec<String>> {
        let Some(dir) = &self.pin else {
            return Ok(vec![]);
        };
        let root = dir.parent().expect("a version directory has a parent");
        let others: Vec<String> = std::fs::read_dir(root)
            .with_context(|| format!("reading {}", root.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path() != *dir)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        remove_pins_except(root, Some(dir))?;
        Ok(others)
    }

    /// This version's name (`None` without pins).
    pub fn version(&self) -> Option<String> {
        let dir = self.pin.as_ref()?;
        Some(dir.file_name()?.to_string_lossy().into_owned())
    }

    /// Loads program `name` into the kernel (the verifier runs), once.
    fn verify(&mut self, name: &str) -> Result<()> {
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| anyhow!("BPF object has no program {name}"))?;
        if prog.fd().is_ok() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let refused = || format!("the kernel refused BPF program {name}");
        match prog {
            Program::CgroupSockAddr(p) => p.load().with_context(refused)?,
            Program::CgroupSkb(p) => p.load().with_context(refused)?,
            Program::TracePoint(p) => p.load().with_context(refused)?,
            Program::KProbe(p) => p.load().with_context(refused)?,
            Program::RawTracePoint(p) => p.load().with_context(refused)?,
            Program::BtfTracePoint(p) => {
                let tracepoint = self
                    .info
                    .btf_tracepoint(name)
                    .ok_or_else(|| anyhow!("BPF program {name} names no tracepoint"))?;
                // The kernel's whole BTF, parsed by aya: it names the
                // tracepoint's type to the kernel. Only this program needs it.
                let btf = aya::Btf::from_sys_fs().context("reading the kernel's BTF")?;
                p.load(tracepoint, &btf).with_context(refused)?
            }
            _ => bail!("BPF program {name}: a program type restrictd does not attach"),
        }
        log::debug!("BPF program {name} verified in {:?}", started.elapsed());
        Ok(())
    }

    /// Per enforcing program (both levels): (name, runs, total run time) as the kernel
    /// counts them while BPF statistics are enabled (`aya::sys::enable_stats`).
    pub fn stats(&self) -> Result<Vec<(String, u64, std::time::Duration)>> {
        self.ebpf
            .programs()
            .filter(|(_, p)| p.fd().is_ok())
            .filter_map(|(name, p)| match p {
                Program::CgroupSockAddr(p) => Some((name, p.info())),
                Program::CgroupSkb(p) => Some((name, p.info())),
                _ => None,
            })
            .map(|(name, info)| {
                let info = info?;
                Ok((name.to_string(), info.run_count(), info.run_time()))
            })
            .collect()
    }
}

/// The kernel's session table (`SESSIONS`) and the per-session state kept
/// beside it.
pub struct SessionMap {
    sessions: HashMap<MapData, u64, SessionEntry>,
    /// The programs' fast path to `sessions`, kept in step with it.
    slots: slots::SessionSlots,
    /// The programs' fast way past `sessions` and `identities`.
    presence: slots::PresenceBits,
    /// Raised by the programs after they insert into `sessions`.
    kernel_generation: Array<MapData, u64>,
    /// Keys were removed since `presence` was last rebuilt.
    presence_stale: bool,
    /// Session leader tgid -> its session's cgroup id (`follow.rs`).
    leaders: HashMap<MapData, u32, u64>,
    identities: HashMap<MapData, u32, SessionEntry>,
    runtime: Array<MapData, Runtime>,
    disk_rate: HashMap<MapData, u64, DiskRate>,
    /// Programs that relay a session's terminal: exe inode -> kernel dev_t.
    tty_relays: HashMap<MapData, u64, u32>,
}

impl SessionMap {
    pub fn add(&mut self, cgroup_id: u64, entry: SessionEntry) -> Result<()> {
        self.presence.mark(slots::Keyed::Cgroup, cgroup_id);
        self.sessions
            .insert(cgroup_id, entry, 0)
            .with_context(|| format!("registering cgroup {cgroup_id} (too many sessions?)"))?;
        // After SESSIONS: a reader that misses the slot finds the hash.
        self.slots.set(cgroup_id, entry);
        self.update_runtime(|_| ())
    }

    /// Refills the slots from `SESSIONS` (see `SessionSlots::rebuild`).
    fn rebuild_slots(&mut self) {
        let live: Vec<(u64, SessionEntry)> = self.sessions.iter().filter_map(|r| r.ok()).collect();
        self.slots.rebuild(live);
    }

    /// Unregisters the cgroup. Its loss counts stay in `DROPPED` for the
    /// recorder's last report of the session.
    pub fn remove(&mut self, cgroup_id: u64) -> Result<()> {
        // Before SESSIONS: a slot never outlives its session's entry.
        self.slots.clear(cgroup_id);
        match self.sessions.remove(&cgroup_id) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e).with_context(|| format!("unregistering cgroup {cgroup_id}")),
        }
        let _ = self.disk_rate.remove(&cgroup_id);
        // Its bit stays set until the next sweep: a bit too many costs the
        // programs a hash lookup, never a miss.
        self.presence_stale = true;
        Ok(())
    }

    /// Rebuilds `PRESENCE` from a scan of `SESSIONS` and `IDENTITIES`:
    /// clears the bits of keys gone, and takes in the kernel's own
    /// insertions (until then the programs look in the maps for every
    /// key). The generation is read before the scan, so an insertion the
    /// scan may have missed leaves the bitmaps marked as not covering it.
    pub fn sync_presence(&mut self) -> Result<()> {
        let generation = self.kernel_generation()?;
        let cgroups = self.ids()?;
        let uids = self.identities()?;
        self.presence
            .replace(generation, cgroups, uids.into_iter().map(u64::from));
        self.presence_stale = false;
        Ok(())
    }

    /// `sync_presence`, if keys were removed or the kernel registered a
    /// cgroup since the last (the daemon's sweep, every second).
    pub fn sync_presence_if_stale(&mut self) -> Result<()> {
        if !self.presence_stale && self.kernel_generation()? == self.presence.covers() {
            return Ok(());
        }
        self.sync_presence()
    }

    /// The kernel's own raises so far (`KERNEL_GENERATION[0]`).
    fn kernel_generation(&self) -> Result<u64> {
        self.kernel_generation
            .get(&0, 0)
            .context("reading KERNEL_GENERATION")
    }

    /// From now on, when process `pid` is moved to another cgroup, that
    /// cgroup gets the entry of `cgroup_id` in the kernel at once.
    pub fn follow_leader(&mut self, pid: u32, cgroup_id: u64) -> Result<()> {
        self.leaders
            .insert(pid, cgroup_id, 0)
            .with_context(|| format!("following session leader {pid} (too many logins?)"))
    }

    pub fn unfollow_leader(&mut self, pid: u32) {
        let _ = self.leaders.remove(&pid);
    }

    /// Restricts the processes and sockets of `uid` outside every session.
    /// Registers the program of process `pid` (a PAM caller: sshd) as one
    /// whose reads and writes on a session's pty master are its terminal.
    /// Returns whether it was new.
    pub fn add_tty_relay(&mut self, pid: u32) -> Result<bool> {
        use std::os::unix::fs::MetadataExt;
        let exe = format!("/proc/{pid}/exe");
        let md = std::fs::metadata(&exe).with_context(|| format!("reading {exe}"))?;
        let kdev = crate::exes::kernel_dev(md.dev());
        if self.tty_relays.get(&md.ino(), 0).ok() == Some(kdev) {
            return Ok(false);
        }
        self.tty_relays
            .insert(md.ino(), kdev, 0)
            .with_context(|| format!("registering {exe} as a terminal relay (too many?)"))?;
        Ok(true)
    }

    pub fn add_identity(&mut self, uid: u32, entry: SessionEntry) -> Result<()> {
        self.presence.mark(slots::Keyed::Uid, uid.into());
        self.identities
            .insert(uid, entry, 0)
            .with_context(|| format!("registering identity uid {uid} (too many?)"))?;
        self.update_runtime(|_| ())
    }

    pub fn remove_identity(&mut self, uid: u32) -> Result<()> {
        match self.identities.remove(&uid) {
            Ok(()) | Err(MapError::KeyNotFound) => {}
            Err(e) => return Err(e).with_context(|| format!("unregistering identity uid {uid}")),
        }
        self.presence_stale = true;
        Ok(())
    }

    /// Uids currently restricted by identity in the kernel.
    pub fn identities(&self) -> Result<Vec<u32>> {
        Ok(self.identities.keys().collect::<Result<Vec<_>, _>>()?)
    }

    /// Cgroup ids currently registered in the kernel.
    pub fn ids(&self) -> Result<Vec<u64>> {
        Ok(self.sessions.keys().collect::<Result<Vec<_>, _>>()?)
    }

    /// Tells the programs at which cgroup level user managers sit, so that a
    /// process under a registered manager counts as in that manager's session.
    pub fn set_manager_level(&mut self, level: u32) -> Result<()> {
        self.update_runtime(|r| r.manager_level = level)
            .context("setting the user manager level")
    }

    /// Changes `RUNTIME[0]` with `f` and raises its generation, after the
    /// change it stands for is in the kernel: a packet program that cached
    /// "no session" for a socket before the change then finds its cache
    /// stale. Read back from the map, so a daemon reusing pinned maps keeps
    /// counting up.
    fn update_runtime(&mut self, f: impl FnOnce(&mut Runtime)) -> Result<()> {
        let mut r = self.runtime.get(&0, 0).context("reading RUNTIME")?;
        f(&mut r);
        r.generation = r.generation.wrapping_add(1);
        self.runtime.set(0, r, 0).context("writing RUNTIME")
    }
}

/// Records the kernel could not deliver, per event kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lost(pub [u64; LOST_SLOTS as usize]);

impl Lost {
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn kind(&self, kind: u32) -> u64 {
        self.0.get(kind as usize).copied().unwrap_or(0)
    }

    /// What was lost since `before`.
    pub fn since(&self, before: &Lost) -> Lost {
        let mut d = Lost::default();
        for (i, v) in d.0.iter_mut().enumerate() {
            *v = self.0[i].saturating_sub(before.0[i]);
        }
        d
    }
}

/// The per-CPU `LOST` counters.
pub struct LostCounters(PerCpuArray<MapData, u64>);

impl LostCounters {
    pub fn read(&self) -> Result<Lost> {
        let mut l = Lost::default();
        for (i, v) in l.0.iter_mut().enumerate() {
            *v = self.0.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(l)
    }
}

/// The disk filter's trie, and the files under its always recorded paths.
pub struct PathRules {
    trie: LpmTrie<MapData, PathKeyData, u8>,
    files: HashMap<MapData, FileId, u8>,
}

impl PathRules {
    /// Adds (or overwrites with) the entries of `filter`: always recorded
    /// paths of a home first seen at a login, which no exclude may hide.
    pub fn add(&mut self, filter: &PathFilter) -> Result<()> {
        write_path_rules(&mut self.trie, HOST_FILTER, filter, true)
    }

    /// Makes `files` (`pathfilter::always_files`: what is under always
    /// recorded paths now) always recorded by what they are
    /// (`ALWAYS_FILES`). Entries are never removed: a file that is gone
    /// costs a slot, and one more record if its inode number is reused. A
    /// full table is logged.
    pub fn mark(&mut self, files: &[FileId]) {
        for id in files {
            if let Err(e) = self.files.insert(id, 1, 0) {
                log::error!(
                    "ALWAYS_FILES: {e} ({} entries at most): files under disk_always paths not yet marked are recorded by path only",
                    restrictd_common::ALWAYS_FILES_MAX
                );
                return;
            }
        }
    }
}

/// The counters the recorder reports from.
pub struct Counters {
    pub lost: LostCounters,
    pub dropped: DropCounters,
    pub denials: DenialCounts,
}

/// `DENIALS`: repeated denials, counted by kind.
pub struct DenialCounts(HashMap<MapData, DenialKey, Denial>);

impl DenialCounts {
    /// Every kind of denial the kernel remembers, with its count.
    pub fn read_all(&self) -> Result<Vec<(DenialKey, Denial)>> {
        // An entry evicted meanwhile ends the walk early or is skipped:
        // what is read is what the next walk compares against.
        Ok(self.0.iter().filter_map(|r| r.ok()).collect())
    }

    /// Forgets the denials counted under `keys` (their session ended and
    /// they are reported).
    pub fn remove_keys(&mut self, keys: &[u64]) {
        let gone: Vec<DenialKey> = self
            .0
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| keys.contains(&k.key))
            .collect();
        for k in gone {
            let _ = self.0.remove(&k);
        }
    }
}

/// The per-CPU `DROPPED` counters: events not written, per record key.
pub struct DropCounters(PerCpuHashMap<MapData, u64, Dropped>);

impl DropCounters {
    /// Every key's counts, summed over the CPUs.
    pub fn read_all(&self) -> Result<std::collections::HashMap<u64, Dropped>> {
        let mut all = std::collections::HashMap::new();
        for item in self.0.iter() {
            let (key, per_cpu) = item.context("reading DROPPED")?;
            all.insert(key, sum_dropped(per_cpu.iter()));
        }
        Ok(all)
    }

    /// One key's counts (zero when it has none).
    pub fn read(&self, key: u64) -> Dropped {
        match self.0.get(&key, 0) {
            Ok(per_cpu) => sum_dropped(per_cpu.iter()),
            Err(_) => Dropped::default(),
        }
    }

    /// Forgets a key whose counts have been reported for the last time.
    pub fn remove(&mut self, key: u64) {
        let _ = self.0.remove(&key);
    }
}

fn sum_dropped<'a>(per_cpu: impl Iterator<Item = &'a Dropped>) -> Dropped {
    let mut d = Dropped::default();
    for c in per_cpu {
        for i in 0..d.full.len() {
            d.full[i] += c.full[i];
            d.limited[i] += c.limited[i];
        }
        d.tty_bytes += c.tty_bytes;
    }
    d
}

/// The host's disk filter id in `PATH_RULES` (policies' own are their ids).
const HOST_FILTER: u32 = 0;

/// Replaces the host's disk filter rules in the kernel trie (policies'
/// own stay: the policy maps own them). The filter is small (a few entries
/// per prefix), so clearing and refilling is cheap; opens in between are
/// judged by a partial rule set for microseconds.
fn set_path_rules(trie: &mut LpmTrie<MapData, PathKeyData, u8>, filter: &PathFilter) -> Result<()> {
    let old: Vec<_> = trie
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| restrictd_common::key::policy_id(&k.data()) == HOST_FILTER)
        .collect();
    for k in &old {
        let _ = trie.remove(k);
    }
    write_path_rules(trie, HOST_FILTER, filter, true)
}

/// Inserts (or removes) `filter`'s entries under filter id `id`.
pub(crate) fn write_path_rules(
    trie: &mut LpmTrie<MapData, PathKeyData, u8>,
    id: u32,
    filter: &PathFilter,
    insert: bool,
) -> Result<()> {
    use aya::maps::lpm_trie::Key;
    for (prefix, action) in filter.trie_entries() {
        let mut data = [0u8; 4 + PATH_PREFIX_MAX];
        data[..4].copy_from_slice(&id.to_be_bytes());
        data[4..4 + prefix.len()].copy_from_slice(prefix);
        let key = Key::new(32 + 8 * prefix.len() as u32, data);
        let what = || format!("disk filter rule {:?}", String::from_utf8_lossy(prefix));
        if insert {
            trie.insert(&key, action, 0).with_context(what)?;
        } else {
            match trie.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(e).with_context(what),
            }
        }
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

/// Detaches everything a daemon pinned under `pin_dir` (every version) and
/// deletes its maps: links are unpinned (the kernel detaches a link when
/// its last reference goes), then the map pins are removed.
pub fn remove_pins(pin_dir: &Path) -> Result<()> {
    if !pin_dir.exists() {
        return Ok(());
    }
    remove_pins_except(pin_dir, None)?;
    std::fs::remove_dir(pin_dir).with_context(|| format!("removing {}", pin_dir.display()))
}

/// Removes what is pinned in `dir` and its subdirectories, except `keep`.
fn remove_pins_except(dir: &Path, keep: Option<&Path>) -> Result<()> {
    let rd = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut entries: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| Some(p.as_path()) != keep)
        .collect();
    let is_link = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("link-"))
    };
    // Links first, so nothing uses the maps while they go.
    entries.sort_by_key(|p| !is_link(p));
    for p in entries {
        if p.is_dir() {
            remove_pins_except(&p, None)?;
            std::fs::remove_dir(&p).with_context(|| format!("removing {}", p.display()))?;
            continue;
        }
        if is_link(&p) {
            if let Ok(link) = PinnedLink::from_pin(&p) {
                drop(link.unpin());
                continue;
            }
        }
        std::fs::remove_file(&p).with_context(|| format!("removing pin {}", p.display()))?;
    }
    Ok(())
}

/// The newest BPF feature the programs use, and the kernel that added it;
/// the programs also need ring buffers (5.8) and `bpf_get_current_task_btf`
/// (5.11), and read x86-64's `pt_regs`.
const MIN_KERNEL: (u32, u32) = (5, 15);
const MIN_KERNEL_WHY: &str =
    "bpf_task_pt_regs (5.15), bpf_get_current_task_btf (5.11), BPF ring buffers (5.8)";

/// Refuses, naming what is missing, a kernel too old for the programs
/// (the verifier's own refusal would only say "unknown func").
fn check_kernel() -> Result<()> {
    let uname = nix::sys::utsname::uname().context("uname")?;
    let release = uname.release().to_string_lossy().into_owned();
    match kernel_version(&release) {
        Some(v) if v < MIN_KERNEL => bail!(
            "Linux {release} is too old: restrictd needs {}.{} or later for {MIN_KERNEL_WHY}",
            MIN_KERNEL.0,
            MIN_KERNEL.1
        ),
        // An unparsable release: let the verifier decide.
        _ => Ok(()),
    }
}

/// "6.1.0-18-amd64" -> (6, 1).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, whose default
/// (8 MiB) is far below restrictd's maps; later ones use the memory cgroup.
/// Raised anyway, so an old kernel fails on what it lacks, not on memlock.
fn raise_memlock() {
    use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        log::debug!("raising RLIMIT_MEMLOCK: {e}");
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_parse_to_major_minor() {
        assert_eq!(kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5.15.0"), Some((5, 15)));
        assert_eq!(kernel_version("6.18"), Some((6, 18)));
        assert!(kernel_version("5.10.209-1").unwrap() < MIN_KERNEL);
        assert_eq!(kernel_version("weird"), None);
    }
}
