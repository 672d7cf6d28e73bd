"""The text form of a config: the body of a ``%%backtest`` cell (or a config sent as that text
to the REST API) turned into a config dict.

The body is YAML (JSON is valid YAML). Everything here is pure and fast so that a bad cell is
rejected in the kernel, with a message that points at the line and says how to fix it, before
anything reaches the queue.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from quantlab.errors import ConfigError

# "5..50" (both ends included, like a researcher reads it) and "5..50:5" / "0.5..2.0:0.5" with a step.
_RANGE_TEXT = re.compile(
    r"^\s*(?P<start>-?\d+(?:\.\d+)?)\s*\.\.\s*(?P<stop>-?\d+(?:\.\d+)?)"
    r"(?:\s*:\s*(?P<step>-?\d+(?:\.\d+)?))?\s*$"
)
_RANGE_KEYS = {"start", "stop", "step"}
# A sweep larger than this is almost always a typo (e.g. a step of 0.001); the engine could run
# it, but expanding it in the kernel would stall the cell.
MAX_RANGE_LENGTH = 1_000_000

EXAMPLE = "strategy: sma_crossover\nsymbols: [AAA]\nparams: {fast: 10, slow: 50}"


class DuplicateKeyError(yaml.MarkedYAMLError):
    """A mapping key given twice: ``path`` is where (``params.fast``), the mark is the second
    one and ``first_line`` the line of the first."""

    def __init__(self, path: str, first: yaml.Node, again: yaml.Node) -> None:
        self.path = path
        self.first_line = first.start_mark.line + 1
        super().__init__(
            problem=f"the key '{path}' is given twice (first on line {self.first_line})",
            problem_mark=again.start_mark,
        )


def _refuse_duplicates(node: yaml.Node, path: str = "") -> None:
    """Walk a composed YAML document and raise :class:`DuplicateKeyError` for a key given twice
    in one mapping, at any depth (YAML's loader would keep the last one silently)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], yaml.Node] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                where = f"{path}.{key_node.value}" if path else str(key_node.value)
                if key in seen:
                    raise DuplicateKeyError(where, seen[key], key_node)
                seen[key] = key_node
                _refuse_duplicates(value_node, where)
            else:
                _refuse_duplicates(value_node, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicates(item, f"{path}[{i}]")


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses a key given twice in a mapping at any depth
    (:class:`DuplicateKeyError`, a ``yaml.MarkedYAMLError`` naming the key)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_duplicates(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def parse_body(text: str) -> dict[str, Any]:
    """Parse a cell body into a dict of config keys; errors name the line of the cell."""
    if not text.strip():
        raise ConfigError(
            "the %%backtest cell is empty: write the config below the magic line, e.g.\n"
            f"%%backtest\n{EXAMPLE}"
        )
    try:
        loaded = load_yaml(text)
    except DuplicateKeyError as exc:
        raise _duplicate_error(exc) from None
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc) from None
    except yaml.YAMLError as exc:  # errors without a position are rare (e.g. a bad encoding)
        raise ConfigError(f"the cell body is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(
            "the %%backtest cell body must be a mapping of config keys (one 'key: value' per "
            f"line), got {type(loaded).__name__} {str(loaded)[:60]!r}; e.g.\n{EXAMPLE}"
        )
    non_text = [key for key in loaded if not isinstance(key, str)]
    if non_text:
        raise ConfigError(
            f"config keys must be names, got {non_text[0]!r}; write e.g. 'cash: 10000'",
            field=str(non_text[0]),
        )
    return {key: value for key, value in loaded.items()}


def _duplicate_error(exc: DuplicateKeyError) -> ConfigError:
    mark = exc.problem_mark
    line = mark.line + 1 if mark is not None else None
    snippet = ""
    if mark is not None and mark.buffer:
        lines = str(mark.buffer).rstrip("\x00").splitlines()
        if 0 <= mark.line < len(lines):
            snippet = f":\n    {lines[mark.line]}\n    {' ' * mark.column}^"
    return ConfigError(
        f"duplicate key '{exc.path}' on line {line} of the cell body (it is already given on line "
        f"{exc.first_line}){snippet}\nhint: give each key once; YAML would silently keep only "
        f"the last value", field=exc.path, line=line)


def _yaml_error(exc: yaml.MarkedYAMLError) -> ConfigError:
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    problem = exc.problem or exc.context or "invalid YAML"
    hint = _yaml_hint(problem)
    where = f" on line {line} of the cell body" if line is not None else ""
    snippet = ""
    if mark is not None and mark.buffer:
        lines = str(mark.buffer).rstrip("\x00").splitlines()
        if 0 <= mark.line < len(lines):
            snippet = f":\n    {lines[mark.line]}\n    {' ' * mark.column}^"
    opened = ""
    context = exc.context_mark
    if exc.context and context is not None and mark is not None and context.line != mark.line:
        # The parser notices a missing ']' where the next line starts; say where it opened.
        opened = f" ({exc.context} that starts on line {context.line + 1})"
    return ConfigError(f"YAML error{where}: {problem}{opened}{snippet}\n{hint}", line=line)


def _yaml_hint(problem: str) -> str:
    if "mapping values are not allowed" in problem:
        return ("hint: a value containing ': ' must be quoted, and each key needs its own line "
                "(\"name: 'a: b'\")")
    if "found character '\\t'" in problem or "tab" in problem:
        return "hint: indent with spaces, not tabs"
    if "expected ',' or ']'" in problem or "expected ',' or '}'" in problem:
        return "hint: close the list with ']' (or the mapping with '}') and separate items with ','"
    if "could not find expected ':'" in problem:
        return "hint: write each setting as 'key: value', with a space after the colon"
    return "hint: write one 'key: value' per line, lists as [a, b], mappings as {k: v}"


def parse_range(value: Any, *, field: str) -> list[Any] | None:
    """The values of a range written as ``"5..50"``, ``"5..50:5"`` or ``{start, stop[, step]}``.

    ``"a..b"`` includes both ends (it reads as "from 5 to 50"); the mapping form follows
    Python's ``range`` (``stop`` excluded), so ``{start: 5, stop: 51, step: 5}`` is
    ``range(5, 51, 5)``. Returns None when ``value`` is not a range.
    """
    if isinstance(value, str):
        match = _RANGE_TEXT.match(value)
        if match is None:
            return None
        start, stop = _number(match["start"]), _number(match["stop"])
        step = _number(match["step"]) if match["step"] else 1
        return _expand(start, stop, step, inclusive=True, field=field, written=value)
    if isinstance(value, dict) and value and set(value) <= _RANGE_KEYS:
        if "start" not in value or "stop" not in value:
            raise ConfigError(
                f"{field}: a range needs 'start' and 'stop' (and optionally 'step'), got "
                f"{value!r}; e.g. {{start: 5, stop: 51, step: 5}} or the text form '5..50:5'",
                field=field,
            )
        numbers = {k: value[k] for k in ("start", "stop", "step") if k in value}
        for key, number in numbers.items():
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise ConfigError(
                    f"{field}: range {key} must be a number, got {number!r}", field=field
                )
        return _expand(numbers["start"], numbers["stop"], numbers.get("step", 1),
                       inclusive=False, field=field, written=str(value))
    return None


def _number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def _expand(start: float, stop: float, step: float, *, inclusive: bool, field: str,
            written: str) -> list[Any]:
    if step == 0:
        raise ConfigError(f"{field}: the range {written} has a step of 0; use a positive step "
                          "such as '5..50:5'", field=field)
    count_float = (stop - start) / step
    if count_float < 0:
        raise ConfigError(
            f"{field}: the range {written} is empty (it goes from {start} towards {stop} with step "
            f"{step}); swap the ends or change the step's sign", field=field)
    # Tolerances so that 0.1..0.3:0.1 gives three values despite binary floats.
    if inclusive:
        count = math.floor(count_float + 1e-9) + 1
    else:  # like range(): stop excluded
        count = math.ceil(count_float - 1e-9)
    if count <= 0:
        raise ConfigError(f"{field}: the range {written} contains no value; widen it",
                          field=field)
    if count > MAX_RANGE_LENGTH:
        raise ConfigError(
            f"{field}: the range {written} has {count:,} values (more than {MAX_RANGE_LENGTH:,}); "
            "use a larger step", field=field)
    if all(isinstance(x, int) for x in (start, stop, step)):
        return [int(start + i * step) for i in range(count)]
    decimals = max(_decimals(start), _decimals(step))
    return [round(start + i * step, decimals) for i in range(count)]


def _decimals(number: float) -> int:
    text = repr(float(number))
    return len(text.split(".")[1]) if "." in text and "e" not in text else 12


def expand_param_ranges(params: Any) -> Any:
    """Replace range forms in ``params`` by lists of values; other values pass through.

    ``params`` may be a mapping (a grid) or a list of mappings (explicit combinations); for the
    latter, each combination is a single point and ranges make no sense there, so they are left
    for the config validation to reject with its own message.
    """
    if not isinstance(params, dict):
        return params
    expanded: dict[str, Any] = {}
    for name, value in params.items():
        values = parse_range(value, field=f"params.{name}")
        expanded[name] = values if values is not None else value
    return expanded
