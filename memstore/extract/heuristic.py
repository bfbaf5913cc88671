"""The offline extractor: durable facts, preferences, events and instructions without any LLM.

It reads only the *user* messages of a turn, in the user's own words (code, stack traces, pasted documents
and quoted material are set aside by :func:`memstore.extract.gate.clean_user_text`), splits them into
sentences and clauses, and keeps first-person statements::

    "I'm vegetarian"                          -> fact        "Is vegetarian"
    "My daughter Emma was born in 2021"       -> event       "Daughter Emma was born in 2021" (valid_from 2021)
    "I love hiking"                           -> preference  "Loves hiking"
    "Please never use capital letters"        -> instruction "Never use capital letters"
    "I don't live in Berlin anymore"          -> invalidate  "Lives in Berlin"
    "Forget that I like sushi"                -> invalidate  "Likes sushi"
    "Remember that I'm allergic to nuts"      -> explicit    "Is allergic to nuts" (confidence 0.95)

Questions, greetings, pleasantries ("I'm so happy for you!"), hypotheticals ("if I were rich ..."),
requests to the assistant ("I want you to write ...") and statements about other people are skipped.
Relative dates of events ("yesterday", "last week", "two years ago", "in May") are resolved against
``now`` into ``valid_from``.

The output is a list of :class:`~memstore.extract.models.Candidate` proposals; reconciliation against
stored memories happens elsewhere.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from memstore.extract.gate import (
    EMOTION_STATE,
    EPHEMERAL,
    FORGET,
    GREETING,
    HYPOTHETICAL,
    LEAD_FILLER,
    MENTION,
    PEP_TALK,
    PHATIC,
    PREFERENCE,
    RETRACT_RULE,
    TASK_FRAME,
    TASK_START,
    WE_PLATITUDE,
    YOU_DIRECTED,
    clean_user_text,
    is_instruction,
    is_technical,
    question_free,
    split_sentences,
    user_messages,
)
from memstore.extract.models import Candidate, Kind

__all__ = ["extract", "resolve_date", "third_person"]

_MAX_PER_MESSAGE = 24
_MAX_TEXT = 300


_IRREGULAR_PAST = frozenset(str.split(
    "went got had made took saw felt found bought lost began ran won met left came gave told thought knew grew wrote "
    "sold spent brought taught heard kept held built drove flew ate drank swam sang fell broke chose wore forgot paid "
    "said sent sat slept stood understood became did was were rode caught fought hung led lit meant overcame shook "
    "shot sought stole struck swore threw woke withdrew undertook upheld begun gone seen done been taken given known "
    "grown written eaten broken chosen driven flown ridden spoken stolen sung swum thrown worn quit put set cut hit "
    "shut hurt spread"
))
_MODALS = frozenset(str.split("can cannot could will would shall should may might must ought used"))
_THIRD_SINGULAR_IRREGULAR = {"am": "is", "are": "is", "be": "is", "have": "has", "do": "does", "go": "goes"}
_ADVERB_WORDS = frozenset(str.split(
    "really also just still always never usually often sometimes recently finally actually totally definitely "
    "absolutely mostly kinda sorta generally truly even only already currently now personally honestly seriously "
    "literally basically especially particularly strongly deeply both all so too mainly regularly occasionally "
    "rarely hardly barely nearly almost typically normally def officially secretly"
))
_COMMON_VERBS = frozenset(str.split(
    "prefer avoid like love hate enjoy dislike find need want try use buy eat drink wear shop go play watch read live "
    "work have do make take get feel think know keep spend visit cook bake run walk travel study teach write paint "
    "sing dance practice follow refuse choose opt stick stay look care believe value appreciate own rent drive ride "
    "swim hike climb collect volunteer attend support struggle miss"
))
_LY_VERBS = frozenset(str.split("rely reply apply supply comply imply multiply rally tally bully ally fly"))
_STOPWORDS = frozenset(str.split(
    "i me my myself we our ours us you your yours he him his she her it its they them their this that these those a "
    "an the and or but so if of to in on at by for with from up down out over about into onto as is am are was were "
    "be been being have has had do does did will would can could should shall may might must not no yes very really "
    "just too also quite pretty super much more most many lot lots bit thing things stuff way time times kind sort "
    "one ones some any all every each other another there here then now than when what which who how why where gonna "
    "wanna gotta going get got getting make made feel feeling felt think thought know knew like love loved sure well "
    "good great nice cool awesome amazing wow yeah yep oh hey ok okay thanks thank definitely totally absolutely "
    "still even ever always never again back let lets let's something anything everything nothing someone it's "
    "that's day today though tho see seen look looking looks forward wait can't cannot yesterday tomorrow tonight "
    "week weekend month year last next ago lately recently soon later earlier loving enjoying"
))
_TIME_WORDS = (
    r"yesterday|today|tonight|tomorrow|last night|this morning|this afternoon|this evening|earlier today|"
    r"the other day|the day before yesterday|last (?:week|weekend|month|year|summer|winter|spring|fall|"
    r"autumn|monday|tuesday|wednesday|thursday|friday|saturday|sunday|time)|this (?:week|weekend|month|"
    r"year|summer|winter|spring|fall|autumn|past \w+)|next (?:week|weekend|month|year|monday|tuesday|"
    r"wednesday|thursday|friday|saturday|sunday|summer)|(?:\w+|a couple of|a few) (?:days?|weeks?|weekends?|"
    r"months?|years?) ago|recently|lately|just now|on (?:monday|tuesday|wednesday|thursday|friday|saturday|"
    r"sunday)|(?:in|since|back in) (?:19|20)\d\d"
)
_TIME = re.compile(r"(?i)\b(?:" + _TIME_WORDS + r")\b")
_TIME_PREFIX = re.compile(r"(?i)^(?:(?:just|finally|so|and|also|well|recently|lately),?\s+)*(?:" + _TIME_WORDS + r"|"
                          r"over the weekend|after work|at work|at school|back then|these days|nowadays|"
                          r"when i was (?:a kid|young|younger|little)|as a kid|growing up)\W*$")
_SUBORDINATE = re.compile(
    r"(?i)^(?P<sub>(?:ever since|since|when|after|before|while|because|although|though|once|until|as soon as)"
    r"\b[^,]{3,80}),\s+(?P<main>.+)$"
)
_CLAUSE_SPLIT = re.compile(
    r"(?i)(?:,\s*|\s+)(?:and|but|so|though|although|plus)\s+"
    r"(?=(?:i|i'm|i've|i'd|i'll|my|we|we're|we've)\b)|;\s+|\s+[-–—]+\s+|--"
)
_ANCHOR = re.compile(
    r"(?i)(?<![\w'])(?:i|i'm|im|i've|ive|i'd|i'll|we|we're|we've|we'd|we'll|me and)(?![\w'])(?!\s*[).:])"
)
_POSSESSIVE_START = re.compile(r"(?i)^(?:my|our)\s+\w")
_SUBJECTLESS = re.compile(
    r"(?i)^(?:just |finally |recently |also |even |actually )*(?P<verb>been|gonna|going to|planning|thinking of|"
    r"working on|started|starting|got|went|had|made|took|lost|found|bought|finished|moved|visited|joined|"
    r"adopted|tried|signed up|learned|picked up|spent|saw|met|won|ran|painted|wrote|read|baked|cooked|"
    r"built|booked|quit|graduated|attended|received)\b"
)
_THANKS = re.compile(r"(?i)^(?:thanks|thank you|thx|ty|congrats|congratulations)(?:\s+(?:so much|a lot|a bunch))?"
                     r"(?:,?\s+[A-Z][a-z]+)?\W*\s*")
_VOCATIVE = re.compile(r"^(?:[A-Z][a-z]+)(?:,|!)\s+(?=\S)")
_LEAD_IN = re.compile(
    r"(?i)^(?:that's why|this is why|which is why|that is why|so|and|but|now|then|honestly|personally|"
    r"actually|also|plus|because|cause|'cause|cuz|luckily|unfortunately|sadly|fortunately|thankfully|"
    r"at first|still|yet|anyway|and now|but now|so now|lol|haha|oh man|man|dude|ugh|phew|in fact|"
    r"for me|for us|as for me|me personally|even though|although|though|ever since|since then)\W*$"
)
_TRAILING_VOCATIVE = re.compile(r",\s*[A-Z][a-z]+\s*[.!]*$")
_FUTURE = re.compile(
    r"(?i)\b(?:will|going to|gonna|planning|plan to|plans to|about to|tomorrow|next|upcoming|soon)\b"
    r"|\b(?:I am|I'm|we are|we're) \w+ing\b(?!.*\b(?:ago|last|yesterday|since)\b)"
)
_HEDGE = re.compile(r"(?i)\b(?:maybe|probably|perhaps|i think|i guess|kinda|kind of|sort of|might|possibly)\b")
_CONTRACTIONS = [
    (r"\b[Ii]'m\b|\b[Ii]m\b(?=\s+(?!sure\b)\w)", "I am"), (r"\b[Ii]'ve\b|\b[Ii]ve\b", "I have"),
    (r"\b[Ii]'d (?=(?:been|gone|done|had|seen|never|already|just)\b)", "I had "), (r"\b[Ii]'d\b", "I would"),
    (r"\b[Ii]'ll\b", "I will"), (r"(?i)\bwe're\b", "we are"), (r"(?i)\bwe've\b", "we have"),
    (r"(?i)\bwe'd\b", "we would"), (r"(?i)\bwe'll\b", "we will"), (r"(?i)\bcan't\b", "cannot"),
    (r"(?i)\bwon't\b", "will not"), (r"(?i)\bain't\b", "am not"), (r"(?i)\bdont\b", "do not"),
    (r"(?i)\b(do|does|did|is|are|was|were|have|has|had|would|could|should)n't\b", r"\1 not"),
    (r"(?i)\bgonna\b", "going to"), (r"(?i)\bwanna\b", "want to"), (r"(?i)\bgotta\b", "have to"), (r"\bi\b", "I"),
]
_BODY_PRONOUNS = [
    (r"\bI am\b", "they are"), (r"\bI was\b", "they were"), (r"\bI\b", "they"), (r"(?i)\bmyself\b", "themselves"),
    (r"(?i)\bmy\b", "their"), (r"(?i)\bmine\b", "theirs"), (r"(?i)\bme\b", "them"), (r"(?i)\bwe\b", "they"),
    (r"(?i)\bours\b", "theirs"), (r"(?i)\bour\b", "their"), (r"\bus\b", "them"), (r"(?i)\bourselves\b", "themselves"),
]
_WE = re.compile(r"(?i)\b(?:we|our)\b")
_SINGULAR = re.compile(r"(?i)\b(?:i|i'm|i've|my|me)\b")
_QUOTE = re.compile(r"\"[^\"\n]{1,300}\"|“[^”\n]{1,300}”")

# --------------------------------------------------------------------------------------------------

def _third_singular(verb: str) -> str:
    low = verb.lower()
    if low in _THIRD_SINGULAR_IRREGULAR:
        return _THIRD_SINGULAR_IRREGULAR[low]
    if low in _IRREGULAR_PAST or low in _MODALS or low.endswith(("ed", "ing")) or not low.isalpha():
        return verb
    if low.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if low.endswith("y") and len(low) > 1 and low[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def _is_ly_adverb(word: str) -> bool:
    low = word.lower()
    return len(low) > 4 and low.endswith("ly") and low not in _LY_VERBS


def _expand(text: str) -> str:
    for pattern, repl in _CONTRACTIONS:
        text = re.sub(pattern, repl, text)
    return text


def _body(text: str) -> str:
    for pattern, repl in _BODY_PRONOUNS:
        text = re.sub(pattern, repl, text)
    return text


def _capitalize(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip(" ,;:-")
    text = re.sub(r"[\s.!,;:~]+$", "", text)
    return text[:1].upper() + text[1:]


def third_person(statement: str) -> str:
    """A first-person statement rewritten about the user: "I love my dog" -> "Loves their dog"."""
    s = _expand(statement.strip())
    m = re.match(r"(?i)^(?:my|our) (\w+(?: \w+)?) and I\b\s*(.*)$", s) or re.match(
        r"(?i)^me and (?:my|our) (\w+(?: \w+)?)\s*(.*)$", s
    )
    if m:
        return _capitalize(f"They and their {m.group(1)} {_body(m.group(2))}")
    m = re.match(r"(?i)^(?:my|our)\s+(.*)$", s)
    if m:
        return _capitalize(_body(m.group(1)))
    m = re.match(r"(?i)^we\s+(.*)$", s)
    if m:
        return _capitalize("They " + _body(m.group(1)))
    m = re.match(r"^I\s+(.*)$", s)
    if not m:
        return _capitalize(_body(s))
    words = m.group(1).split(" ")
    head: list[str] = []
    while words and (words[0].lower() in _ADVERB_WORDS or _is_ly_adverb(words[0])):
        head.append(words.pop(0))
    if words:
        verb = words.pop(0)
        if verb.lower() == "have" and words and words[0].lower() == "to":
            head.append("has")
        elif verb.lower() in ("am", "was") and words and words[0].lower() == "not":
            head.append("is" if verb.lower() == "am" else "was")
        else:
            conjugated = _third_singular(verb)
            head.append(conjugated)
            if conjugated != verb:  # present tense: "avoids X and prefer Y" -> "... and prefers Y"
                words = _conjugate_coordinated(words)
    return _capitalize(" ".join(head) + " " + _body(" ".join(words)))


def _conjugate_coordinated(words: list[str]) -> list[str]:
    out = list(words)
    for i in range(1, len(out)):
        if out[i - 1].lower().strip(",") in ("and", "or", "but") and out[i].lower() in _COMMON_VERBS:
            out[i] = _third_singular(out[i])
    return out


# --------------------------------------------------------------------------------------------------
_WEEKDAYS = {d.lower(): i for i, d in enumerate(calendar.day_name)}
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m}
_MONTHS.update({m.lower(): i for i, m in enumerate(calendar.month_abbr) if m and m != "May"})
_NUMBERS = {w: i for i, w in enumerate(str.split("one two three four five six seven eight nine ten eleven twelve"), 1)}
_NUMBERS |= {"a": 1, "an": 1, "a couple of": 2, "couple of": 2, "a few": 3, "few": 3, "several": 3}
_MONTH_NAMES = "|".join(m for m in calendar.month_name if m) + "|" + "|".join(
    m for m in calendar.month_abbr if m and m != "May"
)
_DATE_DMY = re.compile(rf"\b(?P<d>\d{{1,2}})(?:st|nd|rd|th)?(?: of)? (?P<mon>{_MONTH_NAMES})\.?,?(?: (?P<y>\d{{4}}))?")
_DATE_MDY = re.compile(rf"\b(?P<mon>{_MONTH_NAMES})\.? (?P<d>\d{{1,2}})(?:st|nd|rd|th)?\b,?(?: (?P<y>\d{{4}}))?")
_DATE_MONTH = re.compile(
    rf"\b(in|during|since|by|until|last|this|next|early|late|mid|mid-|back in|of) ({_MONTH_NAMES})\b(?:,? (\d{{4}}))?"
)
_DATE_YEAR = re.compile(r"(?i)\b(?:in|since|back in|of|from|during|year) ((?:19|20)\d\d)\b|\b((?:19|20)\d\d)\b")
_DATE_AGO = re.compile(
    r"(?i)\b(\d+|a couple of|couple of|a few|few|several|a|an|one|two|three|four|five|six|seven|eight|"
    r"nine|ten|eleven|twelve) (day|weekend|week|month|year)s? ago\b"
)
_DATE_WEEKDAY = re.compile(r"(?i)\b(last|this|next|on|this past|past)\s+(monday|tuesday|wednesday|thursday|friday|"
                           r"saturday|sunday)\b")
_DATE_RELATIVE = re.compile(
    r"(?i)\b(the day before yesterday|yesterday|last night|today|tonight|this morning|this afternoon|"
    r"this evening|earlier today|tomorrow|last weekend|this weekend|next weekend|last week|this week|"
    r"next week|last month|this month|next month|last year|this year|next year)\b"
)


def _shift_months(base: datetime, months: int) -> datetime:
    index = base.year * 12 + base.month - 1 + months
    year, month = divmod(index, 12)
    return base.replace(year=year, month=month + 1, day=min(base.day, calendar.monthrange(year, month + 1)[1]))


def _on_day(base: datetime, year: int, month: int, day: int = 1) -> datetime | None:
    try:
        return base.replace(year=year, month=month, day=day)
    except ValueError:
        return None


def resolve_date(text: str, now: datetime | None = None) -> datetime | None:
    """The date a statement refers to ("yesterday", "two weeks ago", "in May", "on 5 June 2021", "in 2019"),
    resolved against ``now`` at day precision, or None. Past is assumed unless the text speaks of the future."""
    now = now or datetime.now(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    future = bool(_FUTURE.search(text))
    m = _DATE_DMY.search(text) or _DATE_MDY.search(text)
    if m:
        month, year, d = _MONTHS[m["mon"].lower()], int(m["y"] or day.year), int(m["d"])
        found = _on_day(day, year, month, d)
        if found and not m["y"] and (found > day if not future else found < day):
            found = _on_day(day, year + (1 if future else -1), month, d)
        if found:
            return found
    m = _DATE_AGO.search(text)
    if m:
        n = int(m.group(1)) if m.group(1).isdigit() else _NUMBERS.get(m.group(1).lower(), 1)
        unit = m.group(2).lower()
        if unit == "day":
            return day - timedelta(days=n)
        if unit in ("week", "weekend"):
            return day - timedelta(weeks=n)
        return _shift_months(day, -n if unit == "month" else -12 * n)
    m = _DATE_RELATIVE.search(text)
    if m:
        return _relative(m.group(1).lower(), day)
    m = _DATE_WEEKDAY.search(text)
    if m:
        which, weekday = m.group(1).lower(), _WEEKDAYS[m.group(2).lower()]
        if which == "next" or (which in ("on", "this") and future):
            return day + timedelta(days=(weekday - day.weekday()) % 7 or 7)
        return day - timedelta(days=(day.weekday() - weekday) % 7 or 7)
    m = _DATE_MONTH.search(text)
    if m:
        month = _MONTHS[m.group(2).lower()]
        if m.group(3):
            return _on_day(day, int(m.group(3)), month)
        future = m.group(1) == "next" or (future and m.group(1) not in ("since", "last", "back in"))
        year = day.year
        if future and month < day.month:
            year += 1
        elif not future and month > day.month:
            year -= 1
        return _on_day(day, year, month)
    m = _DATE_YEAR.search(text)
    if m:
        return _on_day(day, int(m.group(1) or m.group(2)), 1)
    return None


def _relative(phrase: str, day: datetime) -> datetime:
    step = {"last": -1, "this": 0, "next": 1}.get(phrase.split()[0], 0)
    if phrase in ("the day before yesterday", "yesterday", "last night", "tomorrow"):
        return day + timedelta(days={"the": -2, "yesterday": -1, "last": -1, "tomorrow": 1}[phrase.split()[0]])
    if phrase.endswith("weekend"):  # the Saturday of that weekend
        back = (day.weekday() - 5) % 7
        if step < 0:
            return day - timedelta(days=back if back >= 2 else back + 7)
        saturday = day - timedelta(days=back) if back < 2 else day + timedelta(days=(5 - day.weekday()) % 7)
        return saturday + timedelta(days=7 * step)
    if phrase.endswith("week"):
        return day - timedelta(days=day.weekday()) + timedelta(weeks=step)
    if phrase.endswith("month"):
        return _shift_months(day.replace(day=1), step)
    if phrase.endswith("year"):
        return day.replace(month=1, day=1, year=day.year + step)
    return day  # today, tonight, this morning ...


# --------------------------------------------------------------------------------------------------

_REMEMBER_CMD = re.compile(
    r"(?i)^(?:please\s+|also\s+|and\s+|can you\s+|could you\s+)?(?:remember|memori[sz]e|keep in mind|make a note|"
    r"note|take note|don't forget|do not forget|never forget|save|store)(?:\s+(?P<sep>that|the fact that)\b|"
    r"\s*(?P<colon>[:,-]))?\s*(?P<rest>.+)$"
)
_FORGET_CMD = re.compile(
    r"(?i)^(?:please\s+|can you\s+|could you\s+)?(?:forget|delete|erase)\s+(?:about\s+)?(?:the fact\s+)?"
    r"(?:that\s+|what i (?:said|told you) about\s+)?(?P<rest>.+)$"
)


def _statement(rest: str) -> str:
    rest = re.sub(r"(?i)^(?:that|this)\s+", "", rest.strip())
    if _ANCHOR.match(rest) or _POSSESSIVE_START.match(rest):
        return third_person(rest)
    return _capitalize(rest)


def _instruction_text(sentence: str) -> str:
    s = LEAD_FILLER.sub("", sentence.strip())
    s = re.sub(r"(?i)^(?:please\s+|from now on,?\s+|going forward,?\s+|in (?:the )?future,?\s+|"
               r"for future (?:reference|responses),?\s+)+", "", s)
    s = re.sub(r"(?i)\s*,?\s*(?:from now on|going forward|in (?:the )?future|please)\s*(?=[.!]*$)", "", s)
    s = re.sub(r"(?i)\bi (?:want|need|would like|prefer) (?:you to |that you )?", "", s)
    s = re.sub(r"(?i)\bme\b", "the user", s)
    s = re.sub(r"(?i)\bmy\b", "the user's", s)
    return _capitalize(s)


def _head_verb(clause: str) -> str:
    words = re.findall(r"[\w']+", clause.lower())
    if words[:1] in (["i"], ["we"]):
        return next((w for w in words[1:5] if w not in _ADVERB_WORDS and not _is_ly_adverb(w)), "")
    # "my sister (Anna) moved ...": the first verb-looking word after the subject noun phrase
    verbs = _IRREGULAR_PAST | {"is", "are", "has", "have", "will", "would", "can", "does", "do"}
    return next((w for w in words[2:7] if w in verbs or w.endswith("ed") or w in _MODALS), "")


def _kind(clause: str, valid_from: datetime | None) -> Kind:
    verb = _head_verb(clause)
    past = verb in _IRREGULAR_PAST - {"was", "were", "had", "used"} or (verb.endswith("ed") and verb != "used")
    born = re.search(r"(?i)\b(?:was|were) born\b|\bgot (?:married|engaged|divorced|promoted|hired|fired)\b", clause)
    preference = PREFERENCE.search(clause)
    if preference and not re.search(r"(?i)\b(?:eat|drink|wear)$", preference.group(0)) and not (past and valid_from):
        return "preference"
    if (born or past or valid_from or _TIME.search(clause)) and not re.search(r"(?i)birthday|anniversary", clause):
        return "event"
    return "fact"


def _informative(clause: str) -> bool:
    tokens = re.findall(r"[A-Za-z][A-Za-z'&-]+|\d+", clause.lower())
    content = [t for t in tokens if (t not in _STOPWORDS and t not in EPHEMERAL and len(t) > 2) or t.isdigit()]
    return len(content) >= 1


def _invalidation(clause: str) -> str | None:
    """The positive statement an "I no longer ..." / "I don't ... anymore" clause retracts, or None."""
    if re.search(r"(?i)\bno longer\b", clause):
        return re.sub(r"(?i)\s*\bno longer\b", "", clause, count=1)
    if re.search(r"(?i)\b(?:any ?more|any longer)\b", clause) and re.search(r"(?i)\b(?:not|never|no)\b", clause):
        positive = re.sub(r"(?i)\s*,?\s*\b(?:any ?more|any longer)\b", "", clause)
        positive = re.sub(r"(?i)\b(do|does|did|will|would|can|could) not\s+", "", positive, count=1)
        if positive == re.sub(r"(?i)\s*,?\s*\b(?:any ?more|any longer)\b", "", clause):
            positive = re.sub(r"(?i)\s+(?:not|never)\b", "", positive, count=1)
        positive = re.sub(r"(?i)\bcannot\s+", "can ", positive)
        return positive
    return None


def _mentions_user(c: str) -> bool:
    """A clause about the user with another grammatical subject: "pottery is a huge part of my life"."""
    return (
        bool(re.search(r"(?i)\b(?:my|me)\b", c))
        and bool(MENTION.search(c))
        and not re.search(r"(?i)\b(?:you|your|u|he|she|his|her|they|them|their|us|our|ourselves)\b", c)
        and not re.match(r"(?i)^(?:it's|it is|that's|that is|this is|what|how|here's|here is)\b", c)
    )


def _statement_of(c: str) -> tuple[str, float, str] | None:
    """The first-person statement a clause makes (starting at its subject), a confidence and a leading
    time phrase ("Last week, I ..."), or None."""
    anchor = _ANCHOR.search(c)
    if _POSSESSIVE_START.match(c):
        return c, 0.7, ""
    if anchor:
        prefix = c[: anchor.start()].strip()
        statement = c[anchor.start():]
        if not prefix:
            return statement, 0.7, ""
        if _TIME_PREFIX.match(prefix):
            return statement, 0.7, prefix.strip(" ,")
        if re.search(r"[,;:–—-]$", prefix):
            return statement, 0.65, ""
        if _LEAD_IN.match(prefix) and not re.search(r"(?i)\b(?:you|your|he|she|they)\b", prefix):
            return statement, 0.65, ""
        # "the pic I took ...", "glad I could help", "you said I ..." -- a relative or embedded clause
        return (c, 0.5, "") if _mentions_user(c) else None
    m = _SUBJECTLESS.match(c)
    if m:
        verb = m.group("verb").lower()
        if verb == "been":
            if not re.match(
                r"(?i)^(?:\w+\s+)*?been\s+(?:(?:\w+ly|only|just|so|real|really|pretty)\s+)*"
                r"(?:\w+ing|to|into|there|in|at|on|with|through|busy)\b",
                c,
            ):
                return None
            return "I have " + c[0].lower() + c[1:], 0.6, ""
        if verb in ("gonna", "going to"):
            if re.match(r"(?i)^(?:gonna|going to) be\b", c):
                return None
            return "I am " + c[0].lower() + c[1:], 0.6, ""
        if not (re.search(r"(?i)\b(?:my|me|myself)\b", c) or _TIME.search(c)):
            return None
        return "I " + c[0].lower() + c[1:], 0.6, ""
    return (c, 0.5, "") if _mentions_user(c) else None


def _skip(statement: str) -> bool:
    expanded = _expand(statement)
    phatic = PHATIC.match(statement) and (len(statement.split()) <= 8 or re.search(r"(?i)\byou\b", statement))
    if phatic or PEP_TALK.match(expanded) or TASK_FRAME.search(statement):
        return True
    if TASK_START.match(statement):
        return True
    if YOU_DIRECTED.match(expanded) and re.search(r"(?i)\b(?:you|your|u)\b", statement):
        return True
    if re.search(r"(?i)\b(?:you|ya)\W*$", statement):
        return True  # "I'm 100% behind you", "I'll be there for you"
    if re.match(r"(?i)^we\b", expanded) and WE_PLATITUDE.search(expanded):
        return True
    emotion = EMOTION_STATE.match(expanded)
    if emotion:
        rest = expanded[emotion.end():]
        if re.search(r"(?i)\b(?:you|your)\b", rest) or not _informative(rest):
            return True
    return not _informative(statement)


def _clause_candidate(clause: str, now: datetime | None) -> Candidate | None:
    c = _THANKS.sub("", LEAD_FILLER.sub("", clause.strip()))
    c = LEAD_FILLER.sub("", _VOCATIVE.sub("", c)) if not _ANCHOR.match(c) else c
    c = _reorder_subordinate(c)
    found = _statement_of(c)
    if not found or _skip(found[0]):
        return None
    statement, confidence, lead = found
    statement = _TRAILING_VOCATIVE.sub("", statement)
    if re.search(r"(?i)\b(?:you|your)\b", statement) and not re.search(r"(?i)\b(?:my|our)\b", statement):
        confidence -= 0.1
    expanded = _expand(statement)
    retracted = _invalidation(expanded)
    if retracted is not None:
        expanded, confidence = retracted, 0.8
    text = third_person(expanded)
    if len(text.split()) < 2 and not re.search(r"(?i)\b(?:vegan|vegetarian|married|single|retired)\b", text):
        return None
    if lead:
        expanded = f"{lead} {expanded}"
        text = f"{lead[0].upper()}{lead[1:]}, {text[0].lower() if text[1:2].islower() else text[0]}{text[1:]}"
    valid_from = resolve_date(expanded, now)
    kind = _kind(expanded, valid_from)
    if kind != "event" and not re.search(r"(?i)\bsince\b", expanded):
        valid_from = None
    confidence += 0.05 if kind == "preference" else 0.0
    confidence -= 0.1 if re.match(r"(?i)^we\b", expanded) else 0.0
    confidence -= 0.2 if _HEDGE.search(expanded) else 0.0
    return Candidate(
        text=text[:_MAX_TEXT],
        kind=kind,
        action="invalidate" if retracted is not None else "add",
        confidence=round(max(0.3, min(confidence, 0.9)), 2),
        valid_from=valid_from,
    )


def _reorder_subordinate(text: str) -> str:
    """"Since I was a kid, I've loved dancing" -> "I've loved dancing since I was a kid"."""
    sub = _SUBORDINATE.match(text)
    if not sub:
        return text
    return f"{sub.group('main').rstrip('.!')} {sub.group('sub')[0].lower()}{sub.group('sub')[1:]}"


def _sentence_candidates(sentence: str, now: datetime | None) -> list[Candidate]:
    s = sentence.strip()
    if not s or GREETING.match(s) or "___" in s:
        return []
    body = LEAD_FILLER.sub("", s)
    m = RETRACT_RULE.match(body)
    if m:
        rule = _capitalize((m.group("rule") or m.group("again") or "").rstrip(".!"))
        return [Candidate(text=rule, kind="instruction", action="invalidate", confidence=0.8)] if rule else []
    m = _FORGET_CMD.match(body)
    if m and FORGET.search(body) and len(m.group("rest").split()) >= 2 and not s.endswith("?"):
        rest = m.group("rest").rstrip(".!")
        kind = _kind(_expand(rest), None)
        return [Candidate(text=_statement(rest), kind=kind, action="invalidate", confidence=0.9)]
    m = _REMEMBER_CMD.match(body)
    rest = m.group("rest").rstrip(".!") if m else ""
    if m and (m.group("sep") or m.group("colon") == ":" or _ANCHOR.match(rest) or _POSSESSIVE_START.match(rest)):
        if is_instruction(rest):
            return [Candidate(text=_instruction_text(rest), kind="instruction", confidence=0.95, explicit=True)]
        first = _clause_candidate(rest, now) or Candidate(text=_statement(rest), kind="fact")
        return [first.model_copy(update={"confidence": 0.95, "explicit": True})]
    if is_instruction(s):
        return [Candidate(text=_instruction_text(s), kind="instruction", confidence=0.85)]
    declarative = question_free(s)
    if not declarative or HYPOTHETICAL.search(declarative) or is_technical(declarative):
        return []
    declarative = _reorder_subordinate(LEAD_FILLER.sub("", declarative))
    found = (_clause_candidate(clause, now) for clause in _CLAUSE_SPLIT.split(declarative) if clause and clause.strip())
    return [c for c in found if c is not None]


def _mask_quotes(text: str) -> tuple[str, list[str]]:
    """Quoted spans become opaque tokens, so nothing inside a quote is read as the user's own statement."""
    quotes = _QUOTE.findall(text)
    for i, quote in enumerate(quotes):
        text = text.replace(quote, f"QUOTE{i}Q", 1)
    return text, quotes


