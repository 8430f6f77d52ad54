#!/usr/bin/env python3
"""sass_chains.py: dependent global-memory round trips per straight-line stretch of each kernel's SASS.

A GPU issues a warp's instructions in order and stalls an instruction until its source registers are
ready. A global load (LDG, LD, ATOMG: ~0.3-1 us from L2 or HBM) followed by a store of its value and then
the next load in program order (what nvcc emits for `y[i] = f(r[i])` in a loop where y may alias r)
costs one full round trip per element: 64 of them in a row are ~20-60 us that no occupancy hides in a
kernel with few warps. This script models in-order issue with global loads as one unit of latency and
everything else as none, and reports, per basic block, how many round trips its last instruction waits
through (the block's depth). Loops count once per pass through the block.

  python3 tools/sass_chains.py [--arch sm_90a] [--min N] [--kernel REGEX] [--ignore REGEX] [--max-allowed N]
                               [--across-branches] [--loops]
                               [--loop-sizes [--max-loop-divisions N] [--max-loop-generic-loads N]] FILE...
  python3 tools/sass_chains.py --which | --tools-dir
  python3 tools/sass_chains.py [--arch sm_90a] --write-sass OUT FILE

FILE: a CUDA object or library (cuobjdump -sass runs on it; cuobjdump from $CUOBJDUMP, PATH or
/usr/local/cuda/bin) or a text file with cuobjdump -sass output. Prints, per kernel whose deepest block
reaches --min (default 4): its depth, the block's address range and its global loads and stores. With
--max-allowed N, exits 1 if a kernel matching --kernel (and not --ignore) has a block deeper than N (a
regression check: meson test cuda-sass-chains); exit 77 when no cuobjdump is found. --across-branches measures
stretches between loop boundaries instead of basic blocks, stepping over forward branches: nvcc often puts each
guarded load (`if (i < n) v[u] = p[i]`) in a branch of its own with its use right behind it, a chain no basic
block shows (the non-split convolution epilogue had 64 per thread so). --loops also lists the
loops whose every global load is a round trip of its own (informational: a grid-stride loop is that too).
--loop-sizes lists the loops with tensor-core products (HMMA, HGMMA) or cp.async copies (LDGSTS) and their
instructions per pass (nested loops counted once), to see what a K loop issues besides its products; with
--max-loop-divisions N it exits 1 where such a loop has more than N integer divisions (I2F.*.RP: each is ~20
instructions per pass; meson test cuda-sass-loops keeps the cp.async convolution tiles' K loops at 0), with
--max-loop-generic-loads N where it has more than N generic loads (LD: a shared-memory operand read through a
generic address, as nvcc compiled bf16 WMMA fragment loads, 48 LD.E where fp16 had 12 LDSM per slice).
Distributed shared memory (generic LD/ST) counts as global here. --which prints the cuobjdump it would use
(exit 1: none; tests/gpu/check_module.sh asks), --tools-dir where tools/install-deps.sh unpacks the wheels.
--write-sass OUT writes FILE's cuobjdump -sass text to OUT and exits: the module's sm_90a SASS is ~190 MB and
takes cuobjdump 10-30 s, so the build dumps it once (tests/gpu/meson.build) for both meson tests that read it.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

INSN = re.compile(r'^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;')
FUNC = re.compile(r'^\s*Function : (\S+)')
REG = re.compile(r'\b(R\d+|UR\d+|P\d|UP\d)(\.64|\.128)?\b')
BRANCH_TARGET = re.compile(r'\b(?:BRA|BRX|CALL\.REL(?:\.NOINC)?|BSSY|SSY|PBK|JMP)\b.*?(0x[0-9a-f]+)')

# global round trips: the value comes back from L2 / HBM
GLOBAL_LOADS = ('LDG', 'LD', 'ATOMG', 'ATOM', 'LDL')
# no register written (the first operand is an address or nothing)
NO_DEST = ('STG', 'ST', 'STS', 'STL', 'RED', 'REDG', 'BAR', 'BRA', 'BRX', 'EXIT', 'RET', 'CALL', 'BSYNC', 'BSSY',
           'WARPSYNC', 'MEMBAR', 'DEPBAR', 'LDGSTS', 'LDGDEPBAR', 'ERRBAR', 'CCTL', 'NOP', 'YIELD', 'BPT', 'KILL',
           'ACQBULK', 'PREEXIT', 'FENCE', 'SYNCS', 'UTMALDG', 'UTMASTG', 'WARPGROUP', 'ARRIVES', 'CGAERRBAR',
           'BMOV', 'NANOSLEEP', 'STSM', 'UBLKCP', 'UTMACCTL', 'UTMAPF', 'UTMACMDFLUSH', 'ELECT', 'ENDCOLLECTIVE')
# wait for everything in flight (memory ordering or an explicit drain)
DRAIN = ('BAR', 'MEMBAR', 'DEPBAR', 'ERRBAR', 'SYNCS', 'FENCE')


WIDTHS = {'.128': 4, '.64': 2}          # registers per operand of a 128- / 64-bit access
STORES = ('STG', 'ST', 'STS', 'STL')    # their data operand is as wide as the access
GLOBAL_STORES = ('STG', 'ST', 'RED', 'REDG')


def width_of(op):
    return next((n for w, n in WIDTHS.items() if w in op), 1)


def expand(reg, suffix, width):
    """R8.64 -> R8, R9; a data register of a 128-bit access -> 4 registers"""
    n = WIDTHS.get(suffix or '', width)
    m = re.match(r'([A-Z]+)(\d+)', reg)
    if m is None or m.group(1) in ('P', 'UP'):
        return [reg]
    return [m.group(1) + str(int(m.group(2)) + i) for i in range(n)]


def parse(text):
    """{kernel: [(address, opcode, operand text)]}"""
    kernels, cur = {}, None
    for line in text.splitlines():
        m = FUNC.match(line)
        if m:
            cur = kernels.setdefault(m.group(1), [])
            continue
        m = INSN.match(line)
        if m and cur is not None:
            body = m.group(2)
            if body.startswith('@'):
                body = body.split(None, 1)[1] if ' ' in body else ''
            parts = body.split(None, 1)
            if parts:
                cur.append((int(m.group(1), 16), parts[0], parts[1] if len(parts) > 1 else ''))
    return kernels


def split(insns, starts, ends):
    """insns cut before every address in starts and after every instruction for which ends (ins) holds"""
    cur = []
    for ins in insns:
        if ins[0] in starts and cur:
            yield cur
            cur = []
        cur.append(ins)
        if ends(ins):
            yield cur
            cur = []
    if cur:
        yield cur


def blocks(insns):
    """straight-line stretches: split after branches / exits and before branch targets"""
    targets = set()
    for _, op, args in insns:
        m = BRANCH_TARGET.search(op + ' ' + args)
        if m:
            targets.add(int(m.group(1), 16))
    return split(insns, targets, lambda ins: ins[1].split('.')[0] in ('BRA', 'BRX', 'EXIT', 'RET', 'JMP', 'CALL'))


def backward_target(addr, op, args):
    """the target of a branch to this address or before it (a loop's head), else None"""
    m = re.search(r'(0x[0-9a-f]+)', args)
    if op.split('.')[0] == 'BRA' and m and int(m.group(1), 16) <= addr:
        return int(m.group(1), 16)
    return None


def regions(insns):
    """stretches between loop boundaries (a backward branch's target, the branch itself, an exit): forward
    branches are stepped over, so the path is every if-arm in address order. Catches what blocks() cannot:
    guarded loads each in its own branch, each waited for before the next (an over-estimate where arms
    exclude each other, e.g. a kernel's specialised copies of one loop)."""
    heads = {backward_target(*ins) for ins in insns} - {None}
    return split(insns, heads,
                 lambda ins: backward_target(*ins) is not None or ins[1].split('.')[0] in ('EXIT', 'RET'))


def loops(insns):
    """the bodies of backward branches: instructions from the target to the branch, nested code included"""
    at = {addr: i for i, (addr, _, _) in enumerate(insns)}
    for i, ins in enumerate(insns):
        target = backward_target(*ins)
        if target is not None and target in at:
            yield insns[at[target]:i + 1]


def depth(block):
    """in-order issue: t = max (t, ready (sources)); a global load's destinations are ready at t + 1"""
    ready, t = {}, 0
    loads = stores = 0
    for _, op, args in block:
        base = op.split('.')[0]
        operands = [o.strip() for o in args.split(',')]
        width = width_of(op)
        if base in DRAIN:
            t = max([t] + list(ready.values()))
            continue
        dests = []
        if base not in NO_DEST and operands and operands[0]:
            first = REG.match(operands[0])
            if first:
                dests = expand(first.group(1), first.group(2), width if base in GLOBAL_LOADS or base == 'LDS' else 1)
        srcs = []
        for o in (operands[1:] if dests else operands):
            for m in REG.finditer(o):
                srcs += expand(m.group(1), m.group(2), width if base in STORES else 1)
        t = max([t] + [ready.get(r, 0) for r in srcs])
        for r in dests:
            ready[r] = t + (1 if base in GLOBAL_LOADS else 0)
        loads += base in GLOBAL_LOADS
        stores += base in GLOBAL_STORES
    return t, loads, stores


# where tools/install-deps.sh --test unpacks PyPI's cuobjdump and nvdisasm wheels (it asks --tools-dir)
TOOLS_DIR = os.path.join(os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache'), 'gimp-ddpm', 'cuda-tools')
CACHE_TOOL = os.path.join(TOOLS_DIR, 'nvidia', 'cu13', 'bin', 'cuobjdump')


def find_cuobjdump():
    """$CUOBJDUMP, PATH, the toolkit's, or the nvidia-cuda-cuobjdump wheel tools/install-deps.sh --test unpacks"""
    for tool in (os.environ.get('CUOBJDUMP'), shutil.which('cuobjdump'), '/usr/local/cuda/bin/cuobjdump', CACHE_TOOL):
        if tool and os.access(tool, os.X_OK):
            return tool
    return None


def sass_text(path, arch):
    with open(path, 'rb') as f:
        head = f.read(4)
    if head != b'\x7fELF':
        with open(path) as f:
            return f.read()
    tool = find_cuobjdump()
    if tool is None:
        print('sass_chains: no cuobjdump (set CUOBJDUMP, or tools/install-deps.sh --test unpacks the '
              'nvidia-cuda-cuobjdump wheel); skipped', file=sys.stderr)
        sys.exit(77)
    env = dict(os.environ)           # cuobjdump runs nvdisasm, which the wheels put beside it
    env['PATH'] = env.get('PATH', '') + os.pathsep + os.path.dirname(tool)
    r = subprocess.run([tool, '-sass'] + (['-arch', arch] if arch else []) + [path], capture_output=True, text=True,
                       env=env)
    if r.returncode != 0:
        print(f'sass_chains: {tool} failed ({r.returncode}): {r.stderr.strip()}', file=sys.stderr)
        sys.exit(1)
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('files', nargs='*')
    ap.add_argument('--arch', default=None, help='only this machine code (e.g. sm_90a)')
    ap.add_argument('--min', type=int, default=4)
    ap.add_argument('--kernel', default='.')
    ap.add_argument('--ignore', default=None, help='kernels not checked (regex on the mangled name)')
    ap.add_argument('--max-allowed', type=int, default=None)
    ap.add_argument('--across-branches', action='store_true',
                    help='chains along stretches between loop boundaries, forward branches stepped over (regions)')
    ap.add_argument('--loops', action='store_true',
                    help='also list loops whose every global load is a round trip of its own (loads per trip <= 1)')
    ap.add_argument('--loop-sizes', action='store_true',
                    help='list the loops with tensor-core products or cp.async copies: instructions per pass (a '
                         "warp issues one a cycle), the products', the copies' and the integer divisions' counts")
    ap.add_argument('--max-loop-divisions', type=int, default=None,
                    help='exit 1 if a loop with tensor-core products or cp.async copies of a kernel matching --kernel '
                         'has more integer divisions than this (with --loop-sizes)')
    ap.add_argument('--max-loop-generic-loads', type=int, default=None,
                    help='exit 1 if such a loop has more generic loads (LD) than this (with --loop-sizes)')
    ap.add_argument('--tools-dir', action='store_true', help='print where the cuobjdump wheels are unpacked; exit')
    ap.add_argument('--which', action='store_true', help='print the cuobjdump used (exit 1: none); exit')
    ap.add_argument('--write-sass', metavar='OUT', default=None,
                    help="write the one FILE's SASS (cuobjdump -sass, --arch only) to OUT; exit")
    a = ap.parse_args()
    if a.tools_dir:
        print(TOOLS_DIR)
        return 0
    if a.which:
        tool = find_cuobjdump()
        print(tool or '')
        return 0 if tool else 1
    if not a.files:
        ap.error('no files')
    if a.write_sass:
        if len(a.files) != 1:
            ap.error('--write-sass takes one FILE')
        text = sass_text(a.files[0], a.arch)
        with open(a.write_sass + '.tmp', 'w') as f:
            f.write(text)
        os.replace(a.write_sass + '.tmp', a.write_sass)
        return 0
    pick, skip = re.compile(a.kernel), re.compile(a.ignore) if a.ignore else None
    worst, failed, divided, generic_loaders, seen = {}, [], [], [], 0
    for path in a.files:
        for name, insns in parse(sass_text(path, a.arch)).items():
            if not pick.search(name) or (skip is not None and skip.search(name)):
                continue
            seen += 1
            best = max(((depth(b), b) for b in (regions if a.across_branches else blocks)(insns)),
                       key=lambda x: x[0][0], default=None)
            if best is None:
                continue
            if a.loop_sizes:
                for body in loops(insns):
                    ops = [op for _, op, _ in body]
                    mma = sum(op.startswith(('HMMA', 'HGMMA')) for op in ops)
                    copies = sum(op.startswith('LDGSTS') for op in ops)
                    divisions = sum(op.startswith('I2F') and '.RP' in op for op in ops)
                    generic = sum(op.split('.')[0] == 'LD' for op in ops)
                    if mma or copies:
                        print(f'loop {body[0][0]:#06x}..{body[-1][0]:#06x}: {len(body)} insns, {mma} MMA, {copies} LDGSTS, '
                              f'{divisions} divisions, {generic} generic loads  {name}')
                        if a.max_loop_divisions is not None and divisions > a.max_loop_divisions:
                            divided.append(name)
                        if a.max_loop_generic_loads is not None and generic > a.max_loop_generic_loads:
                            generic_loaders.append(name)
            if a.loops:
                for body in loops(insns):
                    d, loads, stores = depth(body)
                    if d >= 1 and loads <= d:
                        print(f'loop {body[0][0]:#06x}..{body[-1][0]:#06x}: {loads} loads, {stores} stores, {d} trips per '
                              f'iteration  {name}')
            (d, loads, stores), b = best
            if name not in worst or d > worst[name][0]:
                worst[name] = (d, loads, stores, b[0][0], b[-1][0])
    for name, (d, loads, stores, lo, hi) in sorted(worst.items(), key=lambda kv: -kv[1][0]):
        if d >= a.min:
            print(f'{d:4d} round trips  {loads:4d} loads {stores:4d} stores  [{lo:#06x}..{hi:#06x}]  {name}')
        if a.max_allowed is not None and d > a.max_allowed:
            failed.append(name)
    print(f'sass_chains: {seen} kernels matching {a.kernel!r}, {sum(1 for v in worst.values() if v[0] >= a.min)} '
          f'with a stretch of >= {a.min} dependent global round trips')
    if seen == 0:
        print('sass_chains: no kernel matched', file=sys.stderr)
        return 1
    if failed:
        print(f'sass_chains: {len(failed)} kernels deeper than {a.max_allowed}', file=sys.stderr)
        return 1
    if divided:
        print(f'sass_chains: {len(set(divided))} kernels with more than {a.max_loop_divisions} integer divisions in a '
              f'loop with products or copies', file=sys.stderr)
        return 1
    if generic_loaders:
        print(f'sass_chains: {len(set(generic_loaders))} kernels with more than {a.max_loop_generic_loads} generic '
              f'loads in a loop with products or copies', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
