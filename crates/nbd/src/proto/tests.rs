use super::*;

#[test]
fn parse_request_reads_every_field() {
    let mut b = [0u8; Request::SIZE];
    b[0..4].copy_from_slice(&[0x25, 0x60, 0x95, 0x13]);
    b[4..6].copy_from_slice(&[0x00, 0x01]);
    b[6..8].copy_from_slice(&[0x00, 0x01]);
    b[8..16].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    b[16..24].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0x10, 0]);
    b[24..28].copy_from_slice(&[0, 0, 2, 0]);
    let req = Request::parse(&b).unwrap();
    assert_eq!(
        req,
        Request {
            flags: cmdflag::FUA,
            kind: cmd::WRITE,
            cookie: 0x0102_0304_0506_0708,
            offset: 4096,
            length: 512,
        }
    );
    assert_eq!(req.encode(), b);
}

#[test]
fn parse_request_with_bad_magic_returns_bad_magic() {
    let mut b = Request {
        flags: 0,
        kind: cmd::READ,
        cookie: 1,
        offset: 0,
        length: 1,
    }
    .encode();
    b[0] ^= 0xff;
    assert!(matches!(
        Request::parse(&b),
        Err(ProtoError::BadMagic { .. })
    ));
}

#[test]
fn parse_option_header_checks_ihaveopt() {
    let mut b = [0u8; OptionHeader::SIZE];
    b[0..8].copy_from_slice(b"IHAVEOPT");
    b[8..12].copy_from_slice(&7u32.to_be_bytes());
    b[12..16].copy_from_slice(&9u32.to_be_bytes());
    assert_eq!(
        OptionHeader::parse(&b).unwrap(),
        OptionHeader {
            option: opt::GO,
            length: 9
        }
    );
    b[0] = b'X';
    assert!(OptionHeader::parse(&b).is_err());
}

#[test]
fn parse_go_reads_name_and_info_requests() {
    let mut data = Vec::new();
    data.extend_from_slice(&7u32.to_be_bytes());
    data.extend_from_slice(b"rbd/vm1");
    data.extend_from_slice(&2u16.to_be_bytes());
    data.extend_from_slice(&3u16.to_be_bytes());
    data.extend_from_slice(&1u16.to_be_bytes());
    assert_eq!(
        ClientOption::parse(opt::GO, &data).unwrap(),
        ClientOption::Info {
            go: true,
            name: "rbd/vm1".into(),
            requests: vec![info::BLOCK_SIZE, info::NAME],
        }
    );
}

#[test]
fn parse_go_with_name_longer_than_data_returns_truncated() {
    let mut data = Vec::new();
    data.extend_from_slice(&100u32.to_be_bytes());
    data.extend_from_slice(b"short");
    assert_eq!(
        ClientOption::parse(opt::GO, &data),
        Err(ProtoError::TruncatedOption { option: opt::GO })
    );
}

#[test]
fn parse_info_with_trailing_bytes_returns_trailing() {
    let mut data = Vec::new();
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    data.push(9);
    assert_eq!(
        ClientOption::parse(opt::INFO, &data),
        Err(ProtoError::TrailingOptionData {
            option: opt::INFO,
            extra: 1
        })
    );
}

#[test]
fn parse_set_meta_context_reads_queries() {
    let mut data = Vec::new();
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(&2u32.to_be_bytes());
    for q in ["base:allocation", "qemu:dirty-bitmap:x"] {
        data.extend_from_slice(&(q.len() as u32).to_be_bytes());
        data.extend_from_slice(q.as_bytes());
    }
    assert_eq!(
        ClientOption::parse(opt::SET_META_CONTEXT, &data).unwrap(),
        ClientOption::MetaContext {
            set: true,
            export: String::new(),
            queries: vec!["base:allocation".into(), "qemu:dirty-bitmap:x".into()],
        }
    );
}

#[test]
fn parse_export_name_takes_whole_data_and_unknown_options_pass_through() {
    assert_eq!(
        ClientOption::parse(opt::EXPORT_NAME, b"rbd/a@s").unwrap(),
        ClientOption::ExportName("rbd/a@s".into())
    );
    assert_eq!(
        ClientOption::parse(42, b"junk").unwrap(),
        ClientOption::Other(42)
    );
    assert_eq!(
        ClientOption::parse(opt::EXPORT_NAME, &[0xff, 0xfe]),
        Err(ProtoError::NotUtf8 {
            option: opt::EXPORT_NAME
        })
    );
}

#[test]
fn option_reply_matches_the_specified_layout() {
    let out = option_reply(opt::GO, rep::ACK, &[]);
    assert_eq!(
        out,
        [
            0, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0
        ]
    );
    assert_eq!(
        info_export(1 << 20, tflag::HAS_FLAGS | tflag::READ_ONLY),
        [0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 3]
    );
    assert_eq!(
        info_block_size(1, 4096, 32 << 20),
        [0, 3, 0, 0, 0, 1, 0, 0, 0x10, 0, 0x02, 0, 0, 0]
    );
}

#[test]
fn replies_match_the_specified_layout() {
    assert_eq!(
        simple_reply(0xaabb, errno::EPERM),
        [
            0x67, 0x44, 0x66, 0x98, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xaa, 0xbb
        ]
    );
    let status = block_status_chunk(5, BASE_ALLOCATION_ID, &[(4096, 0), (8192, 3)]);
    assert_eq!(&status[0..4], &[0x66, 0x8e, 0x33, 0xef]);
    assert_eq!(&status[4..6], &[0, 1]);
    assert_eq!(&status[6..8], &[0, 5]);
    assert_eq!(&status[16..20], &20u32.to_be_bytes());
    assert_eq!(&status[20..24], &1u32.to_be_bytes());
    assert_eq!(&status[24..32], &[0, 0, 0x10, 0, 0, 0, 0, 0]);
    assert_eq!(&status[32..40], &[0, 0, 0x20, 0, 0, 0, 0, 3]);
    let err = error_chunk(5, errno::EINVAL, "bad");
    assert_eq!(&err[6..8], &[0x80, 0x01]);
    assert_eq!(&err[16..20], &9u32.to_be_bytes());
    assert_eq!(&err[20..], &[0, 0, 0, 22, 0, 3, b'b', b'a', b'd']);
    let hole = hole_chunk(5, 0, 4096, 512);
    assert_eq!(&hole[6..8], &[0, 2]);
    assert_eq!(&hole[20..], &[0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 2, 0]);
}
