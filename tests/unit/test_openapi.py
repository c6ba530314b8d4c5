"""service.openapi: the document written from the route table and the models served now, for
a repository of a synthetic tensor model and a synthetic digit classifier (no server)."""

from __future__ import annotations

import jsonschema
import pytest

from service.errors import CATALOGUE, PROTOCOL_STATUS
from service.openapi import document
from service.routes import TABLE
from tests.unit.synthetic import InProcess, affine_onnx, manifest, publish, signature

LABELS = [str(i) for i in range(3)]


@pytest.fixture(scope="module")
def described(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("openapi") / "models"
    publish(root, manifest("affine"), {"model.onnx": affine_onnx()})
    # The same graph read as a classifier of three labels: a rich signature of its own.
    classifier = signature(answer="top_labels")
    publish(
        root,
        manifest("labels", signatures={"rank": classifier}, labels=LABELS),
        {"model.onnx": affine_onnx()},
    )
    with InProcess(root) as service:
        yield document(TABLE, service.runtime)


def test_paths_name_the_models_served(described: dict) -> None:
    paths = described["paths"]
    assert "/labels/rank" in paths  # the rich signature's native route
    assert "/affine/predict" not in paths  # a tensor signature has none of its own
    names = {p["name"]: p for p in paths["/v2/models/{name}/infer"]["post"]["parameters"]}
    assert sorted(names["name"]["schema"]["enum"]) == ["affine", "labels"]


def test_a_native_request_schema_takes_what_the_service_takes(described: dict) -> None:
    operation = described["paths"]["/labels/rank"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    jsonschema.validate({"inputs": [[0.0, 1.0, 2.0, 3.0]]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"records": []}, schema)


def test_every_error_response_lists_its_catalogued_codes(described: dict) -> None:
    """Each of our error responses (BentoML's /readyz is its own) names its status's codes."""
    for path, methods in described["paths"].items():
        for method, operation in methods.items():
            for status, response in operation.get("responses", {}).items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                if status.startswith(("4", "5")) and "code" in (schema or {}).get("properties", {}):
                    # TF Serving answers some codes with another status (PROTOCOL_STATUS)
                    moved = PROTOCOL_STATUS["tfserving"] if path.startswith("/v1/") else {}
                    declared = [
                        c
                        for c, d in CATALOGUE.items()
                        if d.status == int(status) and c not in moved
                    ]
                    missing = [c for c in declared if f"`{c}`" not in response["description"]]
                    assert not missing, f"{method} {path} {status}: {missing}"
