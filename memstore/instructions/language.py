"""Text analysis for the style-rule checkers (memstore.instructions.checkers): language identification, language
names, and the prose helpers the checks share (code stripping, bullets, sentences, words, emoji).

Pure Python, no models, no I/O. Language identification has two stages:

1. Script: letters are counted per writing system. Cyrillic (ru/uk, told apart by letters only one of them
   uses and by function words), Greek, Hebrew, Arabic (fa/ur when their own letters appear), Devanagari
   (hi), Thai, Hangul (ko), kana (ja, also when mixed with kanji) and Han without kana (zh) decide directly.
2. Latin script: function-word (stopword) frequency for en, de, fr, es, it, pt, nl. A word shared by several
   languages counts 1/k for each of them, so only distinctive words separate close languages (es/pt, de/nl).
   The best language must score at least 2, cover 10% of the words and beat the runner-up by 1.5x;
   otherwise the answer is None ("undecidable"), never a guess.
"""

from __future__ import annotations

import re
from collections import Counter

LANGUAGE_NAMES: dict[str, str] = {
    "en": "English", "de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
    "nl": "Dutch", "ru": "Russian", "uk": "Ukrainian", "zh": "Chinese", "ja": "Japanese", "ko": "Korean",
    "ar": "Arabic", "el": "Greek", "he": "Hebrew", "hi": "Hindi", "th": "Thai",
}
SUPPORTED_LANGUAGES: tuple[str, ...] = tuple(LANGUAGE_NAMES)

# Names people use in rules ("reply in German", "auf Deutsch", "en español"), lowercase; accents optional.
_ALIASES: dict[str, tuple[str, ...]] = {
    "en": ("english", "englisch", "anglais", "inglés", "ingles", "inglese", "inglês", "engels"),
    "de": ("german", "deutsch", "allemand", "alemán", "aleman", "tedesco", "alemão", "alemao", "duits"),
    "fr": ("french", "französisch", "franzosisch", "français", "francais", "francés", "frances", "francese",
           "francês", "frans"),
    "es": ("spanish", "spanisch", "espagnol", "español", "espanol", "spagnolo", "espanhol", "castellano",
           "castilian", "spaans"),
    "it": ("italian", "italienisch", "italien", "italiano", "italiaans"),
    "pt": ("portuguese", "portugiesisch", "portugais", "portugués", "portugues", "portoghese", "português",
           "portugees"),
    "nl": ("dutch", "flemish", "niederländisch", "niederlandisch", "néerlandais", "neerlandais", "neerlandés",
           "olandese", "holandês", "nederlands"),
    "ru": ("russian", "russisch", "russe", "ruso", "russo", "русский", "русском"),
    "uk": ("ukrainian", "ukrainisch", "ukrainien", "ucraniano", "ucraino", "українська", "українською"),
    "zh": ("chinese", "mandarin", "simplified chinese", "traditional chinese", "chinesisch", "chinois", "chino",
           "cinese", "chinês", "中文", "汉语", "普通话"),
    "ja": ("japanese", "japanisch", "japonais", "japonés", "japones", "giapponese", "japonês", "日本語"),
    "ko": ("korean", "koreanisch", "coréen", "coreen", "coreano", "한국어"),
    "ar": ("arabic", "arabisch", "arabe", "árabe", "arabo", "العربية"),
    "el": ("greek", "griechisch", "grec", "griego", "greco", "grego", "ελληνικά"),
    "he": ("hebrew", "hebräisch", "hebraisch", "hébreu", "hebreu", "hebreo", "ebraico", "עברית"),
    "hi": ("hindi", "हिंदी", "हिन्दी"),
    "th": ("thai", "thailändisch", "thaï", "tailandés", "ไทย"),
}
_NAME_TO_CODE: dict[str, str] = {name: code for code, names in _ALIASES.items() for name in names}
# Regex alternation of all names, longest first, for the rule recogniser.
LANGUAGE_NAME_PATTERN: str = "|".join(
    re.escape(n) for n in sorted(_NAME_TO_CODE, key=len, reverse=True)
)


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


def language_code(name: str) -> str | None:
    """'German', 'deutsch', 'DE', 'pt-BR' -> ISO 639-1 code of a supported language; None otherwise."""
    key = " ".join(name.strip().lower().split())
    if key in LANGUAGE_NAMES:
        return key
    if key in _NAME_TO_CODE:
        return _NAME_TO_CODE[key]
    base = re.split(r"[-_]", key, maxsplit=1)[0]
    if base != key and base in LANGUAGE_NAMES:
        return base
    return None


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


