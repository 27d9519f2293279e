//! SSH logins through a real sshd, pam_restrict.so, a real dbus-daemon and
//! restrictd serve. Destinations are loopback listeners made by the test.

mod common;

use std::{process::Stdio, time::Duration};

use common::{
    assert_ei_accounted, policy_yaml, read_until, repo, sshd::*, tcp_listener, udp_socket,
};

#[test]
fn ssh_login_is_restricted_recorded_and_closed_at_logout() {
    let bus = Bus::new(true);
    let (_a, pa) = tcp_listener("127.0.0.1");
    let (_d, pd) = tcp_listener("127.0.0.2");
    let mut daemon =
        Daemon::with_journal(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &["127.0.0.2"])));
    let user = User::new();
    let sshd = Sshd::new(&bus, &user, "fail=closed");
    let script = format!(
        "echo sid=$RESTRICTD_SESSION_ID; {}; {}; echo threads=$(ls /proc/$PPID/task | wc -l); echo conn=$SSH_CONNECTION",
        probe_cmd("tcp", "127.0.0.1", pa),
        probe_cmd("tcp", "127.0.0.2", pd),
    );
    let out = sshd.ssh(&user, &script);
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}\nsshd: {}\ndaemon: {}",
        text(&out),
        sshd.log(),
        daemon.log()
    );
    let lines: Vec<&str> = s.lines().collect();
    let sid = lines[0].strip_prefix("sid=").unwrap().to_string();
    assert_eq!(sid.len(), 36, "RESTRICTD_SESSION_ID is exported: {s}");
    assert_eq!(lines[1], "ok", "allowed destination");
    assert_eq!(lines[2], "EPERM", "denied destination");

    wait_for("logout to end the session", Duration::from_secs(10), || {
        daemon.sessions().is_empty()
    });
    daemon.stop();
    let events = daemon.events();
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| {
            e["sid"] == sid.as_str()
                && e["event"] != "session.command"
                && e["event"] != "session.disk"
        })
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    // The file the user's program opened, with its absolute path.
    let probe_path = std::fs::canonicalize(common::probe()).unwrap();
    assert!(
        events.iter().any(|e| e["event"] == "session.disk"
            && e["sid"] == sid.as_str()
            && e["unix_uid"] == user.uid
            && std::path::Path::new(e["path"].as_str().unwrap())
                .canonicalize()
                .is_ok_and(|p| p == probe_path)),
        "{events:?}"
    );
    // What the user ran is recorded under the session, with the user's name.
    let probes: Vec<_> = events
        .iter()
        .filter(|e| e["event"] == "session.command" && e["program"] == "python3")
        .collect();
    assert_eq!(probes.len(), 2, "{events:?}");
    for p in &probes {
        assert_eq!(p["sid"], sid.as_str());
        assert_eq!(p["user"], user.name.as_str());
        assert_eq!(p["unix_uid"], user.uid);
        assert_eq!(p["return_code"], 0);
    }
    assert_eq!(events.first().unwrap()["event"], "session.start");
    assert_eq!(
        events.last().unwrap()["event"],
        "session.end",
        "session.end comes last"
    );
    // The allowed connect (observed) and the denied one, between start and end.
    assert_eq!(
        kinds,
        [
            "session.start",
            "session.network",
            "session.network",
            "session.end"
        ],
        "{events:?}"
    );
    let start = &events
        .iter()
        .find(|e| e["event"] == "session.start")
        .unwrap();
    assert_eq!(start["code"], "T2000I");
    assert_eq!(start["login"], user.name.as_str());
    // Teleport's connection fields, from the SSH connection the session saw.
    let conn: Vec<&str> = lines
        .iter()
        .find_map(|l| l.strip_prefix("conn="))
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!(conn.len(), 4, "{lines:?}");
    let (remote, local) = (
        format!("{}:{}", conn[0], conn[1]),
        format!("{}:{}", conn[2], conn[3]),
    );
    assert_eq!(local, format!("127.0.0.1:{}", sshd.port));
    assert_eq!(start["addr.remote"], remote.as_str());
    assert_eq!(start["addr.local"], local.as_str());
    assert_eq!(start["proto"], "ssh");
    assert_eq!(start["remote_host"], "127.0.0.1", "PAM_RHOST");
    let end = events.iter().find(|e| e["event"] == "session.end").unwrap();
    assert_eq!(end["addr.remote"], remote.as_str());
    assert_eq!(end["addr.local"], local.as_str());
    assert_eq!(end["enhanced_recording"], true);
    assert_eq!(end["code"], "T2004I");

    // The journal has the denial with the user's name.
    let journal = daemon.journal_entries();
    let denial = journal
        .iter()
        .find(|j| j["EVENT"] == "session.network" && j["ACTION"] == "1")
        .unwrap_or_else(|| panic!("no denial in the journal: {journal:?}"));
    assert_eq!(denial["USER"], user.name.as_str());
    assert_eq!(denial["LOGIN"], user.name.as_str());
    assert_eq!(denial["SESSION_ID"], sid.as_str());
    assert_eq!(denial["DST_ADDR"], "127.0.0.2");
    assert!(denial["MESSAGE"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{}: denied connect", user.name)));
    assert!(journal
        .iter()
        .any(|j| j["EVENT"] == "session.start" && j["ADDR_REMOTE"] == remote.as_str()));
}

#[test]
fn sshd_keeps_no_extra_thread_from_the_module() {
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, None);
    let user = User::new();
    let sshd = Sshd::new(&bus, &user, "");
    // The session's leader is sshd's [priv] process, where pam_restrict ran.
    let mut child = sshd
        .ssh_cmd(&user, "echo up; sleep 30")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 3];
    use std::io::Read;
    child.stdout.take().unwrap().read_exact(&mut buf).unwrap();
    let sessions = daemon.sessions();
    assert_eq!(sessions.len(), 1);
    let leader = sessions[0]["leader_pid"].as_u64().unwrap();
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{leader}/task"))
        .unwrap()
        .map(|t| {
            std::fs::read_to_string(t.unwrap().path().join("comm"))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(
        threads.len(),
        1,
        "sshd [priv] (pid {leader}) must stay single-threaded: {threads:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn policy_applied_with_restrictctl_changes_a_live_session() {
    let bus = Bus::new(true);
    let (_a, pa) = tcp_listener("127.0.0.1");
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &[])));
    let user = User::new();
    let sshd = Sshd::new(&bus, &user, "");
    let gate = daemon.dir.path().join("gate");
    let script = format!(
        "{p}; echo waiting; while [ ! -e {g} ]; do sleep 0.05; done; {p}",
        p = probe_cmd("tcp", "127.0.0.1", pa),
        g = gate.display()
    );
    let mut child = sshd
        .ssh_cmd(&user, &script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = common::read_until(&mut out, "waiting");
    use std::io::Read;
    assert!(seen.starts_with("ok"), "{seen}");
    let newp = daemon.dir.path().join("new.yaml");
    std::fs::write(&newp, policy_yaml(&["127.0.0.0/8"], &["127.0.0.1"])).unwrap();
    let applied = daemon.ctl(&["policy", "apply", newp.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", text(&applied));
    assert!(String::from_utf8_lossy(&applied.stdout).contains("deny 1 IPv4"));
    std::fs::write(&gate, "").unwrap();
    out.read_to_string(&mut seen).unwrap();
    let st = child.wait().unwrap();
    assert!(seen.trim_end().ends_with("EPERM"), "{st:?}: {seen}");
    // The daemon kept it: `policy show` and the policy file.
    let shown = daemon.ctl(&["policy", "show"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("127.0.0.1"));
    assert!(std::fs::read_to_string(&daemon.policy_file)
        .unwrap()
        .contains("127.0.0.1"));
    // An invalid policy is refused with its location and changes nothing.
    let bad = daemon.dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "kind: network_restrictions\nversion: v4\nmetadata:\n  name: x\nspec:\n  alow: []\n",
    )
    .unwrap();
    let refused = daemon.ctl(&["policy", "apply", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("bad.yaml:6:3"),
        "{}",
        text(&refused)
    );
    assert!(std::fs::read_to_string(&daemon.policy_file)
        .unwrap()
        .contains("127.0.0.1"));
    // Host bits: applied as Teleport reads them, with the located warning
    // shown to the caller and in the daemon's log.
    let masked = daemon.dir.path().join("masked.yaml");
    std::fs::write(&masked, policy_yaml(&["127.0.0.5/8"], &[])).unwrap();
    let applied = daemon.ctl(&["policy", "apply", masked.to_str().unwrap()]);
    assert!(applied.status.success(), "{}", text(&applied));
    let said = String::from_utf8_lossy(&applied.stdout);
    assert!(
        said.contains("warning: ") && said.contains("masked.yaml:") && said.contains("127.0.0.0/8"),
        "{said}"
    );
    assert!(
        daemon.log().contains("has host bits set"),
        "{}",
        daemon.log()
    );
}

/// `strict_policy: true`: a policy with host bits is refused over D-Bus,
/// located, and the policy in force stays.
#[test]
fn strict_policy_refuses_host_bits_and_keeps_the_policy() {
    let bus = Bus::new(true);
    let daemon = Daemon::with_config(
        &bus,
        Some(&policy_yaml(&["127.0.0.0/8"], &["127.0.0.2"])),
        "strict_policy: true\n",
    );
    let masked = daemon.dir.path().join("masked.yaml");
    std::fs::write(&masked, policy_yaml(&["127.0.0.5/8"], &[])).unwrap();
    let refused = daemon.ctl(&["policy", "apply", masked.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("masked.yaml:7:") && err.contains("host bits"),
        "{err}"
    );
    assert!(std::fs::read_to_string(&daemon.policy_file)
        .unwrap()
        .contains("127.0.0.2"));
}

#[test]
fn sessions_stay_restricted_across_a_daemon_crash_and_restart() {
    let bus = Bus::new(true);
    let (_d, pd) = tcp_listener("127.0.0.2");
    let mut daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &["127.0.0.2"])));
    let user = User::new();
    let sshd = Sshd::new(&bus, &user, "");
    let g1 = daemon.dir.path().join("g1");
    let g2 = daemon.dir.path().join("g2");
    let script = format!(
        "echo up; while [ ! -e {g1} ]; do sleep 0.05; done; {p}; while [ ! -e {g2} ]; do sleep 0.05; done",
        p = probe_cmd("tcp", "127.0.0.2", pd),
        g1 = g1.display(),
        g2 = g2.display(),
    );
    let mut child = sshd
        .ssh_cmd(&user, &script)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 3];
    use std::io::Read;
    out.read_exact(&mut buf).unwrap();
    let sid = daemon.sessions()[0]["sid"].as_str().unwrap().to_string();

    daemon.crash();
    std::fs::write(&g1, "").unwrap();
    let mut line = String::new();
    let mut b = [0u8; 1];
    while !line.ends_with('\n') {
        assert_eq!(out.read(&mut b).unwrap(), 1);
        line.push(b[0] as char);
    }
    assert_eq!(
        line.trim(),
        "EPERM",
        "still restricted while restrictd is down"
    );

    daemon.start();
    let sessions = daemon.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["sid"], sid.as_str());
    std::fs::write(&g2, "").unwrap();
    assert!(child.wait().unwrap().success());
    wait_for(
        "logout after restart to end the session",
        Duration::from_secs(10),
        || daemon.sessions().is_empty(),
    );
    // The denial made while restrictd was down was recorded after the restart.
    let ev = daemon.events();
    assert!(
        ev.iter().any(|e| e["event"] == "session.network"
            && e["action"] == 1
            && e["sid"] == sid.as_str()),
        "{ev:?}"
    );
    assert!(ev
        .iter()
        .any(|e| e["event"] == "session.end" && e["sid"] == sid.as_str()));
}

