"""gr-scaling: the command-line front end over gr_core, scaling, sweeps, slurm and analysis."""
