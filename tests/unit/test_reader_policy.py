"""The reader gate's pure parts: reading ClickHouse's syntax tree, the allow-lists, reader settings."""

from __future__ import annotations

import pytest

from sinks.clickhouse.serve.errors import ServeError
from sinks.clickhouse.serve.reader_policy import (
    ReaderLimits,
    check_statement,
    reader_settings,
    reads_only_settings,
)
from sinks.clickhouse.serve.syntax_tree import SyntaxTreeError, parse_tree

pytestmark = pytest.mark.unit

# as `EXPLAIN AST SELECT * FROM file('x') AS f` prints it
TABLE_FUNCTION = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Asterisk
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      Function file (alias numbers) (children 1)
       ExpressionList (children 1)
        Literal 'x'
"""


def test_the_tree_is_read_with_names_aliases_and_parents() -> None:
    root = parse_tree(TABLE_FUNCTION)
    function = next(node for node in root.walk() if node.kind == "Function")
    assert (function.first_word, function.parent and function.parent.kind) == ("file", "TableExpression")
    assert [node.kind for node in root.walk()][:3] == [
        "SelectWithUnionQuery",
        "ExpressionList",
        "SelectQuery",
    ]
    with pytest.raises(ServeError) as info:
        check_statement(root, "default")
    assert info.value.code == 497


@pytest.mark.parametrize(
    "text",
    [
        # a name holding a line break prints a line that is not a node of its parent
        TABLE_FUNCTION.replace("    Asterisk\n", "    Identifier a\nb\n"),
        # a forged line adds a child its parent did not declare
        TABLE_FUNCTION.replace("    Asterisk\n", "    Asterisk\n    Identifier x\n"),
        TABLE_FUNCTION.replace("    Asterisk\n", "    'Asterisk\n"),
        "",
        "SelectWithUnionQuery\nShowTables\n",
    ],
)
def test_a_printout_that_is_not_one_faithful_tree_is_refused(text: str) -> None:
    with pytest.raises(SyntaxTreeError):
        parse_tree(text)


def test_only_system_settings_reads_may_see_changeable_settings() -> None:
    settings = parse_tree(
        TABLE_FUNCTION.replace(
            "Function file (alias numbers) (children 1)", "TableIdentifier system.settings"
        ).replace("       ExpressionList (children 1)\n        Literal 'x'\n", "")
    )
    assert reads_only_settings(settings, "default")
    assert not reads_only_settings(parse_tree(TABLE_FUNCTION), "default")


def test_reader_settings_lower_limits_and_pass_allowed_settings() -> None:
    limits = ReaderLimits(
        max_execution_time=60, max_memory_usage=1000, max_result_rows=10, max_result_bytes=99, max_threads=4
    )
    effective = reader_settings({"max_threads": "2", "output_format_json_quote_64bit_integers": "0"}, limits)
    assert effective == {
        "max_execution_time": "60",
        "max_memory_usage": "1000",
        "max_result_rows": "10",
        "max_result_bytes": "99",
        "max_threads": "2",
        "output_format_json_quote_64bit_integers": "0",
        "allow_hyperscan": "0",  # fixed for every reader (READER_FIXED_SETTINGS)
    }
    for refused, code in [
        ({"allow_hyperscan": "1"}, 164),
        ({"max_threads": "5"}, 452),
        ({"max_memory_usage": "0"}, 452),
        ({"output_format_schema": "/x"}, 164),
        ({"allow_ddl": "1"}, 164),
    ]:
        with pytest.raises(ServeError) as info:
            reader_settings(refused, limits)
        assert info.value.code == code
