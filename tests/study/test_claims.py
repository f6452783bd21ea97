"""clmini.study.claims: outcomes of every result type, the records, and the results page's pieces."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from clmini.study import claims, verdicts
from clmini.study.claims import Claim, outcome
from clmini.study.verdicts import paired, peak, trend

BASE = [0.70, 0.80, 0.75]  # per-seed values of B; the seeds move it far more than any difference


def shifted(by, base=BASE):
    """A's per-seed values: B's plus ``by`` (one number per seed)."""
    return [b + d for b, d in zip(base, by)]


ABOVE = paired(shifted([0.020, 0.021, 0.019]), BASE, a="A", b="B")         # A resolved above B
BELOW = paired(shifted([-0.020, -0.021, -0.019]), BASE, a="A", b="B")      # B resolved above A
NOISY = paired(shifted([0.050, -0.040, 0.010]), BASE, a="A", b="B")        # interval contains 0
TWO_SEEDS = paired(shifted([0.020, 0.021], BASE[:2]), BASE[:2], a="A", b="B")  # big, but two seeds
TINY = paired(shifted([0.001, -0.001, 0.0005]), BASE, a="A", b="B")        # interval within ±0.01
SMALL_RESOLVED = paired(shifted([0.005, 0.0051, 0.0049]), BASE, a="A", b="B")  # resolved, within ±0.01
WIDE = paired(shifted([0.030, -0.030, 0.001]), BASE, a="A", b="B")         # contains 0, reaches past ±0.01
TINY_TWO_SEEDS = paired(shifted([0.001, -0.001], BASE[:2]), BASE[:2], a="A", b="B")


def test_the_synthetic_results_have_the_verdicts_the_cases_need():
    assert (ABOVE.resolved, BELOW.resolved, NOISY.resolved, TWO_SEEDS.resolved) == (1, -1, 0, 0)
    assert SMALL_RESOLVED.resolved == 1 and 0 < SMALL_RESOLVED.low and SMALL_RESOLVED.high < 0.01
    assert TINY.resolved == 0 and -0.01 < TINY.low and TINY.high < 0.01
    assert WIDE.resolved == 0 and (WIDE.low < -0.01 or WIDE.high > 0.01)


@pytest.mark.parametrize("result, expected, want", [
    (ABOVE, +1, "agrees"), (ABOVE, -1, "disagrees"),
    (BELOW, -1, "agrees"), (BELOW, +1, "disagrees"),
    (NOISY, +1, "not resolved"), (NOISY, -1, "not resolved"),
    (TWO_SEEDS, +1, "not resolved"),  # the interval is far from 0, but 2 seeds never resolve
])
def test_paired_a_direction(result, expected, want):
    assert outcome(result, expected) == want


@pytest.mark.parametrize("result, want", [
    (TINY, "agrees"),                 # the whole interval within ±margin
    (SMALL_RESOLVED, "agrees"),       # resolved above 0, but by less than the margin: on par
    (ABOVE, "disagrees"),             # resolved, and the interval reaches past the margin
    (BELOW, "disagrees"),
    (WIDE, "not resolved"),           # a wide interval around 0 shows nothing either way
    (TINY_TWO_SEEDS, "not resolved"),  # narrow, but fewer than MIN_SEEDS
])
def test_paired_on_par_needs_the_interval_within_the_margin(result, want):
    assert outcome(result, 0, margin=0.01) == want


@pytest.mark.parametrize("margin", [None, 0, -0.01])
def test_on_par_without_a_positive_margin_is_refused(margin):
    with pytest.raises(ValueError, match="equivalence margin"):
        outcome(TINY, 0, margin=margin)


@pytest.mark.parametrize("result, expected", [
    (ABOVE, 2), (ABOVE, "rises"), (ABOVE, True),
    (trend([0.1, 0.5], [BASE, BASE]), +1), (trend([0.1, 0.5], [BASE, BASE]), "up"),
    (peak([0.1, 0.2, 0.5], [BASE, BASE, BASE]), "rises"), (peak([0.1, 0.2, 0.5], [BASE, BASE, BASE]), 1),
])
def test_an_expectation_of_the_wrong_kind_is_refused(result, expected):
    with pytest.raises(ValueError, match="expected for a"):
        outcome(result, expected)


def test_a_result_of_another_type_is_refused():
    with pytest.raises(TypeError, match="Paired, Trend or Peak"):
        outcome(0.5, +1)
    with pytest.raises(TypeError):
        claims.verdict_text("A above B")


GRID = [0.1, 0.5, 1.0]
RISING = [BASE, shifted([0.02, 0.021, 0.019]), shifted([0.04, 0.041, 0.039])]
RISING_WITH_A_DIP = [BASE, shifted([0.06, 0.061, 0.059]), shifted([0.04, 0.041, 0.039])]
FLAT = [BASE, shifted([0.03, -0.03, 0.0]), shifted([0.01, -0.02, 0.005])]


@pytest.mark.parametrize("runs, expected, want", [
    (RISING, "rises", "agrees"),
    (RISING, "falls", "disagrees"),
    (RISING_WITH_A_DIP, "rises", "disagrees"),  # resolved overall, but a step resolved the other way
    (FLAT, "rises", "not resolved"),
    (FLAT, "falls", "not resolved"),
    (list(reversed(RISING)), "falls", "agrees"),
])
def test_trend(runs, expected, want):
    result = trend(GRID, runs)
    assert outcome(result, expected) == want


@pytest.mark.parametrize("runs, want", [
    ([BASE, shifted([0.03, 0.031, 0.029]), shifted([0.001, 0.0, 0.002])], "agrees"),  # a resolved reverse U
    ([BASE, shifted([0.03, -0.03, 0.01]), shifted([0.001, 0.0, 0.002])], "not resolved"),  # best inside, unresolved
    (RISING, "not resolved"),  # best at an end: the grid does not resolve the shape
])
def test_peak(runs, want):
    assert outcome(peak(GRID, runs), True) == want


def make_claim(**changes) -> Claim:
    fields = dict(result=ABOVE, expected=+1, paper="feeney2023sincere", statement="SINCERE is above SupCon",
                  paper_numbers="CIFAR-2: 92.30 vs 90.25 [paper code]", section="ch4-verdicts", metric="kNN accuracy",
                  runs=["aaaa", "bbbb"])
    fields.update(changes)
    return claims.claim(fields.pop("result"), fields.pop("expected"), **fields)


def test_claim_takes_verdict_outcome_and_numbers_from_the_result():
    c = make_claim()
    assert (c.verdict, c.outcome, c.book_numbers) == ("A above B", "agrees", ABOVE.text)
    assert c.runs == ("aaaa", "bbbb")
    assert make_claim(book_numbers="0.80 vs 0.78").book_numbers == "0.80 vs 0.78"
    rises = make_claim(result=trend(GRID, RISING), expected="rises")
    assert rises.verdict == "rises" and rises.outcome == "agrees"
    dip = make_claim(result=trend(GRID, RISING_WITH_A_DIP), expected="rises")
    assert dip.verdict == "rises, not monotonically" and dip.outcome == "disagrees"
    assert make_claim(result=peak(GRID, RISING), expected=True).verdict == "no resolved reverse U"


def test_an_on_par_claim_states_the_equivalence_verdict():
    c = make_claim(result=TINY, expected=0, margin=0.01)
    assert (c.verdict, c.outcome) == ("on par (interval within ±0.01)", "agrees")
    assert c.book_numbers.startswith("A − B = ") and "95 % CI" in c.book_numbers and "not resolved" not in c.book_numbers
    wide = make_claim(result=WIDE, expected=0, margin=0.01)
    assert (wide.verdict, wide.outcome) == ("not resolved (interval not within ±0.01)", "not resolved")
    assert make_claim(result=ABOVE, expected=0, margin=0.01).verdict == "A above B"
    assert make_claim(result=TINY_TWO_SEEDS, expected=0, margin=0.01).verdict == "not resolved"


@pytest.mark.parametrize("changes, message", [
    ({"outcome": "agree"}, "outcome must be one of"),
    ({"paper": ""}, "paper must be a non-empty string"),
    ({"statement": "  "}, "statement must be a non-empty string"),
    ({"section": None}, "section must be a non-empty string"),
    ({"metric": ""}, "metric must be a non-empty string"),
    ({"verdict": ""}, "verdict must be a non-empty string"),
])
def test_claim_validation(changes, message):
    fields = {**make_claim().__dict__, **changes}
    with pytest.raises(ValueError, match=message):
        Claim(**fields)


def test_claim_runs_become_a_tuple():
    assert Claim(**{**make_claim().__dict__, "runs": ["x"]}).runs == ("x",)


def fake_runs(runs_dir: Path, seeds: dict[str, int]) -> None:
    """Run directories as the run cache holds them, with the config that names each run's seed."""
    for h, seed in seeds.items():
        (runs_dir / h).mkdir(parents=True, exist_ok=True)
        (runs_dir / h / "config.json").write_text(json.dumps({"hash": h, "config": {"seed": seed}}))


