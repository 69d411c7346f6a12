"""The bi-encoder reranker: pooling, fusion and validation as pure functions, the whole reranker
on a tiny sentence encoder written here as ONNX (a token-embedding lookup), its settings, the
suite rows that name it, and (marked slow) the real bge-small-en-v1.5 folder that
scripts/fetch-rerank-model.sh fetches, skipped when it is absent."""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from evaluation.suite import Suite, first_stage, load_suite, reranked
from rag.errors import ConfigurationError, EmbeddingError
from rag.models import Acl, Chunk, Citation, SearchHit
from rag.rerank import Reranker, RerankSettings, build_reranker, rerank_hits
from rag.rerank.bi_encoder import (
    BiEncoderReranker,
    OnnxSentenceEncoder,
    PassageCache,
    fuse_ranks,
    pool,
)
from rag.rerank.settings import BGE_QUERY_PREFIX, DEFAULT_BI_ENCODER_DIR
from tests.unit.test_rerank import (
    _attr_int,
    _int,
    _len,
    _node,
    _str,
    _tensor,
    write_model_folder,
)

ROOT = Path(__file__).resolve().parents[2]
BGE_DIR = ROOT / DEFAULT_BI_ENCODER_DIR
BGE_SHA256 = "6c9c6101a956d62dfb5e7190c538226c0c5bb9cb27b651234b6df063ee7dbfe4"

# -- a tiny sentence encoder: each token's state is its row of E (3 wide) --------------------------
VOCAB = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "x": 4, "y": 5, "z": 6}
E = [
    [9.0, 9.0, 9.0],  # [PAD]: far from everything, so a pooling that ignores the mask shows
    [0.0, 0.0, 1.0],
    [1.0, 1.0, 0.0],  # [CLS]
    [0.0, 0.0, 0.0],
    [1.0, 0.0, 0.0],  # x
    [0.0, 1.0, 0.0],  # y
    [0.0, 0.0, 1.0],  # z
]


def _value_dims(field: int, name: str, dtype: int, dims: Sequence[str | int]) -> bytes:
    shape = b"".join(
        _len(1, _int(1, d) if isinstance(d, int) else _str(2, d)) for d in dims
    )  # Dimension: dim_value (1) or dim_param (2)
    return _len(field, _str(1, name) + _len(2, _len(1, _int(1, dtype) + _len(2, shape))))


def tiny_encoder(folder: Path, *, width: int | str = 3, token_types: bool = True) -> Path:
    """model.onnx (last_hidden_state = E[input_ids], shape (n, s, 3)) and tokenizer.json."""
    folder.mkdir(parents=True, exist_ok=True)
    table = struct.pack(f"<{len(E) * 3}f", *(v for row in E for v in row))
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])
    graph = (
        _node("Gather", ["E", "input_ids"], "last_hidden_state", _attr_int("axis", 0))
        + _str(2, "tiny-sentence-encoder")
        + _tensor("E", 1, [len(E), 3], table)
        + b"".join(_value_dims(11, name, 7, ["n", "s"]) for name in inputs)
        + _value_dims(12, "last_hidden_state", 1, ["n", "s", width])
    )
    return write_model_folder(folder, graph, VOCAB)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_encoder(tmp_path_factory.mktemp("tiny-bi"))


