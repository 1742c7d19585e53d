"""Tables from hand-made cell folders: the expected Markdown and CSV values are written out."""
import csv
import json
import math

import matplotlib.image
import pytest

from fer_jax import tables


def scores(cam_cos, pointing, deletion, insertion):
    return {"cam_cos": cam_cos, "pointing": pointing, "deletion_auc": deletion,
            "insertion_auc": insertion}


def write_cell(out, name, position, grid="g", layout="paper_table", variant="posthoc",
               methods=(), extra_splits=(), results=None, extra=None, cells=None):
    folder = out / name
    folder.mkdir(parents=True)
    record = {"grid": grid, "layout": layout, "description": "a test grid", "cam_method": "cam",
              "position": position, "grid_cells": cells or [], "name": name,
              "config": "configs/x.py", "overrides": {}, "variant": variant,
              "methods": list(methods), "extra_splits": list(extra_splits)}
    (folder / "cell.json").write_text(json.dumps(record))
    if results is not None:
        (folder / "results.json").write_text(json.dumps(results))
    for split, r in (extra or {}).items():
        (folder / f"eval_{split}").mkdir()
        (folder / f"eval_{split}" / "results.json").write_text(json.dumps(r))


def results(accuracy, weight, att, cams, seed=0, layers=("stage4",), seconds=60.0):
    return {"accuracy": accuracy, "att_cos": att, "aligned_layers": list(layers),
            "cam_layer": "stage4", "cam_methods": list(cams), "cams": cams,
            "config": {"align": {"weight": weight}, "train": {"seed": seed}},
            "train": {"seconds": seconds}}


def test_paper_table_pairs_without_and_with_au_per_method(tmp_path):
    cells = ["p0", "p4", "w0", "w4", "late"]
    write_cell(tmp_path, "p0", 0, cells=cells, results=results(
        0.8, 0.0, {"stage4": 0.55, "stage3": 0.2},
        {"cam": scores(0.5, 0.3, 0.2, 0.6), "gradcam": scores(0.52, 0.31, 0.21, 0.61),
         "random": scores(0.4, 0.1, 0.3, 0.3)}))
    write_cell(tmp_path, "p4", 1, cells=cells, results=results(
        0.85, 4.0, {"stage4": 0.85, "stage3": 0.3},
        {"cam": scores(0.7, 0.4, 0.1, 0.7), "gradcam": scores(0.74, 0.41, 0.11, 0.71),
         "random": scores(0.41, 0.12, 0.35, 0.28)}))
    write_cell(tmp_path, "w0", 2, variant="wildcat", methods=["wildcat"], cells=cells,
               results=results(0.75, 0.0, {"stage4": 0.47},
                               {"wildcat": scores(0.52, 0.2, 0.25, 0.5)}))
    write_cell(tmp_path, "w4", 3, variant="wildcat", methods=["wildcat"], cells=cells,
               results=results(0.7712, 9.0, {"stage4": 0.85},
                               {"wildcat": scores(0.69, 0.3, 0.15, 0.55)}, seconds=120.0))
    write_cell(tmp_path, "late", 4, variant="prm", methods=["prm"], cells=cells)  # unfinished
    paths = tables.write(str(tmp_path))
    text = (tmp_path / "table.md").read_text()
    assert text.splitlines()[:7] == [
        "# g: a test grid",
        "",
        "| method | CL ↑ | CAM-COS ↑ | ATT-COS ↑ | pointing ↑ | deletion AUC ↓ | insertion AUC ↑ |",
        "|---|---|---|---|---|---|---|",
        "| cam | 80.00 -> 85.00 | 0.500 -> 0.700 | 0.550 -> 0.850 | 0.300 -> 0.400 | "
        "0.200 -> 0.100 | 0.600 -> 0.700 |",
        "| gradcam | 80.00 -> 85.00 | 0.520 -> 0.740 | 0.550 -> 0.850 | 0.310 -> 0.410 | "
        "0.210 -> 0.110 | 0.610 -> 0.710 |",
        "| wildcat | 75.00 -> 77.12 | 0.520 -> 0.690 | 0.470 -> 0.850 | 0.200 -> 0.300 | "
        "0.250 -> 0.150 | 0.500 -> 0.550 |",
    ]
    assert text.splitlines()[7] == ("| *random (reference)* | 80.00 -> 85.00 | 0.400 -> 0.410 | "
                                    "0.550 -> 0.850 | 0.100 -> 0.120 | 0.300 -> 0.350 | "
                                    "0.300 -> 0.280 |")
    assert "4 of 5 cells finished; missing: late. Training time, summed over the cells: 5.0 min." \
        in text
    rows = list(csv.reader(open(tmp_path / "table.csv")))
    assert rows[0] == ["method", "CL without", "CL with", "CAM-COS without", "CAM-COS with",
                       "ATT-COS without", "ATT-COS with", "pointing without", "pointing with",
                       "deletion AUC without", "deletion AUC with", "insertion AUC without",
                       "insertion AUC with"]
    assert [r[0] for r in rows[1:]] == ["cam", "gradcam", "wildcat", "random"]
    assert [float(v) for v in rows[3][1:]] == pytest.approx(
        [75.0, 77.12, 0.52, 0.69, 0.47, 0.85, 0.2, 0.3, 0.25, 0.15, 0.5, 0.55])
    picture = matplotlib.image.imread(paths[-1])
    assert paths[-1].endswith("paper_table.png") and picture[..., :3].std() > 0.05


