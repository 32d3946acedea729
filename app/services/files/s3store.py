"""Bytes in S3-compatible object storage (aiobotocore): tus uploads as multipart uploads.

    create          CreateMultipartUpload → File.multipart = {upload_id, parts: [], tail: 0}
    PATCH body ──▶  [old tail object] + body gathers in memory
                ──▶ every part size (5 MiB, more past 50 GB: S3 takes 10 000 parts at most):
                    UploadPart (one in flight while the next gathers);
                    acknowledged → parts += {number, etag, size}, state.durable moves
    body ends   ──▶ the upload's length reached: the rest is the last part, CompleteMultipartUpload
                    otherwise: the rest (less than a part) is PUT as a new tail object
    offset == sum(part sizes) + tail, all of it in the row: any replica continues the upload

As with tusd's s3store, a tail object holds what does not fill a part (S3 refuses parts under
5 MiB but the last). Each tail gets a fresh key, so a PATCH whose checksum fails leaves the
previous tail intact; the superseded one is deleted once the row has moved on, and a PATCH that
lost its lock writes no tail (or deletes the one it wrote: nobody names it). A part that was
uploaded but never entered the row is harmless: its number is reused by the next PATCH, and
completion names only the listed parts. Termination and expiry abort the multipart upload and
delete the tail. Downloads are ranged GETs, read ahead one block (or, with
``TSM_S3_PRESIGNED_REDIRECTS``, a 307 to a presigned GET for one full or one-range request).

A tus final upload (concatenation) is one more multipart upload: every piece of a partial of
at least 5 MiB is copied inside S3 (UploadPartCopy, ranges of at most 5 GiB), and the pieces
under 5 MiB where partials meet are read and uploaded as one part (see ``plan_concat``).

Every request goes through ``S3Store._call``, which counts it for /metrics by operation
(``tsm_object_store_requests``, ``…_errors``, ``…_bytes``: bodies sent and received).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from app.config import Settings
from app.errors import NotFound, PayloadTooLarge
from app.metrics import BYTES_UPLOADED, OBJECT_STORE_BYTES, OBJECT_STORE_ERRORS, OBJECT_STORE_REQUESTS
from app.models import File
from app.services.files import writer
from app.services.files.results import Mark, ResultLost, ResultWriter
from app.services.files.store import ByteStore, Stat, read_ahead

PART_BYTES = 5 << 20  # S3's smallest part but the last
MAX_PARTS = 10_000  # S3's most parts in one upload: larger uploads need larger parts
COPY_MAX_BYTES = 5 << 30  # S3's largest part, a copied one too
COPIES_IN_FLIGHT = 4
PRESIGN_SECONDS = 300  # a redirect is followed at once: short, so a leaked URL soon stops working
MISSING = ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


def _split_url(url: str) -> tuple[str, str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def _missing(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    return str(error.get("Code")) in MISSING


def _counted(read: Callable[..., Awaitable[bytes]]) -> Callable[..., Awaitable[bytes]]:
    """A GET body's ``read``, its bytes (and a connection lost mid-body) counted for /metrics."""

    async def counted_read(*size: int) -> bytes:
        try:
            block = bytes(await read(*size))
        except Exception:
            OBJECT_STORE_ERRORS.labels("get_object").inc()
            raise
        OBJECT_STORE_BYTES.labels("get_object").inc(len(block))
        return block

    return counted_read


