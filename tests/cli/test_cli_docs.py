"""docs/cli.md is generated from the commands' help and must be regenerated when they change."""

from __future__ import annotations

from pathlib import Path

import typer

from memstore.cli.app import app
from memstore.cli.docs import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_docs_cli_md_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/cli.md is stale: regenerate it with `python -m memstore.cli.docs > docs/cli.md`")


def test_every_command_has_a_section() -> None:
    text = DOC.read_text(encoding="utf-8")
    root = typer.main.get_command(app)
    ctx = typer.Context(root, info_name="memstore")
    for name in root.list_commands(ctx):  # type: ignore[attr-defined]
        cmd = root.get_command(ctx, name)  # type: ignore[attr-defined]
        if cmd.hidden:
            continue
        assert f"## `memstore {name}`" in text
        if hasattr(cmd, "list_commands"):
            for sub in cmd.list_commands(typer.Context(cmd, info_name=name, parent=ctx)):
                assert f"### `memstore {name} {sub}`" in text
