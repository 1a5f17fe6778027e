"""``digits_imbalanced``: the digits generator with P(d) ∝ 0.6^d, in its own cache folder."""

import json
from collections import Counter

import numpy as np
import pytest

from fcos_from_scratch.data import IMBALANCED_DIGITS, DigitsConfig, build_dataset
from fcos_from_scratch.data.digits import digit_probabilities, generate_image, sample_digits

TINY = dict(num_train=24, num_val=2, num_test=2, min_side=96, max_side=160)


def test_probabilities_decay_by_point_six():
    p = digit_probabilities(0.6)
    assert p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(p[1:] / p[:-1], 0.6)
    # p(0) = 1 / Σ_k 0.6^k = 0.4 / (1 - 0.6^10) = 0.40247
    assert p[0] == pytest.approx(0.4 / (1 - 0.6 ** 10))
    np.testing.assert_allclose(digit_probabilities(1.0), 0.1)


def test_sampled_class_frequencies_are_ordered_with_ratio_near_point_six():
    rng = np.random.default_rng(0)
    counts = Counter(sample_digits(rng, 20000, 0.6))
    frequencies = [counts[d] for d in range(10)]
    assert all(a > b for a, b in zip(frequencies[:6], frequencies[1:7]))  # ordered where counts are large
    ratios = [frequencies[d + 1] / frequencies[d] for d in range(5)]
    assert all(0.54 < r < 0.66 for r in ratios), ratios


def test_uniform_stream_is_unchanged():
    # class_decay = 1 draws exactly what the generator drew before the field existed.
    rng_a, rng_b = np.random.default_rng(7), np.random.default_rng(7)
    assert sample_digits(rng_a, 50) == [int(d) for d in rng_b.integers(0, 10, 50)]
    assert "class_decay" not in DigitsConfig().split_key("train")  # old caches stay valid
    assert IMBALANCED_DIGITS.split_key("train")["class_decay"] == 0.6
    with pytest.raises(ValueError, match="class_decay must be in"):
        DigitsConfig(class_decay=1.5)


def test_same_sizes_and_determinism_as_digits():
    assert (IMBALANCED_DIGITS.num_train, IMBALANCED_DIGITS.num_val, IMBALANCED_DIGITS.num_test) == (
        DigitsConfig().num_train, DigitsConfig().num_val, DigitsConfig().num_test)
    config = DigitsConfig(class_decay=0.6, **TINY)
    a = generate_image(0, "train", 3, config)
    b = generate_image(0, "train", 3, config)
    assert a[1] == b[1] and a[2] == b[2] and np.array_equal(np.asarray(a[0]), np.asarray(b[0]))


def test_dataset_has_its_own_cache_and_skewed_labels(tmp_path):
    config = DigitsConfig(class_decay=0.6, **TINY)
    imbalanced = build_dataset("digits_imbalanced", "train", root=tmp_path, config=config)
    assert (tmp_path / "digits_imbalanced" / "train" / "annotations.json").exists()
    assert not (tmp_path / "digits").exists()  # the uniform cache is untouched
    assert imbalanced.num_classes == 10
    data = json.loads((tmp_path / "digits_imbalanced" / "train" / "annotations.json").read_text())
    labels = Counter(a["category_id"] - 1 for a in data["annotations"])
    # ~24 images × ~3 digits, 40 % zeros: 0 is the commonest, 9 the rarest seen
    assert labels.most_common(1)[0][0] == 0
    assert labels[0] > labels[3] + labels[4] + labels[5] + labels[6] + labels[7] + labels[8] + labels[9]
    # evaluation at a fixed input size works through the same entry point
    image, target = build_dataset("digits_imbalanced", "val", root=tmp_path, config=config,
                                  input_size=64)[0]
    assert image.shape == (3, 64, 64) and target["orig_size"] != (64, 64)
