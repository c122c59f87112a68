//! Subtitle formats: SRT, WebVTT, ASS/SSA and MicroDVD, read into one cue type.
//!
//! The parsers are tolerant: they keep every cue they can read and remember the first line they
//! could not, so a half-broken file still yields its good cues and the report says where it broke.

mod ass;
mod microdvd;
mod srt;
mod time;

pub use time::parse_timestamp;

use std::borrow::Cow;

/// One cue as written in the file, markup still in its text. Texts borrow from the file's text
/// where they can: parsing allocates nothing per cue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCue<'a> {
    pub start_ms: i64,
    pub end_ms: i64,
    pub text: Cow<'a, str>,
    /// ASS style name; empty for formats without styles.
    pub style: &'a str,
    /// Positioned at the top of the screen by its style or cue settings (signs, notices).
    pub top: bool,
    /// 1-based line of the file where the cue starts.
    pub line: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Srt,
    Vtt,
    Ass,
    MicroDvd,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Ass => "ass",
            Format::MicroDvd => "microdvd",
        }
    }

    /// From the file extension; `None` for files that are not subtitles.
    pub fn from_extension(ext: &str) -> Option<Format> {
        match ext.to_ascii_lowercase().as_str() {
            "srt" => Some(Format::Srt),
            "vtt" | "webvtt" => Some(Format::Vtt),
            "ass" | "ssa" => Some(Format::Ass),
            "sub" => Some(Format::MicroDvd),
            _ => None,
        }
    }

    /// From the content: files are often saved under the wrong extension.
    pub fn sniff(text: &str) -> Option<Format> {
        let head = text.trim_start_matches('\u{feff}').trim_start();
        if head.starts_with("WEBVTT") {
            return Some(Format::Vtt);
        }
        let events = || memchr::memmem::find(head.as_bytes(), b"\n[Events]").is_some();
        if head.starts_with("[Script Info]") || events() {
            return Some(Format::Ass);
        }
        if head.starts_with('{') && microdvd::is_microdvd_line(head.lines().next().unwrap_or("")) {
            return Some(Format::MicroDvd);
        }
        if head.lines().take(50).any(|l| l.contains("->")) {
            return Some(Format::Srt);
        }
        None
    }
}

/// Where a tolerant parse had to give up on a part of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseIssue {
    pub line: u32,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Parsed<'a> {
    pub cues: Vec<RawCue<'a>>,
    /// The first line that could not be read, if any; the cues before and after it are kept.
    pub issue: Option<ParseIssue>,
    /// Lines skipped as unreadable in all.
    pub bad_lines: u32,
    /// Frame rate used for MicroDVD frames (declared in the file or assumed).
    pub fps: Option<f64>,
}

impl Parsed<'_> {
    pub(crate) fn bad(&mut self, line: u32, reason: impl Into<String>) {
        self.bad_lines += 1;
        if self.issue.is_none() {
            self.issue = Some(ParseIssue {
                line,
                reason: reason.into(),
            });
        }
    }
}

/// Parse decoded text. The sniffed content wins over the extension when they disagree.
pub fn parse(text: &str, ext_format: Option<Format>) -> (Format, Parsed<'_>) {
    let format = Format::sniff(text).or(ext_format).unwrap_or(Format::Srt);
    let parsed = match format {
        Format::Srt => srt::parse(text, false),
        Format::Vtt => srt::parse(text, true),
        Format::Ass => ass::parse(text),
        Format::MicroDvd => microdvd::parse(text),
    };
    (format, parsed)
}

/// Lines of a text with CRLF, LF or bare CR endings, numbered from 1.
pub(crate) fn lines(text: &str) -> impl Iterator<Item = (u32, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let b = text.as_bytes();
    let bare_cr = memchr::memchr(b'\n', b).is_none() && memchr::memchr(b'\r', b).is_some();
    let sep = if bare_cr { b'\r' } else { b'\n' };
    // memchr's SIMD search over the whole text instead of a search per line (this runs on every
    // line of every file); the last piece follows the last separator, as `str::split` gives it.
    let ends = memchr::memchr_iter(sep, b).chain(std::iter::once(b.len()));
    let mut start = 0;
    ends.map(move |end| {
        let line = &text[start..end];
        start = end + 1;
        line.strip_suffix('\r').unwrap_or(line)
    })
    .enumerate()
    .map(|(i, l)| (i as u32 + 1, l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_beats_extension() {
        let vtt = "WEBVTT\n\n00:01.000 --> 00:02.000\nhi\n";
        assert_eq!(parse(vtt, Some(Format::Srt)).0, Format::Vtt);
        let ass = "[Script Info]\nScriptType: v4.00+\n";
        assert_eq!(Format::sniff(ass), Some(Format::Ass));
        assert_eq!(Format::sniff("{1}{25}hello"), Some(Format::MicroDvd));
    }

    #[test]
    fn line_endings() {
        let got: Vec<_> = lines("a\r\nb\r\n").map(|(_, l)| l).collect();
        assert_eq!(got, ["a", "b", ""]);
        let got: Vec<_> = lines("a\rb").map(|(_, l)| l).collect();
        assert_eq!(got, ["a", "b"]);
        let got: Vec<_> = lines("\u{feff}\n\nx").collect();
        assert_eq!(got, [(1, ""), (2, ""), (3, "x")]);
        assert_eq!(lines("").count(), 1);
    }
}
