"""The papers' claims the book tests, as records a chapter writes and the results page reads.

A chapter judges each claim it tests with the one comparison rule (:mod:`clmini.study.verdicts`)
and records it with :func:`record`: what the paper says, the paper's numbers, the book's numbers,
the book's verdict, whether that agrees with the paper, and the section that shows it. The
"Results at a glance" page (executed after every chapter) reads them back with :func:`load`, so
its table is computed from the same objects the chapters' prose is glued from, never typed.

Records live in the run cache, ``<runs_dir>/claims/<profile>/<chapter>.json``: the run cache is
what the chapters of one build already share. Each record names the profile and the hashes of
the runs behind it; :func:`load` refuses a record whose runs are no longer in the cache (stale).

The page's pieces are computed here too: :func:`table` (one MyST ``list-table``, a row per claim),
:func:`summary` (how many claims agree, disagree, are not resolved), :func:`provenance` (the profile
and the seeds of the runs behind them), :func:`rule` (the comparison rule in one sentence, its
numbers read from :mod:`clmini.study.verdicts`) and :func:`rule_explanation` (that module's own
explanation), :func:`outcome_chart` (the outcomes per paper, a figure). :func:`check_links` refuses
a record whose paper or section the book cannot link.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from clmini.study import verdicts
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
        if isinstance(expected, bool) or expected not in (-1, 0, 1):  # True == 1: a Peak's expectation
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
    ``margin``: the equivalence margin of an "on par" claim (see :func:`outcome`).

    For an "on par" claim (a :class:`Paired` result, ``expected=0``) the verdict is the equivalence
    test's, not the direction's: "on par (interval within ±margin)" when the interval lies within the
    margin, the direction when one is resolved, else "not resolved"; and the default book numbers
    are the mean difference with its interval (the direction's "not resolved, the interval contains
    0" would read as a failure where the claim agrees).
    """
    result_outcome = outcome(result, expected, margin=margin)
    verdict = verdict_text(result)
    default_numbers = getattr(result, "text", "")
    if isinstance(result, Paired) and expected == 0:
        default_numbers = (f"{result.a} − {result.b} = {result.mean:+.3f} ({100 * result.confidence:g} % CI "
                           f"{result.low:+.3f} to {result.high:+.3f}, {result.n} paired seeds)" if result.n >= 2 else
                           f"{result.a} − {result.b} = {result.mean:+.3f} (1 seed, no interval)")
        if result_outcome == "agrees":
            verdict = f"on par (interval within ±{margin:g})"
        elif result_outcome == "not resolved" and result.n >= MIN_SEEDS:
            verdict = f"not resolved (interval not within ±{margin:g})"
    return Claim(paper=paper, statement=statement, paper_numbers=paper_numbers,
                 book_numbers=book_numbers if book_numbers is not None else default_numbers,
                 verdict=verdict, outcome=result_outcome, section=section, metric=metric, runs=tuple(runs))


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
        try:
            payload = json.loads(path.read_text())
            if payload.get("chapter") != chapter or payload.get("profile") != profile:
                raise ValueError(f"it is the record of chapter {payload.get('chapter')!r} under profile "
                                 f"{payload.get('profile')!r}")
            claims = [Claim(**{**c, "runs": tuple(c["runs"])}) for c in payload["claims"]]
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise ValueError(f"{path}: not a claims record of chapter {chapter!r} under profile {profile!r} "
                             f"({type(err).__name__}: {err}); rerun the chapter") from None
        missing = sorted({h for c in claims for h in c.runs if _run_config_path(h, runs_dir) is None})
        if missing:
            raise ValueError(f"{path}: stale, its runs {missing[:3]}{'...' if len(missing) > 3 else ''} are not in "
                             f"the run cache {runs_dir} nor in the published results; rerun chapter {chapter!r}")
        result[chapter] = claims
    return result


# --- the results page ----------------------------------------------------------------------

#: The columns of :func:`table`, in order.
COLUMNS = ("Paper", "Claim", "Paper's numbers", "Book's numbers", "Verdict", "Outcome", "Shown in")
_BLOCK_START = re.compile(r"^([-+*]|\d+[.)]|#{1,6}|>|:::|```)(?=\s|$)")


def _cell(text: str) -> str:
    """``text`` as the inline content of one list-table cell: one line, never read as a list or heading."""
    text = " ".join(str(text).split()) or "—"
    start = _BLOCK_START.match(text)
    if start is None:
        return text
    if text[0].isdigit():  # "1. x" would open an ordered list: escape its "." or ")"
        end = start.end(1) - 1
        return text[:end] + "\\" + text[end:]
    return "\\" + text


