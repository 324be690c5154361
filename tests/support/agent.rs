//! The real `tidegate` binary as a child process: write a config into a temporary
//! directory, start a command, read its stderr, send it signals, kill it with -9.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tidegate")
}

/// A temporary directory holding `tidegate.toml` and the agent's state.
pub struct Site {
    pub dir: tempfile::TempDir,
    /// `agent.id`, also the agent's MQTT client id.
    pub id: String,
}

impl Site {
    /// A site whose config is the `[agent]` table below followed by `rest`.
    pub fn new(rest: &str) -> Site {
        Site::with_id("test-gw", rest)
    }

    /// The same with its own agent id: agents sharing a broker need their own.
    pub fn with_id(id: &str, rest: &str) -> Site {
        let site = Site {
            dir: tempfile::tempdir().expect("temp dir"),
            id: id.to_string(),
        };
        site.write_config(rest);
        site
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("tidegate.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn write_config(&self, rest: &str) {
        let text = format!(
            "[agent]\nid = \"{}\"\nstate_dir = \"{}\"\nlog_dir = \"\"\ntimezone = \"UTC\"\nclock = \"trusted\"\nshutdown_grace = \"1s\"\n{rest}",
            self.id,
            self.state_dir().display()
        );
        std::fs::write(self.config(), text).expect("write config");
    }

    /// Replaces the config file with exactly `text`.
    pub fn write_raw(&self, text: &str) {
        std::fs::write(self.config(), text).expect("write config");
    }

    /// Runs a CLI command to completion: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(self.config())
            .env("TIDEGATE_LOG", "info")
            .output()
            .expect("run tidegate");
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        (
            out.status.code().unwrap_or(-1),
            text(out.stdout),
            text(out.stderr),
        )
    }

    /// Starts `tidegate run` in the background.
    pub fn start(&self) -> Agent {
        self.start_logging("info")
    }

    /// Starts `tidegate run` with `TIDEGATE_LOG` set to `filter`.
    pub fn start_logging(&self, filter: &str) -> Agent {
        self.start_with_env(&[("TIDEGATE_LOG", filter)])
    }

    /// Starts `tidegate run` with these environment variables (`TIDEGATE_LOG` among
    /// them, or none is set).
    pub fn start_with_env(&self, vars: &[(&str, &str)]) -> Agent {
        let log = self
            .dir
            .path()
            .join(format!("agent-{}.log", fastrand::u32(..)));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(binary())
            .args(["run", "--config"])
            .arg(self.config())
            .env_remove("TIDEGATE_LOG")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start agent");
        Agent { child, log }
    }

    /// Every job as `tidegate jobs --json` reports it.
    pub fn jobs(&self) -> Vec<serde_json::Value> {
        let (code, out, err) = self.cli(&["jobs", "--json"]);
        assert_eq!(code, 0, "jobs failed: {err}");
        serde_json::from_str(&out).expect("jobs --json is a JSON array")
    }

    pub fn job(&self, name: &str) -> serde_json::Value {
        self.jobs()
            .into_iter()
            .find(|j| j["name"] == name)
            .unwrap_or_else(|| panic!("no job {name}"))
    }
}

/// A running agent process.
pub struct Agent {
    pub child: Child,
    log: PathBuf,
}

impl Agent {
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Waits until the log contains `needle`; panics with the log after `limit`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no {needle:?} in the log within {limit:?}:\n{}", self.log());
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: plain syscall on our own child.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// Waits for the process to exit; returns its exit code (None: killed by a signal).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit within {limit:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not within {limit:?}");
}

/// Whether a process exists and is not a zombie.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}
