"""`coevolve` command line: one sub-command per stage (DESIGN.md section 2).

`sft`, `rl`, `eval`, `rewards` and `rollout` are Hydra apps (`coevolve sft recipe=shapes engine=deepspeed`, `-m`
sweeps; see `coevolve/cli/stages.py`); `bootstrap`, `demo`, `pipeline` and `bench` take plain options.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _bootstrap(args: argparse.Namespace) -> int:
    from coevolve.bootstrap.tiny import build_tiny_checkpoint

    manifest = build_tiny_checkpoint(args.out, seed=args.seed, overwrite=args.overwrite)
    summary = {
        "out": str(Path(args.out).absolute()),
        "seconds": manifest["seconds"],
        "peak_rss_mib": _peak_rss_mib(),
        "num_parameters": manifest["num_parameters"],
        "vq_training": manifest["vq_training"],
    }
    print(json.dumps(summary, indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from coevolve.demo import run_demo

    run_demo(args.model, args.out, seed=args.seed, guidance_scale=args.guidance_scale)
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from coevolve.pipeline import run_pipeline

    run_pipeline(Path(args.out), seed=args.seed)
    return 0


def _bench(args: argparse.Namespace) -> int:
    from coevolve.bench import quality

    if args.what == "verifier":
        result = quality.verifier_accuracy_report(args.n, args.seed)
    elif args.what == "sampler":
        from coevolve.bench.sampler import CASES, sampler_report

        cases = tuple(args.cases.split(",")) if args.cases else CASES
        result = sampler_report(args.model, device=args.device, repeats=args.repeats, cases=cases)
    elif args.what == "rollout":
        from coevolve.bench.rollout import rollout_report

        if args.model is None:
            raise SystemExit("coevolve bench rollout: --model DIR (a checkpoint) is required")
        result = rollout_report(args.model, repeats=args.repeats)
    else:
        if args.model is None:
            raise SystemExit(
                "coevolve bench vq: --model DIR (a bootstrap output) is required"
            )
        result = quality.vq_fidelity_report(args.model, args.n, args.seed)
    print(json.dumps(result, indent=2))
    return 0


def _peak_rss_mib() -> float:
    import resource

    # ru_maxrss is KiB on Linux.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coevolve", description=__doc__.splitlines()[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    boot = commands.add_parser(
        "bootstrap", help="build a tiny Janus checkpoint for the shapes world"
    )
    boot.add_argument("kind", choices=["tiny"])
    boot.add_argument(
        "--out",
        required=True,
        help="output directory (created; must be empty or absent)",
    )
    boot.add_argument("--seed", type=int, default=0)
    boot.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty output directory"
    )
    boot.set_defaults(run=_bootstrap)

    demo = commands.add_parser(
        "demo", help="render, tokenize, generate and verify a few shapes images"
    )
    demo.add_argument(
        "--model", required=True, help="a Janus checkpoint directory (HF format)"
    )
    demo.add_argument(
        "--out", required=True, help="directory for the demo's images and summary"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--guidance-scale", type=float, default=5.0)
    demo.set_defaults(run=_demo)

    pipe = commands.add_parser(
        "pipeline", help="the main job on the built-in shapes world"
    )
    pipe.add_argument(
        "--out", default="runs/shapes", help="run directory (default: runs/shapes)"
    )
    pipe.add_argument("--seed", type=int, default=0)
    pipe.set_defaults(run=_pipeline)

    for stage, text in (
        ("sft", "SFT warm start on the task mixture (Hydra overrides: recipe=NAME, key=value, -m)"),
        ("eval", "evaluate model.path on the shapes world (Hydra overrides)"),
        ("rewards", "check the reward terms on seeded shapes pairs (Hydra overrides)"),
        ("rollout", "run the rollout program once on Ray workers: checkpoint=DIR (Hydra overrides)"),
        ("rl", "GRPO from the SFT checkpoint on the recipe's rollout programs (Hydra overrides: recipe=NAME)"),
    ):
        commands.add_parser(stage, help=text, add_help=False)

    bench = commands.add_parser("bench", help="print a figure as JSON")
    bench.add_argument(
        "what",
        choices=["verifier", "vq", "sampler", "rollout"],
        help="verifier: accuracy on seeded pairs; vq: fidelity of VQ round trips; "
        "sampler: images/s of our sampler vs transformers' generate, side by side; "
        "rollout: trajectories/s with 1 and 2 rollout actors and the time share of each phase",
    )
    bench.add_argument(
        "--model", help="checkpoint directory (for vq and rollout; for sampler's tiny cases)"
    )
    bench.add_argument(
        "--device",
        default="cpu",
        help="sampler: cpu or cuda (cuda adds the Janus-Pro-1B-shaped case)",
    )
    bench.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="sampler, rollout: timed runs per case (median)",
    )
    bench.add_argument(
        "--cases",
        default=None,
        help="sampler: comma-separated cases, default all (tiny cases need --model; janus-pro-1b needs cuda)",
    )
    bench.add_argument("--n", type=int, default=1000)
    bench.add_argument("--seed", type=int, default=0)
    bench.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("sft", "rl", "eval", "rewards", "rollout"):
        # Hydra parses the rest (overrides, -m, --cfg ...) and reports its own errors.
        from coevolve.cli.stages import run_stage

        return run_stage(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        print(f"coevolve {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
