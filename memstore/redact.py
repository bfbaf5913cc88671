"""Secrets and PII scrubbing: API keys, tokens, passwords, card and account numbers never become memories.

``redact(text)`` returns the text with each finding replaced by a typed placeholder ("[redacted api key]")
and the list of findings (kind and position in the input; never the secret itself). It runs, when
``MemoryConfig.redact_secrets`` is on (the default), on every turn before it is written to the outbox, on
the text the extraction model sees, and on every memory text before it is stored.

The patterns are pure regular expressions with bounded repetition (linear in the input), plus checksums
where the format has one: the Luhn check for card numbers, ISO 7064 mod-97 for IBANs. Ordinary numbers
(phone numbers, order numbers, years) fail those checks or lack the context words and are left alone.
"""

from __future__ import annotations

import base64
import bisect
import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["PLACEHOLDERS", "Finding", "bip39_valid", "find_secrets", "iban_valid", "luhn_valid", "redact",
           "redact_messages"]

PLACEHOLDERS = {
    "private key": "[redacted private key]",
    "api key": "[redacted api key]",
    "jwt": "[redacted token]",
    "bearer token": "[redacted token]",
    "password": "[redacted password]",
    "pin": "[redacted pin]",
    "card number": "[redacted card number]",
    "iban": "[redacted iban]",
    "ssn": "[redacted ssn]",
    "account number": "[redacted account number]",
    "seed phrase": "[redacted seed phrase]",
    "passport number": "[redacted passport number]",
}


@dataclass(frozen=True)
class Finding:
    """One secret found in a text: its kind and where it was (``text[start:end]`` of the input)."""

    kind: str
    start: int
    end: int

    @property
    def placeholder(self) -> str:
        return PLACEHOLDERS[self.kind]


# ---- checksums --------------------------------------------------------------------------------------

