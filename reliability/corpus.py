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
        # JSON is JSON whatever type is declared (README: the content-type rule)
        Hostile(
            "text_plain",
            "POST",
            "/digits/predict",
            zeros,
            {"content-type": "text/plain"},
            SAME_AS_TWIN,
            (zeros, json_type),
        ),
        Hostile("xml", "POST", "/digits/predict", b"<a/>", {"content-type": "application/xml"}),
        Hostile(
            "no_content_type",
            "POST",
            "/digits/predict",
            zeros,
            {},
            SAME_AS_TWIN,
            (zeros, json_type),
        ),
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


def number_text_cases() -> list[Hostile]:
    """Class 1: numbers read from URLs, query options and headers. ``str.isdigit`` accepts
    superscripts and other Unicode digits that ``int`` refuses; very long digit strings pass
    Python's int-string limit. Each once gave a 500."""
    json_type = {"content-type": "application/json"}
    body = json.dumps({"inputs": [0.0] * 784}).encode()
    v2_body = json.dumps(
        {"inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32",
                     "data": [0.0] * 784}]}
    ).encode()  # fmt: skip
    tf_body = json.dumps({"instances": [[[0.0] * 28] * 28]}).encode()
    png_body, png_headers = _upload(png_bytes(_digit()))
    weird = {
        "superscript": "%C2%B2",  # ², percent-encoded as a client must send it in a URL
        "arabic_indic": "%D9%A3",  # ARABIC-INDIC DIGIT THREE
        "fullwidth": "%EF%BC%93",  # FULLWIDTH DIGIT THREE
        "long_digits": "9" * 5000,
        "negative": "-1",
        "plus": "+1",
        "zero_padded_huge": "0" * 30 + "1",
    }
    cases = []
    for name, text in weird.items():
        cases += [
            Hostile(f"v2_version_{name} GET", "GET", f"/v2/models/digits/versions/{text}"),
            Hostile(f"v2_ready_{name} GET", "GET", f"/v2/models/digits/versions/{text}/ready"),
            Hostile(
                f"v2_version_{name} POST",
                "POST",
                f"/v2/models/digits/versions/{text}/infer",
                v2_body,
                json_type,
            ),
            Hostile(f"tf_version_{name} GET", "GET", f"/v1/models/digits/versions/{text}"),
            Hostile(
                f"tf_metadata_{name} GET", "GET", f"/v1/models/digits/versions/{text}/metadata"
            ),
            Hostile(
                f"tf_version_{name} POST",
                "POST",
                f"/v1/models/digits/versions/{text}:predict",
                tf_body,
                json_type,
            ),
            Hostile(
                f"top_k_{name}", "POST", f"/flowers/predict?top_k={text}", png_body, png_headers
            ),
        ]
    for name, value in {"superscript": "²", "long_digits": "9" * 5000, "spaces": " 12 "}.items():
        headers = {"content-type": "application/octet-stream",
                   "inference-header-content-length": value}  # fmt: skip
        cases.append(
            Hostile(f"v2_header_length_{name}", "POST", "/v2/models/digits/infer", v2_body, headers)
        )
    cases.append(Hostile("v2_infer_version_body_less", "POST", "/v2/models/digits/infer", body,
                         {**json_type, "inference-header-content-length": "x"}))  # fmt: skip
    return cases


def columnar_cases() -> list[Hostile]:
    """Class 2: TF Serving columnar bank requests with scalars or nulls instead of lists."""
    json_type = {"content-type": "application/json"}
    record = bank.EXAMPLE_RECORD
    bodies = {
        "tf_bank_scalars": {"inputs": dict(record)},
        "tf_bank_nulls": {"inputs": {k: None for k in record}},
        "tf_bank_null_items": {"inputs": {k: [None] for k in record}},
        "tf_bank_nested_lists": {"inputs": {k: [[v, v]] for k, v in record.items()}},
        "tf_bank_objects": {"inputs": {k: {"v": v} for k, v in record.items()}},
        "tf_bank_ragged": {"inputs": {**{k: [v] for k, v in record.items()}, "age": [1, 2]}},
        "tf_bank_instances_null": {"instances": [None]},
        "tf_bank_instance_scalars": {"instances": [dict(record), 5]},
        "tf_bank_inputs_list": {"inputs": [1, 2, 3]},
    }
    return [
        Hostile(name, "POST", "/v1/models/bank:predict", json.dumps(b).encode(), json_type)
        for name, b in bodies.items()
    ]


