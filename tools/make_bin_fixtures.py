#!/usr/bin/env python3
"""make_bin_fixtures.py: PyTorch .bin (torch.save zip) fixtures for engine/torch_zip.c, written by torch itself.

Reads the safetensors models that tools/make_fixtures.py wrote (tests/fixtures/models/<name>/) and writes
tests/fixtures/bin/ (about 1 MB; see MANIFEST.json there):

  bf16-tiny/, demo-tiny/     whole model folders whose weights are a torch.save'd state dict (BF16 / F16),
                             tensor for tensor the same bytes as the safetensors file of the same model
  cifar-like/, celebahq-like/  the data.pkl of a real torch.save of those fp32 models (celebahq-like with the
                             LEGACY attention names and [C, C, 1, 1] weights, as the hub's google/ddpm-* .bin
                             files have) plus storages.txt mapping each storage to the safetensors tensor
                             holding its bytes. The full files are 2-3 MB each, so the C test re-assembles
                             them at run time (torch's zip layout, torch's own pickle, the safetensors bytes).
  edge/                      small archives covering the format's corners (mixed dtypes, storage offsets and
                             sharing, 0-dim and empty tensors, nn.Parameter, ZIP64 fields, no CRCs, no
                             byteorder record, unaligned data, the legacy pre-1.6 format) + mixed.safetensors
  bad/                       hostile or unsupported archives the loader must refuse with a clear error

The state dicts mimic what diffusers' save_pretrained(safe_serialization=False) writes: model.state_dict()
(an OrderedDict in module order with its _metadata attribute) passed to torch.save.
Nothing pickled here is ever unpickled by a Python loader without weights_only... except the checks below,
which call torch.load(weights_only=True) on the good files only.

Usage: python3 tools/make_bin_fixtures.py   (after tools/make_fixtures.py; a few seconds). Deterministic
except for torch's random .data/serialization_id records.
"""
import collections
import io
import json
import os
import pickle
import shutil
import struct
import sys
import tempfile
import zipfile
import zlib

import torch
from safetensors import safe_open
from safetensors.torch import save_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "tests", "fixtures", "models")
OUT = os.path.join(REPO, "tests", "fixtures", "bin")
LEGACY_ATTN = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}

manifest = {}


def record(rel, what, **extra):
    manifest[rel] = dict(what=what, **extra)


