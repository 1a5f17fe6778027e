"""The NAS-FCOS search space: what an architecture is, how to check, serialise and draw one.

[nas-fcos] Sec. 3.2, Table 1, Figs. 1 and 3. A decoder (FPN + head) is a short
sequence of choices:

* **FPN** (Sec. 3.2.1): 7 basic blocks. The pool starts as {c3, c4, c5}
  (indices 0, 1, 2); block t picks two pool entries ``id1, id2``, applies
  ``op1``/``op2`` to them and merges the results with ``agg``; its output joins the
  pool (index 3 + t). The last three outputs become P5, P4, P3.
* **Head** (Sec. 3.2.2): one op on the level's feature p gives o0; pool {p, o0}
  (indices 0, 1). Each of 5 blocks appends (o1, o2, a): its two op outputs and
  their aggregation, so block t's entries sit at 2 + 3t, 3 + 3t, 4 + 3t. The head's
  output is the last aggregation a5.
* **Weight sharing** (Sec. 3.2.3): per level l (P3..P7) an index ``i_l`` in
  0..6: the head's layers (0 = the first op, t = block t) before ``i_l`` have
  level-specific weights, those from ``i_l`` on are shared by all levels.

Every decision has its own small set of valid choices (:func:`decisions`), and
the architecture is exactly the sequence of choices (:meth:`Architecture.tokens`),
so drawing each decision uniformly (:func:`sample_architecture`) draws the
architecture uniformly from the space, and a controller emits it token by token.
"""

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

# [nas-fcos] Table 1, in its ID order
OPS = ("sep_conv_3x3", "sep_conv_3x3_dil3", "sep_conv_5x5_dil6", "skip", "deform_conv_3x3")
SEP_3X3, SEP_3X3_DIL3, SEP_5X5_DIL6, SKIP, DEFORM_3X3 = range(len(OPS))
AGGREGATIONS = ("sum", "concat")  # concat is followed by a 1x1 conv back to the width
SUM, CONCAT = range(len(AGGREGATIONS))
INPUTS = ("c3", "c4", "c5")  # the FPN's initial pool, [nas-fcos] Sec. 3.1
FPN_BLOCKS = 7  # [nas-fcos] Sec. 3.2.1
HEAD_BLOCKS = 5  # [nas-fcos] Sec. 3.2.2
NUM_LEVELS = 5  # P3..P7
HEAD_LAYERS = 1 + HEAD_BLOCKS  # the first op, then the blocks: what i_l counts


@dataclass(frozen=True)
class Block:
    """One basic block ([nas-fcos] Fig. 1): ``agg(op1(pool[id1]), op2(pool[id2]))``."""

    id1: int
    id2: int
    op1: int
    op2: int
    agg: int

    def values(self) -> Tuple[int, int, int, int, int]:
        return (self.id1, self.id2, self.op1, self.op2, self.agg)


@dataclass(frozen=True)
class Architecture:
    """A decoder: 7 FPN blocks, the head's first op, 5 head blocks, 5 sharing indices."""

    fpn: Tuple[Block, ...]
    head_op: int
    head: Tuple[Block, ...]
    share_from: Tuple[int, ...]  # i_l for P3..P7

    def __post_init__(self):
        validate(self)

    def tokens(self) -> List[int]:
        """The architecture as the controller's decision sequence (see :func:`decisions`)."""
        out = [v for block in self.fpn for v in block.values()]
        out.append(self.head_op)
        out += [v for block in self.head for v in block.values()]
        return out + list(self.share_from)

    def to_dict(self) -> Dict:
        """A JSON-serialisable dict; :meth:`from_dict` inverts it."""
        return {"fpn": [asdict(b) for b in self.fpn], "head_op": self.head_op,
                "head": [asdict(b) for b in self.head], "share_from": list(self.share_from)}

    @classmethod
    def from_dict(cls, data: Dict) -> "Architecture":
        expected = {"fpn", "head_op", "head", "share_from"}
        if not isinstance(data, dict) or set(data) != expected:
            raise ValueError(f"an architecture dict has exactly the keys {sorted(expected)}, got {data!r}")
        return cls(fpn=tuple(Block(**b) for b in data["fpn"]), head_op=data["head_op"],
                   head=tuple(Block(**b) for b in data["head"]), share_from=tuple(data["share_from"]))

    @classmethod
    def from_tokens(cls, tokens: Sequence[int]) -> "Architecture":
        tokens = [int(t) for t in tokens]
        if len(tokens) != len(decisions()):
            raise ValueError(f"expected {len(decisions())} tokens, got {len(tokens)}")
        fpn_end = 5 * FPN_BLOCKS
        head_end = fpn_end + 1 + 5 * HEAD_BLOCKS
        fpn = tuple(Block(*tokens[i:i + 5]) for i in range(0, fpn_end, 5))
        head = tuple(Block(*tokens[i:i + 5]) for i in range(fpn_end + 1, head_end, 5))
        return cls(fpn, tokens[fpn_end], head, tuple(tokens[head_end:]))


