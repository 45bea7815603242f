//! Channel patterns of the token's `comet` claim: `*` matches any run of characters (also none,
//! also `:`); every other character matches itself. `chat:*` matches `chat:lobby`; `*` matches
//! every channel.

/// Whether `channel` matches `pattern`. Linear-time greedy matching with backtracking to the
/// last `*` only (the classic wildcard algorithm), so no pattern can make it slow.
pub(crate) fn matches(pattern: &str, channel: &str) -> bool {
    let (p, c) = (pattern.as_bytes(), channel.as_bytes());
    let (mut pi, mut ci) = (0, 0);
    // Where the last `*` was, and the channel position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ci < c.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ci));
            pi += 1;
        } else if pi < p.len() && p[pi] == c[ci] {
            pi += 1;
            ci += 1;
        } else if let Some((sp, sc)) = star {
            pi = sp + 1;
            ci = sc + 1;
            star = Some((sp, sc + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Whether any of `patterns` matches `channel`.
pub(crate) fn any_matches(patterns: &[String], channel: &str) -> bool {
    patterns.iter().any(|p| matches(p, channel))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns() {
        for (p, c, m) in [
            ("chat:*", "chat:lobby", true),
            ("chat:*", "chat:", true),
            ("chat:*", "chat", false),
            ("chat:*", "chatty:x", false),
            ("*", "anything:at:all", true),
            ("*", "", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*:private", "user:private", true),
            ("*:private", "user:private:x", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("user:42:*", "user:4:2", false),
            ("**", "x", true),
            (
                "a*a*a*a*a*b",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                false,
            ),
        ] {
            assert_eq!(matches(p, c), m, "{p} vs {c}");
        }
    }
}
