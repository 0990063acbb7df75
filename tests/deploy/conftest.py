"""Fixtures of the deployment tests: the chart, loaded once, and a renderer bound to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import helm_python
import pytest
from deploy_support import CHART, Rendered, render_chart


@pytest.fixture(scope="session")
def chart() -> Iterator[helm_python.Chart]:
    with helm_python.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart: helm_python.Chart) -> Callable[..., Rendered]:
    def _render(values: dict | None = None, **kwargs: str) -> Rendered:
        return render_chart(chart, values, **kwargs)

    return _render
