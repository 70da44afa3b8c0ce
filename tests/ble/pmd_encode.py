"""An independent Polar PMD delta-frame encoder for the tests and the emulated wearable."""

from __future__ import annotations


def encode_deltas(samples: list[list[int]], resolution: int, bits: int) -> bytes:
    """Independent encoder: an explicit list of bits, LSB of each delta first."""
    size = (resolution + 7) // 8
    out = bytearray()
    for v in samples[0]:
        out += v.to_bytes(size, "little", signed=True)
    rest = samples[1:]
    for start in range(0, len(rest), 255):
        block = rest[start : start + 255]
        prev = samples[start]
        bitlist: list[int] = []
        for sample in block:
            for ch, v in enumerate(sample):
                delta = (v - prev[ch]) & ((1 << bits) - 1)
                bitlist += [(delta >> i) & 1 for i in range(bits)]
            prev = sample
        bitlist += [0] * (-len(bitlist) % 8)
        out += bytes([bits, len(block)])
        out += bytes(
            sum(b << i for i, b in enumerate(bitlist[j : j + 8])) for j in range(0, len(bitlist), 8)
        )
    return bytes(out)
