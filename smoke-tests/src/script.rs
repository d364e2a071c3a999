//! Shell scripts kept as `.sh` files beside the scenario that runs them
//! (read with `include_str!`), with `@NAME@` placeholders that the scenario
//! fills in: the scripts stay readable and checkable as shell, and the
//! values (paths, markers, sizes) have one home in Rust.

/// `template` with each `@KEY@` replaced by its value.
pub fn fill(template: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(template.to_string(), |s, (k, v)| s.replace(&format!("@{k}@"), v))
}

/// The first `@NAME@` placeholder (upper case, digits, `_`) left in `s`.
pub fn unfilled(s: &str) -> Option<&str> {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(off) = s[i..].find('@') {
        let start = i + off;
        let name_len =
            b[start + 1..].iter().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || **c == b'_').count();
        let end = start + 1 + name_len;
        if name_len > 0 && b.get(end) == Some(&b'@') {
            return Some(&s[start..=end]);
        }
        i = start + 1;
    }
    None
}

/// Test helper: `sh -n` parses `script` without running it.
#[cfg(test)]
pub(crate) fn assert_sh_parses(script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script");
    std::fs::write(&path, script).unwrap();
    let out = std::process::Command::new("sh").arg("-n").arg(&path).output().unwrap();
    assert!(out.status.success(), "sh -n: {}", String::from_utf8_lossy(&out.stderr));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_every_occurrence_and_finds_what_is_left() {
        let s = fill("a @X@ b @X@ @Y_2@ \"$@\" user@host", &[("X", "1".into())]);
        assert_eq!(s, "a 1 b 1 @Y_2@ \"$@\" user@host");
        assert_eq!(unfilled(&s), Some("@Y_2@"));
        assert_eq!(unfilled(&fill(&s, &[("Y_2", "2".into())])), None);
        assert_eq!(unfilled("$@ and @lower@ and @@"), None);
    }
}
