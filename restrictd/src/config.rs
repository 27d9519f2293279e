//! The daemon's configuration file (YAML). Keys follow Teleport's
//! `ssh_service` settings where Teleport has one (`cgroup_path`, `root_path`,
//! `enhanced_recording.*_buffer_size`). Every key is optional.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/restrictd/restrictd.yaml";
pub const DEFAULT_ROOT_PATH: &str = "/restrictd";
pub const DEFAULT_POLICY_FILE: &str = "/etc/restrictd/policy.yaml";
pub const DEFAULT_POLICY_DIR: &str = "/etc/restrictd/policy.d";
pub const DEFAULT_STATE_DIR: &str = "/run/restrictd";
pub const DEFAULT_BPF_PIN_PATH: &str = "/sys/fs/bpf/restrictd";
/// On persistent storage: the list must survive a reboot.
pub const DEFAULT_IDENTITY_STATE_FILE: &str = "/var/lib/restrictd/identities.json";
/// On persistent storage: a lock must survive a reboot.
pub const DEFAULT_LOCKS_FILE: &str = "/var/lib/restrictd/locks.json";
/// On persistent storage: recordings are evidence.
pub const DEFAULT_TERMINAL_DIR: &str = "/var/lib/restrictd/terminal";

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the cgroup v2 hierarchy is mounted. Default: found in
    /// /proc/self/mountinfo (e.g. /sys/fs/cgroup, or /sys/fs/cgroup/unified
    /// on hybrid hosts).
    pub cgroup_path: Option<PathBuf>,
    /// Path inside the cgroup v2 hierarchy under which session cgroups are made.
    pub root_path: String,
    /// The network policy the daemon loads at start and on SIGHUP, and where
    /// `restrictctl policy apply` stores the policy it applies.
    pub policy_file: PathBuf,
    /// More policy documents (`*.yaml`, `*.yml`), read after `policy_file`
    /// in file name order; a missing directory has none.
    pub policy_dir: PathBuf,
    /// Refuse a policy whose CIDRs have host bits set (`10.1.2.4/8`) instead
    /// of masking them with a warning as Teleport does.
    pub strict_policy: bool,
    /// Where the daemon keeps session state across its own restarts.
    pub state_dir: PathBuf,
    /// bpffs directory where the daemon pins its maps and links, so sessions
    /// stay restricted while it is stopped or restarting.
    pub bpf_pin_path: PathBuf,
    pub enhanced_recording: EnhancedRecording,
    pub identities: IdentityConfig,
    /// Session limits for logins no per-login policy sets them for
    /// (`controls`): `max_sessions`, `idle_timeout`, `max_duration`.
    pub session_controls: crate::controls::Controls,
    /// Users and groups locked out (`restrictctl lock`), kept across reboots.
    pub locks_file: PathBuf,
    /// What of a session's terminal is recorded: `off`, `output` (what it
    /// shows) or `input_output` (what the user types too, passwords typed
    /// at a prompt that does not echo included).
    pub terminal_recording: TerminalMode,
    /// Where and how much terminal recordings are kept.
    pub terminal: TerminalStorage,
}

/// `terminal_recording` (and a policy's `record.terminal`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
#[serde(rename_all = "snake_case")]
pub enum TerminalMode {
    Off,
    #[default]
    Output,
    InputOutput,
}

impl TerminalMode {
    /// Its session flags.
    pub fn flags(self) -> u32 {
        match self {
            TerminalMode::Off => 0,
            TerminalMode::Output => restrictd_common::SESSION_RECORD_TTY,
            TerminalMode::InputOutput => {
                restrictd_common::SESSION_RECORD_TTY | restrictd_common::SESSION_RECORD_TTY_INPUT
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TerminalMode::Off => "off",
            TerminalMode::Output => "output",
            TerminalMode::InputOutput => "input_output",
        }
    }
}

/// Terminal recordings: one file per session under `dir`, bounded three
/// ways (rate, per session, in all).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TerminalStorage {
    pub dir: PathBuf,
    /// Bytes per second per session; more are counted, reported in
    /// `session.lost` and marked where they were left out. 0: no limit.
    pub rate_limit: u32,
    /// Bytes kept per session; the rest is counted and marked the same way.
    pub max_session_size: u64,
    /// Bytes kept under `dir`: the oldest finished recordings are removed
    /// to stay below it.
    pub max_total_size: u64,
    /// Size of the kernel's terminal ring buffer, in pages (a power of two).
    pub buffer_size: u32,
}

