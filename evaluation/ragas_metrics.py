"""ragas' ID-based context precision and recall (offline), with a guard: a query that retrieves
nothing scores 0, never a perfect or undefined score. LLM-judged metrics run on Bedrock only when
``RAG_EVAL_BEDROCK_MODEL_ID`` is set; otherwise they are skipped with a message saying so."""

from __future__ import annotations

import asyncio
import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

LLM_SKIP_MESSAGE = (
    "ragas LLM-judged metrics (context precision, context recall, faithfulness) skipped: "
    "set RAG_EVAL_BEDROCK_MODEL_ID (and AWS credentials) to run them on Bedrock"
)


def id_based_scores(
    samples: Sequence[tuple[Sequence[str], Sequence[str]]],
) -> tuple[float, float]:
    """Mean (precision, recall) over (retrieved ids, reference ids) pairs."""
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ragas.dataset_schema import SingleTurnSample
        from ragas.metrics import IDBasedContextPrecision, IDBasedContextRecall

    precision_metric, recall_metric = IDBasedContextPrecision(), IDBasedContextRecall()

    async def score_all() -> list[tuple[float, float]]:
        out = []
        for retrieved, reference in samples:
            if not retrieved:  # guard: ragas would say nan (precision) for an empty context
                out.append((0.0, 0.0))
                continue
            sample = SingleTurnSample(
                retrieved_context_ids=list(retrieved), reference_context_ids=list(reference)
            )
            p = await precision_metric.single_turn_ascore(sample)
            r = await recall_metric.single_turn_ascore(sample)
            out.append((_finite(p), _finite(r)))
        return out

    scores = asyncio.run(score_all()) if samples else []
    if not scores:
        return 0.0, 0.0
    return (sum(p for p, _ in scores) / len(scores), sum(r for _, r in scores) / len(scores))


def _finite(value: Any) -> float:
    number = float(value)
    return 0.0 if math.isnan(number) else number


def llm_metrics_configured() -> bool:
    return bool(os.environ.get("RAG_EVAL_BEDROCK_MODEL_ID"))


def llm_judged_scores(
    samples: Sequence[tuple[str, list[str], str]], model_id: str, region: str | None = None
) -> dict[str, float]:
    """ragas' LLM-judged context precision, context recall and faithfulness on Bedrock.

    ``samples`` are (question, retrieved context texts, reference text). The same Bedrock model
    writes each answer from the retrieved contexts, then judges. Runs only when configured.
    """
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_aws import ChatBedrockConverse
        from ragas.dataset_schema import SingleTurnSample
        from ragas.llms import LangchainLLMWrapper
        from ragas.metrics import (
            Faithfulness,
            LLMContextPrecisionWithReference,
            LLMContextRecall,
        )

    chat = ChatBedrockConverse(model_id=model_id, region_name=region, temperature=0)
    judge = LangchainLLMWrapper(chat)
    metrics = {
        "ragas.llm_context_precision": LLMContextPrecisionWithReference(llm=judge),
        "ragas.llm_context_recall": LLMContextRecall(llm=judge),
        "ragas.faithfulness": Faithfulness(llm=judge),
    }

    async def score_all() -> dict[str, float]:
        totals = dict.fromkeys(metrics, 0.0)
        for question, contexts, reference in samples:
            prompt = (
                "Answer the question using only these passages.\n\n"
                + "\n\n".join(contexts)
                + f"\n\nQuestion: {question}"
            )
            answer = str((await chat.ainvoke(prompt)).content)
            sample = SingleTurnSample(
                user_input=question,
                retrieved_contexts=contexts or [""],
                reference=reference,
                response=answer,
            )
            for name, metric in metrics.items():
                value = 0.0 if not contexts else _finite(await metric.single_turn_ascore(sample))
                totals[name] += value
        return {name: total / max(len(samples), 1) for name, total in totals.items()}

    return asyncio.run(score_all())
