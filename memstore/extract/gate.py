"""The extraction gate: a cheap, LLM-free check of whether a turn can hold anything worth remembering.

Most chat turns are tasks ("write a poem about cats"), questions ("what is 2+2?") or pasted material
(code, stack traces, documents). They say nothing durable about the user, so the background worker skips
the extraction LLM call for them. A turn opens the gate when one of its *user* messages, in the user's
own words, contains

* self-disclosure: a first-person statement ("I'm a nurse", "my daughter was born in 2021", "we moved"),
* a preference ("I love hiking", "I can't stand cilantro", "I'm allergic to nuts"),
* a standing instruction about responses ("never use emojis", "from now on reply in French", "call me Sam"),
* an explicit memory command ("remember that ...", "forget that ...").

Assistant messages never open the gate. Text inside code fences, block quotes, quotation marks, stack
traces and pasted documents ("summarize this text: ...") is removed first, so pasted third-party content
cannot open it by itself.

The module also holds what the rules-based extractor shares with it: message text, cleaning, sentence
splitting, and the sentence vocabulary (task framing, small talk, preference verbs, instructions).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "clean_user_text",
    "gate_reason",
    "message_text",
    "needs_extraction",
    "normalize",
    "sentence_reason",
    "split_sentences",
    "user_messages",
]

# --------------------------------------------------------------------------------------------------
# message access


def message_text(message: Mapping[str, Any]) -> str:
    """The text of an OpenAI-style message; content may be a string or a list of content parts."""
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, Mapping) and part.get("type") in ("text", "input_text", None):
                text = part.get("text")
                if isinstance(text, str):
                    parts.append(text)
        return "\n".join(parts)
    return ""


def user_messages(messages: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]]:
    """(index, text) of every user message; other roles (assistant, system, tool) are ignored."""
    return [
        (i, message_text(m))
        for i, m in enumerate(messages)
        if isinstance(m, Mapping) and m.get("role") == "user"
    ]


# --------------------------------------------------------------------------------------------------
# cleaning: keep only the user's own prose

_FENCE = re.compile(r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)", re.S)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_URL = re.compile(r"https?://\S+|www\.\S+")
_CODE_START = re.compile(
    r"^\s*(?:def |class \w|import \w|from \S+ import|return\b|#include|using namespace|public |private |"
    r"protected |static |void |int |long |double |char |const |let |var |function\b|func |package |"
    r"struct |SELECT |INSERT |UPDATE \w+ SET|CREATE TABLE|print\(|console\.|System\.|@\w+\(|"
    r"if \(|for \(|while \(|else\b|elif |try:|except\b|catch\s*\(|\$ |>>> |\w+\s*=\s*[\w\[\{(\"'])"
)
_CODE_END = re.compile(r"(?:[{};]|\):|\]\)|\w\(\)|=>)\s*$")
_TRACE = re.compile(
    r"^\s*(?:Traceback \(most recent call last\)|File \".*\", line \d+|at [\w.$<>]+\(.*\)|"
    r"\w+(?:Error|Exception)\b:|[│┃╷╵╭╰]|\d+\s*\|)"
)
_SYMBOLS = re.compile(r"[{}\[\]();=<>#$|\\_*^]")
_QUOTED = re.compile(r"\"[^\"\n]{1,600}\"|“[^”\n]{1,600}”|(?<![\w])'[^'\n]{12,600}'(?![\w])")
# "Summarize this text: ...", "in polish: ...", "Objective: ..." -- what follows such a colon is material.
_COLON = re.compile(r"(?<!\d):(?=\s|$)")
_KEEP_COLON_PREFIX = re.compile(
    r"(?i)^\W*(?:please\s+)?(?:note|remember|fyi|btw|by the way|update|news|fact|fun fact|about me|"
    r"context|background|ps|p\.s\.|edit|also|reminder|important|keep in mind|don't forget|forget|"
    r"from now on|going forward|rule|instruction|preference|preferences)\W*$"
)
_FIRST_PERSON = re.compile(r"(?i)\b(?:i|i'm|im|i've|i'd|i'll|my|me|we|we're|we've|our|myself)\b")
_LONG_MESSAGE = 1200


def normalize(text: str) -> str:
    """Unify apostrophes/quotes and whitespace."""
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u00a0", " ")
    return re.sub(r"[ \t]+", " ", text)


def _is_code_line(line: str) -> bool:
    stripped = line.strip()
    if not stripped:
        return False
    if _TRACE.match(line) or _CODE_START.match(line):
        return True
    if _CODE_END.search(stripped) and _SYMBOLS.search(stripped):
        return True
    symbols = len(_SYMBOLS.findall(stripped))
    if line.startswith(("    ", "\t")) and symbols >= 1:
        return True
    return len(stripped) >= 8 and symbols / len(stripped) > 0.12


def _cut_material_after_colon(text: str) -> str:
    """Drop what follows a short non-personal lead-in ending in a colon ("Translate this: ...")."""
    match = _COLON.search(text)
    if not match:
        return text
    prefix = text[: match.start()]
    line_start = prefix.rfind("\n") + 1
    lead = prefix[line_start:]
    # the lead-in is the last sentence before the colon
    lead = re.split(r"(?<=[.!?])\s+", lead)[-1]
    if len(lead.split()) > 10 or _FIRST_PERSON.search(lead) or _KEEP_COLON_PREFIX.match(lead):
        return text
    after = text[match.end():]
    # "Big news: I moved to Lisbon!" is the user's own news; a task lead-in or a long or multi-line
    # remainder is pasted material
    if not (_MATERIAL_LEAD.search(lead) or len(after) > 300 or after.strip().count("\n") >= 2):
        return text
    return text[: match.start()]


_MATERIAL_LEAD = re.compile(
    r"(?i)\b(?:summari[sz]e|translate|fix|review|explain|rewrite|rephrase|proofread|check|analy[sz]e|correct|"
    r"improve|edit|debug|format|convert|classify|extract|paraphrase|respond to|reply to|answer|here(?:'s| is| are)|"
    r"(?:this|the) (?:text|email|message|code|article|document|paragraph|passage|error|log|output|letter|post|"
    r"review|note|list|snippet|query|prompt)s?|the following|below)\b")


def clean_user_text(text: str, *, drop_quotes: bool = True) -> str:
    """The user's own prose: code, stack traces, block quotes, URLs and pasted material removed.

    With ``drop_quotes`` quoted spans ("...") are removed as well; the extractor keeps them (and masks
    them itself) because a quoted title can belong to a fact ("my favorite song is "Yesterday"").
    A message that is nothing but one quoted span is unwrapped: that is the user's own statement.
    """
    text = normalize(text).strip()
    whole = re.fullmatch(r"\"([^\"]+)\"|“([^”]+)”", text)
    if whole:
        text = whole.group(1) or whole.group(2)
    text = _FENCE.sub("\n", text)
    text = _INLINE_CODE.sub(" ", text)
    text = _URL.sub(" ", text)
    kept = [
        line
        for line in text.split("\n")
        if not line.lstrip().startswith(">") and not _is_code_line(line)
    ]
    text = "\n".join(kept)
    text = _cut_material_after_colon(text)
    if drop_quotes:
        text = _QUOTED.sub(" ", text)
    if len(text) > _LONG_MESSAGE:
        # a long message is mostly pasted material; the user's own framing sits at its two ends
        sentences = split_sentences(text)
        if len(sentences) > 4:
            text = "\n".join(sentences[:2] + sentences[-2:])
    return text.strip()


_ABBREV = re.compile(r"\b(Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|vs|etc|e\.g|i\.e|approx|No)\.\s", re.I)


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences (newlines and . ! ? boundaries, common abbreviations protected)."""
    protected = _ABBREV.sub(lambda m: m.group(0).replace(".", "\x00"), text)
    out: list[str] = []
    for para in re.split(r"\n+", protected):
        for piece in re.split(r"(?<=[.!?])[\"')\]]*\s+|(?<=[!?])(?=[A-Z])|\s+[-–—]\s+(?=[A-Z])", para):
            piece = piece.replace("\x00", ".").strip(" -–—*•\t")
            if piece and re.search(r"\w", piece):
                out.append(piece)
    return out


