"""Security properties of the serving code that a reviewer would otherwise check by eye: no
code-executing deserialisation anywhere in the service, and request-supplied model names
never reach the filesystem (the registry is keyed by the names it found in the repository,
and a model's files are looked up by their names in its manifest)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVING_CODE = [
    *sorted((ROOT / "service").rglob("*.py")),
    *sorted((ROOT / "modelspec").rglob("*.py")),
]
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "joblib", "marshal", "shelve", "cloudpickle"}
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_no_code_executing_formats_or_dynamic_code_in_the_service() -> None:
    problems = []
    for path in SERVING_CODE:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if FORBIDDEN_MODULES & {n.split(".")[0] for n in names}:
                    problems.append(f"{path.name}:{node.lineno} imports {names}")
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                builtin = isinstance(func, ast.Name) or ast.unparse(func).startswith("builtins.")
                if name in FORBIDDEN_CALLS and builtin:  # re.compile is fine, compile() is not
                    problems.append(f"{path.name}:{node.lineno} calls {name}")
                if name == "load" and ast.unparse(func) in ("yaml.load", "np.load", "numpy.load"):
                    problems.append(f"{path.name}:{node.lineno} {ast.unparse(func)}")
                for keyword in node.keywords:
                    if keyword.arg == "allow_pickle" and ast.unparse(keyword.value) != "False":
                        problems.append(f"{path.name}:{node.lineno} allow_pickle")
    assert problems == []


def test_request_paths_never_build_filesystem_paths() -> None:
    """The modules that see request data (routes, protocols, inputs) never touch the
    filesystem: model names from URLs are dictionary keys, never paths."""
    request_facing = [
        p
        for p in SERVING_CODE
        if p.parent.name in ("protocols", "inputs", "interfaces")
        or p.name in ("routes.py", "inference.py", "app.py", "native.py", "admin.py", "routing.py")
    ]
    assert len(request_facing) >= 16
    problems = []
    for path in request_facing:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Call):
                called = ast.unparse(node.func)
                in_memory = called == "Image.open" and "BytesIO" in ast.unparse(node.args[0])
                if in_memory:
                    continue  # decoding uploaded bytes, not opening a file
                if called in ("open", "Path", "os.open", "os.path.join") or called.endswith(
                    (".read_bytes", ".read_text", ".open", "version_dir")
                ):
                    problems.append(f"{path.name}:{node.lineno} {called}")
    assert problems == []
