"""The evaluation knobs from settings: configured scenarios plus those saved through the management API."""

from __future__ import annotations

import datetime as dt
import json

from mlops_assets.evaluation.configured import compliance_policy, evaluation_config
from mlops_assets.evaluation.scenarios import scenarios_file
from mlops_assets.settings import get_settings


def test_saved_scenarios_join_the_configured_ones(mlops_home) -> None:
    path = scenarios_file(mlops_home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"name": "rate shock", "start": "2021-03-01", "end": "2021-03-31",
                                 "description": "saved over HTTP"}]))
    config = evaluation_config(get_settings())
    assert [(s.name, s.start) for s in config.scenarios] == [("rate shock", dt.date(2021, 3, 1))]
    policy = compliance_policy(get_settings())
    assert policy.max_drawdown == get_settings().evaluation.max_drawdown_limit
