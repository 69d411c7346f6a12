"""Which data may reach which embedding model.

Documents carry a classification label (``public``, ``internal``, ``confidential``,
``restricted`` or a source's own) from their source or its policy file. The settings name, per
label, the embedding *targets* it may be sent to; a label not named goes to any target. A target
is matched by any of the embedder's names:

- its provider: ``bedrock``, ``sagemaker``, ``tei``, ``minilm``, ``hash``;
- ``<provider>:<endpoint>``: ``sagemaker:<endpoint name>``, ``tei:<url>``,
  ``bedrock:<model id>``;
- its kind: ``local`` (minilm, hash: nothing leaves the process), ``self-hosted`` (local, plus
  SageMaker endpoints and TEI servers the deployment runs, e.g. on Inferentia2) or
  ``shared-api`` (Bedrock).

A document whose label may not reach the configured embedder is quarantined as
``classification_blocked`` before it is read, so not a byte of it is sent.
"""

from __future__ import annotations

from rag.config import ClassificationSettings, EmbeddingSettings
from rag.errors import ClassificationBlockedError
from rag.models import SourceDocument

LOCAL = frozenset({"minilm", "hash"})


def target_names(embedding: EmbeddingSettings) -> frozenset[str]:
    """Every name the configured embedder answers to in a classification policy."""
    provider = embedding.provider
    names: set[str] = {provider}
    if provider == "sagemaker":
        names.add(f"sagemaker:{embedding.sagemaker.endpoint_name}")
    elif provider == "tei":
        names.add(f"tei:{embedding.tei.url}")
    elif provider == "bedrock":
        names.add(f"bedrock:{embedding.bedrock.model_id}")
    if provider in LOCAL:
        names.update({"local", "self-hosted"})
    elif provider in ("sagemaker", "tei"):
        names.add("self-hosted")
    else:
        names.add("shared-api")
    return frozenset(names)


def label_of(document: SourceDocument, policy: ClassificationSettings) -> str:
    """The document's label in canonical form (stripped, lower case), or the default."""
    label = (document.classification or "").strip().lower()
    return label or policy.default_label


def check_allowed(
    document: SourceDocument, policy: ClassificationSettings, embedding: EmbeddingSettings
) -> None:
    """Raise ClassificationBlockedError when ``document`` may not reach the embedder."""
    label = label_of(document, policy)
    allowed = policy.allowed_targets.get(label)
    if allowed is None:
        return
    names = target_names(embedding)
    if names.isdisjoint(allowed):
        raise ClassificationBlockedError(
            f"classified {label!r}: may be embedded only by {sorted(allowed)}, "
            f"not by {embedding.provider} ({', '.join(sorted(names - {embedding.provider}))})"
        )
