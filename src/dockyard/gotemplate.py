"""Go's ``text/template`` (and the part of ``fmt`` it prints with), as the docker CLI uses it.

``parse(text)`` gives a :class:`Template` or raises :class:`TemplateError` with Go's message
(``template: :1: unclosed action``); ``Template.execute(data)`` gives the text or raises
:class:`TemplateError` with Go's execution message
(``template: :1:2: executing "" at <.Foo>: can't evaluate field Foo in type ...``) and the
output written before the error in ``.partial``.

Python values stand for Go values: ``str`` string, ``int`` int, ``float`` float64, ``bool``,
``None`` a nil interface, ``list``/``tuple`` a ``[]interface {}``, ``dict`` a
``map[string]interface {}`` (a Go map: missing keys give ``<no value>``, ranged in sorted key
order, printed ``map[k:v]``). A :class:`GoObject` is a Go struct (or pointer to one) with a type
name, ordered fields and methods: an unknown field is Go's "can't evaluate field" error.
Typed nils (a nil slice prints ``[]``, a nil map ``map[]``) are :data:`NIL_SLICE` and
:data:`NIL_MAP`.

The functions are Go's builtins (``and or not len index slice print printf println eq ne lt le
gt ge html js urlquery call``) plus docker/cli's ``templates`` package: ``json`` (encoding/json
without HTML escaping), ``split``, ``join``, ``title``, ``lower``, ``upper``, ``pad``,
``truncate``. :data:`HEADER_FUNCS` are docker's replacements used when a ``table`` header is
rendered.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from dockyard import gojson

__all__ = [
    "HEADER_FUNCS",
    "NIL_MAP",
    "NIL_SLICE",
    "GoObject",
    "OrderedMap",
    "RawJSON",
    "StrList",
    "Template",
    "TemplateError",
    "go_sprint",
    "go_sprintf",
    "go_value",
    "parse",
]


class TemplateError(Exception):
    """A parse or execution error, with Go's text."""

    def __init__(self, message: str, partial: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.partial = partial


class _Missing:
    """Go's invalid reflect.Value: what a missing map key or a nil pipeline result is."""

    _inst: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._inst is None:
            cls._inst = super().__new__(cls)
        return cls._inst

    def __repr__(self) -> str:
        return "<no value>"


MISSING: Any = _Missing()


class _TypedNil:
    def __init__(self, kind: str, text: str, gotype: str) -> None:
        self.kind = kind
        self.text = text
        self.gotype = gotype

    def __repr__(self) -> str:
        return self.text

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[Any]:
        return iter(())


NIL_SLICE: Any = _TypedNil("slice", "[]", "[]string")
NIL_MAP: Any = _TypedNil("map", "map[]", "map[string]string")
NIL_PTR: Any = _TypedNil("ptr", "<nil>", "*struct")


class GoObject:
    """A Go struct value: ``type_name`` as Go prints it, fields in declaration order, methods.

    A method is a callable taking the template arguments; a field is a plain value. ``json``,
    when given, is what ``{{json .}}`` marshals (docker's formatter contexts marshal a map).
    """

    def __init__(
        self,
        type_name: str,
        fields: Mapping[str, Any] | None = None,
        methods: Mapping[str, Callable[..., Any]] | None = None,
        json: Callable[[], Any] | None = None,
    ) -> None:
        self.type_name = type_name
        self.fields = dict(fields or {})
        self.methods = dict(methods or {})
        self.json = json


# ------------------------------------------------------------------------------------ lexer
_KEYWORDS = {"block", "break", "continue", "define", "else", "end", "if", "range", "nil",
             "template", "with"}


@dataclass
class _Item:
    typ: str  # text, ldelim, rdelim, space, ident, field, var, dot, string, raw, char, number,
    # bool, nil, kw, pipe, lparen, rparen, declare, assign, comma, eof, error, comment, chr
    val: str
    pos: int
    line: int

    def __str__(self) -> str:
        if self.typ == "eof":
            return "EOF"
        if self.typ == "error":
            return self.val
        if self.typ == "kw":
            return "<%s>" % self.val
        if len(self.val.encode()) > 10:
            return _go_quote(self.val.encode()[:10].decode(errors="ignore")) + "..."
        return _go_quote(self.val)


def _is_space(c: str) -> bool:
    return c in " \t\r\n"


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalnum()


def _lex(text: str) -> list[_Item]:
    items: list[_Item] = []
    pos = 0
    n = len(text)
    newlines = [i for i, c in enumerate(text) if c == "\n"]

    def line_of(at: int) -> int:
        return 1 + bisect.bisect_left(newlines, at)

    def emit(typ: str, start: int, end: int) -> None:
        items.append(_Item(typ, text[start:end], start, line_of(start)))

    def err(msg: str, at: int) -> list[_Item]:
        items.append(_Item("error", msg, at, line_of(at)))
        return items

    def right_trim(at: int) -> bool:
        return at + 3 < n + 0 and _is_space(text[at]) and text.startswith("-}}", at + 1)

    while True:
        i = text.find("{{", pos)
        if i < 0:
            if pos < n:
                emit("text", pos, n)
            items.append(_Item("eof", "", n, line_of(n)))
            return items
        trim_left = text.startswith("{{-", i) and i + 3 < n and _is_space(text[i + 3])
        end_text = i
        if trim_left:
            while end_text > pos and _is_space(text[end_text - 1]):
                end_text -= 1
        if end_text > pos:
            emit("text", pos, end_text)
        emit("ldelim", i, i + 2)
        pos = i + 2
        if trim_left:
            pos += 2
        if text.startswith("/*", pos):
            k = text.find("*/", pos + 2)
            if k < 0:
                return err("unclosed comment", pos)
            k += 2
            if right_trim(k):
                pos = k + 4
                while pos < n and _is_space(text[pos]):
                    pos += 1
            elif text.startswith("}}", k):
                pos = k + 2
            else:
                return err("comment ends before closing delimiter", k)
            items.pop()  # a comment leaves no items
            continue
        depth = 0
        while True:
            if right_trim(pos) or text.startswith("}}", pos):
                if depth:
                    return err("unclosed left paren", pos)
                if text.startswith("}}", pos):
                    emit("rdelim", pos, pos + 2)
                    pos += 2
                else:
                    emit("rdelim", pos + 2, pos + 4)
                    pos += 4
                    while pos < n and _is_space(text[pos]):
                        pos += 1
                break
            if pos >= n:
                return err("unclosed action", pos)
            c = text[pos]
            start = pos
            if _is_space(c):
                while pos < n and _is_space(text[pos]):
                    pos += 1
                if text.startswith("-}}", pos):
                    pos -= 1  # the last space belongs to the trim marker
                    if pos == start:
                        continue
                emit("space", start, pos)
                continue
            if c == "=":
                pos += 1
                emit("assign", start, pos)
            elif c == ":":
                if not text.startswith(":=", pos):
                    return err("expected :=", pos)
                pos += 2
                emit("declare", start, pos)
            elif c == "|":
                pos += 1
                emit("pipe", start, pos)
            elif c == ",":
                pos += 1
                emit("comma", start, pos)
            elif c == '"':
                pos += 1
                while True:
                    if pos >= n or text[pos] == "\n":
                        return err("unterminated quoted string", start)
                    if text[pos] == "\\":
                        pos += 2
                        continue
                    if text[pos] == '"':
                        pos += 1
                        break
                    pos += 1
                emit("string", start, pos)
            elif c == "`":
                k = text.find("`", pos + 1)
                if k < 0:
                    return err("unterminated raw quoted string", start)
                pos = k + 1
                emit("raw", start, pos)
            elif c == "'":
                pos += 1
                while True:
                    if pos >= n or text[pos] == "\n":
                        return err("unterminated character constant", start)
                    if text[pos] == "\\":
                        pos += 2
                        continue
                    if text[pos] == "'":
                        pos += 1
                        break
                    pos += 1
                emit("char", start, pos)
            elif c == "$" or (c == "." and not (pos + 1 < n and text[pos + 1].isdigit())):
                pos += 1
                while pos < n and _is_alnum(text[pos]):
                    pos += 1
                if c == "." and pos == start + 1:
                    emit("dot", start, pos)
                else:
                    emit("var" if c == "$" else "field", start, pos)
                if pos < n and not _terminates(text, pos):
                    return err("bad character %s" % _pretty_rune(text[pos]), pos)
            elif c in "+-." or c.isdigit():
                m = _NUMBER_RE.match(text, pos)
                assert m is not None
                pos = m.end()
                if pos < n and _is_alnum(text[pos]):
                    pos += 1
                    return err("bad number syntax: %s" % _go_quote(text[start:pos]), start)
                emit("number", start, pos)
            elif _is_alnum(c):
                while pos < n and _is_alnum(text[pos]):
                    pos += 1
                word = text[start:pos]
                if pos < n and not _terminates(text, pos):
                    return err("bad character %s" % _pretty_rune(text[pos]), pos)
                if word in _KEYWORDS and word != "nil":
                    emit("kw", start, pos)
                elif word in ("true", "false"):
                    emit("bool", start, pos)
                elif word == "nil":
                    emit("nil", start, pos)
                else:
                    emit("ident", start, pos)
            elif c == "(":
                pos += 1
                depth += 1
                emit("lparen", start, pos)
            elif c == ")":
                pos += 1
                depth -= 1
                emit("rparen", start, pos)
                if depth < 0:
                    return err("unexpected right paren %s" % _pretty_rune(c), start)
            elif ord(c) < 128 and c.isprintable():
                pos += 1
                emit("chr", start, pos)
            else:
                return err("unrecognized character in action: %s" % _pretty_rune(c), start)


_NUMBER_RE = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]*(?:\.[0-9a-fA-F_]*)?(?:[pP][+-]?[0-9_]+)?|0[bB][01_]*|0[oO][0-7_]*"
    r"|[0-9_]*(?:\.[0-9_]*)?(?:[eE][+-]?[0-9_]+)?)i?"
)


