"""Robust MIME parsing: raw RFC 5322 bytes → `ParsedEmail`, for any message found in the wild.

`parse_message` never raises and never drops a message. Real mail carries bogus charsets, broken
encoded-words, raw 8-bit headers, missing dates and garbage structure; each defect becomes a short
note in `parse_errors` (and the header block is kept in `raw_headers`) instead of an exception.

We parse with the `compat32` policy because `email.policy.default` raises on unknown charsets while
reading a header or body; decoding is done here, with explicit fallbacks.
"""

from __future__ import annotations

import binascii
import codecs
import email.utils
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email import policy
from email.message import Message
from email.parser import BytesParser
from html import unescape
from html.parser import HTMLParser
from typing import Any

from emailsync.gmail import settings as limits
from emailsync.models import EmailContent

logger = logging.getLogger(__name__)


class ParsedEmail(EmailContent):
    """The content fields of `EmailRecord`: `EmailRecord(**parsed.model_dump(), app_user_id=..., ...)`."""


# ------------------------------------------------------------------------------------------ charsets

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

_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "center",
        "dd",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "thead",
        "tfoot",
        "tr",
        "ul",
    ]
)
_LINE_ITEM_TAGS = frozenset({"li", "tr", "dt", "dd"})  # one per line, no blank line between
_SKIPPED_TAGS = frozenset({"script", "style", "head", "title", "template"})
_VOID_TAGS = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
    ]
)


