"""fer_jax.models.apvit against an independent PyTorch APViT written here from the papers.

The PyTorch side names its modules as the published checkpoints do (face.evoLVe's IR:
`input_layer`, a flat `body` of units with `res_layer` / `shortcut_layer`; timm's ViT:
`blocks.{i}.attn.qkv`, ...), so its random weights are saved in those layouts, a `.pth`
and a `.safetensors`, and converted by `fer_jax.weights` as `fer_jax.convert_weights` does.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from fer_jax import capture, cams, config_schema, convert_weights, models, weights  # noqa: E402
from fer_jax.errors import ConfigError  # noqa: E402
from fer_jax.models import apvit  # noqa: E402

nn = torch.nn
SIZE = 32
CLASSES = 7


class IRUnitTorch(nn.Module):
    """face.evoLVe's bottleneck_IR, from its description: BN, conv, PReLU, conv(stride), BN."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.shortcut_layer = (nn.MaxPool2d(1, stride) if cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class BlockTorch(nn.Module):
    """A timm-named pre-norm block with APViT's token pooling after the attention half."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, keep_rate: float):
        super().__init__()
        self.heads, self.keep_rate = heads, keep_rate
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn.proj = nn.Linear(dim, dim)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.mlp.fc2 = nn.Linear(int(dim * mlp_ratio), dim)

    def forward(self, x, positions):
        b, n, d = x.shape
        q, k, v = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        logits = q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5
        out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
        x = x + self.attn.proj(out)
        m = max(int((n - 1) * self.keep_rate), 1)
        if m < n - 1:
            score = logits[:, :, 0, 1:].sum(1)                         # class row, summed heads
            idx = torch.sort(torch.topk(score, m, dim=1).indices, dim=1).values + 1
            idx = torch.cat([torch.zeros(b, 1, dtype=idx.dtype), idx], 1)
            x, positions = torch.gather(x, 1, idx[..., None].expand(-1, -1, d)), torch.gather(positions, 1, idx)
        x = x + self.mlp.fc2(nn.functional.gelu(self.mlp.fc1(self.norm2(x))))
        return x, positions


class APViTTorch(nn.Module):
    """IR stem + stages 1-3 -> 1x1 proj -> top-k cells by sum |proj| -> pooling ViT -> class token."""

    def __init__(self, m: apvit.APViT):
        super().__init__()
        self.k = m.keep_patches
        self.input_layer = nn.Sequential(nn.Conv2d(3, m.stem_width, 3, 1, 1, bias=False),
                                         nn.BatchNorm2d(m.stem_width), nn.PReLU(m.stem_width))
        units, cin = [], m.stem_width
        for n, width in zip(m.stage_units, m.stage_widths):
            units += [IRUnitTorch(cin if i == 0 else width, width, 2 if i == 0 else 1)
                      for i in range(n)]
            cin = width
        self.body = nn.Sequential(*units)
        self.proj = nn.Conv2d(cin, m.embed_dim, 1)
        grid = (m.image_size // m.patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, m.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid, m.embed_dim))
        self.blocks = nn.ModuleList(BlockTorch(m.embed_dim, m.num_heads, m.mlp_ratio, r)
                                    for r in m.keep_rates)
        self.norm = nn.LayerNorm(m.embed_dim, eps=1e-6)
        self.head = nn.Linear(m.embed_dim, CLASSES)

    def forward(self, img):
        grid_cnn = self.body(self.input_layer(img))
        f = self.proj(grid_cnn)
        b, d = f.shape[:2]
        score = f.abs().sum(1).flatten(1)                             # (B, h*w)
        tokens = f.flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]
        kept = torch.sort(torch.topk(score, self.k, dim=1).indices, dim=1).values
        x = torch.gather(tokens, 1, kept[..., None].expand(-1, -1, d))
        x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(b, -1, -1), x], 1)
        positions = torch.cat([torch.zeros(b, 1, dtype=kept.dtype), kept + 1], 1)
        chosen = [kept]
        for block in self.blocks:
            x, positions = block(x, positions)
            chosen.append(positions)
        return self.head(self.norm(x)[:, 0]), grid_cnn, chosen


def _randomise(model: nn.Module) -> None:
    """Random weights, biases, norm affines, BN statistics and PReLU slopes; each unit's
    last BN damped (as in trained nets), so that fp32 rounding stays far below 1e-4."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("attn.qkv.weight"):
                # Peaked attention: the class row's logits and probabilities rank apart.
                p.copy_(torch.randn(p.shape, generator=g) * 0.6)
            elif name.endswith("res_layer.4.weight"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.2 + 0.1)
            elif p.ndim == 1 and name.endswith("weight"):           # norm scales, PReLU slopes
                p.copy_(torch.rand(p.shape, generator=g) * 0.6 + 0.7)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (0.02 if p.ndim == 3 else 0.1))
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)