def table(records: Mapping[str, list[Claim]]) -> str:
    """One MyST ``list-table``: a row per claim, in the chapters' order (``records`` as :func:`load`
    returns it). Parse it as MyST (cell metadata ``mystnb: {markdown_format: myst}``): the paper is a
    ``{cite:t}`` citation, the section a ``{ref}`` link and its chapter a ``{doc}`` link (relative: the
    page sits beside the chapters), all checked by the book's build."""
    rows = [COLUMNS]
    for chapter, chapter_claims in records.items():
        for c in chapter_claims:
            rows.append((f"{{cite:t}}`{c.paper}`", f"{_cell(c.statement)} (judged on {_cell(c.metric)})",
                         _cell(c.paper_numbers), _cell(c.book_numbers), _cell(c.verdict), f"**{c.outcome}**",
                         f"{{ref}}`{c.section}`, in {{doc}}`{chapter}`"))
    if len(rows) == 1:
        raise ValueError("no claims to show: every chapter's record is empty")
    lines = ["```{list-table}", ":header-rows: 1", ":class: clmini-results", ""]
    for row in rows:
        lines += [f"* - {row[0]}"] + [f"  - {cell}" for cell in row[1:]]
    return "\n".join(lines + ["```"])


def counts(records: Mapping[str, list[Claim]]) -> dict[str, int]:
    """How many claims have each outcome (every outcome of :data:`OUTCOMES`, in that order)."""
    outcomes = [c.outcome for chapter_claims in records.values() for c in chapter_claims]
    return {o: outcomes.count(o) for o in OUTCOMES}


def _number(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def summary(records: Mapping[str, list[Claim]], profile: str) -> str:
    """One sentence: how many claims the chapters test and how many agree, disagree, are not resolved."""
    n = counts(records)
    total = sum(n.values())
    return (f"Under profile `{profile}`, the chapters test {_number(total, 'claim', 'claims')} of the papers: "
            f"{n['agrees']} {'agrees' if n['agrees'] == 1 else 'agree'} with the paper, "
            f"{n['disagrees']} {'disagrees' if n['disagrees'] == 1 else 'disagree'} with it, and "
            f"{n['not resolved']} {'is' if n['not resolved'] == 1 else 'are'} not resolved at this profile.")


def _run_config_path(run_hash: str, runs_dir: str | Path) -> Path | None:
    """Where the config of run ``run_hash`` is: its ``config.json`` in the run cache, else its record
    in a published results store (:func:`clmini.engine.store.default_stores`); None if neither."""
    from clmini.engine.rundir import CONFIG
    from clmini.engine.store import default_stores, record_path

    local = Path(runs_dir) / run_hash / CONFIG
    if local.is_file():
        return local
    return next((record_path(s, run_hash) for s in default_stores() if record_path(s, run_hash).is_file()), None)


def run_seeds(claims: Iterable[Claim], runs_dir: str | Path) -> list[int]:
    """The seeds of the runs behind ``claims``, read from each run's config in the run cache (or its
    published record).

    ``ValueError`` names a run whose config cannot be read (the record does not match the cache).
    """
    seeds = set()
    for h in sorted({h for c in claims for h in c.runs}):
        path = _run_config_path(h, runs_dir) or Path(runs_dir) / h / "config.json"
        try:
            seed = json.loads(path.read_text())["config"]["seed"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: cannot read the run's seed ({type(err).__name__}: {err}); "
                             "the claims record does not match the run cache: rerun its chapter") from None
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"{path}: the run's seed must be an int, got {seed!r}")
        seeds.add(seed)
    return sorted(seeds)


def _seed_list(seeds: list[int]) -> str:
    if not seeds:
        return "no recorded runs"
    return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds))


def provenance(records: Mapping[str, list[Claim]], profile: str, runs_dir: str | Path) -> str:
    """Where the numbers come from: the profile, and the seeds of each chapter's runs (MyST, with
    ``{doc}`` links to the chapters, relative to a page in the same directory)."""
    seeds = {chapter: run_seeds(chapter_claims, runs_dir) for chapter, chapter_claims in records.items()}
    runs = len({h for chapter_claims in records.values() for c in chapter_claims for h in c.runs})
    text = f"Every number in the table comes from the chapters as they ran under profile `{profile}`"
    if not runs:
        return text + "; their records name no runs of the run cache."
    text += f", from {_number(runs, 'run', 'runs')} of the run cache: "
    groups: dict[tuple[int, ...], list[str]] = {}
    for chapter, chapter_seeds in seeds.items():
        groups.setdefault(tuple(chapter_seeds), []).append(f"{{doc}}`{chapter}`")
    if len(groups) == 1:
        return text + f"{_seed_list(list(next(iter(groups))))} in every chapter."
    return text + "; ".join(f"{_seed_list(list(group))} in {_and(chapters)}" for group, chapters in groups.items()) + "."


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" and {items[-1]}"


