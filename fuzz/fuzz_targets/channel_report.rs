//! The controller's side of the channel: the `weir_api::channel::Report` a data plane posts,
//! read as `weir-controller`'s `channel::take_report` does (JSON, then the selector it names).
//! The controller's own crate is not linked (it brings a Kubernetes client); what it parses of
//! a report is this contract type and `Selector::parse`.
//!
//! Input: the request body. Properties: a report reads back as itself once written (the data
//! plane writes what the controller reads), and its selector, when it parses, reads back from
//! its canonical form as the same selector.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_api::channel::Report;
use weir_api::selector::Selector;

fuzz_target!(|data: &[u8]| {
    let Ok(report) = serde_json::from_slice::<Report>(data) else {
        return;
    };
    let written = serde_json::to_vec(&report).expect("a report serializes");
    let again: Report = serde_json::from_slice(&written)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&written)));
    assert_eq!(again, report);
    if let Ok(selector) = Selector::parse(&report.selector) {
        let canonical = selector.to_string();
        assert_eq!(Selector::parse(&canonical), Ok(selector), "{canonical:?}");
    }
});
