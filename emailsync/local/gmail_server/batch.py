"""The multipart/mixed batch codec (Google's batch endpoint: at most 100 parts)."""

from __future__ import annotations

import re
from http import HTTPStatus

from emailsync.local.gmail_server.responses import JSON_CONTENT_TYPE, ApiResponse

MAX_BATCH_PARTS = 100
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    """Body parts of a multipart message (headers + content), delimiter line endings stripped."""
    delimiter = b"--" + boundary
    segments = body.split(delimiter)
    if len(segments) < 2:
        raise ValueError("Batch body does not contain its boundary")
    parts: list[bytes] = []
    for segment in segments[1:]:
        if segment.startswith(b"--"):  # close delimiter
            break
        # the CRLF before a delimiter belongs to the delimiter (RFC 2046)
        if segment.endswith(b"\r\n"):
            segment = segment[:-2]
        elif segment.endswith(b"\n"):
            segment = segment[:-1]
        parts.append(segment.lstrip(b" \t").removeprefix(b"\r\n").removeprefix(b"\n"))
    return parts


def _split_head(data: bytes) -> tuple[list[str], bytes]:
    """Header lines and the rest, for CRLF or bare-LF messages."""
    crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if crlf != -1 and (lf == -1 or crlf < lf):
        head, rest = data[:crlf], data[crlf + 4 :]
    elif lf != -1:
        head, rest = data[:lf], data[lf + 2 :]
    else:
        head, rest = data, b""
    return head.decode("latin-1").replace("\r\n", "\n").split("\n"), rest


def _header_map(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def _parse_batch_part(part: bytes) -> tuple[str | None, tuple[str, str, dict[str, str], bytes] | None]:
    """(Content-ID without angle brackets, (method, target, headers, body) of the embedded request)."""
    part_lines, embedded = _split_head(part)
    part_headers = _header_map(part_lines)
    content_id = part_headers.get("content-id", "").strip()
    if content_id.startswith("<") and content_id.endswith(">"):
        content_id = content_id[1:-1]
    request_lines, request_body = _split_head(embedded.lstrip(b"\r\n"))
    if not request_lines or not request_lines[0].strip():
        return content_id or None, None
    request_line = request_lines[0].split()
    if len(request_line) < 2:
        return content_id or None, None
    request_headers = _header_map(request_lines[1:])
    if (length := request_headers.get("content-length", "")).isdigit():
        request_body = request_body[: int(length)]
    return content_id or None, (request_line[0].upper(), request_line[1], request_headers, request_body)


def _batch_part_bytes(boundary: str, response_id: str, response: ApiResponse) -> bytes:
    reason = HTTPStatus(response.status).phrase
    lines = [
        f"--{boundary}",
        "Content-Type: application/http",
        f"Content-ID: <{response_id}>",
        "",
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {JSON_CONTENT_TYPE}",
        "Vary: Origin, X-Origin, Referer",
    ]
    lines.extend(
        f"{name}: {value}" for name, value in response.headers.items() if name.lower() != "content-type"
    )
    lines.extend([f"Content-Length: {len(response.body)}", "", ""])
    return "\r\n".join(lines).encode("latin-1") + response.body + b"\r\n"
