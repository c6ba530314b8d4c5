"""Every route of the service, declared once: one table serves the requests (``service.app``)
and writes the OpenAPI document (``service.openapi``).

BentoML keeps ``/livez``, ``/readyz``, ``/metrics`` and its static files; everything else is
here. ``[...]`` marks an optional part of a path (the version).
"""

from __future__ import annotations

import asyncio
from typing import Any

from service import admin, native, openapi, page
from service.errors import NotFound, RequestError
from service.http import RawRequest, Reply, json_reply
from service.inference import Runtime, error_reply
from service.protocols import tfserving, v2, v2_codec, v2_names
from service.registry.lookup import READY, version_number
from service.routing import Route, RouteTable

MODELS, V2, TF, ADMIN, DOCS = (
    "models",
    "V2 (KServe / Triton)",
    "TensorFlow Serving",
    "model repository (admin)",
    "documentation",
)


def _described(model: Any, runtime: Runtime) -> dict[str, Any]:
    described = model.describe()
    latest = model.latest()
    if latest is not None and latest.version is not None:  # the V2 protocol's names for it
        described["v2_names"] = sorted(v2_names.names(latest.version))
    described["shadow"] = runtime.shadows.describe(model)  # this worker's comparisons
    if runtime.monitor is not None:
        described["drift"] = runtime.monitor.describe(model)
    return described


async def list_models(request: RawRequest, runtime: Runtime) -> Reply:
    models = sorted(runtime.registry.models.values(), key=lambda m: m.name)
    guard = runtime.guard
    if guard is not None and guard.enabled:  # only what the caller's key may call: the
        # others' names, versions and drift are none of its business (checked already, so
        # identify finds the caller; a digest lookup, or a cached token)
        caller = guard.identify(request.headers)
        models = [m for m in models if caller.may_call(m.name)]
    listed: dict = {"models": [_described(m, runtime) for m in models]}
    if runtime.registry.mirror is not None:  # a remote repository: reachable, cache
        listed["repository"] = runtime.registry.mirror.describe()
    return json_reply(listed)


async def describe_model(request: RawRequest, runtime: Runtime, name: str) -> Reply:
    try:
        return json_reply(_described(runtime.registry.find(name), runtime))
    except RequestError as error:
        return error_reply(error)


async def drift_plot(request: RawRequest, runtime: Runtime, name: str) -> Reply:
    """The reference and live distributions of a served version (``?version=``, else the
    latest), drawn off the event loop."""
    try:
        model = runtime.registry.find(name)
        wanted = request.query.get("version")
        number = version_number(wanted) if wanted is not None else None
        if wanted is not None and number is None:
            raise NotFound("unknown_version", f"version {wanted[:20]!r} is not served")
        if number is not None:
            number = model.number_of(number)  # a label: its version
            loaded = model.versions.get(number)
            if loaded is None or loaded.state != READY:  # not "no reference.json" (it has none)
                raise model.unknown_version(number)
        png = None
        if runtime.monitor is not None:
            png = await asyncio.to_thread(runtime.monitor.drift_png, model, number)
        if png is None:
            raise NotFound(
                "no_reference",
                f"{name!r} has no drift checks: no reference.json in that version",
                expected="a version trained or exported with reference statistics",
            )
    except RequestError as error:
        return error_reply(error)
    return Reply(png, media_type="image/png")


async def model_file(
    request: RawRequest, runtime: Runtime, name: str, version: str, file: str
) -> Reply:
    """A served version's model card or one of its plots: only files its manifest lists."""
    try:
        model = runtime.registry.find(name)
        number = model.number_of(version_number(version) or 0)  # a number or a label
        loaded = model.versions.get(number)
        if loaded is None or loaded.state != READY or loaded.version is None:
            raise model.unknown_version(number)
        # Off the event loop: a slow disk, or a file swapped for something that blocks,
        # must not stall the worker (and its /livez).
        data = await asyncio.to_thread(loaded.version.card_file, file)
    except RequestError as error:
        return error_reply(error)
    except OSError:
        return error_reply(NotFound("not_found", "the file left the repository", field="file"))
    kind = "text/markdown; charset=utf-8" if file.endswith(".md") else "image/png"
    return Reply(data, media_type=kind)


async def card(request: RawRequest, runtime: Runtime, name: str, version: str) -> Reply:
    return await model_file(request, runtime, name, version, "model_card.md")


async def document(request: RawRequest, runtime: Runtime) -> Reply:
    return json_reply(openapi.document(TABLE, runtime))


async def index_page(request: RawRequest, runtime: Runtime) -> Reply:
    return page.reply(runtime, request.headers.get("host"))


