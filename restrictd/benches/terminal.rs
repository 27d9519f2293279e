//! Terminal recording's cost, through real sshd with a pty (`ssh -tt`), as
//! in the tests: printing 100 MB inside a session with `terminal_recording`
//! off, `output` at the default rate limit, and `output` with no limit
//! (every byte recorded), interleaved rounds, median wall time and the
//! ratio to off, with the daemon's CPU time; keystroke echo round trips
//! through sshd (p50/p99); and what a read() costs a process outside every
//! session while the read tracepoints are attached.
//! Run as root: `cargo bench -p restrictd --bench terminal` (or
//! scripts/bench.sh).

#[path = "../tests/common/mod.rs"]
mod common;

use std::{
    io::{Read, Write},
    process::Stdio,
    time::{Duration, Instant},
};

use common::sshd::{Bus, Daemon, Sshd, User};

const BYTES: u64 = 100_000_000;
const ROUNDS: usize = 7;
const KEYS: usize = 200;

const MODES: [(&str, &str); 3] = [
    ("off", "terminal_recording: off\n"),
    ("output", "terminal_recording: output\n"),
    (
        "output, no limit",
        "terminal_recording: output\nterminal:\n  dir: @TERMINAL_DIR@\n  rate_limit: 0\n  max_session_size: 2000000000\n  max_total_size: 4000000000\n",
    ),
];

/// The daemon's user + system CPU time.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 1000 / 100)
}

/// Seconds to print BYTES through the session's terminal to the client.
fn print_run(sshd: &Sshd, user: &User) -> f64 {
    let remote = format!("head -c {BYTES} /dev/zero | tr '\\0' x");
    let start = Instant::now();
    let mut child = sshd
        .ssh_cmd_with(user, &["-tt"], &remote)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    assert!(child.wait().unwrap().success());
    assert!(got >= BYTES, "the client got {got} bytes");
    start.elapsed().as_secs_f64()
}

/// Keystroke round trips: one byte typed into `cat` in a pty comes back
/// (the terminal's echo); microseconds, sorted.
fn echo_run(sshd: &Sshd, user: &User) -> Vec<f64> {
    let mut child = sshd
        .ssh_cmd_with(user, &["-tt"], "stty raw -echo; echo ready; exec cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut input = child.stdin.take().unwrap();
    common::read_until(&mut out, "ready");
    let mut times = Vec::with_capacity(KEYS);
    let mut b = [0u8; 64];
    for i in 0..KEYS {
        let key = b'a' + (i % 26) as u8;
        let t = Instant::now();
        input.write_all(&[key]).unwrap();
        input.flush().unwrap();
        loop {
            let n = out.read(&mut b).unwrap();
            assert!(n > 0);
            if b[..n].contains(&key) {
                break;
            }
        }
        times.push(t.elapsed().as_secs_f64() * 1e6);
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(input);
    let _ = child.kill();
    let _ = child.wait();
    times.sort_by(f64::total_cmp);
    times
}

/// ns per 1-byte read() of /dev/zero by this process (outside sessions).
fn read_cost() -> f64 {
    let mut f = std::fs::File::open("/dev/zero").unwrap();
    let mut b = [0u8; 1];
    let n = 2_000_000;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n {
            f.read_exact(&mut b).unwrap();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    assert!(nix::unistd::geteuid().is_root(), "the benchmark needs root");
    let bus = Bus::new(true);
    let user = User::new();
    let pam = format!(
        "session required {} fail=closed",
        common::sshd::pam_module().display()
    );
    let sshd = Sshd::configured(&bus, &[&user], &pam, "");

    let no_daemon = read_cost();
    println!(
        "printing {} MB to the terminal of an SSH session (ssh -tt), {ROUNDS} interleaved rounds, median:",
        BYTES / 1_000_000
    );
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut echo: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut reads = vec![0.0; MODES.len()];
    for round in 0..ROUNDS {
        for (i, (_, config)) in MODES.iter().enumerate() {
            let d = Daemon::with_config(&bus, None, config);
            let before = cpu_of(d.pid());
            secs[i].push(print_run(&sshd, &user));
            cpu[i].push((cpu_of(d.pid()) - before).as_secs_f64());
            echo[i].extend(echo_run(&sshd, &user));
            if round == 0 {
                reads[i] = read_cost();
            }
            drop(d);
        }
    }
    let base = median(&mut secs[0].clone());
    println!(
        "{:<18} {:>9} {:>9} {:>8} {:>14}",
        "terminal", "seconds", "MB/s", "ratio", "daemon CPU s"
    );
    for (i, (name, _)) in MODES.iter().enumerate() {
        let s = median(&mut secs[i]);
        println!(
            "{:<18} {:>9.2} {:>9.1} {:>8.3} {:>14.2}",
            name,
            s,
            BYTES as f64 / 1e6 / s,
            base / s,
            median(&mut cpu[i])
        );
    }
    println!("\nkeystroke echo through sshd (one byte into `cat` in a raw pty and back), {KEYS} keys per round, µs:");
    for (i, (name, _)) in MODES.iter().enumerate() {
        let t = &mut echo[i];
        t.sort_by(f64::total_cmp);
        println!(
            "{:<18} p50 {:>7.1}   p99 {:>7.1}",
            name,
            t[t.len() / 2],
            t[t.len() * 99 / 100]
        );
    }
    println!(
        "\n1-byte read() of /dev/zero by a process outside every session, ns (best of 5 x 2M):"
    );
    println!("{:<18} {:>7.1}", "no daemon", no_daemon);
    for (i, (name, _)) in MODES.iter().enumerate() {
        println!(
            "{:<18} {:>7.1}   (+{:.1})",
            name,
            reads[i],
            reads[i] - no_daemon
        );
    }
}