def _unit(v: Sequence[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def _hits(texts: Sequence[str]) -> list[SearchHit]:
    hits = []
    for i, text in enumerate(texts):
        chunk = Chunk(
            id=Chunk.make_id(f"d{i}", 0),
            document_id=f"d{i}",
            source="t",
            ordinal=0,
            text=text,
            token_count=1,
            acl=Acl(allow=frozenset({"group:g"})),
            citation=Citation(document_id=f"d{i}", uri=f"t:d{i}", title=""),
        )
        hits.append(SearchHit(chunk=chunk, score=1.0 / (i + 1)))
    return hits


# -- pure functions -----------------------------------------------------------------------------
def test_pool_cls_mean_and_pooled() -> None:
    hidden = np.array([[[3.0, 4.0], [0.0, 1.0], [100.0, 0.0]]])
    mask = np.array([[1, 1, 0]])
    assert np.allclose(pool(hidden, mask, "cls"), [[0.6, 0.8]])
    assert np.allclose(pool(hidden, mask, "mean"), [_unit([1.5, 2.5])])  # the padding is ignored
    assert np.allclose(pool(np.array([[0.0, 2.0]]), mask, "cls"), [[0.0, 1.0]])
    zero = pool(np.zeros((1, 2, 2)), np.ones((1, 2)), "mean")
    assert np.all(np.isfinite(zero)) and not zero.any()
    with pytest.raises(EmbeddingError, match="shape"):
        pool(np.zeros(3), mask, "cls")


def test_fuse_ranks_is_reciprocal_rank_fusion_of_both_orders() -> None:
    fused = fuse_ranks([0.1, 0.9, 0.5], k=60)
    # given order 0,1,2; model order 1,2,0
    expected = [1 / 61 + 1 / 63, 1 / 62 + 1 / 61, 1 / 63 + 1 / 62]
    assert np.allclose(fused, expected)
    assert [i for i, _ in sorted(enumerate(fused), key=lambda p: -p[1])] == [1, 0, 2]
    # agreement keeps the order; ties in the model's scores keep the given order
    assert list(np.argsort(-fuse_ranks([3.0, 2.0, 1.0]))) == [0, 1, 2]
    assert np.allclose(fuse_ranks([1.0, 1.0]), [2 / 61, 2 / 62])
    # a heavier model term lets the model's order win
    assert np.argmax(fuse_ranks([0.0, 0.0, 0.0, 1.0], k=1, weight=10.0)) == 3
    assert fuse_ranks([]).shape == (0,)
    with pytest.raises(ConfigurationError):
        fuse_ranks([1.0], k=0)
    with pytest.raises(EmbeddingError):
        fuse_ranks([float("nan"), 1.0])


def test_constructor_validation(model_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="pooling"):
        OnnxSentenceEncoder(model_dir, pooling="max")  # type: ignore[arg-type]
    encoder = OnnxSentenceEncoder(model_dir)
    with pytest.raises(ConfigurationError, match="fuse_k"):
        BiEncoderReranker(encoder, fuse_k=0)
    with pytest.raises(ConfigurationError, match="fuse_weight"):
        BiEncoderReranker(encoder, fuse_weight=0.0)


# -- the tiny model -----------------------------------------------------------------------------
def test_encoder_pools_and_prefixes(model_dir: Path) -> None:
    mean = OnnxSentenceEncoder(model_dir, pooling="mean", query_prefix="z ", passage_prefix="")
    assert mean.model_id == f"onnx-bi/{model_dir.name}"
    assert mean.dimension == 3
    # [CLS] x x [SEP] and [CLS] y [SEP] [PAD]: the mask keeps the padding out of the mean
    vectors = mean.embed_batch(["x x", "y"])
    assert np.allclose(vectors[0], _unit([3, 1, 0]))
    assert np.allclose(vectors[1], _unit([1, 2, 0]))
    cls = OnnxSentenceEncoder(model_dir, pooling="cls")
    assert np.allclose(cls.embed_batch(["x", "z z z"]), [_unit([1, 1, 0])] * 2)
    # the query (only) gets the prefix: [CLS] z x [SEP]
    assert np.allclose(mean.embed_batch(["x"], kind="query")[0], _unit([2, 1, 1]))
    assert np.allclose(mean.embed_batch(["x"])[0], _unit([2, 1, 0]))
    assert mean.embed_batch([]).shape == (0, 3)
    assert mean.calls == 3  # one run per batch (of the encoder); empty input runs nothing


def test_encoder_truncates_and_batches_by_length(model_dir: Path) -> None:
    short = OnnxSentenceEncoder(model_dir, pooling="mean", max_sequence_tokens=3, batch_size=1)
    # [CLS] x [SEP]: the y's are cut
    assert np.allclose(short.embed_batch(["x y y y y"])[0], _unit([2, 1, 0]))
    texts = ["x", "y y y y", "z z", "x y"]
    batched = OnnxSentenceEncoder(model_dir, pooling="mean", batch_size=2).embed_batch(texts)
    single = OnnxSentenceEncoder(model_dir, pooling="mean", batch_size=1)
    assert np.allclose(batched, np.stack([single.embed_batch([t])[0] for t in texts]))


def test_encoder_width_from_the_model_and_without_token_types(tmp_path: Path) -> None:
    folder = tiny_encoder(tmp_path / "symbolic", width="d", token_types=False)
    encoder = OnnxSentenceEncoder(folder, pooling="mean")
    assert encoder.dimension == 3
    assert encoder.calls == 0  # the probe is not counted
    assert np.allclose(encoder.embed_batch(["z"])[0], _unit([1, 1, 1]))


def test_encoder_folder_errors(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"fetch-rerank-model\.sh"):
        OnnxSentenceEncoder(tmp_path / "absent").embed_batch(["x"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigurationError, match="no model file"):
        OnnxSentenceEncoder(empty).embed_batch(["x"])
    with pytest.raises(ConfigurationError, match="SHA-256"):
        OnnxSentenceEncoder(model_dir, model_sha256="0" * 64).embed_batch(["x"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"not onnx")
    (broken / "tokenizer.json").write_text("{}")
    with pytest.raises(ConfigurationError):
        OnnxSentenceEncoder(broken).embed_batch(["x"])


def test_reranker_scores_by_cosine_and_fuses(model_dir: Path) -> None:
    encoder = OnnxSentenceEncoder(model_dir, pooling="mean", query_prefix="")
    plain = BiEncoderReranker(encoder)
    texts = ["z z z", "x y", "x x x x", "y"]
    cosines = plain.similarities("x", texts)
    assert cosines == pytest.approx(
        [float(_unit([2, 1, 0]) @ _unit(v)) for v in ([1, 1, 3], [2, 2, 0], [5, 1, 0], [1, 2, 0])],
        abs=1e-6,
    )
    ranking = plain.rerank("x", texts)
    assert [i for i, _ in ranking] == [2, 1, 3, 0]
    assert plain.rerank("x", texts, top_n=2) == ranking[:2]
    assert plain.rerank("x", []) == []
    fused = BiEncoderReranker(encoder, fuse=True, fuse_k=1)
    assert fused.model_id == f"onnx-bi/{model_dir.name}+rrf1"
    order = [i for i, _ in fused.rerank("x", texts)]
    assert order == [i for i, _ in sorted(enumerate(fuse_ranks(cosines, 1)), key=lambda p: -p[1])]
    assert isinstance(fused, Reranker)


def test_passage_vectors_are_embedded_once(model_dir: Path, tmp_path: Path) -> None:
    encoder = OnnxSentenceEncoder(model_dir, pooling="mean")
    cache = PassageCache(entries=2, path=tmp_path / "vectors.sqlite")
    reranker = BiEncoderReranker(encoder, cache=cache)
    first = reranker.similarities("x", ["x", "y", "x"])
    assert (cache.misses, cache.hits) == (2, 1)  # the duplicate is embedded once
    again = reranker.similarities("x", ["x", "y", "z"])
    assert np.allclose(first[:2], again[:2])
    assert (cache.misses, cache.hits) == (3, 3)
    calls = encoder.calls
    # a new process (a new cache object) finds them in SQLite; the memory holds only 2
    other = PassageCache(entries=2, path=tmp_path / "vectors.sqlite")
    assert np.allclose(
        other.vectors(encoder, ["x", "y", "z"]), cache.vectors(encoder, ["x", "y", "z"])
    )
    assert other.misses == 0
    assert encoder.calls == calls
    # another pooling is another key: nothing is reused across configurations
    mean_cls = OnnxSentenceEncoder(model_dir, pooling="cls")
    other.vectors(mean_cls, ["x"])
    assert other.misses == 1
    other.close()
    cache.close()


def test_reranker_is_thread_safe(model_dir: Path) -> None:
    reranker = BiEncoderReranker(OnnxSentenceEncoder(model_dir, pooling="mean"))
    texts = [f"x {'y ' * i}" for i in range(12)]
    expected = reranker.rerank("x", texts)
    results: list[list[tuple[int, float]]] = []
    cold = BiEncoderReranker(OnnxSentenceEncoder(model_dir, pooling="mean"))

    def work() -> None:
        results.append(cold.rerank("x", texts))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    for result in results:
        assert [i for i, _ in result] == [i for i, _ in expected]


def test_rerank_hits_only_reorders_what_the_store_returned(model_dir: Path) -> None:
    hits = _hits(["z z", "y", "x", "x y"])
    for fuse in (False, True):
        encoder = OnnxSentenceEncoder(model_dir, pooling="mean", query_prefix="")
        reranker = BiEncoderReranker(encoder, fuse=fuse)
        out = rerank_hits(reranker, "x", hits, 3, on_error="raise")
        assert len(out) == 3
        assert {h.chunk.id for h in out} <= {h.chunk.id for h in hits}
        assert out[0].chunk.text == "x"


def test_rerank_hits_falls_back_when_the_model_is_missing(tmp_path: Path) -> None:
    hits = _hits(["a", "b"])
    reranker = BiEncoderReranker(OnnxSentenceEncoder(tmp_path / "absent"))
    assert rerank_hits(reranker, "q", hits, 2) == hits
    with pytest.raises(ConfigurationError, match=r"fetch-rerank-model\.sh"):
        rerank_hits(reranker, "q", hits, 2, on_error="raise")


# -- settings -----------------------------------------------------------------------------------
def test_build_bi_encoder_from_settings(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"fetch-rerank-model\.sh"):
        build_reranker(RerankSettings(provider="bi_encoder"))
    settings = RerankSettings.model_validate(
        {
            "provider": "bi_encoder",
            "bi_encoder": {
                "model_dir": str(model_dir),
                "pooling": "mean",
                "fuse": True,
                "fuse_k": 5,
                "fuse_weight": 2.0,
                "cache_path": str(tmp_path / "c.sqlite"),
            },
        }
    )
    reranker = build_reranker(settings)
    assert isinstance(reranker, BiEncoderReranker)
    assert reranker.model_id == f"onnx-bi/{model_dir.name}+rrf5"
    assert [i for i, _ in reranker.rerank("x", ["y", "x"])] == [1, 0]
    assert (tmp_path / "c.sqlite").exists()
    defaults = RerankSettings().bi_encoder
    assert (defaults.pooling, defaults.query_prefix, defaults.fuse) == (
        "cls",
        BGE_QUERY_PREFIX,
        False,
    )
    with pytest.raises(ValueError, match="pooling"):
        RerankSettings.model_validate({"bi_encoder": {"pooling": "max"}})


def test_bi_encoder_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from rag.config import Settings

    monkeypatch.setenv("RAG_RERANK__PROVIDER", "bi_encoder")
    monkeypatch.setenv("RAG_RERANK__BI_ENCODER__MODEL_DIR", "/models/bge")
    monkeypatch.setenv("RAG_RERANK__BI_ENCODER__FUSE", "true")
    rerank = Settings().rerank
    assert rerank.provider == "bi_encoder"
    assert rerank.bi_encoder.model_dir == Path("/models/bge")
    assert rerank.bi_encoder.fuse is True


# -- suites -------------------------------------------------------------------------------------
def test_suite_modes_name_a_reranker() -> None:
    assert first_stage("hybrid+rerank") == "hybrid" and reranked("hybrid+rerank")
    assert first_stage("bm25") == "bm25" and not reranked("bm25")
    assert first_stage("dense+rerank") == "dense"
    with pytest.raises(ValueError, match=r"\[rerank\]"):
        Suite(name="s", modes=["hybrid", "hybrid+rerank"])
    with pytest.raises(ValueError, match=r"\[rerank\]"):
        Suite.model_validate(
            {"name": "s", "modes": ["bm25+rerank"], "rerank": {"provider": "none"}}
        )
    for name in ("scifact-embedded", "scifact-nightly"):
        suite = load_suite(name)
        assert "hybrid+rerank" in suite.modes
        assert suite.rerank is not None and suite.rerank.provider == "bi_encoder"
        assert suite.rerank.bi_encoder.model_dir == DEFAULT_BI_ENCODER_DIR
        assert suite.rerank.bi_encoder.model_sha256 == BGE_SHA256
        assert suite.thresholds["hybrid+rerank.nDCG@10"] > suite.thresholds["hybrid.nDCG@10"]
    assert load_suite("scifact-small").rerank is None


# -- the real model (scripts/fetch-rerank-model.sh) ---------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(
    not (BGE_DIR / "model.onnx").is_file(),
    reason=f"no {DEFAULT_BI_ENCODER_DIR}: run scripts/fetch-rerank-model.sh",
)
def test_bge_small_reranks_the_relevant_passage_first() -> None:
    encoder = OnnxSentenceEncoder(BGE_DIR, model_sha256=BGE_SHA256)
    reranker = BiEncoderReranker(encoder)
    passages = [
        "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889.",
        "Photosynthesis converts light energy into chemical energy stored in glucose.",
        "Insulin is a peptide hormone produced by beta cells of the pancreatic islets; it "
        "regulates the metabolism of carbohydrates by promoting glucose uptake.",
        "The stock market closed higher on Tuesday after a volatile session.",
    ]
    assert encoder.dimension == 384
    vectors = encoder.embed_batch(passages)
    assert vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    ranking = reranker.rerank("Which hormone lowers blood glucose?", passages)
    assert ranking[0][0] == 2
    assert -1.0 <= ranking[-1][1] < ranking[0][1] <= 1.0
    assert reranker.rerank("When was the Eiffel Tower built?", passages)[0][0] == 0
    # the query prefix matters to bge: the query is embedded with it, passages without
    plain = OnnxSentenceEncoder(BGE_DIR, query_prefix="")
    with_prefix = encoder.embed_batch(["insulin"], kind="query")[0]
    assert not np.allclose(with_prefix, plain.embed_batch(["insulin"], kind="query")[0])
    assert np.allclose(encoder.embed_batch(["insulin"])[0], plain.embed_batch(["insulin"])[0])


@pytest.mark.slow  # a suite run (ingest and all): make test, not make test-fast
def test_a_suite_row_reranks_or_fails_naming_the_fetch_script(
    tmp_path: Path, model_dir: Path
) -> None:
    from evaluation.runner import run_suite
    from rag.config import Settings
    from tests.unit.test_evaluation import suite, tiny_beir

    root = tiny_beir(tmp_path / "eval")
    rerank = {
        "provider": "bi_encoder",
        "candidates": 10,
        "on_error": "fallback",  # the runner raises anyway: a failing reranker fails the row
        "bi_encoder": {"model_dir": str(model_dir), "pooling": "mean", "fuse": True},
    }
    rows = {
        "modes": ["bm25", "bm25+rerank"],
        "thresholds": {"bm25.nDCG@10": 0.3, "bm25+rerank.nDCG@10": 0.3},
    }
    settings = Settings(data_dir=tmp_path / "d")
    result = run_suite(
        suite(**rows, rerank=rerank), tmp_path / "out", tmp_path / "w", settings, root
    )
    assert result.leaks == 0
    assert result.passed, result.failures
    assert [m.mode for m in result.modes] == ["bm25", "bm25+rerank"]
    assert "bm25+rerank.nDCG@10" in result.headline()
    assert (tmp_path / "w" / "rerank-cache.sqlite").exists()  # passage vectors kept

    missing = {**rerank, "bi_encoder": {"model_dir": str(tmp_path / "absent")}}
    failed = run_suite(
        suite(**rows, rerank=missing), tmp_path / "out2", tmp_path / "w2", settings, root
    )
    assert not failed.passed
    assert [m.mode for m in failed.modes] == ["bm25"]  # the other rows still run
    assert any(
        f.startswith("bm25+rerank: no reranker model folder") and "fetch-rerank-model.sh" in f
        for f in failed.failures
    ), failed.failures
    assert any("bm25+rerank.nDCG@10: no such measure" in f for f in failed.failures)


# -- the bench's rows ---------------------------------------------------------------------------
def test_bench_rows_rerank_the_same_first_stage(model_dir: Path) -> None:
    import argparse

    from bench.rerank import _variants, measure
    from evaluation.datasets import BeirDataset

    texts = ["z z", "y", "x", "x y"]
    data = BeirDataset(
        "t",
        {f"d{i}": ("", t) for i, t in enumerate(texts)},
        {"q": "x"},
        {"q": {"d2": 1}},
    )
    encoder = OnnxSentenceEncoder(model_dir, pooling="mean", query_prefix="")
    reranker = BiEncoderReranker(encoder)
    args = argparse.Namespace(compare=True, candidates=4, also_candidates=[2], fuse_k=60)
    variants = _variants(reranker, args)
    assert [(name, n) for name, _, n in variants] == [
        ("+ bge cosine top 4", 4),
        ("+ bge fused top 4", 4),
        ("+ bge cosine top 2", 2),
        ("+ bge fused top 2", 2),
    ]
    base, rows = measure(data, ["q"], lambda _: _hits(texts), variants)
    assert base.metrics["nDCG@10"] < 1.0  # d2 is third in the first stage
    assert rows[0].metrics["nDCG@10"] == pytest.approx(1.0)  # the model puts "x" first
    assert rows[2].metrics["nDCG@10"] == base.metrics["nDCG@10"]  # d2 is not in the top 2
    assert all(len(r.latencies_ms) == 1 for r in rows)
    single = argparse.Namespace(compare=False, candidates=3, also_candidates=[], fuse_k=60)
    assert [(n, c) for n, _, c in _variants(reranker, single)] == [("+ rerank top 3", 3)]
    assert _variants(None, single) == []
