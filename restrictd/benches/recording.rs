//! Exec, file-open and connect storms inside one `restrictd run` session with
//! the default ring buffers: operations per second with recording on and off,
//! whether every operation was recorded, and the event writer's CPU time per
//! event; next to libbpf-tools' execsnoop, opensnoop and tcpconnect, and
//! auditd, tracing the same storm (scripts/bench.sh installs them).
//! Run as root: `cargo bench -p restrictd --bench recording` (or scripts/bench.sh);
//! `-- exec`, `-- open` or `-- connect` runs one storm; `-- journald` writes
//! the events to a private journald (tests/with-journald.sh), as a host
//! does, instead of to an `--events` file, and counts them there;
//! `-- rounds N` runs the exec or connect storm's configurations N times, interleaved,
//! and adds the rounds up (this machine's drift moves one run's ratio by 0.1).

use std::{
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

const SECONDS: u64 = 10;
/// The connect storm's listener: a loopback address of its own, so that
/// its events are told apart by destination.
const CONNECT_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 77);
const RESTRICTD: &str = env!("CARGO_BIN_EXE_restrictd");

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Inside the session: run /bin/true from `workers` threads for SECONDS;
    // print how many execs completed.
    if args.get(1).map(String::as_str) == Some("storm") {
        storm_loop(&args[2], || {
            // Without cargo's LD_LIBRARY_PATH, as in a login: with it the
            // loader tries some 27 missing libc.so.6 first, which are
            // recorded failed opens (those under /root always recorded).
            let st = Command::new("/bin/true")
                .arg("storm-marker")
                .env_remove("LD_LIBRARY_PATH")
                .status()
                .unwrap();
            assert!(st.success());
        });
        return;
    }
    // Inside the session: open and close a file from `workers` threads.
    if args.get(1).map(String::as_str) == Some("opens") {
        let file = std::path::PathBuf::from(&args[3]);
        storm_loop(&args[2], || drop(std::fs::File::open(&file).unwrap()));
        return;
    }
    // Inside the session: TCP connects to a closed port on CONNECT_ADDR
    // from `workers` threads. Each is a connection started (the event) and
    // refused at once: no listener whose accept queue could fill and stall
    // the storm on SYN retransmits, no TIME_WAIT to run ports out.
    if args.get(1).map(String::as_str) == Some("connects") {
        let target = std::net::TcpListener::bind((CONNECT_ADDR, 0))
            .unwrap()
            .local_addr()
            .unwrap();
        storm_loop(&args[2], || {
            let e = std::net::TcpStream::connect(target).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        });
        return;
    }
    assert!(nix::unistd::geteuid().is_root(), "the benchmark needs root");
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        * 2;
    let dir = tempfile::tempdir().unwrap();
    // systemd hosts queue 512 datagrams per socket (its sysctl.d default),
    // the kernel 10: with 10 the writer would block on journald's queue
    // far more than on a host. Restored when the bench ends.
    let _qlen = journald().then(|| Sysctl::set("/proc/sys/net/unix/max_dgram_qlen", "512"));

    // `-- exec`, `-- open` or `-- connect`: only that storm; `-- outside`:
    // only the cost to processes outside sessions.
    let only = args[1..]
        .iter()
        .find(|a| matches!(a.as_str(), "exec" | "open" | "connect" | "outside"))
        .cloned();
    let want = |s: &str| only.as_deref().is_none_or(|o| o == s);
    println!(
        "events written to {}",
        if journald() {
            "a private journald (counted there)"
        } else {
            "an --events file"
        }
    );
    if want("outside") {
        outside_cost(dir.path());
    }

    if want("exec") {
        let rounds = rounds();
        println!(
            "exec storm: /bin/true from {workers} threads for {SECONDS} s in one session, {rounds} round(s)"
        );
        let args = ["storm", &workers.to_string()];
        // Each round runs every configuration once, so that the machine's
        // drift (a ratio moved by 0.1 between runs here) falls on all alike.
        let (mut off, mut on, mut cmd_only, mut snoop, mut audit) = (None, None, None, None, None);
        for _ in 0..rounds {
            add(&mut off, Some(storm(dir.path(), "enabled: false", &args)));
            add(&mut on, Some(storm(dir.path(), "enabled: true", &args)));
            add(
                &mut cmd_only,
                Some(storm(
                    dir.path(),
                    "enabled: true\n  disk_events: false",
                    &args,
                )),
            );
            add(&mut snoop, peer("/usr/sbin/execsnoop", dir.path(), &args));
            add(&mut audit, auditd_peer("-S execve", dir.path(), &args));
        }
        let (off, on, cmd_only) = (off.unwrap(), on.unwrap(), cmd_only.unwrap());
        header("execs");
        let is_exec = |l: &str| {
            l.contains("\"session.command\"")
                && l.contains("storm-marker")
                && l.contains("\"/bin/true\"")
        };
        row("on", &on, on.count(is_exec), 0, on.lost_command);
        row(
            "no disk",
            &cmd_only,
            cmd_only.count(is_exec),
            0,
            cmd_only.lost_command,
        );
        if let Some(s) = &snoop {
            row(
                "execsnoop",
                s,
                s.count(|l| l.contains("storm-marker")),
                0,
                0,
            );
        }
        if let Some(a) = &audit {
            // One EXECVE record per exec, with its arguments.
            let n = a.count(|l| l.starts_with("type=EXECVE") && l.contains("storm-marker"));
            row("auditd", a, n, 0, a.lost_command);
        }
        row("off", &off, 0, 0, 0);
        println!(
            "throughput ratio on/off: {:.3} (all events), {:.3} (commands and network only)",
            on.rate() / off.rate(),
            cmd_only.rate() / off.rate()
        );
        peer_ratios("execsnoop", &snoop, &off, &on);
        peer_ratios("auditd", &audit, &off, &on);
        println!();
    }

    if want("open") {
        let file = dir.path().join("open-storm-file");
        std::fs::write(&file, "x").unwrap();
        let f = file.display().to_string();
        let args = ["opens", &workers.to_string(), &f];
        println!("file-open storm: open+close of one file from {workers} threads for {SECONDS} s");
        header("opens");
        let off = storm(dir.path(), "enabled: false", &args);
        let needle = format!("\"path\":\"{f}\"");
        let is_open = |l: &str| l.contains("\"session.disk\"") && l.contains(&needle);
        // Default config: the per-session rate limit (1000/s) caps what is recorded.
        let limited = storm(dir.path(), "enabled: true", &args);
        row(
            "on",
            &limited,
            limited.count(is_open),
            limited.dropped,
            limited.lost_disk,
        );
        let unlimited = storm(dir.path(), "enabled: true\n  disk_rate_limit: 0", &args);
        row(
            "unlimited",
            &unlimited,
            unlimited.count(is_open),
            unlimited.dropped,
            unlimited.lost_disk,
        );
        let snoop = peer("/usr/sbin/opensnoop", dir.path(), &args);
        if let Some(s) = &snoop {
            row("opensnoop", s, s.count(|l| l.contains(&f)), 0, 0);
        }
        let audit = auditd_peer("-S open,openat,openat2,creat", dir.path(), &args);
        if let Some(a) = &audit {
            // One PATH record per open, naming the file.
            let name = format!("name=\"{f}\"");
            let n = a.count(|l| l.starts_with("type=PATH") && l.contains(&name));
            row("auditd", a, n, 0, a.lost_disk);
        }
        row("off", &off, 0, 0, 0);
        println!(
            "throughput ratio on/off: {:.3} (rate-limited), {:.3} (unlimited)",
            limited.rate() / off.rate(),
            unlimited.rate() / off.rate()
        );
        peer_ratios("opensnoop", &snoop, &off, &limited);
        peer_ratios("auditd", &audit, &off, &limited);
        println!();
    }

    if want("connect") {
        // Every allowed TCP connect of a recorded session is an event (issue
        // 16: "connect storm with the default config").
        let args = ["connects", &workers.to_string()];
        let rounds = rounds();
        println!(
            "connect storm: TCP connects to a closed port on {CONNECT_ADDR} from {workers} threads for {SECONDS} s, {rounds} round(s)"
        );
        let (mut off, mut on, mut snoop, mut audit) = (None, None, None, None);
        for _ in 0..rounds {
            add(&mut off, Some(storm(dir.path(), "enabled: false", &args)));
            add(&mut on, Some(storm(dir.path(), "enabled: true", &args)));
            add(&mut snoop, peer("/usr/sbin/tcpconnect", dir.path(), &args));
            add(&mut audit, auditd_peer("-S connect", dir.path(), &args));
        }
        let (off, on) = (off.unwrap(), on.unwrap());
        header("connects");
        let needle = format!("\"dst_addr\":\"{CONNECT_ADDR}\"");
        let is_connect = |l: &str| l.contains("\"session.network\"") && l.contains(&needle);
        row(
            "on",
            &on,
            on.count(is_connect),
            on.dropped_network,
            on.lost_network,
        );
        if let Some(s) = &snoop {
            let addr = CONNECT_ADDR.to_string();
            row("tcpconnect", s, s.count(|l| l.contains(&addr)), 0, 0);
        }
        if let Some(a) = &audit {
            // One SOCKADDR record per connect: family AF_INET, port, then the
            // address, in hex.
            let addr = CONNECT_ADDR.octets().map(|o| format!("{o:02X}")).concat();
            let n = a.count(|l| {
                l.starts_with("type=SOCKADDR") && l.contains("saddr=0200") && l.contains(&addr)
            });
            row("auditd", a, n, 0, a.lost_command);
        }
        row("off", &off, 0, 0, 0);
        println!("throughput ratio on/off: {:.3}", on.rate() / off.rate());
        peer_ratios("tcpconnect", &snoop, &off, &on);
        peer_ratios("auditd", &audit, &off, &on);
    }
}

