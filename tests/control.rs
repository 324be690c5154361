//! The control plane against a real scheduler, database and ingest server, without a
//! broker: pushes applied live and persisted, rejected ones changing nothing, an
//! overlay rolled back when the upload it changed fails where the old one worked, and
//! each remote command.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tidegate::clock::TestClock;
use tidegate::control::{self, Control, Outbound};
use tidegate::reading::Reading;
use tidegate::remote::ConfigState;
use tidegate::store::readings::{self, BootTime, ClockQuality};
use tidegate::store::{self, StoreHandle};
use tokio_util::sync::CancellationToken;

use crate::support::ingest::Ingest;

/// Everything the control plane said.
#[derive(Default)]
struct Said {
    states: Mutex<Vec<Value>>,
    responses: Mutex<Vec<Value>>,
    status: Mutex<Vec<(u64, Option<String>)>>,
}

impl Outbound for Said {
    fn config_state(&self, state: &ConfigState) {
        self.states
            .lock()
            .unwrap()
            .push(serde_json::from_str(&state.to_json()).unwrap());
    }
    fn cmd_response(&self, json: &str) {
        self.responses
            .lock()
            .unwrap()
            .push(serde_json::from_str(json).unwrap());
    }
    fn status(&self, config_version: u64, config_error: Option<&str>) {
        self.status
            .lock()
            .unwrap()
            .push((config_version, config_error.map(str::to_owned)));
    }
}

impl Said {
    fn last_state(&self) -> Value {
        self.states
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a config/state")
    }
    fn last_response(&self) -> Value {
        self.responses
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a cmd/response")
    }
}

struct Plane {
    dir: tempfile::TempDir,
    control: Control,
    said: Arc<Said>,
    store: StoreHandle,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn file_text(dir: &Path, upload_url: &str, rest: &str) -> String {
    format!(
        "[agent]\nid = \"pond-07\"\nstate_dir = \"{}\"\nlog_dir = \"\"\ntimezone = \"UTC\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:1\"\nconfig_confirm = \"2s\"\n\
         [upload]\nurl = \"{upload_url}\"\n\
         [jobs.upload]\nevery = \"1h\"\n\
         [jobs.probe]\nkind = \"command\"\ncommand = [\"/bin/true\"]\nevery = \"1h\"\n{rest}",
        dir.join("state").display()
    )
}

impl Plane {
    async fn start(dir: tempfile::TempDir, text: &str) -> Plane {
        let path = dir.path().join("tidegate.toml");
        std::fs::write(&path, text).unwrap();
        let start = control::start(text, "tidegate.toml", None).expect("a valid file");
        let config = Arc::new(start.config.clone());
        let clock = TestClock::at(2026, 11, 23, 1, 0, 0, true);
        let store = StoreHandle::spawn(store::open(&config.agent.state_dir).unwrap());
        let shutdown = CancellationToken::new();
        let (scheduler, task) = tidegate::scheduler::spawn(
            Arc::clone(&config),
            Arc::new(clock.clone()),
            store.clone(),
            shutdown.clone(),
        )
        .await
        .unwrap();
        let said = Arc::new(Said::default());
        let answers = start.answers.clone();
        let mut control = Control::new(
            &path,
            start,
            config,
            scheduler,
            store.clone(),
            Arc::new(clock),
            Arc::clone(&said) as Arc<dyn Outbound>,
        );
        control.started(&answers).await;
        Plane {
            dir,
            control,
            said,
            store,
            shutdown,
            task,
        }
    }

    async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        self.task.await.unwrap();
        self.dir
    }

    async fn push(&mut self, version: u64, config: Value) {
        let push = json!({"version": version, "config": config}).to_string();
        self.control.push(push.as_bytes(), false).await;
    }

    async fn store_readings(&self, n: usize) {
        let ts = chrono::DateTime::from_timestamp_millis(1_795_395_600_000).unwrap();
        let cycle: Vec<Reading> = (0..n)
            .map(|i| Reading::good(&format!("s{i}"), ts, 1.0, None))
            .collect();
        let boot = BootTime {
            boot_id: "earlier".into(),
            since_boot_ms: 0,
        };
        self.store
            .call(move |c| readings::insert_cycle(c, &cycle, ClockQuality::Synced, &boot))
            .await
            .unwrap();
    }

    async fn upload_status(&self) -> tidegate::store::upload::UploadStatus {
        self.store
            .call(|c| tidegate::store::upload::status(c))
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_applied_live_persisted_and_laid_over_the_file_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let text = file_text(dir.path(), "http://127.0.0.1:1/none", "");
    let mut plane = Plane::start(dir, &text).await;
    assert_eq!(plane.control.config_version(), 0);
    plane
        .push(3, json!({"jobs": {"upload": {"every": "10m"}}}))
        .await;
    let state = plane.said.last_state();
    assert_eq!(state["version"], 3);
    assert_eq!(state["status"], "applied");
    assert!(state["error"].is_null());
    let at = state["applied_at"].as_str().unwrap();
    assert!(
        at.starts_with("2026-11-23T01:00:0") && at.ends_with('Z'),
        "{at}"
    );
    let every = |c: &tidegate::config::Config| {
        c.job("upload")
            .unwrap()
            .trigger
            .as_ref()
            .unwrap()
            .to_string()
    };
    assert_eq!(every(plane.control.running()), "every 10m");
    assert_eq!(plane.control.config_version(), 3);
    assert_eq!(
        plane.said.status.lock().unwrap().last().cloned(),
        Some((3, None))
    );

    // A stale push changes nothing and is answered.
    plane
        .push(2, json!({"jobs": {"upload": {"every": "5m"}}}))
        .await;
    let state = plane.said.last_state();
    assert_eq!(
        (state["version"].clone(), state["status"].clone()),
        (json!(2), json!("rejected"))
    );
    assert!(state["error"].as_str().unwrap().contains("v2"), "{state}");
    assert_eq!(every(plane.control.running()), "every 10m");

    // A bad value is rejected naming the key, and nothing changes.
    plane
        .push(4, json!({"jobs": {"upload": {"every": "5 parsecs"}}}))
        .await;
    let error = plane.said.last_state()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.starts_with("config/set v4: jobs.upload.every"),
        "{error}"
    );
    assert_eq!(every(plane.control.running()), "every 10m");

