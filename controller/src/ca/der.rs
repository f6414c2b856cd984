//! The little DER the CA writes and reads by hand: wrapping PKCS#1 and SEC1 keys
//! as PKCS#8 (what ring signs with), and a critical subjectAltName extension
//! (rcgen writes it non-critical, which RFC 5280 forbids for an empty subject).

/// A tag, its length and `content`.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// A SEQUENCE of `items`.
pub(crate) fn sequence(items: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &items.concat())
}

/// Reads one element of `input`: (tag, content, what follows), or None when it is
/// not well-formed DER of a definite length.
pub(crate) fn read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The elements of `input`, in order (None if any is malformed).
pub(crate) fn elements(mut input: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (tag, content, rest) = read(input)?;
        out.push((tag, content));
        input = rest;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_short_and_long_read_back() {
        for len in [0, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let encoded = tlv(0x04, &content);
            let (tag, read_back, rest) = read(&encoded).expect("well-formed");
            assert_eq!((tag, read_back.len(), rest.len()), (0x04, len, 0));
        }
        assert_eq!(tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert!(read(&[0x30, 0x05, 1, 2]).is_none(), "shorter than its length");
        assert!(read(&[0x30, 0x80]).is_none(), "indefinite length");
    }
}
