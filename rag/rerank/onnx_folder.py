"""Opening a model folder (``model.onnx`` and ``tokenizer.json``) with ONNX Runtime and Hugging
Face ``tokenizers``: shared by the in-process rerankers (:mod:`rag.rerank.local`,
:mod:`rag.rerank.bi_encoder`). Every failure is a :class:`ConfigurationError` naming the file."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from rag.errors import ConfigurationError

MODEL_FILES: Final = ("model.onnx", "onnx/model.onnx")
TOKENIZER_FILES: Final = ("tokenizer.json", "onnx/tokenizer.json")
_PAD_TOKENS: Final = ("[PAD]", "<pad>")


@dataclass(frozen=True)
class OpenedModel:
    """A loaded folder: its model file, tokenizer, session and the session's input names."""

    model: Path
    tokenizer: Any
    session: Any
    inputs: frozenset[str]


def open_model_folder(
    folder: Path,
    *,
    what: str,
    setting: str,
    max_tokens: int,
    truncation: str = "longest_first",
    threads: int = 0,
    device: str = "cpu",
    sha256: str | None = None,
) -> OpenedModel:
    """Tokenizer (truncating to ``max_tokens``, padding with the model's pad token) and an ONNX
    Runtime session (CUDA first when ``device`` is cuda/auto and present) for ``folder``;
    ``sha256`` pins the model file. ``what`` names the model kind in errors, ``setting`` the
    settings section of the pin."""
    try:
        import onnxruntime as ort
        from tokenizers import Tokenizer
    except ImportError as exc:  # pragma: no cover - both are dependencies
        raise ConfigurationError(f"the {what} needs onnxruntime and tokenizers") from exc
    model = first_file(folder, MODEL_FILES, "model")
    tokenizer_path = first_file(folder, TOKENIZER_FILES, "tokenizer")
    if sha256 and file_sha256(model) != sha256:
        raise ConfigurationError(f"{model} fails its SHA-256 pin ({setting})")
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    except Exception as exc:  # tokenizers raises plain Exceptions
        raise ConfigurationError(f"{tokenizer_path} is not a tokenizer: {exc}") from exc
    tokenizer.enable_truncation(max_length=max_tokens, strategy=truncation)
    pad_id, pad_token = pad_token_of(tokenizer)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in available:
        providers.insert(0, "CUDAExecutionProvider")
    elif device == "cuda":
        raise ConfigurationError("device 'cuda' asked for, but ONNX Runtime has no CUDA")
    try:
        session = ort.InferenceSession(str(model), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ConfigurationError(f"{model} does not load in ONNX Runtime: {exc}") from exc
    names = frozenset(i.name for i in session.get_inputs())
    missing = {"input_ids", "attention_mask"} - names
    if missing:
        raise ConfigurationError(f"{model} takes no {sorted(missing)}: not a {what} model")
    return OpenedModel(model, tokenizer, session, names)


def first_file(folder: Path, names: Sequence[str], what: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise ConfigurationError(f"no {what} file in {folder} (looked for {', '.join(names)})")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pad_token_of(tokenizer: Any) -> tuple[int, str]:
    for token in _PAD_TOKENS:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return int(token_id), token
    return 0, _PAD_TOKENS[0]
