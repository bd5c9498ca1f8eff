//! Helpers shared by the integration tests: test vectors from `tests/data/`.

#![allow(dead_code)]

use std::{collections::HashMap, path::PathBuf};

/// `relay/tests/data/NAME`, independent of the working directory.
pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// Decodes hex, ignoring whitespace.
pub fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len().is_multiple_of(2), "odd hex length");
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).expect("hex digit"))
        .collect()
}

/// Parses a vector file of `key = hex` entries, where a value may continue on following lines that have no
/// `=`; `#` starts a comment line.
pub fn vectors(name: &str) -> HashMap<String, Vec<u8>> {
    let text = std::fs::read_to_string(data_path(name)).expect("vector file");
    let mut out: HashMap<String, String> = HashMap::new();
    let mut current = None;
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if let Some((key, value)) = line.split_once('=') {
            let key = key.trim().to_string();
            out.insert(key.clone(), value.to_string());
            current = Some(key);
        } else if let Some(key) = &current {
            out.get_mut(key).expect("current key").push_str(line);
        }
    }
    out.into_iter().map(|(k, v)| (k, hex(&v))).collect()
}