/// 1 MiB/s per session: a person reads far less; `cat` of a big file is
/// cut to that, with the gap marked.
pub const DEFAULT_TERMINAL_RATE: u32 = 1 << 20;
pub const DEFAULT_TERMINAL_SESSION_MAX: u64 = 64 << 20;
pub const DEFAULT_TERMINAL_TOTAL_MAX: u64 = 1 << 30;
/// 1 MiB: a second of the default rate.
pub const TERMINAL_BUFFER_PAGES: u32 = 256;

impl Default for TerminalStorage {
    fn default() -> Self {
        TerminalStorage {
            dir: DEFAULT_TERMINAL_DIR.into(),
            rate_limit: DEFAULT_TERMINAL_RATE,
            max_session_size: DEFAULT_TERMINAL_SESSION_MAX,
            max_total_size: DEFAULT_TERMINAL_TOTAL_MAX,
            buffer_size: TERMINAL_BUFFER_PAGES,
        }
    }
}

/// Which users are restricted by identity, outside their sessions too
/// (`identity.rs`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Restrict the processes and sockets of every user who logs in through
    /// the PAM line (from that login on), wherever they run on the host.
    pub enabled: bool,
    /// Users restricted from the daemon's start, before any login.
    pub users: Vec<String>,
    /// Users never restricted by identity (their sessions still are).
    pub exempt_users: Vec<String>,
    /// Members (primary or supplementary) are never restricted by identity.
    pub exempt_groups: Vec<String>,
    /// The list of restricted identities, kept across reboots.
    pub state_file: PathBuf,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            enabled: true,
            users: vec![],
            exempt_users: vec![],
            exempt_groups: vec![],
            state_file: DEFAULT_IDENTITY_STATE_FILE.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EnhancedRecording {
    /// Record sessions at all (network denials are reported regardless).
    pub enabled: bool,
    /// Record every exec (`session.command`).
    pub command_events: bool,
    /// Record allowed connects and first sends (`session.network`, action 0).
    /// Denials are always recorded.
    pub network_events: bool,
    /// Record file opens (`session.disk`).
    pub disk_events: bool,
    /// Size of the command event ring buffer, in pages (a power of two).
    pub command_buffer_size: u32,
    /// Size of the disk event ring buffer, in pages (a power of two).
    pub disk_buffer_size: u32,
    /// Size of the network event ring buffer, in pages (a power of two).
    pub network_buffer_size: u32,
    /// Bytes of arguments kept per command (up to 128 KiB, in 8 KiB
    /// records); longer ones are cut and flagged with their true length.
    pub argv_limit: u32,
    /// Path prefixes whose opens are recorded (longest match wins, see
    /// `pathfilter`).
    pub disk_include: Vec<String>,
    /// Path prefixes whose opens are not recorded (in the host's mount
    /// namespaces; in one a user made, every path is recorded).
    pub disk_exclude: Vec<String>,
    /// Filesystem types whose files' opens are not recorded (by the file's
    /// superblock, whatever its path): names from `FILESYSTEMS`.
    pub disk_exclude_filesystems: Vec<String>,
    /// Opens of character devices (/dev/null, ttys) are not recorded.
    pub disk_exclude_devices: bool,
    /// Path prefixes whose opens are always recorded: never counted against
    /// the rate limit, never excluded. `~/X` stands for `X` in the home of
    /// root and of every regular user (login.defs range) in /etc/passwd.
    pub disk_always: Vec<String>,
    /// Most disk events per session per second; the rest are counted and
    /// reported in `session.end`. 0: no limit.
    pub disk_rate_limit: u32,
}

/// Opens that would drown the files a user actually touched: the locale
/// files every program probes at start (some 60 opens per `cat`).
pub const DEFAULT_DISK_EXCLUDE: [&str; 2] = ["/usr/lib/locale", "/usr/share/locale"];

