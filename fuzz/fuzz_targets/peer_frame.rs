//! Fuzzes the peer protocol's decoders: whole frames (header, CRC, decompression) and the
//! messages inside them (requests, answers, events, handshake messages).
#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};

fuzz_target!(|data: &[u8]| -> Corpus {
    let Some((&which, rest)) = data.split_first() else {
        return Corpus::Reject;
    };
    rbdx_peer::fuzzing::decode(which, rest);
    Corpus::Keep
});
