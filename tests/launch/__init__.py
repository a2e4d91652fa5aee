"""The launchers: TPU VMs, GPUs, gin sweeps (dry runs, and real shells with stand-ins for gcloud)."""
