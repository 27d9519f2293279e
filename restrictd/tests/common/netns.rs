//! A denied host for escape tests: a network namespace joined to this one by
//! a veth pair, with addresses only on that link (the network rule: tests
//! send only to loopback or to hosts they create). A sniffer in the
//! namespace records every IP packet that arrives there, so a test proves
//! "nothing reached the denied host" at the receiving end.

use std::{
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::{repo, sshd::unique, sshd::wait_for};

pub struct DeniedHost {
    pub netns: String,
    /// The host's own end of the link (this namespace).
    pub local4: String,
    pub local6: String,
    /// The denied host's addresses.
    pub addr4: String,
    pub addr6: String,
    host_if: String,
    capture: PathBuf,
    sniffer: Child,
    _dir: tempfile::TempDir,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl DeniedHost {
    pub fn new() -> DeniedHost {
        let id = unique("");
        let netns = format!("rdx-{id}");
        let host_if = format!("rx{}h", &id[..8]);
        let peer_if = format!("rx{}p", &id[..8]);
        // A /30 in the benchmark range 198.18.0.0/15 and a ULA /64, picked
        // from the id so that parallel tests do not share one.
        let n = u32::from_str_radix(&id[..6], 16).unwrap();
        let (b, c) = ((n >> 8) & 0xff, (n & 0x3f) * 4);
        let (local4, addr4) = (
            format!("198.18.{b}.{}", c + 1),
            format!("198.18.{b}.{}", c + 2),
        );
        let net6 = format!("fd00:72:{:x}:{:x}", n >> 12, n & 0xfff);
        let (local6, addr6) = (format!("{net6}::1"), format!("{net6}::2"));
        ip(&["netns", "add", &netns]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
        ]);
        ip(&["link", "set", &peer_if, "netns", &netns]);
        ip(&["addr", "add", &format!("{local4}/30"), "dev", &host_if]);
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{local6}/64"),
            "dev",
            &host_if,
            "nodad",
        ]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{addr4}/30"),
            "dev",
            &peer_if,
        ]);
        ip(&[
            "-n",
            &netns,
            "-6",
            "addr",
            "add",
            &format!("{addr6}/64"),
            "dev",
            &peer_if,
            "nodad",
        ]);
        ip(&["-n", &netns, "link", "set", &peer_if, "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        let dir = tempfile::tempdir().unwrap();
        let capture = dir.path().join("capture.jsonl");
        fs::write(&capture, "").unwrap();
        let sniffer = Command::new("ip")
            .args(["netns", "exec", &netns, "python3"])
            .arg(repo().join("tests/escape.py"))
            .args(["sniff", &peer_if])
            .arg(&capture)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let host = DeniedHost {
            netns,
            local4,
            local6,
            addr4,
            addr6,
            host_if,
            capture,
            sniffer,
            _dir: dir,
        };
        // The sniffer is up when a datagram from here shows in the capture.
        wait_for("the sniffer to capture", Duration::from_secs(10), || {
            host.send_from_here("rdx-control");
            host.captured()
                .iter()
                .any(|p| p["markers"].to_string().contains("rdx-control"))
        });
        host
    }

    /// An unrestricted datagram from this process to the denied host (both
    /// families): the positive control.
    pub fn send_from_here(&self, marker: &str) {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let _ = s.send_to(marker.as_bytes(), (self.addr4.as_str(), 9));
        if let Ok(s6) = std::net::UdpSocket::bind("[::]:0") {
            let _ = s6.send_to(marker.as_bytes(), (self.addr6.as_str(), 9));
        }
    }

    /// Every IP packet that arrived at the denied host so far.
    pub fn captured(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(&self.capture)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// `args` run inside the denied host's namespace.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for DeniedHost {
    fn drop(&mut self) {
        let _ = self.sniffer.kill();
        let _ = self.sniffer.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}
