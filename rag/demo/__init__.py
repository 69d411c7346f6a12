"""The bundled demo: a fictional company's documents, with ACLs, and users who see different
answers to the same questions."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Final

from rag.identity import UserContext

CORPUS_NAME: Final = "kestrel"

USERS: Final = (
    UserContext.of("alice", ["hr", "employees"]),
    UserContext.of("mallory", ["hr", "employees"]),
    UserContext.of("bob", ["engineering", "employees"]),
    UserContext.of("carol", ["finance", "employees"]),
    UserContext.of("ceo", ["employees"]),
    UserContext.of("guest"),
)

DEMO_MIN_SCORE: Final = 0.35
"""Below this cosine similarity the demo says nothing relevant was found."""

QUESTIONS: Final = (
    "How much does a senior software engineer earn?",
    "How many vacation days do employees get?",
    "What is the research and development budget for Q3?",
    "What is the revenue forecast for Q3?",
    "Why was the payment service down?",
    "Where do visitors sign in at the office?",
)


def corpus_path() -> Path:
    """The demo corpus shipped inside the package."""
    return Path(str(resources.files("rag.demo") / "corpus"))
