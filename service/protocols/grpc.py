"""Open Inference Protocol over gRPC: KServe's and Triton's ``inference.GRPCInferenceService``.

Runs in every worker on its event loop (``grpc.aio``), beside HTTP, on ``SERVING_GRPC_PORT``
(8001; 0 turns it off; the workers share the port). ``ModelInfer`` is the same ``Call`` as
V2 over HTTP: the same model names, versions, batchers, validation, limits and metrics; only
the tensors come from protobuf (typed ``contents`` or ``raw_input_contents``) and the answer
goes back as ``raw_output_contents``, as Triton answers. Errors are gRPC status codes with the
service's message, each code's status from ``service.errors.CATALOGUE`` (INVALID_ARGUMENT for
400/422, NOT_FOUND 404, RESOURCE_EXHAUSTED 413/429, UNAVAILABLE 503, DEADLINE_EXCEEDED 504,
UNAUTHENTICATED 401, PERMISSION_DENIED 403).
The message stubs are the ones Triton's own client ships (``tritonclient.grpc``), so the wire
format is Triton's exactly. Shared memory, statistics, tracing and logging settings, and
streaming are not served (UNIMPLEMENTED).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from typing import Any

import grpc
from google.protobuf.message_factory import GetMessageClass
from tritonclient.grpc import model_config_pb2 as config_pb
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service import admin, auth, portclaim
from service.config import Limits
from service.descriptor import Version
from service.errors import RequestError
from service.http import Reply
from service.inference import Call, Decoded, Runtime
from service.interfaces.base import BYTES
from service.protocols import v2, v2_names
from service.protocols.common import protocol_errors, serve
from service.protocols.v2_codec import (
    TensorInput,
    V2Request,
    answer_tensors,
    check_header,
    read_feed,
    to_raw,
)
from service.registry.lookup import READY, version_number

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 1000
# The typed contents field of each V2 datatype (protobuf has no 8- or 16-bit fields).
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}


class GrpcRequest:
    """A gRPC call as ``inference.Serving`` sees a request: metadata for headers; the body is
    the protobuf message, already parsed (within the server's message size limit)."""

    def __init__(self, message: Any, context: grpc.aio.ServicerContext) -> None:
        self.message = message
        self.headers = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        self.query: dict[str, str] = {}

    async def body(self, limits: Limits) -> bytes:
        return b""


def _parameter(value: Any) -> Any:
    if value is None:
        return None
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind else None


def v2_request(message: Any, limits: Limits) -> V2Request:
    """A ModelInferRequest as the ``V2Request`` HTTP also makes: each input's data from
    ``raw_input_contents`` (in input order) when the client sent them, else from its typed
    ``contents``. Every header is checked here, before any data is read."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise RequestError(
            "invalid_request",
            f"{len(raw)} raw_input_contents for {len(message.inputs)} inputs",
            field="raw_input_contents",
        )
    inputs = []
    for index, tensor in enumerate(message.inputs):
        name, shape, datatype = check_header(
            tensor.name, list(tensor.shape), tensor.datatype, limits
        )
        read = TensorInput(name, shape, datatype)
        if raw:
            read.raw = raw[index]
            if tensor.HasField("contents"):
                read.problem = RequestError(
                    "invalid_request",
                    f"input {name!r}: both contents and raw_input_contents given",
                    field=name,
                )
        elif datatype in CONTENTS:
            read.values = getattr(tensor.contents, CONTENTS[datatype])
        else:
            read.problem = RequestError(
                "invalid_request",
                f"input {name!r}: {datatype} has no typed contents field",
                field=name,
                expected="raw_input_contents",
            )
        inputs.append(read)
    # gRPC answers are raw_output_contents; ``classification`` is an output's one option.
    outputs = [
        {
            "name": output.name,
            "parameters": {
                "classification": _parameter(output.parameters.get("classification")) or 0
            },
        }
        for output in message.outputs
    ]
    return V2Request(inputs, message.id, {"binary_data_output": True}, outputs or None)


class GrpcInfer:
    """A ModelInfer request: the same ``Call`` V2 over HTTP makes, and the same reader."""

    def __init__(self, runtime: Runtime, message: Any) -> None:
        name = self.name = message.model_name
        model, self.signature = v2_names.target(runtime, name)
        number = version_number(message.model_version or None)
        label = f"/v2/models/{name}/infer"
        self.call = Call(model, number, self.signature, label, protocol_errors, "grpc")

    async def decode(
        self, request: GrpcRequest, _: bytes, served: Version, limits: Limits
    ) -> Decoded:
        read = v2_request(request.message, limits)
        feed, wanted = await read_feed(read, served, self.signature, limits, False)
        return Decoded(self.signature, feed, (request.message.id, wanted))

    def encode(self, outputs: Any, decoded: Decoded, served: Version) -> Reply:
        rid, wanted = decoded.context
        response = pb.ModelInferResponse(
            model_name=self.name, model_version=str(served.number), id=rid
        )
        view = served.views[decoded.signature]
        for output, value, datatype in answer_tensors(outputs, wanted, served, view):
            shape = list(value.shape)
            response.outputs.add(name=output.tensor.name, datatype=datatype, shape=shape)
            response.raw_output_contents.append(to_raw(value, datatype))
        return Reply(b"", message=response)


def status_of(error: RequestError) -> grpc.StatusCode:
    """The gRPC status of a refusal: its code's, from the catalogue."""
    return grpc.StatusCode[error.grpc]


async def _abort(context: grpc.aio.ServicerContext, error: RequestError | None) -> None:
    """Abort with the refusal's catalogued status and its whole reason (``text``); a reply
    written from no refusal (an internal fault, 500) is INTERNAL."""
    if error is None:
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
    # grpc-message travels as a header: HTTP/2 peers refuse headers past 16 KiB (and then
    # report RESOURCE_EXHAUSTED instead of this code), so a message quoting a client's
    # string is cut well below that.
    await context.abort(status_of(error), error.text()[:MAX_MESSAGE_CHARS])


def _model_reply(runtime: Runtime, name: str, version: str) -> tuple[Any, Any]:
    model, signature = v2_names.target(runtime, name)
    loaded = runtime.registry.resolve(model, version_number(version or None))
    assert loaded.version is not None
    return loaded, loaded.version.view(signature)


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.runtime.registry.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            loaded, _ = _model_reply(self.runtime, request.name, request.version)
        except RequestError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=loaded.state == READY)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(
            name=v2.SERVER_NAME, version=v2._version(), extensions=v2.EXTENSIONS
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            loaded, view = _model_reply(self.runtime, request.name, request.version)
        except RequestError as error:
            await _abort(context, error)
        model = self.runtime.registry.find(loaded.model)
        described = v2.model_metadata(
            request.name, loaded, view, [v.number for v in model.ready_versions]
        )
        response = pb.ModelMetadataResponse(
            name=described["name"], versions=described["versions"], platform=described["platform"]
        )
        for key, tensors in (("inputs", described["inputs"]), ("outputs", described["outputs"])):
            for tensor in tensors:
                getattr(response, key).add(**tensor)
        return response

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        try:
            loaded, view = _model_reply(self.runtime, request.name, request.version)
        except RequestError as error:
            await _abort(context, error)
        policy = self.runtime.registry.find(loaded.model).config.version_policy.describe()
        described = v2.model_config(request.name, loaded, view, policy)
        config = config_pb.ModelConfig(
            name=described["name"],
            platform=described["platform"],
            max_batch_size=described["max_batch_size"],
        )
        for key, tensors in (("input", described["input"]), ("output", described["output"])):
            for tensor in tensors:
                getattr(config, key).add(
                    name=tensor["name"],
                    data_type=config_pb.DataType.Value(tensor["data_type"]),
                    dims=tensor["dims"],
                )
        if "dynamic_batching" in described:
            delay = described["dynamic_batching"]["max_queue_delay_microseconds"]
            config.dynamic_batching.max_queue_delay_microseconds = delay
        return pb.ModelConfigResponse(config=config)

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        incoming = GrpcRequest(request, context)
        try:
            adapter = GrpcInfer(self.runtime, request)
        except RequestError as error:
            await _abort(context, error)
        reply = await serve(incoming, self.runtime, adapter)  # the concurrency limit included
        if reply.message is None:
            await _abort(context, reply.error)
        return reply.message

    # -- the model repository extension (Bearer token in the call's metadata) ----------------

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        await self._authorise(context)
        response = pb.RepositoryIndexResponse()
        for entry in await self.runtime.registry.index(ready_only=request.ready):
            response.models.add(**entry)
        return response

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        await self._authorise(context)
        try:
            admin.check_parameters(dict(request.parameters) or None, "load")
            await self.runtime.registry.load(request.model_name)
        except RequestError as error:
            await _abort(context, error)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await self._authorise(context)
        try:
            admin.check_parameters(dict(request.parameters) or None, "unload")
            await self.runtime.registry.unload(request.model_name)
        except RequestError as error:
            await _abort(context, error)
        return pb.RepositoryModelUnloadResponse()

    async def _authorise(self, context: Any) -> None:
        try:
            admin.authorise(GrpcRequest(None, context).headers, self.runtime)
        except RequestError as error:
            await _abort(context, error)


_claims: list[Any] = []
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]


