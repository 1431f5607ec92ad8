"""Model families behind one registry, registered with the transformers Auto classes.

A family is a config class (its options) and a model class (training forward and the acting
protocol; see `icl_rl.models.base`). `register_family` puts both in the registry and in
`AutoConfig` / `AutoModel`, so `AutoModel.from_pretrained(path)` loads any family once
`icl_rl` is imported. `build_model` makes a fresh model of a family for a dataset's env;
`load_model` reads a folder or a Hub id and never names a concrete class.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoConfig, AutoModel

from icl_rl.errors import IclRlError
from icl_rl.models.ad import ADConfig, ADModel
from icl_rl.models.base import FamilyConfig, FamilyModel, FamilyOutput, StepOutput
from icl_rl.models.dpt import DPTConfig, DPTModel
from icl_rl.models.recurrent import RecurrentConfig, RecurrentModel

FAMILIES: dict[str, tuple[type[FamilyConfig], type[FamilyModel]]] = {}


def register_family(name: str, config_class: type[FamilyConfig],
                    model_class: type[FamilyModel], exist_ok: bool = False) -> None:
    """Make family `name` available to `train --model NAME`, `load_model` and AutoModel."""
    if not issubclass(config_class, FamilyConfig) or not issubclass(model_class, FamilyModel):
        raise IclRlError(f"family {name!r}: the config must subclass FamilyConfig and the model "
                         "FamilyModel (icl_rl.models.base)")
    if name in FAMILIES and not exist_ok:
        raise IclRlError(f"model family {name!r} is already registered")
    FAMILIES[name] = (config_class, model_class)
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)


def unregister_family(name: str) -> None:
    """Remove family `name` from the registry (tests of registration clean up with this)."""
    FAMILIES.pop(name, None)


def family_of(model_type: str) -> str | None:
    """The registered family name whose config has `model_type`."""
    for name, (config_class, _) in FAMILIES.items():
        if config_class.model_type == model_type:
            return name
    return None


def family_options(name: str) -> dict:
    """Family `name`'s options and their defaults."""
    return _lookup(name)[0].options()


def _lookup(name: str) -> tuple[type[FamilyConfig], type[FamilyModel]]:
    if name not in FAMILIES:
        raise IclRlError(f"unknown model family {name!r}; choose one of: "
                         f"{', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def family_config(name: str, options: dict | None = None, **common) -> FamilyConfig:
    """The config of family `name` with its own `options` (`--model-kwargs`, checked by name
    and by the family's own rules) and the `common` fields every family has; every problem is
    one line naming --model-kwargs."""
    config_class = _lookup(name)[0]
    options = dict(options or {})
    allowed = config_class.options()
    extra = sorted(set(options) - set(allowed))
    if extra:
        raise IclRlError(f"--model-kwargs: the {name} family does not take "
                         f"{', '.join(extra)}; it takes: {', '.join(allowed) or 'nothing'}")
    try:
        return config_class(**common, **options)
    except IclRlError as e:
        raise IclRlError(f"--model-kwargs: {e}") from None
    except (TypeError, ValueError) as e:
        raise IclRlError(f"--model-kwargs for {name}: bad value in {options} ({e})") from None


def build_model(name: str, env_meta: dict, options: dict | None = None,
                **common) -> FamilyModel:
    """A fresh model of family `name` for the env of a dataset card (`meta["env"]`).

    `options` are the family's own (`--model-kwargs`); `common` are the fields every family
    has (max_context, hidden_inputs, provenance).
    """
    spec = env_meta["spec"]
    config = family_config(name, options, obs_dim=spec["obs_dim"],
                           num_actions=spec["num_actions"], obs_levels=spec.get("obs_levels"),
                           env_name=env_meta["name"], env_params=env_meta["params"], **common)
    return _lookup(name)[1](config)


def load_model(path: str | Path) -> FamilyModel:
    """A trained model of any registered family: a folder, a run folder or a Hub repo id."""
    if not Path(path).exists() and str(path).count("/") == 1:  # a Hub repo id
        from icl_rl import hub

        path = hub.download(str(path), "model")
    path = Path(path)
    if path.is_dir() and (path / "model" / "config.json").exists():
        path = path / "model"  # a run folder
    if not (path / "config.json").exists():
        raise IclRlError(f"{path}: no config.json; pass a folder written by `icl-rl train` "
                         "(its model/ subfolder) or save_pretrained")
    try:
        cfg = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise IclRlError(f"{path}/config.json does not parse ({e})") from None
    if family_of(cfg.get("model_type")) is None:
        raise IclRlError(f"{path}/config.json: model_type {cfg.get('model_type')!r} is not an "
                         f"icl-rl model family (registered: {', '.join(sorted(FAMILIES))})")
    return AutoModel.from_pretrained(path)


def check_env(model_config: FamilyConfig, meta: dict, model_src, data_src) -> None:
    """Refuse data from another env family or action/observation space than the model's."""
    env = meta["env"]
    spec = env["spec"]
    mismatch = (model_config.env_name != env["name"]
                or model_config.num_actions != spec["num_actions"]
                or model_config.obs_dim != spec["obs_dim"])
    if mismatch:
        raise IclRlError(
            f"{data_src} is {env['name']} (obs_dim {spec['obs_dim']}, {spec['num_actions']} "
            f"actions) but the model {model_src} was trained for {model_config.env_name} "
            f"(obs_dim {model_config.obs_dim}, {model_config.num_actions} actions); use a "
            "dataset of the model's env or train a new model"
        )


register_family("ad", ADConfig, ADModel)
register_family("gru", RecurrentConfig, RecurrentModel)
register_family("dpt", DPTConfig, DPTModel)

__all__ = ["FAMILIES", "ADConfig", "ADModel", "DPTConfig", "DPTModel", "RecurrentConfig",
           "RecurrentModel",
           "FamilyConfig", "FamilyModel", "FamilyOutput", "StepOutput", "build_model",
           "check_env", "family_config", "family_of", "family_options", "load_model",
           "register_family",
           "unregister_family"]
