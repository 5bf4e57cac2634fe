"""ClickHouse's own syntax tree of a statement, read from `EXPLAIN AST`.

The reader gate never parses SQL itself: the engine that will run a statement
parses it (comments, quoting, escapes and query parameters resolved exactly as
at execution) and prints one node a line, indented by depth:

    SelectWithUnionQuery (children 1)
     ExpressionList (children 1)
      SelectQuery (children 2)
       ...
         TableExpression (children 1)
          Function file (alias f) (children 1)

A node is its kind, an optional name (a function's, a table identifier's
`db.table`, a statement's detail) and its children.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Final

_LINE: Final = re.compile(r"^( *)([A-Za-z][A-Za-z0-9_]*)(.*)$")
_CHILDREN: Final = re.compile(r"\(children (\d+)\)\s*$")
_ANNOTATIONS: Final = re.compile(r"\s*\((?:alias [^()]*|children \d+)\)")


class SyntaxTreeError(ValueError):
    """The engine printed something that is not a syntax tree."""


@dataclasses.dataclass(eq=False, slots=True)
class Node:
    kind: str
    name: str
    declared_children: int = 0
    children: list[Node] = dataclasses.field(default_factory=list)
    parent: Node | None = dataclasses.field(default=None, repr=False)

    @property
    def first_word(self) -> str:
        """The name up to its first space: a function's or table's name without what follows."""
        return self.name.split(" ", 1)[0]

    def walk(self) -> Iterator[Node]:
        """This node and every node below it, depth first."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))


def parse_tree(text: str) -> Node:
    """The root of an `EXPLAIN AST` printout (raises SyntaxTreeError when it is not one).

    Identifiers are printed raw, so a name holding a line break could print
    lines that look like nodes: every node must have exactly the children it
    declares, and callers refuse such names before they get here.
    """
    root: Node | None = None
    path: list[tuple[int, Node]] = []
    for line in text.split("\n"):  # not splitlines(): it also splits on U+2028, \x85, ...
        if not line.strip():
            continue
        match = _LINE.match(line)
        if match is None:
            msg = f"unreadable syntax tree line {line!r}"
            raise SyntaxTreeError(msg)
        depth, kind, rest = len(match.group(1)), match.group(2), match.group(3)
        declared = _CHILDREN.search(rest)
        node = Node(kind, _ANNOTATIONS.sub("", rest).strip(), int(declared.group(1)) if declared else 0)
        while path and path[-1][0] >= depth:
            path.pop()
        if path:
            node.parent = path[-1][1]
            path[-1][1].children.append(node)
        elif root is None:
            root = node
        else:
            msg = "the syntax tree has more than one root"
            raise SyntaxTreeError(msg)
        path.append((depth, node))
    if root is None:
        msg = "empty syntax tree"
        raise SyntaxTreeError(msg)
    for node in root.walk():
        if len(node.children) != node.declared_children:
            msg = f"{node.kind} declares {node.declared_children} children and has {len(node.children)}"
            raise SyntaxTreeError(msg)
    return root
