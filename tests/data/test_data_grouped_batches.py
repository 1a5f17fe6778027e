"""GroupedBatchSampler: every image once per epoch, similar sizes per batch, deterministic."""

import math
import random

import pytest
import torch

from fcos_from_scratch.data.batching import GroupedBatchSampler


def sizes(count, seed=0):
    rng = random.Random(seed)
    return [(rng.randint(128, 320), rng.randint(128, 320)) for _ in range(count)]


def padded_area(batch, all_sizes):
    height = max(math.ceil(all_sizes[i][0] / 32) * 32 for i in batch)
    width = max(math.ceil(all_sizes[i][1] / 32) * 32 for i in batch)
    return height * width


def test_every_index_once_and_the_length_is_right():
    all_sizes = sizes(103)
    sampler = torch.utils.data.RandomSampler(range(103), generator=torch.Generator().manual_seed(0))
    batches = list(GroupedBatchSampler(sampler, all_sizes, batch_size=8, window=4))
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert len(batches) == len(GroupedBatchSampler(sampler, all_sizes, 8, 4))
    assert all(1 <= len(b) <= 8 for b in batches)


def test_batches_are_sorted_windows_of_the_samplers_order():
    # Sequential sampler, one window of 2 batches: the 4 indices sorted by padded size.
    all_sizes = [(320, 320), (128, 128), (300, 128), (130, 140)]
    batches = list(GroupedBatchSampler(range(4), all_sizes, batch_size=2, window=2))
    # padded (H, W) in units of 32: (10, 10), (4, 4), (10, 4), (5, 5) -> 1, 3 | 2, 0
    assert sorted(batches) == [[1, 3], [2, 0]]


def test_less_padding_than_random_batches():
    all_sizes = sizes(400)
    order = list(range(400))
    random.Random(1).shuffle(order)
    plain = [order[k:k + 8] for k in range(0, 400, 8)]
    grouped = list(GroupedBatchSampler(order, all_sizes, batch_size=8, window=25))
    mean = lambda bs: sum(padded_area(b, all_sizes) for b in bs) / len(bs)  # noqa: E731
    assert mean(grouped) < 0.8 * mean(plain)


def test_deterministic_per_epoch_and_different_across_epochs():
    all_sizes = sizes(64)
    sampler = torch.utils.data.distributed.DistributedSampler(range(64), num_replicas=1, rank=0, seed=3)
    grouped = GroupedBatchSampler(sampler, all_sizes, batch_size=4, window=4, seed=3)
    grouped.set_epoch(0)
    first = list(grouped)
    grouped.set_epoch(1)
    second = list(grouped)
    grouped.set_epoch(0)
    assert list(grouped) == first and second != first


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="window"):
        GroupedBatchSampler(range(3), sizes(3), batch_size=2, window=0)
