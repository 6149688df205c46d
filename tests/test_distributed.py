"""Data-parallel training under torchrun: two CPU processes on the gloo backend (slow: each launch
starts two Python processes), plus the single-process behaviour of the helpers (fast).

torchrun's ``--standalone`` rendezvous needs no address settings here (it listens on localhost,
on a free port); the processes find ``ebm_play`` through PYTHONPATH, and ``EBM_PLAY_DATA`` points
at an empty folder so the bundled MNIST sample is used, offline."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ebm_play
from ebm_play import cli, distributed, runtime

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def torchrun(args: list, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
               EBM_PLAY_DATA=str(tmp_path / "no-mnist"), OMP_NUM_THREADS="1")
    return subprocess.run([*TORCHRUN, *map(str, args)], cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
                          timeout=240)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("objective", ["cd", "dsm", "nce"])
def test_train_on_two_processes(tmp_path, objective):
    p = torchrun(["-m", "ebm_play", "train", "--steps", 6, "--batch-size", 8, "--sampler-steps", 2, "--buffer-size", 32,
                  "--width", 4, "--objective", objective, "--out", tmp_path / "m.safetensors", "--threads", 1], tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert out.count("training cnn") == 1 and out.count("step      6/6") == 1, out  # rank 0 alone prints
    assert "2 processes (gloo)" in out and "16 in all" in out
    model = ebm_play.load_model(tmp_path / "m.safetensors", "cpu")
    assert model.info["world_size"] == 2 and model.info["train_steps"] == 6 and "bundled" in model.info["data"]
    assert model.info["objective"] == objective
    # each rank hashed its own parameters at the end; rank 0 printed them all
    line = re.search(r"parameters identical on all 2 ranks \(sha256 (\w+); per rank: (\w+) (\w+)\)", out)
    assert line, out
    assert line[2] == line[3] == distributed.parameter_digest(model)  # and the file holds those weights


# Run by torchrun in the next test: one Trainer per model kind and objective; rank 1 alone sees a
# divergence at update 2 and (cnn, jem: contrastive divergence) a slow runaway at update 4.
WORKER = r'''
import json
import torch
import ebm_play
from ebm_play import distributed

digits = ebm_play.sample_digits(train=True)
with distributed.session(torch.device("cpu")) as (world, device), open(f"rank{world.rank}.jsonl", "w") as log:
    log.write(json.dumps({"rank": world.rank, "flagged": distributed.flagged_ranks(world.rank == 1),
                          "any": distributed.any_rank(world.rank == 1), "none": distributed.any_rank(False)}) + "\n")
    for name, kind, arch in (("cnn", "cnn", {"width": 4}), ("jem", "jem", {"width": 4}), ("rbm", "rbm", {"hidden": 16}),
                             ("dsm", "cnn", {"width": 4, "objective": "dsm", "sigma_levels": 4}),
                             ("nce", "cnn", {"width": 4, "objective": "nce"})):
        config = ebm_play.TrainConfig(model=kind, batch_size=8, sampler_steps=2, buffer_size=32, lr=1e-3,
                                      checkpoint_every=1, **arch)
        tr = ebm_play.Trainer(config, digits.x[:400], digits.y[:400], device=device)
        own = tr._divergence
        tr._divergence = lambda *a, tr=tr, own=own: "forced" if world.rank == 1 and tr.state.step == 1 else own(*a)
        own_drift = tr._drift
        tr._drift = lambda gap, tr=tr, own=own_drift: "drift" if world.rank == 1 and tr.state.step == 3 else own(gap)
        try:
            rows = [tr.step() for _ in range(4)]
            log.write(json.dumps({"rank": world.rank, "kind": name, "rolled_back": [m["rolled_back"] for m in rows],
                                  "events": [e.message for e in tr.state.events], "lr": rows[-1]["lr"],
                                  "sampler_steps": tr.config.sampler_steps,
                                  "digest": distributed.parameter_digest(tr._view),
                                  "buffer": None if tr.buffer is None else tr.buffer.x.sum().item(),
                                  "loss": rows[-1]["loss"]}) + "\n")
        finally:
            tr.close()
'''


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_divergence_on_one_rank_rolls_back_every_rank(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    p = torchrun(["worker.py"], tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    rows = [json.loads(line) for rank in (0, 1) for line in (tmp_path / f"rank{rank}.jsonl").read_text().splitlines()]
    flags = [r for r in rows if "flagged" in r]
    assert len(flags) == 2 and all(r["flagged"] == [1] and r["any"] and not r["none"] for r in flags)
    for kind in ("cnn", "jem", "rbm", "dsm", "nce"):
        r0, r1 = sorted((r for r in rows if r.get("kind") == kind), key=lambda r: r["rank"])
        drift = kind in ("cnn", "jem")  # the slow-runaway check is contrastive divergence's
        assert r0["rolled_back"] == r1["rolled_back"] == [False, True, False, drift], kind
        assert "forced" in r1["events"][0] and "on rank 1" in r0["events"][0]
        if drift:
            assert "(drift)" in r1["events"][1] and "on rank 1" in r0["events"][1]
        assert r0["lr"] == r1["lr"] == pytest.approx(0.5e-3)  # both halved their learning rate
        assert r0["sampler_steps"] == r1["sampler_steps"] == 2 * (1 + drift)  # the drift doubled both
        assert r0["digest"] == r1["digest"], kind  # identical weights (and nce's log Z) after the shared rollback
        assert r0["loss"] != r1["loss"], kind  # each rank its own batches and noise
        if kind in ("dsm", "nce"):
            assert r0["buffer"] is None  # no replay buffer, no MCMC in their updates
        else:
            assert r0["buffer"] != r1["buffer"], kind  # one replay buffer per rank, with its own stream


# --- single process: the same code, no process group, no collectives ------------------------------
def test_helpers_are_no_ops_in_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with distributed.session(torch.device("cpu")) as (world, device):
        assert world == distributed.World() and world.is_main and device == torch.device("cpu")
        assert distributed.flagged_ranks(True) == [0] and not distributed.any_rank(False)
        assert distributed.shared_divergence("why") == "why" and distributed.shared_divergence(None) is None
        module = torch.nn.Linear(2, 1)
        assert distributed.data_parallel(module, device) is module
        assert distributed.gather_digests(module) == [distributed.parameter_digest(module)]


def test_rank_seeds():
    assert distributed.rank_seed(7, 0) == 7  # rank 0 is today's single-process stream
    seeds = {distributed.rank_seed(7, r) for r in range(8)} | {distributed.rank_seed(8, r) for r in range(8)}
    assert len(seeds) == 16 and all(0 <= s < 2**63 for s in seeds)


def test_single_process_trainer_records_a_world_of_one():
    d = ebm_play.sample_digits(train=True)
    tr = ebm_play.Trainer(ebm_play.TrainConfig(width=4, batch_size=8, sampler_steps=1, buffer_size=16), d.x[:64])
    tr.step()
    assert tr.metadata()["world_size"] == 1


def test_threads_are_shared_among_the_ranks_of_a_machine(monkeypatch):
    old = torch.get_num_threads()
    monkeypatch.setattr(runtime, "cpu_count", lambda: 8)
    for name in ("EBM_PLAY_THREADS", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    try:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert runtime.configure_threads() == 4
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
        assert runtime.configure_threads() == 1
        assert runtime.configure_threads(3) == 3  # --threads wins
        monkeypatch.setenv("EBM_PLAY_THREADS", "2")
        assert runtime.configure_threads() == 2
        monkeypatch.delenv("LOCAL_WORLD_SIZE")
        monkeypatch.delenv("EBM_PLAY_THREADS")
        assert runtime.configure_threads() == 8  # outside torchrun: every core
    finally:
        torch.set_num_threads(old)


def test_train_help_shows_the_torchrun_command(capsys):
    assert cli.main(["train", "--help"]) == 0
    assert "torchrun --nproc_per_node N -m ebm_play train" in capsys.readouterr().out