def rule(label: str | None = None) -> str:
    """The comparison rule in one sentence, its numbers from :mod:`clmini.study.verdicts`;
    ``label``: a MyST label to link for the rule's full explanation."""
    pct = f"{100 * verdicts.CONFIDENCE:g} %"
    text = (f"Every verdict comes from the book's one comparison rule: the two configurations are trained with "
            f"the same seeds, the per-seed differences get a {pct} Student-t interval on their mean, and the "
            f"verdict names the configuration above the other only when the whole interval is on one side of 0; "
            f"with fewer than {verdicts.MIN_SEEDS} paired seeds, or an interval that contains 0, it is \"not resolved\". "
            f"A trend or a peak along a grid is judged with the same rule on paired differences.")
    if label:
        text += f" The rule in full: {{ref}}`{label}`."
    return text


def rule_explanation() -> str:
    """:mod:`clmini.study.verdicts`' own explanation of the rule (its docstring) as MyST Markdown:
    Sphinx roles such as ``:func:`trend``` become code, so that the page cannot drift from the code."""
    text = verdicts.__doc__.strip()
    text = re.sub(r":data:`~?([A-Z_]+)`", lambda m: str(getattr(verdicts, m.group(1), m.group(1))), text)  # its value
    return re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)


def _bib_entries(bib: Path) -> dict[str, str]:
    """``{key: the entry's text}`` of a BibTeX file (enough of BibTeX for keys and plain fields)."""
    text = bib.read_text()
    starts = list(re.finditer(r"^\s*@\w+\s*\{\s*([^,\s]+)\s*,", text, flags=re.MULTILINE))
    return {m.group(1): text[m.end():(starts[i + 1].start() if i + 1 < len(starts) else len(text))]
            for i, m in enumerate(starts)}


def paper_labels(bib: str | Path) -> dict[str, str]:
    """Short names of the papers of a BibTeX file, for a figure: ``{key: "Wang & Liu 2021"}``
    (first authors' surnames, "et al." past two, and the year); the key itself where a field is missing."""
    labels = {}
    for key, entry in _bib_entries(Path(bib)).items():
        author = re.search(r"\bauthor\s*=\s*\{(.*?)\},?\s*$", entry, flags=re.MULTILINE)
        year = re.search(r"\byear\s*=\s*\{?(\d{4})", entry)
        if not author or not year:
            labels[key] = key
            continue
        surnames = [name.split(",")[0].strip(" {}") for name in re.split(r"\s+and\s+", author.group(1))]
        who = " & ".join(surnames) if len(surnames) <= 2 else f"{surnames[0]} et al."
        labels[key] = f"{who} {year.group(1)}"
    return labels


#: The colours of the outcomes in :func:`outcome_chart`.
OUTCOME_COLORS = {"agrees": "#1b7837", "disagrees": "#c51b7d", "not resolved": "#bababa"}


def outcome_chart(records: Mapping[str, list[Claim]], labels: Mapping[str, str] | None = None, ax=None):
    """A horizontal bar per paper (in the order the claims come), split into its claims' outcomes.

    ``labels``: the papers' names (:func:`paper_labels`; default: the keys). Returns the Axes.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    papers: dict[str, dict[str, int]] = {}
    for chapter_claims in records.values():
        for c in chapter_claims:
            papers.setdefault(c.paper, dict.fromkeys(OUTCOMES, 0))[c.outcome] += 1
    if not papers:
        raise ValueError("no claims to draw: every chapter's record is empty")
    names = [(labels or {}).get(p, p) for p in papers]
    if ax is None:
        ax = plt.subplots(figsize=(6.5, 0.55 * len(papers) + 1.3))[1]
    left = [0] * len(papers)
    for o in OUTCOMES:
        widths = [tally[o] for tally in papers.values()]
        ax.barh(names, widths, left=left, color=OUTCOME_COLORS[o], label=o, edgecolor="white")
        for y, (x0, w) in enumerate(zip(left, widths)):
            if w:
                ax.text(x0 + w / 2, y, str(w), ha="center", va="center",
                        color="black" if o == "not resolved" else "white")
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()  # the first paper on top
    ax.set_xlabel("claims tested (count)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(OUTCOMES), frameon=False)
    ax.figure.tight_layout()
    return ax


def check_links(records: Mapping[str, list[Claim]], bib: str | Path, sources: Mapping[str, str | Path]) -> None:
    """``ValueError`` unless every claim's paper is a key of the bibliography ``bib`` and its section a
    MyST label ``(label)=`` of its chapter's source (``sources``: chapter -> its source file): the page
    fails here, not in the build."""
    bib = Path(bib)
    keys = set(_bib_entries(bib))
    problems = []
    for chapter, chapter_claims in records.items():
        source = Path(sources[chapter])
        labels = set(re.findall(r"^\(([^)\s]+)\)=\s*$", source.read_text(), flags=re.MULTILINE))
        for c in chapter_claims:
            if c.paper not in keys:
                problems.append(f"{chapter}: paper {c.paper!r} is not a key of {bib}")
            if c.section not in labels:
                problems.append(f"{chapter}: section {c.section!r} is not a label `({c.section})=` of {source}")
    if problems:
        raise ValueError("claims the results page cannot link:\n  " + "\n  ".join(problems))
