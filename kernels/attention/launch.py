"""A cached launch of a Triton kernel whose arguments mostly repeat (the decode steps of one sequence).

``JITFunction.run`` (Triton 3.6) binds every argument (~40-65 for the decode kernels), specializes each one
(``native_specialize_impl``: a tensor's dtype and 16-byte alignment, an integer's range, == 1 and % 16), builds a
cache key from them and the options, checks the kernel's global constants, reads knobs and only then calls the
compiled kernel's launcher: on a host-bound decode step that is most of a layer's host cost. A ``Launch`` holds
one launch's complete keyword arguments and names the few that change between calls (``dynamic``: the step's
tensors, strides, key count); a call swaps those in, specializes only them (``spec_key``: integers with Triton's
own ``native_specialize_impl``, tensors by dtype and 16-byte alignment -- at least as fine as Triton's key for
them) and, when an earlier call with the same key went through ``JITFunction.run``, calls that compiled kernel's
launcher directly (the arguments Triton's binder would pass, in parameter order). Everything else is fixed for the life of a ``Launch``, so it specializes
as it did then. Anything else Triton's ``run`` would do differently -- knobs.runtime.debug or
knobs.compilation.instrumentation_mode changed (they are in the key), pre-run hooks, launch enter / exit hooks
(profilers), a stages-inspection hook, a global constant changed -- makes the call go through ``run`` (which then
compiles, raises or calls the hooks as usual).

``DIRECT`` is True only with the Triton versions this was written against and checked on (3.6, the device's;
``SUPPORTED``), on a real GPU (off under TRITON_INTERPRET=1), unless PROBE_DIRECT_LAUNCH=0; ``DIRECT_OFF`` says
why it is off. Off, a ``Launch`` calls ``JITFunction.run`` with its keyword arguments (the same launch). A
direct launch that raises (an unexpected launcher interface) turns the direct path off for the process with one
warning, and the call is made through ``run``.
"""
from __future__ import annotations

import operator
import os
import warnings
from typing import Optional

from torch import Tensor

from .jit_utils import INTERPRET

SUPPORTED = ("3.6.",)        # Triton versions whose JITFunction.run / CompiledKernel this mirrors


def _probe() -> tuple:
    """(native_specialize_impl, knobs, driver) when the direct path can be used, else (None, reason)."""
    if os.environ.get("PROBE_DIRECT_LAUNCH") == "0":
        return None, "PROBE_DIRECT_LAUNCH=0"
    if INTERPRET:
        return None, "TRITON_INTERPRET=1"
    try:
        import triton
        from triton import knobs
        from triton._C.libtriton import native_specialize_impl
        from triton.runtime import JITFunction, driver
    except Exception as err:  # noqa: BLE001 - any import problem: the normal launch
        return None, f"Triton internals not found ({type(err).__name__}: {err})"
    if not triton.__version__.startswith(SUPPORTED):
        return None, f"Triton {triton.__version__} (checked on {', '.join(v + 'x' for v in SUPPORTED)})"
    needed = [(JITFunction, "run"), (JITFunction, "create_binder"), (knobs, "runtime"), (knobs, "compilation")]
    missing = [f"{getattr(o, '__name__', o)}.{a}" for o, a in needed if not hasattr(o, a)]
    if missing:
        return None, f"Triton lacks {', '.join(missing)}"
    return (native_specialize_impl, knobs, driver), None


_API, DIRECT_OFF = _probe()
DIRECT = _API is not None
_MISSING = object()


def turn_off(reason: str) -> None:
    """Switch the direct path off for this process (tests; an unexpected launcher error)."""
    global DIRECT, DIRECT_OFF
    DIRECT, DIRECT_OFF = False, reason


