//! Fuzz identity header templating (DESIGN.md, "Security rules" 2: identity headers the client
//! cannot spoof, and that cannot smuggle header syntax).
//!
//! Run with `scripts/fuzz.sh` (or `cargo fuzz run template` from the repository root).
//! The input is split at the first `\n`: the first part is a dotted session path
//! (`identity.traits.email`), the rest is parsed as JSON (when it is not JSON, it becomes a string
//! leaf at that path). `Template::parse` + `render` must never panic; a rendered value never
//! contains a control byte (CR, LF, NUL, DEL, ...); a string leaf renders to exactly itself when
//! it has no control byte; null renders to nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sessiongate::identity::Template;

fn check(template: &Template, json: &Value) {
    if let Some(v) = template.render(json) {
        assert!(
            v.as_bytes().iter().all(|&b| b >= 0x20 && b != 0x7F),
            "rendered a control byte: {v:?}"
        );
    }
}

/// `leaf` nested along `path`'s segments (digits as array indexes, up to 8).
fn nest(path: &str, leaf: Value) -> Value {
    path.split('.')
        .rev()
        .fold(leaf, |inner, seg| match seg.parse::<usize>() {
            Ok(i) if i < 8 => {
                let mut a = vec![Value::Null; i + 1];
                a[i] = inner;
                Value::Array(a)
            }
            _ => {
                let mut m = serde_json::Map::new();
                m.insert(seg.to_string(), inner);
                Value::Object(m)
            }
        })
}

fuzz_target!(|data: &[u8]| {
    let (path, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[..0]),
    };
    let path = String::from_utf8_lossy(path);
    let Ok(template) = Template::parse(&path) else {
        return;
    };

    // Arbitrary JSON as the whole session.
    if let Ok(json) = serde_json::from_slice::<Value>(rest) {
        check(&template, &json);
        // The same JSON placed at the template's path.
        let nested = nest(&path, json.clone());
        check(&template, &nested);
        let got = template.render(&nested).map(|v| v.as_bytes().to_vec());
        match &json {
            Value::Null => assert_eq!(got, None),
            Value::String(s) if s.bytes().any(|b| b.is_ascii_control()) => assert_eq!(got, None),
            Value::String(s) => assert_eq!(got, Some(s.as_bytes().to_vec())),
            other => {
                let text = serde_json::to_string(other).expect("json");
                if text.bytes().any(|b| b.is_ascii_control()) {
                    assert_eq!(got, None);
                } else {
                    assert_eq!(got, Some(text.into_bytes()));
                }
            }
        }
    }

    // The raw bytes as a string leaf at the template's path.
    let leaf = String::from_utf8_lossy(rest).into_owned();
    let nested = nest(&path, Value::String(leaf.clone()));
    check(&template, &nested);
    let got = template.render(&nested).map(|v| v.as_bytes().to_vec());
    if leaf.bytes().any(|b| b.is_ascii_control()) {
        assert_eq!(got, None, "a value with a control byte was rendered");
    } else {
        assert_eq!(
            got,
            Some(leaf.into_bytes()),
            "a string leaf did not render to itself"
        );
    }
});
