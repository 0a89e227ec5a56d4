"""``kernels.attention.launch``: the cached direct launch of the decode kernels. Its key must separate every
argument value Triton specializes differently (checked on the CPU with Triton's own specializer); on a GPU
with the supported Triton the direct launch must give what ``JITFunction.run`` gives, compile anew (through
``run``) when a dynamic argument's specialization changes, and step aside for launch hooks."""
from __future__ import annotations

import pytest
import torch

from kernels.attention import AttentionEdits

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
gpu = pytest.mark.skipif(not CUDA, reason="the direct launch needs a GPU (off under TRITON_INTERPRET=1)")


def _launch():
    from kernels.attention import launch  # after conftest set TRITON_INTERPRET
    return launch


def test_direct_launch_off_in_the_interpreter_or_on_only_with_a_checked_triton():
    import triton
    launch = _launch()
    if not CUDA:
        assert not launch.DIRECT and "TRITON_INTERPRET" in launch.launch_off_reason()
    else:
        assert launch.DIRECT == triton.__version__.startswith(launch.SUPPORTED), launch.DIRECT_OFF


def test_the_key_separates_what_triton_specializes():
    """The dynamic arguments of the decode launches are tensors and integers. Triton's specializer (what the key
    is made of) gives a pointer 16 bytes off alignment, an integer % 16 != 0, an integer == 1 and one past int32
    other values, and the same value to arguments Triton compiles alike -- so two calls share a key exactly when
    Triton's run would pick the same compiled kernel for them."""
    from triton._C.libtriton import native_specialize_impl as spec
    from triton.backends.compiler import BaseBackend

    def key(x):
        return spec(BaseBackend, x, False, True, True)
    t = torch.zeros(64, dtype=torch.bfloat16)
    assert key(t) == key(t[8:]) != key(t[1:])                         # 16-byte aligned vs not
    assert key(t) != key(t.float())                                   # dtype
    assert key(32) == key(4096) != key(33) == key(4097)               # % 16
    assert key(1) != key(17) and key(1) != key(16)                    # == 1 (a constexpr)
    assert key(2 ** 31 + 16) != key(16)                               # int64
    launch = _launch()
    on = (False, True, True)
    ours = lambda *vals: launch.spec_key(vals, (on,) * len(vals), spec, BaseBackend)  # noqa: E731
    cases = [t, t[8:], t[1:], t.float(), t.float()[4:], t.float()[1:], 32, 4096, 33, 4097, 1, 17, 16, 2 ** 31 + 16, None]
    for a in cases:                              # the launch key is at least as fine as Triton's specialization
        for b in cases:
            if key(a) != key(b):
                assert ours(a) != ours(b), (a, b)
    assert ours(t) == ours(t[8:]) and ours(t[8:], 32) == ours(t, 4096)          # and not finer than needed here
    from kernels.attention import fused
    assert {"q", "k", "v", "S", "chunk", "s_kb", "key_start"} <= set(fused._FWD_DYNAMIC)
    assert {"o", "lse", "S", "s_ob"} <= set(fused._COMBINE_DYNAMIC)


@pytest.mark.parametrize("fused_", [True, False])
@pytest.mark.parametrize("kind", ["none", "act", "var"])
def test_decode_launches_name_every_kernel_parameter(kind, fused_):
    """What the direct launch needs of the decode launches (``Launch._plain_params``, checked here from the kernels'
    Python signatures, as the interpreter has no ``JITFunction.params``): the keyword arguments name every
    parameter of the kernel, and every dynamic name is a non-constexpr parameter."""
    import inspect

    import triton.language as tl

    from kernels.attention import fused
    B, H, KV, D, S = 2, 4, 2, 32, 70
    q, k, v = torch.randn(B, H, 1, D), torch.randn(B, KV, S, D), torch.randn(B, KV, S, D)
    ed = {"none": None, "act": AttentionEdits(col_idx=torch.tensor([[[0, 3]] * H] * B),
                                              col_scale=torch.full((B, H), 0.4)),
          "var": AttentionEdits(redist_idx=torch.tensor([[0], [1]]), redist_span=torch.tensor([[0, 40], [1, 50]]),
                                redist_from=torch.zeros(B, dtype=torch.long), redist_keep=torch.full((H,), 0.5))}[kind]
    prepared = fused._prepared_edits(ed, B, H, q.device)
    out = torch.empty(B, 1, H, D)
    launches = fused._decode(q.to(DEV), k.to(DEV), v.to(DEV), out.to(DEV), None, torch.zeros(B, dtype=torch.long,
                             device=DEV), prepared, dict(scale=0.1, softcap=0.0, window=0), {"fused": fused_})
    assert len(launches) == (1 if fused_ else 2)
    for (fn, _, kw), dynamic in zip(launches, (fused._FWD_DYNAMIC, fused._COMBINE_DYNAMIC)):
        py = fn
        while not inspect.isfunction(py):
            py = py.fn
        params = inspect.signature(py).parameters
        assert set(params) <= set(kw), set(params) - set(kw)
        assert set(dynamic) <= set(params)
        assert not [n for n in dynamic if params[n].annotation in (tl.constexpr, "tl.constexpr")]


