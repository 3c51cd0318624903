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


def test_debug_flag_anywhere_shows_the_traceback(tmp_path, capsys):
    import pytest

    from transferkit.errors import TransferkitError

    argv = ["finetune", "image-classification", "--data", str(tmp_path / "missing"), "--backbone", "timm:test_resnet"]
    assert main(argv) == 1
    assert capsys.readouterr().err.startswith("error: ")
    for where in (0, 1, len(argv)):  # before the command, after it, at the end
        with pytest.raises(TransferkitError, match="missing"):
            main(argv[:where] + ["--debug"] + argv[where:])
    with pytest.raises(TransferkitError, match="missing"):
        main(["--deb"] + argv)  # argparse's abbreviation of the top-level flag


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


def test_stranger_mistakes_end_in_one_line(tmp_path, capsys):
    data = make_folder(tmp_path / "data", per_class=6)
    out = tmp_path / "run"
    base = ["finetune", "image-classification", "--data", str(data), "--backbone", "timm:test_resnet",
            "--output-dir", str(out), "pretrained=false", "image_size=32", "quiet=true", "report=false"]  # fmt: skip
    for extra, said in [
        (["head_kwargs={hiden: 3}"], "does not take head_kwargs ['hiden']"),
        (["head=mlp", "head_kwargs={hiden: 3}"], "did you mean 'hidden'"),
        (["head=mlp", "head_kwargs={hidden: abc}"], "could not be built with head_kwargs"),
        (["overwrite=true", "resume=true"], "contradict each other"),
    ]:
        assert main(base + extra) == 1, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], (extra, err)
    assert main(base + ["epochs=1"]) == 0
    capsys.readouterr()
    assert main(["predict", str(out), str(data), "--output", str(tmp_path)]) == 1
    assert "is a folder; give a file name" in capsys.readouterr().err
    assert main(["evaluate", str(out), "--data", str(data), "--output", str(tmp_path / "no" / "m.json")]) == 1
    assert "does not exist" in capsys.readouterr().err
    # a resume that differs in a task option names that option
    assert main(base + ["epochs=2", "resume=true", "label_smoothing=0.1"]) == 1
    assert "task_options.label_smoothing: 0.0 -> 0.1" in capsys.readouterr().err


def test_data_and_task_as_overrides_as_the_readme_writes_them(tmp_path, capsys):
    data = make_folder(tmp_path / "data", per_class=6)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: image-classification\nbackbone: timm:test_resnet\npretrained: false\nimage_size: 32\n"
                   "epochs: 1\nquiet: true\nreport: false\n")  # fmt: skip
    assert main(["finetune", "--config", str(cfg), f"data={data}", f"output_dir={tmp_path / 'a'}"]) == 0
    assert main(["finetune", "--config", str(cfg), "task=image-classification", f"data={data}",
                 f"output_dir={tmp_path / 'b'}"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["finetune", "--config", str(cfg), "--data", str(data), f"data={data}"]) == 1
    assert "data is given twice" in capsys.readouterr().err


def test_options_shows_the_tasks_own_defaults(capsys):
    assert main(["options", "image-classification"]) == 0
    printed = capsys.readouterr().out
    assert "  epochs=auto " in printed and "  batch_size=auto " in printed
