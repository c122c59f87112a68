//! From cues as written to cues as text: markup out, one line of plain text per cue, cues sorted
//! by time, rolling duplicates merged. The rules follow the paper's release (method.md §1.2):
//! `\N` becomes a space, top-positioned `{\an8}` notices and Thai `=...=` annotation cues are
//! dropped, `=...=` annotation lines are cut from the cues they prefix, lone dashes go.

use crate::formats::RawCue;
use std::borrow::Cow;

/// A cleaned cue. `line` is the 1-based line of the file where the cue was written. The text
/// borrows from the file's text when cleaning left it as it was (most cues).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cue<'a> {
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: Cow<'a, str>,
    pub style: &'a str,
    pub top: bool,
    pub line: u32,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct CleanOptions {
    /// Keep top-positioned cues (signs, notices). The paper drops them.
    pub keep_top: bool,
}

/// What cleaning removed, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CleanStats {
    pub empty: u64,
    pub top: u64,
    pub annotation: u64,
    pub end_before_start: u64,
    pub rolling_duplicates: u64,
}

impl CleanStats {
    pub fn add(&mut self, o: &CleanStats) {
        self.empty += o.empty;
        self.top += o.top;
        self.annotation += o.annotation;
        self.end_before_start += o.end_before_start;
        self.rolling_duplicates += o.rolling_duplicates;
    }
}

pub fn clean(raw: Vec<RawCue<'_>>, opts: CleanOptions) -> (Vec<Cue<'_>>, CleanStats) {
    let mut stats = CleanStats::default();
    let mut cues = Vec::with_capacity(raw.len());
    for r in raw {
        let work = work(&r.text);
        // `{` is a markup byte: without markup there is no position tag to look for.
        let top = r.top || (work == Work::Markup && has_top_tag(&r.text));
        let (text, annotation) = clean_with(r.text, work);
        if r.end_ms < r.start_ms {
            stats.end_before_start += 1;
        } else if annotation && text.is_empty() {
            stats.annotation += 1;
        } else if text.is_empty() {
            stats.empty += 1;
        } else if top && !opts.keep_top {
            stats.top += 1;
        } else {
            cues.push(Cue {
                start_ms: r.start_ms,
                end_ms: r.end_ms,
                text,
                style: r.style,
                top,
                line: r.line,
            });
        }
    }
    if !cues.is_sorted_by_key(|c| (c.start_ms, c.end_ms)) {
        cues.sort_by_key(|c| (c.start_ms, c.end_ms));
    }
    stats.rolling_duplicates = merge_rolling(&mut cues);
    (cues, stats)
}

/// Consecutive cues with the same text whose times touch or overlap are one cue shown twice
/// (ASS layers for glow effects, rolling captions). Merge them; never touch cues elsewhere.
fn merge_rolling(cues: &mut Vec<Cue<'_>>) -> u64 {
    let before = cues.len();
    cues.dedup_by(|next, prev| {
        let same = next.text == prev.text && next.start_ms <= prev.end_ms;
        if same {
            prev.end_ms = prev.end_ms.max(next.end_ms);
        }
        same
    });
    (before - cues.len()) as u64
}

/// `{\an7}`..`{\an9}` (and SSA's `{\a5}`..`{\a7}`) put a cue at the top of the frame.
fn has_top_tag(text: &str) -> bool {
    if memchr::memchr(b'{', text.as_bytes()).is_none() {
        return false;
    }
    ["\\an7", "\\an8", "\\an9", "\\a5", "\\a6", "\\a7"]
        .iter()
        .any(|t| {
            text.match_indices(t)
                .any(|(i, _)| !text[i + t.len()..].starts_with(|c: char| c.is_ascii_digit()))
        })
}

/// How much a text needs beyond a copy.
#[derive(Debug, PartialEq, Eq)]
enum Work {
    None,
    /// Line breaks or stray spaces only: join and trim the lines (and fold runs of spaces
    /// when there are any).
    Lines {
        double_spaces: bool,
    },
    /// Markup, entities, annotations or invisible characters: strip them first.
    Markup,
}

const MARKUP: u8 = 1;
const NEWLINE: u8 = 2;
const SPACE: u8 = 4;
const DOUBLE_SPACE: u8 = 8;

/// Byte classes. Markup bytes: `{ < & \ =`, tabs and carriage returns, and the lead bytes
/// 0xE2/0xEF of invisible format characters.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let markup = b"{<&\\=\r\t\xE2\xEF";
    let mut k = 0;
    while k < markup.len() {
        t[markup[k] as usize] = MARKUP;
        k += 1;
    }
    t[b'\n' as usize] = NEWLINE;
    t[b' ' as usize] = SPACE;
    t
};