async def favicon(request: RawRequest, runtime: Runtime) -> Reply:
    return page.favicon()


def _known_native(runtime: Runtime, parameters: dict[str, Any]) -> bool:
    """``/{name}/{signature}`` exists for a served model's rich signature only; any other
    two-segment path is not ours (BentoML's static files) or not found."""
    model = runtime.registry.models.get(parameters.get("name", ""))
    latest = model.latest() if model else None
    if latest is None or latest.version is None:
        return model is not None
    view = latest.version.views.get(parameters.get("signature", ""))
    return view is not None and view.rich


VERSION = "[/versions/{version}]"
ROUTES = [
    # -- native --------------------------------------------------------------------------
    Route("GET", "/", index_page, tags=(DOCS,), doc=None),
    Route("GET", "/favicon.ico", favicon, tags=(DOCS,), doc=None),
    Route("GET", "/docs.json", document, tags=(DOCS,), doc=openapi.DOCUMENT),
    Route("GET", "/models", list_models, tags=(MODELS,), doc=openapi.LIST_MODELS),
    Route("GET", "/models/{name}", describe_model, tags=(MODELS,), doc=openapi.DESCRIBE_MODEL),
    Route("GET", "/models/{name}/drift.png", drift_plot, tags=(MODELS,), doc=openapi.DRIFT_PLOT),
    Route("GET", "/models/{name}/versions/{version}/card", card, tags=(MODELS,),
          doc=openapi.CARD),
    Route("GET", "/models/{name}/versions/{version}/files/{file}", model_file, tags=(MODELS,),
          doc=openapi.MODEL_FILE),
    Route("POST", "/models/{name}/predict", native.tensors, tags=(MODELS,),
          doc=openapi.TENSOR_PREDICT, infer=True),
    Route("POST", "/{name}/{signature}", native.rich, doc=openapi.RICH, infer=True,
          known=_known_native),
    # -- Open Inference Protocol (V2) -------------------------------------------------------
    Route("GET", "/v2", v2.server_metadata, tags=(V2,), doc=openapi.V2_SERVER),
    Route("GET", "/v2/health/live", v2.server_live, tags=(V2,), doc=openapi.V2_LIVE),
    Route("GET", "/v2/health/ready", v2.server_ready, tags=(V2,), doc=openapi.V2_READY),
    Route("GET", "/v2/models/{name}" + VERSION, v2.metadata, tags=(V2,),
          doc=openapi.V2_METADATA),
    Route("GET", "/v2/models/{name}" + VERSION + "/ready", v2.ready, tags=(V2,),
          doc=openapi.V2_MODEL_READY),
    Route("GET", "/v2/models/{name}" + VERSION + "/config", v2.config, tags=(V2,),
          doc=openapi.V2_CONFIG),
    Route("POST", "/v2/models/{name}" + VERSION + "/infer", v2_codec.infer, tags=(V2,),
          doc=openapi.V2_INFER, infer=True),
    Route("POST", "/v2/repository/index", admin.index, tags=(ADMIN,), doc=openapi.ADMIN_INDEX),
    Route("POST", "/v2/repository/models/{name}/load", admin.load, tags=(ADMIN,),
          doc=openapi.ADMIN_LOAD),
    Route("POST", "/v2/repository/models/{name}/unload", admin.unload, tags=(ADMIN,),
          doc=openapi.ADMIN_UNLOAD),
    Route("POST", "/v2/repository/models/{name}/routing", admin.routing, tags=(ADMIN,),
          doc=openapi.ADMIN_ROUTING),
    # -- TensorFlow Serving REST ------------------------------------------------------------
    Route("GET", "/v1/models/{name}" + VERSION, tfserving.status, tags=(TF,),
          doc=openapi.TF_STATUS),
    Route("GET", "/v1/models/{name}" + VERSION + "/metadata", tfserving.metadata, tags=(TF,),
          doc=openapi.TF_METADATA),
    Route("POST", "/v1/models/{name}" + VERSION + ":predict", tfserving.predict, tags=(TF,),
          doc=openapi.TF_PREDICT, infer=True),
    Route("GET", "/v1/models/{name}/labels/{label}", tfserving.labelled_status, tags=(TF,),
          doc=openapi.TF_STATUS),
    Route("GET", "/v1/models/{name}/labels/{label}/metadata", tfserving.labelled_metadata,
          tags=(TF,), doc=openapi.TF_METADATA),
    Route("POST", "/v1/models/{name}/labels/{label}:predict", tfserving.labelled_predict,
          tags=(TF,), doc=openapi.TF_PREDICT, infer=True),
]  # fmt: skip
TABLE = RouteTable(ROUTES)
