"""Grid definitions and shard splitting: pure functions, checked without training."""
import os
import subprocess
import sys

import pytest

from fer_jax import experiments, grids

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def configs_of(grid):
    return {c.name: experiments.load_config(c.config, c.overrides) for c in grid.cells}


@pytest.mark.parametrize("name", sorted(grids.GRIDS))
def test_every_cell_of_every_grid_loads_and_validates(name):
    grid = grids.get(name)
    assert grid.layout in grids.LAYOUTS
    names = [c.name for c in grid.cells]
    assert len(names) == len(set(names)) > 1
    loaded = configs_of(grid)   # raises on a missing file, an unknown key or a bad value
    # Cells differ: no two train the same thing.
    frozen = [repr(sorted(c.to_dict().items())) for c in loaded.values()]
    assert len(set(frozen)) == len(frozen)
    dataset = ("synthetic_faces/" if "_synthetic" in name or name == "shortcut" else
               "affectnet" if name.endswith("_affectnet") else "rafdb")
    for config in loaded.values():
        assert config.dataset.name.startswith(dataset)


def test_paper_tables_pair_lambda_zero_with_the_configs_own_lambda():
    for name, paper_lambda in (("paper_table", 4.0), ("paper_table_affectnet", 9.0),
                               ("paper_table_synthetic", 4.0),
                               ("paper_table_synthetic_quick", 4.0)):
        grid = grids.get(name)
        loaded = configs_of(grid)
        variants = {}
        for cell in grid.cells:
            variants.setdefault(cell.variant, []).append(loaded[cell.name].align.weight)
        assert set(variants) == {grids.POSTHOC, "wildcat", "acol", "prm", "adl", "cutmix",
                                 "apvit"} | (set() if name.endswith("_affectnet") else {"tscam"})
        for variant, weights in variants.items():
            assert sorted(weights) == [0.0, paper_lambda], (name, variant)


def test_quick_miniature_table_is_the_table_at_6_epochs_and_nothing_else():
    """paper_table_synthetic trains each model 30 epochs (its without-AU models learn);
    its quick variant is the same cells at 6 epochs (the ViT's TS-CAM at 5)."""
    full, quick = grids.get("paper_table_synthetic"), grids.get("paper_table_synthetic_quick")
    assert [c.name for c in full.cells] == [c.name for c in quick.cells]
    loaded_full, loaded_quick = configs_of(full), configs_of(quick)
    for name, config in loaded_full.items():
        short = loaded_quick[name]
        assert config.train.num_epochs == 30.0, name
        assert short.train.num_epochs == (5.0 if config.model.name.startswith("vit") else 6.0)
        short.train.num_epochs = config.train.num_epochs
        assert _flat(short.to_dict()) == _flat(config.to_dict()), name