def fpn_pool_size(block: int) -> int:
    """Entries in the FPN pool when block ``block`` (0-based) chooses: c3..c5 and earlier outputs."""
    return len(INPUTS) + block


def head_pool_size(block: int) -> int:
    """Entries in the head pool when block ``block`` (0-based) chooses: p, o0, then 3 per block."""
    return 2 + 3 * block


def decisions() -> List[Tuple[str, int]]:
    """(name, number of valid choices) of every decision, in token order."""
    out = []
    for t in range(FPN_BLOCKS):
        n = fpn_pool_size(t)
        out += [(f"fpn{t}.id1", n), (f"fpn{t}.id2", n), (f"fpn{t}.op1", len(OPS)),
                (f"fpn{t}.op2", len(OPS)), (f"fpn{t}.agg", len(AGGREGATIONS))]
    out.append(("head.op0", len(OPS)))
    for t in range(HEAD_BLOCKS):
        n = head_pool_size(t)
        out += [(f"head{t}.id1", n), (f"head{t}.id2", n), (f"head{t}.op1", len(OPS)),
                (f"head{t}.op2", len(OPS)), (f"head{t}.agg", len(AGGREGATIONS))]
    return out + [(f"share.P{3 + level}", HEAD_LAYERS + 1) for level in range(NUM_LEVELS)]


def _check_block(where: str, block, pool: int) -> None:
    if not isinstance(block, Block):
        raise ValueError(f"{where} must be a Block, got {type(block).__name__}")
    for name, value, limit in (("id1", block.id1, pool), ("id2", block.id2, pool),
                               ("op1", block.op1, len(OPS)), ("op2", block.op2, len(OPS)),
                               ("agg", block.agg, len(AGGREGATIONS))):
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value < limit):
            raise ValueError(f"{where}.{name} must be an int in [0, {limit}), got {value!r}")


def validate(arch: Architecture) -> None:
    """Raise ``ValueError`` naming the first field outside the search space."""
    if not (isinstance(arch.fpn, tuple) and len(arch.fpn) == FPN_BLOCKS):
        raise ValueError(f"fpn must be a tuple of {FPN_BLOCKS} blocks, got {arch.fpn!r}")
    if not (isinstance(arch.head, tuple) and len(arch.head) == HEAD_BLOCKS):
        raise ValueError(f"head must be a tuple of {HEAD_BLOCKS} blocks, got {arch.head!r}")
    for t, block in enumerate(arch.fpn):
        _check_block(f"fpn[{t}]", block, fpn_pool_size(t))
    if not (isinstance(arch.head_op, int) and 0 <= arch.head_op < len(OPS)):
        raise ValueError(f"head_op must be an int in [0, {len(OPS)}), got {arch.head_op!r}")
    for t, block in enumerate(arch.head):
        _check_block(f"head[{t}]", block, head_pool_size(t))
    if not (isinstance(arch.share_from, tuple) and len(arch.share_from) == NUM_LEVELS
            and all(isinstance(i, int) and 0 <= i <= HEAD_LAYERS for i in arch.share_from)):
        raise ValueError(f"share_from must be {NUM_LEVELS} ints in [0, {HEAD_LAYERS}], "
                         f"got {arch.share_from!r}")


def sample_architecture(rng: random.Random) -> Architecture:
    """Draw an architecture uniformly from the space: every decision uniform and independent."""
    return Architecture.from_tokens([rng.randrange(n) for _, n in decisions()])


def dangling_outputs(arch: Architecture) -> List[int]:
    """FPN block outputs x_1..x_4 that no later block samples ([nas-fcos] Eq. (1)), as block indices.

    They are added to every output level. Pool index of block t's output is 3 + t.
    """
    used = {i for block in arch.fpn for i in (block.id1, block.id2)}
    return [t for t in range(FPN_BLOCKS - 3) if len(INPUTS) + t not in used]


def _concat_pair(id1: int, id2: int, op1: int, op2: int) -> Block:
    return Block(id1, id2, op1, op2, CONCAT)


