"""``memstore instructions ...`` (custom instructions) and ``memstore rules ...`` (style rules)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Annotated, Any

import typer

from memstore.cli.common import (
    JsonOpt,
    NamespaceOpt,
    UserOpt,
    console,
    edit_text,
    esc,
    fail,
    info,
    open_memory,
    print_json,
    read_text_arg,
    resolve_id,
    short,
    table,
    when,
)

if TYPE_CHECKING:
    from memstore.instructions.profiles import Profile
    from memstore.records import StyleRule

instructions_app = typer.Typer(no_args_is_help=True, add_completion=False,
                               help="Custom instructions: what to know about the user, how to reply.")
rules_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="Style rules: standing instructions injected into every request, with checkers.")

RuleIdArg = Annotated[str, typer.Argument(metavar="ID", help="A rule id, or a unique prefix of at least 6 characters.",
                                          show_default=False)]
SECTIONS = ("about_user", "response_style")


def rule_dict(rule: StyleRule) -> dict[str, Any]:
    return rule.model_dump(exclude={"pk"})


def profile_dict(p: Profile) -> dict[str, Any]:
    return {"user_id": p.user_id, "namespace": p.namespace, "about_user": p.about_user,
            "response_style": p.response_style, "version": p.version, "updated_at": p.updated_at,
            "rules": [rule_dict(r) for r in p.rules], "proposals": [rule_dict(r) for r in p.proposals]}


# ---- instructions ---------------------------------------------------------------------------------------
@instructions_app.command("show")
def instructions_show(user: UserOpt, namespace: NamespaceOpt = "default", as_json: JsonOpt = False) -> None:
    """Show the user's custom instructions and active rules."""
    mem = open_memory()
    p = mem.profile(user, namespace)
    if as_json:
        print_json(profile_dict(p))
        return
    c = console()
    c.print(f"[bold]Custom instructions of {esc(user)}[/bold] ({esc(namespace)}, version {p.version})")
    c.print("\n[bold]About the user[/bold]")
    c.print(esc(p.about_user) if p.about_user else "[dim](empty)[/dim]")
    c.print("\n[bold]Response style[/bold]")
    c.print(esc(p.response_style) if p.response_style else "[dim](empty)[/dim]")
    c.print(f"\n[bold]Active rules[/bold] ({len(p.rules)})")
    for r in p.rules:
        c.print(f"  {short(r.id)}  {esc(r.text)}")
    if p.proposals:
        c.print(f"\n[bold]Proposed rules[/bold] ({len(p.proposals)}; `memstore rules accept ID`)")
        for r in p.proposals:
            c.print(f"  {short(r.id)}  {esc(r.text)}")


def render_sections(about: str, style: str) -> str:
    return f"[about_user]\n{about}\n\n[response_style]\n{style}"


def parse_sections(text: str) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        header = line.strip()
        if header.startswith("[") and header.endswith("]") and header[1:-1] in SECTIONS:
            current = header[1:-1]
            found[current] = []
        elif current is not None:
            found[current].append(line)
        elif line.strip():
            fail("text before the first [section] header: nothing changed")
    missing = [s for s in SECTIONS if s not in found]
    if missing:
        fail(f"the edited file lost its [{missing[0]}] header: nothing changed")
    return {k: "\n".join(v).strip() for k, v in found.items()}


@instructions_app.command("edit")
def instructions_edit(user: UserOpt, namespace: NamespaceOpt = "default", as_json: JsonOpt = False) -> None:
    """Edit both custom-instruction fields in $EDITOR."""
    mem = open_memory(write=True)
    p = mem.profile(user, namespace)
    edited = edit_text(render_sections(p.about_user, p.response_style), comment=(
        f"Custom instructions of {user} ({namespace}).\n"
        "[about_user]: what the assistant should know about the user.\n"
        "[response_style]: how the assistant should reply.\n"
        "Keep both headers; leave a section empty to clear it. Lines starting with '#' are ignored."))
    if edited is None:
        info("No changes.")
        return
    new = parse_sections(edited)
    if new["about_user"] == p.about_user and new["response_style"] == p.response_style:
        info("No changes.")
        return
    p = mem.set_instructions(user, namespace, about_user=new["about_user"], response_style=new["response_style"],
                             actor="cli")
    if as_json:
        print_json(profile_dict(p))
        return
    console().print(f"Saved the custom instructions of {esc(user)} (version {p.version}).")