def test_lambda_sweep_averages_seeds_and_plots_against_lambda(tmp_path):
    cams = lambda c: {"cam": scores(c, 0.5, 0.2, 0.6)}
    write_cell(tmp_path, "l4s1", 2, layout="lambda_sweep",
               results=results(0.9, 4.0, {"stage4": 0.8}, cams(0.7), seed=1))
    write_cell(tmp_path, "l0", 0, layout="lambda_sweep",
               results=results(0.6, 0.0, {"stage4": 0.5}, cams(0.5)))
    write_cell(tmp_path, "l4s0", 1, layout="lambda_sweep",
               results=results(0.8, 4.0, {"stage4": 0.7}, cams(0.6), seed=0))
    write_cell(tmp_path, "l15", 3, layout="lambda_sweep",
               results=results(0.7, 15.0, {"stage4": 0.9}, cams(0.8)))
    paths = tables.write(str(tmp_path))
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert lines[2] == ("| lambda | CL ↑ | ATT-COS ↑ | CAM-COS ↑ | pointing ↑ | deletion AUC ↓ | "
                        "insertion AUC ↑ |")
    # lambda 4: seeds 0.8 and 0.9 -> mean 85, sample std sqrt(2 * 5^2 / 1) = 7.07.
    assert lines[4:7] == [
        "| 0 | 60.00 | 0.500 | 0.500 | 0.500 | 0.200 | 0.600 |",
        "| 4 | 85.00 ± 7.07 (n=2) | 0.750 ± 0.071 (n=2) | 0.650 ± 0.071 (n=2) | "
        "0.500 ± 0.000 (n=2) | 0.200 ± 0.000 (n=2) | 0.600 ± 0.000 (n=2) |",
        "| 15 | 70.00 | 0.900 | 0.800 | 0.500 | 0.200 | 0.600 |",
    ]
    rows = list(csv.reader(open(tmp_path / "table.csv")))
    assert rows[0][:4] == ["lambda", "CL", "CL std", "CL n"]
    assert rows[2][0] == "4"
    assert float(rows[2][1]) == pytest.approx(85.0)
    assert float(rows[2][2]) == pytest.approx(math.sqrt(50.0))
    assert rows[2][3] == "2" and rows[1][3] == "1"
    assert paths[-1].endswith("lambda_sweep.png")
    assert matplotlib.image.imread(paths[-1])[..., :3].std() > 0.05


def test_layer_ablation_rows_follow_the_grid_and_average_the_aligned_layers(tmp_path):
    cams = {"cam": scores(0.6, 0.5, 0.2, 0.6)}
    att = {"stem": 0.2, "stage3": 0.4, "stage4": 0.8}
    write_cell(tmp_path, "b", 0, layout="layer_ablation", results=results(0.5, 0.0, att, cams))
    write_cell(tmp_path, "c", 2, layout="layer_ablation",
               results=results(0.7, 4.0, att, cams, layers=("stage3", "stage4")))
    write_cell(tmp_path, "a", 1, layout="layer_ablation",
               results=results(0.6, 4.0, att, cams, layers=("stem",)))
    tables.write(str(tmp_path))
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert lines[2] == ("| aligned layers | CL ↑ | CAM-COS ↑ | ATT-COS aligned ↑ | "
                        "ATT-COS stage4 ↑ | pointing ↑ | deletion AUC ↓ | insertion AUC ↑ |")
    assert [line.split(" | ")[:4] for line in lines[4:7]] == [
        ["| none (lambda = 0)", "50.00", "0.600", "-"],
        ["| stem", "60.00", "0.600", "0.200"],
        ["| stage3 + stage4", "70.00", "0.600", "0.600"],   # (0.4 + 0.8) / 2
    ]


def test_seed_table_reports_the_extra_split_and_spread(tmp_path):
    for i, (w, s, acc, cued) in enumerate([(0.0, 0, 0.5, 0.9), (0.0, 1, 0.3, 0.95),
                                           (4.0, 0, 0.9, 0.92), (4.0, 1, 0.9, 0.9)]):
        write_cell(tmp_path, f"c{i}", i, layout="seeds", extra_splits=["test_cued"],
                   results=results(acc, w, {"stage4": 0.5}, {"cam": scores(0.5, 0.5, 0.2, 0.6)},
                                   seed=s),
                   extra={"test_cued": results(cued, w, {"stage4": 0.5}, {}, seed=s)})
    tables.write(str(tmp_path))
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert lines[2].startswith("| lambda | CL ↑ | CL test_cued ↑ | ATT-COS ↑ |")
    # lambda 0: (50, 30) -> 40 +- 14.14; cued (90, 95) -> 92.5 +- 3.54.
    assert lines[4].startswith("| 0 | 40.00 ± 14.14 (n=2) | 92.50 ± 3.54 (n=2) |")
    assert lines[5].startswith("| 4 | 90.00 ± 0.00 (n=2) | 91.00 ± 1.41 (n=2) |")


def test_a_folder_without_cells_or_with_two_grids_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no cell in .*python -m fer_jax.experiments"):
        tables.write(str(tmp_path))
    write_cell(tmp_path, "a", 0, grid="one")
    with pytest.raises(ValueError, match="no cell of grid 'one' has finished yet"):
        tables.write(str(tmp_path))
    write_cell(tmp_path, "b", 1, grid="two")
    with pytest.raises(ValueError, match=r"several grids \['one', 'two'\]"):
        tables.write(str(tmp_path))