#[test]
fn restrictd_down_at_login_fail_closed_denies_fail_open_admits() {
    let bus = Bus::new(true);
    let user = User::new();
    let closed = Sshd::new(&bus, &user, "fail=closed timeout=1000");
    let out = closed.ssh(&user, "echo in");
    assert!(
        !out.status.success(),
        "fail=closed must deny: {}",
        text(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("in"));
    let open = Sshd::new(&bus, &user, "fail=open timeout=1000");
    let out = open.ssh(&user, "echo in; echo sid=$RESTRICTD_SESSION_ID");
    assert!(out.status.success(), "fail=open admits: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("in\nsid=\n"));
}

#[test]
fn unprivileged_users_cannot_call_the_daemon_or_leave_the_session() {
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &[])));
    let user = User::new();
    // Outside any session: the bus policy refuses.
    let out = user.run(
        &[RESTRICTCTL, "status"],
        &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("access denied"),
        "{}",
        text(&out)
    );

    // Inside a session.
    let sshd = Sshd::new(&bus, &user, "");
    let mount = restrictd::cgroup::find_cgroup2_mount().unwrap();
    let script = format!(
        "cat /proc/self/cgroup; \
         echo $$ > {root}/cgroup.procs 2>/dev/null && echo moved-root || echo stay-root; \
         echo $$ > {mount}/cgroup.procs 2>/dev/null && echo moved-top || echo stay-top; \
         mkdir $(sed -n 's/^0:://p' /proc/self/cgroup | sed 's|^|{mount}|')/sub 2>/dev/null && echo made-sub || echo no-sub; \
         ls {pins} >/dev/null 2>&1 && echo read-pins || echo no-pins; \
         DBUS_SYSTEM_BUS_ADDRESS={bus} {ctl} session kill x 2>&1 | head -1",
        root = daemon.root.display(),
        mount = mount.display(),
        pins = daemon.pin_dir.display(),
        bus = bus.address,
        ctl = RESTRICTCTL,
    );
    let out = sshd.ssh(&user, &script);
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        s.contains(&format!(
            "0::/{}",
            daemon.root.file_name().unwrap().to_string_lossy()
        )),
        "{s}"
    );
    for (bad, good) in [
        ("moved-root", "stay-root"),
        ("moved-top", "stay-top"),
        ("made-sub", "no-sub"),
        ("read-pins", "no-pins"),
    ] {
        assert!(s.contains(good) && !s.contains(bad), "{s}");
    }
    assert!(s.contains("access denied"), "{s}");
    // restrictd's programs and maps cannot be reached by id from the
    // session either: bpf(BPF_PROG_GET_NEXT_ID) and BPF_MAP_GET_NEXT_ID.
    let probe = "import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); \
                 attr = ctypes.create_string_buffer(128); \
                 print(*[('denied' if libc.syscall(321, cmd, attr, 128) < 0 and ctypes.get_errno() == 1 else 'open') for cmd in (11, 12)])";
    let out = sshd.ssh(&user, &format!("python3 -c \"{probe}\""));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "denied denied",
        "{}",
        text(&out)
    );
}

#[test]
fn the_daemon_checks_the_caller_uid_itself() {
    // A bus whose policy lets anyone through: the daemon must still refuse.
    let bus = Bus::new(false);
    let _daemon = Daemon::new(&bus, None);
    let user = User::new();
    for args in [
        vec!["status"],
        vec!["sessions"],
        vec!["session", "kill", "x"],
        vec!["policy", "show"],
    ] {
        let mut full = vec![RESTRICTCTL];
        full.extend(args.iter());
        let out = user.run(&full, &[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("access denied") && err.contains("only root"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn pamtester_opens_and_closes_a_session() {
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, None);
    let status = daemon.ctl(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.contains("sessions:   0"), "{status}");
    assert!(status.contains("policy:     none"), "{status}");
    assert!(
        status.contains("lost events: network 0, command 0, disk 0"),
        "{status}"
    );
    let svc = PamService::new("debug");
    let out = svc
        .pamtester(&bus.address, "nobody", &["open_session", "close_session"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), daemon.log());
    wait_for("the session to end", Duration::from_secs(10), || {
        daemon.sessions().is_empty()
    });
    let ev = daemon.events();
    // pamtester itself, in the session between open and close, opens files.
    let kinds: Vec<&str> = ev
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .filter(|k| *k != "session.disk")
        .collect();
    assert_eq!(kinds, ["session.start", "session.end"], "{ev:?}");
    assert_eq!(ev[0]["login"], "nobody");
    assert_eq!(ev[0]["addr.remote"], "192.0.2.10");
    assert!(ev.iter().all(|e| e["sid"] == ev[0]["sid"]), "{ev:?}");
}

#[test]
fn bad_module_arguments_are_logged_by_name_and_follow_the_fail_mode() {
    let bus = Bus::new(true);
    let _daemon = Daemon::new(&bus, None);
    for (args, should_open, needle) in [
        ("bogus", false, "unknown argument \"bogus\""),
        ("timeout=abc", false, "timeout=\"abc\""),
        ("fail=maybe", false, "fail=\"maybe\""),
        ("fail=open timeout=0", true, "timeout=\"0\""),
        ("fail=open debug=1", true, "unknown argument \"debug=1\""),
    ] {
        let svc = PamService::new(args);
        let log = tempfile::NamedTempFile::new().unwrap();
        let pt = svc.pamtester(&bus.address, "nobody", &["open_session"]);
        let out = common::run_with_syslog(log.path(), &pt);
        assert_eq!(out.status.success(), should_open, "{args}: {}", text(&out));
        let syslog = std::fs::read_to_string(log.path()).unwrap();
        assert!(syslog.contains(needle), "{args}: {syslog}");
        assert!(syslog.contains("pam_restrict("), "{syslog}");
        // authpriv (10): <PRI> = 80 + severity.
        assert!(
            syslog
                .lines()
                .any(|l| l.starts_with("<83>") || l.starts_with("<84>")),
            "{syslog}"
        );
        if should_open {
            assert!(syslog.contains("WITHOUT restriction"), "{syslog}");
        } else {
            assert!(syslog.contains("login denied"), "{syslog}");
        }
    }
}

#[test]
fn fail_open_warns_in_authpriv_when_restrictd_is_down() {
    let bus = Bus::new(true);
    let svc = PamService::new("fail=open timeout=500");
    let log = tempfile::NamedTempFile::new().unwrap();
    let pt = svc.pamtester(&bus.address, "nobody", &["open_session"]);
    let out = common::run_with_syslog(log.path(), &pt);
    assert!(out.status.success(), "{}", text(&out));
    let syslog = std::fs::read_to_string(log.path()).unwrap();
    assert!(syslog.contains("WITHOUT restriction"), "{syslog}");
    // Why, in the same line: no restrictd on the bus.
    let line = syslog
        .lines()
        .find(|l| l.contains("WITHOUT restriction"))
        .unwrap();
    assert!(
        line.contains("cannot open a restrictd session for nobody")
            && line.contains("org.restrictd.Daemon1"),
        "{line}"
    );
}

#[test]
fn sighup_reloads_the_policy_file_and_a_bad_file_keeps_the_old_policy() {
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &[])));
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon.pid() as i32),
            nix::sys::signal::SIGHUP,
        )
        .unwrap()
    };
    let shown = || String::from_utf8_lossy(&daemon.ctl(&["policy", "show"]).stdout).to_string();
    std::fs::write(
        &daemon.policy_file,
        policy_yaml(&["127.0.0.0/8"], &["127.0.0.9"]),
    )
    .unwrap();
    hup();
    wait_for("the reload", Duration::from_secs(10), || {
        shown().contains("127.0.0.9")
    });
    // A broken file: the daemon says where, and the policy in force stays.
    std::fs::write(&daemon.policy_file, "kind: network_restrictions\nversion: v4\nmetadata:\n  name: x\nspec:\n  deny:\n    - cidr: 10.0.0.0/40\n").unwrap();
    hup();
    wait_for("the error in the log", Duration::from_secs(10), || {
        daemon.log().contains(":7:13:")
    });
    assert!(shown().contains("127.0.0.9"), "old policy kept");
    assert!(
        daemon.log().contains("keeping the current policy"),
        "{}",
        daemon.log()
    );
}

