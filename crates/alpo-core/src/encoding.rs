//! Turning the bytes of a subtitle file into text.
//!
//! Order: byte-order mark, then strict UTF-8, then BOM-less UTF-16, then the legacy encodings that
//! fit the file's language (chardetng's guess first when it is one of them). Each candidate decodes
//! without replacement and must look like text of that language; a file that no candidate decodes
//! cleanly is an error, never silently turned into mojibake.

use encoding_rs::{
    Encoding, BIG5, EUC_JP, EUC_KR, GB18030, SHIFT_JIS, UTF_16BE, UTF_16LE, WINDOWS_1250,
    WINDOWS_1251, WINDOWS_1252, WINDOWS_1253, WINDOWS_1254, WINDOWS_1255, WINDOWS_1256,
    WINDOWS_1258, WINDOWS_874,
};
use std::borrow::Cow;

/// How many leading bytes the checks for binary data look at.
const SNIFF_BYTES: usize = 16 * 1024;
/// How many leading bytes chardetng reads: its per-byte cost is high, and a few thousand bytes
/// of one language already tell its candidates apart.
const DETECT_BYTES: usize = 4 * 1024;

#[derive(Debug)]
pub struct Decoded<'a> {
    pub text: Cow<'a, str>,
    /// WHATWG name of the encoding used, lower case ("utf-8", "gb18030", "windows-874", ...).
    pub encoding: &'static str,
}

/// Legacy encodings worth trying for a language (ISO 639-1), most likely first.
fn candidates(lang: Option<&str>) -> Vec<&'static Encoding> {
    match lang.unwrap_or("") {
        "zh" => vec![GB18030, BIG5],
        "ja" => vec![SHIFT_JIS, EUC_JP],
        "ko" => vec![EUC_KR],
        "th" => vec![WINDOWS_874],
        "ar" | "fa" | "ur" => vec![WINDOWS_1256],
        "he" | "yi" => vec![WINDOWS_1255],
        "ru" | "uk" | "bg" | "sr" | "mk" | "be" => vec![WINDOWS_1251],
        "el" => vec![WINDOWS_1253],
        "tr" | "az" => vec![WINDOWS_1254],
        "vi" => vec![WINDOWS_1258],
        "pl" | "cs" | "sk" | "hu" | "ro" | "hr" | "sl" | "bs" => vec![WINDOWS_1250],
        "" => vec![
            GB18030,
            BIG5,
            SHIFT_JIS,
            EUC_KR,
            WINDOWS_874,
            WINDOWS_1256,
            WINDOWS_1251,
            WINDOWS_1252,
        ],
        _ => vec![WINDOWS_1252],
    }
}

/// Top-level domain used as chardetng's hint for a language.
fn tld(lang: &str) -> Option<&'static [u8]> {
    Some(match lang {
        "ja" => b"jp",
        "ko" => b"kr",
        "th" => b"th",
        "ar" => b"sa",
        "fa" => b"ir",
        "he" => b"il",
        "ru" => b"ru",
        "uk" => b"ua",
        "el" => b"gr",
        "tr" => b"tr",
        "vi" => b"vn",
        "pl" => b"pl",
        "cs" => b"cz",
        "de" => b"de",
        "fr" => b"fr",
        "es" => b"es",
        _ => return None,
    })
}

/// `decode` into an owned string, reusing the file's buffer when the text is the bytes as they
/// are (UTF-8 files, ASCII-only files): no copy of most files.
pub fn decode_owned(bytes: Vec<u8>, lang: Option<&str>) -> Result<(String, &'static str), String> {
    let decoded = decode(&bytes, lang)?;
    let (start, len) = match decoded.text {
        Cow::Owned(text) => return Ok((text, decoded.encoding)),
        Cow::Borrowed(text) => (text.as_ptr() as usize - bytes.as_ptr() as usize, text.len()),
    };
    let encoding = decoded.encoding;
    let mut bytes = bytes;
    bytes.truncate(start + len);
    bytes.drain(..start);
    // SAFETY: a borrowed text is a slice of the input, here `bytes[start..start + len]`, which
    // `decode` checked to be UTF-8; `bytes` now holds exactly that slice.
    Ok((unsafe { String::from_utf8_unchecked(bytes) }, encoding))
}

