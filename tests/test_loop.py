"""``--event-loop`` selects the loop REST and gRPC run on (kserve's own start ignored it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from predictors.loop import describe, loop_factory, run
from tests.serving import start_server


@pytest.mark.parametrize(("flag", "loop"), [(None, "uvloop"), ("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_the_flag_picks_the_loop_that_serves_rest_and_grpc(
    models_dir: Path, tmp_path: Path, cnn_heldout, flag: str | None, loop: str
) -> None:
    args = ("--event-loop", flag) if flag else ()
    server = start_server(models_dir / "digits-cnn", "digits-cnn", *args, log_dir=tmp_path)
    try:
        x, _ = cnn_heldout
        rest = server.v2_tensor("input", x[:4])
        assert rest.status_code == 200, rest.text
        grpc = server.grpc({"input": x[:4]})
        assert grpc.get_output_by_name("label").as_numpy().tolist() == rest.json()["outputs"][1]["data"]
        assert f"event loop: {loop} (--event-loop {flag or 'auto'})" in server.logs()
    finally:
        server.stop()


def test_the_running_loop_is_the_one_asked_for() -> None:
    async def which() -> str:
        import asyncio

        return describe(asyncio.get_running_loop())

    assert run(which(), "uvloop") == "uvloop"
    assert run(which(), "asyncio") == "asyncio"
    assert run(which(), "auto") == ("uvloop" if loop_factory("auto") else "asyncio")
