//! MicroDVD: `{start_frame}{end_frame}text` with `|` between lines. Frames become times through
//! the frame rate the file declares in a leading `{1}{1}23.976` line, else 23.976.

use super::{lines, Parsed, RawCue};

const DEFAULT_FPS: f64 = 23.976;

pub fn is_microdvd_line(line: &str) -> bool {
    frames(line).is_some()
}

/// `{a}{b}rest` -> (a, b, rest); `{a}{}` (open end) is allowed.
fn frames(line: &str) -> Option<(i64, Option<i64>, &str)> {
    let rest = line.trim_start().strip_prefix('{')?;
    let (a, rest) = rest.split_once('}')?;
    let rest = rest.strip_prefix('{')?;
    let (b, text) = rest.split_once('}')?;
    let a = a.trim().parse().ok()?;
    let b = if b.trim().is_empty() {
        None
    } else {
        Some(b.trim().parse().ok()?)
    };
    Some((a, b, text))
}

pub fn parse(text: &str) -> Parsed<'_> {
    let mut out = Parsed::default();
    let mut fps = None;
    for (n, line) in lines(text) {
        if line.trim().is_empty() {
            continue;
        }
        let Some((a, b, body)) = frames(line) else {
            out.bad(n, "not a {start}{end}text line");
            continue;
        };
        if out.cues.is_empty() && fps.is_none() && a <= 1 && b.is_some_and(|b| b <= 1) {
            if let Ok(f) = body.trim().replace(',', ".").parse::<f64>() {
                if f > 1.0 && f < 200.0 {
                    fps = Some(f);
                    continue;
                }
            }
        }
        let rate = fps.unwrap_or(DEFAULT_FPS);
        let ms = |frame: i64| (frame as f64 * 1000.0 / rate).round() as i64;
        // An open end (`{a}{}`) shows the cue for two seconds.
        let end = b.unwrap_or(a.saturating_add((rate * 2.0) as i64));
        out.cues.push(RawCue {
            start_ms: ms(a),
            end_ms: ms(end),
            text: body.replace('|', "\n").into(),
            style: "",
            top: false,
            line: n,
        });
    }
    out.fps = Some(fps.unwrap_or(DEFAULT_FPS));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_fps() {
        let p = parse("{1}{1}25\n{25}{50}{y:i}Hello|there\n{75}{100}Bye\n");
        assert_eq!(p.fps, Some(25.0));
        assert_eq!(
            (p.cues[0].start_ms, p.cues[0].end_ms, &*p.cues[0].text),
            (1000, 2000, "{y:i}Hello\nthere")
        );
        assert_eq!(p.cues.len(), 2);
    }

    #[test]
    fn open_end_and_huge_frames() {
        let p = parse("{50}{}open\n{9223372036854775807}{}x\n");
        assert_eq!((p.cues[0].start_ms, p.cues[0].end_ms), (2085, 4046));
        assert_eq!(p.cues.len(), 2);
    }
}
