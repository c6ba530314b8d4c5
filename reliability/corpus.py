"""A hand-made corpus of hostile requests, each with the answer it must get.

Most must be refused with a 4xx and a JSON error. A few are odd but legitimate images (CMYK
JPEG, 16-bit PNG): those must be accepted and answered like their ordinary 8-bit RGB twin.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from benchmarks.payloads import multipart, png_bytes
from modelspec import bank

IMAGE_ENDPOINTS = (
    "/digits/predict",
    "/flowers/predict",
    "/autoencoder/encode",
    "/autoencoder/reconstruct",
)
REFUSED, SAME_AS_TWIN = "refused", "same_as_twin"


@dataclass(frozen=True)
class Hostile:
    name: str
    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    expect: str = REFUSED
    # For SAME_AS_TWIN: an ordinary upload (body, headers) that must get the same answer.
    twin: tuple[bytes, dict[str, str]] = (b"", {})


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _digit(seed: int = 7) -> np.ndarray:
    """A bright stroke on black: digit-like enough for any image endpoint."""
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:22, 12 + seed % 3 : 15 + seed % 3] = 255
    return pixels


def _bomb_png(side: int = 30_000) -> bytes:
    """A valid PNG header announcing ``side``x``side`` pixels over a tiny compressed body."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    data = zlib.compress(row * 64, 9)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def _animated(fmt: str) -> bytes:
    frames = [Image.fromarray(_digit(i)) for i in range(3)]
    return _encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50)


def _upload(data: bytes, kind: str = "image/png") -> tuple[bytes, dict[str, str]]:
    payload = multipart([("image", data, kind)])
    return payload.body, {"content-type": payload.content_type}


