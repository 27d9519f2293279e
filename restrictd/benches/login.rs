//! Added login latency: first what the kernel takes to move a process
//! between cgroups; then pam_open_session + pam_close_session through
//! pam_restrict.so against a running restrictd (private bus and daemon, as in
//! the tests), p50/p99 over 1,000 logins, alone (also 100 ms apart) and
//! with 200 sessions held open; then restrictd's RSS with 1,000 open sessions; then the same
//! while a 100,000-CIDR policy is replaced in a loop and an exec storm runs
//! in an SSH session; then real `ssh` logins through sshd with and without
//! the PAM line, interleaved. `-- ssh` runs only those, `-- apply` only
//! the policy apply.
//! Run as root with `scripts/bench.sh` (it builds the release PAM module
//! this loads first); see BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    ffi::{c_char, c_int, c_void, CString},
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    policy_yaml,
    sshd::{wait_for, Bus, Daemon, PamService, Sshd, User},
};

#[repr(C)]
struct PamConv {
    conv: extern "C" fn(c_int, *const *const c_void, *mut *mut c_void, *mut c_void) -> c_int,
    appdata: *mut c_void,
}

#[link(name = "pam")]
extern "C" {
    fn pam_start(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        h: *mut *mut c_void,
    ) -> c_int;
    fn pam_open_session(h: *mut c_void, flags: c_int) -> c_int;
    fn pam_close_session(h: *mut c_void, flags: c_int) -> c_int;
    fn pam_end(h: *mut c_void, status: c_int) -> c_int;
}

/// Session modules do not converse; refuse if one ever tries.
extern "C" fn no_conv(
    _: c_int,
    _: *const *const c_void,
    _: *mut *mut c_void,
    _: *mut c_void,
) -> c_int {
    19 // PAM_CONV_ERR
}

struct Pam(*mut c_void);

impl Pam {
    fn start(service: &str, user: &str) -> Pam {
        let (s, u) = (CString::new(service).unwrap(), CString::new(user).unwrap());
        let conv = Box::leak(Box::new(PamConv {
            conv: no_conv,
            appdata: std::ptr::null_mut(),
        }));
        let mut h = std::ptr::null_mut();
        assert_eq!(
            unsafe { pam_start(s.as_ptr(), u.as_ptr(), conv, &mut h) },
            0,
            "pam_start"
        );
        Pam(h)
    }
    fn open(&self) {
        assert_eq!(
            unsafe { pam_open_session(self.0, 0) },
            0,
            "pam_open_session failed"
        );
    }
    fn close(&self) {
        assert_eq!(
            unsafe { pam_close_session(self.0, 0) },
            0,
            "pam_close_session failed"
        );
    }
}

impl Drop for Pam {
    fn drop(&mut self) {
        unsafe { pam_end(self.0, 0) };
    }
}

const HOLD: &str = "RESTRICTD_BENCH_HOLD_SERVICE";

fn main() {
    // A holder: open a session, say so, keep it until stdin closes.
    if let Ok(service) = std::env::var(HOLD) {
        let pam = Pam::start(&service, "nobody");
        pam.open();
        println!("open");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        pam.close();
        return;
    }
    common::require_root();
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &["127.0.0.2"])));
    let svc = PamService::new("");
    // `-- apply`: only the live apply of 1,000 per-login policies.
    if std::env::args().any(|a| a == "apply") {
        return apply_times(&daemon, &svc.name, &bus.address);
    }
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &bus.address) };

    kernel_move();
    // `-- ssh`: only the real ssh logins.
    if std::env::args().any(|a| a == "ssh") {
        let user = User::new();
        let with = Sshd::new(&bus, &user, "");
        let without = Sshd::with_session(&bus, &user, "session required pam_permit.so\n");
        return ssh_rows(&with, &without, &user);
    }
    println!();
    println!("pam_open_session + pam_close_session through pam_restrict.so, 1000 logins");
    println!(
        "{:>14} {:>9} {:>9} {:>9}",
        "open sessions", "p50 ms", "p99 ms", "max ms"
    );
    let mut holders = Vec::new();
    for background in [0usize, 200] {
        while holders.len() < background {
            holders.push(hold(&svc.name, &bus.address));
        }
        wait_for("holders registered", Duration::from_secs(60), || {
            daemon.sessions().len() >= background
        });
        let (p50, p99, max) = measure(&svc.name, 1000, Duration::ZERO);
        println!("{background:>14} {p50:>9.2} {p99:>9.2} {max:>9.2}");
        if background == 0 {
            // Back to back, each login's move finds the kernel's lock still
            // in writer mode from the last one; logins that arrive apart
            // wait for a grace period each (kernel_move).
            let (p50, p99, max) = measure(&svc.name, 100, Duration::from_millis(100));
            println!("{:>14} {p50:>9.2} {p99:>9.2} {max:>9.2}", "0, 100 ms apart");
        }
    }
    while holders.len() < 1000 {
        holders.push(hold(&svc.name, &bus.address));
    }
    wait_for("1000 sessions", Duration::from_secs(120), || {
        daemon.sessions().len() >= 1000
    });
    let rss = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_string()))
        .unwrap();
    println!();
    println!("restrictd RSS with 1000 open sessions: {rss}");
    for mut h in holders {
        drop(h.stdin.take());
        let _ = h.wait();
    }

    let user = User::new();
    let with = Sshd::new(&bus, &user, "");
    under_load(&daemon, &svc.name, &with, &user);

    let without = Sshd::with_session(&bus, &user, "session required pam_permit.so\n");
    ssh_rows(&with, &without, &user);
}