class S3Store:
    local = False
    name = "s3"

    def __init__(self, client: Any, bucket: str, prefix: str, max_upload_bytes: int) -> None:
        self.s3, self.bucket, self.prefix = client, bucket, prefix
        self.max_upload_bytes = max_upload_bytes

    def part_bytes(self, length: int | None) -> int:
        """PART_BYTES, or more when the upload (or, length unknown, the largest one) needs it."""
        return max(PART_BYTES, -(-(length or self.max_upload_bytes) // (MAX_PARTS - 1)))

    @property
    def where(self) -> str:
        return f"S3 bucket {self.bucket}"

    async def check(self) -> None:
        await self._call("head_bucket")

    async def _call(self, operation: str, **params: Any) -> Any:
        """One S3 request on the bucket, counted for /metrics (bytes sent, errors)."""
        OBJECT_STORE_REQUESTS.labels(operation).inc()
        body = params.get("Body")
        try:
            answer = await getattr(self.s3, operation)(Bucket=self.bucket, **params)
        except Exception:
            OBJECT_STORE_ERRORS.labels(operation).inc()
            raise
        if isinstance(body, bytes | bytearray):
            OBJECT_STORE_BYTES.labels(operation).inc(len(body))
        return answer

    def key(self, file_id: str) -> str:
        return f"{self.prefix}files/{file_id}"

    # -- uploads --------------------------------------------------------------------------

    async def create(self, file_id: str, *, empty: bool) -> dict[str, Any] | None:
        if empty:
            await self._call("put_object", Key=self.key(file_id), Body=b"")
            return None
        made = await self._call("create_multipart_upload", Key=self.key(file_id))
        return {"upload_id": made["UploadId"], "parts": [], "tail": 0, "tail_key": None}

    async def prepare(self, row: File) -> int | None:
        return None  # the row's part list is the truth: nothing past it was ever counted

    async def receive(
        self,
        row: File,
        state: writer.WriteState,
        chunks: AsyncIterator[bytes],
        *,
        limit: int,
        limit_message: str,
        expected: int | None,
        length: int | None,
    ) -> bool:
        if not row.multipart:  # complete already (one object): there is no room for another byte
            async for chunk in chunks:
                state.received += len(chunk)
                if state.received > limit:
                    raise PayloadTooLarge(limit_message)
            return True
        multipart = dict(row.multipart)
        state.multipart = multipart
        pipeline = _PartPipeline(self, row.id, state, multipart, self.part_bytes(length))
        if multipart["tail"]:
            tail = await self._get(multipart["tail_key"])
            if len(tail) != multipart["tail"]:  # never build on bytes the row does not describe
                raise RuntimeError(f"the tail of upload {row.id} holds {len(tail)} bytes, not {multipart['tail']}")
            pipeline.buffer += tail
        complete = True
        try:
            async for chunk in writer.accepted(state, chunks, limit=limit, limit_message=limit_message):
                for hasher in state.hashers:
                    hasher.update(chunk)
                await pipeline.add(chunk)
        except writer.BodyInterrupted:
            complete = False
        finally:
            # Whatever happened, what was received is kept: as parts, then as the tail (unless
            # the lock is gone: the row is another writer's now, and a tail would be nobody's).
            await pipeline.finish(final=length is not None and pipeline.end() >= length, keep_tail=not state.lock_lost)
        return complete

    async def discard(self, row: File, state: writer.WriteState) -> None:
        new_tail = (state.multipart or {}).get("tail_key")
        if new_tail and new_tail != (row.multipart or {}).get("tail_key"):
            await self._delete_key(new_tail)

    async def abandon(self, row: File, state: writer.WriteState) -> None:
        await self.discard(row, state)  # a fresh tail key is only ever this PATCH's

    async def settled(self, before: File, state: writer.WriteState) -> None:
        old_tail = (before.multipart or {}).get("tail_key")
        if old_tail and old_tail != (state.multipart or {}).get("tail_key"):
            with contextlib.suppress(Exception):
                await self._delete_key(old_tail)

    async def upload_part(self, file_id: str, upload_id: str, number: int, data: bytes) -> str:
        answer = await self._call(
            "upload_part", Key=self.key(file_id), UploadId=upload_id, PartNumber=number, Body=data
        )
        BYTES_UPLOADED.inc(len(data))
        return str(answer["ETag"])

    async def put_tail(self, file_id: str, data: bytes) -> str:
        key = f"{self.key(file_id)}.tail-{secrets.token_hex(8)}"
        await self._call("put_object", Key=key, Body=data)
        return key

    async def finish(self, file_id: str, multipart: dict[str, Any] | None) -> None:
        """Complete the multipart upload into one object (again after a crash: then it may be done)."""
        if not multipart:
            return
        parts = [{"PartNumber": p["number"], "ETag": p["etag"]} for p in multipart["parts"]]
        try:
            await self._call(
                "complete_multipart_upload",
                Key=self.key(file_id),
                UploadId=multipart["upload_id"],
                MultipartUpload={"Parts": parts},
            )
        except ClientError as exc:
            if not (_missing(exc) and await self.stat(file_id) is not None):
                raise
        if multipart.get("tail_key"):
            with contextlib.suppress(Exception):
                await self._delete_key(multipart["tail_key"])

    async def concatenate(self, file_id: str, multipart: dict[str, Any] | None, sources: list[tuple[str, int]]) -> None:
        key = self.key(file_id)
        upload_id = (multipart or {})["upload_id"]
        plan = plan_concat([size for _, size in sources], PART_BYTES)
        if not plan:  # S3 completes no upload without parts
            await self._call("put_object", Key=key, Body=b"")
            with contextlib.suppress(ClientError):
                await self._call("abort_multipart_upload", Key=key, UploadId=upload_id)
            return
        room = asyncio.Semaphore(COPIES_IN_FLIGHT)

        async def part(number: int, ranges: list[tuple[int, int, int]]) -> dict[str, Any]:
            async with room:
                return {"PartNumber": number, "ETag": await self._concat_part(key, upload_id, number, sources, ranges)}

        try:
            parts = await asyncio.gather(*(part(number, ranges) for number, ranges in enumerate(plan, 1)))
        except ClientError as exc:
            if _missing(exc):  # a partial's object vanished under its row
                raise NotFound("the bytes of a partial upload are missing") from None
            raise
        await self._call("complete_multipart_upload", Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})

    async def _concat_part(
        self, key: str, upload_id: str, number: int, sources: list[tuple[str, int]], ranges: list[tuple[int, int, int]]
    ) -> str:
        """One part of a final: copied inside S3 (one range), else read and uploaded (several)."""
        if len(ranges) == 1:
            index, first, end = ranges[0]
            answer = await self._call(
                "upload_part_copy",
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.bucket, "Key": self.key(sources[index][0])},
                CopySourceRange=f"bytes={first}-{end - 1}",
            )
            return str(answer["CopyPartResult"]["ETag"])
        data = bytearray()
        for index, first, end in ranges:
            answer = await self._call("get_object", Key=self.key(sources[index][0]), Range=f"bytes={first}-{end - 1}")
            async with answer["Body"] as body:
                data += await _counted(body.read)()
        answer = await self._call("upload_part", Key=key, UploadId=upload_id, PartNumber=number, Body=bytes(data))
        return str(answer["ETag"])

    # -- reading ----------------------------------------------------------------------------

    async def _get(self, key: str) -> bytes:
        answer = await self._call("get_object", Key=key)
        async with answer["Body"] as body:
            return await _counted(body.read)()

    async def stat(self, file_id: str) -> Stat | None:
        try:
            head = await self._call("head_object", Key=self.key(file_id))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        return Stat(int(head["ContentLength"]), int(head["LastModified"].timestamp()) * 1_000_000_000)

    async def presigned_url(self, file_id: str, *, filename: str, content_type: str) -> str | None:
        """A GET URL signed for PRESIGN_SECONDS that answers with the service's own name and type."""
        params = {
            "Bucket": self.bucket,
            "Key": self.key(file_id),
            "ResponseContentDisposition": filename,
            "ResponseContentType": content_type,
        }
        return str(await self.s3.generate_presigned_url("get_object", Params=params, ExpiresIn=PRESIGN_SECONDS))

    def local_path(self, file_id: str) -> Path | None:
        return None

    async def read_range(self, file_id: str, first: int, last: int) -> AsyncIterator[bytes]:
        answer = await self._call("get_object", Key=self.key(file_id), Range=f"bytes={first}-{last}")
        async with answer["Body"] as body:
            async for block in read_ahead(_counted(body.read), last - first + 1):
                yield block

    async def sha256(self, file_id: str) -> str:
        digest = hashlib.sha256()
        answer = await self._call("get_object", Key=self.key(file_id))
        async with answer["Body"] as body:
            read = _counted(body.read)
            while block := await read(1 << 20):
                digest.update(block)
        return digest.hexdigest()

    # -- removing ---------------------------------------------------------------------------

    async def delete(self, file_id: str, multipart: dict[str, Any] | None) -> None:
        if multipart and multipart.get("upload_id"):
            try:
                await self._call("abort_multipart_upload", Key=self.key(file_id), UploadId=multipart["upload_id"])
            except ClientError as exc:
                if not _missing(exc):
                    raise
            if multipart.get("tail_key"):
                await self._delete_key(multipart["tail_key"])
            for segment in multipart.get("segments", ()):  # a task's file, still being written
                await self._delete_key(segment["key"])
        await self._delete_key(self.key(file_id))

    async def purge(self, file_id: str) -> None:
        """Abort every multipart upload of the file's key, delete every object under its name."""
        key = self.key(file_id)
        for upload_id in await self._uploads_of(key):
            try:
                await self._call("abort_multipart_upload", Key=key, UploadId=upload_id)
            except ClientError as exc:
                if not _missing(exc):
                    raise
        for found in await self._keys_under(key):
            await self._delete_key(found)

    async def _uploads_of(self, key: str) -> list[str]:
        ids: list[str] = []
        markers: dict[str, str] = {}
        while True:
            page = await self._call("list_multipart_uploads", Prefix=key, **markers)
            ids += [u["UploadId"] for u in page.get("Uploads", []) if u["Key"] == key]
            if not page.get("IsTruncated"):
                return ids
            markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    async def _keys_under(self, key: str) -> list[str]:
        """The object itself and its pieces (``<key>.tail-…``): file ids all have one length."""
        keys: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = await self._call("list_objects_v2", Prefix=key, **token)
            keys += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            token = {"ContinuationToken": page["NextContinuationToken"]}

    # -- files tasks write ------------------------------------------------------------------

    async def open_result(self, file_id: str, mark: Mark | None) -> ResultWriter:
        if mark is None or not mark.get("multipart"):
            made = await self._call("create_multipart_upload", Key=self.key(file_id))
            return S3Result(self, file_id, made["UploadId"], [], [], bytearray())
        multipart = mark["multipart"]
        try:  # the upload must still be there (cancelled, or completed by a run that then died)
            await self._call("list_parts", Key=self.key(file_id), UploadId=multipart["upload_id"], MaxParts=1)
        except ClientError as exc:
            if _missing(exc):
                raise ResultLost(f"the multipart upload of file {file_id} is gone") from None
            raise
        tail = bytearray()
        for segment in multipart["segments"]:
            try:
                tail += await self._get(segment["key"])
            except ClientError as exc:
                if _missing(exc):
                    raise ResultLost(f"a tail segment of file {file_id} is gone") from None
                raise
        result = S3Result(self, file_id, multipart["upload_id"], multipart["parts"], multipart["segments"], tail)
        if result.offset != mark["offset"]:
            raise ResultLost(f"file {file_id} holds {result.offset} bytes, not the checkpoint's {mark['offset']}")
        return result

    async def _delete_key(self, key: str) -> None:
        try:
            await self._call("delete_object", Key=key)
        except ClientError as exc:
            if not _missing(exc):
                raise


