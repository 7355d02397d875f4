fn main() -> std::process::ExitCode {
    dvm::cli::main()
}
