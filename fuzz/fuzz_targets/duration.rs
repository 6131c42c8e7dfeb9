//! Durations (`weir_api::Duration`), as written in pools files and `LoadBalancerPool`s
//! (`500ms`, `1h30m`) and sent over the channel in their canonical form.
//!
//! Input: the text. Properties: parsing never panics, and an accepted duration written in its
//! canonical form (`Display`, which is also its JSON form) reads back as the same duration.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_api::Duration;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(duration) = text.parse::<Duration>() else {
        return;
    };
    let canonical = duration.to_string();
    assert_eq!(
        canonical.parse::<Duration>(),
        Ok(duration),
        "{text:?} is {:?}, written {canonical:?}",
        duration.get()
    );
    let json = serde_json::to_string(&duration).expect("a duration serializes");
    let again: Duration = serde_json::from_str(&json).expect("a duration deserializes");
    assert_eq!(again, duration, "{json}");
});
