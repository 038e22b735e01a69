//! The emulated Proxmox host (being built).
fn main() {}
