//! Names the commit skypipe is built from, for `skypipe --version`: `SKYPIPE_COMMIT` when the
//! build sets it, else what git says of the checkout, else "unknown" (a source tarball). It
//! only sets an environment variable for the compiler; it adds nothing to the link.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SKYPIPE_COMMIT");
    let commit = match std::env::var("SKYPIPE_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // Built again when HEAD moves: the file HEAD and the branch it names.
            for file in ["HEAD", "packed-refs"]
                .into_iter()
                .filter_map(|f| git(&["rev-parse", "--git-path", f]))
                .chain(
                    git(&["symbolic-ref", "-q", "HEAD"])
                        .and_then(|r| git(&["rev-parse", "--git-path", &r])),
                )
            {
                let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=SKYPIPE_COMMIT={commit}");
}
