"""Performance statistics of a daily return series (plain numpy).

Conventions used everywhere in the harness:

* returns are simple daily returns (0.01 = +1 %);
* ``cumulative_return`` = prod(1 + r) - 1;
* ``sharpe`` = mean(r) / std(r, ddof=1) * sqrt(252), risk-free rate 0, ``nan`` when fewer than
  two days or a zero standard deviation;
* ``max_drawdown`` is a positive fraction, the largest fall of the equity curve (starting at 1)
  from its running peak: 0.2 means a 20 % loss from the peak;
* ``annualised_return`` = (1 + cumulative) ** (252 / n_days) - 1, ``volatility`` = std * sqrt(252).
"""

from __future__ import annotations

import math

import numpy as np

TRADING_DAYS = 252


def _as_returns(returns: object) -> np.ndarray:
    arr = np.asarray(returns, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def cumulative_return(returns: object) -> float:
    """prod(1 + r) - 1 (0.0 for an empty series)."""
    r = _as_returns(returns)
    return float(np.prod(1.0 + r) - 1.0)


def sharpe_ratio(returns: object, periods_per_year: int = TRADING_DAYS) -> float:
    """Annualised Sharpe ratio with a zero risk-free rate; nan when undefined."""
    r = _as_returns(returns)
    if r.size < 2:
        return math.nan
    std = float(np.std(r, ddof=1))
    if std == 0.0 or not math.isfinite(std):
        return math.nan
    return float(np.mean(r) / std * math.sqrt(periods_per_year))


def max_drawdown(returns: object) -> float:
    """Largest peak-to-trough loss of the equity curve, as a positive fraction."""
    r = _as_returns(returns)
    if r.size == 0:
        return 0.0
    equity = np.concatenate([[1.0], np.cumprod(1.0 + r)])
    peaks = np.maximum.accumulate(equity)
    return float(np.max(1.0 - equity / peaks))


def annualised_return(returns: object, periods_per_year: int = TRADING_DAYS) -> float:
    """Geometric annualised return; nan for an empty series or a total loss."""
    r = _as_returns(returns)
    growth = 1.0 + cumulative_return(r)
    if r.size == 0 or growth <= 0:
        return math.nan
    return float(growth ** (periods_per_year / r.size) - 1.0)


def volatility(returns: object, periods_per_year: int = TRADING_DAYS) -> float:
    """Annualised standard deviation; nan with fewer than two days."""
    r = _as_returns(returns)
    if r.size < 2:
        return math.nan
    return float(np.std(r, ddof=1) * math.sqrt(periods_per_year))


def return_stats(returns: object) -> dict[str, float]:
    """All the series-level statistics above in one dict."""
    r = _as_returns(returns)
    return {
        "cumulative_return": cumulative_return(r),
        "annualised_return": annualised_return(r),
        "volatility": volatility(r),
        "sharpe": sharpe_ratio(r),
        "max_drawdown": max_drawdown(r),
        "n_days": float(r.size),
    }
