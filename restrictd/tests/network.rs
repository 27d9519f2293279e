//! Network restriction in `restrictd run` sessions, on the real kernel.
//! Every destination is on loopback; listeners are made by the test.

mod common;
use std::{io::Read, process::Stdio};

use common::*;

#[test]
fn allowed_tcp_connects_and_denied_one_fails_with_eperm() {
    let sb = Sandbox::new();
    let (_a, pa) = tcp_listener("127.0.0.1");
    let (_d, pd) = tcp_listener("127.0.0.2");
    let policy = sb.policy(&["127.0.0.0/8"], &["127.0.0.2"]);
    assert_eq!(sb.probe(Some(&policy), "tcp", "127.0.0.1", pa), "ok");
    assert_eq!(sb.probe(Some(&policy), "tcp", "127.0.0.2", pd), "EPERM");
}

#[test]
fn deny_overrides_allow_and_unlisted_is_denied() {
    let sb = Sandbox::new();
    let (_a, pa) = tcp_listener("127.0.0.3");
    let (_b, pb) = tcp_listener("127.0.1.1");
    // 127.0.0.0/24 allowed with one hole; 127.0.1.0/24 is in no list.
    let policy = sb.policy(&["127.0.0.0/24"], &["127.0.0.3/32"]);
    assert_eq!(sb.probe(Some(&policy), "tcp", "127.0.0.3", pa), "EPERM");
    assert_eq!(sb.probe(Some(&policy), "tcp", "127.0.1.1", pb), "EPERM");
    let policy = sb.policy(&["127.0.0.0/16"], &[]);
    assert_eq!(sb.probe(Some(&policy), "tcp", "127.0.0.3", pa), "ok");
    assert_eq!(sb.probe(Some(&policy), "tcp", "127.0.1.1", pb), "ok");
}

#[test]
fn udp_sendto_and_connected_udp_are_restricted() {
    let sb = Sandbox::new();
    let (ok_sock, pa) = udp_socket("127.0.0.1");
    let (bad_sock, pd) = udp_socket("127.0.0.2");
    let policy = sb.policy(&["127.0.0.0/8"], &["127.0.0.2"]);
    let mut buf = [0u8; 16];

    assert_eq!(sb.probe(Some(&policy), "udp-sendto", "127.0.0.1", pa), "ok");
    assert_eq!(
        ok_sock.recv(&mut buf).unwrap(),
        5,
        "allowed datagram arrives"
    );
    assert_eq!(
        sb.probe(Some(&policy), "udp-connect", "127.0.0.1", pa),
        "ok"
    );
    assert_eq!(ok_sock.recv(&mut buf).unwrap(), 5);

    assert_eq!(
        sb.probe(Some(&policy), "udp-sendto", "127.0.0.2", pd),
        "EPERM"
    );
    assert_eq!(
        sb.probe(Some(&policy), "udp-connect", "127.0.0.2", pd),
        "EPERM"
    );
    assert!(
        bad_sock.recv(&mut buf).is_err(),
        "no denied datagram was sent"
    );

    let ev = sb.denials();
    let ops: Vec<_> = ev
        .iter()
        .map(|e| e["operation"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ops,
        vec![1, 0],
        "sendto is a send (1), connect a connect (0)"
    );
}

#[test]
fn ipv6_loopback_follows_the_ipv6_rules() {
    let sb = Sandbox::new();
    let (_l, port) = {
        let l = std::net::TcpListener::bind("[::1]:0").unwrap();
        let p = l.local_addr().unwrap().port();
        (l, p)
    };
    let v4_only = sb.policy(&["127.0.0.0/8"], &[]);
    assert_eq!(sb.probe(Some(&v4_only), "tcp", "::1", port), "EPERM");
    assert_eq!(sb.probe(Some(&v4_only), "udp-sendto", "::1", port), "EPERM");
    let with_v6 = sb.policy(&["127.0.0.0/8", "::1"], &[]);
    assert_eq!(sb.probe(Some(&with_v6), "tcp", "::1", port), "ok");
    let denied_v6 = sb.policy(&["::/0"], &["::1/128"]);
    assert_eq!(sb.probe(Some(&denied_v6), "tcp", "::1", port), "EPERM");
    // One denial per EPERM above, each for ::1 over IPv6.
    let ev = sb.denials();
    assert_eq!(ev.len(), 3, "{ev:?}");
    assert!(ev
        .iter()
        .all(|e| e["version"] == 6 && e["dst_addr"] == "::1"));
}

#[test]
fn v4_mapped_ipv6_cannot_bypass_ipv4_rules() {
    let sb = Sandbox::new();
    let (_a, pa) = tcp_listener("127.0.0.1");
    let (_d, pd) = tcp_listener("127.0.0.2");
    let policy = sb.policy(&["127.0.0.0/8"], &["127.0.0.2"]);
    assert_eq!(
        sb.probe(Some(&policy), "tcp6-mapped", "127.0.0.2", pd),
        "EPERM"
    );
    assert_eq!(
        sb.probe(Some(&policy), "tcp6-mapped", "127.0.0.1", pa),
        "ok"
    );
    let ev = sb.denials();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["dst_addr"], "::ffff:127.0.0.2");
}

