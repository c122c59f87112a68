//! SRT and WebVTT. Both are read the way tolerant players read them: a line holding two
//! timestamps around an arrow starts a cue, whatever came before it. So missing blank lines,
//! missing or odd indices and `->` arrows all work, and trailing cue settings or coordinates are
//! ignored. In WebVTT a blank line ends the cue text; in SRT it does not (blank lines inside cue
//! text exist in the wild), and the index line of the next cue is dropped from the text instead.

use super::{lines, parse_timestamp, Parsed, RawCue};

struct Open {
    start_ms: i64,
    end_ms: i64,
    top: bool,
    line: u32,
    /// Byte span of the cue's text in the file: its lines are consecutive, so no list of
    /// lines is needed (this runs for every cue of every file).
    text: Option<(usize, usize)>,
    closed: bool,
}

pub fn parse(text: &str, vtt: bool) -> Parsed<'_> {
    let mut out = Parsed::default();
    let crlf = memchr::memchr(b'\r', text.as_bytes()).is_some();
    let mut open: Option<Open> = None;
    for (n, line) in lines(text) {
        match timing_line(line) {
            Timing::Cue(start_ms, end_ms, settings) => {
                if let Some(cue) = open.take() {
                    finish(&mut out, text, cue, (vtt, crlf), true);
                }
                open = Some(Open {
                    start_ms,
                    end_ms,
                    top: vtt && top_setting(settings),
                    line: n,
                    text: None,
                    closed: false,
                });
            }
            Timing::Broken(reason) => {
                if let Some(cue) = open.take() {
                    finish(&mut out, text, cue, (vtt, crlf), true);
                }
                out.bad(n, reason);
            }
            Timing::None => {
                if let Some(cue) = open.as_mut() {
                    if vtt && line.trim().is_empty() {
                        cue.closed = true;
                    } else if !cue.closed {
                        let start = line.as_ptr() as usize - text.as_ptr() as usize;
                        let first = cue.text.map_or(start, |(first, _)| first);
                        cue.text = Some((first, start + line.len()));
                    }
                }
            }
        }
    }
    if let Some(cue) = open.take() {
        finish(&mut out, text, cue, (vtt, crlf), false);
    }
    out
}

/// `crlf`: the file holds carriage returns somewhere.
fn finish<'a>(
    out: &mut Parsed<'a>,
    file: &'a str,
    cue: Open,
    (vtt, crlf): (bool, bool),
    before_next: bool,
) {
    let mut text = cue.text.map_or("", |(a, b)| &file[a..b]).trim_end();
    // The next cue's index sits at the end of this cue's text when blank lines are missing.
    // (An index line ends in a digit or a dot; checking that first skips the search for most.)
    let index_like_end = matches!(text.as_bytes().last(), Some(b'0'..=b'9' | b'.'));
    if !vtt && before_next && index_like_end {
        match memchr::memrchr2(b'\n', b'\r', text.as_bytes()) {
            Some(at) if is_index(&text[at + 1..]) => text = text[..at].trim_end(),
            None if is_index(text) => text = "",
            _ => {}
        }
    }
    out.cues.push(RawCue {
        start_ms: cue.start_ms,
        end_ms: cue.end_ms,
        text: if crlf && memchr::memchr(b'\r', text.as_bytes()).is_some() {
            text.replace("\r\n", "\n").replace('\r', "\n").into()
        } else {
            text.into()
        },
        style: "",
        top: cue.top,
        line: cue.line,
    });
}

/// `12`, `-3`, `4.0`: the index forms seen in real files.
fn is_index(line: &str) -> bool {
    let t = line.trim();
    let t = t.strip_prefix('-').unwrap_or(t);
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') && t.as_bytes()[0] != b'.'
}

enum Timing<'a> {
    None,
    Cue(i64, i64, &'a str),
    Broken(String),
}

fn timing_line(line: &str) -> Timing<'_> {
    // Cheap rejection first: timing lines start with a digit, a minus or a space.
    let first = line.trim_start().chars().next();
    if !first.is_some_and(|c| c.is_ascii_digit() || c == '-' || ('０'..='９').contains(&c)) {
        return Timing::None;
    }
    let Some((left, right)) = split_arrow(line) else {
        return Timing::None;
    };
    let (Some(start), Some(end)) = (parse_timestamp(left), parse_timestamp(right)) else {
        return Timing::Broken(format!("unreadable timestamp line {:?}", clip(line)));
    };
    let settings = right.trim_start();
    let settings = settings
        .find(|c: char| c.is_alphabetic())
        .map_or("", |i| &settings[i..]);
    Timing::Cue(start, end, settings)
}

