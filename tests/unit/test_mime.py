"""What a user sees of each kind of broken or unusual email: a readable record, never an exception."""

from __future__ import annotations

import mailbox
import os
import random
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import compat32
from pathlib import Path

import pytest

from emailsync.gmail.mime import ParsedEmail, parse_message
from emailsync.gmail.settings import MAX_BODY_BYTES
from emailsync.models import EmailRecord

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_MBOX = REPO_ROOT / "samples" / "sample.mbox"


def parse(raw: bytes, **kwargs: object) -> ParsedEmail:
    return parse_message(raw, message_id="m1", **kwargs)  # type: ignore[arg-type]


def test_plain_message_becomes_a_clean_record_that_fits_email_record() -> None:
    raw = (
        b"From: Alice Example <alice@example.com>\r\n"
        b'To: bob@example.com, "Carol, C." <carol@example.com>\r\n'
        b"Cc: Dan <dan@example.com>\r\n"
        b"Subject: Lunch\r\n"
        b"Date: Tue, 05 Mar 2024 10:15:00 +0100\r\n"
        b"\r\n"
        b"See you at noon.\r\n"
    )
    parsed = parse(raw, thread_id="t1", label_ids=("INBOX",), internal_date=1, snippet="See you")

    assert parsed.subject == "Lunch"
    assert parsed.sender == "Alice Example <alice@example.com>"
    assert parsed.to == ["bob@example.com", "Carol, C. <carol@example.com>"]
    assert parsed.cc == ["Dan <dan@example.com>"]
    assert parsed.date == datetime(2024, 3, 5, 9, 15, tzinfo=UTC)
    assert parsed.body_text == "See you at noon."
    assert parsed.parse_errors == [] and parsed.raw_headers is None
    record = EmailRecord(**parsed.model_dump(), app_user_id="u1", family_id=None)
    assert record.to_firestore()["from"] == "Alice Example <alice@example.com>"
    assert record.label_ids == ["INBOX"] and record.thread_id == "t1"


@pytest.mark.parametrize("charset", ["unknown-8bit", "x-user-defined", "iso-8859-l", "bogus-charset-7"])
def test_body_with_bogus_charset_is_still_readable(charset: str) -> None:
    raw = f'From: a@example.com\nSubject: caf\xe9\nContent-Type: text/plain; charset="{charset}"\n\n'.encode(
        "latin-1"
    ) + "Un caf\xe9 cr\xe8me, s'il vous pla\xeet.\n".encode("latin-1")
    parsed = parse(raw)

    assert parsed.body_text == "Un café crème, s'il vous plaît."
    assert parsed.subject == "café"
    if charset == "bogus-charset-7":
        assert any("unknown charset" in e for e in parsed.parse_errors)
        assert parsed.raw_headers is not None and "bogus-charset-7" in parsed.raw_headers


def test_bytes_invalid_in_declared_charset_are_replaced_and_noted() -> None:
    raw = b"From: a@example.com\nContent-Type: text/plain; charset=utf-8\n\nok \xff\xfe then more\n"
    parsed = parse(raw)

    assert parsed.body_text.startswith("ok ") and parsed.body_text.endswith("then more")
    assert any("invalid in charset utf-8" in e for e in parsed.parse_errors)


def test_rfc2047_subjects_and_names_decode_across_charsets_and_broken_words() -> None:
    raw = (
        b"From: =?ISO-8859-1?Q?Andr=E9?= Pirard <andre@example.be>\n"
        b"To: =?utf-8?B?SsO2cmc=?= <joerg@example.de>, =?koi8-r?B?8NLJ18XU?= <ivan@example.ru>\n"
        b"Subject: =?utf-8?q?Caf=C3=A9?= =?iso-8859-2?q?_=B1?= and =?utf-8?b?broken!!?= plain\n"
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\n\nbody\n"
    )
    parsed = parse(raw)

    assert parsed.sender == "André Pirard <andre@example.be>"
    assert parsed.to == ["Jörg <joerg@example.de>", "Привет <ivan@example.ru>"]
    assert parsed.subject.startswith("Café ą and ")
    assert parsed.subject.endswith(" plain")


def test_raw_8bit_bytes_in_headers_are_decoded_and_noted() -> None:
    raw = "From: J\xfcrgen M\xfcller <j@example.de>\nSubject: Gr\xfc\xdfe aus M\xfcnchen\n\nHallo\n".encode(
        "latin-1"
    )
    parsed = parse(raw)

    assert parsed.subject == "Grüße aus München"
    assert parsed.sender == "Jürgen Müller <j@example.de>"
    assert any("raw 8-bit bytes" in e for e in parsed.parse_errors)
    assert parsed.raw_headers is not None


def test_utf8_bytes_in_headers_stay_utf8() -> None:
    parsed = parse("Subject: 日本語のメール\nFrom: x@example.jp\n\nbody\n".encode())
    assert parsed.subject == "日本語のメール"


def test_html_only_message_becomes_readable_text() -> None:
    raw = (
        b"From: shop@example.com\nSubject: Sale\nContent-Type: text/html; charset=utf-8\n\n"
        b"<html><head><title>ignored</title><style>p {color: red}</style></head><body>"
        b"<script>alert('x')</script><h1>Big&nbsp;sale</h1><p>Prices &amp; deals<br>today only</p>"
        b"<ul><li>Shoes</li><li>Hats</li></ul></body></html>\n"
    )
    parsed = parse(raw)

    assert parsed.body_text == "Big sale\n\nPrices & deals\ntoday only\n\n- Shoes\n- Hats"
    assert "alert" not in parsed.body_text and "color" not in parsed.body_text


