"""Pictures: the overlay grids and the confusion matrix, read back from their PNGs."""
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


def test_confusion_matrix_png_draws_row_rates_in_blues_with_counts_and_the_given_names(
        tmp_path, monkeypatch):
    """confusion.png, read back: each cell of row r (true class r), column c (predicted c)
    is filled with Blues(count / row total) and holds the count; the ticks name the
    classes given, in their order; the axes say which side is true and which predicted.
    The counts make the three readings differ: row rates, column rates, raw counts."""
    import matplotlib.pyplot as plt
    counts = np.array([[6, 2, 0, 0],     # row total 8: 0.75, 0.25
                       [1, 1, 0, 0],     # total 2: 0.5, 0.5 (fewer examples, not paler)
                       [0, 0, 0, 0],     # no example of this class: all rates 0
                       [0, 9, 3, 18]])   # total 30: 0.3, 0.1, 0.6
    names = ["calm", "joy", "awe", "rage"]   # not the dataset's names: drawn as given
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)   # rows: true class
    figures = []   # the figure, kept open to locate its cells in the PNG
    close = plt.close
    monkeypatch.setattr(plt, "close", figures.append)
    path = str(tmp_path / "confusion.png")
    plots.confusion_matrix(counts, names, path)
    monkeypatch.undo()
    (fig,) = figures
    try:
        png = matplotlib.image.imread(path)[..., :3]
        assert png.shape[:2] == tuple(np.round(fig.get_size_inches()[::-1] * 100).astype(int))
        (ax,) = fig.axes
        px = 100 / fig.dpi   # saved at dpi=100; display units are at the figure's dpi
        for r in range(4):
            for c in range(4):
                # 0.3 of a cell off the centre: inside the cell, clear of its count.
                x, y = ax.transData.transform((c + 0.3, r + 0.3)) * px
                got = png[int(round(png.shape[0] - y)), int(round(x))]
                want = matplotlib.colormaps["Blues"](rates[r, c])[:3]
                np.testing.assert_allclose(got, want, atol=2.5 / 255, err_msg=f"cell {r},{c}")
        texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
                 for t in ax.texts}
        assert texts == {(r, c): str(counts[r, c]) for r in range(4) for c in range(4)}
        # Counts stay readable: white on the dark cells (rate > 0.5), black elsewhere.
        colours = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_color()
                   for t in ax.texts}
        assert {k for k, v in colours.items() if v == "white"} == {(0, 0), (3, 3)}
        assert [t.get_text() for t in ax.get_xticklabels()] == names
        assert [t.get_text() for t in ax.get_yticklabels()] == names
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")
    finally:
        close(fig)


def test_video_frames_keep_their_size_with_faces_at_any_edge():
    """Boxes at the corners of small frames: the inset (CAM tile and bars) stays inside, the
    frame keeps its size, the input is not drawn on, and a row without a face draws nothing."""
    from types import SimpleNamespace
    rng = np.random.default_rng(0)
    probs = dict(zip(NAMES, rng.dirichlet(np.ones(len(NAMES)))))
    label = max(probs, key=probs.get)

    def face(box):
        return SimpleNamespace(box=box, label=label, confidence=probs[label], probabilities=probs,
                               crop=rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                               cam=rng.uniform(size=(64, 64)))

    for h, w in ((48, 64), (240, 320)):
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        before = frame.copy()
        rows = [face((0.0, 0.0, w / 3, h / 3)), face((w * 0.6, h * 0.6, w - 1.0, h - 1.0)),
                SimpleNamespace(box=None, crop=None)]
        out = plots.video_frame(frame, rows, [0, 1, None])
        assert out.shape == frame.shape and out.dtype == np.uint8
        assert np.array_equal(frame, before) and not np.array_equal(out, frame)
    blank = np.zeros((48, 64, 3), np.uint8)
    assert np.array_equal(plots.video_frame(blank, [SimpleNamespace(box=None, crop=None)],
                                            [None]), blank)
