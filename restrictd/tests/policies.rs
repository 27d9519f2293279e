//! Per-login policies through real SSH logins (sshd, pam_restrict.so,
//! dbus-daemon, restrictd serve): users in different groups, with and
//! without an SSH certificate, from different loopback source addresses,
//! each reaching exactly what its policy allows, TCP and UDP, allowed and
//! denied ports, proved at the listeners; a live change; `explain`; a
//! forged `SSH_AUTH_INFO_0`; bad documents.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{sshd::*, tcp_listener, udp_socket};

/// A group made for the test, removed when dropped.
struct Group(String);

impl Group {
    fn new(members: &[&User]) -> Group {
        let name = unique("rdg");
        assert!(Command::new("groupadd")
            .arg(&name)
            .status()
            .unwrap()
            .success());
        for u in members {
            assert!(Command::new("usermod")
                .args(["-aG", &name, &u.name])
                .status()
                .unwrap()
                .success());
        }
        Group(name)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.0).output();
    }
}

/// An SSH certificate authority in a temporary directory.
struct Ca {
    dir: tempfile::TempDir,
}

impl Ca {
    fn new() -> Ca {
        let dir = tempfile::tempdir().unwrap();
        assert!(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.path().join("ca"))
            .status()
            .unwrap()
            .success());
        Ca { dir }
    }

    fn public(&self) -> PathBuf {
        self.dir.path().join("ca.pub")
    }

    /// Signs `key`'s public half for `principals` (comma-separated):
    /// `KEY-cert.pub`, which ssh offers with `-i KEY`.
    fn sign(&self, key: &Path, id: &str, principals: &str) -> PathBuf {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(self.dir.path().join("ca"))
            .args(["-I", id, "-n", principals, "-V", "+1h"])
            .arg(key.with_extension("pub"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let mut cert = key.as_os_str().to_owned();
        cert.push("-cert.pub");
        PathBuf::from(cert)
    }
}

/// Connections a listener has taken so far.
fn accepted(l: &TcpListener) -> usize {
    l.set_nonblocking(true).unwrap();
    let mut n = 0;
    while l.accept().is_ok() {
        n += 1;
    }
    n
}

/// Datagrams a socket has received so far.
fn received(s: &UdpSocket) -> usize {
    s.set_nonblocking(true).unwrap();
    let mut n = 0;
    while s.recv(&mut [0u8; 64]).is_ok() {
        n += 1;
    }
    n
}

/// Runs each probe (`probe.py MODE HOST PORT`) in one login; their
/// verdicts ("ok", "EPERM", ...) in order.
fn probes(sshd: &Sshd, user: &User, client: &[&str], list: &[(&str, &str, u16)]) -> Vec<String> {
    let script: Vec<String> = list
        .iter()
        .map(|(mode, host, port)| probe_cmd(mode, host, *port))
        .collect();
    let out = sshd.ssh_with(user, client, &format!("{}; true", script.join("; ")));
    assert!(out.status.success(), "{}\n{}", text(&out), sshd.log());
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), list.len(), "{}", text(&out));
    lines
}

fn per_login_policy(rules: &str) -> String {
    format!(
        "kind: network_restrictions\nversion: v4\nmetadata:\n  name: host\nspec:\n  allow:\n    - cidr: 127.0.0.1/32\n{rules}"
    )
}