/// Decode a whole file. `lang` is the ISO 639-1 code from the file name, if any.
pub fn decode<'a>(bytes: &'a [u8], lang: Option<&str>) -> Result<Decoded<'a>, String> {
    if let Some((enc, bom_len)) = Encoding::for_bom(bytes) {
        let body = &bytes[bom_len..];
        return strict(enc, body)
            .map(|text| Decoded {
                text,
                encoding: name(enc),
            })
            .ok_or_else(|| format!("invalid {} after its byte-order mark", name(enc)));
    }
    if let Some(enc) = sniff_utf16(bytes) {
        if let Some(text) = strict(enc, bytes) {
            return Ok(Decoded {
                text,
                encoding: name(enc),
            });
        }
    }
    // Most files are UTF-8 and every byte of them is checked: the SIMD validator is several
    // times faster than the standard library's on non-ASCII text.
    if let Ok(text) = simdutf8::basic::from_utf8(bytes) {
        return if looks_binary(text) {
            Err("binary data, not a subtitle file".into())
        } else {
            Ok(Decoded {
                text: Cow::Borrowed(text),
                encoding: "utf-8",
            })
        };
    }
    if bytes.iter().take(SNIFF_BYTES).filter(|&&b| b == 0).count() > 8 {
        return Err("binary data, not a subtitle file".into());
    }
    let list = candidates(lang);
    // chardetng's guess only matters where a language has several candidates.
    let guess = (list.len() > 1).then(|| {
        let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
        let head = &bytes[..bytes.len().min(DETECT_BYTES)];
        detector.feed(head, bytes.len() <= DETECT_BYTES);
        detector.guess(lang.and_then(tld), chardetng::Utf8Detection::Deny)
    });
    let ordered = guess
        .filter(|g| list.contains(g))
        .into_iter()
        .chain(list.iter().copied().filter(|&e| Some(e) != guess));
    for enc in ordered {
        if let Some(text) = strict(enc, bytes) {
            if plausible(&text, lang) {
                return Ok(Decoded {
                    text,
                    encoding: name(enc),
                });
            }
        }
    }
    let tried: Vec<&str> = list.iter().map(|e| name(e)).collect();
    Err(format!(
        "not valid UTF-8 and does not decode as {} (language {})",
        tried.join(", "),
        lang.unwrap_or("unknown")
    ))
}

fn name(enc: &'static Encoding) -> &'static str {
    match enc.name() {
        "UTF-8" => "utf-8",
        "UTF-16LE" => "utf-16le",
        "UTF-16BE" => "utf-16be",
        "gb18030" => "gb18030",
        "Big5" => "big5",
        "Shift_JIS" => "shift_jis",
        "EUC-JP" => "euc-jp",
        "EUC-KR" => "euc-kr",
        "windows-874" => "windows-874",
        "windows-1250" => "windows-1250",
        "windows-1251" => "windows-1251",
        "windows-1252" => "windows-1252",
        "windows-1253" => "windows-1253",
        "windows-1254" => "windows-1254",
        "windows-1255" => "windows-1255",
        "windows-1256" => "windows-1256",
        "windows-1258" => "windows-1258",
        _ => "other",
    }
}

fn strict<'a>(enc: &'static Encoding, bytes: &'a [u8]) -> Option<Cow<'a, str>> {
    enc.decode_without_bom_handling_and_without_replacement(bytes)
}

/// UTF-16 without a BOM shows up as NUL in every other byte of ASCII-heavy text.
fn sniff_utf16(bytes: &[u8]) -> Option<&'static Encoding> {
    let head = &bytes[..bytes.len().min(4096) & !1];
    if head.len() < 8 {
        return None;
    }
    let pairs = head.len() / 2;
    let even = head.iter().step_by(2).filter(|&&b| b == 0).count();
    let odd = head.iter().skip(1).step_by(2).filter(|&&b| b == 0).count();
    if odd * 10 > pairs * 3 && even * 20 < pairs {
        Some(UTF_16LE)
    } else if even * 10 > pairs * 3 && odd * 20 < pairs {
        Some(UTF_16BE)
    } else {
        None
    }
}

