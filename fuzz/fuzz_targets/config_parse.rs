//! `Config::parse` on arbitrary text: never panics, every error names a
//! problem, and an accepted config's `describe()` output is itself accepted
//! and describes the same settings.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tollgate::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    match Config::parse(text, path) {
        Ok(config) => {
            let described = config.describe();
            let again = Config::parse(&described, path)
                .unwrap_or_else(|e| panic!("describe() output refused: {e}\n{described}"));
            // Comments aside: warnings about settings the first file had
            // and `describe()` drops (a `url` beside `backend = "memory"`)
            // are rightly not repeated for the second.
            let settings = |t: &str| -> Vec<String> {
                t.lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(str::to_owned)
                    .collect()
            };
            assert_eq!(settings(&again.describe()), settings(&described));
        }
        Err(e) => assert!(!e.problems.is_empty()),
    }
});
