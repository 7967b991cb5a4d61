"""Text front end A/B: our sentence rules vs pysbd, our number words vs num2words (issue 16).

Sentence boundaries: every MovieLens title with a period in it ("Mr. Holland's Opus", "L.A. Confidential",
"Super Mario Bros.", "When Harry Met Sally...") placed in each reply template the orchestrator speaks, at the
start, middle and end of a sentence, plus hand-written cases. A splitter scores a reply when it returns
exactly the sentences the template was made of. Speed is the median time to split one reply.

Numbers: replies with numbers (years, counts, ratings, ordinals, decimals) synthesised by the TTS stage with
each number speller, then recognised by faster-whisper tiny.en (as ``tts_bench.py`` does); WER per speller.

    flock /tmp/voxpipe-bench.lock python benchmarks/text_frontend.py [--skip-wer]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.tts_replies import REPLIES  # noqa: E402
from services.common.catalog import spoken_title  # noqa: E402
from services.common.sentences import split_sentences  # noqa: E402
from services.tts import numbers  # noqa: E402

NUMBER_REPLIES = [r for r in REPLIES if any(c.isdigit() for c in r)] + [
    "There are 1682 movies and 100000 ratings in our catalogue.",
    "2001: A Space Odyssey came out in 1968.",
    "It is rated 3.5 out of 5 by 583 users.",
    "Apollo 13 is the 21st most rated movie in the catalogue.",
    "Here is a comedy from 2005, and another from 2010.",
    "The Godfather is 175 minutes long and came out in 1972.",
    "You have rated 12 movies. Your 3rd favourite is Fargo.",
    "I found 42 thrillers from the 1990s.",
    "Toy Story was the first of 3 movies, released in 1995.",
    "Casablanca from 1942 has 243 ratings with a mean of 4.46.",
]
TEMPLATES = (
    ("How about {t} from 1995?", "You might also like Heat and Fargo."),
    ("If you liked Fargo, try {t} from 1996.", "Also good: Heat and Babe."),
    ("If you liked Heat, try Babe from 1995.", "Also good: {t} and Fargo."),
    ("{t} came out in 1997.", "It's a comedy movie."),
    ("Got it, 4 stars for {t}!", "I'll use that for your next recommendations."),
)
HAND = [
    ["No.", "I liked it."],
    ["It is rated 3.5 out of 5.", "Next line here."],
    ["J. R. R. Tolkien wrote it.", "Then Star Wars: Episode IV - A New Hope came out!"],
    ["Try Pt. 2 of it.", "Vol. 3 is good too."],
    ["It was No. 1 in the U.S. in 1996.", "Really?!", "Yes."],
    ["Wow... that's great.", "I loved it."],
    ["Sorry, I couldn't find a movie for that.", "No Western from the 1930s.", "Try another genre or decade."],
    ["Dr. Strangelove is a satire from 1964 about the cold war."],
    ["Mrs. Doubtfire is a family comedy with Robin Williams."],
    ["It's set in St. Louis vs. New York, e.g. the streets.", "Enjoy!"],
]


def _titles() -> list[str]:
    from services.common.settings import cache_root

    with (cache_root(os.environ) / "models" / "recommender" / "items.tsv").open(encoding="utf-8", newline="") as f:
        return [spoken_title(r["title"]) for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                if "." in r["title"]]


def labelled() -> list[list[str]]:
    return [[s.format(t=title) for s in template] for title in _titles() for template in TEMPLATES] + HAND


def _pysbd() -> Callable[[str], list[str]]:
    import pysbd

    segmenter = pysbd.Segmenter(language="en", clean=False)
    return lambda text: [s.strip() for s in segmenter.segment(text) if s.strip()]


def splitters() -> dict[str, Callable[[str], list[str]]]:
    return {"voxpipe (pysbd + 2 fixes)": lambda text: [s.text for s in split_sentences(text)], "pysbd 0.3.4 alone": _pysbd()}


def sentence_table() -> None:
    cases = labelled()
    print(f"## Sentence boundaries ({len(cases)} replies: {len(_titles())} MovieLens titles with a period "
          f"x {len(TEMPLATES)} templates + {len(HAND)} hand cases)\n")
    print("| splitter | replies split exactly | wrong | median µs per reply |")
    print("|---|---|---|---|")
    wrong_examples = {}
    for name, split in splitters().items():
        wrong = [c for c in cases if split(" ".join(c)) != c]
        times = []
        for c in cases:
            text = " ".join(c)
            start = time.perf_counter()
            split(text)
            times.append(time.perf_counter() - start)
        wrong_examples[name] = wrong[:6]
        print(f"| {name} | {len(cases) - len(wrong)}/{len(cases)} ({(1 - len(wrong) / len(cases)) * 100:.1f} %) "
              f"| {len(wrong)} | {statistics.median(times) * 1e6:.0f} |")
    for name, wrong in wrong_examples.items():
        print(f"\n{name}, first wrong replies (expected -> got):")
        for c in wrong:
            print(f"- {c!r} -> {splitters()[name](' '.join(c))!r}")


@contextmanager
def num2words_speller():
    """Swap services.tts.numbers' spellers for num2words' (English) for the duration."""
    from num2words import num2words

    saved = {name: getattr(numbers, name) for name in ("cardinal", "ordinal", "year", "decimal")}
    numbers.cardinal = lambda n: num2words(n, lang="en")
    numbers.ordinal = lambda n: num2words(n, lang="en", to="ordinal")
    numbers.year = lambda n: num2words(n, lang="en", to="year")
    numbers.decimal = lambda text: num2words(float(text.replace(",", "")), lang="en")
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(numbers, name, fn)


async def number_table() -> None:
    from benchmarks.tts_bench import intelligibility
    from services.tts.text import normalize

    print(f"\n## Numbers to words ({len(NUMBER_REPLIES)} replies with numbers; TTS stage -> faster-whisper "
          "tiny.en; WER after each speller's own normaliser)\n")
    print("| speller | WER | errors / words |")
    print("|---|---|---|")
    spoken = {}
    for name, speller in (("voxpipe rules", contextmanager(lambda: iter([None]))), ("num2words 0.5.14", num2words_speller)):
        with speller():
            result = await intelligibility(NUMBER_REPLIES)
            spoken[name] = [normalize(r) for r in NUMBER_REPLIES[-6:]]
        print(f"| {name} | {result['wer'] * 100:.2f} % | {result['errors']} / {result['ref_words']} |")
    print("\nwhat each speller says (last replies):")
    for name, texts in spoken.items():
        for text in texts:
            print(f"- {name}: {text}")


async def run(skip_wer: bool) -> None:
    print(f"# Text front end — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"Python {platform.python_version()}\n")
    sentence_table()
    if not skip_wer:
        await number_table()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-wer", action="store_true", help="sentence boundaries only")
    asyncio.run(run(parser.parse_args().skip_wer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
