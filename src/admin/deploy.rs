//! `skypipe server deploy [USER@]HOST`: software with a service. Over the system's `ssh` (the
//! user's keys, agent and `~/.ssh/config`), it copies skypipe and nats-server to the machine,
//! runs the server there as a service, public with TLS, and joins this machine to it through
//! the ssh channel, which has authenticated both ends already, so no code is typed and the
//! server's CA is pinned from the start.
//!
//! What it installs there: `~/.local/bin/skypipe`, `~/.local/bin/nats-server`, the unit
//! `~/.config/systemd/user/skypipe.service` (when there is systemd) and the data directory
//! `~/.local/share/skypipe`. `--remove` takes all of it away again.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{anyhow, Context as _};

use crate::admin::join;
use crate::admin::public::machine_name;
use crate::admin::tls::host_name;
use crate::config::cli::DeployArgs;
use crate::config::{self, Conn};
use crate::error::code;
use crate::protocol::join::Welcome;

/// The remote's `~/.local/bin`, where the binaries go.
const BIN: &str = "$HOME/.local/bin";
const UNIT: &str = "$HOME/.config/systemd/user/skypipe.service";
/// Room the store should have beyond the binaries, so a deploy does not fill the disk.
const SPARE: u64 = 64 << 20;

/// Quotes a word for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The ssh command: `SKYPIPE_SSH_COMMAND` (run by `sh`, as git runs `GIT_SSH_COMMAND`) or
/// `ssh`, towards one target.
struct Ssh {
    command: String,
    target: String,
}

impl Ssh {
    fn new(env: &dyn Fn(&str) -> Option<String>, target: &str) -> Ssh {
        Ssh {
            command: env("SKYPIPE_SSH_COMMAND")
                .filter(|c| !c.trim().is_empty())
                .unwrap_or_else(|| "ssh".into()),
            target: target.to_string(),
        }
    }

