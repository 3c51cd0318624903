"""The `transferkit` command: the whole workflow from the shell.

``finetune``, ``pretrain``, ``evaluate``, ``predict``, ``report``, ``rank``, ``list``, ``options``, ``demo``. User
errors print one line and exit 1 (usage errors exit 2); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, DataError, TransferkitError

EXIT_USER_ERROR = 1


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "task", nargs="?", default=None, help="task name (or task: in --config), see `transferkit list tasks`"
    )
    p.add_argument("--data", default=None, help="data folder or file, or inline YAML '{train: a.csv, val: b.csv}'")
    p.add_argument("--backbone", default=None, help="e.g. timm:resnet18, tv:resnet18, smp:resnet34, hf:path/to/model")
    p.add_argument("--pretrained", default=None, help="true (library weights), false (random init), or a weights file")
    p.add_argument("--output-dir", default=None, help="where the run is written (default runs/<task>-<time>)")
    p.add_argument("--config", default=None, help="YAML file of options; flags and key=value overrides win over it")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="options, e.g. epochs=5 lr=3e-4 freeze=top-2")


def _parse_data(text: str | None):
    """`--data` is a path, or inline YAML for a dict of splits: '{train: a.csv, val: b.csv}'."""
    if text is not None and text.strip().startswith("{"):
        import yaml

        from .errors import ConfigError

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--data {text!r} is not a valid YAML mapping: {e}") from None
    return text


def _run_options(args) -> dict[str, Any]:
    from .config import parse_override

    options = dict(parse_override(o) for o in args.overrides)
    for flag, key in (("backbone", "backbone"), ("output_dir", "output_dir"), ("pretrained", "pretrained")):
        value = getattr(args, flag)
        if value is not None:
            options[key] = parse_override(f"{key}={value}")[1] if key == "pretrained" else value
    return options


def _engine_epilog(
    title: str = "engine options (key=value; the task's own options: `transferkit options TASK`):",
    task_defaults: dict[str, Any] | None = None,
) -> str:
    from .config import FinetuneConfig, field_docs

    docs = field_docs(FinetuneConfig)
    lines = [title]
    for f in FinetuneConfig.__dataclass_fields__.values():
        default = f.default if not callable(f.default_factory) else f.default_factory()  # type: ignore[misc]
        default = (task_defaults or {}).get(f.name, default)  # the task's own default where it has one
        lines.append(f"  {f.name}={_show(default)}  {docs.get(f.name, '')}")
    return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (dict, list, tuple, bool)) or value is None else str(value)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="transferkit", description="Fine-tune pretrained models on your data.")
    parser.add_argument("--version", action="version", version=f"transferkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="offline transfer-learning demo on real handwritten digits (~3 min on CPU)")
    demo.add_argument("--output-dir", default=None, help="keep the demo's runs here (default: a temp folder)")
    demo.add_argument("--quick", action="store_true", help="fewer epochs, for smoke tests")

    fmt = argparse.RawDescriptionHelpFormatter
    for name, text in (("finetune", "fine-tune a backbone on labelled data"), ("pretrain", "masked-LM pretraining")):
        _add_run_args(sub.add_parser(name, help=text, epilog=_engine_epilog(), formatter_class=fmt))

    ev = sub.add_parser("evaluate", help="evaluate a finished run on labelled data")
    ev.add_argument("run_dir", help="the output folder of a finished run")
    ev.add_argument("--data", required=True, help="labelled data in the run's format (a folder with test/ uses it)")
    ev.add_argument("--batch-size", type=int, default=64, help="evaluation batch size")
    ev.add_argument("--output", default=None, help="also write the metrics to this JSON file")

    pr = sub.add_parser("predict", help="predict with a finished run")
    pr.add_argument("run_dir", help="the output folder of a finished run")
    pr.add_argument(
        "inputs",
        nargs="+",
        help="image files or folders (images); for text tasks texts, or .csv/.jsonl/.txt files of them",
    )
    pr.add_argument("--output", default=None, help="write predictions to this JSON file (masks as PNGs beside it)")
    pr.add_argument("--top", type=int, default=3, help="how many class probabilities to print")
    pr.add_argument("--batch-size", type=int, default=32, help="inference batch size")

    rp = sub.add_parser("report", help="(re)write report.html for a run folder")
    rp.add_argument("run_dir", help="the output folder of a run")

    ls = sub.add_parser("list", help="list tasks, backbones or heads")
    ls.add_argument("what", choices=("tasks", "backbones", "heads"), help="what to list")
    ls.add_argument("--task", default=None, help="only those serving this task, e.g. semantic-segmentation")
    ls.add_argument("--pattern", default=None, help="glob on the name, e.g. 'resnet*'")
    ls.add_argument("--source", default=None, help="backbone source: timm, tv, smp, hf, hf-config")

    # the pre-"list" spellings keep working
    lb = sub.add_parser("list-backbones", help="same as `list backbones`")
    lb.add_argument("pattern", nargs="?", default=None, help="glob, e.g. 'resnet*'")
    lb.add_argument("--task", default=None, help="only backbones serving this task")
    lb.add_argument("--source", default=None, help="timm, tv, smp, hf, hf-config")
    sub.add_parser("list-tasks", help="same as `list tasks`")

    op = sub.add_parser("options", help="every option of a task (engine + task) with its default and meaning")
    op.add_argument("task", help="task name, see `transferkit list tasks`")

    rk = sub.add_parser("rank", help="rank candidate backbones for your data before fine-tuning", add_help=False)
    rk.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # --debug anywhere before a `--` (`transferkit finetune ... --debug`), not only before the command
    end = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:end]
    argv = [a for i, a in enumerate(argv) if a != "--debug" or i >= end]
    if argv[:1] == ["rank"]:  # `rank` parses its own arguments
        return _guard(lambda: _rank(argv[1:], debug), debug)
    # key=value overrides may come before or after the flags
    args, extra = parser.parse_known_args(argv)
    args.debug = debug or args.debug  # `--deb`: argparse's own abbreviation
    if args.command in ("finetune", "pretrain"):
        if args.task is not None and "=" in args.task:  # `finetune --config c.yaml epochs=2`: no task given
            args.overrides.insert(0, args.task)
            args.task = None
        args.overrides += [e for e in extra if "=" in e and not e.startswith("-")]
        extra = [e for e in extra if e not in args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return _guard(lambda: _dispatch(args), args.debug)


def _guard(fn, debug: bool) -> int:
    try:
        return fn()
    except TransferkitError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; continue the run with resume=true", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `transferkit list backbones | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _rank(argv: list[str], debug: bool = False) -> int:
    from .ranking.cli import rank_cli

    return rank_cli(argv, debug=debug)


def _dispatch(args) -> int:
    import transferkit as tk

    if args.command == "demo":
        from .demo import run_demo

        run_demo(output_dir=args.output_dir, quick=args.quick)
    elif args.command in ("finetune", "pretrain"):
        fn = tk.finetune if args.command == "finetune" else tk.pretrain
        options = _run_options(args)
        # `data=...` / `task=...` as overrides (as a recipe's YAML keys): the same as --data / the positional task
        data = _parse_data(args.data) if args.data is not None else _parse_data(options.pop("data", None))
        task = args.task if args.task is not None else options.pop("task", None)
        for key, given in (("data", args.data), ("task", args.task)):
            if key in options and given is not None:
                raise ConfigError(f"{key} is given twice (as {'--data' if key == 'data' else 'the task'} and {key}=); "
                                  "pass it once.")  # fmt: skip
        result = fn(task, data=data, config=args.config, **options)
        print(json.dumps({"output_dir": result.output_dir, "metrics": result.metrics}, indent=2, default=float))
    elif args.command == "evaluate":
        _output_file(args.output)
        metrics = tk.evaluate(args.run_dir, data=_parse_data(args.data), batch_size=args.batch_size)
        text = json.dumps(metrics, indent=2)
        if args.output:
            Path(args.output).write_text(text + "\n")
        print(text)
    elif args.command == "predict":
        _predict(tk, args)
    elif args.command == "report":
        from .report import render_report

        print(render_report(args.run_dir))
    elif args.command in ("list", "list-backbones", "list-tasks"):
        what = {"list-backbones": "backbones", "list-tasks": "tasks"}.get(args.command, getattr(args, "what", None))
        _list(tk, what, args)
    elif args.command == "options":
        _options(args.task)
    return 0


def _list(tk, what: str, args) -> None:
    from .errors import UnknownNameError

    task = getattr(args, "task", None)
    pattern = getattr(args, "pattern", None)
    if task is not None and task not in tk.list_tasks():
        from .registry import unknown_name_message

        raise UnknownNameError(unknown_name_message("task", task, tk.list_tasks()))
    if what == "tasks":
        names = tk.list_tasks()
    elif what == "heads":
        names = tk.list_heads(task=task)
    else:
        names = tk.list_backbones(pattern, task=task, source=getattr(args, "source", None))
        if not names:
            source = getattr(args, "source", None)
            why = (
                "hf: lists only models in the local Hugging Face cache (any local folder works as hf:<folder>)"
                if source == "hf"
                else f"no backbone matches pattern {pattern!r}" + (f" for task {task!r}" if task else "")
            )
            print(f"(nothing to list: {why})", file=sys.stderr)
    for name in names:
        print(name)


def _options(task_name: str) -> None:
    from .config import field_docs
    from .tasks import get_task

    task_cls = get_task(task_name)
    print(_engine_epilog(f"engine options (key=value) for {task_name}:", task_cls.defaults))
    if task_cls.defaults:
        changed = ", ".join(sorted(task_cls.defaults))
        print(f"  (defaults of {task_name}'s own: {changed})")
    if task_cls.Options is not None:
        docs = field_docs(task_cls.Options)
        print(f"\n{task_name} options:")
        for f in task_cls.Options.__dataclass_fields__.values():
            default = f.default if not callable(f.default_factory) else f.default_factory()  # type: ignore[misc]
            print(f"  {f.name}={_show(default)}  {docs.get(f.name, '')}")


def _output_file(path: str | None, flag: str = "--output") -> None:
    """A file to write must not be a folder, and its folder must exist: said before any work is done."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name, e.g. {p / 'predictions.json'}.")
    if not p.parent.is_dir():
        raise ConfigError(f"{flag} {path}: the folder {p.parent} does not exist.")