def _terminates(text: str, pos: int) -> bool:
    c = text[pos]
    return _is_space(c) or c in ".,|:)(" or text.startswith("}}", pos)


def _pretty_rune(c: str) -> str:
    return "U+%04X %s" % (ord(c), _go_quote_rune(ord(c)))


# ------------------------------------------------------------------------------------ nodes
@dataclass
class _Node:
    pos: int
    line: int

    def text(self) -> str:
        return ""


@dataclass
class _Text(_Node):
    val: str = ""


@dataclass
class _Field(_Node):
    idents: list[str] = field(default_factory=list)

    def text(self) -> str:
        return "".join("." + i for i in self.idents)


@dataclass
class _Var(_Node):
    idents: list[str] = field(default_factory=list)

    def text(self) -> str:
        return ".".join(self.idents)


@dataclass
class _Dot(_Node):
    def text(self) -> str:
        return "."


@dataclass
class _Nil(_Node):
    def text(self) -> str:
        return "nil"


@dataclass
class _Ident(_Node):
    name: str = ""

    def text(self) -> str:
        return self.name


@dataclass
class _Const(_Node):
    value: Any = None
    src: str = ""
    is_number: bool = False

    def text(self) -> str:
        return self.src


@dataclass
class _Chain(_Node):
    node: _Node | None = None
    fields: list[str] = field(default_factory=list)

    def text(self) -> str:
        assert self.node is not None
        inner = self.node.text()
        if isinstance(self.node, _Pipe):
            inner = "(" + inner + ")"
        return inner + "".join("." + f for f in self.fields)


@dataclass
class _Command(_Node):
    args: list[_Node] = field(default_factory=list)

    def text(self) -> str:
        out = []
        for a in self.args:
            out.append("(" + a.text() + ")" if isinstance(a, _Pipe) else a.text())
        return " ".join(out)


@dataclass
class _Pipe(_Node):
    decl: list[str] = field(default_factory=list)
    is_assign: bool = False
    cmds: list[_Command] = field(default_factory=list)

    def text(self) -> str:
        s = ""
        if self.decl:
            s = ", ".join(self.decl) + (" = " if self.is_assign else " := ")
        return s + " | ".join(c.text() for c in self.cmds)


@dataclass
class _Action(_Node):
    pipe: _Pipe | None = None

    def text(self) -> str:
        assert self.pipe is not None
        return "{{" + self.pipe.text() + "}}"


@dataclass
class _Branch(_Node):
    kind: str = ""  # if, range, with
    pipe: _Pipe | None = None
    body: list[_Node] = field(default_factory=list)
    else_body: list[_Node] | None = None

    def text(self) -> str:
        assert self.pipe is not None
        return "{{%s %s}}" % (self.kind, self.pipe.text())


@dataclass
class _Break(_Node):
    kind: str = "break"

    def text(self) -> str:
        return "{{%s}}" % self.kind