def test_record_and_load_round_trip(tmp_path):
    fake_runs(tmp_path, {"aaaa": 0, "bbbb": 1, "cccc": 2})
    first = [make_claim(), make_claim(result=NOISY, statement="A ties B", runs=["cccc"])]
    second = [make_claim(result=trend(GRID, RISING), expected="rises", paper="wang2021understanding", runs=[])]
    path = claims.record("01_one", first, profile="smoke", runs_dir=tmp_path)
    assert path == tmp_path / "claims" / "smoke" / "01_one.json"
    claims.record("02_two", second, profile="smoke", runs_dir=tmp_path)
    loaded = claims.load(["02_two", "01_one"], profile="smoke", runs_dir=tmp_path)
    assert list(loaded) == ["02_two", "01_one"]  # the order asked for
    assert loaded == {"01_one": first, "02_two": second}
    assert not list((tmp_path / "claims" / "smoke").glob(".*"))  # no temporary file left behind
    claims.record("01_one", first[:1], profile="smoke", runs_dir=tmp_path)  # a rerun replaces the record
    assert claims.load(["01_one"], profile="smoke", runs_dir=tmp_path)["01_one"] == first[:1]


def test_record_refuses_nothing_and_what_is_not_a_claim(tmp_path):
    with pytest.raises(ValueError, match="no claims to record"):
        claims.record("01_one", [], profile="smoke", runs_dir=tmp_path)
    with pytest.raises(ValueError, match="must be Claim objects"):
        claims.record("01_one", [make_claim().__dict__], profile="smoke", runs_dir=tmp_path)


