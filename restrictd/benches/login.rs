//! Added login latency: pam_open_session + pam_close_session through
//! pam_restrict.so against a running restrictd (private bus and daemon, as in
//! the tests), p50/p99 over 1,000 logins, alone and with 200 sessions held
//! open; then restrictd's RSS with 1,000 open sessions.
//! Run as root with `scripts/bench.sh` (it builds the release PAM module
//! this loads first); see BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    ffi::{c_char, c_int, c_void, CString},
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    time::Instant,
};

use common::{
    policy_yaml,
    sshd::{wait_for, Bus, Daemon, PamService},
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
    // SAFETY: single-threaded at this point.
    unsafe { std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &bus.address) };

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
        wait_for(
            "holders registered",
            std::time::Duration::from_secs(60),
            || daemon.sessions().len() >= background,
        );
        let (p50, p99, max) = measure(&svc.name, 1000);
        println!("{background:>14} {p50:>9.2} {p99:>9.2} {max:>9.2}");
    }
    while holders.len() < 1000 {
        holders.push(hold(&svc.name, &bus.address));
    }
    wait_for("1000 sessions", std::time::Duration::from_secs(120), || {
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
}

/// Each open_session moves this process into the new session's cgroup (as
/// it does sshd's [priv]); it steps back to where it started afterwards, so
/// the fixture's cleanup of session cgroups does not kill the benchmark.
fn measure(service: &str, n: usize) -> (f64, f64, f64) {
    let home = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let home = home
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .to_string();
    let mount = restrictd::cgroup::find_cgroup2_mount().unwrap();
    let home = restrictd::cgroup::Cgroup::open(&mount.join(home.trim_start_matches('/'))).unwrap();
    let pam = Pam::start(service, "nobody");
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            pam.open();
            pam.close();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    home.add_process(std::process::id()).unwrap();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[n / 2], v[n * 99 / 100], v[n - 1])
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
