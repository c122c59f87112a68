//! Preference pairs per segment: chosen, rejected, gate, importance weight and dynamic beta.
//!
//! Rules (DESIGN.md, method decisions), for the candidates T_i of segment i with scores E_i:
//! - order: by score, ties broken by shorter text (characters), then lower candidate number;
//! - chosen: uniform random among the `top_chosen` best (seeded per window and segment, so the
//!   pick does not depend on the order segments are processed in);
//! - rejected: the `rejected_rank`-th lowest; with fewer candidates, the highest; if that is the
//!   chosen one, the lowest other;
//! - gap = score(chosen) - score(rejected), not clamped;
//! - gate 1(s_i) = |T_i| > min_candidates and max(E_i) - min(E_i) > min_spread and gap > 0
//!   (`gate = false`: 1 for every segment with a pair);
//! - delta_i = |T_i| / sum of |T_j| over the window's segments (`importance = false`: 1);
//!   weight = 1(s_i) * delta_i;
//! - beta_i = beta0 * gap_i / max gap over the window's gated segments (`dynamic_beta = false`:
//!   the constant `beta`); 0 for segments that are gated out.
//!
//! A segment whose candidates have no score (the judge gave no valid vote) has no pair.

use rayon::prelude::*;

/// Settings of the pair rules; the defaults are the paper's.
#[derive(Debug, Clone, Copy)]
pub struct PairOptions {
    pub min_candidates: usize,
    pub min_spread: f64,
    pub beta0: f64,
    pub top_chosen: usize,
    pub rejected_rank: usize,
    pub seed: u64,
    pub gate: bool,
    pub importance: bool,
    pub dynamic_beta: bool,
    pub beta: f64,
}

impl Default for PairOptions {
    fn default() -> Self {
        PairOptions {
            min_candidates: 3,
            min_spread: 5.0,
            beta0: 1.0,
            top_chosen: 3,
            rejected_rank: 3,
            seed: 1024,
            gate: true,
            importance: true,
            dynamic_beta: true,
            beta: 0.5,
        }
    }
}

/// One candidate as the rules see it: its score (None: not scored) and text length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub score: Option<f32>,
    pub chars: u32,
}

/// The outcome for one segment.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentPair {
    pub segment: u32,
    pub n_candidates: u32,
    pub gated: bool,
    /// Candidate numbers (positions within the segment's candidates), when there is a pair.
    pub chosen: Option<u32>,
    pub rejected: Option<u32>,
    pub gap: Option<f64>,
    pub weight: f64,
    pub beta: f64,
}

/// Chosen and rejected positions among `cands` (all scored), or None with fewer than 2.
pub fn pick(cands: &[Candidate], key: u64, opts: &PairOptions) -> Option<(usize, usize)> {
    if cands.len() < 2 || cands.iter().any(|c| c.score.is_none()) {
        return None;
    }
    let score = |i: usize| f64::from(cands[i].score.unwrap_or(0.0));
    let mut ascending: Vec<usize> = (0..cands.len()).collect();
    ascending.sort_by(|&a, &b| {
        score(a)
            .total_cmp(&score(b))
            .then(cands[a].chars.cmp(&cands[b].chars))
            .then(a.cmp(&b))
    });
    let mut descending: Vec<usize> = (0..cands.len()).collect();
    descending.sort_by(|&a, &b| {
        score(b)
            .total_cmp(&score(a))
            .then(cands[a].chars.cmp(&cands[b].chars))
            .then(a.cmp(&b))
    });
    let top = opts.top_chosen.clamp(1, cands.len());
    let chosen = descending[(splitmix(key) % top as u64) as usize];
    let rank = opts.rejected_rank.max(1);
    let mut rejected = if cands.len() >= rank {
        ascending[rank - 1]
    } else {
        ascending[cands.len() - 1]
    };
    if rejected == chosen {
        rejected = *ascending
            .iter()
            .find(|&&i| i != chosen)
            .expect("two candidates");
    }
    Some((chosen, rejected))
}

