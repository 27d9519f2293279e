//! A policy file (Teleport `network_restrictions` YAML): any text is either
//! refused with an error or gives a policy whose model answers for any
//! address.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = restrictd::policy::Policy::parse(text, "fuzz") {
        let _ = p.allows("127.0.0.1".parse().unwrap());
        let _ = p.allows("::ffff:10.0.0.1".parse().unwrap());
        let _ = p.counts();
    }
    // Strict refuses more, never reads a file differently.
    if let Ok(strict) = restrictd::policy::Policy::parse_with(
        text,
        "fuzz",
        restrictd::policy::Strictness::Strict,
    ) {
        let p = restrictd::policy::Policy::parse(text, "fuzz").expect("strict accepted it");
        assert_eq!((&p.allow, &p.deny), (&strict.allow, &strict.deny));
    }
});
