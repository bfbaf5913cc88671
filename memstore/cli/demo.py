"""``memstore demo`` (the README's main job, offline by default) and ``memstore chat`` (a REPL through
MemoryClient that shows what it learned after every turn)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from memstore.cli.common import (
    NamespaceOpt,
    UserOpt,
    check_extractor,
    config,
    console,
    esc,
    fail,
    info,
    open_memory,
    short,
    state,
    status,
    table,
)

if TYPE_CHECKING:
    from memstore.memory import Memory
    from memstore.testing import ScriptedRequest

DEMO_USER = "demo"
CONVERSATION = [
    "Hi! I live in Berlin and I'm vegetarian.",
    "Please never use capital letters in your replies.",
    "I have a cat called Miso.",
    "I live in Lisbon now, I moved there last month.",
]
NEXT_MESSAGE = "Any ideas for dinner tonight?"

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="A real model through litellm (e.g. gpt-4.1-mini"
                                              ", anthropic/claude-sonnet-4-5, ollama/llama3.2); its key comes from "
                                              "the usual environment variable. Default: the scripted local model.",
                                              show_default=False)]
BaseUrlOpt = Annotated[str | None, typer.Option("--base-url", help="An OpenAI-compatible server for the model.",
                                                show_default=False)]
ApiKeyOpt = Annotated[str | None, typer.Option("--api-key", help="API key (default: the provider's environment "
                                               "variable).", show_default=False)]
ExtractorOpt = Annotated[str | None, typer.Option("--extractor", help="llm (the model extracts) or heuristic "
                                                  "(no model calls).", show_default=False)]


@contextmanager
def local_without_proxy() -> Iterator[None]:
    """The scripted model listens on 127.0.0.1: never send that through an HTTP proxy."""
    saved = {k: os.environ.get(k) for k in ("NO_PROXY", "no_proxy")}
    extra = "127.0.0.1,localhost"
    for k, v in saved.items():
        os.environ[k] = f"{v},{extra}" if v else extra
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def require_key(model: str, base_url: str | None, api_key: str | None) -> None:
    """Fails early, with the variable to set, when a hosted model's key is missing."""
    from memstore.cli.doctor import key_env

    env = key_env(model)
    if env and not base_url and not api_key and not os.environ.get(env):
        fail(f"{model} needs an API key: set {env} (or pass --api-key); `memstore demo` without --model "
             "runs offline")