def multipart_cases() -> list[Hostile]:
    """Class 3: multipart bodies the parser refuses when it is built (long boundary...)."""
    png = png_bytes(_digit())
    cases = []
    for name, boundary in {
        "boundary_300": "b" * 300,  # python-multipart refuses over 256 bytes when built
        "boundary_5000": "b" * 5000,
        "boundary_quoted_empty": '""',
    }.items():
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
                f'filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
            ).encode()
            + png
            + f"\r\n--{boundary}--\r\n".encode()
        )
        content_type = f"multipart/form-data; boundary={boundary}"
        headers = {"content-type": content_type.encode("utf-8").decode("latin-1")}
        cases.append(Hostile(f"multipart_{name}", "POST", "/digits/predict", body, headers))
    return cases


def huge_number_cases() -> list[Hostile]:
    """Class 4: finite numbers so large the model's answer overflows to NaN. Each must be
    refused with a 4xx naming the valid range, never answered with NaN or null."""
    json_type = {"content-type": "application/json"}
    record = bank.EXAMPLE_RECORD
    cases = []
    for column, value in (("age", 1e300), ("balance", -1e300), ("duration", 1e300),
                          ("pdays", 1e38), ("campaign", 3e38)):  # fmt: skip
        body = json.dumps({**record, column: value}).encode()
        cases.append(Hostile(f"bank_{column}_{value:g}", "POST", "/bank/predict", body, json_type))
        tf = {"instances": [{**record, column: value}]}
        cases.append(Hostile(f"tf_bank_{column}_{value:g}", "POST", "/v1/models/bank:predict",
                             json.dumps(tf).encode(), json_type))  # fmt: skip
        columns = [
            {"name": k, "shape": [1, 1], "datatype": "FP64" if k in bank.NUMERIC else "BYTES",
             "data": [value if k == column else v]}
            for k, v in record.items()
        ]  # fmt: skip
        cases.append(Hostile(f"v2_bank_{column}_{value:g}", "POST", "/v2/models/bank/infer",
                             json.dumps({"inputs": columns}).encode(), json_type))  # fmt: skip
    for value in (3e38, -3e38, 1e30, -1e20):
        codes = [[value] * 16]
        cases += [
            Hostile(f"decode_codes_{value:g}", "POST", "/autoencoder/decode",
                    json.dumps({"inputs": codes}).encode(), json_type),
            Hostile(f"v2_decode_codes_{value:g}", "POST", "/v2/models/autoencoder_decode/infer",
                    json.dumps({"inputs": [{"name": "code", "shape": [1, 16], "datatype": "FP32",
                                            "data": codes}]}).encode(), json_type),
            Hostile(f"tf_decode_codes_{value:g}", "POST", "/v1/models/autoencoder:predict",
                    json.dumps({"signature_name": "decode", "instances": codes}).encode(),
                    json_type),
        ]  # fmt: skip
    return cases


def boolean_cases() -> list[Hostile]:
    """Class 11: booleans inside numeric tensors (NumPy reads them as 1 and 0)."""
    json_type = {"content-type": "application/json"}
    mixed = [0.5] * 783 + [True]
    flat = [[0.0] * 28] * 27 + [[False] + [0.0] * 27]
    bodies = {
        ("native_digits_mixed", "/digits/predict"): {"inputs": [mixed]},
        ("native_digits_nested", "/digits/predict"): {"inputs": [flat]},
        ("native_encode_bool", "/autoencoder/encode"): {"inputs": [mixed]},
        ("native_decode_bool", "/autoencoder/decode"): {"inputs": [[True] + [0.0] * 15]},
        ("v2_fp32_bools", "/v2/models/digits/infer"): {
            "inputs": [{"name": "image", "shape": [1, 28, 28], "datatype": "FP32",
                        "data": mixed}]},
        ("v2_decode_bools", "/v2/models/autoencoder_decode/infer"): {
            "inputs": [{"name": "code", "shape": [1, 16], "datatype": "FP32",
                        "data": [True] * 16}]},
        ("tf_rows_bools", "/v1/models/digits:predict"): {"instances": [flat]},
        ("tf_columnar_bools", "/v1/models/autoencoder:predict"): {
            "signature_name": "decode", "inputs": [[False] * 16]},
    }  # fmt: skip
    return [
        Hostile(name, "POST", path, json.dumps(body).encode(), json_type)
        for (name, path), body in bodies.items()
    ]


