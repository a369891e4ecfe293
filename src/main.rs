fn main() {
    std::process::exit(skypipe::main());
}
