"""The memory steps of one request, shared by MemoryClient, AsyncMemoryClient and the proxy server.

resolve options -> retrieve (one step for chat and responses; fail open) -> inject into a copy of the messages
(or the Responses ``instructions`` and ``input``), placed as ``MemoryConfig.injection`` says -> [model call,
done by the caller] -> [enforce_rules: the retry decision, ``rule_retry``] -> record the turn and check the rules
(fail open; ``Exchange``). All pure or synchronous: the
sync and async clients differ only in how they call the model and run these steps (directly or in a thread).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memstore.adapters.openai.errors import bad_request

from memstore import metrics
from memstore.errors import InvalidInputError, MemstoreError
from memstore.memory import Memory
from memstore.messages import content_text
from memstore.recall.context import Context
from memstore.recall.inject import merge_input, merge_instructions, merge_split, merge_system
from memstore.records import StyleRule
from memstore.storage.db import short_waits

if TYPE_CHECKING:
    from memstore.worker import Worker

log = logging.getLogger("memstore")
MEMORY_OPTION_KEYS = {"user_id", "namespace", "enabled", "extract", "token_budget", "episodes"}


@dataclass
class Options:
    user_id: str | None
    namespace: str = "default"
    enabled: bool = True
    extract: bool = True
    token_budget: int | None = None
    episodes: bool | None = None  # past-conversation excerpts in the block (None: MemoryConfig.episodes)


@dataclass
class MemoryInfo:
    """What memstore did for one response: available as ``response.memstore``."""

    user_id: str | None = None
    namespace: str = "default"
    memory_ids: list[str] = field(default_factory=list)
    rule_ids: list[str] = field(default_factory=list)
    tokens: int = 0
    turn_id: str | None = None
    failed_open: str | None = None   # the error, when the memory layer failed and the request went on
    compliance: dict[str, bool] = field(default_factory=dict)  # rule id -> passed
    retried: bool = False
    context: Context | None = None


def resolve_options(kwargs: dict[str, Any], default_user: str | None, default_namespace: str) -> Options:
    """Pops memstore's options out of ``extra_body={"memory": {...}}``; OpenAI's ``user`` stays in
    ``kwargs`` (it is passed to the model as well)."""
    extra = kwargs.get("extra_body")
    mem_opts: dict[str, Any] = {}
    if isinstance(extra, dict) and "memory" in extra:
        extra = dict(extra)
        mem_opts = extra.pop("memory") or {}
        if not isinstance(mem_opts, dict):
            raise InvalidInputError('extra_body["memory"] must be an object')
        unknown = set(mem_opts) - MEMORY_OPTION_KEYS
        if unknown:
            raise InvalidInputError(f'unknown extra_body["memory"] keys: {sorted(unknown)}; '
                                    f"known: {sorted(MEMORY_OPTION_KEYS)}")
        if extra:
            kwargs["extra_body"] = extra
        else:
            kwargs.pop("extra_body")
    user = mem_opts.get("user_id") or kwargs.get("user") or kwargs.get("safety_identifier") or default_user
    if user is not None and not isinstance(user, str):
        raise InvalidInputError("user must be a string")
    return Options(user_id=user, namespace=mem_opts.get("namespace") or default_namespace,
                   enabled=bool(mem_opts.get("enabled", True)), extract=bool(mem_opts.get("extract", True)),
                   token_budget=mem_opts.get("token_budget"), episodes=_episodes_option(mem_opts))


def _episodes_option(mem_opts: dict[str, Any]) -> bool | None:
    value = mem_opts.get("episodes")
    if value is not None and not isinstance(value, bool):
        raise InvalidInputError('extra_body["memory"]["episodes"] must be true or false')
    return value


ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def check_messages(messages: Any) -> list[Any]:
    """The conversation as a list, checked the way the OpenAI API checks it, before any memory step or model
    call: a malformed one raises the 400 the API would answer (``openai.BadRequestError``, also memstore's
    InvalidInputError) instead of an error from deep inside memstore or litellm."""
    if isinstance(messages, str | bytes | dict) or not isinstance(messages, Iterable):
        raise bad_request(f"Invalid type for 'messages': expected an array of message objects, but got "
                          f"{type(messages).__name__} instead.", "messages")
    out = list(messages)
    if not out:
        raise bad_request("Invalid 'messages': empty array. Expected an array with minimum length 1.", "messages")
    for i, m in enumerate(out):
        where = f"messages[{i}]"
        data = m.model_dump(exclude_none=True) if hasattr(m, "model_dump") else m
        if not isinstance(data, dict):
            raise bad_request(f"Invalid type for '{where}': expected an object, but got {type(m).__name__} "
                              "instead.", where)
        role = data.get("role")
        if role not in ROLES:
            raise bad_request(f"Invalid value for '{where}.role': {role!r}; supported values are: "
                              f"{', '.join(ROLES)}.", f"{where}.role")
        content = data.get("content")
        if content is None:
            if role in ("assistant", "function"):
                continue
            raise bad_request(f"Invalid value for '{where}.content': expected a string or an array of content "
                              "parts, got null.", f"{where}.content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list | tuple):
            raise bad_request(f"Invalid type for '{where}.content': expected one of a string or array of "
                              f"objects, but got {type(content).__name__} instead.", f"{where}.content")
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and isinstance(part.get("type"), str)):
                raise bad_request(f"Invalid type for '{where}.content[{j}]': expected a content part object "
                                  f"with a type, but got {type(part).__name__} instead.", f"{where}.content[{j}]")
    return out


def fail_open(info: MemoryInfo, exc: Exception, strict: bool, step: str) -> None:
    if strict:
        raise exc if isinstance(exc, MemstoreError) else MemstoreError(f"memory {step} failed: {exc}") from exc
    info.failed_open = f"{step}: {type(exc).__name__}: {exc}"
    metrics.inc("memstore_fail_open_total")
    log.warning("memstore %s failed, request continues without memory: %s", step, exc)


def retrieve(mem: Memory, opts: Options, messages: Any, strict: bool, *,
             skip: bool = False) -> tuple[Context | None, MemoryInfo]:
    """The one retrieval step of chat completions and the Responses API: the context for this conversation
    (None when memory is off for the request, or failed open), counted and logged the same way for both."""
    metrics.inc("memstore_requests_total")
    info = MemoryInfo(user_id=opts.user_id, namespace=opts.namespace)
    user = opts.user_id
    if not (opts.enabled and user) or skip:
        return None, info
    try:
        with short_waits(mem.config.request_db_wait):
            ctx = mem.context(user, _plain(messages), opts.namespace, token_budget=opts.token_budget,
                              episodes=opts.episodes)
    except Exception as exc:
        fail_open(info, exc, strict, "retrieval")
        return None, info
    info.context, info.memory_ids, info.rule_ids, info.tokens = ctx, ctx.memory_ids, ctx.rule_ids, ctx.tokens
    metrics.inc("memstore_injected_tokens_total", ctx.tokens)
    metrics.inc("memstore_injected_memories_total", len(ctx.memory_ids))
    log.debug("memstore injected user=%s memories=%s rules=%s tokens=%d", user, ctx.memory_ids,
              ctx.rule_ids, ctx.tokens)
    return ctx, info


def inject(ctx: Context | None, messages: Any, placement: str) -> Any:
    """Chat completions: the messages to send, a copy with the block placed as ``placement`` says ("split":
    the stable part in the leading system message, the recalled part just before the last user message;
    "system": the whole block in the leading system message)."""
    if ctx is None:
        return messages
    if placement == "split":
        return merge_split(messages, ctx.stable_block, ctx.recall_block)
    return merge_system(messages, ctx.system_block)


def inject_responses(ctx: Context | None, instructions: str | None, input: Any,
                     placement: str) -> tuple[str | None, Any]:
    """Responses API: (instructions, input) to send. "split": the stable part goes into ``instructions``
    (resent every turn, and byte-identical, so it stays a cached prefix) and the recalled part is an input item
    just before the last user item; "system": the whole block goes into ``instructions``."""
    if ctx is None:
        return instructions, input
    if placement == "split":
        return merge_input(instructions, input, ctx.stable_block, ctx.recall_block)
    return merge_instructions(instructions, ctx.system_block), input


def prepare(mem: Memory, opts: Options, messages: Any, strict: bool) -> tuple[Any, MemoryInfo]:
    """Chat completions: retrieves and injects; returns the messages to send (a copy) and the info so far."""
    ctx, info = retrieve(mem, opts, messages, strict)
    return inject(ctx, messages, mem.config.injection), info


def prepare_responses(mem: Memory, opts: Options, instructions: str | None, input: Any,
                      input_messages: list[dict[str, Any]], strict: bool,
                      skip: bool = False) -> tuple[str | None, Any, MemoryInfo]:
    """Responses API: retrieves and injects; returns the ``instructions`` and ``input`` to send (the caller's
    ``input`` is never mutated) and the info so far."""
    ctx, info = retrieve(mem, opts, input_messages, strict, skip=skip)
    merged, sent = inject_responses(ctx, instructions, input, mem.config.injection)
    return merged, sent, info


def prepare_instructions(mem: Memory, opts: Options, instructions: str | None, input_messages: list[dict[str, Any]],
                         strict: bool, skip: bool = False) -> tuple[str | None, MemoryInfo]:
    """Responses API when only ``instructions`` can carry memory: the whole block goes there after the
    caller's own, whatever the placement (``prepare_responses`` places it as configured)."""
    ctx, info = retrieve(mem, opts, input_messages, strict, skip=skip)
    return (instructions if ctx is None else merge_instructions(instructions, ctx.system_block)), info