/// A sysctl set for the bench's run, its old value put back on drop.
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Sysctl {
        let old = std::fs::read_to_string(path).unwrap();
        std::fs::write(path, value).unwrap();
        Sysctl { path, old }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.path, self.old.trim());
    }
}

/// `-- journald`: events go to a private journald and are counted there.
fn journald() -> bool {
    std::env::args().any(|a| a == "journald")
}

/// Inside the session: runs `op` from `workers` threads for SECONDS and
/// prints how many times it completed.
fn storm_loop(workers: &str, op: impl Fn() + Sync) {
    let workers: usize = workers.parse().unwrap();
    let stop = Instant::now() + Duration::from_secs(SECONDS);
    let count = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                while Instant::now() < stop {
                    op();
                    count.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    println!("{}", count.load(Ordering::Relaxed));
}

/// A peer's throughput beside recording off, and restrictd's (`on`) beside it.
fn peer_ratios(name: &str, peer: &Option<Run>, off: &Run, on: &Run) {
    if let Some(p) = peer {
        println!(
            "{name}/off: {:.3}; restrictd on / {name}: {:.3}",
            p.rate() / off.rate(),
            on.rate() / p.rate()
        );
    }
}

/// The same storm with recording off, under auditd with one syscall rule
/// (`syscalls`, e.g. "-S execve") for every process, as an auditing host
/// would set it: auditd writes to a log file of its own (a private
/// configuration directory), with the kernel's backlog raised so that it
/// can keep up. Its CPU time is the writer CPU (the kernel's kauditd
/// thread, which formats the records, is not included); the kernel's count
/// of records it could not queue is "lost". None when auditd is not
/// installed (scripts/bench.sh installs it).
fn auditd_peer(syscalls: &str, dir: &std::path::Path, args: &[&str]) -> Option<Run> {
    if !std::path::Path::new("/usr/sbin/auditd").exists() {
        println!("(auditd not installed: scripts/bench.sh installs it)");
        return None;
    }
    let conf = dir.join("audit-conf");
    let log = dir.join("audit.log");
    let _ = std::fs::remove_file(&log);
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("auditd.conf"),
        format!(
            "log_file = {}\nlog_format = RAW\nflush = INCREMENTAL_ASYNC\nfreq = 1000\n\
             max_log_file = 4096\nmax_log_file_action = IGNORE\nspace_left = 2\n\
             space_left_action = IGNORE\nadmin_space_left = 1\nadmin_space_left_action = IGNORE\n\
             disk_full_action = IGNORE\ndisk_error_action = IGNORE\nwrite_logs = yes\n",
            log.display()
        ),
    )
    .unwrap();
    let ctl = |a: &str| {
        let ok = Command::new("auditctl")
            .args(a.split_whitespace())
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "auditctl {a}");
    };
    let lost = || -> u64 {
        let out = Command::new("auditctl").arg("-s").output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("lost "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    // Reaped with wait4 below, for its resource usage.
    #[allow(clippy::zombie_processes)]
    let child = Command::new("/usr/sbin/auditd")
        .args(["-n", "-c"])
        .arg(&conf)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    ctl("-D");
    ctl("-b 65536");
    ctl(&format!(
        "-a always,exit -F arch=b64 {syscalls} -F key=restrictd-bench"
    ));
    ctl("-e 1");
    let lost_before = lost();
    // The peer writes its own log: no journald under it.
    let mut run = storm_to(dir, "enabled: false", args, false);
    let lost_n = lost().saturating_sub(lost_before);
    ctl("-D");
    ctl("-e 0");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; status and usage are plain out-params.
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    run.events = std::fs::read_to_string(&log).unwrap_or_default();
    // Events, not records: each SYSCALL record starts one.
    let n = run.count(|l| l.starts_with("type=SYSCALL"));
    run.writer_cpu = Some((t(usage.ru_utime) + t(usage.ru_stime), n));
    run.lost_command = lost_n;
    run.lost_disk = lost_n;
    Some(run)
}

/// What a process outside every session pays while restrictd records:
/// syscall tracepoints put every system call of every process on the
/// kernel's slow path while they are attached, the open tracepoints run a
/// session lookup for every open on the host, and io_uring's submission
/// tracepoint runs `disk_uring` for every request submitted on the host.
fn outside_cost(dir: &std::path::Path) {
    let file = dir.join("outside-file");
    std::fs::write(&file, "x").unwrap();
    let cpath = std::ffi::CString::new(file.to_str().unwrap()).unwrap();
    let mut ring = io_uring::IoUring::new(8).unwrap();
    let measure = |ring: &mut io_uring::IoUring| {
        let mut zero = std::fs::File::open("/dev/zero").unwrap();
        let mut best = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
        for _ in 0..5 {
            let n = 200_000;
            let t = Instant::now();
            for _ in 0..n {
                let nop = io_uring::opcode::Nop::new().build();
                // SAFETY: a NOP refers to no memory.
                unsafe { ring.submission().push(&nop).unwrap() };
                ring.submit_and_wait(1).unwrap();
                ring.completion().next().unwrap();
            }
            best.2 = best.2.min(t.elapsed().as_nanos() as f64 / n as f64);
            let n = 1_000_000;
            let t = Instant::now();
            for _ in 0..n {
                // SAFETY: no arguments, no memory.
                unsafe { libc::syscall(libc::SYS_getppid) };
            }
            best.0 = best.0.min(t.elapsed().as_nanos() as f64 / n as f64);
            let n = 100_000;
            let t = Instant::now();
            for _ in 0..n {
                // SAFETY: a NUL-terminated path; the fd is closed at once.
                let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY) };
                unsafe { libc::close(fd) };
            }
            best.1 = best.1.min(t.elapsed().as_nanos() as f64 / n as f64);
            let n = 1_000_000;
            let mut byte = [0u8; 1];
            let t = Instant::now();
            for _ in 0..n {
                std::io::Read::read(&mut zero, &mut byte).unwrap();
            }
            best.3 = best.3.min(t.elapsed().as_nanos() as f64 / n as f64);
        }
        best
    };
    let without = measure(&mut ring);
    // A restrictd instance with recording on, its programs attached, while
    // this process (in no session) measures again.
    let config = dir.join("outside.yaml");
    let root = format!("restrictd-bench-{}", std::process::id());
    std::fs::write(&config, format!("root_path: /{root}\n")).unwrap();
    // Its session waits for `done`, so that it ends, and cleans up, by itself.
    let done = dir.join("outside-done");
    let wait = format!("while [ ! -e {} ]; do sleep 0.2; done", done.display());
    let mut daemon = Command::new(RESTRICTD)
        .args(["run", "--config"])
        .arg(&config)
        .args(["--", "/bin/sh", "-c", &wait])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let with = measure(&mut ring);
    std::fs::write(&done, "").unwrap();
    let _ = daemon.wait();
    let _ = std::fs::remove_dir(restrictd::cgroup::find_cgroup2_mount().unwrap().join(&root));
    println!("a process outside every session, best of 5 rounds, ns per call:");
    println!(
        "  getppid():     {:>7.0} without restrictd, {:>7.0} while it records ({:+.0})",
        without.0,
        with.0,
        with.0 - without.0
    );
    println!(
        "  open+close:    {:>7.0} without restrictd, {:>7.0} while it records ({:+.0})",
        without.1,
        with.1,
        with.1 - without.1
    );
    println!(
        "  io_uring NOP:  {:>7.0} without restrictd, {:>7.0} while it records ({:+.0})",
        without.2,
        with.2,
        with.2 - without.2
    );
    println!(
        "  1-byte read(): {:>7.0} without restrictd, {:>7.0} while it records ({:+.0})\n",
        without.3,
        with.3,
        with.3 - without.3
    );
}

