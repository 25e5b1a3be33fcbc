"""hierbench.models: split identity, shared parameters, cut sizes without data, torchvision
parity, exit heads that learn on real CIFAR-10, and ConfigErrors that list the choices."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from hierbench.errors import ConfigError
from hierbench.models import (
    EXIT_HEADS,
    MODELS,
    STEMS,
    SplittableModel,
    attach_exit,
    build_model,
    count_parameters,
    cut_table,
    describe,
    exit_head,
    resnet18,
    split,
    vgg16,
)

CUTS = {
    "vgg16": ("pool1", "pool2", "pool3", "pool4", "pool5"),
    "resnet18": ("stem", "layer1", "layer2", "layer3", "layer4"),
}
CONFIGS = [(m, s, size) for m in MODELS for s in STEMS for size in (32, 64)]


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """Batches of 2-64 small images gain nothing from intra-op threads; on the shared 2-core
    reference machine the second thread's barrier waits made this file about 4x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ids(params) -> set[int]:
    return {id(p) for p in params}


# -- split identity ------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "stem", "size"), CONFIGS)
def test_split_is_exactly_the_model(name, stem, size):
    """cloud(edge(x)) == model(x) bit for bit at every cut; eval and train mode (outputs, grads,
    BatchNorm running statistics); edge outputs have the shape and size computed without data."""
    torch.manual_seed(0)
    num_classes = 10 if size == 32 else 200
    model = build_model(name, num_classes, stem=stem, input_size=size)
    assert model.cuts == CUTS[name]
    x = torch.randn(2, 3, size, size)

    model.eval()
    with torch.no_grad():
        ref = model(x)
        assert ref.shape == (2, num_classes)
        for cut in model.cuts:
            edge, cloud = split(model, cut)
            h = edge(x)
            assert tuple(h.shape[1:]) == model.cut_shape(cut)
            assert model.cut_numel(cut) == h[0].numel()
            assert model.cut_channels(cut) == h.shape[1]
            for bits in (32, 8, 4, 2):
                assert model.cut_bytes(cut, bits) == math.ceil(h[0].numel() * bits / 8)
            assert torch.equal(cloud(h), ref)

    model.train()
    w = torch.randn(2, num_classes)
    ref_model = copy.deepcopy(model)
    ref = ref_model(x)
    (ref * w).sum().backward()
    for cut in model.cuts:
        m = copy.deepcopy(model)  # same parameters and BN buffers as ref_model started with
        edge, cloud = split(m, cut)
        assert edge.training and cloud.training
        y = cloud(edge(x))
        assert torch.equal(y, ref)
        (y * w).sum().backward()
        for (k, p), (k_ref, p_ref) in zip(m.named_parameters(), ref_model.named_parameters()):
            assert k == k_ref
            assert torch.equal(p.grad, p_ref.grad), (cut, k)
        for (k, b), (_, b_ref) in zip(m.named_buffers(), ref_model.named_buffers()):
            assert torch.equal(b, b_ref), (cut, k)


@pytest.mark.parametrize(("name", "stem"), [(m, s) for m in MODELS for s in STEMS])
def test_split_shares_the_model_modules(name, stem):
    with torch.device("meta"):  # structure only
        model = build_model(name, 10, stem=stem)
    model_params = _ids(model.parameters())
    model_buffers = _ids(model.buffers())
    for cut in model.cuts:
        edge, cloud = split(model, cut)
        edge_p, cloud_p = _ids(edge.parameters()), _ids(cloud.parameters())
        assert edge_p | cloud_p == model_params
        assert not edge_p & cloud_p
        assert _ids(edge.buffers()) | _ids(cloud.buffers()) == model_buffers
        assert count_parameters(edge) + count_parameters(cloud) == count_parameters(model)
        names = list(model.blocks)
        assert [n for n, _ in edge.named_children()] == names[: names.index(cut) + 1]
        assert [n for n, _ in cloud.named_children()] == names[names.index(cut) + 1 :]
        for n, block in [*edge.named_children(), *cloud.named_children()]:
            assert block is model.blocks[n]
    _, cloud = split(model, model.cuts[-1])
    assert [n for n, _ in cloud.named_children()] == ["classifier"]


def test_split_leaves_the_block_modes_alone():
    model = build_model("resnet18", 10).eval()
    edge, cloud = split(model, "layer2")
    assert not edge.training and not cloud.training
    assert not any(m.training for m in model.modules())
    edge.train()  # the views drive the shared blocks
    assert model.blocks["layer1"].training and not model.blocks["layer3"].training


