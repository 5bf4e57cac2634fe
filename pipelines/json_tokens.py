"""The JSON string token of the scans that judge hostile JSON before it is parsed.

The Tyk webhook receiver measures a body's nesting without building anything:
it steps from token to token with `finditer`, a token being a whole string (so
the brackets and commas inside it are skipped) or one structural character.
(The firehose codec counted a payload's top-level elements the same way, a
Python step per token; it now does it natively, native/src/json.rs.)

The string token matches at *every* quote: one that is never closed runs to the
end of the text (possessive, so nothing is retried). A pattern that could fail
at a quote was retried by finditer from each following quote, each retry
scanning to the end: quadratic. 80 KB of '"\\' took 19 s in the codec (days at
its 16 MiB limit); a 32 KB webhook body held the receiver's event loop, every
connection, 5 s.
"""

from __future__ import annotations

from typing import Final

JSON_STRING: Final = r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)'
