"""Launchers: Cloud TPU VMs (tpu_vm.py), one multi-GPU node (gpu.py), gin sweeps (sweep.py).

Each is a script (`python launch/NAME.py --help`) whose command-building functions
are pure and importable, so tests compare the exact commands a dry run prints.
"""