fn ssh_rows(with: &Sshd, without: &Sshd, user: &User) {
    // What a user waits for: a whole ssh login, with and without the line,
    // alternating so that machine noise hits both alike.
    let n = 150;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..n {
        // ABBA: neither goes first every time.
        if i % 2 == 0 {
            a.push(ssh_login(with, user));
            b.push(ssh_login(without, user));
        } else {
            b.push(ssh_login(without, user));
            a.push(ssh_login(with, user));
        }
    }
    // Each pair ran back to back: the median of their differences is
    // steadier than the difference of the medians.
    let mut pairs: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    pairs.sort_by(|x, y| x.partial_cmp(y).unwrap());
    let paired = pairs[pairs.len() / 2];
    let (a, b) = (percentiles(a), percentiles(b));
    println!();
    println!("ssh USER@127.0.0.1 true through a real sshd, {n} logins each, interleaved");
    println!("{:>22} {:>9} {:>9} {:>9}", "", "p50 ms", "p99 ms", "max ms");
    println!(
        "{:>22} {:>9.2} {:>9.2} {:>9.2}",
        "with the PAM line", a.0, a.1, a.2
    );
    println!("{:>22} {:>9.2} {:>9.2} {:>9.2}", "without", b.0, b.1, b.2);
    println!(
        "added at p50: {:.2} ms; median of the {n} pairs' differences: {paired:.2} ms",
        a.0 - b.0
    );
}

/// What the kernel itself takes to move a process into another cgroup, as
/// every login's open_session does (and logind's scope does on systemd
/// hosts): 20 moves of an idle process between two cgroups, 100 ms apart.
fn kernel_move() {
    let mount = restrictd::cgroup::find_cgroup2_mount().unwrap();
    let opts = restrictd::cgroup::cgroup2_options(&mount).unwrap_or_else(|| "?".into());
    struct Dirs(Vec<std::path::PathBuf>, Child);
    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = self.1.kill();
            let _ = self.1.wait();
            for d in &self.0 {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
    let id = std::process::id();
    let dirs = Dirs(
        ["a", "b"]
            .iter()
            .map(|s| mount.join(format!("restrictd-bench-move-{id}-{s}")))
            .collect(),
        Command::new("sleep").arg("60").spawn().unwrap(),
    );
    for d in &dirs.0 {
        std::fs::create_dir(d).unwrap();
    }
    let pid = dirs.1.id().to_string();
    let mut v: Vec<f64> = (0..20)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(100));
            let t = Instant::now();
            std::fs::write(dirs.0[i % 2].join("cgroup.procs"), &pid).unwrap();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "kernel: one process moved into another cgroup, 100 ms after the last move: p50 {:.2} ms, max {:.2} ms (cgroup2 {}: {opts})",
        v[v.len() / 2],
        v[v.len() - 1],
        mount.display()
    );
}