class _HtmlText(HTMLParser):
    """Readable text from HTML: no scripts/styles, block elements on their own lines, entities resolved."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth += 1
            return
        if tag in _BLOCK_TAGS:
            self.chunks.append("\n")
        if tag == "li":
            self.chunks.append("- ")
        elif tag in ("td", "th"):
            self.chunks.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if tag in _BLOCK_TAGS and tag not in _VOID_TAGS and tag not in _LINE_ITEM_TAGS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.chunks.append(data)


_TAG = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"[ \t\f\v\xa0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML body (stdlib only)."""
    try:
        parser = _HtmlText()
        parser.feed(html)
        parser.close()
        text = "".join(parser.chunks)
    except Exception:  # html.parser is lenient, but never let a body break the sync
        text = unescape(_TAG.sub(" ", html))
    lines = (_SPACES.sub(" ", line).strip() for line in text.replace("\r", "").split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


# ------------------------------------------------------------------------------------------ bodies


def _disposition(part: Message) -> str:
    return str(part.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()


def _is_attachment(part: Message) -> bool:
    """Inline text/plain and text/html are body; everything else is listed as an attachment."""
    return _disposition(part) == "attachment" or part.get_content_type() not in ("text/plain", "text/html")


def _attachment_meta(part: Message, errors: list[str]) -> dict[str, Any]:
    try:
        filename = part.get_filename()
    except Exception:
        filename = None
    if filename:
        filename = _clip(_single_line(decode_header_text(filename, errors, "attachment filename")), 512)
    size = 0
    try:
        if part.is_multipart():  # message/rfc822 attachments carry a parsed message
            size = sum(len(p.as_bytes()) for p in part.get_payload())
        else:
            payload = part.get_payload(decode=True)
            size = len(payload) if isinstance(payload, bytes | str) else 0
    except Exception:
        errors.append("attachment: undecodable payload")
    return {"filename": filename or None, "mimeType": part.get_content_type(), "size": size}


def _leaf_text(part: Message, errors: list[str]) -> str:
    payload = part.get_payload(decode=True)
    if payload is None:
        payload = b""
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "surrogateescape")
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
        errors.append("body: unreadable charset parameter")
    return decode_bytes(payload, charset, errors, "body")


class _Walk:
    """Collects text segments (kind, text) and attachment metadata from a message tree."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        self.attachments: list[dict[str, Any]] = []
        self.attachments_not_listed = 0
        self.defects: list[str] = []

    def note_defects(self, part: Message) -> None:
        for defect in getattr(part, "defects", None) or []:
            self.defects.append(f"MIME defect: {type(defect).__name__}")

    def segments(self, part: Message, depth: int = 0) -> list[tuple[str, str]]:
        self.note_defects(part)
        if depth > limits.MAX_MIME_DEPTH:
            self.errors.append("MIME nesting too deep, inner parts skipped")
            return []
        if part.is_multipart():
            children = [c for c in part.get_payload() if isinstance(c, Message)]
            if part.get_content_maintype() == "message" and _disposition(part) == "attachment":
                self._add_attachment(part)
                return []
            if part.get_content_type() == "multipart/alternative":
                return self._alternative(children, depth)
            found: list[tuple[str, str]] = []
            for child in children:
                found.extend(self.segments(child, depth + 1))
            return found
        if part.get_content_maintype() == "multipart":
            # Boundary missing or wrong: the parts are unreadable, but their text is still the body.
            self.errors.append("body: multipart without readable parts, kept as plain text")
            text = _leaf_text(part, self.errors)
            return [("plain", text)] if text.strip() else []
        if _is_attachment(part):
            self._add_attachment(part)
            return []
        kind = "html" if part.get_content_type() == "text/html" else "plain"
        text = _leaf_text(part, self.errors)
        if kind == "html":
            text = html_to_text(text)
        return [(kind, text)] if text.strip() else []

    def _alternative(self, children: list[Message], depth: int) -> list[tuple[str, str]]:
        options = [self.segments(child, depth + 1) for child in children]
        for option in options:  # the sender's own plain text is the most faithful
            if option and all(kind == "plain" for kind, _ in option):
                return option
        for option in reversed(options):  # RFC 2046: the last alternative is the richest
            if option:
                return option
        return []

    def _add_attachment(self, part: Message) -> None:
        if len(self.attachments) >= limits.MAX_ATTACHMENTS:
            self.attachments_not_listed += 1
            return
        self.attachments.append(_attachment_meta(part, self.errors))


def _cap_utf8(text: str, max_bytes: int) -> tuple[str, bool]:
    encoded = text.encode("utf-8", "replace")
    if len(encoded) <= max_bytes:
        return text, False
    return encoded[:max_bytes].decode("utf-8", "ignore"), True  # "ignore" drops a cut multibyte char


def _valid_unicode(text: str) -> str:
    """Firestore rejects lone surrogates; replace them (they come from undecodable raw bytes)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _header_block(raw: bytes) -> str:
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    block = raw[: min(ends)] if ends else raw
    text, _ = _cap_utf8(
        block[: limits.MAX_RAW_HEADERS_BYTES * 2].decode("utf-8", "replace"), limits.MAX_RAW_HEADERS_BYTES
    )
    return text


def _dedupe(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(_valid_unicode(item), None)
    result = list(seen)
    if len(result) > limits.MAX_PARSE_ERRORS:
        result = [
            *result[: limits.MAX_PARSE_ERRORS - 1],
            f"... {len(result) - limits.MAX_PARSE_ERRORS + 1} more",
        ]
    return result


# ------------------------------------------------------------------------------------------ API


def parse_message(
    raw: bytes,
    *,
    message_id: str,
    thread_id: str | None = None,
    label_ids: Iterable[str] = (),
    internal_date: int | None = None,
    snippet: str = "",
) -> ParsedEmail:
    """Parse one raw RFC 5322 message. Never raises; defects are listed in `parse_errors`."""
    common: dict[str, Any] = {
        "message_id": message_id,
        "thread_id": thread_id,
        "label_ids": [str(label) for label in label_ids],
        "internal_date": internal_date,
        "snippet": _valid_unicode(snippet or ""),
    }
    try:
        return _parse(raw, common)
    except Exception as exc:  # last resort: a record with what we can salvage, never a lost message
        logger.warning("message %s could not be parsed: %s", message_id, type(exc).__name__, exc_info=True)
        return _salvage(raw, common, exc)


def _parse(raw: bytes, common: dict[str, Any]) -> ParsedEmail:
    errors: list[str] = []
    if not raw:
        errors.append("empty message")
    message = BytesParser(policy=policy.compat32).parsebytes(raw)
    if not message.keys():
        errors.append("no headers found")

    subject = _single_line(decode_header_text(_raw_value(message, "Subject"), errors, "Subject"))
    sender = _sender(message, errors)
    to = _address_list(message, "To", errors)
    cc = _address_list(message, "Cc", errors)
    date = _date(message, common["internal_date"], errors)

    walk = _Walk(errors)
    segments = walk.segments(message)
    body = "\n\n".join(text.strip() for _, text in segments)
    body = _valid_unicode(body)
    body, truncated = _cap_utf8(body, limits.MAX_BODY_BYTES)
    if truncated:
        errors.append(f"body: truncated to {limits.MAX_BODY_BYTES} bytes")
    if walk.attachments_not_listed:
        errors.append(f"attachments: {walk.attachments_not_listed} more not listed")

    all_errors = _dedupe([*walk.defects, *errors])
    return ParsedEmail(
        **common,
        subject=_valid_unicode(_clip(subject, limits.MAX_HEADER_CHARS)),
        sender=_valid_unicode(sender),
        to=[_valid_unicode(a) for a in to],
        cc=[_valid_unicode(a) for a in cc],
        date=date,
        body_text=body,
        truncated=truncated,
        parse_errors=all_errors,
        raw_headers=_header_block(raw) if all_errors else None,
        attachments=walk.attachments,
    )


_SALVAGE_HEADER = re.compile(rb"^(subject|from):[ \t]*(.*)$", re.IGNORECASE | re.MULTILINE)


def _salvage(raw: Any, common: dict[str, Any], exc: BaseException) -> ParsedEmail:
    try:
        data = raw if isinstance(raw, bytes) else bytes(raw or b"")
    except Exception:
        data = b""
    found: dict[str, str] = {}
    try:
        block = data[: limits.MAX_RAW_HEADERS_BYTES]
        for match in _SALVAGE_HEADER.finditer(block):
            key = match.group(1).lower().decode()
            found.setdefault(key, decode_header_text(match.group(2).decode("utf-8", "replace"), [], key))
    except Exception:
        pass
    body = ""
    try:
        text = data.decode("utf-8", "replace")
        split = re.split(r"\r?\n\r?\n", text, maxsplit=1)
        body = split[1] if len(split) == 2 else ""
    except Exception:
        body = ""
    body, truncated = _cap_utf8(_valid_unicode(body), limits.MAX_BODY_BYTES)
    return ParsedEmail(
        **common,
        subject=_valid_unicode(_clip(_single_line(found.get("subject", "")), limits.MAX_HEADER_CHARS)),
        sender=_valid_unicode(_clip(_single_line(found.get("from", "")), limits.MAX_HEADER_CHARS)),
        date=_date_from_internal(common["internal_date"]),
        body_text=body,
        truncated=truncated,
        parse_errors=[_valid_unicode(f"parser failure: {type(exc).__name__}: {str(exc)[:200]}")],
        raw_headers=_header_block(data),
    )


def _date_from_internal(internal_date: int | None) -> datetime | None:
    if internal_date is None:
        return None
    try:
        return datetime.fromtimestamp(internal_date / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
