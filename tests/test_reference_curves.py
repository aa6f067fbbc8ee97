"""CI regression of learning curves: the committed references and the band check."""

from __future__ import annotations

import pytest

from gaze_rl.commands.reference import REFERENCE_DIR, REFERENCE_RUNS, compare, read_reference, run_reference


def test_every_reference_run_has_a_committed_curve():
    for run in REFERENCE_RUNS:
        assert (REFERENCE_DIR / f"{run.name}.csv").is_file(), "regenerate with: gaze-rl reference --regenerate"


def test_each_method_leaves_the_other_methods_band():
    """A build that trains gaze as the baseline (or the reverse) must fail the reference check."""
    by_task: dict[str, dict[str, list[dict[str, str]]]] = {}
    for run in REFERENCE_RUNS:
        by_task.setdefault(run.env_id, {})[run.method] = read_reference(REFERENCE_DIR / f"{run.name}.csv")
    for task, curves in by_task.items():
        assert set(curves) == {"baseline", "gaze"}, task
        assert compare(curves["gaze"], curves["baseline"]), f"{task}: gaze lies inside the baseline's band"
        assert compare(curves["baseline"], curves["gaze"]), f"{task}: the baseline lies inside gaze's band"


def test_compare_flags_a_hand_edited_point():
    reference = read_reference(REFERENCE_DIR / f"{REFERENCE_RUNS[0].name}.csv")
    assert compare(reference, reference) == []
    edited = [dict(row) for row in reference]
    edited[2]["episodic_return"] = str(1.5 * float(edited[2]["episodic_return"]) + 1.0)  # outside RTOL 0.1
    moved = compare(edited, reference)
    assert len(moved) == 1 and "episode 2" in moved[0] and "episodic_return" in moved[0]
    edited = [dict(row) for row in reference]
    edited[-1]["success_once"] = str(1 - int(edited[-1]["success_once"]))
    assert any("success_once" in line for line in compare(edited, reference))
    assert compare(reference[:-1], reference) == [f"{len(reference) - 1} episodes, reference has {len(reference)}"]


@pytest.mark.slow
@pytest.mark.parametrize("run", REFERENCE_RUNS, ids=lambda r: r.name)
def test_curve_stays_in_its_band(run):
    moved = compare(run_reference(run), read_reference(REFERENCE_DIR / f"{run.name}.csv"))
    assert not moved, "curve points moved:\n" + "\n".join(moved)
