//! Network policy: Teleport's `network_restrictions` resource (kind
//! `network_restrictions`, version `v4`), read with Teleport's meaning, and
//! restrictd's own `restrictd_policy` documents (version `v1`), chosen per
//! login by who logs in, with ports and protocols.
//!
//! Semantics (as Teleport's): with a policy, everything is denied except the
//! `allow` rules, and `deny` overrides `allow`. Without a policy everything is
//! allowed. What Teleport accepts loads with Teleport's meaning (see
//! `parse_cidr` for the CIDR forms and the resource header fields below);
//! what it rejects is an error with its line and column. One deliberate
//! difference: an unknown key is an error, where Teleport ignores it, because
//! a typo must never silently widen access.
//!
//! A policy set (`PolicySet`) is the documents of the policy file, then of
//! the policy directory's files in name order. The `network_restrictions`
//! document, at most one, is the host default; a login gets the first
//! `restrictd_policy` whose `match` it meets, else the host default.

use std::{collections::HashMap, fmt, net::IpAddr, path::Path};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use restrictd_common::{PROTO_ANY, PROTO_ICMP, PROTO_OTHER, PROTO_TCP, PROTO_UDP};
use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

pub const KIND: &str = "network_restrictions";
pub const VERSION: &str = "v4";
/// restrictd's own policy documents.
pub const POLICY_KIND: &str = "restrictd_policy";
pub const POLICY_VERSION: &str = "v1";
/// The name Teleport gives the resource when `metadata.name` is missing.
pub const DEFAULT_NAME: &str = "network-restrictions";

/// One allow or deny rule: a CIDR, the protocol classes (`PROTO_*` bits)
/// and port ranges it covers (empty: every port). Rules with ports cover
/// TCP and UDP only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub net: IpNet,
    pub protocols: u32,
    pub ports: Vec<(u16, u16)>,
    /// Where it was written (`file:line:col`), to name it.
    pub at: String,
}

impl Rule {
    /// The kernel's port ranges of this rule (`restrictd_common::PortRange`).
    pub fn ranges(&self) -> Vec<(u16, u16, u32)> {
        if self.ports.is_empty() {
            vec![(0, u16::MAX, self.protocols)]
        } else {
            self.ports
                .iter()
                .map(|&(lo, hi)| (lo, hi, self.protocols))
                .collect()
        }
    }

    /// Whether the rule's CIDR covers `addr` as the kernel judges it: an
    /// IPv4 address by IPv4 rules; an IPv6 one by IPv6 rules and by every
    /// IPv4 rule in its v4-mapped form (`::ffff:a.b.c.d/96+n`).
    pub fn covers(&self, addr: IpAddr) -> bool {
        match (self.net, addr) {
            (IpNet::V4(n), IpAddr::V4(a)) => n.contains(&a),
            (IpNet::V6(n), IpAddr::V6(a)) => n.contains(&a),
            (IpNet::V4(n), IpAddr::V6(a)) => {
                Ipv6Net::new(n.network().to_ipv6_mapped(), 96 + n.prefix_len())
                    .is_ok_and(|m| m.contains(&a))
            }
            (IpNet::V6(_), IpAddr::V4(_)) => false,
        }
    }

    /// Whether a call of protocol class `proto` to `addr`:`port` is covered.
    pub fn matches(&self, addr: IpAddr, proto: u32, port: u16) -> bool {
        self.covers(addr)
            && self.protocols & proto != 0
            && (self.ports.is_empty() || self.ports.iter().any(|&(l, h)| l <= port && port <= h))
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.net)?;
        if self.protocols != PROTO_ANY || !self.ports.is_empty() {
            write!(f, " {}", protocols_name(self.protocols))?;
        }
        for (i, (lo, hi)) in self.ports.iter().enumerate() {
            let sep = if i == 0 { "/" } else { "," };
            if lo == hi {
                write!(f, "{sep}{lo}")?;
            } else {
                write!(f, "{sep}{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// `tcp`, `udp`, `tcp+udp`, `icmp`, `any`.
pub fn protocols_name(p: u32) -> String {
    if p == PROTO_ANY {
        return "any".into();
    }
    let names: Vec<&str> = [
        (PROTO_TCP, "tcp"),
        (PROTO_UDP, "udp"),
        (PROTO_ICMP, "icmp"),
        (PROTO_OTHER, "other"),
    ]
    .iter()
    .filter(|(b, _)| p & b != 0)
    .map(|(_, n)| *n)
    .collect();
    names.join("+")
}

/// Who a policy binds: every criterion given must hold; within one, any
/// listed value. No criterion: every login.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Match {
    pub users: Vec<String>,
    /// Primary or supplementary.
    pub groups: Vec<String>,
    /// The login's source address (`PAM_RHOST`).
    pub sources: Vec<IpNet>,
    /// The PAM service (`sshd`).
    pub services: Vec<String>,
    /// From sshd's `SSH_AUTH_INFO_0`.
    pub auth_methods: Vec<String>,
    /// SSH certificate principals.
    pub principals: Vec<String>,
    /// SSH certificate key ids.
    pub key_ids: Vec<String>,
    /// Public key fingerprints, `SHA256:...` (of the certificate's key for
    /// a certificate).
    pub keys: Vec<String>,
}

impl Match {
    pub fn is_empty(&self) -> bool {
        *self == Match::default()
    }

    /// Whether this match binds `who`. A criterion on something `who` does
    /// not have (no source, service or authentication outside sessions)
    /// does not hold.
    pub fn binds(&self, who: &Who) -> bool {
        let any = |want: &[String], have: &[String]| {
            want.is_empty() || want.iter().any(|w| have.contains(w))
        };
        let one = |want: &[String], have: Option<&str>| {
            want.is_empty() || have.is_some_and(|h| want.iter().any(|w| w == h))
        };
        let none = AuthInfo::default();
        let auth = who.auth.as_ref().unwrap_or(&none);
        let auth_known = |want: &[String]| want.is_empty() || who.auth.is_some();
        one(&self.users, Some(&who.user))
            && any(&self.groups, &who.groups)
            && (self.sources.is_empty()
                || who
                    .source
                    .is_some_and(|a| self.sources.iter().any(|n| net_contains(n, a))))
            && one(&self.services, who.service.as_deref())
            && auth_known(&self.auth_methods)
            && any(&self.auth_methods, &auth.methods)
            && any(&self.principals, &auth.principals)
            && any(&self.key_ids, &auth.key_ids)
            && any(&self.keys, &auth.keys)
    }

    /// Whether every login this match binds is also bound by `earlier`
    /// (then a policy with this match after `earlier` never applies).
    pub fn shadowed_by(&self, earlier: &Match) -> bool {
        let covers = |e: &[String], l: &[String]| {
            e.is_empty() || (!l.is_empty() && l.iter().all(|x| e.contains(x)))
        };
        covers(&earlier.users, &self.users)
            && covers(&earlier.groups, &self.groups)
            && covers(&earlier.services, &self.services)
            && covers(&earlier.auth_methods, &self.auth_methods)
            && covers(&earlier.principals, &self.principals)
            && covers(&earlier.key_ids, &self.key_ids)
            && covers(&earlier.keys, &self.keys)
            && (earlier.sources.is_empty()
                || (!self.sources.is_empty()
                    && self
                        .sources
                        .iter()
                        .all(|s| earlier.sources.iter().any(|e| e.contains(s)))))
    }

    /// "users alice, bob; groups dba", or "every login".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        let mut add = |what: &str, v: Vec<String>| {
            if !v.is_empty() {
                parts.push(format!("{what} {}", v.join(", ")));
            }
        };
        add("users", self.users.clone());
        add("groups", self.groups.clone());
        add("from", self.sources.iter().map(|n| n.to_string()).collect());
        add("services", self.services.clone());
        add("auth methods", self.auth_methods.clone());
        add("principals", self.principals.clone());
        add("key ids", self.key_ids.clone());
        add("keys", self.keys.clone());
        if parts.is_empty() {
            "every login".into()
        } else {
            parts.join("; ")
        }
    }
}

/// `n` contains `a`, a v4-mapped `a` counting as its IPv4 address.
fn net_contains(n: &IpNet, a: IpAddr) -> bool {
    let a = match (n, a) {
        (IpNet::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(a),
        _ => a,
    };
    n.contains(&a)
}

/// What sshd tells PAM about the authentication (`SSH_AUTH_INFO_0`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthInfo {
    pub methods: Vec<String>,
    pub keys: Vec<String>,
    pub key_ids: Vec<String>,
    pub principals: Vec<String>,
}

impl AuthInfo {
    /// Reads `SSH_AUTH_INFO_0`: one line per method that succeeded,
    /// `method [details]`; for `publickey` the details are the key (or the
    /// certificate) in OpenSSH's one-line form. A key that does not parse
    /// is left out (criteria on keys then do not hold) and named in the
    /// returned errors.
    pub fn parse(s: &str) -> (AuthInfo, Vec<String>) {
        let mut a = AuthInfo::default();
        let mut errors = Vec::new();
        for line in s.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (method, details) = line.split_once(' ').unwrap_or((line, ""));
            if !a.methods.iter().any(|m| m == method) {
                a.methods.push(method.to_string());
            }
            let key = details.trim();
            if method != "publickey" || key.is_empty() {
                continue;
            }
            let sha256 =
                |k: &ssh_key::PublicKey| k.fingerprint(ssh_key::HashAlg::Sha256).to_string();
            if key.split(' ').next().is_some_and(|t| t.contains("-cert-")) {
                match ssh_key::Certificate::from_openssh(key) {
                    Ok(c) => {
                        a.keys
                            .push(sha256(&ssh_key::PublicKey::from(c.public_key().clone())));
                        a.key_ids.push(c.key_id().to_string());
                        a.principals.extend(c.valid_principals().iter().cloned());
                    }
                    Err(e) => errors.push(format!("certificate: {e}")),
                }
            } else {
                match ssh_key::PublicKey::from_openssh(key) {
                    Ok(k) => a.keys.push(sha256(&k)),
                    Err(e) => errors.push(format!("public key: {e}")),
                }
            }
        }
        (a, errors)
    }
}

