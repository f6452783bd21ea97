"""notebooks/profiles.yaml: each parameter value has one home. A chapter's defaults are its
parameters cell; a profile lists only what it changes, and only parameters the cell declares."""
from __future__ import annotations

from pathlib import Path

import pytest

from clmini.book.parameters import load_profiles, read_parameters

REPO = Path(__file__).resolve().parents[2]
PROFILES = load_profiles(REPO / "notebooks" / "profiles.yaml")
ENTRIES = [(stem, profile, name, value) for stem, profiles in PROFILES.items()
           for profile, values in profiles.items() for name, value in values.items()]


def test_every_chapter_has_a_smoke_profile():
    chapters = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.md"))
    assert chapters and sorted(PROFILES) == chapters
    assert all("smoke" in PROFILES[stem] for stem in chapters)


@pytest.mark.parametrize("stem, profile, name, value", ENTRIES, ids=[f"{s}.{p}.{n}" for s, p, n, _ in ENTRIES])
def test_a_profile_lists_only_what_it_changes(stem, profile, name, value):
    parameters = read_parameters(REPO / "notebooks" / f"{stem}.md")
    assert name in parameters, f"{stem}.{profile}: {name!r} is not a parameter of the chapter"
    assert parameters[name].check(value, "profile") != parameters[name].default, \
        f"{stem}.{profile}.{name} repeats the chapter's default {parameters[name].source}"


def test_the_simclr_chapters_share_one_base_run():
    """Chapters 1-3 declare no base-run value of their own: they change SIMCLR_BASE through `simclr`."""
    from clmini.study.experiments import SIMCLR_BASE

    for stem in ("01_infonce_temperature", "02_temperature_free", "03_dystress", "05_head_to_head"):
        parameters = read_parameters(REPO / "notebooks" / f"{stem}.md")
        assert parameters["simclr"].default == {}
        assert not set(SIMCLR_BASE) & set(parameters), f"{stem} declares base-run fields itself"
    # equal changes under every profile: chapters 2 and 3 reuse chapter 1's runs
    simclr_chapters = ("01_infonce_temperature", "02_temperature_free", "03_dystress", "05_head_to_head")
    for profile in {p for stem in simclr_chapters for p in PROFILES[stem]}:
        shared = {stem: [PROFILES[stem].get(profile, {}).get(name) for name in ("simclr", "dataset", "arch", "optimizer")]
                  for stem in simclr_chapters}
        assert len({str(v) for v in shared.values()}) == 1, f"profile {profile}: the base runs differ: {shared}"
