"""DECISION conditions: a small parser and evaluator, no ``eval()``.

Grammar (the subset the local engine supports; anything else is refused when
the definition is uploaded, so an unsupported condition never fails late)::

    expr       := or
    or         := and ("||" and)*
    and        := not ("&&" not)*
    not        := "!" not | comparison
    comparison := operand (("==" | "!=" | "<" | "<=" | ">" | ">=") operand)?
    operand    := "#" NAME | STRING | NUMBER | "true" | "false" | "null"
                | "(" expr ")"

Semantics, chosen to be strict rather than clever: ``==``/``!=`` never
convert between types (``1 == '1'`` is false; ints and floats compare as
numbers); ``<``-style operators need two numbers or two strings; ``&&``,
``||`` and ``!`` need booleans and short-circuit; a condition must produce a
boolean. A ``#name`` that is not a variable is an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ExpressionError(Exception):
    """A condition that cannot be parsed (at upload) or evaluated (at run time)."""


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Variable:
    name: str


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


Node = Literal | Variable | Not | Binary

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<var>\#[A-Za-z_][A-Za-z0-9_]*)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>!()])
  | (?P<quote>['"])
    """,
    re.VERBOSE,
)
_COMPARISONS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_WORDS = {"true": True, "false": False, "null": None}


@dataclass(frozen=True)
class _Token:
    kind: str  # "num", "str", "var", "word", "op", "end"
    text: str
    value: Any
    pos: int


def _read_string(source: str, start: int) -> tuple[str, int]:
    """Read a quoted string starting at ``start``; a backslash escapes the next char."""
    quote = source[start]
    out: list[str] = []
    i = start + 1
    while i < len(source):
        ch = source[i]
        if ch == "\\" and i + 1 < len(source):
            out.append(source[i + 1])
            i += 2
            continue
        if ch == quote:
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise ExpressionError(f"unterminated string starting at position {start}")


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise ExpressionError(f"unexpected character {source[pos]!r} at position {pos}")
        kind = match.lastgroup
        text = match.group()
        if kind == "quote":
            value, end = _read_string(source, pos)
            tokens.append(_Token("str", source[pos:end], value, pos))
            pos = end
            continue
        if kind == "number":
            number: float | int = float(text) if any(c in text for c in ".eE") else int(text)
            tokens.append(_Token("num", text, number, pos))
        elif kind == "var":
            tokens.append(_Token("var", text, text[1:], pos))
        elif kind == "word":
            if text not in _WORDS:
                raise ExpressionError(
                    f"unsupported word {text!r} at position {pos} (variables are written #{text})"
                )
            tokens.append(_Token("word", text, _WORDS[text], pos))
        elif kind == "op":
            tokens.append(_Token("op", text, text, pos))
        pos = match.end()
    tokens.append(_Token("end", "", None, len(source)))
    return tokens


class _Parser:
    def __init__(self, source: str) -> None:
        self._tokens = _tokenize(source)
        self._i = 0

    def _peek(self) -> _Token:
        return self._tokens[self._i]

    def _take(self) -> _Token:
        token = self._tokens[self._i]
        self._i += 1
        return token

    def _accept(self, op: str) -> bool:
        token = self._peek()
        if token.kind == "op" and token.text == op:
            self._i += 1
            return True
        return False

    def parse(self) -> Node:
        node = self._or()
        token = self._peek()
        if token.kind != "end":
            raise ExpressionError(f"unexpected {token.text!r} at position {token.pos}")
        return node

    def _or(self) -> Node:
        node = self._and()
        while self._accept("||"):
            node = Binary("||", node, self._and())
        return node

    def _and(self) -> Node:
        node = self._not()
        while self._accept("&&"):
            node = Binary("&&", node, self._not())
        return node

    def _not(self) -> Node:
        if self._accept("!"):
            return Not(self._not())
        return self._comparison()

    def _comparison(self) -> Node:
        left = self._operand()
        token = self._peek()
        if token.kind == "op" and token.text in _COMPARISONS:
            self._i += 1
            right = self._operand()
            after = self._peek()
            if after.kind == "op" and after.text in _COMPARISONS:
                raise ExpressionError(
                    f"chained comparison at position {after.pos}: use parentheses and && instead"
                )
            return Binary(token.text, left, right)
        return left

    def _operand(self) -> Node:
        token = self._take()
        if token.kind in ("num", "str", "word"):
            return Literal(token.value)
        if token.kind == "var":
            return Variable(str(token.value))
        if token.kind == "op" and token.text == "(":
            node = self._or()
            if not self._accept(")"):
                found = self._peek()
                raise ExpressionError(f"expected ')' at position {found.pos}")
            return node
        shown = token.text or "end of expression"
        raise ExpressionError(f"expected a value at position {token.pos}, found {shown!r}")


def parse(source: str) -> Node:
    """Parse a condition; raises ``ExpressionError`` with the position of the problem."""
    if not isinstance(source, str) or not source.strip():
        raise ExpressionError("empty condition")
    return _Parser(source).parse()


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if _is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _equal(left: object, right: object) -> bool:
    if _is_number(left) and _is_number(right):
        return left == right
    if type(left) is not type(right):
        return False
    return left == right


def _order(op: str, left: Any, right: Any) -> bool:
    comparable = (_is_number(left) and _is_number(right)) or (
        isinstance(left, str) and isinstance(right, str)
    )
    if not comparable:
        raise ExpressionError(
            f"cannot compare {_type_name(left)} {op} {_type_name(right)}: "
            "ordering needs two numbers or two strings"
        )
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def _boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ExpressionError(f"{where} needs a boolean, got {_type_name(value)}")
    return value


def evaluate(node: Node, variables: Mapping[str, Any]) -> Any:
    """Evaluate a parsed expression against the instance's variables."""
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Variable):
        if node.name not in variables:
            raise ExpressionError(f"undefined variable #{node.name}")
        return variables[node.name]
    if isinstance(node, Not):
        return not _boolean(evaluate(node.operand, variables), "'!'")
    if node.op == "&&":
        if not _boolean(evaluate(node.left, variables), "'&&'"):
            return False
        return _boolean(evaluate(node.right, variables), "'&&'")
    if node.op == "||":
        if _boolean(evaluate(node.left, variables), "'||'"):
            return True
        return _boolean(evaluate(node.right, variables), "'||'")
    left = evaluate(node.left, variables)
    right = evaluate(node.right, variables)
    if node.op == "==":
        return _equal(left, right)
    if node.op == "!=":
        return not _equal(left, right)
    return _order(node.op, left, right)


def evaluate_condition(node: Node, variables: Mapping[str, Any]) -> bool:
    """Evaluate a DECISION condition; it must produce a boolean."""
    return _boolean(evaluate(node, variables), "a condition")


__all__ = [
    "Binary",
    "ExpressionError",
    "Literal",
    "Node",
    "Not",
    "Variable",
    "evaluate",
    "evaluate_condition",
    "parse",
]