/// A login (or, outside sessions, a user) being matched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Who {
    pub user: String,
    pub groups: Vec<String>,
    pub source: Option<IpAddr>,
    pub service: Option<String>,
    pub auth: Option<AuthInfo>,
}

/// What a policy records; `None`: as the host configuration says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recording {
    pub commands: Option<bool>,
    pub network: Option<bool>,
    pub disk: Option<bool>,
    /// `off`, `output` or `input_output`.
    pub terminal: Option<crate::config::TerminalMode>,
    /// `disk_include` / `disk_exclude`: which of the opens the host's
    /// filter records this policy's logins record (it narrows the host's
    /// filter, never widens it; always recorded paths stay recorded).
    pub disk_paths: Option<DiskPaths>,
}

/// A policy's own disk filter, and the lists it was made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskPaths {
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub filter: crate::pathfilter::PathFilter,
}

/// A validated policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    /// `network_restrictions` (the host default) or `restrictd_policy`.
    pub kind: &'static str,
    pub allow: Vec<Rule>,
    pub deny: Vec<Rule>,
    /// Whom it binds (a `restrictd_policy`; empty for the host default).
    pub matcher: Match,
    /// Break-glass: nothing enforced, recorded as `record` says.
    pub unrestricted: bool,
    pub record: Recording,
    /// Session limits over the host's `session_controls`.
    pub controls: crate::controls::Controls,
    /// Where the document starts (`file:line`).
    pub at: String,
    /// What loaded but deserves a look (host bits masked away), located.
    pub warnings: Vec<PolicyError>,
    /// The rules by prefix, built on the first decision.
    pub index: LazyIndex,
}

/// The rules of one list by prefix length and masked network, so that the
/// rules covering an address are a few hash lookups away (one per prefix
/// length in use), not a scan: a denial event names its rule, and a
/// 100,000-rule policy must not make each one cost a millisecond.
#[derive(Debug, Default)]
pub struct RuleIndex {
    v4: std::collections::BTreeMap<u8, HashMap<u32, Vec<usize>>>,
    v6: std::collections::BTreeMap<u8, HashMap<u128, Vec<usize>>>,
}

fn mask4(a: u32, len: u8) -> u32 {
    a.checked_shr(32 - u32::from(len))
        .unwrap_or(0)
        .checked_shl(32 - u32::from(len))
        .unwrap_or(0)
}

fn mask6(a: u128, len: u8) -> u128 {
    a.checked_shr(128 - u32::from(len))
        .unwrap_or(0)
        .checked_shl(128 - u32::from(len))
        .unwrap_or(0)
}

impl RuleIndex {
    fn new(rules: &[Rule]) -> RuleIndex {
        let mut idx = RuleIndex::default();
        for (i, r) in rules.iter().enumerate() {
            match r.net {
                IpNet::V4(n) => idx
                    .v4
                    .entry(n.prefix_len())
                    .or_default()
                    .entry(u32::from(n.network()))
                    .or_default()
                    .push(i),
                IpNet::V6(n) => idx
                    .v6
                    .entry(n.prefix_len())
                    .or_default()
                    .entry(u128::from(n.network()))
                    .or_default()
                    .push(i),
            }
        }
        idx
    }

    /// The rules whose CIDR covers `addr` as `Rule::covers` says.
    fn covering(&self, addr: IpAddr) -> Vec<usize> {
        let mut out = Vec::new();
        let v4 = |a: u32, out: &mut Vec<usize>| {
            for (len, nets) in &self.v4 {
                out.extend(nets.get(&mask4(a, *len)).into_iter().flatten());
            }
        };
        match addr {
            IpAddr::V4(a) => v4(u32::from(a), &mut out),
            IpAddr::V6(a) => {
                for (len, nets) in &self.v6 {
                    out.extend(nets.get(&mask6(u128::from(a), *len)).into_iter().flatten());
                }
                if let Some(m) = a.to_ipv4_mapped() {
                    v4(u32::from(m), &mut out);
                }
            }
        }
        out
    }
}

/// A policy's `RuleIndex`es (allow, deny), built once when first needed.
#[derive(Default)]
pub struct LazyIndex(std::sync::OnceLock<[RuleIndex; 2]>);

impl Clone for LazyIndex {
    fn clone(&self) -> Self {
        LazyIndex::default()
    }
}

impl PartialEq for LazyIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for LazyIndex {}

impl fmt::Debug for LazyIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LazyIndex")
    }
}

/// The verdict on one destination and the rule that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    pub allowed: bool,
    /// The deny rule that matched; else the allow rule; else none (denied
    /// because no allow rule covers it, or allowed because unrestricted).
    pub rule: Option<(&'static str, usize, &'a Rule)>,
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
    // restrictd_policy only:
    #[serde(default, rename = "match")]
    matcher: Option<Spanned<RawMatch>>,
    #[serde(default)]
    unrestricted: Option<Spanned<bool>>,
    #[serde(default)]
    record: Option<Spanned<RawRecord>>,
    #[serde(default)]
    controls: Option<Spanned<crate::controls::Controls>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    cidr: Spanned<String>,
    // restrictd_policy only:
    #[serde(default)]
    ports: Option<Vec<Spanned<RawPort>>>,
    #[serde(default)]
    protocol: Option<Spanned<String>>,
}

/// `443` or `"8000-8080"`.
enum RawPort {
    Number(i64),
    Text(String),
}

