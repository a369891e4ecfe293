//! `skypipe server deploy [USER@]HOST`: software with a service. Over the system's `ssh` (the
//! user's keys, agent and `~/.ssh/config`), it copies skypipe and nats-server to the machine,
//! runs the server there as a service, public with TLS, and joins this machine to it through
//! the ssh channel, which has authenticated both ends already, so no code is typed and the
//! server's CA is pinned from the start.
//!
//! What it installs there: `~/.local/bin/skypipe`, `~/.local/bin/nats-server`, the unit
//! `~/.config/systemd/user/skypipe.service` (when there is systemd) and the data directory
//! `~/.local/share/skypipe`. `--remove` takes all of it away again.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use thiserror::Error;

use crate::admin::machines::join::{self, Dirs, Place};
use crate::admin::machines::store::machine_name;
use crate::admin::server::instance::LAYOUT;
use crate::admin::server::ssh::{last_line, sh_quote, Input, Ssh};
use crate::admin::server::tls::host_name;
use crate::config::cli::DeployArgs;
use crate::config::{self, Conn};
use crate::error::code;
use crate::protocol::join::Welcome;

/// The remote's `~/.local/bin`, where the binaries go.
const BIN: &str = "$HOME/.local/bin";
const UNIT: &str = "$HOME/.config/systemd/user/skypipe.service";
/// Room the store should have beyond the binaries, so a deploy does not fill the disk.
const SPARE: u64 = 64 << 20;

/// Why the machine cannot take this skypipe, found before anything is installed or changed.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum DeployError {
    /// It runs another system than this skypipe is built for.
    #[error(
        "{target} runs {remote:?} and this skypipe is built for {here:?}: install skypipe and \
         nats-server there for that system, then run `skypipe server start --public` there; \
         nothing was installed"
    )]
    OtherSystem {
        target: String,
        remote: String,
        here: String,
    },
    /// Its data is from a newer skypipe.
    #[error(
        "{target} has data from a newer skypipe (data layout {layout}, this one knows up to \
         {known}): deploy that skypipe or a newer one; nothing was changed"
    )]
    NewerData {
        target: String,
        layout: u32,
        known: u32,
    },
    /// Its home has no room for the binaries and a store.
    #[error(
        "no room on {target}: {free} free in its home, skypipe needs {need} (the binaries and \
         room for the store); nothing was installed"
    )]
    NoRoom {
        target: String,
        free: String,
        need: String,
    },
    /// What `skypipe invite admit` printed there is not a welcome.
    #[error("{target} answered the join oddly: {why}")]
    OddWelcome { target: String, why: String },
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
        return status(&ssh, &args.target);
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
    let installed = tokio::task::spawn_blocking(move || install(&ssh, &target, &options))
        .await
        .context("the deploy failed")??;
    println!("  {}", installed.binaries);
    println!("  {}", installed.service);
    let welcome = join_here(conn, args, env, &ssh_host, &ctx_name).await?;
    println!("  this machine joined as {:?}", welcome.name);
    println!(
        "done: pipes now go through {ssh_host}; on another machine run `skypipe invite` there \
         first (`ssh {} ~/.local/bin/skypipe invite`)",
        args.target
    );
    Ok(code::OK)
}

/// `skypipe server deploy --status`: the server's status and machines there, and its exit.
fn status(ssh: &Ssh, target: &str) -> anyhow::Result<i32> {
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
            eprintln!("skypipe: {target}: {l}");
        }
    }
    Ok(out.status.code().unwrap_or(1))
}

/// Joins this machine to the server deployed there, through ssh: `skypipe invite admit`
/// there lets in a key made here, and what it prints is saved as the join saves it.
async fn join_here(
    conn: &Conn,
    args: &DeployArgs,
    env: &dyn Fn(&str) -> Option<String>,
    ssh_host: &str,
    ctx_name: &str,
) -> anyhow::Result<Welcome> {
    let ssh = Ssh::new(env, &args.target);
    let pair = nkeys::KeyPair::new_user();
    let seed = zeroize::Zeroizing::new(pair.seed().context("cannot make this machine's key")?);
    let me = machine_name(&host_name().unwrap_or_else(|| "machine".into()));
    let admit = format!(
        "PATH=\"{BIN}:$PATH\" skypipe --prefix {} invite admit --machine {} --public-key {}",
        sh_quote(conn.layout.prefix()),
        sh_quote(&me),
        sh_quote(&pair.public_key())
    );
    let text = tokio::task::spawn_blocking(move || ssh.ok(&admit, None, "letting this machine in"))
        .await
        .context("the deploy failed")??;
    let welcome: Welcome =
        serde_json::from_str(text.trim()).map_err(|e| DeployError::OddWelcome {
            target: args.target.clone(),
            why: e.to_string(),
        })?;
    let (nats_dir, skypipe_dir) = crate::paths::context_dirs(env)?;
    let place = Place {
        ctx_name,
        shown_host: ssh_host,
        first_url: None,
    };
    let dirs = Dirs {
        nats: &nats_dir,
        skypipe: &skypipe_dir,
    };
    join::settle(conn, &welcome, &seed, &place, &dirs)
        .await
        .context("the server runs, but this machine could not join it")?;
    Ok(welcome)
}

struct Installed {
    binaries: String,
    service: String,
}

/// Whether the machine can run this skypipe, from the probe: its system, and its data's
/// layout.
fn runs_there(remote: &Remote, target: &str, here: &str) -> Result<(), DeployError> {
    if remote.uname != here {
        return Err(DeployError::OtherSystem {
            target: target.to_string(),
            remote: remote.uname.clone(),
            here: here.to_string(),
        });
    }
    match remote.layout.filter(|l| *l > LAYOUT) {
        Some(layout) => Err(DeployError::NewerData {
            target: target.to_string(),
            layout,
            known: LAYOUT,
        }),
        None => Ok(()),
    }
}

