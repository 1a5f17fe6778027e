"""Suite-wide test settings and the helpers every test folder shares.

The tests mirror the package: ``tests/ops/`` tests ``fcos_from_scratch/ops/``,
``tests/models/`` the shared detection parts, ``tests/models/detectors/`` each
detector, and so on; suite-wide checks (layering, the concept map, references,
conventions, the config and the command line) sit at the top.

One intra-op thread: the suite's tensors are tiny, and on a busy 2-core machine
OpenMP's spin-waiting made small forward passes 10-100x slower with more threads.
"""

import importlib.util
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"  # frozen reference values (written by tests/reference/make_*.py)
REFERENCE = TESTS / "reference"  # the scripts that freeze them, and reference ports
REPO = TESTS.parent

# Helper modules that tests in every folder import (tiny_detector, reference ports).
for folder in (TESTS, REFERENCE):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def load_reference(name: str):
    """Import ``tests/reference/<name>.py`` as a module (without torchvision)."""
    spec = importlib.util.spec_from_file_location(name, REFERENCE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