    fn base(&self, options: &[&str]) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("{} \"$@\"", self.command))
            .arg("ssh")
            .args(options);
        c
    }

    /// Runs `script` with `sh` on the machine, its stdin from `input` (or nothing).
    fn run(&self, script: &str, input: Option<Input<'_>>) -> anyhow::Result<Output> {
        let mut options = vec!["-o", "ConnectTimeout=10"];
        if !std::io::stdin().is_terminal() {
            options.extend(["-o", "BatchMode=yes"]);
        }
        let mut c = self.base(&options);
        c.arg("--")
            .arg(&self.target)
            .arg(format!("sh -c {}", sh_quote(script)));
        c.stdin(match input {
            Some(Input::File(path)) => Stdio::from(
                std::fs::File::open(path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
            ),
            Some(Input::Text(_)) => Stdio::piped(),
            None => Stdio::null(),
        });
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run ssh")?;
        if let (Some(Input::Text(text)), Some(mut stdin)) = (input, child.stdin.take()) {
            use std::io::Write as _;
            stdin
                .write_all(text.as_bytes())
                .context("cannot write to ssh")?;
        }
        let out = child.wait_with_output().context("cannot run ssh")?;
        if out.status.code() == Some(255) {
            return Err(self.ssh_failed(&out));
        }
        Ok(out)
    }

    /// Runs `script` and insists on exit 0; its last line of stderr is the error.
    fn ok(&self, script: &str, input: Option<Input<'_>>, what: &str) -> anyhow::Result<String> {
        let out = self.run(script, input)?;
        if !out.status.success() {
            return Err(anyhow!(
                "{what} on {} failed: {}",
                self.target,
                last_line(&out.stderr).unwrap_or_else(|| format!("exit {}", out.status))
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn ssh_failed(&self, out: &Output) -> anyhow::Error {
        let said = last_line(&out.stderr).unwrap_or_else(|| "no reason given".into());
        let lower = said.to_ascii_lowercase();
        if lower.contains("permission denied") || lower.contains("too many authentication") {
            anyhow!(
                "ssh to {} was refused ({said}): check the key, agent and ~/.ssh/config you \
                 use for it",
                self.target
            )
        } else if lower.contains("host key") {
            anyhow!("ssh to {} stopped: {said}", self.target)
        } else {
            anyhow!("cannot reach {} over ssh: {said}", self.target)
        }
    }

    /// The host name ssh connects to (`HostName` of `~/.ssh/config`, else the target's).
    fn host_name(&self) -> String {
        let from_target = self
            .target
            .rsplit('@')
            .next()
            .unwrap_or(&self.target)
            .to_string();
        let out = self
            .base(&["-G", "--"])
            .arg(&self.target)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        out.ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find_map(|l| l.strip_prefix("hostname ").map(str::to_string))
            })
            .unwrap_or(from_target)
    }
}

/// What a remote command reads.
#[derive(Clone, Copy)]
enum Input<'a> {
    File(&'a Path),
    Text(&'a str),
}

fn last_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("Warning: Permanently added"))
        .map(|l| l.trim_start_matches("skypipe: ").to_string())
}

/// What the machine is like, from the probe.
#[derive(Debug, Default)]
struct Remote {
    uname: String,
    free_kib: Option<u64>,
    layout: Option<u32>,
    skypipe: Option<String>,
    data: bool,
    systemd: bool,
}

const PROBE: &str = r#"
printf 'uname=%s\n' "$(uname -sm)"
d="$HOME/.local/share/skypipe"
[ -f "$d/layout" ] && printf 'layout=%s\n' "$(cat "$d/layout")"
[ -d "$d" ] && printf 'data=yes\n'
[ -x "$HOME/.local/bin/skypipe" ] && printf 'skypipe=%s\n' "$("$HOME/.local/bin/skypipe" --version 2>/dev/null | head -n 1)"
command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1 && printf 'systemd=yes\n'
printf 'free_kib=%s\n' "$(df -Pk "$HOME" 2>/dev/null | awk 'NR==2 {print $4}')"
exit 0
"#;

fn probe(ssh: &Ssh) -> anyhow::Result<Remote> {
    let text = ssh.ok(PROBE, None, "looking around")?;
    let mut r = Remote::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "uname" => r.uname = v.trim().to_string(),
            "free_kib" => r.free_kib = v.trim().parse().ok(),
            "layout" => r.layout = v.trim().parse().ok(),
            "skypipe" => r.skypipe = Some(v.trim().to_string()),
            "data" => r.data = true,
            "systemd" => r.systemd = true,
            _ => {}
        }
    }
    Ok(r)
}

fn local_uname() -> String {
    let u = nix::sys::utsname::uname();
    match u {
        Ok(u) => format!(
            "{} {}",
            u.sysname().to_string_lossy(),
            u.machine().to_string_lossy()
        ),
        Err(_) => String::new(),
    }
}

fn human(bytes: u64) -> String {
    crate::transfer::progress::human_bytes(bytes)
}

/// The server's options, as `skypipe server start/run/preflight` take them.
fn server_options(args: &DeployArgs, ssh_host: &str) -> Vec<String> {
    let mut o = vec!["--public".to_string()];
    if let Some(l) = &args.listen {
        o.extend(["--listen".into(), l.clone()]);
    }
    let mut names = args.names.clone();
    if !names.iter().any(|n| n == ssh_host) {
        names.push(ssh_host.to_string());
    }
    for n in names {
        o.extend(["--name".into(), n]);
    }
    if let Some(w) = args.websocket {
        o.extend(["--websocket".into(), w.to_string()]);
    }
    o
}

fn quoted_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| sh_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The systemd user unit.
fn unit_text(options: &[String]) -> String {
    format!(
        "[Unit]\nDescription=skypipe's pipe server (nats-server with JetStream)\n\
         After=network-online.target\n\n[Service]\n\
         Environment=PATH=%h/.local/bin:/usr/local/bin:/usr/bin:/bin\n\
         ExecStart=%h/.local/bin/skypipe server run {}\nRestart=on-failure\n\n\
         [Install]\nWantedBy=default.target\n",
        options.join(" ")
    )
}

