//! The PAM module's arguments, as the PAM line gives them (split on
//! whitespace).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let args: Vec<&str> = text.split_whitespace().collect();
    let _ = pam_restrict::parse_args(&args);
});
