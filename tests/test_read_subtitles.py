"""`alpo.read_subtitles`: formats, encodings and cleaning as a user sees them."""

import pytest

import alpo
from alpo.exceptions import EncodingError, InputError, ParseError

SRT = (
    "\ufeff1\r\n00:00:01,000 --> 00:00:02,500\r\n<i>Hello</i>\r\nthere\r\n\r\n"
    "2\r\n00:00:03,000 --> 00:00:04,000\r\n{\\an8}SIGN\r\n\r\n"
    "3\r\n00:00:05,000 --> 00:00:06,000\r\n我们\\N走吧\r\n"
)


def test_srt_cleaned_and_raw(tmp_path):
    path = tmp_path / "a.en.srt"
    path.write_text(SRT, encoding="utf-8")
    df = alpo.read_subtitles(path)
    assert df.columns == ["start_ms", "end_ms", "text", "style", "top", "line"]
    assert df["text"].to_list() == ["Hello there", "SIGN", "我们 走吧"]
    assert df["top"].to_list() == [False, True, False]
    assert df["start_ms"].to_list() == [1000, 3000, 5000]
    assert alpo.read_subtitles(path, keep_top=False).height == 2
    raw = alpo.read_subtitles(path, clean=False)
    assert raw["text"][0] == "<i>Hello</i>\nthere"


@pytest.mark.parametrize(
    ("codec", "lang", "text", "expected"),
    [
        ("gb18030", "zh", "我们走吧，快点！他说的是真的吗？", "gb18030"),
        ("big5", "zh", "我們走吧，快點！他說的是真的嗎？", "big5"),
        ("cp874", "th", "สวัสดีครับ คุณสบายดีไหม", "windows-874"),
        ("cp1256", "ar", "مرحبا بك في البيت", "windows-1256"),
        ("cp1251", "ru", "Привет, как дела?", "windows-1251"),
        ("utf-16", "en", "Hello — “quoted”", "utf-16le"),
        ("shift_jis", "ja", "こんにちは、元気ですか？", "shift_jis"),
    ],
)
def test_encodings(tmp_path, codec, lang, text, expected):
    path = tmp_path / f"film.{lang}.srt"
    path.write_bytes(f"1\n00:00:01,000 --> 00:00:02,000\n{text}\n".encode(codec))
    df, info = alpo.read_subtitles_info(path)
    assert info["encoding"] == expected
    assert df["text"].to_list() == [text]


def test_ass_vtt_microdvd(tmp_path):
    ass = tmp_path / "x.en.ass"
    ass.write_text(
        "[Script Info]\nScriptType: v4.00+\n\n[Events]\n"
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
        "Dialogue: 0,0:00:01.46,0:00:02.00,Main,,0,0,0,,Hi, you\\Nthere\n"
        "Dialogue: 0,0:00:03.00,0:00:04.00,Main,,0,0,0,,{\\p1}m 0 0 l 10 10{\\p0}\n"
    )
    df = alpo.read_subtitles(ass)
    assert df.select("start_ms", "text", "style").rows() == [(1460, "Hi, you there", "Main")]

    vtt = tmp_path / "x.en.vtt"
    vtt.write_text("WEBVTT\n\nNOTE x\n\n00:01.000 --> 00:02.000 line:0\n<v Ann>Up &amp; away\n")
    df, info = alpo.read_subtitles_info(vtt)
    assert (info["format"], df["text"][0], df["top"][0]) == ("vtt", "Up & away", True)

    sub = tmp_path / "x.en.sub"
    sub.write_text("{1}{1}25\n{50}{100}{y:i}Two|lines\n")
    df = alpo.read_subtitles(sub)
    assert df.select("start_ms", "end_ms", "text").rows() == [(2000, 4000, "Two lines")]


def test_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="nope.srt"):
        alpo.read_subtitles(tmp_path / "nope.srt")
    bad = tmp_path / "bad.zh.srt"
    bad.write_bytes(b"1\n00:00:01,000 --> 00:00:02,000\ncaf\xe9 \xe0\n")
    with pytest.raises(EncodingError, match="bad.zh.srt"):
        alpo.read_subtitles(bad)
    empty = tmp_path / "empty.en.srt"
    empty.write_text("no cues here\n")
    with pytest.raises(ParseError, match="empty.en.srt"):
        alpo.read_subtitles(empty)
    assert issubclass(EncodingError, alpo.AlpoError)
