"""What gigaseg survives: one file per area, one test per fault (issue 13).

Each test names a fault a user or the environment can cause and the behaviour we promise:
one clear line (cause, input, fix) and a non-zero exit, nothing lost, never a silently wrong
result. Read the module docstrings as the list:

- ``test_config_files``   hostile or broken YAML (alias bombs, huge values in messages)
- ``test_checkpoints``    model files: format sniffing, headers that lie about their size
- ``test_model_output``   non-finite outputs, a halo below the receptive field, replaced models
- ``test_invalid_pixels`` NaN / nodata inside tiles, tiny valid areas in huge sparse scenes
- ``test_outputs``        outputs that collide, overwrite inputs, reports, temporary files
- ``test_stores``         concurrent runs, resume checks, deleted/corrupt chunks, ``--verify``
- ``test_cluster_faults`` job scripts (set -e, lifetimes, TLS), GPU binding, Ctrl-C on workers
- ``test_slurm_faults``   real SLURM: refused, dead, pending, lost and retiring jobs, Ctrl-C
"""
