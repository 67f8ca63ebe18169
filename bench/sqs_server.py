"""A fast in-memory SQS endpoint for throughput work on one machine.

LocalStack's SQS serves about 170 calls per second on this project's 2-core
bench machine (``python -m bench.sqs_ceiling``): a worker that needs more calls
than that measures LocalStack, not itself. This server speaks the part of SQS's
JSON protocol the bench, the worker and boto3 use (CreateQueue, GetQueueUrl,
ListQueues, DeleteQueue, PurgeQueue, GetQueueAttributes, SendMessage(Batch),
ReceiveMessage with long polling and visibility timeouts, DeleteMessage(Batch),
ChangeMessageVisibility(Batch)), keeps messages in memory and costs tens of
microseconds per call. It checks no signature. It is a bench tool, not a
production queue: one process, nothing on disk.

It refuses what SQS refuses when a message is sent, as SQS does: a body or a
String attribute value with a character outside SQS's set (#x9 | #xA | #xD |
#x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF), more than ten message
attributes, an attribute name or data type SQS does not allow, and a message
longer than its queue's ``MaximumMessageSize`` with its attributes counted
(name, data type and value, as SQS counts them). In a SendMessageBatch each such
entry is reported in ``Failed`` and the others are sent; a batch whose messages
together exceed 1 MiB, with more than ten entries, or with ids SQS refuses is
refused as a whole (HTTP 400). The test suite uses it as the SQS server that
refuses like SQS (moto counts and checks no attribute).

Run: ``python -m bench.sqs_server [--port 4577]``, then
``SQS_ENDPOINT_URL=http://127.0.0.1:4577 make bench ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import heapq
import itertools
import json
import re
import struct
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "000000000000"
MAX_BATCH = 10
DEFAULT_VISIBILITY = 30
# SQS's largest message and largest SendMessageBatch payload (1 MiB since 2025, 256 KiB before);
# a queue's MaximumMessageSize (1,024 bytes to this) lowers the first, never the second.
MAX_MESSAGE_BYTES = 1_048_576
MIN_MESSAGE_BYTES = 1_024
MAX_ATTRIBUTES = 10
ALLOWED_CHARACTERS = "#x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF"
_REFUSED_CHARACTER = re.compile(
    "[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_RESERVED_NAME = re.compile(r"(?i)(aws\.|amazon\.)")
_ENTRY_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
_RECEIPT = re.compile(r"[0-9a-f-]{36}#[0-9]+")
_receipts = itertools.count(1)


class SqsError(Exception):
    """An error answer: HTTP status, the SQS error code and its message."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass
class Message:
    message_id: str
    body: str
    attributes: dict[str, Any]
    sent_ms: int
    receive_count: int = 0
    receipt: str = ""
    visible_at: float = 0.0


@dataclass
class Queue:
    name: str
    url: str
    attributes: dict[str, str]
    visible: deque[Message] = field(default_factory=deque)
    in_flight: dict[str, Message] = field(default_factory=dict)  # receipt -> message
    deadlines: list[tuple[float, int, str]] = field(default_factory=list)  # heap of receipts
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def visibility(self) -> int:
        return int(self.attributes.get("VisibilityTimeout", DEFAULT_VISIBILITY))

    @property
    def maximum_message_size(self) -> int:
        return int(self.attributes.get("MaximumMessageSize", MAX_MESSAGE_BYTES))

    def expire(self, now: float) -> None:
        """Make messages whose visibility timeout ran out visible again (at the head)."""
        while self.deadlines and self.deadlines[0][0] <= now:
            deadline, _, receipt = heapq.heappop(self.deadlines)
            message = self.in_flight.get(receipt)
            if message is not None and message.visible_at == deadline:
                del self.in_flight[receipt]
                self.visible.appendleft(message)
        if self.visible:
            self.arrived.set()

    def hide(self, message: Message, seconds: float, now: float) -> None:
        message.visible_at = now + seconds
        heapq.heappush(self.deadlines, (message.visible_at, next(_receipts), message.receipt))