# --------------------------------------------------------------------------------------------------
# the gate's sentence patterns

_REMEMBER = re.compile(
    r"(?i)^(?:please\s+|also\s+|and\s+)?(?:remember|memori[sz]e|don't forget|do not forget|never forget)"
    r"\b(?:\s*(?:that|this|:|,|-)|\s+(?:i|i'm|my|me|we|our)\b)"
    r"|\b(?:please\s+)?(?:remember|memori[sz]e|save|store)\s+(?:that|this)\b(?!\s+(?:to)\b)"
    r"|^(?:please\s+)?(?:note|keep in mind|make a note|take note|for the record|fyi)\b.*"
    r"\b(?:i|i'm|my|me|we|our)\b"
)
FORGET = re.compile(
    r"(?i)^(?:please\s+|can you\s+|could you\s+)?(?:forget|delete|erase)\s+"
    r"(?:that|about (?:my|the fact|me)|what i (?:said|told you)|the fact|everything|my|i|i'm|me)\b"
)
# taking back a standing instruction: "forget the rule about emojis", "you can use capital letters again"
RETRACT_RULE = re.compile(
    r"(?i)^(?:please\s+)?(?:forget|drop|remove|delete|ignore|disregard|cancel|scrap)\s+(?:the|my|that|your)\s+"
    r"(?:\w+\s+)?(?:rule|instruction|request|preference)s?\b(?:\s+(?:about|to|of|that|on|for))?\s*(?P<rule>.*)$"
    r"|^(?:ok(?:ay)?,?\s+)?(?:you can|you may|feel free to|it's (?:ok|okay|fine) to)\s+(?:go back to\s+|start\s+)?"
    r"(?P<again>(?:use|using|write|writing|reply|respond|answer|include|add|say|call)\b.+?)\s+again\W*$"
)
_STANDING = re.compile(
    r"(?i)\b(?:from now on|going forward|in (?:the )?future|for future|for all future|every time|"
    r"whenever you|each time you|always|never|no more|stop|don't ever|do not ever|any more|anymore)\b"
)
_IMPERATIVE_START = re.compile(
    r"(?i)^(?:ok(?:ay)?,?\s+|and\s+|also,?\s+)?(?:please\s+)?(?:from now on,?\s+|going forward,?\s+|"
    r"in (?:the )?future,?\s+)?(?:please\s+)?(?:always|never|don't|do not|stop|only|keep|avoid|use|"
    r"reply|respond|answer|write|speak|talk|call me|address me|refer to me|include|end|start|sign|"
    r"be|make sure|limit|format|no)\b"
)
_RESPONSE_VERB = re.compile(r"(?i)\b(?:reply|replies|respond|responses?|answers?|answering|write back)\b")
_RESPONSE_OBJECT = re.compile(
    r"(?i)\b(?:emojis?|emoticons|capital letters|capitals|capitali[sz]ation|caps|lowercase|lower case|"
    r"uppercase|bullet points?|bullets|markdown|headers|headings|tables|jargon|exclamation (?:marks|points)|"
    r"em[- ]dashes|dashes|semicolons|spelling|metric|imperial|units|formal|informal|casual|tone|"
    r"concise|brief|verbose|wordy|disclaimers|apologi[sz]e|apologi[sz]ing|apologies|follow-up questions|"
    r"clarifying questions|call me|address me|refer to me|my name|first name|nickname|sign off|"
    r"english|french|spanish|german|italian|portuguese|dutch|chinese|mandarin|japanese|korean|russian|"
    r"arabic|hindi|polish|turkish|swedish|in (?:short|one|two|three) (?:sentences?|words|paragraphs?))\b"
)
_ADVERBS = (
    r"(?:(?:\w+ly|really|also|just|do|does|did|don't|do not|didn't|still|kinda|kind of|totally|absolutely|"
    r"definitely|especially|always|never|much|particularly|truly|genuinely|generally|usually|mostly|"
    r"strongly|very much|absolutely|actually|simply|honestly|personally|certainly|deeply|rather|"
    r"would|'d|could|can|can't|cannot|will|won't)\s+)*"
)
_PREF_VERBS = (
    r"(?:love|loved|adore|like|liked|enjoy|enjoyed|prefer|preferred|hate|hated|dislike|disliked|detest|"
    r"despise|loathe|stand|avoid|refuse|fancy|crave|cherish|treasure|admire|live without|go for|"
    r"opt for|stick to|stay away from|steer clear of|eat|drink|wear)"
)
PREFERENCE = re.compile(
    r"(?i)\b(?:i|we)(?:'ve|'d| have| had| would)?\s+" + _ADVERBS + _PREF_VERBS + r"\b"
    r"|\b(?:i'm|i am|im|we're|we are)\s+" + _ADVERBS + r"(?:(?:a |an |such a |a big |a huge )?fan of|into|"
    r"passionate|obsessed|crazy about|fond of|allergic|intolerant|vegan|vegetarian|pescatarian|"
    r"against|opposed|not (?:a fan|into|keen)|keen on|partial to|averse)\b"
    r"|\b(?:my|our) (?:\w+ )?(?:favou?rite|fave|fav|go-to|preference|preferences|allergy|allergies|"
    r"diet)\b|\b(?:allergic to|allergy to|intoleran(?:t|ce) to|aversion to|preference for)\b"
)
_FIRST_PERSON_SUBJECT = re.compile(
    r"(?i)(?:^|[\s,;(-])(?:i|i'm|im|i've|ive|i'd|i'll|we|we're|we've|we'd|we'll|me and)\b(?!\s*[).:])"
    r"|(?:^|[,;(]\s*|\b(?:and|but|so|because|since|as|cause|'cause|cuz)\s+)(?:my|our)\s+\w"
    r"|^(?:just |finally |recently |also )?(?:went|got|had|made|took|lost|found|bought|started|"
    r"finished|moved|visited|joined|adopted|been|gonna|planning|thinking of|working on)\b"
)
# the gate is deliberately more permissive than the extractor: any "my X" or experiential "me" counts
MENTION = re.compile(
    r"(?i)\b(?:my|our)\s+(?!bad\b|god\b|goodness\b|gosh\b|pleasure\b)\w|\b(?:to|for|around|behind) me\b"
    r"|\b(?:made|makes|make|helped|helps|gave|gives|reminds|reminded|taught|teaches|inspired|inspires|"
    r"got|gets|brought|brings|keeps|kept|drives|drove|means a lot to|took|takes) me\b"
)
_WE_ONLY = re.compile(r"(?i)\b(?:we|we're|we've|we'd|we'll|our)\b")
_SINGULAR = re.compile(r"(?i)\b(?:i|i'm|im|i've|i'd|i'll|my|me)\b")
_AUX = (
    r"(?:is|are|was|were|do|does|did|can|could|would|will|should|shall|may|might|have|has|had|am|isn't|"
    r"aren't|don't|doesn't|didn't|won't|wouldn't|can't|couldn't|shouldn't)"
)
_QUESTION_START = re.compile(
    r"(?i)^(?:(?:what|how|why|where|when|who|whom|whose|which)(?:'s|'re|\s+(?:\w+\s+)?" + _AUX + r"\b)|"
    r"what's|whats|who's|how's|why|" + _AUX + r"\s+(?:you|u|he|she|it|they|there|that|this|we|i|your)\b|"
    r"any\b|got any\b)"
    r"|^(?:what|how|why|where|which|who)\b.*\b" + _AUX + r"\s+(?:i|you|u|we|he|she|it|they)\b"
)
_I_WANT = r"(?:i|i'd|i would|i'll|i will) (?:really )?(?:want|need|like|wish|expect|love)"
TASK_FRAME = re.compile(
    r"(?i)\b(?:" + _I_WANT + r" (?:you|u) to|i (?:have|got) (?:a|another|one|one more|some|few|a few|two|"
    r"three) (?:quick |small |simple )?(?:questions?|requests?|tasks?|problems?|issues?|quer(?:y|ies)|"
    r"doubts?)|" + _I_WANT + r" (?:some |your )?(?:help|assistance|advice|feedback|suggestions|ideas|"
    r"recommendations)|" + _I_WANT + r" (?:a|an|the|some|\d+) (?:\w+ )?(?:list|summary|table|recipe|"
    r"poem|story|essay|script|function|program|code|letter|email|title|titles|name|names|description|"
    r"plan|translation|explanation|introduction|example|examples|overview|answer|version|prompt|outline|"
    r"draft|paragraph|sentence|response)|i (?:don't|dont|do not|didn't|did not) (?:completely |fully |"
    r"really )?(?:understand|get it|get (?:this|that|the)|know (?:how|what|why|if|whether)|see (?:how|"
    r"why|what))|i'm (?:not sure|confused|wondering|getting (?:an|this|the|a) error)|i was wondering|"
    r"i wonder|i think (?:the|that|this|it|you|there)|i mean\b|^here(?:'s| is| are)\b|"
    r"^(?:please )?(?:let me|let's|help me|show me|tell me|give me)|i'm asking|i asked (?:you|u)|"
    r"i said (?:you|that you|it|this)|i told you|as i said|i tried|i've tried|i have tried|i must add|"
    r"i'm trying to (?:fix|get|make|figure|understand|use|run|install|write|code|build|implement|"
    r"debug|solve|compile|create|set up|deploy)|i (?:can|could) (?:create|write|use|run|add|try))\b"
)
TASK_START = re.compile(
    r"(?i)^(?:please\s+|pls\s+|now\s+|so\s+|ok(?:ay)?,?\s+|can you\s+|could you\s+|would you\s+)*"
    r"(?:explain|summari[sz]e|write|list|give|tell|show|make|create|generate|translate|rewrite|re-write|"
    r"describe|compare|simulate|continue|complete|fix|correct|improve|find|suggest|recommend|help|draft|"
    r"compose|solve|calculate|convert|design|outline|analy[sz]e|review|check|edit|proofread|"
    r"paraphrase|define|identify|provide|build|implement|enumerate|imagine|act as|pretend|play|assume)\b"
)
_IDENTIFIER = re.compile(
    r"\b[a-z]+_[a-z_]+\b|\b[A-Z]{2,}[a-z]{2,}\w*|\b[a-z]+(?:[A-Z][a-z]+){2,}\b|\b(?:[A-Z][a-z]+){3,}\b|"
    r"\w\.\w+\(|\w\(\)"
)
_TECH = re.compile(
    r"(?i)\b(?:code|widgets?|variables?|arrays?|api|apis|database|sql|html|css|javascript|typescript|"
    r"regex|runtime|compiler|compile|dataset|repo|docker|kubernetes|stack ?trace|scroll ?bar|"
    r"endpoint|json|yaml|npm|pip|cli|gpu|cpu|ram|os|subclass|viewport|callable|plaintext|ciphertext)\b|"
    r"c\+\+|c#|\.net\b"
)
_DURABLE_TECH = re.compile(r"(?i)\b(?:learn|learning|learned|studying|years?|job|developer|engineer|programmer)\b")
_IDENTITY = re.compile(
    r"(?i)\b(?:i'm|i am|im) (?:a|an)\s+\w|\bi (?:work|worked) (?:as|at|for|in)\b|\bmy name is\b|"
    r"\bi live\b|\bi'm from\b|\bi am from\b"
)
HYPOTHETICAL = re.compile(
    r"(?i)(?:^|[,;]\s*|\b(?:and|but|so|then|even|only)\s+)if (?:i|i'm|i'd|i were|we|my|me)\b|"
    r"\b(?:what if|suppose|supposing|imagine|pretend|hypothetically|were i|i wish i|as if i|let's say)\b"
)
PHATIC = re.compile(
    r"(?i)^(?:i'm|i am|im) (?:so |really |very |super |just |totally )*(?:glad|happy for you|sorry|"
    r"proud of you|excited for you|thrilled for you|sure|not sure|good|fine|ok|okay|great|well|here for "
    r"you|in|down|game|all ears|listening|back|done)\b|^(?:i )?(?:can't|cannot) wait\b|"
    r"^i (?:hope|bet|guess|suppose|agree|understand|see|know|believe you|feel you|hear you|get it|"
    r"appreciate (?:it|that|you|your)|miss you|love (?:that|it|this|your|how you|you)|like (?:that|it|"
    r"this|your)|think so|totally agree|wish you)\b|^(?:me too|same here|same|thanks|thank you)\b|"
    r"^i(?:'ll| will) (?:definitely |totally |surely |for sure |make sure to |have to |def )*(?:check|keep|"
    r"do my best|try|let you know|talk|speak|see|make sure|think about|look into|give it|send|show|tell|"
    r"be there|catch you|definitely)\b|^i (?:definitely |surely )?will\b"
)

