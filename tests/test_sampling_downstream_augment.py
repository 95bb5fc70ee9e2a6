"""FixMatch's weak and strong views: each operation on hand-built images, Pillow as the reference
for the enhancement operations, and seeded reproducibility."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from cotrain.errors import ConfigError
from cotrain.sampling import augment as A


def _dot(h=8, w=8, r=1, c=2, channels=1):
    x = torch.zeros(1, channels, h, w)
    x[0, :, r, c] = 1.0
    return x


def _pil_pair(seed=0):
    img = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return Image.fromarray(img), torch.tensor(img).permute(2, 0, 1)[None].float() / 255.0


def _u8(x):
    return (x[0].permute(1, 2, 0) * 255.0).round().numpy().astype(int)


def test_translate_moves_pixels_by_the_stated_amount():
    # Prepare: one lit pixel at row 1, column 2
    x = _dot()
    # Execute: right by 3, up by 1
    out = A.translate(x, torch.tensor([3.0]), torch.tensor([-1.0]), fill=0.0)
    # Assert: it is now at row 0, column 5, and nothing else is lit
    assert torch.nonzero(out > 0.5).tolist() == [[0, 0, 0, 5]]
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_translate_fills_uncovered_pixels_with_gray():
    out = A.translate(torch.zeros(1, 1, 4, 4), torch.tensor([2.0]), torch.tensor([0.0]))
    assert torch.allclose(out[0, 0, :, :2], torch.full((4, 2), A.FILL))
    assert torch.allclose(out[0, 0, :, 2:], torch.zeros(4, 2), atol=1e-6)


def test_rotate_by_90_degrees_is_a_quarter_turn():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = A.rotate(x, torch.tensor([90.0, 0.0]))
    assert torch.allclose(out[0], torch.rot90(x[0], 1, (1, 2)), atol=1e-5)
    assert torch.allclose(out[1], x[1], atol=1e-5)


def test_shear_x_moves_each_row_by_s_times_its_offset_from_the_centre():
    # Prepare: a lit column 4 of an 8x8 image; the row at pixel centre y = 7.5 - 4 = 3.5 below the centre
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, :, 4] = 1.0
    # Execute: output (u, v) reads input (u + s v, v) with s = 2/3.5: the bottom row reads two pixels right
    out = A.shear_x(x, torch.tensor([2.0 / 3.5]), fill=0.0)
    # Assert: bottom row lit at column 2, top row at column 6
    assert out[0, 0, 7].argmax().item() == 2 and out[0, 0, 7, 2].item() == pytest.approx(1.0, abs=1e-5)
    assert out[0, 0, 0].argmax().item() == 6 and out[0, 0, 0, 6].item() == pytest.approx(1.0, abs=1e-5)


def test_shear_y_is_shear_x_transposed():
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    a = A.shear_y(x, torch.tensor([0.2]))
    b = A.shear_x(x.transpose(2, 3), torch.tensor([0.2])).transpose(2, 3)
    assert torch.allclose(a, b, atol=1e-5)


def test_solarize_inverts_values_at_or_above_the_threshold():
    x = torch.tensor([0.2, 0.5, 0.8, 1.0]).view(1, 1, 1, 4)
    out = A.solarize(x, torch.tensor([0.5]))
    assert torch.allclose(out.flatten(), torch.tensor([0.2, 0.5, 0.2, 0.0]))


def test_posterize_keeps_the_top_bits():
    # 182 = 0b10110110: 4 bits -> 0b10110000 = 176; 2 bits -> 0b10000000 = 128
    x = torch.full((2, 1, 1, 1), 182 / 255.0)
    out = A.posterize(x, torch.tensor([4, 2]))
    assert (out.flatten() * 255).round().tolist() == [176.0, 128.0]


def test_autocontrast_stretches_each_channel_and_leaves_a_constant_one():
    x = torch.tensor([[0.2, 0.4], [0.6, 0.3]]).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    x[0, 1] = 0.7
    out = A.autocontrast(x)
    assert torch.allclose(out[0, 0], torch.tensor([[0.0, 0.5], [1.0, 0.25]]), atol=1e-6)
    assert torch.allclose(out[0, 1], torch.full((2, 2), 0.7))


def test_cutout_fills_a_square_clipped_to_the_image():
    x = torch.zeros(2, 1, 8, 8)
    out = A.cutout(x, torch.tensor([4, 0]), torch.tensor([4, 0]), 4)
    assert (out[0] == A.FILL).sum().item() == 16  # rows 2..5, columns 2..5
    assert (out[0, 0, 2:6, 2:6] == A.FILL).all()
    assert (out[1] == A.FILL).sum().item() == 4  # rows 0..1, columns 0..1: the rest falls outside


def test_equalize_matches_pillow():
    pil, x = _pil_pair(0)
    assert np.array_equal(_u8(A.equalize(x)), np.array(ImageOps.equalize(pil)).astype(int))


@pytest.mark.parametrize("name,fn", [("Brightness", A.brightness), ("Contrast", A.contrast),
                                     ("Sharpness", A.sharpness)])
@pytest.mark.parametrize("factor", [0.3, 1.7])
def test_enhancements_match_pillow_within_one_level(name, fn, factor):
    pil, x = _pil_pair(1)
    expected = np.array(getattr(ImageEnhance, name)(pil).enhance(factor)).astype(int)
    assert np.abs(_u8(fn(x, torch.tensor([factor]))) - expected).max() <= 1


def test_shift_reflect_is_an_exact_integer_shift():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = A.shift_reflect(x, torch.tensor([1]), torch.tensor([0]))
    assert torch.equal(out[0, 0, 1:], x[0, 0, :3])
    assert torch.equal(out[0, 0, 0], x[0, 0, 1])  # reflect padding: row -1 mirrors row 1


def test_weak_view_without_rotation_is_one_of_the_allowed_shifts():
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    out = A.weak_augment(x, generator=torch.Generator().manual_seed(3), max_shift=1, max_rotate_deg=0.0)
    for i in range(len(x)):
        candidates = [A.shift_reflect(x[i:i + 1], torch.tensor([dy]), torch.tensor([dx]))
                      for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        assert any(torch.equal(out[i:i + 1], c) for c in candidates)


def test_weak_flip_only_when_asked():
    x = torch.rand(32, 1, 6, 6, generator=torch.Generator().manual_seed(4))
    no = A.weak_augment(x, generator=torch.Generator().manual_seed(5), max_shift=0, max_rotate_deg=0.0)
    yes = A.weak_augment(x, generator=torch.Generator().manual_seed(5), flip=True, max_shift=0, max_rotate_deg=0.0)
    assert torch.equal(no, x)
    flipped = [torch.equal(yes[i], x[i].flip(-1)) for i in range(32)]
    assert 4 < sum(flipped) < 28 and all(f or torch.equal(yes[i], x[i]) for i, f in enumerate(flipped))


@pytest.mark.parametrize("view", [A.weak_augment, A.strong_augment])
def test_same_seed_same_views_other_seed_other_views(view):
    x = torch.rand(20, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    a = view(x, generator=torch.Generator().manual_seed(7))
    b = view(x, generator=torch.Generator().manual_seed(7))
    c = view(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.min() >= 0.0 and a.max() <= 1.0


def test_strong_view_applies_every_operation_and_nothing_with_no_ops_no_cutout():
    x = torch.rand(200, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    same = A.strong_augment(x, generator=torch.Generator().manual_seed(0), num_ops=0, cutout_fraction=0.0)
    assert torch.equal(same, x)
    out = A.strong_augment(x, generator=torch.Generator().manual_seed(0), num_ops=1, cutout_fraction=0.0)
    assert (out - x).abs().flatten(1).amax(1).gt(1e-3).float().mean() > 0.8  # almost every image changed


def test_strong_view_rejects_a_magnitude_out_of_range():
    with pytest.raises(ConfigError):
        A.strong_augment(torch.zeros(1, 1, 4, 4), generator=torch.Generator(), magnitude=11)
