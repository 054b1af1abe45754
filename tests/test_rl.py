"""Reinforcement learning: GAE by hand, rollout = update re-run, episode resets, the cores against the models,
a memory bandit that needs memory, and the `fbt rl` commands."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

gymnasium = pytest.importorskip("gymnasium")
pytest.importorskip("minigrid")

# ruff: noqa: E402  (the imports below need gymnasium and minigrid)
from fbt.cli import main
from fbt.models import build_model
from fbt.models.config import ModelConfig
from fbt.rl.config import POLICY_NAMES, RLConfig, core_config
from fbt.rl.envs import make_vector_env
from fbt.rl.evaluate import evaluate_policy
from fbt.rl.policies import FeedbackCore, Policy, TransformerXLCore
from fbt.rl.ppo import Actor, EpisodeTracker, PPOSettings, compute_advantages, replay, rollout_sequences, sequences
from fbt.rl.train import RLTrainer

BANDIT = "fbt-test/CueBandit-v0"
KEY, BALL = 5, 6  # MiniGrid object codes shown as the cue


class CueBandit(gymnasium.Env):
    """Two steps: the first view shows a key or a ball, the second is blank; the second action must name the
    cue (0 for the key, 1 for the ball). A memoryless policy is right half of the time."""

    def __init__(self):
        self.observation_space = gymnasium.spaces.Dict(
            {
                "image": gymnasium.spaces.Box(0, 255, (3, 3, 3), np.uint8),
                "direction": gymnasium.spaces.Discrete(4),
            }
        )
        self.action_space = gymnasium.spaces.Discrete(3)

    def view(self, cue: int) -> dict:
        image = np.zeros((3, 3, 3), np.uint8)
        image[1, 1, 0] = cue
        return {"image": image, "direction": 0}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.cue, self.t = int(self.np_random.integers(2)), 0
        return self.view((KEY, BALL)[self.cue]), {}

    def step(self, action):
        self.t += 1
        if self.t == 1:
            return self.view(0), 0.0, False, False, {}
        return self.view(0), float(int(action) == self.cue), True, False, {}


if BANDIT not in gymnasium.registry:
    gymnasium.register(BANDIT, entry_point=CueBandit)


def test_gae_matches_a_hand_computed_example():
    # gamma = lambda = 0.5; observation 2 starts a new episode, so step 1 does not bootstrap from it.
    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    values = torch.tensor([[0.5], [1.0], [0.25]])
    starts = torch.tensor([[True], [False], [True]])
    advantages, returns = compute_advantages(
        rewards, values, starts, torch.tensor([2.0]), torch.tensor([False]), gamma=0.5, gae_lambda=0.5
    )
    # t=2: 2 + 0.5*2 - 0.25 = 2.75; t=1: 0 - 1 = -1 (episode ends); t=0: (1 + 0.5*1 - 0.5) + 0.25*(-1) = 0.75
    torch.testing.assert_close(advantages[:, 0], torch.tensor([0.75, -1.0, 2.75]))
    torch.testing.assert_close(returns[:, 0], torch.tensor([1.25, 0.0, 3.0]))


def random_episode_data(T: int, N: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 11, (T, N, 5, 5, 3), generator=g).to(torch.uint8)
    directions = torch.randint(0, 4, (T, N), generator=g)
    starts = torch.rand(T, N, generator=g) < 0.15
    starts[0] = True
    return images, directions, starts


def make_policy(name: str, span: int = 6, head_dim: int = 0) -> Policy:
    torch.manual_seed(0)
    config = core_config(name, dim=16, layers=2, heads=2, ff=32, span=span, head_dim=head_dim)
    return Policy(name, 5, 7, config).eval()


@pytest.mark.parametrize("head_dim", [0, 5], ids=["E=D/H", "E=5"])
@pytest.mark.parametrize("name", POLICY_NAMES)
def test_rollout_outputs_equal_the_update_rerun_from_stored_states(name, head_dim):
    """Acting one step at a time (as the rollout does) and re-running stored sequences from their starting
    states (as PPO's update does) give the same logits and values; episodes start inside the sequences."""
    T, N, K = 24, 3, 8
    policy = make_policy(name, head_dim=head_dim)
    images, directions, starts = random_episode_data(T, N)
    state, stored, logits_steps, value_steps = policy.initial_state(N, torch.device("cpu")), [], [], []
    with torch.no_grad():
        for t in range(T):
            if t % K == 0:
                stored.append({k: v.clone() for k, v in state.items()})
            logits, value, state = policy(images[t : t + 1], directions[t : t + 1], state, starts[t : t + 1])
            logits_steps.append(logits[0])
            value_steps.append(value[0])
    states = {k: torch.cat([s[k] for s in stored]) for k in stored[0]}
    logits, values, _ = policy(sequences(images, K), sequences(directions, K), states, sequences(starts, K))
    torch.testing.assert_close(logits, sequences(torch.stack(logits_steps), K), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(values, sequences(torch.stack(value_steps), K), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", POLICY_NAMES)
@pytest.mark.parametrize("env_id", (BANDIT, "MiniGrid-MemoryS7-v0"))
def test_ppo_replays_a_collected_rollout_exactly(name, env_id):
    """PPO's update path (stored states, sequences, replay) gives back the rollout's log-probabilities and
    values at the rollout's weights, across episode starts and rollout boundaries."""
    envs = make_vector_env(env_id, 3, seed=0)
    view = envs.single_observation_space["image"].shape[0]
    torch.manual_seed(0)
    policy = Policy(name, view, 3, core_config(name, dim=16, layers=2, heads=2, ff=32, span=5)).eval()
    actor = Actor(policy, envs, torch.device("cpu"), EpisodeTracker(3, 1.0))
    settings = PPOSettings(steps=12, bptt=4)
    for _ in range(2):  # the second rollout starts from carried state
        rollout = actor.collect(settings)
        data, states = rollout_sequences(rollout, settings.bptt)
        with torch.no_grad():
            batch, logprobs, values = replay(policy, data, states, torch.arange(data["starts"].shape[1]))
        taken = logprobs.gather(-1, batch["actions"][..., None])[..., 0]
        torch.testing.assert_close(taken, data["logprobs"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(values, data["values"], atol=1e-5, rtol=1e-5)
    if env_id == BANDIT:  # two-step episodes: some start inside the sequences
        assert rollout.starts[1:].any()
    else:  # longer episodes: the second rollout goes on with the first one's, from their carried memory
        assert not rollout.starts[0].any()
        fresh = policy.initial_state(3, torch.device("cpu"))
        assert not any(torch.equal(value, fresh[key]) for key, value in rollout.states[0].items())
    envs.close()


@pytest.mark.parametrize("name", ("feedback", "transformer-xl", "lstm"))
def test_a_new_episode_sees_nothing_of_the_previous_one(name):
    T, N = 12, 2
    policy = make_policy(name, span=20)
    images, directions, starts = random_episode_data(T, N, seed=1)
    starts[:] = False
    starts[0] = starts[7] = True
    other = images.clone()
    other[:7] = torch.randint(0, 11, other[:7].shape, dtype=torch.uint8)  # change the first episode only
    state = policy.initial_state(N, torch.device("cpu"))
    with torch.no_grad():
        first = policy(images, directions, state, starts)[0]
        second = policy(other, directions, state, starts)[0]
    assert not torch.allclose(first[:7], second[:7])
    torch.testing.assert_close(first[7:], second[7:], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("model_name", "core_class"), [("feedback", FeedbackCore), ("transformer-xl", TransformerXLCore)]
)
def test_the_transformer_cores_are_the_language_models(model_name, core_class):
    """With no episode start after the first step, an RL core computes its language model's recurrence
    (feedback: the plain reference path) on the same inputs: same top-layer states, hence logits."""
    config = ModelConfig(model=model_name, vocab_size=11, dim=16, layers=2, heads=2, ff=32, span=5)
    torch.manual_seed(0)
    model = build_model(config).eval()
    model.fast = False  # only the feedback model has a fast path
    core = core_class(config).eval()
    core.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(("embed", "head"))})
    tokens = torch.randint(0, 11, (3, 9))
    starts = torch.zeros(9, 3, dtype=torch.bool)
    starts[0] = True
    with torch.no_grad():
        expected, _ = model(tokens)
        outputs, _ = core(model.embed(tokens).transpose(0, 1), core.initial_state(3, torch.device("cpu")), starts)
    torch.testing.assert_close(model.head(outputs).transpose(0, 1), expected, atol=1e-5, rtol=1e-5)


def bandit_success(policy: str, tmp_path) -> float:
    config = RLConfig(
        env=BANDIT,
        policy=policy,
        frames=3072,
        envs=16,
        seed=0,
        lr=3e-3,
        dim=32,
        layers=1,
        heads=2,
        ff=64,
        span=4,
        steps=16,
        bptt=8,
        minibatches=2,
        save_every=1000,
    )
    RLTrainer.start(config, tmp_path / policy, torch.device("cpu")).fit(progress=False)
    return evaluate_policy(tmp_path / policy, episodes=200, greedy=True, progress=False)["success_rate"]


def test_a_memory_bandit_is_solved_by_feedback_and_not_by_mlp(tmp_path, one_thread):
    assert bandit_success("feedback", tmp_path) >= 0.95
    assert bandit_success("mlp", tmp_path) <= 0.65


def run_cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_rl_commands_end_to_end(tmp_path, capsys):
    run = str(tmp_path / "run")
    small = [
        "--env",
        "MiniGrid-MemoryS7-v0",
        "--policy",
        "feedback",
        "--envs",
        "2",
        "--steps",
        "16",
        "--bptt",
        "8",
        "--dim",
        "16",
        "--layers",
        "1",
        "--heads",
        "2",
        "--ff",
        "32",
        "--span",
        "8",
        "--save-every",
        "1",
        "--no-progress",
        "--json",
    ]
    code, out, err = run_cli(["rl", "train", *small, "--frames", "64", "--out", run], capsys)
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["updates"] == 2
    code, out, err = run_cli(["rl", "train", *small[:-2], "--frames", "64", "--out", str(tmp_path / "logged")], capsys)
    assert code == 0 and "\r" not in err and "train: 64/64 frame (100%)" in err, err  # a log gets whole lines
    code, out, err = run_cli(
        ["rl", "train", "--frames", "128", "--out", run, "--resume", "--no-progress", "--json"], capsys
    )
    assert code == 0, err
    assert json.loads(out.splitlines()[-1])["updates"] == 4
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["update", "1", "2", "3", "4"]
    code, out, err = run_cli(["rl", "eval", run, "--episodes", "3", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["episodes"] == 3 and 0 <= result["success_rate"] <= 1
    assert {"mean_return", "mean_length"} <= set(result)
    # The run tooling reads RL runs: listed with frames and the recorded evaluation, shown, plotted.
    code, out, err = run_cli(["runs", str(tmp_path), "--json"], capsys)
    listed = {Path(row["path"]).name: row for row in json.loads(out)}
    assert code == 0 and listed["run"]["task"] == "rl MiniGrid-MemoryS7-v0" and listed["run"]["tokens"] == 128
    assert listed["run"]["test"] == result["success_rate"] and listed["run"]["status"] == "complete"
    code, out, err = run_cli(["runs", str(tmp_path)], capsys)
    assert "128 frames" in out and f"{result['success_rate']:.1%} success" in out
    code, out, err = run_cli(["show", run], capsys)
    assert code == 0 and "complete: 4 of 4 updates" in out and "frames 128" in out and "eval test" in out
    code, out, err = run_cli(["show", run, "--json"], capsys)
    assert json.loads(out.splitlines()[-1])["config"]["rl"]["frames"] == 128
    code, out, err = run_cli(["plot", run, "--out", str(tmp_path / "rl.png")], capsys)
    assert code == 0 and (tmp_path / "rl.png").read_bytes()[:4] == b"\x89PNG"
    gif = tmp_path / "episode.gif"
    code, out, err = run_cli(["rl", "render", run, "--out", str(gif), "--json"], capsys)
    assert code == 0, err
    assert gif.read_bytes()[:6] == b"GIF89a" and json.loads(out)["steps"] >= 1


def test_an_interrupted_rl_run_exits_130_and_resumes(tmp_path, capsys, monkeypatch):
    """An experiment grid takes exit status 0 for a finished cell, so a stopped run must not give it."""
    import fbt.rl.train as rl_train

    original = rl_train.update

    def update_then_signal(*args, **kwargs):
        result = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(rl_train, "update", update_then_signal)
    run = str(tmp_path / "run")
    tiny = ["--policy", "lstm", "--envs", "2", "--steps", "16", "--bptt", "8", "--dim", "16", "--layers", "1"]
    code, out, err = run_cli(["rl", "train", *tiny, "--frames", "96", "--out", run, "--no-progress", "--json"], capsys)
    assert code == 130 and "interrupted at update 1; saved a checkpoint. Resume with: fbt rl train --resume" in err
    assert json.loads(out.splitlines()[-1])["updates"] == 1
    monkeypatch.undo()
    code, out, err = run_cli(["rl", "train", "--resume", "--out", run, "--no-progress", "--json"], capsys)
    assert code == 0 and json.loads(out.splitlines()[-1])["updates"] == 3, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rl", "train", "--env", "MiniGrid-NoSuchTask-v0", "--out", "X"], "unknown environment 'MiniGrid-NoSuch"),
        (["rl", "train", "--policy", "gru", "--out", "X"], "unknown policy 'gru'"),
        (["rl", "train", "--steps", "100", "--bptt", "32", "--out", "X"], "bptt 32 must divide"),
        (["rl", "train", "--dim", "30", "--heads", "4", "--out", "X"], "not divisible"),
        (["rl", "eval", "NOPE", "--episodes", "2"], "no such run"),
        (["rl", "eval", "NOPE", "--episodes", "0"], "--episodes must be >= 1"),
    ],
)
def test_bad_rl_input_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(argv, capsys)
    assert code != 0
    assert err.count("\n") == 1 and message in err, err


def test_a_corrupt_rl_checkpoint_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    config = RLConfig(env=BANDIT, policy="lstm", frames=32, envs=2, dim=8, layers=1, steps=16, bptt=8, minibatches=1)
    RLTrainer.start(config, run, torch.device("cpu")).fit(progress=False)
    weights = next(run.glob("checkpoints/step-*/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    code, _, err = run_cli(["rl", "eval", str(run), "--episodes", "2"], capsys)
    assert code == 1 and err.count("\n") == 1 and "corrupt" in err, err
