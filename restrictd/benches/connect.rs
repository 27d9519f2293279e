//! What restriction costs per connect(), and what loading a policy costs.
//! Run as root: `cargo bench -p restrictd --bench connect` (see BENCHMARKS.md).
//!
//! For each policy size N (N allow + N deny CIDRs, half IPv4, half IPv6) it
//! times single connect() calls to a closed loopback port (ECONNREFUSED: the
//! kernel's full connect path with no peer work) from this process while it is
//! outside any session and while it is inside a restricted session, in
//! alternating rounds, and prints the medians and their difference.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::fd::AsRawFd,
    path::PathBuf,
    time::Instant,
};

use restrictd::{
    bpf::Kernel,
    cgroup::{find_cgroup2_mount, Cgroup},
    policy::{synthetic_policies_yaml, synthetic_yaml, Policy, PolicySet},
};
use restrictd_common::{SessionEntry, POLICY_FOLLOW_ACTIVE, SESSION_RESTRICT};

const ROUNDS: usize = 50;
const PER_ROUND: usize = 2_000;
/// Rounds with the kernel's run-time statistics on, after the timed ones.
const STAT_ROUNDS: usize = 10;

fn main() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "the benchmark needs root (it loads BPF programs and moves itself between cgroups)"
        );
    }
    // `cargo bench` passes --bench; `-- connect`, `-- throughput`, `-- nft` and `-- load`
    // run only that part.
    let only_throughput = std::env::args().any(|a| a == "throughput");
    // `-- load`: only the policy load times.
    if std::env::args().any(|a| a == "load") {
        return load_times();
    }
    let mount = find_cgroup2_mount()?;
    let home = own_cgroup(&mount)?;
    let root = Cgroup::create_all(&mount.join(format!("restrictd-bench-{}", std::process::id())))?;
    let session = root.create_child("session")?;
    let result = if std::env::args().any(|a| a == "nft") {
        // `-- nft`: only the comparison with nftables.
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, closed_port()));
        beside_nftables(target, &root, &session, &home)
    } else if only_throughput {
        throughput(&root, &session, &home)
    } else if std::env::args().any(|a| a == "connect") {
        // `-- connect`: only the connect() tables (nftables beside them).
        connect_tables(&root, &session, &home)
    } else {
        bench(&root, &session, &home)
    };
    // Always return home and clean up, also after a failure.
    let cleanup = home
        .add_process(std::process::id())
        .and_then(|_| session.remove())
        .and_then(|_| root.remove());
    if let Err(e) = cleanup {
        eprintln!("cleanup: {e:#}");
    }
    result
}

fn bench(root: &Cgroup, session: &Cgroup, home: &Cgroup) -> anyhow::Result<()> {
    connect_tables(root, session, home)?;
    throughput(root, session, home)?;
    load_times()
}

