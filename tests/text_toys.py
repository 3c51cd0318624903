"""Generated text data and tiny BERT folders for the text tests (offline, seconds to build)."""

from __future__ import annotations

import random
from pathlib import Path

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
]
FILL = [
    "honestly",
    "to be fair",
    "all things considered",
    "in my opinion",
    "as far as i can tell",
    "frankly",
    "overall",
    "i think",
    "my friends agreed that",
    "the critics said",
]
TAIL = [
    "and i would watch it again",
    "from start to finish",
    "for most of the time",
    "despite the long runtime",
    "even on a second viewing",
    "if you ask me",
    "compared to the book",
    "",
    "",
    "",
]

TINY_BERT = {
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


def review(rng: random.Random, label: str) -> str:
    words = POS if label == "pos" else NEG
    parts = [rng.choice(FILL) if rng.random() < 0.5 else "", rng.choice(SUBJ), "was", rng.choice(words)]
    for _ in range(rng.choice([0, 0, 1, 2])):
        parts += ["and", rng.choice(SUBJ), "was", rng.choice(words)]
    parts.append(rng.choice(TAIL))
    return " ".join(p for p in parts if p)


def sentiment(n: int, seed: int = 0) -> dict[str, list[str]]:
    """{"text": [...], "label": ["pos"/"neg", ...]} of templated movie reviews."""
    rng = random.Random(seed)
    labels = [rng.choice(["pos", "neg"]) for _ in range(n)]
    return {"text": [review(rng, lab) for lab in labels], "label": labels}


def corpus(n: int, seed: int = 1) -> list[str]:
    """Unlabelled review-like documents (for masked-LM)."""
    rng = random.Random(seed)
    return [review(rng, rng.choice(["pos", "neg"])) for _ in range(n)]


def write_csv(path: Path, data: dict[str, list], delimiter: str = ",") -> Path:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        cols = list(data)
        w.writerow(cols)
        for row in zip(*data.values()):
            w.writerow(row)
    return path


def tiny_bert_folder(folder: Path, texts: list[str] | None = None, vocab_size: int = 300, **sizes) -> Path:
    """A randomly initialised 2-layer, hidden-32 BertModel + a WordPiece tokenizer trained on `texts`, saved with
    save_pretrained (what ``hf:<folder>`` loads)."""
    from transformers import BertConfig, BertModel

    from transferkit.backbones.hf_adapter import quiet_transformers
    from transferkit.data.tokenizer import train_wordpiece

    tok = train_wordpiece(texts or corpus(400), vocab_size=vocab_size, min_frequency=1)
    config = BertConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **{**TINY_BERT, **sizes})
    with quiet_transformers():
        BertModel(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def hard_sentiment(n: int, seed: int = 0) -> dict[str, list[str]]:
    """Harder reviews: the label is the last clause's sentiment, "not" flips it, and a contrasting first clause
    ("X was great but Y was not good") is a distractor. Keyword counting gets about 60% right."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        clauses = []
        for _ in range(2):
            positive, negated = rng.random() < 0.5, rng.random() < 0.3
            word = rng.choice(POS if positive else NEG)
            clauses.append((f"{rng.choice(SUBJ)} was {'not ' if negated else ''}{word}", positive != negated))
        text = f"{clauses[0][0]} but {clauses[1][0]}" if rng.random() < 0.6 else clauses[1][0]
        if rng.random() < 0.4:
            text = f"{rng.choice(FILL)} {text}"
        texts.append(text)
        labels.append("pos" if clauses[1][1] else "neg")
    return {"text": texts, "label": labels}
