//! The standalone pools file (`weir_dataplane::config_file::parse`), YAML from whoever writes
//! it, and the validation it runs (`PoolsFile::validate`, `Pool::validate`).
//!
//! Input: the file's text. Properties:
//! - a refused file gets one error naming the file, and a line (if any) inside the text;
//! - an accepted file compiles into a configuration without panicking, every route reaching its
//!   pool and every pick landing on a usable target with a weight ([`weir_fuzz::compile`]);
//! - an accepted file written back as YAML (what `GET /pools` shows) and as JSON (what the
//!   controller sends) reads back as the same pools, and still validates.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use weir_api::PoolsFile;
use weir_dataplane::config_file::{ConfigError, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("pools.yaml");
    let file = match parse(path, text) {
        Ok(file) => file,
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("pools.yaml"), "{message}");
            if let ConfigError::Invalid {
                line: Some(line), ..
            } = e
            {
                // YAML (libyaml) breaks lines at CR LF, LF, a lone CR, NEL, LS and PS alike.
                let breaks = ['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}'];
                let lines = text.replace("\r\n", "\n").split(breaks).count();
                assert!(
                    (1..=lines + 1).contains(&line),
                    "line {line} of a {lines}-line file: {message}"
                );
            }
            return;
        }
    };
    weir_fuzz::compile(&file);

    let yaml = serde_yaml::to_string(&file).expect("a pools file serializes to YAML");
    let again = parse(path, &yaml).unwrap_or_else(|e| panic!("{e}\nwritten as:\n{yaml}"));
    assert_eq!(again, file, "written as:\n{yaml}");

    let json = serde_json::to_string(&file).expect("a pools file serializes to JSON");
    let again: PoolsFile = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(again, file, "written as {json}");
    assert_eq!(again.validate(), Ok(()));
});
