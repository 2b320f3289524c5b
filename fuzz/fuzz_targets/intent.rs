//! Fuzzes the decoder of redo-intent records stored in object rows.
#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

fuzz_target!(|data: &[u8]| -> Corpus {
    if data.len() < 21 {
        return Corpus::Reject;
    }
    rbdx_objstore_dir::fuzzing::intent(data);
    Corpus::Keep
});
