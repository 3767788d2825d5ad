"""kernel_setup's version rules on plain strings (no network, no pip): which requirements the
installed versions fall short of, which of those the image keeps and so refuses, and which
dm-haiku fits a jax. `nox -s kaggle_image` runs the whole installer on the image's versions."""
from __future__ import annotations

import pytest

from kit.kaggle import kernel_setup
from kit.kaggle.kernel_setup import Shortfall

HAIKU = "dm-haiku[jax]>=0.0.12,<0.1"
# Requires-Dist of dm-haiku's wheels on PyPI (METADATA of 0.0.15, 0.0.16, 0.0.17): each
# declares its jax only under the `jax` extra.
HAIKU_REQUIRES = {
    version: ["absl-py>=0.7.1", "jmp>=0.0.2", "numpy>=1.18.0", "tabulate>=0.8.9",
              f'jax>={jax}; extra == "jax"', f'jaxlib>={jax}; extra == "jax"',
              'flax>=0.7.1; extra == "flax"']
    for version, jax in (("0.0.15", "0.7.2"), ("0.0.16", "0.8.1"), ("0.0.17", "0.11.0"))}


def haiku_beside(haiku: str, jax: str) -> Shortfall | None:
    installed = {"dm-haiku": haiku, "jax": jax, "jaxlib": jax}
    return kernel_setup.shortfall(HAIKU, installed, lambda name: HAIKU_REQUIRES[haiku])


@pytest.mark.parametrize("requirement, name", [
    (HAIKU, "dm-haiku"), ("scikit_learn>=1.6,<2", "scikit-learn"), ("Six>=1.16  ", "six")])
def test_a_requirement_names_its_distribution_canonically(requirement, name):
    assert kernel_setup.name_of(requirement) == name


def test_a_version_outside_the_range_is_a_shortfall_not_only_an_absent_name():
    assert kernel_setup.shortfall("rich>=13,<15", {"rich": "15.0.0"}, lambda n: []) == Shortfall(
        "rich>=13,<15", "rich", "rich 15.0.0", kept=False)
    assert kernel_setup.shortfall("rich>=13,<15", {"rich": "14.3.4"}, lambda n: []) is None
    assert kernel_setup.shortfall("optax>=0.2.2", {}, lambda n: []).found == "no optax"


def test_pre_releases_count_and_markers_that_do_not_hold_are_skipped():
    assert kernel_setup.shortfall("jaxlib>=0.7", {"jaxlib": "0.7.2rc1"}, lambda n: []) is None
    assert kernel_setup.shortfall('tomli>=1; python_version < "3.0"', {}, lambda n: []) is None


@pytest.mark.parametrize("jax, fits", [("0.7.2", {"0.0.15"}), ("0.10.2", {"0.0.15", "0.0.16"})])
def test_the_dm_haiku_that_fits_a_jax_is_the_one_whose_jax_extra_declares_it(jax, fits):
    assert {haiku for haiku in HAIKU_REQUIRES if haiku_beside(haiku, jax) is None} == fits
    assert "declares jax>=0.11.0 beside jax " + jax in haiku_beside("0.0.17", jax).found


def test_the_images_jax_outside_the_range_is_refused_in_one_line_and_the_rest_installed():
    installed = {"jax": "0.6.2", "jaxlib": "0.6.2", "rich": "15.0.0"}
    entries = kernel_setup.shortfalls(["jax>=0.7,<0.13", "rich>=13,<15", "optax>=0.2.2"],
                                      installed, lambda n: [])
    assert [(e.name, e.kept) for e in entries] == [("jax", True), ("rich", False),
                                                  ("optax", False)]
    line = kernel_setup.refusal(entries)
    assert "\n" not in line and "jax 0.6.2" in line and "jax>=0.7,<0.13" in line
    assert kernel_setup.refusal(entries[1:]) is None  # nothing kept: installed instead


def test_an_absent_jax_is_installed_not_refused():
    (entry,) = kernel_setup.shortfalls(["jax>=0.7"], {}, lambda n: [])
    assert not entry.kept and kernel_setup.refusal([entry]) is None


def test_pins_keep_everything_but_what_is_being_replaced():
    installed = {"jax": "0.7.2", "rich": "15.0.0", "odd": "unknown version"}
    assert kernel_setup.pins(installed, {"rich"}) == ["jax==0.7.2"]


def test_the_installed_versions_are_the_ones_an_import_finds(tmp_path, monkeypatch):
    import jax

    shadow = tmp_path / "jax-0.1.0.dist-info"
    shadow.mkdir()
    (shadow / "METADATA").write_text("Metadata-Version: 2.1\nName: jax\nVersion: 0.1.0\n")
    assert kernel_setup.installed_versions()["jax"] == jax.__version__
    monkeypatch.syspath_prepend(str(tmp_path))
    assert kernel_setup.installed_versions()["jax"] == "0.1.0"
