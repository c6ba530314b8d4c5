"""service.routing: one route table, matched by one regular expression per first segment.
Synthetic routes and the service's own table; no server."""

from __future__ import annotations

import pytest

from service.routes import TABLE
from service.routing import Route, RouteTable


async def _handler(*args, **kwargs):  # never called: matching only
    return None


def _table() -> RouteTable:
    return RouteTable(
        [
            Route("GET", "/v2/models/{name}[/versions/{version}]", _handler),
            Route("POST", "/v2/models/{name}[/versions/{version}]/infer", _handler),
            Route("GET", "/v1/models/{name}[/versions/{version}]", _handler),
            Route("POST", "/v1/models/{name}[/versions/{version}]:predict", _handler),
            Route("DELETE", "/v2/models/{name}[/versions/{version}]", _handler),
            Route("POST", "/{name}/{signature}", _handler),
        ]
    )


def test_optional_parts_are_both_variants() -> None:
    route = Route("GET", "/a/{x}[/b/{y}][/c]", _handler)
    assert sorted(route.variants()) == ["/a/{x}", "/a/{x}/b/{y}", "/a/{x}/b/{y}/c", "/a/{x}/c"]
    assert route.parameters() == ["x", "y"]


@pytest.mark.parametrize(
    ("method", "path", "template", "parameters"),
    [
        (
            "POST",
            "/v2/models/m/infer",
            "/v2/models/{name}[/versions/{version}]/infer",
            {"name": "m"},
        ),
        (
            "POST",
            "/v2/models/m/versions/3/infer",
            "/v2/models/{name}[/versions/{version}]/infer",
            {"name": "m", "version": "3"},
        ),
        (
            "POST",
            "/v1/models/m:predict",
            "/v1/models/{name}[/versions/{version}]:predict",
            {"name": "m"},
        ),
        (
            "POST",
            "/digits/predict",
            "/{name}/{signature}",
            {"name": "digits", "signature": "predict"},
        ),
        ("GET", "/v2/models/m", "/v2/models/{name}[/versions/{version}]", {"name": "m"}),
    ],
)
def test_a_path_matches_its_route_with_its_parameters(method, path, template, parameters) -> None:
    match = _table().match(method, path)
    assert match is not None and match.route is not None
    assert match.route.template == template and match.parameters == parameters


def test_a_known_path_with_another_method_is_a_405_listing_the_methods() -> None:
    match = _table().match("PUT", "/v2/models/m")
    assert match is not None and match.route is None
    assert match.allowed == ("DELETE", "GET", "HEAD")  # HEAD wherever GET is


def test_head_is_answered_as_get() -> None:
    match = _table().match("HEAD", "/v2/models/m/versions/1")
    assert match is not None and match.route is not None and match.route.method == "GET"


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/a/b/infer",  # a parameter is one segment
        "/v2/models//infer",  # and not empty
        "/v1/models/a:b:predict",  # and holds no ':'
        "/v2/models/m/versions/1/infer/more",
        "/one/two/three",
        "",
    ],
)
def test_paths_of_no_route_match_nothing(path: str) -> None:
    assert _table().match("POST", path) is None


@pytest.mark.parametrize(
    ("path", "file"),
    [
        ("/models/m/versions/1/files/model_card.md", "model_card.md"),
        ("/models/m/versions/1/files/..", ".."),  # a key, never a path (descriptor.card_file)
        ("/models/m/versions/1/files/%2e%2e", "%2e%2e"),
    ],
)
def test_the_service_table_gives_a_file_name_as_one_segment(path: str, file: str) -> None:
    match = TABLE.match("GET", path)
    assert match is not None and match.route is not None
    assert match.parameters == {"name": "m", "version": "1", "file": file}


@pytest.mark.parametrize(
    "path", ["/models/m/versions/1/files/../../manifest.json", "/models/m/versions/1/files/a/b"]
)
def test_the_service_table_never_gives_a_file_name_holding_a_slash(path: str) -> None:
    match = TABLE.match("GET", path)
    assert match is None or "file" not in match.parameters


def test_every_route_of_the_service_is_matched_by_each_of_its_variants() -> None:
    for route in TABLE:
        for variant in route.variants():
            path = variant.replace("{name}", "m").replace("{version}", "2")
            path = path.replace("{signature}", "s").replace("{file}", "f.md")
            match = TABLE.match(route.method, path)
            assert match is not None and match.route is route, (route.template, path)
