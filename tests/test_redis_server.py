"""RedisServer against a real redis-server (bash scripts/install-test-deps.sh installs it)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cellgate import redis_server
from cellgate.redis_server import RedisError, RedisServer, RedisServerFailed, RedisServerMissing


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis") as running:
        yield running


def test_answers_ping_on_its_url(server: RedisServer) -> None:
    assert server.running
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert server.command("PING") == "PONG"


def test_command_decodes_each_kind_of_reply(server: RedisServer) -> None:
    assert server.command("SET", "k", "v") == "OK"
    assert server.command("GET", "k") == "v"
    assert server.command("GET", "absent") is None
    assert server.command("ZADD", "z", "1", "a", "2", "b c") == "2"
    assert server.command("ZCARD", "z") == "2"
    assert server.command("ZRANGE", "z", "0", "-1") == ["a", "b c"]
    assert server.command("SET", "empty", "") == "OK"
    assert server.command("GET", "empty") == ""
    assert server.command("SET", "text", "héllo\r\nworld") == "OK"
    assert server.command("GET", "text") == "héllo\r\nworld"


def test_an_error_reply_raises(server: RedisServer) -> None:
    with pytest.raises(RedisError, match="unknown command"):
        server.command("NOSUCHCOMMAND")
    server.command("SET", "k", "v")
    with pytest.raises(RedisError, match="WRONGTYPE"):
        server.command("ZCARD", "k")


def test_restart_keeps_the_port_and_loses_the_data(server: RedisServer) -> None:
    port, url = server.port, server.url
    server.command("SET", "k", "v")
    server.stop()
    assert not server.running
    with pytest.raises(OSError):
        server.command("PING")
    server.start()
    assert (server.port, server.url) == (port, url)
    assert server.command("PING") == "PONG"
    assert server.command("GET", "k") is None
    assert server.command("DBSIZE") == "0"


def test_kill_then_start_again(server: RedisServer) -> None:
    server.kill()
    assert not server.running
    server.start()
    assert server.command("PING") == "PONG"


def test_stop_and_kill_are_idempotent(tmp_path: Path) -> None:
    unstarted = RedisServer(tmp_path)
    unstarted.stop()
    unstarted.kill()
    with RedisServer(tmp_path) as server:
        server.stop()
        server.stop()
        server.kill()
    assert not server.running


def test_start_while_running_refuses(server: RedisServer) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        server.start()
    assert server.command("PING") == "PONG"


def test_a_given_port_is_used(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with RedisServer(tmp_path, port=port) as server:
        assert server.port == port
        assert server.command("PING") == "PONG"


def test_runs_without_persistence_in_its_directory(server: RedisServer) -> None:
    assert server.command("CONFIG", "GET", "save") == ["save", ""]
    assert server.command("CONFIG", "GET", "appendonly") == ["appendonly", "no"]
    assert server.command("CONFIG", "GET", "dir") == ["dir", str(server.directory)]
    assert server.command("CONFIG", "GET", "bind") == ["bind", "127.0.0.1"]
    assert server.log_file.parent == server.directory
    assert "Ready to accept connections" in server.log_file.read_text()


def test_a_missing_binary_names_the_installer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(redis_server, "SEARCH_DIRS", (str(tmp_path / "empty"),))
    server = RedisServer(tmp_path)
    with pytest.raises(RedisServerMissing, match=r"scripts/install-test-deps\.sh"):
        server.start()
    assert not server.running


def test_an_early_exit_raises_with_the_log_tail(server: RedisServer, tmp_path: Path) -> None:
    rival = RedisServer(tmp_path / "rival", port=server.port)
    with pytest.raises(RedisServerFailed, match="exited with status") as failure:
        rival.start()
    assert "Address already in use" in str(failure.value)
    assert str(rival.log_file) in str(failure.value)
    assert not rival.running
    assert server.command("PING") == "PONG"


def test_the_log_tail_is_this_runs_only(server: RedisServer, tmp_path: Path) -> None:
    rival = RedisServer(tmp_path / "rival", port=server.port)
    for _ in range(2):
        with pytest.raises(RedisServerFailed) as failure:
            rival.start()
    assert str(failure.value).count("Address already in use") == 1