def _predict(tk, args) -> None:
    _output_file(args.output)
    predictor = tk.load(args.run_dir)
    from .api import _expand_inputs

    text_column = getattr(predictor.task.options, "text_column", "text")
    if predictor.task.modality == "image":
        inputs = _expand_inputs(args.inputs)
    else:
        rows = predictor.task.name == "text-classification"  # rows carry text pairs; other text tasks take strings
        inputs = _text_inputs(args.inputs, text_column, rows)
    outputs = predictor.predict(inputs, batch_size=args.batch_size)
    if args.output:
        _write_predictions(Path(args.output), inputs, outputs)
        if outputs and "boxes" in outputs[0]:
            coco = _write_coco_results(Path(args.output), inputs, outputs, predictor.task)
            print(f"wrote {len(outputs)} prediction(s) to {args.output} (COCO results: {coco})")
            return
        print(f"wrote {len(outputs)} prediction(s) to {args.output}")
        return
    for inp, out in zip(inputs, outputs):
        if "probs" in out:
            top = sorted(out["probs"].items(), key=lambda kv: -kv[1])[: args.top]
            shown = inp.get(text_column, inp) if isinstance(inp, dict) else inp
            print(f"{shown}\t{out['label']}\t{out['score']:.3f}\t" + " ".join(f"{k}={v:.3f}" for k, v in top))
        elif "mask" in out:
            import numpy as np

            classes, counts = np.unique(out["mask"], return_counts=True)
            share = ", ".join(f"{c}: {n / out['mask'].size:.1%}" for c, n in zip(classes.tolist(), counts.tolist()))
            print(f"{inp}\tmask {out['mask'].shape[1]}x{out['mask'].shape[0]}\t{share}")
        else:
            print(f"{inp}\t{json.dumps(out, default=str)}")