def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of payment card numbers."""
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Lengths of the IBAN of each country that issues them (SWIFT IBAN registry).
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25,
    "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18,
    "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33,
    "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def iban_valid(iban: str) -> bool:
    """ISO 13616 IBAN: known country, its length, and the ISO 7064 mod-97 check digits."""
    s = iban.replace(" ", "").upper()
    if len(s) < 15 or len(s) > 34 or not s.isascii() or not s.isalnum():
        return False
    if _IBAN_LENGTHS.get(s[:2]) != len(s) or not s[2:4].isdigit():
        return False
    rotated = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in rotated)
    return int(number) % 97 == 1


# ---- patterns ---------------------------------------------------------------------------------------

_B = r"(?<![A-Za-z0-9_-])"   # a token boundary that treats - and _ as part of a key
_E = r"(?![A-Za-z0-9_-])"

# (kind, compiled pattern, value group or 0, optional validator of the matched value)
_Rule = tuple[str, "re.Pattern[str]", int, Callable[[str], bool] | None, "tuple[str, ...] | str"]

_PASSWORD_FILLER = frozenset(
    """a an the not too very so same different wrong right correct incorrect weak strong long short secure
    insecure expired required needed reset changed set saved stored hidden missing invalid valid new old ok
    okay fine good bad simple easy hard complicated complex something nothing unknown forgotten lost in on at
    for to of with by from as and or but that this it here there still also already now again never always
    protected encrypted managed working broken case sensitive""".split()
)


def _looks_like_password(value: str) -> bool:
    if value.lstrip("\"'`“”‘’(").startswith("[redacted"):  # a placeholder: redacting twice changes nothing
        return False
    v = value.strip("\"'`“”‘’.,;:!?()[]{}<>")
    if len(v) < 3:
        return False
    return v.lower() not in _PASSWORD_FILLER


def _digits_luhn(value: str) -> bool:
    digits = re.sub(r"[ -]", "", value)
    if not luhn_valid(digits) or len(set(digits)) == 1:
        return False
    # a known card brand prefix: Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay, Maestro
    return bool(re.match(r"4|5[1-5]|2[2-7]|3[47]|3[068]|35|6|50|5[6-9]", digits))


def _keyish(value: str) -> bool:
    """A provider key body mixes letters and digits ("sk-learn-is-a-library" is not a key)."""
    return bool(re.search(r"\d", value)) and bool(re.search(r"[A-Za-z].*[A-Za-z]", value[3:]))


_PASSWORD_WORDS = ("pass", "pwd", "wifi key", "wi-fi key")
_PASSWORD_LEAD = (
    r"(?i)\b(?:password|passwd|pwd|passcode|passphrase|pass phrase|wifi key|wi-fi key)\b"
    r"(?:\s+(?:for|to|of|on|at)\s+(?:my\s+|the\s+|our\s+)?[\w.@'-]{1,40}(?:\s+account)?)?"
    r"[\"']?\s*(?:is now|is still|has been changed to|changed to|is|was|=>|->|=|:)\s*"
)


def _token_like(value: str) -> bool:
    """A credential value: long enough and mixing letters and digits (not an English word)."""
    return len(value) >= 12 and bool(re.search(r"\d", value)) and bool(re.search(r"[A-Za-z]", value))


def _basic_credentials(value: str) -> bool:
    """HTTP Basic credentials: base64 of "user:password" in printable text."""
    try:
        decoded = base64.b64decode(value + "=" * (-len(value) % 4), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return False
    return ":" in decoded and decoded.isprintable()


def _login_password(value: str) -> bool:
    """The password of "login is jdoe / hunter1234": a word with a digit or a symbol, not a placeholder."""
    return _looks_like_password(value) and bool(re.search(r"[\d\W_]", value))


_PW_WORD = r"(?:and[ \t]+)?(?:the[ \t]+|my[ \t]+)?(?:password|pass|pw|pwd)[ \t]*(?:is|:|=)?[ \t]*"


def _passport(value: str) -> bool:
    return sum(c.isdigit() for c in value) >= 4


_DIGIT = "0123456789"


def _rule(kind: str, pattern: str, group: int = 0, check: Callable[[str], bool] | None = None,
          needles: tuple[str, ...] | str = ()) -> _Rule:
    """``needles``: lower-case literals one of which every match contains (a cheap pre-check that skips the
    regex on text that cannot match); the string ``_DIGIT`` means "any digit"."""
    return kind, re.compile(pattern), group, check, needles


_RULES: list[_Rule] = [
    _rule("private key", r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----[\s\S]{0,20000}?"
          r"-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----", needles=("private key",)),
    # provider key shapes
    _rule("api key", _B + r"sk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{20,400}" + _E, needles=("sk-ant-",)),
    _rule("api key", _B + r"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,400}" + _E, check=_keyish,
          needles=("sk-",)),
    _rule("api key", _B + r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,200}" + _E, needles=("_live_", "_test_")),
    _rule("api key", r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}(?![A-Z0-9])",
          needles=("akia", "asia", "abia", "acca", "agpa", "aida", "aroa", "anpa", "anva", "aipa")),
    _rule("api key", r"(?i)aws.{0,20}?(?:secret|private).{0,20}?[:=\s]\s*[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
          group=1, needles=("aws",)),
    _rule("api key", _B + r"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}" + _E,
          needles=("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    _rule("api key", _B + r"github_pat_[A-Za-z0-9_]{22,255}" + _E, needles=("github_pat_",)),
    _rule("api key", _B + r"glpat-[A-Za-z0-9_-]{20,100}" + _E, needles=("glpat-",)),
    _rule("api key", _B + r"xox[abposre]-[A-Za-z0-9-]{10,250}" + _E, needles=("xox",)),
    _rule("api key", r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{10,200}",
          needles=("hooks.slack.com",)),
    _rule("api key", _B + r"AIza[0-9A-Za-z_-]{35}" + _E, needles=("aiza",)),
    _rule("api key", _B + r"ya29\.[0-9A-Za-z_-]{20,2000}" + _E, needles=("ya29.",)),
    _rule("api key", _B + r"(?:hf_[A-Za-z0-9]{30,60}|npm_[A-Za-z0-9]{36}|pypi-[A-Za-z0-9_-]{50,300})" + _E,
          needles=("hf_", "npm_", "pypi-")),
    # literal first, boundary after: the regex engine then skips ahead to the literal (a leading look-behind
    # makes it try every position)
    _rule("api key", r"SG\.(?<![A-Za-z0-9_-]SG\.)[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{30,64}" + _E,
          needles=("sg.",)),  # SendGrid
    _rule("api key", r"SK(?<![A-Za-z0-9]SK)[0-9a-fA-F]{32}(?![A-Za-z0-9])", needles=("sk",)),  # Twilio API key
    _rule("api key", r"(?<![A-Za-z0-9_:-])\d{8,10}:AA[A-Za-z0-9_-]{33}" + _E, needles=(":aa",)),  # Telegram
    _rule("api key", _B + r"(?:gsk_[A-Za-z0-9]{40,60}|r8_[A-Za-z0-9]{30,45}|pplx-[A-Za-z0-9]{40,60}|"
          r"xai-[A-Za-z0-9]{60,90}|dop_v1_[a-f0-9]{64}|dckr_pat_[A-Za-z0-9_-]{20,40})" + _E,
          needles=("gsk_", "r8_", "pplx-", "xai-", "dop_v1_", "dckr_pat_")),
    # Azure storage / Service Bus / Event Hubs connection strings, SAS signatures
    _rule("api key", r"(?i)\b(?:AccountKey|SharedAccessKey|SharedSecretValue)\s*=\s*([A-Za-z0-9+/]{20,200}={0,2})",
          group=1, needles=("accountkey", "sharedaccesskey", "sharedsecretvalue")),
    _rule("api key", r"[?&]sig=([A-Za-z0-9%+/]{20,200}(?:%3D|=){0,2})", group=1, needles=("sig=",)),
    # user:password@ in URLs and connection strings (postgres://, mysql://, mongodb+srv://, redis://, amqp://, ...)
    _rule("password", r"(?i)\b[a-z][a-z0-9+.-]{1,30}://[^\s:/?#@\[\]]{1,200}:([^\s/]{1,200})@[\w.\[-]",
          group=1, check=lambda v: not v.startswith("[redacted"), needles=("://",)),
    # Authorization: Basic base64(user:password)
    _rule("bearer token", r"(?i)\bbasic\s+([A-Za-z0-9+/]{8,1000}={0,2})(?![A-Za-z0-9+/=])", group=1,
          check=_basic_credentials, needles=("basic",)),
    # tokens
    _rule("jwt", _B + r"eyJ[A-Za-z0-9_-]{5,4000}\.eyJ[A-Za-z0-9_-]{5,8000}\.[A-Za-z0-9_-]{0,4000}" + _E,
          needles=("eyj",)),
    _rule("bearer token", r"(?i)\b(?:bearer|token)\s+([A-Za-z0-9._~+/-]{16,2000}=*)(?![A-Za-z0-9._~+/=-])",
          group=1, check=_token_like, needles=("bearer", "token")),
    # "api key: ...", "secret=...", "my token is ..." with a credential-looking value
    _rule("api key", r"(?i)\b(?:api[ _-]?key|api[ _-]?token|access[ _-]?token|auth[ _-]?token|secret[ _-]?key|"
          r"client[ _-]?secret|secret|token|access[ _-]?key)s?\b[\"']?\s*(?:is|was|=|:|=>)\s*[\"'`]?"
          r"([A-Za-z0-9._~+/=-]{12,500})", group=1, check=_token_like, needles=("key", "token", "secret")),
    # passwords and PINs stated in prose or as key=value
    _rule("password", _PASSWORD_LEAD + r"[\"'`“‘]([^\"'`”’\n]{1,200})[\"'`”’]", group=1, needles=_PASSWORD_WORDS),
    _rule("password", _PASSWORD_LEAD + r"([^\s\"'`”’]{1,200})", group=1, check=_looks_like_password,
          needles=_PASSWORD_WORDS),
    # "my login is jdoe / hunter1234", "username: jdoe, pw: hunter1234"
    # (the user name is taken whole, and a separator or a password word must follow it)
    _rule("password", r"(?i)\b(?:login|log-in|username|user name|user id|userid|credentials|creds)[ \t]*"
          r"(?:is|are|:|=)?[ \t]*[^\s/:|,;]{1,100}(?![^\s/:|,;])[ \t]*(?:(?:/|:|\||,|;)[ \t]*(?:" + _PW_WORD +
          r")?|" + _PW_WORD + r")([^\s\"'`]{3,100})", group=1, check=_login_password,
          needles=("login", "log-in", "user", "creds", "credentials")),
    _rule("passport number", r"(?i)\b(?:passport|reisepass|passeport|pasaporte)(?:\s+(?:number|no\.?|num|#|id))?"
          r"\s*(?:is|was|=|:|#)?\s*([A-Z0-9]{6,9})(?![A-Za-z0-9])", group=1, check=_passport,
          needles=("passport", "reisepass", "passeport", "pasaporte")),
    _rule("pin", r"(?i)\b(?:pin|pin code|pin number|security code|cvv|cvc|cvv2)\b(?:\s+(?:for|to|of|on)\s+"
          r"(?:my\s+|the\s+)?[\w'-]{1,30}(?:\s+card)?)?\s*(?:is|was|=|:|#)?\s*(\d{3,8})(?!\d)", group=1,
          needles=("pin", "security code", "cvv", "cvc")),
    # cards and accounts
    _rule("card number", r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])", check=_digits_luhn, needles=_DIGIT),
    _rule("ssn", r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])", needles=_DIGIT),
    _rule("ssn", r"(?i)\b(?:ssn|social security(?: number| no\.?| #)?|sozialversicherungsnummer)\b"
          r"\D{0,20}?(\d{3}[ .]?\d{2}[ .]?\d{4})(?!\d)", group=1,
          needles=("ssn", "social security", "sozialversicherungsnummer")),
    _rule("account number", r"(?i)\b(?:account|acct|routing|sort code|bank account|checking account|savings account|"
          r"a/c)(?:\s+(?:number|no\.?|num|#))?\s*(?:is|was|=|:|#)?\s*(\d[\d -]{4,30}\d)(?!\d)", group=1,
          check=lambda v: len(re.sub(r"\D", "", v)) >= 6, needles=("account", "acct", "routing", "sort code", "a/c")),
]

_NEEDLES = sorted({n for *_rest, needles in _RULES if needles != _DIGIT for n in needles})

# IBANs: found on an ASCII-uppercased copy (same length), grouped or not, then shrunk until valid.
_IBAN = re.compile(r"(?<![A-Z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}(?![A-Z0-9])")
_ANY_DIGIT = re.compile(r"\d")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _iban_spans(text: str) -> list[tuple[int, int]]:
    upper = text.translate(_ASCII_UPPER)
    spans = []
    for m in _IBAN.finditer(upper):
        value = m.group(0)
        if value[:2] not in _IBAN_LENGTHS:
            continue
        while value:
            if iban_valid(value):
                spans.append((m.start(), m.start() + len(value)))
                break
            cut = value.rfind(" ")
            if cut <= 4:
                break
            value = value[:cut]
    return spans


# BIP39 seed phrases: 12-24 words of the BIP39 English list (via `mnemonic`, Trezor's reference implementation).
# A run whose words pass the BIP39 checksum is a phrase; without the checksum (a typo, a shortened phrase) a run of
# 12+ list words is one only after a cue ("seed", "recovery phrase", "mnemonic", "wallet").
_SEED_RUN = re.compile(r"(?<![A-Za-z])(?:[A-Za-z]{3,8}[\s,;.\-\d)(]{1,6}){11,}[A-Za-z]{3,8}(?![A-Za-z])")
_SEED_WORD = re.compile(r"[A-Za-z]+")
_SEED_CUE = re.compile(r"(?i)\b(?:seed|mnemonic|recovery|backup phrase|secret phrase|secret words|wallet)")
_SEED_LENGTHS = (24, 21, 18, 15, 12)


@functools.cache
def _bip39_index() -> dict[str, int]:
    from mnemonic import Mnemonic

    return {w: i for i, w in enumerate(Mnemonic("english").wordlist)}


def bip39_valid(words: list[str]) -> bool:
    """The BIP39 checksum of a 12-24 word phrase (the last bits are the start of SHA-256 of the entropy)."""
    index = _bip39_index()
    if len(words) not in _SEED_LENGTHS or any(w not in index for w in words):
        return False
    bits = "".join(f"{index[w]:011b}" for w in words)
    n = len(bits) * 32 // 33
    digest = hashlib.sha256(int(bits[:n], 2).to_bytes(n // 8, "big")).digest()
    return bits[n:] == f"{int.from_bytes(digest, 'big'):0256b}"[:len(bits) - n]


def _may_hold_seed(text: str) -> bool:
    """12 list words in a row, numbering and punctuation aside: a cheap pre-check (str.split and a set lookup
    per word cost a fraction of running the run regex over every message)."""
    index = _bip39_index()
    flags = "".join(("1" if w in index else "0") if w else ""
                    for w in (t.strip(_SEED_STRIP) for t in text.lower().split()))
    return "111111111111" in flags


_SEED_STRIP = ",;.:()-0123456789"


def _seed_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    if not _may_hold_seed(text):
        return spans
    index = _bip39_index()
    for cand in _SEED_RUN.finditer(text):
        run: list[re.Match[str]] = []
        for m in [*_SEED_WORD.finditer(cand.group(0)), None]:
            if m is not None and m.group(0).lower() in index:
                run.append(m)
                continue
            if len(run) >= 12:
                spans.extend(_seed_run_spans(text, cand.start(), run))
            run = []
    return spans


_SEED_MAX_RUN = 64  # a longer run of list words is prose or a word list, not a phrase (and bounds the work)


def _seed_run_spans(text: str, offset: int, run: list[re.Match[str]]) -> list[tuple[int, int]]:
    if len(run) > _SEED_MAX_RUN:
        return []
    words = [m.group(0).lower() for m in run]
    found, i = [], 0
    while i < len(words):
        for n in _SEED_LENGTHS:
            if i + n <= len(words) and bip39_valid(words[i:i + n]):
                found.append((offset + run[i].start(), offset + run[i + n - 1].end()))
                i += n
                break
        else:
            i += 1
    start = offset + run[0].start()
    if not found and _SEED_CUE.search(text, max(0, start - 80), start):
        found.append((start, offset + run[-1].end()))
    return found


def find_secrets(text: str) -> list[Finding]:
    """Every secret in ``text``, left to right, without overlaps (the earlier rule wins a tie)."""
    found: list[tuple[int, int, int, str]] = []  # (start, -length, priority, kind)
    lower = text.lower()
    has_digit = _ANY_DIGIT.search(text) is not None
    present = {n for n in _NEEDLES if n in lower}  # each literal tested once, not once per rule naming it
    for prio, (kind, pattern, group, check, needles) in enumerate(_RULES):
        if needles == _DIGIT:
            if not has_digit:
                continue
        elif needles and present.isdisjoint(needles):
            continue
        for m in pattern.finditer(text):
            start, end = m.span(group)
            if start < 0 or end <= start:
                continue
            if check is not None and not check(m.group(group)):
                continue
            found.append((start, -(end - start), prio, kind))
    for start, end in _iban_spans(text) if has_digit else ():
        found.append((start, -(end - start), len(_RULES), "iban"))
    for start, end in _seed_spans(text) if len(text) >= 47 else ():
        found.append((start, -(end - start), len(_RULES) + 1, "seed phrase"))
    found.sort(key=lambda f: (f[2], f[0]))
    starts: list[int] = []   # the kept spans, sorted and disjoint: an overlap test is two neighbours
    kept: list[Finding] = []
    for start, neg_len, _prio, kind in found:
        end = start - neg_len
        i = bisect.bisect_right(starts, start)
        if (i > 0 and kept[i - 1].end > start) or (i < len(kept) and kept[i].start < end):
            continue
        starts.insert(i, start)
        kept.insert(i, Finding(kind, start, end))
    return kept


def redact(text: str) -> tuple[str, list[Finding]]:
    """``text`` with every secret replaced by a typed placeholder, and what was found."""
    if not isinstance(text, str) or not text:
        return text, []
    findings = find_secrets(text)
    if not findings:
        return text, []
    out, last = [], 0
    for f in findings:
        out.append(text[last:f.start])
        out.append(f.placeholder)
        last = f.end
    out.append(text[last:])
    return "".join(out), findings


def redact_text(text: str) -> str:
    return redact(text)[0]


def redact_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of chat messages with the text of string contents and text parts redacted."""
    out = []
    for m in messages:
        if not isinstance(m, dict):
            out.append(m)
            continue
        content = m.get("content")
        if isinstance(content, str):
            m = {**m, "content": redact_text(content)}
        elif isinstance(content, list):
            m = {**m, "content": [
                {**p, "text": redact_text(p["text"])} if isinstance(p, dict) and isinstance(p.get("text"), str)
                else redact_text(p) if isinstance(p, str) else p
                for p in content]}
        out.append(m)
    return out
