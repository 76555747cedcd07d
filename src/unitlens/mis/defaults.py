"""Defaults of MIS (the CLI takes its option defaults from here)."""
N_TASKS = 20  # 2-AFC tasks per unit, N
K_EXPL = 9  # explanations per side and task, K
TAU = 0.16  # temperature: p = sigmoid((Δ⁺ − Δ⁻) / τ)
BACKEND = "offline"  # the offline perceptual backend (DreamSim in the paper needs its weights)
CALIBRATION_FRACTION = 0.05  # share of human-scored units tau is fitted on (paper, 5 %)
NOISE_SIMULATIONS = 1000
EXPLANATIONS = ("exemplars", "featviz")  # what MIS takes its explanations from: natural exemplars, visualisations
CALIBRATION_SEED = 0  # seed of the fit/evaluation split and of the noise-ceiling simulation