/// By hand: `#[serde(untagged)]` buffers every value to try each variant.
impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawPort;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number or a \"LOW-HIGH\" range")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawPort, E> {
                Ok(RawPort::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawPort, E> {
                Ok(RawPort::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawPort, E> {
                Ok(RawPort::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMatch {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    sources: Vec<Spanned<String>>,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    auth: Option<RawAuth>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    principals: Vec<String>,
    #[serde(default)]
    key_ids: Vec<String>,
    #[serde(default)]
    keys: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    #[serde(default)]
    commands: Option<bool>,
    #[serde(default)]
    network: Option<bool>,
    #[serde(default)]
    disk: Option<bool>,
    #[serde(default)]
    terminal: Option<crate::config::TerminalMode>,
    #[serde(default)]
    disk_include: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    disk_exclude: Option<Vec<Spanned<String>>>,
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

/// Where a policy error points: in `source`, whose part being read starts
/// after line `lines_before`.
struct Locator<'a> {
    source: &'a str,
    lines_before: u64,
}

impl Locator<'_> {
    fn line<T>(&self, s: &Spanned<T>) -> u64 {
        s.referenced.line() + self.lines_before
    }

    fn err(&self, loc: Option<Location>, message: String) -> PolicyError {
        let (line, column) = loc
            .map(|l| (l.line() + self.lines_before, l.column()))
            .unwrap_or((0, 0));
        PolicyError {
            source: self.source.to_string(),
            line,
            column,
            message,
        }
    }

    fn at<T>(&self, s: &Spanned<T>, message: String) -> PolicyError {
        self.err(Some(s.referenced), message)
    }

    fn place<T>(&self, s: &Spanned<T>) -> String {
        format!("{}:{}:{}", self.source, self.line(s), s.referenced.column())
    }
}

/// The YAML documents of `text`, each a policy. A large text is read in
/// parts, one per CPU, split where a document starts (see `parts`).
fn parse_documents(
    text: &str,
    source: &str,
    strictness: Strictness,
) -> Result<Vec<Policy>, PolicyError> {
    // Several parts per CPU, so that a part slowed by other work on its
    // CPU does not hold up the whole: rayon hands out the rest meanwhile.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let parts = if threads < 2 {
        1
    } else {
        (threads * 4).min(text.len() / (64 << 10)).max(threads)
    };
    parse_documents_in(text, source, strictness, parts)
}

/// `parse_documents` in at most `n_parts` parts.
fn parse_documents_in(
    text: &str,
    source: &str,
    strictness: Strictness,
    n_parts: usize,
) -> Result<Vec<Policy>, PolicyError> {
    let loc = Locator {
        source,
        lines_before: 0,
    };
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---")
    {
        return Err(loc.err(
            None,
            format!("policy is empty: expected a `kind: {KIND}` or `kind: {POLICY_KIND}` document"),
        ));
    }
    // Each part is read, then its documents checked; as one reading of the
    // whole would, the first YAML error in the text wins over any
    // document's error.
    let read_and_check = |(lines_before, part): (u64, &str)| {
        let loc = Locator {
            source,
            lines_before,
        };
        raw_documents(part, &loc).map(|raws| {
            raws.into_iter()
                .map(|raw| document(raw, &loc, strictness))
                .collect::<Result<Vec<_>, _>>()
        })
    };
    let parts = parts(text, n_parts);
    let done: Vec<_> = if parts.len() == 1 {
        vec![read_and_check(parts[0])]
    } else {
        use rayon::prelude::*;
        parts.par_iter().map(|&part| read_and_check(part)).collect()
    };
    let mut checked = Vec::new();
    for d in done {
        checked.push(d?);
    }
    let mut all = Vec::new();
    for c in checked {
        all.extend(c?);
    }
    Ok(all)
}

/// Below this size a text is read in one part.
const PARALLEL_MIN: usize = 256 << 10;

/// `text` cut into at most `n` parts of similar size, each with the number
/// of lines before it, at lines that start a document (`---` at the start
/// of a line, alone or followed by a blank: YAML lets no scalar or
/// collection contain such a line, and anchors do not cross documents, so
/// the parts read as the whole does). A text with directives (`%`) or
/// document end markers (`...`), which would tie parts together, or a
/// small one, is one part.
fn parts(text: &str, n: usize) -> Vec<(u64, &str)> {
    if n < 2 || text.len() < PARALLEL_MIN {
        return vec![(0, text)];
    }
    let marker = |l: &str, m: &str| {
        l.strip_prefix(m)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
    };
    let target = text.len() / n;
    let mut parts = Vec::new();
    let (mut start, mut start_line) = (0usize, 0u64);
    let (mut offset, mut line) = (0usize, 0u64);
    for l in text.split_inclusive('\n') {
        let bare = l.trim_end_matches('\n');
        if bare.starts_with('%') || marker(bare, "...") {
            return vec![(0, text)];
        }
        if marker(bare, "---") && offset - start >= target && parts.len() + 1 < n {
            parts.push((start_line, &text[start..offset]));
            (start, start_line) = (offset, line);
        }
        offset += l.len();
        line += 1;
    }
    parts.push((start_line, &text[start..]));
    parts
}

/// The raw documents of `text` (a whole text or a part of one).
fn raw_documents(text: &str, loc: &Locator) -> Result<Vec<RawPolicy>, PolicyError> {
    serde_saphyr::from_multiple_with_options(text, options()).map_err(|e| {
            let (line, column, mut message) = yaml_error(&e);
            if message.starts_with("unknown field") {
                message.push_str(
                    " (restrictd refuses keys it does not know; Teleport ignores them, so a typo such as `denny:` silently widens access there)",
                );
            }
            PolicyError {
                source: loc.source.to_string(),
                // 0: no location.
                line: if line == 0 { 0 } else { line + loc.lines_before },
                column,
                message,
            }
        })
}

/// One document, checked for its kind.
fn document(raw: RawPolicy, loc: &Locator, strictness: Strictness) -> Result<Policy, PolicyError> {
    let kind: &'static str = match raw.kind.value.as_str() {
        KIND => KIND,
        POLICY_KIND => POLICY_KIND,
        other => {
            return Err(loc.at(
                &raw.kind,
                format!("kind is {other:?}, expected {KIND:?} or {POLICY_KIND:?}"),
            ))
        }
    };
    let ours = kind == POLICY_KIND;
    let want_version = if ours { POLICY_VERSION } else { VERSION };
    if raw.version.value != want_version {
        return Err(loc.at(
            &raw.version,
            if ours {
                format!(
                    "version is {:?}, expected {POLICY_VERSION:?} for {POLICY_KIND}",
                    raw.version.value
                )
            } else {
                format!(
                    "version is {:?}, expected {VERSION:?} (the version Teleport's network_restrictions uses)",
                    raw.version.value
                )
            },
        ));
    }
    let mut warnings = Vec::new();
    let meta = raw.metadata;
    let name = meta
        .as_ref()
        .and_then(|m| m.name.as_ref())
        .filter(|n| !n.value.is_empty());
    let name = match (name, ours) {
        (Some(n), true) => {
            if n.value.len() > 128 || n.value.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(loc.at(
                    n,
                    format!(
                        "metadata.name {:?}: at most 128 characters, no spaces or control characters",
                        n.value
                    ),
                ));
            }
            n.value.clone()
        }
        (Some(n), false) => n.value.clone(),
        (None, true) => {
            return Err(loc.at(
                &raw.kind,
                format!("a {POLICY_KIND} needs metadata.name: events and `restrictctl sessions` name the policy by it"),
            ))
        }
        (None, false) => DEFAULT_NAME.to_string(),
    };
    // The first invalid key in the file (a map has no order of its own).
    if let Some(key) = meta
        .iter()
        .flat_map(|m| m.labels.iter().flatten())
        .map(|(k, _)| k)
        .filter(|k| !valid_label_key(&k.value))
        .min_by_key(|k| (k.referenced.line(), k.referenced.column()))
    {
        return Err(loc.at(
            key,
            format!(
                "metadata.labels: invalid label key {:?} (letters, digits and / . _ : * - only, as Teleport requires)",
                key.value
            ),
        ));
    }
    if let Some(exp) = meta.as_ref().and_then(|m| m.expires.as_ref()) {
        if chrono::DateTime::parse_from_rfc3339(&exp.value).is_err() {
            return Err(loc.at(
                exp,
                format!("metadata.expires: {:?} is not an RFC 3339 time", exp.value),
            ));
        }
        warnings.push(loc.at(
            exp,
            "metadata.expires is ignored: the policy stays in force until replaced (Teleport's backend would delete it, lifting every restriction)".into(),
        ));
    }
    let spec = raw.spec.unwrap_or(RawSpec {
        allow: None,
        deny: None,
        matcher: None,
        unrestricted: None,
        record: None,
        controls: None,
    });
    if !ours {
        let theirs = |what: &str| {
            format!("spec.{what} is restrictd's: a {KIND} resource (Teleport's, the host default) has CIDR rules only; write a `kind: {POLICY_KIND}` document")
        };
        if let Some(m) = &spec.matcher {
            return Err(loc.at(m, theirs("match")));
        }
        if let Some(u) = &spec.unrestricted {
            return Err(loc.at(u, theirs("unrestricted")));
        }
        if let Some(r) = &spec.record {
            return Err(loc.at(r, theirs("record")));
        }
        if let Some(c) = &spec.controls {
            return Err(loc.at(
                c,
                format!(
                    "{} (host-wide limits are the daemon config's session_controls)",
                    theirs("controls")
                ),
            ));
        }
    }
    let mut rules = |list: Option<Vec<RawRule>>, what: &str| {
        let mut out = Vec::new();
        for r in list.unwrap_or_default() {
            let cidr = parse_cidr(&r.cidr.value)
                .map_err(|m| loc.at(&r.cidr, format!("spec.{what}: {m}")))?;
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
                    Strictness::Teleport => warnings.push(loc.at(&r.cidr, message)),
                    Strictness::Strict => return Err(loc.at(&r.cidr, message)),
                }
            }
            out.push(rule(r, cidr.net, what, ours, loc)?);
        }
        Ok(out)
    };
    let allow = rules(spec.allow, "allow")?;
    let deny = rules(spec.deny, "deny")?;
    let unrestricted = spec.unrestricted.as_ref().is_some_and(|u| u.value);
    if let (Some(u), true) = (&spec.unrestricted, !allow.is_empty() || !deny.is_empty()) {
        if u.value {
            return Err(loc.at(
                u,
                "spec.unrestricted: true enforces nothing, so allow and deny rules would be ignored: remove them or unrestricted".into(),
            ));
        }
    }
    let matcher = match spec.matcher {
        None => Match::default(),
        Some(m) => {
            let m = m.value;
            let mut sources = Vec::new();
            for s in &m.sources {
                let c = parse_cidr(&s.value)
                    .map_err(|e| loc.at(s, format!("spec.match.sources: {e}")))?;
                sources.push(c.net);
            }
            let auth = m.auth.unwrap_or_default();
            Match {
                users: m.users,
                groups: m.groups,
                sources,
                services: m.services,
                auth_methods: auth.methods,
                principals: auth.principals,
                key_ids: auth.key_ids,
                keys: auth.keys,
            }
        }
    };
    let disk_paths = match &spec.record {
        Some(r) => disk_paths(r, loc)?,
        None => None,
    };
    let record = spec.record.map(|r| r.value).unwrap_or_default();
    let controls = match spec.controls {
        None => crate::controls::Controls::default(),
        Some(c) => {
            c.value
                .validate("spec.controls")
                .map_err(|m| loc.at(&c, m))?;
            c.value
        }
    };
    Ok(Policy {
        name,
        kind,
        allow,
        deny,
        matcher,
        unrestricted,
        record: Recording {
            commands: record.commands,
            network: record.network,
            disk: record.disk,
            terminal: record.terminal,
            disk_paths,
        },
        controls,
        at: format!("{}:{}", loc.source, loc.line(&raw.kind)),
        warnings,
        index: LazyIndex::default(),
    })
}