def test_load_refuses_a_missing_record(tmp_path):
    fake_runs(tmp_path, {"aaaa": 0, "bbbb": 1})
    claims.record("01_one", [make_claim()], profile="smoke", runs_dir=tmp_path)
    with pytest.raises(ValueError, match="no claims recorded for chapter '02_two' under profile 'smoke'"):
        claims.load(["01_one", "02_two"], profile="smoke", runs_dir=tmp_path)
    with pytest.raises(ValueError, match="no claims recorded for chapter '01_one' under profile 'quick'"):
        claims.load(["01_one"], profile="quick", runs_dir=tmp_path)  # another profile's record does not count


def test_load_refuses_a_stale_record(tmp_path):
    fake_runs(tmp_path, {"aaaa": 0})  # run bbbb is not in the cache (deleted, or another cache)
    claims.record("01_one", [make_claim()], profile="smoke", runs_dir=tmp_path)
    with pytest.raises(ValueError, match=r"stale, its runs \['bbbb'\] are not in the run cache"):
        claims.load(["01_one"], profile="smoke", runs_dir=tmp_path)
    fake_runs(tmp_path, {"bbbb": 1})
    assert claims.load(["01_one"], profile="smoke", runs_dir=tmp_path)


@pytest.mark.parametrize("payload", [
    "{not json",
    json.dumps({"chapter": "02_two", "profile": "smoke", "claims": []}),   # another chapter's record
    json.dumps({"chapter": "01_one", "profile": "smoke", "claims": [{"paper": "x"}]}),
    json.dumps({"chapter": "01_one", "profile": "smoke",
                "claims": [{**make_claim().__dict__, "runs": [], "outcome": "maybe"}]}),
])
def test_load_refuses_a_damaged_record(tmp_path, payload):
    path = tmp_path / "claims" / "smoke" / "01_one.json"
    path.parent.mkdir(parents=True)
    path.write_text(payload)
    with pytest.raises(ValueError, match="not a claims record of chapter '01_one' under profile 'smoke'"):
        claims.load(["01_one"], profile="smoke", runs_dir=tmp_path)


