fn main() {
    std::process::exit(redvault::cli::run());
}