/// Filesystem types `disk_exclude_filesystems` can name, with their
/// superblock magic numbers (linux/magic.h).
pub const FILESYSTEMS: [(&str, u64); 22] = [
    ("proc", 0x9fa0),
    ("sysfs", 0x6265_6572),
    ("devpts", 0x1cd1),
    ("cgroup", 0x0027_e0eb),
    ("cgroup2", 0x6367_7270),
    ("debugfs", 0x6462_6720),
    ("tracefs", 0x7472_6163),
    ("securityfs", 0x7363_6673),
    ("bpf", 0xcafe_4a11),
    ("configfs", 0x6265_6570),
    ("pstore", 0x6165_676c),
    ("efivarfs", 0xde5e_81e4),
    ("binfmt_misc", 0x4249_4e4d),
    ("nsfs", 0x6e73_6673),
    ("pipefs", 0x5049_5045),
    ("sockfs", 0x534f_434b),
    ("anon_inodefs", 0x0904_1934),
    ("selinuxfs", 0xf97c_ff8c),
    ("fusectl", 0x6573_5543),
    ("mqueue", 0x1980_0202),
    ("hugetlbfs", 0x9584_58f6),
    ("tmpfs", 0x0102_1994),
];

/// The pseudo-filesystems: kernel state, not files a user keeps (every
/// `ps` reads /proc). /dev itself (devtmpfs) is a tmpfs, where users can
/// keep files; its device nodes are left out by `disk_exclude_devices`.
pub const DEFAULT_DISK_EXCLUDE_FILESYSTEMS: [&str; 19] = [
    "proc",
    "sysfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "securityfs",
    "bpf",
    "configfs",
    "pstore",
    "efivarfs",
    "binfmt_misc",
    "nsfs",
    "pipefs",
    "sockfs",
    "anon_inodefs",
    "selinuxfs",
    "fusectl",
];
/// What an intruder reads or changes to escalate or persist.
pub const DEFAULT_DISK_ALWAYS: [&str; 6] = [
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/root",
    "~/.ssh",
];
pub const DEFAULT_DISK_RATE_LIMIT: u32 = 1000;
/// 32 KiB: padding a command line with junk to push its point past what is
/// recorded takes more than a screenful; and four of them fit the default
/// command ring a quarter each.
pub const DEFAULT_ARGV_LIMIT: u32 = 32 * 1024;
/// Default size of the network event ring buffer, in pages. Teleport uses
/// 8; with 8 a storm of allowed connects (57,000/s on the reference
/// machine) filled half of it between two reads of the writer and a third
/// of the connects went unrecorded (the session's share); with 64 (256
/// KiB) none (BENCHMARKS.md, connect storm).
pub const NETWORK_BUFFER_PAGES: u32 = 64;
/// Default size of the command event ring buffer, in pages. Teleport uses 8;
/// more here so that an exec storm with long argv loses nothing (BENCHMARKS.md).
pub const COMMAND_BUFFER_PAGES: u32 = 64;
/// Default size of the disk event ring buffer: Teleport's 128 pages.
pub const DISK_BUFFER_PAGES: u32 = 128;

impl EnhancedRecording {
    pub fn disk_filter(&self) -> Result<crate::pathfilter::PathFilter, String> {
        let homes = homes(Path::new("/etc/passwd"), Path::new("/etc/login.defs"));
        let always = expand_homes(&self.disk_always, &homes);
        crate::pathfilter::PathFilter::new(&self.disk_include, &self.disk_exclude, &always)
            .map_err(|m| format!("enhanced_recording.{m}"))
    }

    /// The superblock magic numbers of `disk_exclude_filesystems`.
    pub fn excluded_filesystems(&self) -> Result<Vec<u64>, String> {
        if self.disk_exclude_filesystems.len() > restrictd_common::FS_EXCLUDE_MAX {
            return Err(format!(
                "enhanced_recording.disk_exclude_filesystems: {} entries, at most {}",
                self.disk_exclude_filesystems.len(),
                restrictd_common::FS_EXCLUDE_MAX
            ));
        }
        self.disk_exclude_filesystems
            .iter()
            .map(|name| {
                FILESYSTEMS
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, m)| *m)
                    .ok_or_else(|| {
                        let known: Vec<&str> = FILESYSTEMS.iter().map(|(n, _)| *n).collect();
                        format!(
                            "enhanced_recording.disk_exclude_filesystems: unknown filesystem {name:?} (known: {})",
                            known.join(", ")
                        )
                    })
            })
            .collect()
    }

    /// Session flags for the BPF programs.
    pub fn session_flags(&self) -> u32 {
        let mut f = restrictd_common::SESSION_RESTRICT;
        if self.enabled && self.command_events {
            f |= restrictd_common::SESSION_RECORD_COMMANDS;
        }
        if self.enabled && self.network_events {
            f |= restrictd_common::SESSION_RECORD_NETWORK;
        }
        if self.enabled && self.disk_events {
            f |= restrictd_common::SESSION_RECORD_DISK;
        }
        f
    }
}

