"""Style rules and their programmatic checkers. Pure functions: no I/O, no database.

A style rule is one user instruction about how replies look ("never use capital letters", "reply in German").
When a program can verify it, the rule carries a ``Checker`` (kind + params). ``recognize`` derives one from
the wording, ``check`` verifies a reply, ``format_rule_hint`` phrases the rule for a corrective retry.

Decisions (precision over recall: a wrong checker records false violations for the user):

- Code is not prose: fenced blocks (``` or ~~~, unclosed ones run to the end) and inline `code` are ignored by
  lowercase, language, no_trailing_question, max_words and max_sentences. A reply ending in a code block has
  no trailing question. no_emoji, must_contain, must_not_contain and json_only look at the whole reply.
- lowercase: any uppercase or titlecase letter outside code fails, Unicode-aware, "I" included. Strict: URLs and
  proper nouns are not exempt.
- no_trailing_question: after dropping trailing whitespace, closing quotes/brackets, markdown emphasis and emoji,
  the reply must not end with a question mark (?, full-width ？, Arabic ؟). Sign-offs are not special. Offers
  phrased without a question mark ("Let me know if you'd like more details!") pass: only "?" counts.
- bullet_list: every non-empty prose line is a bullet ("- ", "* ", "+ ", "• ", "1. ", "1) "), with three
  allowances: short label lines ending in ":" (a lead-in "Here are the steps:" or group labels, <= 15 words),
  markdown headings, and continuation lines of a bullet (indented, or directly after it: markdown lazy
  continuation). At least one bullet is required.
- max_bullets counts bullet lines at every nesting level outside code; zero bullets pass.
- max_sentences: blank lines, bullets and headings separate; within a block, . ! ? … and CJK 。！？ end a
  sentence when followed by whitespace. Abbreviations (e.g., i.e., Dr., Mr., vs., U.S.), initials ("J. Smith")
  and decimals ("3.5") do not split; "etc." splits only before an uppercase letter; an ellipsis only before
  an uppercase letter. Markdown headings are not sentences.
- max_words: whitespace-separated tokens with a letter or digit, outside code ("don't", "3.5", "e.g." are one
  word each). Scripts written without spaces (Chinese, Japanese) are undercounted: a run counts once.
- language: fails only when the detector is confident of another language, or when the reply is clearly in
  another script (German wanted, Cyrillic written). Undecidable text (short, mixed, unsupported) passes.
- no_emoji: pictographic emoji (U+1F300..., emoticons, transport, supplemental symbols), regional-indicator
  flags, keycaps, ZWJ sequences, and the BMP symbols whose default presentation is emoji (✅ ❌ ⭐ ⚡ ☕ ...).
  Text symbols such as © ® ™ → ✓ ✔ ★ ♥ ⚠ do not count unless followed by the emoji variation selector U+FE0F.
- json_only: the stripped reply, or the body of one fenced block (```json or bare ```), parses as a JSON
  object or array. Scalars ("42", "\"ok\"") fail.
- must_contain / must_not_contain: whole-word phrase match (no match inside a longer word: "ai" is not found
  in "said"), whitespace-flexible, curly and straight quotes equal, case-insensitive unless case_sensitive.
  "Always end with 'Cheers'" is checked as containment (a safe relaxation); "never start with 'Certainly'"
  is not recognised at all, since a plain containment check would be stricter than the rule.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field

from memstore.instructions.language import (
    INLINE_CODE_RE,
    KEYCAP,
    LANGUAGE_NAME_PATTERN,
    LANGUAGE_NAMES,
    SUPPORTED_LANGUAGES,
    VS16,
    ZWJ,
    bullet_lines,
    detect_language,
    dominant_script,
    find_emoji,
    is_emoji_modifier,
    is_pictograph,
    language_code,
    language_name,
    script_of_language,
    sentences,
    split_fences,
    strip_code,
    words,
)

__all__ = [
    "CHECKER_KINDS", "CheckResult", "Checker", "check", "detect_language", "find_emoji", "format_rule_hint",
    "recognize", "strip_code", "validate_checker",
]

CheckerKind = Literal["lowercase", "no_trailing_question", "bullet_list", "max_words", "max_sentences",
                      "max_bullets", "language", "no_emoji", "must_contain", "must_not_contain", "json_only"]
CHECKER_KINDS: tuple[str, ...] = get_args(CheckerKind)


class Checker(BaseModel):
    """A programmatic check for one style rule: ``kind`` plus its ``params`` (see ``validate_checker``)."""

    kind: CheckerKind
    params: dict[str, Any] = Field(default_factory=dict)


class CheckResult(BaseModel):
    passed: bool
    detail: str  # human-readable reason, e.g. "found capital letters: 'Hello', 'I'"


# ---- params ----------------------------------------------------------------------------------------------
# kind -> {param: (type, required)}
_PARAMS: dict[str, dict[str, tuple[type, bool]]] = {
    "max_words": {"n": (int, True)}, "max_sentences": {"n": (int, True)}, "max_bullets": {"n": (int, True)},
    "language": {"code": (str, True)},
    "must_contain": {"phrase": (str, True), "case_sensitive": (bool, False)},
    "must_not_contain": {"phrase": (str, True), "case_sensitive": (bool, False)},
}


def _coerce(kind: str, name: str, typ: type, value: Any) -> Any:
    if typ is int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{kind}: param {name!r} must be a whole number, got {value!r}")
        if value < 1:
            raise ValueError(f"{kind}: param {name!r} must be at least 1, got {value}")
        return value
    if typ is bool:
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.strip().lower() in ("true", "yes", "1")
        if not isinstance(value, bool):
            raise ValueError(f"{kind}: param {name!r} must be true or false, got {value!r}")
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{kind}: param {name!r} must be a non-empty string, got {value!r}")
    return value


def validate_checker(kind: str, params: dict[str, Any] | None = None) -> Checker:
    """A checked, normalised Checker; ValueError naming the problem for an unknown kind or wrong params.

    Digit strings are accepted for whole numbers and "true"/"false" for flags (CLI input); a language may be
    given by code or name ("de", "German", "Deutsch"); case_sensitive defaults to False."""
    if kind not in CHECKER_KINDS:
        raise ValueError(f"unknown checker kind {kind!r}; expected one of: {', '.join(CHECKER_KINDS)}")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ValueError(f"{kind}: params must be a mapping, got {type(params).__name__}")
    spec = _PARAMS.get(kind, {})
    unknown = sorted(set(params) - set(spec))
    if unknown:
        allowed = ", ".join(spec) if spec else "none"
        raise ValueError(f"{kind}: unexpected param(s) {', '.join(map(repr, unknown))}; allowed: {allowed}")
    out: dict[str, Any] = {}
    for name, (typ, required) in spec.items():
        if name not in params:
            if required:
                raise ValueError(f"{kind}: missing required param {name!r}")
            continue
        out[name] = _coerce(kind, name, typ, params[name])
    if kind == "language":
        code = language_code(out["code"])
        if code is None:
            raise ValueError(f"language: unsupported language {out['code']!r}; supported codes: "
                             f"{', '.join(SUPPORTED_LANGUAGES)}")
        out["code"] = code
    if kind in ("must_contain", "must_not_contain"):
        out["phrase"] = out["phrase"].strip()
        out.setdefault("case_sensitive", False)
    return Checker(kind=kind, params=out)  # type: ignore[arg-type]


def _quote_list(items: list[str], limit: int = 5) -> str:
    uniq = list(dict.fromkeys(items))
    shown = ", ".join(f"'{x}'" for x in uniq[:limit])
    return shown + (f" (+{len(uniq) - limit} more)" if len(uniq) > limit else "")


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- the checks --------------------------------------------------------------------------------------------
def _check_lowercase(text: str, p: dict[str, Any]) -> CheckResult:
    prose = strip_code(text, " ")
    bad = [w for w in re.findall(r"\S+", prose) if any(ch.isupper() or ch.istitle() for ch in w)]
    bad = [w.strip(".,;:!?\"'()[]{}*_“”‘’«»") or w for w in bad]
    if bad:
        return CheckResult(passed=False, detail=f"found capital letters: {_quote_list(bad)}")
    return CheckResult(passed=True, detail="no capital letters outside code")


_TRAILING_JUNK = set(" \t\r\n\"'”’»›)]}*_~>") | {VS16, ZWJ, KEYCAP}


def _check_no_trailing_question(text: str, p: dict[str, Any]) -> CheckResult:
    prose, ends_with_code = split_fences(text)
    if ends_with_code:
        return CheckResult(passed=True, detail="reply ends with a code block")
    prose = INLINE_CODE_RE.sub(" code ", prose).rstrip()
    while prose and (prose[-1] in _TRAILING_JUNK or is_pictograph(prose[-1]) or is_emoji_modifier(prose[-1])):
        prose = prose[:-1]
    if prose.endswith(("?", "？", "؟")):
        last = sentences(prose)
        return CheckResult(passed=False, detail=f"reply ends with a question: {_short(last[-1] if last else prose)!r}")
    return CheckResult(passed=True, detail="reply does not end with a question")


def _check_bullet_list(text: str, p: dict[str, Any]) -> CheckResult:
    bullets, stray = bullet_lines(strip_code(text, "code"))
    if stray:
        return CheckResult(passed=False, detail=f"{len(stray)} line(s) are not bullets, e.g. {_short(stray[0])!r}")
    if not bullets:
        return CheckResult(passed=False, detail="no bullet points found")
    return CheckResult(passed=True, detail=f"all prose is in {bullets} bullet(s)")


def _count_check(what: str, count: int, n: int, example: str = "") -> CheckResult:
    if count > n:
        extra = f"; number {n + 1} starts {_short(example, 50)!r}" if example else ""
        return CheckResult(passed=False, detail=f"{count} {what}, limit is {n}{extra}")
    return CheckResult(passed=True, detail=f"{count} {what}, limit is {n}")


def _check_max_words(text: str, p: dict[str, Any]) -> CheckResult:
    return _count_check("words", len(words(strip_code(text))), p["n"])


def _check_max_sentences(text: str, p: dict[str, Any]) -> CheckResult:
    found = sentences(strip_code(text, "code"))
    return _count_check("sentences", len(found), p["n"], found[p["n"]] if len(found) > p["n"] else "")


def _check_max_bullets(text: str, p: dict[str, Any]) -> CheckResult:
    return _count_check("bullet points", bullet_lines(strip_code(text, "code"))[0], p["n"])


def _check_language(text: str, p: dict[str, Any]) -> CheckResult:
    want = p["code"]
    prose = re.sub(r"https?://\S+", " ", strip_code(text, " "))
    got = detect_language(prose)
    name = language_name(want)
    if got == want:
        return CheckResult(passed=True, detail=f"reply is in {name}")
    if got is not None and not (want in ("ar",) and got in ("fa", "ur")):
        return CheckResult(passed=False, detail=f"reply looks {language_name(got)} ({got}), expected {name} ({want})")
    script = dominant_script(prose)
    if script is not None and script != script_of_language(want) and len(words(prose)) >= 4:
        return CheckResult(passed=False, detail=f"reply is written in {script} script, expected {name} ({want})")
    return CheckResult(passed=True, detail=f"language undecidable, not flagged (expected {name})")


def _check_no_emoji(text: str, p: dict[str, Any]) -> CheckResult:
    found = find_emoji(text)
    if found:
        return CheckResult(passed=False, detail=f"found emoji: {_quote_list(found)}")
    return CheckResult(passed=True, detail="no emoji")


def _fold_quotes(s: str) -> str:
    return s.translate(str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"'}))


def _phrase_re(phrase: str, case_sensitive: bool) -> re.Pattern[str]:
    phrase = _fold_quotes(phrase)
    body = r"\s+".join(re.escape(part) for part in phrase.split())
    pre = r"(?<!\w)" if re.match(r"\w", phrase) else ""
    post = r"(?!\w)" if re.search(r"\w$", phrase) else ""
    return re.compile(pre + body + post, 0 if case_sensitive else re.IGNORECASE)


def _check_must_contain(text: str, p: dict[str, Any]) -> CheckResult:
    if _phrase_re(p["phrase"], p["case_sensitive"]).search(_fold_quotes(text)):
        return CheckResult(passed=True, detail=f"contains {p['phrase']!r}")
    return CheckResult(passed=False, detail=f"missing required phrase {p['phrase']!r}")


def _check_must_not_contain(text: str, p: dict[str, Any]) -> CheckResult:
    hits = _phrase_re(p["phrase"], p["case_sensitive"]).findall(_fold_quotes(text))
    if hits:
        return CheckResult(passed=False, detail=f"contains forbidden phrase {p['phrase']!r} ({len(hits)}x)")
    return CheckResult(passed=True, detail=f"does not contain {p['phrase']!r}")


def _check_json_only(text: str, p: dict[str, Any]) -> CheckResult:
    body = text.strip()
    fenced = re.fullmatch(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)\n?[ \t]*```", body, re.DOTALL)
    if fenced:
        body = fenced.group(1).strip()
    try:
        value = json.loads(body)
    except ValueError as exc:
        return CheckResult(passed=False, detail=f"not valid JSON: {exc}")
    if not isinstance(value, dict | list):
        return CheckResult(passed=False, detail=f"top-level JSON value is {_short(json.dumps(value), 40)}, "
                                                "expected an object or array")
    return CheckResult(passed=True, detail=f"valid JSON {'object' if isinstance(value, dict) else 'array'}")


_CHECKS = {
    "lowercase": _check_lowercase, "no_trailing_question": _check_no_trailing_question,
    "bullet_list": _check_bullet_list, "max_words": _check_max_words, "max_sentences": _check_max_sentences,
    "max_bullets": _check_max_bullets, "language": _check_language, "no_emoji": _check_no_emoji,
    "must_contain": _check_must_contain, "must_not_contain": _check_must_not_contain, "json_only": _check_json_only,
}


def check(checker: Checker, text: str) -> CheckResult:
    """Verifies one reply against one checker. ValueError for an unknown kind or bad params."""
    valid = validate_checker(checker.kind, checker.params)
    return _CHECKS[valid.kind](text, valid.params)


def format_rule_hint(checker: Checker) -> str:
    """A short imperative sentence a corrective retry can tell the model."""
    c = validate_checker(checker.kind, checker.params)
    p = c.params
    n = p.get("n", 0)
    hints = {
        "lowercase": "Use only lowercase letters, including the pronoun 'i'; no capital letters anywhere.",
        "no_trailing_question": "Do not end the reply with a question; finish with a statement.",
        "bullet_list": "Format the whole reply as a bulleted list, one '- ' bullet per line.",
        "max_words": f"Keep the reply to at most {n} words.",
        "max_sentences": f"Keep the reply to at most {n} sentence{'s' if n != 1 else ''}.",
        "max_bullets": f"Use at most {n} bullet point{'s' if n != 1 else ''}.",
        "language": f"Write the entire reply in {LANGUAGE_NAMES.get(p.get('code', ''), p.get('code'))}.",
        "no_emoji": "Do not use any emoji.",
        "must_contain": f"Include the exact phrase {p.get('phrase')!r} in the reply.",
        "must_not_contain": f"Do not use the phrase {p.get('phrase')!r} anywhere in the reply.",
        "json_only": "Reply with only valid JSON (an object or array) and no other text.",
    }
    return hints[c.kind]


# ---- recognition from wording ------------------------------------------------------------------------------
# Each rule is normalised (lowercase, straight quotes, quoted phrases masked as "qq0", "qq1", ...) and tried
# against the kinds in priority order. A match counts only when (a) its polarity fits: "no emoji" needs a
# negation right before it, "reply in German" needs none; (b) the words between the negation and the match
# are plain ("don't use any"), so "I don't care about capitals" is not a rule; (c) the rest of its clause is
# filler ("at all", "in your answers"), so "no emoji in code comments" or "under 50 words per bullet" are not
# mistaken for the broader rule. Conditional ("when", "unless", "except"), soft ("ideally", "try to") and
# partial ("fewer emojis", "too many caps") wordings are never recognised, nor are self-descriptions ("I use
# lowercase myself") and limits on a part of the reply ("each bullet under 20 words"). Numbers: "under/less than
# N" allows N-1, "at most/no more than/max N" allows N, and "in N sentences/bullets" is read as at most N
# (words need an explicit limit word). A rule naming two languages, or two quoted phrases, is not recognised.
_NUMS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
         "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
         "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
         "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "a hundred": 100,
         "one hundred": 100, "a single": 1, "single": 1, "a": 1}
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+|" + "|".join(sorted((k for k in _NUMS if k != "a"), key=len, reverse=True)) + r")"
_NUM_A = _NUM[:-1] + "|a)"
_OP = (r"(?P<op>at most|at the most|max(?:imum)?(?: of)?|a maximum of|no more than|not more than|not over|"
       r"no longer than|not longer than|up to|fewer than|less than|shorter than|under|below|within|"
       r"(?:keep|limit|cap|restrict)(?:\s+\w+){0,3}?\s+(?:to|at|under|below|within))")
_STRICT_OPS = ("fewer than", "less than", "shorter than", "under", "below")
_OR_FEWER = r"(?:\s+or\s+(?:fewer|less))?"
_SUFFIX_MAX = r"(?:max(?:imum)?|or (?:fewer|less|under)|at most|at the most|tops|limit|only)"
_BUL = r"(?:bullet(?:ed)?[\s-]?points?|bullets|(?:bullet[\s-]?)?list items)"
_BUL_ANY = (r"(?:bullet(?:ed)?[\s-]?points?|bullets|bullet(?:ed)?[\s-]?lists?|bullet[\s-]?(?:form|format|style)|"
            r"numbered[\s-]?lists?)")

_BOUNDARY = re.compile(r"[.;:!?,()\[\]\n]|\b(?:and|but|or|then|also|so|because|instead|while|though|although|"
                       r"yet|plus)\b")
_NEG = re.compile(r"\b(?:no|not|never|don't|do not|doesn't|does not|stop|avoid|avoiding|without|zero|ban|"
                  r"refrain from|quit|drop|skip|hate|dislike|can't stand|none of|no more)\b")
_NEG_EXCEPTIONS = re.compile(r"\b(?:don't|do not|never|not)\s+(?:mind|hesitate|forget|be afraid|worry|care)\b|"
                             r"\bno (?:problem|worries)\b|\bnot (?:afraid|a problem)\b")
_GAP_OK = frozenset(re.findall(r"\S+",
    "use using used write writing type typing put putting include including add adding any the a an in with me "
    "please ever you your to want like should must more send sending give giving show showing ask asking pose "
    "posing end ending finish finishing close closing conclude concluding on by answers answer replies reply "
    "responses response messages message every each do be at of my need really ever just want i i'd i'm "
    "saying say said mention mentioning"))
_CONDITIONAL = re.compile(r"\b(?:if|when|whenever|unless|except|excluding|otherwise|in case|as long as|"
                          r"depending)\b")
_SOFT = re.compile(
    r"\b(?:prefer(?:ably|ence|s|red)?|ideally|usually|generally|mostly|mainly|typically|normally|often|sometimes|"
    r"occasionally|tend to|try to|try and|where possible|if possible|if you can|as much as possible|feel free|"
    r"(?:ok|okay|fine|alright) to|allowed to|you can|you may|can use|may use|no need|(?:don't|do not|doesn't|"
    r"does not) (?:need|have) to|needn't|not necessary|optional(?:ly)?|maybe|perhaps|rarely|sparingly|"
    r"more or less|roughly|about|around|approximately|or so|ish)\b")
_PARTIAL = re.compile(r"\b(?:too many|too much|fewer|less|so many|overuse|over-use|excessive(?:ly)?|more than|a lot|"
                      r"lots|many|as few|minimal|minimi[sz]e|limit|reduce|tone down|cut down|at most|max|only one|"
                      r"single|unnecessary|random|every word|first|each word|title|sentence case|all caps|"
                      r"all-caps|shout|shouting|emphasis|emphasi[sz]e)\b")
_REPLY = r"(?:answers?|replies|reply|responses?|messages?)"
_FILLER = re.compile("".join((
    r"(?:\s*(?:at all|ever|whatsoever|anywhere|please|pls|bitte|por favor|per favore|s'il (?:te|vous) pla[iî]t|",
    r"thanks|thank you|from now on|going forward|anymore|any more|always|again|period|either|too|as well|only|",
    r"of any kind|(?:to|with) me|language|long|in length|total|in total|by default|like qq\d+|such as qq\d+|",
    r"e\.g\. qq\d+|letters|anything|any words|in anything|",
    r"(?:at|in) the (?:very )?(?:end|start|beginning|top|bottom)",
    rf"(?: of (?:your |the |each |every |any |my )?{_REPLY})?|",
    r"(?:in|for|of|per|with) (?:any |all |every |each |your |my |the |our |this )?",
    rf"(?:{_REPLY}|outputs?|texts?|writing|chats?|conversations?|everything|anything)|{_REPLY}|",
    r"with no (?:other |extra |additional )?(?:text|prose|explanations?|commentary|markdown)|",
    r"without (?:any )?(?:other |extra )?(?:text|prose|explanations?|commentary|markdown)|nothing else)\b)*[\s.!]*$",
)))
_INSTRUCT = re.compile(r"\b(?:reply|replies|respond|responses?|answers?|write|writing|talk|speak|communicate|"
                       r"chat|text|converse|output|messages?|everything|always|only|use|using|switch|stick|"
                       r"format|formatted|give|keep|please|antworte\w*|schreib\w*|sprich|r[ée]ponds|r[ée]pondez|"
                       r"[ée]cris|responde\w*|escribe|rispondi|scrivi|antwoord|immer|toujours|siempre|sempre)\b")


def _clause_prefix(t: str, start: int) -> str:
    cuts = [m.end() for m in _BOUNDARY.finditer(t, 0, start) if m.end() <= start]
    return t[cuts[-1] if cuts else 0:start]


def _clause_tail(t: str, end: int) -> str:
    m = _BOUNDARY.search(t, end)
    return t[end:m.start() if m else len(t)]


def _negation(prefix: str) -> re.Match[str] | None:
    matches = list(_NEG.finditer(_NEG_EXCEPTIONS.sub(" ", prefix)))
    return matches[-1] if matches else None


def _plainly_negated(prefix: str) -> bool:
    neg = _negation(prefix)
    if neg is None or len(_NEG.findall(_NEG_EXCEPTIONS.sub(" ", prefix))) > 1:  # "don't stop using" is no ban
        return False
    gap = _NEG_EXCEPTIONS.sub(" ", prefix)[neg.end():].split()
    return all(w in _GAP_OK for w in gap)


_POST_NEG = re.compile(r"^\s*(?:are|is)\s+(?:not allowed|banned|forbidden|prohibited|not welcome|off limits|"
                       r"a no-go|annoying|unnecessary|not okay|not ok)\b")


# A clause about part of a reply ("each bullet under 20 words", "headlines in English") or describing the user
# ("I use lowercase myself") is not a rule about the whole reply.
_SCOPE = re.compile(r"\b(?:bullets?|bullet points?|paragraphs?|headlines?|headings?|headers?|titles?|summar(?:y|ies)|"
                    r"sections?|lines?|items?|list|lists|captions?|comments?|tweets?|posts?|e-?mails?|subject|"
                    r"intros?|introductions?|conclusions?|steps?|examples?|code|variables?|files?|names?|tables?|"
                    r"slides?|links?|quotes?|citations?|footnotes?|translations?|words?|terms?)\b")
_SELF = re.compile(r"^\s*i\s+(?!(?:want|need|'d|would|expect|require|insist|ask|hate|dislike|can't|cannot|really|"
                   r"(?:don't|do not|never) (?:want|like|need))\b)")


def _matches(t: str, pattern: str, polarity: str) -> list[re.Match[str]]:
    """Matches of ``pattern`` whose polarity ('neg', 'pos' or 'any') and clause tail fit (see above)."""
    found = []
    for m in re.finditer(pattern, t):
        prefix, tail = _clause_prefix(t, m.start()), _clause_tail(t, m.end())
        if _SCOPE.search(prefix + " " + (m.groupdict().get("op") or "")) or _SELF.match(prefix):
            continue
        negated = _plainly_negated(prefix)
        post = _POST_NEG.match(tail)
        if post:
            if polarity != "neg" or prefix.strip():
                continue
            negated, tail = True, tail[post.end():]
        if polarity == "neg" and (not negated or _PARTIAL.search(prefix + m.group() + tail)):
            continue
        if polarity != "neg" and _negation(prefix):
            continue
        if _FILLER.fullmatch(tail):
            found.append(m)
    return found


def _n(m: re.Match[str], group: str = "n") -> int:
    raw = m.group(group).replace(",", "")
    n = int(raw) if raw.isdigit() else _NUMS[raw]
    op = m.groupdict().get("op") or ""
    return n - 1 if op.endswith(_STRICT_OPS) else n


def _limit(t: str, kind: str, noun: str, *, exact: bool, with_a: bool = False) -> Checker | None:
    pats = [rf"\b{_OP}\s+(?P<n>{_NUM})\s+{noun}\b{_OR_FEWER}",
            rf"\b(?P<n>{_NUM})[\s-]{noun}\s+{_SUFFIX_MAX}\b",
            rf"\b{noun}\s+(?:limit|count|cap|maximum)\s*[:=]?\s*(?:of\s+|is\s+|under\s+|below\s+|at most\s+|<=?\s*)?"
            rf"(?P<n>{_NUM})\b",
            rf"\b{noun}(?:\s*[,:]\s*|\s+)(?:max(?:imum)?|at most|no more than|up to)\s+(?P<n>{_NUM})\b",
            rf"\b(?P<n>{_NUM})[\s-]{noun}\s+(?:limit|max(?:imum)?|cap|answers?|replies|responses?)\b"]
    if exact:
        pats.append(rf"\b(?:in|with|using|to|as)\s+(?:just\s+|only\s+|exactly\s+)?(?P<n>{_NUM_A if with_a else _NUM})"
                    rf"(?:\s*(?:or|to|-)\s*(?P<m>{_NUM}))?\s+(?:short\s+)?{noun}\b{_OR_FEWER}")
    for pat in pats:
        for m in _matches(t, pat, "any"):
            n = max(_n(m), _n(m, "m") if m.groupdict().get("m") else 0)
            if n >= 1:
                return validate_checker(kind, {"n": n})
    pat = (rf"\b(?:exceed|go over|go beyond|(?:write|use|give|be longer than|include|more than)(?:\s+\w+){{0,2}}?"
           rf"\s+more than)\s+(?P<n>{_NUM})\s+{noun}\b|\bmore than\s+(?P<n2>{_NUM})\s+{noun}\b")
    for m in re.finditer(pat, t):
        if _plainly_negated(_clause_prefix(t, m.start())) and _FILLER.fullmatch(_clause_tail(t, m.end())):
            return validate_checker(kind, {"n": _n(m, "n" if m.group("n") else "n2")})
    return None


def _phrase_rule(t: str, phrases: list[str]) -> Checker | None:
    verbs = (r"(?:(?:include|mention|add|append|use|say|write|put)\w*|(?:end|finish|close|conclude|start|begin|open|"
             r"sign off|wrap up)\w*(?:\s+\w+){0,3}?\s+(?:with|by saying)|call me|address me as|refer to me as)")
    tokens = sorted(set(re.findall(r"qq\d+", t)))
    if len(tokens) != 1 or len({phrases[int(tok[2:])].lower() for tok in tokens}) != 1:
        return None
    phrase = phrases[int(tokens[0][2:])]
    m = re.search(rf"(?:\b{verbs}\s+|\b(?:avoid|ban|no|never)\s+)(?:(?:the|a|an)\s+)?(?:(?:word|phrase|term|"
                  rf"line|expression|sign-off|sentence)s?\s+)?{tokens[0]}\b", t)
    if not m or not _FILLER.fullmatch(_clause_tail(t, m.end())):
        return None
    prefix = _clause_prefix(t, m.start())
    if _plainly_negated(prefix) or re.match(r"\b(?:avoid|ban|no|never)\b", m.group()):
        if re.match(r"(?:end|finish|close|conclude|start|begin|open|sign off|wrap up)", m.group()):
            return None  # "don't start with X" is narrower than "never contain X"
        return validate_checker("must_not_contain", {"phrase": phrase})
    if _negation(prefix):
        return None
    return validate_checker("must_contain", {"phrase": phrase})


def _language_rule(t: str, raw: str) -> Checker | None:
    native = re.search(r"(?<![不别])(?:用|以|使用)(中文|汉语|普通话|英文|英语)|(日本語)で|(한국어)로|"
                       r"(по-русски|на русском)|(українською)", raw)
    if native:
        name = next(g for g in native.groups() if g)
        return validate_checker("language", {"code": {"英文": "en", "英语": "en", "по-русски": "ru",
                                                      "на русском": "ru"}.get(name, name)})
    adj = (r"(?:(?:plain|simple|proper|formal|informal|casual|standard|fluent|good|native|brazilian|european|"
           r"british|american|modern|everyday|basic|only|the)\s+)?")
    codes: set[str] = set()
    pat = rf"\b(?:in|auf|en|em|na|into|to|in het|use|using|speak|only)\s+{adj}(?P<name>{LANGUAGE_NAME_PATTERN})\b"
    for m in _matches(t, pat, "pos"):
        prefix = _clause_prefix(t, m.start())
        lead = prefix + " " + m.group().split()[0]
        if (_INSTRUCT.search(lead) or not prefix.replace("please", "").strip()):
            codes.add(language_code(m.group("name")) or "")
    for clause in re.split(_BOUNDARY, t):
        bare = re.fullmatch(rf"\s*(?:please\s+)?(?:only\s+|always\s+)?(?P<name>{LANGUAGE_NAME_PATTERN})"
                            r"(?:\s+(?:only|please|language|always))*\s*", clause or "")
        if bare:
            codes.add(language_code(bare.group("name")) or "")
    codes.discard("")
    return validate_checker("language", {"code": codes.pop()}) if len(codes) == 1 else None


def _normalize(rule_text: str) -> tuple[str, list[str]]:
    phrases: list[str] = []

    def mask(m: re.Match[str]) -> str:
        phrases.append(next(g for g in m.groups() if g is not None).strip())
        return f" qq{len(phrases) - 1} "

    text = _fold_quotes(rule_text)
    text = re.sub(r"\b(?:tl;? ?dr)\b", " 'TL;DR' ", text, flags=re.IGNORECASE)
    text = re.sub(r"(?<!\w)'(.+?)'(?!\w)|\"(.+?)\"|«(.+?)»|`(.+?)`", mask, text)
    t = " ".join(text.lower().split())
    t = re.sub(r"\b(dont|doesnt|cant|wont|isnt|arent)\b", lambda m: m.group()[:-1] + "'t", t)
    t = re.sub(r"\bdo n't\b|\bdon’t\b", "don't", t)
    t = re.sub(r"\beven (?:if|when|though|for|in|with|the|at|a)\b[^.;]*", " ", t)
    t = re.sub(r"\bthe (word|term) (?!qq\d)([a-z][\w'-]*)", lambda m: f"the {m.group(1)} qq{_add(phrases, m)}", t)
    return t, phrases


def _add(phrases: list[str], m: re.Match[str]) -> int:
    phrases.append(m.group(2))
    return len(phrases) - 1


def recognize(rule_text: str) -> Checker | None:
    """The checker a rule's wording implies, or None when it is not (reliably) checkable. See the notes above."""
    if not isinstance(rule_text, str) or not rule_text.strip() or len(rule_text) > 500:
        return None
    t, phrases = _normalize(rule_text)
    if _CONDITIONAL.search(t) or _SOFT.search(t):
        return None
    json_pat = (r"\b(?:(?:respond|reply|answer|output|return|write|format|send|give me)(?:s|ing)?\s+(?:me\s+|back\s+|"
                r"everything\s+|always\s+|your\s+(?:answers?|replies|responses?)\s+)?(?:only\s+|just\s+|always\s+|"
                r"strictly\s+|exclusively\s+|purely\s+)?(?:(?:in|as|with|using)\s+)?(?:only\s+|a\s+|an\s+|pure\s+|"
                r"raw\s+|valid\s+|strict\s+|plain\s+)*json(?:\s+(?:format|objects?|arrays?))?|(?:only|just|pure|"
                r"raw|nothing but)\s+(?:valid\s+)?json|json[\s-]only)\b")
    if _matches(t, json_pat, "pos"):
        return validate_checker("json_only", {})
    found = _phrase_rule(t, phrases) or _language_rule(t, rule_text)
    if found:
        return found
    if (_matches(t, r"\bemoj(?:i|is|ies)[\s-]free\b", "pos")
            or _matches(t, r"\b(?:emoj(?:i|is|ies)|emoticons?|smileys?|smiley faces?)\b", "neg")):
        return validate_checker("no_emoji", {})
    question_pats = (
        r"\bfollow[\s-]?up questions?\b",
        r"\b(?:end|finish|close|conclude|wrap up|sign off)\w*(?:\s+\w+){0,4}?\s+(?:with|on|by asking|in)\s+(?:a\s+|"
        r"any\s+)?(?:follow[\s-]?up\s+|closing\s+|final\s+)?questions?\b",
        r"\b(?:trailing|closing|final|ending|concluding)\s+questions?\b",
        r"\b(?:ask(?:ing)?|pose|posing)\s+(?:me\s+)?(?:any\s+|more\s+|further\s+|additional\s+|extra\s+)*questions?\b",
        r"\bquestions?\s+at the (?:very )?end\b")
    if any(_matches(t, pat, "neg") for pat in question_pats):
        return validate_checker("no_trailing_question", {})
    found = _limit(t, "max_bullets", _BUL, exact=True)
    if found:
        return found
    for m in _matches(t, rf"\b{_BUL_ANY}\b", "pos"):
        prefix = _clause_prefix(t, m.start())
        if not prefix.strip() or _INSTRUCT.search(prefix) or re.search(r"\b(?:in|as|into)\s+$", prefix):
            return validate_checker("bullet_list", {})
    found = (_limit(t, "max_sentences", r"(?:full\s+|complete\s+)?sentences?", exact=True, with_a=True)
             or _limit(t, "max_words", r"words?", exact=False))
    if found:
        return found
    if (_matches(t, r"\blower[\s-]?case\b(?:\s+letters?)?", "pos")
            or _matches(t, r"(?<!all )(?<!all-)\b(?:caps(?!\s+lock)|capitals|capital letters?|capitali[sz]ation|"
                           r"upper[\s-]?case(?:\s+letters?)?)\b", "neg")
            or _matches(t, r"\bcapitali[sz](?:e|ing)\b(?:\s+(?:anything|any words|words|letters))?", "neg")):
        return validate_checker("lowercase", {})
    return None
