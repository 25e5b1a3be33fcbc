"""Writes tests/data/frames_v1.json: version-1 frames made by the version-1 encoder itself.

The frames pin backward compatibility: every later decoder (ActivationCodec.decode and the
torch-free hierbench.codec.reference_decoder) must decode them to the stored bits. They were made
with the encoder of commit e2a918f (the last one writing version 1), by::

    mkdir /tmp/hb-v1 && git archive e2a918f | tar -x -C /tmp/hb-v1
    cp hierbench/_C*.so /tmp/hb-v1/hierbench/
    PYTHONPATH=/tmp/hb-v1 python tests/data/make_v1_frames.py tests/data/frames_v1.json

It refuses to run against an encoder that writes another version.
"""

from __future__ import annotations

import json
import sys

import torch

from hierbench import codec
from hierbench.codec import CodecConfig
from hierbench.ops import QuantConfig

INT_VIEW = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _hex(t: torch.Tensor) -> str:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes().hex()


def _cases():
    g = torch.Generator().manual_seed(16)
    shapes = [(2, 3, 5, 7), (97,), (1,), (), (0,), (3, 0, 2), (4, 33)]
    quant = [
        (8, "group", 128, 1, "nearest"),
        (8, "group", 32, 1, "stochastic"),
        (4, "group", 64, 1, "nearest"),
        (4, "channel", 128, 1, "stochastic"),
        (4, "channel", 128, -1, "nearest"),
        (2, "tensor", 128, 1, "nearest"),
        (2, "group", 256, 0, "stochastic"),
        (8, "channel", 32, -2, "nearest"),
        (8, "tensor", 128, 1, "stochastic"),
    ]
    i = 0
    for bits, gran, gs, cd, rnd in quant:
        for shape in shapes:
            if gran == "channel" and len(shape) < max(cd + 1, -cd):
                continue
            dtype = list(DTYPES)[i % 3]
            zstd = i % 2 == 1
            i += 1
            x = (torch.randn(shape, generator=g) * 3).to(DTYPES[dtype])
            qc = QuantConfig(bits, gran, gs, cd, rnd)
            cfg = CodecConfig(f"q{bits}", quant=qc, zstd_level=1 if zstd else None)
            yield f"q{bits}-{gran}{gs}-cd{cd}-{rnd}-{dtype}-{'zstd' if zstd else 'plain'}", x, cfg
    for spec in ("raw", "raw+zstd1", "fp16", "bf16+zstd3", "fp32+sparse", "fp16+sparse+zstd1"):
        for dtype in DTYPES:
            x = torch.relu(torch.randn(3, 11, generator=g)).to(DTYPES[dtype])
            yield f"{spec}-{dtype}", x, CodecConfig.parse(spec)


def main(path: str) -> None:
    if codec.FRAME_VERSION != 1:
        raise SystemExit(f"this encoder writes version {codec.FRAME_VERSION}, not 1")
    out = []
    for name, x, cfg in _cases():
        seed = 1000 + len(out) * 7919 - 5000
        frame = codec.ActivationCodec(cfg).encode(x, seed=seed)
        assert frame[4] == 1
        y = codec.decode(frame)
        out.append(
            {
                "name": name,
                "frame": frame.hex(),
                "dtype": str(y.dtype).removeprefix("torch."),
                "shape": list(y.shape),
                "decoded": _hex(y.view(INT_VIEW[y.dtype])),
            }
        )
    doc = {
        "about": "version-1 frames written by the encoder of commit e2a918f, with the tensor "
        "its decoder returned (little-endian bytes); made by tests/data/make_v1_frames.py",
        "frames": out,
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"{len(out)} frames -> {path}")


if __name__ == "__main__":
    main(sys.argv[1])
