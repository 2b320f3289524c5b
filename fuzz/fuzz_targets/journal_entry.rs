//! Fuzzes the journal's readers: entry framing (with its torn-tail detection) and the event
//! decoder of every whole entry.
#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

fuzz_target!(|data: &[u8]| -> Corpus {
    if data.len() < 8 {
        return Corpus::Reject;
    }
    let bytes = bytes::Bytes::copy_from_slice(data);
    let parsed = rbdx_journal::entry::parse(&bytes);
    assert!(parsed.valid_len <= data.len());
    for entry in &parsed.entries {
        let _ = rbdx_journal::event::decode(&entry.data);
    }
    let _ = rbdx_journal::event::decode(&bytes);
    Corpus::Keep
});
