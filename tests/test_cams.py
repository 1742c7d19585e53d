"""fer_jax.cams: each method against its definition in NumPy, and what the engine promises.

(tests/test_cam_parity.py compares the methods pytorch-grad-cam also has with it.)
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import cams, capture
from fer_jax.cams import base
from fer_jax.config_schema import ConfigError
from fer_jax.models import vit

relu = lambda a: np.maximum(a, 0.0)


def _inputs(model, v, x, labels, layer="stage4"):
    probe = capture.probe(model.apply, v, x, labels, (layer,), (layer,))
    f, g = probe.features[layer], probe.gradients[layer]
    return base.LayerInputs(features=f, gradients=g, classes=labels,
                            head_kernel=v["params"]["head"]["kernel"]), probe


def test_cam_of_a_gap_head_averages_to_the_logit_minus_its_bias(resnet_case):
    model, v, x, labels = resnet_case
    inputs, probe = _inputs(model, v, x, labels)
    cam = np.asarray(cams.REGISTRY["cam"].fn(inputs).sum(-1))
    expected = np.asarray(probe.logits)[np.arange(3), labels] - np.asarray(
        v["params"]["head"]["bias"])[labels]
    np.testing.assert_allclose(cam.mean((1, 2)), expected, atol=1e-4)


def test_gradient_cams_match_their_numpy_definitions(resnet_case):
    model, v, x, labels = resnet_case
    inputs, _ = _inputs(model, v, x, labels)
    f, g = np.asarray(inputs.features, np.float64), np.asarray(inputs.gradients, np.float64)
    total = f.sum((1, 2), keepdims=True)
    alpha = g ** 2 / (2 * g ** 2 + total * g ** 3 + 1e-6)
    alpha[g == 0] = 0.0
    expected = {
        "gradcam": np.einsum("bhwc,bc->bhw", f, g.mean((1, 2))),
        "gradcam++": np.einsum("bhwc,bc->bhw", f, (alpha * relu(g)).sum((1, 2))),
        "xgradcam": np.einsum("bhwc,bc->bhw", f, (g * f / (total + 1e-7)).sum((1, 2))),
        "hirescam": (g * f).sum(-1),
        "layercam": (relu(g) * f).sum(-1),
    }
    for name, want in expected.items():
        got = np.asarray(cams.REGISTRY[name].fn(inputs).sum(-1))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-8, err_msg=name)


def test_attention_rollout_and_class_token_map_match_numpy(vit_case):
    model, v, x, labels = vit_case
    spec = cams.spec_for(model, ("rollout", "cls_attention"))
    out = cams.explain(model, v, x, labels, spec)
    probs = [np.asarray(out.probe.taps[n], np.float64) for n in model.attention_layers]
    joint = np.eye(probs[0].shape[-1])
    for p in probs:
        a = 0.5 * p.mean(1) + 0.5 * np.eye(p.shape[-1])
        joint = (a / a.sum(-1, keepdims=True)) @ joint
    raw = {"rollout": joint[:, 0, 1:], "cls_attention": probs[-1].mean(1)[:, 0, 1:]}
    for name, row in raw.items():
        grid = row.reshape(2, 4, 4)
        lo, hi = grid.min((1, 2), keepdims=True), grid.max((1, 2), keepdims=True)
        want = np.asarray(jax.image.resize(jnp.asarray((grid - lo) / (hi - lo)), (2, 32, 32),
                                           "linear"))
        np.testing.assert_allclose(np.asarray(out.maps[name]), want, atol=1e-5, err_msg=name)


def test_eigen_cam_is_the_first_principal_component_with_a_fixed_sign(resnet_case):
    model, v, x, labels = resnet_case
    probe = capture.probe(model.apply, v, x, labels, ("stage4",))
    f = np.asarray(probe.features["stage4"], np.float64)
    got = np.asarray(cams.eigen.first_component(probe.features["stage4"]))
    for i in range(3):
        a = f[i].reshape(-1, f.shape[-1])
        a = a - a.mean(0)
        proj = a @ np.linalg.svd(a)[2][0]
        if abs(proj.min()) > abs(proj.max()):
            proj = -proj
        np.testing.assert_allclose(got[i].ravel(), proj, rtol=1e-3, atol=1e-4 * abs(proj).max())


def _count_convolutions(jaxpr) -> int:
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == "conv_general_dilated"
        for sub in jax.core.jaxprs_in_params(eqn.params):
            count += _count_convolutions(sub)
    return count


def test_one_forward_and_one_backward_serve_every_gradient_method(resnet_case):
    """The compiled program holds the convolutions of one forward pass, whatever the number of
    methods: the backward from the logits to stage4 (the last conv stage) crosses no conv."""
    model, v, x, labels = resnet_case
    methods = ("cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam",
               "random", "centre")
    forward = _count_convolutions(jax.make_jaxpr(lambda v, x: model.apply(v, x))(v, x).jaxpr)
    spec = cams.spec_for(model, methods)
    engine = jax.make_jaxpr(lambda v, x: cams.explain(model, v, x, labels, spec).maps)(v, x)
    assert forward > 0 and _count_convolutions(engine.jaxpr) == forward
    # Gradients at stage3 as well: still one forward; the one backward adds the transposed
    # convolutions of stage4 only (fewer than a second forward would add).
    both = cams.spec_for(model, ("gradcam", "layercam"), layers=("stage3", "stage4"))
    engine = jax.make_jaxpr(lambda v, x: cams.explain(model, v, x, labels, both).maps)(v, x)
    assert forward < _count_convolutions(engine.jaxpr) < 2 * forward


def test_engine_maps_are_unit_range_at_input_size_for_every_applicable_method(vit_case):
    model, v, x, labels = vit_case
    spec = cams.spec_for(model, ("all",), layers=("block1", "block2"))
    # A GAP-head ViT: every method applies but the built-in maps of training-time heads
    # (tests/test_wsol.py, tests/test_training_time.py).
    builtin = {n for n, m in cams.REGISTRY.items() if cams.base.HEAD_MAPS in m.needs}
    assert builtin == {"wildcat", "acol", "prm", "tscam"}
    assert set(spec.methods) == set(cams.REGISTRY) - builtin
    out = jax.jit(lambda v, x: cams.explain(model, v, x, labels, spec).maps)(v, x)
    for name, m in out.items():
        m = np.asarray(m)
        assert m.shape == (2, 32, 32) and np.isfinite(m).all(), name
        assert m.min() >= 0.0 and m.max() <= 1.0, name


def test_default_set_is_the_papers_maps_and_the_reference_rows(resnet_case, vit_case):
    resnet, vit_gap = resnet_case[0], vit_case[0]
    paper = ["cam", "gradcam", "gradcam++", "layercam", "random", "centre"]
    assert cams.spec_for(resnet).methods == tuple(paper)
    assert cams.spec_for(resnet, ("paper",)).methods == tuple(paper)
    assert cams.spec_for(resnet, ("scorecam", "paper")).methods == ("scorecam", *paper)
    assert cams.spec_for(resnet, ("all",)).methods == tuple(cams.applicable(resnet))
    assert cams.spec_for(vit_gap).methods == tuple(paper)
    token_vit = vit.ViT(num_classes=5, patch_size=8, embed_dim=24, depth=2, num_heads=3,
                        image_size=32, head="token")
    assert cams.spec_for(token_vit).methods == ("gradcam", "gradcam++", "layercam", "random",
                                                "centre")


def test_maps_identical_under_a_gap_linear_head_are_computed_once(resnet_case, vit_case):
    """Grad-CAM, HiResCAM (and XGrad-CAM on post-ReLU features) make one map when a linear
    head reads the global average of the layer: the merged maps equal those computed one
    by one with each method's own formula."""
    trio = ("gradcam", "hirescam", "xgradcam")
    # The ViT's default maps read its last block, not the head's input: name the latter.
    for (model, v, x, labels), layers, merged in (
            (resnet_case, (), (("hirescam", "gradcam"), ("xgradcam", "gradcam"))),
            (vit_case, ("encoder_norm_grid",), (("hirescam", "gradcam"),))):
        spec = cams.spec_for(model, trio + ("layercam",), layers)
        assert spec.same_as == merged
        assert set(spec.computed) == set(trio + ("layercam",)) - {a for a, _ in merged}
        separate = cams.spec_for(model, trio + ("layercam",), layers, merge_identical=False)
        assert separate.same_as == () and separate.computed == separate.methods
        ours = cams.explain(model, v, x, labels, spec).maps
        theirs = cams.explain(model, v, x, labels, separate).maps
        for name in trio:
            np.testing.assert_allclose(np.asarray(ours[name]), np.asarray(theirs[name]),
                                       atol=2e-5, err_msg=f"{type(model).__name__} {name}")
    # Another layer than the one the head reads: nothing is merged.
    model = resnet_case[0]
    assert cams.spec_for(model, trio, layers=("stage3",)).same_as == ()
    assert cams.spec_for(model, trio, layers=("stage3", "stage4")).same_as == ()


