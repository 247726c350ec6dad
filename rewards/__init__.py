"""Rewards: pluggable scorers and how their scores become per-segment advantages (DESIGN.md section 5).

- `base`: the `Scorer` interface, `ScoreBatch`, `ScorerError`, the registry and `build_scorer`;
- built-in scorers: `shapes_verifier`, `yes_no_judge` (`judge`), `self_consistency`
  (`consistency`), `reconstruction` and `caption_reconstruction` (with the image similarities of
  `similarity`), `clip_score` (`clip`), `introspective_format` and `shapes_caption_format` (`format`);
- `config` + `terms`: reward terms (scorer, weight, trained segments, failure policy) and
  `RewardTerms`, which turns a batch of `coevolve.trajectory.Trajectory` into `Rewards`;
- `advantages`: the group baselines and scales (`normalize`: grpo, dr_grpo, rloo ×
  `scale_rewards`) and the zero-spread groups dynamic sampling drops;
- `check`: the reward designer's sanity check behind `coevolve rewards`.

Nothing here knows of Ray or the learner: the RL driver calls `RewardTerms`, locally or inside a
reward actor.
"""

from rewards.advantages import ADVANTAGE_ESTIMATORS, normalize, zero_spread_groups
from rewards.base import FINAL, SCORERS, SOURCE, Resources, ScoreBatch, Scorer, ScorerError, build_scorer, register_scorer
from rewards.clip import ClipScore
from rewards.config import RewardCheckConfig, RewardConfig, TermConfig
from rewards.consistency import SelfConsistency
from rewards.format import IntrospectiveFormat, ShapesCaptionFormat
from rewards.judge import YesNoJudge
from rewards.reconstruction import DECODERS, CaptionDecoder, CaptionReconstruction, Reconstruction
from rewards.shapes_verifier import ShapesVerifier
from rewards.similarity import EMBEDDERS, ImageSimilarity
from rewards.terms import Rewards, RewardTerm, RewardTerms

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "DECODERS",
    "EMBEDDERS",
    "FINAL",
    "SCORERS",
    "SOURCE",
    "CaptionDecoder",
    "CaptionReconstruction",
    "ClipScore",
    "ImageSimilarity",
    "IntrospectiveFormat",
    "Reconstruction",
    "Resources",
    "RewardCheckConfig",
    "RewardConfig",
    "RewardTerm",
    "RewardTerms",
    "Rewards",
    "ScoreBatch",
    "Scorer",
    "ScorerError",
    "SelfConsistency",
    "ShapesCaptionFormat",
    "ShapesVerifier",
    "TermConfig",
    "YesNoJudge",
    "build_scorer",
    "normalize",
    "register_scorer",
    "zero_spread_groups",
]
