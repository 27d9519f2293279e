//! Network policy: Teleport's `network_restrictions` resource (kind
//! `network_restrictions`, version `v4`), read verbatim.
//!
//! Semantics (as Teleport's): with a policy, everything is denied except the
//! `allow` CIDRs, and `deny` overrides `allow`. Without a policy everything is
//! allowed. Anything unexpected in the file is an error with its line and
//! column: a typo must never silently widen access.

use std::{collections::BTreeMap, fmt, net::IpAddr, path::Path};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

pub const KIND: &str = "network_restrictions";
pub const VERSION: &str = "v4";

/// A validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
}

/// Number of CIDRs per list and family, as `restrictd check` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub allow_v4: usize,
    pub allow_v6: usize,
    pub deny_v4: usize,
    pub deny_v6: usize,
}

/// A policy that could not be loaded: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    pub source: String,
    /// 1-based; 0 when the error has no position (e.g. the file is unreadable).
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.source, self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for PolicyError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    kind: Spanned<String>,
    version: Spanned<String>,
    metadata: RawMetadata,
    spec: RawSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    name: Spanned<String>,
    // Teleport's resource metadata carries these; accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    allow: Option<Vec<RawRule>>,
    #[serde(default)]
    deny: Option<Vec<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    cidr: Spanned<String>,
}

/// Parse budget raised above serde-saphyr's defaults so that a policy with
/// 100,000 CIDRs per list loads; the limits still bound hostile input.
fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = 8_000_000;
    budget.max_nodes = 4_000_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            source: source.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read policy: {e}"),
        })?;
        Policy::parse(&text, &source)
    }

    /// Validates policy text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Policy, PolicyError> {
        let err = |loc: Option<Location>, message: String| {
            let (line, column) = loc.map(|l| (l.line(), l.column())).unwrap_or((0, 0));
            PolicyError {
                source: source.to_string(),
                line,
                column,
                message,
            }
        };
        let at = |s: &Spanned<String>, message: String| err(Some(s.referenced), message);

        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Err(err(
                None,
                format!("policy is empty: expected a `kind: {KIND}` resource"),
            ));
        }
        let raw: RawPolicy = serde_saphyr::from_str_with_options(text, options()).map_err(|e| {
            let (line, column, message) = yaml_error(&e);
            PolicyError {
                source: source.to_string(),
                line,
                column,
                message,
            }
        })?;

        if raw.kind.value != KIND {
            return Err(at(
                &raw.kind,
                format!("kind is {:?}, expected {KIND:?}", raw.kind.value),
            ));
        }
        if raw.version.value != VERSION {
            return Err(at(
                &raw.version,
                format!(
                    "version is {:?}, expected {VERSION:?} (the version Teleport's network_restrictions uses)",
                    raw.version.value
                ),
            ));
        }
        if raw.metadata.name.value.trim().is_empty() {
            return Err(at(&raw.metadata.name, "metadata.name is empty".into()));
        }
        let rules = |list: Option<Vec<RawRule>>, what: &str| {
            list.unwrap_or_default()
                .into_iter()
                .map(|r| {
                    parse_cidr(&r.cidr.value).map_err(|m| at(&r.cidr, format!("spec.{what}: {m}")))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let allow = rules(raw.spec.allow, "allow")?;
        let deny = rules(raw.spec.deny, "deny")?;
        Ok(Policy {
            name: raw.metadata.name.value,
            allow,
            deny,
        })
    }

    pub fn counts(&self) -> Counts {
        let v4 = |l: &[IpNet]| l.iter().filter(|n| matches!(n, IpNet::V4(_))).count();
        Counts {
            allow_v4: v4(&self.allow),
            allow_v6: self.allow.len() - v4(&self.allow),
            deny_v4: v4(&self.deny),
            deny_v6: self.deny.len() - v4(&self.deny),
        }
    }

    /// What the policy decides for a connect to `addr` (the reference the
    /// BPF programs must agree with; the differential test checks it). An
    /// IPv4 address (an AF_INET socket) is judged by the IPv4 rules; an IPv6
    /// one (an AF_INET6 socket), v4-mapped ones included, by the IPv6 rules
    /// and by every IPv4 rule in its v4-mapped form (`::ffff:a.b.c.d/96+n`),
    /// so that an AF_INET6 socket cannot bypass IPv4 rules.
    ///
    /// An unspecified address is judged as the local host the kernel sends
    /// to (`local_destination`), for a socket bound to no address.
    pub fn allows(&self, addr: IpAddr) -> bool {
        let addr = local_destination(addr);
        let hit = |l: &[IpNet]| {
            l.iter().any(|n| match (n, addr) {
                (IpNet::V4(n), IpAddr::V4(a)) => n.contains(&a),
                (IpNet::V6(n), IpAddr::V6(a)) => n.contains(&a),
                (IpNet::V4(n), IpAddr::V6(a)) => {
                    Ipv6Net::new(n.network().to_ipv6_mapped(), 96 + n.prefix_len())
                        .is_ok_and(|m| m.contains(&a))
                }
                (IpNet::V6(_), IpAddr::V4(_)) => false,
            })
        };
        hit(&self.allow) && !hit(&self.deny)
    }
}

/// Where a connect from an unbound socket to `addr` goes: `0.0.0.0` and
/// `::ffff:0.0.0.0` are 127.0.0.1 (v4-mapped on an IPv6 socket), `::` is
/// ::1; any other address is itself. (With a source address — the socket
/// bound to one, or a sendmsg source — 0.0.0.0 goes to that address, as the
/// BPF programs judge it.)
pub fn local_destination(addr: IpAddr) -> IpAddr {
    use std::net::{Ipv4Addr, Ipv6Addr};
    match addr {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(a) if a.to_ipv4_mapped() == Some(Ipv4Addr::UNSPECIFIED) => {
            IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped())
        }
        a => a,
    }
}