# ----------------------------------------------------------------------------------- parser
class _Parser:
    def __init__(self, name: str, text: str, funcs: Mapping[str, Any]) -> None:
        self.name = name
        self.items = _lex(text)
        self.i = 0
        self.funcs = funcs
        self.vars: list[str] = ["$"]
        self.range_depth = 0
        self.cur: _Item = self.items[0]
        self.action_line = 0

    def error(self, msg: str) -> TemplateError:
        return TemplateError("template: %s:%d: %s" % (self.name, self.cur.line, msg))

    def next(self) -> _Item:
        it = self.items[self.i]
        if self.i < len(self.items) - 1:
            self.i += 1
        self.cur = it
        if it.typ == "error":
            extra = ""
            if self.action_line and self.action_line != it.line:
                extra = " in action started at %s:%d" % (self.name, self.action_line)
                if it.val.endswith(" action"):
                    extra = extra[len(" in action"):]
            raise self.error(it.val + extra)
        return it

    def backup(self) -> None:
        self.i -= 1

    def peek(self) -> _Item:
        return self.items[self.i]

    def next_nonspace(self) -> _Item:
        while True:
            it = self.next()
            if it.typ != "space":
                return it

    def peek_nonspace(self) -> _Item:
        it = self.next_nonspace()
        self.backup()
        return it

    def unexpected(self, it: _Item, context: str) -> TemplateError:
        return self.error("unexpected %s in %s" % (it, context))

    def parse(self) -> list[_Node]:
        nodes, _stop = self.item_list(top=True)
        return nodes

    def item_list(self, top: bool = False) -> tuple[list[_Node], str]:
        out: list[_Node] = []
        while True:
            it = self.next()
            if it.typ == "eof":
                if top:
                    return out, "eof"
                raise self.error("unexpected EOF")
            if it.typ == "text":
                out.append(_Text(it.pos, it.line, it.val))
                continue
            assert it.typ == "ldelim"
            self.action_line = it.line
            nxt = self.next_nonspace()
            if nxt.typ == "kw" and nxt.val in ("end", "else"):
                if top:
                    raise self.error("unexpected {{%s}}" % nxt.val)
                if nxt.val == "end":
                    tok = self.next_nonspace()
                    if tok.typ != "rdelim":
                        raise self.unexpected(tok, "end")
                    return out, "end"
                return out, "else"
            self.backup()
            out.append(self.action(nxt))
            self.action_line = 0

    def action(self, first: _Item) -> _Node:
        it = self.next_nonspace()
        if it.typ == "kw":
            if it.val in ("if", "range", "with"):
                return self.branch(it)
            if it.val in ("break", "continue"):
                if self.range_depth == 0:
                    raise self.error("{{%s}} outside {{range}}" % it.val)
                tok = self.next_nonspace()
                if tok.typ != "rdelim":
                    raise self.unexpected(tok, "{{%s}}" % it.val)
                return _Break(it.pos, it.line, it.val)
            raise self.error("{{%s}} is not supported by dockyard's templates" % it.val)
        self.backup()
        pipe = self.pipeline("command", "rdelim")
        return _Action(first.pos, first.line, pipe)

    def branch(self, kw: _Item) -> _Node:
        mark = len(self.vars)
        if kw.val == "range":
            self.range_depth += 1
        pipe = self.pipeline(kw.val, "rdelim")
        body, stop = self.item_list()
        if kw.val == "range":
            self.range_depth -= 1
        else_body: list[_Node] | None = None
        if stop == "else":
            tok = self.peek_nonspace()
            if kw.val == "if" and tok.typ == "kw" and tok.val == "if":
                # {{else if ...}}: an if nested in the else list, sharing our {{end}}
                self.next_nonspace()
                nested = self.branch(tok)
                else_body = [nested]
            else:
                tok = self.next_nonspace()
                if tok.typ != "rdelim":
                    raise self.error("expected end; found %s" % tok)
                else_body, stop2 = self.item_list()
                if stop2 != "end":
                    raise self.error("expected end; found {{else}}")
        self.vars = self.vars[:mark]
        return _Branch(kw.pos, kw.line, kw.val, pipe, body, else_body)

    def pipeline(self, context: str, end: str) -> _Pipe:
        tok = self.peek_nonspace()
        pipe = _Pipe(tok.pos, tok.line)
        # declarations
        while True:
            v = self.peek_nonspace()
            if v.typ != "var":
                break
            self.next_nonspace()
            tok = self.next()
            nxt = self.peek() if tok.typ == "space" else tok
            if tok.typ == "space":
                nxt = self.next_nonspace()
            if nxt.typ in ("declare", "assign"):
                pipe.is_assign = nxt.typ == "assign"
                pipe.decl.append(v.val)
                if not pipe.is_assign:
                    self.vars.append(v.val)
                elif v.val not in self.vars:
                    raise self.error("undefined variable %s" % _go_quote(v.val))
                break
            if nxt.typ == "comma":
                if context == "range" and len(pipe.decl) < 2:
                    pipe.decl.append(v.val)
                    self.vars.append(v.val)
                    continue
                raise self.error("too many declarations in %s" % context)
            # not a declaration: rewind to the variable
            while self.items[self.i] is not v:
                self.i -= 1
            break
        while True:
            tok = self.next_nonspace()
            if tok.typ == end:
                if not pipe.cmds:
                    raise self.error("missing value for %s" % context)
                for k, c in enumerate(pipe.cmds[1:], start=1):
                    a = c.args[0]
                    if isinstance(a, (_Const, _Dot, _Nil)) or (
                        isinstance(a, _Const) and a.is_number
                    ):
                        raise self.error("non executable command in pipeline stage %d" % (k + 1))
                return pipe
            if tok.typ in ("bool", "char", "dot", "field", "ident", "number", "nil", "raw",
                           "string", "var", "lparen"):
                self.backup()
                pipe.cmds.append(self.command())
            else:
                raise self.unexpected(tok, context)

    def command(self) -> _Command:
        tok = self.peek_nonspace()
        cmd = _Command(tok.pos, tok.line)
        while True:
            self.peek_nonspace()
            op = self.operand()
            if op is not None:
                cmd.args.append(op)
            tok = self.next()
            if tok.typ == "space":
                continue
            if tok.typ in ("rdelim", "rparen"):
                self.backup()
            elif tok.typ == "pipe":
                pass
            else:
                raise self.unexpected(tok, "operand")
            break
        if not cmd.args:
            raise self.error("empty command")
        return cmd

    def operand(self) -> _Node | None:
        node = self.term()
        if node is None:
            return None
        if self.peek().typ == "field":
            fields: list[str] = []
            chain_pos = self.peek().pos
            while self.peek().typ == "field":
                fields.append(self.next().val[1:])
            if isinstance(node, _Field):
                return _Field(chain_pos, node.line, node.idents + fields)
            if isinstance(node, _Var):
                return _Var(chain_pos, node.line, node.idents + fields)
            if isinstance(node, (_Const, _Dot, _Nil)):
                raise self.error("unexpected . after term %s" % _go_quote(node.text()))
            return _Chain(chain_pos, node.line, node, fields)
        return node

    def term(self) -> _Node | None:
        tok = self.next_nonspace()
        t = tok.typ
        if t == "ident":
            if tok.val not in self.funcs:
                raise self.error("function %s not defined" % _go_quote(tok.val))
            return _Ident(tok.pos, tok.line, tok.val)
        if t == "dot":
            return _Dot(tok.pos, tok.line)
        if t == "nil":
            return _Nil(tok.pos, tok.line)
        if t == "var":
            if tok.val not in self.vars:
                raise self.error("undefined variable %s" % _go_quote(tok.val))
            idents = [tok.val]
            return _Var(tok.pos, tok.line, idents)
        if t == "field":
            return _Field(tok.pos, tok.line, [tok.val[1:]])
        if t == "bool":
            return _Const(tok.pos, tok.line, tok.val == "true", tok.val)
        if t in ("char", "number"):
            return _Const(tok.pos, tok.line, self.number(tok), tok.val, True)
        if t == "lparen":
            pipe = self.pipeline("parenthesized pipeline", "rparen")
            return pipe
        if t in ("string", "raw"):
            try:
                val = _unquote(tok.val)
            except ValueError:
                raise self.error("invalid syntax") from None
            return _Const(tok.pos, tok.line, val, tok.val)
        self.backup()
        return None

    def number(self, tok: _Item) -> Any:
        s = tok.val
        if tok.typ == "char":
            v = _unquote(s)
            return _Rune(ord(v))
        if s.endswith("i"):
            raise self.error("complex constants are not supported: %s" % s)
        t = s.replace("_", "")
        try:
            if re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO]?[0-7]*|[1-9][0-9]*)", t):
                sign = -1 if t.startswith("-") else 1
                body = t.lstrip("+-")
                if re.fullmatch(r"0[0-7]+", body):
                    return sign * int(body, 8)
                return sign * int(body, 0)
            return _Float(float.fromhex(t) if "x" in t.lower() else float(t))
        except ValueError:
            raise self.error("illegal number syntax: %s" % _go_quote(s)) from None


class _Rune(int):
    """A character constant: an int that Go converts to whatever number type is needed."""


