fn main() -> std::process::ExitCode {
    mcp_platform::cli::run()
}