def image_cases() -> list[Hostile]:
    png = png_bytes(_digit())
    jpeg = _encode(Image.fromarray(_digit()).convert("RGB"), "JPEG", quality=95)
    faults = {
        "corrupt_png": png[:16] + bytes(range(256)) * 4,
        "truncated_png": png[: len(png) // 2],
        "truncated_jpeg": jpeg[: len(jpeg) // 2],
        "png_header_only": png[:8],
        "decompression_bomb_png": _bomb_png(),
        "huge_declared_png": _bomb_png(100_000),
        "one_pixel_png": png_bytes(np.zeros((1, 1), dtype=np.uint8)),
        "three_pixel_jpeg": _encode(Image.new("RGB", (3, 3)), "JPEG"),
        "animated_gif": _animated("GIF"),
        "animated_png": _animated("PNG"),
        "bmp_file": _encode(Image.fromarray(_digit()), "BMP"),
        "text_as_image": b"this is not an image",
        "empty_file": b"",
    }
    cases = []
    for path in IMAGE_ENDPOINTS:
        for name, data in faults.items():
            body, headers = _upload(data)
            cases.append(Hostile(f"{name} {path}", "POST", path, body, headers))
        cases.append(
            Hostile(
                f"raw_truncated_png {path}", "POST", path, png[:40], {"content-type": "image/png"}
            )
        )
    cmyk = _encode(
        Image.fromarray(np.stack([_digit()] * 3, -1)).convert("CMYK"), "JPEG", quality=100
    )
    rgb_twin = _encode(Image.open(io.BytesIO(cmyk)).convert("RGB"), "PNG")
    sixteen = Image.fromarray(_digit().astype(np.uint16) * 257)
    for path in ("/digits/predict", "/flowers/predict"):
        body, headers = _upload(cmyk, "image/jpeg")
        cases.append(
            Hostile(
                f"cmyk_jpeg {path}", "POST", path, body, headers, SAME_AS_TWIN, _upload(rgb_twin)
            )
        )
        body, headers = _upload(_encode(sixteen, "PNG"))
        cases.append(
            Hostile(f"16bit_png {path}", "POST", path, body, headers, SAME_AS_TWIN, _upload(png))
        )
    return cases


def json_cases() -> list[Hostile]:
    json_type = {"content-type": "application/json"}
    bodies = {
        "non_utf8": b'{"inputs": "\xff\xfe\xfd"}',
        "deeply_nested": b"[" * 100_000 + b"]" * 100_000,
        "nested_inputs": b'{"inputs": ' + b"[" * 500 + b"0" + b"]" * 500 + b"}",
        "huge_number": b'{"inputs": [[1e400]]}',
        "huge_integer": b'{"inputs": [[' + b"9" * 400 + b"]]}",
        "nan_literal": b'{"inputs": [[NaN]]}',
        "infinity_literal": b'{"inputs": [[Infinity]]}',
        "empty_body": b"",
        "whitespace_body": b"   ",
        "truncated_json": b'{"inputs": [[0.1, 0.2',
        "not_an_object": b'"just a string"',
        "null_inputs": b'{"inputs": null}',
        "string_inputs": b'{"inputs": "zero"}',
        "bool_inputs": b'{"inputs": [[true, false]]}',
        "ragged": b'{"inputs": [[0.1], [0.2, 0.3]]}',
        "wrong_shape": b'{"inputs": [[0.5, 0.5, 0.5]]}',
        "out_of_range": json.dumps({"inputs": [[[2.0] * 28] * 28]}).encode(),
        "negative": json.dumps({"inputs": [[[-1.0] * 28] * 28]}).encode(),
        "unknown_field": json.dumps({"inputs": [[[0.0] * 28] * 28], "extra": 1}).encode(),
        "too_many_items": json.dumps({"inputs": [[[0.0] * 28] * 28] * 65}).encode(),
        "duplicate_keys": b'{"inputs": 1, "inputs": "x"}',
    }
    cases = [
        Hostile(f"{name} /digits/predict", "POST", "/digits/predict", body, json_type)
        for name, body in bodies.items()
    ]
    cases += [
        Hostile(f"{name} /autoencoder/decode", "POST", "/autoencoder/decode", body, json_type)
        for name, body in bodies.items()
        if name in ("nan_literal", "huge_number", "wrong_shape", "string_inputs", "empty_body")
    ]
    record = bank.EXAMPLE_RECORD
    bad_records = {
        "bank_unknown_category": {**record, "job": "astronaut"},
        "bank_missing_field": {k: v for k, v in record.items() if k != "age"},
        "bank_unknown_field": {**record, "salary": 1},
        "bank_nan_string": {**record, "balance": "nan"},
        "bank_inf_string": {**record, "balance": "inf"},
        "bank_bool_number": {**record, "age": True},
        "bank_list_value": {**record, "job": ["admin."]},
        "bank_object_value": {**record, "age": {"value": 30}},
        "bank_huge_number": {**record, "balance": 1e308 * 10},
    }
    for name, bad in bad_records.items():
        body = json.dumps(bad).encode()
        cases.append(Hostile(name, "POST", "/bank/predict", body, json_type))
    cases.append(Hostile("bank_empty_list", "POST", "/bank/predict", b"[]", json_type))
    cases.append(
        Hostile("bank_records_not_list", "POST", "/bank/predict", b'{"records": 5}', json_type)
    )
    return cases


def protocol_cases() -> list[Hostile]:
    json_type = {"content-type": "application/json"}
    image = {"name": "image", "shape": [1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}
    v2 = {
        "v2_wrong_datatype": {"inputs": [{**image, "datatype": "BF16"}]},
        "v2_shape_mismatch": {"inputs": [{**image, "shape": [1, 27, 28]}]},
        "v2_data_count_mismatch": {"inputs": [{**image, "data": [0.0] * 10}]},
        "v2_negative_shape": {"inputs": [{**image, "shape": [-1, 28, 28]}]},
        "v2_unknown_input": {"inputs": [{**image, "name": "pixels"}]},
        "v2_unknown_output": {"inputs": [image], "outputs": [{"name": "logits"}]},
        "v2_bad_base64": {
            "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]
        },
        "v2_no_inputs": {"inputs": []},
        "v2_inputs_not_list": {"inputs": {"image": 1}},
        "v2_nan_via_fp32": {"inputs": [{**image, "data": ["NaN"] * 784}]},
        "v2_huge_shape": {"inputs": [{**image, "shape": [10**12, 28, 28]}]},
    }
    cases = [
        Hostile(name, "POST", "/v2/models/digits/infer", json.dumps(body).encode(), json_type)
        for name, body in v2.items()
    ]
    header = json.dumps(
        {
            "inputs": [
                {
                    **{k: v for k, v in image.items() if k != "data"},
                    "parameters": {"binary_data_size": 3136},
                }
            ]
        }
    ).encode()
    binary = {
        "inference-header-content-length": str(len(header)),
        "content-type": "application/octet-stream",
    }
    cases.append(
        Hostile("v2_binary_short", "POST", "/v2/models/digits/infer", header + b"\0" * 100, binary)
    )
    cases.append(
        Hostile("v2_header_length_past_body", "POST", "/v2/models/digits/infer", header,
                {**binary, "inference-header-content-length": "999999"})
    )  # fmt: skip
    tf = {
        "tf_both_formats": {"instances": [[0]], "inputs": [[0]]},
        "tf_empty_instances": {"instances": []},
        "tf_bad_b64": {"instances": [{"b64": "***"}]},
        "tf_b64_not_image": {"instances": [{"b64": base64.b64encode(b"hello").decode()}]},
        "tf_unknown_signature": {"signature_name": "explain", "instances": [[0]]},
        "tf_unknown_key": {"instances": [[0]], "extra": True},
    }
    cases += [
        Hostile(name, "POST", "/v1/models/digits:predict", json.dumps(body).encode(), json_type)
        for name, body in tf.items()
    ]
    return cases


def routing_cases() -> list[Hostile]:
    json_type = {"content-type": "application/json"}
    body = b'{"inputs": [[0.0]]}'
    paths = [
        "/v2/models/nope/infer",
        "/v2/models/digits/versions/99/infer",
        "/v2/models/digits/versions/abc/infer",
        "/v1/models/nope:predict",
        "/v1/models/digits/versions/7:predict",
        "/nope/predict",
        "/digits/predict/../../etc/passwd",
        "/v2/models/../../etc/passwd/infer",
        "/v2/models/%2e%2e%2f%2e%2e%2fetc%2fpasswd/infer",
        "/v1/models/..%2F..%2Fetc:predict",
        "/v2/models/digits%00/infer",
        "/v2/models/" + "a" * 5000 + "/infer",
        "/models/..%2Fmodels",
    ]
    cases = [Hostile(f"path {p[:60]}", "POST", p, body, json_type) for p in paths]
    cases += [
        Hostile("get_on_predict", "GET", "/digits/predict"),
        Hostile("put_on_infer", "PUT", "/v2/models/digits/infer", body, json_type),
        Hostile("delete_model", "DELETE", "/models/digits"),
        Hostile("unknown_model_get", "GET", "/models/nope"),
        Hostile("unknown_v2_metadata", "GET", "/v2/models/nope"),
        Hostile("unknown_tf_status", "GET", "/v1/models/nope"),
    ]
    return cases


def request_cases() -> list[Hostile]:
    zeros = json.dumps({"inputs": [[[0.0] * 28] * 28]}).encode()
    flat = json.dumps({"inputs": [0.0] * 784}).encode()
    json_type = {"content-type": "application/json"}
    png_body, png_headers = _upload(png_bytes(_digit()))
    no_boundary = {"content-type": "multipart/form-data"}
    empty_form = {"content-type": "multipart/form-data; boundary=x"}
    reconstruct = "/autoencoder/reconstruct"
    return [
        Hostile("text_plain", "POST", "/digits/predict", zeros, {"content-type": "text/plain"}),
        Hostile("xml", "POST", "/digits/predict", b"<a/>", {"content-type": "application/xml"}),
        Hostile("no_content_type", "POST", "/digits/predict", zeros, {}),
        Hostile("json_labelled_png", "POST", "/digits/predict", png_bytes(_digit()), json_type),
        Hostile(
            "png_labelled_json", "POST", "/digits/predict", zeros, {"content-type": "image/png"}
        ),
        Hostile("multipart_no_boundary", "POST", "/digits/predict", png_body, no_boundary),
        Hostile("multipart_no_files", "POST", "/digits/predict", b"--x--\r\n", empty_form),
        Hostile("bank_as_multipart", "POST", "/bank/predict", png_body, png_headers),
        Hostile("decode_as_image", "POST", "/autoencoder/decode", png_body, png_headers),
        Hostile("oversized_body", "POST", "/digits/predict", b"0" * (21 << 20), json_type),
        Hostile("too_many_images", "POST", "/digits/predict", *_many_images(65)),
        Hostile("top_k_zero", "POST", "/flowers/predict?top_k=0", png_body, png_headers),
        Hostile("top_k_huge", "POST", "/flowers/predict?top_k=999", png_body, png_headers),
        Hostile("top_k_text", "POST", "/flowers/predict?top_k=all", png_body, png_headers),
        Hostile("invert_maybe", "POST", "/digits/predict?invert=maybe", png_body, png_headers),
        Hostile("invert_empty", "POST", "/digits/predict?invert=", zeros, json_type),
        Hostile("format_gif", "POST", f"{reconstruct}?format=gif", flat, json_type),
        Hostile("accept_html", "POST", reconstruct, flat, {**json_type, "accept": "text/html"}),
    ]


def _many_images(count: int) -> tuple[bytes, dict[str, str]]:
    payload = multipart([("image", png_bytes(_digit(i)), "image/png") for i in range(count)])
    return payload.body, {"content-type": payload.content_type}


def corpus() -> list[Hostile]:
    return image_cases() + json_cases() + protocol_cases() + routing_cases() + request_cases()