#[test]
fn the_readme_break_glass_line_admits_only_that_user_when_restrictd_is_down() {
    let bus = Bus::new(true); // no daemon on it
    let user = User::new();
    let name = format!(
        "rdtest-pam-bg-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let service = format!("/etc/pam.d/{name}");
    // The README's two lines, as written there (user and module path filled in).
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let lines: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.contains("pam_succeed_if.so quiet user = breakglass"))
        .take(2)
        .collect();
    assert_eq!(lines.len(), 2, "the README's break-glass lines");
    assert!(lines[1].contains(" pam_restrict.so"), "{lines:?}");
    let stack = lines
        .iter()
        .map(|l| {
            l.replace("user = breakglass", "user = nobody")
                .replace(" pam_restrict.so", &format!(" {}", pam_module().display()))
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(
        &service,
        format!("session required pam_permit.so\n{stack}\n"),
    )
    .unwrap();
    let open = |who: &str| {
        std::process::Command::new("pamtester")
            .args([name.as_str(), who, "open_session"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .output()
            .unwrap()
            .status
            .success()
    };
    let (breakglass, other) = (open("nobody"), open(&user.name));
    let _ = std::fs::remove_file(&service);
    assert!(breakglass, "the break-glass user logs in");
    assert!(!other, "everyone else is refused while restrictd is down");
}

/// A user crafts an argument with a newline, a fake log line, a terminal
/// escape and a right-to-left override, to mislead whoever reads the
/// journal. What journalctl shows (MESSAGE and the text fields) carries no
/// control character; EVENT_JSON has the exact argument.
#[test]
fn crafted_arguments_cannot_forge_journal_lines() {
    let bus = Bus::new(true);
    let daemon = Daemon::with_journal(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &[])));
    let user = User::new();
    let sshd = Sshd::new(&bus, &user, "");
    let out = sshd.ssh(
        &user,
        r#"/bin/echo "forged$(printf '\n%s\033[2J\342\200\256' 'Nov 22 host restrictd: root ran /bin/true')""#,
    );
    assert!(out.status.success(), "{}", text(&out));
    let exact = "forged\nNov 22 host restrictd: root ran /bin/true\x1b[2J\u{202e}";
    wait_for("the command's event", Duration::from_secs(10), || {
        daemon.events().iter().any(|e| e["argv"][0] == exact)
    });
    // The private journald hands over what it got when the daemon stops.
    let mut daemon = daemon;
    daemon.stop();
    let entries = daemon.journal_entries();
    let j = entries
        .iter()
        .find(|j| j["PATH"] == "/bin/echo" && j["ARGV"].as_str().unwrap().contains("forged"))
        .unwrap_or_else(|| panic!("not in the journal: {entries:?}"));
    let message = j["MESSAGE"].as_str().unwrap();
    assert!(
        message.contains(
            r"ran /bin/echo forged\x0aNov 22 host restrictd: root ran /bin/true\x1b[2J\u{202e}"
        ),
        "{message:?}"
    );
    for (k, v) in j.as_object().unwrap() {
        if k == "EVENT_JSON" {
            continue;
        }
        let v = v.as_str().unwrap_or_else(|| panic!("{k} is a blob: {v}"));
        assert!(
            !v.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{k} has a control character: {v:?}"
        );
    }
    let argv: Vec<String> = serde_json::from_str(j["ARGV"].as_str().unwrap()).unwrap();
    assert_eq!(argv[0], exact);
    let ev: serde_json::Value = serde_json::from_str(j["EVENT_JSON"].as_str().unwrap()).unwrap();
    assert_eq!(ev["argv"][0], exact);
}

/// A user floods the recorder with thousands of junk opens to use up the
/// session's disk rate limit, then reads their SSH keys and tries
/// /etc/shadow. Both opens are recorded: always recorded paths are not
/// counted against the limit, which the flood did exhaust.
#[test]
fn a_flood_of_opens_cannot_hide_reading_sensitive_files() {
    // The user exists before the daemon starts: `~/.ssh` in disk_always
    // covers the homes in /etc/passwd at start.
    let user = User::new();
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &[])));
    flood_then_read_secrets(&bus, &daemon, &user);
}

/// The same for a user created after the daemon started: their `~/.ssh` is
/// covered from their first login.
#[test]
fn a_user_added_later_has_their_ssh_directory_always_recorded() {
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &[])));
    let user = User::new();
    flood_then_read_secrets(&bus, &daemon, &user);
}

/// The events of a session that ended after a flood of opens, which must
/// have used up its disk rate limit (else the test proves nothing).
fn events_after_flood(daemon: &Daemon) -> Vec<serde_json::Value> {
    let events = daemon.wait_any_end();
    let end = events.iter().find(|e| e["event"] == "session.end").unwrap();
    assert!(
        end["disk_events_dropped"].as_u64().unwrap_or(0) >= 1000,
        "the flood must have exhausted the rate limit: {end}"
    );
    events
}

/// The first `session.disk` event naming `path`.
fn disk_event(events: &[serde_json::Value], path: &str) -> Option<serde_json::Value> {
    events
        .iter()
        .find(|e| e["event"] == "session.disk" && e["path"] == path)
        .cloned()
}

fn flood_then_read_secrets(bus: &Bus, daemon: &Daemon, user: &User) {
    let sshd = Sshd::new(bus, user, "");
    let out = sshd.ssh(
        user,
        "python3 -c \"[open('/etc/hostname').close() for _ in range(3000)]\"; \
         cat ~/.ssh/authorized_keys > /dev/null; cat /etc/shadow 2>/dev/null; true",
    );
    assert!(out.status.success(), "{}", text(&out));
    let keys = format!("/home/{}/.ssh/authorized_keys", user.name);
    let events = events_after_flood(daemon);
    let disk = |path: &str| disk_event(&events, path);
    let k = disk(&keys).unwrap_or_else(|| panic!("reading {keys} not recorded"));
    assert_eq!(k["return_code"], 3, "cat's new file descriptor: {k}");
    let s = disk("/etc/shadow").expect("the /etc/shadow attempt not recorded");
    assert_eq!(s["return_code"], -13, "EACCES: {s}");
}

/// A user opens files through io_uring (IORING_OP_OPENAT), which makes no
/// open(2) call, to read without a trace: from their own task, relative
/// to a directory fd, by a SQPOLL ring's kernel thread, and their SSH keys
/// after a flood of junk opens has used up the session's rate limit. Each
/// open is recorded when submitted, by the kernel's copy of its path,
/// made absolute.
#[test]
fn opens_through_io_uring_are_recorded() {
    let user = User::new();
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &[])));
    let sshd = Sshd::new(&bus, &user, "");
    let escape = repo().join("tests/escape.py");
    let escape = escape.display();
    let out = sshd.ssh(
        &user,
        &format!(
            "python3 {escape} uring-open /etc/hostname /etc:passwd sqpoll:/etc/group /etc/no-such-file; \
             python3 -c \"[open('/etc/hostname').close() for _ in range(3000)]\"; \
             python3 {escape} uring-open ~/.ssh/authorized_keys"
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    let results = String::from_utf8_lossy(&out.stdout).to_string();
    let keys = format!("/home/{}/.ssh/authorized_keys", user.name);
    // The caller's view: every open but the missing file's was made.
    for spec in ["/etc/hostname", "/etc:passwd", "sqpoll:/etc/group", "/home"] {
        assert!(
            results.lines().any(
                |l| l.starts_with(spec) && l.rsplit('=').next().unwrap().parse::<i32>().is_ok()
            ),
            "{spec}: {results}"
        );
    }
    assert!(results.contains("/etc/no-such-file=ENOENT"), "{results}");
    let events = events_after_flood(&daemon);
    let uring = |path: &str| {
        events
            .iter()
            .find(|e| e["event"] == "session.disk" && e["path"] == path && e["io_uring"] == true)
            .cloned()
            .unwrap_or_else(|| panic!("the io_uring open of {path} is not recorded"))
    };
    for path in [
        "/etc/hostname",
        "/etc/passwd",
        "/etc/group",
        "/etc/no-such-file",
        &keys,
    ] {
        let e = uring(path);
        assert_eq!(e["user"], user.name.as_str(), "{e}");
        assert!(e.get("return_code").is_none(), "{e}");
        // (io_uring adds O_LARGEFILE.)
        assert_eq!(e["flags"].as_u64().unwrap() & 0o3, 0, "O_RDONLY: {e}");
    }
    // Submitted by the ring's kernel thread, in the user's session.
    let sq = uring("/etc/group");
    assert!(
        sq["program"].as_str().unwrap().starts_with("iou-sqp"),
        "{sq}"
    );
    assert_eq!(sq["sid"], uring("/etc/hostname")["sid"], "{sq}");
}

/// `~/.ssh` is always recorded, but a path is only one name of a file: the
/// user hard-links their key elsewhere (also into a directory deeper than
/// the kernel walks a path) and renames `~/.ssh`, floods the
/// recorder past its rate limit, then reads the key by both other names,
/// in the process that flooded so that the limit is still in force. Both
/// reads are recorded: the files under always recorded paths are known by
/// what they are. The key is new since the daemon started: the login finds
/// it.
#[test]
fn a_hard_link_or_a_renamed_ssh_directory_does_not_hide_a_key() {
    let user = User::new();
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &[])));
    let sshd = Sshd::new(&bus, &user, "");
    let home = format!("/home/{}", user.name);
    let key = format!("{home}/.ssh/id_new");
    std::fs::write(&key, "a key added after the daemon started\n").unwrap();
    let chown = std::process::Command::new("chown")
        .args([&format!("{}:", user.name), &key])
        .status()
        .unwrap();
    assert!(chown.success());
    let escape = repo().join("tests/escape.py");
    let out = sshd.ssh(
        &user,
        &format!(
            "d=~/deep; for i in $(seq 70); do d=$d/d; done; mkdir -p $d && \
             ln ~/.ssh/id_new $d/k && ln ~/.ssh/id_new ~/linked && mv ~/.ssh ~/renamed && \
             cd $d && python3 {} uring-open flood:3000:/etc/hostname plain:{home}/linked \
             plain:{home}/renamed/authorized_keys plain:k; mv ~/renamed ~/.ssh",
            escape.display()
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    let events = events_after_flood(&daemon);
    // `k` in a directory deeper than the kernel walks a path: named as
    // given, relative, and still known by what it is.
    for path in [
        format!("{home}/linked"),
        format!("{home}/renamed/authorized_keys"),
        "k".to_string(),
    ] {
        let e = disk_event(&events, &path)
            .unwrap_or_else(|| panic!("reading the key as {path} is not recorded"));
        assert!(e["return_code"].as_i64().unwrap() >= 0, "{e}");
        assert_eq!(e["user"], user.name.as_str(), "{e}");
    }
}

/// The path filter judges a path by its prefix, and the default leaves out
/// `/usr/lib/locale`. A path the kernel did not resolve for the record (a
/// failed open's, an io_uring open's) can climb out of there with `..`:
/// `/usr/lib/locale/../../../etc/shadow` is /etc/shadow. A user tries it,
/// after a flood has used up the session's rate limit, in the same process
/// so that the limit is still in force: every such attempt is recorded,
/// while opens of real locale files (made with open(2)) stay left out.
#[test]
fn dot_dot_out_of_an_excluded_prefix_hides_no_open() {
    let user = User::new();
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &[])));
    let sshd = Sshd::new(&bus, &user, "");
    let escape = repo().join("tests/escape.py");
    let out = sshd.ssh(
        &user,
        &format!(
            "cd /usr/lib/locale && python3 {} uring-open flood:3000:/etc/hostname \
             ../../../etc/hostname plain:../../../etc/shadow \
             plain:/usr/lib/locale/../../../etc/gshadow plain:./../../..//etc/no-such \
             plain:no-such plain:C.utf8/LC_CTYPE C.utf8/LC_NAME",
            escape.display()
        ),
    );
    assert!(out.status.success(), "{}", text(&out));
    let results = String::from_utf8_lossy(&out.stdout).to_string();
    for (spec, result) in [
        ("plain:../../../etc/shadow", "EACCES"),
        ("plain:/usr/lib/locale/../../../etc/gshadow", "EACCES"),
        ("plain:./../../..//etc/no-such", "ENOENT"),
        ("plain:no-such", "ENOENT"),
    ] {
        assert!(
            results.contains(&format!("{spec}={result}\n")),
            "{spec}: {results}"
        );
    }
    let events = events_after_flood(&daemon);
    let disk = |path: &str| disk_event(&events, path);
    let climbed = |path: &str| {
        disk(path).unwrap_or_else(|| panic!("the open of {path} is not recorded: {events:#?}"))
    };
    let e = climbed("/usr/lib/locale/../../../etc/hostname");
    assert_eq!(e["io_uring"], true, "{e}");
    for path in [
        "/usr/lib/locale/../../../etc/shadow",
        "/usr/lib/locale/../../../etc/gshadow",
    ] {
        let e = climbed(path);
        assert_eq!(e["return_code"], -13, "EACCES: {e}");
        assert_eq!(e["user"], user.name.as_str(), "{e}");
    }
    // (The record's path drops `.` and empty components.)
    assert_eq!(
        climbed("/usr/lib/locale/../../../etc/no-such")["return_code"],
        -2
    );
    // io_uring opens are not judged by their path at all.
    assert_eq!(climbed("/usr/lib/locale/C.utf8/LC_NAME")["io_uring"], true);
    // What the filter is for still holds.
    for path in ["/usr/lib/locale/no-such", "/usr/lib/locale/C.utf8/LC_CTYPE"] {
        assert!(
            disk(path).is_none(),
            "{path} is excluded: {:#?}",
            disk(path)
        );
    }
}

