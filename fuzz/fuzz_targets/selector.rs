//! Label selectors (`weir_api::selector::Selector`), which a data plane passes on its stream
//! (`--pool-selector`, `?selector=`) and in its reports.
//!
//! Input: the selector's text on the first line, then one `key=value` label per line (a line
//! without `=` is a key with an empty value). Properties: parsing never panics; a parsed
//! selector's canonical form (`Display`) parses back to the same selector, whose canonical
//! form is the same text; only the empty selector selects everything; matching never panics.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use weir_api::selector::Selector;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let Ok(selector) = Selector::parse(lines.next().unwrap_or_default()) else {
        return;
    };
    let labels: BTreeMap<String, String> = lines
        .map(|l| l.split_once('=').unwrap_or((l, "")))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let canonical = selector.to_string();
    let again = Selector::parse(&canonical)
        .unwrap_or_else(|e| panic!("the canonical form {canonical:?} is refused: {e}"));
    assert_eq!(again, selector, "{canonical:?}");
    assert_eq!(again.to_string(), canonical);
    assert_eq!(
        selector.is_everything(),
        canonical.is_empty(),
        "{canonical:?}"
    );
    assert_eq!(selector.matches(&labels), again.matches(&labels));
    if selector.is_everything() {
        assert!(selector.matches(&labels));
    }
});