class _Float(float):
    """A floating-point constant from the template text."""


def _unquote(s: str) -> str:
    if s[0] == "`":
        return s[1:-1]
    body = s[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1]
        simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                  "\\": "\\", '"': '"', "'": "'"}
        if e in simple:
            out.append(simple[e])
            i += 2
        elif e == "x":
            out.append(chr(int(body[i + 2:i + 4], 16)))
            i += 4
        elif e == "u":
            out.append(chr(int(body[i + 2:i + 6], 16)))
            i += 6
        elif e == "U":
            out.append(chr(int(body[i + 2:i + 10], 16)))
            i += 10
        elif e in "01234567":
            out.append(chr(int(body[i + 1:i + 4], 8)))
            i += 4
        else:
            raise ValueError(s)
    return "".join(out)


# ------------------------------------------------------------------------------- Go values
def go_type(v: Any) -> str:
    """The Go type name of a value as ``%T`` and error messages write it."""
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, _Rune):
        return "int32"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, GoObject):
        return v.type_name
    if isinstance(v, _TypedNil):
        return v.gotype
    if isinstance(v, StrList):
        return "[]string"
    if isinstance(v, (list, tuple)):
        return "[]interface {}"
    if isinstance(v, Mapping):
        return "map[string]interface {}"
    if v is None:
        return "<nil>"
    return type(v).__name__


def _fmt_float(f: float, verb: str = "g", prec: int = -1) -> str:
    """strconv.FormatFloat(f, verb, prec, 64)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if verb == "f":
        if prec < 0:
            digits, dp, neg = _shortest(f)
            frac = max(0, len(digits) - dp)
            return ("-" if neg else "") + _fixed(digits, dp, frac)
        return "%.*f" % (prec, f)
    if verb == "e":
        if prec < 0:
            digits, dp, neg = _shortest(f)
            return ("-" if neg else "") + _exp(digits, dp, len(digits) - 1)
        return _go_exp("%.*e" % (prec, f))
    # 'g'
    if prec < 0:
        digits, dp, neg = _shortest(f)
        eprec = 6
    else:
        if prec == 0:
            prec = 1
        s = "%.*e" % (prec - 1, f)
        mant, _, ex = s.partition("e")
        neg = mant.startswith("-")
        digits = mant.lstrip("-").replace(".", "").rstrip("0") or "0"
        dp = int(ex) + 1
        eprec = prec
        if eprec > len(digits) and len(digits) >= dp:
            eprec = len(digits)
    exp = dp - 1
    if f == 0:
        exp = 0
    sign = "-" if neg else ""
    if exp < -4 or exp >= eprec:
        return sign + _exp(digits, dp, len(digits) - 1)
    return sign + _fixed(digits, dp, max(0, len(digits) - dp))


def _shortest(f: float) -> tuple[str, int, bool]:
    d = Decimal(repr(f))
    sign, dig, e = d.as_tuple()
    assert isinstance(e, int)
    digits = "".join(map(str, dig)).lstrip("0")
    if not digits:
        return "0", 1, bool(sign)
    stripped = digits.rstrip("0")
    e += len(digits) - len(stripped)
    return stripped, len(stripped) + e, bool(sign)


def _fixed(digits: str, dp: int, frac: int) -> str:
    if dp <= 0:
        whole = "0"
        fr = "0" * (-dp) + digits
    else:
        whole = (digits + "0" * max(0, dp - len(digits)))[:dp]
        fr = digits[dp:]
    fr = (fr + "0" * frac)[:frac]
    return whole + ("." + fr if frac else "")


def _exp(digits: str, dp: int, prec: int) -> str:
    m = digits[0] + ("." + digits[1:prec + 1] if prec > 0 else "")
    e = dp - 1 if digits != "0" else 0
    return "%se%s%02d" % (m, "-" if e < 0 else "+", abs(e))


def _go_exp(s: str) -> str:
    return s  # Python's %e already writes at least two exponent digits, like Go


def _go_quote_rune(r: int) -> str:
    if r == ord("'"):
        return "'\\''"
    return "'" + _quote_body(chr(r), "'") + "'"


def _quote_body(s: str, q: str) -> str:
    out = []
    for c in s:
        o = ord(c)
        if c == q or c == "\\":
            out.append("\\" + c)
        elif c in "\a\b\f\n\r\t\v":
            out.append({"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                        "\t": "\\t", "\v": "\\v"}[c])
        elif 0xD800 <= o <= 0xDFFF:
            out.append("\\ufffd" if o < 0xDC80 else "\\x%02x" % (o - 0xDC00))
        elif c.isprintable() or c == " ":
            out.append(c)
        elif o < 0x80:
            out.append("\\x%02x" % o)
        elif o < 0x10000:
            out.append("\\u%04x" % o)
        else:
            out.append("\\U%08x" % o)
    return "".join(out)


def _go_quote(s: str) -> str:
    """strconv.Quote."""
    return '"' + _quote_body(s, '"') + '"'


def go_value(v: Any, top: bool = True) -> str:
    """fmt's ``%v`` of a value."""
    if v is MISSING:
        return "<no value>" if top else "<nil>"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(int(v))
    if isinstance(v, float):
        return _fmt_float(v)
    if isinstance(v, str):
        return v
    if isinstance(v, _TypedNil):
        return v.text
    if isinstance(v, GoObject):
        if "String" in v.methods:
            return str(v.methods["String"]())
        return "{" + " ".join(go_value(x, False) for x in v.fields.values()) + "}"
    if isinstance(v, Mapping):
        return "map[" + " ".join("%s:%s" % (go_value(k, False), go_value(v[k], False))
                                 for k in _sorted_keys(v)) + "]"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_value(x, False) for x in v) + "]"
    return str(v)


def _sorted_keys(m: Mapping[Any, Any]) -> list[Any]:
    return sorted(m.keys(), key=lambda k: (0, k, "") if isinstance(k, (int, float)) else (1, 0, str(k)))


def go_sprint(*args: Any) -> str:
    """fmt.Sprint: a space between operands when neither side is a string."""
    out = []
    prev_string = True
    for i, a in enumerate(args):
        is_string = isinstance(a, str)
        if i > 0 and not is_string and not prev_string:
            out.append(" ")
        out.append(go_value(a, False))
        prev_string = is_string
    return "".join(out)


def go_sprintln(*args: Any) -> str:
    return " ".join(go_value(a, False) for a in args) + "\n"


_VERB_RE = re.compile(r"%([-+# 0]*)(\*|\d+)?(?:\.(\*|\d*))?(.)?", re.S)


