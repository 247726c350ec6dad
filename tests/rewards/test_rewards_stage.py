"""`coevolve rewards`: the configured terms on seeded shapes pairs; bad config named before any work."""

from __future__ import annotations

import json

import pytest

from coevolve.cli.main import main
from coevolve.config import compose_config, to_typed
from rewards import RewardTerms
from rewards.check import shapes_pairs


def _run(tmp_path, capsys, *overrides) -> tuple[int, dict | None, str]:
    run_dir = tmp_path / "run"
    try:
        code = main(["rewards", f"run_dir={run_dir}", "reward.check.num_pairs=12", *overrides])
    except SystemExit as exit_:
        code = exit_.code
    _, err = capsys.readouterr()
    path = run_dir / "rewards" / "check.json"
    return code, json.loads(path.read_text()) if path.exists() else None, err


@pytest.mark.parametrize("group", ["default", "reconstruction"])
def test_every_default_term_ranks_every_positive_first(group, tmp_path, capsys):
    code, report, _ = _run(tmp_path, capsys, f"reward={group}")
    assert code == 0 and report["num_pairs"] == 12 and report["dropped_groups"] == 0
    for name, term in report["terms"].items():
        assert term["positive_outranks_negative"] == 1.0, name
        assert term["mean_positive"] > term["mean_negative"]
    for segment, advantage in report["advantages"].items():
        assert advantage["mean_positive"] > 0 > advantage["mean_negative"], segment


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "reward.terms.image_alignment.scorer.name=shapes_verifyer",
            "reward.terms.image_alignment.scorer.name: unknown scorer",
        ),
        ("+reward.terms.image_alignment.scorer.gradd=true", "unexpected keyword argument 'gradd'"),
        ("reward.terms.self_consistency.scorer.judge.name=nope", "reward.terms.self_consistency.scorer.judge.name"),
        ("reward.terms.image_alignment.segments=[plan,imag]", "unknown segment 'imag'"),
        ("reward.scale_rewards=std", "reward.scale_rewards"),
    ],
)
def test_bad_reward_config_is_named_before_any_work(override, message, tmp_path, capsys):
    code, report, err = _run(tmp_path, capsys, override)
    assert code == 2 and report is None
    assert message in err


def test_a_misspelt_term_key_fails_at_composition():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="weigth"):
        compose_config(["reward.terms.image_alignment.weigth=2"])


def test_the_composed_default_config_builds_terms():
    terms = RewardTerms.from_config(to_typed(compose_config([])).reward)
    assert [t.name for t in terms.terms] == ["image_alignment", "self_consistency"]
    rewards = terms(shapes_pairs(3, seed=0))
    assert set(rewards.advantages) == {"plan", "image", "verdict"}
