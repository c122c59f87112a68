//! What a subtitle file's name says: title, episode and language.
//!
//! Recognised: `NAME.LANG.EXT`, `NAME_LANG.EXT`, `NAME-LANG.EXT` with LANG an ISO 639-1 or 639-2
//! code, an English language name or a BCP-47 tag (`zh-Hans`, `pt_BR`), and the MuSC layout
//! `{title} {EP}_{language name in Chinese}.ass`. A name without a language falls back to its
//! folder's name (`raw/en/x.srt`). Episodes: `S01E02`, `1x02`, or a trailing number (`Show 03`).

use std::path::Path;

/// (ISO 639-1, ISO 639-2/T, ISO 639-2/B, English name)
const LANGUAGES: &[(&str, &str, &str, &str)] = &[
    ("af", "afr", "afr", "afrikaans"),
    ("am", "amh", "amh", "amharic"),
    ("ar", "ara", "ara", "arabic"),
    ("az", "aze", "aze", "azerbaijani"),
    ("be", "bel", "bel", "belarusian"),
    ("bg", "bul", "bul", "bulgarian"),
    ("bn", "ben", "ben", "bengali"),
    ("bs", "bos", "bos", "bosnian"),
    ("ca", "cat", "cat", "catalan"),
    ("cs", "ces", "cze", "czech"),
    ("cy", "cym", "wel", "welsh"),
    ("da", "dan", "dan", "danish"),
    ("de", "deu", "ger", "german"),
    ("el", "ell", "gre", "greek"),
    ("en", "eng", "eng", "english"),
    ("es", "spa", "spa", "spanish"),
    ("et", "est", "est", "estonian"),
    ("eu", "eus", "baq", "basque"),
    ("fa", "fas", "per", "persian"),
    ("fi", "fin", "fin", "finnish"),
    ("fil", "fil", "fil", "filipino"),
    ("fr", "fra", "fre", "french"),
    ("ga", "gle", "gle", "irish"),
    ("gl", "glg", "glg", "galician"),
    ("gu", "guj", "guj", "gujarati"),
    ("he", "heb", "heb", "hebrew"),
    ("hi", "hin", "hin", "hindi"),
    ("hr", "hrv", "hrv", "croatian"),
    ("hu", "hun", "hun", "hungarian"),
    ("hy", "hye", "arm", "armenian"),
    ("id", "ind", "ind", "indonesian"),
    ("is", "isl", "ice", "icelandic"),
    ("it", "ita", "ita", "italian"),
    ("ja", "jpn", "jpn", "japanese"),
    ("ka", "kat", "geo", "georgian"),
    ("kk", "kaz", "kaz", "kazakh"),
    ("km", "khm", "khm", "khmer"),
    ("kn", "kan", "kan", "kannada"),
    ("ko", "kor", "kor", "korean"),
    ("lo", "lao", "lao", "lao"),
    ("lt", "lit", "lit", "lithuanian"),
    ("lv", "lav", "lav", "latvian"),
    ("mk", "mkd", "mac", "macedonian"),
    ("ml", "mal", "mal", "malayalam"),
    ("mn", "mon", "mon", "mongolian"),
    ("mr", "mar", "mar", "marathi"),
    ("ms", "msa", "may", "malay"),
    ("my", "mya", "bur", "burmese"),
    ("nb", "nob", "nob", "norwegian"),
    ("ne", "nep", "nep", "nepali"),
    ("nl", "nld", "dut", "dutch"),
    ("no", "nor", "nor", "norwegian"),
    ("pa", "pan", "pan", "punjabi"),
    ("pl", "pol", "pol", "polish"),
    ("pt", "por", "por", "portuguese"),
    ("ro", "ron", "rum", "romanian"),
    ("ru", "rus", "rus", "russian"),
    ("si", "sin", "sin", "sinhala"),
    ("sk", "slk", "slo", "slovak"),
    ("sl", "slv", "slv", "slovenian"),
    ("sq", "sqi", "alb", "albanian"),
    ("sr", "srp", "srp", "serbian"),
    ("sv", "swe", "swe", "swedish"),
    ("sw", "swa", "swa", "swahili"),
    ("ta", "tam", "tam", "tamil"),
    ("te", "tel", "tel", "telugu"),
    ("th", "tha", "tha", "thai"),
    ("tl", "tgl", "tgl", "tagalog"),
    ("tr", "tur", "tur", "turkish"),
    ("uk", "ukr", "ukr", "ukrainian"),
    ("ur", "urd", "urd", "urdu"),
    ("uz", "uzb", "uzb", "uzbek"),
    ("vi", "vie", "vie", "vietnamese"),
    ("yue", "yue", "yue", "cantonese"),
    ("zh", "zho", "chi", "chinese"),
];