/// `record.disk_include` and `record.disk_exclude` as a filter (None when
/// neither is given). A missing include list is `/`: the policy only
/// excludes. Each prefix is checked where it is written.
fn disk_paths(r: &Spanned<RawRecord>, loc: &Locator) -> Result<Option<DiskPaths>, PolicyError> {
    let (inc, exc) = (&r.value.disk_include, &r.value.disk_exclude);
    if inc.is_none() && exc.is_none() {
        return Ok(None);
    }
    let mut lists: [Vec<String>; 2] = Default::default();
    for (i, (name, list)) in [("disk_include", inc), ("disk_exclude", exc)]
        .into_iter()
        .enumerate()
    {
        for p in list.iter().flatten() {
            crate::pathfilter::PathFilter::new(std::slice::from_ref(&p.value), &[], &[]).map_err(
                |e| {
                    loc.at(
                        p,
                        format!(
                            "spec.record.{name}: {}",
                            e.trim_start_matches("disk_include: ")
                        ),
                    )
                },
            )?;
            lists[i].push(p.value.clone());
        }
    }
    let [mut include, exclude] = lists;
    if inc.is_none() {
        include.push("/".into());
    }
    let filter = crate::pathfilter::PathFilter::new(&include, &exclude, &[])
        .map_err(|e| loc.at(r, format!("spec.record.{e}")))?;
    Ok(Some(DiskPaths {
        include,
        exclude,
        filter,
    }))
}

/// A rule's protocol and ports.
fn rule(
    r: RawRule,
    net: IpNet,
    what: &str,
    ours: bool,
    loc: &Locator,
) -> Result<Rule, PolicyError> {
    if !ours {
        let theirs = |key: &str| {
            format!("spec.{what}: `{key}` is restrictd's: a {KIND} rule (Teleport's) has a cidr only; write a `kind: {POLICY_KIND}` document")
        };
        if let Some(p) = &r.protocol {
            return Err(loc.at(p, theirs("protocol")));
        }
        if let Some(p) = r.ports.as_ref().and_then(|p| p.first()) {
            return Err(loc.at(p, theirs("ports")));
        }
    }
    let mut ports = Vec::new();
    for p in r.ports.iter().flatten() {
        let bad = |why: &str| {
            loc.at(
                p,
                format!("spec.{what}: port {why} (a number 0-65535, or a range \"LOW-HIGH\")"),
            )
        };
        let (lo, hi) = match &p.value {
            RawPort::Number(n) => (*n, *n),
            RawPort::Text(t) => {
                let num = |s: &str| {
                    s.trim()
                        .parse::<i64>()
                        .map_err(|_| bad(&format!("{t:?} is not a port")))
                };
                match t.split_once('-') {
                    Some((a, b)) => (num(a)?, num(b)?),
                    None => {
                        let n = num(t)?;
                        (n, n)
                    }
                }
            }
        };
        if !(0..=65535).contains(&lo) || !(0..=65535).contains(&hi) || lo > hi {
            return Err(bad(&format!("{lo}-{hi} is out of range")));
        }
        ports.push((lo as u16, hi as u16));
    }
    if r.ports.as_ref().is_some_and(|p| p.is_empty()) {
        return Err(loc.at(
            &r.cidr,
            format!("spec.{what}: `ports: []` would cover no port; leave it out for every port"),
        ));
    }
    let protocols = match &r.protocol {
        None if ports.is_empty() => PROTO_ANY,
        None => PROTO_TCP | PROTO_UDP,
        Some(p) => match (p.value.as_str(), ports.is_empty()) {
            ("tcp", _) => PROTO_TCP,
            ("udp", _) => PROTO_UDP,
            ("any", true) => PROTO_ANY,
            ("any", false) => PROTO_TCP | PROTO_UDP,
            ("icmp", true) => PROTO_ICMP,
            ("icmp", false) => {
                return Err(loc.at(p, format!("spec.{what}: icmp has no ports")));
            }
            (other, _) => {
                return Err(loc.at(
                    p,
                    format!("spec.{what}: protocol {other:?} is not one of tcp, udp, icmp, any"),
                ))
            }
        },
    };
    Ok(Rule {
        net,
        protocols,
        ports,
        at: loc.place(&r.cidr),
    })
}

impl Policy {
    /// Reads and validates a policy file of one document.
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