def _plain(messages: Any) -> list[dict[str, Any]]:
    out = []
    for m in messages or []:
        if hasattr(m, "model_dump"):
            m = m.model_dump(exclude_none=True)
        if isinstance(m, dict) and m.get("role") in ("system", "developer", "user", "assistant", "tool"):
            out.append({"role": m["role"], "content": content_text(m.get("content"))})
    return out or [{"role": "user", "content": ""}]


def check_rules(rules: list[StyleRule], text: str) -> list[tuple[StyleRule, bool, str]]:
    from memstore.instructions import checkers

    results = []
    for r in rules:
        if not r.checker:
            continue
        try:
            res = checkers.check(checkers.validate_checker(r.checker, r.params), text)
        except ValueError as exc:
            log.warning("rule %s has a broken checker: %s", r.id, exc)
            continue
        results.append((r, res.passed, res.detail))
    return results


def correction_messages(messages: list[Any], draft: str, failed: list[tuple[StyleRule, bool, str]]) -> list[Any]:
    """The corrective retry of enforce_rules: the same request plus the broken rules and the draft."""
    from memstore.instructions import checkers

    broken = "\n".join(
        f"- {r.text} ({checkers.format_rule_hint(checkers.validate_checker(r.checker or '', r.params))} "
        f"Problem: {detail})" for r, _ok, detail in failed)
    note = ("Your draft reply below broke these standing instructions of the user:\n" + broken +
            "\nWrite the reply again, obeying every instruction. Reply with the new text only.\n<draft>\n" +
            draft[:6000] + "\n</draft>")
    return [*messages, {"role": "system", "content": note}]


