//! Timing correction between two tracks: a constant offset and a frame-rate drift, found before
//! aligning so that the nearest-start rule compares like with like.
//!
//! The model is `target_time = speed * source_time + offset`. For each frame-rate ratio a track
//! pair can have (23.976/24/25 fps, either way, or none) the offsets implied by source/target
//! cue pairs within a minute of each other vote in 200 ms bins; a true mapping lines up many
//! cue starts in one bin, a wrong one spreads them. The winning bin is then refined by a least
//! squares fit over the cue pairs it matches. Cost: a few hundred sampled cues times the cues
//! of a minute, per ratio, so O(N) per episode with a small constant.

/// Frame-rate ratios seen between releases of one video.
const SPEEDS: [f64; 7] = [
    1.0,
    25.0 / 24.0,
    24.0 / 25.0,
    25.0 / 23.976,
    23.976 / 25.0,
    24.0 / 23.976,
    23.976 / 24.0,
];
const MAX_OFFSET_MS: i64 = 60_000;
const BIN_MS: i64 = 200;
const SAMPLES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub speed: f64,
    pub offset_ms: f64,
}

impl Fit {
    pub const IDENTITY: Fit = Fit {
        speed: 1.0,
        offset_ms: 0.0,
    };

    pub fn map(&self, t: i64) -> i64 {
        (self.speed * t as f64 + self.offset_ms).round() as i64
    }

    /// True when the fit moves no cue by more than `tol_ms` over `duration_ms`.
    pub fn is_identity(&self, duration_ms: i64, tol_ms: f64) -> bool {
        self.offset_ms.abs() <= tol_ms
            && ((self.speed - 1.0) * duration_ms as f64 + self.offset_ms).abs() <= tol_ms
    }
}

/// Estimate the mapping from source to target times. `src` and `tgt` are sorted start times.
/// `None` when the tracks are too short or nothing lines up.
pub fn estimate(src: &[i64], tgt: &[i64]) -> Option<Fit> {
    if src.len() < 8 || tgt.len() < 8 {
        return None;
    }
    let step = (src.len() / SAMPLES).max(1);
    let samples: Vec<i64> = src.iter().step_by(step).copied().collect();
    let bins = (2 * MAX_OFFSET_MS / BIN_MS + 2) as usize;
    let mut votes = vec![0u32; bins];
    let mut best: Option<(u32, f64, i64)> = None; // (votes, speed, offset bin centre)
    for &speed in &SPEEDS {
        votes.iter_mut().for_each(|v| *v = 0);
        let mut lo = 0usize;
        for &s in &samples {
            let mapped = (speed * s as f64) as i64;
            while lo < tgt.len() && tgt[lo] < mapped - MAX_OFFSET_MS {
                lo += 1;
            }
            for &t in tgt[lo..]
                .iter()
                .take_while(|&&t| t <= mapped + MAX_OFFSET_MS)
            {
                votes[((t - mapped + MAX_OFFSET_MS) / BIN_MS) as usize] += 1;
            }
        }
        // Two neighbouring bins together, so an offset on a bin edge is not split in half.
        for b in 0..bins - 1 {
            let v = votes[b] + votes[b + 1];
            if best.is_none_or(|(bv, _, _)| v > bv) {
                best = Some((v, speed, (b as i64 + 1) * BIN_MS - MAX_OFFSET_MS));
            }
        }
        // Most track pairs share their frame rate: when nine samples in ten already line up at
        // the same speed, no other ratio can do clearly better, and the refinement below fits
        // the exact speed anyway. This skips six of the seven passes on most episodes.
        if speed == 1.0 && best.is_some_and(|(v, _, _)| v as usize * 10 >= samples.len() * 9) {
            break;
        }
    }
    let (count, speed, offset) = best?;
    // Lined-up cues must stand out from chance: a quarter of the samples at least.
    if (count as usize) * 4 < samples.len() {
        return None;
    }
    let fit = refine(
        src,
        tgt,
        Fit {
            speed,
            offset_ms: offset as f64,
        },
        400,
    )?;
    refine(src, tgt, fit, 250).or(Some(fit))
}

/// Least-squares line through the cue pairs that `fit` maps within `tol_ms` of each other.
fn refine(src: &[i64], tgt: &[i64], fit: Fit, tol_ms: i64) -> Option<Fit> {
    let (mut n, mut sx, mut sy, mut sxx, mut sxy) = (0f64, 0f64, 0f64, 0f64, 0f64);
    let mut p = 0usize;
    for &s in src {
        let m = fit.map(s);
        while p + 1 < tgt.len() && (tgt[p + 1] - m).abs() <= (tgt[p] - m).abs() {
            p += 1;
        }
        if (tgt[p] - m).abs() <= tol_ms {
            let (x, y) = (s as f64, tgt[p] as f64);
            n += 1.0;
            sx += x;
            sy += y;
            sxx += x * x;
            sxy += x * y;
        }
    }
    if n < 8.0 {
        return None;
    }
    let var = n * sxx - sx * sx;
    // Too short a span to see a slope: keep the speed, fit the offset only.
    let speed = if var > 0.0 && (var / (n * n)).sqrt() > 60_000.0 {
        (n * sxy - sx * sy) / var
    } else {
        fit.speed
    };
    let speed = if (0.9..1.1).contains(&speed) {
        speed
    } else {
        fit.speed
    };
    Some(Fit {
        speed,
        offset_ms: (sy - speed * sx) / n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic irregular cue starts: gaps of 1.2 to 4.1 s.
    fn track(n: usize) -> Vec<i64> {
        let mut t = 5_000i64;
        (0..n)
            .map(|i| {
                t += 1_200 + ((i as i64 * 7919) % 2_900);
                t
            })
            .collect()
    }

    #[test]
    fn finds_a_constant_offset() {
        let src = track(600);
        let tgt: Vec<i64> = src.iter().map(|t| t + 3_450).collect();
        let fit = estimate(&src, &tgt).unwrap();
        assert!((fit.offset_ms - 3_450.0).abs() < 5.0, "{fit:?}");
        assert!((fit.speed - 1.0).abs() < 1e-6);
    }

    #[test]
    fn finds_a_frame_rate_drift() {
        let src = track(900);
        let speed = 25.0 / 23.976;
        let tgt: Vec<i64> = src
            .iter()
            .map(|&t| (speed * t as f64) as i64 - 1_000)
            .collect();
        let fit = estimate(&src, &tgt).unwrap();
        assert!((fit.speed - speed).abs() < 1e-4, "{fit:?}");
        assert!((fit.offset_ms + 1_000.0).abs() < 20.0, "{fit:?}");
    }

    #[test]
    fn unrelated_tracks_give_no_fit_or_a_harmless_one() {
        let src = track(300);
        let tgt: Vec<i64> = track(300).iter().map(|t| t * 3 + 17_000).collect();
        if let Some(fit) = estimate(&src, &tgt) {
            assert!((0.9..1.1).contains(&fit.speed));
        }
    }
}
