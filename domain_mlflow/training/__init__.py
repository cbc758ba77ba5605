"""Training: the tiny base model, LoRA or from-scratch training, evaluation."""
