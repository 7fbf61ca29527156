"""A real Ray cluster started the way users start it (``ray start --head``) with token
authentication on, as Ray >= 2.59 turns it on when the head has a token.

Checks that a stage run with ``--ray-address`` connects with the token from the environment
and writes the bytes of the local pool, that a wrong or missing token gives the
authentication message, and stops the head by the PID this test started.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pseudo_labels.core.runner import ray_connect_error, ray_token_source, use_ray_token_auth

#: the `ray` command installed with the ray package (requirements.txt), beside this Python
RAY = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stage(city: Path, subdir: str, env: dict, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pseudo_labels.commands.generate_depth", "--cityscapes-root", str(city), "--split", "val",
           "--source", "disparity", "--output-subdir", subdir, *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def test_token_source_order(tmp_path):
    home = tmp_path / "home"
    assert ray_token_source({"HOME": str(home)}) is None
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("x" * 32)
    assert ray_token_source({"HOME": str(home)}) == str(home / ".ray" / "auth_token")
    assert ray_token_source({"HOME": str(home), "RAY_AUTH_TOKEN_PATH": "/t"}) == "RAY_AUTH_TOKEN_PATH=/t"
    assert ray_token_source({"HOME": str(home), "RAY_AUTH_TOKEN_PATH": "/t", "RAY_AUTH_TOKEN": "y"}) == "RAY_AUTH_TOKEN"


def test_token_auth_is_turned_on_with_a_token_and_never_off(tmp_path):
    env = {"HOME": str(tmp_path)}
    assert use_ray_token_auth(env) is None and "RAY_AUTH_MODE" not in env  # no token: nothing changes
    env = {"HOME": str(tmp_path), "RAY_AUTH_TOKEN": "abc"}
    assert use_ray_token_auth(env) == "token" and env["RAY_AUTH_MODE"] == "token"
    env = {"HOME": str(tmp_path), "RAY_AUTH_TOKEN": "abc", "RAY_AUTH_MODE": "disabled"}
    assert use_ray_token_auth(env) == "disabled"  # the user's own setting is kept


def test_authentication_failure_message_names_the_settings():
    log = "gcs_client.cc:210: Failed to get cluster ID from GCS server: Unauthenticated: RPC error: InvalidAuthToken"
    msg = str(ray_connect_error("10.0.0.1:6379", ConnectionError("Failed to connect"), log, None))
    assert "Ray authentication failed" in msg and "sent no token" in msg
    for needle in ("RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token"):
        assert needle in msg
    assert "ray start --head" not in msg
    other = str(ray_connect_error("10.0.0.1:6379", ConnectionError("boom"), "", None))
    assert "cannot connect to a Ray cluster (boom)" in other


@pytest.mark.slow
def test_ray_start_head_with_token_auth(tmp_path):
    city = tmp_path / "city"
    subprocess.run([sys.executable, "-m", "pseudo_labels.commands.synth", "--out", str(city), "--n", "4", "--seed", "0",
                    "--size", "128", "256", "--split", "val"], check=True, capture_output=True, timeout=240)
    home = tmp_path / "home"
    home.mkdir()
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env = dict(base, HOME=str(home), RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0")
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True, timeout=120)
    assert (home / ".ray" / "auth_token").is_file()
    port = _free_port()
    head = subprocess.Popen([RAY, "start", "--head", "--port", str(port), "--num-cpus", "2",
                             "--include-dashboard=false", "--block"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert head.poll() is None, head.stdout.read()
                assert time.time() < deadline, "ray head did not come up"
                time.sleep(1)
        time.sleep(3)
        address = f"127.0.0.1:{port}"
        # the token in ~/.ray/auth_token, RAY_AUTH_MODE unset: connects (token auth turned on for the address)
        ok = _stage(city, "depth_ray", env, "--executor", "ray", "--ray-address", address)
        assert ok.returncode == 0, ok.stderr[-3000:]
        local = _stage(city, "depth_local", env, "--workers", "2")
        assert local.returncode == 0, local.stderr[-3000:]
        files = sorted(p.relative_to(city / "depth_local") for p in (city / "depth_local").rglob("*.npy"))
        assert len(files) == 4
        for rel in files:
            assert filecmp.cmp(city / "depth_local" / rel, city / "depth_ray" / rel, shallow=False), rel
        # a wrong token: the authentication message, not "start one with ray start --head"
        wrong = _stage(city, "depth_wrong", dict(env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 32),
                       "--executor", "ray", "--ray-address", address)
        assert wrong.returncode == 2
        assert "Ray authentication failed: the cluster rejected this machine's token" in wrong.stderr, wrong.stderr
        assert "RAY_AUTH_MODE=token" in wrong.stderr and "ray start --head" not in wrong.stderr
        # no token anywhere (another home): says that none was sent
        bare = tmp_path / "bare"
        bare.mkdir()
        none = _stage(city, "depth_none", dict(env, HOME=str(bare)), "--executor", "ray", "--ray-address", address)
        assert none.returncode == 2 and "sent no token" in none.stderr, none.stderr
    finally:
        head.send_signal(signal.SIGTERM)  # only the process this test started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait(timeout=30)
        shutil.rmtree(ray_tmp, ignore_errors=True)