# A tiny APViT: 32 px -> a 4x4 grid of 16 cells, 12 kept, then 12 -> 10 -> 8 tokens; both
# kinds of IR shortcut (subsampling in stage1, a projection where the width doubles).
TINY = apvit.APViT(num_classes=CLASSES, stem_width=8, stage_widths=(8, 16, 32),
                   stage_units=(1, 2, 1), embed_dim=32, depth=3, num_heads=4,
                   keep_patches=12, keep_rates=(1.0, 0.9, 0.8), image_size=SIZE)
TAPS = (["stage3", "kept_patches"] + [f"encoder{i}/{t}" for i in range(3)
                                      for t in ("kept", "attn/probs", "probs_grid")])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(the reference's logits, grid and choices, the load report, fer_jax's logits and
    {tap name: output}) on one batch, fer_jax's variables converted from the two files."""
    tmp = tmp_path_factory.mktemp("apvit")
    torch.manual_seed(0)
    reference = APViTTorch(TINY).eval()
    _randomise(reference)
    state = {k: v.detach().clone() for k, v in reference.state_dict().items()}
    ir = {k: v for k, v in state.items() if k.startswith(("input_layer.", "body."))}
    ir["output_layer.0.weight"] = torch.ones(64)                   # face.evoLVe's embedding head
    vit_keys = ("cls_token", "pos_embed", "blocks.", "norm.", "head.")
    vit = {k: v for k, v in state.items() if k.startswith(vit_keys)}
    vit["patch_embed.proj.weight"] = torch.zeros(32, 3, 16, 16)    # timm's, unused by APViT
    torch.save(ir, tmp / "ir50.pth")
    safetensors_torch.save_file(vit, str(tmp / "vit.safetensors"))
    tensors = {**weights.read_tensors(str(tmp / "ir50.pth")),
               **weights.read_tensors(str(tmp / "vit.safetensors"))}
    # Shapes only (no initialisation to compile): what `convert` does not load, `proj`,
    # stays a shape, and both models get the reference's projection below.
    shapes = jax.eval_shape(TINY.init, jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3)))
    variables, report = weights.convert(shapes, tensors, str(tmp / "ir50.pth"), "apvit", CLASSES)
    # `proj` is in neither file (a fresh layer, as in APViT).
    variables["params"]["proj"] = {
        "kernel": jnp.asarray(reference.proj.weight.detach().numpy().transpose(2, 3, 1, 0)),
        "bias": jnp.asarray(reference.proj.bias.detach().numpy())}
    images = np.random.default_rng(1).standard_normal((3, SIZE, SIZE, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2)))

    @jax.jit
    def forward(v, x):
        logits, inter = TINY.apply(v, x, mutable=["intermediates"],
                                   capture_intermediates=lambda m, _: "/".join(m.path) in TAPS)
        return logits, {name: capture.captured(inter["intermediates"], name) for name in TAPS}
    logits, taps = forward(variables, jnp.asarray(images))
    return expected, report, np.asarray(logits), jax.tree_util.tree_map(np.asarray, taps)


