//! The proxy-wasm wire format for header lists, kept apart from the ABI glue so it is tested
//! natively.

/// The proxy-wasm wire format for header lists: count, (name length, value length) pairs, then
/// each name and value NUL-terminated.
pub(crate) fn serialize_pairs(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(n, v)| n.len() + v.len() + 10)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (n, v) in pairs {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (n, v) in pairs {
        out.extend_from_slice(n.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Parses the proxy-wasm header list format (see [`serialize_pairs`]); stops at malformed input.
pub(crate) fn deserialize_pairs(bytes: &[u8]) -> Vec<(String, String)> {
    let word = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let Some(count) = word(0) else {
        return Vec::new();
    };
    let mut sizes = Vec::with_capacity(count.min(1024));
    for i in 0..count {
        match (word(4 + 8 * i), word(8 + 8 * i)) {
            (Some(n), Some(v)) => sizes.push((n, v)),
            _ => return Vec::new(),
        }
    }
    let mut at = 4 + 8 * count;
    let mut out = Vec::with_capacity(sizes.len());
    for (n, v) in sizes {
        let (Some(name), Some(value)) =
            (bytes.get(at..at + n), bytes.get(at + n + 1..at + n + 1 + v))
        else {
            break;
        };
        at += n + v + 2;
        if let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) {
            out.push((name.to_owned(), value.to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lists_round_trip_and_malformed_input_is_cut_short() {
        let pairs = [
            (":status", "200"),
            ("content-type", "application/json"),
            ("x-empty", ""),
        ];
        let bytes = serialize_pairs(&pairs);
        let back = deserialize_pairs(&bytes);
        let expected: Vec<(String, String)> = pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(back, expected);
        assert_eq!(deserialize_pairs(&[]), vec![]);
        assert_eq!(deserialize_pairs(&bytes[..10]), vec![]);
        assert_eq!(deserialize_pairs(&bytes[..bytes.len() - 3]).len(), 2);
        assert_eq!(deserialize_pairs(&[255, 255, 255, 255]), vec![]);
    }
}
