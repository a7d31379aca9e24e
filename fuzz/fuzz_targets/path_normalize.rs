//! `routes::normalize` on arbitrary text: never panics; what it returns is
//! a fixed point (normalising again changes nothing), starts with `/`, and
//! holds no empty, `.` or `..` segment and no `\` or NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollgate::routes::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(n) = normalize(path) {
        assert_eq!(
            normalize(&n).as_deref(),
            Ok(n.as_str()),
            "not idempotent: {path:?}"
        );
        assert!(n.starts_with('/'));
        assert!(!n.contains('\\') && !n.contains('\0'), "{path:?} -> {n:?}");
        let inner = n.trim_end_matches('/');
        for seg in inner.split('/').skip(1) {
            assert!(
                !seg.is_empty() && seg != "." && seg != "..",
                "{path:?} -> {n:?}"
            );
        }
    }
});
