//! Network policy: Teleport's `network_restrictions` resource (kind
//! `network_restrictions`, version `v4`), read with Teleport's meaning.
//!
//! Semantics (as Teleport's): with a policy, everything is denied except the
//! `allow` CIDRs, and `deny` overrides `allow`. Without a policy everything is
//! allowed. What Teleport accepts loads with Teleport's meaning (see
//! `parse_cidr` for the CIDR forms and the resource header fields below);
//! what it rejects is an error with its line and column. One deliberate
//! difference: an unknown key is an error, where Teleport ignores it, because
//! a typo must never silently widen access.

use std::{collections::HashMap, fmt, net::IpAddr, path::Path};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

pub const KIND: &str = "network_restrictions";
pub const VERSION: &str = "v4";
/// The name Teleport gives the resource when `metadata.name` is missing.
pub const DEFAULT_NAME: &str = "network-restrictions";

/// A validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    /// What loaded but deserves a look (host bits masked away), located.
    pub warnings: Vec<PolicyError>,
}

/// How strictly to read a policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Strictness {
    /// Teleport's reading: a CIDR with host bits set is masked, with a warning.
    #[default]
    Teleport,
    /// A CIDR with host bits set is an error (`restrictd check --strict`,
    /// `strict_policy: true`).
    Strict,
}

/// Number of CIDRs per list and family, as `restrictd check` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub allow_v4: usize,
    pub allow_v6: usize,
    pub deny_v4: usize,
    pub deny_v6: usize,
}

/// A located message about a policy: why it could not be loaded, or (in
/// `Policy::warnings`) what loaded but deserves a look.
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

/// Teleport's resource header (`types.ResourceHeader` and `Metadata`), as
/// `tctl get network_restrictions` writes it. The fields restrictd has no
/// use for are accepted, checked as Teleport checks them, and ignored.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    kind: Spanned<String>,
    #[serde(default)]
    #[allow(dead_code)]
    sub_kind: Option<String>,
    version: Spanned<String>,
    #[serde(default)]
    metadata: Option<RawMetadata>,
    /// Missing: no allow list, so everything is denied (Teleport's reading).
    #[serde(default)]
    spec: Option<RawSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    labels: Option<HashMap<Spanned<String>, String>>,
    /// RFC 3339. Teleport's backend drops an expired resource; a file here
    /// does not expire (that would lift every restriction), see the warning.
    #[serde(default)]
    expires: Option<Spanned<String>>,
    #[serde(default)]
    #[allow(dead_code)]
    revision: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<i64>,
    #[serde(default)]
    #[allow(dead_code)]
    namespace: Option<String>,
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

/// Teleport's label key pattern (`types.LabelPattern`).
fn valid_label_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._:*-".contains(&b))
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
    pub fn load(path: &Path, strictness: Strictness) -> Result<Policy, PolicyError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            source: source.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read policy: {e}"),
        })?;
        Policy::parse_with(&text, &source, strictness)
    }

    /// Validates policy text as Teleport reads it; `source` names it in
    /// errors and warnings.
    pub fn parse(text: &str, source: &str) -> Result<Policy, PolicyError> {
        Policy::parse_with(text, source, Strictness::Teleport)
    }

    pub fn parse_with(
        text: &str,
        source: &str,
        strictness: Strictness,
    ) -> Result<Policy, PolicyError> {
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
            let (line, column, mut message) = yaml_error(&e);
            if message.starts_with("unknown field") {
                message.push_str(
                    " (restrictd refuses keys it does not know; Teleport ignores them, so a typo such as `denny:` silently widens access there)",
                );
            }
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
        let mut warnings = Vec::new();
        let meta = raw.metadata;
        let name = meta
            .as_ref()
            .and_then(|m| m.name.as_ref())
            .map(|n| n.value.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAME.to_string());
        // The first invalid key in the file (a map has no order of its own).
        if let Some(key) = meta
            .iter()
            .flat_map(|m| m.labels.iter().flatten())
            .map(|(k, _)| k)
            .filter(|k| !valid_label_key(&k.value))
            .min_by_key(|k| (k.referenced.line(), k.referenced.column()))
        {
            return Err(at(
                key,
                format!(
                    "metadata.labels: invalid label key {:?} (letters, digits and / . _ : * - only, as Teleport requires)",
                    key.value
                ),
            ));
        }
        if let Some(exp) = meta.as_ref().and_then(|m| m.expires.as_ref()) {
            if chrono::DateTime::parse_from_rfc3339(&exp.value).is_err() {
                return Err(at(
                    exp,
                    format!("metadata.expires: {:?} is not an RFC 3339 time", exp.value),
                ));
            }
            warnings.push(at(
                exp,
                "metadata.expires is ignored: the policy stays in force until replaced (Teleport's backend would delete it, lifting every restriction)".into(),
            ));
        }
        let spec = raw.spec.unwrap_or(RawSpec {
            allow: None,
            deny: None,
        });
        let mut rules = |list: Option<Vec<RawRule>>, what: &str| {
            let mut out = Vec::new();
            for r in list.unwrap_or_default() {
                let cidr = parse_cidr(&r.cidr.value)
                    .map_err(|m| at(&r.cidr, format!("spec.{what}: {m}")))?;
                if let Some(written) = cidr.masked_from {
                    let message = format!(
                        "spec.{what}: {written:?} has host bits set below /{}: read as {}, as Teleport reads it{}",
                        cidr.net.prefix_len(),
                        cidr.net,
                        match strictness {
                            Strictness::Teleport => {
                                "; write that to silence this warning (`restrictd check --strict` refuses it)"
                            }
                            Strictness::Strict => {
                                "; write the network, or the address alone for one host (strict mode)"
                            }
                        }
                    );
                    match strictness {
                        Strictness::Teleport => warnings.push(at(&r.cidr, message)),
                        Strictness::Strict => return Err(at(&r.cidr, message)),
                    }
                }
                out.push(cidr.net);
            }
            Ok(out)
        };
        let allow = rules(spec.allow, "allow")?;
        let deny = rules(spec.deny, "deny")?;
        Ok(Policy {
            name,
            allow,
            deny,
            warnings,
        })
    }

    /// Logs each warning (the daemon's log, `restrictd run`'s stderr).
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            log::warn!("{w}");
        }
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

    /// What the policy decides for a connect or send to `addr` (the reference the
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

