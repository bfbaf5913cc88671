"""The ``memstore`` command line: inspect and edit what is stored about users, and run memstore.

    memstore users list
    memstore memories list --user alice
    memstore demo

Every command's ``--help`` is its documentation (docs/cli.md is generated from it: ``python -m
memstore.cli.docs``). Errors are one line on stderr and a non-zero exit code (2 for usage errors); set
MEMSTORE_DEBUG=1 to see the traceback of an unexpected one. Only typer and the command modules load at
start-up; Memory, SQLModel, torch and litellm load inside the commands that use them.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from memstore.cli import admin as cli_admin
from memstore.cli import demo as cli_demo
from memstore.cli import doctor as cli_doctor
from memstore.cli import episodes as cli_episodes
from memstore.cli import memories as cli_memories
from memstore.cli import profile as cli_profile
from memstore.cli.common import CliError, State, set_state

# Sub-apps other modules provide, imported only when their command runs:
# name -> (module, attribute, one-line help, what to install when it is missing)
LAZY: dict[str, tuple[str, str, str, str]] = {
    "eval": ("memstore.cli.eval", "eval_app", "Benchmarks of retrieval quality: LoCoMo evidence recall, PrefEval "
             "preference recall, and the no-LLM extraction path.", "pip install 'memstore[bench]'"),
    "bench": ("memstore.cli.eval", "bench_app", "Latency and throughput benchmarks: search, ingest, client overhead, "
              "CLI start-up, the proxy server, server backends.", "pip install 'memstore[bench]'"),
    "serve": ("memstore.cli.serve", "serve", "Run the OpenAI-compatible proxy: any OpenAI SDK gets memory by "
              "pointing base_url here.", "pip install 'memstore[server]'"),
    "keys": ("memstore.cli.serve", "keys_app", "Proxy keys for `memstore serve`: create, list, revoke.",
             "pip install 'memstore[server]'"),
    "mcp": ("memstore.cli.mcp", "mcp", "MCP server over one user's memory (stdio or HTTP).", "pip install 'mcp>=2'"),
    "ui": ("memstore.cli.ui", "ui", "Serve the web memory inspector in a browser.", "pip install 'memstore[server]'"),
}
LAZY_PANEL = "Extensions"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def report_error(message: str) -> None:
    typer.echo(typer.style("error:", fg="red", bold=True) + " " + _one_line(message), err=True)


def load_lazy(name: str) -> Any:
    """Imports a lazily mounted sub-app; CliError('memstore NAME is not available: ...') when it can't."""
    module, attr, _help, hint = LAZY[name]
    try:
        obj = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        reason = (f"{module} is not part of this installation" if exc.name and module.startswith(exc.name)
                  else f"it needs the {exc.name!r} package ({hint})")
        raise CliError(f"memstore {name} is not available: {reason}") from exc
    except AttributeError as exc:
        raise CliError(f"memstore {name} is not available: {module} has no {attr!r}") from exc
    except Exception as exc:
        raise CliError(f"memstore {name} is not available: importing {module} failed: "
                       f"{type(exc).__name__}: {exc}") from exc
    if isinstance(obj, typer.Typer):
        cmd = typer.main.get_command(obj)
    elif hasattr(obj, "make_context"):  # already a (click or typer) command
        cmd = obj
    elif callable(obj):
        single = typer.Typer(add_completion=False)
        single.command(name=name)(obj)
        cmd = typer.main.get_command(single)
    else:
        raise CliError(f"memstore {name} is not available: {module}.{attr} is not a command")
    _reflow_tree(cmd)
    return cmd


class LazyCommand(TyperCommand):
    """A placeholder listed in ``memstore --help``; the real command is imported when it runs."""

    def __init__(self, name: str) -> None:
        super().__init__(name, help=LAZY[name][2], short_help=LAZY[name][2], add_help_option=False,
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                         rich_help_panel=LAZY_PANEL)

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        if parent is not None and parent.resilient_parsing:
            return super().make_context(info_name, args, parent=parent, **extra)
        return load_lazy(self.name or "").make_context(info_name, args, parent=parent, **extra)


