"""``quantlab demo``: a first backtest on the bundled synthetic data, printed as a table."""

from __future__ import annotations

import click

import quantlab as ql


@click.command()
@click.option("--symbol", default="AAA", show_default=True, help="A sample symbol (AAA..JJJ).")
@click.option("--fast", default=20, show_default=True, help="Fast SMA window.")
@click.option("--slow", default=100, show_default=True, help="Slow SMA window.")
def demo(symbol: str, fast: int, slow: int) -> None:
    """Install the synthetic sample data and run an SMA crossover and a small sweep on it."""
    ql.data.sample()
    click.echo(f"SMA crossover {fast}/{slow} on {symbol} (synthetic sample data), "
               f"cash 100,000, commission 0.1%, next-open fills:\n")
    res = ql.backtest(symbol, strategy="sma_crossover", params={"fast": fast, "slow": slow},
                      cash=100_000, commission=0.001)
    width = max(len(name) for name in res.metrics)
    for name, value in res.metrics.items():
        click.echo(f"  {name:<{width}}  {value:,.4f}" if isinstance(value, float)
                   else f"  {name:<{width}}  {value}")
    sweep = ql.backtest(symbol, strategy="sma_crossover",
                        params={"fast": range(5, 55, 5), "slow": range(50, 260, 10)},
                        cash=100_000, commission=0.001)
    assert sweep.table is not None
    best = sweep.table.sort_values("sharpe", ascending=False).head(5)
    click.echo(f"\nSweep of {len(sweep.table)} combinations, best five by Sharpe:\n")
    click.echo(best[["fast", "slow", "sharpe", "total_return_pct", "max_drawdown_pct",
                     "n_trades"]].to_string(index=False))