# ---- stage 1: scripts ----------------------------------------------------------------------------------
_SCRIPT_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0370, 0x03FF, "greek"), (0x1F00, 0x1FFF, "greek"), (0x0400, 0x052F, "cyrillic"),
    (0x0590, 0x05FF, "hebrew"), (0x0600, 0x06FF, "arabic"), (0x0750, 0x077F, "arabic"),
    (0xFB50, 0xFDFF, "arabic"), (0xFE70, 0xFEFF, "arabic"), (0x0900, 0x097F, "devanagari"),
    (0x0E00, 0x0E7F, "thai"), (0x1100, 0x11FF, "hangul"), (0x3130, 0x318F, "hangul"), (0xAC00, 0xD7AF, "hangul"),
    (0x3040, 0x309F, "kana"), (0x30A0, 0x30FF, "kana"), (0x31F0, 0x31FF, "kana"), (0x3400, 0x4DBF, "han"),
    (0x4E00, 0x9FFF, "han"), (0xF900, 0xFAFF, "han"),
)
_SCRIPT_OF_CODE: dict[str, str] = {
    "ru": "cyrillic", "uk": "cyrillic", "el": "greek", "he": "hebrew", "ar": "arabic", "hi": "devanagari",
    "th": "thai", "ko": "hangul", "ja": "cjk", "zh": "cjk",
}


def _script(ch: str) -> str | None:
    cp = ord(ch)
    if cp < 0x0250 or 0x1E00 <= cp <= 0x1EFF:
        return "latin" if ch.isalpha() else None
    for lo, hi, name in _SCRIPT_RANGES:
        if lo <= cp <= hi:
            return name if ch.isalpha() or name in ("devanagari", "thai") else None
    return None


