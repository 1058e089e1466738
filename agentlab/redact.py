"""Redaction: keep secrets out of traces, memory and logs.

A :class:`Redactor` replaces secrets with ``[REDACTED]`` in free text, JSON
documents, plain Python objects, messages and trace events:

* **values that look like secrets** wherever they appear (OpenAI-style ``sk-``
  keys, ``Bearer`` tokens, AWS access key ids, GitHub and Slack tokens, JWTs, PEM
  private keys, the password of ``scheme://user:password@host`` URLs);
* **values of sensitive keys**: a JSON or dict key, or a ``key=value`` /
  ``key: value`` / ``"key": "value"`` pair in text, whose name matches a key
  pattern (password, token, api_key, ...). Usage counters such as
  ``max_tokens``, ``input_tokens`` or ``token_count`` are *not* sensitive;
* **literal secrets** registered at run time (:func:`register_secret`), such as
  the exact API key a model was configured with.

Decisions on what does not count as a secret: ``tokens``/``max_tokens``/
``token_count`` and any key with a counter part (:data:`DEFAULT_SAFE_KEY_PARTS`);
words that merely contain a pattern (``passage``, ``secretary``, ``author``,
``tokenizer``, ``monkey``); a bare ``key`` or ``pass`` (too common: eval results,
dict keys); ``session``/``session_id`` (agentlab's conversation ids); values that
are ``null``, booleans, empty or already redacted; public PEM blocks
(certificates); ``user@host`` URLs without a password. ``oauth`` *is* sensitive
(it ends with ``auth``). In text a key must be followed by ``:``/``=``/``=>``:
``my password is hunter2`` is not caught.

It runs on every trace event, so the common case (nothing to redact) is one
pass of substring checks over the event's strings and returns the very same
objects; strings already found clean (tool and model names, dict keys, a tool
call's arguments seen again in its result event) are remembered and not scanned
again, until a secret is registered. Redaction never mutates its input; the
parts that needed no change are shared, not copied.

The process-wide redactor is :func:`default_redactor` (configure it with
:func:`configure_redaction`); :func:`install_log_redaction` redacts the records
of the ``agentlab`` loggers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import operator
import re
import threading
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union

from pydantic import BaseModel

from agentlab.errors import UserError
from agentlab.events import Event
from agentlab.messages import Message

__all__ = [
    "DEFAULT_KEY_PATTERNS",
    "DEFAULT_SAFE_KEY_PARTS",
    "DEFAULT_VALUE_PATTERNS",
    "REPLACEMENT",
    "UNTOUCHED_EVENT_FIELDS",
    "UNTOUCHED_MESSAGE_FIELDS",
    "RedactingFilter",
    "Redactor",
    "ValuePattern",
    "configure_redaction",
    "default_redactor",
    "install_log_redaction",
    "redact_event",
    "redact_json_text",
    "redact_message",
    "redact_obj",
    "redact_text",
    "register_secret",
    "reset_redaction",
    "uninstall_log_redaction",
]

REPLACEMENT = "[REDACTED]"
MIN_SECRET_LENGTH = 6
"""Registered literal secrets shorter than this are ignored (they would redact
ordinary words)."""

_T = TypeVar("_T")
_SecretState = tuple[tuple[str, ...], re.Pattern[str] | None, dict[str, None]]


@dataclass(frozen=True, slots=True)
class ValuePattern:
    """A regular expression for secret values found anywhere in text.

    With a named group ``secret`` only that group is replaced (``Bearer
    [REDACTED]``), otherwise the whole match. `triggers` are lowercase substrings
    one of which every match contains: strings holding none of them skip the
    regex (the fast path). A pattern without triggers is searched in every string.
    Use named groups only (numeric back-references are refused).
    """

    name: str
    regex: str
    triggers: tuple[str, ...] = ()
    flags: int = 0


_TOKEN_CHARS = r"A-Za-z0-9._~+/-"
DEFAULT_VALUE_PATTERNS: tuple[ValuePattern, ...] = (
    ValuePattern(
        "pem_private_key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
        r"(?P<secret>(?:(?!-----END)[\s\S])+)",
        ("private key",),
    ),
    ValuePattern(
        "url_credentials",
        # Bounded parts: the password may hold ':' and '@' (the last '@' ends it).
        r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s:@/?#\"'<>]{0,256}:"
        r"(?P<secret>[^\s/?#\"'<>]{1,256})@",
        ("@",),
    ),
    ValuePattern(
        "bearer_token",
        # The token needs a digit or symbol, or 20 letters: "the bearer of bad news" stays.
        rf"(?<![A-Za-z0-9_-])(?:Bearer|bearer|BEARER)[ \t]+"
        rf"(?P<secret>(?=[{_TOKEN_CHARS}]*[0-9._~+/-]|[A-Za-z]{{20}})[{_TOKEN_CHARS}]+=*)",
        ("bearer",),
    ),
    ValuePattern("openai_key", r"(?<![A-Za-z0-9_-])sk-[A-Za-z0-9_-]{16,}", ("sk-",)),
    ValuePattern(
        "aws_access_key_id",
        r"(?<![A-Z0-9])AKIA[0-9A-Z]{16}(?![0-9A-Z])",
        ("akia",),
    ),
    ValuePattern(
        "github_token",
        r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    ValuePattern("slack_token", r"(?<![A-Za-z0-9])xox[baprs]-[A-Za-z0-9-]{10,}", ("xox",)),
    ValuePattern(
        "jwt",
        r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
        ("eyj",),
    ),
)
"""The built-in secret value patterns (extend with ``[*DEFAULT_VALUE_PATTERNS, ...]``)."""

DEFAULT_KEY_PATTERNS: tuple[str, ...] = (
    "passwords?",
    "passwd",
    "pwd",
    "pass_?phrase",
    "secrets?",
    "token",
    "api_?keys?",
    "access_?keys?",
    "private_?keys?",
    "authorization",
    "auth",
    "credentials?",
    "cookies?",
    "session_?keys?",
)
"""Sensitive key names, as regular expressions over the *normalized* key.

