//! Timestamps as real files write them: `01:02:03,456`, `1:02:03.46`, `02:03.456`, `-00:00:01,5`,
//! full-width `００：０１：０２，５００`, spaces inside, hours past 99. A fraction is a decimal
//! fraction (`,46` is 460 ms, `,5` is 500 ms), as pysubs2 and players read it.

/// Characters that separate hours, minutes, seconds and the fraction.
fn is_sep(c: char) -> bool {
    matches!(c, ':' | ',' | '.' | '：' | '，' | '．' | '。' | '،' | ';')
}

/// A separator that can only stand before a fraction (not between h, m and s).
fn is_fraction_sep(c: char) -> bool {
    is_sep(c) && !matches!(c, ':' | '：')
}

fn digit(c: char) -> Option<u32> {
    match c {
        '0'..='9' => Some(c as u32 - '0' as u32),
        '０'..='９' => Some(c as u32 - '０' as u32),
        _ => None,
    }
}

/// Parse a timestamp at the start of `s`; whatever follows it (cue settings, coordinates) is
/// ignored. Returns milliseconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    common_form(s.as_bytes()).or_else(|| any_form(s))
}

/// `H:MM:SS.f` with one to three digits of hours and of fraction (`00:01:02,500` in SRT,
/// `0:01:02.50` in ASS), after optional spaces and followed by the end, a space or a cue setting:
/// nearly every timestamp of nearly every file, read without walking characters. Anything else
/// is `None` here and goes to the general parser.
fn common_form(b: &[u8]) -> Option<i64> {
    let b = &b[b.iter().take_while(|&&c| c == b' ').count()..];
    let d = |i: usize| -> Option<i64> {
        let c = b.get(i)?.wrapping_sub(b'0');
        (c < 10).then_some(i64::from(c))
    };
    // Digit runs stop at four: longer ones are for the general parser.
    let mut h = 0;
    let mut i = 0;
    while let Some(x) = d(i).filter(|_| i < 4) {
        h = h * 10 + x;
        i += 1;
    }
    if !(1..=3).contains(&i) || b.get(i) != Some(&b':') || b.get(i + 3) != Some(&b':') {
        return None;
    }
    let (m, s) = (d(i + 1)? * 10 + d(i + 2)?, d(i + 4)? * 10 + d(i + 5)?);
    if !matches!(b.get(i + 6), Some(b',' | b'.')) || m >= 60 || s >= 60 {
        return None;
    }
    let mut f = 0;
    let mut k = i + 7;
    while let Some(x) = d(k).filter(|_| k < i + 11) {
        f = f * 10 + x;
        k += 1;
    }
    f *= match k - (i + 7) {
        1 => 100,
        2 => 10,
        3 => 1,
        _ => return None,
    };
    // The next byte must not continue the stamp ("00:00:01,000:5", "00:00:0x").
    if b.get(k)
        .is_some_and(|c| c.is_ascii_alphanumeric() || is_sep_byte(*c))
    {
        return None;
    }
    Some(((h * 60 + m) * 60 + s) * 1000 + f)
}

fn is_sep_byte(c: u8) -> bool {
    matches!(c, b':' | b',' | b'.' | b';') || c >= 0x80
}

/// Every form of the module comment.
fn any_form(s: &str) -> Option<i64> {
    let mut chars = s.chars().peekable();
    let skip_spaces = |it: &mut std::iter::Peekable<std::str::Chars>| {
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
    };
    skip_spaces(&mut chars);
    let negative = chars.peek() == Some(&'-');
    if negative {
        chars.next();
        skip_spaces(&mut chars);
    }
    // (value, digit count) per group, and the separator that followed each group.
    let mut groups = [(0u64, 0u32); 4];
    let mut seps = [' '; 4];
    let (mut n_groups, mut n_seps) = (0, 0);
    while n_groups < 4 {
        let (mut value, mut n) = (0u64, 0u32);
        while let Some(d) = chars.peek().and_then(|&c| digit(c)) {
            chars.next();
            if n < 18 {
                value = value * 10 + d as u64;
            }
            n += 1;
        }
        if n == 0 {
            // "00:00:01," with nothing after the separator: an empty fraction.
            if n_seps == n_groups && n_groups > 0 {
                break;
            }
            return None;
        }
        groups[n_groups] = (value, n);
        n_groups += 1;
        // "00:00:0x": a stamp ends at a separator, a space or the end, never inside a word.
        if chars
            .peek()
            .is_some_and(|c| c.is_alphanumeric() && digit(*c).is_none())
        {
            return None;
        }
        skip_spaces(&mut chars);
        match chars.peek() {
            Some(&c) if is_sep(c) && n_groups < 4 => {
                seps[n_seps] = c;
                n_seps += 1;
                chars.next();
                skip_spaces(&mut chars);
            }
            _ => break,
        }
    }
    let fraction = |(v, n): (u64, u32)| -> i64 {
        // keep the first three digits: 5 -> 500, 46 -> 460, 4567 -> 456
        match n {
            1 => v as i64 * 100,
            2 => v as i64 * 10,
            3 => v as i64,
            // `v` holds at most the first 18 digits (see above), however many there were
            _ => (v / 10u64.pow(n.min(18) - 3)) as i64,
        }
    };
    let (h, m, s, f) = match &groups[..n_groups] {
        [h, m, s, f] => (h.0, m.0, s.0, fraction(*f)),
        [a, b, c] if is_fraction_sep(seps[1]) => (0, a.0, b.0, fraction(*c)),
        [h, m, s] => (h.0, m.0, s.0, 0),
        _ => return None,
    };
    if h > 100_000 || m >= 60 && n_groups > 2 || s >= 60 {
        return None;
    }
    let ms = ((h * 60 + m) * 60 + s) as i64 * 1000 + f;
    Some(if negative { -ms } else { ms })
}

