"""The one settings root. Built once per entry point (env prefix ``RAG_``) and passed down.

Nested sections use ``__`` in environment variables, e.g. ``RAG_CHUNKING__MAX_TOKENS=300``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag.rerank.settings import RerankSettings


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParsingSettings(_Section):
    max_file_bytes: int = Field(50 * 1024 * 1024, gt=0, description="Larger files are quarantined.")
    strategy: Literal["fast"] = Field("fast", description="unstructured partition strategy.")
    text_parser: Literal["fast", "unstructured"] = Field(
        "fast", description="Text, Markdown, HTML: linear-time parsers, or unstructured's."
    )
    seconds_per_mb: float = Field(
        30.0, gt=0, description="Parse time budget per MB; past it: quarantined parse_timeout."
    )
    min_timeout_seconds: float = Field(60.0, gt=0, description="Parse time budget floor.")


class ChunkingSettings(_Section):
    encoding: str = Field("cl100k_base", description="tiktoken encoding that counts tokens.")
    max_tokens: int = Field(200, ge=16, le=8192, description="Upper bound of a chunk's tokens.")
    overlap_tokens: int = Field(32, ge=0, description="Tokens repeated from the previous chunk.")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingSettings:
        if self.overlap_tokens >= self.max_tokens // 2:
            raise ValueError("overlap_tokens must be below half of max_tokens")
        return self


class BedrockSettings(_Section):
    model_id: str = Field("amazon.titan-embed-text-v2:0", description="Titan v2 or Cohere Embed.")
    region: str | None = None
    endpoint_url: str | None = Field(None, description="Override (VPC endpoints, tests).")
    dimensions: Literal[256, 512, 1024] = 1024
    normalize: bool = True
    max_concurrency: int = Field(32, ge=1)
    timeout_seconds: float = Field(30.0, gt=0)


class SageMakerSettings(_Section):
    endpoint_name: str = ""
    dimension: int = Field(384, ge=1)
    shape: Literal["tei", "hf", "jumpstart"] = "tei"
    model_name: str | None = Field(None, description="Recorded as the model id; default: endpoint.")
    region: str | None = None
    endpoint_url: str | None = None
    batch_size: int = Field(32, ge=1)
    max_concurrency: int = Field(16, ge=1)


class TEISettings(_Section):
    url: str = "http://127.0.0.1:8080"
    dimension: int = Field(384, ge=1)
    model_name: str = "all-MiniLM-L6-v2"
    batch_size: int = Field(32, ge=1)
    max_concurrency: int = Field(16, ge=1)


class EmbeddingSettings(_Section):
    provider: Literal["minilm", "hash", "bedrock", "sagemaker", "tei"] = Field(
        "minilm",
        description="minilm: offline all-MiniLM-L6-v2 (ONNX); hash: deterministic fake; bedrock; "
        "sagemaker (endpoint, e.g. on Inferentia2); tei (an HTTP embedding server).",
    )
    bedrock: BedrockSettings = BedrockSettings()
    sagemaker: SageMakerSettings = SageMakerSettings()
    tei: TEISettings = TEISettings()
    prices_per_1k_tokens: dict[str, float] = Field(
        default_factory=lambda: {
            "bedrock/amazon.titan-embed-text-v2:0": 0.00002,
            "bedrock/cohere.embed-english-v3": 0.0001,
            "bedrock/cohere.embed-multilingual-v3": 0.0001,
        },
        description="USD per 1,000 input tokens, by model id (prefix match on the id).",
    )
    batch_size: int = Field(32, ge=1, le=1024)
    max_sequence_tokens: int = Field(256, ge=8, le=512, description="Model input truncation.")
    hash_dimension: int = Field(384, ge=2, description="Dimension of the hash embedder.")
    threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads; 0 = runtime default.")
    cache: bool = Field(True, description="Cache vectors by (model, text hash).")
    cache_path: Path | None = Field(None, description="Default: <data_dir>/embedding-cache.sqlite.")


class OpenSearchSettings(_Section):
    """Connection and index settings of the OpenSearch store."""

    hosts: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:9200"])
    alias: str = Field(
        "rag-chunks",
        pattern=r"^[a-z0-9][a-z0-9_\-]{0,100}$",
        description="Searches go through this alias; indexes are versions of it.",
    )
    username: str | None = None
    password: SecretStr | None = None
    aws_sigv4: bool = Field(False, description="Sign requests for Amazon OpenSearch Service.")
    aws_region: str | None = None
    aws_service: Literal["es", "aoss"] = Field("es", description="aoss for Serverless.")
    verify_certs: bool = True
    ca_certs: Path | None = None
    timeout_seconds: float = Field(30.0, gt=0)
    shards: int = Field(1, ge=1)
    replicas: int = Field(1, ge=0)
    hnsw_m: int = Field(16, ge=2)
    hnsw_ef_construction: int = Field(128, ge=8)
    ef_search: int = Field(
        512, ge=1, description="Candidates the k-NN query considers (recall vs latency)."
    )
    exact_max_rows: int = Field(
        150_000,
        ge=0,
        description="A search whose ACL and filter admit at most this many chunks (and at most "
        "20% of the index) scores them all exactly instead of walking the HNSW graph (0: never).",
    )
    bulk_batch: int = Field(500, ge=1, description="Documents per bulk request.")
    max_retries: int = Field(8, ge=0, description="Retries of 429/503 items before failing.")
    backoff_seconds: float = Field(0.2, gt=0, description="Base of exponential backoff.")
    backoff_max_seconds: float = Field(10.0, gt=0)
    refresh: Literal["false", "true", "wait_for"] = Field(
        "false", description="Refresh after each write; the pipeline refreshes once at the end."
    )
    rrf_k: int = Field(60, ge=1, description="Reciprocal rank fusion constant for hybrid search.")
    text_analyzer: str = Field(
        "english", description="Analyzer of the BM25 text field (needs the analysis-common module)."
    )


class ClassificationSettings(_Section):
    """Which document labels may be sent to which embedding targets (see rag.classification)."""

    default_label: str = Field(
        "internal", description="The label of a document whose source gives none."
    )
    allowed_targets: dict[str, list[str]] = Field(
        default_factory=lambda: {"restricted": ["self-hosted"]},
        description="label -> targets it may reach (provider, provider:endpoint, local, "
        "self-hosted, shared-api); a label not listed may reach any target.",
    )

    @model_validator(mode="after")
    def _canonical_labels(self) -> ClassificationSettings:
        self.default_label = self.default_label.strip().lower()
        self.allowed_targets = {k.strip().lower(): v for k, v in self.allowed_targets.items()}
        return self


class AuditSettings(_Section):
    """The audit trail of retrievals (see rag.audit)."""

    enabled: bool = Field(True, description="Write one audit record per retrieval.")
    sink: Literal["auto", "jsonl", "opensearch"] = Field(
        "auto", description="auto: OpenSearch with the OpenSearch store, else JSON lines."
    )
    path: Path | None = Field(None, description="JSON-lines folder; default <data_dir>/audit.")
    include_query_text: bool = Field(
        False, description="Record the query text itself (a hash is always recorded)."
    )
    fail_closed: bool = Field(
        True, description="A retrieval whose audit record cannot be written fails."
    )


class SyncSettings(_Section):
    batch_size: int = Field(
        200, ge=1, description="Documents per batch of a run (and per mapped task in a DAG)."
    )
    max_delete_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="When more than this share of a source's documents is gone from a complete "
        "listing, they are hidden (tombstoned) at once but not purged.",
    )
    allow_mass_delete: bool = Field(
        False, description="Override the mass-delete guard once: purge whatever is gone."
    )
    tombstone_grace_seconds: float = Field(
        0.0, ge=0, description="Tombstoned documents are purged on a later run after this long."
    )


class StoreSettings(_Section):
    backend: Literal["lancedb", "opensearch"] = "lancedb"
    opensearch: OpenSearchSettings = OpenSearchSettings()
    uri: Path | None = Field(None, description="Store location; default <data_dir>/lancedb.")
    table: str = Field("chunks", pattern=r"^[A-Za-z0-9_]+$")
    ann_min_rows: int = Field(
        50_000,
        ge=0,
        description="Build an IVF_SQ index (sqrt(rows) partitions, refined) once the table has "
        "this many rows (0: never; below it, exact search is fast enough).",
    )
    nprobes: int = Field(
        256,
        ge=1,
        description="IVF partitions probed for an ACL admitting >= 10% of the chunks (narrower "
        "ACLs probe more, up to all): at 1M chunks (1,000 partitions) recall@10 0.995-0.999 "
        "(python -m bench million).",
    )
    refine_factor: int = Field(
        40, ge=1, description="Candidates re-scored exactly, as a multiple of k (with nprobes)."
    )
    exact_max_rows: int = Field(
        2_000,
        ge=0,
        description="An ACL admitting at most this many chunks is searched exactly over them, "
        "without the ANN index (at 1M chunks: 1,000 rows ~25 ms, every allowed vector scored).",
    )
    read_consistency_seconds: float = Field(
        0.0, ge=0, description="How stale a reader may be before it sees other writers' commits."
    )
    acl_ids_min_principals: int = Field(
        64,
        ge=0,
        description="A search for more principals than this filters by compact ACL keys (the "
        "readable ACLs, resolved from the ACL registry and cached) instead of by every "
        "principal; 0: always. Indexes written before ACL keys always use the principals.",
    )
    acl_ids_cache_size: int = Field(
        1024, ge=1, description="Principal sets whose readable ACL keys are kept (LRU)."
    )
    acl_ids_refresh_seconds: float = Field(
        1.0,
        ge=0,
        description="How long a reader trusts its view of the ACL registry before re-reading its "
        "generation (a stale view only hides chunks under ACLs registered since: fail closed).",
    )


class RetrievalSettings(_Section):
    top_k: int = Field(5, ge=1, le=1000)
    mode: Literal["dense", "bm25", "hybrid"] = Field(
        "hybrid",
        description="dense (vectors), bm25 (keywords) or hybrid (both, fused by reciprocal "
        "rank; the best measured on SciFact on both stores); every store offers all three.",
    )
    min_score: float | None = Field(
        None,
        description="Drop hits scoring below this, on the mode's scale: cosine similarity "
        "(dense), BM25 (bm25), reciprocal rank fusion (hybrid, at most 0.033), the reranker's "
        "score (reranked: a cross-encoder 0 to 1, bi_encoder a cosine or a fused rank score); "
        "None: keep every hit.",
    )
    max_acl_age_seconds: float | None = Field(
        None,
        gt=0,
        description="Return only chunks whose ACL the source confirmed this recently (fail "
        "closed: older or never confirmed ones are filtered inside the search); None: no bound.",
    )
    case_sensitive_principals: bool = Field(
        False,
        description="Also query the exact-case principals (user.cs:/group.cs:) that sources "
        "with case-sensitive ids store; without it their restricted documents stay hidden.",
    )


class AuthSettings(_Section):
    """Verification of OIDC/JWT bearer tokens (``rag.auth.TokenVerifier``); off until
    ``issuer`` and ``audience`` are set. Only asymmetric algorithms are accepted."""

    issuer: str | None = Field(
        None,
        description="The exact expected ``iss``; keys are discovered from "
        "<issuer>/.well-known/openid-configuration unless jwks_url is set.",
    )
    audience: list[str] = Field(
        default_factory=list, description="Accepted ``aud`` values; a token must name one."
    )
    jwks_url: str | None = Field(None, description="JWKS URL; default: discovered (jwks_uri).")
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "ES256", "PS256"],
        min_length=1,
        description="Signature algorithms accepted; none and HS* (symmetric) are refused.",
    )
    leeway_seconds: int = Field(60, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat.")
    user_claim: str = Field(
        "sub", min_length=1, description="Claim holding the user id: oid, email, upn, ..."
    )
    group_claims: list[str] = Field(
        default_factory=lambda: ["groups"],
        description="Claims holding group ids (roles, cognito:groups, ...); a dotted name such "
        "as realm_access.roles is looked up nested when no claim has that exact name.",
    )
    jwks_cache_seconds: float = Field(
        3600, gt=0, le=86_400, description="Keys (and discovery) are fetched again after this."
    )
    jwks_min_refresh_seconds: float = Field(
        60, ge=0, le=3600, description="At most one refresh per this long on an unknown kid."
    )
    http_timeout_seconds: float = Field(5.0, gt=0, le=60, description="Discovery/JWKS fetches.")

    @model_validator(mode="after")
    def _asymmetric_algorithms(self) -> AuthSettings:
        supported = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
        supported |= {"ES256", "ES384", "ES512", "ES256K", "EdDSA"}
        for alg in self.algorithms:
            if alg.strip().lower() == "none" or alg.strip().upper().startswith("HS"):
                raise ValueError(
                    f"algorithm {alg!r} is refused: only asymmetric signatures are verified"
                )
            if alg not in supported:
                raise ValueError(f"unknown algorithm {alg!r}; use one of {sorted(supported)}")
        return self


class DirectorySettings(_Section):
    """The group directory synced beside the index (``rag.directory``): users with their aliases,
    and groups with nested groups expanded. Stored in ``<data_dir>/directory.sqlite``."""

    backend: Literal["none", "ldap", "scim"] = Field(
        "none",
        description="none; ldap (LDAP or Active Directory); scim (SCIM 2.0 service or file).",
    )
    group_source: Literal["token", "directory", "both"] = Field(
        "both",
        description="Where a caller's groups come from at query time: the identity token, the "
        "synced directory, or both (their union).",
    )
    ldap_url: str = Field("ldap://127.0.0.1:389", description="ldap:// or ldaps:// server URL.")
    ldap_bind_dn: str | None = Field(None, description="Who to bind as; None binds anonymously.")
    ldap_password: SecretStr | None = None
    ldap_start_tls: bool = Field(False, description="StartTLS on an ldap:// URL before binding.")
    ldap_ca_certs: Path | None = Field(None, description="CA bundle that verifies the server.")
    ldap_user_base_dns: list[str] = Field(
        default_factory=list, description="Subtrees searched for users (required for ldap)."
    )
    ldap_group_base_dns: list[str] = Field(
        default_factory=list, description="Subtrees searched for groups; default: the user ones."
    )
    ldap_user_filter: str = "(objectClass=person)"
    ldap_group_filter: str = (
        "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group))"
    )
    ldap_user_id_attribute: str = Field(
        "uid", description="A user's canonical id (AD: sAMAccountName); the DN where missing."
    )
    ldap_user_alias_attributes: list[str] = Field(
        default_factory=lambda: ["mail", "uid", "userPrincipalName", "sAMAccountName", "objectSid"],
        description="Attributes whose values are aliases of a user (the DN always is one).",
    )
    ldap_group_name_attribute: str = Field("cn", description="A group's canonical id.")
    ldap_group_alias_attributes: list[str] = Field(
        default_factory=lambda: ["sAMAccountName", "objectSid"],
        description="Attributes whose values are aliases of a group (the DN always is one).",
    )
    ldap_member_attributes: list[str] = Field(
        default_factory=lambda: ["member", "uniqueMember"],
        description="Attributes listing a group's members by DN (users and groups).",
    )
    ldap_domain: str | None = Field(
        None, description="NetBIOS domain, e.g. CORP: a sAMAccountName is also CORP\\<name>."
    )
    ldap_page_size: int = Field(500, ge=1, le=100_000, description="Entries per result page.")
    ldap_timeout_seconds: float = Field(30.0, gt=0)
    scim_url: str | None = Field(None, description="SCIM 2.0 base URL (serving /Users, /Groups).")
    scim_path: Path | None = Field(
        None, description='A SCIM export: {"Users": ListResponse, "Groups": ListResponse}.'
    )
    scim_token: SecretStr | None = Field(None, description="Bearer token of the SCIM service.")
    scim_page_size: int = Field(100, ge=1, le=10_000, description="Resources asked per page.")
    scim_timeout_seconds: float = Field(30.0, gt=0)


class Settings(BaseSettings):
    """Every knob of the pipeline, in one place."""

    model_config = SettingsConfigDict(
        env_prefix="RAG_", env_nested_delimiter="__", extra="forbid", env_file=None
    )

    data_dir: Path = Field(Path(".rag"), description="Where the embedded store and records live.")
    tenant: str = Field("-", description="Tenant that usage and cost are accounted to.")
    parsing: ParsingSettings = ParsingSettings()
    chunking: ChunkingSettings = ChunkingSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    store: StoreSettings = StoreSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    sync: SyncSettings = SyncSettings()
    directory: DirectorySettings = DirectorySettings()
    classification: ClassificationSettings = ClassificationSettings()
    audit: AuditSettings = AuditSettings()
    auth: AuthSettings = AuthSettings()
    rerank: RerankSettings = RerankSettings()

    @property
    def store_uri(self) -> Path:
        return self.store.uri if self.store.uri is not None else self.data_dir / "lancedb"

    @property
    def embedding_cache_path(self) -> Path:
        return self.embedding.cache_path or self.data_dir / "embedding-cache.sqlite"

    @property
    def quarantine_dir(self) -> Path:
        return self.data_dir / "quarantine"
