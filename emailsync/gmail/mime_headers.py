"""Charsets and headers of real mail: bogus charset names, encoded-words, 8-bit headers, address
lists and dates, each decoded with explicit fallbacks and a note in `errors` instead of an exception."""

from __future__ import annotations

import binascii
import codecs
import email.utils
import re
from datetime import UTC, datetime
from email.message import Message
from typing import Any

from emailsync.gmail import settings as limits

# Names seen in real mail that Python does not know, or knows under a narrower meaning.
# None = "no usable charset declared": fall back to utf-8, then windows-1252 / latin-1.
CHARSET_ALIASES: dict[str, str | None] = {
    "unknown-8bit": None,
    "unknown": None,
    "x-unknown": None,
    "default": None,
    "default_charset": None,
    "charset": None,
    "none": None,
    "8bit": None,
    "x-user-defined": "windows-1252",
    "utf8": "utf-8",
    "utf-8lite": "utf-8",
    "unicode-1-1-utf-7": "utf-7",
    "ascii": "us-ascii",
    "us_ascii": "us-ascii",
    "ansi_x3.4-1968": "us-ascii",
    "iso-8859-8-i": "iso-8859-8",
    "iso-8859-8-e": "iso-8859-8",
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "ksc5601": "cp949",
    "euc-kr": "cp949",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cn-gb": "gb18030",
    "big5": "big5hkscs",
    "x-mac-roman": "mac-roman",
    "macintosh": "mac-roman",
    "x-mac-cyrillic": "mac-cyrillic",
    "windows-874": "cp874",
    "tis-620": "cp874",
    "x-sjis": "shift_jis",
    "shift-jis": "shift_jis",
    "sjis": "shift_jis",
    "iso-2022-jp": "iso2022_jp_ext",  # many mailers put JIS X 0201 kana in "iso-2022-jp"
}

_ISO_8859_MISSPELLED = re.compile(r"^iso[-_ ]?8859[-_ ]?(\d{1,2})")
_WINDOWS_MISSPELLED = re.compile(r"^(?:windows|win|cp|ms)[-_ ]?(125\d|874|932|936|949|950)$")


def _normalize_charset(declared: str | None) -> str | None:
    """The Python codec name for a declared charset, or None when none usable is declared."""
    if not declared:
        return None
    name = declared.strip().strip("\"'").strip().lower()
    name = name.split("*", 1)[0]  # RFC 2231 language suffix: utf-8*en
    if not name:
        return None
    if name in CHARSET_ALIASES:
        return CHARSET_ALIASES[name]
    try:
        info = codecs.lookup(name)
    except LookupError:
        info = None
    if info is not None:
        # Only text encodings: "base64", "hex", "rot13" are codecs too, but not charsets.
        return name if getattr(info, "_is_text_encoding", True) else None
    if match := _ISO_8859_MISSPELLED.match(name):
        return f"iso-8859-{match.group(1)}"
    if match := _WINDOWS_MISSPELLED.match(name):
        return f"cp{match.group(1)}"
    return None


def decode_bytes(data: bytes, declared: str | None, errors: list[str], where: str) -> str:
    """Text of `data` in its declared charset, with fallbacks; every fallback is noted in `errors`.

    Order: the declared charset (through `CHARSET_ALIASES`), then utf-8, then windows-1252, then latin-1
    (which decodes anything). Bytes invalid in a known declared charset are replaced, not re-guessed.
    """
    if not data:
        return ""
    charset = _normalize_charset(declared)
    if declared and charset is None and declared.strip().strip("\"'").lower() not in CHARSET_ALIASES:
        errors.append(f"{where}: unknown charset {declared.strip()[:40]!r}")
    if charset is not None:
        try:
            return data.decode(charset)
        except (UnicodeDecodeError, LookupError, ValueError):
            pass
        if charset != "us-ascii":  # 8-bit bytes under "us-ascii" are the sender's real charset: guess below
            try:
                text = data.decode(charset, errors="replace")
                errors.append(f"{where}: bytes invalid in charset {charset}, replaced")
                return text
            except (LookupError, ValueError):
                pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    fallback = "windows-1252"
    try:
        text = data.decode(fallback)
    except UnicodeDecodeError:  # the five bytes windows-1252 leaves undefined
        fallback = "latin-1"
        text = data.decode(fallback)
    errors.append(f"{where}: 8-bit bytes without a usable charset, decoded as {fallback}")
    return text


# ------------------------------------------------------------------------------------------ headers

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_ENCODED_WORDS = re.compile(r"(\?=)[ \t\r\n]+(?==\?[^?\s]+\?[QqBb]\?)")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_WHITESPACE_RUN = re.compile(r"\s+")


def _raw_values(message: Message, name: str) -> list[str]:
    """Header values as received: compat32's `get()` turns 8-bit bytes into U+FFFD, `raw_items()` does not."""
    wanted = name.lower()
    return [value for key, value in message.raw_items() if key.lower() == wanted]


def _raw_value(message: Message, name: str) -> str | None:
    values = _raw_values(message, name)
    return values[0] if values else None


