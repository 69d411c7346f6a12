"""Settings of the reranking stage (``RAG_RERANK__...``), a section of :class:`rag.config.Settings`.

Kept beside the rerankers (and free of imports from ``rag.config``) so that the settings root can
import it without a cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BedrockRerankSettings(_Section):
    """``bedrock-agent-runtime`` ``Rerank`` (Amazon Rerank 1.0, Cohere Rerank 3.5)."""

    model_id: str = Field(
        "amazon.rerank-v1:0", description="amazon.rerank-v1:0 or cohere.rerank-v3-5:0."
    )
    model_arn: str | None = Field(
        None, description="Default: arn:aws:bedrock:<region>::foundation-model/<model_id>."
    )
    region: str | None = None
    endpoint_url: str | None = Field(None, description="Override (VPC endpoints, tests).")
    max_concurrency: int = Field(8, ge=1)
    timeout_seconds: float = Field(30.0, gt=0)
    additional_model_fields: dict[str, Any] = Field(
        default_factory=dict,
        description="additionalModelRequestFields passed to the model as they are.",
    )


class TEIRerankSettings(_Section):
    """A text-embeddings-inference server (or ``rag serve-embeddings --reranker``): ``/rerank``."""

    url: str = "http://127.0.0.1:8080"
    model_name: str = Field("reranker", description="Recorded as the model id (tei/<name>).")
    batch_size: int = Field(
        32, ge=1, le=1000, description="Texts per request (TEI's max_client_batch_size)."
    )
    max_concurrency: int = Field(8, ge=1)
    timeout_seconds: float = Field(30.0, gt=0)
    raw_scores: bool = Field(False, description="Logits instead of sigmoid scores.")


class LocalRerankSettings(_Section):
    """A cross-encoder exported to ONNX, run in process with ONNX Runtime (no torch)."""

    model_dir: Path | None = Field(
        None,
        description="Folder with model.onnx (or onnx/model.onnx) and tokenizer.json, e.g. an "
        "export of cross-encoder/ms-marco-MiniLM-L-6-v2; nothing is downloaded.",
    )
    model_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="Pin of model.onnx, checked at load."
    )
    max_sequence_tokens: int = Field(
        512, ge=16, le=8192, description="Query and passage together are truncated to this."
    )
    batch_size: int = Field(16, ge=1, le=1024, description="Pairs per ONNX Runtime run.")
    threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads; 0 = its default.")
    device: Literal["cpu", "cuda", "auto"] = "cpu"


BGE_QUERY_PREFIX = "Represent this sentence for searching relevant passages: "
DEFAULT_BI_ENCODER_DIR = Path(".cache/models/bge-small-en-v1.5-q")


class BiEncoderRerankSettings(_Section):
    """A sentence-embedding model (bi-encoder) exported to ONNX re-scores the candidates by cosine,
    run in process with ONNX Runtime (no torch). The defaults fit BAAI/bge-small-en-v1.5, which
    scripts/fetch-rerank-model.sh fetches into .cache/models/bge-small-en-v1.5-q."""

    model_dir: Path | None = Field(
        None,
        description="Folder with model.onnx (or onnx/model.onnx) and tokenizer.json; nothing is "
        "downloaded (scripts/fetch-rerank-model.sh: .cache/models/bge-small-en-v1.5-q).",
    )
    model_sha256: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="Pin of model.onnx, checked at load."
    )
    pooling: Literal["cls", "mean"] = Field(
        "cls", description="cls: the first token's state (BGE); mean: masked mean (MiniLM, E5)."
    )
    query_prefix: str = Field(BGE_QUERY_PREFIX, description="Prepended to the query (BGE's).")
    passage_prefix: str = Field("", description="Prepended to each passage.")
    max_sequence_tokens: int = Field(
        512, ge=16, le=8192, description="Each query and passage is truncated to this."
    )
    batch_size: int = Field(16, ge=1, le=1024, description="Passages per ONNX Runtime run.")
    threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads; 0 = its default.")
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    fuse: bool = Field(
        False,
        description="Score by reciprocal rank fusion of the first stage's order and the model's "
        "cosine order, instead of by the cosine alone.",
    )
    fuse_k: int = Field(60, ge=1, description="The fusion's rank constant (1 / (k + rank)).")
    fuse_weight: float = Field(1.0, gt=0, description="Weight of the model's term in the fusion.")
    cache_entries: int = Field(
        20_000, ge=0, description="Passage vectors kept in memory (a passage is embedded once)."
    )
    cache_path: Path | None = Field(
        None, description="SQLite file that keeps the passage vectors across processes."
    )


class RerankSettings(_Section):
    provider: Literal["none", "local", "tei", "bedrock", "bi_encoder"] = Field(
        "none",
        description="none: first-stage order; local: an ONNX cross-encoder (local.model_dir); "
        "tei: a /rerank server; bedrock: Bedrock's Rerank API; bi_encoder: an ONNX "
        "sentence-embedding model re-scores by cosine (bi_encoder.model_dir).",
    )
    candidates: int = Field(
        50, ge=1, le=1000, description="How many first-stage (fused) hits are reranked."
    )
    on_error: Literal["fallback", "raise"] = Field(
        "fallback",
        description="When the reranker fails: keep the first-stage order (logged), or fail.",
    )
    bedrock: BedrockRerankSettings = BedrockRerankSettings()
    tei: TEIRerankSettings = TEIRerankSettings()
    local: LocalRerankSettings = LocalRerankSettings()
    bi_encoder: BiEncoderRerankSettings = BiEncoderRerankSettings()
    prices_per_1k_units: dict[str, float] = Field(
        default_factory=lambda: {
            "bedrock/amazon.rerank-v1:0": 1.0,
            "bedrock/cohere.rerank-v3-5:0": 2.0,
        },
        description="USD per 1,000 billed units by model id (prefix match); a Bedrock unit is "
        "one query of up to 100 documents.",
    )
