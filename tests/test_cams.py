"""CAMs: the spatial mean of the true-class CAM equals that logit minus its bias."""
import jax
import jax.numpy as jnp
import numpy as np

from fer_jax import alignment, cams
from fer_jax.models import resnet


def test_cam_of_gap_head_reproduces_logits():
    model = resnet.ResNet18(num_classes=5, width=4, large_maps=True)
    x = jax.random.normal(jax.random.key(0), (3, 32, 32, 3))
    v = model.init(jax.random.key(1), x)
    logits, st = model.apply(v, x, capture_intermediates=alignment.capture_filter(["stage4"]),
                             mutable=["intermediates"])
    feats = alignment.captured(st["intermediates"], "stage4")
    labels = jnp.array([0, 3, 4])
    cam = cams.class_activation_map(feats, v["params"]["head"]["kernel"], labels)
    expected = logits[jnp.arange(3), labels] - v["params"]["head"]["bias"][labels]
    np.testing.assert_allclose(np.asarray(cam.mean((1, 2))), np.asarray(expected), atol=1e-4)


def test_cam_cos_is_one_for_a_cam_shaped_like_the_heatmap():
    heat = np.zeros((1, 16, 16), np.float32)
    heat[0, 4:12, 4:12] = 1.0
    cam = np.zeros((1, 16, 16), np.float32)
    cam[0, 4:12, 4:12] = 7.0  # any scale: CAMs are min-max normalised first
    np.testing.assert_allclose(np.asarray(cams.cam_cos(jnp.asarray(cam), heat)), 1.0, atol=1e-5)


def _resnet_case():
    model = resnet.ResNet18(num_classes=5, width=4, large_maps=True)
    x = jax.random.normal(jax.random.key(0), (3, 32, 32, 3))
    v = model.init(jax.random.key(1), x)
    return model, v, x, jnp.array([1, 0, 4])


def test_gradient_at_a_layer_of_a_gap_head_is_the_head_weight_over_the_area():
    model, v, x, labels = _resnet_case()
    feats, grads, logits = cams.features_and_gradients(model.apply, v, x, "stage4", labels)
    h, w = feats.shape[1:3]
    kernel = np.asarray(v["params"]["head"]["kernel"])  # (C, K)
    expected = kernel[:, np.asarray(labels)].T[:, None, None, :] / (h * w)
    np.testing.assert_allclose(np.asarray(grads), np.broadcast_to(expected, grads.shape),
                               rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(model.apply(v, x)), atol=1e-5)


def test_gradient_cams_match_their_numpy_definitions():
    model, v, x, labels = _resnet_case()
    feats, grads, _ = cams.features_and_gradients(model.apply, v, x, "stage4", labels)
    f, g = np.asarray(feats, np.float64), np.asarray(grads, np.float64)
    relu = lambda a: np.maximum(a, 0.0)
    gradcam = relu(np.einsum("bhwc,bc->bhw", f, g.mean((1, 2))))
    layercam = relu((relu(g) * f).sum(-1))
    alpha = g ** 2 / (2 * g ** 2 + f.sum((1, 2), keepdims=True) * g ** 3 + 1e-7)
    alpha[g == 0] = 0.0
    plusplus = relu(np.einsum("bhwc,bc->bhw", f, (alpha * relu(g)).sum((1, 2))))
    for name, expected in [("gradcam", gradcam), ("layercam", layercam),
                           ("gradcam++", plusplus)]:
        got = np.asarray(cams.GRADIENT_CAMS[name](feats, grads))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7, err_msg=name)
    # With a GAP head Grad-CAM is the ReLU of CAM, up to the 1/(h w) scale.
    cam = np.asarray(cams.class_activation_map(feats, v["params"]["head"]["kernel"], labels))
    np.testing.assert_allclose(gradcam * cam.shape[1] * cam.shape[2], relu(cam),
                               rtol=1e-4, atol=1e-6)