/// A parsed `cidr`: the network, and the text as written when it had host
/// bits set below the prefix (masked away).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    pub net: IpNet,
    pub masked_from: Option<String>,
}

/// A `cidr` value as Teleport reads it (`restrictedsession.ParseIPSpec`):
/// first as a CIDR (Go's `net.ParseCIDR`: host bits masked, a prefix
/// length of decimal digits only, leading zeros allowed, no zone), else as
/// one address, /32 or /128, a v4-mapped one (`::ffff:a.b.c.d`) being the
/// IPv4 address. The text is taken exactly: space inside the quotes is an
/// error, as there. A v4-mapped CIDR (`::ffff:a.b.c.d/96+n`) is an error:
/// Teleport parses it but cannot apply it (its IPv4 trie refuses the
/// length); the IPv4 form covers the v4-mapped addresses too.
pub fn parse_cidr(s: &str) -> Result<Cidr, String> {
    if s.is_empty() {
        return Err("cidr is empty".into());
    }
    if s.trim() != s {
        return Err(format!(
            "{s:?} has spaces around the address (Teleport refuses it too)"
        ));
    }
    let Some((addr, len)) = s.split_once('/') else {
        return match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => Ok(host(IpNet::V4(Ipv4Net::from(a)))),
            Ok(IpAddr::V6(a)) => Ok(host(match a.to_ipv4_mapped() {
                Some(v4) => IpNet::V4(Ipv4Net::from(v4)),
                None => IpNet::V6(Ipv6Net::from(a)),
            })),
            Err(_) => Err(format!("{s:?} is not an IP address or CIDR")),
        };
    };
    let invalid = || format!("{s:?} is not a valid CIDR (address/prefix-length)");
    let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let len = len.bytes().fold(0u32, |n, b| {
        n.saturating_mul(10).saturating_add(u32::from(b - b'0'))
    });
    if len > max {
        return Err(format!("{s:?}: the prefix length must be 0 to {max}"));
    }
    let len = len as u8;
    let net = IpNet::new(addr, len).map_err(|_| invalid())?;
    let trunc = net.trunc();
    if let IpNet::V6(n) = trunc {
        if let (Some(v4), true) = (n.network().to_ipv4_mapped(), len >= 96) {
            return Err(format!(
                "{s:?} is a v4-mapped CIDR, which Teleport cannot apply; write {}, which covers the v4-mapped addresses too",
                Ipv4Net::new(v4, len - 96).map(|n| n.to_string()).unwrap_or_default()
            ));
        }
    }
    Ok(Cidr {
        net: trunc,
        masked_from: (trunc != net).then(|| s.to_string()),
    })
}