/// Most homes a `~/` prefix expands to: each is two entries in the kernel's
/// 4096-entry path trie, which the other lists share.
const MAX_HOMES: usize = 1000;

/// Home directories of root and of the regular users (login.defs range) in
/// `passwd`, without "/" and duplicates. Accounts only in NSS (LDAP, SSSD)
/// are not listed there.
fn homes(passwd: &Path, login_defs: &Path) -> Vec<String> {
    let (min, max) = crate::identity::uid_range(login_defs);
    let text = std::fs::read_to_string(passwd).unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        let (Some(uid), Some(home)) = (f.get(2).and_then(|u| u.parse::<u32>().ok()), f.get(5))
        else {
            continue;
        };
        let home = home.trim_end_matches('/');
        if (uid == 0 || (min..=max).contains(&uid))
            && home.starts_with('/')
            && !out.iter().any(|h| h == home)
        {
            out.push(home.to_string());
        }
    }
    if out.len() > MAX_HOMES {
        log::warn!(
            "enhanced_recording.disk_always: ~/ covers the first {MAX_HOMES} of {} home directories",
            out.len()
        );
        out.truncate(MAX_HOMES);
    }
    out
}

impl EnhancedRecording {
    /// The always recorded paths whose files the daemon marks when it
    /// starts: all but the `~/` ones. Homes are read at their user's login
    /// (`always_in_home`), when they are mounted anyway: reading every
    /// home at start could wait on each automounted or unreachable one.
    pub fn always_at_start(&self) -> Vec<PathBuf> {
        if !self.disk_events || !self.enabled {
            return Vec::new();
        }
        self.disk_always
            .iter()
            .filter(|p| !p.starts_with("~/"))
            .map(PathBuf::from)
            .collect()
    }

    /// The always recorded paths `~/X` stands for in `home` (a user's home
    /// not in /etc/passwd when the daemon started: added at their login).
    pub fn always_in_home(&self, home: &str) -> Option<crate::pathfilter::PathFilter> {
        let home = home.trim_end_matches('/');
        if !home.starts_with('/') || !self.disk_events || !self.enabled {
            return None;
        }
        let mine: Vec<String> = self
            .disk_always
            .iter()
            .filter_map(|p| p.strip_prefix("~/"))
            .map(|rest| format!("{home}/{rest}"))
            .collect();
        if mine.is_empty() {
            return None;
        }
        crate::pathfilter::PathFilter::new(&[], &[], &mine)
            .map_err(|m| log::error!("enhanced_recording.{m} (home {home})"))
            .ok()
    }
}

/// `~/X` entries as `X` in each of `homes`; other entries as they are.
fn expand_homes(list: &[String], homes: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for p in list {
        match p.strip_prefix("~/") {
            Some(rest) => out.extend(homes.iter().map(|h| format!("{h}/{rest}"))),
            None => out.push(p.clone()),
        }
    }
    out
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cgroup_path: None,
            root_path: DEFAULT_ROOT_PATH.into(),
            policy_file: DEFAULT_POLICY_FILE.into(),
            policy_dir: DEFAULT_POLICY_DIR.into(),
            strict_policy: false,
            state_dir: DEFAULT_STATE_DIR.into(),
            bpf_pin_path: DEFAULT_BPF_PIN_PATH.into(),
            enhanced_recording: EnhancedRecording::default(),
            identities: IdentityConfig::default(),
            session_controls: crate::controls::Controls::default(),
            locks_file: DEFAULT_LOCKS_FILE.into(),
            terminal_recording: TerminalMode::default(),
            terminal: TerminalStorage::default(),
        }
    }
}