def nesting_cases() -> list[Hostile]:
    """Class 13: lists nested 1,000 deep (orjson parses up to 1,024 levels; a recursive walk
    over them once ended in a RecursionError and a 500), on every route that reads JSON."""
    json_type = {"content-type": "application/json"}
    deep, deep_true = "[" * 1000 + "]" * 1000, "[" * 1000 + "true" + "]" * 1000

    def v2(datatype: str, data: str) -> str:
        header = f'"name":"image","shape":[1,28,28],"datatype":"{datatype}"'
        return f'{{"inputs":[{{{header},"data":{data}}}]}}'

    def member(key: str, value: str) -> str:
        return f'{{"{key}":{value}}}'

    bodies = {
        ("tf_rows_deep", "/v1/models/digits:predict"): member("instances", deep),
        ("tf_rows_deep_bool", "/v1/models/digits:predict"): member("instances", deep_true),
        ("tf_b64_deep", "/v1/models/flowers:predict"): member("instances", deep),
        ("v2_fp32_deep", "/v2/models/digits/infer"): v2("FP32", deep),
        ("v2_bytes_deep", "/v2/models/digits/infer"): v2("BYTES", deep),
        ("v2_int32_deep", "/v2/models/digits/infer"): v2("INT32", deep_true),
        ("native_deep", "/digits/predict"): member("inputs", deep_true),
        ("tensors_deep", "/models/digits/predict"): member("inputs", deep_true),
        ("records_deep", "/bank/predict"): member("records", deep),
    }  # fmt: skip
    return [
        Hostile(name, "POST", path, body.encode(), json_type)
        for (name, path), body in bodies.items()
    ]


