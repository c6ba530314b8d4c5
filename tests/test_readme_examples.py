"""Every curl command of README.md and of the API page, run as written with the real curl
against a real server (the session's ``service``): only ``localhost:3000`` becomes the
server's address. The sample inputs they use are small real files in ``tests/data/samples``.
"""

from __future__ import annotations

import html
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "data" / "samples"
README = ROOT / "README.md"
# Commands that need a server set up otherwise, each set up by the line before it in its
# block: not the session's server.
ELSEWHERE = {
    "iris_mlp": "needs the iris model exported by the `training export` line before it",
    "Bearer s3cret": "run against a server with the token: test_admin_commands_run_as_written",
    "--cacert": "needs a server with TLS: tests/test_auth.py runs curl over HTTPS on a test CA",
}


def commands(script: str) -> list[str]:
    """The shell commands of a script, a command spanning lines (a trailing backslash, or a
    quoted string across lines) kept whole; comments dropped."""
    found, pending = [], ""
    for line in script.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line + "\n"
        if line.endswith("\\"):
            continue
        try:
            shlex.split(pending, comments=True)
        except ValueError:  # a quotation still open
            continue
        found.append(pending.strip())
        pending = ""
    return found


def readme_curls() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    return [c for block in blocks for c in commands(block) if c.startswith("curl ")]


def run(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder that looks like the repository root to the commands (tests/ is there), so
    what they write (``-o digit.png``) lands in a temporary folder."""
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    return tmp_path


def test_the_readme_has_its_examples() -> None:
    found = readme_curls()
    assert len(found) >= 12, found
    for command in found:
        assert "localhost:3000" in command, command
        assert "..." not in command, f"a placeholder left in: {command}"
    outputs = [c for c in found if " -o " in c or ">" in c.replace("->", "")]
    assert outputs and all("--fail-with-body" in c for c in outputs), outputs


@pytest.mark.parametrize("command", readme_curls(), ids=lambda c: c.split("localhost:3000")[1][:50])
def test_readme_curl_command_runs_as_written(command: str, service, workdir: Path) -> None:
    reason = next((why for key, why in ELSEWHERE.items() if key in command), None)
    if reason:
        pytest.skip(reason)
    address = service.url.removeprefix("http://")
    result = run(command.replace("localhost:3000", address), workdir)
    assert result.returncode == 0, (
        f"{command}\n-> exit {result.returncode}: {result.stdout[-2000:]}"
    )
    if " -o digit.png" in command:
        assert (workdir / "digit.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    elif "/card" in command:
        assert result.stdout.startswith("# Model card")
    else:
        assert result.stdout.startswith("{"), result.stdout[:300]
        assert '"error"' not in result.stdout[:200], result.stdout[:300]


def test_fail_with_body_keeps_a_refusal_out_of_the_file(service, workdir: Path) -> None:
    """What the README's `--fail-with-body -o digit.png` guards against: a refusal exits
    non-zero instead of being saved as the image."""
    command = (
        f"curl --fail-with-body -H 'accept: image/png' -d '{{\"inputs\": [1, 2]}}' "
        f"{service.url}/autoencoder/decode -o digit.png"
    )
    result = run(command, workdir)
    assert result.returncode == 22, result
    assert not (workdir / "digit.png").read_bytes().startswith(b"\x89PNG")


def test_api_page_examples_run_as_written(service, workdir: Path) -> None:
    page = run(f"curl --fail-with-body -s {service.url}/", workdir)
    assert page.returncode == 0
    (block,) = re.findall(r'<pre id="examples">(.*?)</pre>', page.stdout, flags=re.S)
    found = commands(html.unescape(block))
    served = httpx.get(service.url + "/models").json()["models"]
    assert len(found) == 1 + len([m for m in served if m["state"] == "ready"])
    inferences = 0
    for command in found:
        # the address the page was fetched from
        assert service.url.removeprefix("http://") in command, command
        result = run(command, workdir)
        assert result.returncode == 0, f"{command[:300]}\n-> {result.stdout[-1000:]}"
        inferences += "/infer" in command
        if "/infer" in command:
            assert '"outputs"' in result.stdout, result.stdout[:300]
    assert inferences >= 2, found  # digits and the autoencoder take small tensors


def test_the_page_writes_no_unsafe_host(service) -> None:
    hostile = httpx.get(service.url + "/", headers={"host": "x'; rm -rf ~; echo '"}).text
    assert "rm -rf" not in hostile and "localhost:3000" in hostile


def test_samples_are_small_real_files_the_readme_names() -> None:
    named = set(re.findall(r"tests/data/samples/([\w.]+\w)", README.read_text()))
    present = {p.name for p in SAMPLES.iterdir()}
    assert named <= present, named - present
    assert {"seven.png", "daisy.jpg", "record.json", "code.json"} <= present
    for sample in SAMPLES.iterdir():
        # Under tests/data: the repository's data check allows sample files only there.
        assert sample.stat().st_size < 30_000, f"{sample.name}: {sample.stat().st_size} bytes"


def test_admin_commands_run_as_written(quick_repository: Path, tmp_path: Path) -> None:
    """The repository API block, against a server started as its first line says (with the
    token; a repository of bank alone keeps the start short)."""
    from benchmarks.servers import Server

    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
                if "Bearer s3cret" in b]  # fmt: skip
    assert "SERVING_ADMIN_TOKEN=s3cret" in block
    curls = [c for c in commands(block) if c.startswith("curl ")]
    repository = tmp_path / "repository"
    repository.mkdir()
    (repository / "bank").symlink_to(quick_repository / "bank")
    env = {"MODEL_REPOSITORY": str(repository), "SERVING_ADMIN_TOKEN": "s3cret"}
    with Server(env=env) as server:
        server.wait_until("/readyz", timeout=300)
        address = server.url.removeprefix("http://")
        for command in curls:
            result = run(command.replace("localhost:3000", address), tmp_path)
            assert result.returncode == 0, f"{command}\n-> {result.stdout[-1000:]}"
        assert "bank" in run(curls[0].replace("localhost:3000", address), tmp_path).stdout


def test_python_client_examples_run_as_written(service, grpc_url: str, workdir: Path) -> None:
    """The README's tritonclient snippets (HTTP and gRPC), addresses rewritten; the gRPC
    one's last line needs the admin token and is left out."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    snippets = [b for b in blocks if "tritonclient" in b]
    assert len(snippets) == 2
    for snippet in snippets:
        lines = [line for line in snippet.splitlines() if "<SERVING_ADMIN_TOKEN>" not in line]
        code = "\n".join(lines).replace("localhost:3000", service.url.removeprefix("http://"))
        code = code.replace("localhost:8001", grpc_url)
        code += "\nprint(client.infer('digits', [image]).as_numpy('probabilities').argmax())"
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.split()[-1].isdigit(), result.stdout
