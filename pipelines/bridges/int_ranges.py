"""The integer ranges of the fields the bridges forward: one definition, checked where bytes become records.

Python ints are unbounded, but msgpack (the firehose's encoding) carries only
-2**63 .. 2**64-1, and `publish` raises OverflowError on anything else, after
the record was accepted and batched with good ones. So every integer a bridge
takes from received bytes is checked against its field's type when it is
decoded, and one outside is a counted rejection like any other bad input:

- msgspec structs declare the field with the annotated type (`Int64` ...):
  the decoder raises ValidationError, which pipelines.errors.DECODE_ERRORS covers;
- hand-written readers (the protobuf wire reader, the webhook's JSON body) call
  `IntRange.reason`, which says why a value does not fit, or None.
"""

from __future__ import annotations

from typing import Annotated, Final, NamedTuple

import msgspec


class IntRange(NamedTuple):
    name: str
    lo: int
    hi: int

    def reason(self, value: int) -> str | None:
        """Why `value` is not a `name`, or None when it is one."""
        if self.lo <= value <= self.hi:
            return None
        shown = str(value) if len(str(value)) <= 24 else f"a {value.bit_length()}-bit integer"
        return f"{shown} is outside {self.name}"


INT32: Final = IntRange("int32", -(2**31), 2**31 - 1)
UINT32: Final = IntRange("uint32", 0, 2**32 - 1)
INT64: Final = IntRange("int64", -(2**63), 2**63 - 1)
UINT64: Final = IntRange("uint64", 0, 2**64 - 1)

# The same ranges as msgspec field types (checked by the decoder).
Int64 = Annotated[int, msgspec.Meta(ge=INT64.lo, le=INT64.hi)]
# msgspec takes no bound above int64's: UInt64 is for msgpack input only (it carries at most 2**64-1).
UInt64 = Annotated[int, msgspec.Meta(ge=UINT64.lo)]
