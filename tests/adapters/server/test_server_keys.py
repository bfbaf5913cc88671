"""Proxy keys (memstore keys create / list / revoke) and the server's pure pieces: the token bucket, the
upstream error mapping, the request checks. No server process here."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from memstore.adapters.server.keys import KeyStore, open_keys
from memstore.adapters.server.limits import ApiError, RateLimiter, TokenBucket, check_chat_body, upstream_error
from sqlalchemy import inspect, text
from typer.testing import CliRunner

from memstore.cli.serve import keys_app, serve
from memstore.errors import InvalidInputError, NotFoundError

runner = CliRunner()


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    home = str(tmp_path / "h")
    made = runner.invoke(keys_app, ["create", "--name", "app1", "--home", home])
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert key.startswith("msk_") and len(key.splitlines()) == 1
    bound = json.loads(runner.invoke(keys_app, ["create", "--name", "app2", "--namespace", "shop", "--home", home,
                                                "--json"]).stdout)
    assert bound["namespace"] == "shop" and bound["key"].startswith("msk_") and "hash" not in bound

    listed = json.loads(runner.invoke(keys_app, ["list", "--home", home, "--json"]).stdout)
    assert [k["name"] for k in listed] == ["app1", "app2"]
    assert key not in json.dumps(listed) and key.split("_", 2)[2] not in json.dumps(listed)  # the secret may hold "_"
    table = runner.invoke(keys_app, ["list", "--home", home]).stdout
    assert "app1" in table and "shop" in table and key.split("_")[1] in table

    prefix = key.split("_")[1]
    revoked = runner.invoke(keys_app, ["revoke", prefix, "--home", home])
    assert revoked.exit_code == 0 and prefix in revoked.stdout
    active = json.loads(runner.invoke(keys_app, ["list", "--active", "--home", home, "--json"]).stdout)
    assert [k["name"] for k in active] == ["app2"]
    assert runner.invoke(keys_app, ["revoke", "nope", "--home", home]).exit_code == 1
    assert runner.invoke(keys_app, ["create", "--name", " ", "--home", home]).exit_code == 2


def test_keys_are_stored_hashed_and_verified(tmp_path: Path) -> None:
    store = open_keys(home=str(tmp_path))
    row, key = store.create("svc", "team-a")
    _scheme, prefix, secret = key.split("_", 2)
    assert row.prefix == prefix and row.hash == hashlib.sha256(f"{prefix}.{secret}".encode()).hexdigest()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("memstore.db*"))
    assert secret.encode() not in raw and prefix.encode() in raw

    assert store.verify(key).id == row.id  # type: ignore[union-attr]
    assert store.verify(key + "x") is None
    assert store.verify(f"msk_{prefix}_{'A' * len(secret)}") is None
    assert store.verify(f"msk_{'0' * 12}_{secret}") is None
    assert store.verify("Bearer " + key) is None and store.verify("") is None and store.verify(None) is None
    store.touch(row)
    assert store.find(prefix).last_used_at is not None
    store.revoke(row.id)
    assert store.verify(key) is None
    with pytest.raises(NotFoundError):
        store.find("missing")
    with pytest.raises(InvalidInputError):
        store.create("x" * 101)
    store.create("dup")
    store.create("dup")
    with pytest.raises(InvalidInputError, match="named"):
        store.revoke("dup")


def test_an_existing_database_gains_the_keys_table(tmp_path: Path) -> None:
    from memstore.storage.db import get_engine

    engine = get_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:  # as if created by a memstore that predates the proxy
        conn.execute(text("DROP TABLE IF EXISTS proxy_keys"))
    assert "proxy_keys" not in inspect(engine).get_table_names()
    store = KeyStore(engine)
    assert "proxy_keys" in inspect(engine).get_table_names()
    _row, key = store.create("late")
    assert store.verify(key) is not None


def test_server_cli_imports_cheaply() -> None:
    code = ("import sys, memstore.cli.serve; heavy = [m for m in ('fastapi', 'uvicorn', 'litellm', 'torch', "
            "'sqlmodel', 'chromadb') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.stdout.strip() == "[]"


def test_serve_help_lists_the_options() -> None:
    app = typer.Typer()
    app.command("serve")(serve)
    app.command("other")(lambda: None)
    result = runner.invoke(app, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for option in ("--host", "--port", "--upstream-base-url", "--upstream-api-key", "--no-auth", "--rate-limit",
                   "--max-body-bytes", "--max-messages", "--model"):
        assert option in result.stdout
    assert "--embedder" not in result.stdout


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=2.0, burst=3.0, tokens=3.0, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0  # one token refilled
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(100.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # capped at the burst


def test_rate_limiter_per_caller_and_off() -> None:
    limiter = RateLimiter(rate=0.001, burst=2)
    limiter.check("a")
    limiter.check("a")
    with pytest.raises(ApiError) as err:
        limiter.check("a")
    assert err.value.status == 429 and int(err.value.headers["Retry-After"]) >= 1
    limiter.check("b")
    off = RateLimiter(rate=0)
    for _ in range(100):
        off.check("a")


class _Upstream(Exception):
    def __init__(self, message: str, status_code: int | None) -> None:
        super().__init__(message)
        self.status_code = status_code


class Timeout(Exception):  # named like litellm's
    status_code = 408


@pytest.mark.parametrize(("exc", "status"), [
    (_Upstream("litellm.RateLimitError: RateLimitError: OpenAIException - slow down", 429), 429),
    (_Upstream("litellm.BadRequestError: OpenAIException - bad", 400), 400),
    (_Upstream("litellm.InternalServerError: InternalServerError: OpenAIException - Connection error.", 500), 502),
    (_Upstream("weird", None), 502),
    (Timeout("took too long"), 504),
    (_Upstream("overloaded", 503), 503),
])
def test_upstream_errors_map_to_the_providers_status(exc: Exception, status: int) -> None:
    err = upstream_error(exc)
    assert err.status == status
    body = err.body()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert "litellm." not in body["message"] and "OpenAIException" not in body["message"]
    if status == 429:
        assert err.headers["Retry-After"] and body["type"] == "rate_limit_error"


def test_check_chat_body() -> None:
    ok = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    check_chat_body(ok, 5)
    cases = [({**ok, "model": ""}, "missing_required_parameter"), ({**ok, "messages": "hi"}, "invalid_value"),
             ({**ok, "messages": [{"content": "x"}]}, "missing_required_parameter"),
             ({**ok, "stream": "yes"}, "invalid_type"),
             ({**ok, "user": 5}, "invalid_type"), ({**ok, "messages": ok["messages"] * 6}, "too_many_messages")]
    for bad, code in cases:
        with pytest.raises(ApiError) as err:
            check_chat_body(bad, 5)
        assert err.value.status == 400 and err.value.code == code
