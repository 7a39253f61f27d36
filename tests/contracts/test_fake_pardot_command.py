"""`pardot-destination fake-pardot` answers the README's curl example (done with httpx)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def test_the_fake_pardot_command_serves_the_readme_example() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli.main", "fake-pardot", "--port", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        found = re.search(r"on (http://127\.0\.0\.1:\d+)", banner)
        assert found is not None and "demo-client-secret" not in banner
        base = found.group(1)
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


def test_the_fake_pardot_command_takes_the_bulk_knobs() -> None:
    """`--no-imports` reaches the fake: creating an import is refused as Pardot refuses it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "entrypoints.cli.main", "fake-pardot", "--port", "0",
         "--no-imports", "--import-delay", "30", "--export-time-zone", "Asia/Tokyo"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        found = re.search(r"on (http://127\.0\.0\.1:\d+)", process.stdout.readline())
        assert found is not None
        base = found.group(1)
        token = httpx.post(
            f"{base}/services/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": "demo-refresh-token",
                  "client_id": "demo-client-id", "client_secret": "demo-client-secret"},
        ).json()["access_token"]  # fmt: skip
        refused = httpx.post(
            f"{base}/api/import/version/4/do/create?format=json",
            headers={
                "Authorization": f"Bearer {token}",
                "Pardot-Business-Unit-Id": "0Uv000000000001AAA",
            },
            json={"operation": "Upsert", "object": "Prospect"},
        )
        assert refused.json()["@attributes"]["err_code"] == 46
    finally:
        process.terminate()
        process.wait(timeout=10)