/// The same storm with recording off, traced by `tool` (a libbpf-tools
/// program writing one line per event to a file); its CPU time is the
/// writer CPU. None when the tool is not installed.
fn peer(tool: &str, dir: &std::path::Path, args: &[&str]) -> Option<Run> {
    if !std::path::Path::new(tool).exists() {
        println!("({tool} not installed: scripts/bench.sh installs libbpf-tools)");
        return None;
    }
    let out_path = dir.join("peer.out");
    // Reaped with wait4 below, for its resource usage.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(tool)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Its programs load and attach in well under this.
    std::thread::sleep(Duration::from_secs(2));
    // The peer writes its own log: no journald under it.
    let mut run = storm_to(dir, "enabled: false", args, false);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // SIGINT: the tools flush their output and exit.
    nix::sys::signal::kill(pid, nix::sys::signal::SIGINT).unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; status and usage are plain out-params.
    unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let t = |tv: libc::timeval| Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    run.events = std::fs::read_to_string(&out_path).unwrap_or_default();
    let lines = run.events.lines().count() as u64;
    if lines == 0 {
        // tcpconnect needs kprobes or BPF trampolines, which some kernels lack.
        println!("({tool} traced nothing on this kernel: no row)");
        return None;
    }
    run.writer_cpu = Some((t(usage.ru_utime) + t(usage.ru_stime), lines));
    Some(run)
}

