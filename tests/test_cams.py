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
