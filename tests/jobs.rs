//! Runs of jobs under their policy, with real processes: timeouts kill the whole
//! process tree, retries back off, cancellation stops a run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tidegate::clock::{Clock, TestClock};
use tidegate::config::{self, CommandSpec, JobKind, RetryPolicy};
use tidegate::job::{self, JobContext};
use tidegate::store::jobs::Outcome;
use tidegate::store::{self, StoreHandle};
use tokio_util::sync::CancellationToken;

use crate::support::agent::{eventually, process_alive};
use crate::support::sim::job;

/// A context for runs, with its own database in a directory kept as long as it is.
fn context() -> (JobContext, tempfile::TempDir) {
    let config =
        config::parse_str("[agent]\nid = \"t\"\ntimezone = \"UTC\"\n", "t.toml").expect("valid");
    let clock: Arc<dyn Clock> = Arc::new(TestClock::at(2026, 11, 23, 0, 0, 0, true));
    let dir = tempfile::tempdir().unwrap();
    let store = StoreHandle::spawn(store::open(dir.path()).unwrap());
    (JobContext::new(Arc::new(config), clock, store), dir)
}

fn command(name: &str, script: &str) -> tidegate::config::JobConfig {
    let mut j = job(name, None);
    j.kind = JobKind::Command(CommandSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        working_dir: None,
        env: Default::default(),
    });
    j
}

#[tokio::test]
async fn a_timeout_kills_the_command_and_the_grandchild_it_spawned() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("grandchild.pid");
    let mut j = command(
        "tree",
        &format!("sleep 300 & echo $! > {}; wait", pidfile.display()),
    );
    j.timeout = Some(Duration::from_millis(500));
    let started = Instant::now();
    let report = job::run(&j, &context().0, &CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Timeout);
    assert_eq!(report.error.as_deref(), Some("timed out"));
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually(Duration::from_secs(3), "grandchild killed", || {
        !process_alive(pid)
    });
}

#[tokio::test]
async fn failures_are_retried_with_growing_waits_until_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    // Fails on the first two attempts, succeeds on the third.
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; [ $n -ge 3 ]",
        c = count.display()
    );
    let mut j = command("flaky", &script);
    j.retry = Some(RetryPolicy {
        attempts: 3,
        delay: Duration::from_millis(200),
        backoff: 2.0,
        max_delay: Duration::from_secs(5),
    });
    let started = Instant::now();
    let report = job::run(&j, &context().0, &CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    assert_eq!(report.attempts, 3);
    // Waits of at least 100 ms and 200 ms (half of 200 ms and of 400 ms).
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn retries_stop_when_attempts_run_out() {
    let mut j = command("broken", "echo 'no probe on slave 3' >&2; exit 4");
    j.retry = Some(RetryPolicy {
        attempts: 2,
        delay: Duration::from_millis(10),
        backoff: 2.0,
        max_delay: Duration::from_millis(50),
    });
    let report = job::run(&j, &context().0, &CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Failure);
    assert_eq!(report.attempts, 3, "the first try and two retries");
    assert_eq!(
        report.error.as_deref(),
        Some("exit status 4: no probe on slave 3")
    );
}

#[tokio::test]
async fn cancellation_kills_a_running_command_and_skips_retries() {
    let mut j = command("long", "sleep 300");
    j.retry = Some(RetryPolicy {
        attempts: 5,
        delay: Duration::from_millis(10),
        backoff: 1.0,
        max_delay: Duration::from_millis(10),
    });
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
    });
    let report = job::run(&j, &context().0, &cancel).await;
    assert_eq!(report.outcome, Outcome::Cancelled);
    assert_eq!(report.attempts, 1);
}

#[tokio::test]
async fn a_missing_program_is_a_failure_naming_it() {
    let mut j = command("ghost", "");
    j.kind = JobKind::Command(CommandSpec {
        argv: vec!["/nonexistent/aerator-check".into()],
        working_dir: None,
        env: Default::default(),
    });
    let report = job::run(&j, &context().0, &CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Failure);
    let error = report.error.unwrap();
    assert!(
        error.starts_with("cannot start /nonexistent/aerator-check: "),
        "{error}"
    );
}

#[tokio::test]
async fn working_dir_and_env_reach_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = command("env", "");
    j.kind = JobKind::Command(CommandSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), "echo \"$POND\" > out".into()],
        working_dir: Some(dir.path().to_path_buf()),
        env: [("POND".to_string(), "7".to_string())].into(),
    });
    let report = job::run(&j, &context().0, &CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Success);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out")).unwrap(),
        "7\n"
    );
}