def _text_inputs(items: list[str], text_column: str, rows: bool = True) -> list[Any]:
    """Command-line inputs of a text run: an existing .csv/.tsv/.jsonl/.json file stands for its rows (dicts if
    `rows`, else the texts of the run's text column), a .txt file for its non-blank lines; anything else is a text."""
    from .data.text import TABLE_SUFFIXES, TEXT_SUFFIXES, read_lines, read_table

    out: list[Any] = []
    for item in items:
        p = Path(item)
        suffix = p.suffix.lower()
        if suffix in TABLE_SUFFIXES + TEXT_SUFFIXES:  # a file name, unless it is a sentence that ends like one
            if p.is_dir():
                raise ConfigError(f"{item} is a folder; give the .csv/.jsonl/.txt file of texts to predict.")
            if not p.exists() and not any(c.isspace() for c in item):
                raise ConfigError(f"{item}: no such file (a text to classify would not look like a file name).")
        if suffix in TABLE_SUFFIXES and p.is_file():
            columns, table = read_table(p)
            if text_column not in columns:
                raise DataError(
                    f"{item} has no {text_column!r} column (columns: {', '.join(columns)}); the run reads its texts "
                    f"from {text_column!r}."
                )
            out += [row if rows else str(row[text_column]) for _, row in table]
        elif suffix in TEXT_SUFFIXES and p.is_file():
            out += read_lines(p)
        else:
            out.append(item)
    return out


