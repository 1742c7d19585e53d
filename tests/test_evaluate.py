"""What evaluation computes, and that its outputs say so: the faithfulness subset, its
steps and start image, maps merged because they are identical, maps below chance."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from fer_jax import evaluate, input_pipeline, report, runs
from fer_jax.metrics import faithfulness

SUBSET, STEPS, BLUR = 20, 3, 0.125


@pytest.fixture(scope="module")
def subset_evaluation(trained_run, tmp_path_factory):
    """(results, report text, maps per faithfulness call) of the shared tiny run evaluated
    again with three merged methods, the centre reference, and deletion / insertion on a
    20-example subset in 3 steps."""
    workdir, _ = trained_run
    out = tmp_path_factory.mktemp("subset_eval")
    calls = []
    original = faithfulness.curves

    def spy(class_probs, images, cam_maps, *args, **kwargs):
        calls.append(cam_maps.shape[0])     # traced once per compiled step
        return original(class_probs, images, cam_maps, *args, **kwargs)

    mp = pytest.MonkeyPatch()
    mp.setattr(faithfulness, "curves", spy)
    try:
        results = evaluate.evaluate_run(str(workdir), output=str(out), overrides={
            "eval.cam_methods": ("gradcam", "hirescam", "xgradcam", "centre"),
            "eval.faithfulness_examples": SUBSET, "eval.faithfulness_steps": STEPS,
            "eval.insertion_blur": BLUR, "eval.num_plot_images": 0})
    finally:
        mp.undo()
    results["_out"] = out
    return results, (out / "report.md").read_text(), calls


def test_identical_maps_are_scored_once_and_reported_as_copies(subset_evaluation):
    results, text, calls = subset_evaluation
    assert calls and set(calls) == {2}          # gradcam and centre: hirescam, xgradcam merged
    assert results["cam_methods"] == ["gradcam", "hirescam", "xgradcam", "centre"]
    assert results["same_maps"] == {"hirescam": "gradcam", "xgradcam": "gradcam"}
    assert results["cams"]["hirescam"] == results["cams"]["xgradcam"] == results["cams"]["gradcam"]
    assert "| hirescam (= gradcam) |" in text and "hirescam = gradcam; xgradcam = gradcam" in text


def test_report_and_results_state_the_subset_steps_and_start_image(subset_evaluation):
    results, text, _ = subset_evaluation
    assert results["faithfulness"] == {
        "steps": STEPS, "examples": SUBSET, "of": 56, "insertion_blur": BLUR,
        "subset": f"fixed random subset (seed {faithfulness._SUBSET_SEED})"}
    assert (f"Deletion/insertion: {STEPS} steps on {SUBSET} of the 56 examples (fixed random "
            f"subset (seed {faithfulness._SUBSET_SEED})); insertion starts from a Gaussian blur "
            f"of sigma {BLUR:g} x the side") in text
    on_disk = json.loads((results["_out"] / "results.json").read_text())
    assert on_disk["faithfulness"] == results["faithfulness"]
    assert on_disk["same_maps"] == results["same_maps"]


def test_subset_scores_equal_a_direct_computation_on_those_examples(trained_run,
                                                                     subset_evaluation):
    """Deletion / insertion AUC of the centre map and their 95 % intervals, recomputed
    example by example with NumPy and SciPy on the subset's positions of the test split."""
    workdir, _ = trained_run
    results, _, _ = subset_evaluation
    restored = runs.restore(str(workdir))
    config = restored.config
    dataset = input_pipeline.get_dataset(config.dataset, build_if_missing=False)
    batches, _ = input_pipeline.eval_batches(dataset, config, "test", 1, 56)
    batch = {k: v[0] for k, v in next(batches).items()}
    positions = faithfulness.subset_positions(56, SUBSET)
    assert len(positions) == SUBSET == len(set(positions.tolist()))
    np.testing.assert_array_equal(positions, faithfulness.subset_positions(56, SUBSET))
    images, labels = batch["image"][positions], batch["label"][positions]

    side = images.shape[1]
    yy, xx = np.mgrid[:side, :side]
    centre = np.exp(-0.5 * (((yy - (side - 1) / 2) / (side / 4)) ** 2
                            + ((xx - (side - 1) / 2) / (side / 4)) ** 2))
    order = np.argsort(-centre.ravel(), kind="stable")
    sigma = BLUR * side
    start = ndimage.gaussian_filter(images, (0, sigma, sigma, 0), mode="mirror",
                                    truncate=np.ceil(3 * sigma) / sigma)
    prob = jax.jit(lambda x: jax.nn.softmax(restored.model.apply(restored.variables, x)))

    def curve(first, last):
        points = []
        for k in range(STEPS + 1):
            done = np.zeros(side * side, bool)
            done[order[:int(round(k * side * side / STEPS))]] = True
            x = np.where(done.reshape(1, side, side, 1), last, first)
            points.append(np.asarray(prob(jnp.asarray(x)))[np.arange(SUBSET), labels])
        return np.trapezoid(np.stack(points, -1), dx=1 / STEPS, axis=-1)

    for key, auc in (("deletion_auc", curve(images, np.zeros_like(images))),
                     ("insertion_auc", curve(start, images))):
        got = results["cams"]["centre"]
        assert got[key] == pytest.approx(auc.mean(), abs=1e-5), key
        assert got[f"{key}_ci95"] == pytest.approx(
            1.96 * auc.std(ddof=1) / np.sqrt(SUBSET), abs=1e-5), key


def test_maps_worse_than_the_random_reference_are_flagged():
    results = {"split": "test", "num_examples": 4, "num_valid_heatmaps": 3, "accuracy": 0.5,
               "mean_class_accuracy": 0.5, "cam_layers": ["stage4"], "cam_layer": "stage4",
               "cam_methods": ["gradcam", "layercam", "random"], "att_cos": {},
               "faithfulness_steps": 0, "cams": {
                   "gradcam": {"cam_cos": 0.2, "pointing": 0.5, "deletion_auc": 0.4},
                   "layercam": {"cam_cos": 0.6, "pointing": 0.5, "deletion_auc": 0.1},
                   "random": {"cam_cos": 0.3, "pointing": 0.1, "deletion_auc": 0.3}}}
    assert report.below_random(results) == {"gradcam": ["cam_cos", "deletion_auc"]}
    text = report.markdown(results)
    assert "| gradcam | 50.00 | 0.200 ⚠ | 0.500 | 0.400 ⚠ |" in text
    assert "⚠ worse than the random reference map: gradcam (cam_cos, deletion_auc)" in text
    assert "layercam | 50.00 | 0.600 | 0.500 | 0.100 |" in text
    del results["cams"]["random"]
    assert report.below_random(results) == {} and "⚠" not in report.markdown(results)
