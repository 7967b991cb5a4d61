"""The MovieLens-100K catalogue and a fuzzy title matcher robust to ASR output.

Each catalogue title gets aliases in a folded, spoken form: lower case, no punctuation or accents, digits
and roman numerals as words ("Apollo 13" -> "apollo thirteen"), abbreviations spelled out ("Sunset Blvd." ->
"sunset boulevard"), "&" as "and", a fraction as written and as said ("8 1/2", "eight and a half"), the
trailing article moved to the front ("Godfather, The" -> "the godfather") and also dropped, an alternative
title in brackets ("Seven (Se7en)") and, when unique, the part before a colon ("Terminator 2: Judgment Day"
-> "terminator two"). What was heard gets the same treatment. Aliases are compared with spaces removed, so
"far go" finds "Fargo"; an alias two titles share goes to the title it is nearest the main name of.

Matching looks at every window of up to ``max_window_words`` words of the utterance; exact alias hits
score 1.0, others use rapidfuzz's normalised Indel similarity against aliases of similar length
(``min_score``), in one ``rapidfuzz`` ``cdist`` per utterance, which runs without the GIL. A one-word
title that is also an everyday word ("Heat", "Speed", "Kids", "War") only counts when a cue word sits
next to it ("I loved heat", "when did heat come out") and it is not followed by "movie"/"film" ("war
movies" is a genre). Overlapping candidates are resolved best score, then
longest window, first.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rapidfuzz import fuzz, process

from services.common.catalog import CatalogItem, front_article, load_items, title_parts
from services.common.text_input import SPOKEN_ABBREVIATIONS
from services.nlp.entities import UNITS, Found
from services.nlp.text import Token, words

ARTICLES = ("the", "a", "an")
_NUMBER_WORDS = {str(v): k for k, v in UNITS.items() if 0 < v < 20}
_ROMAN = {"ii": "two", "iii": "three", "iv": "four", "vi": "six", "vii": "seven", "viii": "eight"}
# Abbreviations as they are said (the shared table), and three more of MovieLens titles: "Sunset Blvd.",
# "Super Mario Bros.", "Meet Me in St. Louis" (TTS tells Saint from Street by what follows; a title means Saint).
_ABBREVIATIONS = {**{k: v.lower() for k, v in SPOKEN_ABBREVIATIONS.items()},
                  "blvd": "boulevard", "bros": "brothers", "st": "saint"}
# Words next to a one-word everyday title that make it a title reference.
CUES_BEFORE = frozenset("like liked love loved hated hate rate rated give gave enjoyed enjoy watched watch seen "
                        "saw about than to is was did called named titled movie film".split())
CUES_AFTER = frozenset("was is got gets deserves come came released rating stars star".split())
GENERIC_AFTER = frozenset("movie movies film films flick flicks genre genres ones stuff".split())
# Everyday words that are also one-word MovieLens titles (or the content word of "The X" titles).
COMMON_WORDS = frozenset("""
alien aliens babe big bliss blink boys bound breakdown buddy caught century client commandments contact
crash craft crow cure daylight diva edge emma eraser evita faces faithful fall fallen fan fear fearless
firestorm flirt fog fresh friday funeral game getaway ghost giant glory heat heavy hush infinity innocents
jack jade junior kids loaded machine malice mask mighty mimic mirage mother naked net north nowhere
outbreak outlaw paper peacemaker phenomenon powder priest professional program prophecy quest ransom
reckless ref relic rent restoration ripe rock roommates safe saint scout scream screamers sea seven shadow
shine shooter show sleeper sleepers smoke solo speechless speed sphere spawn species squeeze stalker steel
stranger sting striptease substitute suture swingers switchback target thinner touch traveller trust
turbulence twilight twisted twister underground underneath unforgettable van vermin volcano war wife
witness wolf women wonderland careful hideaway homage bananas amateur hate shopping johns
""".split())
# Titles made only of everyday words ("Good Morning", "Big Night", "Home Alone") also need a cue.
EVERYDAY_WORDS = frozenset("""
good morning night day evening big home alone love man men woman girl boy life time world one two three
me you my your we our it this that of in on and to for with is be all no not just more other again next
little old new first last great best bad hot cold dead free true lost show
""".split())


# Request words: a window made only of these is never fuzzy-matched (it is the request, not a title), which
# skips most windows of a typical utterance. Exact alias hits are still checked.
REQUEST_WORDS = frozenset("""
i im id ive me my you your we us it its this that these those a an the and or but of to in on at for from
with by as is are was were be been do does did can could would should will shall may might must please
what whats which who when where why how any some something anything else more other another one ones
movie movies film films flick flicks show tell give get find want wanna like liked love loved see seen
watch watched recommend suggest similar about than so very really just also too not no yes ok okay
""".split())


def load_catalog(path: Path) -> dict[int, CatalogItem]:
    """``catalog.tsv`` (written by the NLP build) as item id -> item."""
    return {item.item_id: item for item in load_items(path)}


_FRACTION = re.compile(r"\b1/([234])\b")
_FRACTION_WORDS = {"2": "half", "3": "third", "4": "quarter"}


def _say_fraction(m: re.Match) -> str:
    return f"and a {_FRACTION_WORDS[m.group(1)]}"


def spoken(word: str) -> str:
    """Number-ish tokens and abbreviations in their spoken form ("13" -> "thirteen", "ii" -> "two",
    "dr" -> "doctor")."""
    return _NUMBER_WORDS.get(word) or _ROMAN.get(word) or _ABBREVIATIONS.get(word) or word


def title_aliases(title: str) -> list[tuple[str, ...]]:
    """Spoken-form aliases (tuples of words) of a catalogue title, the closest to its main title first: the
    main title, then without its article, then each alternative title likewise, then any fraction as said."""
    main, alternatives = title_parts(title)
    names = [main, *alternatives]
    # "8 1/2" as written (its words "eight one two") and as said ("eight and a half").
    names += [spoken_fraction for name in names if (spoken_fraction := _FRACTION.sub(_say_fraction, name)) != name]
    out: list[tuple[str, ...]] = []
    # "Usual Suspects, The" / "Blue Angel, The (Blaue Engel, Der)": each name with its article in front.
    for v in (front_article(name) for name in names):
        toks = tuple(spoken(t.norm) for t in words(v))
        if not toks:
            continue
        out.append(toks)
        if toks[0] in ARTICLES and len(toks) > 1:
            out.append(toks[1:])
    return out


@dataclass(frozen=True, slots=True)
class _Alias:
    key: str  # words joined without spaces
    words: tuple[str, ...]
    item_id: int
    needs_cue: bool


class TitleMatcher:
    """Finds catalogue titles in an utterance (see the module docstring)."""

    def __init__(self, catalog: dict[int, CatalogItem], *, min_score: float = 0.88,
                 max_window_words: int = 8) -> None:
        self.catalog = catalog
        self.min_score = min_score
        self.max_window_words = max_window_words
        by_key: dict[str, _Alias] = {}
        colon_parts: dict[tuple[str, ...], list[int]] = {}
        aliases: list[tuple[int, int, tuple[str, ...]]] = []  # (rank in its title's aliases, item id, words)
        for item in catalog.values():
            if not item.year:
                continue  # the one title-less placeholder item
            aliases += [(rank, item.item_id, toks) for rank, toks in enumerate(title_aliases(item.title))]
            if ":" in item.title:
                head = tuple(spoken(t.norm) for t in words(item.title.split(":")[0]))
                colon_parts.setdefault(head, []).append(item.item_id)
        # An alias two titles share goes to the one whose main title it is nearer ("killer" is "Killer
        # (Bulletproof Heart)", not "Die xue shuang xiong (Killer, The)"), then to the lower id.
        for _, item_id, toks in sorted(aliases):
            self._add(by_key, toks, item_id)
        for head, ids in colon_parts.items():
            if len(ids) == 1 and "".join(head) not in by_key and len(head) >= 2:
                self._add(by_key, head, ids[0])
        self._exact = by_key
        self._sorted = sorted(by_key.values(), key=lambda a: (len(a.key), a.key))
        self._lengths = [len(a.key) for a in self._sorted]
        self._keys = [a.key for a in self._sorted]

    @staticmethod
    def _add(by_key: dict[str, _Alias], toks: tuple[str, ...], item_id: int) -> None:
        key = "".join(toks)
        content = [t for t in toks if t not in ARTICLES]
        needs_cue = ((len(content) == 1 and (content[0] in COMMON_WORDS or len(content[0]) <= 3))
                     or all(t in EVERYDAY_WORDS or t in COMMON_WORDS for t in content))
        if len(key) < 2 or key in by_key:  # the first added keeps a duplicated alias
            return
        by_key[key] = _Alias(key, toks, item_id, needs_cue)

    def find(self, tokens: list[Token], blocked: frozenset[str] = frozenset(),
             claimed: frozenset[int] = frozenset()) -> list[tuple[Found, range]]:
        """Title entities with the token index range each covers, non-overlapping, best first.

        Args:
            blocked: words that can never start or end a one- or two-word title window (genre words, fillers).
            claimed: token indexes already used by another entity (a rating such as "one star").
        """
        spoken_toks = [spoken(t.norm) for t in tokens]
        windows: list[tuple[int, int, str]] = []  # (start, words, key) of the windows worth a fuzzy look
        candidates: list[tuple[float, int, int, _Alias]] = []
        for i in range(len(tokens)):
            for n in range(1, min(self.max_window_words, len(tokens) - i) + 1):
                if i + n - 1 in claimed:
                    break
                window = spoken_toks[i:i + n]
                if n <= 2 and (window[0] in blocked or window[-1] in blocked):
                    continue
                key = "".join(window)
                if len(key) < 3:
                    continue
                exact = self._exact.get(key)
                if exact is not None:
                    candidates.append((1.0, n, i, exact))
                elif len(key) >= 6 and not all(w in REQUEST_WORDS for w in window):
                    # Too short for a fuzzy match to mean anything ("wanna" is not "Anna"); a window made only
                    # of request words is the request, not a title.
                    windows.append((i, n, key))
        fuzzy = zip(windows, self._fuzzy(windows), strict=True)
        candidates += [(score, n, i, alias) for (i, n, _), (score, alias) in fuzzy if alias is not None]
        candidates = [c for c in candidates if not c[3].needs_cue or self._cued(spoken_toks, c[2], c[1], c[0])]
        candidates.sort(key=lambda c: (-c[0], -c[1], c[2]))
        taken: set[int] = set()
        found: list[tuple[Found, range]] = []
        for score, n, i, alias in candidates:
            span = range(i, i + n)
            if taken.intersection(span):
                continue
            taken.update(span)
            item = self.catalog[alias.item_id]
            found.append((Found("title", item.title, tokens[i].start, tokens[i + n - 1].end,
                                score=round(score, 4), item_id=item.item_id), span))
        return found

    def _fuzzy(self, windows: list[tuple[int, int, str]]) -> list[tuple[float, _Alias | None]]:
        """Best alias per window by normalised Indel similarity >= ``min_score``, or (0, None).

        One ``rapidfuzz.process.cdist`` over all windows and the aliases of the union of their length bands
        (~20 ns a pair, computed without holding the GIL), then per window the first best alias of its own
        band: Indel similarity >= s needs the shorter/longer length ratio >= s / (2 - s).
        """
        if not windows:
            return []
        ratio = self.min_score / (2 - self.min_score)
        bands = [(bisect.bisect_left(self._lengths, int(len(key) * ratio)),
                  bisect.bisect_right(self._lengths, int(len(key) / ratio) + 1)) for _, _, key in windows]
        first, last = min(lo for lo, _ in bands), max(hi for _, hi in bands)
        scores = process.cdist([key for _, _, key in windows], self._keys[first:last], scorer=fuzz.ratio,
                               score_cutoff=self.min_score * 100, dtype=np.float64)
        out: list[tuple[float, _Alias | None]] = []
        for row, (lo, hi) in zip(scores, bands, strict=True):
            band = row[lo - first:hi - first]
            best = int(np.argmax(band)) if len(band) else -1
            alias = self._sorted[lo + best] if best >= 0 and band[best] > 0 else None
            if alias is None or alias.needs_cue:  # everyday-word titles match exactly or not at all
                out.append((0.0, None))
            else:
                out.append((float(band[best]) / 100.0, alias))
        return out

    @staticmethod
    def _cued(toks: list[str], i: int, n: int, score: float) -> bool:
        before = toks[i - 1] if i > 0 else ""
        if before in ARTICLES and i > 1:
            before = toks[i - 2]
        after = toks[i + n] if i + n < len(toks) else ""
        if after in GENERIC_AFTER:
            return False
        return score == 1.0 and (before in CUES_BEFORE or after in CUES_AFTER)
