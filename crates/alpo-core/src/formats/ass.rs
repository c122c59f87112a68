//! ASS and SSA (v4 and v4+). Only `Dialogue:` events of the `[Events]` section are cues; their
//! fields follow the section's `Format:` line, and the text, always last, may hold commas.
//! Drawing events (`{\p1}` vector shapes) are not text and are left out. Styles aligned to the
//! top of the frame (numpad 7-9 in v4+, 5-7 in SSA v4) mark their cues as top-positioned.

use super::{lines, parse_timestamp, Parsed, RawCue};
use std::collections::HashSet;

const DEFAULT_EVENT_FORMAT: [&str; 10] = [
    "layer", "start", "end", "style", "name", "marginl", "marginr", "marginv", "effect", "text",
];

pub fn parse(text: &str) -> Parsed<'_> {
    let mut out = Parsed::default();
    let mut section = String::new();
    let mut ssa = false;
    let mut style_format: Vec<String> = Vec::new();
    let mut top_styles: HashSet<String> = HashSet::new();
    let mut event_format = EventFields::new(&DEFAULT_EVENT_FORMAT.map(String::from));
    for (n, line) in lines(text) {
        let line = line.trim_start();
        if line.starts_with('[') {
            section = line.trim_end().to_ascii_lowercase();
            ssa |= section == "[v4 styles]";
            continue;
        }
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        match (section.as_str(), key) {
            ("[v4+ styles]" | "[v4 styles]", "Format") => style_format = fields(rest),
            ("[v4+ styles]" | "[v4 styles]", "Style") => {
                if let Some(name) = top_style(rest, &style_format, ssa) {
                    top_styles.insert(name);
                }
            }
            ("[events]", "Format") => {
                let f = fields(rest);
                if f.last().map(String::as_str) == Some("text") && f.len() >= 3 {
                    event_format = EventFields::new(&f);
                }
            }
            ("[events]", "Dialogue") => match event(rest, &event_format) {
                Ok(Some((start_ms, end_ms, style, text))) => out.cues.push(RawCue {
                    start_ms,
                    end_ms,
                    top: !top_styles.is_empty() && top_styles.contains(style.trim()),
                    style: style.trim(),
                    text: text.into(),
                    line: n,
                }),
                Ok(None) => {}
                Err(reason) => out.bad(n, reason),
            },
            _ => {}
        }
    }
    out
}

fn fields(rest: &str) -> Vec<String> {
    rest.split(',')
        .map(|f| f.trim().to_ascii_lowercase())
        .collect()
}

fn top_style(rest: &str, format: &[String], ssa: bool) -> Option<String> {
    let parts: Vec<&str> = rest.split(',').map(str::trim).collect();
    let at = |name: &str| {
        format
            .iter()
            .position(|f| f == name)
            .and_then(|i| parts.get(i))
    };
    let align: i64 = at("alignment")?.parse().ok()?;
    let top = if ssa {
        (5..=7).contains(&align)
    } else {
        (7..=9).contains(&align)
    };
    top.then(|| at("name").map(|s| s.to_string())).flatten()
}

type Event<'a> = (i64, i64, &'a str, &'a str);

/// Where the fields of a `Dialogue:` line are, from the section's `Format:` line.
struct EventFields {
    count: usize,
    start: Option<usize>,
    end: Option<usize>,
    style: Option<usize>,
}

impl EventFields {
    fn new(names: &[String]) -> Self {
        let at = |name: &str| names.iter().position(|f| f == name);
        EventFields {
            count: names.len(),
            start: at("start"),
            end: at("end"),
            style: at("style"),
        }
    }
}

fn event<'a>(rest: &'a str, format: &EventFields) -> Result<Option<Event<'a>>, String> {
    let (mut start, mut end, mut style, mut text) = (None, None, None, "");
    let mut found = 0;
    for (i, part) in rest.splitn(format.count, ',').enumerate() {
        let i = Some(i);
        if i == format.start {
            start = Some(part);
        }
        if i == format.end {
            end = Some(part);
        }
        if i == format.style {
            style = Some(part);
        }
        text = part;
        found += 1;
    }
    if found < format.count {
        return Err(format!(
            "Dialogue line has {found} of {} fields",
            format.count
        ));
    }
    let time = |name: &str, field: Option<&str>| {
        field
            .and_then(parse_timestamp)
            .ok_or_else(|| format!("unreadable {name} time {:?}", field.unwrap_or("")))
    };
    let (start, end) = (time("start", start)?, time("end", end)?);
    if is_drawing(text) {
        return Ok(None);
    }
    Ok(Some((start, end, style.unwrap_or(""), text)))
}

/// `{\p1}` .. `{\p4}` switch the event to vector drawing until `{\p0}`.
fn is_drawing(text: &str) -> bool {
    if memchr::memchr(b'{', text.as_bytes()).is_none() {
        return false;
    }
    text.match_indices("\\p").any(|(i, _)| {
        let after = &text.as_bytes()[i + 2..];
        after.first().is_some_and(|b| (b'1'..=b'9').contains(b))
            && text[..i].rfind('{') > text[..i].rfind('}')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASS: &str = "\u{feff}[Script Info]\r\nScriptType: v4.00+\r\n\r\n[Aegisub Project Garbage]\r\nActive Line: 3\r\n\r\n[V4+ Styles]\r\nFormat: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\r\nStyle: Default,Arial,20,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,2,2,2,10,10,10,1\r\nStyle: Sign,Arial,20,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,2,2,8,10,10,10,1\r\n\r\n[Events]\r\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\r\nDialogue: 0,0:00:01.00,0:00:02.46,Default,,0,0,0,,Hello, world\\Nsecond line\r\nComment: 0,0:00:03.00,0:00:04.00,Default,,0,0,0,,not shown\r\nDialogue: 0,0:00:05.00,0:00:06.00,Sign,,0,0,0,,A SIGN\r\nDialogue: 0,0:00:07.00,0:00:08.00,Default,,0,0,0,,{\\p1}m 0 0 l 100 0 100 100{\\p0}\r\nDialogue: 0,0:00:0x.00,0:00:10.00,Default,,0,0,0,,bad time\r\nDialogue: 0,0:00:11.00,0:00:12.00,Default,,0,0,0,,{\\an8}{\\fad(120,120)}Top\r\n";

    #[test]
    fn events() {
        let p = parse(ASS);
        let got: Vec<_> = p
            .cues
            .iter()
            .map(|c| (c.start_ms, c.end_ms, &*c.text, c.style, c.top))
            .collect();
        assert_eq!(
            got,
            [
                (1000, 2460, "Hello, world\\Nsecond line", "Default", false),
                (5000, 6000, "A SIGN", "Sign", true),
                (11000, 12000, "{\\an8}{\\fad(120,120)}Top", "Default", false),
            ]
        );
        assert_eq!(p.issue.as_ref().unwrap().line, 18);
    }

    #[test]
    fn ssa_v4() {
        let ssa = "[Script Info]\nScriptType: v4.00\n\n[V4 Styles]\nFormat: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, TertiaryColour, BackColour, Bold, Italic, BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, AlphaLevel, Encoding\nStyle: Top,Arial,20,0,0,0,0,0,0,1,2,2,6,10,10,10,0,1\n\n[Events]\nFormat: Marked, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\nDialogue: Marked=0,0:00:01.50,0:00:02.00,Top,,0000,0000,0000,,Up here\n";
        let p = parse(ssa);
        assert_eq!(p.cues.len(), 1);
        assert_eq!((p.cues[0].start_ms, p.cues[0].top), (1500, true));
    }
}
