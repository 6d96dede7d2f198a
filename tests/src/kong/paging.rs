//! Pagination tokens (Postgres: unpadded base64 of `["<last id>"]`), URI escaping and the `?tags=` filter.

use serde_json::Value;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn encode_offset(last_id: &str) -> String {
    let raw = serde_json::to_string(&[last_id]).unwrap_or_default();
    let bytes = raw.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

pub fn decode_offset(token: &str) -> Result<String, &'static str> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in token.trim_end_matches('=').bytes() {
        let v = B64
            .iter()
            .position(|b| *b == c)
            .ok_or("bad base64 encoding")? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    let v: Value = serde_json::from_slice(&out).map_err(|_| "bad json encoding")?;
    v.get(0)
        .and_then(|x| x.as_str())
        .map(String::from)
        .ok_or("bad json encoding")
}

/// `ngx.escape_uri`: everything but unreserved characters is percent-encoded.
pub fn escape_uri(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn unescape_uri(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (unescape_uri(k), unescape_uri(v)),
            None => (unescape_uri(p), String::new()),
        })
        .collect()
}

pub enum TagFilter {
    All(Vec<String>),
    Any(Vec<String>),
}

impl TagFilter {
    pub fn parse(s: &str) -> Result<TagFilter, &'static str> {
        let and = s.contains(',');
        let or = s.contains('/');
        if and && or {
            return Err("invalid filter syntax");
        }
        let parts: Vec<String> = s.split([',', '/']).map(String::from).collect();
        if parts.len() > 5 {
            return Err("cannot query more than 5 tags");
        }
        Ok(if or {
            TagFilter::Any(parts)
        } else {
            TagFilter::All(parts)
        })
    }

    pub fn matches(&self, tags: Option<&Value>) -> bool {
        let have: Vec<&str> = tags
            .and_then(|t| t.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        match self {
            TagFilter::All(want) => want.iter().all(|w| have.contains(&w.as_str())),
            TagFilter::Any(want) => want.iter().any(|w| have.contains(&w.as_str())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_tokens_round_trip_without_padding() {
        let id = "0a1b2c3d-0000-4000-8000-000000000001";
        let t = encode_offset(id);
        assert!(!t.contains('='));
        assert_eq!(decode_offset(&t).unwrap(), id);
    }

    #[test]
    fn bad_offsets_name_the_reason() {
        assert_eq!(decode_offset("!!!"), Err("bad base64 encoding"));
        assert_eq!(decode_offset("aGVsbG8"), Err("bad json encoding"));
    }
}