# --------------------------------------------------------------------------------------------------
# small talk: first person, but nothing durable ("I'm so happy for you", "I'll keep pushing", "we got this").
# These read contraction-expanded text ("I am", "I will"), as the rules-based extractor produces it.

EPHEMERAL = frozenset(str.split(
    "glad happy sad excited thrilled stoked pumped nervous sorry tired bored hungry busy fine ready proud grateful "
    "thankful lucky blessed impressed curious jealous fun fantastic incredible wonderful beautiful lovely best better "
    "inspiring inspired motivated encouraged touched moved honored honoured appreciative psyched keen eager hopeful "
    "confident worried scared anxious relieved surprised shocked speechless hyped delighted overjoyed ecstatic"
))
YOU_DIRECTED = re.compile(
    r"(?i)^(?:i|we)(?:'m| am| are|'re)? (?:\w+ly )?(?:so |really |very |super |totally |just )*(?:glad|happy|"
    r"proud|sorry|thankful|grateful|hope|wish|bet|know|think|believe|love|appreciate|admire|miss|agree|"
    r"understand|excited|thrilled|can't wait|cannot wait|look forward|looking forward|impressed|here)\b"
)
PEP_TALK = re.compile(
    r"(?i)^I (?:am |will |would )?(?:going to |always |definitely |totally |just |really |not |never )*"
    r"(?:keep (?:it up|going|on|\w+ing|at it|that in mind|you posted|in touch)|not let (?:you|anything|anyone)|"
    r"give up|(?:stay|staying|feeling|feel) (?:positive|determined|motivated|focused|strong|confident)|"
    r"appreciate (?:it|that|this|your|you|the)|determined to make it work|"
    r"(?:have to|need to|must) (?:tell|show|ask) you)|^I (?:will|would) .*\b(?:you|your)\b"
    r"|^I (?:might|may|could|should)\b|^I (?:am|was) (?:gonna|going to) (?:say|ask)\b"
    r"|^I (?:will|would|could) (?:not|never) forget (?:that|it|this)\b"
)
WE_PLATITUDE = re.compile(
    r"(?i)^we (?:all |both |really |definitely |just |totally )*(?:can|could|should|must|will|would|got this|"
    r"are all|have each other|need to|have to|are in this)\b|\beach other\b|\bone another\b"
)
EMOTION_STATE = re.compile(
    r"(?i)^I (?:am|was|feel|felt) (?:so |really |very |super |totally |truly |just |kinda |a bit |"
    r"pretty |extremely |incredibly |beyond )*(?:" + "|".join(sorted(EPHEMERAL)) + r")\b"
    r"(?:\s+(?:and|&)\s+(?:so |really |very |kinda )*(?:" + "|".join(sorted(EPHEMERAL)) + r"))*"
)

