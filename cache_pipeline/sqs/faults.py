"""SQS error answers → ``QueueFault``: the one table, for the signed calls and for boto3's."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from cache_pipeline.errors import QueueFault, QueueUnavailable

_BY_CODE: dict[QueueFault, frozenset[str]] = {
    QueueFault.MISSING_QUEUE: frozenset(
        {"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", "NonExistentQueue"}
    ),
    QueueFault.CREDENTIALS: frozenset(
        {
            "InvalidClientTokenId",
            "UnrecognizedClientException",
            "SignatureDoesNotMatch",
            "IncompleteSignature",
            "ExpiredToken",
            "ExpiredTokenException",
            "InvalidAccessKeyId",
            "InvalidToken",
            "MissingAuthenticationToken",
            "MissingAuthenticationTokenException",
            "InvalidSecurity",
            "RequestExpired",
            "AuthFailure",
        }
    ),
    QueueFault.ACCESS_DENIED: frozenset(
        {
            "AccessDenied",
            "AccessDeniedException",
            "KmsAccessDenied",
            "KMS.AccessDeniedException",
            "NotAuthorized",
        }
    ),
    QueueFault.THROTTLED: frozenset(
        {
            "ThrottlingException",
            "Throttling",
            "RequestThrottled",
            "RequestThrottledException",
            "TooManyRequestsException",
            "SlowDown",
            "RequestLimitExceeded",
            "KmsThrottled",
            "KMS.ThrottlingException",
        }
    ),
    QueueFault.UNREACHABLE: frozenset(
        {"ServiceUnavailable", "InternalError", "InternalFailure", "RequestTimeout"}
    ),
}
FAULT_OF_CODE = {code: fault for fault, codes in _BY_CODE.items() for code in codes}


def fault_of(status: int, code: str) -> QueueFault:
    """The fault of an error answer: by its code, else by its HTTP status."""
    fault = FAULT_OF_CODE.get(code)
    if fault is not None:
        return fault
    if status == 429:
        return QueueFault.THROTTLED
    if status >= 500:
        return QueueFault.UNREACHABLE
    if status in (401, 403):
        return QueueFault.ACCESS_DENIED
    return QueueFault.REFUSED


def short_code(raw: str) -> str:
    """``com.amazonaws.sqs#QueueDoesNotExist`` → ``QueueDoesNotExist``."""
    return raw.rsplit("#", 1)[-1].split(":", 1)[0].strip()


def from_boto3(exc: BotoCoreError | ClientError, operation: str) -> QueueUnavailable:
    """A boto3 client's exception as ``QueueUnavailable``."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        code = short_code(str(error.get("Code", "")))
        return QueueUnavailable(
            fault_of(status, code), f"{operation}: {code or status}: {error.get('Message', '')}"
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return QueueUnavailable(QueueFault.CREDENTIALS, f"{operation}: {exc}")
    return QueueUnavailable(QueueFault.UNREACHABLE, f"{operation}: {exc}")
