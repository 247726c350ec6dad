"""`coevolve` command line: one sub-command per stage (DESIGN.md section 2).

`pipeline`, `sft`, `rl`, `eval`, `rewards` and `rollout` are Hydra apps (`coevolve sft recipe=shapes engine=deepspeed`, `-m`
sweeps; see `coevolve/cli/stages.py`); `bootstrap`, `demo`, `bench` and `traces` take plain options.
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
        "vision_training": manifest["vision_training"],
    }
    print(json.dumps(summary, indent=2))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from coevolve.demo import run_demo

    run_demo(args.model, args.out, seed=args.seed, guidance_scale=args.guidance_scale)
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
    elif args.what == "learner":
        from coevolve.bench.learner import learner_report

        result = learner_report(device=args.device, shape=args.shape, batch=args.batch, repeats=args.repeats,
                                peak=args.peak_tflops)  # fmt: skip
    elif args.what == "rl-step":
        from coevolve.bench.rl_step import rl_step_report

        if args.model is None:
            raise SystemExit("coevolve bench rl-step: --model DIR (a Janus checkpoint) is required")
        result = rl_step_report(args.model, steps=args.steps, weight_sync=args.weight_sync, device=args.device,
                                overrides=tuple(args.override))  # fmt: skip
    else:
        if args.model is None:
            raise SystemExit(
                "coevolve bench vq: --model DIR (a bootstrap output) is required"
            )
        result = quality.vq_fidelity_report(args.model, args.n, args.seed)
    print(json.dumps(result, indent=2))
    return 0


def _geneval(args: argparse.Namespace) -> int:
    from coevolve.eval import geneval_score

    if args.action == "prompts":
        from coevolve.eval.geneval import write_metadata
        from coevolve.eval.shapes import shapes_prompts

        if args.per_category < 1:
            raise ValueError(f"--per-category must be >= 1, got {args.per_category}")
        examples = shapes_prompts(args.per_category, args.seed)
        write_metadata(args.out, [example.metadata for example in examples], overwrite=args.overwrite)
        print(f"wrote {len(examples)} prompts to {args.out}")
        return 0
    if args.action == "score":
        rows = geneval_score.score_folder(args.imagedir)
        geneval_score.write_results(rows, args.outfile)
    else:
        rows = geneval_score.read_results(args.results)
    print(geneval_score.summary(rows))
    return 0


def _geneval_parser(commands: argparse._SubParsersAction) -> None:
    geneval = commands.add_parser(
        "geneval", help="GenEval on the shapes world: its prompt file, the verifier as its scorer, its summary"
    )
    actions = geneval.add_subparsers(dest="action", required=True)
    prompts = actions.add_parser(
        "prompts", help="write the shapes eval's prompt set as a GenEval evaluation_metadata.jsonl"
    )
    prompts.add_argument("--out", required=True, help="the metadata file to write")
    prompts.add_argument(
        "--per-category", type=int, default=20, help="prompts per GenEval category (default 20, as eval's)"
    )
    prompts.add_argument("--seed", type=int, default=1234, help="default 1234, as eval's: the same prompts")
    prompts.add_argument("--overwrite", action="store_true", help="replace an existing file")
    score = actions.add_parser(
        "score",
        help="judge a GenEval-layout folder of shapes images with the verifier (GenEval's evaluate_images.py), "
        "write results.jsonl and print GenEval's summary",
    )
    score.add_argument(
        "imagedir", help="OUTDIR/<index>/metadata.jsonl + samples/<k>.png (`coevolve eval suite=geneval`)"
    )
    score.add_argument("--outfile", default="results.jsonl", help="results file (replaced; default results.jsonl)")
    summary = actions.add_parser("summary", help="print GenEval's summary of a results.jsonl (summary_scores.py)")
    summary.add_argument("results", help="a results.jsonl, ours or GenEval's")
    geneval.set_defaults(run=_geneval)


def _traces(args: argparse.Namespace) -> int:
    from coevolve.traces import commands
    from coevolve.traces.store import TraceStore

    if args.action == "report":
        from coevolve.traces.report import write_report

        write_report(args.path, args.out)
        print(f"wrote {args.out}")
        return 0
    if args.action == "serve":
        from coevolve.traces.report import serve

        serve(args.path, args.port)
        return 0
    store = TraceStore.open(args.path)
    if args.action == "ls":
        print(commands.ls(store))
    elif args.action == "show":
        print(commands.show(store, args.step, group=args.group, trajectory_id=args.id))
    else:
        steps = args.step or None
        chosen = {"where": args.where, "named": args.named, "below": args.below, "steps": steps}
        if args.action == "query":
            columns = args.columns.split(",") if args.columns else None
            print(commands.query(store, **chosen, columns=columns, limit=args.limit))
        else:
            count = commands.export(store, args.out, args.format, **chosen)
            print(f"wrote {count} rows to {args.out}")
    return 0


def _traces_parser(commands: argparse._SubParsersAction) -> None:
    traces = commands.add_parser(
        "traces", help="list, show, query and export the trace store of a run (coevolve/traces)"
    )
    actions = traces.add_subparsers(dest="action", required=True)
    run_help = "a run directory (its rl/traces/ or rollout/*/traces/), a rollout output or a store directory"

    ls = actions.add_parser("ls", help="steps with row counts and each reward term's mean")
    ls.add_argument("path", metavar="RUN", help=run_help)

    show = actions.add_parser("show", help="one step's trajectories, one readable block each")
    show.add_argument("path", metavar="RUN", help=run_help)
    show.add_argument("--step", type=int, required=True)
    show.add_argument("--group", help="only this group (prompt)")
    show.add_argument("--id", help="only this trajectory")

    def filters(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("path", metavar="RUN", help=run_help)
        parser.add_argument(
            "--where", help='a DuckDB SQL condition over the columns, e.g. \'"reward/format" < 0.5 AND step > 10\''
        )
        parser.add_argument(
            "--named", action="append", default=[], metavar="NAME",
            help="a named query: aha (No, then a better regenerated image), disagree (self-check vs judge), dropped",
        )  # fmt: skip
        parser.add_argument(
            "--below", action="append", default=[], metavar="TERM=VALUE", help="reward term TERM below VALUE"
        )
        parser.add_argument("--step", type=int, action="append", help="only this step (repeatable)")

    query = actions.add_parser("query", help="the rows matching --where / --named / --below")
    filters(query)
    query.add_argument("--columns", help="comma-separated columns to print (default: step, id, prompt, verdict, rewards)")
    query.add_argument("--limit", type=int, default=20, help="rows printed (default 20)")

    export = actions.add_parser("export", help="write rows (all, or those matching the filters) to a file")
    filters(export)
    export.add_argument("--format", choices=["jsonl", "parquet", "csv"], required=True)
    export.add_argument("--out", required=True, help="output file (replaced)")

    report = actions.add_parser("report", help="a self-contained HTML viewer of the run's traces")
    report.add_argument("path", metavar="RUN", help=run_help)
    report.add_argument("--out", required=True, help="the HTML file to write")

    serve = actions.add_parser("serve", help="serve the HTML viewer of the run's traces")
    serve.add_argument("path", metavar="RUN", help=run_help)
    serve.add_argument("--port", type=int, default=8000)
    traces.set_defaults(run=_traces)


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

    for stage, text in (
        ("pipeline", "the main job: bootstrap, SFT, RL, eval, trace report (Hydra overrides; recipe=shapes by default)"),
        ("sft", "SFT warm start on the task mixture (Hydra overrides: recipe=NAME, key=value, -m)"),
        ("eval", "evaluate model.path: suite=shapes (default), geneval or dpg (Hydra overrides)"),
        ("rewards", "check the reward terms on seeded shapes pairs (Hydra overrides)"),
        ("rollout", "run the rollout program once on Ray workers: checkpoint=DIR (Hydra overrides)"),
        ("rl", "GRPO from the SFT checkpoint on the recipe's rollout programs (Hydra overrides: recipe=NAME)"),
    ):
        commands.add_parser(stage, help=text, add_help=False)

    bench = commands.add_parser("bench", help="print a figure as JSON")
    bench.add_argument(
        "what",
        choices=["verifier", "vq", "sampler", "rollout", "learner", "rl-step"],
        help="verifier: accuracy on seeded pairs; vq: fidelity of VQ round trips; "
        "sampler: images/s of our sampler vs transformers' generate, side by side; "
        "rollout: trajectories/s with 1 and 2 rollout actors and the time share of each phase; "
        "learner: learner tokens/s and MFU on a random Janus; "
        "rl-step: the phase times of full RL steps (coevolve rl recipe=shapes, small sizes)",
    )
    bench.add_argument(
        "--model", help="checkpoint directory (for vq, rollout and rl-step; for sampler's tiny cases)"
    )
    bench.add_argument(
        "--device",
        default="cpu",
        help="sampler: cpu or cuda (cuda adds the Janus-Pro-1B-shaped case); learner: cpu or cuda "
        "(cuda: Janus-Pro-1B shape in bf16); rl-step: cpu or cuda (learner and rollout workers share one GPU)",
    )
    bench.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="sampler, rollout, learner: timed runs per case (median)",
    )
    bench.add_argument("--shape", help="learner: small (CPU default), mid or janus-pro-1b (cuda default)")
    bench.add_argument("--batch", type=int, help="learner: trajectories per step (default 4)")
    bench.add_argument(
        "--peak-tflops", type=float, help="learner: the device's peak TFLOP/s for MFU (default: a table of GPUs)"
    )
    bench.add_argument("--steps", type=int, default=2, help="rl-step: RL steps to run (default 2)")
    bench.add_argument(
        "--weight-sync", default="object_store", choices=["object_store", "collective"], help="rl-step: rl.weight_sync"
    )
    bench.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="rl-step: a config override (repeatable)"
    )
    bench.add_argument(
        "--cases",
        default=None,
        help="sampler: comma-separated cases, default all (tiny cases need --model; janus-pro-1b needs cuda)",
    )
    bench.add_argument("--n", type=int, default=1000)
    bench.add_argument("--seed", type=int, default=0)
    bench.set_defaults(run=_bench)
    _traces_parser(commands)
    _geneval_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("pipeline", "sft", "rl", "eval", "rewards", "rollout"):
        # Hydra parses the rest (overrides, -m, --cfg ...) and reports its own errors.
        from coevolve.cli.stages import run_stage

        return run_stage(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
        print(f"coevolve {command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
