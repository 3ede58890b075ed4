//! The `ktrack` binary: parse, run, exit code. Everything else is in the library.

fn main() {
    std::process::exit(ktrack::cli::main());
}
