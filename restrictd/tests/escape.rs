//! Getting out of a restricted SSH session, tried as its user would: from a
//! real sshd login with the PAM line, an unprivileged user, a policy that
//! allows only the loopback addresses. Every attempt targets a denied host
//! that the test creates in a network namespace, and the proof is taken
//! there: a sniffer on the host's link sees every IP packet that arrives
//! (`common::netns`), and a control datagram shows that it would see the
//! attempt. Each attempt must also be in the session's record as a denial.
//! The attacks themselves are in tests/escape.py.

mod common;

use std::{
    fs,
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    time::Duration,
};

use common::{netns::DeniedHost, policy_yaml, repo, sshd::*};
use serde_json::Value;

/// Sets a sysctl for the test and puts the old value back.
struct Sysctl {
    path: String,
    old: String,
}

impl Sysctl {
    fn set(path: &str, value: &str) -> Sysctl {
        let old = fs::read_to_string(path).unwrap();
        fs::write(path, value).unwrap();
        Sysctl {
            path: path.into(),
            old,
        }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = fs::write(&self.path, self.old.trim());
    }
}

fn escape_py() -> String {
    repo().join("tests/escape.py").display().to_string()
}

/// The attack names, in escape.py's order (its port numbering).
fn attacks() -> Vec<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; sys.path.insert(0, sys.argv[1]); import escape; print(' '.join(escape.ATTACKS))"])
        .arg(repo().join("tests"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The denial recorded for attack `name` (port `port`), if any.
fn denial_for<'e>(
    events: &'e [Value],
    name: &str,
    port: u16,
    host: &DeniedHost,
) -> Option<&'e Value> {
    let denied = |e: &&Value| e["event"] == "session.network" && e["action"] == 1;
    let proto_to = |proto: u64, addr: &str| {
        events
            .iter()
            .filter(denied)
            .find(|e| e["protocol"] == proto && e["dst_addr"] == addr)
    };
    match name {
        "icmp4_ping" | "raw4_icmp" => proto_to(1, &host.addr4),
        "icmp6_ping" | "raw6_icmp" => proto_to(58, &host.addr6),
        "raw4_proto253" => proto_to(253, &host.addr4),
        _ => events
            .iter()
            .filter(denied)
            .find(|e| e["dst_port"] == port as u64),
    }
}

