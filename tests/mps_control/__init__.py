"""Stand-ins for the MPS control daemon, nvidia-smi and systemctl (see README.md)."""