/// Language names of the MuSC corpus and other Chinese-named releases.
const CHINESE_NAMES: &[(&str, &str)] = &[
    ("简体中文", "zh"),
    ("繁体中文", "zh"),
    ("繁體中文", "zh"),
    ("中文", "zh"),
    ("英语", "en"),
    ("英文", "en"),
    ("德语", "de"),
    ("法语", "fr"),
    ("泰国语", "th"),
    ("泰语", "th"),
    ("日语", "ja"),
    ("韩语", "ko"),
    ("越南语", "vi"),
    ("西班牙语", "es"),
    ("葡萄牙语", "pt"),
    ("俄语", "ru"),
    ("阿拉伯语", "ar"),
    ("意大利语", "it"),
    ("印尼语", "id"),
    ("马来语", "ms"),
    ("土耳其语", "tr"),
];

/// ISO 639-1 code (or 639-3 where no 639-1 exists) of a single language token.
fn language(token: &str) -> Option<&'static str> {
    if let Some(&(_, code)) = CHINESE_NAMES.iter().find(|(n, _)| *n == token) {
        return Some(code);
    }
    let t = token.to_ascii_lowercase();
    match t.as_str() {
        "chs" | "cht" | "zhs" | "zht" => return Some("zh"),
        _ => {}
    }
    LANGUAGES
        .iter()
        .find(|(a, b, c, name)| *a == t || *b == t || *c == t || *name == t)
        .map(|l| l.0)
}

/// Normalise a language tag as users write it (`zh-Hans`, `pt_BR`, `eng`, `English`, `泰国语`)
/// to its ISO 639-1 code.
pub fn lang_code(tag: &str) -> Option<&'static str> {
    let mut parts = tag.split(['-', '_']);
    let primary = language(parts.next()?)?;
    parts.all(is_subtag).then_some(primary)
}