impl Default for EnhancedRecording {
    fn default() -> Self {
        EnhancedRecording {
            enabled: true,
            command_events: true,
            network_events: true,
            disk_events: true,
            command_buffer_size: COMMAND_BUFFER_PAGES,
            disk_buffer_size: DISK_BUFFER_PAGES,
            network_buffer_size: NETWORK_BUFFER_PAGES,
            argv_limit: DEFAULT_ARGV_LIMIT,
            disk_include: vec!["/".into()],
            disk_exclude: DEFAULT_DISK_EXCLUDE.iter().map(|s| s.to_string()).collect(),
            disk_exclude_filesystems: DEFAULT_DISK_EXCLUDE_FILESYSTEMS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            disk_exclude_devices: true,
            disk_always: DEFAULT_DISK_ALWAYS.iter().map(|s| s.to_string()).collect(),
            disk_rate_limit: DEFAULT_DISK_RATE_LIMIT,
        }
    }
}

impl Config {
    pub fn load_options(
        &self,
        pin_dir: Option<PathBuf>,
    ) -> anyhow::Result<crate::bpf::LoadOptions> {
        let er = &self.enhanced_recording;
        Ok(crate::bpf::LoadOptions {
            // Each ring buffer map of the BPF object, with its size key.
            ring_pages: vec![
                ("NETWORK_EVENTS", er.network_buffer_size),
                ("COMMAND_EVENTS", er.command_buffer_size),
                ("DISK_EVENTS", er.disk_buffer_size),
                ("TTY_EVENTS", self.terminal.buffer_size),
            ],
            recording: self.session_flags(),
            terminal_rate_limit: self.terminal.rate_limit,
            argv_limit: er.argv_limit,
            disk_filter: er.disk_filter().map_err(anyhow::Error::msg)?,
            always_at_start: er.always_at_start(),
            disk_rate_limit: er.disk_rate_limit,
            disk_exclude_fs: er.excluded_filesystems().map_err(anyhow::Error::msg)?,
            disk_exclude_devices: er.disk_exclude_devices,
            pin_dir,
        })
    }

    /// The session flags of the host default: what its sessions record.
    pub fn session_flags(&self) -> u32 {
        self.enhanced_recording.session_flags() | self.terminal_recording.flags()
    }