def model_call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A chat call whose failure (no key, unknown model, network) is one clear line."""
    from memstore.errors import MemstoreError

    try:
        return fn(*args, **kwargs)
    except MemstoreError:
        raise
    except Exception as exc:
        fail(f"the model call failed: {type(exc).__name__}: {' '.join(str(exc).split())[:400]}")


# ---- the scripted model of the demo -----------------------------------------------------------------------
_MEMORY_RE = re.compile(r'<memory handle="(m\d+)"[^>]*>(.*?)</memory>', re.S)
_TURN_RE = re.compile(r'<turn index="(\d+)"[^>]*><user>(.*?)</user>', re.S)


def scripted_extraction(prompt: str) -> str:
    """What a good extraction model answers for the demo's sentences, as ExtractionResult JSON. The stored
    memories are found by their handles in the prompt, as a real model would."""
    handles = {html.unescape(text).strip().lower(): h for h, text in _MEMORY_RE.findall(prompt)}
    ops: list[dict[str, Any]] = []
    instructions: list[dict[str, Any]] = []
    for index, raw in _TURN_RE.findall(prompt):
        i, said = int(index), html.unescape(raw).lower()
        if "live in berlin" in said:
            ops.append({"op": "ADD", "text": "Lives in Berlin", "kind": "fact", "turn": i})
        if "vegetarian" in said:
            ops.append({"op": "ADD", "text": "Is vegetarian", "kind": "preference", "turn": i})
        if "capital letters" in said:
            instructions.append({"action": "add", "text": "Never use capital letters", "turn": i})
        if "cat called miso" in said:
            ops.append({"op": "ADD", "text": "Has a cat called Miso", "kind": "fact", "turn": i})
        if "lisbon" in said:
            target = handles.get("lives in berlin")
            if target:
                ops.append({"op": "INVALIDATE", "target": target, "text": "Lives in Lisbon", "kind": "fact",
                            "turn": i, "reason": "moved from Berlin to Lisbon"})
            else:
                ops.append({"op": "ADD", "text": "Lives in Lisbon", "kind": "fact", "turn": i})
    return json.dumps({"operations": ops, "instructions": instructions})


def scripted_chat(said: str, system: str) -> str:
    """Canned assistant replies; the dinner suggestion is built from the injected block, and the scripted
    model obeys the capital-letters rule when (and only when) the block carries it."""
    s = said.lower()
    if "berlin" in s:
        reply = "Nice to meet you! Berlin is a great city for vegetarian food."
    elif "capital letters" in s:
        reply = "Understood. No capital letters from now on."
    elif "cat" in s:
        reply = "Miso is a lovely name for a cat."
    elif "lisbon" in s:
        reply = "Congratulations on the move to Lisbon!"
    elif "dinner" in s:
        city = "Lisbon" if "Lisbon" in system else "Berlin" if "Berlin" in system else "your city"
        dish = "a vegetable feijoada" if "vegetarian" in system.lower() else "grilled sardines"
        reply = f"How about {dish} at a small tasca in {city}?"
    else:
        reply = "Tell me more!"
    return reply.lower() if "capital letters" in system.lower() else reply


def scripted_reply(req: ScriptedRequest) -> str:
    if req.body.get("response_format"):
        return scripted_extraction(req.last_user_text)
    return scripted_chat(req.last_user_text, req.system_text)


# ---- what was learned ---------------------------------------------------------------------------------------
def snapshot(mem: Memory, user: str, namespace: str) -> tuple[dict[str, Any], dict[str, Any]]:
    mems = {r.id: r for r in mem.get_all(user, namespace, include_invalid=True)}
    rules = {r.id: r for r in mem.rules(user, namespace).list()}
    return mems, rules


def learned(before: tuple[dict[str, Any], dict[str, Any]], after: tuple[dict[str, Any], dict[str, Any]]) -> list[str]:
    (m0, r0), (m1, r1) = before, after
    out = []
    for mid, rec in m1.items():
        old = m0.get(mid)
        if old is None:
            out.append(f"[green]+[/green] {esc(rec.text)} [dim]({rec.kind}, {short(mid)})[/dim]")
        elif old.invalid_at is None and rec.invalid_at is not None:
            out.append(f"[red]-[/red] [strike]{esc(rec.text)}[/strike] [dim](no longer true, {short(mid)})[/dim]")
        elif old.text != rec.text:
            out.append(f"[yellow]~[/yellow] {esc(old.text)} → {esc(rec.text)} [dim]({short(mid)})[/dim]")
    out.extend(f"[red]x[/red] {esc(m0[mid].text)} [dim](deleted)[/dim]" for mid in m0.keys() - m1.keys())
    for rid, rule in r1.items():
        if rid not in r0:
            state_ = "" if rule.status == "active" else f", {rule.status}: memstore rules accept {short(rid)}"
            out.append(f"[green]+[/green] rule: {esc(rule.text)} [dim]({short(rid)}{state_})[/dim]")
    out.extend(f"[red]-[/red] rule: {esc(r0[rid].text)}" for rid in r0.keys() - r1.keys())
    return out


def _failed_turns(mem: Memory, user: str) -> list[str]:
    return [t.error or "" for t in mem.outbox.list(user_id=user, status="failed", limit=None)]


def _print_learned(client: Any, user: str, namespace: str, before: Any, turn_id: str | None = None) -> None:
    with status("memstore is learning from that turn…"):
        done = client.flush(timeout=180)
    for line in learned(before, snapshot(client.memory, user, namespace)):
        console().print(f"    {line}")
    if not done:
        info("    [yellow]extraction is still running; it continues in the background[/yellow]")
    elif turn_id:
        _warn_if_extraction_failed(client.memory, turn_id)


def _warn_if_extraction_failed(mem: Memory, turn_id: str) -> None:
    """One line when memstore could not learn from the turn (an unreachable or misconfigured extraction model
    would otherwise fail silently on every turn)."""
    from memstore.worker import failure_hint, failure_reason

    try:
        turn = mem.outbox.get(turn_id)
    except Exception:  # the turn is gone (forgotten meanwhile): nothing to say
        return
    if turn.status != "failed":
        return
    reason, _cause = failure_reason(turn.error or "")
    hint = failure_hint(reason, mem.config.llm_api_base, mem.config.llm_model)
    console(stderr=True).print(f"    [yellow]warning: memstore could not learn from that turn: {esc(hint)} "
                               f"(retry with `memstore turns retry --user {esc(turn.user_id)}`)[/yellow]",
                               soft_wrap=True)  # one line, however narrow the terminal


# ---- demo ---------------------------------------------------------------------------------------------------
def demo(
    model: ModelOpt = None,
    home: Annotated[Path | None, typer.Option("--home", help="Keep the demo's store here (default: a temporary "
                                              "directory, deleted at the end).", show_default=False)] = None,
    extractor: ExtractorOpt = None,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Watch memstore work: a short conversation, what it stored, and what the next request gets.

    A user states facts and a style rule through MemoryClient and later changes one fact; the demo prints
    what was stored, the history of the changed fact and the block injected into the next request.
    It runs offline on a scripted local model unless --model is given."""
    extractor = check_extractor(extractor)
    home = home or state().home
    temp = None if home is not None else Path(tempfile.mkdtemp(prefix="memstore-demo-"))
    home = (home or temp).expanduser().resolve()  # type: ignore[union-attr]
    llm = None
    stack = ExitStack()
    try:
        if model is None:
            from memstore.testing import ScriptedLLM

            llm = ScriptedLLM(reply_fn=scripted_reply).start()
            stack.enter_context(local_without_proxy())
            chat_model, base_url, api_key = "scripted", llm.base_url, "not-needed"
            llm_cfg = {"llm_model": "openai/scripted", "llm_api_base": llm.base_url, "llm_api_key": "not-needed"}
            model_note = (f"the scripted local model (memstore.testing.ScriptedLLM at {llm.base_url}; "
                          "no key, no network)")
        else:
            require_key(model, base_url, api_key)
            chat_model = model
            llm_cfg = {"llm_model": model if "/" in model or not base_url else f"openai/{model}",
                       "llm_api_base": base_url, "llm_api_key": api_key}
            model_note = f"{model} through litellm" + (f" at {base_url}" if base_url else "")
        cfg = config(home=home, database_url=None, vector_url=None, extractor=extractor or "llm", **llm_cfg)
        _run_demo(cfg, chat_model, base_url, api_key, model_note, kept=temp is None)
    finally:
        stack.close()
        if llm is not None:
            llm.stop()
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _run_demo(cfg: Any, chat_model: str, base_url: str | None, api_key: str | None, model_note: str,
              kept: bool) -> None:
    from memstore import MemoryClient
    from memstore.cli.memories import print_history, print_memories
    from memstore.memory import Memory

    c = console()
    mem = Memory(config=cfg)
    if mem.get_all(DEMO_USER, include_invalid=True) or mem.rules(DEMO_USER).list():
        fail(f"the demo user {DEMO_USER!r} already has data in {cfg.resolved_home()}: use an empty --home, or "
             f"`memstore --home {cfg.resolved_home()} forget --user {DEMO_USER}`")
    extraction = ("the llm extractor, asking the same model for structured JSON" if cfg.extractor == "llm"
                  else "the heuristic extractor (no model calls)")
    c.rule("[bold]memstore demo[/bold]")
    c.print(f"chat model:  {esc(model_note)}")
    c.print(f"extraction:  {esc(extraction)}")
    c.print("embeddings:  all-MiniLM-L6-v2 (bundled, on this machine)")
    c.print(f"store:       {esc(cfg.resolved_home())}" + ("" if kept else " (temporary; --home keeps it)"))
    with status("Loading the embedding model and litellm (the first run takes a while)…"):
        mem.store.embedder.embed(["warm up"])
        from memstore.llm import litellm

        litellm()
    client = MemoryClient(memory=mem, base_url=base_url, api_key=api_key, user_id=DEMO_USER, max_retries=1)
    try:
        c.print()
        c.rule("1. a conversation")
        history: list[dict[str, str]] = []
        for said in CONVERSATION:
            before = snapshot(mem, DEMO_USER, "default")
            history.append({"role": "user", "content": said})
            c.print(f"[bold cyan]{DEMO_USER}[/bold cyan]: {esc(said)}")
            resp = model_call(client.chat.completions.create, model=chat_model, messages=history, user=DEMO_USER)
            reply = resp.choices[0].message.content or ""
            history.append({"role": "assistant", "content": reply})
            c.print(f"[bold green]assistant[/bold green]: {esc(reply)}")
            _print_learned(client, DEMO_USER, "default", before)
        for err in _failed_turns(mem, DEMO_USER):
            info(f"[red]extraction failed:[/red] {esc(err)}")

        c.print()
        c.rule("2. what memstore stored")
        recs = mem.get_all(DEMO_USER, include_invalid=True)
        print_memories(recs, f"Memories of {DEMO_USER} (current and invalidated)")
        rules = mem.rules(DEMO_USER).list()
        if rules:
            t = table("ID", "Rule", "Checker", "Source", title=f"Style rules of {DEMO_USER}")
            for r in rules:
                t.add_row(short(r.id), esc(r.text), esc(r.checker or ""), r.source)
            c.print(t)

        changed = next((r for r in recs if r.superseded_by or r.invalid_at is not None), None)
        if changed is not None:
            c.print()
            c.rule("3. the history of the fact that changed")
            print_history(mem.history(changed.id), f"memstore memories history {short(changed.id)}")
            if changed.superseded_by:
                nxt = mem.get(changed.superseded_by)
                c.print(f"superseded by {short(nxt.id)}: {esc(nxt.text)}")

        c.print()
        c.rule("4. the next request")
        c.print(f"[bold cyan]{DEMO_USER}[/bold cyan]: {esc(NEXT_MESSAGE)}")
        resp = model_call(client.chat.completions.create, model=chat_model, user=DEMO_USER,
                          messages=[{"role": "user", "content": NEXT_MESSAGE}])
        info_ = resp.memstore
        block = info_.context.system_block if info_ is not None and info_.context is not None else ""
        from rich.panel import Panel

        c.print(Panel(esc(block or "(nothing injected)"), title="injected system block", title_align="left",
                      subtitle=f"{info_.tokens if info_ else 0} tokens, {len(info_.memory_ids) if info_ else 0} "
                               f"memories, {len(info_.rule_ids) if info_ else 0} rule(s)", subtitle_align="left"))
        c.print(f"[bold green]assistant[/bold green]: {esc(resp.choices[0].message.content or '')}")
        client.flush(timeout=60)
    finally:
        client.close()
    c.print()
    if kept:
        home = cfg.resolved_home()
        c.print(f"Explore it: [bold]memstore --home {esc(home)} memories list --user {DEMO_USER} --all[/bold]")
    else:
        c.print("The temporary store is deleted now; `memstore demo --home DIR` keeps it to explore.")


