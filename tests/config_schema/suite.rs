//! The configurations the test suite writes, collected from its sources for the schema to check.

use std::path::Path;

/// One configuration of the test suite: where it is written and its text, placeholders filled in.
pub struct SuiteConfig {
    pub origin: String,
    pub text: String,
}

/// Every configuration the test suite writes: the exported builder of `tests/common`, plus every
/// string literal (raw or escaped) with a `[kratos]` table in `tests/**/*.rs`: the private
/// builders and inline configs of each test file. `format!` placeholders are filled in: one inside a quoted
/// value (`"{kratos}"`, `"{PROXY}"`) becomes a URL, one on a line of its own (a fragment such as
/// `{edge}`) becomes nothing; `{{`/`}}` become braces.
pub fn configs() -> Vec<SuiteConfig> {
    let mut out = vec![SuiteConfig {
        origin: "tests/common/mod.rs standard_config".into(),
        text: crate::common::standard_config("http://127.0.0.1:4433", "http://127.0.0.1:3000"),
    }];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    // This test's own files hold deliberately broken configurations.
    let own = root.join("config_schema");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("tests/").flatten() {
            let p = entry.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") && !p.starts_with(&own) {
                files.push(p);
            }
        }
    }
    files.sort();
    for f in files {
        let src = std::fs::read_to_string(&f).expect("read test source");
        let name = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
        for (at, body, is_format) in toml_literals(&src) {
            let line = src[..at].lines().count();
            let mut text = fill_placeholders(&body, is_format);
            if starts_with_bare_key(&text) {
                // A `common::binary::Binary` body: it is written below a `[server]` header.
                text = format!("[server]\n{text}");
            }
            out.push(SuiteConfig {
                origin: format!("tests/{name}:{line}"),
                text,
            });
        }
    }
    out
}

/// The string literals of `src` that contain `[kratos]`: `(byte offset, text, is a format!
/// string)`. Raw strings `r#"…"#` as they are; escaped strings starting with `"[kratos]`,
/// unescaped.
fn toml_literals(src: &str) -> Vec<(usize, String, bool)> {
    let is_format = |at: usize| src[..at].trim_end().ends_with("format!(");
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = src[from..].find("r#\"").map(|i| from + i) {
        let body_at = open + 3;
        let Some(len) = src[body_at..].find("\"#") else {
            break;
        };
        let body = &src[body_at..body_at + len];
        if body.contains("[kratos]") {
            out.push((open, body.to_string(), is_format(open)));
        }
        from = body_at + len + 2;
    }
    let mut from = 0;
    while let Some(open) = src[from..].find("\"[kratos]").map(|i| from + i) {
        let mut text = String::new();
        let mut chars = src[open + 1..].chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next() {
                    Some('n') => text.push('\n'),
                    Some('t') => text.push('\t'),
                    Some(other) => text.push(other),
                    None => break,
                },
                _ => text.push(c),
            }
        }
        out.push((open, text, is_format(open)));
        from = open + 1;
    }
    out
}

/// Whether the first line that is not blank or a comment is a `key = value`, not a table header.
fn starts_with_bare_key(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .is_some_and(|l| !l.starts_with('['))
}

/// Fills `{name}` placeholders (see [`configs`]); in a `format!` string `{{`/`}}` are braces.
fn fill_placeholders(body: &str, is_format: bool) -> String {
    let mut out = String::new();
    for line in body.split_inclusive('\n') {
        let mut chars = line.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' | '}' if is_format && chars.peek().map(|p| p.1) == Some(c) => {
                    chars.next();
                    out.push(c);
                }
                '{' => {
                    let tail = &line[i + 1..];
                    let end = tail.find('}').unwrap_or(0);
                    let name = &tail[..end];
                    let is_placeholder = end > 0
                        && name
                            .chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '?')
                        || (is_format && end == 0 && tail.starts_with('}'));
                    if !is_placeholder {
                        out.push(c);
                        continue;
                    }
                    let quoted = line[..i].matches('"').count() % 2 == 1;
                    if quoted {
                        out.push_str("http://127.0.0.1:9");
                    }
                    for _ in 0..=end {
                        chars.next();
                    }
                }
                _ => out.push(c),
            }
        }
    }
    out
}