RuleResults = list[tuple[StyleRule, bool, str]]


@dataclass
class RuleRetry:
    """enforce_rules: the one corrective retry, decided here for both twins (they only make the call)."""

    rules: list[StyleRule]
    first: RuleResults   # the draft's checks
    messages: list[Any]  # the retry request: the same messages plus the broken rules and the draft

    def keep_retry(self, info: MemoryInfo, retry_text: str) -> bool:
        """True when the retry's reply replaces the draft: it keeps at least as many rules."""
        info.retried = True
        second = check_rules(self.rules, retry_text)
        return sum(ok for _r, ok, _d in second) >= sum(ok for _r, ok, _d in self.first)


def rule_retry(info: MemoryInfo, sent: Any, draft: str) -> RuleRetry | None:
    """The retry to make when the draft breaks a checkable rule of the user's; None when it keeps them all."""
    rules = info.context.rules if info.context is not None else []
    if not rules:
        return None
    first = check_rules(rules, draft)
    failed = [r for r in first if not r[1]]
    if not failed:
        return None
    metrics.inc("memstore_rule_retries_total")
    return RuleRetry(rules, first, correction_messages(list(sent), draft, failed))


def finish(mem: Memory, opts: Options, info: MemoryInfo, messages: Any, reply: str, *, response_id: str | None,
           model: str | None, strict: bool, partial: bool = False, check: bool = True,
           worker: Worker | None = None) -> None:
    """Records the exchange in the outbox and the rule checks; never raises unless ``strict``."""
    if not opts.user_id or not opts.enabled:
        return
    try:
        with short_waits(mem.config.request_db_wait):  # a locked database: the turn waits in the spool instead
            turn = mem.outbox.record(opts.user_id, opts.namespace, _plain(messages), reply,
                                     response_id=response_id or f"memstore-{uuid.uuid4().hex}", model=model,
                                     extract=opts.extract, meta={"partial": True} if partial else None, spool=True)
        info.turn_id = turn.id
        metrics.inc("memstore_turns_recorded_total")
        if worker is not None and opts.extract:
            worker.notify()
    except Exception as exc:
        fail_open(info, exc, strict, "recording")
    if check and info.context is not None and info.context.rules and not partial:
        try:
            results = check_rules(info.context.rules, reply)
            if results:
                with short_waits(mem.config.request_db_wait):
                    mem.profiles.record_compliance(opts.user_id, opts.namespace, response_id, results,
                                                   attempt=2 if info.retried else 1)
                metrics.inc("memstore_rule_checks_total", len(results))
                metrics.inc("memstore_rule_violations_total", sum(1 for _r, ok, _d in results if not ok))
                info.compliance = {r.id: ok for r, ok, _d in results}
        except Exception as exc:
            fail_open(info, exc, strict, "compliance")


@dataclass
class Exchange:
    """One request after its memory was prepared: what recording it needs, bound once, so a plain reply and a
    stream's end, chat and responses, sync and async, are all recorded the same way."""

    mem: Memory
    opts: Options
    info: MemoryInfo
    messages: Any  # the conversation as the caller sent it (recorded as the turn)
    model: str
    strict: bool
    worker: Worker | None = None
    on_recorded: Callable[[str], None] | None = None  # the client's list of its own turns (close() waits for them)

    def record(self, reply: str, response_id: str | None) -> None:
        """A finished reply; raises only if ``strict``."""
        try:
            finish(self.mem, self.opts, self.info, self.messages, reply, response_id=response_id, model=self.model,
                   strict=self.strict, worker=self.worker)
        finally:
            self._recorded()

    def record_stream(self, reply: str, partial: bool, response_id: str | None) -> None:
        """A stream's end (the streams' ``on_done``); never raises: the caller already has the reply."""
        finish(self.mem, self.opts, self.info, self.messages, reply, response_id=response_id, model=self.model,
               strict=False, partial=partial, worker=self.worker)
        self._recorded()

    def _recorded(self) -> None:
        if self.on_recorded is not None and self.info.turn_id and self.opts.extract:
            self.on_recorded(self.info.turn_id)
