"""A tiny digits set and proxy configuration shared by the proxy and search tests."""

from fcos_from_scratch.data import build_dataset
from fcos_from_scratch.data.digits import DigitsConfig
from fcos_from_scratch.nas.proxy import ProxyConfig

TINY_DIGITS = DigitsConfig(num_train=16, num_val=1, num_test=1, min_side=64, max_side=96, max_digits=2,
                           digit_height=(12, 40))


def tiny_dataset(root):
    return build_dataset("digits", "train", root=root, train=False, augment=False, config=TINY_DIGITS)


def tiny_proxy(root, **changes) -> ProxyConfig:
    """64-px crops, 8 + 4 images, an 8-wide decoder, 2 steps, a 1-step trunk: well under a second each."""
    values = dict(crop_size=64, meta_train=8, meta_val=4, channels=8, steps=2, batch_size=4,
                  trunk_steps=1, data_root=str(root))
    return ProxyConfig(**dict(values, **changes))
