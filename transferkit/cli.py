"""The `transferkit` command: demo, finetune, pretrain, evaluate, predict, list-backbones, list-tasks."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .errors import TransferkitError


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", help="task name, see `transferkit list-tasks`")
    p.add_argument("--data", required=True, help="data folder, file, or YAML mapping of split: path")
    p.add_argument("--backbone", help="e.g. timm:resnet18, tv:resnet18, hf:path/to/model")
    p.add_argument("--output-dir", help="where the run is written (default runs/<task>-<time>)")
    p.add_argument("--config", help="YAML file of options (key=value overrides win over it)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="options, e.g. epochs=5 lr=3e-4 freeze=backbone")


def _parse_data(text: str):
    """`--data` is a path, or inline YAML for a dict of splits: '{train: a.csv, val: b.csv}'."""
    if text.strip().startswith("{"):
        import yaml

        return yaml.safe_load(text)
    return text


def _options(args) -> dict:
    from .config import parse_override

    return dict(parse_override(o) for o in args.overrides)


def _print_metrics(result) -> None:
    print(json.dumps({"output_dir": result.output_dir, "metrics": result.metrics}, indent=2, default=float))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="transferkit", description="Fine-tune pretrained models on your data.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="offline transfer-learning demo on real handwritten digits (~2 min on CPU)")
    demo.add_argument("--output-dir", default=None, help="keep the demo's runs here (default: a temp folder)")
    demo.add_argument("--quick", action="store_true", help="fewer epochs, for smoke tests")

    _add_run_args(sub.add_parser("finetune", help="fine-tune a backbone on labelled data"))
    _add_run_args(sub.add_parser("pretrain", help="self-supervised pretraining (masked-lm)"))

    ev = sub.add_parser("evaluate", help="evaluate a finished run on labelled data")
    ev.add_argument("run_dir")
    ev.add_argument("--data", required=True)
    ev.add_argument("--batch-size", type=int, default=64)

    pr = sub.add_parser("predict", help="predict with a finished run")
    pr.add_argument("run_dir")
    pr.add_argument("inputs", nargs="+", help="image paths, or texts for text tasks")
    pr.add_argument("--top", type=int, default=3, help="how many class probabilities to print")

    lb = sub.add_parser("list-backbones", help="backbones the installed libraries offer")
    lb.add_argument("pattern", nargs="?", default=None, help="glob, e.g. 'resnet*'")
    lb.add_argument("--task", default=None)
    lb.add_argument("--source", default=None, help="timm, tv, hf, hf-config")

    sub.add_parser("list-tasks", help="task names")

    # key=value overrides may come after options (argparse would take them for the task positional's neighbours)
    args, extra = parser.parse_known_args(argv)
    if args.command in ("finetune", "pretrain"):
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return _dispatch(args)
    except TransferkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with resume=true", file=sys.stderr)
        return 130


def _dispatch(args) -> int:
    import transferkit as tk

    if args.command == "demo":
        from .demo import run_demo

        run_demo(output_dir=args.output_dir, quick=args.quick)
    elif args.command in ("finetune", "pretrain"):
        fn = tk.finetune if args.command == "finetune" else tk.pretrain
        kwargs = _options(args)
        if args.backbone:
            kwargs["backbone"] = args.backbone
        result = fn(args.task, data=_parse_data(args.data), output_dir=args.output_dir, config=args.config, **kwargs)
        _print_metrics(result)
    elif args.command == "evaluate":
        print(json.dumps(tk.evaluate(args.run_dir, data=_parse_data(args.data), batch_size=args.batch_size), indent=2))
    elif args.command == "predict":
        for inp, out in zip(args.inputs, tk.load(args.run_dir).predict(args.inputs)):
            if "probs" in out:
                top = sorted(out["probs"].items(), key=lambda kv: -kv[1])[: args.top]
                print(f"{inp}\t{out['label']}\t{out['score']:.3f}\t" + " ".join(f"{k}={v:.3f}" for k, v in top))
            else:
                print(f"{inp}\t{json.dumps({k: v for k, v in out.items() if k != 'mask'}, default=str)}")
    elif args.command == "list-backbones":
        for name in tk.list_backbones(args.pattern, task=args.task, source=args.source):
            print(name)
    elif args.command == "list-tasks":
        for name in tk.list_tasks():
            print(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
