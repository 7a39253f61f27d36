"""`pardot-destination fake-pardot` answers the README's curl example (done with httpx)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_fake_pardot_command_serves_the_readme_example() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli", "fake-pardot", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        assert f"127.0.0.1:{port}" in banner and "demo-client-secret" not in banner
        base = f"http://127.0.0.1:{port}"
        token = httpx.post(
            f"{base}/services/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": "demo-refresh-token",
                  "client_id": "demo-client-id", "client_secret": "demo-client-secret"},
        ).json()["access_token"]  # fmt: skip
        created = httpx.post(
            f"{base}/api/prospect/version/4/do/create/email/ada@example.com",
            headers={
                "Authorization": f"Bearer {token}",
                "Pardot-Business-Unit-Id": "0Uv000000000001AAA",
            },
            data={"format": "json", "first_name": "Ada"},
        )
        assert created.status_code == 201
        assert created.json()["prospect"]["first_name"] == "Ada"
    finally:
        process.terminate()
        process.wait(timeout=10)