# a statement whose subject is a bare pronoun ("It made me realize ...", "That was so special to me") says
# nothing on its own: its referent is in an earlier sentence of the message
_DANGLING = re.compile(
    r"^(?:It\b|(?:This|That)(?:'s|\s+(?:is|was|has|had|made|makes|helped|helps|reminded|reminds|inspired|"
    r"inspires|taught|teaches|gave|gives|brought|brings|showed|shows|meant|means|felt|feels|keeps|kept|really|"
    r"always|also|just|totally|definitely|still)\b))")


def _attach(previous: Candidate, dangling: Candidate) -> bool:
    """Joins a statement about "it" to the candidate before it in the message (whose subject it most likely
    refers to): "Loved "Becoming Nicole"; it made them feel connected". False when they cannot be joined."""
    if previous.kind == "instruction" or previous.action != "add" or dangling.action != "add":
        return False
    joined = f"{previous.text.rstrip('.!;, ')}; {dangling.text[0].lower()}{dangling.text[1:]}"
    if len(joined) > _MAX_TEXT:
        return False
    previous.text = joined
    previous.confidence = max(previous.confidence, dangling.confidence)
    return True


def extract(messages: Sequence[Mapping[str, Any]], now: datetime | None = None) -> list[Candidate]:
    """Candidate memories from the user messages of a turn, without an LLM.

    ``now`` anchors relative dates ("yesterday", "last year"); it defaults to the current UTC time.
    Each candidate's ``source_index`` is the index of the message it came from in ``messages``.
    """
    out: list[Candidate] = []
    seen: set[str] = set()
    for index, raw in user_messages(messages):
        text, quotes = _mask_quotes(clean_user_text(raw, drop_quotes=False))
        long_message = len(text) > 600
        count = 0
        for sentence in split_sentences(text):
            if re.fullmatch(r"\W*QUOTE\d+Q\W*", sentence, flags=re.I):
                continue
            if long_message and _WE.search(sentence) and not _SINGULAR.search(sentence):
                continue  # "we"-prose in a long message is usually pasted material
            for candidate in _sentence_candidates(sentence, now):
                candidate.text = re.sub(r"(?i)QUOTE(\d+)Q", lambda m, q=quotes: q[int(m.group(1))], candidate.text)
                if candidate.text.lower() in seen or count >= _MAX_PER_MESSAGE:
                    continue
                seen.add(candidate.text.lower())
                last = out[-1] if out and out[-1].source_index == index and count else None
                if last is not None and _DANGLING.match(candidate.text) and _attach(last, candidate):
                    seen.add(last.text.lower())
                    continue
                count += 1
                candidate.source_index = index
                out.append(candidate)
    return out