/// The pairs of one window's segments (`segments`: segment number and its candidates).
pub fn window_pairs(
    window_id: &str,
    segments: &[(u32, Vec<Candidate>)],
    opts: &PairOptions,
) -> Vec<SegmentPair> {
    let total: usize = segments.iter().map(|(_, c)| c.len()).sum();
    let mut out: Vec<SegmentPair> = segments
        .iter()
        .map(|(segment, cands)| {
            let key = hash_key(window_id, *segment, opts.seed);
            let picked = pick(cands, key, opts);
            let gap = picked.map(|(c, r)| {
                f64::from(cands[c].score.unwrap_or(0.0)) - f64::from(cands[r].score.unwrap_or(0.0))
            });
            let gated = match (picked, gap) {
                (Some(_), Some(gap)) if opts.gate => {
                    let scores = cands.iter().filter_map(|c| c.score).map(f64::from);
                    let (lo, hi) = scores
                        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), s| {
                            (lo.min(s), hi.max(s))
                        });
                    cands.len() > opts.min_candidates && hi - lo > opts.min_spread && gap > 0.0
                }
                (Some(_), Some(_)) => true,
                _ => false,
            };
            let delta = if opts.importance {
                cands.len() as f64 / total.max(1) as f64
            } else {
                1.0
            };
            SegmentPair {
                segment: *segment,
                n_candidates: cands.len() as u32,
                gated,
                chosen: picked.map(|p| p.0 as u32),
                rejected: picked.map(|p| p.1 as u32),
                gap,
                weight: if gated { delta } else { 0.0 },
                beta: 0.0,
            }
        })
        .collect();
    let max_gap = out
        .iter()
        .filter(|p| p.gated)
        .filter_map(|p| p.gap)
        .fold(f64::NEG_INFINITY, f64::max);
    for p in out.iter_mut().filter(|p| p.gated) {
        p.beta = match p.gap {
            Some(gap) if opts.dynamic_beta && max_gap > 0.0 => opts.beta0 * gap / max_gap,
            _ if opts.dynamic_beta => opts.beta0,
            _ => opts.beta,
        };
    }
    out
}

/// Pairs for a whole table of candidates, rows ordered by window, then segment, then candidate:
/// `window_id(row)`, `segment[row]`, `cands[row]`. Windows are processed in parallel. Returns,
/// per segment in table order, the row where its window starts and its pair.
pub fn build<'a>(
    rows: usize,
    window_id: impl Fn(usize) -> &'a str + Sync,
    segment: &[u32],
    cands: &[Candidate],
    opts: &PairOptions,
) -> Vec<(usize, SegmentPair)> {
    let mut starts = Vec::new();
    for row in 0..rows {
        if row == 0 || window_id(row) != window_id(row - 1) {
            starts.push(row);
        }
    }
    starts.push(rows);
    starts
        .par_windows(2)
        .flat_map_iter(|w| {
            let (start, end) = (w[0], w[1]);
            let mut segments: Vec<(u32, Vec<Candidate>)> = Vec::new();
            for row in start..end {
                match segments.last_mut() {
                    Some((s, list)) if *s == segment[row] => list.push(cands[row]),
                    _ => segments.push((segment[row], vec![cands[row]])),
                }
            }
            window_pairs(window_id(start), &segments, opts)
                .into_iter()
                .map(move |p| (start, p))
        })
        .collect()
}