/// A kernel whose verifier refuses the io_uring program (as Debian's 6.1
/// once did) costs only that record: the daemon starts, says so, restricts
/// and records as before.
#[test]
fn a_refused_io_uring_program_costs_only_its_record() {
    let user = User::new();
    let bus = Bus::new(true);
    let (denied, pd) = tcp_listener("127.0.0.2");
    denied.set_nonblocking(true).unwrap();
    let mut daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.1"], &[])));
    // Started once without the fault, its link is pinned: unpin it, so
    // that the next start attaches (and is refused) again.
    daemon.stop();
    for version in std::fs::read_dir(&daemon.pin_dir).unwrap() {
        for link in std::fs::read_dir(version.unwrap().path()).unwrap() {
            let link = link.unwrap().path();
            if link
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("link-rtp-io_uring")
            {
                std::fs::remove_file(link).unwrap();
            }
        }
    }
    daemon
        .env
        .push(("RESTRICTD_FAULT".into(), "refuse-disk_uring".into()));
    daemon.start();
    assert!(
        daemon
            .log()
            .contains("opens made through io_uring are not recorded on this kernel"),
        "{}",
        daemon.log()
    );
    let sshd = Sshd::new(&bus, &user, "");
    let escape = repo().join("tests/escape.py");
    let out = sshd.ssh(
        &user,
        &format!(
            "cat /etc/hostname >/dev/null; python3 {} uring-open /etc/passwd; {}",
            escape.display(),
            probe_cmd("tcp", "127.0.0.2", pd)
        ),
    );
    assert!(text(&out).contains("EPERM"), "{}", text(&out));
    assert!(
        denied.accept().is_err(),
        "the denied listener got a connection"
    );
    let events = daemon.wait_any_end();
    let disk = |path: &str| {
        events
            .iter()
            .filter(|e| e["event"] == "session.disk" && e["path"] == path)
            .count()
    };
    assert!(disk("/etc/hostname") >= 1, "{events:#?}");
    // The one record lost: the io_uring open (made: the caller got an fd).
    let made = String::from_utf8_lossy(&out.stdout).lines().any(|l| {
        l.strip_prefix("/etc/passwd=")
            .is_some_and(|fd| fd.parse::<u32>().is_ok())
    });
    assert!(made, "{}", text(&out));
    assert!(events.iter().all(|e| e["io_uring"] != true), "{events:#?}");
}

