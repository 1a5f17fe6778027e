# TEMPORARY stand-in until the shared-parts branch lands.
import torch


def encode_ltrb(points, boxes, strides):
    ltrb = torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1)
    return ltrb / strides[:, None]


def decode_ltrb(points, ltrb, strides):
    distances = ltrb * strides[:, None]
    return torch.cat([points - distances[..., :2], points + distances[..., 2:]], dim=-1)
