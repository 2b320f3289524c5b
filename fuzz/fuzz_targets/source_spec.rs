//! Fuzzes source-spec parsing and the typed key readers.
#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

fuzz_target!(|data: &[u8]| -> Corpus {
    let Ok(text) = std::str::from_utf8(data) else {
        return Corpus::Reject;
    };
    rbdx_source::fuzzing::source_spec(text);
    Corpus::Keep
});
