"""Models over learning histories; registered with the transformers Auto classes."""

from transformers import AutoConfig, AutoModel

from icl_rl.models.ad import ADConfig, ADModel, shift_transitions, transition_tokens

AutoConfig.register(ADConfig.model_type, ADConfig)
AutoModel.register(ADConfig, ADModel)

__all__ = ["ADConfig", "ADModel", "shift_transitions", "transition_tokens"]