def test_alternative_prefers_plain_text_and_nested_parts_are_walked() -> None:
    raw = (
        b"From: a@example.com\nSubject: alt\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="outer"\n\n'
        b'--outer\nContent-Type: multipart/alternative; boundary="inner"\n\n'
        b"--inner\nContent-Type: text/plain; charset=us-ascii\n\nThe plain version.\n"
        b"--inner\nContent-Type: text/html; charset=us-ascii\n\n<p>The <b>HTML</b> version.</p>\n"
        b"--inner--\n"
        b'--outer\nContent-Type: application/pdf; name="report.pdf"\n'
        b'Content-Disposition: attachment; filename="report.pdf"\nContent-Transfer-Encoding: base64\n\n'
        b"JVBERi0xLjQKJcfs\n"
        b"--outer\nContent-Type: image/png\n"
        b'Content-Disposition: attachment; filename="=?utf-8?q?f=C3=B6to.png?="\n'
        b"Content-Transfer-Encoding: base64\n\niVBORw0K\n"
        b"--outer--\n"
    )
    parsed = parse(raw)

    assert parsed.body_text == "The plain version."
    assert parsed.attachments == [
        {"filename": "report.pdf", "mimeType": "application/pdf", "size": 12},
        {"filename": "föto.png", "mimeType": "image/png", "size": 6},
    ]


def test_missing_date_falls_back_to_gmail_internal_date_and_is_noted() -> None:
    parsed = parse(b"From: a@example.com\nSubject: x\n\nbody\n", internal_date=1_700_000_000_000)

    assert parsed.date == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert "Date: missing" in parsed.parse_errors
    assert parsed.raw_headers is not None and "Subject: x" in parsed.raw_headers


def test_unparseable_date_without_internal_date_is_none_and_noted() -> None:
    parsed = parse(b"From: a@example.com\nDate: the day after tomorrow\n\nbody\n")

    assert parsed.date is None
    assert any(e.startswith("Date: unparseable") for e in parsed.parse_errors)


def test_y2k_era_year_is_read_as_the_intended_year() -> None:
    parsed = parse(b"From: a@example.com\nDate: Thu, 22 Aug 0102 12:00:00 +0000\n\nbody\n")
    assert parsed.date == datetime(2002, 8, 22, 12, tzinfo=UTC)


def test_huge_body_is_truncated_on_a_character_boundary_and_flagged() -> None:
    body = ("é" * (MAX_BODY_BYTES // 2 + 10)).encode()  # 2 bytes per char, over the cap
    raw = b"From: a@example.com\nContent-Type: text/plain; charset=utf-8\n\n" + body
    parsed = parse(raw)

    assert parsed.truncated is True
    assert len(parsed.body_text.encode()) <= MAX_BODY_BYTES
    assert set(parsed.body_text) == {"é"}
    assert any("truncated" in e for e in parsed.parse_errors)


def test_broken_multipart_without_boundary_keeps_its_text() -> None:
    raw = b"From: a@example.com\nContent-Type: multipart/mixed\n\nJust some text, no parts at all.\n"
    parsed = parse(raw)

    assert "Just some text" in parsed.body_text
    assert parsed.parse_errors and parsed.raw_headers is not None


def test_undisclosed_recipients_group_is_an_empty_list_not_an_error() -> None:
    parsed = parse(b"From: a@example.com\nTo: undisclosed-recipients:;\nDate: 1 Jan 2024 00:00 +0000\n\nx\n")
    assert parsed.to == [] and parsed.parse_errors == []


@pytest.mark.parametrize("seed", range(5))
def test_garbage_bytes_still_produce_a_record_with_headers_and_errors(seed: int) -> None:
    garbage = random.Random(seed).randbytes(4000)
    parsed = parse(garbage, internal_date=1_700_000_000_000)

    assert parsed.message_id == "m1"
    assert parsed.parse_errors
    assert parsed.raw_headers is not None
    EmailRecord(**parsed.model_dump(), app_user_id="u1")  # still storable
    assert "\udcff" not in parsed.body_text


def test_empty_message_is_kept_with_an_error() -> None:
    parsed = parse(b"")
    assert "empty message" in parsed.parse_errors and parsed.raw_headers == ""


def test_every_sample_message_parses_without_loss() -> None:
    if not SAMPLE_MBOX.exists():
        pytest.skip("samples/sample.mbox is absent")
    box = mailbox.mbox(os.fspath(SAMPLE_MBOX), create=False)
    raws = {str(key): box.get_bytes(key) for key in box.iterkeys()}
    parsed = [parse_message(raw, message_id=key) for key, raw in raws.items()]

    assert len(parsed) == 300
    assert {p.message_id for p in parsed} == set(raws)
    for item in parsed:
        has_subject = BytesParser(policy=compat32).parsebytes(raws[item.message_id], headersonly=True)[
            "Subject"
        ]
        assert bool(item.subject) == bool(has_subject and str(has_subject).strip()), item.message_id
        item.model_dump_json()  # every string is valid Unicode (Firestore refuses lone surrogates)