def _header_to_text(value: Any, errors: list[str], name: str) -> str:
    """A header value as str: raw 8-bit bytes (kept by compat32 as surrogate escapes) decoded."""
    if value is None:
        return ""
    if not isinstance(value, str):  # email.header.Header from odd inputs
        try:
            value = str(value)
        except Exception:
            return ""
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        raw = value.encode("utf-8", "surrogateescape")
        value = decode_bytes(raw, None, [], name)
        errors.append(f"{name}: raw 8-bit bytes in header")
    return _FOLD.sub("", value)


def _decode_encoded_word(
    charset: str, encoding: str, payload: str, errors: list[str], name: str
) -> str | None:
    try:
        if encoding in "Qq":
            data = binascii.a2b_qp(payload.encode("ascii", "replace"), header=True)
        else:
            compact = payload.encode("ascii", "replace")
            compact += b"=" * (-len(compact) % 4)
            data = binascii.a2b_base64(compact)
    except (binascii.Error, ValueError):
        errors.append(f"{name}: undecodable encoded-word")
        return None
    return decode_bytes(data, charset, errors, name)


def decode_header_text(value: Any, errors: list[str], name: str) -> str:
    """RFC 2047 decoding tolerant of broken encoded-words, mixed charsets and raw 8-bit bytes."""
    text = _header_to_text(value, errors, name)
    if "=?" not in text:
        return text
    text = _BETWEEN_ENCODED_WORDS.sub(r"\1", text)  # whitespace between adjacent encoded-words is not text

    def replace(match: re.Match[str]) -> str:
        decoded = _decode_encoded_word(match.group(1), match.group(2), match.group(3), errors, name)
        return match.group(0) if decoded is None else decoded

    return _ENCODED_WORD.sub(replace, text)


def _clip(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars]


def _single_line(text: str) -> str:
    return _WHITESPACE_RUN.sub(" ", text).strip()


_EMPTY_GROUP = re.compile(r"^\s*[^:<>@,]*:\s*;?\s*$")


def _address_list(message: Message, name: str, errors: list[str]) -> list[str]:
    """Every address of all `name` headers as "Name <addr>" (or "addr")."""
    values = [_header_to_text(v, errors, name) for v in _raw_values(message, name)]
    values = [v for v in values if v.strip()]
    if not values:
        return []
    rendered: list[str] = []
    try:
        pairs = email.utils.getaddresses(values)
    except Exception as exc:  # the address parser has raised on pathological input before
        errors.append(f"{name}: unparseable address list ({type(exc).__name__})")
        pairs = []
    for display, address in pairs:
        display = _single_line(decode_header_text(display, errors, name))
        address = _single_line(address)
        if address and display and display != address:
            rendered.append(f"{display} <{address}>")
        elif address or display:
            rendered.append(address or display)
    if not rendered and all(_EMPTY_GROUP.match(v) for v in values):
        return []  # "undisclosed-recipients:;" is a valid, empty group
    if not rendered:
        # Nothing the parser understood: keep the raw text so no recipient silently disappears.
        errors.append(f"{name}: no parseable address")
        rendered = [_single_line(decode_header_text(v, errors, name)) for v in values]
    total = 0
    kept: list[str] = []
    for item in rendered[: limits.MAX_ADDRESSES]:
        total += len(item)
        if total > limits.MAX_HEADER_CHARS:
            break
        kept.append(item)
    if len(kept) < len(rendered):
        errors.append(f"{name}: address list cut to {len(kept)} of {len(rendered)}")
    return kept


def _sender(message: Message, errors: list[str]) -> str:
    addresses = _address_list(message, "From", errors)
    if not addresses:
        if _raw_value(message, "From") is None:
            errors.append("From: missing")
        return ""
    return _clip(addresses[0], limits.MAX_HEADER_CHARS)


def _date(message: Message, internal_date: int | None, errors: list[str]) -> datetime | None:
    raw = _raw_value(message, "Date")
    parsed: datetime | None = None
    if raw is None:
        errors.append("Date: missing")
    else:
        text = _single_line(_header_to_text(raw, errors, "Date"))
        try:
            parsed = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            parsed = None
        if parsed is not None and 100 <= parsed.year < 200:
            # Y2K-era mailers wrote 2002 as "0102" (years since 1900).
            parsed = parsed.replace(year=parsed.year + 1900)
            errors.append(f"Date: year {text[:60]!r} read as {parsed.year}")
        if parsed is not None:
            if parsed.tzinfo is None:  # "-0000": local time unknown; RFC 5322 says treat as UTC
                parsed = parsed.replace(tzinfo=UTC)
            if not 1970 <= parsed.year <= 2200:
                parsed = None
        if parsed is None:
            errors.append(f"Date: unparseable {text[:60]!r}")
    if parsed is None and internal_date is not None:
        try:
            parsed = datetime.fromtimestamp(internal_date / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            parsed = None
    return parsed


# ------------------------------------------------------------------------------------------ HTML
