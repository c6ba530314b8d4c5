"""The V2 model names: which (model, signature) a V2 model name stands for.

Every signature of every served model is a V2 model (``names``). The index of all of them is
the V2 protocol's own: built from the registry's models on first use and kept while they
stay as they are (``Runtime.call``, emptied when ``Registry.generation`` changes); the V2
endpoints over HTTP and gRPC read a name through it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from service.errors import NotFound

if TYPE_CHECKING:
    from service.descriptor import Version
    from service.inference import Runtime
    from service.registry.lookup import ServedModel

Index = dict[str, tuple[str, str]]


def names(version: Version) -> dict[str, str]:
    """V2 model name -> signature: the model's own name for its default signature, and
    ``<model>_<signature>`` for each signature when it has several."""
    found = {version.name: version.default_signature}
    if len(version.views) > 1:
        found.update({f"{version.name}_{s}": s for s in version.views})
    return found


def index(models: Iterable[ServedModel]) -> Index:
    """V2 model names -> (model, signature), from each model's latest version. A model's
    own name wins over another model's ``<model>_<signature>`` alias."""
    models = list(models)
    built: Index = {}
    for model in models:
        latest = model.latest()
        aliases = names(latest.version) if latest and latest.version else {}
        for v2_name, signature in aliases.items():
            built.setdefault(v2_name, (model.name, signature))
    for model in models:
        latest = model.latest()
        default = latest.version.default_signature if latest and latest.version else ""
        built[model.name] = (model.name, default)
    return built


def served(runtime: Runtime) -> Index:
    """The index of the models ``runtime`` serves now, rebuilt only after they change."""
    registry = runtime.registry
    return runtime.call(("v2 names",), lambda: index(registry.models.values()))


def target(runtime: Runtime, v2_name: str) -> tuple[str, str]:
    """(model, signature) behind a V2 model name; a 404 naming the ones served."""
    known = served(runtime)
    found = known.get(v2_name)
    if found is None:
        raise NotFound(
            "unknown_model",
            f"no model named {v2_name[:100]!r}",
            expected=str(sorted(known)),
        )
    return found
