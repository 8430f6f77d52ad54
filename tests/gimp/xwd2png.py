#!/usr/bin/env python3
"""xwd2png.py IN.xwd OUT.png: converts an `xwd` screen dump (24/32-bit TrueColor ZPixmap, what Xvfb
-screen WxHx24 gives) to an 8-bit RGB PNG, with the Python standard library only."""
import struct
import sys
import zlib


def main(src, dst):
    data = open(src, "rb").read()
    hdr = struct.unpack(">25I", data[:100])
    (header_size, _version, pixmap_format, depth, width, height, _xoffset, byte_order, _unit, _bit_order,
     _pad, bits_per_pixel, bytes_per_line, _visual, red_mask, green_mask, blue_mask, _bits_rgb, _entries,
     ncolors) = hdr[:20]
    if pixmap_format != 2 or bits_per_pixel not in (24, 32):
        raise SystemExit(f"{src}: format {pixmap_format}, {bits_per_pixel} bits per pixel not handled")
    offset = header_size + ncolors * 12
    bpp = bits_per_pixel // 8
    fmt = "<I" if byte_order == 0 else ">I"

    def shift(mask):
        s = 0
        while mask and not mask & 1:
            mask >>= 1
            s += 1
        return s

    rs, gs, bs = shift(red_mask), shift(green_mask), shift(blue_mask)
    rows = []
    for y in range(height):
        line = data[offset + y * bytes_per_line:offset + y * bytes_per_line + width * bpp]
        out = bytearray(b"\0")  # PNG filter type 0
        for x in range(width):
            chunk = line[x * bpp:x * bpp + bpp]
            v = struct.unpack(fmt, chunk + b"\0" * (4 - bpp))[0] if bpp == 4 or byte_order == 0 else \
                struct.unpack(">I", b"\0" + chunk)[0]
            out += bytes(((v & red_mask) >> rs, (v & green_mask) >> gs, (v & blue_mask) >> bs))
        rows.append(bytes(out))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")
    open(dst, "wb").write(png)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