/// One storm's results.
struct Run {
    executed: u64,
    /// How long it stormed (rounds added up).
    seconds: u64,
    events: String,
    /// Lost because a ring buffer was full, as restrictd reported it.
    lost_command: u64,
    lost_disk: u64,
    lost_network: u64,
    /// Disk events kept out by the rate limit or the session's share of
    /// the ring (session.end's disk_events_dropped).
    dropped: u64,
    /// Network events kept out (session.end's network_events_dropped).
    dropped_network: u64,
    /// The event writer's CPU time and the events it wrote.
    writer_cpu: Option<(Duration, u64)>,
    /// `-- journald`: the private journald's CPU time.
    journald_cpu: Option<Duration>,
    /// Events the writer wrote (repeats folded into one count once).
    written: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.executed as f64 / self.seconds as f64
    }

    /// This run and `o` as one.
    fn merge(mut self, o: Run) -> Run {
        self.executed += o.executed;
        self.seconds += o.seconds;
        self.events.push_str(&o.events);
        self.lost_command += o.lost_command;
        self.lost_disk += o.lost_disk;
        self.lost_network += o.lost_network;
        self.dropped += o.dropped;
        self.dropped_network += o.dropped_network;
        self.writer_cpu = match (self.writer_cpu, o.writer_cpu) {
            (Some((a, n)), Some((b, m))) => Some((a + b, n + m)),
            (a, b) => a.or(b),
        };
        self.journald_cpu = match (self.journald_cpu, o.journald_cpu) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.written += o.written;
        self
    }

    /// Matching lines; an event that folds repeats in (`"repeats":N`,
    /// network events) counts for 1 + N.
    fn count(&self, f: impl Fn(&str) -> bool) -> u64 {
        self.events
            .lines()
            .filter(|l| f(l))
            .map(|l| {
                1 + l
                    .split("\"repeats\":")
                    .nth(1)
                    .and_then(|r| r.split([',', '}']).next()?.parse::<u64>().ok())
                    .unwrap_or(0)
            })
            .sum()
    }
}

