//! The permission lists skypipe's subjects call for, as a server config writes them: what a
//! user of one prefix needs (README.md, "Permissions for a prefix", spells the same list for
//! prefix `teama`; a test holds the two together), and what the rendezvous user of a public
//! server may do (docs/protocol.md, "Joining").

use crate::protocol::join::{JOIN_INBOX, JOIN_ROOT};
use crate::protocol::pipe::Layout;

/// What one login may publish and subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Permissions {
    pub(crate) publish: Vec<String>,
    pub(crate) subscribe: Vec<String>,
}

/// What a user of `layout`'s prefix whose replies come under `inbox` needs: its subjects, its
/// two streams and their consumers through the JetStream API; its replies, the senders' signs
/// of life, the tickets a listener watches, and the live path.
pub(crate) fn for_prefix(layout: &Layout, inbox: &str) -> Permissions {
    let p = layout.prefix();
    let streams = [layout.data_stream(), layout.queue_stream()];
    let [data, queue] = &streams;
    // One subject for each of the two streams, in the order of `streams`.
    let both =
        |api: &str| -> Vec<String> { streams.iter().map(|s| api.replace("{s}", s)).collect() };
    let mut publish = vec![format!("{p}.>"), "$JS.API.INFO".to_string()];
    publish.extend(both("$JS.API.STREAM.CREATE.{s}"));
    publish.extend(both("$JS.API.STREAM.INFO.{s}"));
    publish.push(format!("$JS.API.STREAM.PURGE.{data}"));
    publish.push(format!("$JS.API.STREAM.MSG.GET.{data}"));
    publish.push(format!("$JS.API.STREAM.MSG.GET.{queue}"));
    publish.push(format!("$JS.API.STREAM.MSG.DELETE.{queue}"));
    publish.extend(both("$JS.API.CONSUMER.*.{s}"));
    publish.extend(both("$JS.API.CONSUMER.*.{s}.>"));
    publish.extend(both("$JS.API.CONSUMER.MSG.NEXT.{s}.>"));
    publish.extend(both("$JS.ACK.{s}.>"));
    publish.push(format!("$JS.FC.{data}.>"));
    Permissions {
        publish,
        subscribe: vec![
            format!("{inbox}.>"),
            format!("{p}.presence.>"),
            format!("{p}.q.>"),
            format!("{p}.live.>"),
        ],
    }
}

/// The inbox prefix a joined machine's replies come under, apart from everyone else's.
pub(crate) fn machine_inbox(machine: &str) -> String {
    format!("_INBOX_{machine}")
}

/// What the rendezvous user (whoever connects to a public server without a login) may do:
/// knock at a pending invite and read the answers, which come back under the join inbox in the
/// shape of a NATS client's replies.
pub(crate) fn rendezvous() -> Permissions {
    Permissions {
        publish: vec![format!("{JOIN_ROOT}.>")],
        subscribe: vec![format!("{JOIN_INBOX}.*.*")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The quoted subjects of README's example for prefix `teama`, after `marker` up to the
    /// closing `]`.
    fn readme_list(readme: &str, marker: &str) -> Vec<String> {
        let section = readme
            .split("## Permissions for a prefix")
            .nth(1)
            .expect("README has the section \"Permissions for a prefix\"");
        let from = section.find(marker).expect("the section names the list") + marker.len();
        let list = &section[from..];
        let list = &list[..list.find(']').expect("the list ends")];
        list.split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn readme_gives_the_permissions_for_a_prefix_that_skypipe_uses() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let teama = for_prefix(&Layout::new("teama").expect("prefix"), "_INBOX");
        assert_eq!(readme_list(&readme, "publish: { allow: ["), teama.publish);
        assert_eq!(
            readme_list(&readme, "subscribe: { allow: ["),
            teama.subscribe
        );
    }

    #[test]
    fn a_prefix_keeps_to_its_own_subjects_and_streams() {
        let p = for_prefix(&Layout::new("teamb").expect("prefix"), "_INBOX_box");
        let own = |s: &String| {
            s.contains("teamb.")
                || s.contains("teamb-")
                || s == "$JS.API.INFO"
                || s.starts_with("_INBOX_box.")
        };
        assert!(p.publish.iter().chain(&p.subscribe).all(own), "{p:?}");
        assert_eq!(machine_inbox("box"), "_INBOX_box");
    }

    #[test]
    fn the_rendezvous_user_only_knocks_and_reads_answers() {
        let r = rendezvous();
        assert_eq!(r.publish, ["_SKYPIPE_JOIN.>"]);
        assert_eq!(r.subscribe, ["_SKYPIPE_JOIN_INBOX.*.*"]);
    }
}