/// `restrictctl policy apply` end to end (the daemon reads the policy file
/// and a policy directory of 1,000 per-login policies of 100 rules, one
/// file each, writes the maps, evaluates every session and identity again
/// and switches), with no sessions and with 200 open.
fn apply_times(daemon: &Daemon, service: &str, bus: &str) {
    let dir = daemon.dir.path().join("policy.d");
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = restrictd::policy::synthetic_policies_yaml(1_000, 100);
    for (i, doc) in yaml.split("---\n").skip(1).enumerate() {
        std::fs::write(dir.join(format!("{i:04}.yaml")), doc).unwrap();
    }
    let file = daemon.policy_file.display().to_string();
    println!("restrictctl policy apply: the policy file and 1,000 per-login policies of");
    println!("100 rules (TCP 443 + 8000-8080) in policy.d, one file each; ms per apply");
    let mut holders = Vec::new();
    for open in [0usize, 200] {
        while holders.len() < open {
            holders.push(hold(service, bus));
        }
        wait_for("holders registered", Duration::from_secs(60), || {
            daemon.sessions().len() >= open
        });
        let times: Vec<String> = (0..3)
            .map(|_| {
                let t = Instant::now();
                let out = daemon.ctl(&["policy", "apply", &file]);
                let ms = t.elapsed().as_secs_f64() * 1e3;
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                format!("{ms:.0}")
            })
            .collect();
        println!("  {open:>3} sessions open: {}", times.join(", "));
    }
    for mut h in holders {
        drop(h.stdin.take());
        let _ = h.wait();
    }
}

/// Login latency while the policy is replaced in a loop (100,000 CIDRs,
/// two versions alternating, through `restrictctl policy apply`) and an
/// exec storm runs in an SSH session: a login must not wait for either.
fn under_load(daemon: &Daemon, service: &str, sshd: &Sshd, user: &User) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let files: Vec<std::path::PathBuf> = (0..2u32)
        .map(|v| {
            let deny: Vec<String> = (0..100_000u32)
                .map(|i| {
                    format!(
                        "10.{}.{}.{}/32",
                        v * 100 + i / 65536,
                        (i / 256) % 256,
                        i % 256
                    )
                })
                .collect();
            let deny: Vec<&str> = deny.iter().map(String::as_str).collect();
            let path = daemon.dir.path().join(format!("big{v}.yaml"));
            std::fs::write(&path, policy_yaml(&["0.0.0.0/0"], &deny)).unwrap();
            path
        })
        .collect();
    let stop = AtomicBool::new(false);
    let applied = AtomicUsize::new(0);
    let mut storm = sshd
        .ssh_cmd(user, "exec timeout 120 sh -c 'while :; do /bin/true; done'")
        .spawn()
        .unwrap();
    let (p50, p99, max) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let f = files[i % 2].display().to_string();
                let out = daemon.ctl(&["policy", "apply", &f]);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                applied.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        });
        // Let the first apply start before measuring.
        std::thread::sleep(Duration::from_millis(500));
        let r = measure(service, 500, Duration::ZERO);
        stop.store(true, Ordering::Relaxed);
        r
    });
    let _ = storm.kill();
    let _ = storm.wait();
    println!();
    println!(
        "500 logins while a 100,000-CIDR policy was replaced {} times and an exec storm ran in an SSH session",
        applied.load(Ordering::Relaxed)
    );
    println!("{:>14} {:>9} {:>9} {:>9}", "", "p50 ms", "p99 ms", "max ms");
    println!("{:>14} {p50:>9.2} {p99:>9.2} {max:>9.2}", "under load");
}

fn ssh_login(sshd: &Sshd, user: &User) -> f64 {
    let t = Instant::now();
    let out = sshd.ssh(user, "true");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64() * 1e3
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    (v[n / 2], v[n * 99 / 100], v[n - 1])
}

/// Each open_session moves this process into the new session's cgroup (as
/// it does sshd's [priv]); it steps back to where it started afterwards, so
/// the fixture's cleanup of session cgroups does not kill the benchmark.
fn measure(service: &str, n: usize, apart: Duration) -> (f64, f64, f64) {
    let home = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let home = home
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .to_string();
    let mount = restrictd::cgroup::find_cgroup2_mount().unwrap();
    let home = restrictd::cgroup::Cgroup::open(&mount.join(home.trim_start_matches('/'))).unwrap();
    let pam = Pam::start(service, "nobody");
    let v: Vec<f64> = (0..n)
        .map(|_| {
            std::thread::sleep(apart);
            let t = Instant::now();
            pam.open();
            pam.close();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    home.add_process(std::process::id()).unwrap();
    percentiles(v)
}

fn hold(service: &str, bus: &str) -> Child {
    let mut c = Command::new(std::env::current_exe().unwrap())
        .env(HOLD, service)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "open");
    let _ = c.stdin.as_mut().unwrap().flush();
    c
}