/// A user floods the recorder with junk opens past the session's disk
/// rate limit and stays logged in. The loss is reported as an event of
/// that session within seconds, while it runs, and shown for that session
/// (not another login's) in `restrictctl sessions` and `status`; the lost
/// events take `ei` numbers of their own, so that the session's `ei`
/// values and the reported ranges together count up without a gap or a
/// double.
#[test]
fn losses_are_reported_while_the_session_runs_and_only_for_it() {
    let user = User::new();
    let bus = Bus::new(true);
    // A low limit: the flood is over it by far even when a busy test host
    // stretches the 3,000 opens over several one-second windows.
    let daemon = Daemon::with_config(
        &bus,
        Some(&policy_yaml(&["127.0.0.0/8"], &[])),
        "enhanced_recording:\n  disk_rate_limit: 200\n",
    );
    let sshd = Sshd::new(&bus, &user, "");
    let mut quiet = sshd
        .ssh_cmd(&user, "echo ready; exec cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    read_until(quiet.stdout.as_mut().unwrap(), "ready");
    let mut flood = sshd
        .ssh_cmd(
            &user,
            "python3 -c \"[open('/etc/hostname').close() for _ in range(3000)]\"; \
             echo flooded; exec cat",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    read_until(flood.stdout.as_mut().unwrap(), "flooded");
    let flooded_at = std::time::Instant::now();

    // The report comes while the session runs.
    let mut reports = Vec::new();
    wait_for("a session.lost event", Duration::from_secs(5), || {
        reports = daemon
            .events()
            .into_iter()
            .filter(|e| e["event"] == "session.lost")
            .collect();
        !reports.is_empty()
    });
    eprintln!("reported {:?} after the flood", flooded_at.elapsed());
    let sid = reports[0]["sid"].as_str().unwrap().to_string();
    let sessions = daemon.sessions();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let (flooder, other): (Vec<_>, Vec<_>) = sessions.iter().partition(|s| s["sid"] == sid);
    assert_eq!(
        flooder.len(),
        1,
        "the report names a live session: {sessions:?}"
    );
    assert!(
        flooder[0]["disk_events_dropped"].as_u64().unwrap() >= 1000,
        "{sessions:?}"
    );
    assert_eq!(other[0]["disk_events_dropped"], 0, "{sessions:?}");
    let status = String::from_utf8_lossy(&daemon.ctl(&["status"]).stdout).into_owned();
    assert!(
        status.contains(&format!("session {sid} ({})", user.name)),
        "{status}"
    );
    assert!(
        !status.contains(other[0]["sid"].as_str().unwrap()),
        "{status}"
    );

    // End of input ends both logins (their `cat`).
    drop(quiet.stdin.take());
    drop(flood.stdin.take());
    let _ = quiet.wait();
    let _ = flood.wait();
    let mut events = Vec::new();
    wait_for("both sessions' ends", Duration::from_secs(10), || {
        events = daemon.events();
        events
            .iter()
            .filter(|e| e["event"] == "session.end")
            .count()
            == 2
    });
    let lost = assert_ei_accounted(&events, &sid);
    let end = events
        .iter()
        .find(|e| e["event"] == "session.end" && e["sid"] == sid)
        .unwrap();
    let reported: u64 = lost
        .iter()
        .map(|e| e["disk_events_dropped"].as_u64().unwrap())
        .sum();
    assert_eq!(end["disk_events_dropped"], reported, "{end}");
}

/// A user floods one denied host with datagrams for three seconds, then
/// runs a command and tries another denied host. The flood is a handful of
/// events whose counts add up to exactly the sends that failed (the
/// listener got none of them), and the command and the other denial after
/// it are recorded: the flood hides nothing and nothing is reported lost.
#[test]
fn a_denial_flood_is_aggregated_with_exact_counts_and_hides_nothing() {
    let user = User::new();
    let bus = Bus::new(true);
    let (flooded, port) = udp_socket("127.0.0.2");
    let (_other, other_port) = tcp_listener("127.0.0.3");
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.1/32"], &[])));
    let sshd = Sshd::new(&bus, &user, "");
    let flood = format!(
        "python3 -c \"\nimport socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         n = 0\nend = time.monotonic() + 3\nwhile time.monotonic() < end:\n    try:\n        \
         s.sendto(b'x', ('127.0.0.2', {port}))\n    except PermissionError:\n        n += 1\n\
         print('denied', n)\n\"; /bin/echo after-the-flood; {}; true",
        probe_cmd("tcp", "127.0.0.3", other_port)
    );
    let out = sshd.ssh(&user, &flood);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let denied: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("denied "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(denied > 10_000, "a flood: {denied}");
    flooded.set_nonblocking(true).unwrap();
    assert!(
        flooded.recv(&mut [0u8; 16]).is_err(),
        "a denied datagram arrived"
    );

    let events = daemon.wait_any_end();
    let reports: Vec<_> = events
        .iter()
        .filter(|e| {
            e["event"] == "session.network"
                && e["action"] == 1
                && e["dst_addr"] == "127.0.0.2"
                && e["dst_port"] == port
        })
        .collect();
    let counted: u64 = reports
        .iter()
        .map(|e| 1 + e["repeats"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(counted, denied, "over {} events", reports.len());
    assert!(
        (2..=8).contains(&reports.len()),
        "about one event a second: {}",
        reports.len()
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "session.command" && e["argv"][0] == "after-the-flood"),
        "the command after the flood is recorded"
    );
    assert!(
        events.iter().any(|e| e["event"] == "session.network"
            && e["action"] == 1
            && e["dst_addr"] == "127.0.0.3"),
        "the other denial after the flood is recorded"
    );
    assert!(
        !events.iter().any(|e| e["event"] == "session.lost"),
        "nothing lost"
    );
    let sid = reports[0]["sid"].as_str().unwrap().to_string();
    assert_ei_accounted(&events, &sid);
}

/// One login floods the network ring buffer with distinct denials (a scan
/// of every port of a denied host) while another login of the same user
/// makes 30 denials of its own. The flood is cut to its share once the
/// buffer is half full and reported as that session's loss; the other
/// session's denials are all recorded and it loses nothing.
#[test]
fn one_sessions_flood_cannot_starve_another() {
    let user = User::new();
    let bus = Bus::new(true);
    // A 64 KiB buffer (some 580 records): the flood outruns the writer
    // for certain, and the half it leaves holds the quiet session's
    // records through a few seconds of the writer not running (the test
    // host is busy with other tests).
    let daemon = Daemon::with_config(
        &bus,
        Some(&policy_yaml(&["127.0.0.1/32"], &[])),
        "enhanced_recording:\n  network_buffer_size: 16\n",
    );
    let sshd = Sshd::new(&bus, &user, "");
    let scan = "python3 -u -c \"\nimport socket, time\nprint('flooding')\n\
                end = time.monotonic() + 4\nport = 1\nwhile time.monotonic() < end:\n    \
                s = socket.socket()\n    try:\n        s.connect(('127.0.0.2', port))\n    \
                except OSError:\n        pass\n    s.close()\n    port = port % 65535 + 1\n\"";
    let mut flood = sshd
        .ssh_cmd(&user, scan)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    read_until(flood.stdout.as_mut().unwrap(), "flooding");
    let quiet = "python3 -c \"\nimport socket, time\nfor i in range(30):\n    \
                 s = socket.socket()\n    try:\n        s.connect(('127.0.0.3', 20000 + i))\n    \
                 except PermissionError:\n        print('denied')\n    s.close()\n    \
                 time.sleep(0.05)\n\"; echo $RESTRICTD_SESSION_ID";
    let out = sshd.ssh(&user, quiet);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(stdout.matches("denied").count(), 30, "{stdout}");
    let quiet_sid = stdout.lines().last().unwrap().trim().to_string();
    assert!(flood.wait().unwrap().success());

    let mut events = Vec::new();
    wait_for("both sessions' ends", Duration::from_secs(20), || {
        events = daemon.events();
        events
            .iter()
            .filter(|e| e["event"] == "session.end")
            .count()
            == 2
    });
    let quiet_denials = events
        .iter()
        .filter(|e| e["sid"] == quiet_sid && e["action"] == 1 && e["dst_addr"] == "127.0.0.3")
        .count();
    assert_eq!(quiet_denials, 30, "the quiet session's denials");
    assert!(
        assert_ei_accounted(&events, &quiet_sid).is_empty(),
        "the quiet session lost nothing"
    );
    let flood_sid = events
        .iter()
        .find(|e| e["event"] == "session.start" && e["sid"] != quiet_sid)
        .unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let shed: u64 = assert_ei_accounted(&events, &flood_sid)
        .iter()
        .map(|e| e["network_events_dropped"].as_u64().unwrap())
        .sum();
    assert!(shed > 0, "the flood was cut to its share");
}

/// Opens through the 32-bit syscall entry (`int $0x80`, which a 64-bit
/// process can execute from a page it writes, no compiler needed): the
/// kernel's per-syscall tracepoints skip such calls, so they opened files
/// unrecorded. Both a success and a failure must be in the record, once.
#[test]
fn opens_through_the_32_bit_syscall_entry_are_recorded() {
    let user = User::new();
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &[])));
    let sshd = Sshd::new(&bus, &user, "");
    let script = format!(
        "set -e\n\
         echo s3cret > ~/secret\n\
         echo home=$HOME\n\
         echo secret=$(python3 {p} $HOME/secret)\n\
         echo missing=$(python3 {p} $HOME/missing)",
        p = repo().join("tests/int80.py").display()
    );
    let out = sshd.ssh(&user, &script);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} in {stdout}"))
            .trim()
            .to_string()
    };
    let home = field("home");
    // The attack itself worked: the file opened, the missing one did not.
    assert!(field("secret").parse::<i64>().unwrap() >= 0, "{stdout}");
    assert_eq!(field("missing"), "-2", "{stdout}");
    let events = daemon.wait_any_end();
    let opens = |path: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|e| {
                e["event"] == "session.disk" && e["program"] == "python3" && e["path"] == path
            })
            .collect()
    };
    let secret = opens(&format!("{home}/secret"));
    assert_eq!(secret.len(), 1, "the ia32 open of the secret: {secret:?}");
    assert!(
        secret[0]["return_code"].as_i64() >= Some(0),
        "{}",
        secret[0]
    );
    assert_eq!(secret[0]["user"], user.name.as_str());
    let missing = opens(&format!("{home}/missing"));
    assert_eq!(missing.len(), 1, "the failed ia32 open: {missing:?}");
    assert_eq!(missing[0]["return_code"], -2, "{}", missing[0]);
}

/// A user tries to read a file where the recorder does not look: a copy in
/// /dev/shm (under /dev, a tmpfs), their home bound under /dev/shm and a
/// file bound over an excluded locale path, both in a mount namespace of
/// their own (`unshare -Urm`), and that bound file read from the host's
/// mount namespace through the namespace's root (`/proc/PID/root`). All
/// four reads are recorded; what is left out is what a file is (a device,
/// /proc), not where it appears.
#[test]
fn files_cannot_hide_under_device_or_excluded_paths() {
    let user = User::new();
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &[])));
    let sshd = Sshd::new(&bus, &user, "");
    let script = r#"set -e
        s=$RESTRICTD_SESSION_ID
        echo s3cret > ~/secret
        cp ~/secret /dev/shm/$s.copy; cat /dev/shm/$s.copy > /dev/null
        mkdir /dev/shm/$s.d
        unshare -Urm sh -c "mount --bind $HOME /dev/shm/$s.d && cat /dev/shm/$s.d/secret > /dev/null"
        unshare -Urm sh -c "mount --bind $HOME/secret /usr/lib/locale/C.utf8/LC_PAPER && cat /usr/lib/locale/C.utf8/LC_PAPER > /dev/null"
        head -c1 /usr/lib/locale/C.utf8/LC_PAPER > /dev/null
        unshare -Urm sh -c "mount --bind $HOME/secret /usr/lib/locale/C.utf8/LC_NAME && touch ~/bound && while [ ! -e ~/read ]; do sleep 0.05; done" &
        while [ ! -e ~/bound ]; do sleep 0.05; done
        tail -c1 /proc/$!/root/usr/lib/locale/C.utf8/LC_NAME > /dev/null
        touch ~/read; wait
        cat /proc/self/status > /dev/null
        rm /dev/shm/$s.copy; rmdir /dev/shm/$s.d
        echo sid=$s"#;
    let out = sshd.ssh(&user, script);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let sid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("sid="))
        .unwrap()
        .trim()
        .to_string();
    let events = daemon.wait_any_end();
    let open_event = |program: &str, path: &str| {
        events.iter().find(|e| {
            e["event"] == "session.disk"
                && e["sid"] == sid
                && e["program"] == program
                && e["path"] == path
                && e["return_code"].as_i64() >= Some(0)
        })
    };
    let opened = |program: &str, path: &str| open_event(program, path).is_some();
    // A path of the user's own namespace is flagged as such (the reader
    // of the journal sees where the file appeared, not what it is).
    let flagged = |program: &str, path: &str| {
        open_event(program, path).map(|e| e["path_user_mount_ns"] == true)
    };
    assert_eq!(
        flagged("cat", &format!("/dev/shm/{sid}.copy")),
        Some(false),
        "the host's path"
    );
    for (program, path) in [
        ("cat", format!("/dev/shm/{sid}.d/secret")),
        ("cat", "/usr/lib/locale/C.utf8/LC_PAPER".to_string()),
        ("tail", "/usr/lib/locale/C.utf8/LC_NAME".to_string()),
    ] {
        assert_eq!(flagged(program, &path), Some(true), "{program} {path}");
    }
    assert!(
        opened("cat", &format!("/dev/shm/{sid}.copy")),
        "a copy in /dev/shm"
    );
    assert!(
        opened("cat", &format!("/dev/shm/{sid}.d/secret")),
        "the home bound under /dev/shm"
    );
    let paths: Vec<String> = events
        .iter()
        .filter(|e| {
            e["event"] == "session.disk" && (e["program"] == "cat" || e["program"] == "tail")
        })
        .map(|e| format!("{} {}", e["path"], e["return_code"]))
        .collect();
    assert!(
        opened("cat", "/usr/lib/locale/C.utf8/LC_PAPER"),
        "a file bound over an excluded path in the user's mount namespace: {paths:?}"
    );
    assert!(
        opened("tail", "/usr/lib/locale/C.utf8/LC_NAME"),
        "a file bound over an excluded path in the user's mount namespace, \
         read from the host's through /proc/PID/root: {paths:?}"
    );
    assert!(
        !opened("head", "/usr/lib/locale/C.utf8/LC_PAPER"),
        "the excluded path itself, in the host's mount namespace, is not recorded"
    );
    let noise: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "session.disk")
        .filter_map(|e| e["path"].as_str())
        .filter(|p| p.starts_with("/proc/") || *p == "/dev/null" || p.starts_with("/dev/pts"))
        .collect();
    assert!(
        noise.is_empty(),
        "devices and /proc are left out: {noise:?}"
    );
}