/// One branch-free pass over the bytes (this runs on every cue): markup means the full path; a
/// line break, double space, leading dash or whitespace at either end the line pass only.
fn work(text: &str) -> Work {
    let b = text.as_bytes();
    let (mut seen, mut prev) = (0u8, 0u8);
    for &c in b {
        let class = CLASS[c as usize];
        seen |= class | ((class & prev & SPACE) << 1);
        prev = class;
    }
    let edges = b.first() == Some(&b'-')
        || text.starts_with(char::is_whitespace)
        || text.ends_with(char::is_whitespace);
    if seen & MARKUP != 0 {
        Work::Markup
    } else if edges || seen & (NEWLINE | DOUBLE_SPACE) != 0 {
        Work::Lines {
            double_spaces: seen & DOUBLE_SPACE != 0,
        }
    } else {
        Work::None
    }
}

/// `clean_text` that keeps a text needing no work as it is, borrowed or not: most cues.
fn clean_with(text: Cow<'_, str>, work: Work) -> (Cow<'_, str>, bool) {
    let (cleaned, annotation) = match work {
        Work::None => return (text, false),
        Work::Lines { double_spaces } => join_lines(&text, double_spaces),
        Work::Markup => join_lines(&strip_markup(&text), true),
    };
    (Cow::Owned(cleaned), annotation)
}

/// Plain text of a cue and whether it held an annotation line.
pub fn clean_text(text: &str) -> (String, bool) {
    match work(text) {
        Work::None => (text.to_string(), false),
        Work::Lines { double_spaces } => join_lines(text, double_spaces),
        Work::Markup => join_lines(&strip_markup(text), true),
    }
}

