"""Training: algorithm distillation of learning histories with accelerate."""
