"""Real object-storage servers on loopback for the tests: moto's S3 server, Azurite (Azure
Blob, from npm) and gcp-storage-emulator (GCS). Each runs as its own process on a free port
and is stopped by its process id. The service and the CLI reach them only through each
cloud's standard variables (``env``), as they would reach the real cloud.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Where `make test` installs Azurite (npm install azurite@3.35.0: 3.37 needs node 22, Debian's
# is 20); AZURITE_DIR overrides.
AZURITE_DIR = Path(os.environ.get("AZURITE_DIR", ROOT / ".cache" / "azurite"))
AZURITE_BIN = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
# Azurite's development account: published in its README, no secret.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
BUCKET = "models"


def _wait_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the storage server exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the storage server did not listen on port {port} in {timeout} s")


class StorageServer:
    """One emulator process; ``env`` is what a client needs to reach it."""

    scheme = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / f"{type(self).__name__}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def url(self, prefix: str) -> str:
        return f"{self.scheme}://{BUCKET}/{prefix}"

    def start(self) -> StorageServer:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        _wait_port(self.port, self.process)
        self.create_bucket()
        return self

    def create_bucket(self) -> None:
        pass

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the group: npx/node children too
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def requests_logged(self) -> int:
        """Requests the server logged so far (moto logs one line per request)."""
        return 0

    def __enter__(self) -> StorageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Moto(StorageServer):
    scheme = "s3"

    def command(self) -> list[str]:
        return [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)]

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
        }

    def create_bucket(self) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=BUCKET)

    def requests_logged(self) -> int:
        """moto (werkzeug) writes one access-log line per request: ``"GET /models?...``."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return len(re.findall(r'"(?:GET|PUT|HEAD|POST|DELETE) /', text))

    def list_requests_logged(self) -> int:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return sum(1 for line in text.splitlines() if "list-type=2" in line)


class Azurite(StorageServer):
    scheme = "az"

    @staticmethod
    def available() -> str | None:
        """None when Azurite can run, else why not."""
        if AZURITE_BIN.exists() and shutil.which("node"):
            return None
        if shutil.which("npm") is None:
            return "npm is not installed: Azurite (Azure Blob) comes from the npm registry"
        install_azurite()
        return (
            None
            if AZURITE_BIN.exists()
            else f"npm install azurite@3.35.0 into {AZURITE_DIR} failed"
        )

    def command(self) -> list[str]:
        return [
            str(AZURITE_BIN),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            "--location",
            str(self.workdir / "azurite-data"),
            "--silent",
            "--skipApiVersionCheck",
        ]

    @property
    def env(self) -> dict[str, str]:
        return {
            "AZURE_STORAGE_USE_EMULATOR": "true",
            "AZURITE_BLOB_STORAGE_URL": f"http://127.0.0.1:{self.port}",
        }

    def create_bucket(self) -> None:
        from azure.storage.blob import BlobServiceClient

        connection = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};"
        )
        BlobServiceClient.from_connection_string(connection).create_container(BUCKET)


def install_azurite() -> None:
    """``npm install azurite@3.35.0`` into AZURITE_DIR (what ``make test`` does first)."""
    AZURITE_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "npm",
            "install",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(AZURITE_DIR),
            "azurite@3.35.0",
        ],
        check=False,
        capture_output=True,
        timeout=600,
    )


class GcsEmulator(StorageServer):
    scheme = "gs"

    def command(self) -> list[str]:
        return [
            str(BIN / "gcp-storage-emulator"),
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--in-memory",
            "--default-bucket",
            BUCKET,
        ]

    @property
    def env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{self.port}"}