fn connect_tables(root: &Cgroup, session: &Cgroup, home: &Cgroup) -> anyhow::Result<()> {
    let port = closed_port();
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    println!("connect() to closed port 127.0.0.1:{port}, {ROUNDS}x{PER_ROUND} samples per side");
    // The statistics' floor, measured beside our programs in the same rounds.
    let floor = EmptyConnect4::attach(&root.path.with_extension("floor"), home)?;
    println!("median ns per connect() (BPF statistics off, as in production); prog =");
    println!("kernel-measured ns per connect4 run (statistics on, in {STAT_ROUNDS} rounds of their own);");
    println!("empty = the same for a connect4 program that only returns 1 (the floor: the");
    println!("statistics' clock reads and the call); own = prog hit - empty; pkt miss = the");
    println!("same per packet_out/packet_in run in no session (a connect runs each once)");
    let header = |first: &str| {
        println!(
            "{:>16} {:>9} {:>11} {:>9} {:>9} {:>10} {:>10} {:>7} {:>7} {:>9}",
            first,
            "outside",
            "no-session",
            "session",
            "added",
            "prog miss",
            "prog hit",
            "empty",
            "own",
            "pkt miss"
        )
    };
    header("CIDRs allow+deny");
    for n in [10usize, 1_000, 100_000] {
        let policy = Policy::parse(&synthetic_yaml(n, n), "synthetic")?;
        let enforcer = enforcer(&[&policy], root, session)?;
        // outside: no program runs. no-session: below the attach point but in
        // no session (the program runs and misses the session hash). session:
        // the full check (session slot, policy id, one LPM lookup).
        row(
            &format!("{n}+{n}"),
            &enforcer,
            target,
            root,
            session,
            home,
            &floor,
        )?;
    }
    beside_nftables(target, root, session, home)?;

    // Rules with ports: a per-login policy whose every rule has TCP 443 and
    // 8000-8080 (the session's own policy id; each trie entry's port
    // ranges are checked after the lookup).
    println!();
    println!("with ports: one restrictd_policy of N rules, each TCP 443 + 8000-8080");
    header("rules");
    for n in [10usize, 1_000, 100_000] {
        let set = PolicySet::parse_with(
            &synthetic_policies_yaml(1, n),
            "synthetic",
            Default::default(),
        )?;
        let mut e = Kernel::load(restrictd::config::Config::default().load_options(None)?)?;
        let ids = e.policy.set_all(&set, |_| Ok(()))?;
        e.programs.attach(&root.path)?;
        e.sessions.add(
            session.id,
            SessionEntry {
                policy_id: ids.by_name["p0"],
                flags: SESSION_RESTRICT,
                disk_filter: 0,
            },
        )?;
        row(&n.to_string(), &e, target, root, session, home, &floor)?;
    }
    Ok(())
}

/// Policy load and live-replacement times.
fn load_times() -> anyhow::Result<()> {
    // Many per-login policies: 1,000 policies of 100 rules with ports.
    {
        println!();
        println!("loading 1,000 per-login policies of 100 rules (TCP 443 + 8000-8080) each:");
        let yaml = synthetic_policies_yaml(1_000, 100);
        // The same policies as a policy directory of one file each.
        let dir = tempfile::tempdir()?;
        for (i, doc) in yaml.split("---\n").skip(1).enumerate() {
            fs::write(dir.path().join(format!("{i:04}.yaml")), doc)?;
        }
        for (what, from_dir) in [
            ("one file", false),
            ("1,000 files in a policy directory", true),
        ] {
            println!("  from {what}:");
            let t = Instant::now();
            let set = if from_dir {
                PolicySet::load_dir(dir.path(), Default::default())?
            } else {
                PolicySet::parse_with(&yaml, "synthetic", Default::default())?
            };
            let parse = t.elapsed();
            anyhow::ensure!(
                set.policies.len() == 1_000,
                "{} policies",
                set.policies.len()
            );
            let mut e = Kernel::load(restrictd::config::Config::default().load_options(None)?)?;
            let t = Instant::now();
            e.policy.set_all(&set, |_| Ok(()))?;
            let apply = t.elapsed();
            let t = Instant::now();
            e.policy.set_all(&set, |_| Ok(()))?;
            let swap = t.elapsed();
            print_load("    ", parse, apply, swap);
        }
    }

    for (n_allow, n_deny) in [(50_000, 50_000), (100_000, 100_000)] {
        println!();
        println!("loading a policy of {n_allow} allow + {n_deny} deny CIDRs:");
        let yaml = synthetic_yaml(n_allow, n_deny);
        let t = Instant::now();
        let policy = Policy::parse(&yaml, "synthetic")?;
        let parse = t.elapsed();
        let mut enforcer = Kernel::load(restrictd::config::Config::default().load_options(None)?)?;
        let t = Instant::now();
        enforcer.policy.set(Some(&policy))?;
        let apply = t.elapsed();
        let other = Policy::parse(&synthetic_yaml(n_allow, n_deny - 1), "synthetic")?;
        let t = Instant::now();
        enforcer.policy.set(Some(&other))?;
        let swap = t.elapsed();
        print_load("  ", parse, apply, swap);
    }
    Ok(())
}

