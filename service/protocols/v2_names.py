"""The V2 model names: which (model, signature) a V2 model name stands for.

Every signature of every served model is a V2 model (``descriptor.Version.v2_names``). The
registry rebuilds this index whenever the served models change (``Registry.v2_index``); the
V2 endpoints over HTTP and gRPC read a name through it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from service.errors import NotFound

if TYPE_CHECKING:
    from service.registry.lookup import ServedModel


def index(models: Iterable[ServedModel]) -> dict[str, tuple[str, str]]:
    """V2 model names -> (model, signature), from each model's latest version. A model's
    own name wins over another model's ``<model>_<signature>`` alias."""
    models = list(models)
    index: dict[str, tuple[str, str]] = {}
    for model in models:
        latest = model.latest()
        names = latest.version.v2_names() if latest and latest.version else {}
        for v2_name, signature in names.items():
            index.setdefault(v2_name, (model.name, signature))
    for model in models:
        latest = model.latest()
        default = latest.version.default_signature if latest and latest.version else ""
        index[model.name] = (model.name, default)
    return index


def target(index: dict[str, tuple[str, str]], v2_name: str) -> tuple[str, str]:
    """(model, signature) behind a V2 model name; a 404 naming the ones served."""
    found = index.get(v2_name)
    if found is None:
        raise NotFound(
            "unknown_model",
            f"no model named {v2_name[:100]!r}",
            expected=str(sorted(index)),
        )
    return found