/// BCP-47 script (`Hans`) or region (`BR`, `419`) subtag.
fn is_subtag(s: &str) -> bool {
    (s.len() == 4 && s.bytes().all(|b| b.is_ascii_alphabetic()))
        || (s.len() == 2 && s.bytes().all(|b| b.is_ascii_alphabetic()))
        || (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameInfo {
    pub title: String,
    pub episode: String,
    /// ISO 639-1 code.
    pub lang: String,
}

fn is_sep(c: char) -> bool {
    matches!(c, '.' | '_' | '-' | ' ')
}

/// Split `stem` into (rest, language) at a trailing language tag of 1 to 3 tokens.
fn split_language(stem: &str) -> Option<(&str, &'static str)> {
    // Positions of separators from the right; try the longest tag first (zh-Hans-CN).
    let seps: Vec<usize> = stem
        .char_indices()
        .filter(|&(_, c)| matches!(c, '.' | '_' | '-'))
        .map(|(i, _)| i)
        .rev()
        .take(3)
        .collect();
    for k in (0..seps.len()).rev() {
        let at = seps[k];
        let tag = &stem[at + 1..];
        if let Some(code) = lang_code(tag) {
            return Some((&stem[..at], code));
        }
    }
    None
}

/// Title, episode and language from a file name; `None` when no language can be found.
pub fn parse_name(path: &Path) -> Option<NameInfo> {
    let stem = path.file_stem()?.to_str()?;
    let (rest, lang) = match split_language(stem) {
        Some(found) => found,
        None => (stem, language(path.parent()?.file_name()?.to_str()?)?),
    };
    let (title, episode) = split_episode(rest);
    Some(NameInfo {
        title: title.to_string(),
        episode,
        lang: lang.to_string(),
    })
}

/// (title, episode) from the part of a name before its language tag.
fn split_episode(rest: &str) -> (&str, String) {
    let b = rest.as_bytes();
    // S01E02, s1.e2, S01_E02
    for i in 0..b.len() {
        if !matches!(b[i], b'S' | b's') || (i > 0 && b[i - 1].is_ascii_alphanumeric()) {
            continue;
        }
        let season = digits(&b[i + 1..]);
        if season.is_empty() || season.len() > 3 {
            continue;
        }
        let mut j = i + 1 + season.len();
        if j < b.len() && matches!(b[j], b'.' | b'_' | b'-' | b' ') {
            j += 1;
        }
        if j < b.len() && matches!(b[j], b'E' | b'e') {
            let ep = digits(&b[j + 1..]);
            if !ep.is_empty() && ep.len() <= 4 {
                return (
                    trim_title(&rest[..i]),
                    format!("S{:0>2}E{:0>2}", season, ep),
                );
            }
        }
    }
    // 1x02
    for i in 1..b.len() {
        if matches!(b[i], b'x' | b'X') && b[i - 1].is_ascii_digit() {
            let mut s = i;
            while s > 0 && b[s - 1].is_ascii_digit() {
                s -= 1;
            }
            let ep = digits(&b[i + 1..]);
            let season = &rest[s..i];
            if season.len() <= 2 && ep.len() == 2 && (s == 0 || is_sep(b[s - 1] as char)) {
                return (trim_title(&rest[..s]), format!("S{:0>2}E{}", season, ep));
            }
        }
    }
    // A trailing number, optionally after E/Ep/EP: "Show 03", "Show.E03", "爱在天摇地动时 01"
    let trimmed = rest.trim_end_matches(is_sep);
    let digits_start = trimmed
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_digit())
        .last()
        .map(|(i, _)| i);
    if let Some(ds) = digits_start {
        let ep = &trimmed[ds..];
        let mut head = &trimmed[..ds];
        for marker in ["Episode", "episode", "EP", "Ep", "ep", "E", "e", "第"] {
            if let Some(h) = head.strip_suffix(marker) {
                if h.is_empty() || h.ends_with(is_sep) {
                    head = h;
                    break;
                }
            }
        }
        if ep.len() <= 4 && (head.is_empty() || head.ends_with(is_sep)) {
            let title = trim_title(head);
            if !title.is_empty() {
                return (title, ep.to_string());
            }
        }
    }
    (trim_title(rest), String::new())
}

fn digits(b: &[u8]) -> &str {
    let n = b.iter().take_while(|c| c.is_ascii_digit()).count();
    std::str::from_utf8(&b[..n]).unwrap_or("")
}

fn trim_title(s: &str) -> &str {
    s.trim_matches(|c: char| is_sep(c) || c == '[' || c == ']')
}

/// A folder named like MuSC's `en2de` or `zh2th` fixes the direction of its pairs.
pub fn direction_hint(path: &Path) -> Option<(String, String)> {
    path.ancestors().skip(1).find_map(|dir| {
        let name = dir.file_name()?.to_str()?;
        let (a, b) = name.split_once('2')?;
        Some((lang_code(a)?.to_string(), lang_code(b)?.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> Option<(String, String, String)> {
        parse_name(Path::new(name)).map(|n| (n.title, n.episode, n.lang))
    }

    fn t(a: &str, b: &str, c: &str) -> Option<(String, String, String)> {
        Some((a.into(), b.into(), c.into()))
    }

    #[test]
    fn conventions() {
        assert_eq!(p("Show.S01E02.en.srt"), t("Show", "S01E02", "en"));
        assert_eq!(p("Show_s1e2_zh-Hans.ass"), t("Show", "S01E02", "zh"));
        assert_eq!(p("My Film-eng.vtt"), t("My Film", "", "en"));
        assert_eq!(p("My Film.pt-BR.srt"), t("My Film", "", "pt"));
        assert_eq!(p("My Film_zh_CN.srt"), t("My Film", "", "zh"));
        assert_eq!(p("Show 1x03.English.srt"), t("Show", "S01E03", "en"));
        assert_eq!(p("Show.E07.th.srt"), t("Show", "07", "th"));
        assert_eq!(p("Movie.chs.srt"), t("Movie", "", "zh"));
        assert_eq!(p("raw/de/Movie.srt"), t("Movie", "", "de"));
        assert_eq!(p("Movie.srt"), None);
    }

    #[test]
    fn musc_layout() {
        assert_eq!(
            p("爱在天摇地动时 01_泰国语.ass"),
            t("爱在天摇地动时", "01", "th")
        );
        assert_eq!(
            p("艾米丽在巴黎第1季 10_英语.ass"),
            t("艾米丽在巴黎第1季", "10", "en")
        );
        assert_eq!(
            direction_hint(Path::new("x/en2de/source(train)/a/a 01_英语.ass")),
            Some(("en".into(), "de".into()))
        );
    }

    #[test]
    fn tags() {
        assert_eq!(lang_code("zh-Hant-TW"), Some("zh"));
        assert_eq!(lang_code("es-419"), Some("es"));
        assert_eq!(lang_code("ger"), Some("de"));
        assert_eq!(lang_code("xx"), None);
        assert_eq!(lang_code("en-Foobar"), None);
    }
}
