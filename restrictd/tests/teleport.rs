//! Teleport compatibility, checked against Teleport's own material: its
//! restricted-session test table (lib/restrictedsession/restricted_test.go,
//! its policy written as a `network_restrictions` file, host bits and all),
//! and its audit event definitions (`tests/fixtures/teleport_events.json`,
//! written from events.proto) compared field by field with one event of
//! each kind from a real SSH login.

mod common;

use std::{
    collections::{BTreeMap, HashSet},
    io::Write,
    process::{Command, Stdio},
};

use common::{policy_yaml, repo, sshd::*, tcp_listener, Sandbox};
use serde_json::Value;

/// Teleport's `testRanges`: (version, allow, deny, probes with "is allowed").
#[allow(clippy::type_complexity)]
const TELEPORT_RANGES: &[(u8, &str, &str, &[(&str, bool)])] = &[
    (
        4,
        "39.156.69.70/28",
        "39.156.69.71",
        &[
            ("39.156.69.64", true),
            ("39.156.69.79", true),
            ("39.156.69.71", false),
            ("39.156.69.63", false),
            ("39.156.69.80", false),
            ("72.156.69.80", false),
        ],
    ),
    (
        4,
        "77.88.55.88",
        "",
        &[
            ("77.88.55.88", true),
            ("77.88.55.87", false),
            ("77.88.55.86", false),
            ("67.88.55.86", false),
        ],
    ),
    (
        6,
        "39.156.68.48/28",
        "39.156.68.48/31",
        &[
            ("::ffff:39.156.68.48", false),
            ("::ffff:39.156.68.49", false),
            ("::ffff:39.156.68.50", true),
            ("::ffff:39.156.68.63", true),
            ("::ffff:39.156.68.47", false),
            ("::ffff:39.156.68.64", false),
            ("::ffff:72.156.68.80", false),
        ],
    ),
    (
        6,
        "fc80::/64",
        "fc80::10/124",
        &[
            ("fc80::", true),
            ("fc80::ffff:ffff:ffff:ffff", true),
            ("fc80::10", false),
            ("fc80::1f", false),
            ("fc7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
            ("fc60:0:0:1::", false),
        ],
    ),
    (
        6,
        "2607:f8b0:4005:80a::200e",
        "",
        &[
            ("2607:f8b0:4005:80a::200e", true),
            ("2607:f8b0:4005:80a::200d", false),
            ("2607:f8b0:4005:80a::200f", false),
            ("2607:f8b0:4005:80a::300f", false),
        ],
    ),
];

/// Runs Teleport's probe (`tests/teleport_probe.py`) over every probe of the
/// table, in a network namespace with no interface up, through `wrap` (the
/// session, or nothing); returns its pid and one "tcp=V udp=V" per probe.
fn run_probe(wrap: Command) -> (u32, Vec<String>) {
    let mut cmd = wrap;
    cmd.args([
        "unshare",
        "--net",
        "python3",
        &repo().join("tests/teleport_probe.py").display().to_string(),
    ]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input: String = TELEPORT_RANGES
        .iter()
        .flat_map(|(ver, _, _, probes)| probes.iter().map(move |(ip, _)| format!("{ver} {ip}\n")))
        .collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().map(String::from);
    let pid = lines.next().unwrap().parse().unwrap();
    (pid, lines.collect())
}

#[test]
fn teleports_own_test_table_is_decided_and_reported_as_teleport_does() {
    let sb = Sandbox::with_config("enhanced_recording:\n  enabled: false\n");
    let allow: Vec<&str> = TELEPORT_RANGES.iter().map(|r| r.1).collect();
    let deny: Vec<&str> = TELEPORT_RANGES
        .iter()
        .map(|r| r.2)
        .filter(|d| !d.is_empty())
        .collect();
    let policy = sb.dir.path().join("teleport-test-policy.yaml");
    std::fs::write(&policy, policy_yaml(&allow, &deny)).unwrap();

    // Outside a session nothing is restricted.
    let (_, outside) = run_probe(Command::new("env"));
    assert!(outside.iter().all(|l| l == "tcp=ok udp=ok"), "{outside:?}");

    let (pid, verdicts) = run_probe(sb.run_cmd(Some(&policy), &[]));
    let probes: Vec<(u8, &str, bool)> = TELEPORT_RANGES
        .iter()
        .flat_map(|(ver, _, _, probes)| probes.iter().map(move |(ip, ok)| (*ver, *ip, *ok)))
        .collect();
    assert_eq!(verdicts.len(), probes.len(), "{verdicts:?}");
    let mut want = HashSet::new();
    for ((ver, ip, allowed), got) in probes.iter().zip(&verdicts) {
        let v = if *allowed { "ok" } else { "EPERM" };
        assert_eq!(got, &format!("tcp={v} udp={v}"), "{ver} {ip}");
        if !allowed {
            want.insert((0, ip.to_string(), *ver));
            want.insert((1, ip.to_string(), *ver));
        }
    }

    // Teleport's expectedAuditEvent, field by field, for every denial.
    let ev = sb.denials();
    let got: HashSet<(u64, String, u8)> = ev
        .iter()
        .map(|e| {
            (
                e["operation"].as_u64().unwrap(),
                e["dst_addr"].as_str().unwrap().to_string(),
                e["version"].as_u64().unwrap() as u8,
            )
        })
        .collect();
    assert_eq!(got, want, "{ev:#?}");
    assert_eq!(ev.len(), want.len(), "one event per denial: {ev:#?}");
    let sid = ev[0]["sid"].as_str().unwrap();
    for e in &ev {
        assert_eq!(e["event"], "session.network");
        assert_eq!(e["code"], "T4002I");
        assert_eq!(e["sid"], sid);
        assert_eq!(e["namespace"], "default");
        assert!(uuid::Uuid::parse_str(e["server_id"].as_str().unwrap()).is_ok());
        assert!(uuid::Uuid::parse_str(e["uid"].as_str().unwrap()).is_ok());
        assert_eq!(e["login"], "root");
        assert_eq!(e["program"], "python3");
        assert_eq!(e["pid"], pid);
        assert!(e["cgroup_id"].as_u64().unwrap() > 0);
        assert_eq!(e["dst_port"], 8888);
        let src = if e["version"] == 4 { "0.0.0.0" } else { "::" };
        assert_eq!(e["src_addr"], src, "{e}");
        assert_eq!(e["action"], 1);
    }
}

/// The fixture's schema of one kind: field -> (JSON type, omitempty).
fn schema(fixture: &Value, kind: &str) -> BTreeMap<String, (String, bool)> {
    let k = &fixture["kinds"][kind];
    let mut out = BTreeMap::new();
    let mut add = |fields: &Value| {
        for (name, t) in fields.as_object().unwrap() {
            let (name, optional) = match name.strip_suffix('?') {
                Some(n) => (n, true),
                None => (name.as_str(), false),
            };
            out.insert(
                name.to_string(),
                (t.as_str().unwrap().to_string(), optional),
            );
        }
    };
    for embed in k["embeds"].as_array().unwrap() {
        add(&fixture[embed.as_str().unwrap()]);
    }
    add(&k["fields"]);
    out
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "integer" => v.is_i64() || v.is_u64(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "time" => v
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        other => panic!("fixture type {other:?}"),
    }
}

/// Every field Teleport's event has, with its JSON type: a consumer written
/// for Teleport's audit log reads the event unchanged. restrictd's own
/// fields are whatever Teleport's event does not name.
fn assert_teleport_shape(fixture: &Value, e: &Value) {
    let kind = e["event"].as_str().unwrap();
    assert_eq!(e["code"], fixture["kinds"][kind]["code"], "{e}");
    for (field, (t, optional)) in schema(fixture, kind) {
        match e.get(&field) {
            None => assert!(optional, "{kind}: Teleport's field {field} is missing: {e}"),
            Some(v) => assert!(has_type(v, &t), "{kind}: {field} is not {t}: {e}"),
        }
    }
}

#[test]
fn one_event_of_each_kind_has_teleports_fields_types_and_meanings() {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("restrictd/tests/fixtures/teleport_events.json"))
            .unwrap(),
    )
    .unwrap();
    let bus = Bus::new(true);
    let (_a, pa) = tcp_listener("127.0.0.1");
    let mut daemon =
        Daemon::with_journal(&bus, Some(&policy_yaml(&["127.0.0.0/8"], &["127.0.0.2"])));
    let user = User::new();
    let sshd = Sshd::new(&bus, &user, "fail=closed");
    let script = format!(
        "echo sid=$RESTRICTD_SESSION_ID; echo conn=$SSH_CONNECTION; echo shell=$$; \
         /bin/cat /etc/hostname >/dev/null; {}; {}",
        probe_cmd("tcp", "127.0.0.1", pa),
        probe_cmd("tcp", "127.0.0.2", pa),
    );
    let out = sshd.ssh(&user, &script);
    let text_out = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |k: &str| -> String {
        text_out
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k} in {text_out}\n{}", text(&out)))
            .to_string()
    };
    let (sid, conn, shell) = (field("sid"), field("conn"), field("shell"));
    let events = daemon.wait_end(&sid);
    daemon.stop();
    let mine: Vec<&Value> = events.iter().filter(|e| e["sid"] == sid.as_str()).collect();
    let one = |what: &str, f: &dyn Fn(&Value) -> bool| -> Value {
        (*mine
            .iter()
            .find(|e| f(e))
            .unwrap_or_else(|| panic!("no {what} in {mine:#?}")))
        .clone()
    };
    let start = one("session.start", &|e| e["event"] == "session.start");
    let end = one("session.end", &|e| e["event"] == "session.end");
    let cat = one("cat's command", &|e| {
        e["event"] == "session.command" && e["path"] == "/bin/cat"
    });
    let open = one("cat's open", &|e| {
        e["event"] == "session.disk" && e["path"] == "/etc/hostname"
    });
    let allowed = one("the allowed connect", &|e| {
        e["event"] == "session.network" && e["action"] == 0 && e["dst_addr"] == "127.0.0.1"
    });
    let denied = one("the denied connect", &|e| {
        e["event"] == "session.network" && e["action"] == 1
    });
    for e in [&start, &end, &cat, &open, &allowed, &denied] {
        assert_teleport_shape(&fixture, e);
    }

    // The meanings.
    let ids: HashSet<&str> = mine.iter().map(|e| e["uid"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), mine.len(), "uid is each event's own id");
    assert!(ids.iter().all(|u| uuid::Uuid::parse_str(u).is_ok()));
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap();
    let machine = uuid::Uuid::parse_str(machine.trim()).unwrap().to_string();
    assert!(mine
        .iter()
        .all(|e| e["server_id"] == machine.as_str() && e["namespace"] == "default"));
    let c: Vec<&str> = conn.split(' ').collect();
    assert_eq!(start["addr.remote"], format!("{}:{}", c[0], c[1]));
    assert_eq!(start["addr.local"], format!("{}:{}", c[2], c[3]));
    assert_eq!(start["proto"], "ssh");
    assert_eq!(end["addr.local"], start["addr.local"]);
    // argv without the program, which is `path`; the parent is the shell.
    assert_eq!(cat["argv"], serde_json::json!(["/etc/hostname"]));
    assert_eq!(cat["ppid"].to_string(), shell);
    assert_eq!(cat["unix_uid"], user.uid);
    // The opened file's descriptor.
    assert_eq!(open["return_code"], 3, "{open}");
    // The source the kernel chose for the allowed connect.
    assert_eq!(allowed["src_addr"], "127.0.0.1", "{allowed}");
    assert_eq!(allowed["operation"], 0);
    // Every process of the login has the same audit session id.
    assert_eq!(cat["audit_session_id"], open["audit_session_id"]);
}

/// The first process of a session has its real parent (`restrictd run`,
/// which started it), not 0.
#[test]
fn the_first_process_of_a_session_has_its_parent() {
    let sb = Sandbox::new();
    let child = sb
        .run_cmd(None, &["/bin/true"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let runner = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let ev = sb.events();
    let first = ev
        .iter()
        .find(|e| e["event"] == "session.command" && e["path"] == "/bin/true")
        .unwrap_or_else(|| panic!("{ev:#?}"));
    assert_eq!(first["ppid"], runner, "{first}");
}
