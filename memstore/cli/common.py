"""Shared pieces of the ``memstore`` CLI: global state, opening the store, output, id prefixes, $EDITOR.

Only typer and the standard library are imported at module level: ``memstore --help`` must stay
fast. Memory, SQLModel, rich tables, torch and litellm load inside the commands that need them.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from memstore.config import MemoryConfig
    from memstore.memory import Memory

MIN_PREFIX = 6
SHORT_ID = 8

# ---- option types shared by the commands ------------------------------------------------------------
def check_scope_option(param: typer.CallbackParam, value: str | None) -> str | None:
    """A --user / --namespace value memstore can store (not empty, not too long ...); else a usage error."""
    if value is None:
        return value
    from memstore.errors import InvalidInputError
    from memstore.validate import check_scope

    try:
        check_scope(value, "default") if param.name == "user" else check_scope("user", value)
    except InvalidInputError as exc:
        raise typer.BadParameter(str(exc).removeprefix("user_id ").removeprefix("namespace ")) from None
    return value


UserOpt = Annotated[str, typer.Option("--user", "-u", help="The user id.", show_default=False,
                                      callback=check_scope_option)]
OptionalUserOpt = Annotated[str | None, typer.Option("--user", "-u", help="Restrict to this user.",
                                                     show_default=False, callback=check_scope_option)]
NamespaceOpt = Annotated[str, typer.Option("--namespace", "-n", help="The namespace.", callback=check_scope_option)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")]


class CliError(Exception):
    """A failure to report as one line on stderr with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class State:
    """Global options (the root callback stores one in ``ctx.obj``)."""

    home: Path | None = None


_state = State()


def set_state(new: State) -> None:
    """Called by the root command for every invocation (several run in one process under tests)."""
    global _state
    _state = new


def state() -> State:
    return _state


# ---- the store ----------------------------------------------------------------------------------------
def config(**overrides: Any) -> MemoryConfig:
    """The configuration: --home, then MEMSTORE_* environment variables, then defaults."""
    from memstore.config import MemoryConfig

    home = state().home
    if home is not None:
        overrides.setdefault("home", home)
    return MemoryConfig(**overrides)


def open_memory(write: bool = False, **overrides: Any) -> Memory:
    """Opens the store. Read-only commands never create a home directory: a missing one is an error."""
    cfg = config(**overrides)
    if cfg.database_url is None:
        home = cfg.resolved_home()
        if home.exists() and not home.is_dir():
            raise CliError(f"memstore home {home} is not a directory")
        if not write and not (home / "memstore.db").exists():
            raise CliError(f"no memstore at {home}: nothing has been stored there yet "
                           "(point --home or MEMSTORE_HOME at an existing store)")
    from memstore.memory import Memory

    return Memory(config=cfg)


# ---- output -------------------------------------------------------------------------------------------
def console(stderr: bool = False) -> Console:
    """A rich console on the current stdout/stderr (looked up per call: tests swap them)."""
    from rich.console import Console

    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False, soft_wrap=False)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


def dumps(data: Any, indent: int | None = 2) -> str:
    return json.dumps(data, default=_json_default, ensure_ascii=False, indent=indent)


def print_json(data: Any) -> None:
    sys.stdout.write(dumps(data) + "\n")
    sys.stdout.flush()


def info(message: str) -> None:
    """A human note on stderr (keeps stdout clean for data)."""
    console(stderr=True).print(message)


def fail(message: str, exit_code: int = 1) -> NoReturn:
    raise CliError(message, exit_code)


YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def confirm_or_fail(question: str, yes: bool, nothing: str = "nothing deleted") -> None:
    """Asks ``question`` on stderr unless ``yes``; anything but y fails with "<nothing> (answer y, or pass
    --yes)". An answer may be piped in; stdin that is not a terminal and gives no answer fails saying so."""
    if yes:
        return
    answered = True
    try:
        confirmed = typer.confirm(question, default=False, err=True)
    except (typer.Abort, EOFError):
        confirmed, answered = False, False
    tty = sys.stdin.isatty()
    if not tty:  # the answer was not echoed: end the prompt's line
        sys.stderr.write("\n")
    if not confirmed:
        if not answered and not tty:
            fail(f"{nothing}: stdin is not a terminal, so nobody could answer; pass --yes to go ahead")
        fail(f"{nothing} (answer y, or pass --yes)")


def esc(text: Any) -> str:
    """Escapes rich markup in stored text."""
    from rich.markup import escape

    return escape(str(text))


def short(ident: str | None) -> str:
    return (ident or "")[:SHORT_ID]


def when(dt: datetime | None) -> str:
    if dt is None:
        return ""
    return dt.strftime("%Y-%m-%d %H:%M")


def clip(text: str | None, limit: int = 80) -> str:
    t = " ".join((text or "").split())
    return t if len(t) <= limit else t[: limit - 1] + "…"