def _reflow(text: str | None) -> str | None:
    """Docstring paragraphs as single lines (typer's rich help would keep the source's line breaks)."""
    if not text:
        return text
    return "\n\n".join(" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()))


_NAMED_METAVARS = {"url": "URL", "key": "KEY", "home": "DIR", "dir": "DIR", "port": "PORT", "host": "HOST",
                   "timeout": "SECONDS", "bytes": "BYTES", "model": "MODEL", "user": "USER", "path": "PATH"}


def metavar_for(param: Any) -> str:
    """What a value-taking option shows after its name: named by what it is (URL, DIR, N ...), never a
    Python type like ``<str>``."""
    name = (param.name or "value").lower().strip("_") or "value"
    last = name.rsplit("_", 1)[-1]
    if last in _NAMED_METAVARS:
        return _NAMED_METAVARS[last]
    desc = getattr(param, "type_descriptor", None)
    choices = getattr(desc, "choices", None) if getattr(desc, "is_choice", False) else None
    if choices:
        return "|".join(str(getattr(c, "value", c)) for c in choices)
    if getattr(desc, "is_path", False) or getattr(desc, "is_file", False):
        return "PATH"
    annotation = getattr(desc, "annotation", None)
    if annotation is int:
        return "N"
    if annotation is float:
        return "NUMBER"
    return last.upper()


def _no_type(*_args: Any, **_kwargs: Any) -> None:
    return None


def _tidy_param(param: Any) -> None:
    """Help text reflowed; flags show no metavar and typed options a meaningful one (typer's rich help
    would print ``<bool>`` / ``<str>``); arguments show their name only."""
    if getattr(param, "help", None):
        param.help = _reflow(param.help)
    kind = getattr(param, "param_type_name", "")
    if kind == "option":
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""
        elif param.metavar is None:
            param.metavar = metavar_for(param)
        ranged = getattr(param, "_get_number_range_help_str", None)
        limits = ranged() if callable(ranged) else None
        if limits:  # in the help text, not the narrow placeholder column (where it squeezed option names)
            param.help = f"{param.help or ''} [{limits}]".strip()
            param._get_number_range_help_str = _no_type
    elif kind == "argument":
        if param.metavar is None:
            param.metavar = (param.name or "value").upper()
        param.display_type_rich = _no_type  # the name is the placeholder


def _tidy_help_option(cmd: Any) -> None:
    """``--help`` is made per context, outside ``params``: tidy it as it is made."""
    made = cmd.get_help_option
    if getattr(made, "_memstore_tidy", False):
        return

    def get_help_option(ctx: Any) -> Any:
        option = made(ctx)
        if option is not None:
            _tidy_param(option)
        return option

    get_help_option._memstore_tidy = True  # type: ignore[attr-defined]
    cmd.get_help_option = get_help_option


def _reflow_tree(cmd: Any) -> None:
    cmd.help = _reflow(cmd.help)
    for param in getattr(cmd, "params", []):
        _tidy_param(param)
    if hasattr(cmd, "get_help_option"):
        _tidy_help_option(cmd)
    for sub in getattr(cmd, "commands", {}).values():
        _reflow_tree(sub)


class RootGroup(TyperGroup):
    """Adds the lazy sub-apps and turns every failure into one line on stderr and an exit code."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        _reflow_tree(self)

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        ordered = [n for n in ORDER if n in names]
        return [*ordered, *(n for n in names if n not in ordered), *(n for n in LAZY if n not in names)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in LAZY:
            return LazyCommand(cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        set_state(State())
        for key, value in QUIET_ENV.items():  # model loading talks on stderr otherwise
            os.environ.setdefault(key, value)
        with cli_logging():
            code = run_guarded(lambda: super(RootGroup, self).main(args, prog_name, complete_var,
                                                                   standalone_mode=False, **extra))
        if standalone_mode:
            sys.exit(code)
        return code


class _LevelFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {' '.join(record.getMessage().split())}"


@contextmanager
def cli_logging() -> Iterator[None]:
    """The library's log lines, as one-line notes on stderr: errors only, unless --verbose or MEMSTORE_DEBUG.
    Restores the logger afterwards (tests run many invocations in one process)."""
    log = logging.getLogger("memstore")
    saved = (log.level, log.propagate, list(log.handlers))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelFormatter())
    log.handlers = [handler]
    log.propagate = False
    log.setLevel(logging.DEBUG if os.environ.get("MEMSTORE_DEBUG") else logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(saved[0])
        log.propagate = saved[1]
        log.handlers = saved[2]


def run_guarded(fn: Callable[[], Any]) -> int:
    """Runs the CLI; returns its exit code. No traceback unless MEMSTORE_DEBUG is set."""
    from memstore.errors import MemstoreError

    try:
        rv = fn()
        return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
    except CliError as exc:
        report_error(str(exc))
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        report_error("aborted")
        return 1
    except MemstoreError as exc:
        report_error(str(exc))
        return 1
    except KeyboardInterrupt:
        report_error("interrupted")
        return 130
    except BrokenPipeError:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - nothing else can be written
        return 1
    except OSError as exc:
        report_error(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return 1
    except Exception as exc:
        if _is_click_error(exc):  # typer's (or click's) usage and parameter errors
            return _report_click_error(exc)
        if os.environ.get("MEMSTORE_DEBUG"):
            raise
        report_error(f"unexpected {type(exc).__name__}: {exc} (set MEMSTORE_DEBUG=1 for the traceback)")
        return 1


def _is_click_error(exc: Exception) -> bool:
    return hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)


def _report_click_error(exc: Any) -> int:
    names = {c.__name__ for c in type(exc).__mro__}
    if "NoArgsIsHelpError" in names:  # `memstore` alone: the help was printed
        return 0
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if "UsageError" in names and ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    report_error(message)
    return int(exc.exit_code)


QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false",
             "LITELLM_LOG": "ERROR"}
ORDER = ("memories", "instructions", "rules", "users", "forget", "export", "import", "turns", "feedback", "demo",
         "chat", "doctor", "reindex")

app = typer.Typer(
    cls=RootGroup, name="memstore", no_args_is_help=True, add_completion=False,
    help="memstore: personalization memory for any chat model. Inspect and edit what is stored about each "
         "user, and run memstore. Start with `memstore demo`.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from memstore import __version__

        typer.echo(f"memstore {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[Path | None, typer.Option("--home", metavar="DIR", help="The store's directory (default: "
                                              "$MEMSTORE_HOME, else ~/.memstore).", show_default=False,
                                              file_okay=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show memstore's warnings and progress notes "
                                          "(MEMSTORE_DEBUG=1: everything, and tracebacks).")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_version)] = False,
) -> None:
    """memstore: personalization memory for any chat model."""
    set_state(State(home=home.expanduser() if home else None))
    if verbose and not os.environ.get("MEMSTORE_DEBUG"):
        logging.getLogger("memstore").setLevel(logging.INFO)


MEMORY = "Memories and instructions"
DATA = "Data"
TRY = "Try it"
MAINT = "Maintenance"

app.add_typer(cli_memories.app, name="memories", rich_help_panel=MEMORY)
app.add_typer(cli_episodes.app, name="episodes", rich_help_panel=MEMORY)
app.add_typer(cli_profile.instructions_app, name="instructions", rich_help_panel=MEMORY)
app.add_typer(cli_profile.rules_app, name="rules", rich_help_panel=MEMORY)
app.add_typer(cli_admin.users_app, name="users", rich_help_panel=MEMORY)
app.command("forget", rich_help_panel=DATA)(cli_admin.forget)
app.command("export", rich_help_panel=DATA)(cli_admin.export)
app.command("import", rich_help_panel=DATA)(cli_admin.import_)
app.add_typer(cli_admin.turns_app, name="turns", rich_help_panel=DATA)
app.add_typer(cli_admin.feedback_app, name="feedback", rich_help_panel=DATA)
app.command("demo", rich_help_panel=TRY)(cli_demo.demo)
app.command("chat", rich_help_panel=TRY)(cli_demo.chat)
app.command("doctor", rich_help_panel=MAINT)(cli_doctor.doctor)
app.command("reindex", rich_help_panel=MAINT)(cli_admin.reindex)


def main(argv: list[str] | None = None) -> None:
    """The ``memstore`` console script."""
    command = typer.main.get_command(app)
    command.main(args=argv, prog_name="memstore")


if __name__ == "__main__":
    main()
