"""Neural architecture search of the detection decoder, [nas-fcos].

* :mod:`.space`: what an architecture is (FPN blocks, head blocks, weight-sharing
  indices), validation, (de)serialisation, uniform sampling, and the decoder
  [mmdet] recovered from [nas-fcos] Fig. 4 (``FIG4_ARCHITECTURE``);
* :mod:`.decoder`: any architecture -> a neck + towers with ``FCOSHead``'s outputs;
* :mod:`.controller`: the LSTM that proposes architectures, trained with PPO ([ppo]).

This package composes ``ops`` and the shared model parts; no detector imports it yet.
"""

from .controller import Controller
from .decoder import SearchedDecoder, SearchedFPN, SearchedTower, build_op
from .space import (FIG4_ARCHITECTURE, Architecture, Block, decisions, dangling_outputs,
                    sample_architecture)

__all__ = ["Architecture", "Block", "FIG4_ARCHITECTURE", "decisions", "dangling_outputs",
           "sample_architecture", "SearchedDecoder", "SearchedFPN", "SearchedTower", "build_op",
           "Controller"]