fn print_load(
    indent: &str,
    parse: std::time::Duration,
    apply: std::time::Duration,
    swap: std::time::Duration,
) {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!("{indent}parse + validate YAML:  {:>8.1} ms", ms(parse));
    println!("{indent}write into BPF maps:    {:>8.1} ms", ms(apply));
    println!(
        "{indent}load + apply total:     {:>8.1} ms",
        ms(parse + apply)
    );
    println!(
        "{indent}replace it live (write new, switch, delete old): {:.1} ms",
        ms(swap)
    );
}

/// Loopback TCP throughput with the packet-level check on every segment
/// (both sockets in a restricted session, the peer allowed) against the
/// same transfer outside restrictd's cgroups, in alternating rounds.
fn throughput(root: &Cgroup, session: &Cgroup, home: &Cgroup) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    const BYTES: usize = 256 << 20;
    // Many short rounds: this machine's throughput drifts by 10 % and more
    // between seconds, and alternating sides cancels the drift out.
    const ROUNDS: usize = 24;
    let policy = Policy::parse(&synthetic_yaml(100_000, 100_000), "synthetic")?;
    let allow_loopback = Policy::parse(
        "kind: network_restrictions\nversion: v4\nmetadata:\n  name: lo\nspec:\n  allow:\n    - cidr: 127.0.0.0/8\n",
        "loopback",
    )?;
    // The big policy loaded (LPM depth as at 100,000 CIDRs), loopback allowed.
    let enforcer = enforcer(&[&policy, &allow_loopback], root, session)?;
    let run = || -> anyhow::Result<f64> {
        // Sockets are judged by the cgroup they are created in: make both here.
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let mut tx = std::net::TcpStream::connect(addr)?;
        let (mut rx, _) = listener.accept()?;
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0;
            while n < BYTES {
                match rx.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
        });
        let chunk = vec![7u8; 1 << 16];
        let t = Instant::now();
        for _ in 0..BYTES / chunk.len() {
            tx.write_all(&chunk)?;
        }
        drop(tx);
        reader.join().expect("reader");
        Ok(BYTES as f64 / t.elapsed().as_secs_f64() / 1e6)
    };
    // outside: no program runs; no-session: the programs run and find no
    // session (what every process on a host running `serve` pays, since the
    // programs are attached at the cgroup2 root); session: the full check.
    // Rounds with the kernel's run-time statistics off, as in production
    // (they add two clock reads to every program run).
    let (mut outside, mut miss, mut inside) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        home.add_process(std::process::id())?;
        outside.push(run()?);
        root.add_process(std::process::id())?;
        miss.push(run()?);
        session.add_process(std::process::id())?;
        inside.push(run()?);
    }
    // Then one round per side with them on, for the time per program run.
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    root.add_process(std::process::id())?;
    let s0 = packet_stats(&enforcer)?;
    run()?;
    let s1 = packet_stats(&enforcer)?;
    session.add_process(std::process::id())?;
    run()?;
    let s2 = packet_stats(&enforcer)?;
    drop(stats);
    let (miss_prog, hit_prog) = ((s1.0 - s0.0, s1.1 - s0.1), (s2.0 - s1.0, s2.1 - s1.1));
    home.add_process(std::process::id())?;
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (o, m, i) = (med(&mut outside), med(&mut miss), med(&mut inside));
    println!();
    println!(
        "loopback TCP, {} MB x {ROUNDS} rounds per side, median MB/s:",
        BYTES >> 20
    );
    println!(
        "  outside {o:>7.0}   no-session {m:>7.0} (ratio {:.3})   session {i:>7.0} (ratio {:.3})",
        m / o,
        i / o
    );
    let per = |(runs, ns): (u64, u128)| ns as f64 / runs.max(1) as f64;
    println!(
        "  packet check, kernel-measured ns per run: no-session {:.1} ({} runs), session {:.1} ({} runs)",
        per(miss_prog),
        miss_prog.0,
        per(hit_prog),
        hit_prog.0
    );
    Ok(())
}

