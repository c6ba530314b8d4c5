"""Security properties of the serving code that a reviewer would otherwise check by eye: no
code-executing deserialisation anywhere in the service, and request-supplied model names
never reach the filesystem (the registry is keyed by the names it found in the repository,
and a model's files are looked up by their names in its manifest): shown by sending hostile
names to every route of the service in this process and watching its file opens."""

from __future__ import annotations

import ast
import sys
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


# Names a client may put in any URL parameter: traversal (plain and encoded), absolute
# paths, NUL, a home directory, a Windows path, and a very long name.
HOSTILE = [
    "..",
    "../secret.md",
    "../../secret.md",
    "%2e%2e",
    "..%2fsecret.md",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2Fetc%2Fpasswd",
    "model_card.md%00.png",
    "~root",
    ".",
    "C:\\secret.md",
    "a" * 300,
]
_recording: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple) -> None:
    if _recording is not None and event in ("open", "os.listdir", "os.scandir"):
        _recording.append((event, str(args[0])))


def _code(path: str) -> bool:
    """Python's own reads: modules imported lazily while answering, and package metadata
    (``importlib.metadata`` reads this checkout's ``.egg-info`` when the server names its
    version; an editable install keeps it beside the code, not in site-packages)."""
    return (
        path.endswith((".py", ".pyc", ".so", ".zip"))
        or "site-packages" in path
        or Path(path).parent.name.endswith((".egg-info", ".dist-info"))
    )


def test_request_paths_never_reach_the_filesystem(tmp_path: Path) -> None:
    """Every route, each of its URL parameters in turn given each hostile name (the others
    valid): no answer is a 5xx or holds the secret beside the repository, and Python's audit
    events show no file or folder opened but code. A valid card and plot are read through
    the same hook (it would see a traversal if one happened)."""
    global _recording
    from service.routes import TABLE
    from tests.unit.synthetic import InProcess, affine_onnx, manifest, publish

    root = tmp_path / "models"
    files = {"model.onnx": affine_onnx(), "model_card.md": b"# card\n", "plot.png": b"png"}
    publish(root, manifest("affine"), files)
    (tmp_path / "secret.md").write_text("SECRET")
    valid = {"name": "affine", "version": "1", "signature": "predict", "file": "model_card.md"}
    sys.addaudithook(_audit)  # for the life of the process; records only while a list is set
    problems, sent = [], 0
    with InProcess(root) as service:
        _recording = []
        try:
            assert (
                service.request("GET", "/models/affine/versions/1/files/plot.png").content == b"png"
            )
            control = [path for _, path in _recording if not _code(path)]
            assert any(path.endswith("plot.png") for path in control), _recording
            _recording.clear()
            for route in TABLE:
                for variant in route.variants():
                    for parameter in route.parameters():
                        if "{" + parameter + "}" not in variant:
                            continue
                        for name in HOSTILE:
                            path = variant
                            for key, value in {**valid, parameter: name}.items():
                                path = path.replace("{" + key + "}", value)
                            answer = service.request(route.method, path, json={"inputs": [[0] * 4]})
                            sent += 1
                            if answer.status_code >= 500 or b"SECRET" in answer.content:
                                problems.append(f"{route.method} {path}: {answer.status_code}")
            opened = [path for _, path in _recording if not _code(path)]
        finally:
            _recording = None
    assert sent > 300, sent
    assert problems == []
    assert opened == [], f"request data reached the filesystem: {opened[:10]}"