A key is normalized to lowercase snake case (``apiKey``, ``API-Key`` and
``api.key`` all become ``api_key``); a pattern must match whole ``_``-separated
parts, or the end of one (``accesstoken``, ``oauth``), so ``tokens`` and
``tokenizer`` do not match ``token`` and ``secretary`` does not match ``secret``.
``client_secret``, ``secret_key``, ``x_api_key`` and ``access_token`` match
through their parts. In text, ``_`` in a pattern also stands for ``-``, ``.`` or
nothing.
"""
_DEFAULT_KEY_TRIGGERS = ("pass", "pwd", "secret", "token", "key", "auth", "credential", "cookie")

DEFAULT_SAFE_KEY_PARTS: frozenset[str] = frozenset(
    {
        "count",
        "counts",
        "num",
        "number",
        "limit",
        "limits",
        "max",
        "min",
        "total",
        "usage",
        "used",
        "budget",
        "length",
        "len",
        "size",
        "type",
        "kind",
        "ttl",
        "expiry",
        "expires",
        "expiration",
        "estimate",
        "remaining",
    }
)
"""A sensitive-looking key with one of these parts describes a secret, it does not
hold one (``token_count``, ``max_token_length``, ``token_type``, ``password_min_length``)."""

UNTOUCHED_EVENT_FIELDS: frozenset[str] = frozenset({"kind", "id", "run_id", "eval_id", "case_id"})
"""Event fields never redacted: the kind and generated ids (joins rely on them)."""
UNTOUCHED_MESSAGE_FIELDS: frozenset[str] = frozenset({"role", "id", "tool_call_id", "name"})
"""Message fields never redacted: the role, ids and tool names."""

_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_KEY_CACHE_SIZE = 4096
_KNOWN_CLEAN_SIZE = 4096
_KNOWN_CLEAN_MAX_LENGTH = 1024
"""Strings found clean are remembered (up to this many, this long) so that the
fast path does not scan them again: tool and model names, dict keys, statuses."""
_ASCII_LOWER = {c: c + 32 for c in range(65, 91)}
_CAMEL_1 = re.compile(r"(.)([A-Z][a-z]+)")
_CAMEL_2 = re.compile(r"([a-z0-9])([A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_NUMBERED_BACKREF = re.compile(r"\\[1-9]")
_NAMED_GROUP = re.compile(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>")
_NAMED_BACKREF = re.compile(r"\(\?P=([A-Za-z_][A-Za-z0-9_]*)\)")
_INLINE_FLAGS = ((re.IGNORECASE, "i"), (re.MULTILINE, "m"), (re.DOTALL, "s"), (re.VERBOSE, "x"))
_LITERAL_RUN = re.compile(r"[a-z0-9]+")
_BENIGN_VALUES = frozenset({"null", "none", "true", "false", '""', "''", '\\"\\"'})


def normalize_key(key: str) -> str:
    """`key` in lowercase snake case: ``apiKey``, ``X-Api-Key``, ``APIKey`` -> ``api_key``..."""
    key = _CAMEL_2.sub(r"\1_\2", _CAMEL_1.sub(r"\1_\2", key))
    return _NON_ALNUM.sub("_", key.lower()).strip("_")


def _compile(pattern: str, flags: int, what: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise UserError(
            f"redaction {what} {pattern!r} is not a valid regular expression: {exc}"
        ) from exc


def _key_trigger(pattern: str) -> str | None:
    """A lowercase literal every key matching `pattern` contains, if one is obvious."""
    if any(c in pattern for c in "|()[].\\^$+{"):
        return None
    runs = []
    for m in _LITERAL_RUN.finditer(pattern):
        run = m.group()
        if pattern[m.end() : m.end() + 1] in ("?", "*"):
            run = run[:-1]
        runs.append(run)
    best = max(runs, key=len, default="")
    return best if len(best) >= 3 else None


def _as_value_pattern(p: str | re.Pattern[str] | ValuePattern, i: int) -> ValuePattern:
    if isinstance(p, ValuePattern):
        return p
    if isinstance(p, re.Pattern):
        return ValuePattern(f"pattern_{i}", p.pattern, (), p.flags & ~re.UNICODE)
    if isinstance(p, str):
        return ValuePattern(f"pattern_{i}", p)
    raise UserError(
        f"redaction value pattern {p!r} must be a str, a compiled regex or a ValuePattern"
    )


def _combine(patterns: tuple[ValuePattern, ...]) -> re.Pattern[str] | None:
    """One regex for all value patterns: pattern i is group ``_v{i}``, its
    ``secret`` group ``_s{i}`` (its other named groups are prefixed to stay unique)."""
    parts = []
    for i, p in enumerate(patterns):
        _compile(p.regex, p.flags, "value pattern")
        if _NUMBERED_BACKREF.search(p.regex):
            raise UserError(
                f"redaction value pattern {p.regex!r} uses a numbered back-reference; "
                "use a named group and (?P=name) instead"
            )

        def rename(name: str, i: int = i) -> str:
            return f"_s{i}" if name == "secret" else f"_p{i}_{name}"

        src = _NAMED_GROUP.sub(lambda m: f"(?P<{rename(m[1])}>", p.regex)
        src = _NAMED_BACKREF.sub(lambda m: f"(?P={rename(m[1])})", src)
        inline = "".join(letter for flag, letter in _INLINE_FLAGS if p.flags & flag)
        if inline:
            src = f"(?{inline}:{src})"
        parts.append(f"(?P<_v{i}>{src})")
    return re.compile("|".join(parts)) if parts else None


def _trigger_checks(triggers: Iterable[str]) -> tuple[str | re.Pattern[str], ...]:
    """The checks for `triggers`: a substring test each, except that three or more
    sharing a first character become one regex (one pass instead of several)."""
    by_first: dict[str, list[str]] = {}
    for t in dict.fromkeys(triggers):
        by_first.setdefault(t[:1], []).append(t)
    checks: list[str | re.Pattern[str]] = []
    for group in by_first.values():
        if len(group) >= 3:
            checks.append(re.compile("|".join(re.escape(t) for t in group)))
        else:
            checks.extend(group)
    return tuple(checks)


def _end_of_line(s: str, pos: int) -> int:
    """Where the line (or the quoted string) holding `pos` ends."""
    ends = [i for i in (s.find(c, pos) for c in "\n\"'") if i >= 0]
    return min(ends, default=len(s))


def _lower_aligned(s: str) -> str:
    """`s` lowercased with every index unchanged (``str.lower`` may change lengths)."""
    return s.lower() if s.isascii() else s.translate(_ASCII_LOWER)


class Redactor:
    """Replaces secrets with `replacement` in text, JSON, objects, messages and events.

    `key_patterns` and `value_patterns` default to :data:`DEFAULT_KEY_PATTERNS` and
    :data:`DEFAULT_VALUE_PATTERNS` (pass ``[*DEFAULT_..., extra]`` to extend them);
    `secrets` are literal strings always redacted (see :meth:`add_secret`).
    `safe_key_parts` defaults to :data:`DEFAULT_SAFE_KEY_PARTS`. A redactor built
    with ``enabled=False`` returns everything unchanged. Thread-safe.
    """

    def __init__(
        self,
        key_patterns: Iterable[str] | None = None,
        value_patterns: Iterable[str | re.Pattern[str] | ValuePattern] | None = None,
        replacement: str = REPLACEMENT,
        *,
        secrets: Iterable[str] = (),
        safe_key_parts: Iterable[str] | None = None,
        enabled: bool = True,
    ) -> None:
        if not isinstance(replacement, str) or not replacement:
            raise UserError("the redaction replacement must be a non-empty string")
        self.replacement = replacement
        self.enabled = enabled
        self._lock = threading.Lock()
        # Key names.
        keys = tuple(DEFAULT_KEY_PATTERNS if key_patterns is None else key_patterns)
        self.key_patterns = keys
        for p in keys:
            _compile(p, 0, "key pattern")
        self._key_re: re.Pattern[str] | None = None
        self._pair_re: re.Pattern[str] | None = None
        self._key_triggers: tuple[str, ...] = ()
        self._key_always = False
        if keys:
            alternatives = "|".join(f"(?:{p})" for p in keys)
            self._key_re = re.compile(rf"(?:^|_)[a-z0-9]*?(?:{alternatives})(?=_|$)")
            if key_patterns is None:
                self._key_triggers = _DEFAULT_KEY_TRIGGERS
            else:
                found = [_key_trigger(p) for p in keys]
                self._key_always = None in found
                self._key_triggers = tuple(sorted({t for t in found if t}))
            self._pair_re = self._build_pair_re(keys)
        self.safe_key_parts = frozenset(
            DEFAULT_SAFE_KEY_PARTS if safe_key_parts is None else safe_key_parts
        )
        self._key_cache: dict[str, bool] = {}
        # Values.
        values = tuple(
            _as_value_pattern(p, i)
            for i, p in enumerate(
                DEFAULT_VALUE_PATTERNS if value_patterns is None else value_patterns
            )
        )
        self.value_patterns = values
        self._value_re = _combine(values)
        self._value_always = any(not p.triggers for p in values)
        self._value_triggers = _trigger_checks(t.lower() for p in values for t in p.triggers)
        self._value_secret_groups = tuple(
            f"_s{i}" if f"_s{i}" in (self._value_re.groupindex if self._value_re else {}) else None
            for i in range(len(values))
        )
        # Literal secrets: (secrets longest first, their regex, strings known to be
        # clean with them), swapped as one value.
        self._secret_state: _SecretState = ((), None, {})
        for secret in secrets:
            self.add_secret(secret)

    def _build_pair_re(self, keys: tuple[str, ...]) -> re.Pattern[str]:
        """``key <sep> value`` in lowercased text, starting at a sensitive word; the
        rest of the key before it is found by walking back (see :meth:`_redact_pairs`)."""
        words = "|".join(f"(?:{p.replace('_', '[-_.]?')})" for p in keys)
        red = re.escape(self.replacement.lower())
        bare = r"[^\s\"',;&)}\]<>]+"
        return re.compile(
            rf"(?:{words})(?P<rest>[\w.-]*)(?P<kq>\\?[\"']|)(?P<sep>[ \t]*(?::|=>?)[ \t]*)"
            rf"(?P<val>(?P<red>{red})"
            r'|(?P<eq>\\"(?:[^"\\]|\\(?!"))*\\")'
            r'|(?P<dq>"(?:[^"\\\n]|\\.)*")'
            r"|(?P<sq>'(?:[^'\\\n]|\\.)*')"
            rf"|(?P<sch>(?:basic|bearer|token|digest|negotiate|apikey)[ \t]+)(?P<cred>{red}|{bare})"
            rf"|(?P<bare>{bare}))"
        )

    def __repr__(self) -> str:
        state = "enabled" if self.enabled else "disabled"
        return (
            f"Redactor({state}, {len(self.key_patterns)} key patterns, "
            f"{len(self.value_patterns)} value patterns, {len(self._secret_state[0])} secrets)"
        )

    # -- literal secrets -------------------------------------------------------------

    def add_secret(self, value: str | None) -> bool:
        """Always redact the literal `value`; False (ignored) when it is shorter than
        :data:`MIN_SECRET_LENGTH` characters."""
        if not isinstance(value, str):
            return False
        value = value.strip()
        if len(value) < MIN_SECRET_LENGTH:
            return False
        with self._lock:
            current = self._secret_state[0]
            if value in current:
                return True
            ordered = tuple(sorted((*current, value), key=len, reverse=True))
            regex = re.compile("|".join(re.escape(s) for s in ordered))
            self._secret_state = (ordered, regex, {})  # a new secret: nothing known clean
        return True

    @property
    def secrets(self) -> tuple[str, ...]:
        """The literal secrets this redactor replaces."""
        return self._secret_state[0]

    # -- keys ------------------------------------------------------------------------

    def is_sensitive_key(self, key: str) -> bool:
        """Whether the value of a field named `key` must be redacted."""
        cache = self._key_cache
        hit = cache.get(key)
        if hit is not None:
            return hit
        result = False
        if self._key_re is not None:
            norm = normalize_key(key)
            result = bool(self._key_re.search(norm)) and self.safe_key_parts.isdisjoint(
                norm.split("_")
            )
        if len(cache) >= _KEY_CACHE_SIZE:
            cache.clear()
        cache[key] = result
        return result

    # -- text ------------------------------------------------------------------------

    def _scan(self, s: str, secrets: tuple[str, ...] | None = None) -> int:
        """Which passes `s` may need: 1 literal secrets, 2 value patterns, 4 key pairs."""
        flags = 0
        for secret in self._secret_state[0] if secrets is None else secrets:
            if secret in s:
                flags = 1
                break
        low = s.lower()
        if self._value_always:
            flags |= 2
        else:
            for t in self._value_triggers:
                if (t in low) if type(t) is str else t.search(low):  # type: ignore[union-attr]
                    flags |= 2
                    break
        if self._pair_re is not None and (":" in s or "=" in s):
            if self._key_always:
                flags |= 4
            else:
                for t in self._key_triggers:
                    if t in low:
                        flags |= 4
                        break
        return flags

    def redact_text(self, s: str) -> str:
        """Free text with secret values, ``key=value``/``key: value``/``"key": "value"``
        pairs of sensitive keys and literal secrets redacted (`s` itself if none)."""
        if not s or not self.enabled:
            return s
        flags = self._scan(s)
        return self._redact_text(s, flags) if flags else s

    def _redact_text(self, s: str, flags: int) -> str:
        out = s
        if flags & 1:
            regex = self._secret_state[1]
            if regex is not None:
                out = regex.sub(self.replacement.replace("\\", "\\\\"), out)
        if flags & 2 and self._value_re is not None:
            out = self._value_re.sub(self._replace_value_match, out)
        if flags & 4:
            out = self._redact_pairs(out)
        return s if out == s else out

    def _replace_value_match(self, m: re.Match[str]) -> str:
        group = self._value_secret_groups[int(m.lastgroup[2:])] if m.lastgroup else None
        if group is not None and m.start(group) >= 0:
            start, end = m.span(group)
            if m.string[start:end] == self.replacement:
                return m.group()
            base = m.start()
            text = m.group()
            return text[: start - base] + self.replacement + text[end - base :]
        return self.replacement

    def _redact_pairs(self, s: str) -> str:
        assert self._pair_re is not None
        low = _lower_aligned(s)
        search = self._pair_re.search
        red = self.replacement
        pieces: list[str] = []
        last = pos = 0
        while (m := search(low, pos)) is not None:
            start = m.start()
            while start > 0 and s[start - 1] in _KEY_CHARS:
                start -= 1
            kq = m["kq"]
            sensitive = self.is_sensitive_key(s[start : m.end("rest")])
            if sensitive and kq and s[max(0, start - len(kq)) : start] != kq:
                sensitive = False
            value = s[m.start("val") : m.end("val")]
            if not sensitive or m["red"] is not None or value.lower() in _BENIGN_VALUES:
                pos = max(m.end("sep"), pos + 1)
                continue
            if m["eq"] is not None:
                new = f'\\"{red}\\"'
            elif m["dq"] is not None or m["sq"] is not None:
                new = value[0] + red + value[0]
                if value[1:-1] == red:
                    new = value
            elif m["sch"] is not None:
                new = s[m.start("sch") : m.end("sch")] + red
                if m["cred"] == red.lower():
                    new = value
            elif kq == '"' or kq == '\\"':
                new = f"{kq}{red}{kq}"  # keep JSON-ish text valid: "pin": 1234 -> "pin": "..."
            else:
                new = red
            end = m.end("val")
            if m["bare"] is not None and "cookie" in low[start : m.end("rest")]:
                # "Cookie: a=1; sessionid=..." holds several values: up to the line's end.
                end = _end_of_line(s, end)
            pieces.append(s[last : m.start("val")])
            pieces.append(new)
            last = pos = end
        if not pieces:
            return s
        pieces.append(s[last:])
        return "".join(pieces)

    # -- JSON and objects ------------------------------------------------------------

    def redact_json_text(self, s: str) -> str:
        """A JSON document (tool-call arguments, a tool result) with the values of
        sensitive keys at any depth replaced and every string redacted as text,
        re-serialized compactly; `s` itself when nothing changed. Text that is not
        a JSON object or array is redacted with :meth:`redact_text`."""
        if not s or not self.enabled:
            return s
        flags = self._scan(s)
        is_doc = s[0] in "{[" or s.lstrip()[:1] in ("{", "[")
        if not flags and not (is_doc and "\\u" in s):  # \u escapes can hide any trigger
            return s
        if not is_doc:
            return self._redact_text(s, flags)
        try:
            obj = json.loads(s)
        except (ValueError, RecursionError):
            return self._redact_text(s, flags) if flags else s
        new = self._walk(obj)
        if new is obj:
            return s
        return json.dumps(new, ensure_ascii=False, separators=(",", ":"))

    def redact_obj(self, obj: _T) -> _T:
        """`obj` (dicts, lists, tuples, strings, messages, dataclasses, nested) with
        secrets redacted; never mutated. Unchanged parts are shared (and `obj`
        itself is returned when nothing needed redacting)."""
        if not self.enabled or self._clean(obj):
            return obj
        return typing.cast(_T, self._walk(obj))

    def _clean(self, v: Any) -> bool:
        """True when `v` certainly holds nothing to redact, the fast path: its strings
        (and dict keys, each followed by ``:``) not already known to be clean are
        joined and scanned once; the ones found clean are remembered."""
        state = self._secret_state
        known = state[2]
        out: list[str] = []
        if not self._gather(v, out, known):
            return False
        if not out:
            return True
        joined = "\x00".join(out)
        if self._scan(joined, state[0]) or "\\u" in joined:
            return False
        # Remember them only when they hold no sensitive key name either (the scan
        # looks for those only in text with ':' or '='): a string remembered as
        # clean may later be a dict key.
        if not (":" in joined or "=" in joined or self._pair_re is None):
            if self._key_always:
                return True
            low = joined.lower()
            for t in self._key_triggers:
                if t in low:
                    return True
        if len(known) + len(out) > _KNOWN_CLEAN_SIZE:
            known.clear()
        for s in out:
            if len(s) <= _KNOWN_CLEAN_MAX_LENGTH:
                known[s] = None
        return True

    def _gather(self, v: Any, out: list[str], known: dict[str, None]) -> bool:
        """Append the strings of `v` not in `known` to `out` (in no particular order);
        False for a type :meth:`_walk` handles in a way this cannot predict. It runs
        on every event: containers go on a stack (no call per container), strings,
        None and numbers are handled inline."""
        if type(v) is str:
            if v not in known:
                out.append(v)
            return True
        stack = [v]
        while stack:
            v = stack.pop()
            t = type(v)
            items: Iterable[Any]
            if t is list or t is tuple:
                items = v
            elif t is dict:
                if not known.keys() >= v.keys():  # usually every key was seen clean before
                    for k in v:
                        if type(k) is str and k not in known:
                            out.append(k)
                            out.append(":")
                items = v.values()
            else:
                getter = _GETTERS.get(t) or _fields_getter(v)
                if getter is None:
                    return False
                items = getter(v)
            for x in items:
                tx = type(x)
                if tx is str:
                    if x not in known:
                        out.append(x)
                elif tx not in _SCALARS:
                    stack.append(x)
        return True

    def _walk(self, v: Any) -> Any:
        t = type(v)
        if t is str:
            return self.redact_json_text(v)
        if t is dict:
            return self._walk_dict(v)
        if t is list or t is tuple:
            out: list[Any] | None = None
            for i, x in enumerate(v):
                nx = self._walk(x)
                if nx is not x:
                    if out is None:
                        out = list(v)
                    out[i] = nx
            if out is None:
                return v
            return out if t is list else tuple(out)
        if v is None or t is int or t is float or t is bool:
            return v
        if isinstance(v, BaseModel):
            return self._walk_model(v)
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return self._walk_dataclass(v)
        if isinstance(v, str):
            return self._walk(str(v))
        if isinstance(v, Mapping):
            return self._walk_dict(dict(v))
        return v

    def _walk_dict(self, d: dict[Any, Any]) -> dict[Any, Any]:
        out: dict[Any, Any] | None = None
        for k, v in d.items():
            nk = self.redact_text(k) if type(k) is str else k
            if type(k) is str and self._holds_secret(v) and self.is_sensitive_key(k):
                nv: Any = self.replacement
            else:
                nv = self._walk(v)
            if (nk is not k or nv is not v) and out is None:
                out = {}
                for k2, v2 in d.items():  # the items before the first change, as they are
                    if k2 is k:
                        break
                    out[k2] = v2
            if out is not None:
                out[nk] = nv
        return d if out is None else out

    def _holds_secret(self, v: Any) -> bool:
        """A value of a sensitive key that is worth replacing (not empty, None, a bool
        or already redacted)."""
        if v is None or v is True or v is False:
            return False
        if isinstance(v, str):
            return bool(v) and v != self.replacement
        if isinstance(v, (dict, list, tuple)):
            return bool(v)
        return True

    def _walk_model(self, m: BaseModel) -> BaseModel:
        changes: dict[str, Any] | None = None
        for name in _model_plan(type(m)):
            v = getattr(m, name)
            if v is None:
                continue
            nv = self._walk(v)
            if nv is not v:
                if changes is None:
                    changes = {}
                changes[name] = nv
        return m if changes is None else m.model_copy(update=changes)

    def _walk_dataclass(self, obj: Any) -> Any:
        changes: dict[str, Any] | None = None
        for name in _dataclass_plan(type(obj)):
            v = getattr(obj, name)
            if v is None:
                continue
            nv = self._walk(v)
            if nv is not v:
                if changes is None:
                    changes = {}
                changes[name] = nv
        return obj if changes is None else dataclasses.replace(obj, **changes)

    # -- messages and events ---------------------------------------------------------

    def redact_message(self, msg: Message) -> Message:
        """A copy of `msg` with its content, tool-call arguments and tool result
        redacted (`msg` itself when nothing needed redacting)."""
        if not self.enabled or self._clean(msg):
            return msg
        return typing.cast(Message, self._walk_model(msg))

    def redact_event(self, event: Event) -> Event:
        """A copy of `event` with every text-bearing field redacted (inputs, outputs,
        messages, arguments, results, errors, explanations, metadata, ...); ids,
        kinds, numbers and literal fields are untouched. Returns `event` itself
        when nothing needed redacting."""
        if not self.enabled or self._clean(event):
            return event
        return typing.cast(Event, self._walk_dataclass(event))


# -- field plans: which fields of a message or event type can hold text ----------------

_PLANS: dict[type, tuple[str, ...]] = {}
_NO_TEXT_TYPES: frozenset[Any] = frozenset({int, float, bool, complex, type(None)})


def _may_hold_text(tp: Any) -> bool:
    """Whether a value annotated `tp` can contain a string (conservative: True when unsure)."""
    if tp is str or tp is Any:
        return True
    if tp in _NO_TEXT_TYPES:
        return False
    origin = typing.get_origin(tp)
    if origin is Literal:
        return False
    if origin is typing.Annotated:
        return _may_hold_text(typing.get_args(tp)[0])
    if origin is Union or origin is types.UnionType:
        return any(_may_hold_text(a) for a in typing.get_args(tp))
    if origin is not None:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return not args or any(_may_hold_text(a) for a in args)
    return True


def _model_plan(cls: type[BaseModel]) -> tuple[str, ...]:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = tuple(
            name
            for name, info in cls.model_fields.items()
            if name not in UNTOUCHED_MESSAGE_FIELDS and _may_hold_text(info.annotation)
        )
    return plan


_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}
_SCALARS: frozenset[type] = frozenset({int, float, bool, type(None)})


def _fields_getter(v: Any) -> Callable[[Any], tuple[Any, ...]] | None:
    """A function returning the values of the text fields of `v`'s type (a pydantic
    model or a dataclass), in one call; None for any other type."""
    t = type(v)
    if isinstance(v, BaseModel):
        plan = _model_plan(t)
    elif dataclasses.is_dataclass(v) and not isinstance(v, type):
        plan = _dataclass_plan(t)
    else:
        return None
    if len(plan) > 1:
        getter: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*plan)
    elif plan:
        name = plan[0]
        getter = lambda obj: (getattr(obj, name),)  # noqa: E731
    else:
        getter = lambda obj: ()  # noqa: E731
    _GETTERS[t] = getter
    return getter


def _dataclass_plan(cls: type) -> tuple[str, ...]:
    plan = _PLANS.get(cls)
    if plan is None:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # unresolvable annotations: treat every field as text
            hints = {}
        plan = _PLANS[cls] = tuple(
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in UNTOUCHED_EVENT_FIELDS and _may_hold_text(hints.get(f.name, Any))
        )
    return plan


# -- the process-wide redactor ---------------------------------------------------------

_LOCK = threading.RLock()
_REGISTERED: dict[str, None] = {}  # registered literal secrets, in order
_DEFAULT = Redactor()


def default_redactor() -> Redactor:
    """The process-wide redactor (the trace writer, memory and logs use it)."""
    return _DEFAULT


def configure_redaction(
    key_patterns: Iterable[str] | None = None,
    value_patterns: Iterable[str | re.Pattern[str] | ValuePattern] | None = None,
    extra_secrets: Iterable[str] = (),
    enabled: bool = True,
    *,
    replacement: str = REPLACEMENT,
    safe_key_parts: Iterable[str] | None = None,
) -> Redactor:
    """Replace the process-wide redactor (``None`` patterns: the defaults) and return it.

    `extra_secrets` are literal strings always redacted; secrets registered with
    :func:`register_secret` are kept. ``enabled=False`` turns redaction off.
    """
    global _DEFAULT
    with _LOCK:
        for secret in extra_secrets:
            if isinstance(secret, str) and len(secret.strip()) >= MIN_SECRET_LENGTH:
                _REGISTERED[secret.strip()] = None
        _DEFAULT = Redactor(
            key_patterns,
            value_patterns,
            replacement,
            secrets=tuple(_REGISTERED),
            safe_key_parts=safe_key_parts,
            enabled=enabled,
        )
        return _DEFAULT


def register_secret(value: str | None) -> bool:
    """Always redact the literal `value` (e.g. the API key a model was built with).

    Values shorter than 6 characters are ignored (returns False). The secret
    survives later :func:`configure_redaction` calls.
    """
    if not isinstance(value, str) or len(value.strip()) < MIN_SECRET_LENGTH:
        return False
    with _LOCK:
        _REGISTERED[value.strip()] = None
        return _DEFAULT.add_secret(value)


def reset_redaction() -> Redactor:
    """Back to the default configuration, forgetting registered secrets (for tests)."""
    global _DEFAULT
    with _LOCK:
        _REGISTERED.clear()
        _DEFAULT = Redactor()
        return _DEFAULT


def redact_text(s: str) -> str:
    """:meth:`Redactor.redact_text` with the process-wide redactor."""
    return _DEFAULT.redact_text(s)


def redact_json_text(s: str) -> str:
    """:meth:`Redactor.redact_json_text` with the process-wide redactor."""
    return _DEFAULT.redact_json_text(s)


def redact_obj(obj: _T) -> _T:
    """:meth:`Redactor.redact_obj` with the process-wide redactor."""
    return _DEFAULT.redact_obj(obj)


def redact_message(msg: Message) -> Message:
    """:meth:`Redactor.redact_message` with the process-wide redactor."""
    return _DEFAULT.redact_message(msg)


def redact_event(event: Event) -> Event:
    """:meth:`Redactor.redact_event` with the process-wide redactor."""
    return _DEFAULT.redact_event(event)


# -- logging ---------------------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """Redacts a record's message (formatted with its args), its args, and its
    exception and stack text; never drops a record. Uses `redactor`, or the
    process-wide one at the time of each record."""

    def __init__(self, redactor: Redactor | None = None, name: str = "") -> None:
        super().__init__(name)
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        r = self.redactor or _DEFAULT
        if not r.enabled:
            return True
        try:
            message = record.getMessage()
        except Exception:  # bad format args: logging reports those itself later
            message = None
        if message is not None:
            redacted = r.redact_text(message)
            if redacted is not message and redacted != message:
                record.msg, record.args = redacted, None
            elif record.args:
                record.args = _redact_args(r, record.args)
        elif isinstance(record.msg, str):
            record.msg = r.redact_text(record.msg)
            if record.args:
                record.args = _redact_args(r, record.args)
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            redacted = r.redact_text(text)
            if redacted != text:
                record.exc_text = redacted
        elif record.exc_text:
            record.exc_text = r.redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = r.redact_text(record.stack_info)
        return True


def _redact_args(r: Redactor, args: Any) -> Any:
    if isinstance(args, tuple):
        new = tuple(r.redact_obj(a) if isinstance(a, (str, dict, list, tuple)) else a for a in args)
        return args if all(a is b for a, b in zip(new, args, strict=True)) else new
    if isinstance(args, Mapping):
        return r.redact_obj(dict(args))
    return args


_LOG_FILTERS: dict[str, RedactingFilter] = {}
_LOG_FACTORY: list[Callable[..., logging.LogRecord]] = []  # the factory ours wraps


def _redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = (_LOG_FACTORY[0] if _LOG_FACTORY else logging.LogRecord)(*args, **kwargs)
    name = record.name
    for prefix, flt in tuple(_LOG_FILTERS.items()):
        if not prefix or prefix == "root" or name == prefix or name.startswith(prefix + "."):
            flt.filter(record)
            break
    return record


def install_log_redaction(
    logger_name: str = "agentlab", redactor: Redactor | None = None
) -> RedactingFilter:
    """Redact every record of logger `logger_name` and its children ("" or "root":
    all loggers); idempotent. Returns the filter used.

    A filter added to a logger does not see its child loggers' records, so the
    filter is applied where records are made (a wrapper around the log record
    factory), which covers ``agentlab.models...`` whatever handlers exist.
    """
    with _LOCK:
        flt = _LOG_FILTERS.get(logger_name)
        if flt is None:
            flt = _LOG_FILTERS[logger_name] = RedactingFilter(redactor)
        elif redactor is not None:
            flt.redactor = redactor
        # Once ours is in the chain it stays there: a library that wraps the factory
        # after us (Ray does) calls ours in turn, and wrapping that wrapper again
        # would make ours call itself through it, without end.
        if not _LOG_FACTORY:
            _LOG_FACTORY[:] = [logging.getLogRecordFactory()]
            logging.setLogRecordFactory(_redacting_factory)
        return flt


def uninstall_log_redaction(logger_name: str | None = None) -> None:
    """Stop redacting records of `logger_name` (None: of every logger)."""
    with _LOCK:
        if logger_name is None:
            _LOG_FILTERS.clear()
        else:
            _LOG_FILTERS.pop(logger_name, None)
        # Ours leaves the chain only if nothing wrapped it since; otherwise it stays,
        # redacting nothing (no filters) until the next install.
        if not _LOG_FILTERS and logging.getLogRecordFactory() is _redacting_factory:
            logging.setLogRecordFactory(_LOG_FACTORY[0] if _LOG_FACTORY else logging.LogRecord)
            _LOG_FACTORY.clear()
