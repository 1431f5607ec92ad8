"""The one seam to the Hugging Face Hub: create a repo, upload a folder, download a snapshot.

Everything icl-rl publishes or fetches goes through `api()`, an `huggingface_hub.HfApi` unless a
test (or a mirror) installs another object with the same three methods via `set_api`.
"""

from __future__ import annotations

from pathlib import Path

from icl_rl.errors import IclRlError

_api = None
# Never published: temporaries of atomic writes, resumable-run bookkeeping, checkpoints.
IGNORE = [".*", "**/.*", "checkpoints/**", "generate_config.json"]


def api():
    """The Hub client in use."""
    global _api
    if _api is None:
        from huggingface_hub import HfApi

        _api = HfApi()
    return _api


def set_api(client):
    """Install another client (tests use a fake that writes to a folder); returns the old one."""
    global _api
    old, _api = _api, client
    return old


def push_folder(folder: str | Path, repo_id: str, repo_type: str, private: bool = False) -> str:
    """Create `repo_id` if needed and upload `folder` to it; returns what the client returns."""
    try:
        api().create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        return str(api().upload_folder(repo_id=repo_id, folder_path=str(folder),
                                       repo_type=repo_type, ignore_patterns=IGNORE,
                                       commit_message=f"icl-rl: upload {Path(folder).name}"))
    except Exception as e:  # auth, network, bad id: one line that says what failed
        raise IclRlError(f"--push-to-hub {repo_id}: upload failed ({type(e).__name__}: {e}); "
                         "check `huggingface-cli login` and the repo id") from None


def download(repo_id: str, repo_type: str) -> Path:
    """A local snapshot of `repo_id` (cached by huggingface_hub)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:  # a path: say that it is missing, not how the Hub failed
        raise IclRlError(f"{repo_id}: no such folder (and not a Hub repo id, which reads "
                         f"user/name); check the path") from None
    try:
        return Path(api().snapshot_download(repo_id, repo_type=repo_type))
    except Exception as e:
        raise IclRlError(f"{repo_id}: not a local path, and the Hub {repo_type} repo could not "
                         f"be fetched ({type(e).__name__}: {e})") from None
