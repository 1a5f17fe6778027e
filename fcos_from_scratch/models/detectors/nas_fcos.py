"""NAS-FCOS: FCOS whose decoder (FPN + head) is a searched architecture ([nas-fcos]).

Everything but the decoder is FCOS's (``detectors/fcos.py``): the trunk, the
points, target assignment, the three losses and inference. Only
:meth:`FCOS.decode` changes: trunk features (C3, C4, C5) go through a
``nas.decoder.SearchedDecoder`` built from ``config.arch`` instead of FPN +
``FCOSHead``::

    images --> trunk (C3..C5) --> SearchedDecoder(arch): searched FPN, searched towers
        --> cls (B, N, K), box (B, N, 4), centerness (B, N) --> FCOS's targets, losses, inference

``arch`` is a named architecture (``nas.space.ARCHITECTURES``: ``"fig4"``, the
decoder [mmdet] recovered from [nas-fcos] Fig. 4), the ``best.json`` written by
``python -m fcos_from_scratch.nas.search``, or that JSON inline. A file is read
when the config is made and kept inline, so a checkpoint rebuilds its model
without the file.

Config, head, targets, loss, inference, model: the config is FCOS's plus
``arch``; the head is the searched decoder; targets, loss and inference are
FCOS's, inherited.
"""

import json
from dataclasses import dataclass
from typing import Optional

from torch import nn

from ...nas import decoder as searched  # a module import: nas.decoder may be importing us (via models)
from ...nas.space import ARCHITECTURES, load_architecture
from .fcos import FCOS, FCOSConfig

# FCOS fields that shape FPN + FCOSHead; the architecture replaces them, so they are unused.
UNUSED_FCOS_FIELDS = ("head_convs", "fpn_extra_source", "fpn_norm")


# ---------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NASFCOSConfig(FCOSConfig):
    """FCOS's options plus the decoder architecture.

    The decoder is ``fpn_channels`` wide (the proxy of [nas-fcos] Sec. 4.1 used 64)
    and has ``num_levels`` levels from P3 (3..5). ``head_convs``, ``fpn_extra_source``
    and ``fpn_norm`` are not used (the architecture decides the decoder); the
    regression activation is ReLU with a learnable scale per level, as in [mmdet].
    """

    arch: str = "fig4"  # decoder architecture: a name (fig4 = [mmdet]'s recovery of [nas-fcos] Fig. 4, all_skip), a JSON file written by nas.search, or JSON text

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.first_level != 3:
            raise ValueError(f"NAS-FCOS decoders read C3..C5 (P3 first): first_level must be 3, got {self.first_level}")
        if not 3 <= self.num_levels <= 5:
            raise ValueError(f"num_levels must be 3, 4 or 5 for NAS-FCOS (P3..P5 to P3..P7), got {self.num_levels}")
        if self.reg_activation != "relu" or not self.level_scales:
            raise ValueError("NAS-FCOS regresses relu(s_l x) with learnable s_l ([mmdet]): "
                             f"need reg_activation='relu' and level_scales=True, got "
                             f"{self.reg_activation!r} and {self.level_scales!r}")
        arch = load_architecture(self.arch)  # raises ValueError naming arch
        if self.arch not in ARCHITECTURES:  # a file or JSON text: keep it inline (checkpoints need no file)
            object.__setattr__(self, "arch", json.dumps(arch.to_dict(), separators=(",", ":")))

    @property
    def architecture(self):
        """The :class:`nas.space.Architecture` that ``arch`` names."""
        return load_architecture(self.arch)


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

class NASFCOS(FCOS):
    """FCOS with ``SearchedDecoder(config.architecture)`` as its decoder.

    Args:
        config: a :class:`NASFCOSConfig`.
        trunk: optional module returning C3..C5 (with ``out_channels``).
    """

    def __init__(self, config: NASFCOSConfig, trunk: Optional[nn.Module] = None) -> None:
        if not isinstance(config, NASFCOSConfig):
            raise ValueError(f"NASFCOS needs a NASFCOSConfig, got {type(config).__name__}")
        super().__init__(config, trunk)

    def build_decoder(self, config: NASFCOSConfig) -> None:
        """The searched decoder replaces FCOS's ``fpn`` and ``head``."""
        self.decoder = searched.SearchedDecoder(config.architecture, self.backbone.out_channels, config.num_classes,
                                                channels=config.fpn_channels, prior_prob=config.prior_prob,
                                                num_levels=config.num_levels)

    def decode(self, features):
        """C3..C5 -> (level sizes, (cls (B, N, K), box (B, N, 4), centerness (B, N)))."""
        level_sizes = []
        outputs = self.decoder(features, level_sizes)
        return level_sizes, outputs