/// Takes away what a deploy put there. Never fails on what is not there.
const REMOVE: &str = r#"
if [ -f "$HOME/.config/systemd/user/skypipe.service" ]; then
  systemctl --user disable --now skypipe >/dev/null 2>&1
  rm -f "$HOME/.config/systemd/user/skypipe.service"
  systemctl --user daemon-reload >/dev/null 2>&1
fi
if [ -x "$HOME/.local/bin/skypipe" ]; then
  PATH="$HOME/.local/bin:$PATH" "$HOME/.local/bin/skypipe" server stop >/dev/null 2>&1
fi
rm -f "$HOME/.local/bin/skypipe" "$HOME/.local/bin/nats-server" \
  "$HOME/.local/bin/skypipe.deploy-new" "$HOME/.local/bin/nats-server.deploy-new"
rm -rf "$HOME/.local/share/skypipe"
for d in "$HOME/.local/bin" "$HOME/.local/share" "$HOME/.local" "$HOME/.config/systemd/user" \
  "$HOME/.config/systemd" "$HOME/.config"; do
  rmdir "$d" 2>/dev/null
done
exit 0
"#;

/// `skypipe server deploy`.
pub(crate) async fn cmd_deploy(
    conn: &Conn,
    args: &DeployArgs,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<i32> {
    let ssh = Ssh::new(env, &args.target);
    let ssh_host = ssh.host_name();
    let ctx_name = join::context_name(&ssh_host);
    if args.status {
        let out = ssh.run(
            &format!(
                "PATH=\"{BIN}:$PATH\"; [ -x \"{BIN}/skypipe\" ] || {{ echo 'skypipe is not \
                 deployed there' >&2; exit 3; }}; skypipe server status; s=$?; echo; \
                 skypipe invite list; exit $s"
            ),
            None,
        )?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            if let Some(l) = last_line(&out.stderr) {
                eprintln!("skypipe: {}: {l}", args.target);
            }
        }
        return Ok(out.status.code().unwrap_or(1));
    }
    if args.stop {
        ssh.ok(
            &format!(
                "if [ -f \"{UNIT}\" ] && systemctl --user show-environment >/dev/null 2>&1; then \
                 systemctl --user stop skypipe; else PATH=\"{BIN}:$PATH\" skypipe server stop; fi"
            ),
            None,
            "stopping the server",
        )?;
        println!("stopped the server on {}", args.target);
        return Ok(code::OK);
    }
    if args.remove {
        ssh.ok(REMOVE, None, "removing skypipe")?;
        forget_context(env, &ctx_name)?;
        println!(
            "removed skypipe from {}: its service, binaries and data (waiting payloads, keys, \
             CA); this machine's context {ctx_name:?} is gone too",
            args.target
        );
        return Ok(code::OK);
    }
    println!("deploying to {} over ssh...", args.target);
    let target = args.target.clone();
    let options = server_options(args, &ssh_host);
    let installed = {
        let options = options.clone();
        tokio::task::spawn_blocking(move || install(&ssh, &target, &options))
            .await
            .map_err(|e| anyhow!("the deploy failed: {e}"))??
    };
    println!("  {}", installed.binaries);
    println!("  {}", installed.service);

    // Join this machine through ssh.
    let ssh = Ssh::new(env, &args.target);
    let pair = nkeys::KeyPair::new_user();
    let seed = zeroize::Zeroizing::new(
        pair.seed()
            .map_err(|e| anyhow!("cannot make this machine's key: {e}"))?,
    );
    let me = machine_name(&host_name().unwrap_or_else(|| "machine".into()));
    let prefix = conn.layout.prefix().to_string();
    let admit = format!(
        "PATH=\"{BIN}:$PATH\" skypipe --prefix {} invite admit --machine {} --public-key {}",
        sh_quote(&prefix),
        sh_quote(&me),
        sh_quote(&pair.public_key())
    );
    let text = tokio::task::spawn_blocking(move || ssh.ok(&admit, None, "letting this machine in"))
        .await
        .map_err(|e| anyhow!("the deploy failed: {e}"))??;
    let welcome: Welcome = serde_json::from_str(text.trim())
        .map_err(|e| anyhow!("{} answered the join oddly: {e}", args.target))?;
    let nats_dir = crate::paths::nats_config_dir(env)
        .ok_or_else(|| anyhow!("cannot tell where contexts go: set HOME or XDG_CONFIG_HOME"))?;
    let skypipe_dir = crate::paths::skypipe_config_dir(env)
        .ok_or_else(|| anyhow!("cannot tell where skypipe's config goes: set HOME"))?;
    join::settle(
        conn,
        &welcome,
        &seed,
        None,
        &ctx_name,
        &ssh_host,
        &nats_dir,
        &skypipe_dir,
    )
    .await
    .context("the server runs, but this machine could not join it")?;
    println!("  this machine joined as {:?}", welcome.name);
    println!(
        "done: pipes now go through {ssh_host}; on another machine run `skypipe invite` there \
         first (`ssh {} ~/.local/bin/skypipe invite`)",
        args.target
    );
    Ok(code::OK)
}