# ---- chat ---------------------------------------------------------------------------------------------------
CHAT_HELP = "/memories  /rules  /help  /exit (or Ctrl-D)"


def chat(
    user: UserOpt,
    model: Annotated[str, typer.Option("--model", "-m", help="Any model litellm reaches (gpt-4.1-mini, "
                                       "anthropic/..., ollama/...).")] = "gpt-4.1-mini",
    namespace: NamespaceOpt = "default",
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    extractor: ExtractorOpt = None,
    extract_model: Annotated[str | None, typer.Option(help="The extraction model (default: MEMSTORE_LLM_MODEL, "
                                                      "else the chat model).", show_default=False)] = None,
    system: Annotated[str | None, typer.Option(help="A system prompt of your own.", show_default=False)] = None,
) -> None:
    """Chat with a model through MemoryClient; after each reply it shows what memstore learned."""
    from memstore import MemoryClient

    extractor = check_extractor(extractor)
    over: dict[str, Any] = {}
    if extractor:
        over["extractor"] = extractor
    if extract_model or not os.environ.get("MEMSTORE_LLM_MODEL"):
        chosen = extract_model or model
        over["llm_model"] = chosen if "/" in chosen or not base_url else f"openai/{chosen}"
        if base_url and not extract_model:
            over["llm_api_base"] = base_url
        if api_key and not extract_model:
            over["llm_api_key"] = api_key
    require_key(model, base_url, api_key)
    mem = open_memory(write=True, **over)
    c = console()
    with status("Loading the embedding model and litellm…"):
        mem.store.embedder.embed(["warm up"])
        from memstore.llm import litellm

        litellm()
    client = MemoryClient(memory=mem, base_url=base_url, api_key=api_key, user_id=user, namespace=namespace)
    info(f"Chatting as [bold]{esc(user)}[/bold] with {esc(model)} through MemoryClient "
         f"(store {esc(mem.config.resolved_home())}, {mem.config.extractor} extractor). {CHAT_HELP}")
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    try:
        while True:
            try:
                said = input(f"{user}> ").strip()
            except EOFError:
                break
            if not said:
                continue
            if said in ("/exit", "/quit"):
                break
            if said.startswith("/"):
                _chat_command(said, mem, user, namespace)
                continue
            before = snapshot(mem, user, namespace)
            history.append({"role": "user", "content": said})
            try:
                reply, used, turn_id = _stream_reply(client, model, history)
            except Exception as exc:  # a failed model call: say so and keep the session
                history.pop()
                info(f"[red]error:[/red] {esc(' '.join(str(exc).split())[:500])}")
                continue
            history.append({"role": "assistant", "content": reply})
            if used:
                info(f"    [dim]{used}[/dim]")
            _print_learned(client, user, namespace, before, turn_id)
    except KeyboardInterrupt:
        c.print()
    finally:
        client.close()