class Sqs:
    """The queues of one endpoint and the operations on them."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.queues: dict[str, Queue] = {}

    def queue(self, params: dict[str, Any]) -> Queue:
        url = str(params.get("QueueUrl", ""))
        queue = self.queues.get(url.rstrip("/").rsplit("/", 1)[-1])
        if queue is None:
            raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        return queue

    async def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        handler = getattr(self, "op_" + re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower(), None)
        if handler is None:
            raise SqsError("InvalidAction", f"{operation} is not supported here")
        if operation == "ReceiveMessage":
            reply: dict[str, Any] = await handler(params)
            return reply
        return handler(params)  # type: ignore[no-any-return]

    def op_create_queue(self, params: dict[str, Any]) -> dict[str, Any]:
        name = str(params["QueueName"])
        if name not in self.queues:
            url = f"{self.base_url}/{ACCOUNT}/{name}"
            attributes = {"VisibilityTimeout": str(DEFAULT_VISIBILITY)}
            attributes |= _queue_attributes(params)
            self.queues[name] = Queue(name, url, attributes)
        return {"QueueUrl": self.queues[name].url}

    def op_get_queue_url(self, params: dict[str, Any]) -> dict[str, Any]:
        queue = self.queues.get(str(params.get("QueueName")))
        if queue is None:
            raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        return {"QueueUrl": queue.url}

    def op_list_queues(self, params: dict[str, Any]) -> dict[str, Any]:
        prefix = str(params.get("QueueNamePrefix", ""))
        return {"QueueUrls": [q.url for n, q in self.queues.items() if n.startswith(prefix)]}

    def op_delete_queue(self, params: dict[str, Any]) -> dict[str, Any]:
        del self.queues[self.queue(params).name]
        return {}

    def op_purge_queue(self, params: dict[str, Any]) -> dict[str, Any]:
        queue = self.queue(params)
        queue.visible.clear()
        queue.in_flight.clear()
        queue.deadlines.clear()
        return {}

    def op_set_queue_attributes(self, params: dict[str, Any]) -> dict[str, Any]:
        queue = self.queue(params)
        queue.attributes |= _queue_attributes(params)
        return {}

    def op_get_queue_attributes(self, params: dict[str, Any]) -> dict[str, Any]:
        queue = self.queue(params)
        queue.expire(time.monotonic())
        values = queue.attributes | {
            "ApproximateNumberOfMessages": str(len(queue.visible)),
            "ApproximateNumberOfMessagesNotVisible": str(len(queue.in_flight)),
            "ApproximateNumberOfMessagesDelayed": "0",
            "QueueArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{queue.name}",
        }
        names = params.get("AttributeNames") or ["All"]
        if "All" not in names:
            values = {k: v for k, v in values.items() if k in names}
        return {"Attributes": values}

    def op_send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        queue = self.queue(params)
        refused = _refusal(queue, params, _size(params))
        if refused is not None:
            raise refused
        return self._send(queue, params)

    def op_send_message_batch(self, params: dict[str, Any]) -> dict[str, Any]:
        """Each entry SQS refuses is in ``Failed``; a batch SQS refuses as a whole raises."""
        queue = self.queue(params)
        entries = _entries(params)
        ids = [entry.get("Id") for entry in entries]
        for entry_id in ids:
            if not isinstance(entry_id, str) or not _ENTRY_ID.fullmatch(entry_id):
                raise SqsError(
                    "InvalidBatchEntryId",
                    "A batch entry id can only contain alphanumeric characters, hyphens and"
                    " underscores. It can be at most 80 letters long.",
                )
        if len(set(ids)) < len(ids):
            raise SqsError(
                "BatchEntryIdsNotDistinct", "Two or more batch entries have the same Id."
            )
        sizes = [_size(entry) for entry in entries]
        total = sum(sizes)
        if total > MAX_MESSAGE_BYTES:
            raise SqsError(
                "BatchRequestTooLong",
                f"Batch requests cannot be longer than {MAX_MESSAGE_BYTES} bytes."
                f" You have sent {total} bytes.",
            )
        successful, failed = [], []
        for entry, size in zip(entries, sizes, strict=True):
            refused = _refusal(queue, entry, size)
            if refused is None:
                successful.append({"Id": entry["Id"]} | self._send(queue, entry))
            else:
                failed.append(
                    {
                        "Id": entry["Id"],
                        "SenderFault": True,
                        "Code": refused.code,
                        "Message": str(refused),
                    }
                )
        reply: dict[str, Any] = {"Successful": successful}
        if failed:
            reply["Failed"] = failed
        return reply

    def _send(self, queue: Queue, entry: dict[str, Any]) -> dict[str, Any]:
        """Queue a message ``_refusal`` found nothing to refuse in."""
        body = entry["MessageBody"]
        attributes = entry.get("MessageAttributes") or {}
        message = Message(str(uuid.uuid4()), body, attributes, int(time.time() * 1000))
        queue.visible.append(message)
        queue.arrived.set()
        reply = {"MessageId": message.message_id, "MD5OfMessageBody": _md5(body)}
        if attributes:
            reply["MD5OfMessageAttributes"] = _md5_of_attributes(attributes)
        return reply

    async def op_receive_message(self, params: dict[str, Any]) -> dict[str, Any]:
        queue = self.queue(params)
        wanted = max(1, min(MAX_BATCH, int(params.get("MaxNumberOfMessages", 1))))
        visibility = int(params.get("VisibilityTimeout", queue.visibility))
        wait = float(params.get("WaitTimeSeconds", 0))
        deadline = time.monotonic() + wait
        while True:
            now = time.monotonic()
            queue.expire(now)
            if queue.visible or now >= deadline:
                break
            queue.arrived.clear()
            timeout = deadline - now
            if queue.deadlines:
                timeout = min(timeout, max(0.0, queue.deadlines[0][0] - now) + 0.001)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(queue.arrived.wait(), timeout)
            if queue.name not in self.queues:
                raise SqsError("QueueDoesNotExist", "The specified queue does not exist.")
        taken: list[dict[str, Any]] = []
        while queue.visible and len(taken) < wanted:
            message = queue.visible.popleft()
            message.receive_count += 1
            message.receipt = f"{message.message_id}#{next(_receipts)}"
            queue.in_flight[message.receipt] = message
            queue.hide(message, visibility, now)
            taken.append(_as_received(message, params))
        return {"Messages": taken} if taken else {}

    def op_delete_message(self, params: dict[str, Any]) -> dict[str, Any]:
        self._delete(self.queue(params), str(params.get("ReceiptHandle", "")))
        return {}

    def op_delete_message_batch(self, params: dict[str, Any]) -> dict[str, Any]:
        queue = self.queue(params)
        done, failed = [], []
        for entry in _entries(params):
            try:
                self._delete(queue, str(entry.get("ReceiptHandle", "")))
                done.append({"Id": entry["Id"]})
            except SqsError as exc:
                failed.append(
                    {"Id": entry["Id"], "Code": exc.code, "Message": str(exc), "SenderFault": True}
                )
        return {"Successful": done, "Failed": failed}

    def _delete(self, queue: Queue, receipt: str) -> None:
        if not _RECEIPT.fullmatch(receipt):  # not one this server handed out
            raise SqsError(
                "ReceiptHandleIsInvalid",
                f'The input receipt handle "{receipt[:100]}" is not a valid receipt handle.',
            )
        message = queue.in_flight.pop(receipt, None)
        if message is None:  # SQS deletes by a stale receipt too: drop the message wherever
            message_id = receipt.split("#", 1)[0]
            for held, candidate in list(queue.in_flight.items()):
                if candidate.message_id == message_id:
                    del queue.in_flight[held]

    def op_change_message_visibility(self, params: dict[str, Any]) -> dict[str, Any]:
        queue = self.queue(params)
        self._change(queue, str(params.get("ReceiptHandle")), int(params["VisibilityTimeout"]))
        return {}

    def op_change_message_visibility_batch(self, params: dict[str, Any]) -> dict[str, Any]:
        queue = self.queue(params)
        done, failed = [], []
        for entry in _entries(params):
            receipt = str(entry.get("ReceiptHandle"))
            try:
                self._change(queue, receipt, int(entry.get("VisibilityTimeout", 0)))
                done.append({"Id": entry["Id"]})
            except SqsError as exc:
                failed.append(
                    {"Id": entry["Id"], "Code": exc.code, "Message": str(exc), "SenderFault": True}
                )
        return {"Successful": done, "Failed": failed}

    def _change(self, queue: Queue, receipt: str, seconds: int) -> None:
        message = queue.in_flight.get(receipt)
        if message is None:
            raise SqsError("ReceiptHandleIsInvalid", "The receipt handle is not in flight.")
        now = time.monotonic()
        queue.hide(message, seconds, now)
        queue.expire(now)


def _queue_attributes(params: dict[str, Any]) -> dict[str, str]:
    attributes = {k: str(v) for k, v in (params.get("Attributes") or {}).items()}
    size = attributes.get("MaximumMessageSize")
    if size is not None and not (
        size.isdigit() and MIN_MESSAGE_BYTES <= int(size) <= MAX_MESSAGE_BYTES
    ):
        raise SqsError(
            "InvalidAttributeValue", "Invalid value for the parameter MaximumMessageSize."
        )
    return attributes


def _refusal(queue: Queue, entry: dict[str, Any], size: int) -> SqsError | None:
    """Why SQS refuses to send this message of ``size`` bytes (``_size``), or None."""
    try:
        _check_message(queue, entry, size)
    except SqsError as exc:
        return exc
    return None


def _check_message(queue: Queue, entry: dict[str, Any], size: int) -> None:
    body = entry.get("MessageBody")
    if not isinstance(body, str) or not body:
        raise SqsError("MissingParameter", "The request must contain the parameter MessageBody.")
    attributes = entry.get("MessageAttributes") or {}
    if not isinstance(attributes, dict):
        raise SqsError("InvalidParameterValue", "MessageAttributes must be a map.")
    if size > queue.maximum_message_size:
        raise SqsError(
            "InvalidParameterValue",
            "One or more parameters are invalid. Reason: Message must be shorter than"
            f" {queue.maximum_message_size} bytes.",
        )
    refused = _REFUSED_CHARACTER.search(body)
    if refused is not None:
        raise SqsError(
            "InvalidMessageContents",
            f"Invalid binary character '#x{ord(refused.group()):X}' was found in the message"
            f" body, the set of allowed characters is {ALLOWED_CHARACTERS}",
        )
    if len(attributes) > MAX_ATTRIBUTES:
        raise SqsError(
            "InvalidParameterValue",
            f"Number of message attributes [{len(attributes)}] exceeds the allowed maximum"
            f" [{MAX_ATTRIBUTES}].",
        )
    for name, value in attributes.items():
        _check_attribute(name, value)


def _size(entry: dict[str, Any]) -> int:
    """Body plus every attribute's name, data type and value, in bytes (SQS's count)."""
    body = entry.get("MessageBody")
    size = len(body.encode("utf-8", "surrogatepass")) if isinstance(body, str) else 0
    for name, value in (entry.get("MessageAttributes") or {}).items():
        size += len(str(name).encode("utf-8", "surrogatepass"))
        if isinstance(value, dict):
            size += len(str(value.get("DataType", "")).encode("utf-8", "surrogatepass"))
            if "BinaryValue" in value:
                size += len(_binary(value["BinaryValue"]))
            else:
                size += len(str(value.get("StringValue", "")).encode("utf-8", "surrogatepass"))
    return size


def _binary(raw: Any) -> bytes:
    try:
        return base64.b64decode(str(raw), validate=True)
    except ValueError:
        raise SqsError("InvalidParameterValue", "BinaryValue is not base64.") from None


def _check_attribute(name: str, value: Any) -> None:
    if not _ATTRIBUTE_NAME.fullmatch(name) or _RESERVED_NAME.match(name):
        raise SqsError(
            "InvalidParameterValue",
            f"Message (user) attribute name '{name}' is invalid: names hold letters, digits,"
            " '_', '-' and '.' (at most 256), start with neither 'AWS.' nor 'Amazon.'.",
        )
    if name.startswith(".") or name.endswith(".") or ".." in name:
        raise SqsError(
            "InvalidParameterValue",
            f"Message (user) attribute name '{name}' cannot start or end with a period, or"
            " hold two in a row.",
        )
    data_type = value.get("DataType") if isinstance(value, dict) else None
    if not isinstance(data_type, str) or data_type.split(".", 1)[0] not in (
        "String",
        "Number",
        "Binary",
    ):
        raise SqsError(
            "InvalidParameterValue",
            f"The type of message (user) attribute '{name}' is invalid. You must use only the"
            " following supported type prefixes: Binary, Number, String.",
        )
    assert isinstance(value, dict)
    if data_type.startswith("Binary"):
        if not _binary(value.get("BinaryValue", "")):
            raise SqsError(
                "InvalidParameterValue",
                f"Message (user) attribute '{name}' must contain a non-empty value of type"
                " 'Binary'.",
            )
        return
    text = value.get("StringValue")
    if not isinstance(text, str) or not text:
        raise SqsError(
            "InvalidParameterValue",
            f"Message (user) attribute '{name}' must contain a non-empty value of type"
            f" '{data_type}'.",
        )
    refused = _REFUSED_CHARACTER.search(text)
    if refused is not None:
        raise SqsError(
            "InvalidParameterValue",
            f"Message (user) attribute '{name}' value contains invalid binary character"
            f" '#x{ord(refused.group()):X}'. You must use only the following supported"
            f" characters: {ALLOWED_CHARACTERS}.",
        )
    if data_type.startswith("Number"):
        try:
            float(text)
        except ValueError:
            raise SqsError(
                "InvalidParameterValue",
                f"Can't cast the value of message (user) attribute '{name}' to a number.",
            ) from None


def _entries(params: dict[str, Any]) -> list[dict[str, Any]]:
    entries = params.get("Entries") or []
    if not entries:
        raise SqsError("EmptyBatchRequest", "There should be at least one entry in the request.")
    if len(entries) > MAX_BATCH:
        raise SqsError("TooManyEntriesInBatchRequest", f"at most {MAX_BATCH} entries")
    return list(entries)


def _as_received(message: Message, params: dict[str, Any]) -> dict[str, Any]:
    received: dict[str, Any] = {
        "MessageId": message.message_id,
        "ReceiptHandle": message.receipt,
        "MD5OfBody": _md5(message.body),
        "Body": message.body,
    }
    names = set(params.get("MessageSystemAttributeNames") or params.get("AttributeNames") or ())
    system = {
        "SentTimestamp": str(message.sent_ms),
        "ApproximateReceiveCount": str(message.receive_count),
    }
    if names:
        received["Attributes"] = {k: v for k, v in system.items() if "All" in names or k in names}
    if message.attributes and params.get("MessageAttributeNames"):
        received["MessageAttributes"] = message.attributes
        received["MD5OfMessageAttributes"] = _md5_of_attributes(message.attributes)
    return received


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _md5_of_attributes(attributes: dict[str, Any]) -> str:
    """SQS's digest of message attributes (sorted by name, each part length-prefixed)."""
    digest = hashlib.md5(usedforsecurity=False)
    for name in sorted(attributes):
        value = attributes[name]
        data_type = str(value["DataType"])
        for part in (name.encode(), data_type.encode()):
            digest.update(struct.pack("!I", len(part)) + part)
        if "BinaryValue" in value:
            raw = value["BinaryValue"]
            payload = raw if isinstance(raw, bytes) else str(raw).encode()
            digest.update(b"\x02" + struct.pack("!I", len(payload)) + payload)
        else:
            payload = str(value["StringValue"]).encode()
            digest.update(b"\x01" + struct.pack("!I", len(payload)) + payload)
    return digest.hexdigest()


