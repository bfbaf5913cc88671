"""How well ``memstore.redact`` finds secrets, and how often it touches ordinary chat.

Positives are generated here, per format, from random values in varied carrier sentences (no real or
copied credential). Ordinary chat comes from LoCoMo and PrefEval (CC BY-NC: read at run time from
``--data``, only counted, never copied or printed). Reported: per format, the share of generated secrets
removed from the text (recall) and typed right; on ordinary chat, the share of messages with any finding
(false positives) by kind; the per-message latency; the import cost of the module.

    python -m memstore.eval.redaction --data /path/to/shared/data [--per-format 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import string
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from memstore.redact import find_secrets, luhn_valid, redact

Case = tuple[str, str, str]  # (text, secret, expected kind)
_AN = string.ascii_letters + string.digits


def _r(rng: random.Random, n: int, alphabet: str = _AN) -> str:
    """Random credential body with at least one digit and one letter (as real keys have)."""
    body = [rng.choice(alphabet) for _ in range(n)]
    body[rng.randrange(n)] = rng.choice(string.digits)
    body[rng.randrange(n)] = rng.choice("abcdefghijkmnpqrstuvwxyz")
    return "".join(body)


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _pick(rng: random.Random, *templates: str) -> str:
    return rng.choice(templates)


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for d in string.digits:
        if luhn_valid(body + d):
            return body + d
    raise AssertionError("unreachable")


def _iban(rng: random.Random) -> str:
    bban = "".join(rng.choice(string.digits) for _ in range(18))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + "DE00")) % 97
    return f"DE{check:02d}{bban}"


def _seed(rng: random.Random, words: int) -> str:
    from mnemonic import Mnemonic

    return Mnemonic("english").to_mnemonic(bytes(rng.getrandbits(8) for _ in range(words * 4 // 3)))


def _password(rng: random.Random) -> str:
    word = rng.choice(["hunter", "Summer", "tiger", "Blue", "falcon", "Maple"])
    return word + str(rng.randint(10, 9999)) + rng.choice(["", "!", "#", "?"])


def _generators() -> dict[str, tuple[str, Callable[[random.Random], tuple[str, str]]]]:
    """format -> (expected kind, rng -> (text, secret))."""
    def say(kind: str, make: Callable[[random.Random], str], *templates: str) -> tuple[str, Callable[..., Any]]:
        def gen(rng: random.Random) -> tuple[str, str]:
            secret = make(rng)
            return _pick(rng, *templates).replace("{s}", secret), secret
        return kind, gen

    key_lines = ("here is my key {s} please keep it", "KEY={s}", "use {s} for the requests", "{s}",
                 "my token: {s}", "can you check why {s} fails?")
    user = lambda rng: rng.choice(["admin", "jdoe", "app_user", "svc"])  # noqa: E731
    host = lambda rng: rng.choice(["db.internal", "10.0.0.12", "prod-db.example.com"])  # noqa: E731
    return {
        # provider keys (the formats listed before issue 19)
        "openai": say("api key", lambda r: "sk-" + _r(r, 48), *key_lines),
        "openai project": say("api key", lambda r: "sk-proj-" + _r(r, 120, _AN + "_-"), *key_lines),
        "anthropic": say("api key", lambda r: "sk-ant-api03-" + _r(r, 93, _AN + "_-") + "AA", *key_lines),
        "aws key id": say("api key", lambda r: "AKIA" + _r(r, 16, string.ascii_uppercase + string.digits).upper(),
                          *key_lines),
        "aws secret": say("api key", lambda r: _r(r, 40, _AN + "/+"), "aws_secret_access_key = {s}",
                          "AWS secret key: {s}"),
        "github": say("api key", lambda r: "ghp_" + _r(r, 36), *key_lines),
        "github fine-grained": say("api key", lambda r: "github_pat_" + _r(r, 22) + "_" + _r(r, 59), *key_lines),
        "gitlab": say("api key", lambda r: "glpat-" + _r(r, 20, _AN + "_-"), *key_lines),
        "slack token": say("api key", lambda r: f"xoxb-{r.randint(10**11, 10**12)}-{r.randint(10**12, 10**13)}-"
                           + _r(r, 24), *key_lines),
        "slack webhook": say("api key", lambda r: "https://hooks.slack.com/services/T" + _r(r, 8).upper() + "/B"
                             + _r(r, 8).upper() + "/" + _r(r, 24), "post to {s} when done", "{s}"),
        "google api key": say("api key", lambda r: "AIza" + _r(r, 35, _AN + "_-"), *key_lines),
        "google oauth": say("api key", lambda r: "ya29." + _r(r, 80, _AN + "_-"), *key_lines),
        "stripe": say("api key", lambda r: "sk_live_" + _r(r, 24), *key_lines),
        "hugging face": say("api key", lambda r: "hf_" + _r(r, 34), *key_lines),
        "npm": say("api key", lambda r: "npm_" + _r(r, 36), *key_lines),
        "pypi": say("api key", lambda r: "pypi-" + _r(r, 80, _AN + "_-"), *key_lines),
        "jwt": say("jwt", lambda r: "eyJ" + _r(r, 30, _AN + "_-") + ".eyJ" + _r(r, 60, _AN + "_-") + "."
                   + _r(r, 43, _AN + "_-"), *key_lines),
        "bearer token": say("bearer token", lambda r: _r(r, 40, _AN + "_-"), "Authorization: Bearer {s}",
                            "curl -H 'Authorization: Bearer {s}'"),
        "generic api_key=": say("api key", lambda r: _r(r, 32), "api_key={s}", "my api key is {s}",
                                "client_secret: {s}"),
        "pem private key": say("private key", lambda r: "-----BEGIN RSA PRIVATE KEY-----\n" + _r(r, 64, _AN + "+/")
                               + "\n" + _r(r, 64, _AN + "+/") + "\n-----END RSA PRIVATE KEY-----",
                               "here is the key:\n{s}\nthanks", "{s}"),
        "password prose": say("password", _password, "my password is {s}", "the wifi password is {s}",
                              "password for gmail: {s}", "pwd={s}", 'my passphrase is "{s} blue"'),
        "pin": say("pin", lambda r: str(r.randint(1000, 9999)), "my pin is {s}", "PIN: {s}",
                   "the pin for my debit card is {s}"),
        "cvv": say("pin", lambda r: str(r.randint(100, 999)), "cvv {s}", "the security code is {s}"),
        "card number": say("card number", lambda r: _luhn_complete(r.choice(["4", "51", "37"]), 16, r),
                           "my card is {s}", "charge {s} please", "card: {s}"),
        "iban": say("iban", _iban, "send it to {s}", "IBAN: {s}", "my iban is {s}"),
        "ssn": say("ssn", lambda r: f"{r.randint(100, 665)}-{r.randint(10, 99)}-{r.randint(1000, 9999)}",
                   "my ssn is {s}", "SSN: {s}", "social security number {s}"),
        "account number": say("account number", lambda r: str(r.randint(10**7, 10**10)), "account number {s}",
                              "my checking account is {s}", "routing number: {s}"),
        # the formats of issue 19
        "database url": say("password", _password, *(f"{scheme}://{{u}}:{{s}}@{{h}}/app" for scheme in
                            ("postgres", "postgresql+psycopg", "mysql", "mongodb+srv", "redis", "amqp"))),
        "basic auth": say("bearer token", lambda r: base64.b64encode(f"{r.choice(['jdoe', 'admin'])}:"
                                                                     f"{_password(r)}".encode()).decode(),
                          "Authorization: Basic {s}", "curl -H 'Authorization: Basic {s}' https://api"),
        "azure account key": say("api key", lambda r: base64.b64encode(r.randbytes(64)).decode(),
                                 "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={s};"
                                 "EndpointSuffix=core.windows.net",
                                 "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=root;"
                                 "SharedAccessKey={s}"),
        "sendgrid": say("api key", lambda r: "SG." + _r(r, 22, _AN + "_-") + "." + _r(r, 43, _AN + "_-"),
                        *key_lines),
        "twilio": say("api key", lambda r: "SK" + _hex(r, 32), *key_lines),
        "telegram bot": say("api key", lambda r: f"{r.randint(10**8, 10**10 - 1)}:AA" + _r(r, 33, _AN + "_-"),
                            *key_lines),
        "bip39 seed (12)": say("seed phrase", lambda r: _seed(r, 12), "my seed phrase is {s}", "{s}",
                               "wallet backup: {s}", "restore with: {s}"),
        "bip39 seed (24)": say("seed phrase", lambda r: _seed(r, 24), "recovery words: {s}", "{s}"),
        "passport": say("passport number", lambda r: r.choice(["", "C", "X", "P"]) + str(r.randint(10**7, 10**8)),
                        "my passport number is {s}", "passport: {s}", "Passport No. {s}"),
        "login / password": say("password", _password, "my login is jdoe / {s}", "username: jdoe, pw: {s}",
                                "login: jdoe password: {s}", "creds are admin:{s}"),
    }, user, host


def generated_cases(per_format: int = 50, seed: int = 19) -> dict[str, list[Case]]:
    """format -> ``per_format`` (text, secret, kind) cases, reproducible from ``seed``."""
    gens, user, host = _generators()
    rng = random.Random(seed)
    out: dict[str, list[Case]] = {}
    for name, (kind, gen) in gens.items():
        cases = []
        for _ in range(per_format):
            text, secret = gen(rng)
            text = text.replace("{u}", user(rng)).replace("{h}", host(rng))
            cases.append((text, secret, kind))
        out[name] = cases
    return out


# ---- ordinary chat ---------------------------------------------------------------------------------------

def default_data_dir() -> Path | None:
    """``$MEMSTORE_CHAT_DATA``, else the shared data folder beside the repository, else none."""
    env = os.environ.get("MEMSTORE_CHAT_DATA")
    here = Path(__file__).resolve().parents[2]
    for p in ([Path(env)] if env else []) + [here.parent / "shared" / "data", Path("/work/shared/data")]:
        if (p / "locomo").is_dir() or (p / "prefeval").is_dir():
            return p
    return None


def _strings(node: Any, keys: frozenset[str]) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in keys and isinstance(v, str):
                yield v
            else:
                yield from _strings(v, keys)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v, keys)


def chat_messages(data_dir: Path) -> dict[str, list[str]]:
    """Ordinary messages by source: LoCoMo dialogue turns; PrefEval conversations, preferences and questions."""
    out: dict[str, list[str]] = {}
    locomo = data_dir / "locomo" / "locomo_dev.json"
    if locomo.is_file():
        out["locomo turns"] = list(_strings([c["conversation"] for c in json.loads(locomo.read_text())],
                                            frozenset({"text"})))
    pref = data_dir / "prefeval"
    if pref.is_dir():
        inter = pref / "filtered_inter_turns.json"
        if inter.is_file():
            out["prefeval conversations"] = list(_strings(json.loads(inter.read_text()), frozenset({"content"})))
        msgs: list[str] = []
        for f in sorted(pref.glob("*_preference/**/*.json")):
            msgs.extend(_strings(json.loads(f.read_text()), frozenset({"preference", "question", "content",
                                                                        "text", "explanation"})))
        out["prefeval preferences"] = msgs
    return {k: [m for m in v if m.strip()] for k, v in out.items()}


# ---- measuring -------------------------------------------------------------------------------------------

def measure(per_format: int = 50, data_dir: Path | None = None, seed: int = 19, repeats: int = 3) -> dict[str, Any]:
    """Recall per format, false positives on ordinary chat and the time per message (the fastest of
    ``repeats`` runs of each message)."""
    formats: dict[str, Any] = {}
    for name, cases in generated_cases(per_format, seed).items():
        removed = typed = 0
        for text, secret, kind in cases:
            out, findings = redact(text)
            if secret not in out:
                removed += 1
                typed += kind in {f.kind for f in findings}
        formats[name] = {"cases": len(cases), "recall": removed / len(cases), "typed": typed / len(cases)}
    result: dict[str, Any] = {"formats": formats, "per_format": per_format, "seed": seed}
    data_dir = data_dir or default_data_dir()
    if data_dir is not None:
        chat: dict[str, Any] = {}
        times: list[float] = []
        chars = 0
        for source, msgs in chat_messages(data_dir).items():
            kinds: Counter[str] = Counter()
            flagged = 0
            for m in msgs:
                findings = find_secrets(m)
                flagged += bool(findings)
                kinds.update(f.kind for f in findings)
                times.append(_best_time(m, repeats))
                chars += len(m)
            chat[source] = {"messages": len(msgs), "flagged": flagged,
                            "false_positive_rate": flagged / len(msgs) if msgs else 0.0, "by_kind": dict(kinds)}
        result["chat"] = chat
        n = len(times)
        if n:
            total = sum(times)
            times.sort()
            result["latency_us"] = {"mean": 1e6 * total / n, "p50": 1e6 * times[n // 2],
                                    "p99": 1e6 * times[int(n * 0.99)], "max": 1e6 * times[-1],
                                    "per_kb": 1e9 * total / chars, "repeats": repeats}
    result["import_ms"] = min((t for t in (import_ms() for _ in range(repeats)) if t is not None), default=None)
    return result


def _best_time(text: str, repeats: int) -> float:
    """The fastest of ``repeats`` runs of find_secrets: on a shared machine the minimum is the stable number."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        find_secrets(text)
        best = min(best, time.perf_counter() - t0)
    return best