/// The lines of a text trimmed and joined by single spaces; `=...=` annotation lines and lone
/// dashes dropped. `double_spaces`: the text may hold runs of spaces to fold.
fn join_lines(text: &str, double_spaces: bool) -> (String, bool) {
    let mut annotation = false;
    let mut out = String::with_capacity(text.len());
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', text.as_bytes()).chain(std::iter::once(text.len()));
    for end in ends {
        let line = text[start..end].trim();
        start = end + 1;
        if line.is_empty() {
            continue;
        }
        if line.len() >= 2 && line.starts_with('=') && line.ends_with('=') {
            annotation = true;
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        if double_spaces {
            push_single_spaced(&mut out, line);
        } else {
            out.push_str(line);
        }
    }
    if let Some(rest) = out.strip_prefix("- -") {
        out = rest.trim_start().to_string();
    }
    if out == "-" || out == "- -" {
        out.clear();
    }
    (out, annotation)
}

/// Append `line` with each run of spaces reduced to one.
fn push_single_spaced(out: &mut String, line: &str) {
    let b = line.as_bytes();
    let mut run = 0;
    for i in 1..b.len() {
        if b[i] == b' ' && b[i - 1] == b' ' {
            out.push_str(&line[run..i]);
            run = i + 1;
        }
    }
    out.push_str(&line[run.min(line.len())..]);
}

/// Remove `{...}` override blocks and HTML/WebVTT tags, turn ASS breaks into newlines, decode
/// entities and drop invisible direction marks. Plain runs between markup are copied whole.
fn strip_markup(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut run, mut i) = (0, 0);
    while i < b.len() {
        // (bytes the markup at i takes, what replaces it)
        let markup: Option<(usize, Option<char>)> = match b[i] {
            b'{' => text[i..].find('}').map(|end| (end + 1, None)),
            b'<' => tag_len(&text[i..]).map(|len| (len, None)),
            b'\\' => match b.get(i + 1) {
                Some(b'N' | b'n') => Some((2, Some('\n'))),
                Some(b'h') => Some((2, Some(' '))),
                _ => None,
            },
            b'&' => entity(&text[i..]).map(|(ch, len)| (len, ch)),
            b'\t' | b'\r' => Some((1, Some(' '))),
            // lead bytes of U+200B..U+206F and U+FEFF; always at a char boundary
            0xE2 | 0xEF => text[i..]
                .chars()
                .next()
                .filter(|&c| is_invisible(c))
                .map(|c| (c.len_utf8(), None)),
            _ => None,
        };
        match markup {
            Some((len, replacement)) => {
                out.push_str(&text[run..i]);
                if let Some(c) = replacement {
                    out.push(c);
                }
                i += len;
                run = i;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[run..]);
    out
}

fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Length of a markup tag at the start of `s` (`<i>`, `< /  i >`, `<font color="red">`,
/// `<v Bob>`, `<c.yellow>`, `<00:00:05.000>`), or `None` for a plain `<` such as `<3`.
fn tag_len(s: &str) -> Option<usize> {
    let close = s[1..].find(['>', '<'])? + 1;
    if s.as_bytes()[close] != b'>' || close > 200 {
        return None;
    }
    let inner = s[1..close].trim_start();
    let inner = inner.strip_prefix('/').unwrap_or(inner).trim_start();
    let first = inner.chars().next()?;
    let tagged = first.is_ascii_alphabetic() && {
        let name: String = inner
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        matches!(
            name.as_str(),
            "i" | "b"
                | "u"
                | "s"
                | "font"
                | "v"
                | "c"
                | "lang"
                | "ruby"
                | "rt"
                | "br"
                | "span"
                | "em"
                | "strong"
                | "sub"
                | "sup"
                | "p"
                | "div"
        )
    } || first.is_ascii_digit() && inner.contains(':');
    tagged.then_some(close + 1)
}

/// An HTML entity at the start of `s`: the character it stands for (none for invisible marks)
/// and its length.
fn entity(s: &str) -> Option<(Option<char>, usize)> {
    // Look for the `;` byte-wise: cutting the str at byte 12 could split a character.
    let end = s.bytes().take(12).position(|b| b == b';')?;
    let name = &s[1..end];
    let ch = match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        "lrm" | "rlm" => None,
        _ => {
            let code = if let Some(hex) = name.strip_prefix("#x").or(name.strip_prefix("#X")) {
                u32::from_str_radix(hex, 16).ok()?
            } else {
                name.strip_prefix('#')?.parse().ok()?
            };
            Some(char::from_u32(code)?)
        }
    };
    Some((ch, end + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(text: &str) -> String {
        clean_text(text).0
    }

    #[test]
    fn markup() {
        assert_eq!(c("{\\fad(120,120)}{\\c&H00FF00&}Hi{\\c}"), "Hi");
        assert_eq!(c("first\\Nsecond"), "first second");
        assert_eq!(
            c("<i>Hello</i> < /  i ><font color=\"red\">x</font>"),
            "Hello x"
        );
        assert_eq!(c("<v Bob>Hi <00:00:05.000><c.yellow>there</c>"), "Hi there");
        assert_eq!(c("I <3 you & a < b"), "I <3 you & a < b");
        assert_eq!(c("Tom &amp; Jerry&nbsp;&lrm;!"), "Tom & Jerry !");
        assert_eq!(c("\u{200F}مرحبا\u{200E}"), "مرحبا");
        assert_eq!(c("  two  \n\n  lines  "), "two lines");
        assert_eq!(c("{y:i}MicroDVD"), "MicroDVD");
        assert_eq!(c("我们\\N走吧"), "我们 走吧");
        assert_eq!(c("a\\hb"), "a b");
        assert_eq!(c("\u{3000}你好\u{3000}"), "你好");
        assert_eq!(c("\u{3000}"), "");
    }

    #[test]
    fn entity_scan_stops_inside_a_character() {
        // byte 12 falls inside a multi-byte character: found by fuzzing, used to panic
        assert_eq!(c("&amp;00สวัสดี"), "&00สวัสดี");
        assert_eq!(c("&aaaaaaaaaa怂;"), "&aaaaaaaaaa怂;");
        assert_eq!(c("Tom &amp; 我们"), "Tom & 我们");
    }

    #[test]
    fn dashes_and_annotations() {
        assert_eq!(c("-"), "");
        assert_eq!(c("- -"), "");
        assert_eq!(c("- - ok"), "ok");
        assert_eq!(c("-Yes.\n-No."), "-Yes. -No.");
        assert_eq!(clean_text("=คำอธิบาย="), (String::new(), true));
        assert_eq!(clean_text("=หมายเหตุ=\\Nสวัสดี"), ("สวัสดี".to_string(), true));
        assert_eq!(c("a = b"), "a = b");
    }

    fn raw(start: i64, end: i64, text: &str) -> RawCue<'_> {
        RawCue {
            start_ms: start,
            end_ms: end,
            text: text.into(),
            style: "",
            top: false,
            line: 1,
        }
    }

    #[test]
    fn cue_rules() {
        let (cues, stats) = clean(
            vec![
                raw(5000, 6000, "later"),
                raw(1000, 2000, "same"),
                raw(1000, 2000, "same"),
                raw(2000, 3000, "same"),
                raw(4000, 3000, "backwards"),
                raw(3500, 3600, "{\\an8}Notice"),
                raw(3600, 3700, "  "),
                raw(3700, 3800, "=note="),
                raw(9000, 9500, "same"),
            ],
            CleanOptions::default(),
        );
        let got: Vec<_> = cues
            .iter()
            .map(|c| (c.start_ms, c.end_ms, &*c.text))
            .collect();
        assert_eq!(
            got,
            [
                (1000, 3000, "same"),
                (5000, 6000, "later"),
                (9000, 9500, "same")
            ]
        );
        assert_eq!(
            stats,
            CleanStats {
                empty: 1,
                top: 1,
                annotation: 1,
                end_before_start: 1,
                rolling_duplicates: 2
            }
        );
        let (kept, _) = clean(
            vec![raw(1, 2, "{\\an8}Sign")],
            CleanOptions { keep_top: true },
        );
        assert!(kept[0].top && kept[0].text == "Sign");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]
        /// The shortcuts for texts without markup give what the full path gives.
        #[test]
        fn shortcuts_match_the_full_path(text in "[ab 我\\-\n=<>{}&;i\u{200B}\r\u{3000}]{0,24}") {
            let full = join_lines(&strip_markup(&text), true);
            proptest::prop_assert_eq!(clean_text(&text), full.clone());
            let w = work(&text);
            let (owned, annotation) = clean_with(Cow::Owned(text), w);
            proptest::prop_assert_eq!((owned.into_owned(), annotation), full);
        }
    }
}
