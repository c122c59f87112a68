//! Arbitrary bytes through decode -> parse (every format, and sniffing) -> clean, plus the
//! timestamp parser on the decoded text. Any panic is a bug: the engine must reject bad input
//! with an error or a parse issue, never crash.

#![no_main]

use alpo_core::clean::clean;
use alpo_core::encoding::decode;
use alpo_core::formats::{parse, parse_timestamp, Format};
use libfuzzer_sys::fuzz_target;

const LANGS: [Option<&str>; 3] = [None, Some("zh"), Some("th")];
const FORMATS: [Option<Format>; 5] = [
    Some(Format::Srt),
    Some(Format::Vtt),
    Some(Format::Ass),
    Some(Format::MicroDvd),
    None,
];

fuzz_target!(|data: &[u8]| {
    for lang in LANGS {
        let Ok(decoded) = decode(data, lang) else {
            continue;
        };
        let text = decoded.text.as_ref();
        let _ = parse_timestamp(text);
        for line in text.lines().take(64) {
            let _ = parse_timestamp(line);
        }
        for fmt in FORMATS {
            let (_, parsed) = parse(text, fmt);
            let (cues, _) = clean(parsed.cues, Default::default());
            for c in &cues {
                assert!(c.start_ms <= c.end_ms, "cue ends before it starts: {c:?}");
                assert!(!c.text.is_empty(), "empty cue text: {c:?}");
            }
        }
    }
});