/// A user runs programs under names that are not theirs: a symlink named
/// `ls` to echo, a binary executed through its file descriptor, a memfd
/// called `sshd`, a process that renames itself `sshd` before a denied
/// connect, and echo bound over `/usr/bin/ls` in a mount namespace of the
/// user's own, run there and from outside through `/proc/PID/root`. Each
/// event names the program that really ran, beside the name the user gave,
/// and flags a path that only the user's namespace gives the program.
#[test]
fn programs_are_named_by_what_runs_not_by_what_the_user_calls_them() {
    let user = User::new();
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.1/32"], &[])));
    let sshd = Sshd::new(&bus, &user, "");
    let script = r#"set -e
        ln -s /bin/echo ~/ls; ~/ls via-symlink
        python3 -c "import os; fd = os.open('/bin/true', os.O_RDONLY); os.execve(fd, ['true', 'via-fd'], {})"
        python3 -c "
import os
fd = os.memfd_create('sshd')
os.write(fd, open('/bin/true', 'rb').read())
os.execve(fd, ['sshd', 'from-memfd'], {})"
        python3 -c "
import ctypes, socket
ctypes.CDLL(None).prctl(15, b'sshd', 0, 0, 0)
try:
    socket.create_connection(('127.0.0.2', 9), timeout=2)
except PermissionError:
    print('denied')"
        unshare -Urm sh -c "mount --bind /bin/echo /usr/bin/ls && /usr/bin/ls in-own-namespace && touch ~/bound && while [ ! -e ~/ran ]; do sleep 0.05; done" &
        while [ ! -e ~/bound ]; do sleep 0.05; done
        /proc/$!/root/usr/bin/ls from-outside
        touch ~/ran; wait
        echo sid=$RESTRICTD_SESSION_ID"#;
    let out = sshd.ssh(&user, script);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("denied"), "{stdout}");
    let events = daemon.wait_any_end();
    let command = |arg: &str| {
        events
            .iter()
            .find(|e| e["event"] == "session.command" && e["argv"][0] == arg)
            .unwrap_or_else(|| panic!("no command with {arg}"))
            .clone()
    };
    let echo = std::fs::canonicalize("/bin/echo").unwrap();
    let truth = std::fs::canonicalize("/bin/true").unwrap();
    let c = command("via-symlink");
    assert_eq!(c["path"], format!("/home/{}/ls", user.name), "{c}");
    assert_eq!(c["exe"], echo.to_str().unwrap(), "{c}");
    assert!(c.get("exe_user_mount_ns").is_none(), "{c}");
    // echo appears as /usr/bin/ls only in the user's namespace: flagged,
    // also when run from the host's namespace through /proc/PID/root.
    for arg in ["in-own-namespace", "from-outside"] {
        let c = command(arg);
        assert_eq!(c["exe"], "/usr/bin/ls", "{c}");
        assert_eq!(c["exe_user_mount_ns"], true, "{c}");
    }
    let c = command("via-fd");
    assert!(c["path"].as_str().unwrap().starts_with("/dev/fd/"), "{c}");
    assert_eq!(c["exe"], truth.to_str().unwrap(), "{c}");
    let c = command("from-memfd");
    assert_eq!(c["exe"], "/memfd:sshd", "{c}");
    assert_eq!(
        (c["exe_memfd"].as_bool(), c["exe_unlinked"].as_bool()),
        (Some(true), Some(true)),
        "{c}"
    );
    let d = events
        .iter()
        .find(|e| {
            e["event"] == "session.network" && e["action"] == 1 && e["dst_addr"] == "127.0.0.2"
        })
        .expect("the denial");
    assert_eq!(d["program"], "sshd", "{d}");
    let exe = d["exe"].as_str().unwrap_or_else(|| panic!("no exe: {d}"));
    assert!(exe.contains("/python3"), "{d}");
}

/// A user pads a command line with 100 KB of junk before what it really
/// does, to push that past the recorded part. With `argv_limit: 131072`
/// the whole command line is recorded (in 8 KiB records, joined again);
/// past the limit it is cut and flagged with its true length.
#[test]
fn padding_cannot_push_a_command_past_what_is_recorded() {
    let user = User::new();
    let bus = Bus::new(true);
    let daemon = Daemon::with_config(
        &bus,
        Some(&policy_yaml(&["127.0.0.0/8"], &[])),
        "enhanced_recording:\n  argv_limit: 131072\n  command_buffer_size: 128\n",
    );
    let sshd = Sshd::new(&bus, &user, "");
    let script = r#"pad=$(head -c 100000 /dev/zero | tr '\0' x)
        /bin/echo "$pad" the-real-payload > /dev/null
        /bin/echo "$pad" "$pad" past-the-limit > /dev/null"#;
    let out = sshd.ssh(&user, script);
    assert!(out.status.success(), "{}", text(&out));
    let events = daemon.wait_any_end();
    let echo = |n: usize| {
        events
            .iter()
            .find(|e| {
                e["event"] == "session.command"
                    && e["path"] == "/bin/echo"
                    && e["argv"].as_array().map(|a| a.len()) == Some(n)
            })
            .unwrap_or_else(|| panic!("no echo with {n} arguments"))
            .clone()
    };
    let e = echo(2);
    assert_eq!(e["argv0"], "/bin/echo");
    assert_eq!(e["argv"][0].as_str().unwrap().len(), 100_000);
    assert_eq!(e["argv"][1], "the-real-payload");
    assert!(
        e.get("argv_truncated").is_none(),
        "whole: {}",
        e["argv_length"]
    );
    // 10 + 100001 + 100001 + 15 bytes: cut at 131072, with its length.
    let e = events
        .iter()
        .find(|e| e["event"] == "session.command" && e["argv_truncated"] == true)
        .expect("the command past the limit");
    assert_eq!(e["argv_length"], 10 + 2 * 100_001 + 15);
    let kept: usize = e["argv0"].as_str().unwrap().len()
        + 1
        + e["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().len() + 1)
            .sum::<usize>();
    assert_eq!(kept, 131_072 + 1, "the limit, cut mid-argument");
}

/// An sshd whose PAM stack runs, after the module's line (`module_args`),
/// pam_exec moving sshd's `[priv]` into `session-N.scope` under a fake
/// logind slice in the daemon's cgroup root, as pam_systemd has logind do.
/// The directory holds the mover script.
fn sshd_moving_logins_to_a_scope(
    bus: &Bus,
    daemon: &Daemon,
    user: &User,
    module_args: &str,
    n: u32,
) -> (tempfile::TempDir, Sshd) {
    let scope = daemon.root.join(format!(
        "user.slice/user-{}.slice/session-{n}.scope",
        user.uid
    ));
    std::fs::create_dir_all(&scope).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mover = dir.path().join("move-to-scope");
    std::fs::write(
        &mover,
        format!("#!/bin/sh\necho $PPID > {}/cgroup.procs\n", scope.display()),
    )
    .unwrap();
    std::fs::set_permissions(&mover, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let sshd = Sshd::with_session_after(
        bus,
        user,
        module_args,
        &format!("session required pam_exec.so {}\n", mover.display()),
    );
    (dir, sshd)
}

/// The PAM line placed before a module that moves the login to another
/// cgroup, as pam_systemd has logind do (here pam_exec moves sshd's
/// `[priv]` into a `session-N.scope` made by the test). The user is
/// exempt from identity restriction, so only the session can restrict
/// them: the shell, forked after the move, is still restricted (the denied
/// listener gets nothing), its events carry the session id, and the
/// session ends at logout, not when restrictd's own cgroup emptied.
#[test]
fn a_pam_module_after_the_line_that_moves_the_login_cannot_free_it() {
    let user = User::new();
    let bus = Bus::new(true);
    let (allowed, pa) = tcp_listener("127.0.0.1");
    let (denied, pd) = tcp_listener("127.0.0.2");
    denied.set_nonblocking(true).unwrap();
    let daemon = Daemon::with_config(
        &bus,
        Some(&policy_yaml(&["127.0.0.1"], &[])),
        &format!("  exempt_users: [{}]\n", user.name),
    );
    let (_dir, sshd) = sshd_moving_logins_to_a_scope(&bus, &daemon, &user, "fail=closed", 77);
    let out = sshd.ssh(
        &user,
        &format!(
            "echo sid=$RESTRICTD_SESSION_ID; grep ^0:: /proc/self/cgroup; {}; {}; true",
            probe_cmd("tcp", "127.0.0.1", pa),
            probe_cmd("tcp", "127.0.0.2", pd)
        ),
    );
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}\nsshd: {}", text(&out), sshd.log());
    let lines: Vec<&str> = s.lines().collect();
    let sid = lines[0].strip_prefix("sid=").unwrap().to_string();
    assert!(
        lines[1].ends_with("/session-77.scope"),
        "the later module moved the login: {s}"
    );
    assert_eq!(
        &lines[2..],
        ["ok", "EPERM"],
        "{s}\ndaemon: {}",
        daemon.log()
    );
    assert!(
        denied.accept().is_err(),
        "the denied listener got a connection"
    );
    drop(allowed);
    let events = daemon.wait_end(&sid);
    let denial = events
        .iter()
        .find(|e| e["event"] == "session.network" && e["dst_port"] == pd)
        .unwrap_or_else(|| panic!("denial not recorded: {events:?}"));
    assert_eq!(denial["sid"], sid.as_str(), "{denial}");
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "session.command" && e["sid"] == sid.as_str()),
        "{events:?}"
    );
    let end = events
        .iter()
        .position(|e| e["event"] == "session.end" && e["sid"] == sid.as_str())
        .unwrap();
    let last_cmd = events
        .iter()
        .rposition(|e| e["event"] == "session.command" && e["sid"] == sid.as_str())
        .unwrap();
    assert!(last_cmd < end, "the session ended before its commands");
    assert!(
        daemon.log().contains("the session follows it"),
        "{}",
        daemon.log()
    );
}

/// A session ends when its last process exits, not at the next poll: a
/// process left behind after logout writes the time and exits; the
/// session's `session.end` is stamped within 100 ms of that.
#[test]
fn a_session_ends_within_100_ms_of_its_last_process() {
    let user = User::new();
    let bus = Bus::new(true);
    let daemon = Daemon::new(&bus, None);
    let sshd = Sshd::new(&bus, &user, "");
    let out = sshd.ssh(
        &user,
        "echo $RESTRICTD_SESSION_ID; \
         setsid -f sh -c 'sleep 1.5; date +%s.%N > ~/left-at' </dev/null >/dev/null 2>&1",
    );
    assert!(out.status.success(), "{}", text(&out));
    let sid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let events = daemon.wait_end(&sid);
    let left: f64 = std::fs::read_to_string(format!("/home/{}/left-at", user.name))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let end = events
        .iter()
        .find(|e| e["event"] == "session.end" && e["sid"] == sid.as_str())
        .unwrap();
    let ended = chrono::DateTime::parse_from_rfc3339(end["time"].as_str().unwrap()).unwrap();
    let ended = ended.timestamp() as f64 + ended.timestamp_subsec_nanos() as f64 / 1e9;
    let latency_ms = (ended - left) * 1000.0;
    eprintln!("session.end {latency_ms:.1} ms after the last process's last write");
    assert!(
        (0.0..100.0).contains(&latency_ms),
        "session.end {latency_ms:.1} ms after the last process exited"
    );
}

