"""Filters on index columns, written as Python comparisons and never evaluated as Python.

    motion_score > 2 and duration_s >= 4
    width >= 1280 or not (aspect_ratio < 1)
    src_fps in (24, 25, 30) and 2 <= duration_s < 8
    caption is not None and codec == "h264"

The text is parsed with ``ast`` and only these forms are accepted: column names, numbers,
strings, True/False/None, tuples or lists of those (for ``in``), comparisons (``== != < <= >
>= in not in``, chains like ``2 <= duration_s < 8``), ``is None`` / ``is not None``, ``and``,
``or``, ``not`` and a leading minus. Anything else (a call, an attribute, a subscript, a
lambda, arithmetic) is refused with ``WhereError`` naming it. Names must be columns of the
clip schema that hold plain values, compared with values of their kind (text with text).
The result is a pyarrow compute expression; rows where the comparison meets a null (a clip
without a motion score) do not match. ``read_selection`` reads a folder's index through it.
"""

from __future__ import annotations

import ast
import difflib
import operator
import os

import pyarrow as pa
import pyarrow.compute as pc

from curate import layout, schema, shards


class ClipFolderError(ValueError):
    """A folder that cannot be read as a kvid folder, or a selection that cannot be made."""


class WhereError(ClipFolderError):
    """A `where` expression that cannot be used; the message says why, in one line."""


_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge}


def _comparable(t: pa.DataType) -> bool:
    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_string(t)
            or pa.types.is_boolean(t))


def columns() -> list[str]:
    """Index columns a `where` may name (plain values: numbers, text, booleans)."""
    return [f.name for f in schema.CLIP_SCHEMA if _comparable(f.type)]


class _Builder:
    def __init__(self, text: str, names: list[str]):
        self.text = text
        self.names = names

    def fail(self, node: ast.AST, why: str) -> WhereError:
        snippet = ast.get_source_segment(self.text, node) or type(node).__name__
        return WhereError(f"where {self.text!r}: {why}: {snippet}")

    def check_types(self, node: ast.AST, column_node: ast.AST, value) -> None:
        """A number against a text column (or text against a number) is a mistake: say so."""
        if not isinstance(column_node, ast.Name) or value is None:
            return
        t = schema.CLIP_SCHEMA.field(column_node.id).type
        values = value if isinstance(value, list) else [value]
        kind = "text" if pa.types.is_string(t) else "True/False" if pa.types.is_boolean(t) else "numbers"
        for v in values:
            ok = {"text": isinstance(v, str), "True/False": isinstance(v, bool)}.get(
                kind, isinstance(v, (int, float)) and not isinstance(v, bool))
            if v is not None and not ok:
                raise self.fail(node, f"{column_node.id} holds {kind}, compared with {v!r}")

    def column(self, node: ast.Name) -> pc.Expression:
        if node.id not in self.names:
            near = difflib.get_close_matches(node.id, self.names, n=1)
            hint = f"; did you mean {near[0]}?" if near else f"; columns: {', '.join(self.names)}"
            known = {f.name for f in schema.CLIP_SCHEMA}
            why = "holds no plain values (not comparable)" if node.id in known else "is not an index column"
            raise WhereError(f"where {self.text!r}: {node.id} {why}{hint}")
        return pc.field(node.id)

    def literal(self, node: ast.AST):
        if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (bool, int, float, str))):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = self.literal(node.operand)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return -value
        if isinstance(node, (ast.Tuple, ast.List)):
            return [self.literal(e) for e in node.elts]
        raise self.fail(node, self._what(node))

    def _what(self, node: ast.AST) -> str:
        if isinstance(node, ast.Call):
            return "function calls are not allowed"
        if isinstance(node, ast.Attribute):
            return "attributes are not allowed"
        if isinstance(node, ast.Subscript):
            return "subscripts are not allowed"
        if isinstance(node, ast.BinOp):
            return "arithmetic is not allowed (compare a column with a number)"
        return "not a column, a comparison or a constant"

    def operand(self, node: ast.AST):
        """A column expression, or a Python constant."""
        if isinstance(node, ast.Name):
            return self.column(node)
        return self.literal(node)

    def compare(self, node: ast.Compare) -> pc.Expression:
        parts = []
        left_node, left = node.left, self.operand(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            right = self.operand(right_node)
            self.check_types(node, left_node, right)
            self.check_types(node, right_node, left)
            parts.append(self._one(node, op, left, right))
            left_node, left = right_node, right
        out = parts[0]
        for p in parts[1:]:
            out = out & p
        return out

    def _one(self, node: ast.AST, op: ast.cmpop, left, right) -> pc.Expression:
        lcol, rcol = isinstance(left, pc.Expression), isinstance(right, pc.Expression)
        if not (lcol or rcol):
            raise self.fail(node, "a comparison needs a column on one side")
        if isinstance(op, (ast.Is, ast.IsNot)):
            if not lcol or right is not None:
                raise self.fail(node, "`is` only takes the form `column is None` / `column is not None`")
            return left.is_null() if isinstance(op, ast.Is) else left.is_valid()
        if isinstance(op, (ast.In, ast.NotIn)):
            if not lcol or not isinstance(right, list):
                raise self.fail(node, "`in` takes the form `column in (value, ...)`")
            found = left.isin(right)
            return found if isinstance(op, ast.In) else ~found
        if type(op) not in _COMPARE:
            raise self.fail(node, "unsupported comparison")
        if isinstance(left, list) or isinstance(right, list):
            raise self.fail(node, "a list or tuple only goes with `in`")
        if (right is None and not rcol) or (left is None and not lcol):
            raise self.fail(node, "compare with None using `is None` / `is not None`")
        return _COMPARE[type(op)](left, right)

    def build(self, node: ast.AST) -> pc.Expression:
        if isinstance(node, ast.BoolOp):
            values = [self.build(v) for v in node.values]
            out = values[0]
            for v in values[1:]:
                out = (out & v) if isinstance(node.op, ast.And) else (out | v)
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ~self.build(node.operand)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Name):  # a boolean column on its own
            return self.column(node) == True  # noqa: E712 (an Arrow expression, not a Python test)
        raise self.fail(node, self._what(node) if not isinstance(node, ast.Constant) else "a constant is not a condition")


def parse_where(text: str) -> pc.Expression:
    """The pyarrow expression of ``text``; raises WhereError (a ValueError) with the reason."""
    if not isinstance(text, str) or not text.strip():
        raise WhereError("where is empty: give a condition such as 'motion_score > 2 and duration_s >= 4'")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        where = f" at column {e.offset}" if e.offset else " (incomplete)"
        raise WhereError(f"where {text!r}: bad syntax{where}: {e.msg}") from None
    return _Builder(text.strip(), columns()).build(tree.body)


def read_selection(folder: str, where: str | None = None, columns: list[str] | None = None) -> pa.Table:
    """The index rows of a kvid folder that match ``where`` (``columns`` of them), read
    before any clip is. Raises ClipFolderError for a missing folder, a folder that is not
    a kvid folder, and a bad ``where`` (checked first: a typo fails before any reading)."""
    expr = None if where is None else parse_where(where)
    if not os.path.isdir(folder):
        raise ClipFolderError(f"{folder}: no such folder")
    if not os.path.isdir(os.path.join(folder, layout.INDEX)):
        raise ClipFolderError(f"{folder} is not a kvid folder (it has no {layout.INDEX}/): "
                              "give the --out folder of `kvid curate`")
    table = shards.read_index(folder, columns)
    if expr is None:
        return table
    try:
        return table.filter(expr)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise WhereError(f"where {where!r}: {str(e).splitlines()[0]}") from None
