"""The grammar of OTTL conditions, after pkg/ottl/grammar.go (v0.161.0),
for the lark parser.

What is left out of the Collector's grammar: editors and statements (a
condition never edits), lambdas, and function names as arguments; each is a
parse error. The tokens are the Collector lexer's (grammar.go buildLexer):
the same literals, the same keywords, names split into lowercase (paths,
argument names) and uppercase (converters, enums).

Earley rather than LALR: like participle's lookahead in the Collector, it
has to tell a parenthesised boolean expression ``(a == 1 or b)`` from a
parenthesised arithmetic one ``(a + 1) * 2 == 4`` only by what follows.
Conditions are parsed once, when the config loads.
"""
from __future__ import annotations

import lark

GRAMMAR = r"""
?start: bool_expr

bool_expr: term (_OR term)*
term: bool_value (_AND bool_value)*
bool_value: NOT? (comparison | const_bool | converter | "(" bool_expr ")")
const_bool: BOOLEAN
comparison: value COMP_OP value

?value: NIL          -> nil
      | BYTES        -> bytes_lit
      | STRING       -> string_lit
      | BOOLEAN      -> bool_lit
      | ENUMNAME     -> enum
      | map_lit
      | list_lit
      | math_expr

math_expr: add_term (ADDSUB add_term)*
add_term: math_value (MULTDIV math_value)*
math_value: ADDSUB? (math_literal | "(" math_expr ")")
?math_literal: converter
             | editor
             | FLOAT  -> float_lit
             | INT    -> int_lit
             | path

converter: UPPERNAME "(" [arg ("," arg)*] ")" key*
editor: LOWERNAME "(" [arg ("," arg)*] ")" key*
arg: (LOWERNAME "=")? value
path: field ("." field)*
field: LOWERNAME key*
key: "[" value "]"
map_lit: "{" (map_item ","?)* "}"
map_item: STRING ":" value
list_lit: "[" [value ("," value)*] "]"

BYTES.4: /0x[a-fA-F0-9]+/
FLOAT.3: /(\d+\.\d*|\d*\.\d+)([eE][-+]?\d+)?/
INT.2: /\d+/
STRING: /"(\\.|[^\\"])*"/
NIL: /nil\b/
NOT: /not\b/
_OR: /or\b/
_AND: /and\b/
BOOLEAN: /(true|false)\b/
COMP_OP: "==" | "!=" | ">=" | "<=" | ">" | "<"
ADDSUB: "+" | "-"
MULTDIV: "/" | "*"
ENUMNAME: /[A-Z][A-Z0-9_]*(?![A-Za-z0-9_]*\()/
UPPERNAME: /[A-Z][A-Za-z0-9_]*/
LOWERNAME: /(?!(?:not|or|and|nil|true|false)(?![a-z0-9_]))[a-z][a-z0-9_]*/

%import common.WS
%ignore WS
"""

_PARSER = lark.Lark(GRAMMAR, parser="earley", lexer="dynamic", ambiguity="resolve",
                    propagate_positions=True)


class GrammarError(ValueError):
    pass


def parse(text: str) -> lark.Tree:
    """The parse tree of one condition; GrammarError with the position of
    what does not parse."""
    try:
        return _PARSER.parse(text)
    except lark.exceptions.UnexpectedEOF:
        raise GrammarError("unexpected end of condition") from None
    except lark.exceptions.UnexpectedCharacters as exc:
        pos = exc.pos_in_stream or 0
        raise GrammarError(f"unexpected {text[pos:pos + 12]!r} "
                           f"at column {exc.column}") from None
    except lark.exceptions.UnexpectedToken as exc:
        tok = exc.token
        what = "end of condition" if tok.type == "$END" else repr(str(tok))
        raise GrammarError(f"unexpected {what} at column {getattr(tok, 'column', '?')}") from None
    except lark.exceptions.LarkError as exc:
        raise GrammarError(str(exc).splitlines()[0]) from None
