"""What a query says beyond its words: the dates it names and the people it names. Pure functions.

Dates: "in June", "on 13 October, 2023", "during 2022" -> (year, month, day) triples, matched against when a
memory happened (``valid_from``, else when it was stored). Names: a question that names one of the people
in the user's conversations ("What did Ana say about the trip?") is about that person's memories; the name
itself is taken out of the dense query, which then matches on content.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Sequence
from datetime import datetime

DateRef = tuple[int | None, int | None, int | None]  # (year, month, day), None where not named

_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m}
_MONTHS.update({m.lower(): i for i, m in enumerate(calendar.month_abbr) if m})
_DATE = re.compile(
    r"\b(?:(\d{1,2})\s+)?(January|February|March|April|May|June|July|August|September|October|November|"
    r"December|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)\b\.?(?:\s+(\d{1,2})(?:st|nd|rd|th)?)?,?"
    r"(?:\s+(\d{4}))?", re.I)
_YEAR = re.compile(r"\b(?:in|of|during|since|from)\s+((?:19|20)\d\d)\b", re.I)


def query_dates(query: str) -> list[DateRef]:
    """(year, month, day) triples named in a query; parts not named are None.

    "May" counts as a month only when capitalised mid-sentence or next to a day or year (not the verb)."""
    out: list[DateRef] = []
    for m in _DATE.finditer(query):
        d1, mon, d2, year = m.groups()
        if mon.lower() == "may" and not (d1 or d2 or year) and (not mon[0].isupper() or m.start() == 0):
            continue  # "may" the verb, or "May I ..." at the start
        month = _MONTHS.get(mon.lower()) or _MONTHS.get(mon.lower()[:3])
        day = int(d1 or d2) if (d1 or d2) else None
        out.append((int(year) if year else None, month, day))
    for m in _YEAR.finditer(query):
        y = int(m.group(1))
        if not any(o[0] == y for o in out):
            out.append((y, None, None))
    return out


def date_match(dates: Sequence[DateRef], when: datetime | None) -> float:
    """1.0 when ``when`` falls in a named month (or year), 0.5 in the month after (things are often told a
    conversation later), else 0."""
    if when is None:
        return 0.0
    best = 0.0
    for year, month, _day in dates:
        if year is not None and when.year != year and not (month == 12 and when.year == year + 1):
            continue
        if month is None:
            best = max(best, 1.0 if year == when.year else 0.0)
            continue
        diff = (when.year * 12 + when.month) - ((year or when.year) * 12 + month)
        best = max(best, 1.0 if diff == 0 else 0.5 if diff == 1 else 0.0)
    return best


def _name_pattern(name: str) -> re.Pattern[str]:
    return re.compile(r"\b" + re.escape(name) + r"(?:'s|’s)?\b")


def named_people(query: str, people: Iterable[str]) -> list[str]:
    """The people (full name or first name, as a whole word, case as written) a query names."""
    found = []
    for person in people:
        parts = person.split()
        first = parts[0] if parts else person
        if _name_pattern(person).search(query) or (first and _name_pattern(first).search(query)):
            found.append(person)
    return found


def strip_names(query: str, names: Iterable[str]) -> str:
    """The query without the given names (and first names, with their possessive 's), whitespace folded.
    The query itself when nothing would be left."""
    out = query
    words = {w for n in names if n for w in (n, n.split()[0])}
    for name in sorted(words, key=len, reverse=True):
        out = _name_pattern(name).sub(" ", out)
    out = re.sub(r"\s+", " ", out).strip()
    return out or query


def said_by(speaker: str | None, person: str) -> bool:
    """Whether ``person`` (full or first name) is the memory's speaker."""
    if not speaker:
        return False
    return speaker == person or speaker.split()[0] == person.split()[0]


_NOT_NAMES = frozenset(
    "I I'm I've I'd I'll What When Where Who Whom Whose Which Why How Is Are Was Were Do Does Did Can Could Would "
    "Should Will Shall May Might Must Have Has Had The A An And Or But If Then So My Our Your Their His Her Its "
    "Tell Give Show List Please Remind Any Some Yes No Ok Okay Hi Hey Hello Thanks Dr Mr Mrs Ms Mx Prof St".split()
) | {m for m in calendar.month_name if m} | {d for d in calendar.day_name}
_CAPITALISED = re.compile(r"\b[A-Z][\w'’-]*[a-z][\w'’-]*\b")


def entity_names(query: str) -> list[str]:
    """Capitalised words of a query that are likely names (people, pets, places, companies): not question
    words, pronouns, months or days. "Did Rex like the park in Lisbon?" -> ["Rex", "Lisbon"]."""
    out: list[str] = []
    for m in _CAPITALISED.finditer(query):
        word = re.sub(r"(?:'s|’s)$", "", m.group(0))
        if word not in _NOT_NAMES and word not in out:
            out.append(word)
    return out


def names_in(text: str, names: Sequence[str]) -> float:
    """The fraction of ``names`` a memory's text names (as whole words)."""
    if not names:
        return 0.0
    return sum(1 for n in names if _name_pattern(n).search(text)) / len(names)


_REFERRING = re.compile(
    r"^\s*(?:and|or|but|so|also|what about|how about|and what|and how|and the|the other|the one|same|which one|"
    r"why|why not|really|ok|okay|then|else|anything else|more|tell me more|and you)\b|"
    r"\b(?:it|its|that|this|those|these|them|they|he|she|him|her|there|one|ones|before|again|too|either)\b[^a-z]*$",
    re.I)
SHORT_QUERY_WORDS = 6


def follow_up(text: str) -> bool:
    """Whether a message leans on what was said before: short ("and tomorrow?", "the one before?") or
    opening or ending with a word that refers back ("what about her?")."""
    words = re.findall(r"[^\W_]+", text)
    return len(words) <= SHORT_QUERY_WORDS or bool(_REFERRING.search(text.strip()))


def conversation_query(user_texts: Sequence[str], max_chars: int = 4000) -> str:
    """What to search for, given the user's messages of a conversation, oldest first: the latest one, and,
    when it is a follow-up, the one before it too ("I'm planning a trip to Lisbon" + "what about the
    weather?"), so the search finds what the conversation is about."""
    texts = [t.strip() for t in user_texts if t and t.strip()]
    if not texts:
        return ""
    query = texts[-1]
    if len(texts) > 1 and follow_up(query):
        query = texts[-2][-max_chars // 2:] + "\n" + query
    return query[-max_chars:]