def go_sprintf(fmt: str, *args: Any) -> str:
    """fmt.Sprintf for the verbs templates use, with Go's %!verb(type=value) complaints."""
    out: list[str] = []
    argi = 0
    pos = 0
    n = len(fmt)
    while pos < n:
        k = fmt.find("%", pos)
        if k < 0:
            out.append(fmt[pos:])
            break
        out.append(fmt[pos:k])
        m = _VERB_RE.match(fmt, k)
        assert m is not None
        flags, width_s, prec_s, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        pos = m.end()
        if verb is None:
            out.append("%!(NOVERB)")
            break
        if verb == "%":
            out.append("%")
            continue
        width = -1
        prec = -1
        if width_s == "*":
            if argi < len(args) and isinstance(args[argi], int):
                width = int(args[argi])
                if width < 0:
                    flags += "-"
                    width = -width
            else:
                out.append("%!(BADWIDTH)")
            argi += 1
        elif width_s:
            width = int(width_s)
        if prec_s == "*":
            if argi < len(args) and isinstance(args[argi], int):
                prec = int(args[argi])
            else:
                out.append("%!(BADPREC)")
            argi += 1
        elif prec_s is not None:
            prec = int(prec_s) if prec_s else 0
        if argi >= len(args):
            out.append("%!" + verb + "(MISSING)")
            continue
        arg = args[argi]
        argi += 1
        out.append(_fmt_arg(arg, verb, flags, width, prec))
    if argi < len(args):
        extra = ", ".join("%s=%s" % (go_type(a), go_value(a, False)) if a is not None
                          else "<nil>" for a in args[argi:])
        out.append("%!(EXTRA " + extra + ")")
    return "".join(out)


def _pad(s: str, flags: str, width: int, numeric: bool = False) -> str:
    if width < 0 or len(s) >= width:
        return s
    if "-" in flags:
        return s + " " * (width - len(s))
    if "0" in flags and numeric:
        sign = s[0] if s and s[0] in "+-" else ""
        body = s[len(sign):]
        return sign + "0" * (width - len(s)) + body
    return " " * (width - len(s)) + s


def _bad(verb: str, arg: Any) -> str:
    if arg is None or arg is MISSING:
        return "%!" + verb + "(<nil>)"
    return "%%!%s(%s=%s)" % (verb, go_type(arg), go_value(arg, False))


def _fmt_arg(arg: Any, verb: str, flags: str, width: int, prec: int) -> str:
    if verb == "T":
        return _pad(go_type(arg) if arg is not None else "<nil>", flags, width)
    if (arg is None or arg is MISSING) and (True):
        return _pad("<nil>" if verb == "v" else "%!" + verb + "(<nil>)", flags, width)
    if isinstance(arg, (list, tuple)) and verb not in "vT" and not (
        verb in "sqxX" and all(isinstance(x, int) and not isinstance(x, bool) for x in arg)
        and False
    ):
        return "[" + " ".join(_fmt_arg(x, verb, flags, width, prec) for x in arg) + "]"
    if isinstance(arg, Mapping) and verb != "v":
        return "map[" + " ".join(
            "%s:%s" % (_fmt_arg(k, verb, flags, width, prec), _fmt_arg(arg[k], verb, flags, width, prec))
            for k in _sorted_keys(arg)) + "]"
    if isinstance(arg, bool):
        if verb in "vt":
            return _pad("true" if arg else "false", flags, width)
        return _bad(verb, arg)
    if isinstance(arg, int):
        return _fmt_int(int(arg), verb, flags, width, prec, arg)
    if isinstance(arg, float):
        return _fmt_floatv(arg, verb, flags, width, prec)
    if isinstance(arg, str):
        if verb in "vs":
            s = arg if prec < 0 else arg[:prec]
            return _pad(s, flags, width)
        if verb == "q":
            if "#" in flags and "`" not in arg:
                return _pad("`" + arg + "`", flags, width)
            return _pad(_go_quote(arg), flags, width)
        if verb in "xX":
            b = arg.encode("utf-8", "surrogateescape")
            if prec >= 0:
                b = b[:prec]
            h = b.hex()
            if " " in flags:
                h = " ".join(b[i:i + 1].hex() for i in range(len(b)))
            return _pad(h.upper() if verb == "X" else h, flags, width)
        return _bad(verb, arg)
    if verb in "vs":
        return _pad(go_value(arg, False), flags, width)
    return _bad(verb, arg)


def _fmt_int(v: int, verb: str, flags: str, width: int, prec: int, orig: Any) -> str:
    if verb in "vd":
        s = str(abs(v))
    elif verb == "b":
        s = bin(abs(v))[2:]
    elif verb == "o":
        s = oct(abs(v))[2:]
        if "#" in flags:
            s = "0" + s
    elif verb == "O":
        s = "0o" + oct(abs(v))[2:]
    elif verb in "xX":
        s = "%x" % abs(v)
        if verb == "X":
            s = s.upper()
        if "#" in flags:
            s = ("0x" if verb == "x" else "0X") + s
    elif verb == "c":
        return _pad(chr(v), flags, width)
    elif verb == "q":
        return _pad(_go_quote_rune(v), flags, width)
    elif verb == "U":
        s = "U+%04X" % v
        return _pad(s, flags, width)
    elif verb in "eEfFgG":
        return _fmt_floatv(float(v), verb, flags, width, prec) if False else _bad(verb, orig)
    else:
        return _bad(verb, orig)
    if prec >= 0:
        s = s.rjust(prec, "0") if prec else ("" if v == 0 else s)
    sign = "-" if v < 0 else ("+" if "+" in flags else (" " if " " in flags else ""))
    return _pad(sign + s, flags, width, numeric=prec < 0)


def _fmt_floatv(v: float, verb: str, flags: str, width: int, prec: int) -> str:
    if verb == "v":
        s = _fmt_float(v, "g", prec)
    elif verb in "fF":
        s = _fmt_float(v, "f", 6 if prec < 0 else prec)
    elif verb in "eE":
        s = _fmt_float(v, "e", 6 if prec < 0 else prec)
        if verb == "E":
            s = s.upper()
    elif verb in "gG":
        s = _fmt_float(v, "g", prec)
        if verb == "G":
            s = s.upper()
    else:
        return _bad(verb, v)
    if "+" in flags and not s.startswith("-"):
        s = "+" + s
    elif " " in flags and not s.startswith("-"):
        s = " " + s
    return _pad(s, flags, width, numeric=not math.isinf(v) and not math.isnan(v))


# ------------------------------------------------------------------------------- functions
class _FuncError(Exception):
    pass


class _Func:
    """A template function: ``params`` are Go parameter types ('any', 'string', 'int',
    '[]string', 'reflect'), ``variadic`` types the rest."""

    def __init__(self, fn: Callable[..., Any], params: Sequence[str], variadic: str | None = None,
                 builtin: bool = False) -> None:
        self.fn = fn
        self.params = list(params)
        self.variadic = variadic
        self.builtin = builtin


def _truth(v: Any) -> bool:
    if v is MISSING or v is None:
        return False
    if isinstance(v, GoObject):
        return True
    if isinstance(v, (str, list, tuple, Mapping, _TypedNil)):
        return len(v) > 0
    return bool(v)


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    return "invalid"


def _eq(a: Any, *bs: Any) -> bool:
    if not bs:
        raise _FuncError("missing argument for comparison")
    a = None if a is MISSING else a
    ka = _kind(a)
    for b in bs:
        b = None if b is MISSING else b
        kb = _kind(b)
        if ka != kb:
            if a is not None and b is not None:
                raise _FuncError("incompatible types for comparison")
            truth = False
        elif ka == "invalid":
            if a is None or b is None:
                truth = (a is None) == (b is None)
            elif isinstance(a, (list, tuple, Mapping)) or isinstance(b, (list, tuple, Mapping)):
                raise _FuncError("non-comparable type %s: %s" % (go_sprintf("%s", b), go_type(b)))
            else:
                truth = a is b
        else:
            truth = a == b
        if truth:
            return True
    return False