/// The pinned programs and maps are versioned: a daemon whose kernel state
/// differs (here a changed ring buffer size, as an upgrade changes the
/// object) starts with new maps filled from its own state, attaches its
/// programs, then retires the old ones. A session probing a denied host
/// every 50 ms throughout never gets through (the user is exempt from
/// identity restriction, so only the session restricts them), is recorded
/// by the new programs afterwards, and one version is left pinned.
#[test]
fn a_new_kernel_state_version_takes_over_running_sessions_without_a_gap() {
    use std::io::{BufRead, BufReader};
    let user = User::new();
    let bus = Bus::new(true);
    let (denied, pd) = tcp_listener("127.0.0.2");
    denied.set_nonblocking(true).unwrap();
    let mut daemon = Daemon::with_config(
        &bus,
        Some(&policy_yaml(&["127.0.0.1"], &[])),
        &format!("  exempt_users: [{}]\n", user.name),
    );
    let versions = |d: &Daemon| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&d.pin_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let before = versions(&daemon);
    assert_eq!(before.len(), 1, "one version pinned: {before:?}");
    let sshd = Sshd::new(&bus, &user, "");
    let stop = daemon.dir.path().join("stop");
    let script = format!(
        "echo sid=$RESTRICTD_SESSION_ID; while [ ! -e {stop} ]; do {p}; sleep 0.05; done; \
         cat /etc/hostname > /dev/null",
        stop = stop.display(),
        p = probe_cmd("tcp", "127.0.0.2", pd),
    );
    let mut child = sshd
        .ssh_cmd(&user, &script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let sid = line.trim().strip_prefix("sid=").unwrap().to_string();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "EPERM");

    daemon.stop();
    let mut config = std::fs::read_to_string(&daemon.config).unwrap();
    config.push_str("enhanced_recording:\n  network_buffer_size: 16\n");
    std::fs::write(&daemon.config, config).unwrap();
    daemon.start();
    let after = versions(&daemon);
    assert_eq!(after.len(), 1, "the old version is retired: {after:?}");
    assert_ne!(after, before, "a changed buffer size is another version");
    assert_eq!(daemon.sessions()[0]["sid"], sid.as_str());
    assert!(daemon.log().contains("replaces"), "{}", daemon.log());
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&stop, "").unwrap();
    let rest: Vec<String> = out.lines().map(|l| l.unwrap()).collect();
    assert!(child.wait().unwrap().success());
    assert!(rest.len() >= 3, "the probe ran across the switch: {rest:?}");
    assert!(rest.iter().all(|l| l == "EPERM"), "{rest:?}");
    assert!(
        denied.accept().is_err(),
        "the denied listener got a connection"
    );
    let events = daemon.wait_end(&sid);
    assert!(
        events.iter().any(|e| e["event"] == "session.command"
            && e["sid"] == sid.as_str()
            && e["path"] == "/usr/bin/cat"),
        "recorded by the new version: {events:?}"
    );
}

/// Faults in restrictd's own state: with its identities list and a
/// session's state file corrupted while it is stopped, the daemon starts
/// again; the running session and the user's processes outside it stay
/// restricted (the kernel's list stands in for the lost one, which is kept
/// aside); with the identities file's directory read-only, a new user's
/// first login is still admitted and restricted.
#[test]
fn corrupt_or_unwritable_state_neither_stops_the_daemon_nor_frees_anyone() {
    use std::io::{BufRead, BufReader};
    let user = User::new();
    let bus = Bus::new(true);
    let (denied, pd) = tcp_listener("127.0.0.2");
    denied.set_nonblocking(true).unwrap();
    let mut daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.1"], &[])));
    let sshd = Sshd::new(&bus, &user, "");
    let go = daemon.dir.path().join("go");
    let script = format!(
        "echo sid=$RESTRICTD_SESSION_ID; while [ ! -e {go} ]; do sleep 0.05; done; {p}",
        go = go.display(),
        p = probe_cmd("tcp", "127.0.0.2", pd),
    );
    let mut child = sshd
        .ssh_cmd(&user, &script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let sid = line.trim().strip_prefix("sid=").unwrap().to_string();

    daemon.stop();
    let ids = daemon.dir.path().join("identities.json");
    std::fs::write(&ids, "{ not json").unwrap();
    let saved = daemon.dir.path().join(format!("state/sessions/{sid}.json"));
    assert!(saved.exists());
    std::fs::write(&saved, "\0\0garbage").unwrap();
    daemon.start();
    assert!(daemon.ctl(&["status"]).status.success());
    assert!(
        daemon
            .log()
            .contains("unreadable list of restricted identities"),
        "{}",
        daemon.log()
    );
    let kept = std::fs::read_to_string(&ids).unwrap();
    assert!(kept.contains(&format!("\"uid\": {}", user.uid)), "{kept}");
    assert!(daemon.dir.path().join("identities.json.corrupt").exists());

    // The session (which the daemon no longer knows) and a process of the
    // user outside it.
    std::fs::write(&go, "").unwrap();
    let rest: Vec<String> = out.lines().map(|l| l.unwrap()).collect();
    let _ = child.wait();
    assert_eq!(rest, ["EPERM"], "the session is still restricted");
    let outside = user.run(
        &[
            "python3",
            &common::probe(),
            "tcp",
            "127.0.0.2",
            &pd.to_string(),
        ],
        &[],
    );
    assert_eq!(
        String::from_utf8_lossy(&outside.stdout).trim(),
        "EPERM",
        "the user is still restricted outside sessions"
    );
    assert!(
        denied.accept().is_err(),
        "the denied listener got a connection"
    );

    // The identities file cannot be written: a new user's first login is
    // admitted, and restricted as a session.
    let ro = daemon.dir.path();
    let mount = |args: &[&str]| {
        assert!(std::process::Command::new("mount")
            .args(args)
            .status()
            .unwrap()
            .success())
    };
    mount(&[
        "--bind",
        &ro.display().to_string(),
        &ro.display().to_string(),
    ]);
    let _unmount = Unmount(ro.to_path_buf());
    mount(&["-o", "remount,ro,bind", &ro.display().to_string()]);
    let second = User::new();
    let sshd2 = Sshd::new(&bus, &second, "fail=closed");
    let out = sshd2.ssh(
        &second,
        &format!(
            "echo $RESTRICTD_SESSION_ID; {}",
            probe_cmd("tcp", "127.0.0.2", pd)
        ),
    );
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 2, "{}\n{}", text(&out), daemon.log());
    assert_eq!(lines[0].len(), 36, "a session: {s}");
    assert_eq!(lines[1], "EPERM", "{s}");
    assert!(
        daemon.log().contains("saving restricted identities"),
        "{}",
        daemon.log()
    );
}

/// The state directory is full (a small file system filled up): a login is
/// admitted and restricted all the same, the failed save is logged, and the
/// session stays restricted across a daemon restart that cannot read it
/// back (the kernel keeps it).
#[test]
fn a_full_state_directory_neither_refuses_logins_nor_frees_anyone() {
    use std::io::{BufRead, BufReader};
    let bus = Bus::new(true);
    let (denied, pd) = tcp_listener("127.0.0.2");
    denied.set_nonblocking(true).unwrap();
    let mut daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.1"], &[])));
    daemon.stop();
    let state = daemon.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    assert!(std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=64k",
            "restrictd-test",
            &state.display().to_string()
        ])
        .status()
        .unwrap()
        .success());
    let _unmount = Unmount(state.clone());
    daemon.start();
    // Fill what is left.
    let mut filler = std::fs::File::create(state.join("filler")).unwrap();
    use std::io::Write;
    while filler.write_all(&[0u8; 4096]).is_ok() {}
    let _ = filler.sync_all();
    drop(filler);

    let user = User::new();
    let sshd = Sshd::new(&bus, &user, "fail=closed");
    let gate = daemon.dir.path().join("gate");
    let script = format!(
        "echo sid=$RESTRICTD_SESSION_ID; {p}; while [ ! -e {g} ]; do sleep 0.05; done; {p}",
        g = gate.display(),
        p = probe_cmd("tcp", "127.0.0.2", pd),
    );
    let mut child = sshd
        .ssh_cmd(&user, &script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut next = || {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        l.trim().to_string()
    };
    let sid = next();
    assert_eq!(
        sid.len(),
        "sid=".len() + 36,
        "a session: {sid}\n{}",
        daemon.log()
    );
    assert_eq!(next(), "EPERM");
    assert!(daemon.log().contains("saving session"), "{}", daemon.log());

    daemon.stop();
    daemon.start();
    std::fs::write(&gate, "").unwrap();
    assert_eq!(next(), "EPERM", "still restricted after the restart");
    let _ = child.wait();
    assert!(
        denied.accept().is_err(),
        "the denied listener got a connection"
    );
}

/// The daemon dies in the middle of a login: after the session's cgroup is
/// made and sshd's process moved into it, before the session is saved or
/// the login answered (injected with RESTRICTD_FAULT). The login is refused
/// (fail=closed), so nothing runs unrestricted; the next daemon removes the
/// cgroup left behind and admits and restricts the next login.
#[test]
fn the_daemon_dying_during_a_login_refuses_it_and_leaves_nothing_behind() {
    let bus = Bus::new(true);
    let (denied, pd) = tcp_listener("127.0.0.2");
    denied.set_nonblocking(true).unwrap();
    let mut daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.1"], &[])));
    let user = User::new();
    let sshd = Sshd::new(&bus, &user, "fail=closed");
    daemon.stop();
    daemon
        .env
        .push(("RESTRICTD_FAULT".into(), "open-after-place".into()));
    daemon.start();
    let script = format!("echo inside; {}", probe_cmd("tcp", "127.0.0.2", pd));
    let out = sshd.ssh(&user, &script);
    assert!(
        !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("inside"),
        "the login must be refused: {}",
        text(&out)
    );
    wait_for("the daemon to die", Duration::from_secs(10), || {
        !daemon.running()
    });
    let sessions_left = |d: &Daemon| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&d.root)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.len() == 36)
            })
            .collect()
    };
    assert_eq!(sessions_left(&daemon).len(), 1, "the dead daemon's cgroup");

    daemon.stop();
    daemon.env.clear();
    daemon.start();
    assert!(sessions_left(&daemon).is_empty(), "{}", daemon.log());
    assert!(daemon
        .log()
        .contains("left by a daemon stopped during a login"));
    let out = sshd.ssh(
        &user,
        &format!(
            "echo $RESTRICTD_SESSION_ID; {}; true",
            probe_cmd("tcp", "127.0.0.2", pd)
        ),
    );
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 2, "{}", text(&out));
    assert_eq!(lines[0].len(), 36, "{s}");
    assert_eq!(lines[1], "EPERM", "{s}");
    assert!(
        denied.accept().is_err(),
        "the denied listener got a connection"
    );
}

