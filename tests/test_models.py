import pytest
import torch

from cotrain.models import available_models, build_model

SHAPES = {"small_cnn": [(1, 28, 28), (3, 32, 32)], "resnet": [(3, 32, 32), (3, 64, 64)],
          "audio_cnn": [(1, 40, 50)], "mlp": [(1, 8, 8)]}


@pytest.mark.parametrize("name,shape", [(n, s) for n, ss in SHAPES.items() for s in ss])
def test_every_cut_composes_to_the_whole_model(name, shape):
    model = build_model(name, input_shape=shape, num_classes=7, seed=0).eval()
    x = torch.randn(3, *shape)
    whole = model(x)
    assert whole.shape == (3, 7)
    for k in range(1, model.num_blocks + 1):
        front, back = model.cut(k)
        assert torch.allclose(back(front(x)), whole, atol=1e-6)
        assert torch.allclose(front(x), model.features(x, upto=k))


def test_cut_by_name_and_clear_error_for_missing_cut():
    model = build_model("small_cnn", input_shape=(1, 28, 28), num_classes=10)
    assert model.cut_index("conv2") == 2
    with pytest.raises(ValueError, match="no block named 'conv9'.*1 \\(conv1\\)"):
        model.cut("conv9")
    with pytest.raises(ValueError, match="cut 4 does not exist"):
        model.cut(4)


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("small_cnn", input_shape=(1, 28, 28), num_classes=10, seed=5)
    after = torch.rand(1)
    b = build_model("small_cnn", input_shape=(1, 28, 28), num_classes=10, seed=5)
    c = build_model("small_cnn", input_shape=(1, 28, 28), num_classes=10, seed=6)
    assert torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_group_norm_option_has_no_batch_statistics():
    model = build_model("resnet", input_shape=(3, 32, 32), num_classes=10, norm="group")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        build_model("small_cnn", input_shape=(1, 28, 28), num_classes=10, norm="layer")


def test_unknown_model_lists_known_ones():
    with pytest.raises(ValueError, match="unknown model 'vgg'.*small_cnn"):
        build_model("vgg", input_shape=(1, 28, 28), num_classes=10)
    assert {"small_cnn", "resnet", "audio_cnn", "mlp"} <= set(available_models())
