//! The Proxmox VE backend.
