//! Host names: the one rule sessiongate applies to a request's `Host`, a route's `host` and an
//! edge route's `cookie_domain`.
//!
//! A host name is one or more dot-separated labels (RFC 1123 §2.1, "LDH" labels: letters, digits
//! and `-`, not starting or ending with `-`, 1 to 63 bytes), at most 253 bytes in all. `_` is
//! accepted inside a label too: it is not valid in DNS host names but common in internal service
//! names (and backends accept it), and it cannot change how a name is split or matched. IPv4
//! addresses pass as all-digit labels; IPv6 literals are written in brackets in a `Host` and are
//! checked by the authority parser, not here. Callers lowercase and drop a trailing dot first.

/// Whether `name` is a host name by the rule above.
pub fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::is_host_name;

    #[test]
    fn host_names() {
        for ok in [
            "a",
            "app.example.com",
            "127.0.0.1",
            "kratos",
            "my_service.internal",
            "xn--bcher-kva.example",
            "a-b.c",
        ] {
            assert!(is_host_name(ok), "{ok}");
        }
        let long_label = "a".repeat(64);
        let long_name = ["a".repeat(63).as_str(); 5].join(".");
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            "a.",
            "-a.example",
            "a-.example",
            "a b",
            "a:80",
            "user@a",
            "a/b",
            "[::1]",
            "é.example",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(!is_host_name(bad), "{bad:?}");
        }
    }
}