    // After a restart the overlay is laid over the file again.
    let dir = plane.stop().await;
    let plane = Plane::start(dir, &text).await;
    assert_eq!(plane.control.config_version(), 3);
    assert_eq!(every(plane.control.running()), "every 10m");
    // v4 was seen: a replay of v4 would be stale now.
    plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_upload_url_that_fails_where_the_old_one_worked_is_rolled_back() {
    let ingest = Ingest::start();
    let dir = tempfile::tempdir().unwrap();
    let text = file_text(dir.path(), &ingest.url(), "");
    let mut plane = Plane::start(dir, &text).await;
    // The old URL works.
    plane.store_readings(3).await;
    plane
        .push_command(json!({"id": "u1", "cmd": "upload-now", "args": {}}))
        .await;
    wait_until(|| ingest.request_count() >= 1).await;
    let mut ok = plane.upload_status().await;
    for _ in 0..100 {
        if ok.last_ok_ms.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        ok = plane.upload_status().await;
    }
    assert!(ok.last_ok_ms.is_some(), "the old upload worked: {ok:?}");

    // The push points uploads at a port nobody listens on.
    plane.store_readings(3).await;
    plane
        .push(7, json!({"upload": {"url": "http://127.0.0.1:9/readings"}}))
        .await;
    assert_eq!(plane.said.last_state()["status"], "applied");
    assert_eq!(
        plane.control.running().upload.as_ref().unwrap().url,
        "http://127.0.0.1:9/readings"
    );
    // Probation: the upload run it triggered fails; at the end of the window, back.
    for _ in 0..100 {
        plane.control.check_probation().await;
        if plane.said.last_state()["status"] == "rolled_back" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = plane.said.last_state();
    assert_eq!(state["status"], "rolled_back", "{state}");
    assert_eq!(state["version"], 7);
    assert!(
        state["error"].as_str().unwrap().contains("upload"),
        "{state}"
    );
    assert_eq!(
        plane.control.running().upload.as_ref().unwrap().url,
        ingest.url()
    );
    assert_eq!(plane.control.config_version(), 0);
    // The rolled-back version is never applied again.
    plane
        .push(7, json!({"upload": {"url": "http://127.0.0.1:9/readings"}}))
        .await;
    assert_eq!(plane.said.last_state()["status"], "rejected");
    let dir = plane.stop().await;
    let remote = std::fs::read_to_string(dir.path().join("state/remote.json")).unwrap();
    assert!(
        !remote.contains("127.0.0.1:9"),
        "rolled back on disk too: {remote}"
    );
}

impl Plane {
    async fn push_command(&mut self, request: Value) -> Value {
        self.control.command(request.to_string().as_bytes()).await;
        self.said.last_response()
    }
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not met within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_remote_command_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let text = file_text(dir.path(), "http://127.0.0.1:1/none", "");
    let mut plane = Plane::start(dir, &text).await;

    let r = plane
        .push_command(json!({"id": "a", "cmd": "pause-job", "args": {"job": "upload"}}))
        .await;
    assert_eq!(
        (r["id"].clone(), r["ok"].clone()),
        (json!("a"), json!(true)),
        "{r}"
    );
    let r = plane
        .push_command(json!({"id": "b", "cmd": "resume-job", "args": {"job": "upload"}}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = plane
        .push_command(json!({"id": "c", "cmd": "run-job", "args": {"job": "heartbeat"}}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = plane
        .push_command(json!({"id": "d", "cmd": "run-job", "args": {"job": "probe"}}))
        .await;
    assert_eq!(
        r["ok"], false,
        "a command job needs allow_remote_commands: {r}"
    );
    let r = plane
        .push_command(json!({"id": "e", "cmd": "run-job", "args": {"job": "nope"}}))
        .await;
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("nope"), "{r}");
    let r = plane
        .push_command(json!({"id": "f", "cmd": "get-config", "args": {}}))
        .await;
    assert_eq!(r["ok"], true);
    let text = r["result"].as_str().unwrap();
    assert!(text.contains("[jobs.probe]"), "{text}");
    let r = plane
        .push_command(json!({"id": "g", "cmd": "upload-now", "args": {}}))
        .await;
    assert_eq!(r["ok"], true, "{r}");
    let r = plane
        .push_command(json!({"id": "h", "cmd": "reboot", "args": {}}))
        .await;
    assert_eq!(
        (r["id"].clone(), r["ok"].clone()),
        (json!("h"), json!(false))
    );
    plane.control.command(b"not json at all").await;
    let r = plane.said.last_response();
    assert_eq!(
        (r["id"].clone(), r["ok"].clone()),
        (Value::Null, json!(false))
    );
    plane.stop().await;
}