# --- the results page's pieces ------------------------------------------------------------------


def records() -> dict[str, list[Claim]]:
    return {"01_one": [make_claim(), make_claim(result=NOISY, statement="- a claim | with a pipe\nand a line")],
            "02_two": [make_claim(result=BELOW, paper="wang2021understanding", section="ch2-sweep",
                                  paper_numbers="1. first")]}


def test_counts_and_summary():
    assert claims.counts(records()) == {"agrees": 1, "disagrees": 1, "not resolved": 1}
    assert claims.summary(records(), "smoke") == (
        "Under profile `smoke`, the chapters test 3 claims of the papers: 1 agrees with the paper, "
        "1 disagrees with it, and 1 is not resolved at this profile.")
    two = {"01_one": [make_claim(), make_claim()]}
    assert "2 agree with the paper, 0 disagree with it, and 0 are not resolved" in claims.summary(two, "quick")


def test_table_is_one_list_table_with_citations_and_section_links():
    text = claims.table(records())
    lines = text.splitlines()
    assert lines[0] == "```{list-table}" and lines[-1] == "```" and ":header-rows: 1" in lines
    rows = [i for i, line in enumerate(lines) if line.startswith("* - ")]
    assert len(rows) == 4  # the header and one row per claim
    assert lines[rows[0]:rows[0] + len(claims.COLUMNS)] == (
        [f"* - {claims.COLUMNS[0]}"] + [f"  - {c}" for c in claims.COLUMNS[1:]])
    assert "* - {cite:t}`feeney2023sincere`" in lines and "* - {cite:t}`wang2021understanding`" in lines
    assert "  - {ref}`ch4-verdicts`, in {doc}`01_one`" in lines and "  - {ref}`ch2-sweep`, in {doc}`02_two`" in lines
    assert "  - **disagrees**" in lines and "  - **not resolved**" in lines
    # one line per cell, and no cell opens a list of its own
    assert "  - \\- a claim | with a pipe and a line (judged on kNN accuracy)" in lines
    assert "  - 1\\. first" in lines


def test_table_refuses_no_claims():
    with pytest.raises(ValueError, match="no claims to show"):
        claims.table({"01_one": []})


def test_run_seeds_and_provenance(tmp_path):
    fake_runs(tmp_path, {"aaaa": 0, "bbbb": 1, "cccc": 2})
    same = {"01_one": [make_claim()], "02_two": [make_claim(runs=["bbbb", "aaaa"])]}
    assert claims.run_seeds(same["01_one"], tmp_path) == [0, 1]
    assert claims.provenance(same, "quick", tmp_path) == (
        "Every number in the table comes from the chapters as they ran under profile `quick`, from 2 runs of "
        "the run cache: seeds 0, 1 in every chapter.")
    differ = {"01_one": [make_claim()], "02_two": [make_claim(runs=["cccc"])], "03_three": [make_claim()]}
    assert claims.provenance(differ, "full", tmp_path).endswith(
        "from 3 runs of the run cache: seeds 0, 1 in {doc}`01_one` and {doc}`03_three`; seed 2 in {doc}`02_two`.")
    assert claims.provenance({"01_one": [make_claim(runs=[])]}, "smoke", tmp_path).endswith(
        "their records name no runs of the run cache.")