    /// Validates one policy document as Teleport reads it; `source` names
    /// it in errors and warnings.
    pub fn parse(text: &str, source: &str) -> Result<Policy, PolicyError> {
        Policy::parse_with(text, source, Strictness::Teleport)
    }

    /// As `parse`, with `strictness`; more than one document is an error.
    pub fn parse_with(
        text: &str,
        source: &str,
        strictness: Strictness,
    ) -> Result<Policy, PolicyError> {
        let mut docs = parse_documents(text, source, strictness)?;
        if docs.len() != 1 {
            return Err(PolicyError {
                source: source.to_string(),
                line: 0,
                column: 0,
                message: format!("{} documents where one policy was expected", docs.len()),
            });
        }
        Ok(docs.remove(0))
    }

    /// A policy that allows nothing and binds nobody (tests, benchmarks).
    #[doc(hidden)]
    pub fn cidrs(name: &str, allow: &[IpNet], deny: &[IpNet]) -> Policy {
        let rules = |l: &[IpNet]| {
            l.iter()
                .map(|&net| Rule {
                    net,
                    protocols: PROTO_ANY,
                    ports: Vec::new(),
                    at: String::new(),
                })
                .collect()
        };
        Policy {
            name: name.into(),
            kind: KIND,
            allow: rules(allow),
            deny: rules(deny),
            matcher: Match::default(),
            unrestricted: false,
            record: Recording::default(),
            controls: Default::default(),
            at: String::new(),
            warnings: Vec::new(),
            index: LazyIndex::default(),
        }
    }

    /// Logs each warning (the daemon's log, `restrictd run`'s stderr).
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            log::warn!("{w}");
        }
    }

    pub fn counts(&self) -> Counts {
        let v4 = |l: &[Rule]| l.iter().filter(|r| matches!(r.net, IpNet::V4(_))).count();
        Counts {
            allow_v4: v4(&self.allow),
            allow_v6: self.allow.len() - v4(&self.allow),
            deny_v4: v4(&self.deny),
            deny_v6: self.deny.len() - v4(&self.deny),
        }
    }

    /// What the policy decides for a connect, send or packet of protocol
    /// class `proto` (`PROTO_*`) to `addr`:`port` (port 0 for protocols
    /// without ports): the reference the BPF programs must agree with (the
    /// differential test checks it). An IPv4 address (an AF_INET socket)
    /// is judged by the IPv4 rules; an IPv6 one (an AF_INET6 socket),
    /// v4-mapped ones included, by the IPv6 rules and by every IPv4 rule in
    /// its v4-mapped form, so that an AF_INET6 socket cannot bypass IPv4
    /// rules. An unspecified address is judged as the local host the kernel
    /// sends to (`local_destination`), for a socket bound to no address.
    pub fn decide(&self, addr: IpAddr, proto: u32, port: u16) -> Decision<'_> {
        if self.unrestricted {
            return Decision {
                allowed: true,
                rule: None,
            };
        }
        let addr = local_destination(addr);
        let [allow_idx, deny_idx] = self
            .index
            .0
            .get_or_init(|| [RuleIndex::new(&self.allow), RuleIndex::new(&self.deny)]);
        // The most specific matching rule names the decision.
        fn hit<'r>(
            l: &'static str,
            rules: &'r [Rule],
            idx: &RuleIndex,
            addr: IpAddr,
            proto: u32,
            port: u16,
        ) -> Option<(&'static str, usize, &'r Rule)> {
            idx.covering(addr)
                .into_iter()
                .map(|i| (i, &rules[i]))
                .filter(|(_, r)| r.matches(addr, proto, port))
                .max_by_key(|(i, r)| (r.net.prefix_len(), std::cmp::Reverse(*i)))
                .map(|(i, r)| (l, i, r))
        }
        let hit = |l, rules, idx| hit(l, rules, idx, addr, proto, port);
        if let Some(d) = hit("deny", &self.deny, deny_idx) {
            return Decision {
                allowed: false,
                rule: Some(d),
            };
        }
        let a = hit("allow", &self.allow, allow_idx);
        Decision {
            allowed: a.is_some(),
            rule: a,
        }
    }

    /// `decide(..).allowed`.
    pub fn allows(&self, addr: IpAddr, proto: u32, port: u16) -> bool {
        self.decide(addr, proto, port).allowed
    }

    /// "deny rule 2 (10.1.2.0/24 tcp/22, at p.yaml:14:13)", or why none.
    pub fn explain_decision(&self, d: &Decision) -> String {
        match (&d.rule, d.allowed) {
            (Some((list, i, r)), _) => format!("{list} rule {} ({r}, at {})", i + 1, r.at),
            (None, true) => "unrestricted".into(),
            (None, false) => "no allow rule covers it".into(),
        }
    }
}

/// The policies of a host: the host default and the per-login ones, in
/// precedence order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySet {
    /// The `network_restrictions` document: for logins no other binds.
    /// None: those logins are not restricted (only recorded).
    pub default: Option<Policy>,
    /// `restrictd_policy` documents; the first that binds a login is its.
    pub policies: Vec<Policy>,
}

impl PolicySet {
    /// The documents of one file's text.
    pub fn parse_with(
        text: &str,
        source: &str,
        strictness: Strictness,
    ) -> Result<PolicySet, PolicyError> {
        let mut set = PolicySet::default();
        for p in parse_documents(text, source, strictness)? {
            set.add(p)?;
        }
        Ok(set)
    }

    /// The policy file, then `dir`'s `*.yaml`/`*.yml` files in name order
    /// (a missing directory has none).
    pub fn load(
        file: &Path,
        dir: Option<&Path>,
        strictness: Strictness,
    ) -> Result<PolicySet, PolicyError> {
        let mut files = vec![file.to_path_buf()];
        if let Some(dir) = dir {
            files.extend(policy_dir_files(dir)?);
        }
        PolicySet::load_files(&files, strictness)
    }

    /// `dir`'s `*.yaml`/`*.yml` files in name order (a missing directory has
    /// none).
    pub fn load_dir(dir: &Path, strictness: Strictness) -> Result<PolicySet, PolicyError> {
        PolicySet::load_files(&policy_dir_files(dir)?, strictness)
    }

    /// The files are read and parsed in parallel (a directory of a
    /// thousand small policies would otherwise parse on one core), then
    /// added in order, so the first error is the one a reading in order
    /// meets.
    fn load_files(
        files: &[std::path::PathBuf],
        strictness: Strictness,
    ) -> Result<PolicySet, PolicyError> {
        use rayon::prelude::*;
        let read = |f: &std::path::PathBuf| {
            let source = f.display().to_string();
            let text = std::fs::read_to_string(f).map_err(|e| PolicyError {
                source: source.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read policy: {e}"),
            })?;
            parse_documents(&text, &source, strictness)
        };
        let parsed: Vec<_> = files.par_iter().map(read).collect();
        let mut set = PolicySet::default();
        for file in parsed {
            for p in file? {
                set.add(p)?;
            }
        }
        Ok(set)
    }

    /// Adds a document after the others: a second host default or a second
    /// policy of one name is an error naming both places.
    pub fn add(&mut self, p: Policy) -> Result<(), PolicyError> {
        let clash = |what: &str, first: &Policy| {
            let (source, line) = p.at.rsplit_once(':').unwrap_or((&p.at, "0"));
            PolicyError {
                source: source.to_string(),
                line: line.parse().unwrap_or(0),
                column: 1,
                message: format!("{what} (the first is at {})", first.at),
            }
        };
        if p.kind == KIND {
            if let Some(first) = &self.default {
                return Err(clash(
                    &format!("a second {KIND} document: the host default is one resource"),
                    first,
                ));
            }
            self.default = Some(p);
        } else {
            if let Some(first) = self.policies.iter().find(|q| q.name == p.name) {
                return Err(clash(&format!("a second policy named {:?}", p.name), first));
            }
            self.policies.push(p);
        }
        Ok(())
    }