class Undecodable:
    """A request message protobuf could not parse (bytes that are no message of its type, a
    string field that is not UTF-8): answered INVALID_ARGUMENT, not UNKNOWN with a traceback
    (what gRPC does when the deserializer raises)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind


def _deserializer(message_class: Any) -> Any:
    parse = message_class.FromString
    kind = message_class.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception:  # DecodeError, or a RuntimeError of upb on some inputs
            return Undecodable(kind)

    return deserialize


def _guarded(behaviour: Any, streaming: bool) -> Any:
    """A method's behaviour, refusing undecodable messages first; an unforeseen error is
    INTERNAL with a plain message (logged with its traceback), never a server path."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid {request.kind} message "
                "(undecodable protobuf, or a string field that is not UTF-8)",
            )
        try:
            return await behaviour(request, context)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception:
            logger.exception("gRPC %s failed", behaviour.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    async def stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        await behaviour(requests, context)

    return stream if streaming else unary


def handlers(servicer: Servicer) -> grpc.GenericRpcHandler:
    """The service's method handlers, as the generated ``add_..._to_server`` makes them but
    with a deserializer that never raises (``Undecodable``)."""
    table = {}
    for method in SERVICE.methods:
        behaviour = getattr(servicer, method.name)
        streaming = method.client_streaming or method.server_streaming
        make = (
            grpc.stream_stream_rpc_method_handler
            if streaming
            else grpc.unary_unary_rpc_method_handler
        )
        table[method.name] = make(
            _guarded(behaviour, streaming),
            request_deserializer=_deserializer(GetMessageClass(method.input_type)),
            response_serializer=GetMessageClass(method.output_type).SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE.full_name, table)


def _not_served(method: str) -> Any:
    async def refuse(self: Servicer, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served")

    refuse.__name__ = method
    return refuse


# What the servicer leaves to the generated base class (shared memory, statistics, trace and
# log settings, streaming) answers UNIMPLEMENTED with a plain message, not the base class's
# NotImplementedError, which gRPC logs with a traceback on every call.
for _method in dir(pb_grpc.GRPCInferenceServiceServicer):
    if not _method.startswith("_") and _method not in Servicer.__dict__:
        setattr(Servicer, _method, _not_served(_method))


def _taken(port: int) -> bool:
    """Whether another process listens on the port without sharing it (our own workers
    share it with SO_REUSEPORT, so they never count)."""
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:
            continue  # no IPv6 here
        with probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                return error.errno == errno.EADDRINUSE
        return False
    return False


async def start(runtime: Runtime) -> grpc.aio.Server | None:
    """The gRPC server of this worker, or None when SERVING_GRPC_PORT is 0."""
    port = runtime.config.grpc_port
    if not port:
        return None
    try:
        _claims.append(portclaim.claim(port))  # held for the life of this worker
    except portclaim.PortTaken as error:
        logger.error("%s: this server serves HTTP only", error)
        return None
    limit = runtime.config.limits.max_body_bytes
    guard = runtime.guard
    server = grpc.aio.server(
        interceptors=[auth.GrpcGuard(guard)] if guard is not None and guard.enabled else [],
        options=[
            ("grpc.so_reuseport", 1),  # every worker listens on the same port
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
    )
    server.add_generic_rpc_handlers((handlers(Servicer(runtime)),))
    credentials = auth.grpc_credentials(runtime.config)
    try:
        if _taken(port):  # checked first: gRPC's own failure is a C-core line and a traceback
            raise RuntimeError(port)
        if credentials is None:
            server.add_insecure_port(f"[::]:{port}")
        else:
            server.add_secure_port(f"[::]:{port}", credentials)
    except RuntimeError:
        logger.error(
            "gRPC port %d is already in use by another process: give this server another "
            "SERVING_GRPC_PORT (grpc_port; 0 turns gRPC off); it serves HTTP only",
            port,
        )
        return None
    await server.start()
    tls = " over TLS" if credentials is not None else ""
    logger.info("Open Inference Protocol over gRPC%s on port %d", tls, port)
    return server