/// Adds a round's run (None: the tool is not installed) to `acc`.
fn add(acc: &mut Option<Run>, r: Option<Run>) {
    if let Some(r) = r {
        *acc = Some(match acc.take() {
            Some(a) => a.merge(r),
            None => r,
        });
    }
}

/// `-- rounds N`: the exec or connect storm's configurations run N times, interleaved.
fn rounds() -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "rounds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(1)
}

fn header(what: &str) {
    print!(
        "{:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "recording",
        what,
        format!("{what}/s"),
        "recorded",
        "kept out",
        "lost",
        "writer µs/rec"
    );
    println!(
        "{}",
        if journald() {
            "  journald µs/entry"
        } else {
            ""
        }
    );
}

/// `recorded`, `dropped` and `lost` count the storm's own event type.
fn row(name: &str, r: &Run, recorded: u64, dropped: u64, lost: u64) {
    let recording = name != "off";
    let dash = |v: String| if recording { v } else { "-".into() };
    let cpu = match r.writer_cpu {
        Some((cpu, n)) if n > 0 && recording => {
            format!("{:.1}", cpu.as_secs_f64() * 1e6 / n as f64)
        }
        _ => "-".into(),
    };
    print!(
        "{:>10} {:>10} {:>10.0} {:>10} {:>10} {:>10} {:>14}",
        name,
        r.executed,
        r.rate(),
        dash(recorded.to_string()),
        dash(dropped.to_string()),
        dash(lost.to_string()),
        cpu,
    );
    let peer = name.ends_with("snoop") || name == "tcpconnect" || name == "auditd";
    // journald's CPU per event it stored: what the host pays beyond the writer.
    match r.journald_cpu {
        Some(j) if r.written > 0 && recording && !peer => {
            println!("{:>17.1}", j.as_secs_f64() * 1e6 / r.written as f64)
        }
        _ => println!(),
    }
    if recording && !peer && recorded + dropped + lost != r.executed {
        println!(
            "           (unaccounted: {} executed, {recorded} recorded + {dropped} dropped + {lost} lost)",
            r.executed
        );
    }
}

