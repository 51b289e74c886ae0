"""Randomised appearance (GIN, location-scale): what each style keeps and changes, where the data module
applies it, and that a resumed run draws the same styles as an uninterrupted one."""

from __future__ import annotations

import pytest
import torch

from mkdseg.data.appearance import RandomAppearance, location_scale, random_convolution

from conftest import make_datamodule


def images(b: int = 4, size: int = 16) -> torch.Tensor:
    return torch.rand(b, 1, size, size) * 2 - 1


def two_region_labels(b: int = 4, size: int = 16) -> torch.Tensor:
    labels = torch.zeros(b, size, size, dtype=torch.long)
    labels[:, : size // 2] = 1
    return labels


def test_random_convolution_keeps_the_frobenius_norm_and_styles_each_sample_differently():
    x = images(1).repeat(6, 1, 1, 1)  # one image six times
    y = random_convolution(x)
    assert y.shape == x.shape
    assert torch.allclose(y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-4)
    assert not torch.allclose(y[0], y[1])  # a network drawn per sample, not per batch
    assert not torch.allclose(y, x)


def test_random_convolution_draws_from_the_global_stream():
    x = images()
    torch.manual_seed(3)
    first = random_convolution(x)
    torch.manual_seed(3)
    assert torch.equal(random_convolution(x), first)
    assert not torch.equal(random_convolution(x), first)


def test_random_convolution_styles_cover_inverted_contrast():
    """GIN's point: contrasts a modality never shows, including inverted ones (negative correlation)."""
    x = images(1, 32).repeat(64, 1, 1, 1)
    torch.manual_seed(0)
    y = random_convolution(x)
    xc, yc = x.flatten(1) - x.flatten(1).mean(1, keepdim=True), y.flatten(1) - y.flatten(1).mean(1, keepdim=True)
    corr = (xc * yc).sum(1) / (xc.norm(dim=1) * yc.norm(dim=1))
    assert corr.min() < 0 < corr.max()


def test_global_location_scale_is_monotone_and_stays_in_range():
    x = images()
    torch.manual_seed(0)
    y = location_scale(x)
    assert y.min() >= -1 and y.max() <= 1 and not torch.allclose(y, x)
    for xi, yi in zip(x.flatten(1), y.flatten(1)):
        order = xi.argsort()
        assert (yi[order].diff() >= -1e-6).all()  # brighter in stays at least as bright out


def test_class_wise_location_scale_styles_each_region_on_its_own_and_keeps_air():
    size = 16
    half = torch.rand(1, 1, size // 2, size) * 2 - 1
    x = torch.cat([half, half], dim=2).repeat(8, 1, 1, 1)  # both regions hold the same intensities
    x[:, :, 0, 0] = -1.0  # an air pixel
    labels = two_region_labels(8, size)
    torch.manual_seed(0)
    y = location_scale(x, labels, num_classes=2)
    assert torch.equal(y[:, :, 0, 0], x[:, :, 0, 0])
    top, bottom = y[:, :, 1 : size // 2], y[:, :, size // 2 + 1 :]
    assert not torch.allclose(top, bottom)  # same intensities, different region: different curves
    # within one region the style is a function of intensity: equal intensities stay equal
    x_rep = torch.full((1, 1, size, size), 0.3)
    y_rep = location_scale(x_rep, two_region_labels(1, size), num_classes=2)
    assert y_rep[0, 0, : size // 2].unique().numel() == 1 and y_rep[0, 0, size // 2 :].unique().numel() == 1


def test_class_wise_location_scale_takes_absent_classes():
    y = location_scale(images(2), torch.zeros(2, 16, 16, dtype=torch.long), num_classes=5)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("on, changed", [("assistant", {"x_a"}), ("target", {"x_t"}), ("both", {"x_a", "x_t"})])
def test_random_appearance_restyles_only_the_chosen_images(on, changed):
    batch = {"x_a": images(), "y_a": two_region_labels(), "x_t": images(), "y_t": two_region_labels()}
    for kind in ("gin", "location_scale", "class_location_scale"):
        out = RandomAppearance(kind, on)(batch, num_classes=2)
        assert {k for k in ("x_a", "x_t") if not torch.equal(out[k], batch[k])} == changed
        assert out["y_a"] is batch["y_a"] and out["y_t"] is batch["y_t"]


def test_random_appearance_names_the_bad_option():
    with pytest.raises(ValueError, match="data.appearance must be one of"):
        RandomAppearance("randconv")
    with pytest.raises(ValueError, match="data.appearance_on must be one of"):
        RandomAppearance("gin", "mr")


def test_datamodule_restyles_training_batches_only(phantom_root):
    with pytest.raises(ValueError, match="data.appearance"):
        make_datamodule(phantom_root, appearance="bogus")
    dm = make_datamodule(phantom_root, appearance="gin", appearance_on="assistant")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    out = dm.on_after_batch_transfer(batch, 0)
    assert torch.equal(out["x_t"], batch["x_t"]) and not torch.equal(out["x_a"], batch["x_a"])
    volume = next(iter(dm.test_dataloader()))
    assert dm.on_after_batch_transfer(volume, 0) is volume  # evaluation sees the images as they are