def import_ms() -> float | None:
    """Self time of importing memstore.redact in a fresh interpreter (its regexes and checks, not its parents)."""
    try:
        proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import memstore.redact"],
                              capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in proc.stderr.splitlines():
        if line.rstrip().endswith("| memstore.redact"):
            return int(line.split("|")[0].split(":")[1]) / 1000
    return None


def report(result: dict[str, Any]) -> str:
    lines = ["| format | recall | typed right |", "|---|---|---|"]
    for name, r in result["formats"].items():
        lines.append(f"| {name} | {r['recall']:.0%} | {r['typed']:.0%} |")
    lines.append(f"\n{result['per_format']} generated cases per format (seed {result['seed']}).")
    if "chat" in result:
        lines += ["", "| ordinary chat | messages | flagged | false-positive rate | kinds |", "|---|---|---|---|---|"]
        for source, c in result["chat"].items():
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(c["by_kind"].items())) or "-"
            lines.append(f"| {source} | {c['messages']:,} | {c['flagged']} | {c['false_positive_rate']:.3%} | "
                         f"{kinds} |")
        lat = result["latency_us"]
        lines.append(f"\nfind_secrets per ordinary message (fastest of {lat['repeats']} runs each): mean "
                     f"{lat['mean']:.0f} µs, p50 {lat['p50']:.0f} µs, p99 {lat['p99']:.0f} µs, "
                     f"max {lat['max']:.0f} µs; {lat['per_kb']:.0f} µs per kB.")
    if result.get("import_ms") is not None:
        lines.append(f"Importing memstore.redact (self time): {result['import_ms']:.0f} ms.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m memstore.eval.redaction", description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=None, help="folder with locomo/ and prefeval/ (shared data)")
    ap.add_argument("--per-format", type=int, default=200)
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--repeats", type=int, default=3, help="runs per message for the timing (the fastest counts)")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args(argv)
    result = measure(args.per_format, args.data, args.seed, args.repeats)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
