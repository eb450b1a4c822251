//! The configuration loader: TOML text, the schema and the validation
//! into settings. Besides not panicking: a refusal always says why.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = chatmail_config::parse(text) {
        assert!(!e.to_string().trim().is_empty());
    }
});