def table(*columns: str, title: str | None = None) -> Any:
    from rich import box
    from rich.table import Table

    t = Table(title=title, title_justify="left", title_style="bold", header_style="bold", box=box.SIMPLE_HEAD,
              pad_edge=False)
    for c in columns:
        opts: dict[str, Any] = {}
        if c in ("ID", "Kind", "When", "Created", "Updated", "Event", "Actor", "Status", "Last activity"):
            opts["no_wrap"] = True
        if c in ("Text", "Change", "Error", "Message", "Rule", "Reason"):
            opts["ratio"] = 1
            opts["overflow"] = "fold"
        t.add_column(c, **opts)
    return t


def status(message: str) -> Any:
    """A spinner on stderr while something slow (model loading, extraction) runs."""
    return console(stderr=True).status(message, spinner="dots")


# ---- id prefixes --------------------------------------------------------------------------------------
def resolve_id(mem: Memory, given: str, kind: str = "memory", *, user: str | None = None,
               namespace: str | None = None, include_history: bool = False) -> str:
    """The full id for a unique prefix (>= 6 characters) of a memory, rule or turn id.

    ``include_history`` also matches deleted memories that still have history events."""
    from sqlmodel import Session, col, select

    from memstore.records import MemoryEvent, MemoryRecord, StyleRule, Turn

    given = (given or "").strip()
    if not given:
        fail(f"give a {kind} id")
    table_ = {"memory": MemoryRecord, "rule": StyleRule, "turn": Turn}[kind]
    tables: list[Any] = [table_]
    if include_history and kind == "memory":
        tables.append(MemoryEvent)
    found: set[str] = set()
    with Session(mem.engine) as s:
        for t in tables:
            column = t.memory_id if t is MemoryEvent else t.id
            q = select(column)
            if len(given) < MIN_PREFIX:
                q = q.where(column == given)
            else:
                q = q.where(col(column).startswith(given, autoescape=True))
            if user is not None:
                q = q.where(t.user_id == user)
            if namespace is not None:
                q = q.where(t.namespace == namespace)
            found.update(s.exec(q.distinct().limit(5)).all())
    if given in found:
        return given
    scope = f" for user {user!r}" if user is not None else ""
    if not found and kind == "memory" and not include_history:
        try:
            deleted = resolve_id(mem, given, kind, user=user, namespace=namespace, include_history=True)
        except CliError:
            deleted = None
        if deleted is not None:
            fail(f"memory {short(deleted)} was deleted; its history remains: memstore memories history "
                 f"{short(deleted)}")
    if not found:
        if len(given) < MIN_PREFIX:
            fail(f"no {kind} with id {given!r}{scope} (an id prefix needs at least {MIN_PREFIX} characters)")
        fail(f"no {kind} with id {given!r}{scope}")
    if len(found) > 1:
        listed = ", ".join(sorted(short(f) + "…" for f in found))
        fail(f"id prefix {given!r} is ambiguous: it matches {listed}; give more characters")
    return found.pop()


# ---- $EDITOR ------------------------------------------------------------------------------------------
def run_editor(path: Path) -> None:
    """Runs $VISUAL / $EDITOR (which may carry arguments, e.g. ``code --wait``) on ``path``."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or ("notepad" if os.name == "nt" else "vi")
    try:
        argv = [*shlex.split(editor), str(path)]
    except ValueError as exc:
        fail(f"cannot parse $EDITOR {editor!r}: {exc}")
    try:
        code = subprocess.call(argv)
    except OSError as exc:
        fail(f"cannot start the editor {editor!r}: {exc.strerror or exc} (set $EDITOR)")
    if code != 0:
        fail(f"the editor {editor!r} exited with status {code}: nothing changed")


def edit_text(initial: str, *, comment: str, extension: str = ".txt") -> str | None:
    """Opens the editor on ``initial`` plus ``#`` comment lines; returns the text without comment lines,
    or None when it is unchanged."""
    body = initial.rstrip("\n") + "\n\n" + "\n".join(f"# {line}".rstrip() for line in comment.splitlines()) + "\n"
    fd, name = tempfile.mkstemp(prefix="memstore-", suffix=extension)
    path = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        run_editor(path)
        try:
            edited = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read what the editor saved: {exc}")
    finally:
        path.unlink(missing_ok=True)
    kept = "\n".join(line for line in edited.splitlines() if not line.startswith("#")).strip()
    if kept == initial.strip():
        return None
    return kept


def read_text_arg(text: str) -> str:
    """``-`` reads the text from stdin."""
    if text == "-":
        return sys.stdin.read()
    return text


EXTRACTORS = ("llm", "heuristic")


def check_extractor(name: str | None) -> str | None:
    """``--extractor``: llm or heuristic (``rules``, its old name, still works). Exits 2 on anything else."""
    if name is None:
        return None
    if name == "rules":
        return "heuristic"
    if name not in EXTRACTORS:
        fail(f"--extractor must be llm or heuristic, not {name!r}", 2)
    return name