    /// Every policy, the host default first.
    pub fn all(&self) -> impl Iterator<Item = &Policy> {
        self.default.iter().chain(self.policies.iter())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &PolicyError> {
        self.all().flat_map(|p| p.warnings.iter())
    }

    pub fn log_warnings(&self) {
        for w in self.warnings() {
            log::warn!("{w}");
        }
        for s in self.shadowed() {
            log::warn!("{s}");
        }
    }

    /// The `restrictd_policy` that binds `who`, or None for the host default.
    pub fn choose(&self, who: &Who) -> Option<&Policy> {
        self.policies.iter().find(|p| p.matcher.binds(who))
    }

    /// The policy that applies to `who`: its own, else the host default
    /// (None: no policy, nothing restricted).
    pub fn for_login(&self, who: &Who) -> Option<&Policy> {
        self.choose(who).or(self.default.as_ref())
    }

    /// A warning for each policy that an earlier one keeps from ever
    /// applying.
    pub fn shadowed(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, p) in self.policies.iter().enumerate() {
            if let Some(e) = self.policies[..i]
                .iter()
                .find(|e| p.matcher.shadowed_by(&e.matcher))
            {
                out.push(format!(
                    "{}: policy {:?} never applies: {:?} ({}) comes first and binds every login it binds",
                    p.at, p.name, e.name, e.at
                ));
            }
        }
        out
    }

    /// The set's name for messages: "NAME" for a lone host default, else
    /// "N policies".
    pub fn summary(&self) -> String {
        let mut s = Vec::new();
        if let Some(d) = &self.default {
            s.push(format!("host default {:?}", d.name));
        }
        if !self.policies.is_empty() {
            s.push(format!(
                "{} per-login {} ({})",
                self.policies.len(),
                if self.policies.len() == 1 {
                    "policy"
                } else {
                    "policies"
                },
                self.policies
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if s.is_empty() {
            "no policy".into()
        } else {
            s.join(", ")
        }
    }
}

/// `ADDR[:PORT][/tcp|udp|icmp]` (IPv6 with a port in brackets:
/// `[2001:db8::1]:443/tcp`): the address, protocol class (TCP when not
/// given) and port (0 when not given, or for ICMP).
pub fn parse_destination(s: &str) -> Result<(IpAddr, u32, u16), String> {
    let (rest, proto) = match s.rsplit_once('/') {
        Some((r, p)) => {
            let proto = match p {
                "tcp" => PROTO_TCP,
                "udp" => PROTO_UDP,
                "icmp" => PROTO_ICMP,
                _ => return Err(format!("{s:?}: protocol {p:?} is not tcp, udp or icmp")),
            };
            (r, proto)
        }
        None => (s, PROTO_TCP),
    };
    let bad = || format!("{s:?} is not ADDR[:PORT][/tcp|udp|icmp] ([ADDR]:PORT for IPv6)");
    if let Ok(a) = rest.parse::<IpAddr>() {
        return Ok((a, proto, 0));
    }
    let (addr, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let addr = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if proto == PROTO_ICMP && port != 0 {
        return Err(format!("{s:?}: icmp has no ports"));
    }
    Ok((addr, proto, port))
}

/// What `restrictctl policy explain` prints: the policy that binds `who`,
/// why, and its verdict on `addr`:`port` over protocol class `proto`, with
/// the deciding rule.
pub fn explain(set: &PolicySet, who: &Who, addr: IpAddr, proto: u32, port: u16) -> String {
    let dest = match (proto & (PROTO_TCP | PROTO_UDP) != 0, addr) {
        (true, IpAddr::V6(a)) => format!("[{a}]:{port}/{}", protocols_name(proto)),
        (true, a) => format!("{a}:{port}/{}", protocols_name(proto)),
        (false, a) => format!("{a}/{}", protocols_name(proto)),
    };
    let (policy, why) = match set.choose(who) {
        Some(p) => (
            Some(p),
            format!(
                "the first per-login policy that binds it ({})",
                p.matcher.describe()
            ),
        ),
        None => (
            set.default.as_ref(),
            if set.policies.is_empty() {
                "no per-login policies".to_string()
            } else {
                "no per-login policy binds it: the host default".to_string()
            },
        ),
    };
    let Some(p) = policy else {
        return format!("policy: none ({why}; no host default)\n{dest}: allowed (no policy restricts this login)\n");
    };
    let d = p.decide(addr, proto, port);
    format!(
        "policy: {} ({}, at {}): {why}\n{dest}: {} by {}\n",
        p.name,
        p.kind,
        p.at,
        if d.allowed { "allowed" } else { "denied" },
        p.explain_decision(&d)
    )
}

/// The policy files of `dir`, in name order; a missing directory has none.
fn policy_dir_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, PolicyError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(PolicyError {
                source: dir.display().to_string(),
                line: 0,
                column: 0,
                message: format!("cannot read the policy directory: {e}"),
            })
        }
    };
    let mut files: Vec<_> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "yaml" || x == "yml")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    Ok(files)
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

/// `n_policies` `restrictd_policy` documents binding one user each
/// (`user0`, `user1`, ...), each with `rules` allow rules with ports
/// (TCP 443 and 8000-8080) on distinct IPv4 and IPv6 prefixes, the first
/// policy also allowing 127.0.0.0/8 on every port. Used by the benchmark.
#[doc(hidden)]
pub fn synthetic_policies_yaml(n_policies: usize, rules: usize) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for p in 0..n_policies {
        let _ = write!(
            s,
            "---\nkind: {POLICY_KIND}\nversion: {POLICY_VERSION}\nmetadata:\n  name: p{p}\nspec:\n  match:\n    users: [user{p}]\n  allow:\n"
        );
        if p == 0 {
            s.push_str("    - cidr: 127.0.0.0/8\n");
        }
        for i in 0..rules as u32 {
            let n = p as u32 * rules as u32 + i;
            if i % 2 == 0 {
                let a = std::net::Ipv4Addr::from(0x0b00_0000 + (n / 2) * 256);
                let _ = writeln!(s, "    - cidr: {a}/24");
            } else {
                let _ = writeln!(s, "    - cidr: 2001:db8:1:{:x}::/64", n / 2 + 1);
            }
            s.push_str("      ports: [443, \"8000-8080\"]\n      protocol: tcp\n");
        }
    }
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

    fn nets(rules: &[Rule]) -> Vec<IpNet> {
        rules.iter().map(|r| r.net).collect()
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
        assert_eq!(nets(&p.deny), vec!["10.1.2.4/32".parse::<IpNet>().unwrap()]);
        assert!(p.allows("10.1.2.3".parse().unwrap(), PROTO_TCP, 80));
        assert!(!p.allows("10.1.2.4".parse().unwrap(), PROTO_TCP, 80));
        assert!(!p.allows("::ffff:10.1.2.4".parse().unwrap(), PROTO_TCP, 80));
        assert!(p.allows("::ffff:10.1.2.3".parse().unwrap(), PROTO_TCP, 80));
        assert!(!p.allows("8.8.8.8".parse().unwrap(), PROTO_TCP, 80));
        assert!(p.allows("::1".parse().unwrap(), PROTO_TCP, 80));
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
        assert_eq!(p.allow[1].net, "39.156.69.64/28".parse::<IpNet>().unwrap());
        assert!(p.allows("39.156.69.64".parse().unwrap(), PROTO_TCP, 80));
        assert!(p.allows("39.156.69.79".parse().unwrap(), PROTO_TCP, 80));
        assert!(!p.allows("39.156.69.80".parse().unwrap(), PROTO_TCP, 80));
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
        assert!(p.allows("10.9.9.9".parse().unwrap(), PROTO_TCP, 80));
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
        assert!(!p.allows("127.0.0.1".parse().unwrap(), PROTO_TCP, 80));
        assert!(!p.allows("::1".parse().unwrap(), PROTO_TCP, 80));
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
        assert!(!p.allows("127.0.0.1".parse().unwrap(), PROTO_TCP, 80));
    }

