fn main() -> std::process::ExitCode {
    haconn::cli::main()
}
