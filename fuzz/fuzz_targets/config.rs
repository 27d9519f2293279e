//! The daemon's config file: refused with an error, or a config whose
//! load-time options (ring sizes, path filter) can be computed.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = restrictd::config::Config::parse(text, "fuzz") {
        let _ = c.load_options(None);
    }
});
