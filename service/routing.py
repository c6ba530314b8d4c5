"""One route table, compiled once into one regular expression, for every request.

A route is declared once, with its optional parts in brackets: ``/v2/models/{name}
[/versions/{version}]/infer`` is both the unversioned and the versioned URL. The same
declaration matches requests (the fast path: one ``re.match`` whatever the number of routes)
and lists its concrete paths for the OpenAPI document. A parameter is one path segment
without ``:`` (TF Serving's ``{name}:predict``; model names never hold one).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[..., Awaitable[Any]]
_PARAMETER = re.compile(r"\{([a-z_]+)\}")
_OPTIONAL = re.compile(r"\[([^\[\]]+)\]")


@dataclass(frozen=True)
class Route:
    """``method`` ``template`` -> ``handler(request, runtime, **parameters)``.

    ``doc``: its OpenAPI operation (summary, parameters, request body, responses), or None to
    leave it out; ``infer``: an inference request (counted against the concurrency limit);
    ``known(runtime, parameters)``: False when the path, though it fits the template, is not
    this service's (a catch-all template leaves it to BentoML)."""

    method: str
    template: str
    handler: Handler
    doc: Any = field(default=None, compare=False)
    tags: tuple[str, ...] = ()
    infer: bool = False
    known: Callable[[Any, dict[str, str]], bool] | None = field(default=None, compare=False)

    def variants(self) -> list[str]:
        """The concrete path templates: every optional part left out, then put in."""
        found = [self.template]
        while any(_OPTIONAL.search(t) for t in found):
            expanded = []
            for template in found:
                match = _OPTIONAL.search(template)
                if match is None:
                    expanded.append(template)
                    continue
                head, tail = template[: match.start()], template[match.end() :]
                expanded += [head + tail, head + match.group(1) + tail]
            found = expanded
        return found

    def parameters(self) -> list[str]:
        return _PARAMETER.findall(self.template)


def _pattern(template: str, prefix: str) -> str:
    """A template as a regular expression; parameter groups are named ``<prefix>_<name>``."""
    out, position = [], 0
    for match in re.finditer(r"\{([a-z_]+)\}|\[|\]", template):
        out.append(re.escape(template[position : match.start()]))
        token = match.group(0)
        if token == "[":
            out.append("(?:")
        elif token == "]":
            out.append(")?")
        else:
            out.append(f"(?P<{prefix}_{match.group(1)}>[^/:]+)")
        position = match.end()
    out.append(re.escape(template[position:]))
    return "".join(out)


@dataclass(frozen=True)
class Match:
    route: Route | None  # None: the path exists, the method does not (405)
    parameters: dict[str, str]
    allowed: tuple[str, ...] = ()
    any_route: Route | None = None  # a route of this path (its ``known`` decides a 405)


def _first_segment(template: str) -> str:
    """The literal first path segment a template starts with, or "" for a parameter."""
    head = template[1:].split("/", 1)[0].split("[", 1)[0]
    return "" if "{" in head else head


class RouteTable:
    """Routes grouped by path template. The templates starting with the same literal segment
    (``v2``, ``models``...) are one alternation, matched at once; those starting with a
    parameter are tried after them. A match costs about a microsecond."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes
        self._templates: list[str] = list(dict.fromkeys(r.template for r in routes))
        self._by_method: list[dict[str, Route]] = [
            {r.method: r for r in routes if r.template == t} for t in self._templates
        ]
        # What a 405's Allow lists: every method served, HEAD wherever GET is (it is
        # answered as GET without the body).
        self._allowed = [
            tuple(sorted({*methods, *(("HEAD",) if "GET" in methods else ())}))
            for methods in self._by_method
        ]
        self._groups = [
            [(f"p{i}_{name}", name) for name in _PARAMETER.findall(t)]
            for i, t in enumerate(self._templates)
        ]
        by_segment: dict[str, list[int]] = {}
        for i, template in enumerate(self._templates):
            by_segment.setdefault(_first_segment(template), []).append(i)
        self._regexes = {
            segment: re.compile(
                "(?:"
                + "|".join(f"(?P<r{i}>{_pattern(self._templates[i], f'p{i}')})" for i in found)
                + r")\Z"
            )
            for segment, found in by_segment.items()
        }
        self._anywhere = self._regexes.get("")

    def match(self, method: str, path: str) -> Match | None:
        """The route for ``method`` and ``path``; a Match without a route when only the
        method is wrong; None when no route has this path."""
        literal = self._regexes.get(path[1:].split("/", 1)[0].split(":", 1)[0])
        found = literal.match(path) if literal is not None else None
        if found is None and self._anywhere is not None:
            found = self._anywhere.match(path)
        if found is None:
            return None
        index = int(found.lastgroup[1:])  # the outermost group of the template that matched
        parameters = {}
        for group, name in self._groups[index]:
            value = found.group(group)
            if value is not None:
                parameters[name] = value
        methods = self._by_method[index]
        route = methods.get(method) or (methods.get("GET") if method == "HEAD" else None)
        return Match(route, parameters, self._allowed[index], next(iter(methods.values())))

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes)