# The decoder mmdetection recovered from [nas-fcos] Fig. 4 ([mmdet] NASFCOS_FPN and
# NASFCOSHead), in this space. Neck: pool 0, 1, 2 = c3, c4, c5 ("f0..f2"), block t
# writes f(3 + t); every "conv" of [mmdet] is a DCNv2 3x3 (op 4), every merge a concat.
#   f3 = cat(conv f2, conv f2)   f4 = cat(conv f2, conv f2)   f5 = cat(conv f3, skip f2)
#   f6 = cat(conv f0, skip f2)   f7 = cat(conv f4, conv f2)   f8 = cat(conv f3, conv f6)
#   f9 = cat(conv f6, conv f1);  P3 = f9, P4 = f8, P5 = f7, and f5 dangles (Eq. (1)).
# Head: [mmdet]'s tower is sequential [dconv 3x3, conv 3x3, dconv 3x3, conv 1x1]. Each
# step is a block reading the previous output twice: the plain 3x3 conv becomes a
# separable 3x3 (the space has no plain conv), the 1x1 conv is cat(skip, skip) + 1x1,
# and the two blocks the space has left over double the feature, (skip + skip),
# before that 1x1 conv, whose GroupNorm removes the factor. The whole head is shared
# by all levels (i_l = 0), as in [mmdet].
FIG4_ARCHITECTURE = Architecture(
    fpn=(
        _concat_pair(2, 2, DEFORM_3X3, DEFORM_3X3),
        _concat_pair(2, 2, DEFORM_3X3, DEFORM_3X3),
        _concat_pair(3, 2, DEFORM_3X3, SKIP),
        _concat_pair(0, 2, DEFORM_3X3, SKIP),
        _concat_pair(4, 2, DEFORM_3X3, DEFORM_3X3),
        _concat_pair(3, 6, DEFORM_3X3, DEFORM_3X3),
        _concat_pair(6, 1, DEFORM_3X3, DEFORM_3X3),
    ),
    head_op=DEFORM_3X3,  # o0, pool index 1
    head=(
        _concat_pair(1, 1, SEP_3X3, SEP_3X3),  # a1 at index 4
        _concat_pair(4, 4, DEFORM_3X3, DEFORM_3X3),  # a2 at 7
        Block(7, 7, SKIP, SKIP, SUM),  # a3 = 2 a2, at 10
        Block(10, 10, SKIP, SKIP, SUM),  # a4 = 4 a2, at 13
        _concat_pair(13, 13, SKIP, SKIP),  # a5 = 1x1 conv of a4, GroupNorm, ReLU
    ),
    share_from=(0,) * NUM_LEVELS,
)


# The floor of the space: every op a skip, every merge a sum, wired as FPN's top-down
# path (pool 0, 1, 2 = c3, c4, c5; block t writes 3 + t):
#   f3 = c5 + c4   f4 = f3 + c3   f5 = 2 f3   f6 = 2 f4   f7 = 2 c5 (P5)   f8 = 2 f5 (P4)
#   f9 = 2 f6 (P3); nothing dangles.
# The levels are sums of the 1 x 1 laterals and the head adds p to itself, so the
# only learned spatial filters left are the 3 x 3 output convs: the proxy task must
# rank it below FPN-FCOS.
ALL_SKIP_ARCHITECTURE = Architecture(
    fpn=tuple(Block(i, j, SKIP, SKIP, SUM) for i, j in ((2, 1), (3, 0), (3, 3), (4, 4), (2, 2), (5, 5), (6, 6))),
    head_op=SKIP,
    head=tuple(Block(1, 1, SKIP, SKIP, SUM) for _ in range(HEAD_BLOCKS)),
    share_from=(0,) * NUM_LEVELS,
)

# Named architectures accepted wherever an architecture is asked for (``arch="fig4"``).
ARCHITECTURES: Dict[str, Architecture] = {"fig4": FIG4_ARCHITECTURE, "all_skip": ALL_SKIP_ARCHITECTURE}


def load_architecture(spec) -> Architecture:
    """An architecture from a name of :data:`ARCHITECTURES`, a JSON file or inline JSON.

    Args:
        spec: an :class:`Architecture`; a name (``"fig4"``); a path to a JSON file
            holding ``Architecture.to_dict()`` or ``{"architecture": {...}, ...}`` (what
            the search writes to ``best.json``); or that JSON itself as a string.

    Raises:
        ValueError: naming ``arch`` and what was expected.
    """
    if isinstance(spec, Architecture):
        return spec
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"arch must be a name ({', '.join(ARCHITECTURES)}), a JSON file or JSON text, "
                         f"got {spec!r}")
    if spec in ARCHITECTURES:
        return ARCHITECTURES[spec]
    text = spec
    if not spec.lstrip().startswith("{"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ValueError(f"arch={spec!r} is neither a named architecture ({', '.join(ARCHITECTURES)}) "
                             f"nor an existing JSON file")
        text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"arch={spec!r} is not valid JSON ({err})") from None
    if isinstance(data, dict) and "architecture" in data:
        data = data["architecture"]
    try:
        return Architecture.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"arch={spec!r} is not an architecture of the space: {err}") from None
