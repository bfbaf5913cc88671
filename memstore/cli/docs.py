"""Generates docs/cli.md from the commands' own help: ``python -m memstore.cli.docs > docs/cli.md``.
tests/cli/test_cli_docs.py fails when the committed file is stale."""

from __future__ import annotations

import inspect
import sys
from typing import Any

import typer

HEADER = """# memstore CLI reference

<!-- Generated from `memstore --help` by `python -m memstore.cli.docs > docs/cli.md`. Do not edit by hand. -->

Every command prints tables for people and JSON for scripts (`--json`). Errors are one line on stderr with a
non-zero exit code (2 for usage errors). Every command takes `--help`. Ids can be shortened to any unique
prefix of at least 6 characters. The store is `--home DIR`, else `$MEMSTORE_HOME`, else `~/.memstore`;
every other setting comes from the `MEMSTORE_*` environment variables (see `memstore doctor`).
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _help(cmd: Any) -> str:
    return inspect.cleandoc(cmd.help or cmd.short_help or "").strip()


def _is_group(cmd: Any) -> bool:
    return hasattr(cmd, "list_commands") and hasattr(cmd, "get_command")


def _param_row(p: Any) -> tuple[str, str] | None:
    if getattr(p, "param_type_name", "") == "option":
        if getattr(p, "hidden", False) or "--help" in p.opts:
            return None
        names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
        flag = getattr(p, "is_flag", False) or getattr(p, "count", False)
        meta = "" if flag else f" `{p.metavar or (p.name or 'value').upper()}`"
        desc = getattr(p, "help", None) or ""
        extras = []
        if p.required:
            extras.append("required")
        elif getattr(p, "show_default", False) and p.default not in (None, False, "", ()) and not callable(p.default):
            extras.append(f"default: `{p.default}`")
        if p.multiple:
            extras.append("repeatable")
        if extras:
            desc = f"{desc} ({', '.join(extras)})" if desc else ", ".join(extras)
        return names + meta, desc
    if getattr(p, "param_type_name", "") == "argument":
        name = f"`{p.metavar or (p.name or '').upper()}`"
        desc = getattr(p, "help", None) or ""
        if not p.required:
            desc = f"{desc} (optional)" if desc else "optional"
        return name, desc
    return None


def _section(cmd: Any, path: str, parent: Any, depth: int, out: list[str], recurse: bool = True) -> None:
    ctx = typer.Context(cmd, info_name=path.split()[-1], parent=parent)
    out.append(f"{'#' * min(depth, 4)} `{path}`\n")
    text = _help(cmd)
    if text:
        out.append(text + "\n")
    usage = cmd.get_usage(ctx).strip().replace("Usage: ", "", 1)
    out.append(f"```\n{usage}\n```\n")
    rows = [r for r in (_param_row(p) for p in cmd.get_params(ctx)) if r is not None]
    if rows:
        out.append("| Argument / option | Description |\n| --- | --- |")
        out.extend(f"| {_cell(a)} | {_cell(b)} |" for a, b in rows)
        out.append("")
    if recurse and _is_group(cmd):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            _section(sub, f"{path} {name}", ctx, depth + 1, out)


def render() -> str:
    """The whole reference as Markdown."""
    from memstore.cli.app import LAZY, CliError, LazyCommand, app, load_lazy

    root: Any = typer.main.get_command(app)
    out = [HEADER]
    ctx = typer.Context(root, info_name="memstore")
    _section(root, "memstore", None, 1, out, recurse=False)
    for name in root.list_commands(ctx):
        sub = root.get_command(ctx, name)
        if sub is None or sub.hidden:
            continue
        if isinstance(sub, LazyCommand):
            try:
                sub = load_lazy(name)
            except CliError as exc:
                out.append(f"## `memstore {name}`\n\n{LAZY[name][2]}\n\n_{exc}._\n")
                continue
        _section(sub, f"memstore {name}", ctx, 2, out)
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
