//! The `phoenix` command: everything lives in the library.
fn main() -> std::process::ExitCode {
    phoenix::main_entry(std::env::args_os())
}
