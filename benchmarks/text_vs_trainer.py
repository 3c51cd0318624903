"""Text fine-tuning: ``tk.finetune("text-classification")`` vs Hugging Face ``Trainer`` on the same model and data.

Workload ``bert4x256``: a 4-layer, hidden-256 BERT (4 heads, FFN 1024, random init) + pooler + dropout + linear
classifier, i.e. exactly ``BertForSequenceClassification`` on both sides (transferkit: ``pooling="pooler"``, linear
head with dropout 0.1). Same generated sentiment data (review lengths spread like real reviews, 8-128 tokens; one
sentiment per review, some clauses disagree, negations flip words), same WordPiece tokenizer, batch size 32,
``max_length`` 128, AdamW (lr 5e-4, weight decay 0.01 except biases and LayerNorm weights, betas 0.9/0.999),
linear schedule with 10% warmup, gradient clipping at 1.0, same seed.

- transferkit: its defaults for everything else: texts tokenised once, dynamic padding, length-grouped batches.
- Trainer: the standard recipe: the dataset tokenised once up front, ``DataCollatorWithPadding`` (dynamic
  padding), ``report_to="none"``, no saving, no evaluation during training, default (random) batch order. For
  reference, Trainer with ``train_sampling_strategy="group_by_length"`` is measured too (reported, not in the ratio).

Measured in one process, contenders alternating each repeat (medians of ``--repeats``, >= 3):
- steps/s: one full epoch (``--train`` texts / 32 steps); the rate over steps 2..N (the first step's one-off costs
  are excluded). A full epoch, not the first N steps, because length-grouped samplers order batches differently
  (Trainer's puts the longest batches first), so only a whole epoch does the same work on every side.
- time to first step: from the call that starts the run (tk: ``tk.finetune``; Trainer: tokenizer + tokenising +
  model + Trainer + ``train()``) to the end of the first optimizer step. Imports happen before both clocks.
- accuracy: ``--epochs`` epochs on the same train split, then test accuracy (same seed).
Wall-clock is the headline; CPU seconds per step are reported too, because these 2-core machines are shared and
CPU time is far less sensitive to other programs' load.

Run: ``python benchmarks/text_vs_trainer.py [--repeats 3] [--epochs 3] [--train 1600]``.
Writes ``benchmarks/results/text_vs_trainer.json`` and prints
``RESULT bert4x256 ratio=<tk/trainer steps/s> ...`` (ratio > 1: transferkit is faster).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Shared 2-core machines: busy-waiting OpenMP threads stall when another program holds a core (measured 20x
# slower steps under load); passive waiting costs nothing measurable when the machine is idle. Both sides share it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import transferkit as tk  # noqa: E402
from transferkit.data.tokenizer import train_wordpiece  # noqa: E402

warnings.filterwarnings("ignore")
transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

RESULTS = Path(__file__).resolve().parent / "results" / "text_vs_trainer.json"
MODEL = {
    "num_hidden_layers": 4,
    "hidden_size": 256,
    "num_attention_heads": 4,
    "intermediate_size": 1024,
    "max_position_embeddings": 512,
}
BATCH, MAX_LENGTH, LR, WD, WARMUP, SEED = 32, 128, 5e-4, 0.01, 0.1, 42

POS = [
    "great",
    "wonderful",
    "excellent",
    "delightful",
    "superb",
    "lovely",
    "brilliant",
    "enjoyable",
    "charming",
    "fantastic",
    "moving",
    "clever",
    "gripping",
    "beautiful",
    "funny",
]
NEG = [
    "terrible",
    "awful",
    "boring",
    "dreadful",
    "horrible",
    "dull",
    "disappointing",
    "poor",
    "tedious",
    "bad",
    "clumsy",
    "lifeless",
    "predictable",
    "confusing",
    "forgettable",
]
SUBJ = [
    "the movie",
    "this film",
    "the plot",
    "the acting",
    "the soundtrack",
    "the story",
    "the cast",
    "the ending",
    "the script",
    "the direction",
    "the dialogue",
    "the pacing",
    "the camera work",
    "the lead actor",
]
NEUTRAL = [
    "we saw it on a rainy sunday afternoon with some friends from work",
    "the cinema was almost empty and the popcorn was overpriced as usual",
    "it runs a little over two hours including the credits",
    "i had read the novel years ago and remembered only parts of it",
    "the trailer had given away a few scenes already",
    "my sister picked it because she likes the director's earlier films",
    "there is a short scene after the credits for those who wait",
]


def review(rng: random.Random) -> tuple[str, str]:
    """One review with a long-tailed number of clauses (real reviews range from a line to paragraphs). The review
    has one sentiment; each opinion clause agrees with it 85% of the time, "not" flips a clause's word, and
    neutral filler adds length without signal."""
    positive = rng.random() < 0.5
    parts = []
    for _ in range(min(1 + int(rng.expovariate(0.45)), 9)):
        agrees = rng.random() < 0.85 or not parts  # the first opinion always carries the review's sentiment
        negated = rng.random() < 0.2
        word_positive = (positive == agrees) != negated
        parts.append(f"{rng.choice(SUBJ)} was {'not ' if negated else ''}{rng.choice(POS if word_positive else NEG)}")
        if rng.random() < 0.35:
            parts.append(rng.choice(NEUTRAL))
    return " and ".join(parts), "pos" if positive else "neg"


def make_data(n: int, seed: int) -> dict[str, list[str]]:
    rng = random.Random(seed)
    rows = [review(rng) for _ in range(n)]
    return {"text": [r[0] for r in rows], "label": [r[1] for r in rows]}


# --- transferkit ----------------------------------------------------------------------------------------------------
class StepTimes(tk.Callback):
    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_step_end(self, state, control, loss) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())


def run_tk(data, tok_dir: str, epochs: int, out: str) -> dict:
    timer = StepTimes()
    t0, c0 = time.perf_counter(), time.process_time()
    result = tk.finetune(
        "text-classification",
        data=data,
        backbone={"model_type": "bert", **MODEL},
        tokenizer=tok_dir,
        pooling="pooler",
        head_kwargs={"dropout": 0.1},
        max_length=MAX_LENGTH,
        batch_size=BATCH,
        lr=LR,
        head_lr_mult=1.0,  # one rate for the whole model, as Trainer
        weight_decay=WD,
        warmup=WARMUP,
        schedule="linear",
        max_grad_norm=1.0,
        epochs=epochs,
        seed=SEED,
        output_dir=out,
        save_checkpoints=False,
        restore_best=False,  # the final weights, as Trainer's (the comparison is "after N epochs")
        callbacks=(timer,),
        quiet=True,
    )
    return summarise(timer.wall, timer.cpu, t0, c0, result.metrics.get("test", {}).get("accuracy"))


# --- Trainer --------------------------------------------------------------------------------------------------------
class TrainerStepTimes(TrainerCallback):
    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def run_trainer(data, tok_dir: str, epochs: int, out: str, grouped: bool = False) -> dict:
    timer = TrainerStepTimes()
    t0, c0 = time.perf_counter(), time.process_time()
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    labels = sorted(set(data["train"]["label"]))

    def encode(split):
        enc = tokenizer(data[split]["text"], truncation=True, max_length=MAX_LENGTH)
        return ListDataset(
            [
                {"input_ids": ids, "token_type_ids": tt, "attention_mask": am, "labels": labels.index(y)}
                for ids, tt, am, y in zip(
                    enc["input_ids"], enc["token_type_ids"], enc["attention_mask"], data[split]["label"]
                )
            ]
        )

    train = encode("train")
    torch.manual_seed(SEED)
    config = BertConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_labels=len(labels), **MODEL
    )
    model = BertForSequenceClassification(config)
    args = TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=2 * BATCH,
        learning_rate=LR,
        weight_decay=WD,
        warmup_steps=WARMUP,  # < 1: a fraction of all steps, as transferkit's warmup
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        num_train_epochs=epochs,
        seed=SEED,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        train_sampling_strategy="group_by_length" if grouped else "random",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[timer],
    )
    with contextlib.redirect_stdout(io.StringIO()):  # Trainer prints its run summary even with logging off
        trainer.train()
    acc = None
    if "test" in data:
        pred = trainer.predict(encode("test"))
        acc = float((pred.predictions.argmax(-1) == pred.label_ids).mean())
    return summarise(timer.wall, timer.cpu, t0, c0, acc)


def summarise(wall: list[float], cpu: list[float], t0: float, c0: float, accuracy) -> dict:
    n = len(wall)
    out = {"steps": n, "first_step_s": wall[0] - t0, "first_step_cpu_s": cpu[0] - c0, "accuracy": accuracy}
    if n > 1:
        out["steps_per_s"] = (n - 1) / (wall[-1] - wall[0])
        out["cpu_s_per_step"] = (cpu[-1] - cpu[0]) / (n - 1)
    return out


def median(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3, help="epochs of the accuracy run (0: skip it)")
    ap.add_argument("--train", type=int, default=1600, help="training examples (speed runs: one epoch of them)")
    ap.add_argument("--test", type=int, default=600)
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--no-trainer-grouped", action="store_true", help="skip the Trainer(group_by_length) reference")
    args = ap.parse_args()
    args.repeats = max(3, args.repeats)

    data = {"train": make_data(args.train, 0), "val": make_data(64, 1), "test": make_data(args.test, 2)}
    work = Path(tempfile.mkdtemp(prefix="tk-text-bench-"))
    tok_dir = str(work / "tokenizer")
    train_wordpiece(data["train"]["text"], vocab_size=args.vocab, output_dir=tok_dir)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    lengths = [len(x) for x in tok(data["train"]["text"], truncation=True, max_length=MAX_LENGTH)["input_ids"]]
    print(
        f"data: {args.train} train texts, tokens per text: median {int(np.median(lengths))}, "
        f"p90 {int(np.percentile(lengths, 90))}, max {max(lengths)}",
        flush=True,
    )

    def pick(speed_run: bool):  # speed runs skip the test split (its evaluation is not timed, only slow)
        return {k: v for k, v in data.items() if k != "test"} if speed_run else data

    contenders = {
        "tk": lambda sp, e, o: run_tk(pick(sp), tok_dir, e, o),
        "trainer": lambda sp, e, o: run_trainer(pick(sp), tok_dir, e, o),
    }
    if not args.no_trainer_grouped:
        contenders["trainer_grouped"] = lambda sp, e, o: run_trainer(pick(sp), tok_dir, e, o, grouped=True)
    speed: dict[str, list[dict]] = {k: [] for k in contenders}
    for rep in range(args.repeats):
        order = list(contenders) if rep % 2 == 0 else list(reversed(contenders))
        for name in order:
            r = contenders[name](True, 1, str(work / f"{name}-{rep}"))
            speed[name].append(r)
            print(
                f"repeat {rep + 1} {name}: {r['steps_per_s']:.3f} steps/s, first step {r['first_step_s']:.2f} s, "
                f"{r['cpu_s_per_step']:.3f} cpu-s/step",
                flush=True,
            )

    accuracy: dict[str, dict] = {}
    if args.epochs:
        for name in ("tk", "trainer"):
            accuracy[name] = contenders[name](False, args.epochs, str(work / f"{name}-acc"))
            print(
                f"accuracy {name}: {accuracy[name]['accuracy']:.4f} after {args.epochs} epochs "
                f"({accuracy[name]['steps']} steps)",
                flush=True,
            )

    summary = {
        name: {k: median(runs, k) for k in ("steps_per_s", "first_step_s", "cpu_s_per_step", "first_step_cpu_s")}
        for name, runs in speed.items()
    }
    ratio = summary["tk"]["steps_per_s"] / summary["trainer"]["steps_per_s"]
    cpu_ratio = summary["trainer"]["cpu_s_per_step"] / summary["tk"]["cpu_s_per_step"]
    result = {
        "workload": "bert4x256",
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "summary": summary,
        "runs": speed,
        "accuracy": {k: v["accuracy"] for k, v in accuracy.items()},
        "accuracy_runs": accuracy,
        "setup": {
            "model": MODEL,
            "batch_size": BATCH,
            "max_length": MAX_LENGTH,
            "lr": LR,
            "weight_decay": WD,
            "warmup": WARMUP,
            "steps_per_epoch": speed["tk"][0]["steps"],
            "repeats": args.repeats,
            "epochs": args.epochs,
            "train": args.train,
            "test": args.test,
            "vocab": len(tok),
            "tokens_per_text": {"median": float(np.median(lengths)), "max": max(lengths)},
        },
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "load_avg": os.getloadavg(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    parts = [
        f"ratio={ratio:.2f}",
        f"cpu_ratio={cpu_ratio:.2f}",
        f"tk_steps_s={summary['tk']['steps_per_s']:.3f}",
        f"trainer_steps_s={summary['trainer']['steps_per_s']:.3f}",
        f"tk_first_step_s={summary['tk']['first_step_s']:.2f}",
        f"trainer_first_step_s={summary['trainer']['first_step_s']:.2f}",
    ]
    if "trainer_grouped" in summary:
        parts.append(f"trainer_grouped_steps_s={summary['trainer_grouped']['steps_per_s']:.3f}")
    if accuracy:
        tk_acc, tr_acc = accuracy["tk"]["accuracy"], accuracy["trainer"]["accuracy"]
        parts += [f"tk_acc={tk_acc:.4f}", f"trainer_acc={tr_acc:.4f}", f"acc_diff={100 * (tk_acc - tr_acc):+.2f}pt"]
    print("RESULT bert4x256 " + " ".join(parts))


if __name__ == "__main__":
    main()
