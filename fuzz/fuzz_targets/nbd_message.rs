//! Fuzzes the NBD server's parsers: option data (the first four bytes pick the option code)
//! and transmission request headers.
#![no_main]

use libfuzzer_sys::{Corpus, fuzz_target};
use rbdx_nbd::proto::{ClientOption, Request};

fuzz_target!(|data: &[u8]| -> Corpus {
    let Some((code, rest)) = data.split_first_chunk::<4>() else {
        return Corpus::Reject;
    };
    let _ = ClientOption::parse(u32::from_be_bytes(*code) % 16, rest);
    if let Some(head) = rest.first_chunk::<{ Request::SIZE }>()
        && let Ok(req) = Request::parse(head)
    {
        assert_eq!(&req.encode(), head);
    }
    Corpus::Keep
});