#[test]
fn no_way_out_of_a_restricted_ssh_session() {
    let host = DeniedHost::new();
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.1/32", "::1/128"], &[])));
    let user = User::new();
    let sshd = Sshd::new(&bus, &user, "");
    // ICMP ping sockets for everyone, as many distributions set it.
    let _ping = Sysctl::set("/proc/sys/net/ipv4/ping_group_range", "0 2147483647");
    // A setcap'd interpreter: what a setcap ping gives a user.
    let tools = tempfile::tempdir().unwrap();
    fs::set_permissions(tools.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let rawpy = tools.path().join("rawpy");
    fs::copy("/usr/bin/python3", &rawpy).unwrap();
    let st = Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(&rawpy)
        .status()
        .unwrap();
    assert!(st.success(), "setcap");

    // A process of the same user outside the session, already running when
    // the user logs in (a cron job, another login without the PAM line).
    let mut helper = Command::new("runuser")
        .args(["-u", &user.name, "--", "python3", &escape_py(), "helper"])
        .arg(tools.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(helper.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");

    let names = attacks();
    assert!(names.len() >= 30, "{names:?}");
    let base: u16 = 31000 + (std::process::id() % 1000) as u16 * 20;
    let script = format!(
        "D4={} D6={} BASE={base} HELPER={}/helper.sock RAWPY={} python3 {} attack {}",
        host.addr4,
        host.addr6,
        tools.path().display(),
        rawpy.display(),
        escape_py(),
        names.join(" ")
    );
    let out = sshd.ssh(&user, &script);
    assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    let results = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(results.lines().count(), names.len(), "{results}");
    // The io_uring attempts must reach the kernel's checks: a ring that
    // failed to set up would "pass" by sending nothing.
    for line in results.lines().filter(|l| l.starts_with("uring_")) {
        assert!(line.ends_with("=EPERM"), "{line}\n{results}");
    }

    // `ssh -W`: sshd itself, in the session, connects for the client.
    let w_port = base + names.len() as u16;
    let w = sshd
        .forward_cmd(&user, &format!("{}:{w_port}", host.addr4))
        .output()
        .unwrap();
    assert!(
        !w.status.success(),
        "ssh -W to the denied host: {}",
        text(&w)
    );

    // Inbound: the session listens; the denied host connects and sends in.
    let in_port = w_port + 1;
    let mut listener = sshd
        .ssh_cmd(
            &user,
            &format!("python3 {} inbound {in_port} 6", escape_py()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut inbound = BufReader::new(listener.stdout.take().unwrap());
    let mut line = String::new();
    inbound.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening");
    // Both families: each has its own header parse in the packet check.
    let client = format!(
        "import socket\n\
         for l, f in (('{l4}', socket.AF_INET), ('{l6}', socket.AF_INET6)):\n\
         \x20   try: socket.create_connection((l, {in_port}), timeout=1.5).sendall(b'rdx-inbound')\n\
         \x20   except OSError as e: print(e)\n\
         \x20   socket.socket(f, socket.SOCK_DGRAM).sendto(b'rdx-inbound', (l, {in_port}))",
        l4 = host.local4,
        l6 = host.local6
    );
    host.exec(&["python3", "-c", &client]);
    // Control: the same client reaches a listener here that no session owns.
    let control = std::net::TcpListener::bind((host.local4.as_str(), 0)).unwrap();
    let cport = control.local_addr().unwrap().port();
    let out = host.exec(&[
        "python3",
        "-c",
        &format!(
            "import socket; socket.create_connection(('{}', {cport}), timeout=2)",
            host.local4
        ),
    ]);
    assert!(out.status.success(), "control connect in: {}", text(&out));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut inbound, &mut rest).unwrap();
    listener.wait().unwrap();

    // The receiving end: nothing of any attempt arrived at the denied host,
    // while the control datagram sent from outside the session did.
    host.send_from_here("rdx-control_after");
    wait_for("the control datagram", Duration::from_secs(5), || {
        host.captured()
            .iter()
            .any(|p| p["markers"].to_string().contains("rdx-control_after"))
    });
    let _ = helper.kill();
    let _ = helper.wait();
    let captured = host.captured();
    let mut leaks = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let port = base + i as u16;
        let marker = format!("\"rdx-{name}\"");
        if let Some(p) = captured
            .iter()
            .find(|p| p["markers"].to_string().contains(&marker) || p["dport"] == port as u64)
        {
            leaks.push(format!("{name}: {p}"));
        }
    }
    if let Some(p) = captured.iter().find(|p| p["dport"] == w_port as u64) {
        leaks.push(format!("ssh -W: {p}"));
    }
    assert!(
        leaks.is_empty(),
        "reached the denied host:\n{}\nattempts: {results}",
        leaks.join("\n")
    );
    // The session's listeners got nothing from the denied host.
    assert!(
        rest.contains("inbound=nothing"),
        "the session received: {rest}"
    );

    // The record: every attempt is a denial, the outside ones said to be
    // outside a session, with the user's name.
    let missing = |events: &[Value]| -> Vec<String> {
        names
            .iter()
            .enumerate()
            .filter(|(i, n)| denial_for(events, n, base + *i as u16, &host).is_none())
            .map(|(_, n)| n.clone())
            .collect()
    };
    let mut events = daemon.events();
    for _ in 0..50 {
        if missing(&events).is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        events = daemon.events();
    }
    let network: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "session.network")
        .collect();
    assert!(
        missing(&events).is_empty(),
        "attempts without a denial event: {:?}
attempts: {results}
network events: {network:#?}",
        missing(&events)
    );
    for (i, name) in names.iter().enumerate() {
        let e = denial_for(&events, name, base + i as u16, &host).unwrap();
        assert_eq!(e["user"], user.name.as_str(), "{name}: {e}");
        let outside = matches!(name.as_str(), "outside_process" | "scm_rights_out");
        assert_eq!(e["outside_session"] == true, outside, "{name}: {e}");
        if outside {
            assert_eq!(e["sid"], "", "{name}: {e}");
        }
        // (srh6_via_allowed names the denied host itself: the send hook denies it.)
        if name == "srh6_via_denied" || name == "lsrr4" {
            assert_eq!(e["reason"], "source_routed", "{name}: {e}");
        }
    }
    let denied = |e: &&Value| e["event"] == "session.network" && e["action"] == 1;
    let w_event = events
        .iter()
        .filter(denied)
        .find(|e| e["dst_port"] == w_port as u64)
        .unwrap_or_else(|| panic!("ssh -W denial: {events:?}"));
    // (The test's sshd runs under a per-test name, "sshd-rdtest-...".)
    assert!(
        w_event["program"].as_str().unwrap().starts_with("sshd"),
        "{w_event}"
    );
    for proto in [6, 17] {
        for from in [&host.addr4, &host.addr6] {
            events
                .iter()
                .filter(denied)
                .find(|e| {
                    e["operation"] == 3
                        && e["protocol"] == proto
                        && e["src_addr"] == from.as_str()
                        && e["dst_port"] == in_port as u64
                })
                .unwrap_or_else(|| {
                    panic!("inbound protocol {proto} from {from}: no denial: {events:?}")
                });
        }
    }
}

/// A process of another, unrestricted account that keeps a restricted
/// user's audit login uid (as after `su` from a restricted login) is
/// restricted as that user; the same process without it is not.
#[test]
fn the_audit_login_uid_carries_the_restriction_to_another_account() {
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.1/32"], &[])));
    let user = User::new();
    let other = User::new();
    let sshd = Sshd::new(&bus, &user, "");
    // One login through the PAM line makes the user a restricted identity.
    let out = sshd.ssh(&user, "true");
    assert!(out.status.success(), "{}", text(&out));
    let listener = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // As `other`, with or without the user's login uid (root sets it, as
    // pam_loginuid does, then drops to `other`).
    let connect = |loginuid: Option<u32>| {
        let script = format!(
            "import os, socket\n\
             {set}\
             os.setgid({gid}); os.setuid({uid})\n\
             try:\n    socket.create_connection(('127.0.0.2', {port}), timeout=3); print('connected')\n\
             except OSError as e: print(e.strerror)",
            set = loginuid
                .map(|u| format!("open('/proc/self/loginuid', 'w').write('{u}')\n"))
                .unwrap_or_default(),
            gid = other.uid,
            uid = other.uid,
        );
        let out = Command::new("/usr/bin/python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    };
    assert_eq!(
        connect(None),
        "connected",
        "control: the other account is free"
    );
    let (control, _) = listener.accept().unwrap();
    drop(control);
    assert_eq!(connect(Some(user.uid)), "Operation not permitted");
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the listener got a connection from the restricted login uid"
    );
    let mut events = Vec::new();
    wait_for("the denial", Duration::from_secs(10), || {
        events = daemon.events();
        events
            .iter()
            .any(|e| e["action"] == 1 && e["dst_port"] == port as u64)
    });
    let e = events
        .iter()
        .find(|e| e["action"] == 1 && e["dst_port"] == port as u64)
        .unwrap();
    assert_eq!(e["user"], user.name.as_str(), "{e}");
    assert_eq!(e["outside_session"], true, "{e}");
}

/// A process the user started before their first restricted login is
/// restricted from that login on, and so are the sockets it already has:
/// a UDP socket connected to a denied address while the user was free,
/// which has already carried data (so the packet check has judged it once),
/// can send nothing there afterwards.
#[test]
fn sockets_opened_before_the_first_login_are_restricted_after_it() {
    use std::io::Write;
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.1/32"], &[])));
    let user = User::new();
    let sshd = Sshd::new(&bus, &user, "");
    let sink = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let port = sink.local_addr().unwrap().port();
    let script = format!(
        "import os, socket, sys\n\
         os.setgid({uid}); os.setuid({uid})\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.connect(('127.0.0.2', {port}))\n\
         for line in sys.stdin:\n\
         \x20   try:\n\
         \x20       s.send(line.strip().encode() * 100); print('sent', flush=True)\n\
         \x20   except OSError as e: print(e.strerror, flush=True)\n",
        uid = user.uid,
    );
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = |marker: &str| {
        writeln!(stdin, "{marker}").unwrap();
        lines.next().unwrap().unwrap()
    };
    // Free before the login: 1,000-byte datagrams arrive.
    assert_eq!(send("before0123"), "sent");
    let mut buf = [0u8; 2048];
    let n = sink
        .recv(&mut buf)
        .expect("control: the free process's datagram");
    assert!(buf[..n].starts_with(b"before0123"));
    let out = sshd.ssh(&user, "true");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(send("after01234"), "Operation not permitted");
    let got = sink.recv(&mut buf);
    assert!(
        got.is_err(),
        "the denied address got a datagram from the old socket: {:?}",
        got.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
    let _ = child.kill();
    let _ = child.wait();
    wait_for("the packet-level denial", Duration::from_secs(10), || {
        daemon.events().iter().any(|e| {
            e["action"] == 1
                && e["dst_port"] == port as u64
                && e["user"] == user.name.as_str()
                && e["outside_session"] == true
        })
    });
}