def plan_concat(sizes: list[int], part_bytes: int) -> list[list[tuple[int, int, int]]]:
    """The parts of a final made of files of ``sizes``: each part a list of (file index, first,
    end) ranges. Every part but the last holds at least ``part_bytes``; a part of one range is
    copied inside S3, so a large partial costs no transfer, and only the pieces where partials
    meet (under ``part_bytes``) are gathered together with what follows them.

        sizes [12 MiB, 3 MiB, 9 MiB], 5 MiB ─▶ [a 0-12M] [b 0-3M + c 0-2M] [c 2-9M]
    """
    parts: list[list[tuple[int, int, int]]] = []
    pending: list[tuple[int, int, int]] = []
    pending_size = 0
    for index, size in enumerate(sizes):
        start = 0
        if pending_size and size:  # fill the gathering part first
            start = min(size, part_bytes - pending_size)
            pending.append((index, 0, start))
            pending_size += start
            if pending_size >= part_bytes:
                parts.append(pending)
                pending, pending_size = [], 0
        while size - start >= part_bytes:
            end = start + min(size - start, COPY_MAX_BYTES)
            parts.append([(index, start, end)])
            start = end
        if start < size:
            pending.append((index, start, size))
            pending_size += size - start
    if pending:
        parts.append(pending)
    return parts


