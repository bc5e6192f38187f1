"""Finding the rules of a manifest or catalogue that target a sensitive category or path.

:func:`rule_violations` walks every condition (lifecycle rules, offer eligibility, slot
variants, experiments) and each offer's category, and returns one message per offending
rule. The check is conservative: it may refuse a rule that could never fire on a sensitive
page, never the other way round for paths as the decider sees them (normalized). Scrubbing the
request before rules (:class:`sdk.sensitive.Sensitivity`) is the guarantee; this check tells
the marketer, at training and at load, that a rule cannot work as written.

Must import only the standard library and sdk's manifest, errors and condition modules.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from sdk._operators import OPERATORS
from sdk._patterns import compiled_regex
from sdk.errors import ConditionError, MissingExtraError
from sdk.manifest import ExperimentDef, LifecycleDef, OfferDef, SlotDef

__all__ = ["RuleSource", "SensitiveMatcher", "literal_prefixes", "rule_violations"]

_META = frozenset(".^$*+?{}[]()|")
_ORDERINGS = ("$gt", "$gte", "$lt", "$lte")
_BOUNDARY = frozenset("/;.")
_PATH_WORDS = ("path", "url", "href", "referrer", "link")


class SensitiveMatcher(Protocol):
    """What the check needs of :class:`sdk.sensitive.Sensitivity`."""

    @property
    def categories(self) -> frozenset[str]: ...

    @property
    def paths(self) -> tuple[str, ...]: ...

    def is_sensitive_category(self, name: object) -> bool: ...

    def is_sensitive_path(self, path_or_url: object) -> bool: ...


class RuleSource(Protocol):
    """Where rules live: a :class:`sdk.manifest.Manifest` or a training catalogue."""

    @property
    def offers(self) -> Sequence[OfferDef]: ...

    @property
    def slots(self) -> Sequence[SlotDef]: ...

    @property
    def lifecycle(self) -> LifecycleDef: ...

    @property
    def experiments(self) -> Sequence[ExperimentDef]: ...


def rule_violations(m: SensitiveMatcher, source: RuleSource) -> list[str]:
    """One message per rule of ``source`` that targets a sensitive category or path."""
    out: list[str] = []
    for i, rule in enumerate(source.lifecycle.rules):
        _condition(m, rule.when, f"lifecycle rule {i} (stage {rule.stage!r})", out)
    for offer in source.offers:
        if m.is_sensitive_category(offer.category):
            out.append(
                f"offer {offer.id!r} is in sensitive category {offer.category!r}: offers are "
                "matched to visitors by category, so give it no category"
            )
        _condition(m, offer.eligibility, f"offer {offer.id!r} eligibility", out)
    for slot in source.slots:
        for variant in slot.variants:
            _condition(m, variant.when, f"slot {slot.id!r} variant {variant.id!r} condition", out)
    for exp in source.experiments:
        _condition(m, exp.condition, f"experiment {exp.key!r} condition", out)
    return out


def _condition(m: SensitiveMatcher, condition: Any, rule: str, out: list[str]) -> None:
    reasons: list[str] = []
    _walk(m, condition, reasons)
    out.extend(f"{rule}: {reason}" for reason in dict.fromkeys(reasons))


def _walk(m: SensitiveMatcher, node: Any, reasons: list[str]) -> None:
    if not isinstance(node, Mapping):
        return
    for key, spec in node.items():
        if key in ("$and", "$or", "$nor") and isinstance(spec, list):
            for item in spec:
                _walk(m, item, reasons)
        elif key == "$not":
            _walk(m, spec, reasons)
        elif isinstance(key, str) and not key.startswith("$"):
            _field(m, key, spec, reasons)


def _kind(keys: Sequence[str]) -> str | None:
    """``"category"`` or ``"path"`` when an attribute path holds categories or a path/URL."""
    parts = [p for key in keys for p in key.casefold().split(".") if p and not p.isdigit()]
    if any("categor" in p for p in parts):
        return "category"
    if parts and any(word in parts[-1] for word in _PATH_WORDS):
        return "path"
    return None


def _strings(spec: Any) -> Iterator[str]:
    """Every string operand of a field's spec, but ``$regex`` patterns."""
    if isinstance(spec, str):
        yield spec
    elif isinstance(spec, Mapping):
        for k, v in spec.items():
            if k != "$regex":
                yield from _strings(v)
    elif isinstance(spec, list):
        for item in spec:
            yield from _strings(item)