@instructions_app.command("set")
def instructions_set(
    user: UserOpt,
    namespace: NamespaceOpt = "default",
    about: Annotated[str | None, typer.Option("--about", help="What to know about the user ('' clears, "
                                                               "'-' reads stdin).", show_default=False)] = None,
    style: Annotated[str | None, typer.Option("--style", help="How to reply ('' clears, '-' reads stdin).",
                                              show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set either or both custom-instruction fields."""
    if about is None and style is None:
        fail("give --about and/or --style", 2)
    mem = open_memory(write=True)
    p = mem.set_instructions(user, namespace, about_user=None if about is None else read_text_arg(about),
                             response_style=None if style is None else read_text_arg(style), actor="cli")
    if as_json:
        print_json(profile_dict(p))
        return
    console().print(f"Saved the custom instructions of {esc(user)} (version {p.version}).")


# ---- rules ----------------------------------------------------------------------------------------------
def _checker_text(rule: StyleRule) -> str:
    if not rule.checker:
        return ""
    params = ", ".join(f"{k}={v}" for k, v in rule.params.items())
    return f"{rule.checker}({params})" if params else rule.checker


@rules_app.command("list")
def rules_list(
    user: UserOpt,
    namespace: NamespaceOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """List the user's style rules (active, proposed and disabled) with their compliance so far."""
    mem = open_memory()
    rules = mem.rules(user, namespace).list()
    rates = {c["rule_id"]: c for c in mem.compliance(user, namespace)}
    if as_json:
        print_json([{**rule_dict(r), "compliance": rates.get(r.id)} for r in rules])
        return
    if not rules:
        info(f"No rules for {esc(user)!r} in namespace {esc(namespace)!r}.")
        return
    t = table("ID", "Rule", "Checker", "Source", "Status", "Obeyed", title=f"Rules of {esc(user)} ({namespace})")
    for r in rules:
        c = rates.get(r.id)
        obeyed = f"{c['passed']}/{c['checked']}" if c else ""
        state = r.status if r.enabled else f"{r.status}, disabled"
        t.add_row(short(r.id), esc(r.text), esc(_checker_text(r)), r.source, state, obeyed,
                  style=None if r.status == "active" and r.enabled else "dim")
    console().print(t)


def _params(values: list[str] | None) -> dict[str, Any] | None:
    if not values:
        return None
    out: dict[str, Any] = {}
    for v in values:
        key, sep, raw = v.partition("=")
        if not sep or not key.strip():
            fail(f"--param takes KEY=VALUE, got {v!r}", 2)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


@rules_app.command("add")
def rules_add(
    text: Annotated[str, typer.Argument(metavar="TEXT", show_default=False,
                                        help="The rule, as an instruction ('Never use capital letters').")],
    user: UserOpt,
    namespace: NamespaceOpt = "default",
    checker: Annotated[str | None, typer.Option(help="A checker (lowercase, max_words, no_emoji ...); "
                                                     "default: recognised from the wording.",
                                                show_default=False)] = None,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Checker parameter KEY=VALUE "
                                                                          "(repeatable).", show_default=False)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a style rule."""
    from memstore.errors import InvalidInputError
    from memstore.instructions.checkers import CHECKER_KINDS

    if checker is not None and checker not in CHECKER_KINDS:
        fail(f"--checker must be one of {', '.join(CHECKER_KINDS)}, not {checker!r}", 2)
    params = _params(param)
    mem = open_memory(write=True)
    handle = mem.rules(user, namespace)
    before = {r.id for r in handle.list()}
    try:
        rule = handle.add(read_text_arg(text), checker=checker, params=params, actor="cli")
    except InvalidInputError as exc:
        if checker is None and not params:
            raise
        fail(f"{exc} (check --checker / --param)", 2)  # a checker its parameters do not fit: a usage error
    if as_json:
        print_json(rule_dict(rule))
        return
    what = "Already a rule" if rule.id in before else "Added rule"
    chk = f" [dim](checked by {esc(_checker_text(rule))})[/dim]" if rule.checker else ""
    console().print(f"{what} {short(rule.id)}: {esc(rule.text)}{chk}")


def _rule_action(verb: str, user: str, namespace: str, rule_id: str, as_json: bool) -> None:
    mem = open_memory()
    handle = mem.rules(user, namespace)
    full = resolve_id(mem, rule_id, "rule", user=user, namespace=namespace)
    if verb == "removed":
        rule = handle.remove(full, actor="cli")
    elif verb == "accepted":
        rule = handle.accept(full, actor="cli")
    elif verb == "rejected":
        rule = handle.reject(full, actor="cli")
    else:
        rule = handle.enable(full, verb == "enabled", actor="cli")
    if as_json:
        print_json(rule_dict(rule))
        return
    console().print(f"{verb.capitalize()} rule {short(rule.id)}: {esc(rule.text)}")
    if verb in ("removed", "rejected"):
        info("[dim]`memstore rules undo` brings it back.[/dim]")


@rules_app.command("remove")
def rules_remove(rule_id: RuleIdArg, user: UserOpt, namespace: NamespaceOpt = "default",
                 as_json: JsonOpt = False) -> None:
    """Remove a rule (undoable)."""
    _rule_action("removed", user, namespace, rule_id, as_json)


@rules_app.command("accept")
def rules_accept(rule_id: RuleIdArg, user: UserOpt, namespace: NamespaceOpt = "default",
                 as_json: JsonOpt = False) -> None:
    """Accept a proposed (extracted) rule: it is injected from now on."""
    _rule_action("accepted", user, namespace, rule_id, as_json)


@rules_app.command("reject")
def rules_reject(rule_id: RuleIdArg, user: UserOpt, namespace: NamespaceOpt = "default",
                 as_json: JsonOpt = False) -> None:
    """Reject a proposed rule (it will not be proposed again from the same words)."""
    _rule_action("rejected", user, namespace, rule_id, as_json)


@rules_app.command("enable")
def rules_enable(rule_id: RuleIdArg, user: UserOpt, namespace: NamespaceOpt = "default",
                 as_json: JsonOpt = False) -> None:
    """Enable a disabled rule."""
    _rule_action("enabled", user, namespace, rule_id, as_json)


@rules_app.command("disable")
def rules_disable(rule_id: RuleIdArg, user: UserOpt, namespace: NamespaceOpt = "default",
                  as_json: JsonOpt = False) -> None:
    """Disable a rule without removing it."""
    _rule_action("disabled", user, namespace, rule_id, as_json)


@rules_app.command("undo")
def rules_undo(user: UserOpt, namespace: NamespaceOpt = "default", as_json: JsonOpt = False) -> None:
    """Undo the last change of the user's rules or custom instructions (repeatable)."""
    mem = open_memory()
    p = mem.rules(user, namespace).undo(actor="cli")
    if as_json:
        print_json(profile_dict(p))
        return
    console().print(f"Undone: {esc(user)} now has {len(p.rules)} active rule(s) (version {p.version}).")
    for r in p.rules:
        console().print(f"  {short(r.id)}  {esc(r.text)}")


@rules_app.command("history")
def rules_history(user: UserOpt, namespace: NamespaceOpt = "default", as_json: JsonOpt = False) -> None:
    """Every version of the user's rules and custom instructions: who changed what."""
    mem = open_memory()
    versions = mem.rules(user, namespace).versions()
    if as_json:
        print_json([v.model_dump(exclude={"pk"}) for v in versions])
        return
    if not versions:
        info(f"No changes recorded for {esc(user)!r} in namespace {esc(namespace)!r}.")
        return
    t = table("Version", "When", "Actor", "Reason", "Rules", title=f"Rule and instruction history of {esc(user)}")
    for v in versions:
        reason = re.sub(r"\b([0-9a-f]{8})[0-9a-f]{24}\b", r"\1", v.reason or "")
        t.add_row(str(v.version), when(v.created_at), v.actor, esc(reason),
                  str(len(v.snapshot.get("rules", []))))
    console().print(t)
