//! The machines that joined this machine's public server: `machines.json` in the data
//! directory, read into [`Machines`] once for a change and written once after it.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::protocol::permissions::machine_inbox;

const MACHINES_FILE: &str = "machines.json";

/// A machine that joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Machine {
    pub(crate) name: String,
    /// Its public nkey.
    pub(crate) nkey: String,
    pub(crate) prefix: String,
    /// When it joined, seconds since 1970.
    pub(crate) joined: u64,
    #[serde(default)]
    pub(crate) version: String,
    /// When skypipe last saw it connected, seconds since 1970.
    #[serde(default)]
    pub(crate) last_seen: Option<u64>,
}

impl Machine {
    /// The inbox prefix its replies come under, apart from everyone else's.
    pub(crate) fn inbox_prefix(&self) -> String {
        machine_inbox(&self.name)
    }
}

/// A name for a machine: letters, digits, '-' and '_' (others become '-'), at most 32.
pub(crate) fn machine_name(wanted: &str) -> String {
    let first = wanted.split('.').next().unwrap_or_default();
    let name: String = first
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(32)
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        "machine".into()
    } else {
        name
    }
}

/// The machines that joined, as `machines.json` lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Machines {
    pub(crate) list: Vec<Machine>,
}

impl Machines {
    /// Reads the list in `dir`; empty when there is none.
    pub(crate) fn load(dir: &Path) -> anyhow::Result<Machines> {
        let path = dir.join(MACHINES_FILE);
        let list = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{} is not skypipe's list of machines", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(Machines { list })
    }

    pub(crate) fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(&self.list)?;
        let path = dir.join(MACHINES_FILE);
        skypipe_nats::write_private(&path, &text)
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// `wanted`, or the first of `wanted-2`, `wanted-3`... that no machine has.
    pub(crate) fn free_name(&self, wanted: &str) -> String {
        let taken = |name: &str| self.list.iter().any(|m| m.name == name);
        let mut name = wanted.to_string();
        let mut n = 2;
        while taken(&name) {
            name = format!("{wanted}-{n}");
            n += 1;
        }
        name
    }

    /// Adds `machine`, in place of one of the same name.
    pub(crate) fn put(&mut self, machine: Machine) {
        self.list.retain(|m| m.name != machine.name);
        self.list.push(machine);
    }

    /// Takes out the machine `name`; `false` when there was none.
    pub(crate) fn take_out(&mut self, name: &str) -> bool {
        let before = self.list.len();
        self.list.retain(|m| m.name != name);
        self.list.len() != before
    }

    pub(crate) fn names(&self) -> Vec<&str> {
        self.list.iter().map(|m| m.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(name: &str, nkey: &str) -> Machine {
        Machine {
            name: name.into(),
            nkey: nkey.into(),
            prefix: "skypipe".into(),
            joined: 100,
            version: String::new(),
            last_seen: None,
        }
    }

    #[test]
    fn machine_names() {
        assert_eq!(machine_name("Laptop.example.org"), "laptop");
        assert_eq!(machine_name("my box!"), "my-box");
        assert_eq!(machine_name("..."), "machine");
    }

    #[test]
    fn a_new_machine_gets_a_name_nobody_has_and_one_put_again_replaces_its_namesake() {
        let mut machines = Machines::default();
        assert_eq!(machines.free_name("box"), "box");
        machines.put(machine("box", "U1"));
        machines.put(machine("box-2", "U2"));
        assert_eq!(machines.free_name("box"), "box-3");
        machines.put(machine("box", "U3"));
        assert_eq!(machines.names(), ["box-2", "box"]);
        assert_eq!(machines.list[1].nkey, "U3");
        assert!(machines.take_out("box-2"));
        assert!(!machines.take_out("box-2"));
        assert_eq!(machines.names(), ["box"]);
    }

    #[test]
    fn the_list_survives_its_file() {
        let dir = std::env::temp_dir().join(format!("skypipe-machines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        assert_eq!(Machines::load(&dir).expect("none yet"), Machines::default());
        let mut machines = Machines::default();
        machines.put(machine("box", "U1"));
        machines.save(&dir).expect("saved");
        assert_eq!(Machines::load(&dir).expect("read"), machines);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
