"""The `transferkit` command, run in-process."""

from __future__ import annotations

import json

from test_image_classification import make_folder

from transferkit.cli import main


def test_list_commands(capsys):
    assert main(["list-tasks"]) == 0
    assert "image-classification" in capsys.readouterr().out.split()
    assert main(["list-backbones", "resnet1*", "--source", "timm"]) == 0
    names = capsys.readouterr().out.split()
    assert "timm:resnet18" in names and all(n.startswith("timm:resnet1") for n in names)


def test_finetune_predict_evaluate(tmp_path, capsys):
    data = make_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "run"
    code = main(
        [
            "finetune",
            "image-classification",
            "--data",
            str(data),
            "--backbone",
            "timm:test_resnet",
            "--output-dir",
            str(out),
            "pretrained=false",
            "epochs=1",
            "image_size=32",
            "quiet=true",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["output_dir"] == str(out) and "accuracy" in printed["metrics"]["val"]
    img = next(data.rglob("*.png"))
    assert main(["predict", str(out), str(img)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(img)) and line.split("\t")[1] in {"red", "green", "blue"}
    assert main(["evaluate", str(out), "--data", str(data)]) == 0
    assert "accuracy" in json.loads(capsys.readouterr().out)


def test_user_errors_exit_1_with_a_message(tmp_path, capsys):
    code = main(
        [
            "finetune",
            "image-classification",
            "--data",
            str(tmp_path / "missing"),
            "--backbone",
            "timm:test_resnet",
            "pretrained=false",
        ]
    )
    assert code == 1  # a user error: one line, exit 1 (usage errors exit 2)
    assert "missing" in capsys.readouterr().err
    assert main(["finetune", "image-classification", "--data", str(tmp_path), "epochz=1"]) == 1
    assert "did you mean epochs" in capsys.readouterr().err


def test_predict_output_for_segmentation_and_detection(tmp_path, capsys):
    from detection_toys import write_shapes
    from test_readme import _write_data

    _write_data(tmp_path)
    seg = tmp_path / "seg"
    assert main(["finetune", "semantic-segmentation", "--data", str(tmp_path / "data" / "roads"), "--backbone",
                 "timm:test_resnet", "--output-dir", str(seg), "pretrained=false", "epochs=1", "image_size=32",
                 "quiet=true", "report=false"]) == 0  # fmt: skip
    capsys.readouterr()
    image = tmp_path / "data" / "roads" / "images" / "0.png"
    assert main(["predict", str(seg), str(image), "--output", str(tmp_path / "seg.json")]) == 0
    rows = json.loads((tmp_path / "seg.json").read_text())
    from PIL import Image

    assert Image.open(rows[0]["mask"]).size == Image.open(image).size  # the mask as a PNG, at the original size
    det = tmp_path / "det"
    write_shapes(tmp_path / "shapes", n=8)
    assert main(["finetune", "object-detection", "--data", str(tmp_path / "shapes"), "--backbone", "timm:test_resnet",
                 "--output-dir", str(det), "pretrained=false", "max_steps=2", "quiet=true", "report=false",
                 "head_kwargs={fpn_channels: 16}", "score_threshold=0.0", "box_score_thresh=0.0"]) == 0  # fmt: skip
    capsys.readouterr()
    image = next((tmp_path / "shapes").rglob("*.png"))
    assert main(["predict", str(det), str(image), "--output", str(tmp_path / "det.json")]) == 0
    coco = json.loads((tmp_path / "det.coco.json").read_text())
    assert coco["images"] == [{"id": 1, "file_name": str(image)}]
    assert coco["results"] and all(r["category_id"] in (1, 3, 7) and len(r["bbox"]) == 4 for r in coco["results"])
