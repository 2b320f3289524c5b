//! Fuzzes the qcow reader: headers, extensions, snapshot tables, L1/L2 tables, compressed
//! clusters, on an image held in memory.
#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

fuzz_target!(|data: &[u8]| -> Corpus {
    if data.len() < 48 {
        return Corpus::Reject;
    }
    futures::executor::block_on(rbdx_format_qcow::fuzzing::image(data));
    Corpus::Keep
});
