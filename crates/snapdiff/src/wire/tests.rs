use super::*;

/// A version 1 diff built by hand from the specification.
fn v1_bytes() -> Vec<u8> {
    let mut b = b"rbd diff v1\n".to_vec();
    b.push(b'f');
    b.extend_from_slice(&[2, 0, 0, 0]);
    b.extend_from_slice(b"s1");
    b.push(b't');
    b.extend_from_slice(&[2, 0, 0, 0]);
    b.extend_from_slice(b"s2");
    b.push(b's');
    b.extend_from_slice(&[0, 0, 0x10, 0, 0, 0, 0, 0]);
    b.push(b'w');
    b.extend_from_slice(&[0, 0x10, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(b"abc");
    b.push(b'z');
    b.extend_from_slice(&[0, 0x20, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&[0, 0x10, 0, 0, 0, 0, 0, 0]);
    b.push(b'e');
    b
}

/// The same diff in version 2, with the to-snapshot protected.
fn v2_bytes() -> Vec<u8> {
    let mut b = b"rbd diff v2\n".to_vec();
    b.push(b'f');
    b.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&[2, 0, 0, 0]);
    b.extend_from_slice(b"s1");
    b.push(b't');
    b.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&[2, 0, 0, 0]);
    b.extend_from_slice(b"s2");
    // As `rbd` 16.2 writes it: a length of 8, one byte of data.
    b.push(b'p');
    b.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
    b.push(1);
    b.push(b's');
    b.extend_from_slice(&[8, 0, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&[0, 0, 0x10, 0, 0, 0, 0, 0]);
    b.push(b'w');
    b.extend_from_slice(&[19, 0, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&[0, 0x10, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(b"abc");
    b.push(b'z');
    b.extend_from_slice(&[16, 0, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&[0, 0x20, 0, 0, 0, 0, 0, 0]);
    b.extend_from_slice(&[0, 0x10, 0, 0, 0, 0, 0, 0]);
    b.push(b'e');
    b
}

/// Reads every record, collecting write data.
fn read_all(bytes: &[u8]) -> Result<(Version, Vec<Record>, Vec<u8>), WireError> {
    let mut r = DiffReader::new(bytes)?;
    let mut records = Vec::new();
    let mut data = Vec::new();
    loop {
        let rec = r.next_record()?;
        if let Record::Write { length, .. } = rec {
            let mut buf = vec![0u8; length as usize];
            let mut got = 0;
            while got < buf.len() {
                got += r.read_data(&mut buf[got..])?;
            }
            data.extend_from_slice(&buf);
        }
        let end = rec == Record::End;
        records.push(rec);
        if end {
            return Ok((r.version(), records, data));
        }
    }
}

fn expected(protected: bool) -> Vec<Record> {
    let mut v = vec![Record::FromSnap("s1".into()), Record::ToSnap("s2".into())];
    if protected {
        v.push(Record::Protection(true));
    }
    v.extend([
        Record::Size(1 << 20),
        Record::Write {
            offset: 4096,
            length: 3,
        },
        Record::Zero {
            offset: 8192,
            length: 4096,
        },
        Record::End,
    ]);
    v
}

fn encode(version: Version) -> Vec<u8> {
    let mut w = DiffWriter::new(Vec::new(), version).unwrap();
    w.header(Some("s1"), Some("s2"), Some(true), 1 << 20)
        .unwrap();
    w.write(4096, b"abc").unwrap();
    w.zero(8192, 4096).unwrap();
    w.end().unwrap()
}

#[test]
fn v1_vector_parses_and_reencodes_identically() {
    let (version, records, data) = read_all(&v1_bytes()).unwrap();
    assert_eq!(version, Version::V1);
    assert_eq!(records, expected(false));
    assert_eq!(data, b"abc");
    assert_eq!(encode(Version::V1), v1_bytes());
}

#[test]
fn v2_vector_parses_and_reencodes_identically() {
    let (version, records, data) = read_all(&v2_bytes()).unwrap();
    assert_eq!(version, Version::V2);
    assert_eq!(records, expected(true));
    assert_eq!(data, b"abc");
    assert_eq!(encode(Version::V2), v2_bytes());
}

#[test]
fn wrong_banner_is_refused() {
    let mut b = v1_bytes();
    b[4] = b'x';
    assert!(matches!(read_all(&b), Err(WireError::Banner)));
    assert!(matches!(read_all(b"rbd"), Err(WireError::Banner)));
}

#[test]
fn unknown_tag_is_refused_with_its_position() {
    let mut b = v1_bytes();
    let at = b.len() - 1;
    b[at] = b'q';
    assert!(matches!(
        read_all(&b),
        Err(WireError::UnknownTag { tag: b'q', at: a }) if a == at as u64
    ));
}

#[test]
fn truncated_streams_are_refused_wherever_they_stop() {
    let full = v2_bytes();
    for cut in 12..full.len() {
        assert!(
            matches!(read_all(&full[..cut]), Err(WireError::Truncated { .. })),
            "cut at {cut}"
        );
    }
}

#[test]
fn v2_length_that_disagrees_with_the_fields_is_refused() {
    let mut b = v2_bytes();
    // The 's' record declares 8 bytes; make it 9.
    let s = b
        .windows(9)
        .position(|w| w == [b's', 8, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    b[s + 1] = 9;
    assert!(matches!(
        read_all(&b),
        Err(WireError::Malformed { tag: 's', .. })
    ));
}

#[test]
fn unread_write_data_is_skipped_by_the_next_record() {
    let bytes = v1_bytes();
    let mut r = DiffReader::new(&bytes[..]).unwrap();
    let mut kinds = Vec::new();
    loop {
        let rec = r.next_record().unwrap();
        kinds.push(rec.clone());
        if rec == Record::End {
            break;
        }
    }
    assert_eq!(kinds, expected(false));
}

#[test]
fn protection_record_with_length_one_is_read_too() {
    let mut b = v2_bytes();
    let p = b
        .windows(10)
        .position(|w| w == [b'p', 8, 0, 0, 0, 0, 0, 0, 0, 1])
        .unwrap();
    b[p + 1] = 1;
    let (_, records, _) = read_all(&b).unwrap();
    assert_eq!(records, expected(true));
}