/// Teleport's rule for a v4-mapped destination of an IPv6 socket: IPv6
/// rules covering it apply as well as the IPv4 ones, for a UDP send (which
/// the kernel hands to its IPv4 path) as for a TCP connect, and the event
/// names the destination as the caller gave it.
#[test]
fn ipv6_rules_cover_v4_mapped_sends_as_they_cover_connects() {
    let sb = Sandbox::new();
    let (sock, pu) = udp_socket("127.0.0.1");
    let (_t, pt) = tcp_listener("127.0.0.1");
    // ::/80 holds every v4-mapped address (::ffff:0:0/96).
    let policy = sb.policy(&["127.0.0.0/8"], &["::/80"]);
    let mut buf = [0u8; 16];
    assert_eq!(
        sb.probe(Some(&policy), "udp6-mapped", "127.0.0.1", pu),
        "EPERM"
    );
    assert!(sock.recv(&mut buf).is_err(), "no denied datagram arrived");
    assert_eq!(
        sb.probe(Some(&policy), "tcp6-mapped", "127.0.0.1", pt),
        "EPERM"
    );
    // The rule is IPv6: an IPv4 socket to the same host is not covered.
    assert_eq!(sb.probe(Some(&policy), "udp-sendto", "127.0.0.1", pu), "ok");
    assert_eq!(sock.recv(&mut buf).unwrap(), 5, "the allowed one arrives");
    let ev = sb.denials();
    assert_eq!(ev.len(), 2, "{ev:?}");
    for (e, op) in ev.iter().zip([1, 0]) {
        assert_eq!(e["operation"], op, "{e}");
        assert_eq!(e["version"], 6, "{e}");
        assert_eq!(e["dst_addr"], "::ffff:127.0.0.1", "{e}");
    }
}

#[test]
fn without_a_policy_everything_is_allowed() {
    let sb = Sandbox::new();
    let (_d, pd) = tcp_listener("127.0.0.2");
    assert_eq!(sb.probe(None, "tcp", "127.0.0.2", pd), "ok");
    assert!(sb.denials().is_empty(), "nothing denied, nothing reported");
}

#[test]
fn grandchildren_are_restricted_too() {
    let sb = Sandbox::new();
    let (_d, pd) = tcp_listener("127.0.0.2");
    let policy = sb.policy(&["127.0.0.0/8"], &["127.0.0.2"]);
    let inner = format!("python3 {} tcp 127.0.0.2 {pd}", probe());
    // sh -> sh -> (background) python3: two levels below CMD.
    let script = format!("sh -c '{inner} & wait'");
    let out = sb.run(Some(&policy), &["sh", "-c", &script]);
    assert_eq!(verdict(&out), "EPERM");
}