#[tokio::test]
async fn the_sample_job_reads_modbus_and_simulated_sensors_and_stores_one_cycle() {
    use std::collections::HashMap;

    use crate::support::modbus::{SerialLine, f32_words};

    let mut image = vec![0u16; 16];
    image[0..2].copy_from_slice(&f32_words(7.83));
    image[2] = 720;
    let line = SerialLine::start(HashMap::from([(3, image)]));
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"[agent]
id = "t"
state_dir = "{state}"
timezone = "UTC"
[[bus]]
name = "rs485-a"
kind = "modbus-rtu"
port = "{port}"
timeout = "100ms"
retries = 1
[[bus]]
name = "sim"
kind = "simulated"
[[sensor]]
id = "pond7.do"
bus = "rs485-a"
slave = 3
register = 0
type = "f32"
unit = "mg/L"
[[sensor]]
id = "pond7.ph"
bus = "rs485-a"
slave = 3
register = 2
type = "u16"
scale = 0.01
unit = "pH"
[[sensor]]
id = "pond8.do"
bus = "rs485-a"
slave = 4
register = 0
type = "f32"
unit = "mg/L"
[[sensor]]
id = "pond9.temp"
bus = "sim"
unit = "degC"
model = {{ base = 18.0 }}
"#,
        state = dir.path().display(),
        port = line.path.display()
    );
    let config = Arc::new(config::parse_str(&text, "t.toml").expect("valid"));
    let clock: Arc<dyn Clock> = Arc::new(TestClock::at(2026, 11, 23, 1, 0, 0, false));
    let store = StoreHandle::spawn(store::open(dir.path()).unwrap());
    let ctx = JobContext::new(Arc::clone(&config), clock, store.clone());
    let sample = config.job("sample").unwrap().clone();
    let report = job::run(&sample, &ctx, &CancellationToken::new()).await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    // One merged request for slave 3, and the first try and one retry for dead slave 4.
    assert_eq!(line.requests.load(std::sync::atomic::Ordering::SeqCst), 3);

    type Row = (i64, String, Option<f64>, String, String, Option<String>);
    let rows: Vec<Row> = store
        .call(|c| {
            let mut stmt = c.prepare(
                "SELECT seq, sensor, value, quality, clock, error FROM pending ORDER BY seq",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })?
                .collect::<Result<Vec<Row>, _>>()?;
            Ok(rows)
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(
        rows[0],
        (
            1,
            "pond7.do".into(),
            Some(f64::from(7.83f32)),
            "good".into(),
            "unsynced".into(),
            None
        )
    );
    assert_eq!(
        rows[1],
        (
            2,
            "pond7.ph".into(),
            Some(7.2),
            "good".into(),
            "unsynced".into(),
            None
        )
    );
    assert_eq!(
        (rows[2].1.as_str(), rows[2].2, rows[2].3.as_str()),
        ("pond8.do", None, "bad")
    );
    assert_eq!(
        rows[2].5.as_deref(),
        Some("slave 4: no answer within 100ms")
    );
    assert_eq!(
        (rows[3].1.as_str(), rows[3].2, rows[3].3.as_str()),
        ("pond9.temp", Some(18.0), "good")
    );
    let counters = ctx.sampler.counters();
    let bus = &counters["rs485-a"];
    assert_eq!((bus.requests, bus.timeouts), (3, 2));
    assert!(bus.last_good_read.is_some());
}

