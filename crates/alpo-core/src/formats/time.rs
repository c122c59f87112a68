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
    let mut groups: Vec<(u64, u32)> = Vec::with_capacity(4);
    let mut seps: Vec<char> = Vec::with_capacity(4);
    while groups.len() < 4 {
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
            if seps.len() == groups.len() && !groups.is_empty() {
                break;
            }
            return None;
        }
        groups.push((value, n));
        // "00:00:0x": a stamp ends at a separator, a space or the end, never inside a word.
        if chars
            .peek()
            .is_some_and(|c| c.is_alphanumeric() && digit(*c).is_none())
        {
            return None;
        }
        skip_spaces(&mut chars);
        match chars.peek() {
            Some(&c) if is_sep(c) && groups.len() < 4 => {
                seps.push(c);
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
    let (h, m, s, f) = match groups.as_slice() {
        [h, m, s, f] => (h.0, m.0, s.0, fraction(*f)),
        [a, b, c] if is_fraction_sep(seps[1]) => (0, a.0, b.0, fraction(*c)),
        [h, m, s] => (h.0, m.0, s.0, 0),
        _ => return None,
    };
    if h > 100_000 || m >= 60 && groups.len() > 2 || s >= 60 {
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
}