class Launch:
    """One kernel launch whose arguments repeat except ``dynamic`` ones.

    Args:
        fn: the JITFunction (not a heuristics wrapper: ``kw`` holds the heuristics' values).
        kw: every keyword argument of ``fn.run`` (parameters and options such as num_warps), kept and updated.
        dynamic: the names whose values change between calls (passed to ``__call__`` in this order).
    """

    __slots__ = ("fn", "kw", "dynamic", "_blank", "_args", "_flags", "_kernels", "_direct", "_backend", "_guards")

    def __init__(self, fn, kw: dict, dynamic: tuple):
        self.fn, self.kw, self.dynamic = fn, kw, tuple(dynamic)
        self._blank = dict.fromkeys(self.dynamic)          # between calls kw holds none of a call's tensors
        self._kernels: dict = {}
        self._backend = None
        self._guards: tuple = ()
        self._direct = _API is not None and self._plain_params()     # DIRECT itself is read at each call
        if self._direct:
            names = [p.name for p in fn.params]
            self._args = operator.itemgetter(*names)                          # kw -> args in parameter order
            by_name = {p.name: p for p in fn.params}
            self._flags = tuple((by_name[n].is_const, not by_name[n].do_not_specialize,
                                 not by_name[n].do_not_specialize_on_alignment) for n in self.dynamic)

    def _plain_params(self) -> bool:
        """True when every parameter is a keyword of kw, the dynamic ones are not constexpr, and none is
        annotated (Triton's binder treats annotated parameters differently; these kernels have none)."""
        params = getattr(self.fn, "params", None)
        if not params or not all(hasattr(self.fn, a) for a in ("device_caches", "used_global_vals", "pre_run_hooks")):
            return False
        by_name = {p.name: p for p in params}
        return (all(p.name in self.kw for p in params) and all(n in by_name for n in self.dynamic)
                and not any(by_name[n].is_constexpr for n in self.dynamic)
                and not any(p.annotation_type for p in params if not p.is_constexpr))

    def __call__(self, grid: tuple, values: tuple):
        """Launch on grid with the dynamic arguments set to values (in ``dynamic`` order); returns what
        ``JITFunction.run`` returns (the compiled kernel)."""
        kw = self.kw
        kw.update(zip(self.dynamic, values))
        if not (self._direct and DIRECT):
            try:
                return self.fn.run(grid=grid, warmup=False, **kw)
            finally:
                kw.update(self._blank)
        try:
            return self._direct_launch(grid, values, kw)
        finally:
            kw.update(self._blank)

    def _direct_launch(self, grid: tuple, values: tuple, kw: dict):
        _, knobs, driver = _API
        rt = knobs.runtime
        # a launch hook is set: a HookChain with calls, or anything else but None (an older plain hook)
        enter, exit_ = rt.launch_enter_hook, rt.launch_exit_hook
        if (self.fn.pre_run_hooks or (enter is not None and getattr(enter, "calls", True))
                or (exit_ is not None and getattr(exit_, "calls", True))
                or getattr(rt, "add_stages_inspection_hook", None) is not None):
            return self.fn.run(grid=grid, warmup=False, **kw)
        device = driver.active.get_current_device()
        hit = None
        if self._backend is not None:           # (set by the first launch, through run)
            hit = self._kernels.get(self._key(device, values))
        if hit is None or not self._globals_unchanged():
            kernel = self.fn.run(grid=grid, warmup=False, **kw)
            self._remember(device, kernel, values)
            return kernel
        kernel, call, head = hit
        try:
            call(grid[0], grid[1] if len(grid) > 1 else 1, grid[2] if len(grid) > 2 else 1,
                 driver.active.get_current_stream(device), *head, *self._args(kw))
        except Exception as err:  # noqa: BLE001 - an interface this was not written for: the normal launch
            turn_off(f"direct launch failed ({type(err).__name__}: {str(err)[:200]})")
            warnings.warn(f"probe attention: Triton's direct kernel launch is off ({DIRECT_OFF}); using "
                          "JITFunction.run", RuntimeWarning, stacklevel=2)
            return self.fn.run(grid=grid, warmup=False, **kw)
        return kernel

    def _globals_unchanged(self) -> bool:
        """JITFunction.run's check that the global constants the kernel read at compile time are unchanged, made
        without Python-level ``==`` (``tl.constexpr.__eq__`` / ``__bool__``: ~6 µs a launch): each name still holds
        the object it held after the last ``run`` passed that check and, for a ``tl.constexpr`` around a scalar, the
        same value (``guard``). Any difference sends the call through ``run``, which checks for itself."""
        return guards_hold(self._guards)

    def _remember(self, device, kernel, values) -> None:
        """Keep the kernel run() launched, under the key of the arguments it launched with."""
        if kernel is None or not all(hasattr(kernel, a) for a in ("run", "function", "packed_metadata")):
            return
        if self._backend is None:
            be = self.fn.device_caches[device][3]                               # the backend run()'s binder used
            from triton.backends.compiler import BaseBackend
            if getattr(type(be), "get_tensor_specialization", None) is not BaseBackend.get_tensor_specialization:
                self._direct = False         # a backend with its own tensor specialization (AMD): run() every time
                return
            self._backend = be
        self._guards = tuple(guard(g, name, val) for (name, _), (val, g) in self.fn.used_global_vals.items())
        self._kernels[self._key(device, values)] = (kernel,) + _launcher(kernel)

    def _key(self, device, values: tuple) -> tuple:
        """The launch's key: device, the knobs run() reads into its options, and per dynamic argument what Triton
        specializes on -- a tensor by (dtype, 16-byte aligned data pointer), at least as fine as Triton's own
        (type from dtype and const-ness, "D" for alignment; ``native_specialize_impl`` takes ~2 µs per tensor),
        anything else by ``native_specialize_impl`` itself (an int's range, == 1 and % 16; None)."""
        nsi, knobs, _ = _API
        return (device, knobs.runtime.debug, knobs.compilation.instrumentation_mode,
                *spec_key(values, self._flags, nsi, self._backend))