/// A CIDR or a bare address (meaning /32, or /128 for IPv6). Host bits set
/// below the prefix are refused rather than masked away, because
/// `10.1.2.4/8` is far more likely a typo than a request for all of 10/8.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("cidr is empty".into());
    }
    if !s.contains('/') {
        return match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Ok(IpNet::V4(Ipv4Net::from(a))),
            Ok(IpAddr::V6(a)) => Ok(IpNet::V6(Ipv6Net::from(a))),
            Err(_) => Err(format!("{s:?} is not an IP address or CIDR")),
        };
    }
    let net: IpNet = s
        .parse()
        .map_err(|_| format!("{s:?} is not a valid CIDR (address/prefix-length)"))?;
    if net.network() != net.addr() {
        return Err(format!(
            "{s:?} has host bits set below /{}; write {} for the network, or the address alone for one host",
            net.prefix_len(),
            net.trunc()
        ));
    }
    Ok(net)
}

/// A valid policy with `n_allow` and `n_deny` distinct CIDRs, half IPv4 and
/// half IPv6 in each list; the allow list starts with 127.0.0.0/8 and ::1.
/// Used by tests and by the benchmark.
#[doc(hidden)]
pub fn synthetic_yaml(n_allow: usize, n_deny: usize) -> String {
    use std::fmt::Write;
    let mut s = format!(
        "kind: {KIND}\nversion: {VERSION}\nmetadata:\n  name: synthetic\nspec:\n  allow:\n    - cidr: 127.0.0.0/8\n    - cidr: ::1/128\n"
    );
    let gen = |s: &mut String, n: usize, v4_base: u32, v6_group: u16| {
        for i in 0..n as u32 {
            if i % 2 == 0 {
                let a = std::net::Ipv4Addr::from(v4_base + (i / 2) * 256);
                let _ = writeln!(s, "    - cidr: {a}/24");
            } else {
                let j = i / 2;
                let _ = writeln!(s, "    - cidr: 2001:db8:{v6_group:x}:{:x}::/64", j + 1);
            }
        }
    };
    // allow: 11.0.0.0/24, 11.0.1.0/24, ...; deny: 12.x and 2001:db8:0:x::/64 ...
    gen(&mut s, n_allow.saturating_sub(2), 0x0b00_0000, 1);
    s.push_str("  deny:\n");
    gen(&mut s, n_deny, 0x0c00_0000, 0);
    s
}

