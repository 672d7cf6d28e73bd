"""The metric-condition language: parsing, evaluation, and the error messages users see."""

from __future__ import annotations

import math

import pytest

from quantlab.errors import ConfigError
from quantlab.notifyspec import ConditionError, parse_condition, tokenize

GOOD_RUN = {"sharpe": 1.8, "max_drawdown_pct": -12.5, "n_trades": 40, "win_rate_pct": 55.0}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sharpe > 1.5", True),
        ("sharpe > 1.5 and max_drawdown_pct > -20", True),
        ("sharpe > 2 and max_drawdown_pct > -20", False),
        ("sharpe > 2 or max_drawdown_pct > -20", True),
        ("not sharpe > 2", True),
        ("not (sharpe > 1 and n_trades >= 40)", False),
        ("(sharpe > 2 or win_rate_pct >= 55) and n_trades == 40", True),
        ("1 < sharpe < 2", True),
        ("1 < sharpe < 1.7", False),
        ("sharpe >= 1.8 and sharpe <= 1.8 and sharpe == 1.8", True),
        ("n_trades != 40", False),
        ("max_drawdown_pct < -10", True),
        ("-max_drawdown_pct < 10", False),
        ("sharpe > 1e0", True),
        ("n_trades > 1_0", True),
    ],
)
def test_conditions_evaluate_like_python_would(text: str, expected: bool) -> None:
    assert parse_condition(text).matches(GOOD_RUN) is expected


def test_and_binds_tighter_than_or() -> None:
    # false or (true and false) -> false; (false or true) and false would also be false, so use
    # a case that tells them apart: true or (false and false) -> true.
    condition = parse_condition("sharpe > 1 or sharpe > 5 and n_trades > 100")
    assert condition.matches(GOOD_RUN) is True
    assert parse_condition("(sharpe > 1 or sharpe > 5) and n_trades > 100").matches(GOOD_RUN) is False


def test_keywords_are_case_insensitive() -> None:
    assert parse_condition("NOT sharpe > 2 AND n_trades > 1").matches(GOOD_RUN) is True


def test_missing_metric_is_unknown_never_true() -> None:
    run = {"sharpe": None, "n_trades": 0, "profit_factor": float("nan")}
    assert not parse_condition("sharpe > 1").matches(run)
    # three-valued logic: not(unknown) is unknown, not true
    assert not parse_condition("not sharpe > 1").matches(run)
    assert not parse_condition("not profit_factor > 1").matches(run)
    # a decisive side wins over unknown
    assert parse_condition("sharpe > 1 or n_trades == 0").matches(run)
    assert not parse_condition("sharpe > 1 and n_trades == 0").matches(run)
    assert not parse_condition("sharpe > 1").matches(None)


def test_condition_reports_the_metrics_it_reads() -> None:
    condition = parse_condition("sharpe > 1.5 and (max_drawdown_pct > -20 or not calmar < 1)")
    assert condition.metrics == {"sharpe", "max_drawdown_pct", "calmar"}
    assert str(condition) == "sharpe > 1.5 and (max_drawdown_pct > -20 or not calmar < 1)"


def test_never_evaluates_python() -> None:
    with pytest.raises(ConditionError) as info:
        parse_condition("__import__('os').system('true')")
    # the tokenizer refuses the quote before any name is even looked up
    assert info.value.column == 12
    assert "unexpected character \"'\"" in str(info.value)
    with pytest.raises(ConditionError, match="unknown metric '__class__'"):
        parse_condition("__class__ > 1")


def test_unknown_metric_names_the_nearest_and_its_column() -> None:
    with pytest.raises(ConditionError) as info:
        parse_condition("sharpe > 1 and max_drawdown > -20", field="notify.when")
    err = info.value
    assert isinstance(err, ConfigError)
    assert err.field == "notify.when"
    assert err.column == 16
    assert err.suggestion == "max_drawdown_pct"
    message = str(err)
    assert message.startswith("notify.when: unknown metric 'max_drawdown' — did you mean "
                              "'max_drawdown_pct'? (column 16)")
    # the caret points at the bad name
    lines = message.splitlines()
    assert lines[1].strip() == "sharpe > 1 and max_drawdown > -20"
    assert lines[2].index("^") - lines[1].index("s") == 15


def test_unknown_metric_without_a_near_one_lists_the_known_ones() -> None:
    with pytest.raises(ConditionError, match=r"known metrics: equity_final, total_return_pct"):
        parse_condition("zzzz > 1")


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("sharpe >", 9, "expected a number or a metric name, found the end of the condition"),
        ("sharpe > 1 and", 15, "expected a number or a metric name, found the end"),
        ("sharpe", 7, "expected a comparison (<, <=, >, >=, ==, !=) after 'sharpe'"),
        ("(sharpe > 1", 12, "expected ')' to close the '(' at column 1"),
        ("sharpe > 1)", 11, "')' closes a parenthesis that was never opened"),
        ("sharpe = 1", 8, "'=' is not an operator here; write '=='"),
        ("sharpe > 1 && n_trades > 3", 12, "'&&' is not an operator here; write 'and'"),
        ("sharpe > 1 n_trades > 3", 12, "expected 'and', 'or' or the end of the condition, "
                                        "found 'n_trades'"),
        ("sharpe > 1 ; n_trades > 3", 12, "unexpected character ';'"),
        ("win_rate_pct > 50%", 16, "write '50' without '%'"),
        ("", 1, "the condition is empty"),
        ("   ", 1, "the condition is empty"),
    ],
)
def test_syntax_errors_name_the_column(text: str, column: int, fragment: str) -> None:
    with pytest.raises(ConditionError) as info:
        parse_condition(text)
    assert info.value.column == column
    assert fragment in str(info.value)
    assert "e.g. 'sharpe > 1.5 and max_drawdown_pct > -20'" in str(info.value)


def test_non_text_condition_is_refused() -> None:
    with pytest.raises(ConditionError, match="must be a condition written as text"):
        parse_condition(1.5)  # type: ignore[arg-type]


def test_metric_names_are_case_sensitive() -> None:
    with pytest.raises(ConditionError, match="did you mean 'sharpe'"):
        parse_condition("Sharpe > 1")


def test_tokenizer_reads_numbers_with_underscores_and_exponents() -> None:
    values = [t.value for t in tokenize("1_000 2.5 .5 1e3 2E-2") if t.kind == "number"]
    assert values == [1000.0, 2.5, 0.5, 1000.0, 0.02]
    assert math.isclose(parse_condition("equity_final > 1_000").tree.operands[1].number, 1000)  # type: ignore[union-attr]


def test_conditions_know_every_metric_the_engine_reports() -> None:
    # a copy (importing quantlab.metrics would pull Numba into the condition parser):
    # it must stay equal to the engine's list
    from quantlab.metrics import METRICS
    from quantlab.notifyspec import METRIC_NAMES

    assert tuple(METRICS) == METRIC_NAMES
