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
