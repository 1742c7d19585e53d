"""Pictures: the overlay grids and the confusion matrix are written as readable PNGs."""
import matplotlib.image
import numpy as np

from fer_jax import plots

NAMES = ["Neutral", "Happiness", "Surprise", "Fear", "Anger", "Disgust", "Sadness"]


def grid(tmp_path, n):
    rng = np.random.default_rng(0)
    path = str(tmp_path / f"grid{n}.png")
    maps = lambda: rng.uniform(size=(n, 32, 32)).astype(np.float32)
    plots.overlay_grid(rng.uniform(size=(n, 32, 32, 3)), [("attention", maps()), ("CAM", maps())],
                       maps(), np.arange(n) % 3 > 0, np.arange(n) % 7, (np.arange(n) + 1) % 7,
                       NAMES, path)
    return matplotlib.image.imread(path)


def test_long_attention_grids_put_two_faces_per_row(tmp_path):
    eight, sixteen = grid(tmp_path, 8), grid(tmp_path, 16)
    # 8 faces: one face (4 panels) per row, 8 rows; 16 faces: two per row, still 8 rows.
    np.testing.assert_allclose(eight.shape[0] / eight.shape[1], 2.0, rtol=0.05)
    np.testing.assert_allclose(sixteen.shape[0], eight.shape[0], rtol=0.05)
    four = grid(tmp_path, 4)
    np.testing.assert_allclose(sixteen.shape[1] / four.shape[1], 2.0, rtol=0.05)
    np.testing.assert_allclose(sixteen.shape[0] / four.shape[0], 2.0, rtol=0.1)


def test_confusion_matrix_png_is_written(tmp_path):
    path = str(tmp_path / "confusion.png")
    plots.confusion_matrix(np.eye(7, dtype=int) * 10, NAMES, path)
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 300
    assert image[..., :3].std() > 0.1  # not a blank canvas
