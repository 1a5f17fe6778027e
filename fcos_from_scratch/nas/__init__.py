"""Neural architecture search of the detection decoder, [nas-fcos].

* :mod:`.space`: what an architecture is (FPN blocks, head blocks, weight-sharing
  indices), validation, (de)serialisation, uniform sampling, and the decoder
  [mmdet] recovered from [nas-fcos] Fig. 4 (``FIG4_ARCHITECTURE``);
* :mod:`.decoder`: any architecture -> a neck + towers with ``FCOSHead``'s outputs;
* :mod:`.controller`: the LSTM that proposes architectures, trained with PPO ([ppo]);
* :mod:`.proxy`: the proxy task that scores a candidate, R = -(L_cls + L_reg + L_ctr);
* :mod:`.search`: ``python -m fcos_from_scratch.nas.search``, the resumable search loop.

The space, decoder and controller compose ``ops`` and the shared model parts (the
``nas_fcos`` detector builds its decoder from them). The proxy and the search train
detectors through the registry, like the engine, so this ``__init__`` does not
import them: ``from fcos_from_scratch.nas.search import search``.
"""

from .controller import Controller
from .decoder import SearchedDecoder, SearchedFPN, SearchedTower, build_op
from .space import (ALL_SKIP_ARCHITECTURE, ARCHITECTURES, FIG4_ARCHITECTURE, Architecture, Block,
                    dangling_outputs, decisions, load_architecture, sample_architecture)

__all__ = ["Architecture", "Block", "FIG4_ARCHITECTURE", "ALL_SKIP_ARCHITECTURE", "ARCHITECTURES",
           "load_architecture", "decisions", "dangling_outputs",
           "sample_architecture", "SearchedDecoder", "SearchedFPN", "SearchedTower", "build_op",
           "Controller"]