#[test]
fn processes_outside_the_session_are_unaffected() {
    let sb = Sandbox::new();
    let (_d, pd) = tcp_listener("127.0.0.2");
    let policy = sb.policy(&["127.0.0.0/8"], &["127.0.0.2"]);
    // The session denies 127.0.0.2 and stays alive while we connect from outside.
    let script = format!(
        "python3 {} tcp 127.0.0.2 {pd}; echo ready; read _ || true",
        probe()
    );
    let mut child = sb
        .run_cmd(Some(&policy), &["sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = read_until(&mut child.stdout.take().unwrap(), "ready");
    assert!(seen.starts_with("EPERM"), "{seen}");
    assert_eq!(
        sb.attached_programs(),
        6,
        "programs attached during the session: 4 sock_addr hooks, 2 packet-level"
    );
    // Same destination, from this (outside) process, while the session runs.
    std::net::TcpStream::connect(("127.0.0.2", pd)).expect("outside connect works");
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn denial_events_carry_teleport_fields() {
    let sb = Sandbox::new();
    let (_d, pd) = tcp_listener("127.0.0.2");
    let policy = sb.policy(&["127.0.0.0/8"], &["127.0.0.2"]);
    let script = format!(
        "python3 {p} tcp 127.0.0.2 {pd}; python3 {p} udp-sendto 127.0.0.2 {pd}; true",
        p = probe()
    );
    let out = sb.run(Some(&policy), &["sh", "-c", &script]);
    assert!(out.status.success());
    let ev = sb.denials();
    assert_eq!(ev.len(), 2, "{ev:?}");
    let sid = ev[0]["sid"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&sid).is_ok());
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e["event"], "session.network");
        assert_eq!(e["code"], "T4002I");
        if i > 0 {
            // ei counts all of the session's events (commands too): increasing.
            assert!(e["ei"].as_u64() > ev[i - 1]["ei"].as_u64());
        }
        assert_eq!(e["sid"], sid.as_str());
        assert_eq!(e["program"], "python3");
        assert_eq!(e["dst_addr"], "127.0.0.2");
        assert_eq!(e["dst_port"], pd);
        assert_eq!(e["version"], 4);
        assert_eq!(e["action"], 1);
        assert!(e["pid"].as_u64().unwrap() > 1);
        assert!(e["cgroup_id"].as_u64().unwrap() > 1);
        assert!(e["src_addr"].is_string());
        let t = chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).unwrap();
        assert!((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds() < 60);
        assert_eq!(
            e["time"].as_str().unwrap().len(),
            30,
            "nanosecond precision"
        );
    }
    assert_eq!(ev[0]["operation"], 0);
    assert_eq!(ev[1]["operation"], 1);
}