/// Control characters other than whitespace mean the "text" is really binary data.
fn looks_binary(text: &str) -> bool {
    let head = &text.as_bytes()[..text.len().min(SNIFF_BYTES)];
    let controls = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c))
        .count();
    controls > 8 && controls * 100 > head.len()
}

/// A decoding that worked byte-wise can still be the wrong one: GB18030 bytes read as
/// Windows-874 give Thai letters in an order Thai never has. Check the script of the language.
fn plausible(text: &str, lang: Option<&str>) -> bool {
    if looks_binary(text) {
        return false;
    }
    let sample: String = text.chars().take(20_000).collect();
    // Private-use code points come out of a double-byte decoder fed the wrong double bytes.
    let private = sample
        .chars()
        .filter(|c| ('\u{E000}'..='\u{F8FF}').contains(c))
        .count();
    if private * 200 > sample.chars().count() {
        return false;
    }
    match lang {
        Some("th") => thai_plausible(&sample),
        Some("zh") | Some("ja") => sample.chars().any(is_cjk),
        Some("ko") => sample
            .chars()
            .any(|c| ('\u{AC00}'..='\u{D7A3}').contains(&c)),
        Some("ar") | Some("fa") | Some("ur") => sample
            .chars()
            .any(|c| ('\u{0600}'..='\u{06FF}').contains(&c)),
        _ => !sample.chars().any(|c| ('\u{80}'..='\u{9F}').contains(&c)),
    }
}

pub(crate) fn is_cjk(c: char) -> bool {
    matches!(c, '\u{3040}'..='\u{30FF}' | '\u{3400}'..='\u{4DBF}' | '\u{4E00}'..='\u{9FFF}' | '\u{F900}'..='\u{FAFF}')
}

