//! A policy file (Teleport `network_restrictions` and `restrictd_policy`
//! YAML documents): any text is either refused with an error or gives a
//! policy set whose model answers for any login and destination, and whose
//! kernel entries either fit or are refused.
#![no_main]
use libfuzzer_sys::fuzz_target;
use restrictd::policy::{PolicySet, Strictness, Who};
use restrictd_common::{PROTO_TCP, PROTO_UDP};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(set) = PolicySet::parse_with(text, "fuzz", Strictness::Teleport) {
        let who = Who {
            user: "alice".into(),
            groups: vec!["staff".into()],
            source: "10.0.0.1".parse().ok(),
            service: Some("sshd".into()),
            auth: None,
        };
        if let Some(p) = set.for_login(&who) {
            let _ = p.allows("127.0.0.1".parse().unwrap(), PROTO_TCP, 443);
            let _ = p.allows("::ffff:10.0.0.1".parse().unwrap(), PROTO_UDP, 53);
            let _ = p.counts();
        }
        let _ = set.shadowed();
        let _ = restrictd::bpf::check_fits(&set);
    }
    // Strict refuses more, never reads a file differently.
    if let Ok(strict) = PolicySet::parse_with(text, "fuzz", Strictness::Strict) {
        let p = PolicySet::parse_with(text, "fuzz", Strictness::Teleport).expect("strict accepted it");
        let rules = |s: &PolicySet| {
            s.all()
                .map(|p| (p.allow.clone(), p.deny.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(rules(&p), rules(&strict));
    }
});