# -- cut sizes -----------------------------------------------------------------------------------
def test_cut_shapes_need_no_data():
    with torch.device("meta"):
        model = build_model("resnet18", 200, stem="imagenet", input_size=64)
    assert next(model.parameters()).device.type == "meta"
    assert model.cut_shape("layer4") == (512, 2, 2)
    assert model.cut_shape("layer4", input_size=32) == (512, 1, 1)
    assert model.cut_shape("layer4", input_size=224) == (512, 7, 7)
    assert model.cut_shapes() == {
        "stem": (64, 16, 16),
        "layer1": (64, 16, 16),
        "layer2": (128, 8, 8),
        "layer3": (256, 4, 4),
        "layer4": (512, 2, 2),
    }
    assert model.input_bytes() == 12288


@pytest.mark.parametrize(
    ("name", "stem", "size", "cut", "shape", "reduction"),
    [
        # PAPER.md: 8-bit activations vs uint8 raw images -> 33 / 67 / 33 / 83 % upload saving
        ("resnet18", "imagenet", 32, "layer3", (256, 2, 2), 0.67),
        ("vgg16", "cifar", 32, "pool4", (512, 2, 2), 0.33),
        ("vgg16", "imagenet", 32, "pool4", (512, 2, 2), 0.33),
        ("resnet18", "imagenet", 64, "layer4", (512, 2, 2), 0.83),
        ("vgg16", "cifar", 64, "pool4", (512, 4, 4), 0.33),
    ],
)
def test_paper_cut_sizes(name, stem, size, cut, shape, reduction):
    model = build_model(name, 10 if size == 32 else 200, stem=stem, input_size=size)
    assert model.cut_shape(cut) == shape
    raw = 3 * size * size
    assert model.input_bytes() == raw
    assert model.cut_bytes(cut, 8) == math.prod(shape)
    assert model.cut_bytes(cut, 32) == 4 * math.prod(shape)
    assert 1 - model.cut_bytes(cut, 8) / raw == pytest.approx(reduction, abs=0.005)
    row = next(r for r in cut_table(model) if r["cut"] == cut)
    assert row["reduction_8bit"] == pytest.approx(reduction, abs=0.005)


@pytest.mark.parametrize("size", [32, 64])
def test_cifar_stem_resnet_cuts_are_all_larger_than_the_image(size):
    model = build_model("resnet18", 10, stem="cifar", input_size=size)
    for cut in model.cuts:
        assert model.cut_bytes(cut, 8) > model.input_bytes(), cut


def test_cut_bytes_rounds_up():
    model = build_model("resnet18", 10, stem="imagenet", input_size=32)
    assert model.cut_numel("layer4") == 512
    assert model.cut_bytes("layer4", bits=3) == 192
    assert model.cut_bytes("layer4", bits=1) == 64
    with pytest.raises(ValueError):
        model.cut_bytes("layer4", bits=0)


def test_vgg_stem_is_recorded_but_changes_nothing():
    a, b = vgg16(stem="cifar"), vgg16(stem="imagenet")
    assert (a.stem, b.stem) == ("cifar", "imagenet")
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    assert a.cut_shapes() == b.cut_shapes()
    assert any("no stem" in n for n in a.notes)
    assert a.config()["stem"] == "cifar"


def test_other_sizes_and_class_counts():
    torch.manual_seed(0)
    for name in MODELS:
        model = build_model(name, 7, stem="imagenet", input_size=48).eval()
        with torch.no_grad():
            assert model(torch.randn(1, 3, 48, 48)).shape == (1, 7)


def test_describe_lists_every_cut():
    model = build_model("resnet18", 10, stem="imagenet")
    text = describe(model)
    for cut in model.cuts:
        assert f"| {cut} |" in text
    assert "256×2×2" in text and "+67%" in text
    assert all(note in text for note in model.notes)


# -- torchvision parity --------------------------------------------------------------------------
@pytest.mark.parametrize("num_classes", [10, 200])
def test_resnet18_imagenet_stem_matches_torchvision(num_classes):
    with torch.device("meta"):
        ours = resnet18(num_classes, stem="imagenet")
        theirs = torchvision.models.resnet18(num_classes=num_classes)
    assert count_parameters(ours) == count_parameters(theirs)
    # same tensors in the same order: conv1/bn1 -> stem, layerN -> layerN, fc -> classifier.fc
    assert [t.shape for t in ours.state_dict().values()] == [
        t.shape for t in theirs.state_dict().values()
    ]


def test_vgg16_features_match_torchvision():
    with torch.device("meta"):
        ours = vgg16(10)
        theirs = torchvision.models.vgg16_bn().features
    _, classifier = split(ours, "pool5")
    features = count_parameters(ours) - count_parameters(classifier)
    assert features == count_parameters(theirs) == 14_723_136
    edge, _ = split(ours, "pool5")
    assert [t.shape for t in edge.state_dict().values()] == [
        t.shape for t in theirs.state_dict().values()
    ]