def _lt(a: Any, b: Any) -> bool:
    ka, kb = _kind(a), _kind(b)
    if ka == "invalid" or kb == "invalid":
        raise _FuncError("invalid type for comparison")
    if ka != kb:
        raise _FuncError("incompatible types for comparison")
    if ka == "bool":
        raise _FuncError("invalid type for comparison")
    return bool(a < b)


def _index_arg(i: Any, cap: int) -> int:
    if i is None or i is MISSING:
        raise _FuncError("cannot index slice/array with nil")
    if not isinstance(i, int) or isinstance(i, bool):
        raise _FuncError("cannot index slice/array with type %s" % go_type(i))
    if i < 0 or i > cap:
        raise _FuncError("index out of range: %d" % i)
    return int(i)


def _index(item: Any, *idx: Any) -> Any:
    if item is None or item is MISSING:
        raise _FuncError("index of untyped nil")
    for i in idx:
        if isinstance(item, (list, tuple, str, _TypedNil)):
            n = len(item)
            x = _index_arg(i, n)
            if x == n:
                raise _FuncError("index out of range: %d" % x)
            item = item.encode("utf-8", "surrogateescape")[x] if isinstance(item, str) else list(item)[x]
        elif isinstance(item, Mapping):
            if not isinstance(i, str):
                raise _FuncError("value has type %s; should be string" % go_type(i))
            item = item.get(i, MISSING if not isinstance(item, _StrMap) else "")
            if item is MISSING:
                item = None
        else:
            raise _FuncError("can't index item of type %s" % go_type(item))
    return item


class RawJSON(str):
    """Bytes a Go MarshalJSON method returned: ``json`` writes them as they are."""


class StrList(list[str]):
    """A Go ``[]string`` (what ``join`` takes); a plain list is a ``[]interface {}``."""


class OrderedMap(dict[str, Any]):
    """A mapping that stands for a Go struct decoded as a map: ``json`` keeps its key order
    (a Go struct's field order), everything else treats it as a map."""


class _StrMap(dict[str, str]):
    """A Go map[string]string: a missing key indexes to ""."""


def _slice(item: Any, *idx: Any) -> Any:
    if item is None or item is MISSING:
        raise _FuncError("slice of untyped nil")
    if len(idx) > 3:
        raise _FuncError("too many slice indexes: %d" % len(idx))
    if isinstance(item, str):
        if len(idx) == 3:
            raise _FuncError("cannot 3-index slice a string")
        b = item.encode("utf-8", "surrogateescape")
        cap = len(b)
    elif isinstance(item, (list, tuple)):
        cap = len(item)
    else:
        raise _FuncError("can't slice item of type %s" % go_type(item))
    bounds = [0, cap]
    for k, i in enumerate(idx):
        x = _index_arg(i, cap)
        if k < 2:
            bounds[k] = x
    if bounds[0] > bounds[1]:
        raise _FuncError("invalid slice index: %d > %d" % (bounds[0], bounds[1]))
    if len(idx) == 3 and bounds[1] > int(idx[2]):
        raise _FuncError("invalid slice index: %d > %d" % (bounds[1], idx[2]))
    if isinstance(item, str):
        return b[bounds[0]:bounds[1]].decode("utf-8", "surrogateescape")
    return list(item[bounds[0]:bounds[1]])


def _len(item: Any) -> int:
    if isinstance(item, str):
        return len(item.encode("utf-8", "surrogateescape"))
    if isinstance(item, (list, tuple, Mapping, _TypedNil)):
        return len(item)
    if item is None or item is MISSING:
        raise _FuncError("len of nil pointer")
    raise _FuncError("len of type %s" % go_type(item))


def _json(v: Any) -> str:
    """docker/cli's ``json``: encoding/json, HTML escaping off, trailing newline trimmed."""
    return _marshal(v)


def _marshal(v: Any) -> str:
    if v is MISSING:
        return "null"
    if isinstance(v, RawJSON):
        return str(v)
    if isinstance(v, GoObject):
        if v.json is not None:
            return _marshal(v.json())
        return "{" + ",".join("%s:%s" % (_json_str(k), _marshal(x)) for k, x in v.fields.items()) + "}"
    if isinstance(v, _TypedNil):
        return "null"
    if isinstance(v, str):
        return _json_str(v)
    if isinstance(v, Mapping):
        keys = list(v) if isinstance(v, OrderedMap) else sorted(v)
        return "{" + ",".join("%s:%s" % (_json_str(str(k)), _marshal(v[k])) for k in keys) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_marshal(x) for x in v) + "]"
    return gojson.marshal(v)


_HTML_UNESCAPE = {"\\u003c": "<", "\\u003e": ">", "\\u0026": "&"}


def _json_str(s: str) -> str:
    q = gojson.go_string(s)
    return re.sub(r"\\u00(3c|3e|26)", lambda m: _HTML_UNESCAPE[m.group()], q)


def _is_sep(c: str) -> bool:
    if ord(c) < 0x80:
        return not (c.isalnum() or c == "_")
    if c.isalpha() or c.isdigit():
        return False
    return c.isspace()


def _title(s: str) -> str:
    """strings.Title: upper-case the first letter of every word."""
    out = []
    prev = " "
    for c in s:
        out.append(c.upper() if _is_sep(prev) and len(c.upper()) == 1 else c)
        prev = c
    return "".join(out)


def _pad_fn(s: str, prefix: int, suffix: int) -> str:
    if s == "":
        return s
    return " " * prefix + s + " " * suffix


def _truncate(s: str, length: int) -> str:
    b = s.encode("utf-8", "surrogateescape")
    if len(b) < length:
        return s
    return b[:length].decode("utf-8", "surrogateescape")


def _split(s: str, sep: str) -> list[str]:
    if sep == "":
        return StrList(s)
    return StrList(s.split(sep))


def _not(v: Any) -> bool:
    return not _truth(v)


def _html(*args: Any) -> str:
    s = go_sprint(*args)
    return (s.replace("&", "&amp;").replace("'", "&#39;").replace("<", "&lt;")
            .replace(">", "&gt;").replace('"', "&#34;").replace("\x00", "\ufffd"))


def _urlquery(*args: Any) -> str:
    import urllib.parse

    return urllib.parse.quote_plus(go_sprint(*args), safe="")


BUILTINS: dict[str, _Func] = {
    "and": _Func(lambda *a: a, ["reflect"], "reflect", builtin=True),
    "or": _Func(lambda *a: a, ["reflect"], "reflect", builtin=True),
    "not": _Func(_not, ["reflect"]),
    "len": _Func(_len, ["reflect"]),
    "index": _Func(_index, ["reflect"], "reflect"),
    "slice": _Func(_slice, ["reflect"], "reflect"),
    "print": _Func(go_sprint, [], "any"),
    "printf": _Func(go_sprintf, ["string"], "any"),
    "println": _Func(go_sprintln, [], "any"),
    "eq": _Func(_eq, ["reflect"], "reflect"),
    "ne": _Func(lambda a, b: not _eq(a, b), ["reflect", "reflect"]),
    "lt": _Func(_lt, ["reflect", "reflect"]),
    "le": _Func(lambda a, b: _lt(a, b) or _eq(a, b), ["reflect", "reflect"]),
    "gt": _Func(lambda a, b: not (_lt(a, b) or _eq(a, b)), ["reflect", "reflect"]),
    "ge": _Func(lambda a, b: not _lt(a, b), ["reflect", "reflect"]),
    "html": _Func(_html, [], "any"),
    "urlquery": _Func(_urlquery, [], "any"),
}

