"""Embedding server throughput on a GPU host: the model called directly against the same model
behind ``rag serve-embeddings`` (real HTTP, dynamic batching), in one run. Writes JSON to $OUT.

    python -m bench.gpu_server MODEL_DIR [OUT_DIR]
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from bench.embeddings import server_benchmark
from rag.embeddings.sentence_transformers import SentenceTransformerEmbedder


def main() -> None:
    model_dir = Path(sys.argv[1])
    out = Path(sys.argv[2] if len(sys.argv) > 2 else os.environ.get("OUT", "."))
    texts = [
        f"Sentence {i}: the drone inspected blade {i % 37} of turbine {i % 11} and found "
        f"leading-edge erosion near the tip, about {i % 9} millimetres deep."
        for i in range(8192)
    ]
    results = {"host": platform.node(), "python": platform.python_version()}
    for device, clients, batch, max_batch in (("cuda", 32, 32, 256), ("cpu", 16, 16, 64)):
        embedder = SentenceTransformerEmbedder(model_dir, device=device, batch_size=256)
        subset = texts if device == "cuda" else texts[:1024]
        start = time.perf_counter()
        direct, served = server_benchmark(
            embedder, subset, client_batch=batch, clients=clients, max_batch=max_batch
        )
        results[device] = {
            "texts": len(subset),
            "direct_texts_per_s": round(direct, 1),
            "server_texts_per_s": round(served, 1),
            "ratio": round(served / direct, 3),
            "device": embedder.device,
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(device, results[device], flush=True)
    try:
        import torch

        results["gpu"] = torch.cuda.get_device_name(0)
    except Exception as exc:  # no GPU: the CPU row still says something
        results["gpu"] = f"none ({exc})"
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_server.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
