"""Training: the imitation-learning trainer, evaluation in simulation, distributed helpers."""
