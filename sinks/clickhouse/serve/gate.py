"""The reader gate: what a read-only client sends becomes one checked statement, or an error.

1. The engine formats the text (`formatQuery`, the SQL passed as a query
   parameter, so nothing in it can run): this refuses several statements in
   one request and gives the canonical text, with comments gone and every
   identifier and string quoted one way.
2. The engine prints the canonical statement's syntax tree (`EXPLAIN AST`,
   with the request's query parameters, so `{t:Identifier}` is resolved as at
   execution); `reader_policy` checks it against the allow-list.
3. The canonical text is what runs: the statement checked is the statement
   executed, whatever tricks of spelling the original used.
"""

from __future__ import annotations

import re
from typing import Final

from sinks.clickhouse.serve.errors import ACCESS_DENIED, SYNTAX_ERROR, ServeError
from sinks.clickhouse.serve.handles import Handle
from sinks.clickhouse.serve.reader_policy import check_format, check_statement
from sinks.clickhouse.serve.syntax_tree import Node, SyntaxTreeError, parse_tree

# The engine's max_query_size, which readers may not change: a longer statement is its syntax error
# anyway. Refused before anything is done with it, since escaping it as a parameter (str.translate)
# holds the GIL throughout: 200 MiB of backslashes from an anonymous reader stopped every thread of
# the endpoint, the writer's inserts included, for 19 s.
MAX_STATEMENT_BYTES: Final = 262_144
_FORMAT_QUERY: Final = b"SELECT formatQuery({tykpulse_statement:String})"
_PARAMETER: Final = "tykpulse_statement"
# query parameter values are read with TSV escaping
_PARAMETER_ESCAPES: Final = str.maketrans({"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"})
_IN_SCOPE: Final = re.compile(r"\s*:\s*In scope SELECT formatQuery\(.*\Z", re.DOTALL)
_QUOTED: Final = re.compile(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)
_OUTFILE: Final = re.compile(r"\bINTO\s+OUTFILE\b|\bFROM\s+INFILE\b", re.IGNORECASE)
_FORMAT_CLAUSE: Final = re.compile(r"\bFORMAT\s+([A-Za-z]\w*)", re.IGNORECASE)


def check_size(sql: bytes) -> None:
    """Refuse a statement longer than the engine's max_query_size (ServeError SYNTAX_ERROR)."""
    if len(sql) > MAX_STATEMENT_BYTES:
        msg = (
            f"Max query size exceeded: a read-only statement may be at most {MAX_STATEMENT_BYTES} "
            f"bytes (max_query_size), this one has {len(sql)}"
        )
        raise ServeError(SYNTAX_ERROR, msg)


def escape_parameter(value: str) -> str:
    """`value` as a String query parameter reads it back exactly."""
    return value.translate(_PARAMETER_ESCAPES)


def admit(handle: Handle, sql: bytes, params: dict[str, str], database: str) -> tuple[bytes, Node]:
    """The canonical statement to run for a reader and its syntax tree (raises ServeError when refused)."""
    canonical = _canonical(handle, sql, params)
    _check_spelling(canonical)
    tree_text = handle.run(b"EXPLAIN AST " + canonical.encode(), "TabSeparatedRaw", params).bytes()
    try:
        tree = parse_tree(tree_text.decode())
    except (SyntaxTreeError, UnicodeDecodeError) as exc:
        raise ServeError(ACCESS_DENIED, f"Statement could not be checked: {exc}") from exc
    check_statement(tree, database, canonical)
    return canonical.encode(), tree


def _canonical(handle: Handle, sql: bytes, params: dict[str, str]) -> str:
    try:
        text = sql.decode()
    except UnicodeDecodeError:
        msg = "A read-only statement must be UTF-8 text"
        raise ServeError(ACCESS_DENIED, msg) from None
    if _PARAMETER in params:
        msg = f"Query parameter {_PARAMETER} is reserved"
        raise ServeError(ACCESS_DENIED, msg)
    try:
        result = handle.run(_FORMAT_QUERY, "RawBLOB", {_PARAMETER: escape_parameter(text)})
    except ServeError as exc:
        exc.message = _IN_SCOPE.sub("", exc.message)
        raise
    return bytes(result.bytes()).decode()


def _check_spelling(canonical: str) -> None:
    """Refuse what the syntax tree cannot show faithfully, on the canonical text.

    `EXPLAIN AST` prints identifiers raw, so a name holding a line break
    would print lines that look like nodes: names with escapes are refused.
    INTO OUTFILE is refused here as well as in the tree.
    """
    outside_quotes = []
    position = 0
    for quoted in _QUOTED.finditer(canonical):
        outside_quotes.append(canonical[position : quoted.start()])
        position = quoted.end()
        if quoted.group(0)[0] != "'" and "\\" in quoted.group(0):
            msg = "Identifiers with escaped characters are not allowed for read-only users"
            raise ServeError(ACCESS_DENIED, msg)
    outside_quotes.append(canonical[position:])
    unquoted = " ".join(outside_quotes)
    if _OUTFILE.search(unquoted):
        raise ServeError(ACCESS_DENIED, "INTO OUTFILE is not allowed for read-only users")
    # wherever the FORMAT clause sits (the endpoint reads the trailing one to pick the response's format)
    for clause in _FORMAT_CLAUSE.finditer(unquoted):
        check_format(clause.group(1))