/// One table row: connect() medians outside restrictd's cgroups, in no
/// session and in `session`, in alternating rounds, and the kernel-measured
/// program time per run for the miss and the hit.
fn row(
    label: &str,
    e: &Kernel,
    target: SocketAddr,
    root: &Cgroup,
    session: &Cgroup,
    home: &Cgroup,
    floor: &EmptyConnect4,
) -> anyhow::Result<()> {
    // Wall clock with the statistics off: they add two clock reads to
    // every run of every program.
    let (mut outside, mut miss, mut inside) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        home.add_process(std::process::id())?;
        sample(target, &mut outside);
        root.add_process(std::process::id())?;
        sample(target, &mut miss);
        session.add_process(std::process::id())?;
        sample(target, &mut inside);
    }
    // The kernel's own count of time spent in the programs, in rounds of
    // their own: the precise cost, free of the syscall's run-to-run noise.
    // Disabled when the fd drops.
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)?;
    let (mut miss_runs, mut miss_ns, mut hit_runs, mut hit_ns) = (0u64, 0u128, 0u64, 0u128);
    let (mut packet_runs, mut packet_ns) = (0u64, 0u128);
    let floor0 = floor.stats()?;
    for _ in 0..STAT_ROUNDS {
        floor.cgroup.add_process(std::process::id())?;
        sample(target, &mut Vec::new());
        root.add_process(std::process::id())?;
        let ((r0, t0), p0) = (connect4_stats(e)?, packet_stats(e)?);
        sample(target, &mut Vec::new());
        let ((r1, t1), p1) = (connect4_stats(e)?, packet_stats(e)?);
        session.add_process(std::process::id())?;
        sample(target, &mut Vec::new());
        let (r2, t2) = connect4_stats(e)?;
        (miss_runs, miss_ns) = (miss_runs + r1 - r0, miss_ns + t1 - t0);
        (hit_runs, hit_ns) = (hit_runs + r2 - r1, hit_ns + t2 - t1);
        (packet_runs, packet_ns) = (packet_runs + p1.0 - p0.0, packet_ns + p1.1 - p0.1);
    }
    home.add_process(std::process::id())?;
    let floor1 = floor.stats()?;
    drop(stats);
    let empty = (floor1.1 - floor0.1) as f64 / (floor1.0 - floor0.0).max(1) as f64;
    let (o, m, i) = (median(&mut outside), median(&mut miss), median(&mut inside));
    let hit = hit_ns as f64 / hit_runs.max(1) as f64;
    println!(
        "{:>16} {:>9} {:>11} {:>9} {:>9} {:>10.1} {:>10.1} {:>7.1} {:>7.1} {:>9.1}",
        label,
        o,
        m,
        i,
        i as i64 - o as i64,
        miss_ns as f64 / miss_runs.max(1) as f64,
        hit,
        empty,
        hit - empty,
        packet_ns as f64 / packet_runs.max(1) as f64,
    );
    Ok(())
}

/// A cgroup/connect4 program that only allows (`r0 = 1; exit`), attached
/// to its own cgroup outside the bench's root: what the kernel's run-time
/// statistics report for a program that does nothing. Loaded with the
/// bpf(2) syscall directly, as it has no object file.
struct EmptyConnect4 {
    cgroup: Cgroup,
    home: Cgroup,
    name: &'static str,
    _prog: std::os::fd::OwnedFd,
}