def script_counts(text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for ch in text:
        s = _script(ch)
        if s:
            counts[s] += 1
    return counts


def dominant_script(text: str) -> str | None:
    """'latin', 'cyrillic', 'cjk' (han or kana), 'hangul', ... when one script has most letters, else None."""
    counts = script_counts(text)
    counts["cjk"] = counts.pop("han", 0) + counts.pop("kana", 0)
    total = sum(counts.values())
    if total < 2:
        return None
    script, n = counts.most_common(1)[0]
    return script if n / total > 0.5 else None


def script_of_language(code: str) -> str:
    return _SCRIPT_OF_CODE.get(code, "latin")


# ---- stage 2: function words ---------------------------------------------------------------------------
_STOPWORDS: dict[str, frozenset[str]] = {code: _wordset(words) for code, words in {
    "en": "the and of to is are was were that this it for with you your be have has not but or on as at by "
          "from they we can will would there their which what if so do does an a in i my me he she his her "
          "been more all about also just than then these those how when who into only very should could "
          "because some any each other its our here them him us let get make like yes no",
    "de": "der die das und ist nicht ein eine einen einem einer zu den dem des mit sich auf für von im ich du "
          "sie es wir ihr auch wie wenn aber oder noch nur bei nach aus so wird werden sind war hat haben kann "
          "können dass man was wo hier schon sehr mehr diese dieser diesem bitte ja nein um über zum zur doch "
          "mal durch gibt sein kein keine vom uns euch ihnen mir dir mich dich ob weil",
    "fr": "le la les de des du un une et est que qui pas ne en dans pour sur avec ce cette ces il elle ils "
          "elles nous vous je tu on au aux son sa ses leur mais ou où plus par se sont été être avoir fait "
          "comme tout tous très bien aussi y qu c j l d mon ma mes ton ta votre vos notre nos cela ça peut ai "
          "avez sommes êtes voici oui non",
    "es": "el la los las de del y que en un una unos es son no por para con se su sus lo al como más pero muy "
          "ya también este esta estos esto ese eso hay está están ser fue hace puede cuando donde porque yo "
          "tú usted ellos ella le les me te mi tu sí sin sobre entre hasta desde todo todos qué cómo si o ni "
          "cada hola gracias",
    "it": "il lo la i gli le di del della dei degli delle e è che in un una uno per con non si da dal dalla al "
          "alla ai sono come più ma anche molto questo questa questi quello quella ci ne mi ti vi io tu lui "
          "lei noi voi loro suo sua mio mia se o ha hanno ho essere stato può quando dove perché tutto tutti "
          "cosa già sempre nel nella sul sulla l d dell nell ciao grazie",
    "pt": "o os a as de do da dos das e é que em no na nos nas um uma uns umas para por com não se seu sua "
          "seus suas mais mas como muito já também este esta isso isto esse essa há está estão ser foi são "
          "pode quando onde porque eu você vocês ele ela eles elas nós me te lhe meu minha ao aos pelo pela "
          "sem sobre entre até tudo todos ou cada então olá obrigado",
    "nl": "de het een en van in is dat die niet te op voor met zijn er aan ook als maar om bij dan nog wat "
          "door naar of hij zij ze wij we je jij u ik mijn haar hun ons deze dit kan kunnen wordt worden was "
          "werd heeft hebben geen meer wel zo uit tot over al moet zou omdat waar hoe wie veel alleen nu hier "
          "daar hallo bedankt",
}.items()}
_WEIGHT: dict[str, float] = {}
for _words in _STOPWORDS.values():
    for _w in _words:
        _WEIGHT[_w] = _WEIGHT.get(_w, 0.0) + 1.0
_WEIGHT = {w: 1.0 / k for w, k in _WEIGHT.items()}
# Letters that only one candidate uses: a small boost per occurrence (capped), for short es/pt/de texts.
_MARK_LETTERS: dict[str, str] = {"ß": "de", "ñ": "es", "¿": "es", "¡": "es", "ã": "pt", "õ": "pt"}

_CYRILLIC_ONLY = {"uk": set("іїєґ"), "ru": set("ыэъё")}
_CYRILLIC_WORDS = {
    "ru": _wordset("и что это как он она они мы вы не на с по но его к же за бы так от для из только"),
    "uk": _wordset("і що це як він вона вони ми ви не на з по але його до та за б так від для із лише"),
}
_WORD_RE = re.compile(r"[^\W\d_]+")


def _detect_cyrillic(text: str) -> str | None:
    low = text.lower()
    words = _WORD_RE.findall(low)
    score = {code: 2 * sum(ch in letters for ch in low) + sum(w in _CYRILLIC_WORDS[code] for w in words)
             for code, letters in _CYRILLIC_ONLY.items()}
    if score["uk"] > score["ru"]:
        return "uk"
    if score["ru"] > score["uk"]:
        return "ru"
    return None


def _detect_latin(text: str) -> str | None:
    words = _WORD_RE.findall(text.lower())
    if not words:
        return None
    scores: dict[str, float] = dict.fromkeys(_STOPWORDS, 0.0)
    for w in words:
        if w in _WEIGHT:
            for code, stop in _STOPWORDS.items():
                if w in stop:
                    scores[code] += _WEIGHT[w]
    for ch, code in _MARK_LETTERS.items():
        scores[code] += min(3, text.count(ch)) * 0.75
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    (best, top), (_, second) = ranked[0], ranked[1]
    if top < 2.0 or top < 0.1 * len(words) or top < 1.5 * second:
        return None
    return best


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text's language, or None when undecidable (too short, mixed, unsupported)."""
    counts = script_counts(text)
    total = sum(counts.values())
    if total < 2:
        return None
    cjk = counts["han"] + counts["kana"]
    if counts["kana"] and cjk / total > 0.5 and counts["kana"] >= 0.05 * cjk:
        return "ja"
    if cjk / total > 0.5:
        return "zh"
    script, n = counts.most_common(1)[0]
    if n / total <= 0.5:
        return None
    if script == "latin":
        return _detect_latin(text)
    if script == "cyrillic":
        return _detect_cyrillic(text)
    if script == "arabic":
        if any(ch in "ٹڈڑںے" for ch in text):
            return "ur"
        return "fa" if any(ch in "پچژگکی" for ch in text) else "ar"
    return {"greek": "el", "hebrew": "he", "devanagari": "hi", "thai": "th", "hangul": "ko"}.get(script)


# ---- prose: code, lines, sentences, words, emoji -----------------------------------------------------------
_FENCE_RE = re.compile(r"^[ \t]*(`{3,}|~{3,})")
INLINE_CODE_RE = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)")


def split_fences(text: str) -> tuple[str, bool]:
    """(text with fenced blocks replaced by blank lines, whether the reply ends inside/with a code block)."""
    out: list[str] = []
    fence: str | None = None
    ends_with_code = False
    for line in text.split("\n"):
        m = _FENCE_RE.match(line)
        if fence is None:
            if m:
                fence, ends_with_code = m.group(1), True
                out.append("")
            else:
                out.append(line)
                if line.strip():
                    ends_with_code = False
        else:
            out.append("")
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(
                    m.group(1)):].strip():
                fence = None
    return "\n".join(out), ends_with_code


def strip_code(text: str, inline: str = "") -> str:
    """The prose of a reply: fenced code blocks become blank lines, inline code becomes ``inline``."""
    prose, _ = split_fences(text)
    return INLINE_CODE_RE.sub(inline, prose)


_BULLET_RE = re.compile(r"^\s*(?:[-*+•‣◦–]|\d{1,3}[.)])\s+\S")
_HEADING_RE = re.compile(r"^\s{0,3}#{1,6}\s")
_RULE_LINE_RE = re.compile(r"^\s*(?:[-*_]\s*){3,}$")


def _is_label(line: str) -> bool:
    core = line.strip().strip("*_").rstrip().rstrip("*_")
    return core.endswith(":") and len(core.split()) <= 15


