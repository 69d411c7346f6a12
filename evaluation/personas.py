"""ACL overlay on public benchmarks, and synthetic personas.

No public benchmark carries real ACLs, so documents are hashed into ``spaces`` (each readable by
``group:space-<k>``) and personas get random sets of spaces, plus groups that grant nothing. The
overlay is the ground truth the leak check uses, independent of what the index stores.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from rag.identity import UserContext
from rag.models import Acl


@dataclass(frozen=True)
class Overlay:
    spaces: int

    def space_of(self, doc_id: str) -> int:
        digest = hashlib.sha256(doc_id.encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.spaces

    def acl(self, doc_id: str) -> Acl:
        return Acl(allow=frozenset({f"group:space-{self.space_of(doc_id)}"}))


@dataclass(frozen=True)
class Persona:
    name: str
    spaces: frozenset[int]
    extra_groups: frozenset[str]

    @property
    def user(self) -> UserContext:
        groups = {f"space-{k}" for k in self.spaces} | set(self.extra_groups)
        return UserContext.of(f"persona-{self.name}", groups)

    def may_read(self, overlay: Overlay, doc_id: str) -> bool:
        return overlay.space_of(doc_id) in self.spaces


def make_personas(spaces: int, count: int, seed: int) -> list[Persona]:
    """``all`` (every space), ``none`` (no space), and ``count`` random personas between."""
    rng = random.Random(seed)  # noqa: S311 - reproducible sampling, not security
    personas = [
        Persona("all", frozenset(range(spaces)), frozenset()),
        Persona("none", frozenset(), frozenset({"staff"})),
    ]
    for i in range(count):
        size = rng.randint(1, max(1, spaces - 1))
        chosen = frozenset(rng.sample(range(spaces), size))
        noise = frozenset(f"team-{rng.randint(0, 999)}" for _ in range(rng.randint(0, 40)))
        personas.append(Persona(f"p{i}", chosen, noise))
    return personas
