"""The stage registry (:mod:`fmadask.stages`): one value per stage, read by ``fmadask run``,
``fmadask predict`` and the job spec; and run folders of the format before it resume unchanged."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fmadask import stages
from fmadask.errors import ConfigError
from fmadask.jobspec import SECTIONS, build_spec
from fmadask.run import marker_path, plan, stage_params

#: Stage markers written by main at d133779 (before the registry) for the job specs in each
#: folder's job.json (tests/fixtures/markers_d133779/README.md says how they were made).
OLD_MARKERS = Path(__file__).parent / "fixtures" / "markers_d133779"


def test_the_registry_lists_every_stage_once_in_order() -> None:
    names = [s.name for s in stages.stages()]
    assert names == ["featurize", "classical", "cnn", "fusion"]
    for s in stages.stages():
        assert SECTIONS[s.name] is s.section          # the job spec's section is the stage's
        assert all(names.index(r) < names.index(s.name) for r in s.reads)
    assert set(stages.model_kinds()) == {"classical", "cnn", "fusion"}


def _old_folder(name: str, tmp_path: Path) -> tuple[Path, dict]:
    """A run folder holding the old markers of job ``name``, and that job's spec (raw)."""
    raw = json.loads((OLD_MARKERS / name / "job.json").read_text())
    run = tmp_path / name
    (run / "_stages").mkdir(parents=True)
    for s in stages.stages():
        shutil.copy(OLD_MARKERS / name / f"{s.name}.json", run / "_stages" / f"{s.name}.json")
    raw["output"]["dir"] = str(run)
    return run, raw


@pytest.mark.parametrize("name", ["defaults", "paper"])
def test_a_run_folder_of_the_old_format_resumes_without_redoing_a_stage(name: str,
                                                                        tmp_path: Path) -> None:
    run, raw = _old_folder(name, tmp_path)
    spec = build_spec(raw, f"{name}.toml")
    assert [(p.stage, p.action) for p in plan(spec)] == [
        ("featurize", "skip"), ("classical", "skip"), ("cnn", "skip"), ("fusion", "skip")]
    for s in stages.stages():      # the same parameters, key for key (the markers' bytes)
        old = json.loads(marker_path(run, s.name).read_text())["params"]
        assert json.dumps(stage_params(spec, s.name)) == json.dumps(old)


def test_an_old_run_folder_with_other_parameters_is_refused_naming_the_change(
        tmp_path: Path) -> None:
    _, raw = _old_folder("paper", tmp_path)
    raw["cnn"]["epochs"] = 4
    with pytest.raises(ConfigError, match=r"cnn outputs made with other parameters "
                                          r"\(epochs: 3 -> 4\)"):
        plan(build_spec(raw, "paper.toml"))