GREETING = re.compile(
    r"(?i)^(?:hi|hello|hey|hiya|yo|good (?:morning|afternoon|evening|night)|thanks|thank you|thx|ok|"
    r"okay|cool|great|nice|wow|lol|haha|bye|goodbye|see you|cheers)\W*$"
)
LEAD_FILLER = re.compile(
    r"(?i)^(?:(?:hey|hi|hello|oh|ooh|wow|whoa|woah|yeah|yes|yep|yup|no|nope|nah|ok|okay|well|so|and|but|"
    r"also|actually|honestly|haha+|lol|omg|aw+|sure|right|btw|by the way|anyway|anyways|plus|fyi|ps|"
    r"p\.s\.)\b[,!.]*\s+)+"
)


def question_free(sentence: str) -> str:
    """The declarative part of a sentence: questions are dropped, "I did X, have you?" keeps "I did X"."""
    s = sentence.strip()
    body = LEAD_FILLER.sub("", s)
    if _QUESTION_START.match(body) and not re.match(r"(?i)^(?:don't|do not|never|always)\b", body):
        return ""
    if s.endswith("?"):
        head = re.split(r",\s*|\s+[-–—]\s+|;\s*", s)
        return ", ".join(head[:-1]) if len(head) > 1 else ""
    return s


