//! How progress is shown, chosen from `-q`, `--progress` and whether stderr is a terminal
//! (the display itself is `transfer::progress`).

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProgressMode {
    Off,
    /// A bar redrawn in place (stderr is a terminal).
    Bar,
    /// A plain line every few seconds and one at the end (`--progress` without a terminal).
    Lines,
}

impl ProgressMode {
    /// The mode for the flags and what stderr is.
    pub(crate) fn choose(quiet: bool, forced: bool, stderr_is_terminal: bool) -> Self {
        match (quiet, forced, stderr_is_terminal) {
            (true, _, _) => ProgressMode::Off,
            (false, _, true) => ProgressMode::Bar,
            (false, true, false) => ProgressMode::Lines,
            (false, false, false) => ProgressMode::Off,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(ProgressMode::choose(true, true, true), ProgressMode::Off);
        assert_eq!(ProgressMode::choose(false, false, true), ProgressMode::Bar);
        assert_eq!(
            ProgressMode::choose(false, true, false),
            ProgressMode::Lines
        );
        assert_eq!(ProgressMode::choose(false, false, false), ProgressMode::Off);
    }
}
