//! A storm of reloads on the main runtime must not delay what the pipeline thread
//! handles: the pipeline's queueing delay is sampled all through hundreds of back-to-back
//! reloads of a large spec, with the in-process pipeline stand-in.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haconn::daemon::state::StateDir;
use haconn::daemon::supervisor::{self, Command, Origin, ReloadReply, Shared, Status};
use haconn::log::LogFile;
use haconn::pipeline::{Pipeline, PipelineConfig};
use haconn::spec::{CheckOptions, check_bytes};
use tokio::sync::{mpsc, oneshot};

/// A loopback-only spec with `n` servers; `flip` changes every server's cluster flag so
/// each reload really commits a new snapshot.
fn spec_text(n: usize, flip: bool) -> String {
    let mut s = String::from(
        "apiVersion: haconn/v1\nmode: single\nscale: large\n\
         resetPath: {address: 127.0.0.1/8, port: 15001, broadcast: 127.255.255.255, auth: none}\n\
         managementServers:\n  - name: ms01\n    bmc: {address: 127.0.0.2, port: 16230, username: admin, password: labpassw0rd}\n    mlan: {address: 127.0.0.1, port: 15002}\nservers:\n",
    );
    for i in 0..n {
        s.push_str(&format!(
            "  - {{name: node{i}, bmc: {{address: 127.0.{}.{}, port: 16231, username: admin, password: labpassw0rd}}, cluster: {flip}}}\n",
            1 + i / 200,
            10 + i % 200
        ));
    }
    s
}

#[test]
fn reload_storm_does_not_delay_the_pipeline() {
    const RELOADS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let a = spec_text(300, false);
    let b = spec_text(300, true);
    let spec = check_bytes(a.as_bytes(), CheckOptions::default())
        .spec
        .expect("valid spec");
    let (pipeline, thread) = Pipeline::start(spec, PipelineConfig::detached()).unwrap();
    let shared = Arc::new(Shared {
        pipeline: pipeline.clone(),
        status: Mutex::new(Status::default()),
        events: Arc::new(LogFile::open(&dir.path().join("log"), "event.log", 1 << 20, 2).unwrap()),
        state: StateDir::open(&dir.path().join("state")).unwrap(),
        spec_path: dir.path().join("cluster.yaml"),
        local: "ms01".into(),
        pair: None,
        restart: Default::default(),
        handover_on_stop: Default::default(),
        alerts: Arc::new(haconn::daemon::alerts::AlertDesk::new(
            LogFile::open(&dir.path().join("log"), "alert.log", 1 << 20, 2).unwrap(),
        )),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (latencies, applied, elapsed) = runtime.block_on(async move {
        let (tx, rx) = mpsc::channel(64);
        let supervisor = tokio::spawn(supervisor::run(shared.clone(), rx));
        let done = Arc::new(tokio::sync::Notify::new());
        let sampler = {
            let pipeline = pipeline.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut samples = Vec::new();
                loop {
                    tokio::select! {
                        _ = done.notified() => return samples,
                        _ = tokio::time::sleep(Duration::from_millis(2)) => {
                            samples.push(pipeline.ping().await.expect("pipeline alive"));
                        }
                    }
                }
            })
        };
        let started = Instant::now();
        let mut replies = Vec::new();
        for i in 0..RELOADS {
            let (reply, rx) = oneshot::channel();
            let text = if i % 2 == 0 { &b } else { &a };
            tx.send(Command::Reload {
                spec: text.clone().into_bytes(),
                origin: Origin::Apply,
                dry_run: false,
                reply: Some(reply),
            })
            .await
            .unwrap();
            replies.push(rx);
        }
        let mut applied = 0;
        for rx in replies {
            if let ReloadReply::Applied {
                completed: true,
                changes,
                ..
            } = rx.await.unwrap()
            {
                assert_eq!(changes, 300);
                applied += 1;
            }
        }
        let elapsed = started.elapsed();
        done.notify_one();
        let samples = sampler.await.unwrap();
        tx.send(Command::Stop).await.unwrap();
        supervisor.await.unwrap();
        (samples, applied, elapsed)
    });
    drop(runtime);
    thread.join();

    assert_eq!(applied, RELOADS, "every reload applied and completed");
    let mut sorted = latencies.clone();
    sorted.sort();
    let max = *sorted.last().expect("samples taken");
    let p99 = sorted[sorted.len() * 99 / 100];
    println!(
        "{RELOADS} reloads of a 300-server spec in {elapsed:?}; {} pipeline samples: p99 {p99:?}, max {max:?}",
        sorted.len()
    );
    assert!(
        sorted.len() >= 20,
        "the pipeline was sampled during the storm"
    );
    // A generous bound for a loaded 2-core CI machine; typical figures are microseconds.
    assert!(
        max < Duration::from_millis(50),
        "pipeline delayed by {max:?} during the storm"
    );
}
