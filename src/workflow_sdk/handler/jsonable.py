"""Makes a handler's variables JSON-ready, or says which key is not.

``outcome.check_result`` first tries ``json.dumps`` on the variables as they
are (the common case: plain dicts, no copy, no walk). Only when that fails
does it call ``make_json_ready``, which walks the variables once and:

- converts numpy values where no information is lost: ``np.bool_`` to
  ``bool``, ``np.integer`` to ``int``, ``np.floating`` to ``float`` (a
  ``longdouble`` only when its value fits a float exactly), arrays of those
  (and of strings, and of objects, element by element) to nested lists;
- refuses everything else with the path of the offending value:
  ``result key 'scores[3]' is a numpy.float32 NaN: not JSON-serialisable
  (...)``, ``result key 'model': object of type Booster is not
  JSON-serialisable``. NaN and Infinity are refused too (plain floats as
  well as numpy's): the engine's JSON decoder rejects them, and turning them
  into ``null`` or a string would change the value.

numpy is never imported here: its types are looked up in ``sys.modules``,
so a process that has not loaded numpy has no numpy values to convert and
pays nothing. Complex numbers, datetimes, bytes, structured arrays and
anything else without a lossless JSON form are refused, not guessed at.
Tuples become lists (as ``json`` writes them) and dict subclasses plain dicts.
"""

from __future__ import annotations

import math
import re
import sys
from types import ModuleType
from typing import Any

#: dtype kinds whose ``tolist()`` gives exact Python values: bool, int, uint, str.
_EXACT_KINDS = frozenset("biuU")
_SIMPLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
NOT_JSON = "not JSON-serialisable"


class _RefusedError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _float_name(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _short(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not break reporting
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= 80 else text[:80] + "..."


class _Walker:
    """One walk over one result; ``path`` is the stack of keys and indices down to here."""

    def __init__(self, numpy: ModuleType | None) -> None:
        self.np: Any = numpy
        self.path: list[str] = []
        self.active: set[int] = set()

    # -- messages --

    def where(self) -> str:
        return f"result key '{''.join(self.path)}'" if self.path else "result"

    def _type_name(self, value: object) -> str:
        if self.np is not None and isinstance(value, (self.np.generic, self.np.ndarray)):
            return f"numpy.{type(value).__name__}"
        return type(value).__name__

    def refuse_object(self, value: object) -> _RefusedError:
        return _RefusedError(
            f"{self.where()}: object of type {self._type_name(value)} is {NOT_JSON}"
        )

    def refuse_float(self, value: float, type_name: str) -> _RefusedError:
        return _RefusedError(
            f"{self.where()} is a {type_name} {_float_name(value)}: {NOT_JSON} "
            "(the engine's JSON rejects NaN and Infinity)"
        )

    # -- the walk --

    def push_key(self, key: object) -> None:
        if isinstance(key, str) and (not self.path or _SIMPLE_KEY.match(key)):
            self.path.append(f".{key}" if self.path else key)
        else:
            self.path.append(f"[{_short(key)}]")

    def value(self, value: Any) -> Any:
        # Exact types first: this runs once per value of the result.
        if value is None or isinstance(value, (str, bool, int)):
            return value
        if isinstance(value, float):  # np.float64 is a float subclass
            if math.isfinite(value):
                return float(value)
            raise self.refuse_float(value, self._type_name(value))
        if isinstance(value, dict):
            return self.mapping(value)
        if isinstance(value, (list, tuple)):
            return self.sequence(value)
        np = self.np
        if np is not None:
            if isinstance(value, np.generic):
                return self.scalar(value)
            if isinstance(value, np.ndarray):
                return self.array(value)
        raise self.refuse_object(value)

    def _enter(self, container: object) -> None:
        if id(container) in self.active:
            raise _RefusedError(
                f"{self.where()} refers back to itself: {NOT_JSON} (circular reference)"
            )
        self.active.add(id(container))

    def mapping(self, value: dict[Any, Any]) -> dict[Any, Any]:
        self._enter(value)
        out: dict[Any, Any] = {}
        for key, item in value.items():
            json_key = self.key(key)
            self.push_key(key)
            out[json_key] = self.value(item)
            self.path.pop()
        self.active.discard(id(value))
        return out

    def sequence(self, value: list[Any] | tuple[Any, ...]) -> list[Any]:
        self._enter(value)
        out = []
        for index, item in enumerate(value):
            self.path.append(f"[{index}]")
            out.append(self.value(item))
            self.path.pop()
        self.active.discard(id(value))
        return out

    def key(self, key: Any) -> Any:
        """A dict key as ``json`` accepts it (str, int, float, bool, None); numpy ones converted."""
        if key is None or isinstance(key, (str, bool, int)):
            return key
        np = self.np
        if isinstance(key, float):  # np.float64 too
            if math.isfinite(key):
                return float(key)
        elif np is not None and isinstance(key, (np.bool_, np.integer, np.floating)):
            try:
                return self.scalar(key)
            except _RefusedError:
                pass  # refused below, as a key
        raise _RefusedError(
            f"{self.where()} has a key {_short(key)} of type {self._type_name(key)}: {NOT_JSON} "
            "(object keys must be str, int, float, bool or None; NaN and Infinity are refused)"
        )

    def scalar(self, value: Any) -> Any:
        np = self.np
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            as_float = float(value)
            if not math.isfinite(as_float):
                if np.isfinite(value):  # a longdouble beyond float's range
                    raise _RefusedError(
                        f"{self.where()} is a {self._type_name(value)} out of float's range: "
                        f"{NOT_JSON} without loss"
                    )
                raise self.refuse_float(as_float, self._type_name(value))
            if value.dtype.itemsize > 8 and value != type(value)(as_float):
                raise _RefusedError(
                    f"{self.where()} is a {self._type_name(value)} {_short(value)} that a "
                    f"float cannot hold exactly: {NOT_JSON} without loss"
                )
            return as_float
        raise self.refuse_object(value)

    def array(self, value: Any) -> Any:
        np = self.np
        if value.ndim == 0:
            return self.value(value[()])
        kind = value.dtype.kind
        if kind in _EXACT_KINDS:
            return value.tolist()
        if kind == "f" and value.dtype.itemsize <= 8:
            finite = np.isfinite(value)
            if not finite.all():
                first = tuple(int(i) for i in np.argwhere(~finite)[0])
                self.path.extend(f"[{i}]" for i in first)
                raise self.refuse_float(float(value[first]), f"numpy.{value.dtype.name}")
            return value.tolist()
        if kind in {"O", "f"}:
            # Element by element: objects may be anything; a longdouble may not fit a float.
            return self.sequence(value.tolist())
        raise _RefusedError(f"{self.where()} is a numpy array of {value.dtype}: {NOT_JSON}")


def make_json_ready(variables: dict[Any, Any]) -> tuple[dict[Any, Any] | None, str]:
    """``(converted copy, "")``, or ``(None, reason naming the key path)``."""
    walker = _Walker(sys.modules.get("numpy"))
    try:
        return walker.mapping(variables), ""
    except _RefusedError as refusal:
        return None, refusal.message
    except RecursionError:
        return None, f"result is nested too deeply: {NOT_JSON}"


__all__ = ["NOT_JSON", "make_json_ready"]
