fn main() {
    std::process::exit(skypipe::main());
}

/// Runs before the Rust runtime starts, which opens /dev/null on fds 0-2 when they are closed:
/// afterwards a closed stdout (`skypipe p >&-`) could not be told from /dev/null opened
/// read-write (Python's `subprocess.DEVNULL`), and a taker must refuse only the first.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // a function in .init_array: called once by the loader, before main
#[used]
#[link_section = ".init_array"]
static NOTE_STD_FDS: extern "C" fn() = {
    extern "C" fn note() {
        skypipe::note_std_fds();
    }
    note
};
