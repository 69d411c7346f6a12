"""Hypothesis strategies for user and group ids: the whole Unicode range, the formats real
directories use, and strings that look like query syntax. All drawn ids are valid."""

from __future__ import annotations

import unicodedata

from hypothesis import strategies as st

REAL_WORLD_IDS = [
    "o'brien@example.com",
    "CORP\\alice",
    "SVC-BACKUP$",
    "CN=Finance Team,OU=Groups,DC=corp,DC=example",
    "{6F9619FF-8B86-D011-B42D-00C04FC964FF}",
    "Finance Team",
    "domain users",
    "c:0t.c|tenant|2f6e1b3c-8a7b-4c1e-9d3a-5e7f9b1c2d4e",
    "i:0#.f|membership|alice@corp.example",
    "acme/platform-team",
    "team:platform",
    "_svc@corp.example",
    "josé",
    "日本",
    "zoë.ødegaard@corp.example",
]
HOSTILE_IDS = [
    "x') OR true OR ('a",
    "a']) OR true --",
    "a' OR '1'='1",
    '{"match_all": {}}',
    "*",
    "%",
    "\\",
    "public",
]


def is_valid_id(text: str) -> bool:
    """What rag.identity accepts, restated independently for the property tests."""
    norm = unicodedata.normalize("NFC", text).strip()
    return bool(norm) and not any(unicodedata.category(c) in {"Cc", "Cf", "Cs"} for c in norm)


any_text = st.text(st.characters(codec=None), max_size=40)
formats = st.sampled_from(REAL_WORLD_IDS + HOSTILE_IDS)
ids = st.one_of(
    any_text.filter(is_valid_id),
    formats,
    st.builds(lambda a, b: a + b, formats, any_text).filter(is_valid_id),
)
"""Valid user or group ids."""