def _forged_jpeg(claimed_width: int = 65500) -> bytes:
    """A real JPEG whose header claims it is ``claimed_width`` wide: its data stops early,
    and libjpeg fills the missing pixels with grey without an error."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (600, 100, 3), dtype=np.uint8))
    data = bytearray(_encode(image, "JPEG", quality=90))
    start = data.find(b"\xff\xc0")
    data[start + 7 : start + 9] = struct.pack(">H", claimed_width)
    return bytes(data)


def exif_and_jpeg_cases() -> list[Hostile]:
    """Classes 5 and 6: an upright-by-EXIF photo must be read like its upright twin; a JPEG
    whose header claims more pixels than its data holds must be refused as corrupt."""
    cases = []
    seven = np.zeros((40, 40), dtype=np.uint8)
    seven[8:11, 10:30] = 255  # the top bar of a 7
    for i in range(20):
        seven[10 + i, 28 - i // 2 : 31 - i // 2] = 255  # its slanted stroke
    stored = Image.fromarray(seven).rotate(90, expand=True)  # as a phone stores it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    # PNG keeps the pixels exact, so the answers must match the upright twin's exactly.
    sideways = _encode(stored.convert("RGB"), "PNG", exif=exif)
    twin = _encode(Image.fromarray(seven).convert("RGB"), "PNG")
    for path in ("/digits/predict", "/flowers/predict"):
        body, headers = _upload(sideways)
        cases.append(Hostile(f"exif_rotated_photo {path}", "POST", path, body, headers,
                             SAME_AS_TWIN, _upload(twin)))  # fmt: skip
    forged = _forged_jpeg()
    for path in IMAGE_ENDPOINTS:
        body, headers = _upload(forged, "image/jpeg")
        cases.append(Hostile(f"forged_jpeg_65500x600 {path}", "POST", path, body, headers))
    cases.append(
        Hostile("forged_jpeg_raw", "POST", "/flowers/predict", forged,
                {"content-type": "image/jpeg"})
    )  # fmt: skip
    v2 = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                      "data": [base64.b64encode(forged).decode()]}]}  # fmt: skip
    v2_body = json.dumps(v2).encode()
    json_type = {"content-type": "application/json"}
    cases.append(Hostile("forged_jpeg_v2", "POST", "/v2/models/flowers/infer", v2_body, json_type))
    return cases


def heavy_image_cases() -> list[Hostile]:
    """Class 7 (the request half): images each within the per-image limit whose total would
    hold a core for seconds; refused from their headers before any is decoded."""
    big = png_bytes(np.zeros((6300, 6300), dtype=np.uint8))
    body, headers = _upload_many([big] * 24)
    return [Hostile("24_pngs_of_6300x6300", "POST", "/digits/predict", body, headers)]


def _upload_many(files: list[bytes]) -> tuple[bytes, dict[str, str]]:
    payload = multipart([("image", data, "image/png") for data in files])
    return payload.body, {"content-type": payload.content_type}


def header_cases() -> list[Hostile]:
    """Class 9 (one request each): header bytes and count past the limits (431)."""
    body = json.dumps({"inputs": [0.0] * 784}).encode()
    json_type = {"content-type": "application/json"}
    many = {f"x-h{i}": "1" for i in range(150)}
    huge = {**json_type, "x-big": "a" * (1 << 20)}
    return [
        Hostile("header_1mb", "POST", "/digits/predict", body, huge),
        Hostile("header_70kb_get", "GET", "/livez", b"", {"x-big": "a" * 70_000}),
        Hostile("headers_150", "POST", "/digits/predict", body, {**json_type, **many}),
        Hostile("url_100kb", "GET", "/models/" + "a" * 100_000),
    ]  # fmt: skip


def surface_cases() -> list[Hostile]:
    """Issue 22 part 2, the service's newer surfaces: shapes no array can hold (a zero beside
    a huge dimension, once a 500 from numpy's reshape) in V2 JSON and binary bodies, empty
    nests on the routes whose shape comes from the data, names and paths carrying control
    characters (aimed at the logs), files and paths around the card routes, load parameters
    and methods a route does not serve. Each must be a 4xx JSON error."""
    json_type = {"content-type": "application/json"}
    huge = 2**62
    shapes = {
        "zero_beside_huge": [1, 0, huge],
        "zeros_and_huges": [0, huge, huge],
        "zero_beside_huge_rank4": [1, 0, 28, huge],
        "huge_then_zero": [huge, 0],
        "int64_max": [0, 2**63 - 1],
        "past_int64": [1, 2**64],
        "negative_huge": [1, -huge],
        "rank_17": [1] * 17,
        "rank_above_declared": [1, 28, 28, 1, 1],
        "more_values_per_item": [1, 28, 29],
        "bool_dimension": [True, 28, 28],
        "float_dimension": [1.0, 28, 28],
        "empty_shape": [],
        "shape_not_list": "1,28,28",
    }
    cases = []
    for name, shape in shapes.items():
        entry = {"name": "image", "shape": shape, "datatype": "FP32"}
        body = json.dumps({"inputs": [{**entry, "data": []}]}).encode()
        cases.append(
            Hostile(f"v2_shape_{name}", "POST", "/v2/models/digits/infer", body, json_type)
        )
        header = json.dumps({"inputs": [{**entry, "parameters": {"binary_data_size": 0}}]})
        binary = {
            "inference-header-content-length": str(len(header)),
            "content-type": "application/octet-stream",
        }
        cases.append(
            Hostile(f"v2_binary_shape_{name}", "POST", "/v2/models/digits/infer", header.encode(),
                    binary)
        )  # fmt: skip
    for depth, nest in enumerate(([[]], [[[]]], [[[[]]]], [[], [[]]], [[[0.0] * 28] * 28, []])):
        for path, key in (("/v1/models/digits:predict", "instances"),
                          ("/v1/models/digits:predict", "inputs"),
                          ("/models/digits/predict", "inputs")):  # fmt: skip
            body = json.dumps({key: nest}).encode()
            cases.append(Hostile(f"empty_nest_{depth} {path} {key}", "POST", path, body, json_type))
    body = b'{"inputs": [0.0]}'
    for path in (
        "/v1/models/x%0AFAKE%20line:predict",
        "/v2/models/x%0D%0AFAKE/infer",
        "/v2/models/x%1B%5B31m/infer",
        "/models/x%0AFAKE/predict",
        "/v2/models/x%E2%80%A8FAKE/infer",
        "/v2/models/%FF%FE/infer",
        "/v2/repository/models/x%0AFAKE/load",
        "/models/digits/versions/1/files/..%2Fmanifest.json",
        "/models/digits/versions/1/files/manifest.json",
        "/models/digits/versions/1/files/model.onnx",
        "/models/digits/versions/1/files/%00.png",
        "/models/digits/versions/1/files/..",
        "/models/digits/versions/99/card",
        "/models/digits/versions/0/card",
        "/models/digits/versions/99999999999999999999/card",
    ):
        method = "GET" if "/files/" in path or path.endswith("/card") else "POST"
        cases.append(Hostile(f"surface_path {path[:60]}", method, path, body, json_type))
    load = "/v2/repository/models/digits/load"
    for name, parameters in (
        ("config", {"parameters": {"config": "{}"}}),
        ("file", {"parameters": {"file:1/model.onnx": "AAAA"}}),
    ):
        cases.append(
            Hostile(f"load_{name}_override", "POST", load, json.dumps(parameters).encode(),
                    json_type)
        )  # fmt: skip
    wrong_methods = (
        ("POST", "/models"),
        ("PUT", "/v2/models/digits"),
        ("GET", "/v2/repository/index"),
        ("DELETE", "/models/digits/versions/1/card"),
    )
    for method, path in wrong_methods:
        cases.append(Hostile(f"method {method} {path}", method, path))
    return cases


def corpus() -> list[Hostile]:
    return (
        image_cases()
        + json_cases()
        + protocol_cases()
        + routing_cases()
        + request_cases()
        + number_text_cases()
        + columnar_cases()
        + multipart_cases()
        + huge_number_cases()
        + boolean_cases()
        + nesting_cases()
        + exif_and_jpeg_cases()
        + heavy_image_cases()
        + header_cases()
        + surface_cases()
    )