/// Splits a YAML error into line, column (0 when unknown) and the message
/// without the parser's own "error: line N column M:" prefix or snippet.
pub(crate) fn yaml_error(e: &serde_saphyr::Error) -> (u64, u64, String) {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or_default().trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let prefix = format!("line {line} column {column}: ");
    let suffix = format!(" at line {line}, column {column}");
    let msg = first.strip_prefix(prefix.as_str()).unwrap_or(first);
    let msg = msg.strip_suffix(suffix.as_str()).unwrap_or(msg);
    // The library's advice is for programmers; the admin needs the key.
    let msg = match msg.split_once(", set DuplicateKeyPolicy") {
        Some((m, _)) => m.replace("duplicate mapping key:", "duplicate key"),
        None => msg.to_string(),
    };
    (line, column, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TELEPORT_EXAMPLE: &str = include_str!("../../examples/netpolicy.yaml");

    fn parse(s: &str) -> Result<Policy, PolicyError> {
        Policy::parse(s, "p.yaml")
    }

    #[test]
    fn teleport_example_loads_unchanged() {
        let p = parse(TELEPORT_EXAMPLE).unwrap();
        assert_eq!(p.name, "network-restrictions");
        assert_eq!(
            p.counts(),
            Counts {
                allow_v4: 5,
                allow_v6: 2,
                deny_v4: 1,
                deny_v6: 0
            }
        );
        assert_eq!(p.deny, vec!["10.1.2.4/32".parse::<IpNet>().unwrap()]);
        assert!(p.allows("10.1.2.3".parse().unwrap()));
        assert!(!p.allows("10.1.2.4".parse().unwrap()));
        assert!(!p.allows("::ffff:10.1.2.4".parse().unwrap()));
        assert!(p.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!p.allows("8.8.8.8".parse().unwrap()));
        assert!(p.allows("::1".parse().unwrap()));
    }

    fn expect_err(s: &str, line: u64, needle: &str) -> PolicyError {
        let e = parse(s).expect_err("policy must be rejected");
        assert_eq!(e.line, line, "wrong line in {e}");
        assert!(
            e.message.contains(needle),
            "error {e:?} does not mention {needle:?}"
        );
        e
    }

    const HEAD: &str = "kind: network_restrictions\nversion: v4\nmetadata:\n  name: n\n";

    #[test]
    fn bad_cidr_is_located() {
        let e = expect_err(
            &format!("{HEAD}spec:\n  allow:\n    - cidr: 10.0.0.0/8\n    - cidr: 10.0.0.0/33\n"),
            8,
            "not a valid CIDR",
        );
        assert_eq!(e.column, 13);
        assert!(e.to_string().starts_with("p.yaml:8:13: spec.allow"));
        expect_err(
            &format!("{HEAD}spec:\n  deny:\n    - cidr: 10.1.2.400\n"),
            7,
            "not an IP address",
        );
        expect_err(
            &format!("{HEAD}spec:\n  deny:\n    - cidr: \"\"\n"),
            7,
            "empty",
        );
        expect_err(
            &format!("{HEAD}spec:\n  allow:\n    - cidr: 10.1.2.4/8\n"),
            7,
            "host bits",
        );
        expect_err(
            &format!("{HEAD}spec:\n  allow:\n    - cidr: fe80::1%eth0\n"),
            7,
            "not an IP address",
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        // `alow` instead of `allow` would otherwise deny-all silently; `cidrs` would drop a rule.
        expect_err(
            &format!("{HEAD}spec:\n  alow:\n    - cidr: 10.0.0.0/8\n"),
            6,
            "alow",
        );
        expect_err(
            &format!("{HEAD}spec:\n  deny:\n    - cidrs: 10.0.0.0/8\n"),
            7,
            "cidrs",
        );
        expect_err(&format!("{HEAD}spec: {{}}\nextra: 1\n"), 6, "extra");
        expect_err(&format!("{HEAD}  nmae: x\nspec: {{}}\n"), 5, "nmae");
    }

    #[test]
    fn wrong_kind_or_version() {
        expect_err(
            "kind: role\nversion: v4\nmetadata:\n  name: n\nspec: {}\n",
            1,
            "kind is \"role\"",
        );
        expect_err(
            "kind: network_restrictions\nversion: v3\nmetadata:\n  name: n\nspec: {}\n",
            2,
            "version is \"v3\"",
        );
    }

    #[test]
    fn missing_parts_and_empty_files() {
        let e = parse("").unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
        let e = parse("# only a comment\n\n").unwrap_err();
        assert!(e.message.contains("empty"), "{e}");
        let e =
            parse("kind: network_restrictions\nversion: v4\nmetadata:\n  name: n\n").unwrap_err();
        assert!(e.message.contains("spec"), "{e}");
        let e = parse("kind: network_restrictions\nversion: v4\nspec: {}\n").unwrap_err();
        assert!(e.message.contains("metadata"), "{e}");
        // Not a mapping at all.
        assert!(parse("- a\n- b\n").is_err());
        // Duplicate keys: the second `deny` would hide the first.
        let e = parse(&format!(
            "{HEAD}spec:\n  deny:\n    - cidr: 10.0.0.1\n  deny:\n    - cidr: 10.0.0.2\n"
        ))
        .unwrap_err();
        assert!(e.line >= 6, "{e}");
    }

    #[test]
    fn empty_spec_denies_everything() {
        let p = parse(&format!("{HEAD}spec: {{}}\n")).unwrap();
        assert!(p.allow.is_empty() && p.deny.is_empty());
        assert!(!p.allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bare_addresses_are_host_routes() {
        let p = parse(&format!(
            "{HEAD}spec:\n  allow:\n    - cidr: 10.1.2.4\n    - cidr: 2001:db8::1\n"
        ))
        .unwrap();
        assert_eq!(
            p.allow,
            vec![
                "10.1.2.4/32".parse::<IpNet>().unwrap(),
                "2001:db8::1/128".parse().unwrap()
            ]
        );
    }

    #[test]
    fn large_policy_loads() {
        let p = parse(&synthetic_yaml(100_000, 100_000)).unwrap();
        assert_eq!(p.allow.len(), 100_000);
        assert_eq!(p.deny.len(), 100_000);
        assert_eq!(p.counts().allow_v4, 50_000);
        // The listed loopback range and a generated deny are where they should be.
        assert!(p.allows("127.0.0.1".parse().unwrap()));
        assert!(!p.allows("2001:db8:0:1::1".parse().unwrap()));
    }
}