/// The adapter is unplugged (the device end closes and its path disappears) and
/// plugged back as a new device under the same path: the bus reconnects on its own.
#[tokio::test]
async fn an_unplugged_adapter_reads_bad_and_a_replugged_one_is_read_again() {
    use std::collections::HashMap;

    use tidegate::sensor::sampler::Sampler;

    use crate::support::modbus::{SerialLine, f32_words};

    let mut image = vec![0u16; 2];
    image.copy_from_slice(&f32_words(6.5));
    let dir = tempfile::tempdir().unwrap();
    let port = dir.path().join("ttyUSB0");
    let line = SerialLine::start(HashMap::from([(3, image.clone())]));
    std::os::unix::fs::symlink(&line.path, &port).unwrap();
    let text = format!(
        "[agent]\nid = \"t\"\ntimezone = \"UTC\"\n[[bus]]\nname = \"a\"\nkind = \"modbus-rtu\"\nport = \"{}\"\ntimeout = \"100ms\"\nretries = 1\n[[sensor]]\nid = \"pond7.do\"\nbus = \"a\"\nslave = 3\nregister = 0\ntype = \"f32\"\n",
        port.display()
    );
    let config = config::parse_str(&text, "t.toml").expect("valid");
    let clock: Arc<dyn Clock> = Arc::new(TestClock::at(2026, 11, 23, 1, 0, 0, true));
    let sampler = Sampler::start(&config, clock, None);
    let read = || sampler.read(&config.sensors);

    assert_eq!(read().await[0].value, Some(6.5));

    line.unplug().await;
    std::fs::remove_file(&port).unwrap();
    let unplugged = read().await;
    assert_eq!(unplugged[0].value, None);
    let error = unplugged[0].error.clone().unwrap();
    assert!(error.starts_with("slave 3: link: cannot open "), "{error}");
    assert!(error.contains("ttyUSB0"), "names the port: {error}");

    let replugged = SerialLine::start(HashMap::from([(3, image)]));
    std::os::unix::fs::symlink(&replugged.path, &port).unwrap();
    assert_eq!(
        read().await[0].value,
        Some(6.5),
        "read again without a restart"
    );
}