def is_instruction(sentence: str) -> bool:
    """A standing rule about responses ("never use emojis", "from now on reply in French"), not a one-off task."""
    low = sentence.lower()
    if re.search(r"(?i)\b(?:call me|address me as|refer to me as)\b", low) and not low.endswith("?"):
        return True
    if re.search(r"(?i)\b(?:your|the) (?:answers|responses|replies|messages)\s+(?:should|must|need to)\b", low):
        return True
    if re.search(r"(?i)\bi (?:want|need|would like|'d like|prefer) (?:you to |that you )?(?:always|never)\b", low):
        return True
    if not _IMPERATIVE_START.match(LEAD_FILLER.sub("", sentence)):
        return False
    if not (_RESPONSE_VERB.search(low) or _RESPONSE_OBJECT.search(low)):
        return False
    standing = bool(_STANDING.search(low))
    firm = re.match(
        r"(?i)^(?:please\s+)?(?:always|never|don't|do not|stop|avoid|no more|(?:keep|make) (?:your|the|all) "
        r"(?:answers|responses|replies|messages))\b",
        low.strip(),
    )
    polite_reply = re.match(r"(?i)^please\s+(?:reply|respond|answer|write back|speak|talk)\b", low.strip())
    return standing or bool(firm) or bool(polite_reply)