fn host(net: IpNet) -> Cidr {
    Cidr {
        net,
        masked_from: None,
    }
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
            "prefix length must be 0 to 32",
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
            &format!("{HEAD}spec:\n  allow:\n    - cidr: fe80::1%eth0\n"),
            7,
            "not an IP address",
        );
    }

    /// Teleport's CIDR forms (`ParseIPSpec`: Go's `net.ParseCIDR`, then
    /// `net.ParseIP`), accepted with its meaning or rejected.
    #[test]
    fn cidrs_are_read_as_teleport_reads_them() {
        let ok = |s: &str, want: &str, masked: bool| {
            let c = parse_cidr(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(c.net.to_string(), want, "{s}");
            assert_eq!(c.masked_from.is_some(), masked, "{s}");
        };
        // Teleport's own test policy: host bits masked.
        ok("39.156.69.70/28", "39.156.69.64/28", true);
        ok("10.1.2.4/8", "10.0.0.0/8", true);
        ok("2001:db8::1/32", "2001:db8::/32", true);
        // Go's prefix parser takes leading zeros.
        ok("10.0.0.0/008", "10.0.0.0/8", false);
        ok("0.0.0.0/00", "0.0.0.0/0", false);
        // A bare address is one host; a v4-mapped one is the IPv4 host.
        ok("10.1.2.4", "10.1.2.4/32", false);
        ok("2001:db8::1", "2001:db8::1/128", false);
        ok("::ffff:127.0.0.1", "127.0.0.1/32", false);
        // Below /96 a v4-mapped address is an ordinary IPv6 network.
        ok("::ffff:10.0.0.0/64", "::/64", true);
        for bad in [
            "",
            " 10.0.0.0/8",
            "10.0.0.0/8 ",
            "10.0.0.0 /8",
            "10.0.0.0/ 8",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/99999999999999999999",
            "::/129",
            "010.0.0.1",
            "10.0.0.0/0x8",
            "fe80::1%eth0",
            "fe80::%eth0/64",
            "10.0.0",
            "::ffff:10.0.0.0/104",
            "::ffff:10.0.0.1/128",
            "::ffff:0:0/96",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad:?} must be refused");
        }
        let e = parse_cidr("::ffff:10.0.0.0/104").unwrap_err();
        assert!(e.contains("write 10.0.0.0/8"), "{e}");
    }

    #[test]
    fn host_bits_warn_with_their_line_and_strict_mode_refuses_them() {
        let text =
            format!("{HEAD}spec:\n  allow:\n    - cidr: 10.0.0.0/8\n    - cidr: 39.156.69.70/28\n");
        let p = parse(&text).unwrap();
        assert_eq!(p.allow[1], "39.156.69.64/28".parse::<IpNet>().unwrap());
        assert!(p.allows("39.156.69.64".parse().unwrap()));
        assert!(p.allows("39.156.69.79".parse().unwrap()));
        assert!(!p.allows("39.156.69.80".parse().unwrap()));
        assert_eq!(p.warnings.len(), 1);
        let w = p.warnings[0].to_string();
        assert!(w.starts_with("p.yaml:8:13: spec.allow"), "{w}");
        assert!(w.contains("39.156.69.64/28"), "{w}");
        let e = Policy::parse_with(&text, "p.yaml", Strictness::Strict).unwrap_err();
        assert_eq!((e.line, e.column), (8, 13), "{e}");
        assert!(e.message.contains("host bits"), "{e}");
    }

    /// What `tctl get network_restrictions` writes, header fields included.
    #[test]
    fn an_exported_resource_loads() {
        let p = parse(
            "kind: network_restrictions\nsub_kind: \"\"\nversion: v4\nmetadata:\n  name: network-restrictions\n  namespace: default\n  description: exported\n  labels:\n    teleport.dev/origin: dynamic\n    env:prod*: x\n  id: 1700000000000000000\n  revision: 3b2f8a4e-8d2e-4f43-9b1a-2f8d7c6e5a41\n  expires: 2030-01-01T00:00:00Z\nspec:\n  allow:\n    - cidr: 10.0.0.0/8\n",
        )
        .unwrap();
        assert_eq!(p.name, "network-restrictions");
        assert!(p.allows("10.9.9.9".parse().unwrap()));
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].message.contains("expires is ignored"));
        expect_err(
            &format!("{HEAD}  labels:\n    ok: a\n    \"bad key\": b\nspec: {{}}\n"),
            7,
            "invalid label key",
        );
        expect_err(
            &format!("{HEAD}  expires: next tuesday\nspec: {{}}\n"),
            5,
            "RFC 3339",
        );
    }

    #[test]
    fn missing_metadata_name_and_spec_take_teleports_defaults() {
        let p = parse("kind: network_restrictions\nversion: v4\nspec: {}\n").unwrap();
        assert_eq!(p.name, DEFAULT_NAME);
        let p = parse("kind: network_restrictions\nversion: v4\nmetadata:\n  description: d\n")
            .unwrap();
        assert_eq!(p.name, DEFAULT_NAME);
        // No spec: no allow list, so everything is denied.
        assert!(p.allow.is_empty() && p.deny.is_empty());
        assert!(!p.allows("127.0.0.1".parse().unwrap()));
        assert!(!p.allows("::1".parse().unwrap()));
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
        let e = parse("kind: network_restrictions\nmetadata:\n  name: n\n").unwrap_err();
        assert!(e.message.contains("version"), "{e}");
        let e = parse("version: v4\nmetadata:\n  name: n\n").unwrap_err();
        assert!(e.message.contains("kind"), "{e}");
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