/// Every type in both word orders, scaled, and bits from coils and discrete inputs,
/// read over Modbus TCP and compared exactly.
#[tokio::test]
async fn every_type_and_word_order_reads_exactly_over_tcp() {
    use std::collections::HashMap;

    use tidegate::config::{
        BusConfig, BusKind, RegisterMap, SensorConfig, SensorSource, Table, ValueType, WordOrder,
    };
    use tidegate::reading::Quality;
    use tidegate::sensor::sampler::Sampler;

    use crate::support::modbus::TcpDevice;

    // (type, raw bits as the device holds them high word first, expected value before scaling)
    let cases: Vec<(ValueType, Vec<u16>, f64)> = vec![
        (ValueType::U16, vec![720], 720.0),
        (ValueType::I16, vec![(-720i16) as u16], -720.0),
        (ValueType::U32, vec![0x0001, 0x0002], 65_538.0),
        (ValueType::I32, vec![0xFFFF, 0xFFFE], -2.0),
        (
            ValueType::F32,
            vec![(7.5f32.to_bits() >> 16) as u16, 7.5f32.to_bits() as u16],
            7.5,
        ),
        (ValueType::U64, vec![0, 0, 0x0001, 0x0000], 65_536.0),
        (ValueType::I64, vec![0xFFFF, 0xFFFF, 0xFFFF, 0xFFF6], -10.0),
        (
            ValueType::F64,
            (0..4)
                .map(|k| ((-3.25f64).to_bits() >> (48 - 16 * k)) as u16)
                .collect(),
            -3.25,
        ),
        (ValueType::Bool, vec![5], 1.0),
    ];
    let mut image = Vec::new();
    let mut sensors = Vec::new();
    for (value_type, words, _) in &cases {
        for order in [WordOrder::Big, WordOrder::Little] {
            let register = u16::try_from(image.len()).unwrap();
            let mut held = words.clone();
            if order == WordOrder::Little {
                held.reverse();
            }
            image.extend(held);
            let scale = if *value_type == ValueType::Bool {
                1.0
            } else {
                0.5
            };
            sensors.push(SensorConfig {
                id: format!("{value_type:?}-{order:?}").to_lowercase(),
                bus: "plc".into(),
                enabled: true,
                unit: None,
                source: SensorSource::Modbus(RegisterMap {
                    slave: 1,
                    table: Table::Holding,
                    register,
                    value_type: *value_type,
                    word_order: order,
                    scale,
                    offset: 1.0,
                }),
            });
        }
    }
    // Coils and discrete inputs: the device reads a nonzero word as an "on" bit.
    for (k, table) in [Table::Coil, Table::Discrete].into_iter().enumerate() {
        sensors.push(SensorConfig {
            id: format!("bit-{k}"),
            bus: "plc".into(),
            enabled: true,
            unit: None,
            source: SensorSource::Modbus(RegisterMap {
                slave: 1,
                table,
                register: 0,
                value_type: ValueType::Bool,
                word_order: WordOrder::Big,
                scale: 1.0,
                offset: 0.0,
            }),
        });
    }
    let device = TcpDevice::start(HashMap::from([(1, image)])).await;
    let mut config =
        config::parse_str("[agent]\nid = \"t\"\ntimezone = \"UTC\"\n", "t.toml").unwrap();
    config.buses.push(BusConfig {
        name: "plc".into(),
        kind: BusKind::ModbusTcp {
            address: device.address.to_string(),
        },
        timeout: Duration::from_millis(500),
        retries: 0,
        frame_gap: None,
    });
    config.sensors = sensors.clone();
    let clock: Arc<dyn Clock> = Arc::new(TestClock::at(2026, 11, 23, 1, 0, 0, true));
    let sampler = Sampler::start(&config, clock, None);
    let readings = sampler.read(&sensors).await;
    let mut expected = Vec::new();
    for (value_type, _, raw) in &cases {
        for _ in 0..2 {
            expected.push(if *value_type == ValueType::Bool {
                1.0
            } else {
                raw * 0.5 + 1.0
            });
        }
    }
    expected.extend([1.0, 1.0]);
    for (reading, want) in readings.iter().zip(&expected) {
        assert_eq!(reading.quality, Quality::Good, "{reading:?}");
        assert_eq!(reading.value, Some(*want), "{}", reading.sensor);
    }
    assert_eq!(readings.len(), expected.len());
    // All registers of slave 1 in one request, and one for each bit table.
    assert_eq!(device.requests.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// A PLC that goes away resets its connections: its sensors read bad, and once it is
/// back the bus reconnects on its own.
#[tokio::test]
async fn a_tcp_peer_that_goes_away_reads_bad_and_is_read_again_when_back() {
    use std::collections::HashMap;

    use tidegate::sensor::sampler::Sampler;

    use crate::support::modbus::TcpDevice;

    let device = TcpDevice::start(HashMap::from([(1, vec![42u16; 4])])).await;
    let address = device.address;
    let text = format!(
        "[agent]\nid = \"t\"\ntimezone = \"UTC\"\n[[bus]]\nname = \"plc\"\nkind = \"modbus-tcp\"\naddress = \"{address}\"\ntimeout = \"200ms\"\nretries = 1\n[[sensor]]\nid = \"pump.flow\"\nbus = \"plc\"\nslave = 1\nregister = 2\n",
    );
    let config = config::parse_str(&text, "t.toml").expect("valid");
    let clock: Arc<dyn Clock> = Arc::new(TestClock::at(2026, 11, 23, 1, 0, 0, true));
    let sampler = Sampler::start(&config, clock, None);
    assert_eq!(sampler.read(&config.sensors).await[0].value, Some(42.0));

    device.stop().await;
    let gone = sampler.read(&config.sensors).await;
    assert_eq!(gone[0].value, None);
    let error = gone[0].error.clone().unwrap();
    assert!(error.starts_with("slave 1: link: "), "{error}");

    let back = TcpDevice::start_at(address, HashMap::from([(1, vec![43u16; 4])])).await;
    assert_eq!(
        sampler.read(&config.sensors).await[0].value,
        Some(43.0),
        "reconnected without a restart"
    );
    assert!(back.requests.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

/// A card that fills up: the sample job fails and says what it holds, the agent's
/// world goes on, and the held cycles are stored in order once there is room.
#[tokio::test]
async fn a_full_disk_fails_sampling_loudly_and_storing_resumes_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[agent]\nid = \"t\"\nstate_dir = \"{}\"\ntimezone = \"UTC\"\n\
         [[bus]]\nname = \"sim\"\nkind = \"simulated\"\n\
         [[sensor]]\nid = \"p.do\"\nbus = \"sim\"\nmodel = {{ base = 7.5 }}\n\
         [[sensor]]\nid = \"p.temp\"\nbus = \"sim\"\nmodel = {{ base = 18.0 }}\n",
        dir.path().display()
    );
    let config = Arc::new(config::parse_str(&text, "t.toml").expect("valid"));
    let clock: Arc<dyn Clock> = Arc::new(TestClock::at(2026, 11, 23, 1, 0, 0, true));
    let store = StoreHandle::spawn(store::open(dir.path()).unwrap());
    let ctx = JobContext::new(Arc::clone(&config), clock, store.clone());
    let sample = config.job("sample").unwrap().clone();
    let never = CancellationToken::new();
    let run = || job::run(&sample, &ctx, &never);
    assert_eq!(run().await.outcome, Outcome::Success);
    let readings = |store: StoreHandle| async move {
        store
            .call(|c| Ok(c.query_row("SELECT count(*) FROM readings", [], |r| r.get::<_, i64>(0))?))
            .await
            .unwrap()
    };
    store
        .call(|c| {
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            Ok(c.pragma_update(None, "max_page_count", pages)?)
        })
        .await
        .unwrap();
    let stored_before = readings(store.clone()).await;
    // Cycles fit in the last page's free space for a while; then none does.
    let mut runs = 0;
    let mut failed = 0;
    while failed < 3 {
        let report = run().await;
        runs += 1;
        if report.outcome == Outcome::Failure {
            failed += 1;
            let error = report.error.unwrap();
            assert!(error.contains("full"), "{error}");
            assert!(
                error.contains(&format!("{} readings held in memory", failed * 2)),
                "{error}"
            );
        }
        assert!(runs < 500, "the database never filled");
    }
    assert_eq!(ctx.held.len(), 6);
    store
        .call(|c| Ok(c.pragma_update(None, "max_page_count", 1_000_000)?))
        .await
        .unwrap();
    assert_eq!(run().await.outcome, Outcome::Success);
    assert!(ctx.held.is_empty());
    assert_eq!(
        readings(store.clone()).await,
        stored_before + 2 * (runs + 1)
    );
}

/// The cleanup job: readings acknowledged past `keep_uploaded` go only on a trusted
/// clock (a clock in 2099 would make everything old); compaction runs either way.
#[tokio::test]
async fn cleanup_prunes_by_age_only_on_a_trusted_clock_and_compacts_always() {
    for trusted in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[agent]\nid = \"t\"\nstate_dir = \"{}\"\ntimezone = \"UTC\"\nlog_dir = \"{}/logs\"\nlog_keep = 2\n\
             [buffer]\nkeep_uploaded = \"1d\"\n",
            dir.path().display(),
            dir.path().display()
        );
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        for name in ["tidegate.log.1", "tidegate.log.5", "notes.txt"] {
            std::fs::write(logs.join(name), "x").unwrap();
        }
        let config = Arc::new(config::parse_str(&text, "t.toml").expect("valid"));
        let clock: Arc<dyn Clock> = Arc::new(TestClock::at(2026, 11, 23, 1, 0, 0, trusted));
        let store = StoreHandle::spawn(store::open(dir.path()).unwrap());
        let ctx = JobContext::new(Arc::clone(&config), clock, store.clone());
        store
            .call(|c| {
                let ts = chrono::DateTime::from_timestamp_millis(1_795_395_600_000).unwrap();
                let cycle: Vec<tidegate::reading::Reading> = (0..5000)
                    .map(|i| tidegate::reading::Reading::good("s", ts, f64::from(i), None))
                    .collect();
                let boot = tidegate::store::readings::BootTime {
                    boot_id: "b".into(),
                    since_boot_ms: 0,
                };
                tidegate::store::readings::insert_cycle(
                    c,
                    &cycle,
                    tidegate::store::readings::ClockQuality::Synced,
                    &boot,
                )?;
                // Acknowledged a week before the test clock's now.
                c.execute("UPDATE readings SET acked_ms = 1795000000000", [])?;
                Ok(())
            })
            .await
            .unwrap();
        let wal_before = std::fs::metadata(dir.path().join("buffer.db-wal"))
            .unwrap()
            .len();
        assert!(wal_before > 256 * 1024, "{wal_before}");
        let cleanup = config.job("cleanup").unwrap().clone();
        let report = job::run(&cleanup, &ctx, &CancellationToken::new()).await;
        assert_eq!(report.outcome, Outcome::Success, "{report:?}");
        let (rows, wal): (i64, u64) = store
            .call(|c| {
                let rows = c.query_row("SELECT count(*) FROM readings", [], |r| r.get(0))?;
                Ok(rows)
            })
            .await
            .map(|rows| {
                (
                    rows,
                    std::fs::metadata(dir.path().join("buffer.db-wal"))
                        .unwrap()
                        .len(),
                )
            })
            .unwrap();
        if trusted {
            assert_eq!(rows, 0, "past retention, on a trusted clock: pruned");
        } else {
            assert_eq!(rows, 5000, "an untrusted clock deletes nothing by age");
        }
        // The size cap holds on any clock, and touches only the agent's own files.
        assert!(!logs.join("tidegate.log.5").exists(), "past log_keep");
        assert!(logs.join("tidegate.log.1").exists() && logs.join("notes.txt").exists());
        // Truncated, then written again only by the run's own record.
        assert!(
            wal < 64 * 1024,
            "compaction truncated the WAL: {wal} bytes (trusted = {trusted})"
        );
    }
}