/// Whether the machine's home has `need` bytes free, when the probe could tell.
fn has_room(remote: &Remote, target: &str, need: u64) -> Result<(), DeployError> {
    match remote.free_kib.map(|k| k * 1024) {
        Some(free) if free < need => Err(DeployError::NoRoom {
            target: target.to_string(),
            free: human(free),
            need: human(need),
        }),
        _ => Ok(()),
    }
}

/// Copies the binaries, checks, and starts the service. On a machine that had no skypipe,
/// a failure takes away everything it put there.
fn install(ssh: &Ssh, target: &str, options: &[String]) -> anyhow::Result<Installed> {
    let remote = probe(ssh)?;
    runs_there(&remote, target, &local_uname())?;
    let skypipe = std::env::current_exe().context("cannot find this skypipe's binary")?;
    let nats = skypipe_nats::find_binary()?;
    let nats_version = skypipe_nats::binary_version(&nats).unwrap_or_default();
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    has_room(&remote, target, size(&skypipe) + size(&nats) + SPARE)?;
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
    ssh.ok(
        &format!(
            "\"{BIN}/skypipe.deploy-new\" server preflight {}",
            quoted_words(options)
        ),
        None,
        "checking",
    )
    .map_err(undo)?;
    // The old server stops, the new binaries take its place, the service starts them.
    let service = if remote.systemd {
        start_unit(ssh, options)
    } else {
        start_process(ssh, options)
    }
    .map_err(undo)?;
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

/// Whether the service may run while nobody is logged in, as the start script says.
#[derive(Debug, PartialEq, Eq)]
enum Linger {
    /// `loginctl enable-linger` was allowed: it starts at boot.
    Boot,
    /// It was not: it starts at login only.
    LoginOnly,
}

impl Linger {
    /// From the start script's output, whose last word is `linger` or `no-linger`.
    fn from_output(said: &str) -> Linger {
        match said.split_whitespace().last() {
            Some("no-linger") => Linger::LoginOnly,
            _ => Linger::Boot,
        }
    }
}

/// Installs the systemd user unit, puts the new binaries in place, starts the service and
/// waits until the server answers. What to say of the service.
fn start_unit(ssh: &Ssh, options: &[String]) -> anyhow::Result<String> {
    let unit = unit_text(options);
    let said = ssh.ok(
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
    )?;
    // Ready when it answers.
    ssh.ok(
        &format!(
            "i=0; while ! PATH=\"{BIN}:$PATH\" skypipe server status >/dev/null 2>&1; do \
             i=$((i+1)); [ $i -ge 100 ] && {{ systemctl --user status skypipe --no-pager \
             >&2; exit 1; }}; sleep 0.2; done"
        ),
        None,
        "starting the server",
    )?;
    Ok(format!(
        "service skypipe (systemd user unit{}) running: {}",
        match Linger::from_output(&said) {
            Linger::LoginOnly => {
                "; it starts at login only: `loginctl enable-linger` was not allowed"
            }
            Linger::Boot => ", starts at boot",
        },
        listen_text(options)
    ))
}

/// Without systemd: puts the new binaries in place and starts the server in the background.
/// What to say of it.
fn start_process(ssh: &Ssh, options: &[String]) -> anyhow::Result<String> {
    let said = ssh.ok(
        &format!(
            "PATH=\"{BIN}:$PATH\"; [ -x \"{BIN}/skypipe\" ] && skypipe server stop \
             >/dev/null 2>&1; mv -f \"{BIN}/skypipe.deploy-new\" \"{BIN}/skypipe\" && \
             mv -f \"{BIN}/nats-server.deploy-new\" \"{BIN}/nats-server\" && \
             skypipe server start {}",
            quoted_words(options)
        ),
        None,
        "starting the server",
    )?;
    tracing::debug!("server start said: {said}");
    Ok(format!(
        "no systemd there: the server runs as a background process (pid file in \
         ~/.local/share/skypipe; a deploy after a reboot starts it again): {}",
        listen_text(options)
    ))
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

    fn remote(uname: &str, layout: Option<u32>, free_kib: Option<u64>) -> Remote {
        Remote {
            uname: uname.into(),
            free_kib,
            layout,
            ..Remote::default()
        }
    }

    #[test]
    fn a_machine_takes_this_skypipe_when_its_system_data_and_room_do() {
        let here = "Linux x86_64";
        assert_eq!(
            runs_there(&remote(here, Some(LAYOUT), None), "box", here),
            Ok(())
        );
        assert!(matches!(
            runs_there(&remote("Linux aarch64", None, None), "box", here),
            Err(DeployError::OtherSystem { .. })
        ));
        assert!(matches!(
            runs_there(&remote(here, Some(LAYOUT + 1), None), "box", here),
            Err(DeployError::NewerData { .. })
        ));
        assert_eq!(
            has_room(&remote(here, None, Some(1 << 20)), "box", 1 << 20),
            Ok(())
        );
        assert_eq!(has_room(&remote(here, None, None), "box", 1 << 40), Ok(()));
        assert!(matches!(
            has_room(&remote(here, None, Some(1)), "box", 4096),
            Err(DeployError::NoRoom { .. })
        ));
    }

    #[test]
    fn the_start_script_says_whether_the_service_lingers() {
        assert_eq!(Linger::from_output("linger\n"), Linger::Boot);
        assert_eq!(
            Linger::from_output("Created symlink...\nno-linger\n"),
            Linger::LoginOnly
        );
    }
}
