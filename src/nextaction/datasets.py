"""Example data in one place: synthetic logs now, downloadable public datasets (``download``) lazily.

``download`` lives in ``nextaction.data.download`` and is imported on first use, so this module imports
even where that one is missing or heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nextaction.data.synthetic import SyntheticConfig, SyntheticLog, generate, synthetic

if TYPE_CHECKING:
    from nextaction.data.download import download

__all__ = ["SyntheticConfig", "SyntheticLog", "download", "generate", "synthetic"]


def __getattr__(name: str) -> Any:
    if name == "download":
        from nextaction.data.download import download

        return download
    raise AttributeError(f"module 'nextaction.datasets' has no attribute {name!r}")
