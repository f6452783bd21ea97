"""The papers' claims the book tests, as records a chapter writes and the results page reads.

A chapter judges each claim it tests with the one comparison rule (:mod:`clmini.study.verdicts`)
and records it with :func:`record`: what the paper says, the paper's numbers, the book's numbers,
the book's verdict, whether that agrees with the paper, and the section that shows it. The
"Results at a glance" page (executed after every chapter) reads them back with :func:`load`, so
its table is computed from the same objects the chapters' prose is glued from, never typed.

Records live in the run cache, ``<runs_dir>/claims/<profile>/<chapter>.json``: the run cache is
what the chapters of one build already share. Each record names the profile and the hashes of
the runs behind it; :func:`load` refuses a record whose runs are no longer in the cache (stale).
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from clmini.study.verdicts import MIN_SEEDS, Paired, Peak, Trend

#: How a claim's verdict relates to the paper's: the only values of :attr:`Claim.outcome`.
OUTCOMES = ("agrees", "disagrees", "not resolved")


@dataclass(frozen=True)
class Claim:
    """One claim of one paper, as the book tested it.

    ``paper``: its BibTeX key (``book/references.bib``); ``statement``: the claim in words;
    ``paper_numbers``: the paper's own numbers behind it (or what it reports in words);
    ``book_numbers``: the book's (mean and interval); ``verdict``: the rule's verdict in words;
    ``outcome``: one of :data:`OUTCOMES`; ``section``: the MyST label of the section showing it;
    ``metric``: what it was judged on; ``runs``: the hashes of the runs behind it.
    """

    paper: str
    statement: str
    paper_numbers: str
    book_numbers: str
    verdict: str
    outcome: str
    section: str
    metric: str
    runs: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        for name in ("paper", "statement", "section", "metric", "verdict"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ValueError(f"claim {self.statement!r}: {name} must be a non-empty string")
        object.__setattr__(self, "runs", tuple(self.runs))


def outcome(result: Paired | Trend | Peak, expected, *, margin: float | None = None) -> str:
    """Whether ``result`` agrees with the paper's ``expected`` finding.

    ``expected``: for a :class:`~clmini.study.verdicts.Paired` (A against B), ``+1`` if the paper finds
    A above B, ``-1`` below, ``0`` if it finds them on par; for a :class:`Trend`, ``"rises"`` or
    ``"falls"``; for a :class:`Peak`, ``True`` (a reverse U inside the grid).

    "On par" (``expected=0``) needs an equivalence ``margin``: it agrees when the whole interval lies
    within ``±margin``, disagrees when the difference is resolved and the interval reaches past the
    margin, and is not resolved otherwise (a wide interval around 0 shows nothing either way).
    """
    if isinstance(result, Paired):
        if expected not in (-1, 0, 1):
            raise ValueError(f"expected for a paired comparison: -1, 0 or +1, got {expected!r}")
        if expected == 0:
            if margin is None or not margin > 0:
                raise ValueError(f"'on par' (expected=0) needs an equivalence margin > 0, got {margin!r}")
            if result.n >= MIN_SEEDS and -margin < result.low and result.high < margin:
                return "agrees"
            return "disagrees" if result.resolved else "not resolved"
        return "not resolved" if result.resolved == 0 else "agrees" if result.resolved == expected else "disagrees"
    if isinstance(result, Trend):
        if expected not in ("rises", "falls"):
            raise ValueError(f"expected for a trend: 'rises' or 'falls', got {expected!r}")
        if result.direction == "not resolved":
            return "not resolved"
        return "agrees" if result.direction == expected and not result.reversals else "disagrees"
    if isinstance(result, Peak):
        if expected is not True:
            raise ValueError(f"expected for a peak: True (a reverse U inside the grid), got {expected!r}")
        if result.interior:
            return "agrees"
        # Best at an end of the grid is a finding against a reverse U only when that end is
        # resolved above the interior; otherwise the grid does not resolve the shape.
        return "not resolved"
    raise TypeError(f"result must be a Paired, Trend or Peak, got {type(result).__name__}")


def verdict_text(result: Paired | Trend | Peak) -> str:
    """The verdict in a few words, for a table cell."""
    if isinstance(result, Paired):
        return result.verdict
    if isinstance(result, Trend):
        if result.direction == "not resolved":
            return "no resolved trend"
        return f"{result.direction}{'' if not result.reversals else ', not monotonically'}"
    if isinstance(result, Peak):
        return "reverse U (interior peak)" if result.interior else "no resolved reverse U"
    raise TypeError(f"result must be a Paired, Trend or Peak, got {type(result).__name__}")


def claim(result: Paired | Trend | Peak, expected, *, paper: str, statement: str, paper_numbers: str,
          section: str, metric: str, book_numbers: str | None = None, runs: Iterable[str] = (),
          margin: float | None = None) -> Claim:
    """A :class:`Claim` from a verdict of the rule; ``book_numbers`` defaults to the result's own text;
    ``margin``: the equivalence margin of an "on par" claim (see :func:`outcome`)."""
    return Claim(paper=paper, statement=statement, paper_numbers=paper_numbers,
                 book_numbers=book_numbers if book_numbers is not None else result.text,
                 verdict=verdict_text(result), outcome=outcome(result, expected, margin=margin), section=section,
                 metric=metric, runs=tuple(runs))


def claims_dir(runs_dir: str | Path, profile: str) -> Path:
    return Path(runs_dir) / "claims" / profile


def record(chapter: str, claims: Iterable[Claim], *, profile: str, runs_dir: str | Path) -> Path:
    """Write ``chapter``'s claims (replacing any earlier record of it for ``profile``), atomically."""
    claims = list(claims)
    if not claims:
        raise ValueError(f"{chapter}: no claims to record")
    if not all(isinstance(c, Claim) for c in claims):
        raise ValueError(f"{chapter}: claims must be Claim objects (clmini.study.claims.claim)")
    directory = claims_dir(runs_dir, profile)
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"chapter": chapter, "profile": profile, "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
               "claims": [asdict(c) for c in claims]}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{chapter}.", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=1, ensure_ascii=False)
    os.replace(tmp, directory / f"{chapter}.json")
    return directory / f"{chapter}.json"


def load(chapters: Iterable[str], *, profile: str, runs_dir: str | Path) -> dict[str, list[Claim]]:
    """Every chapter's recorded claims for ``profile``, in the order of ``chapters``.

    ``ValueError`` names a chapter with no record (it has not run under this profile) or one whose
    runs are no longer in the run cache (a stale record).
    """
    directory = claims_dir(runs_dir, profile)
    result = {}
    for chapter in chapters:
        path = directory / f"{chapter}.json"
        if not path.is_file():
            raise ValueError(f"{path}: no claims recorded for chapter {chapter!r} under profile {profile!r}; "
                             "run the chapter first (python -m clmini book runs every chapter before this page)")
        payload = json.loads(path.read_text())
        claims = [Claim(**{**c, "runs": tuple(c["runs"])}) for c in payload["claims"]]
        missing = sorted({h for c in claims for h in c.runs if not (Path(runs_dir) / h).is_dir()})
        if missing:
            raise ValueError(f"{path}: stale, its runs {missing[:3]}{'...' if len(missing) > 3 else ''} are not in "
                             f"the run cache {runs_dir}; rerun chapter {chapter!r}")
        result[chapter] = claims
    return result