def _write_predictions(path: Path, inputs: list[Any], outputs: list[dict[str, Any]]) -> None:
    """JSON of the predictions; segmentation masks go to PNG files in a folder beside it (named in the JSON)."""
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (inp, out) in enumerate(zip(inputs, outputs)):
        row: dict[str, Any] = {"input": inp if isinstance(inp, dict) else str(inp)}
        for key, value in out.items():
            if key == "mask":
                from PIL import Image

                folder = path.with_name(path.stem + "_masks")
                folder.mkdir(exist_ok=True)
                stem = Path(str(inp)).stem if isinstance(inp, (str, Path)) else f"input{i}"
                mask_file = folder / f"{i:04d}_{stem}.png"
                arr = np.asarray(value)
                Image.fromarray(arr.astype(np.uint8 if arr.max(initial=0) < 256 else np.uint16)).save(mask_file)
                row["mask"] = str(mask_file)
            elif isinstance(value, np.ndarray):
                row[key] = value.tolist()
            else:
                row[key] = value
        rows.append(row)
    path.write_text(json.dumps(rows, indent=1, default=str))


def _write_coco_results(path: Path, inputs: list[Any], outputs: list[dict[str, Any]], task: Any) -> Path:
    """Detections as a COCO results file (``[{image_id, category_id, bbox: [x, y, w, h], score}]``) next to the
    JSON; image ids index an ``images`` list of the input files, category ids are the training data's."""
    categories = getattr(task, "categories", None)
    name_to_id = dict(zip(categories.names, categories.category_ids)) if categories is not None else {}
    images = [{"id": i + 1, "file_name": str(inp)} for i, inp in enumerate(inputs)]
    results = []
    for i, out in enumerate(outputs):
        for (x0, y0, x1, y1), label, score in zip(out["boxes"], out["labels"], out["scores"]):
            results.append(
                {
                    "image_id": i + 1,
                    "category_id": name_to_id.get(label, label),
                    "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    "score": round(float(score), 6),
                }
            )
    target = path.with_name(path.stem + ".coco.json")
    target.write_text(json.dumps({"images": images, "results": results}, indent=1))
    return target


if __name__ == "__main__":
    raise SystemExit(main())
