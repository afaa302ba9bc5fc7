"""Shared fixtures: real demo cells and a real `cellgate serve` process in front of them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cellgate.demo.launch import DemoCells, demo_cells, render_demo_config
from harness import Gateway, free_port, own_demo_cell, start_gateway, stop_cell


@pytest.fixture(scope="module")
def demo_cells_running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoCells]:
    """The seven demo cells as real processes on free loopback ports (hnw-us-east-1 over mTLS,
    its certificates in the demo's directory)."""
    cells = DemoCells(
        {cell_id: free_port() for cell_id in demo_cells()}, tmp_path_factory.mktemp("demo")
    )
    cells.start()
    yield cells
    cells.stop()


@pytest.fixture(scope="module")
def demo_config(demo_cells_running: DemoCells) -> Path:
    """The demo configuration pointed at the running cells, with fast health checks."""
    path = render_demo_config(demo_cells_running.directory, demo_cells_running.ports)
    text = (
        path.read_text()
        .replace("interval_ms = 1000", "interval_ms = 100")
        .replace("timeout_ms = 500", "timeout_ms = 100")
    )
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def gateway(demo_config: Path) -> Iterator[Gateway]:
    """A real `cellgate serve` in front of the demo cells."""
    gw = start_gateway(demo_config)
    yield gw
    gw.stop()


@pytest.fixture
def own_retail_cell(demo_config: Path) -> Iterator[tuple[int, str]]:
    """A retail-us-east-1 of the test's own (no other gateway reaches it): its port and the
    demo configuration's text pointed at it; stopped after the test, however it ends."""
    port, cell, text = own_demo_cell(demo_config, "retail-us-east-1")
    yield port, text
    stop_cell(cell)