class _Full:
    """A global whose value is compared whole (anything but a scalar or a tl.constexpr around one)."""

    __slots__ = ("ref",)

    def __init__(self, ref):
        self.ref = ref


_SCALARS = (bool, int, float, str, type(None))


def guard(g: dict, name: str, val) -> tuple:
    """(globals dict, name, the object it holds now, what to compare besides identity): nothing for an immutable
    scalar, the wrapped scalar of a ``tl.constexpr`` (its value could be reassigned in place), else ``_Full(val)``
    (a whole ``==``). Built right after ``run`` accepted the globals, so they equal ``val`` (Triton's compile-time
    copy)."""
    obj = g.get(name, _MISSING)
    if isinstance(obj, _SCALARS):
        return g, name, obj, _MISSING
    if isinstance(getattr(obj, "value", None), _SCALARS) and type(obj).__name__ == "constexpr":
        return g, name, obj, getattr(val, "value", val)
    return g, name, obj, _Full(val)


_INT_KEYS: dict = {}        # (int, flags, backend) -> nsi's key: strides repeat across steps and layers
_INT_KEYS_MAX = 4096


def spec_key(values: tuple, flags: tuple, nsi, backend) -> list:
    """Per value what Triton specializes it on: a tensor by (dtype, 16-byte aligned data pointer) -- Triton's
    base tensor specialization (type from dtype and const-ness, "D" when aligned) or finer -- None as None (Triton:
    a constexpr None) and anything else by Triton's own ``nsi(backend, value, is_const, specialize, align)``, which
    for a Python int is remembered per (value, flags, backend) (a pure function of them)."""
    out = []
    for v, f in zip(values, flags):
        if v is None:
            out.append(None)
        elif v.__class__ is int:
            k = _INT_KEYS.get((v, f, backend))
            if k is None:
                if len(_INT_KEYS) >= _INT_KEYS_MAX:
                    _INT_KEYS.clear()
                k = _INT_KEYS[(v, f, backend)] = nsi(backend, v, *f)
            out.append(k)
        elif isinstance(v, Tensor):
            out.append((v.dtype, not v.data_ptr() % 16))
        else:
            out.append(nsi(backend, v, *f))
    return out


def guards_hold(guards: tuple) -> bool:
    """True when every ``guard`` still holds: the same object under its name and, where kept, the same value."""
    for g, name, obj, value in guards:
        if g.get(name, _MISSING) is not obj:
            return False
        if value is not _MISSING and (obj.value if value.__class__ is not _Full else obj) != (
                value if value.__class__ is not _Full else value.ref):
            return False
    return True


def _launcher(kernel) -> tuple:
    """(callable, the arguments between the stream and the kernel's own) that launch ``kernel`` as run() does:
    ``kernel.run(gx, gy, gz, stream, function, packed_metadata, launch_metadata, enter_hook, exit_hook, *args)``
    with no launch metadata and no hooks (the caller checked the hook chains are empty). A CUDA launcher that
    needs no scratch memory is called one level down: its ``__call__`` only adds (cooperative grid, PDL, no
    global scratch, no profile scratch) before calling ``launch``."""
    runner = kernel.run
    tail = (kernel.packed_metadata, None, None, None)
    if (getattr(runner, "global_scratch_size", None) == 0 and getattr(runner, "profile_scratch_size", None) == 0
            and hasattr(runner, "launch") and hasattr(runner, "launch_cooperative_grid")
            and hasattr(runner, "launch_pdl")):
        return runner.launch, (kernel.function, runner.launch_cooperative_grid, runner.launch_pdl, None, None) + tail
    return runner, (kernel.function,) + tail


def launch_off_reason() -> Optional[str]:
    """Why kernels are launched through JITFunction.run (None: the direct launch is on)."""
    return None if DIRECT else DIRECT_OFF
