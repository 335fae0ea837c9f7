"""A faster Triton interpreter for the tests: triton.language patched once per launch.

Under TRITON_INTERPRET=1 each launch (`GridExecutor.__call__`) points the builtins of the
`triton.language` modules that the kernel's globals hold (`triton.language`, `.core`) at the numpy
interpreter for its duration, and then every call of a `@triton.jit` function from inside the
kernel (`InterpretedFunction.__call__`: the project's helpers, and `tl.zeros` and the like) does the
same for the modules in its own globals: three to five `inspect.getmembers` scans per call, about a third of
the HSTU kernels' interpreted time (their tiles call a dozen helpers each). Within a launch nothing
restores those patches, so once a module is patched, patching it again is a no-op: this skips
those repeats and patches exactly as before otherwise. Written for the pinned triton
(pyproject.toml); `install` refuses a version whose interpreter lacks the functions it wraps.
"""

from __future__ import annotations

import functools
from typing import Any

# The language modules patched so far in the running launch (None outside a launch).
_patched_in_launch: set[int] | None = None


def _language_modules(fn: Any, languages: tuple[Any, ...]) -> frozenset[int]:
    return frozenset(id(v) for v in fn.__globals__.values() if any(v is lang for lang in languages))


def install() -> None:
    """Patch triton's interpreter (idempotent)."""
    import triton.language as tl
    from triton.runtime import interpreter

    if getattr(interpreter, "_gr_scaling_patch_once", False):
        return
    patch_lang = getattr(interpreter, "_patch_lang", None)
    executor = getattr(interpreter, "GridExecutor", None)
    scope_type = getattr(interpreter, "_LangPatchScope", None)
    if patch_lang is None or executor is None or scope_type is None:
        raise RuntimeError("tests/triton_interpreter.py: this triton's interpreter has no _patch_lang, "
                           "GridExecutor or _LangPatchScope; update or remove the patch")
    launch = executor.__call__
    languages = (tl, tl.core)
    modules_of: dict[Any, frozenset[int]] = {}

    @functools.wraps(patch_lang)
    def patch_lang_once(fn: Any) -> Any:
        if fn not in modules_of:
            modules_of[fn] = _language_modules(fn, languages)
        wanted = modules_of[fn]
        # A function that sees no triton.language at all still goes to Triton (which refuses it).
        if wanted and _patched_in_launch is not None and wanted <= _patched_in_launch:
            return scope_type()  # already patched in this launch, and restored at its end
        scope = patch_lang(fn)
        if _patched_in_launch is not None:
            _patched_in_launch.update(wanted)
        return scope

    @functools.wraps(launch)
    def launch_patching_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        global _patched_in_launch
        outer = _patched_in_launch
        _patched_in_launch = set()
        try:
            return launch(self, *args, **kwargs)
        finally:
            # A launch inside a launch restored its patches at its end: the outer one patches anew.
            _patched_in_launch = None if outer is None else set()

    interpreter._patch_lang = patch_lang_once
    executor.__call__ = launch_patching_once
    interpreter._gr_scaling_patch_once = True