def test_run_seeds_refuses_a_run_without_its_config(tmp_path):
    (tmp_path / "aaaa").mkdir()
    with pytest.raises(ValueError, match="cannot read the run's seed"):
        claims.run_seeds([make_claim(runs=["aaaa"])], tmp_path)


def test_rule_takes_its_numbers_from_verdicts(monkeypatch):
    text = claims.rule(label="results-rule")
    assert "95 % Student-t interval" in text and f"fewer than {verdicts.MIN_SEEDS} paired seeds" in text
    assert text.endswith("{ref}`results-rule`.")
    monkeypatch.setattr(verdicts, "MIN_SEEDS", 5)
    monkeypatch.setattr(verdicts, "CONFIDENCE", 0.9)
    assert "90 % Student-t" in claims.rule() and "fewer than 5 paired seeds" in claims.rule()


def test_rule_explanation_is_the_modules_own_text_without_sphinx_roles():
    text = claims.rule_explanation()
    assert text.startswith(verdicts.__doc__.strip().splitlines()[0])
    assert ":func:" not in text and ":data:" not in text and ":mod:" not in text
    assert f"fewer than {verdicts.MIN_SEEDS} paired seeds" in text


def check_links(records, root):
    return claims.check_links(records, root / "book" / "references.bib",
                              {c: root / "notebooks" / f"{c}.md" for c in records})


def test_check_links(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "references.bib").write_text(
        "@misc{feeney2023sincere,\n  title = {SINCERE},\n}\n@inproceedings{ wang2021understanding ,\n}\n")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "01_one.md").write_text("# One\n\n(ch4-verdicts)=\n## Verdicts\n")
    (tmp_path / "notebooks" / "02_two.md").write_text("# Two\n\nSee (ch2-sweep)= in the text, not a label.\n")
    with pytest.raises(ValueError) as err:
        check_links(records(), tmp_path)
    assert "02_two: section 'ch2-sweep' is not a label `(ch2-sweep)=`" in str(err.value)
    assert "01_one" not in str(err.value)
    (tmp_path / "notebooks" / "02_two.md").write_text("# Two\n\n(ch2-sweep)=\n## Sweep\n")
    check_links(records(), tmp_path)
    with pytest.raises(ValueError, match="paper 'nobody2020' is not a key of"):
        check_links({"01_one": [make_claim(paper="nobody2020")]}, tmp_path)


def test_paper_labels(tmp_path):
    bib = tmp_path / "references.bib"
    bib.write_text("@inproceedings{wang2021understanding,\n  author = {Wang, Feng and Liu, Huaping},\n"
                   "  year = {2021},\n}\n@article{manna2025dystress,\n  author = {Manna, Siladittya and Dey, R. and "
                   "Pal, Umapada},\n  title = {DySTreSS},\n  year = 2025,\n}\n@misc{noyear,\n  author = {A, B},\n}\n")
    assert claims.paper_labels(bib) == {"wang2021understanding": "Wang & Liu 2021",
                                        "manna2025dystress": "Manna et al. 2025", "noyear": "noyear"}


def test_outcome_chart_counts_each_papers_outcomes():
    import matplotlib

    matplotlib.use("Agg")
    ax = claims.outcome_chart(records(), {"feeney2023sincere": "Feeney & Hughes 2023"})
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Feeney & Hughes 2023", "wang2021understanding"]
    widths = {(round(p.get_y() + p.get_height() / 2), p.get_facecolor()[:3]): p.get_width() for p in ax.patches}
    green, pink, grey = (matplotlib.colors.to_rgb(claims.OUTCOME_COLORS[o]) for o in claims.OUTCOMES)
    assert widths[(0, green)] == 1 and widths[(0, grey)] == 1 and widths[(0, pink)] == 0
    assert widths[(1, pink)] == 1 and widths[(1, green)] == 0
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(claims.OUTCOMES)
    with pytest.raises(ValueError, match="no claims to draw"):
        claims.outcome_chart({"01_one": []})