impl EmptyConnect4 {
    fn attach(path: &std::path::Path, home: &Cgroup) -> anyhow::Result<Self> {
        use std::os::fd::FromRawFd;
        // uapi/linux/bpf.h
        const BPF_PROG_LOAD: libc::c_long = 5;
        const BPF_PROG_ATTACH: libc::c_long = 8;
        const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
        const BPF_CGROUP_INET4_CONNECT: u32 = 10;
        const BPF_F_ALLOW_MULTI: u32 = 2;
        let name = "rd_bench_empty";
        // mov64 r0, 1; exit
        let insns: [u64; 2] = [0x0000_0001_0000_00b7, 0x0000_0000_0000_0095];
        let license = c"GPL";
        // union bpf_attr for BPF_PROG_LOAD, the fields up to
        // expected_attach_type; the rest must be zero.
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_SOCK_ADDR.to_ne_bytes());
        attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
        attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
        attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
        attr[48..48 + name.len()].copy_from_slice(name.as_bytes());
        attr[68..72].copy_from_slice(&BPF_CGROUP_INET4_CONNECT.to_ne_bytes());
        let sys = |cmd: libc::c_long, attr: &[u8; 128]| unsafe {
            libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), attr.len() as u32)
        };
        let fd = sys(BPF_PROG_LOAD, &attr);
        if fd < 0 {
            anyhow::bail!(
                "loading the empty connect4 program: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: a new fd that nothing else owns.
        let prog = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
        let cgroup = Cgroup::create_all(path)?;
        let dir = fs::File::open(path)?;
        let mut attr = [0u8; 128];
        attr[0..4].copy_from_slice(&(dir.as_raw_fd() as u32).to_ne_bytes());
        attr[4..8].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
        attr[8..12].copy_from_slice(&BPF_CGROUP_INET4_CONNECT.to_ne_bytes());
        attr[12..16].copy_from_slice(&BPF_F_ALLOW_MULTI.to_ne_bytes());
        if sys(BPF_PROG_ATTACH, &attr) < 0 {
            let e = std::io::Error::last_os_error();
            let _ = cgroup.remove();
            anyhow::bail!("attaching the empty connect4 program: {e}");
        }
        Ok(EmptyConnect4 {
            cgroup,
            home: home.clone(),
            name,
            _prog: prog,
        })
    }

    /// (runs, ns) so far.
    fn stats(&self) -> anyhow::Result<(u64, u128)> {
        for info in aya::programs::loaded_programs() {
            let info = info?;
            if info.name_as_str() == Some(self.name) {
                return Ok((info.run_count(), info.run_time().as_nanos()));
            }
        }
        anyhow::bail!("the empty connect4 program is not loaded")
    }
}

impl Drop for EmptyConnect4 {
    fn drop(&mut self) {
        // Removing the cgroup detaches the program; the fd closes after.
        if let Err(e) = self
            .home
            .add_process(std::process::id())
            .and_then(|_| self.cgroup.remove())
        {
            eprintln!("cleanup: {e:#}");
        }
    }
}

/// The programs attached at `root` with `policies` applied in turn (the
/// last one active) and `session` registered as a restricted session.
fn enforcer(policies: &[&Policy], root: &Cgroup, session: &Cgroup) -> anyhow::Result<Kernel> {
    let mut e = Kernel::load(restrictd::config::Config::default().load_options(None)?)?;
    for p in policies {
        e.policy.set(Some(p))?;
    }
    e.programs.attach(&root.path)?;
    e.sessions.add(
        session.id,
        SessionEntry {
            policy_id: POLICY_FOLLOW_ACTIVE,
            flags: SESSION_RESTRICT,
            disk_filter: 0,
        },
    )?;
    Ok(e)
}