#[test]
fn exit_status_is_the_commands() {
    let sb = Sandbox::new();
    assert_eq!(sb.run(None, &["sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(sb.run(None, &["true"]).status.code(), Some(0));
    assert_eq!(sb.run(None, &["/nonexistent/cmd"]).status.code(), Some(127));
}

#[test]
fn cleanup_after_killed_command_and_daemonized_children() {
    let sb = Sandbox::new();
    // CMD leaves a detached grandchild behind, then kills itself.
    let out = sb.run(
        None,
        &[
            "sh",
            "-c",
            "setsid sleep 31337.5 </dev/null >/dev/null 2>&1 & kill -9 $$",
        ],
    );
    assert_eq!(out.status.code(), Some(128 + 9));
    assert!(
        sb.leftover_cgroups().is_empty(),
        "{:?}",
        sb.leftover_cgroups()
    );
    assert_eq!(sb.attached_programs(), 0);
    let leftover = std::process::Command::new("pgrep")
        .args(["-f", "^sleep 31337.5$"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&leftover.stdout).trim().is_empty(),
        "the daemonized child was killed"
    );
}

#[test]
fn cleanup_on_sigterm_and_sigint() {
    for (sig, code) in [
        (nix::sys::signal::SIGTERM, 143),
        (nix::sys::signal::SIGINT, 130),
    ] {
        let sb = Sandbox::new();
        let mut child = sb
            .run_cmd(None, &["sh", "-c", "echo up; exec sleep 1000"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut buf = [0u8; 3];
        child.stdout.take().unwrap().read_exact(&mut buf).unwrap();
        assert_eq!(
            sb.leftover_cgroups().len(),
            1,
            "session cgroup exists while running"
        );
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(code), "after {sig}");
        assert!(sb.leftover_cgroups().is_empty());
        assert_eq!(sb.attached_programs(), 0);
    }
}

#[test]
fn a_bad_policy_stops_run_before_anything_starts() {
    let sb = Sandbox::new();
    let bad = sb.dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "kind: network_restrictions\nversion: v4\nmetadata:\n  name: x\nspec:\n  allow:\n    - cidr: 10.0.0.0/33\n",
    )
    .unwrap();
    let marker = sb.dir.path().join("ran");
    let out = sb.run(Some(&bad), &["touch", marker.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:7:13"), "{err}");
    assert!(
        !marker.exists(),
        "the command must not run under a bad policy"
    );
    assert!(sb.leftover_cgroups().is_empty());
}

#[test]
fn events_reach_journald() {
    let sb = Sandbox::new();
    let (_d, pd) = tcp_listener("127.0.0.2");
    let policy = sb.policy(&["127.0.0.0/8"], &["127.0.0.2"]);
    let journal = sb.dir.path().join("journal.json");
    let run = sb.run_cmd(
        Some(&policy),
        &["python3", &probe(), "tcp", "127.0.0.2", &pd.to_string()],
    );
    let out = run_with_journald(&journal, &run);
    assert_eq!(
        verdict(&out),
        "EPERM",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<_> = read_events(&journal)
        .into_iter()
        .filter(|j| j["EVENT"] == "session.network")
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let j = &entries[0];
    assert_eq!(j["SYSLOG_IDENTIFIER"], "restrictd");
    assert_eq!(
        j["MESSAGE_ID"],
        restrictd::events::message_id("session.network").unwrap()
    );
    assert_eq!(j["PRIORITY"], "4");
    assert_eq!(j["EVENT"], "session.network");
    assert_eq!(j["DST_ADDR"], "127.0.0.2");
    assert_eq!(j["DST_PORT"], pd.to_string());
    assert_eq!(j["ACTION"], "1");
    assert!(j["SESSION_ID"].as_str().unwrap().len() == 36);
    assert!(j["MESSAGE"]
        .as_str()
        .unwrap()
        .contains("denied connect to 127.0.0.2"));
    let inner: serde_json::Value = serde_json::from_str(j["EVENT_JSON"].as_str().unwrap()).unwrap();
    assert_eq!(inner["code"], "T4002I");
}

#[test]
fn without_journald_events_go_to_syslog_authpriv() {
    let sb = Sandbox::new();
    let (_d, pd) = tcp_listener("127.0.0.2");
    let policy = sb.policy(&["127.0.0.0/8"], &["127.0.0.2"]);
    let log = sb.dir.path().join("syslog.txt");
    let run = sb.run_cmd(
        Some(&policy),
        &["python3", &probe(), "tcp", "127.0.0.2", &pd.to_string()],
    );
    let out = run_with_syslog(&log, &run);
    assert_eq!(
        verdict(&out),
        "EPERM",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("session.network"))
        .expect("a syslog line for the denial");
    // <PRI> = facility authpriv (10) * 8 + severity warning (4).
    assert!(line.starts_with("<84>"), "{line}");
    assert!(line.contains("restrictd["), "{line}");
    let json = &line[line.find('{').unwrap()..];
    let e: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(e["event"], "session.network");
    assert_eq!(e["dst_port"], pd);
}

#[test]
fn allowed_connects_and_first_sends_are_recorded_as_observed() {
    let sb = Sandbox::new();
    let (_a, pa) = tcp_listener("127.0.0.1");
    let (u, pu) = udp_socket("127.0.0.1");
    let (_u2, pu2) = udp_socket("127.0.0.1");
    let script = format!(
        "python3 {p} tcp 127.0.0.1 {pa}; python3 {p} udp-connect 127.0.0.1 {pu}; \
         python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(5): s.sendto(b\"x\", (\"127.0.0.1\", {pu}))
s.sendto(b\"x\", (\"127.0.0.1\", {pu2}))'",
        p = probe()
    );
    assert!(sb.run(None, &["sh", "-c", &script]).status.success());
    let mut buf = [0u8; 8];
    assert!(u.recv(&mut buf).is_ok(), "traffic really flowed");
    let ev = sb.network_events();
    let observed: Vec<_> = ev.iter().filter(|e| e["action"] == 0).collect();
    let key = |e: &&serde_json::Value| {
        (
            e["operation"].as_u64().unwrap(),
            e["dst_port"].as_u64().unwrap(),
        )
    };
    let mut seen: Vec<_> = observed.iter().map(key).collect();
    seen.sort();
    let mut want = vec![
        (0, pa as u64),
        (0, pu as u64),
        (1, pu as u64),
        (1, pu2 as u64),
    ];
    want.sort();
    // TCP connect, connected UDP (its connect), and one event per destination
    // of an unconnected socket however many datagrams it sent.
    assert_eq!(seen, want, "{ev:?}");
    for e in &observed {
        assert_eq!(e["dst_addr"], "127.0.0.1");
        assert_eq!(e["code"], "T4002I");
    }
    let send = observed.iter().find(|e| e["operation"] == 1).unwrap();
    assert!(
        send["src_port"].as_u64().unwrap() > 0,
        "the sending socket's port is known"
    );
}

#[test]
fn an_allowed_connect_is_reported_with_its_source_in_each_family() {
    let sb = Sandbox::new();
    // An IPv6 address of this host other than ::1, so that the source and
    // the destination differ in every family.
    let host = common::netns::DeniedHost::new();
    let (_l4, p4) = tcp_listener("127.0.0.1");
    let (_l6, p6) = tcp_listener(&host.local6);
    let (_lm, pm) = tcp_listener("127.0.0.1");
    let cases = [
        ("AF_INET", "127.0.0.3", "127.0.0.1".to_string(), p4),
        ("AF_INET6", "::1", host.local6.clone(), p6),
        // An IPv6 socket to a v4-mapped address goes through IPv4's code.
        (
            "AF_INET6",
            "::ffff:127.0.0.3",
            "::ffff:127.0.0.1".to_string(),
            pm,
        ),
    ];
    let script = cases
        .iter()
        .map(|(fam, src, dst, port)| {
            format!(
                "s = socket.socket(socket.{fam}, socket.SOCK_STREAM)\n\
                 s.bind(('{src}', 0))\n\
                 print(s.getsockname()[1], flush=True)\n\
                 s.connect(('{dst}', {port}))\n\
                 s.close()\n"
            )
        })
        .collect::<String>();
    let out = sb.run(
        None,
        &["python3", "-c", &format!("import socket\n{script}")],
    );
    assert!(out.status.success(), "{out:?}");
    let sports: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let ev = sb.network_events();
    for ((_, src, dst, port), sport) in cases.iter().zip(sports) {
        let e = ev
            .iter()
            .find(|e| e["action"] == 0 && e["operation"] == 0 && e["dst_port"] == *port as u64)
            .unwrap_or_else(|| panic!("no connect event to {dst} port {port}: {ev:?}"));
        assert_eq!(e["src_addr"], *src, "{e}");
        assert_eq!(e["dst_addr"], dst.as_str(), "{e}");
        assert_eq!(e["src_port"], sport, "{e}");
        assert_eq!(e["protocol"], 6, "{e}");
    }
}

#[test]
fn observed_network_events_can_be_switched_off_denials_cannot() {
    let sb = Sandbox::with_config("enhanced_recording:\n  network_events: false\n");
    let (_a, pa) = tcp_listener("127.0.0.1");
    let (_d, pd) = tcp_listener("127.0.0.2");
    let policy = sb.policy(&["127.0.0.0/8"], &["127.0.0.2"]);
    assert_eq!(sb.probe(Some(&policy), "tcp", "127.0.0.1", pa), "ok");
    assert_eq!(sb.probe(Some(&policy), "tcp", "127.0.0.2", pd), "EPERM");
    let ev = sb.network_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["action"], 1);
}

#[test]
fn a_bound_socket_sending_is_reported_with_its_source_in_both_families() {
    let sb = Sandbox::new();
    let (_u4, p4) = udp_socket("127.0.0.1");
    let (_u6, p6) = udp_socket("::1");
    // Each socket is bound to an address and port of its own before it sends.
    let script = format!(
        "import socket
for fam, src, dst, port in ((socket.AF_INET, '127.0.0.3', '127.0.0.1', {p4}), (socket.AF_INET6, '::1', '::1', {p6})):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((src, 0))
    print(s.getsockname()[1], flush=True)
    s.sendto(b'x', (dst, port))"
    );
    let out = sb.run(None, &["python3", "-c", &script]);
    assert!(out.status.success(), "{out:?}");
    let ports: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    let sends: Vec<_> = sb
        .network_events()
        .into_iter()
        .filter(|e| e["operation"] == 1)
        .collect();
    assert_eq!(sends.len(), 2, "{sends:?}");
    for (e, (src, port)) in sends
        .iter()
        .zip([("127.0.0.3", ports[0]), ("::1", ports[1])])
    {
        assert_eq!(e["src_addr"], src, "{e}");
        assert_eq!(e["src_port"], port, "{e}");
    }
}

#[test]
fn unspecified_destinations_are_judged_and_reported_as_the_local_host() {
    let sb = Sandbox::new();
    let (l4, p4) = tcp_listener("127.0.0.1");
    let (l6, p6) = tcp_listener("::1");
    l4.set_nonblocking(true).unwrap();
    l6.set_nonblocking(true).unwrap();
    // Everything but the loopback is allowed: 0.0.0.0, :: and
    // ::ffff:0.0.0.0, which the kernel sends to the local host, must not
    // reach it (as literal addresses they are inside the allowed /0s).
    let remote_only = sb.policy(&["0.0.0.0/0", "::/0"], &["127.0.0.0/8", "::1"]);
    assert_eq!(sb.probe(Some(&remote_only), "tcp", "0.0.0.0", p4), "EPERM");
    assert_eq!(sb.probe(Some(&remote_only), "tcp", "::", p6), "EPERM");
    assert_eq!(
        sb.probe(Some(&remote_only), "tcp6-mapped", "0.0.0.0", p4),
        "EPERM"
    );
    let nothing = |r: std::io::Result<(std::net::TcpStream, std::net::SocketAddr)>| matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(nothing(l4.accept()), "the IPv4 listener got a connection");
    assert!(nothing(l6.accept()), "the IPv6 listener got a connection");
    let dsts: Vec<_> = sb
        .denials()
        .iter()
        .map(|e| e["dst_addr"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dsts, ["127.0.0.1", "::1", "::ffff:127.0.0.1"]);

    // Allowed where the local host is: the connection arrives.
    let local = sb.policy(&["127.0.0.0/8"], &[]);
    assert_eq!(sb.probe(Some(&local), "tcp", "0.0.0.0", p4), "ok");
    l4.set_nonblocking(false).unwrap();
    assert!(l4.accept().is_ok());
}

#[test]
fn zero_destination_with_a_chosen_source_is_judged_as_that_source() {
    let sb = Sandbox::new();
    let (target, port) = udp_socket("127.0.0.2");
    let (tcp, tport) = tcp_listener("127.0.0.2");
    tcp.set_nonblocking(true).unwrap();
    // The kernel routes 0.0.0.0 to the call's source: an IP_PKTINFO source
    // on sendmsg, or the address the socket is bound to.
    let script = format!(
        "import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
pktinfo = struct.pack('=i4s4s', 0, socket.inet_aton('127.0.0.2'), socket.inet_aton('0.0.0.0'))
try:
    s.sendmsg([b'pktinfo'], [(socket.IPPROTO_IP, 8, pktinfo)], 0, ('0.0.0.0', {port}))
    print('sendmsg ok')
except PermissionError:
    print('sendmsg EPERM')
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.bind(('127.0.0.2', 0))
try:
    t.connect(('0.0.0.0', {tport}))
    print('connect ok')
except PermissionError:
    print('connect EPERM')"
    );
    let deny = sb.policy(&["0.0.0.0/0"], &["127.0.0.2"]);
    let out = sb.run(Some(&deny), &["python3", "-c", &script]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "sendmsg EPERM\nconnect EPERM\n",
        "{out:?}"
    );
    let mut buf = [0u8; 16];
    assert!(
        target.recv(&mut buf).is_err(),
        "the denied host got a datagram"
    );
    assert!(
        matches!(tcp.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the denied host got a connection"
    );
    let dsts: Vec<_> = sb
        .denials()
        .iter()
        .map(|e| e["dst_addr"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(dsts, ["127.0.0.2", "127.0.0.2"]);

    // Without the deny rule the same calls do reach 127.0.0.2.
    let allow = sb.policy(&["0.0.0.0/0"], &[]);
    let out = sb.run(Some(&allow), &["python3", "-c", &script]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "sendmsg ok\nconnect ok\n",
        "{out:?}"
    );
    let n = target.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"pktinfo");
}

/// Sessions are found through a direct-mapped slot array before the hash
/// (`SESSION_SLOTS`). A cgroup whose slot another cgroup holds is still
/// found and enforced, the holder's entry never applies to it, and live
/// updates and removals reach it wherever it is kept.
#[test]
fn a_session_is_enforced_whether_or_not_it_holds_its_fast_slot() {
    use restrictd::cgroup::{find_cgroup2_mount, Cgroup};
    use restrictd_common::{SessionEntry, POLICY_FOLLOW_ACTIVE, SESSION_RESTRICT, SESSION_SLOTS};
    require_root();
    let mount = find_cgroup2_mount().unwrap();
    let root =
        Cgroup::create_all(&mount.join(format!("restrictd-test-slots-{}", std::process::id())))
            .unwrap();
    let session = root.create_child("session").unwrap();
    let cleanup = || {
        let _ = session.remove();
        let _ = root.remove();
    };
    let (listener, port) = tcp_listener("127.0.0.1");
    listener.set_nonblocking(true).unwrap();
    let result = std::panic::catch_unwind(|| {
        let mut k = loopback_denying_kernel(&root);
        let entry = |flags| SessionEntry {
            policy_id: POLICY_FOLLOW_ACTIVE,
            flags,
            disk_filter: 0,
        };
        let connect = || arrives_from(&session, &listener, port);
        // Another cgroup with the same slot, registered first: it holds the
        // slot. Restricted, it must not restrict the session's cgroup.
        let holder = session.id + SESSION_SLOTS as u64;
        k.sessions.add(holder, entry(SESSION_RESTRICT)).unwrap();
        assert!(
            connect(),
            "the slot holder's entry applied to another cgroup"
        );
        // Unrestricted, it must not free the session: the hash decides.
        k.sessions.add(holder, entry(0)).unwrap();
        k.sessions.add(session.id, entry(SESSION_RESTRICT)).unwrap();
        assert!(!connect(), "a session without its slot was not enforced");
        k.sessions.remove(holder).unwrap();
        assert!(!connect(), "removing the slot holder freed the session");
        // Registered again, the session takes its slot; a live change and
        // the removal reach it there.
        k.sessions.add(session.id, entry(SESSION_RESTRICT)).unwrap();
        assert!(!connect(), "a session in its slot was not enforced");
        k.sessions.add(session.id, entry(0)).unwrap();
        assert!(
            connect(),
            "a live change to unrestricted did not reach the slot"
        );
        k.sessions.add(session.id, entry(SESSION_RESTRICT)).unwrap();
        assert!(
            !connect(),
            "a live change to restricted did not reach the slot"
        );
        k.sessions.remove(session.id).unwrap();
        assert!(connect(), "a removed session stayed restricted");
    });
    cleanup();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// The programs, loaded and attached at `root`, under a policy that
/// allows only 10.0.0.0/8: a restricted session's loopback connects are
/// denied.
fn loopback_denying_kernel(root: &restrictd::cgroup::Cgroup) -> restrictd::bpf::Kernel {
    let mut k = restrictd::bpf::Kernel::load(
        restrictd::config::Config::default()
            .load_options(None)
            .unwrap(),
    )
    .unwrap();
    let policy =
        restrictd::policy::Policy::parse(&policy_yaml(&["10.0.0.0/8"], &[]), "test").unwrap();
    k.policy.set(Some(&policy)).unwrap();
    k.programs.attach(&root.path).unwrap();
    k
}

/// Whether a connect from a process in `cgroup` to the (nonblocking)
/// loopback `listener` got through, with proof at the listener.
fn arrives_from(
    cgroup: &restrictd::cgroup::Cgroup,
    listener: &std::net::TcpListener,
    port: u16,
) -> bool {
    use std::os::unix::process::CommandExt;
    let procs = cgroup.path.join("cgroup.procs");
    let mut cmd = std::process::Command::new("python3");
    cmd.args([&probe(), "tcp", "127.0.0.1", &port.to_string()]);
    // SAFETY: only a write(2) to a file between fork and exec.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, "0"));
    }
    let verdict = verdict(&cmd.output().unwrap());
    let arrived = listener.accept().is_ok();
    assert_eq!(verdict == "ok", arrived, "probe said {verdict}");
    assert!(
        verdict == "ok" || verdict == "EPERM",
        "probe said {verdict}"
    );
    arrived
}

/// When a session's leader is moved (pam_systemd's scope), the kernel
/// registers the new cgroup itself (`follow.rs`), a key whose bit in the
/// programs' presence bitmaps the daemon never set: it is enforced at
/// once all the same, and still after the daemon's rescan, which clears
/// the bits of keys removed.
#[test]
fn a_cgroup_the_kernel_registers_is_enforced_before_the_daemon_rescans() {
    use restrictd::cgroup::{find_cgroup2_mount, Cgroup};
    use restrictd_common::{SessionEntry, POLICY_FOLLOW_ACTIVE, SESSION_RESTRICT};
    use std::os::unix::process::CommandExt;
    require_root();
    let mount = find_cgroup2_mount().unwrap();
    let root =
        Cgroup::create_all(&mount.join(format!("restrictd-test-follow-{}", std::process::id())))
            .unwrap();
    let (from, to) = (
        root.create_child("from").unwrap(),
        root.create_child("to").unwrap(),
    );
    let procs = from.path.join("cgroup.procs");
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("60");
    // SAFETY: only a write(2) to a file between fork and exec.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, "0"));
    }
    let mut leader = cmd.spawn().unwrap();
    let (listener, port) = tcp_listener("127.0.0.1");
    listener.set_nonblocking(true).unwrap();
    let result = std::panic::catch_unwind(|| {
        let mut k = loopback_denying_kernel(&root);
        k.programs.attach_tracepoints().unwrap();
        let entry = SessionEntry {
            policy_id: POLICY_FOLLOW_ACTIVE,
            flags: SESSION_RESTRICT,
            disk_filter: 0,
        };
        k.sessions.add(from.id, entry).unwrap();
        k.sessions.follow_leader(leader.id(), from.id).unwrap();
        assert!(arrives_from(&to, &listener, port), "before the move");
        std::fs::write(to.path.join("cgroup.procs"), leader.id().to_string()).unwrap();
        assert!(
            !arrives_from(&to, &listener, port),
            "the cgroup the kernel registered at the move was not enforced"
        );
        k.sessions.sync_presence().unwrap();
        assert!(
            !arrives_from(&to, &listener, port),
            "the cgroup the kernel registered was not enforced after the rescan"
        );
        k.sessions.remove(to.id).unwrap();
        k.sessions.sync_presence_if_stale().unwrap();
        assert!(
            arrives_from(&to, &listener, port),
            "a removed cgroup stayed restricted"
        );
        assert!(
            !arrives_from(&from, &listener, port),
            "the session lost its restriction"
        );
    });
    let _ = leader.kill();
    let _ = leader.wait();
    for c in [&to, &from, &root] {
        let _ = c.remove();
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// A process connecting to one destination over and over (a flood the
/// system log could not keep up with) is written as its first connects
/// and then counts: every connect is accounted for, and a connect to
/// another destination in the middle of it is an event of its own.
#[test]
fn repeated_allowed_connects_are_folded_into_counts_that_add_up() {
    let sb = Sandbox::new();
    // Closed ports: each connect is refused at once (the event is the
    // connection's start), with no accept queue to fill.
    let closed = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (flood, other) = (closed(), closed());
    let script = format!(
        "import socket
def c(p):
    s = socket.socket()
    try: s.connect(('127.0.0.1', p))
    except ConnectionRefusedError: pass
    s.close()
for i in range(3000):
    c({flood})
    if i == 1500: c({other})
"
    );
    assert!(sb.run(None, &["python3", "-c", &script]).status.success());
    let ev = sb.network_events();
    let to = |port: u16| -> Vec<&serde_json::Value> {
        ev.iter()
            .filter(|e| e["action"] == 0 && e["dst_port"] == port)
            .collect()
    };
    let flood_ev = to(flood);
    let total: u64 = flood_ev
        .iter()
        .map(|e| 1 + e["repeats"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 3000, "every connect is counted: {flood_ev:?}");
    let sid = &flood_ev[0]["sid"];
    assert!(
        flood_ev
            .iter()
            .all(|e| e["sid"] == *sid && e["sid"] != "" && e["user"].is_string()),
        "the counts are the session's events: {flood_ev:?}"
    );
    assert!(
        flood_ev.len() < 200,
        "the flood is folded, not written one by one: {} events",
        flood_ev.len()
    );
    assert!(
        flood_ev
            .iter()
            .any(|e| e["repeats"].as_u64().unwrap_or(0) > 0),
        "{flood_ev:?}"
    );
    assert_eq!(to(other).len(), 1, "{ev:?}");
}