    #[test]
    fn bare_addresses_are_host_routes() {
        let p = parse(&format!(
            "{HEAD}spec:\n  allow:\n    - cidr: 10.1.2.4\n    - cidr: 2001:db8::1\n"
        ))
        .unwrap();
        assert_eq!(
            nets(&p.allow),
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
        assert!(p.allows("127.0.0.1".parse().unwrap(), PROTO_TCP, 80));
        assert!(!p.allows("2001:db8:0:1::1".parse().unwrap(), PROTO_TCP, 80));
    }

    const PER_LOGIN: &str = "kind: network_restrictions
version: v4
metadata:
  name: host
spec:
  allow:
    - cidr: 10.0.0.0/8
---
kind: restrictd_policy
version: v1
metadata:
  name: dba
spec:
  match:
    groups: [dba]
    sources: [192.0.2.0/24]
  allow:
    - cidr: 10.5.0.0/16
      ports: [5432, \"8000-8080\"]
      protocol: tcp
    - cidr: 10.5.1.0/24
      protocol: icmp
  deny:
    - cidr: 10.5.9.0/24
      ports: [8080]
---
kind: restrictd_policy
version: v1
metadata:
  name: contractors
spec:
  match:
    auth:
      principals: [contractor]
  allow:
    - cidr: 10.7.0.0/16
      ports: [443]
---
kind: restrictd_policy
version: v1
metadata:
  name: oncall
spec:
  match:
    users: [carol]
  unrestricted: true
  record:
    disk: false
";

    fn who(user: &str, groups: &[&str], from: Option<&str>) -> Who {
        Who {
            user: user.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            source: from.map(|f| f.parse().unwrap()),
            service: Some("sshd".into()),
            auth: None,
        }
    }

    #[test]
    fn a_large_text_read_in_parts_reads_as_a_whole_and_locates_errors_alike() {
        let text = synthetic_policies_yaml(300, 40);
        let cut = parts(&text, 4);
        assert_eq!(cut.len(), 4, "{} bytes", text.len());
        for (before, part) in &cut[1..] {
            assert!(part.starts_with("---\n"));
            assert_eq!(text.lines().nth(*before as usize), Some("---"));
        }
        let whole = parse_documents_in(&text, "p.yaml", Strictness::Teleport, 1).unwrap();
        let split = parse_documents_in(&text, "p.yaml", Strictness::Teleport, 4).unwrap();
        assert_eq!(whole.len(), 300);
        // (Not assert_eq: a difference would print megabytes.)
        assert!(whole == split, "the parts read differently");
        assert_eq!(split[299].at, whole[299].at);
        // A bad document late in the text, and a YAML error later still:
        // the YAML error wins, at the same place either way.
        let bad_port = text.replacen("ports: [443", "ports: [70000", 1);
        let late = |t: &str, what: &str| {
            let cut = t.rfind("  name: p250\n").unwrap();
            format!("{}{what}{}", &t[..cut], &t[cut..])
        };
        for t in [
            late(&text, "  labels: {bad key: x}\n"),
            late(&bad_port, "  labels: [\n"),
        ] {
            let one = parse_documents_in(&t, "p.yaml", Strictness::Teleport, 1).unwrap_err();
            let four = parse_documents_in(&t, "p.yaml", Strictness::Teleport, 4).unwrap_err();
            assert_eq!(one.to_string(), four.to_string());
            assert!(one.line > 10_000, "{one}");
        }
        // Directives tie documents together: read whole.
        assert_eq!(parts(&format!("%YAML 1.2\n{text}"), 4).len(), 1);
    }

    /// A directory's files are parsed in parallel but taken in name order:
    /// the policies keep that order, and of several bad files the first
    /// in order is the one reported, whichever finished first.
    #[test]
    fn a_directory_read_in_parallel_keeps_file_order_and_the_first_error() {
        let dir = tempfile::tempdir().unwrap();
        let doc = |name: &str| {
            format!("kind: restrictd_policy\nversion: v1\nmetadata:\n  name: {name}\nspec:\n  match:\n    users: [{name}]\n  allow:\n    - cidr: 10.0.0.0/8\n")
        };
        // Large files late in the order, so that small early ones finish
        // first when read in parallel.
        for i in 0..64 {
            let mut text = doc(&format!("p{i:02}"));
            if i >= 48 {
                text = format!(
                    "{text}---\n{}",
                    synthetic_policies_yaml(20, 40).replace("name: p", &format!("name: f{i}-"))
                );
            }
            std::fs::write(dir.path().join(format!("{i:02}.yaml")), text).unwrap();
        }
        let set = PolicySet::load_dir(dir.path(), Strictness::Teleport).unwrap();
        let names: Vec<&str> = set.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names.len(), 64 + 16 * 20);
        assert_eq!(&names[..3], ["p00", "p01", "p02"]);
        assert_eq!(names[48], "p48");
        assert_eq!(names[49], "f48-0");
        assert_eq!(names[names.len() - 1], "f63-19");
        assert_eq!(
            set.policies[10].at,
            format!("{}:1", dir.path().join("10.yaml").display())
        );
        // A YAML error in a late file, then a duplicate name in an earlier
        // one: the duplicate is reported.
        std::fs::write(dir.path().join("60.yaml"), "kind: [\n").unwrap();
        let e = PolicySet::load_dir(dir.path(), Strictness::Teleport).unwrap_err();
        assert!(e.source.ends_with("60.yaml"), "{e}");
        std::fs::write(dir.path().join("40.yaml"), doc("p03")).unwrap();
        let e = PolicySet::load_dir(dir.path(), Strictness::Teleport).unwrap_err();
        assert!(e.source.ends_with("40.yaml"), "{e}");
        assert!(e.message.contains("second policy named \"p03\""), "{e}");
    }

    #[test]
    fn the_first_policy_that_binds_a_login_is_its_else_the_host_default() {
        let set = PolicySet::parse_with(PER_LOGIN, "p.yaml", Strictness::Teleport).unwrap();
        assert_eq!(set.default.as_ref().unwrap().name, "host");
        let names: Vec<&str> = set.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["dba", "contractors", "oncall"]);
        assert_eq!(set.policies[0].at, "p.yaml:9");
        let name = |w: &Who| set.choose(w).map(|p| p.name.clone());
        assert_eq!(
            name(&who("bob", &["dba"], Some("192.0.2.7"))),
            Some("dba".into())
        );
        // Every criterion must hold: from elsewhere, or without the group.
        assert_eq!(name(&who("bob", &["dba"], Some("198.51.100.1"))), None);
        assert_eq!(name(&who("bob", &["staff"], Some("192.0.2.7"))), None);
        // No source (outside sessions): a source criterion does not hold.
        assert_eq!(name(&who("bob", &["dba"], None)), None);
        assert_eq!(name(&who("carol", &[], None)), Some("oncall".into()));
        let mut cert = who("dave", &[], None);
        assert_eq!(name(&cert), None);
        cert.auth = Some(AuthInfo {
            methods: vec!["publickey".into()],
            principals: vec!["contractor".into(), "x".into()],
            ..Default::default()
        });
        assert_eq!(name(&cert), Some("contractors".into()));
        assert_eq!(set.for_login(&who("erin", &[], None)).unwrap().name, "host");
    }