/// An upgrade (here: a new ring buffer size, so a new kernel state version,
/// as a new release's programs are) during which the daemon dies twice:
/// after it moved the sessions into the new version's maps but before the
/// new programs attached, then after they attached but before the old ones
/// were retired (injected with RESTRICTD_FAULT). Throughout, the running
/// session and the user's processes outside it stay restricted; the next
/// start finishes the switch, leaving one version.
#[test]
fn the_daemon_dying_during_an_upgrade_leaves_everyone_restricted() {
    use std::io::{BufRead, BufReader};
    let bus = Bus::new(true);
    let (denied, pd) = tcp_listener("127.0.0.2");
    denied.set_nonblocking(true).unwrap();
    let mut daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.1"], &[])));
    let user = User::new();
    let sshd = Sshd::new(&bus, &user, "fail=closed");
    let dir = daemon.dir.path().to_path_buf();
    let gate = |n: u32| dir.join(format!("gate{n}"));
    let script = format!(
        "echo sid=$RESTRICTD_SESSION_ID; for g in 1 2 3; do \
         while [ ! -e {dir}/gate$g ]; do sleep 0.05; done; {p}; done",
        dir = dir.display(),
        p = probe_cmd("tcp", "127.0.0.2", pd),
    );
    let mut child = sshd
        .ssh_cmd(&user, &script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut next = || {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        l.trim().to_string()
    };
    let sid = next().strip_prefix("sid=").unwrap().to_string();
    assert_eq!(sid.len(), 36);
    let versions = |d: &Daemon| -> Vec<String> {
        std::fs::read_dir(&d.pin_dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let before = versions(&daemon);
    assert_eq!(before.len(), 1, "{before:?}");
    let outside = || {
        let o = user.run(
            &[
                "python3",
                &common::probe(),
                "tcp",
                "127.0.0.2",
                &pd.to_string(),
            ],
            &[],
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };

    daemon.stop();
    let mut config = std::fs::read_to_string(&daemon.config).unwrap();
    config.push_str("enhanced_recording:\n  network_buffer_size: 16\n");
    std::fs::write(&daemon.config, config).unwrap();
    for (n, point) in [(1, "upgrade-before-attach"), (2, "upgrade-before-retire")] {
        daemon.env = vec![("RESTRICTD_FAULT".into(), point.into())];
        let st = daemon.start_to_die();
        assert!(!st.success(), "{point}: {st:?}\n{}", daemon.log());
        assert!(daemon.log().contains(&format!("RESTRICTD_FAULT={point}")));
        std::fs::write(gate(n), "").unwrap();
        assert_eq!(next(), "EPERM", "{point}: the session");
        assert_eq!(outside(), "EPERM", "{point}: the user outside it");
    }
    assert_eq!(versions(&daemon).len(), 2, "both versions pinned");

    daemon.env.clear();
    daemon.start();
    assert!(daemon.log().contains("replaces"), "{}", daemon.log());
    assert!(
        daemon.sessions().iter().any(|s| s["sid"] == sid.as_str()),
        "the session is the new daemon's: {:?}",
        daemon.sessions()
    );
    std::fs::write(gate(3), "").unwrap();
    assert_eq!(next(), "EPERM", "after the switch");
    assert_eq!(outside(), "EPERM");
    let after = versions(&daemon);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after, before, "the new version");
    let _ = child.wait();
    assert!(
        denied.accept().is_err(),
        "the denied listener got a connection"
    );
}

/// The daemon dies while it writes a 100,000-CIDR policy, with the new
/// allow rules in the kernel and the deny rules not yet (injected with
/// RESTRICTD_FAULT). A session probing a host both policies deny is
/// refused throughout; the restarted daemon enforces the old policy, whole
/// (the policy file was not replaced), and a second apply then takes.
#[test]
fn the_daemon_dying_during_a_policy_apply_leaves_the_old_policy_whole() {
    use std::io::{BufRead, BufReader};
    let bus = Bus::new(true);
    let (denied, pd) = tcp_listener("127.0.0.2");
    denied.set_nonblocking(true).unwrap();
    let (_third, p3) = tcp_listener("127.0.0.3");
    let mut daemon = Daemon::new(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &["127.0.0.2"])));
    let user = User::new();
    let sshd = Sshd::new(&bus, &user, "");
    let go = daemon.dir.path().join("go");
    let script = format!(
        "echo up; while [ ! -e {go} ]; do echo \"2 $({p})\"; sleep 0.05; done; echo \"3 $({p3})\"",
        go = go.display(),
        p = probe_cmd("tcp", "127.0.0.2", pd),
        p3 = probe_cmd("tcp", "127.0.0.3", p3),
    );
    let mut child = sshd
        .ssh_cmd(&user, &script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();

    // The new policy allows 127.0.0.0/8 and 100,000 more networks, and
    // denies 127.0.0.2 and 127.0.0.3.
    let mut allow: Vec<String> = (0..100_000u32)
        .map(|i| format!("10.{}.{}.{}/32", i / 65536, (i / 256) % 256, i % 256))
        .collect();
    allow.push("127.0.0.0/8".into());
    let allow: Vec<&str> = allow.iter().map(String::as_str).collect();
    let big = daemon.dir.path().join("big.yaml");
    std::fs::write(
        &big,
        policy_yaml(&allow, &["127.0.0.2", "127.0.0.3"]).replace("name: test", "name: big"),
    )
    .unwrap();
    daemon.stop();
    daemon
        .env
        .push(("RESTRICTD_FAULT".into(), "policy-mid-write:big".into()));
    daemon.start();
    let apply = daemon.ctl(&["policy", "apply", &big.display().to_string()]);
    assert!(!apply.status.success(), "the daemon died during the apply");
    wait_for("the daemon to die", Duration::from_secs(10), || {
        !daemon.running()
    });
    daemon.stop();
    daemon.env.clear();
    daemon.start();
    let shown = String::from_utf8_lossy(&daemon.ctl(&["policy", "show"]).stdout).to_string();
    assert!(shown.contains("name: test"), "the old policy: {shown}");
    // The old policy: 127.0.0.3 allowed. Then the apply again: denied.
    std::fs::write(&go, "").unwrap();
    let rest: Vec<String> = out.lines().map(|l| l.unwrap()).collect();
    let _ = child.wait();
    let (last, probes) = rest.split_last().unwrap();
    assert!(
        probes.len() >= 3 && probes.iter().all(|l| l == "2 EPERM"),
        "127.0.0.2 refused before, during and after: {rest:?}"
    );
    assert_eq!(last, "3 ok", "the old policy allows 127.0.0.3");
    let apply = daemon.ctl(&["policy", "apply", &big.display().to_string()]);
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    let out = sshd.ssh(
        &user,
        &format!("{}; true", probe_cmd("tcp", "127.0.0.3", p3)),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "EPERM",
        "{}",
        text(&out)
    );
    assert!(
        denied.accept().is_err(),
        "the denied listener got a connection"
    );
}

/// With the PAM line before the module that moves the login into a logind
/// scope (as in the test above), the user's systemd instance may start
/// after the session began (a first login starts it). Once it runs, it is
/// registered with the session: a process of the user in it is restricted
/// as the session (the user is exempt from identity restriction, so only
/// the session restricts them) and recorded under its id.
#[test]
fn a_user_manager_that_starts_after_the_session_is_registered_with_it() {
    use std::io::{BufRead, BufReader};
    let user = User::new();
    let bus = Bus::new(true);
    let (denied, pd) = tcp_listener("127.0.0.2");
    denied.set_nonblocking(true).unwrap();
    let daemon = Daemon::with_config(
        &bus,
        Some(&policy_yaml(&["127.0.0.1"], &[])),
        &format!("  exempt_users: [{}]\n", user.name),
    );
    let slice = daemon
        .root
        .join(format!("user.slice/user-{}.slice", user.uid));
    let (dir, sshd) = sshd_moving_logins_to_a_scope(&bus, &daemon, &user, "", 78);
    let go = dir.path().join("go");
    let mut child = sshd
        .ssh_cmd(
            &user,
            &format!(
                "echo sid=$RESTRICTD_SESSION_ID; while [ ! -e {} ]; do sleep 0.05; done",
                go.display()
            ),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let sid = line.trim().strip_prefix("sid=").unwrap().to_string();

    // The user's manager starts now.
    let manager = slice.join(format!("user@{}.service", user.uid));
    std::fs::create_dir(&manager).unwrap();
    wait_for(
        "the manager's registration",
        Duration::from_secs(10),
        || daemon.log().contains("started, now cgroup"),
    );
    // A process of the user in it: moved there before it runs the probe.
    let mut unit = std::process::Command::new("sh")
        .args([
            "-c",
            &format!(
                "read _; exec runuser -u {} -- {}",
                user.name,
                probe_cmd("tcp", "127.0.0.2", pd)
            ),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::fs::write(manager.join("cgroup.procs"), unit.id().to_string()).unwrap();
    {
        use std::io::Write;
        let mut stdin = unit.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }
    let out = unit.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "EPERM");
    assert!(
        denied.accept().is_err(),
        "the denied listener got a connection"
    );
    std::fs::write(&go, "").unwrap();
    let _ = child.wait();
    let events = daemon.wait_end(&sid);
    assert!(
        events.iter().any(|e| e["event"] == "session.network"
            && e["dst_port"] == pd
            && e["sid"] == sid.as_str()),
        "the manager's denial is the session's: {events:?}"
    );
}
