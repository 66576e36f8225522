"""Intensity augmentations `data.augment.gamma` and `data.augment.noise`, against closed forms."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from zoo.data import pipeline
from zoo.data.config import AugmentConfig

# Every other option off, so the image changes by the option under test alone.
PLAIN = {"hflip": False, "vflip": False, "rot90": False, "scale": [1, 1]}
PLAIN.update(brightness=0.0, contrast=0.0)


def ramp_sample(lo: float = 0.2, hi: float = 0.8, size: int = 16):
    """An image whose values run evenly from lo to hi, a mask and a weight map to leave alone."""
    x = np.linspace(lo, hi, size * size, dtype=np.float32).reshape(size, size, 1)
    mask = (np.arange(size * size).reshape(size, size, 1) % 3 == 0).astype(np.int32)
    weight = (1.0 + 2.0 * mask).astype(np.float32)
    return tf.constant(x), tf.constant(mask), tf.constant(weight)


def run(cfg: AugmentConfig, sample, i: int, seed: int = 11):
    key = tf.constant([seed, i], tf.int64)
    return pipeline.augment(*sample, key, (16, 16), cfg)


def test_gamma_is_a_power_law_within_the_image_range():
    # Closed form: out = lo + (hi - lo) * ((x - lo) / (hi - lo)) ** e, one e per sample, in
    # [1 / (1 + g), 1 + g]; the image's own extremes stay where they are.
    sample = ramp_sample()
    x = sample[0].numpy()
    u = (x - 0.2) / 0.6
    cfg = AugmentConfig(**PLAIN, gamma=0.5)
    exponents = []
    for i in range(40):
        out = run(cfg, sample, i)
        y = out["image"].numpy()
        # The exponent from one interior pixel, then every pixel must follow it.
        k = x.size // 3
        e = np.log((y.flat[k] - 0.2) / 0.6) / np.log(u.flat[k])
        np.testing.assert_allclose(y, 0.2 + 0.6 * u**e, atol=2e-5)
        assert abs(y.min() - 0.2) < 1e-6 and abs(y.max() - 0.8) < 1e-6
        np.testing.assert_array_equal(out["mask"].numpy(), sample[1].numpy())
        np.testing.assert_array_equal(out["weight"].numpy(), sample[2].numpy())
        exponents.append(e)
    logs = np.log(exponents)
    assert logs.min() >= -np.log(1.5) - 1e-4 and logs.max() <= np.log(1.5) + 1e-4
    # Log-uniform on [-ln 1.5, ln 1.5]: both sides of 1, spread over most of the range.
    assert logs.min() < -0.25 and logs.max() > 0.25
    assert abs(logs.mean()) < 0.1


def test_gamma_changes_every_channel_alike_and_spares_a_flat_image():
    rgb = np.random.default_rng(0).uniform(0.1, 0.9, (16, 16, 3)).astype(np.float32)
    sample = (tf.constant(rgb), *ramp_sample()[1:])
    y = run(AugmentConfig(**PLAIN, gamma=1.0), sample, 0)["image"].numpy()
    lo, hi = rgb.min(), rgb.max()
    u, v = (rgb - lo) / (hi - lo), (y - lo) / (hi - lo)
    inner = (u > 0.05) & (u < 0.95)
    e = np.log(v[inner]) / np.log(u[inner])
    assert abs(np.log(e.mean())) > 0.01  # this key's exponent is not 1
    np.testing.assert_allclose(e, e.mean(), rtol=1e-3)
    flat = (tf.fill((16, 16, 1), 0.4), *ramp_sample()[1:])
    np.testing.assert_allclose(run(AugmentConfig(**PLAIN, gamma=1.0), flat, 0)["image"], 0.4)


def test_noise_is_zero_mean_gaussian_with_a_drawn_strength():
    # A constant image: what comes out minus 0.5 is the noise itself. Per sample its standard
    # deviation is one draw from U(0, noise); pixels are independent (no spatial correlation).
    flat = (
        tf.fill((64, 64, 2), 0.5),
        *(tf.image.resize(t, (64, 64), "nearest") for t in ramp_sample()[1:]),
    )
    cfg = AugmentConfig(**PLAIN, noise=0.1)
    stds = []
    for i in range(30):
        out = pipeline.augment(*flat, tf.constant([3, i], tf.int64), (64, 64), cfg)
        n = out["image"].numpy() - 0.5
        s = n.std()
        stds.append(s)
        assert s <= 0.1 * 1.05
        assert abs(n.mean()) < 4 * s / np.sqrt(n.size) + 1e-7
        if s > 0.02:
            a, b = n[:, :-1].ravel(), n[:, 1:].ravel()
            assert abs(np.corrcoef(a, b)[0, 1]) < 0.08
            # Gaussian: the fourth moment is 3 sigma^4 (a uniform would give 1.8).
            assert 2.6 < (n**4).mean() / s**4 < 3.4
            assert not np.allclose(n[..., 0], n[..., 1])  # drawn per channel too
        np.testing.assert_array_equal(out["mask"].numpy(), flat[1].numpy())
    # Strength uniform on [0, 0.1]: mean 0.05, both small and large draws.
    assert 0.035 < np.mean(stds) < 0.065 and min(stds) < 0.03 and max(stds) > 0.07


def test_intensity_options_leave_the_geometry_of_a_key_alone():
    # gamma and noise take keys of their own: the same sample key gives the same crop, flips
    # and turns with or without them, so turning them on does not reshuffle other streams.
    sample = ramp_sample()
    geo = {"scale": [0.4, 1.0], "brightness": 0.2, "contrast": 0.2}
    for i in range(8):
        a = run(AugmentConfig(**geo), sample, i)
        b = run(AugmentConfig(**geo, gamma=0.5, noise=0.05), sample, i)
        np.testing.assert_array_equal(a["mask"].numpy(), b["mask"].numpy())
        np.testing.assert_array_equal(a["weight"].numpy(), b["weight"].numpy())
        assert not np.allclose(a["image"].numpy(), b["image"].numpy())
