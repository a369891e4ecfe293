//! Shell completions and the man page, generated from the clap definition so they never
//! drift from it.

use std::io::Write as _;

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::config::cli::Cli;
use crate::error::code;

/// Writes generated text to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &[u8]) -> anyhow::Result<i32> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text).and_then(|_| out.flush()) {
        Ok(()) => Ok(code::OK),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(code::OK),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// `skypipe completions SHELL`.
pub(crate) fn completions(shell: clap_complete::Shell) -> anyhow::Result<i32> {
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "skypipe", &mut text);
    emit(&text)
}

/// Every variable skypipe reads, with what it does: the man page's ENVIRONMENT (README.md
/// lists the same).
const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "NATS_URL",
        "The server URL(s), comma-separated, as --server.",
    ),
    ("NATS_CONTEXT", "The natscli context to use, as --context."),
    (
        "NATS_USER, NATS_PASSWORD",
        "User name and password, as --user and --password.",
    ),
    ("NATS_TOKEN", "Authentication token, as --token."),
    ("NATS_CREDS", "Credentials file, as --creds."),
    ("NATS_NKEY", "Nkey seed file, as --nkey."),
    (
        "NATS_CERT, NATS_KEY",
        "TLS client certificate and key, as --tlscert and --tlskey.",
    ),
    ("NATS_CA", "TLS certificate authority, as --tlsca."),
    (
        "NATS_TLSFIRST",
        "TLS before the NATS handshake (any value but 0 or false), as --tlsfirst.",
    ),
    (
        "NATS_JS_DOMAIN",
        "The JetStream domain that holds the pipes, as --js-domain.",
    ),
    ("SKYPIPE_PREFIX", "Subject prefix, as --prefix."),
    (
        "SKYPIPE_REPLICAS",
        "Replicas of the streams skypipe creates, as --replicas.",
    ),
    (
        "SKYPIPE_MAX_BYTES",
        "Bytes the streams skypipe creates may hold together, as --max-bytes.",
    ),
    (
        "SKYPIPE_SECRET",
        "The secret that encrypts payloads end to end (--secret-file wins).",
    ),
    (
        "SKYPIPE_LOG, RUST_LOG",
        "A diagnostics filter, e.g. skypipe=debug (as -v does).",
    ),
    (
        "SKYPIPE_LOCAL_PORT",
        "The port of the default address and of the local server (4222).",
    ),
    (
        "SKYPIPE_LOCAL_MAX_STORE",
        "The local server's store size, as --max-store.",
    ),
    (
        "SKYPIPE_NATS_SERVER",
        "The nats-server binary the local server runs (else PATH).",
    ),
    (
        "SKYPIPE_LIVE",
        "off: every payload goes through the server's store, even to a taker already waiting.",
    ),
    (
        "SKYPIPE_RETRY_FOR",
        "How long to keep trying a server that went away (60s).",
    ),
    (
        "SKYPIPE_SSH_COMMAND",
        "The ssh command skypipe server deploy runs, e.g. \"ssh -F ~/work/ssh_config\" (ssh).",
    ),
    (
        "XDG_CONFIG_HOME",
        "Where the nats and skypipe config directories are (~/.config).",
    ),
    (
        "XDG_DATA_HOME",
        "Where the local server keeps its files (~/.local/share).",
    ),
    ("HOME", "The base of the default directories."),
];

/// The files skypipe reads and writes: the man page's FILES.
const FILES: &[(&str, &str)] = &[
    ("~/.config/nats/context/NAME.json", "natscli contexts: server, credentials, prefix, replicas; skypipe setup writes one."),
    ("~/.config/nats/context.txt", "The natscli's selected context."),
    ("~/.config/skypipe/config.json", "The context skypipe uses ({\"context\": \"NAME\"}), written by skypipe setup."),
    ("~/.local/share/skypipe/", "The local server: nats-server.conf, nats-server.log, nats-server.pid, its store (jetstream/) and its credential local-user.nk (mode 0600); made public, its CA and certificate (tls/), public.json, the machines that joined (machines.json) and the secret skypipe invite --with-secret made (secret)."),
    ("~/.config/skypipe/joined/CONTEXT/", "What skypipe join and skypipe server deploy saved for a server: its CA (ca.pem), this machine's key (user.nk) and the shared secret (secret), all mode 0600."),
];

/// Escapes text for roff.
fn roff(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('-', "\\-")
        .lines()
        .map(|l| match l.strip_prefix(['.', '\'']) {
            Some(_) => format!("\\&{l}"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A section of tagged paragraphs.
fn section(title: &str, items: impl IntoIterator<Item = (String, String)>) -> String {
    let mut out = format!(".SH {title}\n");
    for (tag, text) in items {
        out.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", roff(&tag), roff(&text)));
    }
    out
}

/// `skypipe man`: clap's sections, with the commands listed here (there is no page per
/// command), then ENVIRONMENT and FILES.
pub(crate) fn man() -> anyhow::Result<i32> {
    let cmd = Cli::command();
    let page = clap_mangen::Man::new(cmd.clone());
    let mut text = Vec::new();
    let failed = "cannot render the man page";
    page.render_title(&mut text).context(failed)?;
    page.render_name_section(&mut text).context(failed)?;
    page.render_synopsis_section(&mut text).context(failed)?;
    page.render_description_section(&mut text).context(failed)?;
    page.render_options_section(&mut text).context(failed)?;
    let commands = cmd.get_subcommands().map(|sub| {
        let usage = format!("skypipe {}", sub.get_name());
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        (usage, about)
    });
    text.extend_from_slice(section("COMMANDS", commands).as_bytes());
    text.extend_from_slice(b".PP\nEach command's flags: skypipe COMMAND \\-\\-help.\n");
    page.render_extra_section(&mut text).context(failed)?;
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    text.extend_from_slice(section("ENVIRONMENT", pairs(ENVIRONMENT)).as_bytes());
    text.extend_from_slice(section("FILES", pairs(FILES)).as_bytes());
    page.render_version_section(&mut text).context(failed)?;
    emit(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_the_code_reads_is_in_the_man_page() {
        let listed: Vec<&str> = ENVIRONMENT
            .iter()
            .flat_map(|(names, _)| names.split(", "))
            .collect();
        for var in [
            crate::config::LOCAL_PORT_ENV,
            crate::config::LOCAL_MAX_STORE_ENV,
            crate::diag::LOG_ENV,
            crate::config::retry::ENV,
            crate::config::JS_DOMAIN_ENV,
            skypipe_nats::SERVER_ENV,
        ] {
            assert!(listed.contains(&var), "{var}");
        }
    }
}