def safetensors_raw(path):
    """name -> (dtype, shape, raw little-endian bytes) exactly as stored in the safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    header.pop("__metadata__", None)
    base = 8 + n
    return {k: (v["dtype"], v["shape"], blob[base + v["data_offsets"][0]:base + v["data_offsets"][1]])
            for k, v in header.items()}


def load_safetensors(path):
    with safe_open(path, framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def torch_state_dict(model_dir):
    """The model's tensors as diffusers' model.state_dict() would hand them to torch.save: an OrderedDict in
    module order carrying the _metadata attribute (module versions) that torch pickles with a BUILD."""
    from diffusers import UNet2DModel  # imported late: only this step needs diffusers

    tensors = load_safetensors(os.path.join(model_dir, "diffusion_pytorch_model.safetensors"))
    legacy = any(".query." in k for k in tensors)
    ref = UNet2DModel.from_config(UNet2DModel.load_config(model_dir)).state_dict()

    def rename(key):
        """to_q/to_k/to_v/to_out.0 -> query/key/value/proj_attn in parameter and module names."""
        if not legacy:
            return key
        key += "."
        for modern, old in LEGACY_ATTN.items():
            key = key.replace(modern, old)
        return key[:-1]

    sd = collections.OrderedDict((rename(k), tensors[rename(k)]) for k in ref.keys())
    assert set(sd) == set(tensors), sorted(set(sd) ^ set(tensors))
    sd._metadata = collections.OrderedDict((rename(k), dict(v)) for k, v in ref._metadata.items())
    return sd


def check_equal(loaded, tensors, what):
    assert set(loaded) == set(tensors), what
    for k, v in tensors.items():
        w = loaded[k]
        assert w.dtype == v.dtype and w.shape == v.shape, (what, k)
        bits = lambda t: t.detach().contiguous().reshape(-1).view(torch.uint8)  # bitwise, NaN-safe
        assert torch.equal(bits(w), bits(v)), (what, k)


def read_records(path_or_bytes):
    """archive name and {record name: bytes} of a torch zip."""
    z = zipfile.ZipFile(io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes)
    names = z.namelist()
    archive = names[0].split("/")[0]
    return archive, [(n[len(archive) + 1:], z.read(n)) for n in names]


def torch_writer(path, records):
    """Writes records with torch's own zip writer (what torch.save uses); archive = the file's stem."""
    w = torch._C.PyTorchFileWriter(path, True, 64)
    for name, data in records:
        if name not in ("version", ".data/serialization_id"):   # the writer adds these itself
            w.write_record(name, data, len(data))
    w.write_end_of_file()
    del w


def zip_writer(path, archive, records, zip64=False, descriptor=True, align=64):
    """A stored zip laid out like torch's miniz writer (general-purpose bit 3 with zero local sizes followed by
    a data descriptor, "FB" padding so data starts on `align` bytes, ZIP64 end record + locator), or:
    zip64=True: every central header holds 0xFFFFFFFF sizes/offset and the real values in a ZIP64 extra
    field, as torch writes past 4 GiB; descriptor=False, align=1: real CRC/sizes in the local headers
    (Python zipfile style) and unaligned data."""
    out = bytearray()
    central = []
    for name, data in records:
        full = f"{archive}/{name}".encode()
        crc = zlib.crc32(data)
        offset = len(out)
        flags = 0x0808 if descriptor else 0x0800
        extra = b""
        if align > 1:
            pad = (align - (offset + 30 + len(full) + 4) % align) % align
            extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
        lcrc, lsize = (0, 0) if descriptor else (crc, len(data))
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45 if zip64 else 20, flags, 0, 0, 0, lcrc, lsize, lsize,
                           len(full), len(extra)) + full + extra
        assert align == 1 or len(out) % align == 0
        out += data
        if descriptor:
            out += struct.pack("<IIQQ" if zip64 else "<IIII", 0x08074B50, crc, len(data), len(data))
        central.append((full, crc, len(data), offset, flags))
    cd_offset = len(out)
    for full, crc, size, offset, flags in central:
        if zip64:
            extra = struct.pack("<HHQQQ", 1, 24, size, size, offset)
            s32 = o32 = 0xFFFFFFFF
        else:
            extra, s32, o32 = b"", size, offset
        out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45 if zip64 else 20, flags, 0, 0, 0, crc, s32,
                           s32, len(full), len(extra), 0, 0, 0, 0, o32) + full + extra
    cd_size = len(out) - cd_offset
    n = len(central)
    z64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, cd_size, cd_offset)
    out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
    if zip64:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, cd_size, cd_offset, 0)
    with open(path, "wb") as f:
        f.write(out)


# ---- state dicts pickled the way torch pickles them, from descriptions (for the crafted bad cases) -------

class FakeStorage:
    def __init__(self, storage_type, key, numel):
        self.storage_type, self.key, self.numel = storage_type, key, numel


class FakeTensor:
    """Pickles exactly as a torch tensor does: _rebuild_tensor_v2(storage, offset, size, stride, False, {})."""
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class DictItems:
    """An OrderedDict whose items may repeat a key (a real dict cannot): OrderedDict() + SETITEMS."""
    def __init__(self, items):
        self.items = items

    def __reduce__(self):
        return (collections.OrderedDict, (), None, None, iter(self.items))


def torch_pickle(obj):
    class P(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, FakeStorage):
                return ("storage", o.storage_type, o.key, "cpu", o.numel)
            return None
    buf = io.BytesIO()
    P(buf, protocol=2).dump(obj)
    return buf.getvalue()


# ---- the fixtures ------------------------------------------------------------------------------------------

def write_model_folder(name, dtype_note):
    src = os.path.join(MODELS, name)
    dst = os.path.join(OUT, name)
    os.makedirs(dst, exist_ok=True)
    for f in ("config.json", "scheduler_config.json"):
        shutil.copy(os.path.join(src, f), os.path.join(dst, f))
    sd = torch_state_dict(src)
    path = os.path.join(dst, "diffusion_pytorch_model.bin")
    torch.save(sd, path)
    check_equal(torch.load(path, weights_only=True), load_safetensors(os.path.join(src, "diffusion_pytorch_model.safetensors")), path)
    record(f"{name}/diffusion_pytorch_model.bin", f"torch.save(state_dict) of models/{name}: {dtype_note}, the "
           "same names and bytes as its safetensors file", n_tensors=len(sd))
    record(f"{name}/config.json", f"copy of models/{name}/config.json")
    record(f"{name}/scheduler_config.json", f"copy of models/{name}/scheduler_config.json")


def write_spliced(name):
    """data.pkl of a real torch.save + storages.txt (key -> safetensors tensor), for run-time re-assembly."""
    src = os.path.join(MODELS, name)
    dst = os.path.join(OUT, name)
    os.makedirs(dst, exist_ok=True)
    st_path = os.path.join(src, "diffusion_pytorch_model.safetensors")
    raw = safetensors_raw(st_path)
    sd = torch_state_dict(src)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "diffusion_pytorch_model.bin")
        torch.save(sd, path)
        check_equal(torch.load(path, weights_only=True), load_safetensors(st_path), path)
        archive, records = read_records(path)
    recs = dict(records)
    # Every storage holds exactly one tensor's bytes (offset 0): map storage key -> that tensor's name.
    by_bytes = {}
    for k, (_, _, b) in raw.items():
        by_bytes.setdefault(b, k)
    lines = [f"archive {archive}"]
    for rname, data in records:
        if rname.startswith("data/"):
            key = rname[len("data/"):]
            assert data in by_bytes, (name, rname)
            lines.append(f"{key} {by_bytes[data]}")
    for small in ("byteorder", "version", ".format_version", ".storage_alignment"):
        lines.append(f"record {small} {recs[small].decode()}")
    with open(os.path.join(dst, "data.pkl"), "wb") as f:
        f.write(recs["data.pkl"])
    with open(os.path.join(dst, "storages.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    note = "LEGACY attention names, [C, C, 1, 1] attention weights" if any(".query." in k for k in raw) else "modern names"
    record(f"{name}/data.pkl", f"the data.pkl of torch.save(state_dict) of models/{name} (fp32, {note})",
           n_tensors=len(sd), n_storages=len(lines) - 5)
    record(f"{name}/storages.txt", "line 1 'archive <name>'; then '<storage key> <safetensors tensor name>' (that "
           "tensor's bytes are the storage's bytes); then 'record <name> <text>' for the small records")


def mixed_state_dict():
    g = torch.Generator().manual_seed(7)
    flat = torch.randn(300, generator=g)
    sd = collections.OrderedDict()
    sd["a.weight"] = torch.randn(3, 4, generator=g)
    sd["b.f16"] = torch.randn(5, generator=g).half()
    sd["c.bf16"] = torch.randn(2, 2, generator=g).bfloat16()
    sd["view.offset10"] = flat[10:110].view(10, 10)         # storage offset 10 of a shared storage
    sd["view.offset200"] = flat[200:260].view(3, 4, 5)      # same storage, offset 200
    sd["scalar"] = torch.tensor(2.5)                        # 0-dim
    sd["empty"] = torch.empty(0, 3)                         # numel 0
    odd = torch.empty_strided((4, 1, 3), (3, 7, 1))         # size-1 dim with an odd stride: contiguous for torch
    odd.copy_(torch.randn(4, 1, 3, generator=g))
    sd["odd.stride"] = odd
    sd["param"] = torch.nn.Parameter(torch.randn(3, generator=g))  # pickled via _rebuild_parameter
    sd["ünï.çødé"] = torch.randn(2, generator=g)
    assert odd.is_contiguous()
    return sd


def write_edge():
    d = os.path.join(OUT, "edge")
    os.makedirs(d, exist_ok=True)
    sd = mixed_state_dict()
    plain = collections.OrderedDict((k, v.detach().clone().contiguous()) for k, v in sd.items())
    save_file(plain, os.path.join(d, "mixed.safetensors"))
    record("edge/mixed.safetensors", "the tensors of every edge/*.bin that holds the mixed state dict")

    buf = io.BytesIO()
    torch.save(sd, buf)                                      # a buffer: archive name "archive"
    mixed = buf.getvalue()
    with open(os.path.join(d, "mixed.bin"), "wb") as f:
        f.write(mixed)
    record("edge/mixed.bin", "torch.save to a buffer (archive 'archive'): F32/F16/BF16, storage offsets 10 and "
           "200 of one shared storage, 0-dim, empty [0, 3], [4, 1, 3] with stride 7 on the size-1 dim, "
           "an nn.Parameter (_rebuild_parameter), a non-ASCII name")
    archive, records = read_records(mixed)

    zip_writer(os.path.join(d, "zip64.bin"), "zip64", records, zip64=True)
    record("edge/zip64.bin", "mixed.bin's records re-packed with ZIP64 central headers (0xFFFFFFFF sizes and "
           "offsets, real values in the 0x0001 extra field; as torch writes for files over 4 GiB), 8-byte data "
           "descriptors, ZIP64 end record")
    zip_writer(os.path.join(d, "no-byteorder.bin"), "old", [r for r in records if r[0] != "byteorder"],
               descriptor=False, align=1)
    record("edge/no-byteorder.bin", "mixed.bin's records without the byteorder record (torch < 1.13), real "
           "CRC/sizes in the local headers (no data descriptors), data not aligned")

    torch.save(sd, os.path.join(d, "protocol4.bin"), pickle_protocol=4)
    record("edge/protocol4.bin", "the mixed state dict saved with pickle_protocol=4: FRAME, MEMOIZE, "
           "SHORT_BINUNICODE, STACK_GLOBAL")

    torch.serialization.set_crc32_options(False)
    try:
        torch.save(sd, os.path.join(d, "no-crc.bin"))
    finally:
        torch.serialization.set_crc32_options(True)
    record("edge/no-crc.bin", "torch.save with set_crc32_options(False): every CRC-32 is 0 (must load)")

    for f in ("mixed.bin", "zip64.bin", "no-byteorder.bin", "no-crc.bin", "protocol4.bin"):
        p = os.path.join(d, f)
        # torch's own weights_only unpickler lacks FRAME (opcode 0x95): the protocol-4 file we wrote ourselves
        # is loaded with the full unpickler.
        check_equal(torch.load(p, weights_only=f != "protocol4.bin"), plain, p)
        if f != "no-crc.bin":
            assert zipfile.ZipFile(p).testzip() is None, p

    torch.save({"a": torch.ones(2)}, os.path.join(d, "legacy-format.bin"), _use_new_zipfile_serialization=False)
    record("edge/legacy-format.bin", "torch.save(_use_new_zipfile_serialization=False): the pre-1.6 bare pickle "
           "stream, refused (UNSUPPORTED, 'legacy')")


def write_bad():
    d = os.path.join(OUT, "bad")
    os.makedirs(d, exist_ok=True)
    f32 = torch.FloatStorage

    def bad(name, what, expect, pkl=None, storages=(), path_records=None):
        path = os.path.join(d, name)
        if path_records is not None:
            torch_writer(path, path_records)
        else:
            torch_writer(path, [("data.pkl", pkl)] + [(f"data/{k}", v) for k, v in storages])
        record(f"bad/{name}", what, expect=expect)
        return path

    # Hostile pickles: the globals are only named in the bytes, never imported or called (not even here).
    bad("os-system.bin", "data.pkl calls os.system('echo pwned') through GLOBAL + REDUCE",
        "FORMAT, \"refuses global 'os.system'\"",
        pkl=b"\x80\x02cos\nsystem\nq\x00X\n\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03.")
    class Evil:
        def __reduce__(self):
            return (eval, ("print('pwned')",))   # pickle.dumps only names eval; nothing runs
    bad("stack-global-eval.bin", "protocol-4 data.pkl calling builtins.eval through STACK_GLOBAL inside a state dict",
        "FORMAT, \"refuses global 'builtins.eval'\"", pkl=pickle.dumps({"a": Evil()}, protocol=4))

    # Storage bytes that are not there.
    sd = {"w": FakeTensor(FakeStorage(f32, "0", 1000), 0, (10, 100), (100, 1))}
    bad("storage-beyond-entry.bin", "persistent id claims 1000 float32 elements; the entry has 48 bytes",
        "FORMAT, 'claims 1000 elements'", pkl=torch_pickle(sd), storages=[("0", bytes(48))])
    sd = {"w": FakeTensor(FakeStorage(f32, "0", 12), 8, (2, 3), (3, 1))}
    bad("view-beyond-storage.bin", "tensor view [8, 8 + 6) of a 12-element storage",
        "FORMAT, 'lie outside its storage'", pkl=torch_pickle(sd), storages=[("0", bytes(48))])
    sd = {"w": FakeTensor(FakeStorage(f32, "7", 12), 0, (12,), (1,))}
    bad("missing-storage.bin", "the pickle names storage '7' but the archive has no data/7",
        "FORMAT, \"storage entry '<archive>/data/7' is missing\"", pkl=torch_pickle(sd), storages=[("0", bytes(48))])
    item = FakeTensor(FakeStorage(f32, "0", 12), 0, (12,), (1,))
    bad("duplicate-name.bin", "OrderedDict SETITEMS with the key 'w' twice", "FORMAT, \"duplicate tensor name 'w'\"",
        pkl=torch_pickle(DictItems([("w", item), ("w", item)])), storages=[("0", bytes(48))])

    # Unsupported content, saved by torch itself.
    def saved(name, obj, what, expect):
        buf = io.BytesIO()
        torch.save(obj, buf)
        _, records = read_records(buf.getvalue())
        bad(name, what, expect, path_records=records)

    saved("noncontiguous.bin", {"w.t": torch.randn(4, 3).t()}, "a transposed view (strides (1, 3)) in a state dict",
          "UNSUPPORTED, \"tensor 'w.t' is not contiguous\"")
    saved("long-storage.bin", {"n": torch.arange(3)}, "an int64 tensor (torch.LongStorage)",
          "UNSUPPORTED, \"tensor 'n' has storage type torch.LongStorage\"")
    saved("float-value.bin", {"lr": 0.5}, "a float value: opcode BINFLOAT", "FORMAT, 'opcode 0x47 (BINFLOAT)'")
    saved("int-value.bin", {"step": 3}, "an int value instead of a tensor", "FORMAT, \"'step' is a int, not a tensor\"")
    saved("list.bin", [torch.ones(2)], "a list at the top, not a dict", "FORMAT, 'not a state dict'")
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    _, records = read_records(buf.getvalue())
    bad("big-endian.bin", "byteorder record 'big'", "UNSUPPORTED, 'big-endian'",
        path_records=[(n, b"big" if n == "byteorder" else v) for n, v in records])

    # Broken containers, from the good mixed.bin.
    with open(os.path.join(OUT, "edge", "mixed.bin"), "rb") as f:
        mixed = f.read()
    with open(os.path.join(d, "truncated.bin"), "wb") as f:
        f.write(mixed[:len(mixed) // 2])
    record("bad/truncated.bin", "the first half of edge/mixed.bin", expect="FORMAT, 'end-of-central-directory'")

    z = zipfile.ZipFile(io.BytesIO(mixed))
    info = z.getinfo("archive/data/0")
    pos = mixed.find(b"PK\x01\x02")
    while True:   # find data/0's central header and claim 1 MB for it
        nlen = struct.unpack("<H", mixed[pos + 28:pos + 30])[0]
        if mixed[pos + 46:pos + 46 + nlen] == b"archive/data/0":
            break
        pos += 46 + nlen + sum(struct.unpack("<HH", mixed[pos + 30:pos + 34]))
    past = bytearray(mixed)
    past[pos + 20:pos + 28] = struct.pack("<II", 1 << 20, 1 << 20)
    with open(os.path.join(d, "entry-past-end.bin"), "wb") as f:
        f.write(past)
    record("bad/entry-past-end.bin", f"edge/mixed.bin with data/0's central sizes patched from {info.file_size} to "
           "1 MiB", expect="FORMAT, \"entry 'archive/data/0' (1048576 bytes\"")

    with zipfile.ZipFile(os.path.join(d, "compressed.bin"), "w") as out:
        for i in z.infolist():
            out.writestr(i.filename, z.read(i.filename),
                         zipfile.ZIP_DEFLATED if i.filename == "archive/data/0" else zipfile.ZIP_STORED)
    record("bad/compressed.bin", "edge/mixed.bin re-zipped with archive/data/0 deflated",
           expect="UNSUPPORTED, \"entry 'archive/data/0' is compressed (method 8, deflate)\"")


def main():
    for name in ("cifar-like", "celebahq-like", "bf16-tiny", "demo-tiny"):
        if not os.path.exists(os.path.join(MODELS, name, "diffusion_pytorch_model.safetensors")):
            sys.exit(f"tests/fixtures/models/{name} is missing: run tools/make_fixtures.py first")
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    write_model_folder("bf16-tiny", "BF16")
    write_model_folder("demo-tiny", "F16")
    write_spliced("cifar-like")
    write_spliced("celebahq-like")
    write_edge()
    write_bad()
    with open(os.path.join(OUT, "MANIFEST.json"), "w") as f:
        json.dump(dict(generator="tools/make_bin_fixtures.py", torch=torch.__version__, files=manifest), f,
                  indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {len(manifest)} files under {os.path.relpath(OUT, REPO)}, {total} bytes")


if __name__ == "__main__":
    main()
