"""Suite-wide test settings.

One intra-op thread: the suite's tensors are tiny, and on a busy 2-core machine
OpenMP's spin-waiting made small forward passes 10-100x slower with more threads.
"""

import torch

torch.set_num_threads(1)
