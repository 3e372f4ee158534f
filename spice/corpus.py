"""Documents for the challenger: readers, segmentation by tokens, seeded sampling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Document:
    """A segment of a real document; `id` is a hash of its text, so it is stable across runs."""

    id: str
    text: str
    source: str  # file (and line or row) it came from
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
