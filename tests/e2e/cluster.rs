//! A three-node JetStream cluster: pipes with three replicas survive losing a node.

use std::process::Stdio;
use std::time::{Duration, Instant};

use skypipe_nats::Cluster;

use super::harness::*;

/// The name of the cluster node that leads `stream`, asked of any live node.
fn stream_leader(urls: &str, stream: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        let addrs: Vec<async_nats::ServerAddr> =
            urls.split(',').filter_map(|u| u.parse().ok()).collect();
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(3))
            .connect(addrs)
            .await
            .ok()?;
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(stream).await.ok()?;
        let info = s.info().await.ok()?;
        info.cluster.as_ref()?.leader.clone()
    })
}

/// Waits until the cluster has elected its JetStream meta leader: `skypipe check` passes.
pub(super) fn wait_for_cluster(home: &std::path::Path, urls: &str) {
    let ok = eventually(Duration::from_secs(60), || {
        bare_cmd(home)
            .args(["check", "-s", urls, "--replicas", "3"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(ok, "the cluster never passed `skypipe check`");
}

#[test]
fn a_200_mib_transfer_survives_sigkill_of_the_stream_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let mut cluster = Cluster::start(dir.path().join("cluster")).expect("cluster starts");
    let urls = cluster.urls();
    wait_for_cluster(&home, &urls);

    // The streams exist with three replicas (check created them), and setup, seeing a
    // cluster of three, records three replicas for this server.
    let out = bare_cmd(&home)
        .args(["setup", "-s", &urls, "--name", "cluster"])
        .stdin(Stdio::null())
        .output()
        .expect("setup");
    assert_ok(&out);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(report.contains("3 replicas"), "{report}");
    let ctx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.join(".config/nats/context/cluster.json")).expect("context"),
    )
    .expect("json");
    assert_eq!(ctx["skypipe_replicas"], 3, "{ctx}");
    assert_eq!(ctx["url"], urls.as_str());

    let input = dir.path().join("big");
    const SIZE: u64 = 200 * 1024 * 1024;
    random_file(&input, SIZE as usize, 2024);
    let want = sha_file(&input);
    let output = dir.path().join("big.out");

    let receiver = spawn_to_file(bare_cmd(&home).args(["-s", &urls, "big"]), &output);
    let sender = bare_cmd(&home)
        .args(["send", "-s", &urls, "big"])
        .stdin(Stdio::from(std::fs::File::open(&input).expect("open")))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .start();

    // A quarter of the way through, kill the node that leads the data stream.
    let started = Instant::now();
    let quarter = eventually(HANG, || {
        std::fs::metadata(&output).is_ok_and(|m| m.len() >= SIZE / 4)
    });
    assert!(quarter, "the transfer never reached a quarter");
    let leader = stream_leader(&urls, "skypipe-data").expect("the data stream has a leader");
    let victim = cluster
        .nodes
        .iter()
        .position(|n| n.config().name.as_deref() == Some(leader.as_str()))
        .expect("the leader is one of ours");
    let at = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    cluster.nodes[victim].kill().expect("SIGKILL");
    eprintln!(
        "killed {leader} after {:?}, {at} bytes written",
        started.elapsed()
    );

    let sent = wait_output(sender, HANG);
    let received = wait_output(receiver, HANG);
    assert_ok(&sent);
    assert_ok(&received);
    assert!(
        at < SIZE,
        "the node died before the end of the transfer ({at} bytes written)"
    );
    assert_eq!(sha_file(&output), want, "the bytes out are the bytes in");
}
