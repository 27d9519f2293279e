//! Exec storm inside one `restrictd run` session with the default ring
//! buffers: execs per second with recording on and off, and whether every
//! executed command was recorded (target: 0 lost, ratio ≥ 0.9).
//! Run as root: `cargo bench -p restrictd --bench recording` (or scripts/bench.sh).

use std::{
    process::Command,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

const SECONDS: u64 = 10;
const RESTRICTD: &str = env!("CARGO_BIN_EXE_restrictd");

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Inside the session: run /bin/true from `workers` threads for SECONDS;
    // print how many execs completed.
    if args.get(1).map(String::as_str) == Some("storm") {
        let workers: usize = args[2].parse().unwrap();
        let stop = Instant::now() + Duration::from_secs(SECONDS);
        let count = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    while Instant::now() < stop {
                        let st = Command::new("/bin/true")
                            .arg("storm-marker")
                            .status()
                            .unwrap();
                        assert!(st.success());
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
        println!("{}", count.load(Ordering::Relaxed));
        return;
    }
    assert!(nix::unistd::geteuid().is_root(), "the benchmark needs root");
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        * 2;
    println!("exec storm: /bin/true from {workers} threads for {SECONDS} s in one session");
    println!(
        "{:>10} {:>10} {:>10} {:>10} {:>6}",
        "recording", "execs", "execs/s", "recorded", "lost"
    );
    let mut rates = Vec::new();
    for recording in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("restrictd.yaml");
        std::fs::write(
            &config,
            format!(
                "root_path: /restrictd-bench-{}\nenhanced_recording:\n  enabled: {recording}\n",
                std::process::id()
            ),
        )
        .unwrap();
        let events = dir.path().join("events.jsonl");
        let out = Command::new(RESTRICTD)
            .args(["run", "--config"])
            .arg(&config)
            .arg("--events")
            .arg(&events)
            .arg("--")
            .arg(std::env::current_exe().unwrap())
            .args(["storm", &workers.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let executed: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        let recorded = text
            .lines()
            .filter(|l| {
                l.contains("\"session.command\"")
                    && l.contains("storm-marker")
                    && l.contains("\"/bin/true\"")
            })
            .count() as u64;
        let rate = executed as f64 / SECONDS as f64;
        rates.push(rate);
        let lost = String::from_utf8_lossy(&out.stderr).contains("lost");
        println!(
            "{:>10} {:>10} {:>10.0} {:>10} {:>6}",
            if recording { "on" } else { "off" },
            executed,
            rate,
            if recording {
                recorded.to_string()
            } else {
                "-".into()
            },
            if recording {
                (executed - recorded.min(executed)).to_string()
            } else {
                "-".into()
            },
        );
        if recording && lost {
            println!(
                "           (restrictd reported lost events: {})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let _ = std::fs::remove_dir(format!(
            "{}/restrictd-bench-{}",
            restrictd::cgroup::find_cgroup2_mount().unwrap().display(),
            std::process::id()
        ));
    }
    println!("throughput ratio on/off: {:.3}", rates[0] / rates[1]);
}