def _act_step(S: int, B: int = 1, H: int = 8, KV: int = 2, D: int = 64):
    g = torch.Generator().manual_seed(S)
    q = torch.randn(B, H, 1, D, generator=g).to(torch.bfloat16).to(DEV)
    k, v = (torch.randn(B, KV, S + 8, D, generator=g).to(torch.bfloat16).to(DEV) for _ in range(2))
    ed = AttentionEdits(col_idx=torch.tensor([[[0, 3, 9]] * H] * B, device=DEV),
                        col_scale=torch.full((B, H), 0.4, device=DEV))
    return q, k, v, dict(scale=D ** -0.5, edits=ed)


@gpu
def test_direct_launch_equals_run_and_respecializes(monkeypatch):
    """Decode steps through the cached launches (direct where on) equal ``plan`` + ``JITFunction.run`` bit for
    bit; ``run`` is called exactly when a step brings a split count not seen before (new launches) or a new
    specialization of a dynamic argument (a key count with another remainder mod 16, q off 16-byte alignment),
    never for the steps between."""
    launch = _launch()
    if not launch.DIRECT:
        pytest.skip(f"direct launch off: {launch.DIRECT_OFF}")
    from kernels.attention import fused
    q, k, v, kw = _act_step(4096)
    qbuf = torch.empty(q.numel() + 8, dtype=q.dtype, device=DEV)
    q_off = qbuf[1:1 + q.numel()].view(q.shape).copy_(q)                      # 2 bytes off alignment
    fn = fused.decode_fwd_kernel.fn
    runs, real = [], type(fn).run

    def counted(self, *a, **k_):
        if self is fn:                                                       # the split kernel's launches
            runs.append(k_["S"])
        return real(self, *a, **k_)
    fused._DECODE_PLANS.clear()
    seen, expected = set(), []
    for S, qq in [(4032, q), (4048, q), (4064, q), (4033, q), (4049, q), (4064, q_off), (4080, q_off), (4096, q)]:
        ks, vs = k[:, :, :S], v[:, :, :S]
        with monkeypatch.context() as m:
            m.setattr(type(fn), "run", counted)
            got = fused._decode_step(qq, ks, vs, **kw)
        sh = next(iter(fused._DECODE_PLANS.values())).shape
        spec = (sh.split(S)[0], S % 16 == 0, qq.data_ptr() % 16 == 0)
        if spec not in seen:
            seen.add(spec)
            expected.append(S)
        want, launches = fused.plan(qq, ks, vs, **kw)
        fused._run(launches)
        assert torch.equal(got.out, want.out), S
    assert runs == expected, (runs, expected)
    assert len(expected) < 8                                                 # some steps were direct


@gpu
def test_launch_hooks_take_the_normal_launch(monkeypatch):
    """With a launch-enter hook (a profiler) the cached launch calls ``JITFunction.run``, which calls the hook."""
    launch = _launch()
    if not launch.DIRECT:
        pytest.skip(f"direct launch off: {launch.DIRECT_OFF}")
    from triton import knobs

    from kernels.attention import fused
    q, k, v, kw = _act_step(1024)
    fused._decode_step(q, k[:, :, :1024], v[:, :, :1024], **kw)               # builds the launches
    seen = []
    hook = lambda meta: seen.append(meta.get()["name"])  # noqa: E731 - a LazyDict
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        fused._decode_step(q, k[:, :, :1024], v[:, :, :1024], **kw)
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert seen == ["decode_fwd_kernel"], seen                                # one launch: the combine is inside


def test_global_guards_catch_what_triton_checks():
    """The direct launch's check of the kernel's global constants (identity, plus the value of a constexpr around a
    scalar, plus a whole comparison for anything else) says "changed" whenever JITFunction.run's ``!=`` check
    would -- and also for an equal value in a new object (then run() decides)."""
    import copy

    import triton.language as tl
    launch = _launch()
    g = {"A": tl.constexpr(1.5), "B": 3, "C": [1, 2]}
    guards = lambda: tuple(launch.guard(g, n, copy.deepcopy(g[n])) for n in g)  # noqa: E731 - as after a run
    gs = guards()
    assert launch.guards_hold(gs)
    g["A"].value = 2.0                                    # a constexpr changed in place
    assert not launch.guards_hold(gs)
    g["A"] = tl.constexpr(1.5)                            # an equal value, a new object: conservative
    assert not launch.guards_hold(gs)
    gs = guards()
    g["B"] = 4
    assert not launch.guards_hold(gs)
    g["B"] = 3
    gs = guards()
    g["C"].append(3)                                      # a mutable global changed in place
    assert not launch.guards_hold(gs)
    del g["C"]
    assert not launch.guards_hold(gs)