def _flat(tree, prefix=""):
    """{"group.key": value} of a nested config dict."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name,config_file,shared", [
    ("lambda_sweep", "configs/rafdb_resnet50.py", {}),
    # The synthetic sweep tabulates CAM alone: only that map is evaluated.
    ("lambda_sweep_synthetic", "configs/miniature_quick.py", {"eval.cam_methods": ("cam",)})])
def test_lambda_sweep_is_its_config_at_each_of_the_papers_lambdas_and_nothing_else(
        name, config_file, shared):
    """One cell per lambda: 0 (no alignment), the ends of the paper's range "1 to 15",
    4 (its best on RAF-DB, the RAF-DB config's own) and 9 (its AffectNet default, the
    AffectNet config's own), plus 2; each cell is the sweep's config file with only
    align.weight (and the sweep's shared overrides) changed."""
    grid = grids.get(name)
    assert grid.layout == "lambda_sweep" and grid.cam_method == "cam"
    base = _flat(experiments.load_config(config_file, {}).to_dict())
    loaded = configs_of(grid)
    weights = []
    for cell in grid.cells:
        assert cell.config == config_file, cell.name
        config = _flat(loaded[cell.name].to_dict())
        assert config.keys() == base.keys()
        changed = {k: config[k] for k in base if config[k] != base[k]}
        weight = config["align.weight"]
        expected = dict(shared)
        if weight != base["align.weight"]:
            expected["align.weight"] = weight
        assert changed == expected, cell.name
        assert cell.name == f"lambda{weight:g}"   # its workdir says its lambda
        weights.append(weight)
    paper = {0.0, 1.0, 15.0,
             experiments.load_config("configs/rafdb_resnet50.py", {}).align.weight,
             experiments.load_config("configs/affectnet_resnet50.py", {}).align.weight}
    assert paper == {0.0, 1.0, 4.0, 9.0, 15.0}
    assert sorted(weights) == sorted(paper | {2.0})   # each exactly once


def test_layer_ablations_align_each_stage_alone_and_the_combinations():
    for name in ("layer_ablation", "layer_ablation_synthetic"):
        loaded = configs_of(grids.get(name))
        aligned = [tuple(c.align.layers) for c in loaded.values() if c.align.weight > 0]
        for stage in ("stem", "stage1", "stage2", "stage3", "stage4"):
            assert (stage,) in aligned
        assert ("stage3", "stage4") in aligned
        assert ("stem", "stage1", "stage2", "stage3", "stage4") in aligned
        assert sum(c.align.weight == 0 for c in loaded.values()) == 1   # the baseline row
        assert len({c.align.weight for c in loaded.values() if c.align.weight > 0}) == 1


def test_shortcut_grid_trains_both_lambdas_on_several_seeds_and_evaluates_the_cued_split():
    grid = grids.get("shortcut")
    loaded = configs_of(grid)
    pairs = sorted((c.align.weight, c.train.seed) for c in loaded.values())
    seeds = sorted({s for _, s in pairs})
    assert len(seeds) >= 3
    assert pairs == sorted((w, s) for w in (0.0, 4.0) for s in seeds)
    assert {c.dataset.name for c in loaded.values()} == {"synthetic_faces/shortcut"}
    assert all(c.extra_splits == ("test_cued",) for c in grid.cells)


def test_unknown_grid_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown grid 'paper'; valid grids: \['lambda_sweep'"):
        grids.get("paper")


def test_bad_override_key_is_named_with_the_valid_keys():
    with pytest.raises(ValueError, match=r"override align\.wieght=0: unknown key 'wieght'; "
                                         r"valid keys: \['layers', 'weight'\]"):
        experiments.load_config("configs/default.py", {"align.wieght": 0})
    with pytest.raises(ValueError, match=r"no config group 'algn'"):
        experiments.load_config("configs/default.py", {"algn.weight": 0})


def test_shards_split_the_cells_round_robin():
    cells = [grids.Cell(f"c{i}", "configs/default.py") for i in range(14)]
    assert [c.name for c in grids.shard(cells, 1, 3)] == ["c1", "c4", "c7", "c10", "c13"]
    assert grids.shard(cells, 0, 1) == cells
    for count in range(1, 6):
        parts = [grids.shard(cells, i, count) for i in range(count)]
        names = [c.name for part in parts for c in part]
        assert sorted(names) == sorted(c.name for c in cells)       # every cell exactly once
        assert max(map(len, parts)) - min(map(len, parts)) <= 1      # balanced
        assert parts == [grids.shard(cells, i, count) for i in range(count)]   # deterministic
    assert grids.shard(cells[:2], 2, 3) == []


@pytest.mark.parametrize("text,expected", [("0/1", (0, 1)), ("2/3", (2, 3))])
def test_parse_shard(text, expected):
    assert grids.parse_shard(text) == expected


@pytest.mark.parametrize("text", ["3/3", "-1/2", "1", "a/b", "1/0"])
def test_bad_shard_is_named(text):
    with pytest.raises(ValueError, match=f"--shard='{text}'"):
        grids.parse_shard(text)


def test_cli_lists_cells_and_ends_a_bad_grid_with_one_line():
    cmd = [sys.executable, "-m", "fer_jax.experiments"]
    out = subprocess.run(cmd + ["--grid=lambda_sweep_synthetic", "--dry_run"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("configs/miniature_quick.py") == 6 and "'align.weight': 15.0" in out.stdout
    out = subprocess.run(cmd + ["--grid=nope", "--out=/nonexistent"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(
        "error: unknown grid 'nope'; valid grids: ['lambda_sweep', ")
