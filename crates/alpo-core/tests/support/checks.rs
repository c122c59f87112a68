//! The checks that both the proptest suite (`tests/no_panic.rs`) and the fuzz target
//! (`fuzz/fuzz_targets/parse.rs`) run on arbitrary input: decode -> parse (every format, and
//! sniffing) -> clean must not panic, and every cue that cleaning keeps has a time range that
//! does not run backwards and some text.

use alpo_core::clean::{clean, CleanOptions};
use alpo_core::encoding::decode;
use alpo_core::formats::{parse, parse_timestamp, Format};

pub const LANGS: [Option<&str>; 3] = [None, Some("zh"), Some("th")];
pub const FORMATS: [Option<Format>; 5] = [
    Some(Format::Srt),
    Some(Format::Vtt),
    Some(Format::Ass),
    Some(Format::MicroDvd),
    None,
];

pub fn check_text(text: &str) {
    let _ = parse_timestamp(text);
    for line in text.lines().take(64) {
        let _ = parse_timestamp(line);
    }
    for fmt in FORMATS {
        let (_, parsed) = parse(text, fmt);
        let (cues, _) = clean(parsed.cues, CleanOptions::default());
        for c in &cues {
            assert!(c.start_ms <= c.end_ms, "cue ends before it starts: {c:?}");
            assert!(!c.text.is_empty(), "empty cue text: {c:?}");
        }
        let (kept, _) = clean(parse(text, fmt).1.cues, CleanOptions { keep_top: true });
        assert!(kept.len() >= cues.len());
    }
}

pub fn check_bytes(bytes: &[u8]) {
    for lang in LANGS {
        if let Ok(decoded) = decode(bytes, lang) {
            check_text(&decoded.text);
        }
    }
}