/// Thai vowel signs above and below a letter and tone marks must sit on a consonant (tone marks
/// may also sit on such a vowel sign), and the obsolete letters and rare signs that mojibake is
/// full of (ฃ, ฅ, ฿, ๏, ๚, ๛) hardly occur in real text.
fn thai_plausible(text: &str) -> bool {
    let consonant = |c: char| ('\u{0E01}'..='\u{0E2E}').contains(&c);
    let vowel_sign = |c: char| matches!(c, '\u{0E31}' | '\u{0E34}'..='\u{0E3A}' | '\u{0E47}');
    let tone = |c: char| ('\u{0E48}'..='\u{0E4E}').contains(&c);
    let (mut thai, mut misplaced) = (0usize, 0usize);
    let mut prev = ' ';
    for c in text.chars() {
        if ('\u{0E00}'..='\u{0E7F}').contains(&c) {
            thai += 1;
            let ok = if vowel_sign(c) {
                consonant(prev)
            } else if tone(c) || c == '\u{0E33}' {
                consonant(prev) || vowel_sign(prev) || (c == '\u{0E33}' && tone(prev))
            } else {
                !matches!(
                    c,
                    '\u{0E03}' | '\u{0E05}' | '\u{0E3F}' | '\u{0E4F}' | '\u{0E5A}' | '\u{0E5B}'
                )
            };
            misplaced += !ok as usize;
        }
        prev = c;
    }
    thai > 0 && misplaced * 50 <= thai
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(e: &'static Encoding, s: &str) -> Vec<u8> {
        e.encode(s).0.into_owned()
    }

    #[test]
    fn owned_decoding_keeps_the_text() {
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend_from_slice("héllo".as_bytes());
        let utf16le: Vec<u8> = "\u{feff}สวัสดี"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let cases: [(Vec<u8>, Option<&str>, &str, &str); 4] = [
            ("héllo".as_bytes().to_vec(), None, "héllo", "utf-8"),
            (bom, None, "héllo", "utf-8"),
            (utf16le, None, "สวัสดี", "utf-16le"),
            (
                enc(GB18030, "你好，世界"),
                Some("zh"),
                "你好，世界",
                "gb18030",
            ),
        ];
        for (bytes, lang, text, encoding) in cases {
            let borrowed = decode(&bytes, lang).unwrap();
            assert_eq!(
                (borrowed.text.as_ref(), borrowed.encoding),
                (text, encoding)
            );
            let owned = decode_owned(bytes.clone(), lang).unwrap();
            assert_eq!((owned.0.as_str(), owned.1), (text, encoding));
        }
    }

    #[test]
    fn boms_win() {
        let mut b = vec![0xEF, 0xBB, 0xBF];
        b.extend_from_slice("héllo".as_bytes());
        let d = decode(&b, None).unwrap();
        assert_eq!((d.text.as_ref(), d.encoding), ("héllo", "utf-8"));

        let mut b = vec![0xFF, 0xFE];
        for u in "你好".encode_utf16() {
            b.extend_from_slice(&u.to_le_bytes());
        }
        let d = decode(&b, None).unwrap();
        assert_eq!((d.text.as_ref(), d.encoding), ("你好", "utf-16le"));
    }

    #[test]
    fn bomless_utf16() {
        let mut b = vec![];
        for u in "1\n00:00:01,000 --> 00:00:02,000\nhello\n".encode_utf16() {
            b.extend_from_slice(&u.to_be_bytes());
        }
        assert_eq!(decode(&b, None).unwrap().encoding, "utf-16be");
    }

    /// Encode `s` in `e`, decode it back with the language hint: (text, encoding used).
    fn roundtrip(e: &'static Encoding, s: &str, lang: &str) -> (String, &'static str) {
        let bytes = enc(e, s);
        let d = decode(&bytes, Some(lang)).unwrap();
        (d.text.into_owned(), d.encoding)
    }

    #[test]
    fn legacy_by_language() {
        let zh = "1\n00:00:01,000 --> 00:00:02,000\n我们走吧，快点！他说的是真的吗？\n";
        assert_eq!(roundtrip(GB18030, zh, "zh"), (zh.into(), "gb18030"));
        let big5 = "我們走吧，快點！他說的是真的嗎？";
        assert_eq!(roundtrip(BIG5, big5, "zh"), (big5.into(), "big5"));
        let th = "1\n00:00:01,000 --> 00:00:02,000\nสวัสดีครับ คุณสบายดีไหม\n";
        assert_eq!(roundtrip(WINDOWS_874, th, "th"), (th.into(), "windows-874"));
        let ar = "مرحبا بك في البيت";
        assert_eq!(
            roundtrip(WINDOWS_1256, ar, "ar"),
            (ar.into(), "windows-1256")
        );
        let fr = "Ça va très bien, merci à vous.";
        assert_eq!(
            roundtrip(WINDOWS_1252, fr, "fr"),
            (fr.into(), "windows-1252")
        );
        let ja = "こんにちは、元気ですか？";
        assert_eq!(roundtrip(SHIFT_JIS, ja, "ja"), (ja.into(), "shift_jis"));
    }

    #[test]
    fn wrong_encoding_is_an_error_not_mojibake() {
        // Latin-1 bytes in a file named as Chinese: no Chinese decoder accepts them.
        let bytes = b"1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9 cr\xe8me \xe0 la fin\n";
        assert!(decode(bytes, Some("zh")).is_err());
        // GB18030 text in a file named as Thai decodes byte-wise but is not Thai.
        let gb = enc(
            GB18030,
            "我们走吧，快点！他说的是真的吗？我不知道。"
                .repeat(5)
                .as_str(),
        );
        assert!(decode(&gb, Some("th")).is_err());
    }

    #[test]
    fn binary_is_rejected() {
        let junk: Vec<u8> = (0..4000u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert!(decode(&junk, None).is_err());
    }
}
