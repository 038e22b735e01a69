//! Setting up the emulated Proxmox host (DESIGN.md §7) for `--host emulated`.