def _regexes(spec: Any, keys: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every ``$regex`` pattern of a field's spec with the attribute keys leading to it."""
    if isinstance(spec, Mapping):
        for k, v in spec.items():
            if k == "$regex" and isinstance(v, str):
                yield keys, v
            elif isinstance(k, str):
                yield from _regexes(v, keys if k.startswith("$") else (*keys, k))
    elif isinstance(spec, list):
        for item in spec:
            yield from _regexes(item, keys)


def _field(m: SensitiveMatcher, key: str, spec: Any, reasons: list[str]) -> None:
    kind = _kind([key])
    for text in _strings(spec):
        if m.is_sensitive_category(text):
            reasons.append(f"{key} names sensitive category {text!r}")
        elif (kind == "path" or text.startswith("/") or "://" in text) and m.is_sensitive_path(
            text
        ):
            reasons.append(f"{key} names sensitive path {text!r}")
    for keys, pattern in _regexes(spec, (key,)):
        inner = _kind(keys)
        if inner == "category":
            hit = _regex_category(m.categories, pattern)
            if hit is not None:
                reasons.append(f"{key} $regex {pattern!r} matches sensitive category {hit!r}")
        elif inner == "path":
            why = _regex_path(m.paths, pattern)
            if why is not None:
                reasons.append(f"{key} $regex {pattern!r} {why}")
    if kind == "path" and isinstance(spec, Mapping):
        bounds = [(op, v) for op, v in spec.items() if op in _ORDERINGS and isinstance(v, str)]
        for probe in _probes(m.paths) if bounds else ():
            if all(OPERATORS[op](probe, v) for op, v in bounds):
                reasons.append(f"{key} {dict(bounds)} holds for sensitive path {probe!r}")
                break


def _probes(paths: Sequence[str]) -> Iterator[str]:
    for p in paths:
        yield from (p, p + "/", p + "/x")


def _search(pattern: str, text: str) -> bool:
    try:
        return compiled_regex(pattern).search(text) is not None
    except (ConditionError, MissingExtraError):  # malformed: the condition checker says so
        return False


def _regex_category(categories: frozenset[str], pattern: str) -> str | None:
    for name in sorted(categories):
        if any(_search(pattern, v) for v in (name, name.upper(), name.title())):
            return name
    return None


def _alternatives(pattern: str) -> list[str]:
    """``pattern`` split at its top-level ``|`` (outside groups and character classes)."""
    parts: list[str] = []
    depth, start, i, in_class = 0, 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            i += 1
            if pattern[i : i + 1] == "^":
                i += 1
            if pattern[i : i + 1] == "]":  # a leading ] is a literal
                i += 1
            continue
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    parts.append(pattern[start:])
    return parts


def _group_end(body: str, start: int) -> int:
    """The index of the ``)`` closing the group opened at ``start``, or -1."""
    depth, i, in_class = 0, start, False
    while i < len(body):
        c = body[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if body[i + 1 : i + 2] == "^":
                i += 1
            if body[i + 1 : i + 2] == "]":
                i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def literal_prefixes(body: str, limit: int = 64) -> list[str]:
    """Literal texts one of which every match of ``body`` starts with (``body`` follows an
    anchor): characters and escaped punctuation up to the first other construct, a group's
    alternatives each followed by what comes after the group. A character or group made
    optional by the quantifier after it ends the text; past ``limit`` texts, the common one."""
    out: list[str] = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "(":
            end = _group_end(body, i)
            inner = body[i + 1 : end] if end > 0 else ""
            if inner.startswith("?:"):
                inner = inner[2:]
            elif inner.startswith(("?P<", "?<")):
                inner = inner[inner.find(">") + 1 :]
            after = body[end + 1 : end + 2] if end > 0 else ""
            if end < 0 or inner.startswith("?") or after in ("?", "*", "{"):
                break
            rest = "" if after == "+" else body[end + 1 :]
            head = "".join(out)
            found = [
                head + tail
                for alternative in _alternatives(inner)
                for tail in literal_prefixes(alternative + rest, limit)
            ]
            return found if len(found) <= limit else [head]
        if c == "\\":
            if i + 1 >= len(body) or body[i + 1].isalnum():
                break  # a class (\d, \w), an anchor (\b) or a code (\x41, \Q)
            char, step = body[i + 1], 2
        elif c in _META:
            break
        else:
            char, step = c, 1
        after = body[i + step : i + step + 1]
        if after in ("?", "*", "{"):
            break
        out.append(char)
        if after == "+":
            break
        i += step
    return ["".join(out)]


def _literal_path(literal: str) -> str | None:
    """The path part of an anchored literal as sensitive paths are compared (case-folded,
    ``\\`` as ``/``, single slashes, cut before ``%`` and dot segments); None when it does not
    fix a path (no leading slash, or a URL whose host is not complete)."""
    text = literal.casefold().replace("\\", "/")
    if "://" in text:
        host_end = text.find("/", text.index("://") + 3)
        if host_end < 0:
            return None
        text = text[host_end:]
    if not text.startswith("/"):
        return None
    text = text.partition("%")[0]
    while "//" in text:
        text = text.replace("//", "/")
    dot = text.find("/.")
    return text if dot < 0 else text[:dot]


def _compatible(literal: str, prefix: str) -> bool:
    """Whether a path starting with ``literal`` can be under ``prefix``."""
    if len(literal) <= len(prefix):
        return prefix.startswith(literal)
    return literal.startswith(prefix) and literal[len(prefix)] in _BOUNDARY


def _regex_path(paths: Sequence[str], pattern: str) -> str | None:
    """Why ``pattern`` could match a sensitive path, or None when it cannot."""
    for alternative in _alternatives(pattern):
        if alternative.startswith("^"):
            body = alternative[1:]
        elif alternative.startswith("\\A"):
            body = alternative[2:]
        else:
            return "is not anchored with ^, so it can match a sensitive path"
        for literal in map(_literal_path, literal_prefixes(body)):
            for prefix in paths:
                if literal is None or _compatible(literal, prefix):
                    return (
                        f"can match sensitive path {prefix!r} (start it with ^ and a path "
                        "no sensitive path starts with)"
                    )
    for probe in _probes(paths):
        if _search(pattern, probe):
            return f"matches sensitive path {probe!r}"
    return None
