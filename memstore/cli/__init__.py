"""The ``memstore`` command line, one module per command group (typer + rich); ``app`` assembles them."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> None:
    """The ``memstore`` console script."""
    from memstore.cli.app import main as run

    run(argv)
