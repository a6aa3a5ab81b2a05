//! JSON text rewritten compact in one pass, without a value tree.
//!
//! The output is the text `serde_json` writes for the value the input
//! parses to, except that keys keep their order and a repeated key stays
//! repeated (a value tree sorts them and keeps the last). Whitespace goes;
//! a string without an escape is copied as it is (it is what `serde_json`
//! would write: valid JSON has no raw control character in a string); a
//! string with one, and every number, goes through `serde_json` (so a lone
//! surrogate or a number out of range is refused as the parse would refuse
//! it). The tests check it against `serde_transcode`.

use serde_json::value::RawValue;

/// Why a text was not made compact.
#[derive(Debug)]
pub enum CompactError {
    /// A string (or key) holds a NUL character.
    Nul,
    /// What `serde_json` refused in the text.
    Json(serde_json::Error),
}

impl From<serde_json::Error> for CompactError {
    fn from(err: serde_json::Error) -> Self {
        CompactError::Json(err)
    }
}

/// `json` without whitespace, its escapes and numbers as `serde_json`
/// writes them; refuses a NUL in any string or key.
pub fn compact(json: &RawValue) -> Result<String, CompactError> {
    let text = json.get();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'"' => {
                let start = i;
                let mut escaped = false;
                i += 1;
                // RawValue's text is valid JSON: every string is closed.
                while let Some(at) = memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                    i += at;
                    if bytes[i] == b'\\' {
                        escaped = true;
                        i += 2;
                    } else {
                        i += 1;
                        break;
                    }
                }
                let token = &text[start..i];
                if escaped {
                    let decoded: String = serde_json::from_str(token)?;
                    if decoded.contains('\0') {
                        return Err(CompactError::Nul);
                    }
                    out.push_str(&serde_json::to_string(&decoded)?);
                } else {
                    out.push_str(token);
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let number: serde_json::Number = serde_json::from_str(&text[start..i])?;
                out.push_str(&serde_json::to_string(&number)?);
            }
            // Outside strings valid JSON is ASCII: punctuation and the
            // letters of true, false and null.
            byte => {
                out.push(char::from(byte));
                i += 1;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{CompactError, compact};
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    /// What `serde_transcode` writes for `text` (parsed by serde_json, so
    /// refusing what the parse refuses).
    fn transcoded(text: &str) -> Result<String, serde_json::Error> {
        let mut out = Vec::new();
        let mut parser = serde_json::Deserializer::from_str(text);
        serde_transcode::transcode(&mut parser, &mut serde_json::Serializer::new(&mut out))?;
        parser.end()?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    /// JSON text with spacing, escapes and number forms of every kind.
    fn json_text() -> impl Strategy<Value = String> {
        let space = prop::sample::select(vec!["", "", " ", "\n  ", "\t", "\r\n"]);
        let string = prop::collection::vec(
            prop::sample::select(vec![
                "a",
                "key",
                "\u{e9}",
                "\u{1f600}",
                "\\\"",
                "\\\\",
                "\\/",
                "\\b",
                "\\f",
                "\\n",
                "\\r",
                "\\t",
                "\\u00e9",
                "\\u001f",
                "\\u0041",
                "\\ud83d\\ude00",
                "\\\\u0000",
                "\u{7f}",
                "\u{2028}",
            ]),
            0..4,
        )
        .prop_map(|parts| format!("\"{}\"", parts.concat()));
        let number = prop::sample::select(vec![
            "0",
            "-0",
            "7",
            "-12",
            "1.5",
            "1.50",
            "-0.0",
            "1e2",
            "1E+2",
            "1.5e-3",
            "2.5E-300",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "0.1000000000000000055511151231257827",
        ])
        .prop_map(str::to_owned);
        let leaf = prop_oneof![
            string.clone(),
            number,
            prop::sample::select(vec!["true", "false", "null"]).prop_map(str::to_owned),
        ];
        let space2 = space.clone();
        leaf.prop_recursive(4, 40, 5, move |inner| {
            let space = space2.clone();
            prop_oneof![
                (
                    prop::collection::vec((space.clone(), inner.clone()), 0..5),
                    space.clone()
                )
                    .prop_map(|(items, end)| {
                        let items: Vec<String> = items
                            .into_iter()
                            .map(|(s, v)| format!("{s}{v}{s}"))
                            .collect();
                        format!("[{}{end}]", items.join(","))
                    }),
                (
                    prop::collection::vec((space.clone(), string.clone(), inner), 0..5),
                    space
                )
                    .prop_map(|(members, end)| {
                        let members: Vec<String> = members
                            .into_iter()
                            .map(|(s, k, v)| format!("{s}{k}{s}:{s}{v}{s}"))
                            .collect();
                        format!("{{{}{end}}}", members.join(","))
                    }),
            ]
        })
        .prop_flat_map(move |value| (space.clone(), Just(value), space.clone()))
        .prop_map(|(before, value, after)| format!("{before}{value}{after}"))
    }

    proptest! {
        #[test]
        fn compact_writes_what_serde_transcode_writes(text in json_text()) {
            prop_assert_eq!(compact(&raw(&text)).unwrap(), transcoded(&text).unwrap());
        }
    }

    #[test]
    fn what_the_parse_refuses_is_refused() {
        for text in [
            r#""\ud800""#,
            r#"["\udc00 x"]"#,
            r#"{"a": "\ud83d"}"#,
            "1e400",
            "[-1e400]",
        ] {
            assert!(transcoded(text).is_err(), "{text}");
            assert!(
                matches!(compact(&raw(text)), Err(CompactError::Json(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn a_nul_is_refused_and_only_a_nul() {
        for text in [r#""\u0000""#, r#"{"a\u0000": 1}"#, r#"["x", ["y\u0000z"]]"#] {
            assert!(
                matches!(compact(&raw(text)), Err(CompactError::Nul)),
                "{text}"
            );
        }
        assert_eq!(
            compact(&raw(r#"{ "a" : "\\u0000" }"#)).unwrap(),
            r#"{"a":"\\u0000"}"#
        );
    }
}
