//! Cue alignment between two tracks of one episode.
//!
//! `nearest` is the paper's rule: every source cue maps to the target cue whose start time is
//! nearest, when that gap is at most `max_gap_ms`; otherwise it is unaligned. Several source cues
//! may take the same target cue (the rule allows it). Ties go to the lower target index (the
//! earlier start, or the first of cues that start together). Both inputs are sorted by start, so
//! one forward pointer over the targets does it in O(N + M).
//!
//! `overlap` links cues by time overlap with 1:1, 1:2 and 2:1 links, for tracks whose cues were
//! split or merged differently (the greedy walk of Tiedemann's subtitle aligner).

/// Nearest-start alignment. `src` and `tgt` are start times sorted ascending.
pub fn nearest(src: &[i64], tgt: &[i64], max_gap_ms: i64) -> Vec<Option<u32>> {
    debug_assert!(src.is_sorted() && tgt.is_sorted());
    // run_start[j]: first index of the run of equal start times that j belongs to.
    let mut run_start = Vec::with_capacity(tgt.len());
    for j in 0..tgt.len() {
        run_start.push(if j > 0 && tgt[j] == tgt[j - 1] {
            run_start[j - 1]
        } else {
            j
        });
    }
    let mut p = 0; // first target starting at or after the current source start
    src.iter()
        .map(|&s| {
            while p < tgt.len() && tgt[p] < s {
                p += 1;
            }
            let left = (p > 0).then(|| run_start[p - 1]);
            let right = (p < tgt.len()).then_some(p);
            let best = match (left, right) {
                (Some(l), Some(r)) => {
                    if s - tgt[l] <= tgt[r] - s {
                        l
                    } else {
                        r
                    }
                }
                (Some(l), None) => l,
                (None, Some(r)) => r,
                (None, None) => return None,
            };
            ((tgt[best] - s).abs() <= max_gap_ms).then_some(best as u32)
        })
        .collect()
}

/// The rule by its definition, O(N·M): for checking `nearest`.
pub fn nearest_reference(src: &[i64], tgt: &[i64], max_gap_ms: i64) -> Vec<Option<u32>> {
    src.iter()
        .map(|&s| {
            let mut best: Option<(i64, usize)> = None; // (gap, index); first index wins ties
            for (j, &t) in tgt.iter().enumerate() {
                if best.is_none_or(|b| (t - s).abs() < b.0) {
                    best = Some(((t - s).abs(), j));
                }
            }
            best.filter(|b| b.0 <= max_gap_ms).map(|b| b.1 as u32)
        })
        .collect()
}

/// A link of the overlap walk: `src_len` source cues from `src` with `tgt_len` target cues from
/// `tgt` (1:1, 1:2 or 2:1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub src: u32,
    pub src_len: u8,
    pub tgt: u32,
    pub tgt_len: u8,
}

/// Overlap alignment of (start, end) intervals sorted by start. A link needs its spans to
/// overlap by at least `min_overlap` of their union; among 1:1, 1:2 and 2:1 the walk takes the
/// shape with the least time outside the common part. Unlinked cues on either side are skipped.
pub fn overlap(src: &[(i64, i64)], tgt: &[(i64, i64)], min_overlap: f64) -> Vec<Link> {
    let (mut i, mut j) = (0usize, 0usize);
    let mut links = Vec::new();
    let span = |v: &[(i64, i64)], a: usize, n: usize| (v[a].0, v[a + n - 1].1.max(v[a].1));
    while i < src.len() && j < tgt.len() {
        let (s, t) = (src[i], tgt[j]);
        if s.1 <= t.0 {
            i += 1;
            continue;
        }
        if t.1 <= s.0 {
            j += 1;
            continue;
        }
        let mut best: Option<(i64, u8, u8, f64)> = None;
        for (ns, nt) in [(1u8, 1u8), (1, 2), (2, 1)] {
            if i + ns as usize > src.len() || j + nt as usize > tgt.len() {
                continue;
            }
            let a = span(src, i, ns as usize);
            let b = span(tgt, j, nt as usize);
            let common = (a.1.min(b.1) - a.0.max(b.0)).max(0);
            let union = a.1.max(b.1) - a.0.min(b.0);
            let outside = union - common;
            let ratio = if union > 0 {
                common as f64 / union as f64
            } else {
                1.0
            };
            if best.is_none_or(|b| outside < b.0) {
                best = Some((outside, ns, nt, ratio));
            }
        }
        match best {
            Some((_, ns, nt, ratio)) if ratio >= min_overlap => {
                links.push(Link {
                    src: i as u32,
                    src_len: ns,
                    tgt: j as u32,
                    tgt_len: nt,
                });
                i += ns as usize;
                j += nt as usize;
            }
            // Too little in common: drop whichever cue ends first and walk on.
            _ => {
                if s.1 <= t.1 {
                    i += 1
                } else {
                    j += 1
                }
            }
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ties_go_to_the_lower_index() {
        // equidistant: 1000 and 3000 from 2000 -> index 0
        assert_eq!(nearest(&[2000], &[1000, 3000], 1000), [Some(0)]);
        // equal starts: first of the run
        assert_eq!(nearest(&[2500], &[1000, 2000, 2000, 4000], 700), [Some(1)]);
        assert_eq!(nearest(&[1500], &[2000, 2000], 700), [Some(0)]);
        // many-to-one is allowed
        assert_eq!(nearest(&[900, 1100], &[1000], 700), [Some(0), Some(0)]);
        // gap exactly max_gap aligns, one more ms does not
        assert_eq!(nearest(&[0, 0], &[700], 700), [Some(0), Some(0)]);
        assert_eq!(nearest(&[0], &[701], 700), [None]);
        assert_eq!(nearest(&[1], &[], 700), [None]);
    }

    fn sorted_times(max_len: usize) -> impl Strategy<Value = Vec<i64>> {
        // Small ranges make equal starts and exact ties common.
        prop::collection::vec(-2_000i64..20_000, 0..max_len).prop_map(|mut v| {
            v.iter_mut().for_each(|t| *t = *t / 50 * 50);
            v.sort();
            v
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn two_pointer_equals_brute_force(
            src in sorted_times(60),
            tgt in sorted_times(60),
            gap in 0i64..2000,
        ) {
            prop_assert_eq!(nearest(&src, &tgt, gap), nearest_reference(&src, &tgt, gap));
        }
    }

    #[test]
    fn overlap_links_splits_and_merges() {
        let src = [
            (0, 2000),
            (3000, 6000),
            (7000, 8000),
            (8000, 9000),
            (20000, 21000),
        ];
        let tgt = [
            (0, 2000),
            (3000, 4500),
            (4500, 6000),
            (7000, 9000),
            (30000, 31000),
        ];
        let links = overlap(&src, &tgt, 0.3);
        let shapes: Vec<_> = links
            .iter()
            .map(|l| (l.src, l.src_len, l.tgt, l.tgt_len))
            .collect();
        assert_eq!(shapes, [(0, 1, 0, 1), (1, 1, 1, 2), (2, 2, 3, 1)]);
    }
}
