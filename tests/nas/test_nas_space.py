"""The NAS-FCOS search space: validation, round-trips, uniform sampling, the Fig. 4 decoder."""

import json
import random
from collections import Counter

import pytest

from fcos_from_scratch.nas.space import (AGGREGATIONS, DEFORM_3X3, FIG4_ARCHITECTURE, FPN_BLOCKS,
                                         HEAD_BLOCKS, HEAD_LAYERS, NUM_LEVELS, OPS, SKIP,
                                         Architecture, Block, dangling_outputs, decisions,
                                         sample_architecture)


def test_decision_counts_follow_the_paper():
    sizes = dict(decisions())
    # 7 FPN blocks x 5 + head op + 5 head blocks x 5 + 5 sharing indices
    assert len(sizes) == FPN_BLOCKS * 5 + 1 + HEAD_BLOCKS * 5 + NUM_LEVELS == 66
    assert sizes["fpn0.id1"] == 3 and sizes["fpn6.id2"] == 9  # {c3, c4, c5} + 6 outputs
    assert sizes["head0.id1"] == 2 and sizes["head4.id1"] == 14  # {p, o0} + 3 per block
    assert sizes["fpn3.op1"] == len(OPS) == 5 and sizes["head2.agg"] == len(AGGREGATIONS) == 2
    assert sizes["share.P7"] == HEAD_LAYERS + 1 == 7


def test_round_trips_through_json_and_tokens():
    rng = random.Random(0)
    for _ in range(50):
        arch = sample_architecture(rng)
        assert Architecture.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
        assert Architecture.from_tokens(arch.tokens()) == arch


def test_validation_names_the_bad_field():
    good = FIG4_ARCHITECTURE.to_dict()
    bad = json.loads(json.dumps(good))
    bad["fpn"][0]["id1"] = 3  # block 0 can only read c3, c4, c5 (0, 1, 2)
    with pytest.raises(ValueError, match=r"fpn\[0\]\.id1"):
        Architecture.from_dict(bad)
    bad = json.loads(json.dumps(good))
    bad["head"][1]["id2"] = 5  # head block 1 sees 5 entries: p, o0, o1, o2, a1
    with pytest.raises(ValueError, match=r"head\[1\]\.id2"):
        Architecture.from_dict(bad)
    for key, value in (("head_op", 5), ("share_from", [0, 0, 0, 0, 7]), ("share_from", [0] * 4)):
        bad = dict(good, **{key: value})
        with pytest.raises(ValueError, match=key):
            Architecture.from_dict(bad)
    with pytest.raises(ValueError, match="keys"):
        Architecture.from_dict({"fpn": []})
    with pytest.raises(ValueError, match="tokens"):
        Architecture.from_tokens([0] * 65)


def test_sampling_is_uniform_per_decision_and_seeded():
    rng = random.Random(1)
    draws = [sample_architecture(rng) for _ in range(3000)]
    ops = Counter(a.fpn[6].op1 for a in draws)
    ids = Counter(a.fpn[6].id1 for a in draws)  # 9 choices
    assert set(ops) == set(range(len(OPS))) and set(ids) == set(range(9))
    assert max(ops.values()) / min(ops.values()) < 1.25  # 600 expected each
    assert max(ids.values()) / min(ids.values()) < 1.4  # 333 expected each
    assert sample_architecture(random.Random(5)) == sample_architecture(random.Random(5))


def test_dangling_outputs_rule():
    # Fig. 4 ([mmdet]): f5 (block 2) is sampled by no later block
    assert dangling_outputs(FIG4_ARCHITECTURE) == [2]
    chain = tuple(Block(2 + t, 2 + t, SKIP, SKIP, 0) for t in range(FPN_BLOCKS))  # each reads the previous
    arch = Architecture(chain, 0, FIG4_ARCHITECTURE.head, (0,) * NUM_LEVELS)
    assert dangling_outputs(arch) == []
    only_inputs = tuple(Block(0, 1, SKIP, SKIP, 0) for _ in range(FPN_BLOCKS))
    arch = Architecture(only_inputs, 0, FIG4_ARCHITECTURE.head, (0,) * NUM_LEVELS)
    assert dangling_outputs(arch) == [0, 1, 2, 3]  # x1..x4; x5..x7 are outputs


def test_fig4_architecture_is_mmdetections_recovery():
    fpn = FIG4_ARCHITECTURE.fpn
    assert all(b.agg == 1 for b in fpn)  # every cell concatenates
    assert [(b.id1, b.id2) for b in fpn] == [(2, 2), (2, 2), (3, 2), (0, 2), (4, 2), (3, 6), (6, 1)]
    assert [(b.op1, b.op2) for b in fpn].count((DEFORM_3X3, SKIP)) == 2
    assert FIG4_ARCHITECTURE.head_op == DEFORM_3X3 and FIG4_ARCHITECTURE.share_from == (0,) * 5
