//! Fuzzes the decoder of notify frames exchanged between processes.
#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

fuzz_target!(|data: &[u8]| -> Corpus {
    if data.len() < 10 {
        return Corpus::Reject;
    }
    rbdx_objstore_dir::fuzzing::notify_frame(data);
    Corpus::Keep
});
