"""tus 1.0.0 header grammar: parsing and formatting only, no I/O.

Every parser answers a clear 400 (or 412 / 415) for input the protocol does not allow, so the
upload service only ever sees validated values:

    Upload-Offset / Upload-Length   1*DIGIT (no sign, no spaces), at most 2^63-1
    Upload-Metadata                 key SP base64(value) *( "," key [SP base64(value)] )
    Upload-Checksum                 algorithm SP base64(digest)   (sha1, sha256, md5)
    Upload-Concat                   "partial" / "final;" URL *( SP URL )   (URL: absolute or a
                                    path, ending in /files/<upload id>; at most MAX_CONCAT_PARTS)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from datetime import datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlsplit

from app.errors import BadRequest, PreconditionFailed
from app.models import is_uuid
from app.schemas import BIGINT_MAX

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,creation-defer-length,termination,checksum,expiration,concatenation"
CHECKSUM_ALGORITHMS = ("sha1", "sha256", "md5")
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
MAX_METADATA_HEADER = 8192
MAX_METADATA_PAIRS = 64
MAX_CONCAT_PARTS = 64

_DIGITS = re.compile(r"[0-9]{1,19}")
_KEY = re.compile(r"[!-+\--~]+")  # visible ASCII without ","; spaces are the separator
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}")


def tus_headers() -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION}


def check_version(value: str | None) -> None:
    """412 (with Tus-Version) unless the client speaks tus 1.0.0; nothing is changed before this."""
    if value != TUS_VERSION:
        got = "no Tus-Resumable header" if value is None else f"Tus-Resumable {value!r}"
        raise PreconditionFailed(
            f"unsupported tus version: {got}; this server speaks {TUS_VERSION}",
            headers={"Tus-Version": TUS_VERSION},
        )


def parse_uint(name: str, value: str | None) -> int | None:
    """A non-negative integer header (None when absent); anything else is a 400."""
    if value is None:
        return None
    if not _DIGITS.fullmatch(value.strip()):
        raise BadRequest(f"{name} must be a non-negative integer, got {value[:40]!r}")
    number = int(value.strip())
    if number > BIGINT_MAX:
        raise BadRequest(f"{name} must be at most {BIGINT_MAX}, got {number}")
    return number


def parse_upload_length(length: str | None, defer_length: str | None) -> int | None:
    """Upload-Length, or None for ``Upload-Defer-Length: 1``; exactly one of them must be sent."""
    if defer_length is not None and defer_length.strip() != "1":
        raise BadRequest("Upload-Defer-Length must be 1")
    if length is None and defer_length is None:
        raise BadRequest("send Upload-Length, or Upload-Defer-Length: 1 when the size is not known yet")
    if length is not None and defer_length is not None:
        raise BadRequest("send either Upload-Length or Upload-Defer-Length, not both")
    return parse_uint("Upload-Length", length)


def _b64decode(text: str) -> bytes:
    if len(text) % 4 or not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", text):
        raise ValueError("not base64")
    return base64.b64decode(text, validate=True)


def parse_metadata(header: str | None) -> dict[str, str | None]:
    """Upload-Metadata → {key: text or None}. Values must be UTF-8 text without NUL/control bytes."""
    if header is None or not header.strip():
        return {}
    if len(header) > MAX_METADATA_HEADER:
        raise BadRequest(f"Upload-Metadata is longer than {MAX_METADATA_HEADER} characters")
    result: dict[str, str | None] = {}
    pairs = header.split(",")
    if len(pairs) > MAX_METADATA_PAIRS:
        raise BadRequest(f"Upload-Metadata has more than {MAX_METADATA_PAIRS} pairs")
    for pair in pairs:
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not _KEY.fullmatch(parts[0]):
            raise BadRequest(f"Upload-Metadata pair {pair.strip()[:40]!r} is not `key base64value`")
        key = parts[0]
        if key in result:
            raise BadRequest(f"Upload-Metadata key {key!r} appears twice")
        if len(parts) == 1:
            result[key] = None
            continue
        try:
            raw = _b64decode(parts[1])
        except (ValueError, binascii.Error):
            raise BadRequest(f"Upload-Metadata value of {key!r} is not valid base64") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"Upload-Metadata value of {key!r} must be UTF-8 text") from None
        if any(unicodedata.category(ch) == "Cc" and ch not in "\t" for ch in text):
            raise BadRequest(f"Upload-Metadata value of {key!r} contains NUL or control characters")
        result[key] = text
    return result


def format_metadata(metadata: dict[str, Any]) -> str:
    parts = []
    for key, value in metadata.items():
        parts.append(key if value is None else f"{key} {base64.b64encode(str(value).encode()).decode()}")
    return ",".join(parts)


def safe_filename(metadata: dict[str, str | None]) -> str | None:
    """The client's file name reduced to a display name: last path part, no control characters.

    It is only ever shown (listing, Content-Disposition); storage paths use the generated id.
    """
    raw = metadata.get("filename") or metadata.get("name")
    if not raw:
        return None
    name = re.split(r"[/\\]", raw)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    if name in ("", ".", ".."):
        return None
    return name[:255]


def safe_content_type(metadata: dict[str, str | None]) -> str | None:
    raw = metadata.get("filetype") or metadata.get("content_type") or metadata.get("type")
    return raw.lower() if raw and _MEDIA_TYPE.fullmatch(raw) else None


def parse_checksum(header: str | None) -> tuple[str, bytes] | None:
    """Upload-Checksum → (algorithm, digest); unsupported algorithm or bad digest → 400."""
    if header is None:
        return None
    parts = header.strip().split(" ")
    if len(parts) != 2:
        raise BadRequest("Upload-Checksum must be `algorithm base64digest`")
    algorithm, encoded = parts[0].lower(), parts[1]
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise BadRequest(
            f"unsupported checksum algorithm {parts[0][:20]!r}; use one of {', '.join(CHECKSUM_ALGORITHMS)}"
        )
    try:
        digest = _b64decode(encoded)
    except (ValueError, binascii.Error):
        raise BadRequest("Upload-Checksum digest is not valid base64") from None
    if len(digest) != hashlib.new(algorithm).digest_size:
        raise BadRequest(f"Upload-Checksum digest has the wrong length for {algorithm}")
    return algorithm, digest


def parse_concat(header: str | None) -> list[str] | None:
    """Upload-Concat → None (absent), [] (``partial``) or the final's partial ids, in order."""
    if header is None:
        return None
    value = header.strip()
    if value == "partial":
        return []
    kind, _, urls = value.partition(";")
    if kind.strip() != "final":
        raise BadRequest("Upload-Concat must be `partial` or `final;<url> <url> ...`")
    parts = urls.split()
    if not parts:
        raise BadRequest("Upload-Concat: final; names no partial uploads")
    if len(parts) > MAX_CONCAT_PARTS:
        raise BadRequest(f"Upload-Concat names {len(parts)} partial uploads; at most {MAX_CONCAT_PARTS} are allowed")
    ids = [_upload_id(url) for url in parts]
    if len(set(ids)) != len(ids):
        twice = next(i for i in ids if ids.count(i) > 1)
        raise BadRequest(f"Upload-Concat names partial upload {twice} more than once")
    return ids


def _upload_id(url: str) -> str:
    """The upload id an absolute or path URL names (…/files/<id>); the host is not checked:
    a proxy may have rewritten it, and the id alone decides (owner-scoped) what is read."""
    bad = BadRequest(f"Upload-Concat: {url[:80]!r} is not the URL of an upload (…/files/<id>)")
    try:
        split = urlsplit(url)
    except ValueError:
        raise bad from None
    if split.scheme not in ("", "http", "https") or split.query or split.fragment:
        raise bad
    segments = split.path.split("/")
    if len(segments) < 3 or segments[-2] != "files" or not is_uuid(segments[-1]) or not split.path.startswith("/"):
        raise bad
    return segments[-1]


def format_concat(parts: list[str] | None, base_url: str) -> str:
    """Upload-Concat as HEAD reports it: ``partial``, or ``final;`` and the partials' URLs."""
    if parts is None:
        return "partial"
    return "final;" + " ".join(f"{base_url}/files/{part}" for part in parts)


def is_offset_stream(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == OFFSET_CONTENT_TYPE


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)