    #[test]
    fn ports_and_protocols_decide_with_deny_overriding_allow() {
        let set = PolicySet::parse_with(PER_LOGIN, "p.yaml", Strictness::Teleport).unwrap();
        let dba = &set.policies[0];
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(dba.allows(a("10.5.3.4"), PROTO_TCP, 5432));
        assert!(!dba.allows(a("10.5.3.4"), PROTO_UDP, 5432));
        assert!(!dba.allows(a("10.5.3.4"), PROTO_TCP, 5433));
        assert!(dba.allows(a("10.5.3.4"), PROTO_TCP, 8080));
        // The deny rule takes 8080 only.
        assert!(!dba.allows(a("10.5.9.1"), PROTO_TCP, 8080));
        assert!(dba.allows(a("10.5.9.1"), PROTO_TCP, 8079));
        // ICMP on the /24 only; the /16's TCP ports still apply there.
        assert!(dba.allows(a("10.5.1.1"), PROTO_ICMP, 0));
        assert!(!dba.allows(a("10.5.2.1"), PROTO_ICMP, 0));
        assert!(dba.allows(a("10.5.1.1"), PROTO_TCP, 5432));
        // IPv4 rules cover v4-mapped destinations of IPv6 sockets.
        assert!(dba.allows(a("::ffff:10.5.3.4"), PROTO_TCP, 5432));
        // Ports without a protocol are TCP and UDP.
        let c = &set.policies[1];
        assert!(c.allows(a("10.7.0.1"), PROTO_UDP, 443));
        assert!(!c.allows(a("10.7.0.1"), PROTO_ICMP, 0));
        // Unrestricted allows everything; the deciding rule is named.
        assert!(set.policies[2].allows(a("8.8.8.8"), PROTO_TCP, 25));
        let d = dba.decide(a("10.5.9.1"), PROTO_TCP, 8080);
        assert_eq!(
            dba.explain_decision(&d),
            "deny rule 1 (10.5.9.0/24 tcp+udp/8080, at p.yaml:24:13)"
        );
        let d = dba.decide(a("10.6.0.1"), PROTO_TCP, 8080);
        assert_eq!(dba.explain_decision(&d), "no allow rule covers it");
        let out = explain(
            &set,
            &who("bob", &["dba"], Some("192.0.2.1")),
            a("10.5.3.4"),
            PROTO_TCP,
            5432,
        );
        assert!(
            out.contains("policy: dba (restrictd_policy, at p.yaml:9)"),
            "{out}"
        );
        assert!(
            out.contains("10.5.3.4:5432/tcp: allowed by allow rule 1"),
            "{out}"
        );
    }

    #[test]
    fn bad_per_login_documents_are_located() {
        let head = "kind: restrictd_policy\nversion: v1\nmetadata:\n  name: p\nspec:\n";
        let bad = |body: &str, line: u64, needle: &str| {
            let e = PolicySet::parse_with(&format!("{head}{body}"), "p.yaml", Strictness::Teleport)
                .expect_err(body);
            assert_eq!(e.line, line, "{e}");
            assert!(e.message.contains(needle), "{e}");
        };
        bad(
            "  allow:\n    - cidr: 10.0.0.0/8\n      ports: [70000]\n",
            8,
            "out of range",
        );
        bad(
            "  allow:\n    - cidr: 10.0.0.0/8\n      ports: [\"90-80\"]\n",
            8,
            "out of range",
        );
        bad(
            "  allow:\n    - cidr: 10.0.0.0/8\n      ports: [\"http\"]\n",
            8,
            "not a port",
        );
        bad(
            "  allow:\n    - cidr: 10.0.0.0/8\n      protocol: sctp\n",
            8,
            "not one of tcp, udp, icmp, any",
        );
        bad(
            "  allow:\n    - cidr: 10.0.0.0/8\n      ports: [1]\n      protocol: icmp\n",
            9,
            "icmp has no ports",
        );
        bad(
            "  allow:\n    - cidr: 10.0.0.0/8\n      ports: []\n",
            7,
            "ports: []",
        );
        bad(
            "  unrestricted: true\n  allow:\n    - cidr: 10.0.0.0/8\n",
            6,
            "unrestricted",
        );
        bad("  match:\n    user: [a]\n", 7, "user");
        bad("  match:\n    sources: [10.0.0.0/33]\n", 7, "sources");
        bad("  record:\n    disks: false\n", 7, "disks");
        bad(
            "  record:\n    disk_include: [/a, b]\n",
            7,
            "not an absolute path",
        );
        bad(
            "  record:\n    disk_include: [/a]\n    disk_exclude: [/a/]\n",
            7,
            "also in another list",
        );
        let e = PolicySet::parse_with(
            "kind: restrictd_policy\nversion: v1\nspec: {}\n",
            "p.yaml",
            Strictness::Teleport,
        )
        .unwrap_err();
        assert!(e.message.contains("metadata.name") && e.line == 1, "{e}");
        let e = PolicySet::parse_with(
            "kind: restrictd_policy\nversion: v4\nmetadata:\n  name: p\n",
            "p.yaml",
            Strictness::Teleport,
        )
        .unwrap_err();
        assert!(e.message.contains("expected \"v1\"") && e.line == 2, "{e}");
        // Teleport's resource has CIDRs only.
        let e = parse(&format!(
            "{HEAD}spec:\n  allow:\n    - cidr: 10.0.0.0/8\n      ports: [22]\n"
        ))
        .unwrap_err();
        assert!(e.message.contains("restrictd_policy") && e.line == 8, "{e}");
        let e = parse(&format!("{HEAD}spec:\n  match:\n    users: [a]\n")).unwrap_err();
        assert!(e.message.contains("restrictd_policy") && e.line == 7, "{e}");
        // One host default, one policy per name; the error names both places.
        let two = format!("{HEAD}spec: {{}}\n---\n{HEAD}spec: {{}}\n");
        let e = PolicySet::parse_with(&two, "p.yaml", Strictness::Teleport).unwrap_err();
        assert!(
            e.message.contains("second network_restrictions")
                && e.line == 7
                && e.message.contains("p.yaml:1"),
            "{e}"
        );
        let two = format!("{head}  allow: []\n---\n{head}  allow: []\n");
        let e = PolicySet::parse_with(&two, "p.yaml", Strictness::Teleport).unwrap_err();
        assert!(
            e.message.contains("second policy named \"p\"") && e.line == 8,
            "{e}"
        );
    }

    #[test]
    fn a_policy_an_earlier_one_covers_is_reported_as_shadowed() {
        let doc = |name: &str, m: &str| {
            format!("kind: restrictd_policy\nversion: v1\nmetadata:\n  name: {name}\nspec:\n  match:\n{m}---\n")
        };
        let text = doc("staff", "    groups: [staff, dba]\n")
            + &doc(
                "dba-remote",
                "    groups: [dba]\n    sources: [10.0.0.0/8]\n",
            )
            + &doc("alice", "    users: [alice]\n")
            + &doc("everyone", "    {}\n")
            + &doc("bob", "    users: [bob]\n");
        let set = PolicySet::parse_with(&text, "p.yaml", Strictness::Teleport).unwrap();
        let sh = set.shadowed();
        assert_eq!(sh.len(), 2, "{sh:?}");
        assert!(
            sh[0].contains("\"dba-remote\" never applies: \"staff\""),
            "{sh:?}"
        );
        assert!(
            sh[1].contains("\"bob\" never applies: \"everyone\""),
            "{sh:?}"
        );
    }

    #[test]
    fn ssh_auth_info_gives_methods_and_key_fingerprints() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let (a, errors) = AuthInfo::parse(&format!("password\npublickey {key}\n"));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(a.methods, ["password", "publickey"]);
        assert_eq!(a.keys.len(), 1);
        assert!(a.keys[0].starts_with("SHA256:"), "{:?}", a.keys);
        let (a, errors) =
            AuthInfo::parse("publickey ssh-ed25519-cert-v01@openssh.com AAAAbroken\n");
        assert_eq!(errors.len(), 1);
        assert!(a.principals.is_empty() && a.key_ids.is_empty());
    }

    #[test]
    fn destinations_are_read_with_port_and_protocol() {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            parse_destination("10.0.0.1:443/tcp").unwrap(),
            (a("10.0.0.1"), PROTO_TCP, 443)
        );
        assert_eq!(
            parse_destination("10.0.0.1:53/udp").unwrap(),
            (a("10.0.0.1"), PROTO_UDP, 53)
        );
        assert_eq!(
            parse_destination("[2001:db8::1]:22").unwrap(),
            (a("2001:db8::1"), PROTO_TCP, 22)
        );
        assert_eq!(
            parse_destination("2001:db8::1/icmp").unwrap(),
            (a("2001:db8::1"), PROTO_ICMP, 0)
        );
        assert!(parse_destination("10.0.0.1:99999").is_err());
        assert!(parse_destination("10.0.0.1:1/sctp").is_err());
    }
}