/// Runs this binary with `args` in a `restrictd run` session whose
/// enhanced_recording section is `recording`.
fn storm(dir: &std::path::Path, recording: &str, args: &[&str]) -> Run {
    storm_to(dir, recording, args, journald())
}

/// `storm`, its events written to journald (`journal`) or a file.
fn storm_to(dir: &std::path::Path, recording: &str, args: &[&str], journal: bool) -> Run {
    let config = dir.join("restrictd.yaml");
    let root = format!("restrictd-bench-{}", std::process::id());
    std::fs::write(
        &config,
        format!("root_path: /{root}\nenhanced_recording:\n  {recording}\n"),
    )
    .unwrap();
    let events = dir.join("events.jsonl");
    let _ = std::fs::remove_file(&events);
    let mut cmd = if journal {
        // journald's copy of every event, one JSON line each.
        let mut c = Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/with-journald.sh"
        ));
        c.env("WITH_JOURNALD_FIELD", "EVENT_JSON")
            .env("WITH_JOURNALD_CPU", "1")
            .arg(&events)
            .arg(RESTRICTD);
        c
    } else {
        Command::new(RESTRICTD)
    };
    cmd.args(["run", "--config"]).arg(&config);
    if !journal {
        cmd.arg("--events").arg(&events);
    }
    let out = cmd
        .env("RUST_LOG", "info")
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let executed: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let events = std::fs::read_to_string(&events).unwrap_or_default();
    // "... lost because a ring buffer was full: N network, N command, N disk"
    let lost = |kind: &str| -> u64 {
        stderr
            .split("was full: ")
            .nth(1)
            .and_then(|s| {
                s.split(", ").find_map(|part| {
                    let mut w = part.split_whitespace();
                    let n = w.next()?.parse().ok()?;
                    (w.next()? == kind).then_some(n)
                })
            })
            .unwrap_or(0)
    };
    let end = events
        .lines()
        .find(|l| l.contains("\"session.end\""))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .unwrap_or_default();
    let dropped = end["disk_events_dropped"].as_u64().unwrap_or(0);
    let dropped_network = end["network_events_dropped"].as_u64().unwrap_or(0);
    let _ = std::fs::remove_dir(restrictd::cgroup::find_cgroup2_mount().unwrap().join(&root));
    // "event writer: N records, M events, 1.2s CPU (x µs per record)"
    let written: u64 = stderr
        .lines()
        .find_map(|l| {
            let rest = l.split("event writer: ").nth(1)?;
            rest.split(", ")
                .nth(1)?
                .strip_suffix(" events")?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let writer_cpu = stderr.lines().find_map(|l| {
        let rest = l.split("event writer: ").nth(1)?;
        let n: u64 = rest.split_whitespace().next()?.parse().ok()?;
        let us: f64 = rest
            .split('(')
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some((Duration::from_secs_f64(us * n as f64 / 1e6), n))
    });
    // "with-journald: journald CPU N ticks of 1/HZ s"
    let journald_cpu = stderr.lines().find_map(|l| {
        let rest = l.strip_prefix("with-journald: journald CPU ")?;
        let mut w = rest.split_whitespace();
        let ticks: f64 = w.next()?.parse().ok()?;
        let hz: f64 = w.nth(2)?.strip_prefix("1/")?.parse().ok()?;
        Some(Duration::from_secs_f64(ticks / hz))
    });
    Run {
        executed,
        seconds: SECONDS,
        events,
        lost_command: lost("command"),
        lost_disk: lost("disk"),
        lost_network: lost("network"),
        dropped,
        dropped_network,
        writer_cpu,
        journald_cpu,
        written,
    }
}