def test_aug_smooth_commutes_with_a_horizontal_flip(resnet_case):
    """The augmentations are closed under flipping, so flipping the input flips the map."""
    model, v, x, labels = resnet_case
    spec = cams.spec_for(model, ("gradcam", "layercam"), aug_smooth=True)
    run = jax.jit(lambda v, x: cams.explain(model, v, x, labels, spec).maps)
    plain, flipped = run(v, x), run(v, x[:, :, ::-1])
    for name in spec.methods:
        np.testing.assert_allclose(np.asarray(flipped[name]), np.asarray(plain[name])[:, :, ::-1],
                                   atol=1e-5, err_msg=name)
    single = jax.jit(lambda v, x: cams.explain(
        model, v, x, labels, cams.spec_for(model, ("gradcam",))).maps)(v, x)
    assert not np.allclose(np.asarray(single["gradcam"]), np.asarray(plain["gradcam"]), atol=1e-3)


def test_random_reference_depends_only_on_the_sample_id(resnet_case):
    model, v, x, labels = resnet_case
    spec = cams.spec_for(model, ("random", "centre"))
    a = cams.explain(model, v, x, labels, spec, sample_ids=jnp.array([5, 6, 7])).maps
    b = cams.explain(model, v, x[::-1], labels[::-1], spec, sample_ids=jnp.array([7, 6, 5])).maps
    np.testing.assert_array_equal(np.asarray(a["random"]), np.asarray(b["random"])[::-1])
    assert not np.allclose(np.asarray(a["random"][0]), np.asarray(a["random"][1]))
    centre = np.asarray(a["centre"][0])
    assert np.unravel_index(centre.argmax(), centre.shape) in {(15, 15), (15, 16), (16, 15),
                                                               (16, 16)}


def test_method_names_are_checked_against_the_registry_and_the_model(resnet_case):
    model = resnet_case[0]
    with pytest.raises(ConfigError, match=r"unknown CAM method 'gradcamm'; valid names: \[.*"
                                          r"'gradcam'"):
        cams.spec_for(model, ("gradcamm",))
    with pytest.raises(ConfigError, match="'rollout' does not apply to ResNet: it needs a vision"):
        cams.spec_for(model, ("rollout",))
    token_vit = vit.ViT(num_classes=5, patch_size=8, embed_dim=24, depth=2, num_heads=3,
                        image_size=32, head="token")
    assert "cam" not in cams.applicable(token_vit) and "rollout" in cams.applicable(token_vit)
    with pytest.raises(ConfigError, match="'cam' does not apply to ViT: it needs a global"):
        cams.spec_for(token_vit, ("cam",))
    with pytest.raises(ConfigError, match="eval.cam_layers: unknown layer 'stage7'"):
        cams.spec_for(model, layers=("stage7",), available_layers={"stage4": (1, 4, 4, 8)})
