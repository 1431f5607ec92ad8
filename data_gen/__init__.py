"""Data generation: learning histories of source RL algorithms across task distributions."""