    /// Reads and validates `path`. Errors name the file, and the line and
    /// column where the parser has one.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let src = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{src}: cannot read config: {e}"))?;
        Config::parse(&text, &src.to_string())
    }

    /// How policies are read (`strict_policy`).
    pub fn policy_strictness(&self) -> crate::policy::Strictness {
        if self.strict_policy {
            crate::policy::Strictness::Strict
        } else {
            crate::policy::Strictness::Teleport
        }
    }

    pub fn parse(text: &str, source: &str) -> anyhow::Result<Config> {
        let cfg: Config = if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            Config::default()
        } else {
            serde_saphyr::from_str(text).map_err(|e| {
                let (line, column, msg) = crate::policy::yaml_error(&e);
                anyhow::anyhow!("{source}:{line}:{column}: {msg}")
            })?
        };
        cfg.validate()
            .map_err(|m| anyhow::anyhow!("{source}: {m}"))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let root = Path::new(&self.root_path);
        if !root.is_absolute()
            || root
                .components()
                .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
            || root == Path::new("/")
        {
            return Err(format!(
                "root_path {:?} must be an absolute path below the cgroup root, without `.` or `..`",
                self.root_path
            ));
        }
        if let Some(p) = &self.cgroup_path {
            if !p.is_absolute() {
                return Err(format!("cgroup_path {p:?} must be absolute"));
            }
        }
        for (key, p) in [
            ("policy_file", &self.policy_file),
            ("policy_dir", &self.policy_dir),
            ("state_dir", &self.state_dir),
            ("bpf_pin_path", &self.bpf_pin_path),
            ("identities.state_file", &self.identities.state_file),
            ("locks_file", &self.locks_file),
            ("terminal.dir", &self.terminal.dir),
        ] {
            if !p.is_absolute() {
                return Err(format!("{key} {p:?} must be absolute"));
            }
        }
        self.session_controls.validate("session_controls")?;
        let t = &self.terminal;
        if t.buffer_size == 0 || !t.buffer_size.is_power_of_two() {
            return Err(format!(
                "terminal.buffer_size is {}: it must be a power of two (pages)",
                t.buffer_size
            ));
        }
        if t.max_session_size == 0 || t.max_total_size < t.max_session_size {
            return Err(format!(
                "terminal.max_session_size ({}) must be above 0 and at most terminal.max_total_size ({})",
                t.max_session_size, t.max_total_size
            ));
        }
        let er = &self.enhanced_recording;
        for (key, pages) in [
            ("network_buffer_size", er.network_buffer_size),
            ("command_buffer_size", er.command_buffer_size),
            ("disk_buffer_size", er.disk_buffer_size),
        ] {
            if pages == 0 || !pages.is_power_of_two() {
                return Err(format!(
                    "enhanced_recording.{key} is {pages}: it must be a power of two (pages)"
                ));
            }
        }
        er.disk_filter()?;
        er.excluded_filesystems()?;
        if er.argv_limit == 0 || er.argv_limit as usize > restrictd_common::ARGV_LIMIT_MAX {
            return Err(format!(
                "enhanced_recording.argv_limit is {}: it must be from 1 to {} bytes",
                er.argv_limit,
                restrictd_common::ARGV_LIMIT_MAX
            ));
        }
        // One command may take at most a quarter of its ring buffer, so
        // that a long argv cannot crowd out the others.
        let page = 4096u64;
        let need = (4 * er.argv_limit as u64)
            .div_ceil(page)
            .next_power_of_two();
        if (er.command_buffer_size as u64) < need {
            return Err(format!(
                "enhanced_recording.argv_limit {} needs command_buffer_size of at least {need} pages (4 × argv_limit); it is {}",
                er.argv_limit, er.command_buffer_size
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_prefixes_cover_root_and_regular_users_only() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0::/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n\
             alice:x:1000:1000::/home/alice/:/bin/bash\nbob:x:1001:1001::/home/bob:/bin/sh\n\
             nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\nbroken\n\
             slash:x:1002:1002::/:/bin/sh\n",
        )
        .unwrap();
        let homes = homes(&passwd, &dir.path().join("no-login.defs"));
        assert_eq!(homes, ["/root", "/home/alice", "/home/bob"]);
        let list = ["~/.ssh".to_string(), "/etc/shadow".to_string()];
        assert_eq!(
            expand_homes(&list, &homes),
            [
                "/root/.ssh",
                "/home/alice/.ssh",
                "/home/bob/.ssh",
                "/etc/shadow"
            ]
        );
    }

    #[test]
    fn empty_config_is_default() {
        assert_eq!(Config::parse("", "c").unwrap(), Config::default());
        assert_eq!(Config::parse("# x\n", "c").unwrap(), Config::default());
    }

    #[test]
    fn keys_are_read() {
        let c = Config::parse(
            "cgroup_path: /cg\nroot_path: /a/b\nenhanced_recording:\n  network_buffer_size: 16\n",
            "c",
        )
        .unwrap();
        assert_eq!(c.cgroup_path, Some(PathBuf::from("/cg")));
        assert_eq!(c.root_path, "/a/b");
        assert_eq!(c.enhanced_recording.network_buffer_size, 16);
    }

    #[test]
    fn bad_configs_are_rejected_with_location() {
        let e = Config::parse("root_path: /x\nrot_path: /y\n", "c.yaml").unwrap_err();
        assert!(e.to_string().starts_with("c.yaml:2:"), "{e}");
        for bad in [
            "root_path: relative",
            "root_path: /a/../b",
            "root_path: /",
            "cgroup_path: rel",
            "policy_file: policy.yaml",
            "state_dir: run",
            "bpf_pin_path: x",
            "enhanced_recording:\n  network_buffer_size: 3",
            "enhanced_recording:\n  network_buffer_size: 0",
            "enhanced_recording:\n  command_buffer_size: 12",
            "enhanced_recording:\n  argv_limit: 0",
            "enhanced_recording:\n  argv_limit: 200000",
            "enhanced_recording:\n  argv_limit: 131072",
            "enhanced_recording:\n  command_event: true",
            "enhanced_recording:\n  disk_buffer_size: 100",
            "enhanced_recording:\n  disk_include: [etc]",
            "enhanced_recording:\n  disk_exclude: [/a]\n  disk_include: [/a]",
            "enhanced_recording:\n  disk_rate_limit: -1",
            "enhanced_recording:\n  disk_always: /etc/shadow",
            "identities:\n  state_file: identities.json",
            "identities:\n  exempt_user: [alice]",
            "identities:\n  users: alice",
            "terminal_recording: keystrokes",
            "terminal:\n  buffer_size: 100",
            "terminal:\n  max_session_size: 0",
            "terminal:\n  max_session_size: 2000\n  max_total_size: 1000",
            "terminal:\n  dir: recordings",
            "terminal:\n  rate: 10",
        ] {
            let e = Config::parse(bad, "c.yaml").unwrap_err();
            assert!(e.to_string().starts_with("c.yaml:"), "{bad}: {e}");
        }
    }

    #[test]
    fn excluded_filesystems_are_known_names() {
        let e = Config::parse(
            "enhanced_recording:\n  disk_exclude_filesystems: [proc, ext4]",
            "c.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "c.yaml: enhanced_recording.disk_exclude_filesystems: unknown filesystem \"ext4\" (known: proc, sysfs,"
            ),
            "{e}"
        );
        let c = Config::parse(
            "enhanced_recording:\n  disk_exclude_filesystems: [proc, tmpfs]",
            "c",
        )
        .unwrap();
        assert_eq!(
            c.enhanced_recording.excluded_filesystems().unwrap(),
            [0x9fa0, 0x0102_1994]
        );
        // More than the kernel's table holds, and a switch that is not one.
        let many = format!(
            "enhanced_recording:\n  disk_exclude_filesystems: [{}]",
            vec!["proc"; restrictd_common::FS_EXCLUDE_MAX + 1].join(", ")
        );
        let e = Config::parse(&many, "c.yaml").unwrap_err().to_string();
        assert!(
            e.contains("disk_exclude_filesystems: 33 entries, at most 32"),
            "{e}"
        );
        let e = Config::parse(
            "enhanced_recording:\n  disk_exclude_devices: maybe",
            "c.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("c.yaml:2:"), "{e}");
        // Every default is a known name.
        assert_eq!(
            Config::default()
                .enhanced_recording
                .excluded_filesystems()
                .unwrap()
                .len(),
            DEFAULT_DISK_EXCLUDE_FILESYSTEMS.len()
        );
    }

    /// The daemon reads no home when it starts (an automounted or
    /// unreachable one would stall it): a home's files are marked at its
    /// user's login. With recording off it reads nothing.
    #[test]
    fn files_marked_at_start_are_the_hosts_not_the_homes() {
        let mut er = Config::default().enhanced_recording;
        let at_start = er.always_at_start();
        assert_eq!(
            at_start,
            [
                "/etc/shadow",
                "/etc/gshadow",
                "/etc/sudoers",
                "/etc/sudoers.d",
                "/root"
            ]
            .map(PathBuf::from)
        );
        assert!(er.disk_always.iter().any(|p| p == "~/.ssh"));
        er.disk_events = false;
        assert!(er.always_at_start().is_empty());
    }

    #[test]
    fn bad_always_recorded_paths_are_named() {
        for (bad, msg) in [
            (
                "enhanced_recording:\n  disk_always: [etc/shadow]",
                "c.yaml: enhanced_recording.disk_always: \"etc/shadow\" is not an absolute path",
            ),
            // Only `~/` (every home) is understood, not `~user/`.
            (
                "enhanced_recording:\n  disk_always: [~alice/.ssh]",
                "c.yaml: enhanced_recording.disk_always: \"~alice/.ssh\" is not an absolute path",
            ),
            (
                "enhanced_recording:\n  disk_always: [/etc/ssh]\n  disk_exclude: [/etc/ssh/moduli]",
                "c.yaml: enhanced_recording.disk_exclude: \"/etc/ssh/moduli\" is inside always recorded \"/etc/ssh\" (disk_always)",
            ),
        ] {
            let e = Config::parse(bad, "c.yaml").unwrap_err();
            assert_eq!(e.to_string(), msg, "{bad}");
        }
        // The default keeps root's ~/.ssh, and an empty list is allowed.
        let f = Config::default().enhanced_recording.disk_filter().unwrap();
        assert!(f
            .trie_entries()
            .any(|(p, k)| p == b"/root/.ssh/" && k == restrictd_common::PATH_ALWAYS));
        Config::parse("enhanced_recording:\n  disk_always: []", "c.yaml").unwrap();
    }
}