#[cfg(test)]
mod tests {
    use super::parse_timestamp as t;

    #[test]
    fn common_forms() {
        assert_eq!(t("01:02:03,456"), Some(3_723_456));
        assert_eq!(t("01:02:03.456"), Some(3_723_456));
        assert_eq!(t("1:02:03.46"), Some(3_723_460));
        assert_eq!(t("00:29:27,46"), Some(1_767_460));
        assert_eq!(t("00:00:01,5"), Some(1_500));
        assert_eq!(t("00:00:01:500"), Some(1_500));
        assert_eq!(t("02:03.456"), Some(123_456));
        assert_eq!(t("00:00:01"), Some(1_000));
        assert_eq!(t("00:00:01,"), Some(1_000));
        assert_eq!(t("00:00:01,4567"), Some(1_456));
        // more fraction digits than a u64 holds: found by fuzzing, used to overflow
        assert_eq!(t("00:00:01,12345678901234567890"), Some(1_123));
        assert_eq!(t(&format!("00:00:01,5{}", "9".repeat(60))), Some(1_599));
    }

    #[test]
    fn odd_forms() {
        assert_eq!(t("123:00:00,000"), Some(442_800_000));
        assert_eq!(t("-00:00:01,000"), Some(-1_000));
        assert_eq!(t(" 00 : 00 : 01 , 500 "), Some(1_500));
        assert_eq!(t("００：００：０２，５００"), Some(2_500));
        assert_eq!(t("00：00：02。500"), Some(2_500));
        assert_eq!(t("00:00:02،500"), Some(2_500));
        assert_eq!(t("00:00:02,000 X1:63 X2:223"), Some(2_000));
        assert_eq!(t("00:00:02.000 line:0 align:start"), Some(2_000));
    }

    #[test]
    fn garbage() {
        assert_eq!(t(""), None);
        assert_eq!(t("hello"), None);
        assert_eq!(t("00:61:00,000"), None);
        assert_eq!(t("12"), None);
        // what a file cut off inside a timestamp leaves
        assert_eq!(t("00:0"), None);
        assert_eq!(t("00:00:0x,000"), None);
        assert_eq!(t("0:00:0x.00"), None);
    }

    #[test]
    fn common_form_agrees_with_the_general_parser() {
        for stamp in [
            "01:02:03,456",
            "0:01:02.46",
            "123:01:02.4",
            "1234:01:02.4",
            " 00:00:02,000",
            "  0:00:02.00 x",
            "00:00:01,",
            ":00:01,000",
            "00:00:00.000",
            "99:59:59,999",
            "00:59:60,000",
            "00:60:00,000",
            "00:00:01,0005",
            "00:00:01,000 X1:63",
            "00:00:01.000 line:0",
            "00:00:01,000-->",
            "00:00:01,00x",
            "00:00:01,000x",
            "00:00:01,000:5",
            "00:00:01,000。",
            "0a:00:01,000",
        ] {
            assert_eq!(
                super::common_form(stamp.as_bytes()).or_else(|| super::any_form(stamp)),
                super::any_form(stamp),
                "{stamp}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]
        #[test]
        fn fast_path_never_disagrees(stamp in " ?[0-9]{0,4}[:.,][0-9]{1,2}[:.,][0-9]{2}[:.,][0-9]{0,4}[0-9a :,.。-]{0,3}") {
            if let Some(ms) = super::common_form(stamp.as_bytes()) {
                proptest::prop_assert_eq!(Some(ms), super::any_form(&stamp));
            }
        }
    }
}