DOCKER_FUNCS: dict[str, _Func] = {
    "json": _Func(_json, ["any"]),
    "split": _Func(_split, ["string", "string"]),
    "join": _Func(lambda a, sep: sep.join(a), ["[]string", "string"]),
    "title": _Func(_title, ["string"]),
    "lower": _Func(lambda s: s.lower(), ["string"]),
    "upper": _Func(lambda s: s.upper(), ["string"]),
    "pad": _Func(_pad_fn, ["string", "int", "int"]),
    "truncate": _Func(_truncate, ["string", "int"]),
}

#: docker/cli's HeaderFunctions: a table header keeps its column names (pad is not replaced)
HEADER_FUNCS: dict[str, _Func] = {
    "json": _Func(lambda v: v, ["string"]),
    "split": _Func(lambda v, _s: v, ["string", "string"]),
    "join": _Func(lambda v, _s: v, ["string", "string"]),
    "title": _Func(lambda v: v, ["string"]),
    "lower": _Func(lambda v: v, ["string"]),
    "upper": _Func(lambda v: v, ["string"]),
    "truncate": _Func(lambda v, _n: v, ["string", "int"]),
}


# -------------------------------------------------------------------------------- executor
class _Stop(Exception):
    def __init__(self, kind: str) -> None:
        self.kind = kind


class _State:
    def __init__(self, tmpl: Template, funcs: Mapping[str, _Func], missingkey: str) -> None:
        self.tmpl = tmpl
        self.funcs = funcs
        self.missingkey = missingkey
        self.out: list[str] = []
        self.node: _Node | None = None
        self.vars: list[tuple[str, Any]] = []

    def at(self, node: _Node) -> None:
        self.node = node

    def error(self, msg: str) -> TemplateError:
        name = self.tmpl.name
        if self.node is None:
            m = "template: %s: %s" % (name, msg)
        else:
            text = self.tmpl.text
            pos = self.node.pos
            before = text[:pos]
            nl = before.rfind("\n")
            col = pos if nl < 0 else pos - (nl + 1)
            line = 1 + before.count("\n")
            ctx = self.node.text()
            m = 'template: %s:%d:%d: executing %s at <%s>: %s' % (
                name, line, col, _go_quote(name), ctx, msg)
        return TemplateError(m, "".join(self.out))

    # walking
    def walk(self, dot: Any, nodes: Sequence[_Node]) -> None:
        for node in nodes:
            self.at(node)
            if isinstance(node, _Text):
                self.out.append(node.val)
            elif isinstance(node, _Action):
                assert node.pipe is not None
                val = self.pipeline(dot, node.pipe)
                if not node.pipe.decl:
                    self.at(node)
                    self.out.append(self.printable(val))
            elif isinstance(node, _Branch):
                self.branch(dot, node)
            elif isinstance(node, _Break):
                raise _Stop(node.kind)

    def printable(self, v: Any) -> str:
        if callable(v) and not isinstance(v, (GoObject, _TypedNil)):
            raise self.error("can't print %s of type func" % (self.node.text() if self.node else ""))
        return go_value(v, True)

    def branch(self, dot: Any, node: _Branch) -> None:
        mark = len(self.vars)
        try:
            assert node.pipe is not None
            val = self.pipeline(dot, node.pipe)
            if node.kind == "range":
                self.range(dot, node, val)
                return
            if _truth(val):
                self.walk(val if node.kind == "with" else dot, node.body)
            elif node.else_body is not None:
                self.walk(dot, node.else_body)
        finally:
            del self.vars[mark:]

    def range(self, dot: Any, node: _Branch, val: Any) -> None:
        assert node.pipe is not None
        if isinstance(val, (list, tuple, _TypedNil)):
            pairs: list[tuple[Any, Any]] = list(enumerate(val))
        elif isinstance(val, Mapping):
            pairs = [(k, val[k]) for k in _sorted_keys(val)]
        elif val is MISSING or val is None:
            pairs = []
        else:
            raise self.error("range can't iterate over %s" % go_value(val, False))
        decl = node.pipe.decl
        mark = len(self.vars)
        try:
            for k, v in pairs:
                if len(decl) == 1:
                    self.vars[mark - 1] = (decl[0], v)
                elif len(decl) == 2:
                    self.vars[mark - 2] = (decl[0], k)
                    self.vars[mark - 1] = (decl[1], v)
                try:
                    self.walk(v, node.body)
                except _Stop as s:
                    if s.kind == "break":
                        break
                finally:
                    del self.vars[mark:]
        except _Stop:
            raise
        if not pairs and node.else_body is not None:
            self.walk(dot, node.else_body)

    # evaluation
    def pipeline(self, dot: Any, pipe: _Pipe) -> Any:
        self.at(pipe)
        value: Any = _NOFINAL
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
            if value is None:
                value = MISSING  # interface{} holding nil: reflect.ValueOf(nil)
        for name in pipe.decl:
            if pipe.is_assign:
                for i in range(len(self.vars) - 1, -1, -1):
                    if self.vars[i][0] == name:
                        self.vars[i] = (name, value)
                        break
            else:
                self.vars.append((name, value))
        return value

    def command(self, dot: Any, cmd: _Command, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, _Field):
            self.at(first)
            return self.field_chain(dot, dot, first, first.idents, cmd.args, final)
        if isinstance(first, _Chain):
            self.at(first)
            assert first.node is not None
            if isinstance(first.node, _Nil):
                raise self.error("indirection through explicit nil in %s" % first.text())
            recv = self.arg(dot, first.node)
            return self.field_chain(dot, recv, first, first.fields, cmd.args, final)
        if isinstance(first, _Ident):
            return self.function(dot, first, cmd, cmd.args, final)
        if isinstance(first, _Pipe):
            self.not_a_function(cmd.args, final)
            return self.pipeline(dot, first)
        if isinstance(first, _Var):
            self.at(first)
            value = self.var(first.idents[0])
            if len(first.idents) == 1:
                self.not_a_function(cmd.args, final)
                return value
            return self.field_chain(dot, value, first, first.idents[1:], cmd.args, final)
        self.at(first)
        self.not_a_function(cmd.args, final)
        if isinstance(first, _Dot):
            return dot
        if isinstance(first, _Nil):
            raise self.error("nil is not a command")
        assert isinstance(first, _Const)
        v = first.value
        if isinstance(v, _Rune):
            return int(v)
        if isinstance(v, _Float):
            return float(v)
        return v

    def not_a_function(self, args: list[_Node], final: Any) -> None:
        if len(args) > 1 or final is not _NOFINAL:
            raise self.error("can't give argument to non-function %s" % args[0].text())

    def var(self, name: str) -> Any:
        for n, v in reversed(self.vars):
            if n == name:
                return v
        raise self.error("undefined variable: %s" % name)

    def field_chain(self, dot: Any, recv: Any, node: _Node, idents: list[str], args: list[_Node],
                    final: Any) -> Any:
        iface = False
        for ident in idents[:-1]:
            nxt = self.field(dot, ident, node, [], _NOFINAL, recv, iface)
            iface = isinstance(recv, Mapping) and not isinstance(nxt, GoObject)
            recv = nxt
        return self.field(dot, idents[-1], node, args, final, recv, iface)

    def field(self, dot: Any, name: str, node: _Node, args: list[_Node], final: Any,
              recv: Any, iface: bool = False) -> Any:
        if recv is MISSING:
            if self.missingkey == "error":
                raise self.error("nil data; no entry for key %s" % _go_quote(name))
            return MISSING
        if recv is None:
            raise self.error("nil pointer evaluating interface {}.%s" % name)
        has_args = len(args) > 1 or final is not _NOFINAL
        if isinstance(recv, GoObject):
            if name in recv.methods:
                return self.call(dot, _Func(recv.methods[name], ["any"] * _arity(recv.methods[name])),
                                 node, name, args, final)
            if name in recv.fields:
                if has_args:
                    raise self.error("%s has arguments but cannot be invoked as function" % name)
                return recv.fields[name]
            if recv.type_name.startswith("*") and recv.fields.get("__nil__"):
                raise self.error("nil pointer evaluating %s.%s" % (recv.type_name, name))
            raise self.error("can't evaluate field %s in type %s" % (name, recv.type_name))
        if isinstance(recv, _TypedNil) and recv.kind == "ptr":
            raise self.error("nil pointer evaluating %s.%s" % (recv.gotype, name))
        if isinstance(recv, (Mapping, _TypedNil)) and (not isinstance(recv, _TypedNil) or recv.kind == "map"):
            if has_args:
                raise self.error("%s is not a method but has arguments" % name)
            if isinstance(recv, _TypedNil) or name not in recv:
                if self.missingkey == "error":
                    raise self.error("map has no entry for key %s" % _go_quote(name))
                if isinstance(recv, _StrMap) or self.missingkey == "zero":
                    return "" if isinstance(recv, _StrMap) else None
                return MISSING
            return recv[name]
        raise self.error("can't evaluate field %s in type %s"
                         % (name, "interface {}" if iface else go_type(recv)))

    def function(self, dot: Any, node: _Ident, cmd: _Command, args: list[_Node], final: Any) -> Any:
        self.at(node)
        fn = self.funcs.get(node.name)
        if fn is None:
            raise self.error("%s is not a defined function" % _go_quote(node.name))
        return self.call(dot, fn, cmd, node.name, args, final)

    def call(self, dot: Any, fn: _Func, node: _Node, name: str, args: list[_Node], final: Any) -> Any:
        argn = args[1:]
        num_in = len(argn) + (0 if final is _NOFINAL else 1)
        nfixed = len(fn.params)
        if fn.variadic is not None:
            if num_in < nfixed:
                raise self.error("wrong number of args for %s: want at least %d got %d"
                                 % (name, nfixed, len(argn)))
        elif num_in != nfixed:
            raise self.error("wrong number of args for %s: want %d got %d" % (name, nfixed, num_in))
        if fn.builtin and name in ("and", "or"):
            v: Any = MISSING
            for a in argn:
                v = self.arg(dot, a)
                if _truth(v) == (name == "or"):
                    return v
            if final is not _NOFINAL:
                v = final
            return v
        vals: list[Any] = []
        for i, a in enumerate(argn):
            typ = fn.params[i] if i < nfixed else fn.variadic
            assert typ is not None
            vals.append(self.typed_arg(dot, a, typ))
        if final is not _NOFINAL:
            typ = fn.params[num_in - 1] if num_in - 1 < nfixed else fn.variadic
            assert typ is not None
            vals.append(self.validate(final, typ))
        try:
            return fn.fn(*vals)
        except _FuncError as e:
            self.at(node)
            raise self.error("error calling %s: %s" % (name, e)) from None

    def arg(self, dot: Any, node: _Node) -> Any:
        self.at(node)
        if isinstance(node, _Dot):
            return dot
        if isinstance(node, _Nil):
            return None
        if isinstance(node, _Field):
            return self.field_chain(dot, dot, node, node.idents, [node], _NOFINAL)
        if isinstance(node, _Var):
            value = self.var(node.idents[0])
            if len(node.idents) == 1:
                return value
            return self.field_chain(dot, value, node, node.idents[1:], [node], _NOFINAL)
        if isinstance(node, _Pipe):
            return self.pipeline(dot, node)
        if isinstance(node, _Chain):
            return self.command(dot, _Command(node.pos, node.line, [node]), _NOFINAL)
        if isinstance(node, _Ident):
            fn = self.funcs[node.name]
            return self.call(dot, fn, node, node.name, [node], _NOFINAL)
        assert isinstance(node, _Const)
        v = node.value
        if isinstance(v, _Rune):
            return int(v)
        if isinstance(v, _Float):
            return float(v)
        return v

    def typed_arg(self, dot: Any, node: _Node, typ: str) -> Any:
        if isinstance(node, _Const) and typ not in ("any", "reflect"):
            self.at(node)
            v = node.value
            if typ == "string":
                if not isinstance(v, str):
                    raise self.error("expected string; found %s" % node.text())
                return v
            if typ == "int":
                if isinstance(v, bool) or not isinstance(v, int):
                    raise self.error("expected integer; found %s" % node.text())
                return int(v)
        if isinstance(node, _Nil):
            self.at(node)
            if typ in ("string", "int"):
                raise self.error("cannot assign nil to %s" % typ)
            return None
        v = self.arg(dot, node)
        return self.validate(v, typ)

    def validate(self, v: Any, typ: str) -> Any:
        if typ == "reflect":
            return v
        if v is MISSING:
            if typ in ("any", "[]string"):
                return None
            raise self.error("invalid value; expected %s" % typ)
        if typ == "any":
            return v
        ok = {
            "string": isinstance(v, str),
            "int": isinstance(v, int) and not isinstance(v, bool),
            "[]string": isinstance(v, StrList) or v is NIL_SLICE,
        }[typ]
        if not ok:
            raise self.error("wrong type for value; expected %s; got %s" % (typ, go_type(v)))
        return v