def _stream_reply(client: Any, model: str, history: list[dict[str, str]]) -> tuple[str, str, str | None]:
    import sys

    stream = client.chat.completions.create(model=model, messages=history, stream=True)
    parts: list[str] = []
    sys.stdout.write("assistant> ")
    for chunk in stream:
        for choice in chunk.choices:
            if choice.index == 0 and choice.delta and choice.delta.content:
                parts.append(choice.delta.content)
                sys.stdout.write(choice.delta.content)
                sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    info_ = stream.memstore
    used = (f"used {len(info_.memory_ids)} memories, {len(info_.rule_ids)} rule(s), {info_.tokens} tokens"
            if info_ is not None and (info_.memory_ids or info_.rule_ids) else "")
    return "".join(parts), used, (info_.turn_id if info_ is not None else None)


def _chat_command(cmd: str, mem: Memory, user: str, namespace: str) -> None:
    c = console()
    if cmd == "/memories":
        recs = mem.get_all(user, namespace)
        for r in recs:
            c.print(f"  {short(r.id)}  {esc(r.text)} [dim]({r.kind})[/dim]")
        if not recs:
            c.print("  (no memories yet)")
    elif cmd == "/rules":
        rules = mem.rules(user, namespace).list()
        for r in rules:
            c.print(f"  {short(r.id)}  {esc(r.text)} [dim]({r.status})[/dim]")
        if not rules:
            c.print("  (no rules yet)")
    else:
        c.print(CHAT_HELP)
