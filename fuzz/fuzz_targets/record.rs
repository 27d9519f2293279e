//! A ring buffer record as the kernel hands it over: decoded with its sizes
//! checked, or refused; a decoded record becomes an event body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = restrictd_common::record::decode(data) {
        let _ = restrictd::events::from_record(&r);
    }
});
