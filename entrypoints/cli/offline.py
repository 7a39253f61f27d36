"""`fake-pardot` and `demo`: Pardot on this machine, to try a pipeline with no account.

The fakes live in `contracts/` and are imported only when one of these commands runs, so no
other command pays for loading them.
"""

from __future__ import annotations

import asyncio
import sys

import click

from entrypoints.cli.support import console


@click.command("fake-pardot")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option(
    "--api-version", "version", default="4", show_default=True, type=click.Choice(["3", "4"])
)
@click.option("--custom-field", "custom_fields", multiple=True, help="a custom field id (repeat)")
@click.option(
    "--import-rows-per-second", default=5000.0, show_default=True, help="import processing rate"
)
@click.option(
    "--import-delay", default=0.0, show_default=True, help="seconds a submitted import waits"
)
@click.option(
    "--export-rows-per-second", default=5000.0, show_default=True, help="export processing rate"
)
@click.option("--export-delay", default=0.0, show_default=True, help="seconds an export waits")
@click.option(
    "--no-imports", is_flag=True, help="refuse to create imports, as an account without them"
)
@click.option(
    "--export-custom-fields",
    is_flag=True,
    help="let exports carry custom fields (Pardot's docs do not say they do)",
)
@click.option(
    "--export-time-zone",
    default="America/Los_Angeles",
    show_default=True,
    help="the API user's zone, in which exports write dates",
)
def fake_pardot(
    host: str,
    port: int,
    version: str,
    custom_fields: tuple[str, ...],
    import_rows_per_second: float,
    import_delay: float,
    export_rows_per_second: float,
    export_delay: float,
    no_imports: bool,
    export_custom_fields: bool,
    export_time_zone: str,
) -> None:
    """Run the fake Pardot (and Salesforce login) to try a pipeline offline."""
    from contracts.fake_pardot import serve_forever

    bulk = {
        "import_rows_per_second": import_rows_per_second,
        "import_queue_delay": import_delay,
        "export_rows_per_second": export_rows_per_second,
        "export_queue_delay": export_delay,
        "import_enabled": not no_imports,
        "export_custom_fields": export_custom_fields,
        "export_user_time_zone": export_time_zone,
    }
    serve_forever(host, port, version=int(version), custom_fields=list(custom_fields), bulk=bulk)


@click.command()
@click.option("--seconds", default=60.0, show_default=True, help="give up waiting after this")
def demo(seconds: float) -> None:
    """Start the fake Pardot and the real service, send the seed's examples, show prospects."""
    from entrypoints.cli.demo import run_demo

    sys.exit(asyncio.run(run_demo(console, wait_seconds=seconds)))
