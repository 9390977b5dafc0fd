"""Conversion of PNG images to 24-bit BMP, the lossless format that img2dcm reads.

DCMTK 3.6.7's img2dcm reads only JPEG and BMP, so a PNG is decoded here
with ``zlib`` (PNG specification, ISO/IEC 15948) and written as an
uncompressed BMP. Supported: non-interlaced images of bit depth 8 in
greyscale, RGB, palette, greyscale with alpha and RGB with alpha. Alpha is
composited onto a white background, as on paper.
"""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"

# NOTE: the decoder runs in pure Python. Rows with the Paeth filter took
# 2.5 s per RGB megapixel (measured on a shared 2-core Linux machine), so
# the size is capped to keep a request within seconds.
MAX_PIXELS = 4 * 1024 * 1024

# Samples per pixel of each PNG colour type.
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_COLOUR_TYPE_NAMES = {
    0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale with alpha", 6: "RGB with alpha",
}  # fmt: skip


class PngError(ValueError):
    """A PNG that is damaged or uses a feature that this decoder does not support."""


def png_to_bmp(data: bytes) -> bytes:
    """Decode the PNG ``data`` and return it as a 24-bit bottom-up BMP file."""
    width, height, colour_type, palette, compressed = _read_chunks(data)
    channels = _CHANNELS[colour_type]
    stride = width * channels

    expected = height * (stride + 1)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(compressed, expected + 1)
    except zlib.error as error:
        raise PngError(f"The PNG image data cannot be decompressed: {error}.") from None
    if len(raw) != expected:
        raise PngError(
            f"The PNG image data has {len(raw)} bytes, but a {width} x {height} "
            f"{_COLOUR_TYPE_NAMES[colour_type]} image needs {expected}."
        )

    rows = _unfilter(raw, height, stride, channels)
    return _bmp(width, height, [_rgb_row(row, colour_type, palette) for row in rows])


def _read_chunks(data: bytes) -> tuple[int, int, int, bytes, bytes]:
    if not data.startswith(SIGNATURE):
        raise PngError("The data does not start with the PNG signature.")

    offset = len(SIGNATURE)
    header = b""
    palette = b""
    compressed = bytearray()
    while offset + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        body = data[offset + 8 : offset + 8 + length]
        checksum = data[offset + 8 + length : offset + 12 + length]
        if len(body) != length or len(checksum) != 4:
            raise PngError(f"The PNG chunk {kind!r} is truncated.")
        if zlib.crc32(kind + body) != struct.unpack(">I", checksum)[0]:
            raise PngError(f"The PNG chunk {kind!r} has a wrong CRC.")

        if kind == b"IHDR":
            header = body
        elif kind == b"PLTE":
            palette = body
        elif kind == b"IDAT":
            compressed += body
        elif kind == b"IEND":
            break
        offset += 12 + length

    if len(header) != 13:
        raise PngError("The PNG has no valid IHDR chunk.")
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    _check_header(width, height, depth, colour_type, interlace, palette)
    return width, height, colour_type, palette, bytes(compressed)


def _check_header(
    width: int, height: int, depth: int, colour_type: int, interlace: int, palette: bytes
) -> None:
    if width == 0 or height == 0:
        raise PngError("The PNG has a width or height of 0.")
    if width * height > MAX_PIXELS:
        raise PngError(
            f"The PNG has {width} x {height} pixels; at most {MAX_PIXELS} pixels "
            "are supported. Send it as JPEG instead."
        )
    if colour_type not in _CHANNELS:
        raise PngError(f"The PNG colour type {colour_type} is not valid.")
    if depth != 8:
        raise PngError(
            f"The PNG has a bit depth of {depth}; only 8-bit PNG images are "
            "supported. Convert it to 8 bits per sample or to JPEG."
        )
    if interlace != 0:
        raise PngError("Interlaced PNG images are not supported. Save it without interlacing.")
    if colour_type == 3 and not palette:
        raise PngError("The palette PNG has no PLTE chunk.")


def _unfilter(raw: bytes, height: int, stride: int, channels: int) -> list[bytearray]:
    """Reverse the per-row filters of PNG section 9 and return the rows."""
    rows: list[bytearray] = []
    previous = bytearray(stride)
    for index in range(height):
        start = index * (stride + 1)
        kind = raw[start]
        row = bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(channels, stride):
                row[i] = (row[i] + row[i - channels]) & 0xFF
        elif kind == 2:
            row = bytearray((a + b) & 0xFF for a, b in zip(row, previous))
        elif kind == 3:
            for i in range(stride):
                left = row[i - channels] if i >= channels else 0
                row[i] = (row[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                left = row[i - channels] if i >= channels else 0
                upper_left = previous[i - channels] if i >= channels else 0
                row[i] = (row[i] + _paeth(left, previous[i], upper_left)) & 0xFF
        elif kind != 0:
            raise PngError(f"Row {index} of the PNG has the unknown filter type {kind}.")
        rows.append(row)
        previous = row
    return rows


def _paeth(left: int, upper: int, upper_left: int) -> int:
    estimate = left + upper - upper_left
    distance_left = abs(estimate - left)
    distance_upper = abs(estimate - upper)
    distance_upper_left = abs(estimate - upper_left)
    if distance_left <= distance_upper and distance_left <= distance_upper_left:
        return left
    if distance_upper <= distance_upper_left:
        return upper
    return upper_left


def _rgb_row(row: bytearray, colour_type: int, palette: bytes) -> bytes:
    """Return one row as RGB triplets; alpha is composited onto white."""
    if colour_type == 2:
        return bytes(row)
    if colour_type == 0:
        return bytes(value for grey in row for value in (grey, grey, grey))
    if colour_type == 3:
        if max(row) * 3 + 3 > len(palette):
            raise PngError("A PNG pixel refers to a palette entry that does not exist.")
        return b"".join(palette[3 * index : 3 * index + 3] for index in row)
    if colour_type == 4:
        greys = (_over_white(row[i], row[i + 1]) for i in range(0, len(row), 2))
        return bytes(value for grey in greys for value in (grey, grey, grey))
    return bytes(
        _over_white(row[i + channel], row[i + 3])
        for i in range(0, len(row), 4)
        for channel in range(3)
    )


def _over_white(value: int, alpha: int) -> int:
    return (value * alpha + 255 * (255 - alpha) + 127) // 255


def _bmp(width: int, height: int, rgb_rows: list[bytes]) -> bytes:
    """Write a BITMAPINFOHEADER BMP: BGR rows, bottom row first, each padded to 4 bytes."""
    padding = b"\0" * ((4 - (width * 3) % 4) % 4)
    pixels = bytearray()
    for row in reversed(rgb_rows):
        bgr = bytearray(row)
        bgr[0::3], bgr[2::3] = row[2::3], row[0::3]
        pixels += bgr + padding

    header_size = 14 + 40
    file_header = struct.pack("<2sIHHI", b"BM", header_size + len(pixels), 0, 0, header_size)
    # 2835 pixels per metre is 72 dots per inch.
    info_header = struct.pack(
        "<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0
    )
    return file_header + info_header + bytes(pixels)