fn sample(target: SocketAddr, out: &mut Vec<u64>) {
    let sa = nix::sys::socket::SockaddrIn::from(match target {
        SocketAddr::V4(a) => a,
        _ => unreachable!(),
    });
    for _ in 0..PER_ROUND {
        let fd = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::empty(),
            None,
        )
        .expect("socket");
        let t = Instant::now();
        let r = nix::sys::socket::connect(fd.as_raw_fd(), &sa);
        let ns = t.elapsed().as_nanos() as u64;
        assert_eq!(
            r,
            Err(nix::errno::Errno::ECONNREFUSED),
            "the target port must be closed and allowed"
        );
        out.push(ns);
    }
}

fn connect4_stats(e: &Kernel) -> anyhow::Result<(u64, u128)> {
    prog_stats(e, &["connect4"])
}

/// Runs and run time of both packet-level programs together.
fn packet_stats(e: &Kernel) -> anyhow::Result<(u64, u128)> {
    prog_stats(e, &["packet_out", "packet_in"])
}

fn prog_stats(e: &Kernel, names: &[&str]) -> anyhow::Result<(u64, u128)> {
    let stats = e.programs.stats()?;
    let mut total = (0u64, 0u128);
    for want in names {
        let (_, runs, time) = stats
            .iter()
            .find(|(name, ..)| name == want)
            .ok_or_else(|| anyhow::anyhow!("no {want} program"))?;
        total.0 += runs;
        total.1 += time.as_nanos();
    }
    Ok(total)
}

/// The same job done by nftables, in the same rounds: the policy's CIDRs as
/// interval sets, judged for the sockets of one cgroup (`socket cgroupv2`)
/// in the output hook (by destination) and the input hook (by source), as
/// restrictd judges a session's calls and both directions of its packets.
/// A drop in the output hook fails connect() with EPERM, as restrictd's
/// programs do. Skipped, saying so, without `nft`.
fn beside_nftables(
    target: SocketAddr,
    root: &Cgroup,
    session: &Cgroup,
    home: &Cgroup,
) -> anyhow::Result<()> {
    println!();
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("beside nftables: skipped, no nft (scripts/bench.sh installs it)");
        return Ok(());
    }
    let mount = find_cgroup2_mount()?;
    // nft names a cgroup by its path below /sys/fs/cgroup.
    let Ok(under) = mount.strip_prefix("/sys/fs/cgroup") else {
        println!(
            "beside nftables: skipped, cgroup2 is at {} (nft looks below /sys/fs/cgroup)",
            mount.display()
        );
        return Ok(());
    };
    let name = format!("restrictd-bench-{}-nft", std::process::id());
    let nft_cgroup = Cgroup::create_all(&mount.join(&name))?;
    let rel = under.join(&name);
    let result = (|| -> anyhow::Result<()> {
        println!(
            "beside nftables (the same CIDRs as interval sets, judged in the output and input hooks"
        );
        println!("for one cgroup's sockets): median ns per connect(), added = side - outside");
        println!(
            "{:>16} {:>9} {:>10} {:>9} {:>9} {:>9} {:>15}",
            "CIDRs allow+deny",
            "outside",
            "restrictd",
            "added",
            "nftables",
            "added",
            "ratio rd/nft"
        );
        for n in [10usize, 1_000, 100_000] {
            let policy = Policy::parse(&synthetic_yaml(n, n), "synthetic")?;
            let _enforcer = enforcer(&[&policy], root, session)?;
            // Level 1: the cgroup is right below the cgroup2 root.
            let table = Nft::load(&policy, &rel.display().to_string(), 1)?;
            let (mut outside, mut rd, mut nft) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                home.add_process(std::process::id())?;
                sample(target, &mut outside);
                session.add_process(std::process::id())?;
                sample(target, &mut rd);
                nft_cgroup.add_process(std::process::id())?;
                sample(target, &mut nft);
            }
            home.add_process(std::process::id())?;
            // Proof that nft judged the connects: its jump rule counted them.
            let matched = table.matched()?;
            anyhow::ensure!(
                matched >= (ROUNDS * PER_ROUND) as u64,
                "nft's cgroup rule matched {matched} packets, expected every connect's SYN"
            );
            let (o, r, f) = (median(&mut outside), median(&mut rd), median(&mut nft));
            let (ra, fa) = (r as i64 - o as i64, f as i64 - o as i64);
            println!(
                "{:>16} {:>9} {:>10} {:>9} {:>9} {:>9} {:>15.2}",
                format!("{n}+{n}"),
                o,
                r,
                ra,
                f,
                fa,
                ra as f64 / fa.max(1) as f64
            );
        }
        Ok(())
    })();
    home.add_process(std::process::id())?;
    nft_cgroup.remove()?;
    result
}