class _NoFinal:
    pass


_NOFINAL: Any = _NoFinal()


def _arity(fn: Callable[..., Any]) -> int:
    import inspect

    return sum(1 for p in inspect.signature(fn).parameters.values() if p.default is p.empty)


@dataclass
class Template:
    """A parsed template."""

    name: str
    text: str
    root: list[_Node]
    funcs: dict[str, _Func]

    def execute(self, data: Any, *, missingkey: str = "default",
                funcs: Mapping[str, _Func] | None = None) -> str:
        """Run the template on ``data``; ``missingkey`` is Go's option (default, zero, error)."""
        f = dict(self.funcs)
        if funcs:
            f.update(funcs)
        st = _State(self, f, missingkey)
        st.vars.append(("$", MISSING if data is None else data))
        try:
            st.walk(MISSING if data is None else data, self.root)
        except RecursionError:
            raise st.error("exceeded maximum template depth (100000)") from None
        return "".join(st.out)


def parse(text: str, *, name: str = "", funcs: Mapping[str, _Func] | None = None,
          docker: bool = True) -> Template:
    """Parse ``text`` with Go's builtins (and docker/cli's functions unless ``docker=False``)."""
    f = dict(BUILTINS)
    if docker:
        f.update(DOCKER_FUNCS)
    if funcs:
        f.update(funcs)
    p = _Parser(name, text, f)
    root = p.parse()
    return Template(name, text, root, f)


def string_map(m: Mapping[str, str]) -> dict[str, str]:
    """A Go ``map[string]string`` (a missing key is ``""``, as a table header's is)."""
    return _StrMap(m)