/// Split at `-->`, `->` or `- >` (the first `->`, else the first `- >`).
fn split_arrow(line: &str) -> Option<(&str, &str)> {
    let b = line.as_bytes();
    let arrow = |gap: usize| {
        memchr::memchr_iter(b'>', b)
            .find(|&p| p > gap && b[p - 1 - gap] == b'-' && (gap == 0 || b[p - 1] == b' '))
            .map(|p| (p - 1 - gap, 2 + gap))
    };
    let (pos, len) = arrow(0).or_else(|| arrow(1))?;
    let left = line[..pos].trim_end_matches(['-', ' ']);
    Some((left, &line[pos + len..]))
}

/// WebVTT `line:` settings near the top of the frame mark signs and notices.
fn top_setting(settings: &str) -> bool {
    settings.split_whitespace().any(|s| {
        let Some(v) = s.strip_prefix("line:") else {
            return false;
        };
        let v = v.split(',').next().unwrap_or("");
        match v.strip_suffix('%') {
            Some(p) => p.parse::<f64>().is_ok_and(|p| p < 20.0),
            None => v.parse::<i64>().is_ok_and(|l| (0..=2).contains(&l)),
        }
    })
}

fn clip(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(p: &'a Parsed<'_>) -> Vec<(i64, i64, &'a str)> {
        p.cues
            .iter()
            .map(|c| (c.start_ms, c.end_ms, &*c.text))
            .collect()
    }

    #[test]
    fn plain_srt() {
        let p = parse(
            "1\r\n00:00:01,000 --> 00:00:02,500\r\nHello\r\nthere\r\n\r\n2\r\n00:00:03,000 --> 00:00:04,000\r\nBye\r\n",
            false,
        );
        assert_eq!(
            texts(&p),
            [(1000, 2500, "Hello\nthere"), (3000, 4000, "Bye")]
        );
        assert!(p.issue.is_none());
    }

    #[test]
    fn bare_cr_line_ends() {
        let p = parse(
            "1\r00:00:01,000 --> 00:00:02,000\rA\rB\r2\r00:00:03,000 --> 00:00:04,000\rC\r",
            false,
        );
        assert_eq!(texts(&p), [(1000, 2000, "A\nB"), (3000, 4000, "C")]);
    }

    #[test]
    fn malformed_structure() {
        // no indices, no blank lines, `->` arrows, leading spaces, trailing coordinates
        let p = parse(
            "  00:00:01,000 -> 00:00:02,000\nA\n00:00:03,000 --> 00:00:04,000 X1:63 X2:223\nB\n7\n00:00:05,0 - > 00:00:06,5\nC\n\n\nD after blank\n",
            false,
        );
        assert_eq!(
            texts(&p),
            [
                (1000, 2000, "A"),
                (3000, 4000, "B"),
                (5000, 6500, "C\n\n\nD after blank")
            ]
        );
    }

    #[test]
    fn broken_timestamp_is_reported_and_skipped() {
        let p = parse(
            "1\n00:00:01,000 --> 00:00:02,000\nA\n\n2\n00:00:0x,000 --> 00:00:04,000\nB\n\n3\n00:00:05,000 --> 00:00:06,000\nC\n",
            false,
        );
        assert_eq!(texts(&p), [(1000, 2000, "A"), (5000, 6000, "C")]);
        assert_eq!(p.issue.as_ref().unwrap().line, 6);
    }

    #[test]
    fn arrows() {
        assert_eq!(split_arrow("1 --> 2"), Some(("1", " 2")));
        assert_eq!(split_arrow("1 -> 2 -> 3"), Some(("1", " 2 -> 3")));
        assert_eq!(split_arrow("1 - > 2"), Some(("1", " 2")));
        assert_eq!(split_arrow("1 - > 2 -> 3"), Some(("1 - > 2", " 3")));
        assert_eq!(split_arrow("> 1 - 2 >"), None);
        assert_eq!(split_arrow(">->"), Some((">", "")));
    }

    #[test]
    fn vtt_blocks() {
        let p = parse(
            "WEBVTT - title\nKind: captions\n\nNOTE a comment\nspanning lines\n\nSTYLE\n::cue { color: red }\n\nintro\n00:01.000 --> 00:02.000 line:0 align:start\n<v Bob>Hi</v>\n\n00:00:03.000 --> 00:00:04.000\nSecond\nline\n\nthird-id\n01:00:05.000 --> 01:00:06.000\nThird\n",
            true,
        );
        assert_eq!(
            texts(&p),
            [
                (1000, 2000, "<v Bob>Hi</v>"),
                (3000, 4000, "Second\nline"),
                (3_605_000, 3_606_000, "Third")
            ]
        );
        assert!(p.cues[0].top && !p.cues[1].top);
    }
}