def test_apvit_matches_an_independent_pytorch_apvit_logits_grid_and_choices(converted):
    (logits_t, grid_t, chosen_t), _, logits, taps = converted
    np.testing.assert_allclose(logits, logits_t.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(taps["stage3"], grid_t.numpy().transpose(0, 2, 3, 1),
                               atol=1e-4, rtol=1e-4)
    names = ["kept_patches"] + [f"encoder{i}/kept" for i in range(TINY.depth)]
    for name, expected in zip(names, chosen_t):
        np.testing.assert_array_equal(taps[name], expected.numpy(), err_msg=name)
    assert [c.shape[1] for c in chosen_t] == [12, 13, 11, 9]   # k = 12; 12 -> 10 -> 8


def test_weight_files_report_what_apvit_does_not_use_and_the_fresh_projection(converted):
    _, report, *_ = converted
    assert any(s.startswith("output_layer.0.weight (the face-recognition") for s in report.skipped)
    assert any(s.startswith("patch_embed.proj.weight (ViT patch embedding") for s in report.skipped)
    assert sorted(r.split(" ")[0] for r in report.reinitialised) == ["params/proj/bias",
                                                                     "params/proj/kernel"]


def test_face_evolve_flat_units_are_regrouped_into_stages_and_stage4_is_skipped():
    # IR-50's unit counts (3, 4, 14, 3): stages start at units 0, 3, 7 and 21, where the
    # width changes (a projection shortcut), except the first, which keeps 64 channels.
    tensors = {}
    for n in range(24):
        tensors[f"body.{n}.res_layer.1.weight"] = np.zeros((1, 1, 3, 3), np.float32)
        if n in (3, 7, 21):
            tensors[f"body.{n}.shortcut_layer.0.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    prepared, skipped = apvit.FAMILY.formats[0].prepare(tensors, "ir50.pth")
    assert "body.0.2.res_layer.1.weight" in prepared and "body.1.0.shortcut_layer.0.weight" in prepared
    assert "body.1.3.res_layer.1.weight" in prepared and "body.2.13.res_layer.1.weight" in prepared
    assert len(prepared) == 21 + 2 and len(skipped) == 3 + 1
    assert skipped[0].startswith("body.3.0.res_layer.1.weight (IR stage 4")


def test_attention_taps_place_each_blocks_attention_at_its_tokens_positions(converted):
    *_, taps = converted
    positions = np.concatenate([np.zeros((3, 1), int), taps["kept_patches"] + 1], 1)
    for i in range(TINY.depth):
        probs, grid = taps[f"encoder{i}/attn/probs"], taps[f"encoder{i}/probs_grid"]
        expected = np.zeros((3, TINY.num_heads, 17, 17), np.float32)
        for b in range(3):
            expected[b][:, positions[b][:, None], positions[b][None, :]] = probs[b]
        np.testing.assert_allclose(grid, expected, atol=1e-6)
        positions = taps[f"encoder{i}/kept"]


def _model_config():
    c = config_schema.defaults().model
    c.name, c.vit_head, c.vit_pos_size = "apvit_micro", "token", 64
    return c


def test_apvit_exposes_the_model_contract_and_the_attention_cam_methods_apply():
    model = models.create_model(_model_config(), CLASSES)
    assert (model.patch_size, model.cam_layer, model.default_cam_layers) == (8, "stage3", ("stage3",))
    assert not model.gap_head and model.attention_layers[-1] == "encoder3/probs_grid"
    assert "cam" not in cams.applicable(model)
    assert {"rollout", "cls_attention", "gradcam"} <= set(cams.applicable(model))


def test_apvit_needs_the_class_token_head():
    c = _model_config()
    c.vit_head = "gap"
    with pytest.raises(ConfigError, match="vit_head='gap': APViT's head reads the class token"):
        models.create_model(c, CLASSES)


def test_convert_weights_refuses_files_that_share_a_tensor(tmp_path):
    path = str(tmp_path / "vit.safetensors")
    safetensors_torch.save_file({"cls_token": torch.zeros(1, 1, 128)}, path)
    with pytest.raises(ValueError, match="tensor 'cls_token' is also in an earlier --input"):
        convert_weights.convert_file("apvit_micro", [path, path], str(tmp_path), CLASSES)