/// An nftables table made for the benchmark, deleted when dropped.
struct Nft {
    table: String,
}

impl Nft {
    /// `policy`'s CIDRs for the sockets of the cgroup at `cgroup` (a path
    /// below /sys/fs/cgroup), `level` deep in the cgroup2 hierarchy.
    fn load(policy: &Policy, cgroup: &str, level: usize) -> anyhow::Result<Nft> {
        use std::fmt::Write;
        let table = format!("restrictd_bench_{}", std::process::id());
        let mut text = format!("table inet {table} {{\n");
        for (name, ty, rules, v4) in [
            ("allow4", "ipv4_addr", &policy.allow, true),
            ("deny4", "ipv4_addr", &policy.deny, true),
            ("allow6", "ipv6_addr", &policy.allow, false),
            ("deny6", "ipv6_addr", &policy.deny, false),
        ] {
            let nets: Vec<String> = rules
                .iter()
                .filter(|r| matches!(r.net, ipnet::IpNet::V4(_)) == v4)
                .map(|r| r.net.to_string())
                .collect();
            // nft refuses an empty element list.
            let elements = if nets.is_empty() {
                String::new()
            } else {
                format!(" elements = {{ {} }};", nets.join(", "))
            };
            let _ = writeln!(
                text,
                "  set {name} {{ type {ty}; flags interval;{elements} }}"
            );
        }
        let _ = write!(
            text,
            "  chain out {{\n    type filter hook output priority 0; policy accept;\n    socket cgroupv2 level {level} \"{cgroup}\" counter jump judge_out\n  }}\n\
             \x20 chain judge_out {{\n    ip daddr @deny4 drop\n    ip daddr != @allow4 drop\n    ip6 daddr @deny6 drop\n    ip6 daddr != @allow6 drop\n  }}\n\
             \x20 chain in {{\n    type filter hook input priority 0; policy accept;\n    socket cgroupv2 level {level} \"{cgroup}\" jump judge_in\n  }}\n\
             \x20 chain judge_in {{\n    ip saddr @deny4 drop\n    ip saddr != @allow4 drop\n    ip6 saddr @deny6 drop\n    ip6 saddr != @allow6 drop\n  }}\n}}\n"
        );
        let file = std::env::temp_dir().join(format!("{table}.nft"));
        fs::write(&file, text)?;
        let out = std::process::Command::new("nft")
            .arg("-f")
            .arg(&file)
            .output()?;
        let _ = fs::remove_file(&file);
        anyhow::ensure!(
            out.status.success(),
            "nft -f: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Nft { table })
    }

    /// Packets the cgroup rule has matched (its counter).
    fn matched(&self) -> anyhow::Result<u64> {
        let out = std::process::Command::new("nft")
            .args(["list", "chain", "inet", &self.table, "out"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_once("counter packets ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no counter in: {text}"))
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

fn median(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// A loopback port with nothing listening (bound once, then released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn own_cgroup(mount: &std::path::Path) -> anyhow::Result<Cgroup> {
    let s = fs::read_to_string("/proc/self/cgroup")?;
    let rel = s
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| anyhow::anyhow!("no cgroup v2 entry in /proc/self/cgroup"))?;
    let path: PathBuf = mount.join(rel.trim_start_matches('/'));
    Cgroup::open(&path)
}
