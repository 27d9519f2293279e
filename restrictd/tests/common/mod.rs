//! Helpers for tests that run the real `restrictd` binary against the real
//! kernel. They need root, BPF and cgroup v2; they fail (never skip) without.
#![allow(dead_code)]

pub mod netns;
pub mod sshd;

use std::{
    fs,
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

pub const RESTRICTD: &str = env!("CARGO_BIN_EXE_restrictd");

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn probe() -> String {
    repo().join("tests/probe.py").display().to_string()
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "restrictd's kernel tests must run as root (BPF, cgroups); they do not skip"
    );
}

/// A private session root (its own `root_path`), so parallel tests neither
/// see nor disturb each other's cgroups and attachments. Removed on drop.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub root: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox::with_config("")
    }

    /// `extra`: more config YAML lines.
    pub fn with_config(extra: &str) -> Sandbox {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let name = format!("restrictd-test-{}", uuid::Uuid::new_v4());
        let config = dir.path().join("restrictd.yaml");
        fs::write(&config, format!("root_path: /{name}\n{extra}")).unwrap();
        let root = restrictd::cgroup::find_cgroup2_mount().unwrap().join(&name);
        Sandbox { dir, config, root }
    }

    pub fn policy(&self, allow: &[&str], deny: &[&str]) -> PathBuf {
        let s = policy_yaml(allow, deny);
        let p = self
            .dir
            .path()
            .join(format!("policy-{}.yaml", uuid::Uuid::new_v4()));
        fs::write(&p, s).unwrap();
        p
    }

    pub fn events_path(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    /// `restrictd run --config .. [--policy P] --events E -- ARGS`.
    pub fn run_cmd(&self, policy: Option<&Path>, args: &[&str]) -> Command {
        let mut c = Command::new(RESTRICTD);
        c.arg("run").arg("--config").arg(&self.config);
        if let Some(p) = policy {
            c.arg("--policy").arg(p);
        }
        c.arg("--events").arg(self.events_path());
        c.arg("--").args(args);
        c
    }

    pub fn run(&self, policy: Option<&Path>, args: &[&str]) -> Output {
        self.run_cmd(policy, args).output().unwrap()
    }

    /// Runs the probe in a session; returns its one-line verdict.
    pub fn probe(&self, policy: Option<&Path>, mode: &str, host: &str, port: u16) -> String {
        let out = self.run(
            policy,
            &["python3", &probe(), mode, host, &port.to_string()],
        );
        verdict(&out)
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        read_events(&self.events_path())
    }

    /// Only the session.network events.
    pub fn network_events(&self) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "session.network")
            .collect()
    }

    /// Only the denials (session.network, action 1).
    pub fn denials(&self) -> Vec<serde_json::Value> {
        self.network_events()
            .into_iter()
            .filter(|e| e["action"] == 1)
            .collect()
    }

    /// Session cgroups left under the root.
    pub fn leftover_cgroups(&self) -> Vec<PathBuf> {
        match fs::read_dir(&self.root) {
            Err(_) => vec![],
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .map(|e| e.path())
                .collect(),
        }
    }

    /// Programs attached to the root cgroup (by `bpftool cgroup show`).
    pub fn attached_programs(&self) -> usize {
        attached_programs(&self.root)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.root);
    }
}