class _PartPipeline:
    """Body bytes gather into parts; one part uploads while the next one gathers.

    ``state.durable`` and ``state.multipart`` move together, only when S3 acknowledged a part
    (or the tail), so whatever the heartbeat commits is consistent.
    """

    def __init__(
        self, store: S3Store, file_id: str, state: writer.WriteState, multipart: dict[str, Any], part_bytes: int
    ) -> None:
        self.store, self.file_id, self.state, self.part_bytes = store, file_id, state, part_bytes
        self.parts: list[dict[str, Any]] = list(multipart["parts"])
        self.upload_id: str = multipart["upload_id"]
        self.base = sum(int(p["size"]) for p in self.parts)  # bytes in acknowledged parts
        self.buffer = bytearray()
        self.sending: asyncio.Task[None] | None = None
        self.in_flight = 0
        self.broken = False

    def end(self) -> int:
        return self.base + self.in_flight + len(self.buffer)

    async def add(self, chunk: bytes) -> None:
        self.buffer += chunk
        if len(self.buffer) >= self.part_bytes:
            await self._send(bytes(self.buffer))
            self.buffer = bytearray()

    async def _send(self, data: bytes) -> None:
        await self._wait()
        self.in_flight = len(data)
        self.sending = asyncio.create_task(self._upload(data))

    async def _wait(self) -> None:
        if self.sending is not None:
            sending, self.sending = self.sending, None
            await sending

    async def _upload(self, data: bytes) -> None:
        number = len(self.parts) + 1
        try:
            etag = await self.store.upload_part(self.file_id, self.upload_id, number, data)
        except BaseException:
            self.broken = True  # these bytes are gone: nothing after them may be kept
            raise
        self.parts.append({"number": number, "etag": etag, "size": len(data)})
        self.base += len(data)
        self.in_flight = 0
        self._publish(tail=0, tail_key=None)

    def _publish(self, *, tail: int, tail_key: str | None) -> None:
        parts = list(self.parts)
        self.state.multipart = {"upload_id": self.upload_id, "parts": parts, "tail": tail, "tail_key": tail_key}
        self.state.durable = self.base + tail

    async def finish(self, *, final: bool, keep_tail: bool = True) -> None:
        """Keep the rest: as the last part when the upload is whole, else as a new tail."""
        try:
            await self._wait()
        finally:
            self.sending = None
        rest = bytes(self.buffer)
        if self.broken:
            return
        if final:
            if rest or not self.parts:
                await self._upload(rest)
            return
        if keep_tail and rest and self.base + len(rest) > self.state.durable:
            tail_key = await self.store.put_tail(self.file_id, rest)
            self._publish(tail=len(rest), tail_key=tail_key)


