"""Selectors by name: ``get_selector("topk-activation").select(embeddings, k)``.

The registry names are stable: the CLI, the app and sweeps refer to selectors by them.
"""

from __future__ import annotations

from typing import Any

from toolkit.errors import SampleSiftError
from toolkit.selectors.activation import TopKActivation
from toolkit.selectors.base import SelectionResult, Selector, class_quotas
from toolkit.selectors.random import RandomBalancedSelector, RandomSelector

SELECTORS: dict[str, type[Selector]] = {
    cls.name: cls
    for cls in (
        RandomSelector,
        RandomBalancedSelector,
        TopKActivation,
    )
}


def available() -> list[str]:
    """Registered selector names."""
    return list(SELECTORS)


def get_selector(name: str, **params: Any) -> Selector:
    """A selector instance by registry name, with optional parameters."""
    try:
        cls = SELECTORS[name]
    except KeyError:
        raise SampleSiftError(f"unknown selection method {name!r}; choose one of: {', '.join(SELECTORS)}") from None
    return cls(**params)


__all__ = ["SELECTORS", "SelectionResult", "Selector", "available", "class_quotas", "get_selector"]