def bullet_lines(prose: str) -> tuple[int, list[str]]:
    """(number of bullet lines, prose lines that are neither bullets nor allowed structure)."""
    bullets, stray = 0, []
    in_item = False
    for line in prose.split("\n"):
        if not line.strip():
            in_item = False
            continue
        if _BULLET_RE.match(line):
            bullets, in_item = bullets + 1, True
        elif _HEADING_RE.match(line) or _RULE_LINE_RE.match(line) or _is_label(line):
            in_item = False
        elif not in_item:
            stray.append(line.strip())
    return bullets, stray


_ABBREVIATIONS = _wordset(
    "mr mrs ms dr prof sr jr st vs e.g i.e eg ie cf approx fig figs vol inc ltd corp dept misc incl resp a.m p.m "
    "ca no nos p pp op al")
_SENT_END_RE = re.compile(r"(?:[.!?…]+['\"”’)\]]*)(?=\s)|[。！？]+")


def _segments(prose: str) -> list[str]:
    """Blocks separated by blank lines, with bullets and headings on their own; markers and headings dropped."""
    segs: list[str] = []
    current: list[str] = []
    for line in [*prose.split("\n"), ""]:
        if not line.strip() or _BULLET_RE.match(line) or _HEADING_RE.match(line) or _RULE_LINE_RE.match(line):
            if current:
                segs.append(" ".join(current))
            current = []
            if _BULLET_RE.match(line):
                current = [re.sub(r"^\s*(?:[-*+•‣◦–]|\d{1,3}[.)])\s+", "", line)]
            continue
        current.append(line.strip())
    return segs


def sentences(prose: str) -> list[str]:
    """Sentences of (code-free) prose, per the rules in the module docstring."""
    out: list[str] = []
    for seg in _segments(prose):
        start = 0
        for m in _SENT_END_RE.finditer(seg):
            before = seg[start:m.start()].split()
            last = before[-1].lower() if before else ""
            after = seg[m.end():].lstrip()
            if m.group().startswith("."):
                token = last.strip("(\"'“‘")
                if m.group().startswith("..") and not after[:1].isupper():
                    continue
                if token == "etc" and not after[:1].isupper():
                    continue
                if (token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha())
                        or re.fullmatch(r"(?:[a-z]{1,2}\.)+[a-z]{1,2}", token)):
                    continue
            piece = seg[start:m.end()].strip()
            if any(ch.isalnum() for ch in piece):
                out.append(piece)
            start = m.end()
        rest = seg[start:].strip()
        if any(ch.isalnum() for ch in rest):
            out.append(rest)
    return out


def words(prose: str) -> list[str]:
    return [w for w in prose.split() if any(ch.isalnum() for ch in w)]


# Emoji: supplementary-plane pictographs, plus BMP code points with default emoji presentation.
_EMOJI_RANGES = ((0x1F004, 0x1F004), (0x1F0CF, 0x1F0CF), (0x1F170, 0x1F2FF), (0x1F300, 0x1F64F),
                 (0x1F680, 0x1F6FF), (0x1F7E0, 0x1F7FF), (0x1F90C, 0x1F9FF), (0x1FA70, 0x1FAFF))
_BMP_EMOJI = frozenset(
    "⌚⌛⏩⏪⏫⏬⏰⏳◽◾☔☕♈♉♊♋♌♍♎♏♐♑♒♓♿⚓⚡⚪⚫⚽⚾⛄⛅⛎⛔⛪⛲⛳⛵⛺⛽✅✊✋✨❌❎❓❔❕❗➕➖➗➰➿⬛⬜⭐⭕")
VS16, ZWJ, KEYCAP = "\ufe0f", "\u200d", "\u20e3"


def is_pictograph(ch: str) -> bool:
    cp = ord(ch)
    return ch in _BMP_EMOJI or any(lo <= cp <= hi for lo, hi in _EMOJI_RANGES)


def is_emoji_modifier(ch: str) -> bool:
    cp = ord(ch)
    return ch in (VS16, KEYCAP) or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F


def find_emoji(text: str) -> list[str]:
    """Every emoji (as a full sequence: ZWJ families, flags, keycaps, skin tones) in order of appearance."""
    found: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if not (is_pictograph(ch) or nxt in (VS16, KEYCAP)):
            i += 1
            continue
        j = i + 1
        if 0x1F1E6 <= ord(ch) <= 0x1F1FF and nxt and 0x1F1E6 <= ord(nxt) <= 0x1F1FF:
            j += 1  # a flag: two regional indicators
        while j < n:
            if is_emoji_modifier(text[j]):
                j += 1
            elif text[j] == ZWJ and j + 1 < n and is_pictograph(text[j + 1]):
                j += 2
            else:
                break
        found.append(text[i:j])
        i = j
    return found