class S3Result:
    """A task's file as one multipart upload, continued from the checkpoint's mark.

        hand_off(page) ──▶ buffer (the tail: bytes past the last part) += page
                       ──▶ buffer ≥ a part size: UploadPart(number = parts + 1) of all of it
                           else: PUT the bytes no segment holds yet as a new tail segment
                       ──▶ the mark {offset, multipart: {upload_id, parts, segments}}
        finish         ──▶ the buffer as the last part, CompleteMultipartUpload of the listed parts

    Only what a committed mark lists counts: a part uploaded after it is uploaded again under
    the same number by the resumed run, a segment written after it is nobody's (``purge`` and
    ``settle`` sweep those by name). Segments are merged as they go (see ``_put_segment``), so
    the tail is neither rewritten whole for every page nor kept as one object per page;
    segments a part or a merge absorbed are deleted at the next hand-off, when the mark that
    dropped them has been committed.
    """

    def __init__(
        self,
        store: S3Store,
        file_id: str,
        upload_id: str,
        parts: list[dict[str, Any]],
        segments: list[dict[str, Any]],
        tail: bytearray,
    ) -> None:
        self.store, self.file_id, self.upload_id = store, file_id, upload_id
        self.parts, self.segments = list(parts), list(segments)
        self.part_bytes = store.part_bytes(None)
        self.base = sum(int(p["size"]) for p in self.parts)  # bytes in the listed parts
        self.buffer = tail  # bytes after the parts: the segments' first, then new ones
        self.stored = len(tail)  # how much of the buffer the segments hold
        self.offset = self.base + len(tail)
        self._job: asyncio.Future[Mark] | None = None
        self._absorbed: list[str] = []  # segment keys now held elsewhere: deleted once that is committed

    def mark(self) -> Mark:
        multipart = {"upload_id": self.upload_id, "parts": list(self.parts), "segments": list(self.segments)}
        return {"offset": self.base + self.stored, "multipart": multipart}

    async def write(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.buffer += chunk
            self.offset += len(chunk)

    async def _settle(self) -> None:
        job, self._job = self._job, None
        if job is not None:
            await job

    async def hand_off(self, *chunks: bytes) -> asyncio.Future[Mark]:
        await self.write(*chunks)
        await self._settle()  # one request in flight, in order
        self._job = asyncio.ensure_future(self._keep())
        return self._job

    async def _keep(self) -> Mark:
        absorbed, self._absorbed = self._absorbed, []
        for key in absorbed:  # the previous mark (without them) is committed: nobody names them
            with contextlib.suppress(Exception):
                await self.store._delete_key(key)
        if len(self.buffer) >= self.part_bytes:
            await self._upload_part(bytes(self.buffer))
        elif len(self.buffer) > self.stored:
            await self._put_segment()
        return self.mark()

    async def _put_segment(self) -> None:
        """The bytes no segment holds yet, merged with the trailing segments no larger than them:
        sizes then fall from first to last like a binary counter's bits, so a tail of n pages is
        O(log n) segments (a short mark, few GETs on resume) and each byte is rewritten
        O(log n) times."""
        start = self.stored
        merged: list[str] = []
        while self.segments and int(self.segments[-1]["size"]) <= len(self.buffer) - start:
            last = self.segments.pop()
            start -= int(last["size"])
            merged.append(last["key"])
        data = bytes(self.buffer[start:])
        key = await self.store.put_tail(self.file_id, data)
        self.segments.append({"key": key, "size": len(data)})
        self.stored = len(self.buffer)
        self._absorbed += merged

    async def _upload_part(self, data: bytes) -> None:
        number = len(self.parts) + 1
        etag = await self.store.upload_part(self.file_id, self.upload_id, number, data)
        self.parts.append({"number": number, "etag": etag, "size": len(data)})
        self.base += len(data)
        self.buffer = self.buffer[len(data) :]
        self._absorbed += [s["key"] for s in self.segments]
        self.segments, self.stored = [], 0

    async def sync(self) -> Mark:
        await self._settle()
        if self.offset > self.base + self.stored:
            await self.hand_off()
            await self._settle()
        return self.mark()

    async def finish(self) -> int:
        await self._settle()
        key = self.store.key(self.file_id)
        if not self.parts and not self.buffer:  # S3 completes no upload without parts
            await self.store._call("put_object", Key=key, Body=b"")
            with contextlib.suppress(ClientError):
                await self.store._call("abort_multipart_upload", Key=key, UploadId=self.upload_id)
            return 0
        if self.buffer:
            try:
                await self._upload_part(bytes(self.buffer))
            except ClientError as exc:  # completed by a run that died before its final commit
                if not (_missing(exc) and (await self.store.stat(self.file_id) or Stat(-1, 0)).size == self.offset):
                    raise
                return self.offset
        await self.store.finish(self.file_id, {"upload_id": self.upload_id, "parts": self.parts})
        return self.offset

    async def settle(self) -> None:
        """Delete the tail segments (and any a dead run left): the object is complete."""
        with contextlib.suppress(Exception):
            for key in await self.store._keys_under(self.store.key(self.file_id) + "."):
                await self.store._delete_key(key)

    def close(self) -> None:
        return None  # holds nothing but memory

    async def aclose(self) -> None:
        job, self._job = self._job, None
        if job is not None:
            await asyncio.wait([job])
            if not job.cancelled():
                job.exception()  # seen here; the page that needed it has already failed


@contextlib.asynccontextmanager
async def open_s3_store(settings: Settings) -> AsyncIterator[ByteStore]:
    bucket, prefix = _split_url(settings.storage_url)
    credentials: dict[str, Any] = {}
    if settings.s3_access_key_id:
        credentials = {
            "aws_access_key_id": settings.s3_access_key_id,
            "aws_secret_access_key": settings.s3_secret_access_key.get_secret_value(),
        }
    config = AioConfig(
        max_pool_connections=64,
        s3={"addressing_style": "path"},
        retries={"max_attempts": 3},
        signature_version="s3v4",  # presigned URLs too (botocore would presign with SigV2)
    )
    async with get_session().create_client(
        "s3",
        endpoint_url=settings.s3_endpoint_url or None,
        region_name=settings.s3_region,
        config=config,
        **credentials,
    ) as client:
        yield S3Store(client, bucket, prefix, settings.max_upload_bytes)
