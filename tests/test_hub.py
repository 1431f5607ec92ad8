"""Publishing through the one Hub seam, with a fake HfApi that writes to a folder."""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path

import datasets
import pytest
from transformers import AutoModel

import icl_rl.models  # noqa: F401  (registers the Auto classes, as a user's import would)
from data_gen.generate import GenerateConfig
from data_gen.generate import main as generate
from eval.evaluate import EvalConfig
from eval.evaluate import main as evaluate
from icl_rl import hub
from icl_rl.dataset import read_card, verify
from icl_rl.errors import IclRlError
from training.train import TrainConfig
from training.train import main as train


class FakeHub:
    """create_repo / upload_folder / snapshot_download on a local folder; records uploads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repos: dict[str, dict] = {}
        self.uploads: list[tuple[str, list[str]]] = []

    def _path(self, repo_id, repo_type):
        return self.root / repo_type / repo_id

    def create_repo(self, repo_id, *, repo_type=None, private=False, exist_ok=False):
        self.repos[repo_id] = {"type": repo_type, "private": private}
        self._path(repo_id, repo_type).mkdir(parents=True, exist_ok=True)

    def upload_folder(self, *, repo_id, folder_path, repo_type=None, ignore_patterns=None,
                      commit_message=None):
        src, dst = Path(folder_path), self._path(repo_id, repo_type)
        files = []
        for p in sorted(src.rglob("*")):
            rel = p.relative_to(src).as_posix()
            if p.is_file() and not any(fnmatch.fnmatch(rel, pat) for pat in ignore_patterns):
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, dst / rel)
                files.append(rel)
        self.uploads.append((repo_id, files))
        return f"https://hub.example/{repo_id}"

    def snapshot_download(self, repo_id, *, repo_type=None):
        path = self._path(repo_id, repo_type)
        if not path.exists():
            raise FileNotFoundError(repo_id)
        return str(path)


@pytest.fixture
def fake_hub(tmp_path):
    fake = FakeHub(tmp_path / "hub")
    old = hub.set_api(fake)
    yield fake
    hub.set_api(old)


def test_generate_push_load_train_push_eval(fake_hub, tmp_path):
    local = generate(GenerateConfig(out=str(tmp_path / "ds"), env="bernoulli_bandit",
                                    num_arms=3, learner="ucb", num_histories=120, steps=24,
                                    shard_size=60, heldout_fraction=0.25,
                                    push_to_hub="me/ucb3", private=True))
    repo, files = fake_hub.uploads[0]
    assert repo == "me/ucb3" and fake_hub.repos["me/ucb3"] == {"type": "dataset",
                                                              "private": True}
    assert files == ["README.md", "data/test-00000-of-00001.parquet",
                     "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    uploaded = fake_hub.root / "dataset/me/ucb3"
    assert datasets.load_dataset(str(uploaded), split="train").num_rows == 90
    verify(uploaded)  # the uploaded bytes are the ones the card hashes
    assert read_card("me/ucb3") == read_card(local)  # loads by repo id through the seam

    run = train(TrainConfig(dataset="me/ucb3", out=str(tmp_path / "run"), context=24,
                            model_kwargs={"hidden_size": 32, "num_layers": 1, "num_heads": 2},
                            batch_size=8,
                            max_steps=6, eval_every=3, save_every=0, progress=False,
                            push_to_hub="me/ad-ucb3"))
    repo, files = fake_hub.uploads[1]
    assert repo == "me/ad-ucb3"
    assert sorted(files) == ["README.md", "config.json", "model.safetensors",
                             "train_config.json"]
    card = (fake_hub.root / "model/me/ad-ucb3/README.md").read_text()
    assert "datasets:\n- me/ucb3" in card and "bernoulli_bandit" in card
    model = AutoModel.from_pretrained(fake_hub.root / "model/me/ad-ucb3")
    assert model.config.env_name == "bernoulli_bandit"
    res = evaluate(EvalConfig(model="me/ad-ucb3", dataset="me/ucb3", out=str(tmp_path / "ev"),
                              num_tasks=16, episodes=10, progress=False))
    assert res["agents"]["model"]["final_regret"] >= 0
    for _ in range(2):  # evaluating a local model puts (and replaces) the table in its card
        evaluate(EvalConfig(model=run["model_dir"], dataset="me/ucb3", num_tasks=16,
                            episodes=10, progress=False, out=str(tmp_path / "ev2")))
    card = (Path(run["model_dir"]) / "README.md").read_text()
    assert card.count("## In-context evaluation") == 1 and "| model |" in card
    assert card.startswith("---\nlibrary_name: icl-rl")


def test_hub_failures_are_one_line(fake_hub, tmp_path):
    with pytest.raises(IclRlError, match="not a local path, and the Hub dataset repo"):
        read_card("me/nothing-here")
    # a path that cannot be a repo id is reported missing, not as a Hub failure
    for path in ("/no/such/dataset", "./runs/missing", str(tmp_path / "gone")):
        with pytest.raises(IclRlError, match="no such folder"):
            read_card(path)

    class Down(FakeHub):
        def upload_folder(self, **kw):
            raise ConnectionError("no route to host")

    hub.set_api(Down(tmp_path / "h2"))
    with pytest.raises(IclRlError, match="upload failed .*no route to host"):
        generate(GenerateConfig(out=str(tmp_path / "ds"), num_arms=3, num_histories=10,
                                steps=5, shard_size=10, heldout_fraction=0.2,
                                push_to_hub="me/x"))
    assert (tmp_path / "ds/README.md").exists()  # the local dataset is complete regardless
