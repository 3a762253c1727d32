"""Convolutional baselines: the text CNN against a naive loop over windows (max over time),
padding invariance, and the ResNet basic block against F.conv2d / batch-norm written out."""

import torch
import torch.nn.functional as F

from lmforge.errors import ConfigError
from lmforge.models import ModelConfig, build_model
from lmforge.models.cnn import ImageCNN, TextCNNClassifier


def text_cfg(**kw):
    return ModelConfig(**{**dict(arch="text_cnn", heads="classifier", n_classes=3, vocab_size=30,
                                 d_model=6, conv_widths=[2, 4]), **kw})


def test_text_cnn_features_are_max_over_windows_of_the_real_tokens():
    torch.manual_seed(0)
    m = build_model(text_cfg()).eval()
    assert isinstance(m, TextCNNClassifier)
    idx = torch.randint(1, 30, (2, 7))
    mask = torch.arange(7)[None] < torch.tensor([[7], [3]])
    feats = m.features(idx, None, mask)  # (B, 2*C)
    for b, n in enumerate([7, 3]):
        e = m.encoder.embed(idx[b, :n])  # (n, C)
        want = []
        for w, conv in zip([2, 4], m.encoder.convs):
            padded = torch.cat([torch.zeros(w - 1, 6), e, torch.zeros(w - 1, 6)])  # full conv
            W = conv.weight  # (C_out, C_in, w)
            outs = [F.relu((W * padded[t:t + w].T[None]).sum((1, 2)) + conv.bias)
                    for t in range(n + w - 1)]
            want.append(torch.stack(outs).amax(0))
        torch.testing.assert_close(feats[b], torch.cat(want), atol=1e-5, rtol=1e-5)


def test_text_cnn_padding_never_changes_the_logits():
    torch.manual_seed(0)
    m = build_model(text_cfg()).eval()
    idx = torch.randint(1, 30, (2, 5))
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    wide = torch.cat([idx, torch.full((2, 4), 9)], 1)
    wmask = torch.cat([mask, torch.zeros(2, 4, dtype=torch.bool)], 1)
    torch.testing.assert_close(m(idx, None, mask), m(wide, None, wmask))
    torch.testing.assert_close(m(idx[1:, :2], None, mask[1:, :2]), m(idx, None, mask)[1:])


def test_image_cnn_is_the_resnet_formula():
    torch.manual_seed(0)
    c = ModelConfig(arch="image_cnn", heads="classifier", n_classes=4, image_size=8,
                    image_channels=1, d_model=4, n_head=1, n_layer=2)
    m = build_model(c).eval()
    assert isinstance(m, ImageCNN)
    for mod in m.modules():  # non-trivial batch-norm statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    x = torch.rand(2, 1, 8, 8)

    def bn(h, b):
        return (h - b.running_mean[:, None, None]) / torch.sqrt(b.running_var[:, None, None] + b.eps) \
            * b.weight[:, None, None] + b.bias[:, None, None]

    h = F.relu(bn(F.conv2d(x, m.stem[0].weight, padding=1), m.stem[1]))
    for i, blk in enumerate(m.stages):
        s = 1 if i == 0 else 2
        z = F.relu(bn(F.conv2d(h, blk.conv1.weight, stride=s, padding=1), blk.bn1))
        z = bn(F.conv2d(z, blk.conv2.weight, padding=1), blk.bn2)
        skip = h if i == 0 else bn(F.conv2d(h, blk.skip[0].weight, stride=2), blk.skip[1])
        h = F.relu(z + skip)
    assert h.shape == (2, 8, 4, 4)
    torch.testing.assert_close(m(x), m.head.proj(h.mean((2, 3))), atol=1e-5, rtol=1e-5)


def test_classifier_only_archs_need_classes():
    try:
        build_model(ModelConfig(arch="text_cnn", vocab_size=10))
    except ConfigError as e:
        assert "heads" in str(e) and "\n" not in str(e)
    else:
        raise AssertionError("built a text_cnn without classes")