class HttpConnection(asyncio.Protocol):
    """HTTP/1.1 keep-alive: POST requests with a Content-Length, one at a time in order."""

    def __init__(self, sqs: Sqs) -> None:
        self.sqs = sqs
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.pending: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.worker = asyncio.get_running_loop().create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self.pending.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.pending.put_nowait((headers.get("x-amz-target", ""), body))

    async def _serve(self) -> None:
        while (request := await self.pending.get()) is not None:
            target, body = request
            status, reply = await self._answer(target, body)
            if self.transport is None or self.transport.is_closing():
                return
            self.transport.write(
                b"HTTP/1.1 %d OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (status, len(reply), reply)
            )

    async def _answer(self, target: str, body: bytes) -> tuple[int, bytes]:
        operation = target.rpartition(".")[2]
        try:
            params = json.loads(body) if body else {}
            reply = await self.sqs.call(operation, params)
            return 200, json.dumps(reply).encode()
        except SqsError as exc:
            error = {"__type": f"com.amazonaws.sqs#{exc.code}", "message": str(exc)}
            return exc.status, json.dumps(error).encode()
        except (KeyError, ValueError, TypeError) as exc:
            error = {"__type": "com.amazonaws.sqs#InvalidParameterValue", "message": repr(exc)}
            return 400, json.dumps(error).encode()


async def serve(host: str, port: int, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled."""
    loop = asyncio.get_running_loop()
    sqs = Sqs(f"http://{host}:{port}")
    server = await loop.create_server(lambda: HttpConnection(sqs), host, port, backlog=512)
    print(f"SQS (bench, in memory) on http://{host}:{port}", flush=True)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sqs_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4577)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
