//! The machines that joined, as the owner sees and changes them: `skypipe invite list`,
//! `skypipe invite revoke NAME`, and every change to the list, which the running server
//! reads at once.

use std::time::Duration;

use anyhow::{anyhow, Context as _};

use crate::admin::machines::seen::{now_secs, remember_seen};
use crate::admin::machines::store::{Machine, Machines};
use crate::admin::server::instance::Local;
use crate::error::code;

/// "just now", or how long ago `secs` (seconds since 1970) was, rounded.
fn ago(secs: u64) -> String {
    let d = now_secs().saturating_sub(secs);
    if d < 60 {
        return "just now".into();
    }
    let rounded = Duration::from_secs(if d < 3600 {
        d / 60 * 60
    } else {
        d / 3600 * 3600
    });
    format!("{} ago", humantime::format_duration(rounded))
}

/// `skypipe invite list`.
pub(crate) async fn list(local: &Local, json: bool) -> anyhow::Result<i32> {
    let (machines, seen) = remember_seen(local).await?;
    let connected = seen.map(|s| s.connected);
    let rows: Vec<(Machine, bool)> = machines
        .list
        .into_iter()
        .map(|m| {
            let on = connected
                .as_ref()
                .is_some_and(|keys| keys.contains(&m.nkey));
            (m, on)
        })
        .collect();
    if json {
        print_json(&rows)?;
    } else if rows.is_empty() {
        println!("no machine has joined; `skypipe invite` lets one in");
    } else {
        print_table(&rows, connected.is_some());
    }
    Ok(code::OK)
}

fn print_json(rows: &[(Machine, bool)]) -> anyhow::Result<()> {
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|(m, on)| {
            serde_json::json!({
                "name": m.name,
                "prefix": m.prefix,
                "nkey": m.nkey,
                "joined": m.joined,
                "version": m.version,
                "connected": on,
                "last_seen": m.last_seen,
            })
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&list)?);
    Ok(())
}

/// The machines in columns; `answered`: whether the server said who is connected.
fn print_table(rows: &[(Machine, bool)], answered: bool) {
    let width = rows
        .iter()
        .map(|(m, _)| m.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:width$}  {:10}  {:16}  LAST SEEN",
        "NAME", "PREFIX", "JOINED"
    );
    for (m, on) in rows {
        let seen = if *on {
            "connected now".to_string()
        } else if !answered {
            m.last_seen
                .map_or("unknown (server not running)".into(), ago)
        } else {
            m.last_seen.map_or("not yet".into(), ago)
        };
        println!(
            "{:width$}  {:10}  {:16}  {seen}",
            m.name,
            m.prefix,
            ago(m.joined)
        );
    }
}

/// `skypipe invite revoke NAME`.
pub(crate) async fn revoke(local: Local, name: &str) -> anyhow::Result<i32> {
    let running = local.running().is_some();
    if let Err(names) = shut_out(&local, name).await? {
        return Err(anyhow!(
            "no machine named {name:?} has joined ({})",
            if names.is_empty() {
                "none has".to_string()
            } else {
                format!("these have: {}", names.join(", "))
            }
        ));
    }
    if running {
        println!("revoked {name:?}: it is refused from now on and its connections were dropped");
    } else {
        println!("revoked {name:?}: the server will refuse it when it starts");
    }
    Ok(code::OK)
}

/// Takes the machine `name` out and has the server read its users; the names of the machines
/// that joined when there was none of that name.
pub(crate) async fn shut_out(local: &Local, name: &str) -> anyhow::Result<Result<(), Vec<String>>> {
    let name = name.to_string();
    let (out, told) = change_machines(local, move |machines| {
        if machines.take_out(&name) {
            (Ok(()), true)
        } else {
            let names = machines.names().into_iter().map(str::to_string).collect();
            (Err(names), false)
        }
    })
    .await?;
    told?;
    Ok(out)
}

/// [`Local::change_machines`], off the async threads.
pub(crate) async fn change_machines<T: Send + 'static>(
    local: &Local,
    edit: impl FnOnce(&mut Machines) -> (T, bool) + Send + 'static,
) -> anyhow::Result<(T, anyhow::Result<()>)> {
    let local = local.clone();
    tokio::task::spawn_blocking(move || local.change_machines(edit))
        .await
        .context("reload failed")?
}