def is_technical(sentence: str) -> bool:
    """Programming talk ("I've applied X to my_layout"): first person, but nothing durable about the user."""
    technical = _TECH.search(sentence) or _IDENTIFIER.search(sentence)
    return bool(technical) and not _DURABLE_TECH.search(sentence)


def _clauses(sentence: str) -> list[str]:
    parts = re.split(
        r"[,;]\s+|\s+[-–—]\s+|--|\s*:\s+|\s+(?:and|but|so)\s+(?=(?:i|i'm|i've|i'd|i'll|my)\b)", sentence, flags=re.I
    )
    return [c for c in parts if c and c.strip()]


def _clause_reason(clause: str, sentence: str) -> str:
    body = LEAD_FILLER.sub("", clause.strip())
    if not body or TASK_START.match(body):
        return ""
    if not (_FIRST_PERSON_SUBJECT.search(body) or MENTION.search(body)):
        return ""
    if PHATIC.match(body) and (len(body.split()) <= 8 or re.search(r"(?i)\byou\b", body)):
        return ""
    if _IDENTITY.search(body):
        return "self-disclosure"
    if TASK_FRAME.search(body):
        return ""
    if PREFERENCE.search(body):
        return "preference"
    if is_technical(sentence):
        return ""
    return "self-disclosure"