def test_initialisation_like_torchvision():
    torch.manual_seed(0)
    model = resnet18(10, stem="imagenet")
    bn = model.blocks["layer1"][0].bn1
    assert torch.equal(bn.weight, torch.ones(64)) and torch.equal(bn.bias, torch.zeros(64))
    w = model.blocks["layer3"][0].conv2.weight  # 256 out, 3x3 -> fan_out 2304
    assert w.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.05)


# -- exit heads ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", EXIT_HEADS)
def test_exit_head_shapes_and_sizes(kind):
    head = exit_head(256, 10, kind)
    assert head(torch.randn(2, 256, 4, 4)).shape == (2, 10)
    expected = 256 * 10 + 10 + (256 * 256 * 9 + 2 * 256 if kind == "conv" else 0)
    assert count_parameters(head) == expected
    model = build_model("resnet18", 200, stem="imagenet", input_size=64)
    attached = attach_exit(model, "layer3", kind)
    assert attached.fc.in_features == 256 and attached.fc.out_features == 200
    assert not _ids(attached.parameters()) & _ids(model.parameters())


CIFAR_MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
CIFAR_STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def cifar_batches(cifar10_root):
    """256 real CIFAR-10 training images (26 per class, shuffled), as 4 normalised batches."""
    train = cifar10_root / "train"
    classes = sorted(d.name for d in train.iterdir() if d.is_dir())
    assert len(classes) == 10
    images, labels = [], []
    for label, cls in enumerate(classes):
        for path in sorted((train / cls).glob("*.jpg"))[:26]:
            images.append(decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB))
            labels.append(label)
    x = torch.stack(images)
    y = torch.tensor(labels)
    assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.uint8
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:256]
    x = (x[order].float() / 255 - CIFAR_MEAN) / CIFAR_STD
    return list(zip(x.split(64), y[order].split(64)))


def _train_exit(model, cut, kind, batches, *, train_edge, steps=20):
    torch.manual_seed(1)
    edge, _ = split(model, cut)
    head = attach_exit(model, cut, kind)
    if not train_edge:  # frozen edge: its features once, then only the head learns
        with torch.no_grad():
            batches = [(edge(x), y) for x, y in batches]
        edge.requires_grad_(False)
    params = [*head.parameters(), *(edge.parameters() if train_edge else ())]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    losses = []
    for step in range(steps):
        x, y = batches[step % len(batches)]
        loss = F.cross_entropy(head(edge(x) if train_edge else x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("kind", EXIT_HEADS)
@pytest.mark.parametrize(
    ("name", "stem", "cut", "train_edge"),
    [("resnet18", "imagenet", "layer2", True), ("vgg16", "cifar", "pool3", False)],
)
def test_exit_heads_learn_on_real_cifar10(cifar_batches, name, stem, cut, kind, train_edge):
    torch.manual_seed(0)
    model = build_model(name, 10, stem=stem, input_size=32).train()
    losses = _train_exit(model, cut, kind, cifar_batches, train_edge=train_edge)
    assert all(math.isfinite(v) for v in losses), losses
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < 0.95 * first, losses


# -- errors --------------------------------------------------------------------------------------
def test_unknown_names_raise_config_error_listing_choices():
    with pytest.raises(ConfigError, match=r"'vgg19'.*vgg16, resnet18"):
        build_model("vgg19")
    with pytest.raises(ConfigError, match=r"'tiny'.*cifar, imagenet"):
        build_model("resnet18", stem="tiny")
    with pytest.raises(ConfigError, match=r"cifar, imagenet"):
        resnet18(stem="tiny")
    with pytest.raises(ConfigError, match=r"cifar, imagenet"):
        vgg16(stem="tiny")
    model = build_model("vgg16")
    for call in (
        lambda: split(model, "layer3"),
        lambda: model.cut_shape("classifier"),
        lambda: model.cut_bytes("pool6", 8),
        lambda: attach_exit(model, "conv1"),
    ):
        with pytest.raises(ConfigError, match=r"pool1, pool2, pool3, pool4, pool5"):
            call()
    with pytest.raises(ConfigError, match=r"conv, minimal"):
        exit_head(64, 10, "mlp")
    assert issubclass(ConfigError, ValueError)


def test_bad_sizes():
    with pytest.raises(ConfigError, match="too small"):
        build_model("vgg16", input_size=16)  # five 2x2 pools need >= 32
    with pytest.raises(TypeError):
        build_model("resnet18", num_classes=10.0)
    with pytest.raises(ValueError):
        build_model("resnet18", num_classes=0)
    with pytest.raises(TypeError):
        split(torch.nn.Linear(2, 2), "layer1")
    assert isinstance(build_model("resnet18", input_size=8), SplittableModel)
