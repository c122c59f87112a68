//! Candidate dedup for the sample stage: which sampled texts are new within their segment.
//!
//! Two candidates are the same when their keys are equal: the text in Unicode NFC, outer
//! whitespace trimmed, every inner run of whitespace folded to one space. Rows come grouped
//! by segment (all rows of a group consecutive); within a group the first row with a key
//! is kept and later ones are dropped, so the reference, given first, always stays.

use std::collections::HashSet;

use unicode_normalization::UnicodeNormalization;

/// The dedup key of a candidate text.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.trim().nfc() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    out
}

/// For each row, whether its text's key is the first of its kind in its group. `groups[i]` is
/// row i's group id; a group's rows must be consecutive (a group id seen again after another
/// group starts a new set). `text(i)` gives row i's text.
pub fn first_distinct<'a>(groups: &[u32], text: impl Fn(usize) -> &'a str) -> Vec<bool> {
    let mut keep = Vec::with_capacity(groups.len());
    let mut seen: HashSet<String> = HashSet::new();
    for (i, &group) in groups.iter().enumerate() {
        if i > 0 && groups[i - 1] != group {
            seen.clear();
        }
        keep.push(seen.insert(normalize(text(i))));
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_nfc_and_whitespace() {
        assert_eq!(normalize("  a \t b\n\u{3000}c  "), "a b c");
        assert_eq!(normalize("cafe\u{301}"), normalize("caf\u{e9}"));
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" \n "), "");
        assert_eq!(normalize("ไป กัน"), "ไป กัน");
    }

    #[test]
    fn first_of_each_key_per_group() {
        let texts = ["ref", " ref ", "b", "b", "ref", "x", "x"];
        let groups = [0, 0, 0, 0, 1, 1, 2];
        let keep = first_distinct(&groups, |i| texts[i]);
        assert_eq!(keep, [true, false, true, false, true, true, true]);
    }

    #[test]
    fn a_group_seen_again_later_starts_afresh() {
        let texts = ["a", "a", "a"];
        assert_eq!(first_distinct(&[0, 1, 0], |i| texts[i]), [true, true, true]);
    }
}