struct Installed {
    binaries: String,
    service: String,
}

/// Copies the binaries, checks, and starts the service. On a machine that had no skypipe,
/// a failure takes away everything it put there.
fn install(ssh: &Ssh, target: &str, options: &[String]) -> anyhow::Result<Installed> {
    let remote = probe(ssh)?;
    let here = local_uname();
    if remote.uname != here {
        return Err(anyhow!(
            "{target} runs {:?} and this skypipe is built for {here:?}: install skypipe and \
             nats-server there for that system, then run `skypipe server start --public` there; \
             nothing was installed",
            remote.uname
        ));
    }
    if let Some(layout) = remote.layout.filter(|l| *l > crate::admin::local::LAYOUT) {
        return Err(anyhow!(
            "{target} has data from a newer skypipe (data layout {layout}, this one knows up to \
             {}): deploy that skypipe or a newer one; nothing was changed",
            crate::admin::local::LAYOUT
        ));
    }
    let skypipe = std::env::current_exe().context("cannot find this skypipe's binary")?;
    let nats = skypipe_nats::find_binary().map_err(|e| anyhow!("{e}"))?;
    let nats_version = skypipe_nats::binary_version(&nats).unwrap_or_default();
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let need = size(&skypipe) + size(&nats) + SPARE;
    if let Some(free) = remote.free_kib.map(|k| k * 1024) {
        if free < need {
            return Err(anyhow!(
                "no room on {target}: {} free in its home, skypipe needs {} (the binaries and \
                 room for the store); nothing was installed",
                human(free),
                human(need)
            ));
        }
    }
    let fresh = remote.skypipe.is_none() && !remote.data;
    let undo = |e: anyhow::Error| -> anyhow::Error {
        if fresh {
            let _ = ssh.run(REMOVE, None);
            e.context("nothing was left installed")
        } else {
            let _ = ssh.run(
                &format!("rm -f \"{BIN}/skypipe.deploy-new\" \"{BIN}/nats-server.deploy-new\""),
                None,
            );
            e
        }
    };
    for (file, name) in [(&skypipe, "skypipe"), (&nats, "nats-server")] {
        ssh.ok(
            &format!(
                "mkdir -p \"{BIN}\" && cat > \"{BIN}/{name}.deploy-new\" && chmod 755 \
                 \"{BIN}/{name}.deploy-new\""
            ),
            Some(Input::File(file)),
            &format!("copying {name}"),
        )
        .map_err(undo)?;
    }
    let words = quoted_words(options);
    ssh.ok(
        &format!("\"{BIN}/skypipe.deploy-new\" server preflight {words}"),
        None,
        "checking",
    )
    .map_err(undo)?;
    // The old server stops, the new binaries take its place, the service starts them.
    let service = if remote.systemd {
        let unit = unit_text(options);
        let result = ssh.ok(
            &format!(
                "mkdir -p \"$HOME/.config/systemd/user\" && cat > \"{UNIT}\" && \
                 systemctl --user stop skypipe >/dev/null 2>&1; \
                 mv -f \"{BIN}/skypipe.deploy-new\" \"{BIN}/skypipe\" && \
                 mv -f \"{BIN}/nats-server.deploy-new\" \"{BIN}/nats-server\" && \
                 systemctl --user daemon-reload && systemctl --user enable skypipe >/dev/null 2>&1 \
                 && systemctl --user restart skypipe && \
                 {{ loginctl enable-linger \"$(id -un)\" >/dev/null 2>&1 && echo linger || echo \
                 no-linger; }}"
            ),
            Some(Input::Text(&unit)),
            "starting the service",
        );
        let said = result.map_err(undo)?;
        // Ready when it answers.
        ssh.ok(
            &format!(
                "i=0; while ! PATH=\"{BIN}:$PATH\" skypipe server status >/dev/null 2>&1; do \
                 i=$((i+1)); [ $i -ge 100 ] && {{ systemctl --user status skypipe --no-pager \
                 >&2; exit 1; }}; sleep 0.2; done"
            ),
            None,
            "starting the server",
        )
        .map_err(undo)?;
        format!(
            "service skypipe (systemd user unit{}) running: {}",
            if said.contains("no-linger") {
                "; it starts at login only: `loginctl enable-linger` was not allowed"
            } else {
                ", starts at boot"
            },
            listen_text(options)
        )
    } else {
        let said = ssh
            .ok(
                &format!(
                    "PATH=\"{BIN}:$PATH\"; [ -x \"{BIN}/skypipe\" ] && skypipe server stop \
                     >/dev/null 2>&1; mv -f \"{BIN}/skypipe.deploy-new\" \"{BIN}/skypipe\" && \
                     mv -f \"{BIN}/nats-server.deploy-new\" \"{BIN}/nats-server\" && \
                     skypipe server start {words}"
                ),
                None,
                "starting the server",
            )
            .map_err(undo)?;
        tracing::debug!("server start said: {said}");
        format!(
            "no systemd there: the server runs as a background process (pid file in \
             ~/.local/share/skypipe; a deploy after a reboot starts it again): {}",
            listen_text(options)
        )
    };
    Ok(Installed {
        binaries: format!(
            "skypipe {} and nats-server {nats_version} installed in ~/.local/bin on {target}{}",
            env!("CARGO_PKG_VERSION"),
            match &remote.skypipe {
                Some(old) => format!(" (was {old}; data, keys and machines kept)"),
                None => String::new(),
            }
        ),
        service,
    })
}

fn listen_text(options: &[String]) -> String {
    let at = options
        .iter()
        .position(|o| o == "--listen")
        .and_then(|i| options.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "0.0.0.0:4222".into());
    format!("public on {at} with TLS")
}

/// Removes this machine's context for a server that is gone.
fn forget_context(env: &dyn Fn(&str) -> Option<String>, name: &str) -> anyhow::Result<()> {
    if let Some(dir) = crate::paths::nats_config_dir(env) {
        let _ = std::fs::remove_file(dir.join("context").join(format!("{name}.json")));
    }
    if let Some(dir) = crate::paths::skypipe_config_dir(env) {
        let _ = std::fs::remove_dir_all(dir.join("joined").join(name));
        let cfg: PathBuf = dir.join("config.json");
        if let Ok(text) = std::fs::read_to_string(&cfg) {
            if serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("context")?.as_str().map(|c| c == name))
                .unwrap_or(false)
            {
                config::merge_json(&cfg, |m| {
                    m.remove("context");
                })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_for_the_remote_shell() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }
}