fn hash_key(window_id: &str, segment: u32, seed: u64) -> u64 {
    // FNV-1a over the window id, then the segment and the seed: stable across runs and builds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in window_id
        .bytes()
        .chain(segment.to_le_bytes())
        .chain(seed.to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn c(score: f32, chars: u32) -> Candidate {
        Candidate {
            score: Some(score),
            chars,
        }
    }

    #[test]
    fn rejected_is_the_third_lowest_with_ties_by_length_then_number() {
        let opts = PairOptions {
            top_chosen: 1,
            ..PairOptions::default()
        };
        // ascending: 3 (10), 1 (20, len 2), 4 (20, len 5), 0 (50), 2 (90)
        let cands = [c(50.0, 4), c(20.0, 2), c(90.0, 3), c(10.0, 1), c(20.0, 5)];
        assert_eq!(pick(&cands, 7, &opts), Some((2, 4)));
    }

    #[test]
    fn few_candidates_fall_back() {
        let opts = PairOptions {
            top_chosen: 1,
            ..PairOptions::default()
        };
        // Two candidates: the "last of the ascending order" is the chosen one -> the lowest other.
        assert_eq!(pick(&[c(30.0, 1), c(80.0, 1)], 1, &opts), Some((1, 0)));
        assert_eq!(pick(&[c(30.0, 1)], 1, &opts), None);
        let unscored = [
            c(1.0, 1),
            Candidate {
                score: None,
                chars: 1,
            },
        ];
        assert_eq!(pick(&unscored, 1, &opts), None);
    }

    #[test]
    fn chosen_is_among_the_top_three_and_seeded() {
        let cands = [c(90.0, 1), c(85.0, 1), c(80.0, 1), c(10.0, 1), c(5.0, 1)];
        let opts = PairOptions::default();
        let mut seen = std::collections::BTreeSet::new();
        for key in 0..200 {
            let (chosen, _) = pick(&cands, key, &opts).unwrap();
            seen.insert(chosen);
            assert_eq!(pick(&cands, key, &opts), pick(&cands, key, &opts));
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn gate_weights_and_betas_by_hand() {
        let opts = PairOptions {
            top_chosen: 1,
            ..PairOptions::default()
        };
        let segments = vec![
            // 5 candidates, spread 80: gated; chosen 90, rejected 3rd lowest = 50 -> gap 40
            (
                0,
                vec![c(90.0, 1), c(10.0, 1), c(50.0, 1), c(70.0, 1), c(30.0, 1)],
            ),
            // 3 candidates: not more than 3 -> gated out
            (1, vec![c(90.0, 1), c(10.0, 1), c(50.0, 1)]),
            // 4 candidates, spread 4: gated out by the spread rule
            (2, vec![c(52.0, 1), c(50.0, 1), c(49.0, 1), c(48.0, 1)]),
            // 4 candidates, spread 60: chosen 80, rejected 3rd lowest = 60 -> gap 20
            (3, vec![c(80.0, 1), c(20.0, 1), c(30.0, 1), c(60.0, 1)]),
        ];
        let pairs = window_pairs("w", &segments, &opts);
        let gated: Vec<bool> = pairs.iter().map(|p| p.gated).collect();
        assert_eq!(gated, [true, false, false, true]);
        assert_eq!(pairs[0].gap, Some(40.0));
        assert_eq!(pairs[3].gap, Some(20.0)); // 80 - 60 (ascending 20, 30, 60, 80)
        assert_eq!(pairs[0].weight, 5.0 / 16.0);
        assert_eq!(pairs[3].weight, 4.0 / 16.0);
        assert_eq!((pairs[1].weight, pairs[2].weight), (0.0, 0.0));
        assert_eq!(pairs[0].beta, 1.0);
        assert_eq!(pairs[3].beta, 0.5);
        assert_eq!((pairs[1].beta, pairs[2].beta), (0.0, 0.0));
    }

    #[test]
    fn ablations_switch_each_part_off() {
        let segments = vec![(0, vec![c(90.0, 1), c(10.0, 1), c(50.0, 1)])];
        let opts = PairOptions {
            gate: false,
            importance: false,
            dynamic_beta: false,
            beta: 0.1,
            top_chosen: 1,
            ..PairOptions::default()
        };
        let p = &window_pairs("w", &segments, &opts)[0];
        assert!(p.gated);
        assert_eq!((p.weight, p.beta), (1.0, 0.1));
    }

    proptest! {
        #[test]
        fn gated_out_has_no_weight_and_betas_are_in_range(
            scores in prop::collection::vec(prop::collection::vec(0u8..=100, 1..8), 1..6),
            beta0 in 0.1f64..2.0,
            seed in any::<u64>(),
        ) {
            let opts = PairOptions { beta0, seed, ..PairOptions::default() };
            let segments: Vec<(u32, Vec<Candidate>)> = scores
                .iter()
                .enumerate()
                .map(|(i, s)| (i as u32, s.iter().map(|&x| c(f32::from(x), 3)).collect()))
                .collect();
            for p in window_pairs("window", &segments, &opts) {
                if p.gated {
                    prop_assert!(p.weight > 0.0 && p.weight <= 1.0);
                    prop_assert!(p.beta > 0.0 && p.beta <= beta0 + 1e-12);
                    prop_assert!(p.gap.unwrap() > 0.0);
                    prop_assert!(p.chosen != p.rejected);
                } else {
                    prop_assert_eq!(p.weight, 0.0);
                    prop_assert_eq!(p.beta, 0.0);
                }
            }
        }
    }
}
