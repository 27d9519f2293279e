//! `restrictd check FILE`: summary and exit 0, or the located error and exit 1.

mod common;
use std::process::Command;

use common::{repo, RESTRICTD};

#[test]
fn teleport_example_is_valid_and_summarized() {
    let out = Command::new(RESTRICTD)
        .arg("check")
        .arg(repo().join("examples/netpolicy.yaml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("allow: 5 IPv4, 2 IPv6 CIDRs"), "{s}");
    assert!(s.contains("deny:  1 IPv4, 0 IPv6 CIDRs"), "{s}");
}

#[test]
fn invalid_policy_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("typo.yaml", "kind: network_restrictions\nversion: v4\nmetadata:\n  name: x\nspec:\n  alow: []\n", ":6:"),
        ("kind.yaml", "kind: network_restriction\nversion: v4\nmetadata:\n  name: x\nspec: {}\n", ":1:7:"),
        ("cidr.yaml", "kind: network_restrictions\nversion: v4\nmetadata:\n  name: x\nspec:\n  deny:\n    - cidr: 300.1.2.3\n", ":7:13:"),
        ("empty.yaml", "", "empty"),
    ];
    for (name, text, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let out = Command::new(RESTRICTD)
            .arg("check")
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name) && err.contains(want), "{name}: {err}");
    }
    let out = Command::new(RESTRICTD)
        .args(["check", "/nonexistent/policy.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/policy.yaml"));
}

fn check(args: &[&str], text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policy.yaml");
    std::fs::write(&p, text).unwrap();
    let out = Command::new(RESTRICTD)
        .arg("check")
        .args(args)
        .arg(&p)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Teleport's own test policy has `39.156.69.70/28`: Teleport masks it, so
/// restrictd does too, naming the line; `--strict` refuses it.
#[test]
fn host_bits_are_masked_with_a_located_warning_and_strict_refuses_them() {
    let text = "kind: network_restrictions\nversion: v4\nmetadata:\n  name: x\nspec:\n  deny:\n    - cidr: 39.156.69.70/28\n";
    let (code, out, err) = check(&[], text);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("deny:  1 IPv4"), "{out}");
    assert!(
        err.contains("warning: ")
            && err.contains("policy.yaml:7:13:")
            && err.contains("39.156.69.64/28"),
        "{err}"
    );
    let (code, _, err) = check(&["--strict"], text);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("policy.yaml:7:13:") && err.contains("host bits"),
        "{err}"
    );
}

/// A typo Teleport would ignore (and so allow more) is refused, and the
/// error says why.
#[test]
fn an_unknown_key_is_refused_with_the_reason() {
    let text = "kind: network_restrictions\nversion: v4\nmetadata:\n  name: x\nspec:\n  allow:\n    - cidr: 10.0.0.0/8\n  denny:\n    - cidr: 10.1.2.4\n";
    let (code, _, err) = check(&[], text);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("policy.yaml:8:") && err.contains("denny"),
        "{err}"
    );
    assert!(err.contains("Teleport ignores them"), "{err}");
}

/// A file and a directory of per-login policies, taken together: whom each
/// binds, in precedence order, and a policy an earlier one shadows; a
/// second host default across them is an error naming both places.
#[test]
fn per_login_policies_are_listed_with_whom_they_bind_and_shadows_warned() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("policy.d");
    std::fs::create_dir(&d).unwrap();
    let doc = |name: &str, m: &str| {
        format!("kind: restrictd_policy\nversion: v1\nmetadata:\n  name: {name}\nspec:\n  match:\n    {m}\n  allow:\n    - cidr: 10.0.0.0/8\n      ports: [443]\n")
    };
    std::fs::write(d.join("20-later.yaml"), doc("alice-too", "users: [alice]")).unwrap();
    std::fs::write(d.join("10-first.yaml"), doc("staff", "groups: [staff]")).unwrap();
    std::fs::write(d.join("ignored.txt"), "not yaml").unwrap();
    let main = dir.path().join("policy.yaml");
    std::fs::write(
        &main,
        format!(
            "{}---\n{}",
            doc("alice", "users: [alice]"),
            doc("everyone", "{}")
        ),
    )
    .unwrap();
    let out = Command::new(RESTRICTD)
        .arg("check")
        .arg(&main)
        .arg(&d)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("no network_restrictions"), "{stdout}");
    let order: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("policy "))
        .collect();
    assert_eq!(order.len(), 4, "{stdout}");
    assert!(
        order[0].starts_with("1 \"alice\"") && order[0].ends_with("binds users alice"),
        "{stdout}"
    );
    assert!(
        order[1].contains("\"everyone\"") && order[1].ends_with("binds every login"),
        "{stdout}"
    );
    assert!(
        order[2].contains("\"staff\"") && order[2].contains("10-first.yaml:1"),
        "{stdout}"
    );
    assert!(order[3].contains("\"alice-too\""), "{stdout}");
    // Both later ones are shadowed by "everyone" (alice-too also by alice).
    assert!(
        stderr.contains("policy \"staff\" never applies: \"everyone\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("policy \"alice-too\" never applies: \"alice\""),
        "{stderr}"
    );

    let other = dir.path().join("other.yaml");
    std::fs::write(
        &other,
        "kind: network_restrictions\nversion: v4\nspec: {}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("30-default.yaml"),
        "kind: network_restrictions\nversion: v4\nspec: {}\n",
    )
    .unwrap();
    let out = Command::new(RESTRICTD)
        .arg("check")
        .arg(&other)
        .arg(&d)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("30-default.yaml:1:")
            && stderr.contains("second network_restrictions")
            && stderr.contains("other.yaml:1"),
        "{stderr}"
    );
}

/// A policy's session controls are printed with whom it binds; a bad one
/// is located; Teleport's resource cannot carry them.
#[test]
fn session_controls_in_policies_are_shown_and_bad_ones_located() {
    let head = "kind: restrictd_policy\nversion: v1\nmetadata:\n  name: c\nspec:\n  match:\n    users: [alice]\n";
    let (code, stdout, stderr) = check(
        &[],
        &format!(
            "{head}  controls:\n    max_sessions: 2\n    idle_timeout: 15m\n    max_duration: 0\n"
        ),
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("session controls: max_sessions 2, idle_timeout 15m, max_duration off"),
        "{stdout}"
    );
    for (controls, want) in [
        ("    idle_timeout: soon\n", "soon"),
        ("    idle_timeout: 5s\n", "shorter than the shortest limit"),
        ("    max_session: 2\n", "max_session"),
    ] {
        let (code, _, stderr) = check(&[], &format!("{head}  controls:\n{controls}"));
        assert_eq!(code, Some(1), "{controls}");
        assert!(
            stderr.contains("policy.yaml:") && stderr.contains(want),
            "{controls}: {stderr}"
        );
    }
    let (code, _, stderr) = check(
        &[],
        "kind: network_restrictions\nversion: v4\nspec:\n  controls:\n    max_sessions: 1\n",
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("session_controls"), "{stderr}");
}
