"""What the AWS embedders share: a lazily built boto3 client and error translation."""

from __future__ import annotations

from typing import Any, Final

from rag.embeddings.resilience import ThrottledError, TransientError
from rag.errors import EmbeddingError

_THROTTLING: Final = frozenset(
    {
        "ThrottlingException",
        "TooManyRequestsException",
        "ServiceQuotaExceededException",
        "ProvisionedThroughputExceededException",
        "Throttling",
        "ThrottledException",
    }
)
_TRANSIENT: Final = frozenset(
    {
        "ModelTimeoutException",
        "ServiceUnavailableException",
        "InternalServerException",
        "InternalFailure",
        "ModelNotReadyException",
        "ServiceUnavailable",
    }
)


def make_client(
    service: str,
    region: str | None,
    endpoint_url: str | None,
    timeout_seconds: float,
    max_connections: int,
) -> Any:
    import boto3
    from botocore.config import Config

    # botocore's standard retry mode with a single attempt: retries (with backoff and jitter) are
    # ours, so every throttle reaches the adaptive limiter at once instead of being retried
    # blindly inside botocore
    config = Config(
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=timeout_seconds,
        read_timeout=timeout_seconds,
        max_pool_connections=max_connections,
    )
    return boto3.client(service, region_name=region, endpoint_url=endpoint_url, config=config)


def translate(exc: Exception, what: str) -> EmbeddingError:
    """botocore's errors as ours: throttled, transient (retry) or final."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = f"{what}: {code or status}: {exc}"
        if code in _THROTTLING or status == 429:
            return ThrottledError(message)
        if code in _TRANSIENT or status >= 500:
            return TransientError(message)
        return EmbeddingError(message)
    if isinstance(
        exc,
        ReadTimeoutError | ConnectTimeoutError | EndpointConnectionError | ConnectionClosedError,
    ):
        return TransientError(f"{what}: {exc}")
    return EmbeddingError(f"{what}: {type(exc).__name__}: {exc}")
