"""`trace_row`: one trajectory (+ its rewards) as one flat record, its images written as PNG files.

Columns (`TRACE_COLUMNS` always present, None where the trajectory has no such part):
run, step, group, id, program, prompt, policy_version; the text of every text segment under its
name (plan, verdict, reflection, caption, regen_verdict, reflection_2, ...); the PNG path of
every image segment as `{name}_path` (image_path, regen_image_path, ...) and of the source image
as `source_image_path`, relative to `root`; final_image (the final image's segment name), p_yes,
rounds; `seconds/{phase}` (the trajectory's share of its batch's time per phase); from
`rewards.terms.Rewards.rows()`: `reward/{term}`, `reward/{term}/normalized`,
`reward/{term}/details`, `advantage/{segment}` (absent when the trajectory was not scored, or its
group was dropped). Every value is JSON-serialisable.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is not needed to read traces
    from coevolve.trajectory import Trajectory

TRACE_COLUMNS = (
    "run", "step", "group", "id", "program", "prompt", "policy_version", "plan", "image_path", "verdict", "p_yes",
    "reflection", "regen_image_path", "caption", "source_image_path", "final_image", "rounds",
)  # fmt: skip
IMAGE_DIR = "images"


def _file_stem(trajectory_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in trajectory_id)


def trace_row(
    trajectory: Trajectory,
    root: str | Path,
    run: str,
    step: int,
    rewards_row: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The trace record of `trajectory`; its images are written under `root/images/` (see the module doc).

    `rewards_row`: the trajectory's entry of `Rewards.rows()` (matched by id), or None."""
    root = Path(root)
    (root / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    stem = _file_stem(trajectory.id)
    row: dict[str, Any] = dict.fromkeys(TRACE_COLUMNS)
    row.update(
        run=run, step=step, group=trajectory.group, id=trajectory.id, program=trajectory.program,
        prompt=trajectory.prompt, policy_version=trajectory.policy_version,
        final_image=trajectory.final_image_name if any(s.kind == "image" for s in trajectory.segments) else None,
        p_yes=trajectory.info.get("p_yes"), rounds=trajectory.info.get("rounds"),
    )  # fmt: skip

    def save(image, name: str) -> str:
        relative = f"{IMAGE_DIR}/{stem}.{name}.png"
        image.save(root / relative)
        return relative

    for segment in trajectory.segments:
        if segment.kind == "text":
            row[segment.name] = segment.text
        else:
            row[f"{segment.name}_path"] = save(segment.image, segment.name)
    if trajectory.source_image is not None:
        row["source_image_path"] = save(trajectory.source_image, "source")
    for phase, seconds in trajectory.info.get("seconds", {}).items():
        row[f"seconds/{phase}"] = seconds
    if rewards_row is not None:
        if rewards_row.get("id") != trajectory.id:
            raise ValueError(f"rewards row {rewards_row.get('id')!r} given for trajectory {trajectory.id!r}")
        row.update({key: value for key, value in rewards_row.items() if key not in ("id", "group")})
    return row