def sentence_reason(sentence: str) -> str:
    """Why one sentence (already cleaned) opens the gate, or "" when it does not."""
    s = sentence.strip()
    if not s or GREETING.match(s) or "___" in s:
        return ""
    if _REMEMBER.search(s):
        return "remember"
    if FORGET.search(s) or RETRACT_RULE.search(s):
        return "forget"
    if is_instruction(s):
        return "instruction"
    declarative = question_free(s)
    if not declarative or HYPOTHETICAL.search(declarative):
        return ""
    for clause in _clauses(declarative):
        reason = _clause_reason(clause, declarative)
        if reason:
            return reason
    return ""


def gate_reason(messages: Sequence[Mapping[str, Any]]) -> str:
    """The reason the turn opens the gate ("self-disclosure", "preference", "instruction", "remember",
    "forget"), or "" when no user message in it says anything durable about the user."""
    for _, raw in user_messages(messages):
        text = clean_user_text(raw)
        if not text:
            continue
        long_message = len(text) > 600
        for sentence in split_sentences(text):
            # in long messages, "we"/"our" alone is usually pasted academic or corporate prose
            if long_message and _WE_ONLY.search(sentence) and not _SINGULAR.search(sentence):
                continue
            reason = sentence_reason(sentence)
            if reason:
                return reason
    return ""


def needs_extraction(messages: Sequence[Mapping[str, Any]]) -> bool:
    """True when the turn's user messages may hold a durable fact, preference or standing instruction."""
    return bool(gate_reason(messages))
