//! Fixtures for the daemon/PAM/SSH tests: a private system bus, a restrictd
//! daemon, a throw-away user with an SSH key, and a real sshd on 127.0.0.1
//! whose PAM service (sshd uses its program name) is private to the test.
//! Everything is created with unique names and removed on drop.
#![allow(dead_code)]

use std::{
    fs,
    io::Read,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use super::{remove_cgroup_tree, repo, require_root, RESTRICTD};

pub const RESTRICTCTL: &str = env!("CARGO_BIN_EXE_restrictctl");

pub fn pam_module() -> PathBuf {
    // cargo builds the cdylib next to the test binaries' deps.
    let exe = PathBuf::from(RESTRICTD);
    let so = exe.parent().unwrap().join("libpam_restrict.so");
    assert!(
        so.exists(),
        "{} is missing: build the workspace first (cargo build [--release])",
        so.display()
    );
    so
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A dbus-daemon configured like the system bus, on a private socket.
pub struct Bus {
    pub dir: tempfile::TempDir,
    pub address: String,
    child: Child,
}

impl Bus {
    /// `restrictd_policy`: include the bus policy we ship (true), or one that
    /// lets anyone call restrictd (false), to test the daemon's own check.
    pub fn new(restrictd_policy: bool) -> Bus {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("system_bus_socket");
        let include = if restrictd_policy {
            format!(
                "<include>{}</include>",
                repo()
                    .join("packaging/dbus/org.restrictd.Daemon1.conf")
                    .display()
            )
        } else {
            "<policy context=\"default\"><allow send_destination=\"org.restrictd.Daemon1\"/></policy>\
             <policy user=\"root\"><allow own=\"org.restrictd.Daemon1\"/></policy>"
                .to_string()
        };
        let conf = format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
  </policy>
  {include}
</busconfig>
"#,
            socket = socket.display()
        );
        let conf_path = dir.path().join("bus.conf");
        fs::write(&conf_path, conf).unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf_path.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon is installed by scripts/setup.sh");
        wait_for("the test bus socket", Duration::from_secs(10), || {
            socket.exists()
        });
        Bus {
            address: format!("unix:path={}", socket.display()),
            dir,
            child,
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A restrictd daemon with its own cgroup root, pins, state and policy.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub policy_file: PathBuf,
    pub events: PathBuf,
    pub journal: PathBuf,
    pub pin_dir: PathBuf,
    pub root: PathBuf,
    bus: String,
    with_journal: bool,
    child: Option<Child>,
    /// Extra environment for the daemon's next `start`.
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// `policy`: YAML for the policy file, or None for no policy.
    pub fn new(bus: &Bus, policy: Option<&str>) -> Daemon {
        Daemon::build(bus, policy, false, "")
    }

    /// As `new`, with `extra` appended to its configuration file.
    pub fn with_config(bus: &Bus, policy: Option<&str>, extra: &str) -> Daemon {
        Daemon::build(bus, policy, false, extra)
    }

    /// As `new`, with a private standalone journald that the daemon writes
    /// to; `journal_entries()` reads it after `stop()`.
    pub fn with_journal(bus: &Bus, policy: Option<&str>) -> Daemon {
        Daemon::build(bus, policy, true, "")
    }

    fn build(bus: &Bus, policy: Option<&str>, with_journal: bool, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let name = unique("restrictd-test-");
        let policy_file = dir.path().join("policy.yaml");
        if let Some(p) = policy {
            fs::write(&policy_file, p).unwrap();
        }
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(&name);
        let config = dir.path().join("restrictd.yaml");
        fs::write(
            &config,
            format!(
                "root_path: /{name}\npolicy_file: {}\npolicy_dir: {}\nstate_dir: {}\nbpf_pin_path: {}\n\
                 locks_file: {}\n{terminal}identities:\n  state_file: {}\n{extra}",
                policy_file.display(),
                dir.path().join("policy.d").display(),
                dir.path().join("state").display(),
                pin_dir.display(),
                dir.path().join("locks.json").display(),
                dir.path().join("identities.json").display(),
                // Before `identities:`, which tests extend by appending
                // its keys. A test with its own `terminal:` section names
                // the directory as @TERMINAL_DIR@.
                terminal = if extra.lines().any(|l| l == "terminal:") {
                    String::new()
                } else {
                    format!("terminal:\n  dir: {}\n", dir.path().join("terminal").display())
                },
                extra = extra.replace(
                    "@TERMINAL_DIR@",
                    &dir.path().join("terminal").display().to_string()
                ),
            ),
        )
        .unwrap();
        let root = restrictd::cgroup::find_cgroup2_mount().unwrap().join(&name);
        let mut d = Daemon {
            events: dir.path().join("events.jsonl"),
            journal: dir.path().join("journal.json"),
            dir,
            config,
            policy_file,
            pin_dir,
            root,
            bus: bus.address.clone(),
            with_journal,
            child: None,
            env: Vec::new(),
        };
        d.start();
        d
    }

    /// `restrictd serve` with this daemon's config, bus and `env`, its
    /// stderr appended to daemon.log.
    fn serve_cmd(&self, with_journal: bool) -> Command {
        let mut cmd = if with_journal {
            let mut c = Command::new(repo().join("tests/with-journald.sh"));
            c.arg(&self.journal).arg(RESTRICTD);
            c
        } else {
            Command::new(RESTRICTD)
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(
                fs::File::options()
                    .create(true)
                    .append(true)
                    .open(self.dir.path().join("daemon.log"))
                    .unwrap(),
            );
        cmd
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none());
        let mut cmd = self.serve_cmd(self.with_journal);
        cmd.arg("--events").arg(&self.events);
        self.child = Some(cmd.spawn().unwrap());
        let bus = self.bus.clone();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = ctl_as_root(&bus, &["status"]);
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                // Why it did not come up is in its log, which goes with the
                // test's directory.
                let log =
                    fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
                panic!(
                    "timed out waiting for restrictd on the bus: restrictctl status: {}\ndaemon.log:\n{log}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the daemon expecting it to die before it serves (a fault
    /// injected with `env`); returns once it has.
    pub fn start_to_die(&mut self) -> std::process::ExitStatus {
        assert!(self.child.is_none());
        self.serve_cmd(false).status().unwrap()
    }

    /// SIGTERM and wait (a journal, if any, is written then).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    /// True while the daemon process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// SIGKILL: a crash.
    pub fn crash(&mut self) {
        assert!(!self.with_journal, "crash() kills the daemon directly");
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        ctl_as_root(&self.bus, args)
    }

    /// The daemon's pid (for a journal-wrapped daemon, the wrapper's).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        super::read_events(&self.events)
    }

    pub fn journal_entries(&self) -> Vec<serde_json::Value> {
        super::read_events(&self.journal)
    }

    /// Waits (10 s at most) for session `sid`'s `session.end` in the
    /// events file; returns every event then.
    pub fn wait_end(&self, sid: &str) -> Vec<serde_json::Value> {
        let mut events = Vec::new();
        wait_for("session.end", Duration::from_secs(10), || {
            events = self.events();
            events
                .iter()
                .any(|e| e["event"] == "session.end" && e["sid"] == sid)
        });
        events
    }

    /// Waits (10 s at most) for a `session.end`, of any session, in the
    /// events file; returns every event then.
    pub fn wait_any_end(&self) -> Vec<serde_json::Value> {
        let mut events = Vec::new();
        wait_for("the session's end", Duration::from_secs(10), || {
            events = self.events();
            events.iter().any(|e| e["event"] == "session.end")
        });
        events
    }

    /// Where this daemon keeps terminal recordings.
    pub fn terminal_dir(&self) -> PathBuf {
        self.dir.path().join("terminal")
    }

    pub fn sessions(&self) -> Vec<serde_json::Value> {
        let out = self.ctl(&["sessions", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        // Kill what is left in our session cgroups, then remove pins
        // (detaching the programs) and the cgroups.
        remove_cgroup_tree(&self.root);
        let _ = restrictd::bpf::remove_pins(&self.pin_dir);
    }
}

pub fn ctl_as_root(bus: &str, args: &[&str]) -> Output {
    Command::new(RESTRICTCTL)
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .output()
        .unwrap()
}

/// A throw-away local user with an SSH key.
pub struct User {
    pub name: String,
    pub uid: u32,
    pub key: PathBuf,
    _keydir: tempfile::TempDir,
}

impl User {
    pub fn new() -> User {
        require_root();
        let name = unique("rdt");
        // Never a uid another test of this run had: every test daemon's
        // programs see the whole host, and one still running would restrict
        // a reused uid of a user it admitted (useradd hands out the lowest
        // free uid, so a deleted user's uid comes back at once).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let base = 20_000 + std::process::id() % 20_000;
        let uid = loop {
            let n = base + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let taken = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(n))
                .ok()
                .flatten()
                .is_some();
            if !taken {
                break n;
            }
        };
        let st = Command::new("useradd")
            .args([
                "--create-home",
                "--shell",
                "/bin/sh",
                "--uid",
                &uid.to_string(),
                &name,
            ])
            .status()
            .unwrap();
        assert!(st.success(), "useradd {name}");
        // A locked password ("!") is fine for key logins under UsePAM; make it explicit.
        let _ = Command::new("usermod").args(["-p", "*", &name]).status();
        let uid = nix::unistd::User::from_name(&name)
            .unwrap()
            .unwrap()
            .uid
            .as_raw();
        let keydir = tempfile::tempdir().unwrap();
        let key = keydir.path().join("id_ed25519");
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(st.success());
        let home = PathBuf::from(format!("/home/{name}"));
        let ssh = home.join(".ssh");
        fs::create_dir_all(&ssh).unwrap();
        fs::copy(key.with_extension("pub"), ssh.join("authorized_keys")).unwrap();
        let st = Command::new("chown")
            .args(["-R", &format!("{name}:{name}"), &home.display().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700)).unwrap();
        User {
            name,
            uid,
            key,
            _keydir: keydir,
        }
    }

    /// Runs `args` as this user (not through SSH).
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new("runuser");
        c.args(["-u", &self.name, "--"]).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.name])
            .status();
        std::thread::sleep(Duration::from_millis(100));
        let _ = Command::new("userdel")
            .args(["--remove", &self.name])
            .output();
    }
}

/// A real sshd on 127.0.0.1 with UsePAM, running under a unique program name
/// so that its PAM service (/etc/pam.d/<name>) is private to the test.
pub struct Sshd {
    pub port: u16,
    pub service: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl Sshd {
    /// `module_args`: the pam_restrict arguments, e.g. "fail=closed timeout=2000".
    pub fn new(bus: &Bus, user: &User, module_args: &str) -> Sshd {
        Sshd::with_session_after(bus, user, module_args, "")
    }

    /// As `new`, with `after` (PAM session lines) after the module's line.
    pub fn with_session_after(bus: &Bus, user: &User, module_args: &str, after: &str) -> Sshd {
        let session = format!(
            "session required {} {module_args}\n{after}",
            pam_module().display()
        );
        Sshd::with_session(bus, user, &session)
    }

    /// With `session` as the PAM session stack (no pam_restrict.so unless
    /// it names it).
    pub fn with_session(bus: &Bus, user: &User, session: &str) -> Sshd {
        Sshd::configured(bus, &[user], session, "")
    }

    /// For several users, with `session` as the PAM session stack and
    /// `extra` appended to sshd_config.
    pub fn configured(bus: &Bus, users: &[&User], session: &str, extra: &str) -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let service = unique("sshd-rdtest-");
        let pam = format!("account required pam_permit.so\n{session}");
        fs::write(format!("/etc/pam.d/{service}"), pam).unwrap();
        let host_key = dir.path().join("host_key");
        assert!(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key)
            .status()
            .unwrap()
            .success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nUsePAM yes\nPidFile none\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 AllowUsers {}\nStrictModes no\nLogLevel VERBOSE\nAcceptEnv none\n{extra}",
                host_key.display(),
                users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(" ")
            ),
        )
        .unwrap();
        fs::create_dir_all("/run/sshd").unwrap();
        // sshd re-executes itself by its (absolute) argv[0].
        let exe = dir.path().join(&service);
        std::os::unix::fs::symlink("/usr/sbin/sshd", &exe).unwrap();
        let child = Command::new(&exe)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("sshd.log")).unwrap())
            .spawn()
            .unwrap();
        wait_for("sshd to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Sshd {
            port,
            service,
            dir,
            child,
        }
    }

    pub fn ssh_cmd(&self, user: &User, remote: &str) -> Command {
        let mut c = self.client(user, &[]);
        c.arg(remote);
        c
    }

    /// `ssh -W TARGET`: sshd, in the session, connects to TARGET and relays.
    pub fn forward_cmd(&self, user: &User, target: &str) -> Command {
        self.client(user, &["-W", target])
    }

    fn client(&self, user: &User, extra: &[&str]) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-i")
            .arg(&user.key)
            .args(["-p", &self.port.to_string()])
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=10",
            ])
            .args(extra)
            .arg(format!("{}@127.0.0.1", user.name))
            .stdin(Stdio::null());
        c
    }

    pub fn ssh(&self, user: &User, remote: &str) -> Output {
        self.ssh_cmd(user, remote).output().unwrap()
    }

    /// `ssh` with `extra` client arguments (`-b 127.0.0.5` to log in from
    /// another loopback address).
    pub fn ssh_with(&self, user: &User, extra: &[&str], remote: &str) -> Output {
        self.ssh_cmd_with(user, extra, remote).output().unwrap()
    }

    /// `ssh_cmd` with `extra` client arguments (`-tt`).
    pub fn ssh_cmd_with(&self, user: &User, extra: &[&str], remote: &str) -> Command {
        let mut c = self.client(user, extra);
        c.arg(remote);
        c
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        let _ = fs::File::open(self.dir.path().join("sshd.log"))
            .and_then(|mut f| f.read_to_string(&mut s));
        s
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(format!("/etc/pam.d/{}", self.service));
    }
}

/// A PAM service file for pamtester, private to the test; removed on drop.
/// Unmounts a path when dropped (a test's mount, also when it fails).
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

pub struct PamService {
    pub name: String,
}

impl PamService {
    pub fn new(module_args: &str) -> PamService {
        let name = unique("rdtest-pam-");
        fs::write(
            format!("/etc/pam.d/{name}"),
            format!(
                "session required {} {module_args}\n",
                pam_module().display()
            ),
        )
        .unwrap();
        PamService { name }
    }

    /// `pamtester SERVICE USER ops...` with the given bus.
    pub fn pamtester(&self, bus: &str, user: &str, ops: &[&str]) -> Command {
        let mut c = Command::new("pamtester");
        c.args(["-I", "rhost=192.0.2.10", "-I", "tty=ssh", &self.name, user])
            .args(ops)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus);
        c
    }
}

impl Drop for PamService {
    fn drop(&mut self) {
        let _ = fs::remove_file(format!("/etc/pam.d/{}", self.name));
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn probe_cmd(mode: &str, host: &str, port: u16) -> String {
    format!("python3 {} {mode} {host} {port}", super::probe())
}
