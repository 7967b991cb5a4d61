"""Reply text from templates. The first sentence is kept short: TTS streams it first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.common.catalog import spoken_title

UNAVAILABLE_REASON = "the popularity list is not available"


@dataclass(frozen=True)
class Movie:
    title: str
    year: int
    genres: tuple[str, ...] = ()
    reason: str = ""

    @property
    def spoken(self) -> str:
        return spoken_title(self.title)

    @property
    def with_year(self) -> str:
        return f"{self.spoken} from {self.year}" if self.year else self.spoken


def recommend(movies: Sequence[Movie], *, empty_reason: str = "") -> str:
    if not movies:
        if empty_reason == UNAVAILABLE_REASON:
            return "Sorry, I can't look up movies right now. Please try again in a moment."
        why = f" {empty_reason[0].upper()}{empty_reason[1:].rstrip('.')}." if empty_reason else ""
        return f"Sorry, I couldn't find a movie for that.{why} Try another genre or decade."
    head = f"How about {movies[0].with_year}?"
    reason = movies[0].reason
    if reason:
        head += f" I picked it {reason}." if reason.startswith("because") else f" It's a {reason}."
    rest = [m.spoken for m in movies[1:]]
    if rest:
        head += " You might also like " + (" and ".join(rest) if len(rest) <= 2 else ", ".join(rest[:-1]) + " and " + rest[-1]) + "."
    return head


def similar(source: str, movies: Sequence[Movie]) -> str:
    if not movies:
        return f"Sorry, I couldn't find anything like {spoken_title(source)}."
    names = [m.with_year for m in movies]
    head = f"If you liked {spoken_title(source)}, try {names[0]}."
    if len(names) > 1:
        head += " Also good: " + " and ".join(m.spoken for m in movies[1:3]) + "."
    return head


def movie_info(movie: Movie) -> str:
    genres = ", ".join(g.lower() for g in movie.genres) or "film"
    return f"{movie.spoken} came out in {movie.year}. It's a {genres} movie." if movie.year else f"{movie.spoken} is a {genres} movie."


def rated(title: str, stars: float) -> str:
    stars_text = f"{stars:g} star" + ("" if stars == 1 else "s")
    return f"Got it, {stars_text} for {spoken_title(title)}. I'll use that for your next recommendations."


def need_title(intent: str) -> str:
    if intent == "rate":
        return "Which movie would you like to rate, and how many stars?"
    if intent == "similar_to":
        return "Something like which movie? Tell me a title you enjoyed."
    return "Which movie do you mean?"


HELP = ("You can ask me for a movie by genre or decade, like a comedy from the nineties. "
        "You can also ask for something like a film you enjoyed, or tell me how many stars you'd give a movie.")
GREETING = "Hi! What kind of movie are you in the mood for?"
GOODBYE = "Enjoy your movie. Goodbye!"
UNKNOWN = "Sorry, I didn't get that. You can ask for a comedy from the nineties, or something like Toy Story."
NO_MORE = "That's all I have for that request. Try another genre or decade."
