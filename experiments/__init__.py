"""Research runs behind docs/long-dreams.md: the ablation (``python -m
experiments.ablate``) and the unattended GPU experiment
(``python -m experiments.long_dreams_gpu``). Not part of the product: nothing
in the stages imports them."""
