"""Amazon Bedrock reranking over ``bedrock-agent-runtime`` ``Rerank`` (Amazon Rerank 1.0,
Cohere Rerank 3.5).

One call takes one text query and up to 1,000 inline text sources and answers with
``results: [{index, relevanceScore}]`` (paged with ``nextToken`` when the service says so). Calls
run under the embedders' adaptive concurrency, circuit breaker and retries; botocore's errors are
translated as theirs are. Texts over the API's 32,000 characters are truncated (and counted).
Bedrock bills a query of up to 100 documents as one unit: ``units_billed`` counts them for the
usage ledger.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from typing import Any, Final

from rag.embeddings.aws import make_client, translate
from rag.embeddings.resilience import AdaptiveConcurrency, ResilientCaller, TransientError
from rag.errors import EmbeddingError
from rag.rerank import Ranking, checked_ranking

log = logging.getLogger(__name__)

MAX_SOURCES: Final = 1000  # RerankSourcesList max
MAX_CHARS: Final = 32_000  # RerankTextDocumentTextString max
DOCUMENTS_PER_UNIT: Final = 100
MAX_PAGES: Final = 100
# 424 and 502 from the service: its model dependency failed; worth a retry like a 5xx
_RETRYABLE: Final = frozenset({"DependencyFailedException", "BadGatewayException"})


class BedrockReranker:
    """Relevance scores from a Bedrock reranking model; the boto3 client is created on first use
    (or given: its region and endpoint then apply)."""

    def __init__(
        self,
        model_id: str = "amazon.rerank-v1:0",
        *,
        model_arn: str | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        timeout_seconds: float = 30.0,
        max_concurrency: int = 8,
        additional_model_fields: dict[str, Any] | None = None,
        caller: ResilientCaller | None = None,
        client: Any = None,
    ) -> None:
        self._model = model_id
        self._arn = model_arn
        self._region = region
        self._endpoint = endpoint_url
        self._timeout = timeout_seconds
        self._max_concurrency = max_concurrency
        self._extra = dict(additional_model_fields or {})
        self._client: Any = client
        self._lock = threading.Lock()
        self.caller = caller or ResilientCaller(
            AdaptiveConcurrency(min(4, max_concurrency), 1, max_concurrency)
        )
        self.units_billed = 0
        self.calls = 0
        self.truncated = 0

    @property
    def model_id(self) -> str:
        return f"bedrock/{self._model}"

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = make_client(
                    "bedrock-agent-runtime",
                    self._region,
                    self._endpoint,
                    self._timeout,
                    self._max_concurrency,
                )
            return self._client

    @property
    def model_arn(self) -> str:
        """The ARN the API wants: given, or the foundation model's in the client's region."""
        if self._arn:
            return self._arn
        region = self._region or self.client.meta.region_name
        if not region:
            raise EmbeddingError("Bedrock reranking needs a region (rerank.bedrock.region)")
        return f"arn:aws:bedrock:{region}::foundation-model/{self._model}"

    def request(self, query: str, texts: Sequence[str], number_of_results: int) -> dict[str, Any]:
        """The ``Rerank`` parameters for one call (the API's shapes, as boto3 takes them)."""
        model: dict[str, Any] = {"modelArn": self.model_arn}
        if self._extra:
            model["additionalModelRequestFields"] = self._extra
        return {
            "queries": [{"type": "TEXT", "textQuery": {"text": self._fit(query)}}],
            "sources": [
                {
                    "type": "INLINE",
                    "inlineDocumentSource": {
                        "type": "TEXT",
                        "textDocument": {"text": self._fit(text)},
                    },
                }
                for text in texts
            ],
            "rerankingConfiguration": {
                "type": "BEDROCK_RERANKING_MODEL",
                "bedrockRerankingConfiguration": {
                    "numberOfResults": number_of_results,
                    "modelConfiguration": model,
                },
            },
        }

    def rerank(self, query: str, texts: Sequence[str], top_n: int | None = None) -> Ranking:
        if not texts:
            return []
        if len(texts) <= MAX_SOURCES:
            wanted = len(texts) if top_n is None else max(1, min(top_n, len(texts)))
            return checked_ranking(self._call(query, texts, wanted), len(texts), top_n)
        # over the API's limit: score every slice completely, then rank them together
        pairs: list[tuple[int, float]] = []
        slices = [
            (start, list(texts[start : start + MAX_SOURCES]))
            for start in range(0, len(texts), MAX_SOURCES)
        ]
        for start, part in slices:
            pairs.extend((start + i, s) for i, s in self._call(query, part, len(part)))
        return checked_ranking(pairs, len(texts), top_n)

    def _call(self, query: str, texts: Sequence[str], wanted: int) -> list[tuple[int, float]]:
        params = self.request(query, texts, wanted)
        pairs: list[tuple[int, float]] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            page = self.caller.call(functools.partial(self._invoke, params, token))
            pairs.extend(_results(page))
            token = page.get("nextToken")
            if not token:
                break
        else:
            raise EmbeddingError(f"Bedrock Rerank kept paging past {MAX_PAGES} pages")
        with self._lock:
            self.units_billed += -(-len(texts) // DOCUMENTS_PER_UNIT)
        return pairs

    def _invoke(self, params: dict[str, Any], token: str | None) -> dict[str, Any]:
        try:
            response = self.client.rerank(**params, **({"nextToken": token} if token else {}))
        except Exception as exc:
            code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")
            if code in _RETRYABLE:
                raise TransientError(f"Bedrock Rerank {self._model}: {code}: {exc}") from exc
            raise translate(exc, f"Bedrock Rerank {self._model}") from exc
        with self._lock:
            self.calls += 1
        if not isinstance(response, dict):
            raise EmbeddingError(f"unexpected Bedrock Rerank response: {str(response)[:200]}")
        return response

    def _fit(self, text: str) -> str:
        if len(text) <= MAX_CHARS:
            return text or " "
        with self._lock:
            self.truncated += 1
        log.warning("rerank input of %d characters truncated to %d", len(text), MAX_CHARS)
        return text[:MAX_CHARS]


def _results(page: dict[str, Any]) -> list[tuple[int, float]]:
    results = page.get("results")
    if not isinstance(results, list):
        raise EmbeddingError("Bedrock Rerank answered without results")
    try:
        return [(r["index"], float(r["relevanceScore"])) for r in results]
    except (KeyError, TypeError, ValueError) as exc:
        raise EmbeddingError(f"malformed Bedrock Rerank result: {exc}") from exc
