"""``python -m training compare``: bundles side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from training.cli.app import _exit_on, app


@app.command("compare")
def compare_command(
    bundles: Annotated[list[Path], typer.Argument(
        help="bundle folders (a candidate, a published ROOT/versions/<version>, ROOT/current)",
        show_default=False)],
    markdown: Annotated[bool, typer.Option(help="a Markdown table instead of text")] = False,
) -> None:
    """One row per bundle: version, the version it was trained as, model, data, epochs
    run/best, valid and test Recall/NDCG@20, warm and cold test Recall@20, time, and every
    config field that differs between them."""
    import json

    from bundle import BundleError
    from training.compare import compare_rows, format_table

    with _exit_on(BundleError, json.JSONDecodeError, OSError):
        rows = compare_rows(list(bundles))
    typer.echo("\n".join(format_table(rows, markdown=markdown)))