/// Kills whatever runs in the session cgroups below `root` and removes them
/// and `root` (test cleanup, also after a failed test).
pub fn remove_cgroup_tree(root: &Path) {
    // cgroup.kill kills the whole subtree; then remove it leaves first.
    let _ = fs::write(root.join("cgroup.kill"), "1");
    if let Ok(rd) = fs::read_dir(root) {
        for cg in rd
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
        {
            remove_cgroup_tree(&cg);
        }
    }
    for _ in 0..200 {
        if fs::remove_dir(root).is_ok() || !root.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A network_restrictions policy with these lists.
pub fn policy_yaml(allow: &[&str], deny: &[&str]) -> String {
    let mut s = String::from(
        "kind: network_restrictions\nversion: v4\nmetadata:\n  name: test\nspec:\n  allow:\n",
    );
    for c in allow {
        s += &format!("    - cidr: \"{c}\"\n");
    }
    s += "  deny:\n";
    for c in deny {
        s += &format!("    - cidr: \"{c}\"\n");
    }
    s
}

/// Runs `cmd` under tests/with-journald.sh (private standalone journald);
/// the entries from restrictd land in `journal` as JSON lines.
pub fn run_with_journald(journal: &Path, cmd: &Command) -> Output {
    wrapped("tests/with-journald.sh", journal, cmd)
}

/// Runs `cmd` under tests/with-syslog.sh (no journald, a syslog socket whose
/// datagrams land in `log`).
pub fn run_with_syslog(log: &Path, cmd: &Command) -> Output {
    wrapped("tests/with-syslog.sh", log, cmd)
}

fn wrapped(script: &str, out: &Path, cmd: &Command) -> Output {
    let mut c = Command::new(repo().join(script));
    c.arg(out).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.output().unwrap()
}

/// Programs attached to `cgroup` (0 when it no longer exists); fails when
/// bpftool's answer cannot be read, rather than reading it as 0.
pub fn attached_programs(cgroup: &Path) -> usize {
    if !cgroup.exists() {
        return 0;
    }
    let out = Command::new("bpftool")
        .args(["-j", "cgroup", "show"])
        .arg(cgroup)
        .output()
        .expect("bpftool is installed by scripts/setup.sh");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // bpftool prints nothing at all for a cgroup without programs.
    if out.stdout.iter().all(|b| b.is_ascii_whitespace()) {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bpftool output: {e}: {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    v.as_array()
        .unwrap_or_else(|| panic!("bpftool output is not a list: {v}"))
        .len()
}

pub fn verdict(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("").trim().to_string();
    assert!(
        !last.is_empty(),
        "probe printed nothing; status {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    last
}

/// The events in a `--events` file. A last line without its newline is
/// one the daemon is still writing (its buffer went out mid-line): not
/// yet an event, so left for the next read.
pub fn read_events(path: &Path) -> Vec<serde_json::Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => "",
    };
    complete
        .lines()
        .map(|l| serde_json::from_str(l).expect("each event line is JSON"))
        .collect()
}

/// Reads from a child's output until `needle` has been seen; returns all
/// that was read. Fails if the output ends first.
pub fn read_until(r: &mut impl std::io::Read, needle: &str) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains(needle) {
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "output ended before {needle:?}: {seen}");
        seen += &String::from_utf8_lossy(&buf[..n]);
    }
    seen
}

pub fn tcp_listener(addr: &str) -> (TcpListener, u16) {
    let l = TcpListener::bind((addr, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

pub fn udp_socket(addr: &str) -> (UdpSocket, u16) {
    let s = UdpSocket::bind((addr, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

/// Asserts that session `sid`'s events, with the `ei` ranges its
/// `session.lost` events gave the events it lost, use every `ei` from 0 to
/// its `session.end`'s exactly once: a gap in `ei` is exactly the lost
/// events. Returns the `session.lost` events.
pub fn assert_ei_accounted(events: &[serde_json::Value], sid: &str) -> Vec<serde_json::Value> {
    let mine: Vec<_> = events.iter().filter(|e| e["sid"] == sid).collect();
    let end = mine
        .iter()
        .find(|e| e["event"] == "session.end")
        .unwrap_or_else(|| panic!("no session.end for {sid}"));
    let lost: Vec<serde_json::Value> = mine
        .iter()
        .filter(|e| e["event"] == "session.lost")
        .map(|e| (*e).clone())
        .collect();
    let mut eis: Vec<u64> = mine.iter().map(|e| e["ei"].as_u64().unwrap()).collect();
    for e in &lost {
        let kernel: u64 = [
            "lost_network",
            "lost_command",
            "lost_disk",
            "disk_events_dropped",
            "command_events_dropped",
            "network_events_dropped",
        ]
        .iter()
        .map(|k| e[k].as_u64().unwrap())
        .sum();
        if kernel == 0 {
            continue;
        }
        let (a, b) = (
            e["lost_ei_first"].as_u64().unwrap(),
            e["lost_ei_last"].as_u64().unwrap(),
        );
        assert_eq!(b - a + 1, kernel, "{e}");
        eis.extend(a..=b);
    }
    eis.sort();
    let want: Vec<u64> = (0..=end["ei"].as_u64().unwrap()).collect();
    let first_off = eis.iter().zip(&want).position(|(a, b)| a != b);
    assert!(
        eis == want,
        "ei values and lost ranges do not count up exactly: {} values for {}, first off at {first_off:?}",
        eis.len(),
        want.len()
    );
    lost
}
