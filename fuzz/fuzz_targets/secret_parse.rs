//! `Secret::parse` on arbitrary text: never panics, and whatever it accepts
//! is a canonical secret that parses again to the same key id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::keys::{Secret, SECRET_LEN, SECRET_PREFIX};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(secret) = Secret::parse(text) {
        assert_eq!(text.len(), SECRET_LEN);
        assert!(text.starts_with(SECRET_PREFIX));
        assert_eq!(secret.expose(), text);
        let again = Secret::parse(secret.expose()).expect("an accepted secret parses again");
        assert_eq!(again.key_id(), secret.key_id());
        assert!(text.starts_with(secret.prefix()));
    }
});