#[test]
fn each_login_reaches_exactly_what_its_policy_allows() {
    let bus = Bus::new(true);
    let (alice, bob, carol, dave) = (User::new(), User::new(), User::new(), User::new());
    let dba = Group::new(&[&alice]);
    let ca = Ca::new();
    let principal = unique("contractor");
    // sshd wants the login name among the principals (no
    // AuthorizedPrincipalsFile); the policy matches the other one.
    ca.sign(
        &carol.key,
        "carol-laptop",
        &format!("{},{principal}", carol.name),
    );
    // Her key alone no longer logs her in: only the certificate does.
    std::fs::write(format!("/home/{}/.ssh/authorized_keys", carol.name), "").unwrap();
    let (a, pa) = tcp_listener("127.0.0.2");
    let (b, pb) = tcp_listener("127.0.0.2");
    let (u, pu) = udp_socket("127.0.0.2");
    let (u2, pu2) = udp_socket("127.0.0.2");
    let (c, pc) = tcp_listener("127.0.0.3");
    let (d, pd) = tcp_listener("127.0.0.4");
    let (h, ph) = tcp_listener("127.0.0.1");
    let policy = per_login_policy(&format!(
        "---\nkind: restrictd_policy\nversion: v1\nmetadata:\n  name: dba\nspec:\n  match:\n    groups: [{g}]\n  allow:\n    - cidr: 127.0.0.2/32\n      ports: [{pa}]\n      protocol: tcp\n    - cidr: 127.0.0.2/32\n      ports: [\"{pu}-{pu}\"]\n      protocol: udp\n\
         ---\nkind: restrictd_policy\nversion: v1\nmetadata:\n  name: contractors\nspec:\n  match:\n    auth:\n      principals: [{principal}]\n  allow:\n    - cidr: 127.0.0.3/32\n      ports: [{pc}]\n\
         ---\nkind: restrictd_policy\nversion: v1\nmetadata:\n  name: bob-from-5\nspec:\n  match:\n    users: [{bob}]\n    sources: [127.0.0.5/32]\n  allow:\n    - cidr: 127.0.0.4/32\n",
        g = dba.0,
        bob = bob.name,
    ));
    let daemon = Daemon::new(&bus, Some(&policy));
    let sshd = Sshd::configured(
        &bus,
        &[&alice, &bob, &carol, &dave],
        &format!("session required {}\n", pam_module().display()),
        &format!("TrustedUserCAKeys {}\n", ca.public().display()),
    );

    // alice, in the group: TCP to one port, UDP to another, nothing else.
    let got = probes(
        &sshd,
        &alice,
        &[],
        &[
            ("tcp", "127.0.0.2", pa),
            ("tcp", "127.0.0.2", pb),
            ("udp-sendto", "127.0.0.2", pu),
            ("udp-sendto", "127.0.0.2", pu2),
            ("udp-connect", "127.0.0.2", pa),
            ("tcp", "127.0.0.3", pc),
            ("tcp", "127.0.0.1", ph),
        ],
    );
    assert_eq!(
        got,
        ["ok", "EPERM", "ok", "EPERM", "EPERM", "EPERM", "EPERM"]
    );
    // carol, with the certificate: the contractors' host and port only.
    let got = probes(
        &sshd,
        &carol,
        &[],
        &[
            ("tcp", "127.0.0.3", pc),
            ("tcp", "127.0.0.2", pa),
            ("tcp", "127.0.0.1", ph),
        ],
    );
    assert_eq!(got, ["ok", "EPERM", "EPERM"], "{}", daemon.log());
    // dave, no group, no certificate: the host default.
    let got = probes(
        &sshd,
        &dave,
        &[],
        &[
            ("tcp", "127.0.0.1", ph),
            ("tcp", "127.0.0.2", pa),
            ("tcp", "127.0.0.3", pc),
        ],
    );
    assert_eq!(got, ["ok", "EPERM", "EPERM"]);
    // bob from 127.0.0.5: his policy; from 127.0.0.1: the host default.
    let got = probes(
        &sshd,
        &bob,
        &["-b", "127.0.0.5"],
        &[("tcp", "127.0.0.4", pd), ("tcp", "127.0.0.1", ph)],
    );
    assert_eq!(got, ["ok", "EPERM"]);
    let got = probes(
        &sshd,
        &bob,
        &[],
        &[("tcp", "127.0.0.4", pd), ("tcp", "127.0.0.1", ph)],
    );
    assert_eq!(got, ["EPERM", "ok"]);

    // The receiving ends: exactly the allowed calls arrived.
    assert_eq!(accepted(&a), 1, "alice's one allowed connect");
    assert_eq!(accepted(&b), 0, "a denied port got nothing");
    assert_eq!(received(&u), 1, "alice's one allowed datagram");
    assert_eq!(received(&u2), 0, "a denied UDP port got nothing");
    assert_eq!(accepted(&c), 1, "carol's certificate login");
    assert_eq!(accepted(&d), 1, "bob from 127.0.0.5");
    assert_eq!(accepted(&h), 2, "dave and bob from 127.0.0.1");

    // Sessions and denials name their policy; a denial its rule.
    let mut events = Vec::new();
    wait_for("five session ends", Duration::from_secs(10), || {
        events = daemon.events();
        events
            .iter()
            .filter(|e| e["event"] == "session.end")
            .count()
            == 5
    });
    let starts: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| e["event"] == "session.start")
        .map(|e| {
            (
                e["user"].as_str().unwrap().to_string(),
                e["remote_host"].as_str().unwrap_or_default().to_string(),
                e["policy"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (user, from, policy) in [
        (&alice.name, "127.0.0.1", "dba"),
        (&carol.name, "127.0.0.1", "contractors"),
        (&dave.name, "127.0.0.1", "host"),
        (&bob.name, "127.0.0.5", "bob-from-5"),
        (&bob.name, "127.0.0.1", "host"),
    ] {
        assert!(
            starts
                .iter()
                .any(|s| (s.0.as_str(), s.1.as_str(), s.2.as_str()) == (user, from, policy)),
            "{user} from {from}: {policy} in {starts:?}"
        );
    }
    let denial = |user: &str, port: u16| {
        events
            .iter()
            .find(|e| {
                e["event"] == "session.network"
                    && e["action"] == 1
                    && e["user"] == user
                    && e["dst_port"] == port
            })
            .unwrap_or_else(|| panic!("no denial of {user} to port {port}"))
            .clone()
    };
    let e = denial(&alice.name, pb);
    assert_eq!(e["policy"], "dba", "{e}");
    assert_eq!(e["rule"], "no allow rule covers it", "{e}");
    let e = denial(&dave.name, pa);
    assert_eq!(e["policy"], "host", "{e}");
}

/// A login's shell that runs the lines it reads and says when each is done.
struct LiveSession {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl LiveSession {
    fn new(sshd: &Sshd, user: &User) -> LiveSession {
        let mut child = sshd
            .ssh_cmd(
                user,
                "echo sid=$RESTRICTD_SESSION_ID; while read -r c; do eval \"$c\"; echo done; done",
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.starts_with("sid="), "{line}");
        LiveSession { child, out }
    }

    fn run(&mut self, cmd: &str) -> Vec<String> {
        writeln!(self.child.stdin.as_mut().unwrap(), "{cmd}").unwrap();
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                self.out.read_line(&mut line).unwrap() > 0,
                "the session ended"
            );
            let line = line.trim_end().to_string();
            if line == "done" {
                return lines;
            }
            lines.push(line);
        }
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

#[test]
fn a_policy_change_reaches_a_running_session_and_explain_names_the_rule() {
    let bus = Bus::new(true);
    let alice = User::new();
    let dba = Group::new(&[&alice]);
    let (a, pa) = tcp_listener("127.0.0.2");
    let (b, pb) = tcp_listener("127.0.0.2");
    let dba_policy = |port: u16| {
        per_login_policy(&format!(
            "---\nkind: restrictd_policy\nversion: v1\nmetadata:\n  name: dba-{port}\nspec:\n  match:\n    groups: [{g}]\n  allow:\n    - cidr: 127.0.0.2/32\n      ports: [{port}]\n",
            g = dba.0
        ))
    };
    let daemon = Daemon::new(&bus, Some(&dba_policy(pa)));
    let sshd = Sshd::new(&bus, &alice, "");
    let mut live = LiveSession::new(&sshd, &alice);
    assert_eq!(live.run(&probe_cmd("tcp", "127.0.0.2", pa)), ["ok"]);
    assert_eq!(live.run(&probe_cmd("tcp", "127.0.0.2", pb)), ["EPERM"]);
    let sessions = daemon.sessions();
    assert_eq!(sessions[0]["policy"], format!("dba-{pa}"), "{sessions:?}");
    // Outside the session (runuser: no PAM line, as a cron job would be),
    // alice is restricted by identity, under the policy that binds her
    // user and groups: the same one here.
    let outside = |port: u16| {
        let out = alice.run(
            &[
                "python3",
                &common::probe(),
                "tcp",
                "127.0.0.2",
                &port.to_string(),
            ],
            &[],
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(outside(pa), "ok");
    assert_eq!(outside(pb), "EPERM");

    // The new set moves the running session to the new policy.
    let file = daemon.dir.path().join("new.yaml");
    std::fs::write(&file, dba_policy(pb)).unwrap();
    let out = daemon.ctl(&["policy", "apply", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(live.run(&probe_cmd("tcp", "127.0.0.2", pa)), ["EPERM"]);
    assert_eq!(live.run(&probe_cmd("tcp", "127.0.0.2", pb)), ["ok"]);
    assert_eq!(outside(pa), "EPERM");
    assert_eq!(outside(pb), "ok");
    assert_eq!(
        accepted(&a),
        2,
        "alice's two allowed connects before the change"
    );
    assert_eq!(accepted(&b), 2, "and after it");
    let sessions = daemon.sessions();
    assert_eq!(sessions[0]["policy"], format!("dba-{pb}"), "{sessions:?}");
    let table = String::from_utf8_lossy(&daemon.ctl(&["sessions"]).stdout).into_owned();
    assert!(table.contains(&format!("dba-{pb}")), "{table}");

    // explain: the deciding policy and rule, and the verdict.
    let explain = |args: &[&str]| {
        let mut all = vec!["policy", "explain"];
        all.extend_from_slice(args);
        let out = daemon.ctl(&all);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pb_dest = format!("127.0.0.2:{pb}/tcp");
    let out = explain(&["--user", &alice.name, &pb_dest]);
    assert!(
        out.contains(&format!("policy: dba-{pb} (restrictd_policy")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{pb_dest}: allowed by allow rule 1")),
        "{out}"
    );
    let out = explain(&["--user", &alice.name, &format!("127.0.0.2:{pb}/udp")]);
    assert!(
        out.contains(&format!("127.0.0.2:{pb}/udp: allowed")),
        "ports without a protocol are TCP and UDP: {out}"
    );
    let out = explain(&["--user", &alice.name, "127.0.0.2/icmp"]);
    assert!(out.contains("denied by no allow rule covers it"), "{out}");
    let out = explain(&["--user", "root", "--from", "127.0.0.9", &pb_dest]);
    assert!(out.contains("policy: host (network_restrictions"), "{out}");
    assert!(out.contains("denied"), "{out}");
    let bad = daemon.ctl(&["policy", "explain", "--user", "root", "127.0.0.2:99999"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("ADDR[:PORT]"),
        "{}",
        text(&bad)
    );

    // A bad set is refused, located, and changes nothing.
    std::fs::write(
        &file,
        per_login_policy("---\nkind: restrictd_policy\nversion: v1\nmetadata:\n  name: x\nspec:\n  allow:\n    - cidr: 127.0.0.2/32\n      ports: [\"9-1\"]\n"),
    )
    .unwrap();
    let out = daemon.ctl(&["policy", "apply", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("new.yaml:16:") && err.contains("out of range"),
        "{err}"
    );
    assert_eq!(live.run(&probe_cmd("tcp", "127.0.0.2", pb)), ["ok"]);
    // An empty file is a mistake, not "no policy": refused too.
    std::fs::write(&file, "# nothing yet\n").unwrap();
    let out = daemon.ctl(&["policy", "apply", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("empty"),
        "{}",
        text(&out)
    );
    assert_eq!(live.run(&probe_cmd("tcp", "127.0.0.2", pa)), ["EPERM"]);
}

/// A user cannot claim a certificate principal, nor another client
/// address for the record, by writing sshd's variables into
/// `~/.pam_environment`, which pam_env.so reads (user_readenv=1, as
/// Debian's /etc/pam.d/sshd has it) before pam_restrict.so runs: the
/// forged values reach the PAM environment, bind nothing and are not
/// recorded.
#[test]
fn what_the_user_writes_into_the_pam_environment_binds_no_policy_and_is_not_recorded() {
    let bus = Bus::new(true);
    let eve = User::new();
    let (c, pc) = tcp_listener("127.0.0.3");
    let principal = unique("contractor");
    // Eve's own CA: sshd would never accept it, but the variable only
    // carries the certificate's text.
    let own = Ca::new();
    let cert = own.sign(&eve.key, "forged", &principal);
    let cert_text = std::fs::read_to_string(&cert).unwrap();
    let line = format!(
        "SSH_AUTH_INFO_0 DEFAULT=\"publickey {}\"\n",
        cert_text
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    // RDT_MARK shows that pam_env read the file (sshd keeps SSH_AUTH_INFO_0
    // itself out of the session's environment).
    let env_file = PathBuf::from(format!("/home/{}/.pam_environment", eve.name));
    // And a client address of her choosing for the session's record.
    std::fs::write(
        &env_file,
        format!(
            "RDT_MARK DEFAULT=read\n{line}SSH_CONNECTION DEFAULT=\"127.0.0.1 4242 10.9.9.10 22\"\n"
        ),
    )
    .unwrap();
    // Signing left the certificate beside eve's key: ssh would offer it.
    std::fs::remove_file(&cert).unwrap();
    let policy = per_login_policy(&format!(
        "---\nkind: restrictd_policy\nversion: v1\nmetadata:\n  name: contractors\nspec:\n  match:\n    auth:\n      principals: [{principal}]\n  allow:\n    - cidr: 127.0.0.3/32\n"
    ));
    let daemon = Daemon::new(&bus, Some(&policy));
    let sshd = Sshd::with_session(
        &bus,
        &eve,
        &format!(
            "session required pam_env.so user_readenv=1\nsession required {}\n",
            pam_module().display()
        ),
    );
    let out = sshd.ssh(
        &eve,
        &format!(
            "echo \"mark=$RDT_MARK\"; {}",
            probe_cmd("tcp", "127.0.0.3", pc)
        ),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("mark=read"),
        "pam_env read the user's file: {}",
        text(&out)
    );
    assert!(stdout.trim_end().ends_with("EPERM"), "{}", text(&out));
    assert_eq!(accepted(&c), 0);
    assert!(
        daemon.log().contains("SSH_AUTH_INFO_0 ignored"),
        "{}",
        daemon.log()
    );
    let events = daemon.wait_any_end();
    let start = events
        .iter()
        .find(|e| e["event"] == "session.start")
        .unwrap();
    // The forged value kept the true client address, so only the
    // connection sshd holds can tell its ports and server side false.
    assert_eq!(
        start["addr.local"],
        format!("127.0.0.1:{}", sshd.port),
        "the connection sshd holds is recorded: {start}"
    );
    assert!(
        start["addr.remote"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:") && a != "127.0.0.1:4242"),
        "{start}"
    );
    assert!(!start.to_string().contains("10.9.9."), "{start}");
}

/// A policy's own disk filter (`record.disk_include` / `disk_exclude`)
/// narrows what its logins record, within the host's filter: alice's
/// policy records only one directory less a subdirectory, while bob (the
/// host default) records all three files; alice's `~/.ssh` stays recorded
/// (always recorded paths cannot be filtered out); a live change that drops
/// her filter reaches her running session; a relative prefix is refused
/// with its location.
#[test]
fn a_policys_disk_filter_narrows_what_its_logins_record() {
    let bus = Bus::new(true);
    let alice = User::new();
    let bob = User::new();
    let dir = tempfile::Builder::new()
        .prefix("rd-disk-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let d = dir.path().display().to_string();
    for sub in ["in", "in/skip", "out"] {
        std::fs::create_dir_all(format!("{d}/{sub}")).unwrap();
        std::fs::write(format!("{d}/{sub}/f"), "x\n").unwrap();
    }
    let policy = |record: &str| {
        per_login_policy(&format!(
            "---\nkind: restrictd_policy\nversion: v1\nmetadata:\n  name: narrow\nspec:\n  match:\n    users: [{a}]\n  allow:\n    - cidr: 127.0.0.1/32\n{record}",
            a = alice.name
        ))
    };
    let narrow =
        format!("  record:\n    disk_include: [{d}/in]\n    disk_exclude: [{d}/in/skip]\n");
    let daemon = Daemon::new(&bus, Some(&policy(&narrow)));
    let sshd = Sshd::configured(
        &bus,
        &[&alice, &bob],
        &format!("session required {}\n", pam_module().display()),
        "",
    );
    let files = format!("{d}/in/f {d}/in/skip/f {d}/out/f");
    let recorded = |user: &User| {
        let out = sshd.ssh(
            user,
            &format!(
                "cat {files} ~/.ssh/authorized_keys >/dev/null; echo sid=$RESTRICTD_SESSION_ID"
            ),
        );
        assert!(out.status.success(), "{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let sid = stdout.trim().strip_prefix("sid=").unwrap().to_string();
        let mut paths: Vec<String> = daemon
            .wait_end(&sid)
            .iter()
            .filter(|e| e["event"] == "session.disk" && e["sid"] == sid.as_str())
            .filter_map(|e| e["path"].as_str().map(String::from))
            .filter(|p| p.starts_with(&d) || p.ends_with("/.ssh/authorized_keys"))
            .collect();
        paths.sort();
        paths.dedup();
        paths
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let keys = |u: &User| format!("/home/{}/.ssh/authorized_keys", u.name);
    assert_eq!(
        recorded(&alice),
        sorted(vec![format!("{d}/in/f"), keys(&alice)]),
        "alice's policy: {d}/in less {d}/in/skip, and ~/.ssh always"
    );
    assert_eq!(
        recorded(&bob),
        sorted(vec![
            format!("{d}/in/f"),
            format!("{d}/in/skip/f"),
            format!("{d}/out/f"),
            keys(&bob)
        ]),
        "bob: the host's filter"
    );

    // Outside her sessions (runuser, as a cron job would run), alice's
    // processes are recorded through the same filter. Her always recorded
    // ~/.ssh, opened last, marks that the rest is in.
    let out = alice.run(
        &[
            "sh",
            "-c",
            &format!("cat {files} ~/.ssh/authorized_keys >/dev/null"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let mut outside = Vec::new();
    wait_for(
        "alice's opens outside a session",
        Duration::from_secs(10),
        || {
            outside = daemon
                .events()
                .into_iter()
                .filter(|e| {
                    e["event"] == "session.disk"
                        && e["outside_session"] == true
                        && e["user"] == alice.name.as_str()
                })
                .filter_map(|e| e["path"].as_str().map(String::from))
                .filter(|p| p.starts_with(&d) || *p == keys(&alice))
                .collect();
            outside.contains(&keys(&alice))
        },
    );
    assert_eq!(
        sorted(outside),
        sorted(vec![format!("{d}/in/f"), keys(&alice)]),
        "outside a session too: only {d}/in less skip, and ~/.ssh"
    );

    // A live change without her filter reaches alice's running session.
    let mut live = LiveSession::new(&sshd, &alice);
    let file = daemon.dir.path().join("new.yaml");
    std::fs::write(&file, policy("")).unwrap();
    let out = daemon.ctl(&["policy", "apply", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    live.run(&format!("cat {d}/out/f >/dev/null"));
    let out_f = format!("{d}/out/f");
    wait_for(
        "the open under the new policy",
        Duration::from_secs(10),
        || {
            daemon.events().iter().any(|e| {
                e["event"] == "session.disk"
                    && e["path"] == out_f.as_str()
                    && e["user"] == alice.name.as_str()
            })
        },
    );

    // A relative prefix is refused where it is written; nothing changes.
    std::fs::write(
        &file,
        policy("  record:\n    disk_exclude: [/var, tmp/x]\n"),
    )
    .unwrap();
    let out = daemon.ctl(&["policy", "apply", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("new.yaml:19:26:")
            && err.contains("disk_exclude")
            && err.contains("not an absolute path"),
        "{err}"
    );
}

/// An apply returns once the new policies are in force and leaves the old
/// rules to a deletion after the grace period: after a run of applies, the
/// kernel's rule tries come back to the entries of the policy in force,
/// so applies never fill them up.
#[test]
fn replaced_policies_leave_no_rules_behind() {
    use aya::maps::{LpmTrie, Map, MapData};
    use restrictd_common::{key, RuleEntry};
    let bus = Bus::new(true);
    let policy = per_login_policy(
        "---\nkind: restrictd_policy\nversion: v1\nmetadata:\n  name: many\nspec:\n  match:\n    users: [nobody]\n  allow:\n    - cidr: 10.1.0.0/16\n    - cidr: 10.2.0.0/16\n    - cidr: 2001:db8::/32\n",
    );
    let daemon = Daemon::new(&bus, Some(&policy));
    // Entries in both tries, read from the daemon's pinned maps.
    let entries = || -> usize {
        let version = std::fs::read_dir(&daemon.pin_dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let map = |name: &str| Map::LpmTrie(MapData::from_pin(version.join(name)).unwrap());
        let v4: LpmTrie<_, key::V4KeyData, RuleEntry> = LpmTrie::try_from(map("RULES_V4")).unwrap();
        let v6: LpmTrie<_, key::V6KeyData, RuleEntry> = LpmTrie::try_from(map("RULES_V6")).unwrap();
        v4.keys().count() + v6.keys().count()
    };
    let in_force = entries();
    assert!(in_force >= 4, "{in_force} entries for the policy file");
    let file = daemon.dir.path().join("same.yaml");
    std::fs::write(&file, &policy).unwrap();
    for _ in 0..5 {
        let out = daemon.ctl(&["policy", "apply", file.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
    }
    wait_for("the replaced rules deleted", Duration::from_secs(5), || {
        entries() == in_force
    });
}
