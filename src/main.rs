use clap::Parser;

fn main() {
    let cli = skypipe::cli::Cli::parse();
    std::process::exit(skypipe::run(cli));
}
