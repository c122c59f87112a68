//! Whatever bytes or text come in, decode -> parse -> clean must not panic, and every cue that
//! cleaning keeps must have a time range that does not run backwards and some text.

#[path = "support/checks.rs"]
mod checks;

use alpo_core::clean::{clean, CleanOptions};
use alpo_core::encoding::decode;
use alpo_core::formats::parse;
use checks::{check_bytes, check_text};
use proptest::prelude::*;

/// Pieces of real subtitle files, so random text hits the parsers' interesting paths.
const FRAGMENTS: &[&str] = &[
    "0",
    "1",
    "2",
    "5",
    "9",
    "00",
    "59",
    "60",
    "99",
    "123",
    "99999999999999999999999",
    ":",
    ",",
    ".",
    "-",
    "-->",
    "->",
    " ",
    "\n",
    "\r",
    "\r\n",
    "\t",
    "{",
    "}",
    "{\\an8}",
    "{\\p1}",
    "\\N",
    "<i>",
    "</i>",
    "<",
    ">",
    "&amp;",
    "&#x4E2D;",
    "&",
    ";",
    "=",
    "|",
    "WEBVTT",
    "[Script Info]",
    "[Events]",
    "[V4+ Styles]",
    "Format: Name, Alignment",
    "Style: Top,8",
    "Dialogue:",
    "Dialogue: 0,0:00:01.00,0:00:02.00,Default,,0,0,0,,",
    "{1}{25}",
    "{1}{1}25",
    "00:00:01,000 --> 00:00:02,000",
    "line:0",
    "ก",
    "สวัสดี",
    "่",
    "ั",
    "我们",
    "走吧",
    "，",
    "：",
    "０",
    "é",
    "\u{feff}",
    "\u{200f}",
];

fn fragment_text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..200).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check_bytes(&bytes);
    }

    #[test]
    fn subtitle_like_text(text in fragment_text()) {
        check_text(&text);
        check_bytes(text.as_bytes());
    }
}

/// The hand-written seeds of the fuzz target decode and parse to cues.
#[test]
fn fuzz_seeds_yield_cues() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let lang = match path.file_name().and_then(|n| n.to_str()) {
            Some("gb18030.srt") => Some("zh"),
            Some("cp874.srt") => Some("th"),
            _ => None,
        };
        let decoded = decode(&bytes, lang).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, parsed) = parse(&decoded.text, None);
        let (cues, _) = clean(parsed.cues, CleanOptions::default());
        assert!(!cues.is_empty(), "{}: no cues", path.display());
    }
}
