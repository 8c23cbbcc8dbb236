"""nextaction: transformer models that predict what users do next.

Public entry points are imported lazily so that ``import nextaction`` does no work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__"]

if TYPE_CHECKING:
    from nextaction.predictor import Predictor


def __getattr__(name: str) -> Any:
    if name == "Predictor":
        from nextaction.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'nextaction' has no attribute {name!r}")
